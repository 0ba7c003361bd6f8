"""In-process executor: RestrictedPython code with state that persists across steps.

Fastest executor, for code you would run anyway: it shares the worker's
process, so it cannot stop a single runaway C call or cap memory. Untrusted
work belongs in the isolated executor.
"""

from __future__ import annotations

import copy
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from airflow_codeagent.sandbox.clock import StepClock, StepInterrupted
from airflow_codeagent.sandbox.instrument import (
    EXCEPT_TICK_NAME,
    RESULT_NAME,
    TICK_NAME,
    RestrictedSyntaxError,
    compile_model_code,
)
from airflow_codeagent.sandbox.observation import ExecutionError, Observation, ToolCall
from airflow_codeagent.sandbox.output import OutputBuffer, SandboxPrinter
from airflow_codeagent.sandbox.policy import (
    DEFAULT_AUTHORIZED_IMPORTS,
    ImportPolicy,
    SandboxClasses,
    restricted_globals,
)

FINAL_ANSWER_NAME = "final_answer"
_MAX_TRACEBACK_FRAMES = 8
_MAX_ARGUMENT_REPR = 200


class _FinalAnswerGiven(BaseException):
    """Unwinds model code after ``final_answer``; never visible to model code by name."""


class _StepState:
    """What one step collects while model code runs."""

    def __init__(self, output_limit_chars: int) -> None:
        self.output = OutputBuffer(output_limit_chars)
        self.value: Any = None
        self.has_value = False
        self.final_answer_called = False
        self.final_answer: Any = None
        self.tool_calls: list[ToolCall] = []


class RestrictedExecutor:
    """Runs code actions under RestrictedPython, one shared namespace per agent run.

    ``reraise`` lists host exception types (a task timeout, a termination
    signal) that must stop the run rather than become an observation.
    """

    def __init__(
        self,
        *,
        tools: Mapping[str, Callable[..., Any]] | None = None,
        variables: Mapping[str, Any] | None = None,
        authorized_imports: Iterable[str] = DEFAULT_AUTHORIZED_IMPORTS,
        step_timeout_s: float | None = 60.0,
        output_limit_chars: int = 100_000,
        reraise: tuple[type[BaseException], ...] = (),
    ) -> None:
        self._tools = dict(tools or {})
        for name in self._tools:
            if not name.isidentifier() or name.startswith("_") or name == FINAL_ANSWER_NAME:
                raise ValueError(f"tool name {name!r} cannot be used from code; rename the tool")
        self._imports = ImportPolicy(authorized_imports)
        self._classes = SandboxClasses()
        self.clock = StepClock(host_exceptions=reraise)
        self.step_timeout_s = step_timeout_s
        self.output_limit_chars = output_limit_chars
        self._reraise = reraise
        self._state: _StepState | None = None
        self._namespace: dict[str, Any] = {}
        for name, value in (variables or {}).items():
            if not name.isidentifier() or name.startswith("_"):
                raise ValueError(f"input name {name!r} is not a valid variable name; rename it")
            # A private copy: model code mutating its inputs must not reach the caller's objects.
            self._namespace[name] = copy.deepcopy(value)
        self._runs = 0

    @property
    def authorized_imports(self) -> tuple[str, ...]:
        return self._imports.authorized

    def variables(self) -> dict[str, Any]:
        """Names model code has defined so far (without tools and hooks)."""
        hidden = set(self._tools) | {FINAL_ANSWER_NAME}
        return {k: v for k, v in self._namespace.items() if not k.startswith("_") and k not in hidden}

    def cancel(self) -> None:
        self.clock.cancel()

    def close(self) -> None:
        self._namespace.clear()

    def run(self, code: str, *, time_limit_s: float | None = None) -> Observation:
        """Execute one code action; never raises for anything model code does."""
        self._runs += 1
        started = time.perf_counter()
        state = _StepState(self.output_limit_chars)
        filename = f"<step {self._runs}>"
        try:
            compiled = compile_model_code(code, filename)
        except RestrictedSyntaxError as exc:
            return Observation(
                stdout="", value_repr=None, duration_s=time.perf_counter() - started,
                error=ExecutionError("SyntaxError", str(exc), ""),
            )
        limit = _min_limit(self.step_timeout_s, time_limit_s)
        self._install_hooks(state)
        error: ExecutionError | None = None
        self._state = state
        self.clock.start(limit, f"step stopped: exceeded the {limit:g} s time limit" if limit else "")
        try:
            exec(compiled.code, self._namespace)  # noqa: S102 - restricted and instrumented above
        except _FinalAnswerGiven:
            pass
        except self._reraise:
            raise
        except StepInterrupted as exc:
            error = ExecutionError("StepInterrupted", exc.reason, _model_traceback(exc, compiled))
        except BaseException as exc:  # noqa: BLE001 - SystemExit and friends must not end the worker
            if state.final_answer_called:
                pass  # final_answer was caught by model code and something else raised later
            else:
                error = ExecutionError(type(exc).__name__, _message(exc), _model_traceback(exc, compiled))
        finally:
            self.clock.stop()
            self._state = None
        return Observation(
            stdout=state.output.getvalue(),
            value_repr=_safe_repr(state.value) if state.has_value and state.value is not None else None,
            error=None if state.final_answer_called else error,
            duration_s=time.perf_counter() - started,
            final_answer_called=state.final_answer_called,
            final_answer=state.final_answer,
            tool_calls=tuple(state.tool_calls),
        )

    def _install_hooks(self, state: _StepState) -> None:
        ns = self._namespace
        ns.update(restricted_globals(self._imports, self._classes))
        ns["_print_"] = lambda _getattr_=None: SandboxPrinter(state.output)
        ns[TICK_NAME] = self.clock.tick
        ns[EXCEPT_TICK_NAME] = self.clock.except_tick
        ns[RESULT_NAME] = lambda value: _record_value(state, value)
        ns[FINAL_ANSWER_NAME] = _final_answer_function(state)
        for name, func in self._tools.items():
            ns[name] = _tool_function(name, func, state)


def _min_limit(a: float | None, b: float | None) -> float | None:
    limits = [x for x in (a, b) if x is not None]
    return min(limits) if limits else None


def _record_value(state: _StepState, value: Any) -> None:
    state.value = value
    state.has_value = True


def _final_answer_function(state: _StepState) -> Callable[[Any], None]:
    def final_answer(answer: Any) -> None:
        """End the run with ``answer``."""
        state.final_answer_called = True
        state.final_answer = answer
        raise _FinalAnswerGiven()

    return final_answer


def _tool_function(name: str, func: Callable[..., Any], state: _StepState) -> Callable[..., Any]:
    """A plain function around a tool: model code gets no handle on the tool object."""

    def call_tool(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        arguments = _describe_arguments(args, kwargs)
        try:
            result = func(*args, **kwargs)
        except Exception as exc:
            state.tool_calls.append(ToolCall(name, arguments, time.perf_counter() - started,
                                             None, f"{type(exc).__name__}: {exc}"))
            raise
        state.tool_calls.append(ToolCall(name, arguments, time.perf_counter() - started,
                                         len(_safe_repr(result)), None))
        return result

    call_tool.__name__ = name
    call_tool.__qualname__ = name
    return call_tool


def _describe_arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    parts = [_safe_repr(a, _MAX_ARGUMENT_REPR) for a in args]
    parts += [f"{k}={_safe_repr(v, _MAX_ARGUMENT_REPR)}" for k, v in kwargs.items()]
    return ", ".join(parts)


def _safe_repr(value: Any, limit: int = 10_000) -> str:
    try:
        text = repr(value)
    except Exception as exc:  # noqa: BLE001 - a model-defined __repr__ may raise anything
        text = f"<unrepresentable {type(value).__name__}: {type(exc).__name__}>"
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more characters]"


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # noqa: BLE001
        return f"<unprintable {type(exc).__name__}>"


def _model_traceback(exc: BaseException, compiled: Any) -> str:
    """Frames from the model's own code only, with the model's source line."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == compiled.filename]
    lines = []
    for frame in frames[-_MAX_TRACEBACK_FRAMES:]:
        where = "" if frame.name == "<module>" else f", in {frame.name}"
        source = ""
        if frame.lineno and 0 < frame.lineno <= len(compiled.source_lines):
            source = compiled.source_lines[frame.lineno - 1].strip()
        lines.append(f"  line {frame.lineno}{where}: {source}")
    return "\n".join(lines)
