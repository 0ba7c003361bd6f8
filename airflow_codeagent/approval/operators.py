"""Agent -> human approval -> apply, as Airflow tasks.

``agent_with_approval(task_id="fix", prompt=..., tools=[SQLTool("wh", read_only=False)])``
returns a TaskGroup ``fix`` with three tasks:

- ``fix.agent``: the agent run; every side-effecting call is staged as an
  intent (XCom ``codeagent_intents``), none is executed;
- ``fix.approval``: Airflow's human-in-the-loop ``ApprovalOperator`` (Required
  Actions in the UI; the task waits in ``awaiting_input`` without holding a
  worker slot); its body renders the intents as markdown and it has a
  ``reason`` field and an ``only`` field: Approve with ``only`` empty
  approves every intent shown, with ``only="1, 3"`` just those. Approve
  pushes the approved intents (XCom ``codeagent_approved_intents``); Reject
  skips ``fix.apply``. Either way the
  decision, who made it and why is XCom ``codeagent_decision`` and in the log;
- ``fix.apply``: executes exactly the approved intents with the tools of the
  DAG definition, no model call, each at most once across retries.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowException, AirflowSkipException
from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import BaseOperator, Param, TaskGroup

from airflow_codeagent.agent.replay import InMemoryJournalStore
from airflow_codeagent.approval.apply import apply_intents, resolve_tools
from airflow_codeagent.approval.intents import INTENTS_XCOM_KEY, intents_digest, render_markdown
from airflow_codeagent.operators.codeagent import CodeAgentOperator
from airflow_codeagent.operators.journal import durable_store_for
from airflow_codeagent.tools.base import Tool, Toolkit

if TYPE_CHECKING:
    from airflow.sdk import Context

APPROVED_XCOM_KEY = "codeagent_approved_intents"
DECISION_XCOM_KEY = "codeagent_decision"
APPLIED_XCOM_KEY = "return_value"
SHOWN_XCOM_KEY = "codeagent_shown_intents"

ToolItem = Tool | Toolkit | Callable[..., Any]


class IntentApprovalOperator(ApprovalOperator):
    """Approve (all or some) or reject the intents an agent task staged; the body shows them as markdown."""

    def __init__(self, *, agent_task_id: str, subject: str | None = None, **kwargs: Any) -> None:
        params = dict(kwargs.pop("params", None) or {})
        params.setdefault("reason", Param("", type="string", title="Reason",
                                          description="Why you approve or reject (recorded with the decision)."))
        params.setdefault("only", Param("", type="string", title="Apply only these intents",
                                        description="Intent numbers separated by commas, e.g. 1, 3. Leave "
                                                    "empty to apply every intent shown. Ignored on Reject."))
        super().__init__(subject=subject or f"Apply the changes staged by {agent_task_id}?",
                         params=params, **kwargs)
        self.agent_task_id = agent_task_id

    def _intents(self, context: Context) -> list[dict[str, Any]]:
        return context["ti"].xcom_pull(task_ids=self.agent_task_id, key=INTENTS_XCOM_KEY) or []

    def execute(self, context: Context) -> Any:
        intents = self._intents(context)
        if not intents:
            raise AirflowSkipException(f"{self.agent_task_id} staged no side-effecting call: nothing to approve")
        digest = intents_digest(intents)
        # What the reviewer is shown is kept with this task: the decision applies to this copy,
        # whatever happens to the agent task's XCom meanwhile (a cleared and re-run agent).
        context["ti"].xcom_push(key=SHOWN_XCOM_KEY, value=intents)
        self.body = f"{render_markdown(intents)}\n\n<sub>intents digest {digest}</sub>"
        return super().execute(context)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        # Record first: on Reject, ApprovalOperator skips downstream by raising, so nothing after it runs.
        if "error" not in event:
            self.validate_chosen_options(event["chosen_options"])
            self._record(context, event)
        return super().execute_complete(context, event)

    def _record(self, context: Context, event: dict[str, Any]) -> None:
        ti = context["ti"]
        intents = ti.xcom_pull(task_ids=ti.task_id, key=SHOWN_XCOM_KEY, map_indexes=ti.map_index)
        if not intents:
            raise AirflowException("the intents shown for approval were not found; nothing was approved")
        approved = event["chosen_options"] == [self.APPROVE]
        by = event.get("responded_by_user")
        answers = event.get("params_input") or {}
        reason = answers.get("reason") or None
        responded_at = event.get("responded_at")
        chosen = _chosen_intents(intents, answers.get("only")) if approved else []
        decision = {
            "decision": "approved" if approved else "rejected",
            "by": dict(by) if by else None,
            "reason": reason,
            "at": responded_at.isoformat() if hasattr(responded_at, "isoformat") else responded_at,
            "intents": [i["id"] for i in intents],
            "approved_intents": [i["id"] for i in chosen],
            "digest": intents_digest(intents),
        }
        if approved:
            current = intents_digest(self._intents(context))
            if current != decision["digest"]:
                raise AirflowException("the staged intents changed after they were shown for approval "
                                       f"(shown {decision['digest']}, now {current}); nothing was approved")
        context["ti"].xcom_push(key=DECISION_XCOM_KEY, value=decision)
        who = (by or {}).get("name") or (by or {}).get("id") or "the timeout default"
        what = f" (only {', '.join(f'#{i}' for i in decision['approved_intents'])})" \
            if approved and len(chosen) < len(intents) else ""
        self.log.info("Intents %s%s by %s%s", decision["decision"], what, who, f": {reason}" if reason else "")
        if approved:
            context["ti"].xcom_push(key=APPROVED_XCOM_KEY, value=chosen)


def _chosen_intents(intents: list[dict[str, Any]], only: Any) -> list[dict[str, Any]]:
    """The intents the reviewer approved: all, or those ``only`` ("1, 3") names; a bad answer approves none."""
    text = "" if only is None else str(only).strip()
    if not text:
        return intents
    known = {i["id"]: i for i in intents}
    try:
        wanted = [int(part.strip().lstrip("#")) for part in text.replace(";", ",").split(",") if part.strip()]
    except ValueError:
        raise AirflowException(f"'Apply only these intents' must be intent numbers separated by commas, "
                               f"e.g. 1, 3; got {text!r}. Nothing was approved") from None
    unknown = sorted(set(wanted) - set(known))
    if unknown:
        raise AirflowException(f"'Apply only these intents' names intent(s) {unknown} that were not staged "
                               f"(staged: {sorted(known)}). Nothing was approved")
    return [known[i] for i in sorted(set(wanted))]


class ApplyIntentsOperator(BaseOperator):
    """Execute the approved intents with the DAG's own tools: no model call, each intent at most once."""

    ui_color = "#e8f5e9"

    def __init__(self, *, tools: Iterable[ToolItem], approval_task_id: str,
                 replay_storage: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tools = list(tools)
        self.approval_task_id = approval_task_id
        self.replay_storage = replay_storage

    def execute(self, context: Context) -> Any:
        ti = context["ti"]
        decision = ti.xcom_pull(task_ids=self.approval_task_id, key=DECISION_XCOM_KEY)
        if not decision or decision.get("decision") != "approved":
            raise AirflowSkipException(f"{self.approval_task_id} approved nothing")
        intents = ti.xcom_pull(task_ids=self.approval_task_id, key=APPROVED_XCOM_KEY) or []
        store = durable_store_for(context, self.replay_storage)
        if store is None:
            self.log.warning("No task state store (Airflow < 3.3) and no replay_storage: a retried apply "
                             "may repeat intents that already succeeded.")
            store = InMemoryJournalStore()
        applied = apply_intents(intents, resolve_tools(self.tools), store)
        for a in applied:
            self.log.info("intent #%d %s: %s", a.id, a.tool,
                          "already applied by an earlier try" if a.skipped_as_done else "applied")
        return [a.to_dict() for a in applied]


def agent_with_approval(*, task_id: str, tools: Sequence[ToolItem],
                        approval_kwargs: dict[str, Any] | None = None,
                        apply_kwargs: dict[str, Any] | None = None,
                        **operator_kwargs: Any) -> TaskGroup:
    """A TaskGroup ``task_id``: agent (side effects staged) -> human approval -> apply.

    ``operator_kwargs`` go to the agent operator (``prompt``, ``inputs``, ``max_steps``, ...);
    ``approval_kwargs`` to the approval (``subject``, ``assigned_users``, ``response_timeout``,
    ``notifiers``); ``apply_kwargs`` to the apply step (``retries``, ``replay_storage``, ...; by default
    the agent's ``replay_storage``).
    """
    tools = list(tools)
    with TaskGroup(group_id=task_id) as group:
        agent = CodeAgentOperator(task_id="agent", tools=tools, approval="required", **operator_kwargs)
        approval = IntentApprovalOperator(task_id="approval", agent_task_id=agent.task_id,
                                          **(approval_kwargs or {}))
        # the agent's replay_storage also keeps the apply step's record of what it applied
        apply_kwargs = {"replay_storage": operator_kwargs.get("replay_storage"), **(apply_kwargs or {})}
        apply = ApplyIntentsOperator(task_id="apply", tools=tools, approval_task_id=approval.task_id,
                                     **apply_kwargs)
        agent >> approval >> apply
    return group
