"""Fixed extract -> agentic reconciliation -> fixed load.

The extract and load steps are ordinary tasks; only the reconciliation,
whose rules change with every new data quirk, is left to the agent. The
agent returns a JSON report that the load task writes out.

Connection: ``litellm_default`` (see README), e.g. the local model:
AIRFLOW_CONN_LITELLM_DEFAULT='{"conn_type": "litellm", "host": "http://127.0.0.1:8765/v1",
"extra": {"model": "openai/qwen-coder-1.5b"}}'
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pendulum
from airflow.sdk import dag, task

from airflow_codeagent import CodeAgentOperator, tool

_ORDERS = [
    {"order_id": "A-100", "customer": "acme", "total": 120.00},
    {"order_id": "A-101", "customer": "globex", "total": 75.50},
    {"order_id": "A-102", "customer": "initech", "total": 310.00},
    {"order_id": "A-103", "customer": "acme", "total": 42.10},
    {"order_id": "A-104", "customer": "umbrella", "total": 99.99},
]
_PAYMENTS = [
    {"payment_id": "P-1", "order_id": "A-100", "amount": 120.00},
    {"payment_id": "P-2", "order_id": "A-101", "amount": 70.50},
    {"payment_id": "P-3", "order_id": "A-102", "amount": 300.00},
    {"payment_id": "P-4", "order_id": "A-102", "amount": 10.00},
    {"payment_id": "P-5", "order_id": "A-104", "amount": 89.99},
]


@tool
def refund_total(order_id: str) -> float:
    """Total refunded for an order (refunds reduce what the customer owes).

    Args:
        order_id: the order id, e.g. "A-104".
    """
    return {"A-104": 10.00}.get(order_id, 0.0)


@dag(schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False,
     tags=["codeagent", "example"])
def codeagent_reconcile_orders():
    @task
    def extract_orders(ds: str | None = None) -> list[dict]:
        return _ORDERS

    @task
    def extract_payments(ds: str | None = None) -> list[dict]:
        return _PAYMENTS

    reconcile = CodeAgentOperator(
        task_id="reconcile",
        prompt=(
            "Reconcile orders against payments for {{ ds }}. An order is settled when the sum of "
            "its payments plus refund_total(order_id) equals its total (within 0.01). Return a dict "
            "with 'unsettled': the sorted list of order ids that are not settled, and "
            "'missing_payment': the sorted list of order ids with no payment at all."
        ),
        inputs={
            "orders": "{{ ti.xcom_pull(task_ids='extract_orders') }}",
            "payments": "{{ ti.xcom_pull(task_ids='extract_payments') }}",
        },
        tools=[refund_total],
        max_steps=6,
        authorized_imports=["math", "collections", "json"],
    )

    @task
    def load_report(report: dict, ds: str | None = None) -> str:
        out_dir = Path(os.environ.get("CODEAGENT_REPORT_DIR", tempfile.gettempdir()))
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"reconciliation_{ds}.json"
        path.write_text(json.dumps(report, indent=2, sort_keys=True))
        return str(path)

    [extract_orders(), extract_payments()] >> reconcile
    load_report(reconcile.output)


codeagent_reconcile_orders()
