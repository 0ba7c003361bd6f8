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
# How code_format="json" asks for its reply shape. "auto": a JSON schema where litellm
# knows the model takes one, else the prompt alone. Local servers litellm does not know
# need it named: "json_schema" is OpenAI's shape (also vLLM, Ollama, llama.cpp's
# llama-server, LM Studio); "json_object" carries the schema the way llama-cpp-python's
# server reads it.
STRUCTURED_OUTPUTS = ("auto", "json_schema", "json_object", "off")

_CODE_REPLY_SCHEMA = {
    "type": "object",
    "properties": {"thought": {"type": "string"}, "code": {"type": "string"}},
    "required": ["thought", "code"],
    "additionalProperties": False,
}
_RESPONSE_FORMATS = {
    "json_schema": {"type": "json_schema",
                    "json_schema": {"name": "code_action", "strict": True, "schema": _CODE_REPLY_SCHEMA}},
    "json_object": {"type": "json_object", "schema": _CODE_REPLY_SCHEMA},
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

    def __init__(self, model: LiteLLMModel, code_format: str, structured_output: str = "auto") -> None:
        self.code_format = code_format
        if code_format == "json":
            self.action_noun = "JSON object with code"
        self.structured_chosen = structured_output == "auto"  # by litellm's model table, not the user
        if code_format != "json":
            structured_output = "off"
        elif structured_output == "auto":
            structured_output = "json_schema" if model.supports("response_schema") else "off"
        # The shape actually sent, or None when the format is only prompted; the trace records it.
        self.structured_output = None if structured_output == "off" else structured_output

    def system_prompt(self, tools: Sequence[Tool], inputs: Mapping[str, str],
                      imports: Iterable[str], instructions: str | None) -> str:
        return render_code_prompt(tools, inputs, imports, instructions, code_format=self.code_format)

    def request_overrides(self) -> dict[str, Any]:
        return {"response_format": _RESPONSE_FORMATS[self.structured_output]} if self.structured_output else {}

    @property
    def stop_sequences(self) -> tuple[str, ...]:
        return _NEXT_OBJECT if self.code_format == "json" and not self.structured_output else ()

    def explain_model_error(self, message: str) -> str:
        """A server that cannot read our response_format says so in its own words; add what to change."""
        if not (self.structured_output and "response_format" in message):
            return message
        other = "json_object" if self.structured_output == "json_schema" else "json_schema"
        sent = (f'structured_output="auto" sent "{self.structured_output}" (litellm lists the model as '
                'taking a schema)' if self.structured_chosen else f'structured_output="{self.structured_output}"')
        return (f"{message}\nThe server refused the response_format of {sent}: set "
                f'structured_output="{other}" (json_object is the llama-cpp-python server\'s shape), '
                'or "off" to only prompt for the JSON format.')

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

    def explain_model_error(self, message: str) -> str:
        return message

    def parse(self, completion: Completion) -> Action:
        return parse_tool_call(completion.text, completion.tool_calls if self.native else (), native=self.native)

    def final_answer_how(self) -> str:
        return 'call the tool final_answer with {"answer": <value>}.'


def check_action_options(action_mode: str, code_format: str, structured_output: str = "auto") -> None:
    """Refuse a combination that cannot work, naming what to change; the operator calls it at DAG parse."""
    if action_mode not in ACTION_MODES:
        raise ValueError(f"action_mode must be one of {ACTION_MODES}, got {action_mode!r}")
    if code_format not in CODE_FORMATS:
        raise ValueError(f"code_format must be one of {CODE_FORMATS}, got {code_format!r}")
    if action_mode == "json" and code_format != "markdown":
        raise ValueError('code_format applies to action_mode="code" only; leave it as "markdown"')
    if structured_output not in STRUCTURED_OUTPUTS:
        raise ValueError(f"structured_output must be one of {STRUCTURED_OUTPUTS}, got {structured_output!r}")
    if structured_output != "auto" and code_format != "json":
        raise ValueError('structured_output applies to action_mode="code" with code_format="json" only; '
                         'set both, or leave structured_output as "auto"')


def make_action_mode(name: str, code_format: str, model: LiteLLMModel, tools: Sequence[Tool],
                     structured_output: str = "auto") -> CodeMode | JsonMode:
    check_action_options(name, code_format, structured_output)
    return CodeMode(model, code_format, structured_output) if name == "code" else JsonMode(model, tools)
