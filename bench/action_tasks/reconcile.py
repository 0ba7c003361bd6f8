"""Reconciling records: two views of the same data that should agree, and where they do not."""

from __future__ import annotations

from airflow_codeagent import tool

from bench.action_tasks import ActionTask
from bench.action_tasks import checks as c


def missing_orders() -> ActionTask:
    source = [1001, 1002, 1003, 1004, 1005, 1006, 1007, 1008, 1009, 1010, 1011, 1012]
    warehouse = [1012, 1001, 1003, 1002, 1005, 1013, 1006, 1008, 1007, 1010, 1011]

    @tool
    def get_source_order_ids() -> list[int]:
        """Order ids in the source system (the shop database) for yesterday.

        Returns:
            A list of integer order ids.
        """
        return list(source)

    @tool
    def get_warehouse_order_ids() -> list[int]:
        """Order ids loaded into the data warehouse for yesterday (in load order).

        Returns:
            A list of integer order ids.
        """
        return list(warehouse)

    expected = sorted(set(source) - set(warehouse))
    return ActionTask(
        name="missing_orders", family="reconcile",
        prompt=("Which of yesterday's orders are in the source system but missing from the data "
                "warehouse? Return the sorted list of their order ids."),
        tools=[get_source_order_ids, get_warehouse_order_ids], expected=expected,
        check=c.same_items(expected), min_calls=2,
        reference=("missing = set(get_source_order_ids()) - set(get_warehouse_order_ids())\n"
                   "final_answer(sorted(missing))"),
        notes="1013 is only in the warehouse: not part of the answer",
    )


def amount_mismatches() -> ActionTask:
    ledger = [{"invoice_id": 12, "amount": 150.00}, {"invoice_id": 15, "amount": 89.90},
              {"invoice_id": 21, "amount": 1200.00}, {"invoice_id": 22, "amount": 45.50},
              {"invoice_id": 30, "amount": 310.00}, {"invoice_id": 31, "amount": 99.99}]
    bank = [{"ref": "INV-0012", "amount_cents": 15000}, {"ref": "INV-0015", "amount_cents": 8909},
            {"ref": "INV-0021", "amount_cents": 102000}, {"ref": "INV-0022", "amount_cents": 4550},
            {"ref": "INV-0031", "amount_cents": 9999}]

    @tool
    def get_ledger() -> list[dict]:
        """Invoices booked in the accounting ledger.

        Returns:
            A list of {"invoice_id": int, "amount": float} with amounts in EUR.
        """
        return [dict(r) for r in ledger]

    @tool
    def get_bank_payments() -> list[dict]:
        """Payments received on the bank account.

        Returns:
            A list of {"ref": str, "amount_cents": int}; ref is "INV-" plus the invoice id
            padded to 4 digits, e.g. "INV-0012" pays invoice 12.
        """
        return [dict(r) for r in bank]

    paid = {int(b["ref"].split("-")[1]): b["amount_cents"] for b in bank}
    expected = sorted(r["invoice_id"] for r in ledger
                      if paid.get(r["invoice_id"]) != round(r["amount"] * 100))
    return ActionTask(
        name="amount_mismatches", family="reconcile",
        prompt=("Reconcile the ledger with the bank payments. Return the sorted list of invoice ids "
                "whose payment is missing or whose paid amount differs from the booked amount."),
        tools=[get_ledger, get_bank_payments], expected=expected, check=c.same_items(expected),
        min_calls=2,
        reference=("paid = {int(b['ref'].split('-')[1]): b['amount_cents'] for b in get_bank_payments()}\n"
                   "final_answer(sorted(r['invoice_id'] for r in get_ledger()"
                   " if paid.get(r['invoice_id']) != round(r['amount'] * 100)))"),
        notes="different id formats and units (EUR vs cents); 30 is unpaid",
    )


def duplicate_contacts() -> ActionTask:
    contacts = [{"id": 1, "email": " Ana@Example.com"}, {"id": 2, "email": "bob@x.io"},
                {"id": 3, "email": "carl@y.org"}, {"id": 4, "email": "ana@example.com "},
                {"id": 5, "email": "BOB@X.IO"}, {"id": 6, "email": "dina@z.net"},
                {"id": 7, "email": "ana.b@example.com"}]

    @tool
    def get_crm_contacts() -> list[dict]:
        """All contacts in the CRM, as entered by hand.

        Returns:
            A list of {"id": int, "email": str}.
        """
        return [dict(r) for r in contacts]

    seen: dict[str, int] = {}
    for row in contacts:
        key = row["email"].strip().lower()
        seen[key] = seen.get(key, 0) + 1
    expected = sorted(k for k, n in seen.items() if n > 1)
    return ActionTask(
        name="duplicate_contacts", family="reconcile",
        prompt=("Some CRM contacts are duplicates that differ only in letter case or surrounding "
                "spaces of their email. Return the sorted list of normalized emails (lowercase, no "
                "spaces) that occur more than once."),
        tools=[get_crm_contacts], expected=expected, check=c.same_items(expected, exact_text=True),
        near_misses=[[e.upper() for e in expected], [f" {e}" for e in expected]], min_calls=1,
        reference=("counts = {}\n"
                   "for r in get_crm_contacts():\n"
                   "    e = r['email'].strip().lower()\n"
                   "    counts[e] = counts.get(e, 0) + 1\n"
                   "final_answer(sorted(e for e, n in counts.items() if n > 1))"),
    )


def row_count_diff() -> ActionTask:
    source = {"orders": 10500, "customers": 2300, "payments": 9875, "refunds": 120}
    target = {"orders": 10500, "customers": 2298, "payments": 9875, "refunds": 131, "audit": 5}

    @tool
    def get_source_counts() -> dict:
        """Row count per table in the source database.

        Returns:
            A dict mapping table name to row count.
        """
        return dict(source)

    @tool
    def get_target_counts() -> dict:
        """Row count per table in the replica.

        Returns:
            A dict mapping table name to row count.
        """
        return dict(target)

    expected = {t: target.get(t, 0) - n for t, n in source.items() if target.get(t, 0) != n}
    return ActionTask(
        name="row_count_diff", family="reconcile",
        prompt=("Compare the replica with the source database. For every source table whose row "
                "count differs in the replica, give replica count minus source count. Return a dict "
                "mapping table name to that difference (leave out tables that match)."),
        tools=[get_source_counts, get_target_counts], expected=expected, check=c.mapping(expected),
        min_calls=2,
        reference=("s, t = get_source_counts(), get_target_counts()\n"
                   "final_answer({k: t.get(k, 0) - v for k, v in s.items() if t.get(k, 0) != v})"),
        notes="'audit' exists only in the replica: not a source table",
    )


def balance_gap() -> ActionTask:
    opening = 1000.00
    transactions = [250.00, -75.50, -300.00, 1200.25, -19.99]
    reported = 2064.76

    @tool
    def get_opening_balance(account: str) -> float:
        """Balance of an account at the start of the month, in EUR.

        Args:
            account: Account id; only "ACC-9" exists.
        """
        _known(account)
        return opening

    @tool
    def get_transactions(account: str) -> list[float]:
        """The month's transactions on an account, in EUR (negative = money out).

        Args:
            account: Account id; only "ACC-9" exists.
        """
        _known(account)
        return list(transactions)

    @tool
    def get_reported_closing_balance(account: str) -> float:
        """The closing balance the bank reported for the end of the month, in EUR.

        Args:
            account: Account id; only "ACC-9" exists.
        """
        _known(account)
        return reported

    def _known(account: str) -> None:
        if account != "ACC-9":
            raise KeyError(f"unknown account {account!r}; only 'ACC-9' exists")

    expected = round(reported - (opening + sum(transactions)), 2)
    return ActionTask(
        name="balance_gap", family="reconcile",
        prompt=("For account ACC-9, the closing balance should equal the opening balance plus the "
                "sum of the month's transactions. Return the reported closing balance minus that "
                "computed balance, in EUR, rounded to 2 decimals."),
        tools=[get_opening_balance, get_transactions, get_reported_closing_balance],
        expected=expected, check=c.number(expected), min_calls=3,
        reference=("computed = get_opening_balance('ACC-9') + sum(get_transactions('ACC-9'))\n"
                   "final_answer(round(get_reported_closing_balance('ACC-9') - computed, 2))"),
    )


def schema_drift() -> ActionTask:
    schemas = {
        "staging": {"id": "bigint", "email": "varchar", "created_at": "timestamp", "score": "double",
                    "region": "varchar"},
        "prod": {"id": "bigint", "email": "varchar", "created_at": "date", "score": "double",
                 "legacy_flag": "boolean"},
    }

    @tool
    def get_schema(table: str, env: str) -> dict:
        """Column types of a table in one environment.

        Args:
            table: Table name; only "users" exists.
            env: "staging" or "prod".
        """
        if table != "users":
            raise KeyError(f"unknown table {table!r}; only 'users' exists")
        if env not in schemas:
            raise KeyError(f"unknown env {env!r}; use 'staging' or 'prod'")
        return dict(schemas[env])

    stg, prod = schemas["staging"], schemas["prod"]
    expected = {"added": sorted(set(stg) - set(prod)), "removed": sorted(set(prod) - set(stg)),
                "changed": sorted(k for k in set(stg) & set(prod) if stg[k] != prod[k])}
    return ActionTask(
        name="schema_drift", family="reconcile",
        prompt=("Compare table \"users\" in staging with prod before a release. Return a dict with "
                "three sorted lists of column names: \"added\" (in staging, not in prod), "
                "\"removed\" (in prod, not in staging) and \"changed\" (in both, different type)."),
        tools=[get_schema], expected=expected, check=c.mapping(expected), min_calls=2,
        reference=("s, p = get_schema('users', 'staging'), get_schema('users', 'prod')\n"
                   "final_answer({'added': sorted(set(s) - set(p)), 'removed': sorted(set(p) - set(s)),"
                   " 'changed': sorted(k for k in s if k in p and s[k] != p[k])})"),
    )


TASKS = (missing_orders, amount_mismatches, duplicate_contacts, row_count_diff, balance_gap,
         schema_drift)
