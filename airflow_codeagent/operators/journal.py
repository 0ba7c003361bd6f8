"""Where the operator keeps its replay journal so that it survives a task retry.

Airflow 3.3's task state store is scoped to (dag, run, task, map index), not
to the try, which is exactly a retry's view. On older Airflow, or to keep
the journal in your own bucket, give ``replay_storage`` an object storage
URL (``s3://bucket/prefix``, ``file:///var/lib/airflow/codeagent``). The
approval flow's apply step keeps its record of applied intents the same way.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from airflow_codeagent.agent.replay import CallJournal, JournalStore

if TYPE_CHECKING:
    from airflow.sdk import Context, ObjectStoragePath


class ObjectStorageJournalStore:
    """One JSON object per key under ``base/dag/run/task/map_index/``."""

    def __init__(self, base: ObjectStoragePath) -> None:
        self.base = base

    def _path(self, key: str) -> ObjectStoragePath:
        return self.base / f"{key}.json"

    def get(self, key: str, default: Any = None) -> Any:
        path = self._path(key)
        return json.loads(path.read_text()) if path.exists() else default

    def set(self, key: str, value: Any) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        self._path(key).write_text(json.dumps(value))

    def delete(self, key: str) -> None:
        path = self._path(key)
        if path.exists():
            path.unlink()


def durable_store_for(context: Context, replay_storage: str | None) -> JournalStore | None:
    """Where this task instance keeps state across its tries, or None when nowhere durable.

    ``replay_storage`` (an object storage URL) first, else the task state store.
    """
    if replay_storage:
        from airflow.sdk import ObjectStoragePath

        ti = context["ti"]
        base = ObjectStoragePath(replay_storage) / ti.dag_id / ti.run_id / ti.task_id / str(ti.map_index)
        return ObjectStorageJournalStore(base)
    return context.get("task_state_store")


def journal_for(context: Context, replay_storage: str | None) -> CallJournal | None:
    """The task instance's journal, or None when there is nowhere durable to keep it."""
    store = durable_store_for(context, replay_storage)
    return None if store is None else CallJournal(store)
