"""The demo task: invoices in several currencies, a rate tool, a checkable answer.

Small enough for a 1.5B local model, yet it needs a tool call per currency,
a loop and an aggregation, so it shows the Thought -> Code -> Observation
cycle over several steps.
"""

from __future__ import annotations

from typing import Any

from airflow_codeagent.tools.base import Tool, tool

_RATES_TO_EUR = {"EUR": 1.0, "USD": 0.92, "GBP": 1.17, "CHF": 1.05, "JPY": 0.0062}

INVOICES: list[dict[str, Any]] = [
    {"id": "INV-1", "currency": "USD", "amount": 1200.0},
    {"id": "INV-2", "currency": "GBP", "amount": 800.0},
    {"id": "INV-3", "currency": "JPY", "amount": 150000.0},
    {"id": "INV-4", "currency": "EUR", "amount": 430.5},
    {"id": "INV-5", "currency": "CHF", "amount": 99.9},
]

TASK = (
    "Convert every invoice in `invoices` to EUR using get_rate, then return a dict with "
    "'total_eur' (the sum, rounded to 2 decimals) and 'largest' (the id of the invoice "
    "with the largest EUR amount)."
)


@tool
def get_rate(currency: str) -> float:
    """Exchange rate from a currency to EUR: multiply an amount by it to get EUR.

    Args:
        currency: ISO 4217 code such as "USD" or "GBP".
    """
    try:
        return _RATES_TO_EUR[currency.upper()]
    except KeyError:
        raise ValueError(f"unknown currency {currency!r}; known: {sorted(_RATES_TO_EUR)}") from None


def expected_answer() -> dict[str, Any]:
    eur = {inv["id"]: inv["amount"] * _RATES_TO_EUR[inv["currency"]] for inv in INVOICES}
    return {"total_eur": round(sum(eur.values()), 2), "largest": max(eur, key=eur.__getitem__)}


def check_answer(answer: Any) -> bool:
    expected = expected_answer()
    return (isinstance(answer, dict)
            and isinstance(answer.get("total_eur"), (int, float))
            and abs(answer["total_eur"] - expected["total_eur"]) <= 0.01
            and answer.get("largest") == expected["largest"])


TOOLS: list[Tool] = [get_rate]
