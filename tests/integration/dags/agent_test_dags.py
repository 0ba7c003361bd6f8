"""DAGs the Airflow integration tests run with dag.test() against the scripted model server."""

from __future__ import annotations

import datetime
import os

import pendulum
from airflow.sdk import DAG, BaseHook, task

from airflow_codeagent import CodeAgentOperator, RetryPolicy, tool

START = pendulum.datetime(2024, 1, 1, tz="UTC")
# Every agent task gets a quick retry policy so that a test whose script runs out fails fast.
DEFAULTS = {"retry": RetryPolicy(max_retries=1, initial_delay_s=0.01, max_delay_s=0.02)}


@tool
def lookup_customer(customer_id: int) -> dict:
    """Customer record by id.

    Args:
        customer_id: numeric id.
    """
    return {1: {"name": "acme", "tier": "gold"}, 2: {"name": "globex", "tier": "silver"}}[customer_id]


@tool
def read_connection_password() -> str:
    """Return the model connection's password (a tool that leaks a secret, for the redaction test)."""
    return f"the password is {BaseHook.get_connection('litellm_default').password}"


with DAG("test_agent_pipeline", schedule=None, start_date=START, catchup=False,
             default_args=DEFAULTS):
    @task
    def extract_orders() -> list[dict]:
        return [{"order_id": 1, "customer_id": 1, "total": 10.5},
                {"order_id": 2, "customer_id": 2, "total": 4.5}]

    agent = CodeAgentOperator(
        task_id="agent",
        prompt="Summarise the orders of {{ ds }} by customer name",
        inputs={"orders": "{{ ti.xcom_pull(task_ids='extract_orders') }}", "day": "{{ ds }}",
                "limit": 3},
        tools=[lookup_customer],
        max_steps=4,
    )

    @task
    def load(summary: dict) -> str:
        return f"loaded {len(summary)} customers"

    extract_orders() >> agent
    load(agent.output)


for policy in ("fail", "succeed_with_partial"):
    with DAG(f"test_agent_max_steps_{policy}", schedule=None, start_date=START, catchup=False,
             default_args=DEFAULTS):
        CodeAgentOperator(task_id="agent", prompt="Count forever", max_steps=2, on_max_steps=policy)


with DAG("test_agent_mapped", schedule=None, start_date=START, catchup=False,
             default_args=DEFAULTS):
    CodeAgentOperator.partial(task_id="agent", max_steps=3).expand(
        prompt=["Double {{ ti.map_index }}", "Double {{ ti.map_index }} again"])


with DAG("test_agent_decorated", schedule=None, start_date=START, catchup=False,
             default_args=DEFAULTS):
    @task
    def numbers() -> list[int]:
        return [3, 4, 5]

    @task.codeagent(max_steps=3)
    def total(values: list[int], label: str) -> str:
        return f"Add up the {len(values)} values and call the result {label}"

    total(numbers(), label="sum")


with DAG("test_agent_secret_tool", schedule=None, start_date=START, catchup=False,
             default_args=DEFAULTS):
    CodeAgentOperator(task_id="agent", prompt="Find the password", tools=[read_connection_password],
                      max_steps=3)


with DAG("test_agent_execution_timeout", schedule=None, start_date=START, catchup=False,
             default_args=DEFAULTS):
    CodeAgentOperator(task_id="agent", prompt="Spin", max_steps=3, step_timeout_seconds=None,
                      execution_timeout=datetime.timedelta(seconds=2), final_answer_fallback=False)


with DAG("test_agent_non_json_answer", schedule=None, start_date=START, catchup=False,
             default_args=DEFAULTS):
    CodeAgentOperator(task_id="agent", prompt="Return a set", max_steps=2)


with DAG("test_agent_retry_replay", schedule=None, start_date=START, catchup=False,
         default_args={**DEFAULTS, "retries": 1, "retry_delay": datetime.timedelta(seconds=0)}):
    CodeAgentOperator(task_id="agent", prompt="Three steps then answer", max_steps=5)


with DAG("test_agent_retry_replay_object_storage", schedule=None, start_date=START, catchup=False,
         default_args={**DEFAULTS, "retries": 1, "retry_delay": datetime.timedelta(seconds=0)}):
    CodeAgentOperator(task_id="agent", prompt="Three steps then answer", max_steps=5,
                      replay_storage=f"file://{os.environ.get('CODEAGENT_REPLAY_DIR', '/tmp/codeagent-replay')}")


with DAG("test_agent_json_mode", schedule=None, start_date=START, catchup=False, default_args=DEFAULTS):
    CodeAgentOperator(task_id="agent", prompt="Look up customer 2", tools=[lookup_customer],
                      action_mode="json", max_steps=3)
