"""Date arithmetic: SLAs, time zones and DST, staleness, calendars, ISO weeks.

The tools build their data with pendulum (as Airflow does); what they return
is plain ISO text, which model code can read with ``datetime``.
"""

from __future__ import annotations

import pendulum
from airflow_codeagent import tool

from bench.action_tasks import ActionTask
from bench.action_tasks import checks as c


def sla_due_dates() -> ActionTask:
    tickets = [{"id": "T-1", "opened": pendulum.date(2024, 2, 28), "priority": "P2"},
               {"id": "T-2", "opened": pendulum.date(2024, 2, 29), "priority": "P1"},
               {"id": "T-3", "opened": pendulum.date(2024, 12, 27), "priority": "P3"},
               {"id": "T-4", "opened": pendulum.date(2023, 2, 27), "priority": "P2"}]
    sla_days = {"P1": 1, "P2": 3, "P3": 10}

    @tool
    def get_open_tickets() -> list[dict]:
        """Open support tickets.

        Returns:
            A list of {"id": str, "opened": "YYYY-MM-DD", "priority": "P1" | "P2" | "P3"}.
        """
        return [{**t, "opened": t["opened"].to_date_string()} for t in tickets]

    @tool
    def get_sla_days(priority: str) -> int:
        """Calendar days allowed to resolve a ticket of a given priority.

        Args:
            priority: "P1", "P2" or "P3".
        """
        key = priority.strip().upper()
        if key not in sla_days:
            raise KeyError(f"unknown priority {priority!r}; known: {sorted(sla_days)}")
        return sla_days[key]

    expected = {t["id"]: t["opened"].add(days=sla_days[t["priority"]]).to_date_string()
                for t in tickets}
    return ActionTask(
        name="sla_due_dates", family="dates",
        prompt=("A ticket is due its opened date plus the SLA days of its priority (calendar days). "
                "Return a dict mapping each open ticket's id to its due date as \"YYYY-MM-DD\"."),
        tools=[get_open_tickets, get_sla_days], expected=expected, check=c.dates(expected),
        min_calls=4,
        reference=("import datetime\n"
                   "due = {}\n"
                   "for t in get_open_tickets():\n"
                   "    d = datetime.date.fromisoformat(t['opened'])\n"
                   "    due[t['id']] = (d + datetime.timedelta(days=get_sla_days(t['priority']))).isoformat()\n"
                   "final_answer(due)"),
        notes="crosses a leap day, a year end and a non-leap February",
    )


def dst_run_minutes() -> ActionTask:
    berlin = "Europe/Berlin"
    runs = {
        "r-1": (pendulum.datetime(2024, 3, 31, 1, 30, tz=berlin), pendulum.datetime(2024, 3, 31, 4, 10, tz=berlin)),
        "r-2": (pendulum.datetime(2023, 3, 26, 0, 45, tz=berlin), pendulum.datetime(2023, 3, 26, 3, 15, tz=berlin)),
    }

    @tool
    def get_job_run(run_id: str) -> dict:
        """Start and end of a job run, as ISO 8601 timestamps in Berlin local time with UTC offset.

        Args:
            run_id: Run id such as "r-1".
        """
        if run_id not in runs:
            raise KeyError(f"unknown run {run_id!r}; known: {sorted(runs)}")
        start, end = runs[run_id]
        return {"run_id": run_id, "started": start.isoformat(), "ended": end.isoformat()}

    expected = sum(int((end - start).total_seconds() // 60) for start, end in runs.values())
    return ActionTask(
        name="dst_run_minutes", family="dates",
        prompt=("How many minutes did job runs r-1 and r-2 take together (real elapsed time)? "
                "Return an integer."),
        tools=[get_job_run], expected=expected, check=c.integer(expected), min_calls=2,
        reference=("import datetime\n"
                   "total = 0\n"
                   "for rid in ['r-1', 'r-2']:\n"
                   "    r = get_job_run(rid)\n"
                   "    delta = datetime.datetime.fromisoformat(r['ended']) - datetime.datetime.fromisoformat(r['started'])\n"
                   "    total += int(delta.total_seconds() // 60)\n"
                   "final_answer(total)"),
        notes="both runs cross the spring DST switch: each wall-clock difference is an hour too long",
    )


def stale_tables() -> ActionTask:
    as_of = pendulum.datetime(2024, 6, 30, 12, 0, tz="UTC")
    updated = {
        "orders": pendulum.datetime(2024, 6, 30, 2, 0, tz="UTC"),
        "customers": pendulum.datetime(2024, 6, 28, 11, 59, tz="UTC"),
        "events": pendulum.datetime(2024, 6, 28, 14, 0, tz="Europe/Berlin"),
        "products": pendulum.datetime(2024, 6, 20, 8, 0, tz="UTC"),
    }

    @tool
    def list_tables() -> list[str]:
        """Names of the tables in the reporting schema.

        Returns:
            A list of table names.
        """
        return list(updated)

    @tool
    def get_last_updated(table: str) -> str:
        """When a table was last updated, as an ISO 8601 timestamp with UTC offset.

        Args:
            table: Table name such as "orders".
        """
        if table not in updated:
            raise KeyError(f"unknown table {table!r}; known: {sorted(updated)}")
        return updated[table].isoformat()

    expected = sorted(t for t, ts in updated.items() if (as_of - ts).total_seconds() > 48 * 3600)
    return ActionTask(
        name="stale_tables", family="dates",
        prompt=("It is now 2024-06-30T12:00:00+00:00. Which tables were last updated more than 48 "
                "hours ago? Return the sorted list of table names."),
        tools=[list_tables, get_last_updated], expected=expected, check=c.same_items(expected),
        min_calls=5,
        reference=("import datetime\n"
                   "now = datetime.datetime.fromisoformat('2024-06-30T12:00:00+00:00')\n"
                   "final_answer(sorted(t for t in list_tables() if (now - datetime.datetime."
                   "fromisoformat(get_last_updated(t))).total_seconds() > 48 * 3600))"),
        notes="events is exactly 48 h old once its +02:00 offset is applied: not stale",
    )


def next_runs() -> ActionTask:
    last_run = pendulum.date(2024, 2, 26)
    interval = 3

    @tool
    def get_schedule(dag_id: str) -> dict:
        """The schedule of a DAG that runs every N days.

        Args:
            dag_id: DAG id; only "compact_partitions" exists.
        """
        if dag_id != "compact_partitions":
            raise KeyError(f"unknown dag {dag_id!r}; only 'compact_partitions' exists")
        return {"dag_id": dag_id, "last_run": last_run.to_date_string(), "interval_days": interval}

    expected = [last_run.add(days=interval * k).to_date_string() for k in (1, 2, 3)]
    return ActionTask(
        name="next_runs", family="dates",
        prompt=("List the next 3 run dates of DAG \"compact_partitions\" after its last run, as "
                "\"YYYY-MM-DD\" strings in order."),
        tools=[get_schedule], expected=expected, check=c.same_items(expected, ordered=True),
        min_calls=1,
        reference=("import datetime\n"
                   "s = get_schedule('compact_partitions')\n"
                   "d = datetime.date.fromisoformat(s['last_run'])\n"
                   "final_answer([(d + datetime.timedelta(days=s['interval_days'] * k)).isoformat()"
                   " for k in (1, 2, 3)])"),
        notes="2024 is a leap year: the first run is on Feb 29",
    )


def business_days() -> ActionTask:
    holidays = {
        2024: ["2024-01-01", "2024-03-29", "2024-04-01", "2024-05-01", "2024-05-09", "2024-05-20",
               "2024-10-03", "2024-12-25", "2024-12-26"],
        2025: ["2025-01-01", "2025-04-18", "2025-04-21", "2025-05-01", "2025-05-29", "2025-06-09",
               "2025-10-03", "2025-12-25", "2025-12-26"],
    }

    @tool
    def get_public_holidays(year: int) -> list[str]:
        """Public holidays in Germany (nationwide) in one year.

        Args:
            year: Calendar year, 2024 or 2025.
        """
        if int(year) not in holidays:
            raise KeyError(f"no holiday calendar for {year!r}; known: 2024, 2025")
        return list(holidays[int(year)])

    closed = {d for days in holidays.values() for d in days}
    day, end, count = pendulum.date(2024, 12, 20), pendulum.date(2025, 1, 3), 0
    while day <= end:
        if day.isoweekday() <= 5 and day.to_date_string() not in closed:
            count += 1
        day = day.add(days=1)
    return ActionTask(
        name="business_days", family="dates",
        prompt=("How many business days (Monday to Friday, not a German public holiday) are there "
                "from 2024-12-20 to 2025-01-03, both days included? Return an integer."),
        tools=[get_public_holidays], expected=count, check=c.integer(count), min_calls=2,
        reference=("import datetime\n"
                   "closed = set(get_public_holidays(2024)) | set(get_public_holidays(2025))\n"
                   "d, n = datetime.date(2024, 12, 20), 0\n"
                   "while d <= datetime.date(2025, 1, 3):\n"
                   "    if d.weekday() < 5 and d.isoformat() not in closed:\n"
                   "        n += 1\n"
                   "    d += datetime.timedelta(days=1)\n"
                   "final_answer(n)"),
    )


def invoice_aging() -> ActionTask:
    as_of = pendulum.date(2024, 3, 15)
    due = {"I-1": pendulum.date(2024, 3, 20), "I-2": pendulum.date(2024, 3, 14),
           "I-3": pendulum.date(2024, 2, 14), "I-4": pendulum.date(2024, 2, 13),
           "I-5": pendulum.date(2024, 1, 15), "I-6": pendulum.date(2024, 1, 14),
           "I-7": pendulum.date(2023, 12, 1)}

    @tool
    def get_unpaid_invoices() -> list[dict]:
        """Invoices not yet paid.

        Returns:
            A list of {"invoice": str, "due_date": "YYYY-MM-DD"}.
        """
        return [{"invoice": k, "due_date": d.to_date_string()} for k, d in due.items()]

    buckets = {"1-30": 0, "31-60": 0, "61+": 0}
    for d in due.values():
        late = (as_of - d).in_days() if d < as_of else 0
        if late > 60:
            buckets["61+"] += 1
        elif late > 30:
            buckets["31-60"] += 1
        elif late > 0:
            buckets["1-30"] += 1
    return ActionTask(
        name="invoice_aging", family="dates",
        prompt=("As of 2024-03-15, sort the unpaid invoices into aging buckets by days overdue "
                "(2024-03-15 minus due date): \"1-30\", \"31-60\" and \"61+\"; invoices not yet "
                "overdue are left out. Return a dict mapping each of the three bucket names to its "
                "invoice count."),
        tools=[get_unpaid_invoices], expected=buckets, check=c.mapping(buckets), min_calls=1,
        reference=("import datetime\n"
                   "today = datetime.date(2024, 3, 15)\n"
                   "b = {'1-30': 0, '31-60': 0, '61+': 0}\n"
                   "for inv in get_unpaid_invoices():\n"
                   "    late = (today - datetime.date.fromisoformat(inv['due_date'])).days\n"
                   "    key = '61+' if late > 60 else '31-60' if late > 30 else '1-30' if late > 0 else None\n"
                   "    if key:\n"
                   "        b[key] = b[key] + 1\n"
                   "final_answer(b)"),
        notes="boundaries at exactly 30 and 60 days, across February 29",
    )


def iso_week_counts() -> ActionTask:
    events = [pendulum.date(2024, 12, 28), pendulum.date(2024, 12, 30), pendulum.date(2024, 12, 31),
              pendulum.date(2025, 1, 1), pendulum.date(2025, 1, 5), pendulum.date(2025, 1, 6)]

    @tool
    def get_incident_dates() -> list[str]:
        """Dates of the incidents reported around the new year.

        Returns:
            A list of "YYYY-MM-DD" strings.
        """
        return [d.to_date_string() for d in events]

    counts: dict[str, int] = {}
    for d in events:
        year, week, _ = d.isocalendar()
        key = f"{year}-W{week:02d}"
        counts[key] = counts.get(key, 0) + 1
    return ActionTask(
        name="iso_week_counts", family="dates",
        prompt=("Count the incidents per ISO week. Return a dict mapping the ISO week, written "
                "like \"2025-W07\" (ISO year, W, two-digit week), to the number of incidents."),
        tools=[get_incident_dates], expected=counts, check=c.mapping(counts), min_calls=1,
        reference=("import datetime\n"
                   "counts = {}\n"
                   "for s in get_incident_dates():\n"
                   "    y, w, _ = datetime.date.fromisoformat(s).isocalendar()\n"
                   "    k = '%d-W%02d' % (y, w)\n"
                   "    counts[k] = counts.get(k, 0) + 1\n"
                   "final_answer(counts)"),
        notes="2024-12-30 belongs to ISO week 2025-W01",
    )


TASKS = (sla_due_dates, dst_run_minutes, stale_tables, next_runs, business_days, invoice_aging,
         iso_week_counts)
