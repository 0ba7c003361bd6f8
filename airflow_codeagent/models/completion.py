"""Every model call goes through here: litellm, our retries, usage and cost.

litellm's own retries are switched off so that each retry is ours to bound
by the run's deadline and to record in the trace.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from airflow_codeagent.models.retry import RetryPolicy, parse_retry_after

log = logging.getLogger(__name__)

Message = dict[str, Any]

# litellm downloads its price table at import unless told not to; a worker
# with no internet access would stall for seconds on every task.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


@dataclass(frozen=True)
class RetryRecord:
    """One failed attempt that was retried."""

    attempt: int
    error_type: str
    message: str
    status_code: int | None
    waited_s: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "attempt": self.attempt,
            "error_type": self.error_type,
            "message": self.message,
            "status_code": self.status_code,
            "waited_s": round(self.waited_s, 3),
        }


@dataclass(frozen=True)
class Completion:
    """A model reply with what it cost. ``cost_usd`` is None when the price is unknown."""

    text: str
    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    latency_s: float
    model: str
    finish_reason: str | None = None
    retries: tuple[RetryRecord, ...] = field(default_factory=tuple)
    # Native tool calls, each {"id", "name", "arguments"} with arguments as the JSON text sent.
    tool_calls: tuple[dict[str, str], ...] = field(default_factory=tuple)

    @property
    def transcript(self) -> str:
        """The reply as the trace keeps it: its text, then each native tool call exactly as sent.

        A native call's arguments arrive outside the text; without this, a call whose
        arguments did not parse, or one beyond the first, would leave no trace.
        """
        calls = [f"[tool call] {call['name']} {call['arguments']}" for call in self.tool_calls]
        return "\n".join([self.text, *calls]) if self.text else "\n".join(calls)


_CREDENTIAL_WORDS = ("key", "token", "secret", "password", "authorization")


def _credential_values(settings: Mapping[str, Any]) -> Iterator[str]:
    """The text values under a credential-like name, in nested settings too (``extra_headers``).

    Only text: ``max_tokens=1024`` or a ``*_cost_per_token`` price is a number whose
    name merely contains "token", and redacting it would mask every 1024 in the trace.
    """
    for name, value in settings.items():
        if isinstance(value, Mapping):
            yield from _credential_values(value)
        elif isinstance(value, str) and value and any(word in str(name).lower() for word in _CREDENTIAL_WORDS):
            yield value


def _call_cancellable(call: Callable[[], Any], cancel: threading.Event | None) -> Any:
    """Run a blocking HTTP call so that ``cancel`` (or a signal) interrupts the wait at once.

    The call runs in a daemon thread; the caller waits in short slices, so
    Airflow's kill and timeout signals are handled promptly in the main thread.
    An abandoned call finishes (or dies with the process) in the background.
    """
    if cancel is None:
        return call()
    done = threading.Event()
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed back to the waiting thread
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=target, name="codeagent-model-call", daemon=True).start()
    while not done.wait(0.05):
        if cancel.is_set():
            raise ModelCallError("model call abandoned: the run was cancelled", cancelled=True)
    if "error" in box:
        raise box["error"]
    return box["result"]


class ModelCallError(Exception):
    """The model could not be reached or answered with an error we do not retry."""

    def __init__(self, message: str, *, retries: Sequence[RetryRecord] = (),
                 status_code: int | None = None, cancelled: bool = False) -> None:
        super().__init__(message)
        self.retries = tuple(retries)
        self.status_code = status_code
        self.cancelled = cancelled


def _retryable_exceptions() -> tuple[type[BaseException], ...]:
    import litellm

    return (
        litellm.RateLimitError,
        litellm.InternalServerError,
        litellm.ServiceUnavailableError,
        litellm.BadGatewayError,
        litellm.APIConnectionError,
        litellm.Timeout,
        litellm.APIResponseValidationError,
    )


def _status_code(exc: BaseException) -> int | None:
    code = getattr(exc, "status_code", None)
    return code if isinstance(code, int) else None


def _retry_after(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    return parse_retry_after(headers.get("retry-after"))


def _short(exc: BaseException, limit: int = 500) -> str:
    text = str(exc).replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "..."


class LiteLLMModel:
    """``complete(messages) -> Completion`` for any model litellm can reach.

    ``model_kwargs`` go to ``litellm.completion`` as they are (``api_base``,
    ``api_key``, ``temperature``, ...). ``sleep`` is injectable so tests of
    the backoff arithmetic need not wait.
    """

    def __init__(self, model: str, model_kwargs: Mapping[str, Any] | None = None, *,
                 retry: RetryPolicy | None = None, request_timeout_s: float = 300.0,
                 sleep: Callable[[float], None] = time.sleep, seed: int | None = None) -> None:
        if not isinstance(model, str) or not model.strip():
            raise ValueError("model must be a litellm model string such as 'openai/gpt-4o-mini'")
        self.model = model
        self.model_kwargs = dict(model_kwargs or {})
        for reserved in ("messages", "model", "stream"):
            if reserved in self.model_kwargs:
                raise ValueError(f"model_kwargs may not set {reserved!r}; the agent sets it")
        self.retry = retry or RetryPolicy()
        self.request_timeout_s = request_timeout_s
        self._sleep = sleep
        self._rng = random.Random(seed)

    def count_tokens(self, messages: Sequence[Message]) -> int:
        """Prompt size as litellm counts it for this model (a bundled tokenizer; no download)."""
        import litellm

        return int(litellm.token_counter(model=self.model, messages=list(messages)))

    def context_window(self) -> int | None:
        """Input tokens the model accepts, when litellm knows the model."""
        info = self._model_info()
        value = info.get("max_input_tokens") if info else None
        return int(value) if value else None

    def prices(self) -> tuple[float, float] | None:
        """USD per input token and per output token; None when unknown (a local model)."""
        custom = (self.model_kwargs.get("input_cost_per_token"), self.model_kwargs.get("output_cost_per_token"))
        if custom[0] is not None and custom[1] is not None:
            return float(custom[0]), float(custom[1])
        info = self._model_info()
        if not info or info.get("input_cost_per_token") is None or info.get("output_cost_per_token") is None:
            return None
        return float(info["input_cost_per_token"]), float(info["output_cost_per_token"])

    def supports(self, capability: str) -> bool:
        """Whether litellm knows the model to support ``function_calling`` or ``response_schema``."""
        import litellm

        check = {"function_calling": litellm.supports_function_calling,
                 "response_schema": litellm.supports_response_schema}[capability]
        try:
            return bool(check(model=self.model))
        except Exception:  # noqa: BLE001 - an unmapped model: assume not
            return False

    def _model_info(self) -> dict[str, Any] | None:
        import litellm

        try:
            return dict(litellm.get_model_info(self.model))
        except Exception:  # noqa: BLE001 - litellm raises several types for an unmapped model
            return None

    @property
    def secrets(self) -> list[str]:
        """Values that must never appear in a trace or a log."""
        return list(_credential_values(self.model_kwargs))

    def complete(self, messages: Sequence[Message], *, deadline: float | None = None,
                 overrides: Mapping[str, Any] | None = None,
                 on_retry: Callable[[RetryRecord], None] | None = None,
                 cancel: threading.Event | None = None) -> Completion:
        """Call the model; retry transient faults until the policy or ``deadline`` says stop.

        ``deadline`` is a ``time.monotonic()`` value: no attempt starts, and no
        wait is begun, that would end after it. ``overrides`` replace
        ``model_kwargs`` entries for this call only.
        """
        kwargs = {**self.model_kwargs, **(overrides or {})}
        import litellm

        litellm.suppress_debug_info = True
        retryable = _retryable_exceptions()
        retries: list[RetryRecord] = []
        attempt = 0
        while True:
            attempt += 1
            timeout = self.request_timeout_s
            if deadline is not None:
                timeout = min(timeout, deadline - time.monotonic())
                if timeout <= 0:
                    raise ModelCallError("no time left for a model call before the run's deadline",
                                         retries=retries)
            started = time.perf_counter()
            try:
                response = _call_cancellable(lambda: litellm.completion(
                    model=self.model,
                    messages=list(messages),
                    timeout=timeout,
                    num_retries=0,
                    max_retries=0,
                    **kwargs,
                ), cancel)
                return self._to_completion(response, time.perf_counter() - started, retries)
            except ModelCallError as exc:
                exc.retries = tuple(retries)
                raise
            except retryable as exc:
                if attempt > self.retry.max_retries:
                    raise ModelCallError(
                        f"model call failed after {attempt} attempts: {type(exc).__name__}: {_short(exc)}",
                        retries=retries, status_code=_status_code(exc)) from exc
                wait = self.retry.delay_s(attempt, _retry_after(exc), self._rng)
                if deadline is not None and time.monotonic() + wait >= deadline:
                    raise ModelCallError(
                        f"model call failed and the run's deadline leaves no time to retry: "
                        f"{type(exc).__name__}: {_short(exc)}",
                        retries=retries, status_code=_status_code(exc)) from exc
                record = RetryRecord(attempt, type(exc).__name__, _short(exc), _status_code(exc), wait)
                retries.append(record)
                log.warning("model call attempt %d failed (%s); retrying in %.1f s",
                            attempt, record.error_type, wait)
                if on_retry is not None:
                    on_retry(record)
                if cancel is not None:
                    if cancel.wait(wait):
                        raise ModelCallError("model call abandoned: the run was cancelled",
                                             retries=retries, cancelled=True) from exc
                else:
                    self._sleep(wait)
            except Exception as exc:  # auth, bad request, unknown provider: retrying will not help
                raise ModelCallError(f"{type(exc).__name__}: {_short(exc)}", retries=retries,
                                     status_code=_status_code(exc)) from exc

    def _to_completion(self, response: Any, latency_s: float,
                       retries: list[RetryRecord]) -> Completion:
        import litellm

        choice = response.choices[0]
        text = choice.message.content or ""
        tool_calls = tuple(
            {"id": call.id or f"call_{index}", "name": call.function.name or "",
             "arguments": call.function.arguments or "{}"}
            for index, call in enumerate(getattr(choice.message, "tool_calls", None) or []))
        usage = getattr(response, "usage", None)
        input_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        output_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
        prices = self.prices()
        cost: float | None = None
        if prices is not None:
            try:
                cost = float(litellm.completion_cost(completion_response=response))
            except Exception:  # noqa: BLE001 - a price given only in model_kwargs
                cost = input_tokens * prices[0] + output_tokens * prices[1]
        return Completion(
            text=text,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_usd=cost,
            latency_s=latency_s,
            model=getattr(response, "model", None) or self.model,
            finish_reason=getattr(choice, "finish_reason", None),
            retries=tuple(retries),
            tool_calls=tool_calls,
        )
