"""CodeAgentOperator: one agentic step between fixed pipeline tasks.

Thin by design: it turns Airflow things (a connection, templated fields,
XCom, the task's timeout and kill signal) into a ``CodeAgent`` run and maps
the run's status back to a task outcome.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.common.compat.sdk import AirflowException, AirflowTaskTimeout
from airflow.sdk import BaseOperator

from airflow_codeagent.agent.loop import AgentRun, CodeAgent, check_limits
from airflow_codeagent.agent.modes import check_action_options
from airflow_codeagent.agent.trace import RunStatus, fit_to_size
from airflow_codeagent.airflow_compat import AirflowTaskTerminated, native_template_env
from airflow_codeagent.hooks.litellm import LiteLLMHook
from airflow_codeagent.models.retry import RetryPolicy
from airflow_codeagent.operators.journal import journal_for
from airflow_codeagent.operators.redaction import redact_with_airflow_masker
from airflow_codeagent.plugins.links import AgentTraceLink
from airflow_codeagent.sandbox.policy import DEFAULT_AUTHORIZED_IMPORTS
from airflow_codeagent.tools.base import Tool, Toolkit, expand_tools

if TYPE_CHECKING:
    import jinja2
    from airflow.sdk import Context

TRACE_XCOM_KEY = "codeagent_trace"
_ON_CAP_CHOICES = ("fail", "succeed_with_partial")
_APPROVAL_CHOICES = ("none", "required")


class CodeAgentOperator(BaseOperator):
    """Run a code-writing LLM agent on ``prompt`` with ``inputs`` as sandbox variables.

    The final answer is the task's return value (XCom ``return_value``); the
    trace is pushed to XCom ``codeagent_trace`` after every step. A run that
    ends on a cap fails the task with a one-line reason, unless
    ``on_max_steps``/``on_timeout``/``on_budget_exceeded`` is
    ``"succeed_with_partial"``.

    With ``approval="required"`` no side-effecting tool call is executed: each
    is staged as an intent (XCom ``codeagent_intents``) for a human to approve;
    ``airflow_codeagent.approval.agent_with_approval`` adds the approval and
    apply steps.
    """

    template_fields: Sequence[str] = ("prompt", "inputs", "model", "instructions")
    template_ext: Sequence[str] = (".sql", ".md", ".txt")
    template_fields_renderers: ClassVar[dict[str, str]] = {
        "prompt": "md", "instructions": "md", "inputs": "json"}
    ui_color = "#ede7f6"
    # The "Agent trace" button: opens the task instance's trace tab (airflow_codeagent.plugins).
    operator_extra_links = (AgentTraceLink(),)

    def __init__(
        self,
        *,
        prompt: str,
        llm_conn_id: str = LiteLLMHook.default_conn_name,
        model: str | None = None,
        inputs: Mapping[str, Any] | None = None,
        tools: Iterable[Tool | Toolkit | Callable[..., Any]] = (),
        max_steps: int = 10,
        authorized_imports: Collection[str] = DEFAULT_AUTHORIZED_IMPORTS,
        on_max_steps: str = "fail",
        on_timeout: str = "fail",
        on_budget_exceeded: str = "fail",
        max_run_seconds: float | None = None,
        step_timeout_seconds: float | None = 60.0,
        max_input_tokens: int | None = None,
        max_output_tokens: int | None = None,
        max_cost_usd: float | None = None,
        final_answer_fallback: bool = True,
        instructions: str | None = None,
        sandbox: str = "isolated",
        retry: RetryPolicy | None = None,
        max_trace_bytes: int = 1_000_000,
        durable_replay: bool = True,
        replay_storage: str | None = None,
        compaction: str = "llm",
        max_prompt_tokens: int | None = None,
        approval: str = "none",
        action_mode: str = "code",
        code_format: str = "markdown",
        structured_output: str = "auto",
        parse_retries: int = 0,
        repeat_temperature: float | None = 0.7,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if approval not in _APPROVAL_CHOICES:
            raise ValueError(f"approval must be one of {_APPROVAL_CHOICES}, got {approval!r}")
        for name, value in (("on_max_steps", on_max_steps), ("on_timeout", on_timeout),
                            ("on_budget_exceeded", on_budget_exceeded)):
            if value not in _ON_CAP_CHOICES:
                raise ValueError(f"{name} must be one of {_ON_CAP_CHOICES}, got {value!r}")
        check_limits(max_steps=max_steps, max_run_seconds=max_run_seconds,
                     step_timeout_seconds=step_timeout_seconds, max_input_tokens=max_input_tokens,
                     max_output_tokens=max_output_tokens, max_cost_usd=max_cost_usd)
        check_action_options(action_mode, code_format, structured_output)
        if max_trace_bytes < 10_000:
            raise ValueError(f"max_trace_bytes must be at least 10000, got {max_trace_bytes}")
        self.prompt = prompt
        self.llm_conn_id = llm_conn_id
        self.model = model
        self.inputs = inputs
        self._tool_items = list(tools)  # toolkits kept: they know how to preview their side effects
        self.tools = expand_tools(self._tool_items)
        self.max_steps = max_steps
        self.authorized_imports = list(authorized_imports)
        self.on_max_steps = on_max_steps
        self.on_timeout = on_timeout
        self.on_budget_exceeded = on_budget_exceeded
        self.max_run_seconds = max_run_seconds
        self.step_timeout_seconds = step_timeout_seconds
        self.max_input_tokens = max_input_tokens
        self.max_output_tokens = max_output_tokens
        self.max_cost_usd = max_cost_usd
        self.final_answer_fallback = final_answer_fallback
        self.instructions = instructions
        self.sandbox = sandbox
        self.retry = retry
        self.max_trace_bytes = max_trace_bytes
        self.durable_replay = durable_replay
        self.replay_storage = replay_storage
        self.compaction = compaction
        self.max_prompt_tokens = max_prompt_tokens
        self.approval = approval
        self.action_mode = action_mode
        self.code_format = code_format
        self.structured_output = structured_output
        self.parse_retries = parse_retries
        self.repeat_temperature = repeat_temperature
        self._agent: CodeAgent | None = None

    # -- templating ---------------------------------------------------------

    def _do_render_template_fields(self, parent: Any, template_fields: Iterable[str],
                                   context: Context, jinja_env: jinja2.Environment,
                                   seen_oids: set[int]) -> None:
        """Render ``inputs`` with a native Jinja environment.

        ``{"orders": "{{ ti.xcom_pull('extract') }}"}`` must reach the sandbox
        as the list upstream returned, not as its string form, whatever the
        DAG's ``render_template_as_native_obj`` says.
        """
        fields = list(template_fields)
        if parent is not self or "inputs" not in fields:
            super()._do_render_template_fields(parent, fields, context, jinja_env, seen_oids)
            return
        fields.remove("inputs")
        super()._do_render_template_fields(parent, fields, context, jinja_env, seen_oids)
        self._rendering_native = True
        try:
            super()._do_render_template_fields(parent, ["inputs"], context,
                                               _native_env(self, jinja_env), seen_oids)
        finally:
            self._rendering_native = False

    def _render(self, template: jinja2.Template, context: Context, dag: Any = None) -> Any:
        if getattr(self, "_rendering_native", False):
            from airflow.sdk.definitions.context import render_template_as_native

            return render_template_as_native(template, context)
        return super()._render(template, context, dag=dag)

    # -- execution ----------------------------------------------------------

    def execute(self, context: Context) -> Any:
        inputs = self._inputs(context)
        hook = LiteLLMHook(self.llm_conn_id)
        tools, stager = self.tools, None
        if self.approval == "required":
            from airflow_codeagent.approval.intents import staging_tools

            tools, stager = staging_tools(self._tool_items)
        agent = CodeAgent(
            hook.get_model(self.model, retry=self.retry),
            tools=tools,
            max_steps=self.max_steps,
            authorized_imports=self.authorized_imports,
            max_run_seconds=self.max_run_seconds,
            step_timeout_seconds=self.step_timeout_seconds,
            max_input_tokens=self.max_input_tokens,
            max_output_tokens=self.max_output_tokens,
            max_cost_usd=self.max_cost_usd,
            final_answer_fallback=self.final_answer_fallback,
            instructions=self.instructions,
            sandbox=self.sandbox,
            interrupt_exceptions=(AirflowTaskTimeout, AirflowTaskTerminated),
            compaction=self.compaction,
            max_prompt_tokens=self.max_prompt_tokens,
            action_mode=self.action_mode,
            code_format=self.code_format,
            structured_output=self.structured_output,
            parse_retries=self.parse_retries,
            repeat_temperature=self.repeat_temperature,
        )
        self._agent = agent
        ti = context["ti"]

        def publish(trace: dict[str, Any]) -> None:
            ti.xcom_push(key=TRACE_XCOM_KEY, value=self._prepare_trace(trace))

        journal = journal_for(context, self.replay_storage) if self.durable_replay else None
        if self.durable_replay and journal is None:
            self.log.info("Durable replay is off: this Airflow has no task state store; set "
                          "replay_storage to an object storage URL to keep paid steps across retries.")
        try:
            run = agent.run(self.prompt, inputs, on_step=publish, journal=journal)
        finally:
            self._agent = None
            if stager is not None:
                from airflow_codeagent.approval.intents import INTENTS_XCOM_KEY

                ti.xcom_push(key=INTENTS_XCOM_KEY, value=stager.to_xcom())
                self.log.info("Staged %d intent(s) for approval: %s", len(stager.intents),
                              ", ".join(f"#{i.id} {i.tool}" for i in stager.intents) or "none")
        result = self._outcome(run)
        if journal is not None:
            journal.clear()  # succeeded: nothing will be replayed
        return result

    def _inputs(self, context: Context) -> dict[str, Any]:
        if self.inputs is None:
            return {}
        if not isinstance(self.inputs, Mapping):
            raise TypeError(
                f"inputs must be a dict of variable name -> value, got {type(self.inputs).__name__}; "
                "e.g. inputs={'orders': \"{{ ti.xcom_pull('extract_orders') }}\"}"
            )
        return dict(self.inputs)

    def _prepare_trace(self, trace: dict[str, Any]) -> dict[str, Any]:
        return fit_to_size(redact_with_airflow_masker(trace), self.max_trace_bytes)

    def _outcome(self, run: AgentRun) -> Any:
        self._log_summary(run)
        policy = {
            RunStatus.MAX_STEPS: self.on_max_steps,
            RunStatus.TIMEOUT: self.on_timeout,
            RunStatus.BUDGET_EXCEEDED: self.on_budget_exceeded,
        }.get(run.status, "fail")
        if run.status is RunStatus.FINAL_ANSWER or policy == "succeed_with_partial":
            if run.status is not RunStatus.FINAL_ANSWER:
                self.log.warning("Agent stopped with status %s; succeeding with the partial answer "
                                 "as configured.", run.status.value)
            return _json_answer(run.answer)
        raise AirflowException(_failure_reason(run, self.max_steps))

    def _log_summary(self, run: AgentRun) -> None:
        """Write the run to the task log: XComs of a failed try are cleared on retry, logs are not."""
        totals = run.trace["totals"]
        cost = "unknown" if totals["cost_usd"] is None else f"{totals['cost_usd']:.6f} USD"
        self.log.info("Agent run %s: status=%s steps=%d/%d llm_calls=%d tokens=%d in/%d out "
                      "cost=%s retries=%d duration=%.1fs", run.trace["run_id"], run.status.value,
                      run.steps, self.max_steps, totals["llm_calls"], totals["input_tokens"],
                      totals["output_tokens"], cost, totals["retries"], run.trace["duration_s"] or 0)
        for step in run.trace["steps"]:
            error = step["error"]
            outcome = (f"error {error['type']}: {_first_line(error['message'])}" if error
                       else "final_answer" if step["final_answer_called"] else "ok")
            code = _first_line(step["code"] or "(no code)")
            self.log.info("  step %d [%s] %s | %s", step["index"], step["kind"], code, outcome)

    def on_kill(self) -> None:
        if self._agent is not None:
            self._agent.cancel()


def _first_line(text: str, limit: int = 160) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[:limit] + "..."


def _failure_reason(run: AgentRun, max_steps: int) -> str:
    reason = f"agent stopped with status {run.status.value} after {run.steps} steps (max_steps={max_steps})"
    if run.error:
        reason += f": {_first_line(run.error)}"
    errors = [s["error"] for s in run.trace["steps"] if s["error"]]
    if errors:
        reason += f"; last step error: {errors[-1]['type']}: {_first_line(errors[-1]['message'])}"
    return reason


def _json_answer(answer: Any) -> Any:
    try:
        json.dumps(answer, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise AirflowException(
            f"the agent's final answer is a {type(answer).__name__}, which cannot be stored in XCom as "
            f"JSON ({exc}). Ask for plain data in the prompt, e.g. 'return a dict of numbers' or "
            "'convert dates to ISO strings before final_answer'."
        ) from None
    return answer


def _native_env(task: BaseOperator, jinja_env: jinja2.Environment) -> jinja2.Environment:
    from jinja2.nativetypes import NativeEnvironment

    if isinstance(jinja_env, NativeEnvironment):
        return jinja_env
    return native_template_env(task.get_dag() if hasattr(task, "get_dag") else getattr(task, "dag", None))
