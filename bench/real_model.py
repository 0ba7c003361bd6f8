"""Run the agent against a real (local) LLM on small data-engineering tasks.

Unit tests drive the loop with scripted replies; this bench shows what a real
small model does with our prompt, tools and sandbox. Every tool is a
deterministic offline function and every task has a checkable answer, so a
failure is either the model's or ours, and the trace says which.

    python -m bench.real_model --start-server
    python -m bench.real_model --api-base http://127.0.0.1:8765/v1 --tasks fx_total
"""

from __future__ import annotations

import os

# litellm otherwise spends seconds trying to download its price table at import.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import argparse
import contextlib
import datetime as dt
import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_codeagent import CodeAgent, Tool, tool

from bench import local_llm

DEFAULT_MODEL = f"openai/{local_llm.DEFAULT_ALIAS}"
DEFAULT_API_BASE = local_llm.ServerConfig().api_base
DEFAULT_OUT = Path("bench/results/real_model.jsonl")
AUTHORIZED_IMPORTS = ["math", "statistics", "json", "datetime", "re"]

Checker = Callable[[Any], bool]


@dataclass(frozen=True)
class BenchTask:
    """One task: the prompt, its tools and inputs, and how to judge the answer."""

    name: str
    prompt: str
    tools: Sequence[Tool]
    inputs: Mapping[str, Any]
    expected: Any
    check: Checker
    notes: str = ""


# ---------------------------------------------------------------- checkers
# Tolerant where a human reviewer would be: numbers as numbers or numeric
# strings, floats to the cent, dates as ISO strings or date objects.


def as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.replace(",", "").strip())
        except ValueError:
            return None
    return None


def close_to(expected: float, tol: float = 0.01) -> Checker:
    def check(answer: Any) -> bool:
        number = as_number(answer)
        return number is not None and math.isclose(number, expected, abs_tol=tol)

    return check


def equals_int(expected: int) -> Checker:
    def check(answer: Any) -> bool:
        number = as_number(answer)
        return number is not None and number == expected

    return check


def dict_close_to(expected: Mapping[str, float], tol: float = 0.01) -> Checker:
    def check(answer: Any) -> bool:
        if not isinstance(answer, Mapping) or set(map(str, answer)) != set(expected):
            return False
        return all(close_to(v, tol)(answer[k]) for k, v in expected.items())

    return check


def dict_of_dates(expected: Mapping[str, str]) -> Checker:
    def check(answer: Any) -> bool:
        if not isinstance(answer, Mapping) or set(map(str, answer)) != set(expected):
            return False
        return all(str(answer[k])[:10] == v for k, v in expected.items())

    return check


def equals_text(expected: str) -> Checker:
    def check(answer: Any) -> bool:
        return isinstance(answer, (str, dt.date)) and str(answer).strip().strip("'\"") == expected

    return check


# ---------------------------------------------------------------- tasks
# Each builder returns a task whose expected answer is computed from the same
# data the tools serve, so the data and the answer cannot drift apart.


def fx_total_task() -> BenchTask:
    rates_to_eur = {"EUR": 1.0, "USD": 0.92, "GBP": 1.17, "JPY": 0.0061, "CHF": 1.04}
    amounts = {"USD": 1250.0, "GBP": 310.0, "JPY": 184000, "CHF": 75.25, "EUR": 99.99}

    @tool
    def get_exchange_rate(currency: str) -> float:
        """Exchange rate from a currency to EUR (1 unit of currency = rate EUR).

        Args:
            currency: ISO 4217 code such as "USD".
        """
        code = currency.strip().upper()
        if code not in rates_to_eur:
            raise KeyError(f"no rate for {currency!r}; known: {sorted(rates_to_eur)}")
        return rates_to_eur[code]

    expected = round(sum(v * rates_to_eur[k] for k, v in amounts.items()), 2)
    return BenchTask(
        name="fx_total",
        prompt=("The variable amounts maps currency codes to amounts. Convert every amount to EUR "
                "with get_exchange_rate and return the total in EUR rounded to 2 decimals."),
        tools=[get_exchange_rate], inputs={"amounts": amounts},
        expected=expected, check=close_to(expected),
    )


def customer_orders_task() -> BenchTask:
    customers = {
        "C001": {"id": "C001", "name": "Acme GmbH", "country": "DE"},
        "C002": {"id": "C002", "name": "Borealis AB", "country": "SE"},
        "C003": {"id": "C003", "name": "Cobalt Ltd", "country": "GB"},
        "C004": {"id": "C004", "name": "Dune SARL", "country": "FR"},
    }
    orders = {
        "C001": [{"order_id": 1, "amount": 120.0, "status": "paid"},
                 {"order_id": 2, "amount": 35.5, "status": "refunded"},
                 {"order_id": 3, "amount": 80.25, "status": "paid"}],
        "C002": [{"order_id": 4, "amount": 999.99, "status": "paid"}],
        "C003": [{"order_id": 5, "amount": 15.0, "status": "refunded"},
                 {"order_id": 6, "amount": 42.0, "status": "paid"},
                 {"order_id": 7, "amount": 58.0, "status": "paid"}],
        "C004": [],
    }
    wanted = ["C001", "C003", "C004"]

    @tool
    def get_customer(customer_id: str) -> dict:
        """Look up one customer record.

        Args:
            customer_id: Customer id such as "C001".

        Returns:
            A dict with keys "id", "name" and "country".
        """
        if customer_id not in customers:
            raise KeyError(f"unknown customer id {customer_id!r}")
        return dict(customers[customer_id])

    @tool
    def get_orders(customer_id: str) -> list:
        """All orders of one customer.

        Args:
            customer_id: Customer id such as "C001".

        Returns:
            A list of dicts with keys "order_id", "amount" and "status" ("paid" or "refunded").
        """
        if customer_id not in orders:
            raise KeyError(f"unknown customer id {customer_id!r}")
        return [dict(o) for o in orders[customer_id]]

    expected = {customers[c]["name"]: round(sum(o["amount"] for o in orders[c] if o["status"] == "paid"), 2)
                for c in wanted}
    return BenchTask(
        name="customer_orders",
        prompt=("For each customer id in customer_ids, look up the customer's name and sum the "
                "amounts of their orders whose status is \"paid\". Return a dict mapping customer "
                "name to that total (0 if none)."),
        tools=[get_customer, get_orders], inputs={"customer_ids": wanted},
        expected=expected, check=dict_close_to(expected),
    )


def reconcile_task() -> BenchTask:
    source = [{"id": i, "amount": a} for i, a in
              [(101, 10.0), (102, 20.5), (103, 30.0), (104, 44.4), (105, 50.0), (106, 61.0),
               (107, 70.0), (108, 80.8)]]
    warehouse = {101: 10.0, 102: 20.5, 103: 33.0, 105: 50.0, 106: 60.0, 107: 70.0, 108: 80.8,
                 109: 90.0}

    @tool
    def load_warehouse_rows(table: str) -> list:
        """Rows of a table as loaded into the data warehouse.

        Args:
            table: Table name; only "payments" exists.

        Returns:
            A list of dicts with keys "id" and "amount".
        """
        if table.strip().lower() != "payments":
            raise KeyError(f"unknown table {table!r}; only 'payments' exists")
        return [{"id": k, "amount": v} for k, v in warehouse.items()]

    src = {r["id"]: r["amount"] for r in source}
    ids = set(src) | set(warehouse)
    expected = sum(1 for i in ids if i not in src or i not in warehouse
                   or abs(src[i] - warehouse[i]) > 0.001)
    return BenchTask(
        name="reconcile",
        prompt=("source_rows holds the payments table as exported by the source system. Load the "
                "warehouse copy with load_warehouse_rows(\"payments\") and reconcile the two by id. "
                "Return the number of ids that are missing on either side or whose amount differs."),
        tools=[load_warehouse_rows], inputs={"source_rows": source},
        expected=expected, check=equals_int(expected),
    )


def messy_text_task() -> BenchTask:
    logs = {
        "batch_17": [
            "2024-03-01 09:00 INFO  loaded rows=1,204 amount=EUR 1,250.50",
            "2024-03-01 09:05 WARN  retry; amount=EUR 75",
            "2024-03-01 09:07 INFO  amount = EUR 310.25 (late)",
            "2024-03-01 09:12 INFO  heartbeat",
            "2024-03-01 09:15 INFO  loaded rows=98 amount=EUR 2,000.00",
        ],
    }

    @tool
    def read_log(batch: str) -> list:
        """The log lines of one load batch.

        Args:
            batch: Batch name such as "batch_17".

        Returns:
            A list of strings, one per log line.
        """
        if batch not in logs:
            raise KeyError(f"no log for batch {batch!r}; known: {sorted(logs)}")
        return list(logs[batch])

    expected = 1250.50 + 75 + 310.25 + 2000.00
    return BenchTask(
        name="messy_text",
        prompt=("Read the log of batch \"batch_17\" with read_log. Some lines contain an amount "
                "written as \"amount=EUR <number>\" (spacing varies, numbers may use a comma as "
                "thousands separator). Return the sum of all these amounts as a float."),
        tools=[read_log], inputs={},
        expected=expected, check=close_to(expected),
        notes="rows=1,204 is a decoy number on the same line",
    )


def sla_dates_task() -> BenchTask:
    sla_days = {"P1": 1, "P2": 3, "P3": 10}
    tickets = [
        {"id": "T-1", "opened": "2024-02-28", "priority": "P2"},
        {"id": "T-2", "opened": "2024-02-29", "priority": "P1"},
        {"id": "T-3", "opened": "2024-12-27", "priority": "P3"},
        {"id": "T-4", "opened": "2023-02-27", "priority": "P2"},
    ]

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

    expected = {t["id"]: (dt.date.fromisoformat(t["opened"]) + dt.timedelta(days=sla_days[t["priority"]])).isoformat()
                for t in tickets}
    return BenchTask(
        name="sla_dates",
        prompt=("Each ticket in tickets has an opened date (ISO format) and a priority. The due date "
                "is the opened date plus get_sla_days(priority) calendar days. Return a dict mapping "
                "ticket id to its due date as an ISO string (YYYY-MM-DD)."),
        tools=[get_sla_days], inputs={"tickets": tickets},
        expected=expected, check=dict_of_dates(expected),
        notes="crosses a leap day, a year end and a non-leap February",
    )


def shipping_chain_task() -> BenchTask:
    sku_warehouse = {"SKU-4471": "WH-NORTH", "SKU-1002": "WH-SOUTH"}
    warehouse_city = {"WH-NORTH": "Hamburg", "WH-SOUTH": "Munich"}
    city_rate = {"Hamburg": 1.85, "Munich": 2.10}
    shipment = {"sku": "SKU-4471", "weight_kg": 12.4, "destination": "Munich"}

    @tool
    def get_warehouse_for_sku(sku: str) -> str:
        """The code of the warehouse that stocks a SKU.

        Args:
            sku: Stock keeping unit such as "SKU-1002".
        """
        if sku not in sku_warehouse:
            raise KeyError(f"unknown sku {sku!r}")
        return sku_warehouse[sku]

    @tool
    def get_warehouse_city(warehouse_code: str) -> str:
        """The city a warehouse is in.

        Args:
            warehouse_code: Warehouse code such as "WH-SOUTH".
        """
        if warehouse_code not in warehouse_city:
            raise KeyError(f"unknown warehouse code {warehouse_code!r}")
        return warehouse_city[warehouse_code]

    @tool
    def get_shipping_rate(origin_city: str) -> float:
        """Shipping price in EUR per kg for parcels leaving a city.

        Args:
            origin_city: City the parcel ships from, such as "Munich".
        """
        if origin_city not in city_rate:
            raise KeyError(f"no rate for city {origin_city!r}")
        return city_rate[origin_city]

    expected = round(shipment["weight_kg"] * city_rate[warehouse_city[sku_warehouse[shipment["sku"]]]], 2)
    return BenchTask(
        name="shipping_chain",
        prompt=("shipment describes a parcel. Find the warehouse that stocks its sku, the city that "
                "warehouse is in, and the shipping rate from that origin city. Return the shipping "
                "cost in EUR (weight_kg times the rate), rounded to 2 decimals."),
        tools=[get_warehouse_for_sku, get_warehouse_city, get_shipping_rate],
        inputs={"shipment": shipment},
        expected=expected, check=close_to(expected),
        notes="destination (Munich) is a decoy: the rate depends on the origin city",
    )


def row_count_anomaly_task() -> BenchTask:
    counts = {"2024-05-01": 10_120, "2024-05-02": 10_340, "2024-05-03": 9_980,
              "2024-05-04": 4_015, "2024-05-05": 10_205, "2024-05-06": 10_110}

    @tool
    def get_row_count(table: str, date: str) -> int:
        """Number of rows loaded into a table on one day.

        Args:
            table: Table name; only "events" exists.
            date: Load date as "YYYY-MM-DD".
        """
        if table.strip().lower() != "events":
            raise KeyError(f"unknown table {table!r}; only 'events' exists")
        if date not in counts:
            raise KeyError(f"no load on {date!r}")
        return counts[date]

    dates = sorted(counts)
    low = min(dates, key=counts.__getitem__)
    others = statistics.mean(counts[d] for d in dates if d != low)
    expected = {"date": low, "drop_pct": round(100 * (others - counts[low]) / others, 1)}

    def check(answer: Any) -> bool:
        return (isinstance(answer, Mapping) and str(answer.get("date", ""))[:10] == expected["date"]
                and close_to(expected["drop_pct"], 0.11)(answer.get("drop_pct")))

    return BenchTask(
        name="row_count_anomaly",
        prompt=("Get the row count of table \"events\" for every date in dates. Find the date with "
                "the lowest count and how far it is below the mean of the other dates, in percent. "
                "Return {\"date\": <that date>, \"drop_pct\": <percent rounded to 1 decimal>}."),
        tools=[get_row_count], inputs={"dates": dates},
        expected=expected, check=check,
    )


TASK_BUILDERS: tuple[Callable[[], BenchTask], ...] = (
    fx_total_task, customer_orders_task, reconcile_task, messy_text_task, sla_dates_task,
    shipping_chain_task, row_count_anomaly_task,
)


def all_tasks() -> list[BenchTask]:
    return [build() for build in TASK_BUILDERS]


# ---------------------------------------------------------------- running


@dataclass
class TaskResult:
    """One row of the report; ``trace`` is the agent's full trace document."""

    task: str
    success: bool
    status: str
    steps: int
    llm_calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    retries: int
    wall_s: float
    answer: Any
    expected: Any
    answer_source: str | None
    error: str | None
    step_errors: list[str] = field(default_factory=list)
    trace: dict[str, Any] | None = None

    def to_row(self, include_trace: bool) -> dict[str, Any]:
        row = {k: v for k, v in self.__dict__.items() if k != "trace"}
        if include_trace:
            row["trace"] = self.trace
        return row


def run_task(task: BenchTask, *, model: str, api_base: str, max_steps: int,
             max_tokens: int | None, stop: Sequence[str] = ()) -> TaskResult:
    model_kwargs: dict[str, Any] = {"api_base": api_base, "api_key": "local", "temperature": 0}
    if max_tokens:
        model_kwargs["max_tokens"] = max_tokens
    if stop:
        model_kwargs["stop"] = list(stop)
    agent = CodeAgent(model=model, model_kwargs=model_kwargs, tools=list(task.tools),
                      max_steps=max_steps, authorized_imports=AUTHORIZED_IMPORTS)
    started = time.perf_counter()
    run = agent.run(task.prompt, inputs=dict(task.inputs))
    wall = time.perf_counter() - started
    trace = run.trace
    totals = trace["totals"]
    try:
        success = run.status.value == "final_answer" and bool(task.check(run.answer))
    except Exception:  # noqa: BLE001 - a checker must never crash on an odd answer
        success = False
    step_errors = [f"step {s['index']}: {s['error']['type']}: {s['error']['message'][:200]}"
                   for s in trace["steps"] if s.get("error")]
    return TaskResult(
        task=task.name, success=success, status=run.status.value, steps=totals["steps"],
        llm_calls=totals["llm_calls"], input_tokens=totals["input_tokens"],
        output_tokens=totals["output_tokens"], cost_usd=totals["cost_usd"],
        retries=totals["retries"], wall_s=round(wall, 2), answer=trace["answer"],
        expected=task.expected, answer_source=trace["answer_source"], error=trace["error"],
        step_errors=step_errors, trace=trace,
    )


_COLUMNS = (("task", 18), ("ok", 3), ("status", 15), ("steps", 5), ("calls", 5),
            ("in_tok", 7), ("out_tok", 7), ("wall_s", 7))


def _line(values: Sequence[Any]) -> str:
    cells = []
    for (name, width), value in zip(_COLUMNS, values):
        text = str(value)
        cells.append(text.ljust(width) if name in ("task", "status", "ok") else text.rjust(width))
    return "  ".join(cells)


def format_table(results: Sequence[TaskResult]) -> str:
    """Per-task rows, then totals and per-task means."""
    lines = [_line([name for name, _ in _COLUMNS]), "-" * len(_line(["" for _ in _COLUMNS]))]
    for r in results:
        lines.append(_line([r.task, "yes" if r.success else "NO", r.status, r.steps, r.llm_calls,
                            r.input_tokens, r.output_tokens, f"{r.wall_s:.1f}"]))
    if results:
        n = len(results)
        wins = sum(r.success for r in results)
        sums = [sum(getattr(r, k) for r in results)
                for k in ("steps", "llm_calls", "input_tokens", "output_tokens", "wall_s")]
        lines.append("-" * len(lines[1]))
        lines.append(_line(["TOTAL", f"{wins}/{n}", "", *sums[:4], f"{sums[4]:.1f}"]))
        lines.append(_line(["MEAN", f"{wins / n:.0%}", "", *(f"{s / n:.1f}" for s in sums[:4]),
                            f"{sums[4] / n:.1f}"]))
        costs = [r.cost_usd for r in results]
        cost = "unknown (model has no price)" if any(c is None for c in costs) else f"${sum(costs):.6f}"
        lines.append(f"cost: {cost}; retries: {sum(r.retries for r in results)}")
    return "\n".join(lines)


@contextlib.contextmanager
def _server_if_asked(args: argparse.Namespace) -> Iterator[str]:
    if not args.start_server:
        yield args.api_base
        return
    config = local_llm.config_from_args(args)
    with local_llm.running_server(config) as api_base:
        yield api_base


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.real_model", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--api-base", default=DEFAULT_API_BASE,
                        help="OpenAI-compatible endpoint (default: %(default)s); "
                             "ignored with --start-server")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="litellm model (default: %(default)s)")
    parser.add_argument("--start-server", action="store_true",
                        help="assemble the model if needed and serve it locally for this run")
    parser.add_argument("--max-steps", type=int, default=8, help="default: %(default)s")
    parser.add_argument("--max-tokens", type=int, default=1024,
                        help="output cap per model call, so a looping reply cannot run to n_ctx "
                             "(0 = no cap; default: %(default)s)")
    parser.add_argument("--stop", action="append", default=[], metavar="TEXT",
                        help="stop sequence sent with every call, e.g. 'Observation:' to cut off "
                             "observations the model invents (repeatable; default: none)")
    parser.add_argument("--tasks", nargs="+", metavar="NAME",
                        help=f"run only these tasks (of: {', '.join(t.name for t in all_tasks())})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSONL output (default: %(default)s)")
    parser.add_argument("--no-trace", action="store_true", help="leave full traces out of the JSONL")
    local_llm.add_server_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    local_llm.exit_on_sigterm()
    tasks = all_tasks()
    if args.tasks:
        unknown = sorted(set(args.tasks) - {t.name for t in tasks})
        if unknown:
            print(f"error: unknown task(s) {unknown}", file=sys.stderr)
            return 2
        tasks = [t for t in tasks if t.name in args.tasks]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    results: list[TaskResult] = []
    try:
        with _server_if_asked(args) as api_base, args.out.open("w", encoding="utf-8") as out:
            print(f"model {args.model} at {api_base}; {len(tasks)} task(s); max_steps={args.max_steps}; "
                  f"max_tokens={args.max_tokens or None}; stop={args.stop or None}", flush=True)
            for task in tasks:
                result = run_task(task, model=args.model, api_base=api_base,
                                  max_steps=args.max_steps, max_tokens=args.max_tokens or None,
                                  stop=args.stop)
                results.append(result)
                out.write(json.dumps(result.to_row(not args.no_trace), default=repr) + "\n")
                out.flush()
                print(f"  {task.name}: {'ok' if result.success else 'FAILED'} ({result.status}, "
                      f"answer={result.answer!r}, expected={task.expected!r}, {result.wall_s:.1f} s)",
                      flush=True)
    except local_llm.LocalLLMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print()
    print(format_table(results))
    print(f"\nrows written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
