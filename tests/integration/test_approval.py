"""Staged side effects with human approval, end to end in a real Airflow.

Real parts: a SQLite file behind an Airflow connection, the SQLite metadata
DB, dag.test() running agent -> approval -> apply, the scripted model server,
and the human's answer given the way the UI gives it: through the HITL REST
API of Airflow's own API-server app (``PATCH .../hitlDetails``) with a
SimpleAuthManager JWT, while dag.test() waits for it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

import pendulum
import pytest

from airflow_codeagent.agent.replay import InMemoryJournalStore
from airflow_codeagent.approval import (
    IntentMismatch,
    apply_intents,
    render_markdown,
    resolve_tools,
    staging_tools,
)
from airflow_codeagent.testing.approvals import ApprovalResponder, api_client
from airflow_codeagent.tools.base import tool
from airflow_codeagent.tools.object_storage import ObjectStorageTool
from airflow_codeagent.tools.sql import SQLTool
from tests.integration.model_connection import scripted_model_connection

pytestmark = pytest.mark.integration

CONN_ID = "codeagent_approval_sqlite"  # the id tests/integration/dags/approval_test_dags.py uses
DAG_ID = "test_approval"
UPDATE = "UPDATE orders SET total = -total, fixes = fixes + 1 WHERE total < 0"


def code(body: str) -> str:
    return f"Thought: next.\n```python\n{body}\n```"


@pytest.fixture
def shop_db(tmp_path, monkeypatch) -> Path:
    """Orders 1-10, of which 3 have a negative total; ``fixes`` counts how often a row was fixed."""
    path = tmp_path / "shop.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, total NUMERIC, fixes INTEGER NOT NULL DEFAULT 0)")
    conn.executemany("INSERT INTO orders (id, total) VALUES (?, ?)",
                     [(i, -i if i in (2, 5, 7) else i) for i in range(1, 11)])
    conn.commit()
    conn.close()
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps({"conn_type": "sqlite", "host": str(path)}))
    monkeypatch.setenv("CODEAGENT_APPROVAL_AUDIT", str(tmp_path / "audit.log"))
    return path


def rows(path: Path) -> dict[int, tuple[float, int]]:
    conn = sqlite3.connect(path)
    try:
        return {r[0]: (r[1], r[2]) for r in conn.execute("SELECT id, total, fixes FROM orders")}
    finally:
        conn.close()


# -- staging and applying, without Airflow's scheduler ------------------------------------


def test_staging_executes_nothing_and_previews_sql_with_row_count_and_files_with_first_lines(shop_db, tmp_path):
    files = tmp_path / "files"
    files.mkdir()
    toolkits = [SQLTool(CONN_ID, read_only=False), ObjectStorageTool(str(files), write=True)]
    staged, stager = staging_tools(toolkits)
    by_name = {t.name: t for t in staged}
    before = rows(shop_db)

    assert by_name["sql"].func(UPDATE) == "staged as intent #1"
    text = "\n".join(f"line {i}" for i in range(1, 41))
    assert by_name["write_text"].func("reports/fix.md", text=text) == "staged as intent #2"
    assert by_name["sql"].func("SELECT COUNT(*) AS n FROM orders") == [{"n": 10}]  # reading still runs
    with pytest.raises(ValueError):  # the tool's own statement check applies at staging time
        by_name["sql"].func("DELETE FROM orders; DROP TABLE orders")

    assert rows(shop_db) == before and not (files / "reports").exists()
    sql_intent, file_intent = stager.to_xcom()
    assert sql_intent["tool"] == "sql" and sql_intent["preview"] == UPDATE and sql_intent["row_count"] == 3
    assert sql_intent["arguments"] == {"query": UPDATE}
    assert file_intent["arguments"] == {"path": "reports/fix.md", "text": text}
    assert file_intent["preview"].startswith("write reports/fix.md (")
    assert "line 20\n" in file_intent["preview"] and "line 21" not in file_intent["preview"]
    assert "Staged" not in by_name["sql"].description and "staged for human approval" in by_name["sql"].description
    assert "query" in by_name["sql"].signature_text()
    markdown = render_markdown(stager.to_xcom())
    assert "### Intent #1: `sql` — would touch **3** rows" in markdown and f"```sql\n{UPDATE}\n```" in markdown


def test_apply_runs_each_intent_once_and_refuses_altered_or_unknown_intents(shop_db):
    toolkit = SQLTool(CONN_ID, read_only=False)
    staged, stager = staging_tools([toolkit])
    staged[0].func(UPDATE)
    intents = stager.to_xcom()
    store = InMemoryJournalStore()
    tools = resolve_tools([toolkit])

    first = apply_intents(intents, tools, store)
    again = apply_intents(intents, tools, store)  # a retry with the same store

    assert [a.to_dict()["already_applied"] for a in first + again] == [False, True]
    assert first[0].result == [{"rows_affected": 3}] and again[0].result == [{"rows_affected": 3}]
    assert {i: r for i, r in rows(shop_db).items() if i in (2, 5, 7)} == {2: (2, 1), 5: (5, 1), 7: (7, 1)}
    altered = [dict(intents[0], args=["DELETE FROM orders"])]
    with pytest.raises(IntentMismatch, match="changed after it was staged"):
        apply_intents(altered, tools, InMemoryJournalStore())
    with pytest.raises(IntentMismatch, match="not a side-effecting tool"):
        apply_intents(intents, resolve_tools([SQLTool(CONN_ID)]), InMemoryJournalStore())
    assert rows(shop_db)[1] == (1, 0)


def test_staging_leaves_non_side_effect_tools_alone_and_previews_others_generically():
    @tool(side_effect=True)
    def notify(channel: str, text: str = "") -> str:
        """Post a message.

        Args:
            channel: where.
            text: what.
        """
        raise AssertionError("must not run while staging")

    @tool
    def add(a: int, b: int) -> int:
        """Add."""
        return a + b

    staged, stager = staging_tools([notify, add])
    assert staged[1] is add
    assert staged[0].func("#ops", text="hi") == "staged as intent #1"
    with pytest.raises(TypeError, match="plain data"):
        staged[0].func("#ops", text=object())
    (intent,) = stager.to_xcom()
    assert intent["preview"] == 'notify(\n  channel="#ops",\n  text="hi",\n)'
    assert intent["row_count"] is None


# -- the DAG: agent -> approval -> apply, with the human answering through the REST API ----


@pytest.fixture(scope="module")
def model_server():
    with scripted_model_connection(password="sk-approval-test") as server:
        yield server


@pytest.fixture(scope="module")
def api(airflow_db):
    """Airflow's API-server app (what the UI talks to) and a token for user ``reviewer``."""
    with api_client("reviewer") as client:
        yield client


def _release(wait_s: float = 120) -> None:
    """dag.test() waits for the answer forever: fail the waiting task so the test ends and reports."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState
    from sqlalchemy import update

    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        with create_session() as session:
            released = session.execute(
                update(TaskInstance)
                .where(TaskInstance.dag_id == DAG_ID, TaskInstance.state == TaskInstanceState.AWAITING_INPUT)
                .values(state=TaskInstanceState.FAILED)).rowcount
        if released:
            return
        time.sleep(0.5)


class Reviewer(ApprovalResponder):
    """The responder, which also releases dag.test() if it could not answer."""

    def __init__(self, client, choice: str, reason: str, only: str = "") -> None:
        super().__init__(client, DAG_ID, choice, {"reason": reason, "only": only})

    def run(self) -> None:
        super().run()
        if self.error is not None:
            _release()


def run_with_reviewer(test_dags, api, choice: str, reason: str, day: int, only: str = ""):
    reviewer = Reviewer(api, choice, reason, only)
    reviewer.start()
    dag_run = test_dags.get_dag(DAG_ID).test(logical_date=pendulum.datetime(2024, 6, day, tz="UTC"))
    reviewer.join(10)
    assert reviewer.error is None, reviewer.error
    assert reviewer.response is not None and reviewer.response.status_code == 200, reviewer.response.text
    return dag_run, reviewer


def states(dag_run) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in dag_run.get_task_instances()}


AGENT_SCRIPT = [
    code("print(sql('SELECT COUNT(*) AS n FROM orders WHERE total < 0'))\n"
         f"print(sql({UPDATE!r}))\n"
         "print(audit('flipped the sign of 3 negative order totals'))"),
    code("final_answer('staged the fix')"),
]


def test_approve_applies_each_intent_once_even_when_apply_is_retried(model_server, test_dags, api, xcoms,
                                                                        shop_db, tmp_path, monkeypatch):
    monkeypatch.setenv("CODEAGENT_APPROVAL_FAIL_ONCE", str(tmp_path / "audit-failed-once"))
    model_server.reset(AGENT_SCRIPT)
    before = rows(shop_db)

    dag_run, reviewer = run_with_reviewer(test_dags, api, "Approve", "looks right", 1)

    assert states(dag_run) == {"fix.agent": "success", "fix.approval": "success", "fix.apply": "success"}
    values = xcoms(DAG_ID, dag_run.run_id)
    intents = values[("fix.agent", "codeagent_intents", -1)]
    assert [(i["id"], i["tool"], i["row_count"]) for i in intents] == [(1, "sql", 3), (2, "audit", None)]
    assert intents[0]["preview"] == UPDATE
    trace = values[("fix.agent", "codeagent_trace", -1)]
    assert "[{'n': 3}]\nstaged as intent #1\nstaged as intent #2\n" == trace["steps"][0]["stdout"]
    # what the reviewer saw: the intents as markdown
    assert reviewer.seen["subject"] == "Fix negative order totals?"
    assert "### Intent #1: `sql` — would touch **3** rows" in reviewer.seen["body"]
    assert UPDATE in reviewer.seen["body"] and "### Intent #2: `audit`" in reviewer.seen["body"]
    decision = values[("fix.approval", "codeagent_decision", -1)]
    assert decision["decision"] == "approved" and decision["reason"] == "looks right"
    assert decision["by"]["name"] == "reviewer" and decision["intents"] == [1, 2]
    # try 1 applied the UPDATE, then the audit call failed; try 2 skipped the UPDATE and logged once
    apply_ti = next(ti for ti in dag_run.get_task_instances() if ti.task_id == "fix.apply")
    assert apply_ti.try_number == 2
    applied = values[("fix.apply", "return_value", -1)]
    assert [(a["id"], a["already_applied"]) for a in applied] == [(1, True), (2, False)]
    after = rows(shop_db)
    assert {i: after[i] for i in (2, 5, 7)} == {2: (2, 1), 5: (5, 1), 7: (7, 1)}  # fixed exactly once
    assert all(after[i] == before[i] for i in after if i not in (2, 5, 7))
    assert Path(os.environ["CODEAGENT_APPROVAL_AUDIT"]).read_text() == \
        "flipped the sign of 3 negative order totals\n"


def test_apply_retried_without_a_task_state_store_repeats_nothing_with_replay_storage(
        test_dags, xcoms, tmp_path, monkeypatch):
    # Runs on every minor: before Airflow 3.3 there is no task state store, and replay_storage is
    # what a retried apply reads to skip the intents its failed try already ran.
    audit_log = tmp_path / "audit.log"
    monkeypatch.setenv("CODEAGENT_APPROVAL_AUDIT", str(audit_log))
    monkeypatch.setenv("CODEAGENT_APPROVAL_FAIL_ONCE", str(tmp_path / "audit-failed-once"))
    dag_run = test_dags.get_dag("test_apply_replay_storage").test(logical_date=pendulum.datetime(2024, 7, 1))

    assert states(dag_run) == {"approved": "success", "apply": "success"}
    apply_ti = next(ti for ti in dag_run.get_task_instances() if ti.task_id == "apply")
    assert apply_ti.try_number == 2
    applied = xcoms("test_apply_replay_storage", dag_run.run_id)[("apply", "return_value", -1)]
    assert [(a["id"], a["already_applied"]) for a in applied] == [(1, True), (2, False)]
    assert audit_log.read_text() == "tag v1.2\nreleased v1.2\n"  # the tag once, though try 1 ran it


def test_reject_applies_nothing_and_records_who_and_why(model_server, test_dags, api, xcoms, shop_db):
    model_server.reset(AGENT_SCRIPT)
    before = rows(shop_db)

    dag_run, reviewer = run_with_reviewer(test_dags, api, "Reject", "order 5 is a real refund", 2)

    assert states(dag_run) == {"fix.agent": "success", "fix.approval": "success", "fix.apply": "skipped"}
    assert rows(shop_db) == before
    assert not Path(os.environ["CODEAGENT_APPROVAL_AUDIT"]).exists()
    values = xcoms(DAG_ID, dag_run.run_id)
    decision = values[("fix.approval", "codeagent_decision", -1)]
    assert decision["decision"] == "rejected" and decision["reason"] == "order 5 is a real refund"
    assert decision["by"]["name"] == "reviewer"
    assert ("fix.approval", "codeagent_approved_intents", -1) not in values
    assert len(values[("fix.agent", "codeagent_intents", -1)]) == 2


def test_approving_only_some_intents_applies_just_those(model_server, test_dags, api, xcoms, shop_db):
    model_server.reset(AGENT_SCRIPT)
    before = rows(shop_db)

    dag_run, reviewer = run_with_reviewer(test_dags, api, "Approve", "audit only, the UPDATE needs a look", 3,
                                          only="#2")

    assert states(dag_run) == {"fix.agent": "success", "fix.approval": "success", "fix.apply": "success"}
    assert "Apply only these intents" in json.dumps(reviewer.seen["params"])  # the field the reviewer filled
    assert rows(shop_db) == before  # the UPDATE (#1) was not approved
    assert Path(os.environ["CODEAGENT_APPROVAL_AUDIT"]).read_text() == \
        "flipped the sign of 3 negative order totals\n"
    values = xcoms(DAG_ID, dag_run.run_id)
    decision = values[("fix.approval", "codeagent_decision", -1)]
    assert (decision["decision"], decision["intents"], decision["approved_intents"]) == ("approved", [1, 2], [2])
    assert [a["id"] for a in values[("fix.apply", "return_value", -1)]] == [2]


def test_approving_an_intent_that_was_not_staged_approves_nothing(model_server, test_dags, api, xcoms, shop_db):
    model_server.reset(AGENT_SCRIPT)
    before = rows(shop_db)

    dag_run, _ = run_with_reviewer(test_dags, api, "Approve", "typo", 4, only="1, 7")

    assert states(dag_run)["fix.approval"] == "failed" and states(dag_run)["fix.apply"] == "upstream_failed"
    assert rows(shop_db) == before and not Path(os.environ["CODEAGENT_APPROVAL_AUDIT"]).exists()
    assert ("fix.approval", "codeagent_approved_intents", -1) not in xcoms(DAG_ID, dag_run.run_id)


@pytest.mark.parametrize("sandbox", ["isolated", "restricted"])
def test_agent_run_stages_side_effects_in_either_sandbox(llm_server, shop_db, sandbox):
    from airflow_codeagent import CodeAgent

    server = llm_server([
        code(f"n = sql('SELECT COUNT(*) AS n FROM orders WHERE total < 0')[0]['n']\n"
             f"print(n, sql({UPDATE!r}))"),
        code("final_answer(n)"),
    ])
    tools, stager = staging_tools([SQLTool(CONN_ID, read_only=False)])
    agent = CodeAgent("openai/scripted-model", tools=tools, sandbox=sandbox,
                      model_kwargs={"api_base": server.api_base, "api_key": "sk-test"})
    run = agent.run("Fix negative totals")

    assert run.answer == 3 and run.trace["steps"][0]["stdout"] == "3 staged as intent #1\n"
    assert [(i["tool"], i["row_count"]) for i in stager.to_xcom()] == [("sql", 3)]
    assert all(fixes == 0 for _, fixes in rows(shop_db).values())
    assert "staged for human approval" in server.requests[0].messages[0]["content"]


def test_example_dag_is_agent_approval_apply(airflow_db):
    from tests.integration.airflow_env import EXAMPLE_DAGS, dag_bag

    bag = dag_bag(EXAMPLE_DAGS / "data_quality_fix.py")
    assert bag.import_errors == {}
    dag = bag.get_dag("codeagent_data_quality_fix")
    assert dag.get_task("fix_quality.agent").downstream_task_ids == {"fix_quality.approval"}
    assert dag.get_task("fix_quality.approval").downstream_task_ids == {"fix_quality.apply"}
    assert dag.get_task("fix_quality.apply").downstream_task_ids == {"report"}


def _loop_marks_side_effects() -> bool:
    import inspect

    from airflow_codeagent.agent import loop

    return "side_effect_tools" in inspect.getsource(loop)


@pytest.mark.skipif(not _loop_marks_side_effects(), reason="needs the agent/loop.py change that marks side effects")
def test_without_approval_side_effects_run_and_the_trace_marks_them(llm_server, shop_db):
    import jsonschema

    from airflow_codeagent import CodeAgent
    from airflow_codeagent.agent.trace import load_schema

    server = llm_server([code(f"print(sql({UPDATE!r}))\nprint(sql('SELECT COUNT(*) AS n FROM orders'))"),
                         code("final_answer('done')")])
    agent = CodeAgent("openai/scripted-model", tools=[SQLTool(CONN_ID, read_only=False)], sandbox="restricted",
                      model_kwargs={"api_base": server.api_base, "api_key": "sk-test"})
    run = agent.run("Fix negative totals")

    assert run.trace["steps"][0]["stdout"] == "[{'rows_affected': 3}]\n[{'n': 10}]\n"
    assert [c.get("side_effect") for c in run.trace["steps"][0]["tool_calls"]] == [True, True]
    jsonschema.validate(run.trace, load_schema())
    assert rows(shop_db)[2] == (2, 1)


class TamperingReviewer(Reviewer):
    """Before answering, the agent's intents change under the waiting approval (as a cleared and
    re-run agent task would do): what is approved must be what was shown, or nothing."""

    def run(self) -> None:
        from airflow.models.xcom import XComModel

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            listing = self.client.get(f"/api/v2/dags/{DAG_ID}/dagRuns/~/hitlDetails",
                                      params={"response_received": False})
            pending = listing.json()["hitl_details"] if listing.status_code == 200 else []
            if pending:
                run_id = pending[0]["task_instance"]["dag_run_id"]
                swapped = [{"id": 1, "tool": "sql", "args": ["DELETE FROM orders"], "kwargs": {},
                            "arguments": {"query": "DELETE FROM orders"}, "preview": "DELETE FROM orders",
                            "row_count": 10, "notes": []}]
                XComModel.set("codeagent_intents", swapped, dag_id=DAG_ID, task_id="fix.agent", run_id=run_id)
                break
            time.sleep(0.3)
        super().run()


def test_intents_changed_while_waiting_approve_nothing(model_server, test_dags, api, xcoms, shop_db):
    model_server.reset(AGENT_SCRIPT)
    before = rows(shop_db)
    reviewer = TamperingReviewer(api, "Approve", "looks right")
    reviewer.start()
    dag_run = test_dags.get_dag(DAG_ID).test(logical_date=pendulum.datetime(2024, 6, 5, tz="UTC"))
    reviewer.join(10)

    assert reviewer.error is None, reviewer.error
    assert "UPDATE orders" in reviewer.seen["body"]  # what was shown
    assert states(dag_run)["fix.approval"] == "failed" and states(dag_run)["fix.apply"] == "upstream_failed"
    assert rows(shop_db) == before
    values = xcoms(DAG_ID, dag_run.run_id)
    assert ("fix.approval", "codeagent_approved_intents", -1) not in values
    assert values[("fix.approval", "codeagent_shown_intents", -1)][0]["preview"].startswith("UPDATE orders")
