"""DAGs for the connection-tool tests: an agent querying SQLite through SQLTool, in both sandboxes.

The connection ``codeagent_tools_sqlite`` does not exist when this file is
parsed; the test defines it (as an environment variable) before it runs the
DAG, which shows that building the tools does not touch the connection.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from airflow_codeagent import CodeAgentOperator, RetryPolicy
from airflow_codeagent.tools.sql import SQLTool

START = pendulum.datetime(2024, 1, 1, tz="UTC")
SQL_CONN_ID = "codeagent_tools_sqlite"
DEFAULTS = {"retry": RetryPolicy(max_retries=1, initial_delay_s=0.01, max_delay_s=0.02)}

for sandbox in ("isolated", "restricted"):
    with DAG(f"test_sql_tool_{sandbox}", schedule=None, start_date=START, catchup=False, default_args=DEFAULTS):
        CodeAgentOperator(
            task_id="agent",
            prompt="How many orders does each customer have?",
            tools=[SQLTool(SQL_CONN_ID, max_rows=3, allowed_tables=["orders", "customers"],
                           description="the shop's orders")],
            sandbox=sandbox,
            max_steps=4,
        )
