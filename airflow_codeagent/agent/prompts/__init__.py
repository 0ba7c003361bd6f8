"""System prompts, one template file per action mode, rendered with the run's context."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from importlib.resources import files
from string import Template
from typing import Any

from airflow_codeagent.agent.truncation import truncate_middle
from airflow_codeagent.tools.base import Tool

_PREVIEW_CHARS = 200


def describe_value(value: Any) -> str:
    """A type and a short preview, enough for the model to know how to use a variable."""
    from airflow_codeagent.sandbox.isolated import OpaqueValue

    if isinstance(value, OpaqueValue):  # a value that stayed in the isolated child
        return f"{value.type}, e.g. {truncate_middle(value.repr, _PREVIEW_CHARS)}"
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


def _template(name: str) -> Template:
    return Template(files(__name__).joinpath(name).read_text("utf-8"))


def _with_instructions(prompt: str, instructions: str | None) -> str:
    return f"{prompt}\n\nAdditional instructions:\n{instructions.strip()}\n" if instructions else prompt


def render_code_prompt(tools: Sequence[Tool], inputs: Mapping[str, str],
                       authorized_imports: Iterable[str], instructions: str | None = None, *,
                       code_format: str = "markdown") -> str:
    """The code-action prompt; ``code_format="json"`` asks for {"thought", "code"} replies."""
    template = _template("code_agent_json.md" if code_format == "json" else "code_agent.md")
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
    return _with_instructions(prompt, instructions)


FINAL_ANSWER_TOOL = {"type": "function", "function": {
    "name": "final_answer",
    "description": "Ends the task and returns the answer to the user.",
    "parameters": {"type": "object", "properties": {"answer": {"description": "the answer"}},
                   "required": ["answer"]},
}}


def describe_parameters(schema: Mapping[str, Any]) -> str:
    """``store_id (string), limit (integer)``: what a call must give values for, without a value to copy.

    Small models shown only a JSON schema tend to send the schema itself as
    the arguments; shown a placeholder such as "<string>", they send that.
    """
    properties = schema.get("parameters", {}).get("properties", {})
    return ", ".join(f"{name} ({prop.get('type', 'any value')})" for name, prop in properties.items()) or "none"


def render_json_prompt(tools: Sequence[Tool], *, native: bool, instructions: str | None = None) -> str:
    """The tool-calling prompt; with ``native`` the provider carries the schemas and the calls."""
    schemas = [t.json_schema()["function"] for t in tools] + [FINAL_ANSWER_TOOL["function"]]
    tool_text = "\n".join(json.dumps(schema, ensure_ascii=False) for schema in schemas)
    fmt = ("- Call tools with the provider's tool-calling interface." if native else
           '- Reply with one JSON object and nothing else: {"thought": "...", "tool": "<name>", '
           '"arguments": {...}}')
    return _with_instructions(_template("json_agent.md").substitute(tools=tool_text, format=fmt),
                              instructions)
