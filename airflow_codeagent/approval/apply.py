"""The apply step: execute exactly the approved intents, with no model call, at most once each.

Each intent's success is recorded under its fingerprint in a store that
survives a task retry (Airflow 3.3's task state store), before the next
intent runs; a retried apply skips the recorded ones and continues with the
first one that did not succeed. An intent that fails stops the step: later
intents are not run out of order.

Limit: an intent that executed but whose success could not be recorded
(the worker died between the two) runs again on retry. Make such tools
idempotent where that matters (``INSERT OR IGNORE``, upserts, overwrites).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from airflow_codeagent.agent.replay import JournalStore
from airflow_codeagent.approval.intents import intent_fingerprint
from airflow_codeagent.tools.base import Tool, Toolkit, expand_tools

log = logging.getLogger(__name__)

_DONE_PREFIX = "codeagent.applied."


class IntentMismatch(ValueError):
    """An approved intent names a tool the DAG no longer has, or was altered after approval."""


@dataclass(frozen=True)
class AppliedIntent:
    id: int
    tool: str
    fingerprint: str
    result: Any
    skipped_as_done: bool

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "tool": self.tool, "fingerprint": self.fingerprint, "result": self.result,
                "already_applied": self.skipped_as_done}


def _plain(value: Any) -> Any:
    import json

    try:
        return json.loads(json.dumps(value, default=str))
    except (TypeError, ValueError):
        return repr(value)


def resolve_tools(items: Iterable[Tool | Toolkit | Callable[..., Any]]) -> dict[str, Tool]:
    """The side-effecting tools of ``tools=`` by name, as the DAG defines them (the real ones)."""
    return {t.name: t for t in expand_tools(items) if t.side_effect}


def apply_intents(intents: Iterable[Mapping[str, Any]], tools: Mapping[str, Tool],
                  store: JournalStore) -> list[AppliedIntent]:
    """Run each intent's tool with its recorded arguments, skipping those the store marks as done."""
    intents = list(intents)
    for intent in intents:  # check everything before running anything
        if intent_fingerprint(intent) != intent.get("fingerprint"):
            raise IntentMismatch(f"intent #{intent.get('id')} does not match its fingerprint: it was "
                                 "changed after it was staged")
        if intent["tool"] not in tools:
            raise IntentMismatch(f"intent #{intent['id']} calls {intent['tool']!r}, which is not a "
                                 f"side-effecting tool of this step (have: {sorted(tools)})")
    applied: list[AppliedIntent] = []
    for intent in intents:
        key = _DONE_PREFIX + intent["fingerprint"]
        done = store.get(key)
        if isinstance(done, dict):
            log.info("intent #%d (%s) was applied by an earlier try; not repeating it",
                     intent["id"], intent["tool"])
            applied.append(AppliedIntent(intent["id"], intent["tool"], intent["fingerprint"],
                                         done.get("result"), True))
            continue
        log.info("applying intent #%d: %s", intent["id"], intent["tool"])
        result = _plain(tools[intent["tool"]].func(*intent["args"], **intent["kwargs"]))
        store.set(key, {"id": intent["id"], "tool": intent["tool"], "result": result})
        applied.append(AppliedIntent(intent["id"], intent["tool"], intent["fingerprint"], result, False))
    return applied
