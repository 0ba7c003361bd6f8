"""The trace view's HTTP surface, on Airflow's own API-server app with the plugin mounted as it mounts it.

Real SQLite metadata DB, agent DAGs run with dag.test() against the scripted
model server, requests through FastAPI's TestClient to the app that
``airflow api-server`` serves (``airflow.api_fastapi.app.create_app``), with
SimpleAuthManager JWTs.
"""

from __future__ import annotations

import os
import re
from importlib.metadata import entry_points
from pathlib import Path
from urllib.parse import quote

import pendulum
import pytest

from airflow_codeagent.plugins import render
from tests.integration.model_connection import scripted_model_connection

pytestmark = pytest.mark.integration

PREFIX = "/codeagent"
XSS = "<script>window.__pwned = 1</script><img src=x onerror=\"window.__pwned = 2\">"


def code(body: str, thought: str = "next.") -> str:
    return f"Thought: {thought}\n```python\n{body}\n```"


def plugin_via_entry_point() -> bool:
    return any(ep.value.startswith("airflow_codeagent.plugins") for ep in entry_points(group="airflow.plugins"))


def ensure_plugin_registered() -> None:
    """Until the package's ``airflow.plugins`` entry point is installed, load the plugin from the plugins folder."""
    from airflow import plugins_manager, settings

    if not plugin_via_entry_point():
        folder = Path(settings.PLUGINS_FOLDER)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "codeagent_trace_view.py").write_text(
            "from airflow_codeagent.plugins import CodeAgentPlugin  # noqa: F401\n")
    if hasattr(plugins_manager, "_get_plugins"):  # Airflow 3.2+: cached functions
        for cached in ("_get_plugins", "_get_ui_plugins", "get_fastapi_plugins", "get_flask_plugins",
                       "_get_extra_operators_links_plugins"):
            getattr(plugins_manager, cached).cache_clear()
        names = [p.name for p in plugins_manager._get_plugins()[0]]
        errors = plugins_manager._get_plugins()[1]
    else:  # Airflow 3.1: module globals, None until loaded
        for loaded in ("plugins", "external_views", "react_apps", "fastapi_apps", "fastapi_root_middlewares",
                       "flask_blueprints", "flask_appbuilder_views", "flask_appbuilder_menu_links",
                       "global_operator_extra_links", "operator_extra_links",
                       "registered_operator_link_classes"):
            setattr(plugins_manager, loaded, None)
        plugins_manager.loaded_plugins.clear()  # names registered before are skipped otherwise
        plugins_manager.ensure_plugins_loaded()
        names = [p.name for p in plugins_manager.plugins]
        errors = plugins_manager.import_errors
    assert "codeagent" in names, (names, errors)


@pytest.fixture(scope="module")
def model_server():
    with scripted_model_connection(password="sk-trace-view-test") as server:
        yield server


@pytest.fixture(scope="module")
def runs(model_server, test_dags):
    """Finished runs: a pipeline with an error step and HTML in its output, a mapped agent, a decorated one."""
    ensure_plugin_registered()

    def run(dag_id: str, day: int, script: list[str]):
        model_server.reset(script)
        return test_dags.get_dag(dag_id).test(logical_date=pendulum.datetime(2024, 5, day, tz="UTC"))

    pipeline = run("test_agent_pipeline", 1, [
        code(f"print({XSS!r})\nhtml = {XSS!r}", thought="Print <b>HTML</b> & see."),
        code("print(orders[5])"),
        code("final_answer({'acme': 10.5, 'globex': 4.5})"),
    ])
    mapped = run("test_agent_mapped", 2, [code("final_answer('first')"), code("final_answer('second')")])
    decorated = run("test_agent_decorated", 3, [code("final_answer({label: sum(values)})")])
    return {"pipeline": pipeline, "mapped": mapped, "decorated": decorated}


@pytest.fixture(scope="module")
def client(runs):
    from airflow.api_fastapi.app import create_app, purge_cached_app
    from fastapi.testclient import TestClient

    secret = os.environ.get("AIRFLOW__API_AUTH__JWT_SECRET")
    os.environ["AIRFLOW__API_AUTH__JWT_SECRET"] = "trace-view-tests-" + "x" * 64  # quiets PyJWT's key-length warning
    purge_cached_app()
    try:
        with TestClient(create_app("core"), base_url="http://127.0.0.1") as test_client:
            yield test_client
    finally:
        purge_cached_app()
        if secret is None:
            del os.environ["AIRFLOW__API_AUTH__JWT_SECRET"]
        else:
            os.environ["AIRFLOW__API_AUTH__JWT_SECRET"] = secret


def token(username: str = "admin", role: str | None = "admin") -> str:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    return get_auth_manager().generate_jwt(SimpleAuthManagerUser(username=username, role=role))


def bearer(role: str | None = "admin") -> dict[str, str]:
    return {"Authorization": f"Bearer {token(role=role)}"}


def trace_url(dag_run, task_id: str, map_index: int = -1, *, page: bool = False) -> str:
    resource = "trace" if page else "trace.json"
    return (f"{PREFIX}/dags/{dag_run.dag_id}/runs/{quote(dag_run.run_id, safe='')}/tasks/{task_id}/"
            f"{resource}?map_index={map_index}")


def lines_text(lines: list) -> str:
    return "\n".join("".join(text for _, text in line) for line in lines)


# -- the JSON endpoint -----------------------------------------------------------------------


def test_authorised_user_reads_the_trace_with_highlighted_code(client, runs):
    response = client.get(trace_url(runs["pipeline"], "agent"), headers=bearer())

    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    trace = body["trace"]
    assert (body["task_id"], body["map_index"], body["liveness"], body["notice"]) == ("agent", -1, "finished", None)
    assert body["task_instance"]["state"] == "success"
    assert trace["status"] == "final_answer" and trace["answer"] == {"acme": 10.5, "globex": 4.5}
    assert [s["index"] for s in trace["steps"]] == [1, 2, 3]
    assert trace["steps"][0]["stdout"] == XSS + "\n"          # untouched data: escaping is the page's job
    assert trace["steps"][1]["error"]["type"] == "IndexError"
    assert [lines_text(lines) for lines in body["code_lines"]] == [s["code"] for s in trace["steps"]]
    classes = {cls for line in body["code_lines"][0] for cls, _ in line}
    assert {"tok-agent", "tok-str", "tok-op"} <= classes


def test_session_cookie_is_accepted_like_the_ui_sends_it(client, runs):
    client.cookies.set("_token", token())
    try:
        response = client.get(trace_url(runs["pipeline"], "agent"))
    finally:
        client.cookies.clear()
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(("headers", "expected"), [
    ({}, 401),                                                  # no credentials
    ({"Authorization": "Bearer not-a-jwt"}, 403),               # Airflow: invalid token
    ("no-role", 403),                                           # valid user, no permission at all
])
def test_unauthenticated_or_unauthorised_callers_get_no_trace(client, runs, headers, expected):
    if headers == "no-role":
        headers = bearer(role=None)
    for url in (trace_url(runs["pipeline"], "agent"),
                f"{PREFIX}/dags/{runs['pipeline'].dag_id}/runs/{runs['pipeline'].run_id}/agents.json"):
        response = client.get(url, headers=headers)
        assert response.status_code == expected, response.text
        assert "steps" not in response.text


def test_access_is_the_xcom_permission_of_that_dag(client, runs, monkeypatch):
    """A user who may read the DAG but not its XComs does not see its traces."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity

    manager = get_auth_manager()
    allowed = type(manager).is_authorized_dag
    asked = []

    def is_authorized_dag(self, *, method, user, access_entity=None, details=None):
        asked.append((method, access_entity, details.id if details else None))
        if access_entity == DagAccessEntity.XCOM and details and details.id == "test_agent_pipeline":
            return False
        return allowed(self, method=method, user=user, access_entity=access_entity, details=details)

    monkeypatch.setattr(type(manager), "is_authorized_dag", is_authorized_dag)
    denied = client.get(trace_url(runs["pipeline"], "agent"), headers=bearer())
    other_dag = client.get(trace_url(runs["mapped"], "agent", 0), headers=bearer())

    assert denied.status_code == 403 and other_dag.status_code == 200
    assert ("GET", DagAccessEntity.XCOM, "test_agent_pipeline") in asked


def test_mapped_task_instances_each_have_their_trace(client, runs):
    tasks = {}
    for index in (0, 1):
        response = client.get(trace_url(runs["mapped"], "agent", index), headers=bearer())
        assert response.status_code == 200, response.text
        assert response.json()["map_index"] == index
        tasks[index] = response.json()["trace"]["task"]
    assert tasks == {0: "Double 0", 1: "Double 1 again"}

    missing = client.get(trace_url(runs["mapped"], "agent", 7), headers=bearer())
    assert missing.status_code == 404
    assert missing.json()["detail"]["reason"] == "no_task_instance"


def test_decorated_task_has_a_trace(client, runs):
    response = client.get(trace_url(runs["decorated"], "total"), headers=bearer())
    assert response.status_code == 200, response.text
    assert response.json()["trace"]["answer"] == {"sum": 12}


@pytest.mark.parametrize(("task_id", "reason", "words"), [
    ("extract_orders", "not_an_agent_task", "not a CodeAgentOperator"),
    ("no_such_task", "no_task_instance", "has no task instance no_such_task"),
])
def test_a_task_without_a_trace_gets_a_plain_explanation(client, runs, task_id, reason, words):
    response = client.get(trace_url(runs["pipeline"], task_id), headers=bearer())

    assert response.status_code == 404
    detail = response.json()["detail"]
    assert detail["reason"] == reason and words in detail["message"]


def test_an_agent_task_that_ended_before_its_first_step(client, runs, model_server, test_dags):
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import delete

    from airflow_codeagent.operators.codeagent import TRACE_XCOM_KEY

    model_server.reset([code("final_answer(1)")])
    dag_run = test_dags.get_dag("test_agent_max_steps_fail").test(
        logical_date=pendulum.datetime(2024, 5, 4, tz="UTC"))
    with create_session() as session:
        session.execute(delete(XComModel).where(XComModel.dag_id == dag_run.dag_id,
                                                XComModel.run_id == dag_run.run_id,
                                                XComModel.key == TRACE_XCOM_KEY))

    response = client.get(trace_url(dag_run, "agent"), headers=bearer())
    assert response.status_code == 404
    detail = response.json()["detail"]
    assert detail["reason"] == "no_trace"
    assert "ended (state: success) without an agent trace" in detail["message"]

    no_run = client.get(f"{PREFIX}/dags/{dag_run.dag_id}/runs/nope/tasks/agent/trace.json", headers=bearer())
    assert no_run.status_code == 404 and no_run.json()["detail"]["reason"] == "no_run"


def test_a_run_killed_mid_way_says_so(client, runs):
    """A trace still marked running on a task instance that is no longer running: the task was killed."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    from airflow_codeagent.operators.codeagent import TRACE_XCOM_KEY

    dag_run = runs["decorated"]
    good = client.get(trace_url(dag_run, "total"), headers=bearer()).json()["trace"]
    killed = {**good, "status": "running", "ended_at": None, "duration_s": None, "answer": None,
              "answer_source": None}
    with create_session() as session:
        XComModel.set(TRACE_XCOM_KEY, killed, dag_id=dag_run.dag_id, task_id="total", run_id=dag_run.run_id,
                      session=session)
    try:
        body = client.get(trace_url(dag_run, "total"), headers=bearer()).json()
        assert body["liveness"] == "stopped"
        assert body["notice"].startswith("The agent never finished: its trace was left open when the task "
                                         "stopped (task state: success), so the task was killed or crashed")
        assert "Showing the 1 step it recorded" in body["notice"]
    finally:
        with create_session() as session:
            XComModel.set(TRACE_XCOM_KEY, good, dag_id=dag_run.dag_id, task_id="total", run_id=dag_run.run_id,
                          session=session)


def test_dag_run_view_lists_every_agent_task(client, runs):
    dag_run = runs["mapped"]
    response = client.get(f"{PREFIX}/dags/{dag_run.dag_id}/runs/{quote(dag_run.run_id, safe='')}/agents.json",
                          headers=bearer())
    assert response.status_code == 200, response.text
    rows = response.json()["agents"]
    assert [(r["task_id"], r["map_index"], r["status"], r["steps"], r["max_steps"]) for r in rows] == [
        ("agent", 0, "final_answer", 1, 3), ("agent", 1, "final_answer", 1, 3)]
    assert all(r["input_tokens"] == 100 and r["output_tokens"] == 20 and r["has_trace"] for r in rows)

    pipeline = runs["pipeline"]
    rows = client.get(f"{PREFIX}/dags/{pipeline.dag_id}/runs/{quote(pipeline.run_id, safe='')}/agents.json",
                      headers=bearer()).json()["agents"]
    assert [(r["task_id"], r["status"], r["steps"]) for r in rows] == [("agent", "final_answer", 3)]


# -- the HTML page ---------------------------------------------------------------------------


def test_page_is_a_shell_with_a_strict_content_security_policy(client, runs):
    response = client.get(trace_url(runs["pipeline"], "agent", page=True))

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "frame-ancestors 'self'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    page = response.text
    # No trace data in the page: the <script> in the trace never reaches the HTML; the script
    # renders it as text (checked in a real browser in tests/browser).
    assert "__pwned" not in page
    assert re.findall(r"<script[^>]*>", page) == ['<script src="../../../../../../static/trace.js" defer>']
    assert 'data-json="trace.json?map_index=-1"' in page


def test_page_escapes_what_comes_from_the_url(client):
    evil = '"><img src=x onerror=alert(1)><script>alert(2)<\\script>'
    response = client.get(f"{PREFIX}/dags/d/runs/r/tasks/{quote(evil, safe='')}/trace?map_index=%7BMAP_INDEX%7D")

    assert response.status_code == 200
    assert "<img" not in response.text and "<script>alert" not in response.text
    assert "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;&lt;script&gt;alert(2)" in response.text
    assert 'data-json="trace.json?map_index=-1"' in response.text  # the UI's unfilled placeholder


def test_static_assets_ship_in_the_package(client):
    for name, kind in (("trace.js", "text/javascript"), ("trace.css", "text/css"), ("icon.svg", "image/svg+xml")):
        response = client.get(f"{PREFIX}/static/{name}")
        assert response.status_code == 200 and response.headers["content-type"].startswith(kind), name
    assert client.get(f"{PREFIX}/static/..%2Fviews.py").status_code == 404
    assert client.get(f"{PREFIX}/static/views.py").status_code == 404


def test_renderer_never_parses_trace_text_as_html():
    script = (Path(render.__file__).parent / "static" / "trace.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function",
                 "DOMParser", "createContextualFragment"):
        assert sink not in script, sink
    assert "http://" not in script and "https://" not in script  # no CDN, no remote anything


# -- Airflow wiring: UI tabs and the extra link -----------------------------------------------


def test_plugin_adds_tabs_for_task_instances_and_dag_runs(client):
    response = client.get("/api/v2/plugins", headers=bearer())
    assert response.status_code == 200, response.text
    plugin = next(p for p in response.json()["plugins"] if p["name"] == "codeagent")
    views = {v["destination"]: v for v in plugin["external_views"]}
    assert views["task_instance"]["name"] == "Agent trace"
    assert views["task_instance"]["url_route"] == "agent-trace"
    assert views["task_instance"]["href"] == (
        "codeagent/dags/{DAG_ID}/runs/{RUN_ID}/tasks/{TASK_ID}/trace?map_index={MAP_INDEX}")
    assert views["dag_run"]["href"] == "codeagent/dags/{DAG_ID}/runs/{RUN_ID}/agents"
    assert plugin["fastapi_apps"][0]["url_prefix"] == PREFIX


@pytest.mark.parametrize(("run", "task_id", "map_index", "suffix"), [
    ("pipeline", "agent", -1, "/tasks/agent/plugin/agent-trace"),
    ("mapped", "agent", 1, "/tasks/agent/mapped/1/plugin/agent-trace"),
    ("decorated", "total", -1, "/tasks/total/plugin/agent-trace"),
])
def test_agent_tasks_have_an_extra_link_to_their_trace_tab(client, runs, run, task_id, map_index, suffix):
    dag_run = runs[run]
    run_id = quote(dag_run.run_id, safe="")
    response = client.get(f"/api/v2/dags/{dag_run.dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/links",
                          params={"map_index": map_index}, headers=bearer())
    assert response.status_code == 200, response.text
    assert response.json()["extra_links"]["Agent trace"] == f"dags/{dag_run.dag_id}/runs/{run_id}{suffix}"


def test_other_tasks_have_no_agent_trace_link(client, runs):
    dag_run = runs["pipeline"]
    response = client.get(f"/api/v2/dags/{dag_run.dag_id}/dagRuns/{quote(dag_run.run_id, safe='')}"
                          "/taskInstances/extract_orders/links", headers=bearer())
    assert response.status_code == 200, response.text
    assert "Agent trace" not in response.json()["extra_links"]


# -- the pieces on their own -------------------------------------------------------------------


@pytest.mark.parametrize("source", [
    "def f(x):\n    return {'a': [x, 1.5e3]}  # comment\n\nprint(f(2))\nfinal_answer(None)",
    'text = f"{value!r:>10} {{literal}}"\nraw = rb"\\x00"\n',
    's = """never closed\n<script>alert(1)</script>\n',   # tokenizer gives up: the rest is plain text
    "if x:\n  y = 1\n    z = 2\n",                         # bad indentation
    "\ttabs\tand  spaces  \n\n\n",
    "",
])
def test_highlighter_keeps_the_code_exactly(source):
    lines = render.highlight_python(source)
    assert lines_text(lines) == source
    assert all(cls == "" or cls.startswith("tok-") for line in lines for cls, _ in line)


def test_highlighter_classes():
    (line,) = render.highlight_python("def go(n): return print(len('x'), 3, True)  # ok")
    assert ["tok-kw", "def"] in line and ["tok-def", "go"] in line and ["tok-agent", "print"] in line
    assert ["tok-bi", "len"] in line and ["tok-str", "'x'"] in line and ["tok-num", "3"] in line
    assert ["tok-const", "True"] in line and ["tok-com", "# ok"] in line


@pytest.mark.parametrize(("status", "ti_state", "expected"), [
    ("final_answer", "success", "finished"),
    ("error", "failed", "finished"),
    ("running", "running", "running"),
    ("running", "failed", "stopped"),
    ("running", "up_for_retry", "stopped"),
    ("running", None, "stopped"),
])
def test_liveness(status, ti_state, expected):
    trace = {"status": status, "steps": [{}]}
    assert render.liveness(trace, ti_state) == expected
    assert (render.notice(trace, ti_state) is None) == (expected == "finished")


@pytest.mark.parametrize(("state", "agent", "reason"), [
    ("success", False, "not_an_agent_task"),
    ("queued", True, "not_started"),
    (None, True, "not_started"),
    ("running", True, "no_step_yet"),
    ("upstream_failed", True, "did_not_run"),
    ("failed", True, "no_trace"),
])
def test_no_trace_explanations(state, agent, reason):
    got, message = render.no_trace_explanation(task_id="t", ti_state=state, operator="BashOperator", agent=agent)
    assert got == reason and message.startswith("Task t ")


def test_loading_the_plugin_stays_light():
    """Airflow loads plugins in every task process: the API-server modules load on the app's first request."""
    import subprocess
    import sys

    probe = ("import sys, airflow_codeagent.plugins as p; "
             "print(p.CodeAgentPlugin.name, 'airflow.api_fastapi.core_api.security' in sys.modules, "
             "'airflow_codeagent.plugins.views' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.split()[-3:] == ["codeagent", "False", "False"]
