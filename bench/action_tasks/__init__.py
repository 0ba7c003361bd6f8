"""The action-mode task suite: small data-engineering tasks with offline tools and checkable answers.

Every task gets all its data through tools (no ``inputs``), so code mode,
JSON tool-calling mode and code-in-JSON mode see exactly the same
information. Small constants (an as-of date, three order ids) are in the
task text. Each builder computes the expected answer from the same data its
tools serve, so data and answer cannot drift apart, and carries a reference
solution in Python that the self-test runs through the real sandbox.

Families:

- ``lookup``: several tools, then aggregation;
- ``reconcile``: compare two record sets;
- ``text``: parse and transform messy text;
- ``dates``: date arithmetic (tools use pendulum; model code may use datetime);
- ``multihop``: one tool's output is the next tool's input;
- ``single``: one tool call answers it, where JSON tool calls should do as well as code.

``min_calls`` is the fewest tool calls that answer the task (not counting
``final_answer``); every task keeps it at most 6, so a JSON agent with one
call per step can finish within the default 8 steps.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from airflow_codeagent import Tool

from bench.action_tasks.checks import Checker, describe

FAMILIES = ("lookup", "reconcile", "text", "dates", "multihop", "single")


@dataclass(frozen=True)
class ActionTask:
    """One task: what to ask, with which tools, and how to judge the answer."""

    name: str
    family: str
    prompt: str
    tools: Sequence[Tool]
    expected: Any
    check: Checker
    min_calls: int
    reference: str
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    # Answers close to right that the task asks to avoid (an email not lowercased):
    # the suite check proves the checker rejects them.
    near_misses: Sequence[Any] = ()

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"task {self.name}: unknown family {self.family!r}")
        if "final_answer(" not in self.reference:
            raise ValueError(f"task {self.name}: the reference solution must call final_answer")

    @property
    def checker_text(self) -> str:
        return describe(self.check)

    def fingerprint(self) -> str:
        """Changes when the prompt, the tools' signatures or the expected answer change.

        Rows recorded for another fingerprint are stale: the runner runs the
        task again instead of mixing two versions of it in one table.
        """
        payload = json.dumps([self.prompt, [t.signature_text() for t in self.tools],
                              self.expected], sort_keys=True, default=repr)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


def _builders() -> list[Callable[[], ActionTask]]:
    from bench.action_tasks import dates, lookup, multihop, reconcile, single, text

    return [*lookup.TASKS, *reconcile.TASKS, *text.TASKS, *dates.TASKS, *multihop.TASKS,
            *single.TASKS]


def all_tasks() -> list[ActionTask]:
    """Every task, in the fixed order the runner uses (grouped by family)."""
    tasks = [build() for build in _builders()]
    names = [t.name for t in tasks]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"duplicate task names: {duplicates}")
    return tasks


__all__ = ["FAMILIES", "ActionTask", "Checker", "all_tasks"]
