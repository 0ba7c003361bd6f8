"""Fan-out: one agent per support ticket with dynamic task mapping, then a fixed aggregate.

Each map index has its own trace in XCom. ``pool="llm"`` (create it with
``airflow pools set llm 2 "LLM calls"``) would cap how many run at once.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task

from airflow_codeagent import CodeAgentOperator, tool

_ACCOUNTS = {
    "acme": {"plan": "enterprise", "open_incidents": 2},
    "globex": {"plan": "free", "open_incidents": 0},
    "initech": {"plan": "pro", "open_incidents": 1},
}


@tool
def account(customer: str) -> dict:
    """Account facts for a customer: plan ("free", "pro", "enterprise") and open incidents.

    Args:
        customer: customer slug, e.g. "acme".
    """
    return _ACCOUNTS.get(customer, {"plan": "unknown", "open_incidents": 0})


@dag(schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False,
     tags=["codeagent", "example"])
def codeagent_ticket_triage():
    @task
    def tickets() -> list[dict]:
        return [
            {"ticket": {"id": 1, "customer": "acme", "text": "Dashboard down since 9am, all users affected"}},
            {"ticket": {"id": 2, "customer": "globex", "text": "How do I change my avatar?"}},
            {"ticket": {"id": 3, "customer": "initech", "text": "Exports fail for large files"}},
        ]

    triage = CodeAgentOperator.partial(
        task_id="triage",
        prompt=(
            "Triage the support ticket in `ticket`. Look up the customer's account. Priority is "
            "'P1' for an outage affecting an enterprise customer, 'P2' for a broken feature on a "
            "paid plan, otherwise 'P3'. Return a dict with 'id' and 'priority'."
        ),
        tools=[account],
        max_steps=5,
    ).expand(inputs=tickets())

    @task
    def summarize(results: list[dict]) -> dict:
        by_priority: dict[str, list[int]] = {}
        for result in results:
            by_priority.setdefault(result["priority"], []).append(result["id"])
        return {p: sorted(ids) for p, ids in sorted(by_priority.items())}

    summarize(triage.output)


codeagent_ticket_triage()
