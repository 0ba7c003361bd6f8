"""Parsing and transforming messy text: logs, exports, hand-typed identifiers."""

from __future__ import annotations

import math
import re

from airflow_codeagent import tool

from bench.action_tasks import ActionTask
from bench.action_tasks import checks as c


def log_amounts() -> ActionTask:
    lines = [
        "2024-05-02 10:00:01 INFO start batch=b7 rows=1,204",
        "2024-05-02 10:00:02 INFO charge id=1 amount=EUR 1,250.50",
        "2024-05-02 10:00:03 WARN retry id=2 after timeout",
        "2024-05-02 10:00:04 INFO charge id=2 amount= EUR 75",
        "2024-05-02 10:00:05 INFO charge id=3 amount=EUR  310.25 (rows=12)",
        "2024-05-02 10:00:06 INFO charge id=4 amount=USD 99.00",
        "2024-05-02 10:00:07 INFO charge id=5 amount=EUR 2,000.00",
        "2024-05-02 10:00:08 INFO done batch=b7",
    ]

    @tool
    def read_log(batch: str) -> list[str]:
        """The log lines of one load batch.

        Args:
            batch: Batch id; only "b7" exists.
        """
        if batch != "b7":
            raise KeyError(f"no log for batch {batch!r}; only 'b7' exists")
        return list(lines)

    pattern = re.compile(r"amount=\s*EUR\s+([\d,]+(?:\.\d+)?)")
    expected = round(sum(float(m.group(1).replace(",", "")) for line in lines
                         for m in pattern.finditer(line)), 2)
    return ActionTask(
        name="log_amounts", family="text",
        prompt=("Some lines of the log of batch \"b7\" record a charge as \"amount=EUR <number>\" "
                "(spacing varies; numbers may use a comma as thousands separator). Return the sum "
                "of all EUR amounts as a number. Ignore amounts in other currencies."),
        tools=[read_log], expected=expected, check=c.number(expected), min_calls=1,
        reference=("import re\n"
                   "total = 0\n"
                   "for line in read_log('b7'):\n"
                   "    m = re.search(r'amount=\\s*EUR\\s+([\\d,.]+)', line)\n"
                   "    if m:\n"
                   "        total += float(m.group(1).replace(',', ''))\n"
                   "final_answer(round(total, 2))"),
        notes="rows=1,204 is a decoy number; one amount is in USD",
    )


def error_code_counts() -> ActionTask:
    lines = [
        "09:00 ERROR ERR-101 timeout on shard 3",
        "09:01 INFO ok",
        "09:02 ERROR ERR-7 bad header; caused by ERR-101",
        "09:05 WARN slow response (no code)",
        "09:07 ERROR ERR-42 schema drift",
        "09:09 ERROR ERR-101 timeout on shard 1",
        "09:11 INFO ERR-count=0",
    ]

    @tool
    def read_ingest_log() -> list[str]:
        """Lines of this morning's ingestion log.

        Returns:
            A list of log lines.
        """
        return list(lines)

    counts: dict[str, int] = {}
    for code in re.findall(r"ERR-\d+", "\n".join(lines)):
        counts[code] = counts.get(code, 0) + 1
    return ActionTask(
        name="error_code_counts", family="text",
        prompt=("Error codes in the ingestion log look like ERR- followed by digits (e.g. ERR-7); a "
                "line may mention more than one. Return a dict mapping each error code to how many "
                "times it is mentioned in the whole log."),
        tools=[read_ingest_log], expected=counts, check=c.mapping(counts), min_calls=1,
        reference=("import re\n"
                   "counts = {}\n"
                   "for code in re.findall(r'ERR-\\d+', '\\n'.join(read_ingest_log())):\n"
                   "    counts[code] = counts.get(code, 0) + 1\n"
                   "final_answer(counts)"),
        notes="ERR-count=0 is not an error code",
    )


def csv_stock_value() -> ActionTask:
    export = ("sku;qty;unit_price\n"
              "A-1;10;2,50\n"
              "A-2; 3 ;10,00\n"
              "\n"
              "A-3;1;1.234,00\n"
              "A-4;;5,00\n")

    @tool
    def read_export(name: str) -> str:
        """Raw text of a CSV export from the German ERP system.

        Args:
            name: Export name; only "stock_2024_05" exists.
        """
        if name != "stock_2024_05":
            raise KeyError(f"no export {name!r}; only 'stock_2024_05' exists")
        return export

    def german(number: str) -> float:
        return float(number.strip().replace(".", "").replace(",", "."))

    total = 0.0
    for row in export.splitlines()[1:]:
        if not row.strip():
            continue
        _, qty, price = row.split(";")
        if qty.strip():
            total += int(qty) * german(price)
    expected = round(total, 2)
    return ActionTask(
        name="csv_stock_value", family="text",
        prompt=("The export \"stock_2024_05\" is semicolon-separated with German number format "
                "(\",\" is the decimal separator, \".\" separates thousands). Return the total stock "
                "value, the sum of qty * unit_price, skipping blank lines and rows with no qty."),
        tools=[read_export], expected=expected, check=c.number(expected), min_calls=1,
        reference=("total = 0\n"
                   "for row in read_export('stock_2024_05').splitlines()[1:]:\n"
                   "    if not row.strip():\n"
                   "        continue\n"
                   "    sku, qty, price = row.split(';')\n"
                   "    if qty.strip():\n"
                   "        total += int(qty) * float(price.strip().replace('.', '').replace(',', '.'))\n"
                   "final_answer(round(total, 2))"),
        notes="1.234,00 is one thousand two hundred thirty-four",
    )


def ticket_emails() -> ActionTask:
    tickets = {
        "T-1": ("Please add Ana.Diaz@Example.com and ops-team@corp.io to the alert list "
                "(cc: ana.diaz@example.com)."),
        "T-2": ("From: <noreply@corp.io>\nContact bob_smith@vendor.co.uk for access. "
                "Do not write to bob@ (typo in the old wiki)."),
    }

    @tool
    def get_ticket_text(ticket_id: str) -> str:
        """The free-text body of a support ticket.

        Args:
            ticket_id: Ticket id such as "T-1".
        """
        if ticket_id not in tickets:
            raise KeyError(f"unknown ticket {ticket_id!r}; known: {sorted(tickets)}")
        return tickets[ticket_id]

    found = re.findall(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", " ".join(tickets.values()))
    expected = sorted({e.lower() for e in found})
    return ActionTask(
        name="ticket_emails", family="text",
        prompt=("Collect every complete email address mentioned in tickets T-1 and T-2. Return them "
                "lowercased, without duplicates, as a sorted list."),
        tools=[get_ticket_text], expected=expected, check=c.same_items(expected, exact_text=True),
        near_misses=[[e.upper() for e in expected]], min_calls=2,
        reference=("import re\n"
                   "text = get_ticket_text('T-1') + ' ' + get_ticket_text('T-2')\n"
                   "found = re.findall(r'[\\w.+-]+@[\\w-]+(?:\\.[\\w-]+)+', text)\n"
                   "final_answer(sorted(set(e.lower() for e in found)))"),
        notes="'bob@' is incomplete; Ana's address appears twice in different case",
    )


def slowest_job_text() -> ActionTask:
    lines = ["job=extract took 1h 5m 30s", "job=transform took 45m", "job=load took 1h 2s",
             "job=report took 3900s", "job=notify took 12s"]

    @tool
    def get_job_timings() -> list[str]:
        """How long each job of last night's run took, as free text.

        Returns:
            A list of lines like "job=<name> took <duration>", where a duration combines
            hours (h), minutes (m) and seconds (s).
        """
        return list(lines)

    def seconds(text: str) -> int:
        units = {"h": 3600, "m": 60, "s": 1}
        return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([hms])", text))

    parsed = {line.split()[0].split("=")[1]: seconds(line.split(" took ")[1]) for line in lines}
    slowest = max(parsed, key=parsed.__getitem__)
    expected = {"job": slowest, "seconds": parsed[slowest]}
    return ActionTask(
        name="slowest_job_text", family="text",
        prompt=("Which job took longest last night? Return {\"job\": <name>, \"seconds\": <its "
                "duration in seconds as an integer>}."),
        tools=[get_job_timings], expected=expected,
        check=c.fields(job=c.text(slowest), seconds=c.integer(parsed[slowest])), min_calls=1,
        reference=("import re\n"
                   "best, best_s = None, -1\n"
                   "for line in get_job_timings():\n"
                   "    name = line.split()[0].split('=')[1]\n"
                   "    units = {'h': 3600, 'm': 60, 's': 1}\n"
                   "    s = sum(int(n) * units[u] for n, u in re.findall(r'(\\d+)([hms])', line.split(' took ')[1]))\n"
                   "    if s > best_s:\n"
                   "        best, best_s = name, s\n"
                   "final_answer({'job': best, 'seconds': best_s})"),
        notes="report (3900s) is 30 s shorter than extract (1h 5m 30s)",
    )


def normalize_skus() -> ActionTask:
    raw = [" sku-001 ", "SKU_001", "Sku-002", "sku 003", "SKU-002", "SKU-0010", "sku_010"]

    @tool
    def get_sku_list() -> list[str]:
        """SKUs as typed by store staff into the inventory sheet.

        Returns:
            A list of SKU strings.
        """
        return list(raw)

    digits = re.compile(r"\d+")
    expected = sorted({"SKU-%03d" % int(digits.findall(s)[0]) for s in raw})
    return ActionTask(
        name="normalize_skus", family="text",
        prompt=("Normalize the SKUs from get_sku_list to the canonical form \"SKU-\" followed by the "
                "number zero-padded to 3 digits (\"sku_10\" and \"SKU-0010\" both become "
                "\"SKU-010\"). Return the sorted list of distinct canonical SKUs."),
        tools=[get_sku_list], expected=expected, check=c.same_items(expected, exact_text=True),
        near_misses=[[s.lower() for s in expected], [s.replace("-", "_") for s in expected]], min_calls=1,
        reference=("import re\n"
                   "final_answer(sorted(set('SKU-%03d' % int(re.search(r'\\d+', s).group())"
                   " for s in get_sku_list())))"),
    )


def insert_batches() -> ActionTask:
    config = ("# warehouse loader settings\n"
              "[connection]\n"
              "host = db.internal   \n"
              "port=5432\n"
              "\n"
              "[load]\n"
              "batch_size = 5_000   # rows per INSERT\n"
              "retries = 3\n"
              "timeout_s = 90\n")
    rows = 123_456

    @tool
    def read_config(name: str) -> str:
        """Raw text of a loader's INI configuration file.

        Args:
            name: Config name; only "warehouse" exists.
        """
        if name != "warehouse":
            raise KeyError(f"no config {name!r}; only 'warehouse' exists")
        return config

    expected = math.ceil(rows / 5000)
    return ActionTask(
        name="insert_batches", family="text",
        prompt=("The \"warehouse\" loader inserts rows in batches of batch_size (from its config "
                "file). How many INSERT batches does it need to load 123,456 rows? Return an "
                "integer."),
        tools=[read_config], expected=expected, check=c.integer(expected), min_calls=1,
        reference=("import re, math\n"
                   "size = int(re.search(r'batch_size\\s*=\\s*([\\d_]+)', read_config('warehouse'))"
                   ".group(1).replace('_', ''))\n"
                   "final_answer(math.ceil(123456 / size))"),
        notes="5_000 uses an underscore separator and carries an inline comment",
    )


TASKS = (log_amounts, error_code_counts, csv_stock_value, ticket_emails, slowest_job_text,
         normalize_skus, insert_batches)
