"""The "Agent trace" extra link: a button on an agent task instance that opens its trace tab.

Kept free of FastAPI and of Airflow's API-server modules: the operator
imports it, so it is loaded by every worker that runs an agent task.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urljoin

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk.types import TaskInstanceKey

LINK_NAME = "Agent trace"
#: ``url_route`` of the task-instance tab; the tab lives at ``.../plugin/<route>`` in the UI.
TASK_VIEW_ROUTE = "agent-trace"
RUN_VIEW_ROUTE = "agent-traces"


def _segment(value: Any) -> str:
    return quote(str(value), safe="")


def trace_ui_path(dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> str:
    """The Airflow UI page of a task instance with its "Agent trace" tab open.

    Relative (no leading slash): the UI resolves it against its ``<base href>``,
    so it also works when Airflow is served under a sub-path.
    """
    path = f"dags/{_segment(dag_id)}/runs/{_segment(run_id)}/tasks/{_segment(task_id)}"
    if map_index is not None and int(map_index) >= 0:
        path += f"/mapped/{int(map_index)}"
    return f"{path}/plugin/{TASK_VIEW_ROUTE}"


def trace_ui_url(dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> str:
    """``trace_ui_path`` made absolute with ``[api] base_url`` when one is configured."""
    path = trace_ui_path(dag_id, run_id, task_id, map_index)
    try:
        from airflow.configuration import conf

        base_url = conf.get("api", "base_url", fallback="") or ""
    except Exception:  # noqa: BLE001 - a link must never fail a task
        base_url = ""
    if not base_url:
        return path
    return urljoin(base_url if base_url.endswith("/") else base_url + "/", path)


class AgentTraceLink(BaseOperatorLink):
    """Opens the task instance's "Agent trace" tab in the Airflow UI.

    Put on the operator (``operator_extra_links``), the worker computes the URL
    when the task ends and Airflow stores it in XCom. Registered by the plugin
    as well, the API server computes it on every request, so the button is
    there while the task still runs or after it was killed.
    """

    name = LINK_NAME

    def get_link(self, operator: Any, *, ti_key: TaskInstanceKey) -> str:
        return trace_ui_url(ti_key.dag_id, ti_key.run_id, ti_key.task_id,
                            getattr(ti_key, "map_index", -1))


class _AgentOperators:
    """``operators`` resolved on use: the operator module imports this one, not the other way round."""

    def __get__(self, instance: Any, owner: Any) -> list[type]:
        from airflow_codeagent.decorators.codeagent import _CodeAgentDecoratedOperator
        from airflow_codeagent.operators.codeagent import CodeAgentOperator

        return [CodeAgentOperator, _CodeAgentDecoratedOperator]


class PluginAgentTraceLink(AgentTraceLink):
    """The plugin's copy of the link, matched to the agent operators by class (mapped or not)."""

    operators = _AgentOperators()  # type: ignore[assignment]
