"""Airflow UI plugin: the "Agent trace" view of CodeAgentOperator task instances.

Registered through the ``airflow.plugins`` entry point. It adds

* a FastAPI app under ``/codeagent`` that serves the trace pages, their JSON
  and their assets (``app.py``, ``views.py``, ``static/``);
* an "Agent trace" tab on every task instance and an "Agent traces" tab on
  every DAG run (external views, shown inside the Airflow UI);
* the "Agent trace" extra link on agent tasks, computed by the API server so
  that it is there while the task still runs.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from airflow_codeagent.plugins.app import URL_PREFIX, app
from airflow_codeagent.plugins.links import RUN_VIEW_ROUTE, TASK_VIEW_ROUTE, PluginAgentTraceLink

_PREFIX = URL_PREFIX.strip("/")
_ICON = f"{_PREFIX}/static/icon.svg"


class CodeAgentPlugin(AirflowPlugin):
    name = "codeagent"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "Code Agent traces"}]
    # Relative hrefs (no leading slash) resolve against the UI's base URL, so a
    # deployment under a sub-path works. The UI fills in the placeholders; on a
    # task that is not mapped it leaves {MAP_INDEX} as it is, and the page reads
    # that as -1.
    external_views = [
        {
            "name": "Agent trace",
            "href": f"{_PREFIX}/dags/{{DAG_ID}}/runs/{{RUN_ID}}/tasks/{{TASK_ID}}/trace?map_index={{MAP_INDEX}}",
            "destination": "task_instance",
            "url_route": TASK_VIEW_ROUTE,
            "icon": _ICON,
        },
        {
            "name": "Agent traces",
            "href": f"{_PREFIX}/dags/{{DAG_ID}}/runs/{{RUN_ID}}/agents",
            "destination": "dag_run",
            "url_route": RUN_VIEW_ROUTE,
            "icon": _ICON,
        },
    ]
    operator_extra_links = [PluginAgentTraceLink()]


__all__ = ["CodeAgentPlugin"]
