"""The shipped example DAGs parse, and the reconciliation example runs end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pendulum
import pytest

from tests.integration.airflow_env import EXAMPLE_DAGS

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def example_dags(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(str(EXAMPLE_DAGS))


def test_every_example_dag_parses(example_dags):
    assert example_dags.import_errors == {}
    assert set(example_dags.dag_ids) == {
        "codeagent_reconcile_orders", "codeagent_daily_metrics_review", "codeagent_ticket_triage"}
    for dag in example_dags.dags.values():
        agent_tasks = [t for t in dag.tasks if t.task_type in ("CodeAgentOperator", "MappedOperator")
                       or getattr(t, "operator_name", "") == "CodeAgentOperator"]
        assert agent_tasks, f"{dag.dag_id} has no agent task"


def test_reconcile_example_runs_extract_agent_load(example_dags, xcoms, tmp_path):
    from airflow_codeagent.testing.scripted_llm import ScriptedLLMServer

    import os

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
    with ScriptedLLMServer(replies) as server:
        previous = os.environ.get("AIRFLOW_CONN_LITELLM_DEFAULT")
        os.environ["AIRFLOW_CONN_LITELLM_DEFAULT"] = json.dumps({
            "conn_type": "litellm", "host": server.api_base, "extra": {"model": "openai/scripted"}})
        try:
            dag_run = example_dags.get_dag("codeagent_reconcile_orders").test(
                logical_date=pendulum.datetime(2024, 5, 1, tz="UTC"))
        finally:
            if previous is None:
                del os.environ["AIRFLOW_CONN_LITELLM_DEFAULT"]
            else:
                os.environ["AIRFLOW_CONN_LITELLM_DEFAULT"] = previous

    states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
    assert states == {"extract_orders": "success", "extract_payments": "success",
                      "reconcile": "success", "load_report": "success"}
    values = xcoms(dag_run.dag_id, dag_run.run_id)
    report = {"missing_payment": ["A-103"], "unsettled": ["A-101", "A-103"]}
    assert values[("reconcile", "return_value", -1)] == report
    path = Path(values[("load_report", "return_value", -1)])
    assert json.loads(path.read_text()) == report
    assert "Reconcile orders against payments for 2024-05-01" in server.requests[0].messages[1]["content"]
