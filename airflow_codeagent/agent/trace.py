"""The run record: what the agent did, step by step, as one JSON document.

The trace is the product's audit log. It is built incrementally so that a
run killed at step 7 still shows steps 1-6, and every copy that leaves the
process is redacted and size-capped.
"""

from __future__ import annotations

import enum
import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pendulum

from airflow_codeagent.agent.truncation import truncate_middle

SCHEMA = "airflow_codeagent.trace/1"
REDACTED = "***"


class RunStatus(str, enum.Enum):
    """How a run ended. ``running`` only appears in traces published mid-run."""

    RUNNING = "running"
    FINAL_ANSWER = "final_answer"
    MAX_STEPS = "max_steps"
    BUDGET_EXCEEDED = "budget_exceeded"
    TIMEOUT = "timeout"
    ERROR = "error"

    def __str__(self) -> str:
        return self.value


class StepKind(str, enum.Enum):
    ACTION = "action"
    FINAL_ANSWER_FALLBACK = "final_answer_fallback"


def now_iso() -> str:
    return pendulum.now("UTC").to_iso8601_string()


def to_json_native(value: Any, *, _depth: int = 0) -> Any:
    """Plain JSON data as it is; anything else becomes its ``repr``.

    Keeps the trace loadable by any JSON reader (the UI, XCom) whatever
    model code returned.
    """
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else repr(value)
    if _depth < 20 and isinstance(value, (list, tuple)):
        return [to_json_native(v, _depth=_depth + 1) for v in value]
    if _depth < 20 and isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: to_json_native(v, _depth=_depth + 1) for k, v in value.items()}
    try:
        return repr(value)
    except Exception:  # noqa: BLE001 - model-defined __repr__
        return f"<unrepresentable {type(value).__name__}>"


def _written_forms(secret: str) -> set[str]:
    """The secret as text, and as it reads once escaped inside a JSON or Python string.

    A model that puts a password with a quote or a backslash into a JSON tool call or
    into code writes it escaped, and the plain value would not match that text.
    """
    escaped = secret.replace("\\", "\\\\")
    return {secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1],
            repr(secret)[1:-1], escaped.replace("'", "\\'"), escaped.replace('"', '\\"')}


class Redactor:
    """Replaces known secret values wherever they appear in a JSON document."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: list[str] = []
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str) -> None:
        if not secret or len(secret) < 4:
            return
        for form in _written_forms(secret):
            if form not in self._secrets:
                self._secrets.append(form)
        # Longest first, so a secret that contains another is replaced whole.
        self._secrets.sort(key=len, reverse=True)

    def text(self, value: str) -> str:
        for secret in self._secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        return value

    def document(self, value: Any) -> Any:
        if not self._secrets:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.document(v) for v in value]
        if isinstance(value, dict):
            return {self.text(k): self.document(v) for k, v in value.items()}
        return value


@dataclass
class Usage:
    llm_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = 0.0
    retries: int = 0
    replayed_calls: int = 0  # answered from the journal of an earlier try, not billed again

    def add_call(self, input_tokens: int, output_tokens: int, cost_usd: float | None,
                 retries: int) -> None:
        self.llm_calls += 1
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens
        self.retries += retries
        # One unpriced call makes the total unknown: a partial sum would understate it.
        self.cost_usd = None if cost_usd is None or self.cost_usd is None else self.cost_usd + cost_usd

    def to_dict(self) -> dict[str, Any]:
        return {
            "llm_calls": self.llm_calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": None if self.cost_usd is None else round(self.cost_usd, 8),
            "retries": self.retries,
            "replayed_calls": self.replayed_calls,
        }


@dataclass
class Step:
    index: int
    kind: StepKind
    started_at: str
    ended_at: str | None = None
    model_output: str | None = None
    thought: str | None = None
    code: str | None = None
    stdout: str = ""
    value: str | None = None
    error: dict[str, str] | None = None
    final_answer_called: bool = False
    final_answer: Any = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    llm_latency_s: float | None = None
    execution_s: float | None = None
    retries: list[dict[str, Any]] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    replayed: bool = False
    rejected_outputs: list[str] = field(default_factory=list)  # replies re-asked for (parse retry, repeat)
    notes: list[str] = field(default_factory=list)  # what the agent changed in the code before running it
    model_calls: int = 0  # calls whose usage the step's token, cost and latency figures add up

    def add_model_call(self, output: str, input_tokens: int, output_tokens: int, cost_usd: float | None,
                       latency_s: float | None, retries: list[dict[str, Any]]) -> None:
        """A step re-asked within itself shows the sum of its calls, the last one's reply."""
        first = self.model_calls == 0
        self.model_calls += 1
        self.model_output = output
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens
        if first or cost_usd is None or self.cost_usd is None:
            self.cost_usd = cost_usd if first else None  # unknown once any call's price is
        else:
            self.cost_usd += cost_usd
        if first or latency_s is None or self.llm_latency_s is None:
            self.llm_latency_s = latency_s if first else None
        else:
            self.llm_latency_s += latency_s
        self.retries = [*self.retries, *retries]

    def to_dict(self, max_field_chars: int) -> dict[str, Any]:
        def cap(text: str | None) -> str | None:
            return None if text is None else truncate_middle(text, max_field_chars, "trace field cap")

        error = None if self.error is None else {k: cap(v) for k, v in self.error.items()}
        return {
            "index": self.index,
            "kind": self.kind.value,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "model_output": cap(self.model_output),
            "thought": cap(self.thought),
            "code": cap(self.code),
            "stdout": cap(self.stdout),
            "value": cap(self.value),
            "error": error,
            "final_answer_called": self.final_answer_called,
            "final_answer": to_json_native(self.final_answer) if self.final_answer_called else None,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": self.cost_usd,
            "llm_latency_s": None if self.llm_latency_s is None else round(self.llm_latency_s, 6),
            "execution_s": None if self.execution_s is None else round(self.execution_s, 6),
            "retries": self.retries,
            "tool_calls": self.tool_calls,
            "replayed": self.replayed,
            "rejected_outputs": [cap(text) for text in self.rejected_outputs],
            "notes": list(self.notes),
        }


@dataclass
class Trace:
    """Mutable while the run goes on; ``to_dict`` gives the published document."""

    task: str
    model: str
    action_mode: str
    limits: Mapping[str, Any]
    tools: list[str]
    inputs: dict[str, str]
    confinement: dict[str, str] = field(default_factory=dict)  # Executor.confinement, once known
    redactor: Redactor = field(default_factory=Redactor)
    max_field_chars: int = 110_000  # above the sandbox output cap, so output is cut once
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    started_at: str = field(default_factory=now_iso)
    ended_at: str | None = None
    duration_s: float | None = None
    status: RunStatus = RunStatus.RUNNING
    answer: Any = None
    answer_source: str | None = None
    error: str | None = None
    usage: Usage = field(default_factory=Usage)
    steps: list[Step] = field(default_factory=list)
    compactions: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        document = {
            "schema": SCHEMA,
            "run_id": self.run_id,
            "task": truncate_middle(self.task, self.max_field_chars, "trace field cap"),
            "model": self.model,
            "action_mode": self.action_mode,
            "status": self.status.value,
            "answer": to_json_native(self.answer),
            "answer_source": self.answer_source,
            "error": self.error,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "duration_s": None if self.duration_s is None else round(self.duration_s, 6),
            "totals": {**self.usage.to_dict(), "steps": len(self.steps)},
            "limits": dict(self.limits),
            "confinement": dict(self.confinement),
            "tools": list(self.tools),
            "inputs": dict(self.inputs),
            "steps": [step.to_dict(self.max_field_chars) for step in self.steps],
            "compactions": list(self.compactions),
        }
        return self.redactor.document(document)

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)


def load_schema() -> dict[str, Any]:
    """The JSON Schema that every published trace validates against."""
    from importlib.resources import files

    return json.loads(files("airflow_codeagent.agent").joinpath("trace.schema.json").read_text("utf-8"))


_SHRINKABLE_STEP_FIELDS = ("model_output", "stdout", "value", "code", "thought")


def fit_to_size(document: dict[str, Any], max_bytes: int) -> dict[str, Any]:
    """Shrink a trace document until its JSON is at most ``max_bytes``.

    Long step fields are cut first (head and tail kept, the cut marked); if
    that is not enough, steps are dropped from the middle, keeping the first
    and the latest, and ``steps_omitted`` says how many. XCom backends and
    the UI both choke on multi-megabyte values; a marked cut is better than
    a failed push.
    """
    if len(json.dumps(document)) <= max_bytes:
        return document
    fitted = json.loads(json.dumps(document))
    for field_cap in (20_000, 5_000, 1_000, 200):
        for step in fitted["steps"]:
            for name in _SHRINKABLE_STEP_FIELDS:
                if isinstance(step.get(name), str):
                    step[name] = truncate_middle(step[name], field_cap, "trace size cap")
        if len(json.dumps(fitted)) <= max_bytes:
            return fitted
    steps = fitted["steps"]
    omitted = 0
    while len(steps) > 2 and len(json.dumps(fitted)) > max_bytes:
        del steps[1]
        omitted += 1
        fitted["steps_omitted"] = omitted
    return fitted
