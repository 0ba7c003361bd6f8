"""A daily scheduled agent run that reasons over its own data interval.

The prompt names the interval with pendulum-rendered template values; the
tool serves deterministic daily metrics, so each run is reproducible.
"""

from __future__ import annotations

import hashlib

import pendulum
from airflow.sdk import dag

from airflow_codeagent import CodeAgentOperator, tool


@tool
def daily_metrics(day: str) -> dict:
    """Pipeline metrics for one day: rows loaded, failed rows and load minutes.

    Args:
        day: the date as YYYY-MM-DD.
    """
    date = pendulum.parse(day).date()
    seed = int(hashlib.sha256(date.isoformat().encode()).hexdigest()[:8], 16)
    rows = 10_000 + seed % 2_000
    failed = (seed // 7) % 40 if date.day % 5 else 400 + seed % 50  # every 5th day spikes
    return {"day": date.isoformat(), "rows": rows, "failed_rows": failed, "load_minutes": 12 + seed % 9}


@dag(schedule="@daily", start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False,
     tags=["codeagent", "example"])
def codeagent_daily_metrics_review():
    CodeAgentOperator(
        task_id="review_week",
        prompt=(
            "Review pipeline health for the 7 days ending {{ data_interval_end | ds }} "
            "(that day included, going back 6 days). Use daily_metrics(day) for each day. A day is "
            "anomalous when failed_rows / rows > 0.02. Return a dict with 'anomalous_days' (sorted "
            "ISO dates) and 'worst_day' (the day with the highest failure ratio)."
        ),
        tools=[daily_metrics],
        max_steps=6,
        authorized_imports=["datetime", "math", "statistics"],
        on_max_steps="succeed_with_partial",
    )


codeagent_daily_metrics_review()
