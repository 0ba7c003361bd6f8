"""In-process executor: RestrictedPython code with state that persists across steps.

Fastest executor, for code you would run anyway: it shares the worker's
process, so it cannot stop a single runaway C call or cap memory. Untrusted
work belongs in the isolated executor.

Everything that may run model code (a ``repr`` of a model object, ``str``
of an exception carrying one) runs while the step clock is armed and is
caught whole: model code can reach the host's ``repr`` through inherited
methods such as ``Counter.most_common``.
"""

from __future__ import annotations

import copy
import decimal
import json
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from airflow_codeagent.sandbox.clock import StepClock, StepInterrupted
from airflow_codeagent.sandbox.hints import name_error_hint
from airflow_codeagent.sandbox.instrument import (
    EXCEPT_TICK_NAME,
    FINAL_ANSWER_NAME,
    RESULT_NAME,
    TICK_NAME,
    CompiledCode,
    RestrictedSyntaxError,
    compile_model_code,
)
from airflow_codeagent.sandbox.observation import ExecutionError, Observation, ToolCall
from airflow_codeagent.sandbox.output import OutputBuffer, SandboxPrinter
from airflow_codeagent.sandbox.plain_data import NotPlainData, to_plain_data
from airflow_codeagent.sandbox.policy import (
    DEFAULT_AUTHORIZED_IMPORTS,
    ImportPolicy,
    SandboxClasses,
    restricted_globals,
)

_MAX_TRACEBACK_FRAMES = 8
_MAX_ARGUMENT_REPR = 200
_MAX_MESSAGE_CHARS = 10_000  # an error message is model-controlled text, like stdout
MAX_ANSWER_CHARS = 100_000  # the answer goes to XCom and the trace; bulk data belongs in a tool
IN_PROCESS_CONFINEMENT = {"process": "the worker's own: the RestrictedPython policy is the only guard"}


class _FinalAnswerGiven(BaseException):
    """Unwinds model code after ``final_answer``; never visible to model code by name."""


class ToolError(Exception):
    """A tool failed with an exception type model code cannot be handed."""


class _StepState:
    """What one step collects while model code runs."""

    def __init__(self, output_limit_chars: int) -> None:
        self.output = OutputBuffer(output_limit_chars)
        self.value_repr: str | None = None
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
        self._namespace: dict[str, Any] = {}
        # Model code gets its own decimal context: setcontext/traps changes stay here.
        self._decimal_context = decimal.Context()
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

    def confinement(self) -> dict[str, str]:
        return dict(IN_PROCESS_CONFINEMENT)

    def cancel(self) -> None:
        self.clock.cancel()

    def close(self) -> None:
        self._namespace.clear()

    def run(self, code: str, *, time_limit_s: float | None = None) -> Observation:
        """Execute one code action; never raises for anything model code does."""
        self._runs += 1
        started = time.perf_counter()
        state = _StepState(self.output_limit_chars)
        try:
            compiled = compile_model_code(code, f"<step {self._runs}>",
                                          frozenset({*self._tools, FINAL_ANSWER_NAME}))
        except RestrictedSyntaxError as exc:
            return Observation(stdout="", value_repr=None, duration_s=time.perf_counter() - started,
                               error=ExecutionError("SyntaxError", str(exc), ""))
        limit = _min_limit(self.step_timeout_s, time_limit_s)
        self._install_hooks(state)
        try:
            self.clock.start(limit, f"step stopped: exceeded the {limit:g} s time limit" if limit else "")
            error = self._execute(compiled, state)
        finally:
            self.clock.stop()
        if error is None and state.final_answer_called is False and self.clock.fired:
            # Model code swallowed the interrupt (``finally: return``): the step still did not finish.
            error = ExecutionError("StepInterrupted", self.clock.fired, "")
        return Observation(
            stdout=state.output.getvalue(),
            value_repr=state.value_repr,
            error=None if state.final_answer_called else error,
            duration_s=time.perf_counter() - started,
            final_answer_called=state.final_answer_called,
            final_answer=state.final_answer,
            tool_calls=tuple(state.tool_calls),
        )

    def _execute(self, compiled: CompiledCode, state: _StepState) -> ExecutionError | None:
        """Run the code with the clock armed; describe any exception while it still is."""
        try:
            with decimal.localcontext(self._decimal_context) as context:
                try:
                    exec(compiled.code, self._namespace)  # noqa: S102 - restricted and instrumented
                finally:
                    self._decimal_context = context
        except _FinalAnswerGiven:
            return None
        except self._reraise:
            raise
        except StepInterrupted as exc:
            return ExecutionError("StepInterrupted", exc.reason, _model_traceback(exc, compiled))
        except BaseException as exc:  # noqa: BLE001 - SystemExit and friends must not end the worker
            if state.final_answer_called:
                return None  # final_answer was caught by model code and something else raised later
            return self._describe(exc, compiled)
        return None

    def _describe(self, exc: BaseException, compiled: CompiledCode) -> ExecutionError:
        """``str(exc)`` may run model code (an argument's repr), so it is guarded too."""
        traceback_text = _model_traceback(exc, compiled)
        try:
            message = clip_message(str(exc))
            if type(exc) is NameError and type(exc.name) is str:  # a str subclass would run model code
                hint = name_error_hint(exc.name, self._visible_names(exc, compiled), self._imports)
                message = f"{message}. {hint}" if hint else message
            return ExecutionError(type(exc).__name__, message, traceback_text)
        except self._reraise:
            raise
        except StepInterrupted as interrupt:
            return ExecutionError("StepInterrupted", interrupt.reason, traceback_text)
        except BaseException:  # noqa: BLE001
            return ExecutionError(type(exc).__name__, f"<unprintable {type(exc).__name__}>", traceback_text)

    def _visible_names(self, exc: BaseException, compiled: CompiledCode) -> list[list[str]]:
        """Names in scope where the NameError was raised, innermost scope first."""
        frames = []
        tb = exc.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code.co_filename == compiled.filename:
                frames.append(list(tb.tb_frame.f_code.co_varnames))
            tb = tb.tb_next
        return [*reversed(frames), list(self._namespace), list(self._namespace.get("__builtins__", {}))]

    def _safe_repr(self, value: Any, limit: int = 10_000) -> str:
        try:
            text = repr(value)
        except self._reraise:
            raise
        except BaseException as exc:  # noqa: BLE001 - repr() of a model object runs model code
            text = f"<unrepresentable {type(value).__name__}: {type(exc).__name__}>"
        return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more characters]"

    def _install_hooks(self, state: _StepState) -> None:
        ns = self._namespace
        ns.update(restricted_globals(self._imports, self._classes))
        ns["_print_"] = lambda _getattr_=None: SandboxPrinter(state.output)
        self.clock.bind(ns, TICK_NAME)
        ns[EXCEPT_TICK_NAME] = self.clock.except_tick
        ns[RESULT_NAME] = lambda value: self._record_value(state, value)
        ns[FINAL_ANSWER_NAME] = self._final_answer_function(state)
        for name, func in self._tools.items():
            ns[name] = self._tool_function(name, func, state)

    def _record_value(self, state: _StepState, value: Any) -> None:
        """Runs inside model code, under the clock: the repr may execute model code."""
        if value is not None:
            state.value_repr = self._safe_repr(value)

    def _final_answer_function(self, state: _StepState) -> Callable[[Any], None]:
        def final_answer(answer: Any) -> None:
            """End the run with ``answer``."""
            plain = to_plain_data(answer)  # raises into model code, which can fix its answer
            size = len(json.dumps(plain))
            if size > MAX_ANSWER_CHARS:
                raise NotPlainData(
                    f"final_answer() got {size} characters of data; the limit is {MAX_ANSWER_CHARS}. "
                    "Return the result, not the bulk data: a summary, or save the rows with a tool "
                    "and return where they are")
            state.final_answer_called = True
            state.final_answer = plain
            raise _FinalAnswerGiven()

        return final_answer

    def _tool_function(self, name: str, func: Callable[..., Any], state: _StepState) -> Callable[..., Any]:
        """A plain function around a tool: model code gets no handle on the tool object,
        on its exceptions (``AttributeError.obj``, arguments) or on the objects it returns."""

        def call_tool(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            arguments = _describe_arguments(args, kwargs, self._safe_repr)
            failure: BaseException | None = None
            try:
                result = copy.deepcopy(func(*args, **kwargs))
            except self._reraise:
                raise
            except Exception as exc:  # noqa: BLE001 - reported to model code, rebuilt below
                failure = _model_safe_exception(exc)
            duration = time.perf_counter() - started
            if failure is not None:
                state.tool_calls.append(ToolCall(name, arguments, duration, None,
                                                 clip_message(f"{type(failure).__name__}: {failure}")))
                raise failure  # outside the except block: no __context__ to the original
            state.tool_calls.append(ToolCall(name, arguments, duration, len(self._safe_repr(result)), None))
            return result

        call_tool.__name__ = name
        call_tool.__qualname__ = name
        return call_tool


_REBUILDABLE = (ArithmeticError, AssertionError, AttributeError, ImportError, LookupError,
                NameError, NotImplementedError, OSError, RuntimeError, TypeError, ValueError)


def _model_safe_exception(exc: Exception) -> Exception:
    """The same kind of error with only its message: no host object rides along."""
    message = _plain_message(exc)
    kind = type(exc)
    if kind.__module__ == "builtins" and issubclass(kind, _REBUILDABLE):
        scalar_args = all(type(a) in (str, int, float, bool, type(None)) for a in exc.args)
        try:
            return kind(*exc.args) if scalar_args else kind(message)
        except Exception:  # noqa: BLE001 - constructors with required arguments (UnicodeError)
            pass
    return ToolError(f"{kind.__name__}: {message}")


def clip_message(text: str, limit: int = _MAX_MESSAGE_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more characters]"


def _plain_message(exc: Exception) -> str:
    try:
        return str(exc)
    except Exception:  # noqa: BLE001
        return f"<unprintable {type(exc).__name__}>"


def _min_limit(a: float | None, b: float | None) -> float | None:
    limits = [x for x in (a, b) if x is not None]
    return min(limits) if limits else None


def _describe_arguments(args: tuple[Any, ...], kwargs: dict[str, Any],
                        safe_repr: Callable[[Any, int], str]) -> str:
    parts = [safe_repr(a, _MAX_ARGUMENT_REPR) for a in args]
    parts += [f"{k}={safe_repr(v, _MAX_ARGUMENT_REPR)}" for k, v in kwargs.items()]
    return ", ".join(parts)


def _model_traceback(exc: BaseException, compiled: CompiledCode) -> str:
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
