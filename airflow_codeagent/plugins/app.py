"""The plugin's FastAPI app, mounted by the Airflow API server under ``/codeagent``.

Pages (no data in them, so no auth needed to load the shell)::

    GET /codeagent/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/trace?map_index=N
    GET /codeagent/dags/{dag_id}/runs/{run_id}/agents

JSON (Airflow auth: the caller must be allowed to read the DAG's XComs)::

    GET /codeagent/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/trace.json?map_index=N
    GET /codeagent/dags/{dag_id}/runs/{run_id}/agents.json

Static assets: ``GET /codeagent/static/{trace.js,trace.css,icon.svg}``.

Airflow loads every plugin in every task process too (for macros), so this
module stays light: the routes, which need Airflow's API-server modules, are
added on the app's first request (``views.py``).
"""

from __future__ import annotations

import threading
from typing import Any

from fastapi import FastAPI

URL_PREFIX = "/codeagent"


class TraceApp(FastAPI):
    """A FastAPI app that adds its routes when it first serves a request."""

    def __init__(self) -> None:
        super().__init__(title="Code Agent traces", docs_url=None, redoc_url=None, openapi_url=None)
        self._routes_added = False
        self._routes_lock = threading.Lock()

    def add_routes(self) -> None:
        with self._routes_lock:
            if self._routes_added:
                return
            from airflow_codeagent.plugins.views import router

            self.include_router(router)
            self._routes_added = True

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if not self._routes_added:
            self.add_routes()
        await super().__call__(scope, receive, send)


app = TraceApp()
