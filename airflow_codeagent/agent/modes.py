"""How the model acts: by writing code, or by calling one tool per step with JSON.

Both modes share the loop, the tools, the caps and the trace schema, so a
user can run the same task both ways and compare (``bench/actions.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from airflow_codeagent.agent.actions import (
    CodeAction,
    ParseFailure,
    ToolCallAction,
    parse_code_action,
    parse_json_code,
    parse_tool_call,
)
from airflow_codeagent.agent.prompts import FINAL_ANSWER_TOOL, render_code_prompt, render_json_prompt
from airflow_codeagent.models.completion import Completion, LiteLLMModel
from airflow_codeagent.tools.base import Tool

ACTION_MODES = ("code", "json")
CODE_FORMATS = ("markdown", "json")

_CODE_SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "code_action",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"thought": {"type": "string"}, "code": {"type": "string"}},
            "required": ["thought", "code"],
            "additionalProperties": False,
        },
    },
}

Action = CodeAction | ToolCallAction | ParseFailure

# Where a prompted JSON reply ends: a small model plans every call at once, writing
# ```json {...} ``` ```json {...} ``` ... or {...}, {...}, and only the first object is
# acted on: two thirds of the 1.5B model's JSON-mode output came after it. Each stop
# string begins after the first object's closing brace (and fence), so that stays whole;
# "\n{" alone would also match the first object, right after its own ```json line.
_NEXT_OBJECT = (', {"thought"', '```\n\n```json')


class CodeMode:
    """Code actions; ``code_format="json"`` asks for {"thought", "code"} with structured output."""

    name = "code"
    action_noun = "code block"

    def __init__(self, model: LiteLLMModel, code_format: str) -> None:
        self.code_format = code_format
        if code_format == "json":
            self.action_noun = "JSON object with code"
        self.structured = code_format == "json" and model.supports("response_schema")

    def system_prompt(self, tools: Sequence[Tool], inputs: Mapping[str, str],
                      imports: Iterable[str], instructions: str | None) -> str:
        return render_code_prompt(tools, inputs, imports, instructions, code_format=self.code_format)

    def request_overrides(self) -> dict[str, Any]:
        return {"response_format": _CODE_SCHEMA} if self.structured else {}

    @property
    def stop_sequences(self) -> tuple[str, ...]:
        return _NEXT_OBJECT if self.code_format == "json" and not self.structured else ()

    def parse(self, completion: Completion) -> Action:
        if self.code_format == "json":
            return parse_json_code(completion.text)
        return parse_code_action(completion.text)

    def final_answer_how(self) -> str:
        if self.code_format == "json":
            return ('reply with {"thought": "...", "code": "final_answer(...)"}, passing the variable '
                    "that holds the answer if there is one.")
        # Passing the variable, not a retyped value: small models "tidy" what they copy.
        return ("reply with one short ```python code block that calls final_answer(...), passing the "
                "variable that holds the answer if there is one.")


class JsonMode:
    """One tool call per step; native tool calling where litellm says the model has it."""

    name = "json"
    action_noun = "tool call"

    def __init__(self, model: LiteLLMModel, tools: Sequence[Tool]) -> None:
        self.native = model.supports("function_calling")
        self.schemas = [t.json_schema() for t in tools] + [FINAL_ANSWER_TOOL]

    def system_prompt(self, tools: Sequence[Tool], inputs: Mapping[str, str],
                      imports: Iterable[str], instructions: str | None) -> str:
        return render_json_prompt(tools, native=self.native, instructions=instructions)

    def request_overrides(self) -> dict[str, Any]:
        return {"tools": self.schemas, "tool_choice": "required"} if self.native else {}

    @property
    def stop_sequences(self) -> tuple[str, ...]:
        return () if self.native else _NEXT_OBJECT

    def parse(self, completion: Completion) -> Action:
        return parse_tool_call(completion.text, completion.tool_calls if self.native else (), native=self.native)

    def final_answer_how(self) -> str:
        return 'call the tool final_answer with {"answer": <value>}.'


def make_action_mode(name: str, code_format: str, model: LiteLLMModel, tools: Sequence[Tool]) -> CodeMode | JsonMode:
    if name not in ACTION_MODES:
        raise ValueError(f"action_mode must be one of {ACTION_MODES}, got {name!r}")
    if code_format not in CODE_FORMATS:
        raise ValueError(f"code_format must be one of {CODE_FORMATS}, got {code_format!r}")
    if name == "json" and code_format != "markdown":
        raise ValueError('code_format applies to action_mode="code" only; leave it as "markdown"')
    return CodeMode(model, code_format) if name == "code" else JsonMode(model, tools)
