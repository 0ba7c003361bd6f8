"""DAGs for the approval tests: agent -> human approval -> apply, against a real SQLite file.

The connection ``codeagent_approval_sqlite`` is defined by the test (as an
environment variable) before the DAG runs. ``audit`` is a side-effecting
tool that writes a line to the file ``$CODEAGENT_APPROVAL_AUDIT``; when
``$CODEAGENT_APPROVAL_FAIL_ONCE`` names a file that does not exist yet, its
first call creates that file and fails, so the apply step fails once and is
retried.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG

from airflow_codeagent import RetryPolicy
from airflow_codeagent.approval import agent_with_approval
from airflow_codeagent.approval.operators import ApplyIntentsOperator
from airflow_codeagent.tools.base import tool
from airflow_codeagent.tools.sql import SQLTool

START = pendulum.datetime(2024, 1, 1, tz="UTC")
SQL_CONN_ID = "codeagent_approval_sqlite"


@tool(side_effect=True)
def audit(message: str) -> dict:
    """Append one line to the team's audit log.

    Args:
        message: what was changed and why, one line.
    """
    fail_once = os.environ.get("CODEAGENT_APPROVAL_FAIL_ONCE")
    if fail_once and not Path(fail_once).exists():
        Path(fail_once).write_text("failed once")
        raise RuntimeError("the audit log is unavailable (simulated, first try only)")
    with open(os.environ["CODEAGENT_APPROVAL_AUDIT"], "a", encoding="utf-8") as log:
        log.write(message + "\n")
    return {"logged": message}


with DAG("test_approval", schedule=None, start_date=START, catchup=False,
         default_args={"retry": RetryPolicy(max_retries=1, initial_delay_s=0.01, max_delay_s=0.02)}):
    agent_with_approval(
        task_id="fix",
        prompt="Flip the sign of negative order totals and note it in the audit log.",
        tools=[SQLTool(SQL_CONN_ID, read_only=False, allowed_tables=["orders"]), audit],
        max_steps=4,
        sandbox="restricted",
        approval_kwargs={"subject": "Fix negative order totals?"},
        apply_kwargs={"retries": 1, "retry_delay": timedelta(seconds=0)},
    )


@tool(side_effect=True)
def tag_release(name: str) -> dict:
    """Record a release tag in the team's audit log.

    Args:
        name: the tag, e.g. "v1.2".
    """
    with open(os.environ["CODEAGENT_APPROVAL_AUDIT"], "a", encoding="utf-8") as log:
        log.write(f"tag {name}\n")
    return {"tagged": name}


def _approve_two_intents(ti) -> None:
    """Stands in for the reviewer, so that the apply step runs on every Airflow minor (no HITL)."""
    from airflow_codeagent.approval.intents import intent_fingerprint
    from airflow_codeagent.approval.operators import APPROVED_XCOM_KEY, DECISION_XCOM_KEY

    intents = [{"id": 1, "tool": "tag_release", "args": [], "kwargs": {"name": "v1.2"}},
               {"id": 2, "tool": "audit", "args": [], "kwargs": {"message": "released v1.2"}}]
    intents = [{**i, "fingerprint": intent_fingerprint(i)} for i in intents]
    ti.xcom_push(key=APPROVED_XCOM_KEY, value=intents)
    ti.xcom_push(key=DECISION_XCOM_KEY, value={"decision": "approved", "intents": [1, 2]})


with DAG("test_apply_replay_storage", schedule=None, start_date=START, catchup=False):
    # Where Airflow has no task state store (before 3.3), replay_storage is what keeps a retried
    # apply from running an intent twice.
    approved = PythonOperator(task_id="approved", python_callable=_approve_two_intents)
    approved >> ApplyIntentsOperator(
        task_id="apply", tools=[tag_release, audit], approval_task_id="approved",
        replay_storage=f"file://{os.environ['CODEAGENT_REPLAY_DIR']}",
        retries=1, retry_delay=timedelta(seconds=0))
