"""Staged side effects with human approval: intents, the approval step and the apply step."""

from airflow_codeagent.approval.apply import AppliedIntent, IntentMismatch, apply_intents, resolve_tools
from airflow_codeagent.approval.intents import (
    INTENTS_XCOM_KEY,
    Intent,
    IntentStager,
    intents_digest,
    previewers_for,
    render_markdown,
    staging_tools,
)

__all__ = [
    "INTENTS_XCOM_KEY", "AppliedIntent", "Intent", "IntentMismatch", "IntentStager", "apply_intents",
    "agent_with_approval", "intents_digest", "previewers_for", "render_markdown", "resolve_tools",
    "staging_tools",
]


def __getattr__(name: str):
    # The Airflow operators import Airflow: only when asked for.
    if name in ("agent_with_approval", "ApplyIntentsOperator", "IntentApprovalOperator"):
        from airflow_codeagent.approval import operators

        return getattr(operators, name)
    raise AttributeError(name)
