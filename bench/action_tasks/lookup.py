"""Lookups across several tools, then aggregation: the everyday "join and sum" of data work."""

from __future__ import annotations

import statistics

from airflow_codeagent import tool

from bench.action_tasks import ActionTask
from bench.action_tasks import checks as c


def _unknown(kind: str, value: object, known: object) -> KeyError:
    return KeyError(f"unknown {kind} {value!r}; known: {sorted(known)}")  # type: ignore[call-overload]


def revenue_by_region() -> ActionTask:
    stores = [{"store_id": "S-01", "region": "EMEA"}, {"store_id": "S-02", "region": "APAC"},
              {"store_id": "S-03", "region": "EMEA"}, {"store_id": "S-04", "region": "AMER"},
              {"store_id": "S-05", "region": "EMEA"}]
    revenue = {"S-01": 12500.0, "S-02": 8300.5, "S-03": 4420.25, "S-04": 15010.0, "S-05": 990.75}

    @tool
    def list_stores() -> list[dict]:
        """List every store with the sales region it belongs to.

        Returns:
            A list of {"store_id": str, "region": str}.
        """
        return [dict(s) for s in stores]

    @tool
    def get_store_revenue(store_id: str) -> float:
        """Revenue of one store last month, in EUR.

        Args:
            store_id: Store id such as "S-02".
        """
        if store_id not in revenue:
            raise _unknown("store_id", store_id, revenue)
        return revenue[store_id]

    expected = round(sum(revenue[s["store_id"]] for s in stores if s["region"] == "EMEA"), 2)
    return ActionTask(
        name="revenue_by_region", family="lookup",
        prompt=("What was last month's total revenue, in EUR, of all stores in the EMEA region? "
                "Answer with one number."),
        tools=[list_stores, get_store_revenue], expected=expected, check=c.number(expected),
        min_calls=4,
        reference=('ids = [s["store_id"] for s in list_stores() if s["region"] == "EMEA"]\n'
                   "final_answer(sum(get_store_revenue(i) for i in ids))"),
    )


def invoices_in_eur() -> ActionTask:
    invoices = [{"invoice": "INV-1", "currency": "USD", "amount": 1200.0},
                {"invoice": "INV-2", "currency": "GBP", "amount": 450.0},
                {"invoice": "INV-3", "currency": "USD", "amount": 80.5},
                {"invoice": "INV-4", "currency": "CHF", "amount": 300.0}]
    rates = {"EUR": 1.0, "USD": 0.92, "GBP": 1.17, "CHF": 1.04, "JPY": 0.0061}

    @tool
    def get_open_invoices() -> list[dict]:
        """The open invoices, each in its own currency.

        Returns:
            A list of {"invoice": str, "currency": str, "amount": float}.
        """
        return [dict(i) for i in invoices]

    @tool
    def get_exchange_rate(currency: str) -> float:
        """Exchange rate to EUR: 1 unit of the currency is worth this many EUR.

        Args:
            currency: ISO 4217 code such as "USD".
        """
        code = currency.strip().upper()
        if code not in rates:
            raise _unknown("currency", currency, rates)
        return rates[code]

    expected = round(sum(i["amount"] * rates[i["currency"]] for i in invoices), 2)
    return ActionTask(
        name="invoices_in_eur", family="lookup",
        prompt=("Convert every open invoice to EUR and return the total in EUR, rounded to 2 "
                "decimals."),
        tools=[get_open_invoices, get_exchange_rate], expected=expected, check=c.number(expected),
        min_calls=4,
        reference=("total = 0\n"
                   "for inv in get_open_invoices():\n"
                   "    total += inv['amount'] * get_exchange_rate(inv['currency'])\n"
                   "final_answer(round(total, 2))"),
        notes="two invoices share a currency: 3 rate lookups suffice",
    )


def slowest_pipeline() -> ActionTask:
    durations = {"orders_daily": [42, 45, 40, 44], "clicks_hourly": [5, 6, 5, 7],
                 "crm_sync": [20, 95, 18, 22], "finance_eom": [50, 48, 47, 52]}

    @tool
    def list_pipelines() -> list[str]:
        """Names of all pipelines.

        Returns:
            A list of pipeline names.
        """
        return list(durations)

    @tool
    def get_run_durations(pipeline: str) -> list[int]:
        """Durations of the last runs of a pipeline, in minutes.

        Args:
            pipeline: Pipeline name such as "orders_daily".
        """
        if pipeline not in durations:
            raise _unknown("pipeline", pipeline, durations)
        return list(durations[pipeline])

    means = {p: statistics.mean(d) for p, d in durations.items()}
    slowest = max(means, key=means.__getitem__)
    expected = {"pipeline": slowest, "mean_minutes": round(means[slowest], 2)}
    return ActionTask(
        name="slowest_pipeline", family="lookup",
        prompt=("Which pipeline has the highest average run duration? Return a dict "
                "{\"pipeline\": <name>, \"mean_minutes\": <its average duration in minutes, "
                "rounded to 2 decimals>}."),
        tools=[list_pipelines, get_run_durations], expected=expected,
        check=c.fields(pipeline=c.text(slowest), mean_minutes=c.number(expected["mean_minutes"])),
        min_calls=5,
        reference=("means = {}\n"
                   "for p in list_pipelines():\n"
                   "    d = get_run_durations(p)\n"
                   "    means[p] = sum(d) / len(d)\n"
                   "best = max(means, key=lambda p: means[p])\n"
                   "final_answer({'pipeline': best, 'mean_minutes': round(means[best], 2)})"),
        notes="crm_sync has the single longest run (95) but not the highest mean",
    )


def null_percentages() -> ActionTask:
    columns = ["customer_id", "email", "phone", "country"]
    rows = 2000
    nulls = {"customer_id": 0, "email": 140, "phone": 610, "country": 38}

    @tool
    def get_columns(table: str) -> list[str]:
        """Column names of a table.

        Args:
            table: Table name; only "customers" exists.
        """
        if table != "customers":
            raise KeyError(f"unknown table {table!r}; only 'customers' exists")
        return list(columns)

    @tool
    def get_row_count(table: str) -> int:
        """Number of rows in a table.

        Args:
            table: Table name; only "customers" exists.
        """
        if table != "customers":
            raise KeyError(f"unknown table {table!r}; only 'customers' exists")
        return rows

    @tool
    def get_null_count(table: str, column: str) -> int:
        """Number of rows where a column is NULL.

        Args:
            table: Table name; only "customers" exists.
            column: Column name.
        """
        if table != "customers":
            raise KeyError(f"unknown table {table!r}; only 'customers' exists")
        if column not in nulls:
            raise _unknown("column", column, nulls)
        return nulls[column]

    expected = {col: round(100 * nulls[col] / rows, 1) for col in columns}
    return ActionTask(
        name="null_percentages", family="lookup",
        prompt=("For every column of table \"customers\", compute the percentage of NULL values "
                "(null count / row count * 100). Return a dict mapping column name to that "
                "percentage rounded to 1 decimal."),
        tools=[get_columns, get_row_count, get_null_count], expected=expected,
        check=c.mapping(expected, lambda v: c.number(v, 0.051)), min_calls=6,
        reference=("n = get_row_count('customers')\n"
                   "final_answer({col: round(100 * get_null_count('customers', col) / n, 1)"
                   " for col in get_columns('customers')})"),
    )


def stock_total() -> ActionTask:
    stock = {"WH-A": {"SKU-7": 120, "SKU-9": 40}, "WH-B": {"SKU-7": 33},
             "WH-C": {"SKU-7": 75, "SKU-2": 500}}

    @tool
    def list_warehouses() -> list[str]:
        """Codes of all warehouses.

        Returns:
            A list of warehouse codes.
        """
        return list(stock)

    @tool
    def get_stock(warehouse: str, sku: str) -> int:
        """Units of a SKU on hand in one warehouse (0 if it holds none).

        Args:
            warehouse: Warehouse code such as "WH-A".
            sku: Stock keeping unit such as "SKU-9".
        """
        if warehouse not in stock:
            raise _unknown("warehouse", warehouse, stock)
        return stock[warehouse].get(sku, 0)

    expected = sum(s.get("SKU-7", 0) for s in stock.values())
    return ActionTask(
        name="stock_total", family="lookup",
        prompt="How many units of SKU-7 are on hand across all warehouses in total?",
        tools=[list_warehouses, get_stock], expected=expected, check=c.integer(expected),
        min_calls=4,
        reference="final_answer(sum(get_stock(w, 'SKU-7') for w in list_warehouses()))",
    )


def cost_by_team() -> ActionTask:
    jobs = [{"job": "ingest_orders", "team": "core"}, {"job": "load_crm", "team": "growth"},
            {"job": "build_marts", "team": "core"}, {"job": "score_leads", "team": "growth"},
            {"job": "export_bi", "team": "analytics"}]
    cost = {"ingest_orders": 412.30, "load_crm": 129.99, "build_marts": 880.00,
            "score_leads": 57.45, "export_bi": 230.10}

    @tool
    def list_jobs() -> list[dict]:
        """All scheduled jobs and the team that owns each.

        Returns:
            A list of {"job": str, "team": str}.
        """
        return [dict(j) for j in jobs]

    @tool
    def get_job_cost(job: str) -> float:
        """Compute cost of a job last month, in USD.

        Args:
            job: Job name such as "load_crm".
        """
        if job not in cost:
            raise _unknown("job", job, cost)
        return cost[job]

    totals: dict[str, float] = {}
    for j in jobs:
        totals[j["team"]] = totals.get(j["team"], 0.0) + cost[j["job"]]
    expected = {team: round(v, 2) for team, v in totals.items()}
    return ActionTask(
        name="cost_by_team", family="lookup",
        prompt=("What did each team's jobs cost last month? Return a dict mapping team name to the "
                "total cost in USD of its jobs, rounded to 2 decimals."),
        tools=[list_jobs, get_job_cost], expected=expected, check=c.mapping(expected), min_calls=6,
        reference=("totals = {}\n"
                   "for j in list_jobs():\n"
                   "    totals[j['team']] = totals.get(j['team'], 0) + get_job_cost(j['job'])\n"
                   "final_answer({t: round(v, 2) for t, v in totals.items()})"),
    )


def sla_breaches() -> ActionTask:
    runs = [{"run_id": "r1", "pipeline": "orders", "duration_min": 55},
            {"run_id": "r2", "pipeline": "orders", "duration_min": 61},
            {"run_id": "r3", "pipeline": "clicks", "duration_min": 14},
            {"run_id": "r4", "pipeline": "clicks", "duration_min": 15},
            {"run_id": "r5", "pipeline": "orders", "duration_min": 60},
            {"run_id": "r6", "pipeline": "clicks", "duration_min": 22}]
    sla = {"orders": 60, "clicks": 15}

    @tool
    def get_recent_runs() -> list[dict]:
        """Yesterday's pipeline runs.

        Returns:
            A list of {"run_id": str, "pipeline": str, "duration_min": int}.
        """
        return [dict(r) for r in runs]

    @tool
    def get_sla_minutes(pipeline: str) -> int:
        """The longest a run of a pipeline may take, in minutes.

        Args:
            pipeline: Pipeline name such as "orders".
        """
        if pipeline not in sla:
            raise _unknown("pipeline", pipeline, sla)
        return sla[pipeline]

    expected = [r["run_id"] for r in runs if r["duration_min"] > sla[r["pipeline"]]]
    return ActionTask(
        name="sla_breaches", family="lookup",
        prompt=("Which of yesterday's runs breached their pipeline's SLA, i.e. took strictly "
                "longer than get_sla_minutes allows? Return the list of run ids."),
        tools=[get_recent_runs, get_sla_minutes], expected=expected, check=c.same_items(expected),
        min_calls=3,
        reference=("final_answer([r['run_id'] for r in get_recent_runs()"
                   " if r['duration_min'] > get_sla_minutes(r['pipeline'])])"),
        notes="r4 and r5 take exactly the SLA: not a breach",
    )


TASKS = (revenue_by_region, invoices_in_eur, slowest_pipeline, null_percentages, stock_total,
         cost_by_team, sla_breaches)
