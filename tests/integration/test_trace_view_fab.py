"""The trace view under the FAB auth manager: a real ``airflow api-server`` with FabAuthManager.

The auth manager is process-wide configuration, read once, so the FAB
variant runs in its own API-server process, started on a free 127.0.0.1
port in the tests' AIRFLOW_HOME and metadata DB (the agent runs are the ones
``test_trace_view_api`` makes, with its ``runs`` fixture) and stopped by
process group. The fixture sets FAB up the way an operator would: ``airflow
fab-db migrate``, ``airflow sync-perm --include-dags`` (per-DAG resources),
``airflow users create`` for an admin, then roles and users through FAB's
own REST API (``/auth/fab/v1``) and tokens from its ``/auth/token`` endpoint.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from tests.browser.conftest import free_port, install_plugin_for_subprocesses, stop_group
from tests.integration.test_trace_view_api import (  # noqa: F401 - model_server and runs are fixtures
    PREFIX,
    model_server,
    runs,
    trace_url,
)

pytestmark = pytest.mark.integration

FAB_AUTH_MANAGER = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
START_TIMEOUT_S = 120
CLI_TIMEOUT_S = 180

# role -> FAB permissions (action, resource). "DAG:<dag_id>" is FAB's per-DAG resource.
ROLES = {
    "TraceReader": [("can_read", "DAGs"), ("can_read", "XComs")],
    "PipelineTraceReader": [("can_read", "DAG:test_agent_pipeline"), ("can_read", "XComs")],
    # Everything a person needs to look at a DAG's runs and tasks, but not its XComs.
    "NoXComs": [("can_read", "DAGs"), ("can_read", "DAG Runs"), ("can_read", "Task Instances"),
                ("can_read", "Task Logs")],
}
# user -> role (built-in FAB roles: Viewer may read XComs, Public has no permission at all)
USERS = {"reader": "TraceReader", "pipeline_reader": "PipelineTraceReader", "no_xcoms": "NoXComs",
         "viewer": "Viewer", "public": "Public"}


@dataclass
class FabServer:
    base_url: str
    log: Path
    passwords: dict[str, str] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=30, **kwargs)

    def get(self, path: str, user: str | None = None, **kwargs) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.tokens[user]}"} if user else {}
        with self.client() as client:
            return client.get(path, headers={**headers, **kwargs.pop("headers", {})}, **kwargs)


def run_airflow_cli(args: list[str], env: dict[str, str], log: Path) -> None:
    """``airflow ARGS`` in its own process group, output appended to ``log``; raises on failure."""
    with log.open("a") as out:
        shown = ["***" if previous == "--password" else arg for previous, arg in zip(["", *args], args)]
        out.write(f"\n$ airflow {' '.join(shown)}\n")
        out.flush()
        process = subprocess.Popen([sys.executable, "-m", "airflow", *args], stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        try:
            code = process.wait(timeout=CLI_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            stop_group(process)
            raise RuntimeError(f"airflow {shown} did not finish in {CLI_TIMEOUT_S}s:\n{log.read_text()[-4000:]}")
    if code != 0:
        raise RuntimeError(f"airflow {shown} exited with {code}:\n{log.read_text()[-4000:]}")


def wait_until_healthy(process: subprocess.Popen, base_url: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"airflow api-server exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(f"{base_url}/api/v2/monitor/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"airflow api-server did not answer in {START_TIMEOUT_S}s:\n"
                               f"{log.read_text()[-4000:]}")
        time.sleep(0.5)


def fab_token(server: FabServer, username: str) -> str:
    with server.client() as client:
        response = client.post("/auth/token", json={"username": username, "password": server.passwords[username]})
    assert response.status_code == 201, response.text
    return response.json()["access_token"]


@pytest.fixture(scope="module")
def fab_server(runs, tmp_path_factory):
    """``airflow api-server`` with FabAuthManager, an admin and one user per entry of USERS."""
    try:
        import airflow.providers.fab  # noqa: F401
    except ImportError as error:  # never a skip: the test extra installs it
        raise RuntimeError("apache-airflow-providers-fab is missing: pip install -e '.[test]'") from error
    install_plugin_for_subprocesses()
    work = tmp_path_factory.mktemp("fab-api-server")
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "AIRFLOW__CORE__AUTH_MANAGER": FAB_AUTH_MANAGER,
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(48),
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
        "AIRFLOW__API__BASE_URL": base_url,
        "AIRFLOW__API__EXPOSE_CONFIG": "False",
    }
    log = work / "api-server.log"
    cli_log = work / "cli.log"
    server = FabServer(base_url=base_url, log=log, passwords={"admin": secrets.token_urlsafe(12)})
    # FAB's tables (ab_user, ab_role, ...) live in the same metadata DB; the DAGs the runs
    # fixture serialised get their "DAG:<dag_id>" resources from sync-perm.
    run_airflow_cli(["fab-db", "migrate"], env, cli_log)
    run_airflow_cli(["sync-perm", "--include-dags"], env, cli_log)
    run_airflow_cli(["users", "create", "--username", "admin", "--password", server.passwords["admin"],
                     "--role", "Admin", "--email", "admin@example.com", "--firstname", "Ada",
                     "--lastname", "Admin"], env, cli_log)
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "airflow", "api-server", "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    try:
        wait_until_healthy(process, base_url, log)
        server.tokens["admin"] = fab_token(server, "admin")
        admin = {"Authorization": f"Bearer {server.tokens['admin']}"}
        with server.client(headers=admin) as client:
            for role, perms in ROLES.items():
                response = client.post("/auth/fab/v1/roles", json={"name": role, "actions": [
                    {"action": {"name": action}, "resource": {"name": resource}} for action, resource in perms]})
                assert response.status_code in (200, 201), response.text
            for username, role in USERS.items():
                server.passwords[username] = secrets.token_urlsafe(12)
                response = client.post("/auth/fab/v1/users", json={
                    "username": username, "password": server.passwords[username], "email": f"{username}@example.com",
                    "first_name": username, "last_name": "Tester", "roles": [{"name": role}]})
                assert response.status_code in (200, 201), response.text
        for username in USERS:
            server.tokens[username] = fab_token(server, username)
        yield server
    finally:
        stop_group(process)


def agents_url(dag_run) -> str:
    return f"{PREFIX}/dags/{dag_run.dag_id}/runs/{quote(dag_run.run_id, safe='')}/agents.json"


def test_a_user_whose_role_reads_xcoms_gets_the_trace(fab_server, runs):
    response = fab_server.get(trace_url(runs["pipeline"], "agent"), "reader")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["trace"]["answer"] == {"acme": 10.5, "globex": 4.5}
    assert [s["index"] for s in body["trace"]["steps"]] == [1, 2, 3]
    agents = fab_server.get(agents_url(runs["mapped"]), "reader")
    assert agents.status_code == 200, agents.text
    assert [(r["task_id"], r["map_index"]) for r in agents.json()["agents"]] == [("agent", 0), ("agent", 1)]


@pytest.mark.parametrize(("user", "run", "expected"), [
    ("reader", "mapped", 200),
    ("viewer", "pipeline", 200),            # FAB's built-in Viewer role may read XComs
    ("pipeline_reader", "pipeline", 200),   # per-DAG permission: DAG:test_agent_pipeline
    ("pipeline_reader", "mapped", 403),     # ... and no other DAG
    ("no_xcoms", "pipeline", 403),          # may read the DAG, its runs and tasks, not its XComs
    ("public", "pipeline", 403),            # signed in, no permission at all
    ("admin", "pipeline", 200),
])
def test_access_follows_the_fab_roles(fab_server, runs, user, run, expected):
    dag_run = runs[run]
    task = trace_url(dag_run, "agent", 0 if run == "mapped" else -1)
    for url in (task, agents_url(dag_run)):
        response = fab_server.get(url, user)
        assert response.status_code == expected, (url, response.text)
        if expected == 403:
            assert "steps" not in response.text and "agents" not in response.text
    # The same answer as Airflow's own XCom endpoint gives that user for that task.
    xcoms = fab_server.get(f"/api/v2/dags/{dag_run.dag_id}/dagRuns/{quote(dag_run.run_id, safe='')}"
                           "/taskInstances/agent/xcomEntries", user)
    assert xcoms.status_code == expected, xcoms.text


def test_unauthenticated_callers_get_401_not_a_login_redirect(fab_server, runs):
    """The JSON routes use Airflow's own ``requires_access_dag``: no token is a plain 401, as with SimpleAuthManager.

    FAB's login redirect belongs to its Flask views under ``/auth``; the API
    server's routes (Airflow's and this plugin's) answer 401 and leave the
    redirect to the UI. A token that does not verify is a 403.
    """
    for url in (trace_url(runs["pipeline"], "agent"), agents_url(runs["pipeline"])):
        anonymous = fab_server.get(url, follow_redirects=False)
        assert anonymous.status_code == 401, anonymous.text
        assert anonymous.json() == {"detail": "Not authenticated"}
        forged = fab_server.get(url, headers={"Authorization": "Bearer not-a-jwt"})
        assert forged.status_code == 403 and "steps" not in forged.text


def test_signing_in_on_fabs_login_page_gives_the_cookie_the_trace_tab_uses(fab_server, runs):
    """The UI's tab loads trace.json with the ``_token`` cookie FAB's login form sets: a real form login."""
    import re

    with fab_server.client(follow_redirects=False) as browser:
        form = browser.get("/auth/login/")
        assert form.status_code == 200, form.text
        csrf = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', form.text).group(1)
        login = browser.post("/auth/login/", data={"username": "reader", "password": fab_server.passwords["reader"],
                                                   "csrf_token": csrf})
        assert login.status_code == 302, login.text
        assert browser.cookies.get("_token"), login.headers
        response = browser.get(trace_url(runs["pipeline"], "agent"))
    assert response.status_code == 200, response.text
    assert response.json()["trace"]["status"] == "final_answer"


def test_the_page_shell_and_assets_load_without_a_token(fab_server, runs):
    page = fab_server.get(trace_url(runs["pipeline"], "agent", page=True))
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "steps" not in page.text
    assert fab_server.get(f"{PREFIX}/static/trace.js").status_code == 200


def test_the_plugin_is_listed_for_the_ui(fab_server):
    response = fab_server.get("/api/v2/plugins", "admin")
    assert response.status_code == 200, response.text
    plugin = next(p for p in response.json()["plugins"] if p["name"] == "codeagent")
    assert {v["destination"] for v in plugin["external_views"]} == {"task_instance", "dag_run"}
