"""The agent loop: Thought -> Code -> Observation until an answer or a cap.

Every way a run can end is a status, not an exception: a scheduled pipeline
needs to know *why* an agent stopped (out of steps, out of budget, out of
time, the model API down) and keep what it did until then.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from airflow_codeagent.agent import compaction
from airflow_codeagent.agent.compaction import COMPACTION_METHODS
from airflow_codeagent.agent.actions import CodeAction, ParseFailure, ToolCallAction, acted_text
from airflow_codeagent.agent.budget import Budget
from airflow_codeagent.agent.memory import DATA_SHAPE_ERRORS, LOOK_AT_THE_DATA, Memory
from airflow_codeagent.agent.modes import make_action_mode
from airflow_codeagent.agent.pasted_stubs import blank_pasted_stubs
from airflow_codeagent.agent.tool_calls import run_tool_call
from airflow_codeagent.agent.prompts import describe_inputs, describe_parameters, describe_value
from airflow_codeagent.agent.replay import CallJournal, SideEffectLedger, request_fingerprint
from airflow_codeagent.agent.trace import Redactor, RunStatus, Step, StepKind, Trace, now_iso
from airflow_codeagent.agent.truncation import truncate_middle
from airflow_codeagent.models.completion import Completion, LiteLLMModel, ModelCallError
from airflow_codeagent.models.retry import RetryPolicy
from airflow_codeagent.sandbox.observation import ExecutionError, Observation
from airflow_codeagent.sandbox.policy import DEFAULT_AUTHORIZED_IMPORTS
from airflow_codeagent.sandbox.executor import Executor, executor_factory
from airflow_codeagent.sandbox.instrument import FINAL_ANSWER_NAME
from airflow_codeagent.tools.base import Tool, Toolkit, expand_tools

log = logging.getLogger(__name__)

StepCallback = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class AgentRun:
    """The outcome of ``CodeAgent.run``: how it ended, the answer, and the full trace."""

    status: RunStatus
    answer: Any
    trace: dict[str, Any]

    @property
    def error(self) -> str | None:
        return self.trace["error"]

    @property
    def steps(self) -> int:
        return len(self.trace["steps"])

    @property
    def answer_is_partial(self) -> bool:
        """True when the answer came from the last-chance call after a cap, not the loop."""
        return self.trace["answer_source"] == "fallback"


def _positive(name: str, value: float | None, *, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive number{' or None' if allow_none else ''}, got {value!r}")


def check_limits(*, max_steps: int, max_run_seconds: float | None = None,
                 step_timeout_seconds: float | None = None, max_input_tokens: int | None = None,
                 max_output_tokens: int | None = None, max_cost_usd: float | None = None) -> None:
    """Refuse caps that cannot work, naming the argument; callers check at definition time."""
    if not isinstance(max_steps, int) or isinstance(max_steps, bool) or max_steps < 1:
        raise ValueError(f"max_steps must be an integer >= 1, got {max_steps!r}")
    for name, value in (("max_run_seconds", max_run_seconds),
                        ("step_timeout_seconds", step_timeout_seconds),
                        ("max_input_tokens", max_input_tokens),
                        ("max_output_tokens", max_output_tokens),
                        ("max_cost_usd", max_cost_usd)):
        _positive(name, value)


class CodeAgent:
    """An LLM that solves a task by writing Python that runs in a sandbox.

    Caps (``max_steps``, ``max_run_seconds``, token and cost budgets) end the
    run with their own status. With ``final_answer_fallback`` a run that hit
    ``max_steps`` or ``timeout`` makes one more, clearly labelled call asking
    the model for its best answer from what it has.
    """

    def __init__(
        self,
        model: str | LiteLLMModel,
        *,
        model_kwargs: Mapping[str, Any] | None = None,
        tools: Sequence[Tool | Toolkit | Callable[..., Any]] = (),
        max_steps: int = 10,
        authorized_imports: Iterable[str] = DEFAULT_AUTHORIZED_IMPORTS,
        max_run_seconds: float | None = None,
        step_timeout_seconds: float | None = 60.0,
        max_input_tokens: int | None = None,
        max_output_tokens: int | None = None,
        max_cost_usd: float | None = None,
        final_answer_fallback: bool = True,
        fallback_timeout_seconds: float = 60.0,
        max_observation_chars: int = 4_000,
        max_output_chars: int = 100_000,
        retry: RetryPolicy | None = None,
        instructions: str | None = None,
        secrets: Iterable[str] = (),
        sandbox: str = "restricted",
        interrupt_exceptions: tuple[type[BaseException], ...] = (),
        max_prompt_tokens: int | None = None,
        compaction: str = "llm",
        keep_recent_steps: int = 2,
        stop_sequences: Sequence[str] | None = ("Observation:",),
        action_mode: str = "code",
        code_format: str = "markdown",
        structured_output: str = "auto",
        parse_retries: int = 0,
        repeat_temperature: float | None = 0.7,
    ) -> None:
        check_limits(max_steps=max_steps, max_run_seconds=max_run_seconds,
                     step_timeout_seconds=step_timeout_seconds, max_input_tokens=max_input_tokens,
                     max_output_tokens=max_output_tokens, max_cost_usd=max_cost_usd)
        _positive("fallback_timeout_seconds", fallback_timeout_seconds, allow_none=False)
        _positive("max_prompt_tokens", max_prompt_tokens)
        if compaction not in COMPACTION_METHODS:
            raise ValueError(f"compaction must be one of {COMPACTION_METHODS}, got {compaction!r}")
        if not isinstance(keep_recent_steps, int) or keep_recent_steps < 1:
            raise ValueError(f"keep_recent_steps must be an integer >= 1, got {keep_recent_steps!r}")
        if isinstance(model, LiteLLMModel):
            if model_kwargs:
                raise ValueError("pass model_kwargs to LiteLLMModel, not to CodeAgent, when giving a model object")
            self.model = model
        else:
            self.model = LiteLLMModel(model, model_kwargs, retry=retry)
        if max_cost_usd is not None:
            _require_known_price(self.model)
        self.tools = expand_tools(tools)
        self.mode = make_action_mode(action_mode, code_format, self.model, self.tools, structured_output)
        if not isinstance(parse_retries, int) or parse_retries < 0:
            raise ValueError(f"parse_retries must be an integer >= 0, got {parse_retries!r}")
        self.parse_retries = parse_retries
        if repeat_temperature is not None and (
                not isinstance(repeat_temperature, (int, float)) or isinstance(repeat_temperature, bool)
                or not 0 <= repeat_temperature <= 2):
            raise ValueError(f"repeat_temperature must be a number from 0 to 2, or None, got {repeat_temperature!r}")
        self.repeat_temperature = repeat_temperature
        names = [t.name for t in self.tools]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"two tools share the name(s) {duplicates}; give each tool a unique name")
        if isinstance(authorized_imports, str):
            raise ValueError("authorized_imports must be a list of module names, not one string")
        self.authorized_imports = tuple(authorized_imports)
        self.max_steps = max_steps
        self.max_run_seconds = max_run_seconds
        self.step_timeout_seconds = step_timeout_seconds
        self.max_input_tokens = max_input_tokens
        self.max_output_tokens = max_output_tokens
        self.max_cost_usd = max_cost_usd
        self.budget = Budget(max_input_tokens, max_output_tokens, max_cost_usd)
        self.max_prompt_tokens = max_prompt_tokens
        self.compaction = compaction
        self.keep_recent_steps = keep_recent_steps
        # Ending the reply where the model would start inventing an observation saves output
        # tokens; a model_kwargs "stop" wins.
        self.stop_sequences = list(stop_sequences or [])
        self.final_answer_fallback = final_answer_fallback
        self.fallback_timeout_seconds = fallback_timeout_seconds
        self.max_observation_chars = max_observation_chars
        self.max_output_chars = max_output_chars
        self.instructions = instructions
        self._secrets = [*self.model.secrets, *secrets]
        self.sandbox = sandbox
        self._executor_factory = executor_factory(sandbox)
        self._executor: Executor | None = None
        self._cancel_requested = threading.Event()
        # Raised by the host into running code (Airflow's task timeout): they
        # end the run instead of becoming an observation model code can catch.
        self.interrupt_exceptions = tuple(interrupt_exceptions)

    def prompt_budget(self) -> int:
        """Tokens a prompt may use before older steps are compacted.

        The model's context window (from litellm's model table; 8192 when the
        model is unknown, e.g. a local server) less room for the reply.
        """
        if self.max_prompt_tokens is not None:
            return self.max_prompt_tokens
        reply_room = int(self.model.model_kwargs.get("max_tokens") or 1024)
        return max(1024, (self.model.context_window() or 8192) - reply_room)

    @property
    def cancel_requested(self) -> bool:
        return self._cancel_requested.is_set()

    def limits(self) -> dict[str, Any]:
        return {
            "max_steps": self.max_steps,
            "max_run_seconds": self.max_run_seconds,
            "step_timeout_seconds": self.step_timeout_seconds,
            "max_input_tokens": self.max_input_tokens,
            "max_output_tokens": self.max_output_tokens,
            "max_cost_usd": self.max_cost_usd,
            "max_observation_chars": self.max_observation_chars,
            "final_answer_fallback": self.final_answer_fallback,
            "authorized_imports": list(self.authorized_imports),
            "max_retries": self.model.retry.max_retries,
            "max_prompt_tokens": self.prompt_budget(),
            "compaction": self.compaction,
            "sandbox": self.sandbox,
            "code_format": getattr(self.mode, "code_format", None),
            "structured_output": getattr(self.mode, "structured_output", None),
            "parse_retries": self.parse_retries,
            "repeat_temperature": self.repeat_temperature,
        }

    def cancel(self) -> None:
        """Stop the current run: model code at its next tick, the loop before its next call.

        Thread-safe, and safe from a signal handler (Airflow's ``on_kill``).
        """
        self._cancel_requested.set()
        if self._executor is not None:
            self._executor.cancel()

    def run(self, task: str, inputs: Mapping[str, Any] | None = None, *,
            on_step: StepCallback | None = None, journal: CallJournal | None = None) -> AgentRun:
        """Solve ``task``; ``inputs`` become variables in the sandbox.

        ``on_step`` receives the redacted trace document after every step
        (and once at the end), which is how a caller persists progress.
        ``journal`` replays model calls a previous attempt already paid for.
        """
        if not isinstance(task, str) or not task.strip():
            raise ValueError("task must be a non-empty string saying what the agent should do")
        inputs = dict(inputs or {})
        self._cancel_requested.clear()
        ledger = SideEffectLedger(journal)
        tool_functions = {t.name: _gated(t, ledger) if t.side_effect else t.func for t in self.tools}
        executor = self._executor_factory(
            tools=tool_functions,
            variables=inputs,
            authorized_imports=self.authorized_imports,
            step_timeout_s=self.step_timeout_seconds,
            output_limit_chars=self.max_output_chars,
            reraise=self.interrupt_exceptions,
        )
        self._executor = executor
        input_descriptions = describe_inputs(inputs)
        trace = Trace(
            task=task, model=self.model.model, action_mode=self.mode.name, limits=self.limits(),
            tools=[t.name for t in self.tools], inputs=input_descriptions,
            redactor=Redactor(self._secrets),
        )
        memory = Memory(
            self.mode.system_prompt(self.tools, input_descriptions, executor.authorized_imports,
                                    self.instructions),
            task, self.max_observation_chars,
        )
        try:
            return _Run(self, executor, trace, memory, on_step, journal, ledger, tool_functions).execute()
        finally:
            executor.close()
            self._executor = None


def _require_known_price(model: LiteLLMModel) -> None:
    import litellm

    if "input_cost_per_token" in model.model_kwargs:
        return
    try:
        info = litellm.get_model_info(model.model)
    except Exception:  # noqa: BLE001 - litellm raises several types for an unmapped model
        info = None
    if not info or info.get("input_cost_per_token") is None:
        raise ValueError(
            f"max_cost_usd is set but litellm has no price for {model.model!r}, so the budget "
            "could not be enforced. Pass input_cost_per_token and output_cost_per_token in "
            "model_kwargs, or cap tokens with max_input_tokens/max_output_tokens instead."
        )


class _Run:
    """One execution of the loop; holds the per-run state ``CodeAgent`` must not."""

    def __init__(self, agent: CodeAgent, executor: Executor, trace: Trace, memory: Memory,
                 on_step: StepCallback | None, journal: CallJournal | None,
                 ledger: SideEffectLedger, tool_functions: Mapping[str, Callable[..., Any]]) -> None:
        self.tool_functions = tool_functions
        self.side_effect_tools = {t.name for t in agent.tools if t.side_effect}
        self.journal = journal
        self.ledger = ledger
        self.agent = agent
        self.executor = executor
        self.trace = trace
        self.memory = memory
        self.on_step = on_step
        self.started = time.monotonic()
        self.deadline = None if agent.max_run_seconds is None else self.started + agent.max_run_seconds
        self.prompt_budget = agent.prompt_budget()
        self.prices = agent.model.prices()
        self.tool_parameters = {t.name: describe_parameters(t.json_schema()["function"]) for t in agent.tools}
        self.provided_names = frozenset({*(t.name for t in agent.tools), FINAL_ANSWER_NAME})

    def execute(self) -> AgentRun:
        try:
            status, error = self._loop()
            if status in (RunStatus.MAX_STEPS, RunStatus.TIMEOUT) and self.agent.final_answer_fallback:
                self._fallback(status)
        except BaseException as exc:
            # The host stopped us (task timeout, kill, Ctrl-C): publish what was done, then go.
            self._end(RunStatus.ERROR, f"run interrupted by {type(exc).__name__}: {exc}".rstrip(": "))
            raise
        document = self._end(status, error)
        usage = self.trace.usage
        log.info("agent run ended: status=%s steps=%d llm_calls=%d input_tokens=%d "
                 "output_tokens=%d cost_usd=%s", status.value, len(self.trace.steps),
                 usage.llm_calls, usage.input_tokens, usage.output_tokens, usage.cost_usd)
        return AgentRun(status, self.trace.answer, document)

    def _end(self, status: RunStatus, error: str | None) -> dict[str, Any]:
        self.trace.status = status
        self.trace.error = error
        self.trace.ended_at = now_iso()
        self.trace.duration_s = time.monotonic() - self.started
        return self._publish()

    def _publish(self) -> dict[str, Any]:
        document = self.trace.to_dict()
        if self.on_step is not None:
            self.on_step(document)
        return document

    def _time_left(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def _loop(self) -> tuple[RunStatus, str | None]:
        previous_code: str | None = None
        previous_failed = False
        failures: dict[str, _Failure] = {}  # every failed action so far, to recognise A, B, A, B too
        last_success: _Success | None = None  # the previous step's action, when it worked
        for index in range(1, self.agent.max_steps + 1):
            if self.agent.cancel_requested:
                return RunStatus.ERROR, "run cancelled"
            if self._run_deadline_passed():
                return RunStatus.TIMEOUT, f"the run's {self.agent.max_run_seconds:g} s time limit was reached"
            step = Step(index=index, kind=StepKind.ACTION, started_at=now_iso())
            try:
                self._compact_if_needed(index)
                completion, action = self._act(self.memory.messages(), step, self.deadline, str(index),
                                               failures, last_success)
            except ModelCallError as exc:
                return self._model_failure(step, exc)
            except _BudgetRefusal as refusal:
                return RunStatus.BUDGET_EXCEEDED, str(refusal)
            step.thought = action.thought or None
            acted = acted_text(completion.text)  # what the model imagined after its action is dropped
            result = ""
            if isinstance(action, CodeAction):
                repeat_of_failed = previous_failed if action.code == previous_code else None
                observation = self._execute(step, action.code, self._time_left())
                result = self.memory.add_observation(index, acted, observation, repeat_of_failed=repeat_of_failed,
                                                     notes=step.notes)
                previous_code, previous_failed = action.code, observation.error is not None
            elif isinstance(action, ToolCallAction):
                result = self._call_tool(step, action)
                self.memory.add_step(index, acted, result, tool_call=_native_call(action))
            else:
                message = self._parse_feedback(action)
                step.error = ExecutionError("ParseError", message, "").to_dict()
                self.memory.add_step(index, acted, f"Error: {message}")
            self._finish_step(step)
            failure = _Failure.of(index, completion, action, step.error)
            last_success = _Success.of(index, completion, action, result, step.error,
                                       self.agent.mode.final_answer_how())
            if failure is not None:
                failures.setdefault(failure.action_key, failure)
            elif step.error is None:
                failures.clear()  # state may have changed: what failed before may work now
            if step.final_answer_called:
                self.trace.answer = step.final_answer
                self.trace.answer_source = "final_answer"
                return RunStatus.FINAL_ANSWER, None
            if self.agent.cancel_requested:
                return RunStatus.ERROR, "run cancelled"
            if self._run_deadline_passed():
                return RunStatus.TIMEOUT, f"the run's {self.agent.max_run_seconds:g} s time limit was reached"
        return RunStatus.MAX_STEPS, f"no final answer after {self.agent.max_steps} steps"

    def _parse_feedback(self, failure: ParseFailure) -> str:
        """What the model is told about a reply that held no usable action."""
        steps = self.trace.steps
        if failure.prose_only and steps and steps[-1].kind is StepKind.ACTION and steps[-1].error is None:
            # Small models answer a good observation in prose, and the general format
            # reminder sends them back to the tools; name the one way to finish instead.
            mode = self.agent.mode
            return (f"Your reply had no {mode.action_noun}, so nothing was executed. If you already "
                    f"have the answer, do not explore further: {mode.final_answer_how()}")
        return failure.message

    def _run_deadline_passed(self) -> bool:
        left = self._time_left()
        return left is not None and left <= 0

    def _act(self, messages: list[dict[str, Any]], step: Step, deadline: float | None, slot: str,
             failures: Mapping[str, _Failure] | None = None, last_success: _Success | None = None,
             ) -> tuple[Completion, CodeAction | ToolCallAction | ParseFailure]:
        """Ask the model and parse its action, re-asking within the step when it is no use.

        An unparseable reply is re-asked up to ``parse_retries`` times. A reply
        that repeats an action that already failed (the last step's, or one
        further back: small models also alternate between two failing
        actions), or the last step's action that worked, is re-asked once,
        sampled at ``repeat_temperature``: at temperature 0 a model shown the
        same context answers the same, so every later step would repeat it.
        A small model that printed the answer often reruns that code until the
        step cap instead of finishing. Asked twice, the action runs as sent: the
        world may have changed since (a table still loading).
        """
        completion = self._call_model(messages, step, deadline, slot)
        action = self.agent.mode.parse(completion)
        for attempt in range(1, self.agent.parse_retries + 1):
            if not isinstance(action, ParseFailure):
                break
            step.rejected_outputs.append(completion.transcript)
            messages = [*messages, {"role": "assistant", "content": completion.text},
                        {"role": "user", "content": f"Error: {self._parse_feedback(action)}"}]
            completion = self._call_model(messages, step, deadline, f"{slot}.retry{attempt}")
            action = self.agent.mode.parse(completion)
        key = _action_key(completion, action)
        repeated: _Failure | _Success | None = (failures or {}).get(key)
        if repeated is None and last_success is not None and last_success.action_key == key:
            repeated = last_success
        if repeated is not None and self.agent.repeat_temperature is not None:
            step.rejected_outputs.append(completion.transcript)
            messages = [*messages, {"role": "assistant", "content": completion.text},
                        {"role": "user", "content": repeated.repeat_note()}]
            try:
                resampled = self._call_model(messages, step, deadline, f"{slot}.resample",
                                             temperature=self.agent.repeat_temperature)
            except ModelCallError as exc:
                if exc.cancelled:
                    raise
                # e.g. a model that refuses a temperature: the repeat runs as sent, as without resampling
                log.info("resampling a repeated action failed (%s); running it as sent", exc)
                step.rejected_outputs.pop()
                return completion, action
            completion, action = resampled, self.agent.mode.parse(resampled)
        return completion, action

    def _call_tool(self, step: Step, action: ToolCallAction) -> str:
        return run_tool_call(action, self.tool_functions, step, self.agent.max_observation_chars,
                             self.tool_parameters)

    def _call_model(self, messages: list[dict[str, Any]], step: Step, deadline: float | None,
                    slot: str, *, temperature: float | None = None) -> Completion:
        """Replay the call from the journal, or size it against the budgets and make it."""
        model = self.agent.model
        fingerprint = request_fingerprint(model.model, messages, model.model_kwargs)
        replayed = self.journal.replay(slot, fingerprint) if self.journal else None
        if replayed is not None:
            completion, tool_results = replayed
            self.ledger.start_step(slot, tool_results)
            step.replayed = True
            self.trace.usage.replayed_calls += 1
            self._account(step, completion, billed=False)
            return completion
        plan = self.agent.budget.plan(self.trace.usage, model.count_tokens(messages),
                                      model.model_kwargs.get("max_tokens"), self.prices)
        if plan.refusal:
            raise _BudgetRefusal(plan.refusal)
        overrides: dict[str, Any] = {}
        if plan.max_tokens is not None:
            overrides["max_tokens"] = max(1, plan.max_tokens)
        if self.agent.stop_sequences and "stop" not in model.model_kwargs:
            # OpenAI takes at most 4; the mode's are a saving, the caller's are kept whole.
            room = max(0, 4 - len(self.agent.stop_sequences))
            overrides["stop"] = [*self.agent.stop_sequences, *self.agent.mode.stop_sequences[:room]]
        overrides.update(self.agent.mode.request_overrides())
        if temperature is not None:
            overrides["temperature"] = temperature
        try:
            completion = model.complete(messages, deadline=deadline, overrides=overrides or None,
                                        cancel=self.agent._cancel_requested)
        except ModelCallError as exc:
            step.retries = [*step.retries, *(r.to_dict() for r in exc.retries)]
            self.trace.usage.retries += len(exc.retries)
            raise
        if self.journal is not None:
            self.journal.record(slot, fingerprint, completion)
        self.ledger.start_step(slot, None)
        self._account(step, completion, billed=True)
        return completion

    def _account(self, step: Step, completion: Completion, *, billed: bool) -> None:
        step.add_model_call(completion.transcript, completion.input_tokens, completion.output_tokens,
                            completion.cost_usd, completion.latency_s,
                            [r.to_dict() for r in completion.retries])
        if billed:
            self.trace.usage.add_call(completion.input_tokens, completion.output_tokens,
                                      completion.cost_usd, len(completion.retries))

    def _compact_if_needed(self, before_step: int) -> None:
        """Replace the oldest steps by a summary when the prompt is over its budget."""
        if self.agent.compaction == "off":
            return
        model = self.agent.model
        tokens_before = model.count_tokens(self.memory.messages())
        turns = self.memory.compactable(self.agent.keep_recent_steps)
        if tokens_before <= self.prompt_budget or not turns:
            return
        variables = {name: describe_value(value) for name, value in self.executor.variables().items()}
        result = compaction.summarize(self.agent.compaction, model, self.memory.summary, turns, variables,
                                      deadline=self.deadline)
        self.memory.compact(turns, result.summary)
        record: dict[str, Any] = {
            "before_step": before_step,
            "steps": [turns[0].step, turns[-1].step],
            "method": self.agent.compaction,
            "prompt_tokens_before": tokens_before,
            "prompt_tokens_after": model.count_tokens(self.memory.messages()),
            "summary": result.summary,
            "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0 if result.completion is None else None,
        }
        if result.completion is not None:
            c = result.completion
            record.update(input_tokens=c.input_tokens, output_tokens=c.output_tokens, cost_usd=c.cost_usd)
            self.trace.usage.add_call(c.input_tokens, c.output_tokens, c.cost_usd, len(c.retries))
        self.trace.compactions.append(record)
        log.info("compacted steps %d-%d before step %d: prompt %d -> %d tokens", turns[0].step,
                 turns[-1].step, before_step, tokens_before, record["prompt_tokens_after"])

    def _execute(self, step: Step, code: str, time_limit_s: float | None) -> Observation:
        step.code = code
        runnable, step.notes = blank_pasted_stubs(code, self.provided_names)
        observation = self.executor.run(runnable, time_limit_s=time_limit_s)
        self._record_confinement()
        step.stdout = observation.stdout
        step.value = observation.value_repr
        step.error = None if observation.error is None else observation.error.to_dict()
        step.final_answer_called = observation.final_answer_called
        step.final_answer = observation.final_answer
        step.execution_s = observation.duration_s
        step.tool_calls = [c.to_dict() for c in observation.tool_calls]
        return observation

    def _record_confinement(self) -> None:
        """Put how the sandbox held the code into the trace; warn once about each guard that is missing."""
        confinement = self.executor.confinement()
        missing = {k: v for k, v in confinement.items() if v.startswith("not ")}
        for guard, why in missing.items():
            if self.trace.confinement.get(guard) != why:
                log.warning("the %s sandbox runs model code without its %s guard (%s)", self.agent.sandbox,
                            guard, why)
        self.trace.confinement = confinement

    def _finish_step(self, step: Step) -> None:
        step.ended_at = now_iso()
        for call in step.tool_calls:  # a side effect that really ran is marked in the trace
            if call["name"] in self.side_effect_tools:
                call["side_effect"] = True
        self.trace.steps.append(step)
        self._publish()

    def _record_model_error(self, step: Step, exc: ModelCallError) -> str:
        """Close ``step`` on a failed model call; return the message, with what to change if the mode knows."""
        message = self.agent.mode.explain_model_error(str(exc))
        step.error = ExecutionError("ModelCallError", message, "").to_dict()
        self._finish_step(step)
        return message

    def _model_failure(self, step: Step, exc: ModelCallError) -> tuple[RunStatus, str]:
        message = self._record_model_error(step, exc)
        if exc.cancelled:
            return RunStatus.ERROR, "run cancelled"
        if self._run_deadline_passed():
            return RunStatus.TIMEOUT, f"the run's time limit was reached during a model call: {message}"
        return RunStatus.ERROR, message

    def _fallback(self, status: RunStatus) -> None:
        reason = ("You have used all your steps." if status is RunStatus.MAX_STEPS
                  else "The time limit for this task has been reached.")
        step = Step(index=len(self.trace.steps) + 1, kind=StepKind.FINAL_ANSWER_FALLBACK,
                    started_at=now_iso())
        deadline = time.monotonic() + self.agent.fallback_timeout_seconds
        try:
            completion, action = self._act(
                self.memory.final_answer_request(reason, self.agent.mode.final_answer_how()),
                step, deadline, "fallback")
        except ModelCallError as exc:
            self._record_model_error(step, exc)
            return
        except _BudgetRefusal as refusal:
            log.info("no final-answer fallback call: %s", refusal)
            return
        step.thought = action.thought or None
        if isinstance(action, CodeAction):
            self._execute(step, action.code, self.agent.fallback_timeout_seconds)
        elif isinstance(action, ToolCallAction):
            self._call_tool(step, action)
        else:
            step.error = ExecutionError("ParseError", action.message, "").to_dict()
        if step.final_answer_called:
            self.trace.answer = step.final_answer
            self.trace.answer_source = "fallback"
        self._finish_step(step)


def _action_kind(action: CodeAction | ToolCallAction | ParseFailure) -> str:
    """What the repeat notes call the action."""
    return {CodeAction: "code", ToolCallAction: "tool call"}.get(type(action), "reply")


def _action_key(completion: Completion, action: CodeAction | ToolCallAction | ParseFailure) -> str:
    """What makes two actions the same: the code, the tool call, or the unparseable reply."""
    if isinstance(action, CodeAction):
        return f"code:{action.code.strip()}"
    if isinstance(action, ToolCallAction):
        return f"tool:{action.as_json()}"
    return f"reply:{acted_text(completion.text).strip()}"


# Failures that may not recur when the same action is sent again (a busy machine, a flaky
# service): those are run again as sent. A crash or a memory limit recurs: it is not here.
_TRANSIENT_ERRORS = ("StepInterrupted", "TimeoutError", "ConnectionError", "OSError", "ModelCallError")


@dataclass(frozen=True)
class _Failure:
    """The action of a step that failed, and how it failed, to recognise it when repeated."""

    step: int
    action_key: str
    kind: str
    error: str
    data_shape: bool = False  # an error that suggests the code assumed the data's format

    @classmethod
    def of(cls, step: int, completion: Completion, action: CodeAction | ToolCallAction | ParseFailure,
           error: Mapping[str, Any] | None) -> _Failure | None:
        if error is None:
            return None
        message = str(error.get("message", "")).split("\n", 1)[0][:300]
        kind_of_error = str(error.get("type"))
        if kind_of_error in _TRANSIENT_ERRORS or message.startswith(_TRANSIENT_ERRORS):
            return None
        return cls(step, _action_key(completion, action), _action_kind(action), f"{kind_of_error}: {message}",
                   kind_of_error in DATA_SHAPE_ERRORS)

    def repeat_note(self) -> str:
        look = f" {LOOK_AT_THE_DATA}" if self.kind == "code" and self.data_shape else ""
        return (f"Error: this {self.kind} is exactly the one from step {self.step}, which failed with "
                f"{self.error}. Sending it again would fail the same way, so it was not run. "
                f"Read the error, change what caused it, and reply with a different {self.kind}.{look}")


@dataclass(frozen=True)
class _Success:
    """The action of a step that ran without an error, to recognise it sent again."""

    step: int
    action_key: str
    kind: str
    result: str
    final_answer_how: str

    @classmethod
    def of(cls, step: int, completion: Completion, action: CodeAction | ToolCallAction | ParseFailure,
           result: str, error: Mapping[str, Any] | None, final_answer_how: str) -> _Success | None:
        if error is not None or isinstance(action, ParseFailure):
            return None
        result = result.removeprefix("Observation:\n").strip()
        return cls(step, _action_key(completion, action), _action_kind(action),
                   truncate_middle(result, _MAX_RESULT_IN_NOTE, "cut"), final_answer_how)

    def repeat_note(self) -> str:
        return (f"Note: this {self.kind} is exactly the one from step {self.step}, which worked and gave:\n"
                f"{self.result}\nIt was not run again: it would give the same. If that answers the task, "
                f"do not explore further: {self.final_answer_how} Otherwise reply with a different "
                f"{self.kind}.")


_MAX_RESULT_IN_NOTE = 400


def _native_call(action: ToolCallAction) -> dict[str, str] | None:
    if action.call_id is None:
        return None
    return {"id": action.call_id, "name": action.name, "arguments": json.dumps(action.arguments)}


def _gated(tool: Tool, ledger: SideEffectLedger) -> Callable[..., Any]:
    """A side-effecting tool routed through the replay ledger (not re-invoked on replay)."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return ledger.call(tool.name, tool.func, args, kwargs)

    return call


class _BudgetRefusal(Exception):
    """The next call would cross a budget; the run ends with ``budget_exceeded``."""
