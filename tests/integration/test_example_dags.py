"""The shipped example DAGs parse, and two of them run end to end against the scripted model."""

from __future__ import annotations

import json
from pathlib import Path

import pendulum
import pytest

from tests.integration.airflow_env import EXAMPLE_DAGS, dag_bag
from tests.integration.model_connection import scripted_model_connection

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def example_dags(airflow_db):
    return dag_bag(EXAMPLE_DAGS)


def test_every_example_dag_parses(example_dags):
    assert example_dags.import_errors == {}
    assert set(example_dags.dag_ids) == {
        "codeagent_reconcile_orders", "codeagent_daily_metrics_review", "codeagent_ticket_triage",
        "codeagent_data_quality_fix"}
    for dag in example_dags.dags.values():
        agent_tasks = [t for t in dag.tasks if t.task_type in ("CodeAgentOperator", "MappedOperator")
                       or getattr(t, "operator_name", "") == "CodeAgentOperator"]
        assert agent_tasks, f"{dag.dag_id} has no agent task"


def test_reconcile_example_runs_extract_agent_load(example_dags, xcoms):
    replies = [
        "Thought: sum payments per order.\n```python\n"
        "paid = {}\nfor p in payments:\n    paid[p['order_id']] = paid.get(p['order_id'], 0) + p['amount']\n"
        "print(paid)\n```",
        "Thought: compare with totals and refunds.\n```python\n"
        "unsettled = sorted(o['order_id'] for o in orders\n"
        "                   if abs(paid.get(o['order_id'], 0) + refund_total(o['order_id']) - o['total']) > 0.01)\n"
        "missing = sorted(o['order_id'] for o in orders if o['order_id'] not in paid)\n"
        "final_answer({'unsettled': unsettled, 'missing_payment': missing})\n```",
    ]
    with scripted_model_connection(replies, model="openai/scripted") as server:
        dag_run = example_dags.get_dag("codeagent_reconcile_orders").test(
            logical_date=pendulum.datetime(2024, 5, 1, tz="UTC"))

    states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
    assert states == {"extract_orders": "success", "extract_payments": "success",
                      "reconcile": "success", "load_report": "success"}
    values = xcoms(dag_run.dag_id, dag_run.run_id)
    report = {"missing_payment": ["A-103"], "unsettled": ["A-101", "A-103"]}
    assert values[("reconcile", "return_value", -1)] == report
    path = Path(values[("load_report", "return_value", -1)])
    assert json.loads(path.read_text()) == report
    assert "Reconcile orders against payments for 2024-05-01" in server.requests[0].messages[1]["content"]


def test_triage_example_fans_out_one_agent_per_ticket(example_dags, xcoms):
    reply = ("Thought: look up the plan and decide.\n```python\n"
             "plan = account(ticket['customer'])['plan']\ntext = ticket['text'].lower()\n"
             "if plan == 'enterprise' and ('down' in text or 'outage' in text):\n    priority = 'P1'\n"
             "elif plan in ('pro', 'enterprise'):\n    priority = 'P2'\nelse:\n    priority = 'P3'\n"
             "final_answer({'id': ticket['id'], 'priority': priority})\n```")
    with scripted_model_connection([reply] * 3, model="openai/scripted"):
        dag_run = example_dags.get_dag("codeagent_ticket_triage").test(
            logical_date=pendulum.datetime(2024, 5, 2, tz="UTC"))

    states = {(ti.task_id, ti.map_index): ti.state for ti in dag_run.get_task_instances()}
    assert states == {("tickets", -1): "success", ("triage", 0): "success", ("triage", 1): "success",
                      ("triage", 2): "success", ("summarize", -1): "success"}
    values = xcoms(dag_run.dag_id, dag_run.run_id)
    assert values[("summarize", "return_value", -1)] == {"P1": [1], "P2": [3], "P3": [2]}
    for index in range(3):
        assert values[("triage", "codeagent_trace", index)]["inputs"]["ticket"].startswith("dict with 3 keys")
