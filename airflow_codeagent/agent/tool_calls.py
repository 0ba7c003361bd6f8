"""JSON action mode: run one tool call in the worker and describe the result for the model."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from airflow_codeagent.agent.actions import ToolCallAction
from airflow_codeagent.agent.trace import Step
from airflow_codeagent.agent.truncation import truncate_middle
from airflow_codeagent.sandbox.observation import ExecutionError, ToolCall
from airflow_codeagent.sandbox.plain_data import NotPlainData, to_plain_data


def _tool_error(step: Step, message: str) -> str:
    step.error = ExecutionError("ToolError", message, "").to_dict()
    return f"Observation:\nError: {message}\nFix the call and try again."


_SCHEMA_KEYS = frozenset({"type", "properties", "required", "description", "items", "enum"})
_JSON_SCHEMA_TYPES = frozenset({"string", "integer", "number", "boolean", "object", "array", "null"})


def _looks_like_schema(value: Any) -> bool:
    """A dict of JSON-Schema keywords whose "type" is a JSON-Schema type name: {"type": "bug"} is data."""
    return (isinstance(value, dict) and value.get("type") in _JSON_SCHEMA_TYPES
            and set(value) <= _SCHEMA_KEYS)


def schema_sent_as_arguments(arguments: Mapping[str, Any]) -> bool:
    """The model copied the tool's parameter schema instead of giving values (common in small models)."""
    return (_looks_like_schema(arguments) and ("properties" in arguments or arguments.get("type") == "object")) \
        or any(_looks_like_schema(v) for v in arguments.values())


def run_tool_call(action: ToolCallAction, tools: Mapping[str, Callable[..., Any]], step: Step,
                  max_observation_chars: int, parameters: Mapping[str, str] | None = None) -> str:
    """Fill ``step`` with the call and its outcome; return the observation text."""
    observation = _run(action, tools, step, max_observation_chars, parameters)
    if action.not_called:
        observation += (f"\n(Only one tool call runs per step; not called: {', '.join(action.not_called)}. "
                        "Call what you still need in the next step.)")
    return observation


def _run(action: ToolCallAction, tools: Mapping[str, Callable[..., Any]], step: Step,
         max_observation_chars: int, parameters: Mapping[str, str] | None) -> str:
    step.code = action.as_json()
    started = time.perf_counter()
    if action.name == "final_answer":
        if "answer" not in action.arguments:
            return _tool_error(step, 'final_answer needs {"answer": <value>}')
        try:
            step.final_answer = to_plain_data(action.arguments["answer"])
        except NotPlainData as exc:  # JSON is plain data, but a native call may carry NaN
            return _tool_error(step, str(exc))
        step.final_answer_called = True
        step.execution_s = time.perf_counter() - started
        return "Observation: final answer recorded."
    func = tools.get(action.name)
    if func is None:
        known = ", ".join([*tools, "final_answer"])
        return _tool_error(step, f"there is no tool named {action.name!r}; the tools are: {known}")
    if schema_sent_as_arguments(action.arguments):
        wanted = (parameters or {}).get(action.name)
        return _tool_error(step, "the arguments you sent are the parameter schema, not values"
                           + (f"; send a value for each parameter: {wanted}" if wanted else ""))
    arguments = ", ".join(f"{k}={v!r}" for k, v in action.arguments.items())
    try:
        result = func(**action.arguments)
    except Exception as exc:  # noqa: BLE001 - a tool's failure is the model's observation
        step.tool_calls.append(ToolCall(action.name, arguments, time.perf_counter() - started, None,
                                        f"{type(exc).__name__}: {exc}").to_dict())
        return _tool_error(step, f"{type(exc).__name__}: {exc}")
    text = repr(result)
    step.execution_s = time.perf_counter() - started
    step.tool_calls.append(ToolCall(action.name, arguments, step.execution_s, len(text), None).to_dict())
    step.value = text
    return "Observation:\n" + truncate_middle(text, max_observation_chars, "ask for less, e.g. a filter or a page")
