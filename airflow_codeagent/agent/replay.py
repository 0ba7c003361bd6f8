"""Durable replay: a journal of completed model calls that survives a task retry.

When an Airflow task fails at step 8 and is retried, the retry would pay
again for steps 1-7. Instead each completed call is journaled under its
try-independent slot (step index, or a named side call) with a fingerprint
of the request. On the retry a call whose request fingerprint matches is
answered from the journal; the code is executed again to rebuild the
sandbox's state. A changed prompt, model or observation changes the
fingerprint from that step on, and those calls are made for real.

Tools marked ``side_effect=True`` are not invoked again on replay: their
recorded results are returned in the order they were first produced.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any, Protocol

from airflow_codeagent.models.completion import Completion

_KEY_PREFIX = "codeagent.call."
_INDEX_KEY = "codeagent.calls"
# Where the call goes and how it is bounded do not change what the model is asked.
_FINGERPRINT_IGNORES = ("api_key", "api_base", "base_url", "max_tokens", "timeout")


class JournalStore(Protocol):
    """Key -> JSON value storage that outlives a task try (Airflow's task state store fits)."""

    def get(self, key: str, default: Any = None) -> Any: ...

    def set(self, key: str, value: Any) -> None: ...

    def delete(self, key: str) -> None: ...


class InMemoryJournalStore:
    """For tests and for runs outside Airflow: survives an agent run, not a process."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return json.loads(self.data[key]) if key in self.data else default

    def set(self, key: str, value: Any) -> None:
        self.data[key] = json.dumps(value)

    def delete(self, key: str) -> None:
        self.data.pop(key, None)


def request_fingerprint(model: str, messages: Sequence[Mapping[str, Any]],
                        model_kwargs: Mapping[str, Any]) -> str:
    settings = {k: v for k, v in model_kwargs.items() if k not in _FINGERPRINT_IGNORES}
    payload = json.dumps({"model": model, "messages": list(messages), "settings": settings},
                         sort_keys=True, default=repr)
    return hashlib.sha256(payload.encode()).hexdigest()


class CallJournal:
    """Looks up and records calls by slot; knows nothing of Airflow."""

    def __init__(self, store: JournalStore) -> None:
        self.store = store

    def replay(self, slot: str, fingerprint: str) -> tuple[Completion, list[Any]] | None:
        record = self.store.get(_KEY_PREFIX + slot)
        if not isinstance(record, dict) or record.get("fingerprint") != fingerprint:
            return None
        data = dict(record["completion"])
        data["retries"] = ()
        data["tool_calls"] = tuple(data.get("tool_calls", ()))
        return Completion(**data), list(record.get("tool_results", []))

    def record(self, slot: str, fingerprint: str, completion: Completion,
               tool_results: Sequence[Any] = ()) -> None:
        data = asdict(completion)
        data["retries"] = []
        data["tool_calls"] = [dict(call) for call in completion.tool_calls]
        self.store.set(_KEY_PREFIX + slot, {"fingerprint": fingerprint, "completion": data,
                                            "tool_results": list(tool_results)})
        slots = self.store.get(_INDEX_KEY, []) or []
        if slot not in slots:
            self.store.set(_INDEX_KEY, [*slots, slot])

    def add_tool_result(self, slot: str, name: str, result: Any) -> None:
        record = self.store.get(_KEY_PREFIX + slot)
        if isinstance(record, dict):
            record.setdefault("tool_results", []).append([name, result])
            self.store.set(_KEY_PREFIX + slot, record)

    def clear(self) -> None:
        """Forget every journaled call: the task succeeded, nothing will be replayed."""
        for slot in self.store.get(_INDEX_KEY, []) or []:
            self.store.delete(_KEY_PREFIX + slot)
        self.store.delete(_INDEX_KEY)


class SideEffectLedger:
    """Per-run cursor that lets a side-effecting tool return its recorded results on replay."""

    def __init__(self, journal: CallJournal | None) -> None:
        self.journal = journal
        self.slot: str | None = None
        self._recorded: list[Any] = []

    def start_step(self, slot: str, recorded: list[Any] | None) -> None:
        self.slot = slot
        self._recorded = list(recorded or [])

    def call(self, name: str, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self._recorded and self._recorded[0][0] == name:
            return self._recorded.pop(0)[1]
        self._recorded = []  # the replay diverged: from here on, call for real
        result = func(*args, **kwargs)
        if self.journal is not None and self.slot is not None:
            self.journal.add_tool_result(self.slot, name, result)
        return result
