"""System prompts, one template file per action mode, rendered with the run's context."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from importlib.resources import files
from string import Template
from typing import Any

from airflow_codeagent.agent.truncation import truncate_middle
from airflow_codeagent.tools.base import Tool

_PREVIEW_CHARS = 200


def describe_value(value: Any) -> str:
    """A type and a short preview, enough for the model to know how to use a variable."""
    kind = type(value).__name__
    if isinstance(value, (dict, list, tuple, set, frozenset, str, bytes)):
        kind = f"{kind} of length {len(value)}"
        if isinstance(value, dict) and value:
            kind = f"dict with {len(value)} keys"
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value[:20]):
            keys = list(value[0].keys())[:12]
            kind = f"list of {len(value)} dicts with keys {keys}"
    try:
        preview = repr(value)
    except Exception:  # noqa: BLE001
        preview = "<no preview>"
    return f"{kind}, e.g. {truncate_middle(preview, _PREVIEW_CHARS)}"


def describe_inputs(inputs: Mapping[str, Any]) -> dict[str, str]:
    return {name: describe_value(value) for name, value in inputs.items()}


def render_code_prompt(tools: Sequence[Tool], inputs: Mapping[str, str],
                       authorized_imports: Iterable[str], instructions: str | None = None) -> str:
    template = Template(files(__name__).joinpath("code_agent.md").read_text("utf-8"))
    tool_text = "\n\n".join(t.signature_text() for t in tools)
    final = (
        'def final_answer(answer):\n    """Ends the task and returns answer to the user."""'
    )
    input_text = "\n".join(f"- {name}: {desc}" for name, desc in inputs.items()) or "- (none)"
    prompt = template.substitute(
        tools=f"{tool_text}\n\n{final}" if tool_text else final,
        inputs=input_text,
        imports=", ".join(authorized_imports) or "(none)",
    )
    if instructions:
        prompt += f"\n\nAdditional instructions:\n{instructions.strip()}\n"
    return prompt
