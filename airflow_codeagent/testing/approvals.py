"""Answer Airflow's Required Actions in a DAG test the way the UI does: through the REST API.

``dag.test()`` of a DAG with ``agent_with_approval`` waits for a person. In a
test or a demo, ``ApprovalResponder`` plays that person: it polls the
API-server app's HITL endpoints for the DAG's pending request, keeps what the
reviewer would have seen (subject, body, params), and answers it with
``PATCH .../hitlDetails``, exactly the call the UI makes::

    with api_client() as client:
        responder = ApprovalResponder(client, "my_dag", "Approve", {"reason": "checked", "only": ""})
        responder.start()
        dag.test()
        responder.join(10)

Needs Airflow's default SimpleAuthManager (the token is made for a user of it).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any


@contextlib.contextmanager
def api_client(username: str = "reviewer", role: str = "admin") -> Iterator[Any]:
    """Airflow's own API-server app in this process, with a JWT for ``username``."""
    from airflow.api_fastapi.app import create_app, get_auth_manager, purge_cached_app
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from fastapi.testclient import TestClient

    previous = os.environ.get("AIRFLOW__API_AUTH__JWT_SECRET")
    os.environ["AIRFLOW__API_AUTH__JWT_SECRET"] = previous or secrets.token_hex(32)
    purge_cached_app()
    try:
        with TestClient(create_app("core"), base_url="http://127.0.0.1") as client:
            jwt = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username=username, role=role))
            client.headers["Authorization"] = f"Bearer {jwt}"
            yield client
    finally:
        purge_cached_app()
        if previous is None:
            del os.environ["AIRFLOW__API_AUTH__JWT_SECRET"]


class ApprovalResponder(threading.Thread):
    """Waits for a DAG's first pending Required Action, records what it showed, and answers it."""

    def __init__(self, client: Any, dag_id: str, choice: str = "Approve",
                 params_input: Mapping[str, Any] | None = None, *, timeout_s: float = 120,
                 poll_s: float = 0.3) -> None:
        super().__init__(daemon=True, name=f"approval-responder-{dag_id}")
        self.client, self.dag_id, self.choice = client, dag_id, choice
        self.params_input = dict(params_input or {})
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self.seen: dict[str, Any] | None = None  # the request as the reviewer saw it
        self.response: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            deadline = time.monotonic() + self.timeout_s
            while time.monotonic() < deadline:
                listing = self.client.get(f"/api/v2/dags/{self.dag_id}/dagRuns/~/hitlDetails",
                                          params={"response_received": False})
                pending = listing.json()["hitl_details"] if listing.status_code == 200 else []
                if pending:
                    self.seen = pending[0]
                    ti = self.seen["task_instance"]
                    self.response = self.client.patch(
                        f"/api/v2/dags/{self.dag_id}/dagRuns/{ti['dag_run_id']}/taskInstances/"
                        f"{ti['task_id']}/{ti['map_index']}/hitlDetails",
                        json={"chosen_options": [self.choice], "params_input": self.params_input})
                    return
                time.sleep(self.poll_s)
            raise TimeoutError(f"no Required Action of {self.dag_id} appeared within {self.timeout_s:g} s")
        except BaseException as exc:  # noqa: BLE001 - reported to whoever joins
            self.error = exc
