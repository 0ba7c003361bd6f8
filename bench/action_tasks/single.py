"""Single-tool tasks: one call answers them, so JSON tool calls should do as well as code."""

from __future__ import annotations

from airflow_codeagent import tool

from bench.action_tasks import ActionTask
from bench.action_tasks import checks as c


def table_owner() -> ActionTask:
    tables = {"analytics.sessions": {"owner": "data-platform", "rows": 10234, "format": "parquet"},
              "analytics.orders": {"owner": "commerce-data", "rows": 48213, "format": "iceberg"}}

    @tool
    def get_table_metadata(table: str) -> dict:
        """Catalog metadata of a table: owner, row count and storage format.

        Args:
            table: Fully qualified table name such as "analytics.orders".
        """
        if table not in tables:
            raise KeyError(f"unknown table {table!r}; known: {sorted(tables)}")
        return dict(tables[table])

    expected = tables["analytics.sessions"]["owner"]
    return ActionTask(
        name="table_owner", family="single",
        prompt="Who owns table analytics.sessions? Return the owner's name.",
        tools=[get_table_metadata], expected=expected, check=c.text(expected), min_calls=1,
        reference="final_answer(get_table_metadata('analytics.sessions')['owner'])",
    )


def row_count() -> ActionTask:
    counts = {"orders": 48213, "customers": 2300}

    @tool
    def get_row_count(table: str) -> int:
        """Number of rows in a warehouse table.

        Args:
            table: Table name such as "customers".
        """
        if table not in counts:
            raise KeyError(f"unknown table {table!r}; known: {sorted(counts)}")
        return counts[table]

    return ActionTask(
        name="row_count", family="single",
        prompt="How many rows does the warehouse table orders have? Return an integer.",
        tools=[get_row_count], expected=counts["orders"], check=c.integer(counts["orders"]),
        min_calls=1, reference="final_answer(get_row_count('orders'))",
    )


def dag_schedule() -> ActionTask:
    dags = {"daily_revenue": {"schedule": "0 6 * * 1-5", "owner": "finance", "paused": False},
            "hourly_clicks": {"schedule": "@hourly", "owner": "web", "paused": True}}

    @tool
    def get_dag(dag_id: str) -> dict:
        """Settings of an Airflow DAG: its schedule (cron or preset), owner and paused flag.

        Args:
            dag_id: DAG id such as "hourly_clicks".
        """
        if dag_id not in dags:
            raise KeyError(f"unknown dag {dag_id!r}; known: {sorted(dags)}")
        return dict(dags[dag_id])

    expected = dags["daily_revenue"]["schedule"]
    return ActionTask(
        name="dag_schedule", family="single",
        prompt="What is the schedule of DAG daily_revenue? Return the schedule string exactly.",
        tools=[get_dag], expected=expected, check=c.text(expected), min_calls=1,
        reference="final_answer(get_dag('daily_revenue')['schedule'])",
    )


def convert_amount() -> ActionTask:
    rates = {("USD", "EUR"): 0.92, ("EUR", "USD"): 1.087, ("GBP", "EUR"): 1.17}

    @tool
    def convert(amount: float, from_currency: str, to_currency: str) -> float:
        """Convert an amount between currencies at today's reference rate.

        Args:
            amount: The amount in from_currency.
            from_currency: ISO 4217 code such as "GBP".
            to_currency: ISO 4217 code such as "EUR".
        """
        key = (from_currency.strip().upper(), to_currency.strip().upper())
        if key not in rates:
            raise KeyError(f"no rate for {key[0]}->{key[1]}; known: {sorted(rates)}")
        return round(float(amount) * rates[key], 4)

    expected = round(1250 * rates[("USD", "EUR")], 2)
    return ActionTask(
        name="convert_amount", family="single",
        prompt="Convert 1,250 USD to EUR at today's reference rate. Return the amount rounded to 2 decimals.",
        tools=[convert], expected=expected, check=c.number(expected), min_calls=1,
        reference="final_answer(round(convert(1250, 'USD', 'EUR'), 2))",
    )


def run_state() -> ActionTask:
    runs = {("daily_revenue", "scheduled__2024-06-01"): {"state": "failed", "duration_s": 412},
            ("daily_revenue", "scheduled__2024-06-02"): {"state": "success", "duration_s": 388}}

    @tool
    def get_dag_run(dag_id: str, run_id: str) -> dict:
        """State and duration of one DAG run.

        Args:
            dag_id: DAG id such as "daily_revenue".
            run_id: Run id such as "scheduled__2024-06-02".
        """
        key = (dag_id, run_id)
        if key not in runs:
            raise KeyError(f"no run {run_id!r} of dag {dag_id!r}")
        return {"dag_id": dag_id, "run_id": run_id, **runs[key]}

    expected = runs[("daily_revenue", "scheduled__2024-06-01")]["state"]
    return ActionTask(
        name="run_state", family="single",
        prompt=("In which state did run scheduled__2024-06-01 of DAG daily_revenue end? Return the "
                "state string."),
        tools=[get_dag_run], expected=expected, check=c.text(expected), min_calls=1,
        reference="final_answer(get_dag_run('daily_revenue', 'scheduled__2024-06-01')['state'])",
    )


TASKS = (table_owner, row_count, dag_schedule, convert_amount, run_state)
