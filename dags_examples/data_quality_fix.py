"""An agent proposes data fixes; a human approves them in the UI; only then are they applied.

``agent_with_approval`` builds a task group ``fix_quality``:

1. ``fix_quality.agent`` investigates the ``orders`` table through a writable
   ``SQLTool``. Its reading queries run; every write is *staged* as an intent
   (the SQL text and how many rows it would touch) and pushed to XCom
   ``codeagent_intents``. Nothing is changed.
2. ``fix_quality.approval`` appears under **Required Actions** in the Airflow
   UI with the intents rendered as markdown. The task waits without holding a
   worker slot. Approve, or Reject with a reason (recorded in XCom
   ``codeagent_decision`` with who decided).
3. ``fix_quality.apply`` runs exactly the approved statements, no model call;
   a retry does not repeat a statement that already succeeded. On Reject it
   is skipped.

Set up the connection ``warehouse`` (any SQL database; a SQLite file works)
with an ``orders(id, customer_id, total, status)`` table.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag, task

from airflow_codeagent.approval import agent_with_approval
from airflow_codeagent.tools.sql import SQLTool


@dag(schedule="@daily", start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False,
     tags=["codeagent", "example", "approval"])
def codeagent_data_quality_fix():
    fix = agent_with_approval(
        task_id="fix_quality",
        prompt=(
            "Find data quality problems in the orders table: negative totals, and status values other "
            "than 'open', 'paid', 'refunded'. Fix each kind with one UPDATE statement, then return a dict "
            "{problem: number of rows}."
        ),
        tools=[SQLTool("warehouse", read_only=False, allowed_tables=["orders"])],
        max_steps=8,
        approval_kwargs={"subject": "Apply the data quality fixes to orders?",
                         "response_timeout": timedelta(hours=12)},
        apply_kwargs={"retries": 2, "retry_delay": timedelta(minutes=1)},
    )

    @task
    def report(applied: list | None = None) -> str:
        return f"applied {len(applied or [])} fix(es)"

    fix >> report(fix.children["fix_quality.apply"].output)


codeagent_data_quality_fix()
