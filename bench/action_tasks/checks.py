"""Answer checkers: tolerant where a human reviewer would be, strict about the content.

A model may hand back ``1150`` or ``"1,150.00"``, ``["a", "b"]`` or the JSON
string ``'["a", "b"]'``, a date object or an ISO string: all of that is the
same answer. The wrong number, a missing key or an extra element is not.
Every checker is a plain function ``answer -> bool`` with a ``describe``
attribute, and must never raise.
"""

from __future__ import annotations

import ast
import datetime as dt
import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

Checker = Callable[[Any], bool]


def _described(text: str, *, scalar: bool = False) -> Callable[[Checker], Checker]:
    """Mark a checker with its description and make it total (an odd answer is just wrong).

    A ``scalar`` checker also accepts its answer wrapped once: ``{"owner": "x"}`` or
    ``["x"]`` where ``"x"`` is asked for, as a reviewer would.
    """
    def mark(check: Checker) -> Checker:
        def safe(answer: Any) -> bool:
            try:
                value = coerce(answer)
                if scalar and isinstance(value, Mapping) and len(value) == 1:
                    value = next(iter(value.values()))
                elif scalar and isinstance(value, list) and len(value) == 1:
                    value = value[0]
                return bool(check(coerce(value)))
            except Exception:  # noqa: BLE001 - an odd answer is a wrong answer, never a crash
                return False

        safe.describe = text  # type: ignore[attr-defined]
        return safe

    return mark


def coerce(answer: Any) -> Any:
    """A string that holds a JSON or Python literal (list, dict, number) becomes that value."""
    if isinstance(answer, str):
        text = answer.strip()
        if text[:1] in "[{(":
            for parse in (json.loads, ast.literal_eval):
                try:
                    return parse(text)
                except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                    continue
    if isinstance(answer, tuple):
        return list(answer)
    return answer


def as_number(value: Any) -> float | None:
    """A number, or a string holding one (thousands commas, a currency sign or code allowed)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        text = value.strip().replace(",", "").replace("_", "")
        for affix in ("EUR", "USD", "€", "$", "%", "minutes", "min", "seconds", "s"):
            text = text.removesuffix(affix).removeprefix(affix).strip()
        try:
            number = float(text)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    try:  # Decimal, Fraction, numpy scalars
        return float(value)
    except (TypeError, ValueError):
        return None


# A date the trace kept as its repr (the trace is JSON): re-checking a stored row must
# judge it as the live check judged the date object.
_DATE_REPR = re.compile(r"datetime\.(?:date|datetime)\((\d+), (\d+), (\d+)(?:, (\d+), (\d+)(?:, (\d+))?)?\)")


def _text(value: Any, *, case: bool = False) -> str:
    if isinstance(value, str) and (match := _DATE_REPR.fullmatch(value.strip())):
        parts = [int(p) for p in match.groups() if p is not None]
        value = dt.datetime(*parts) if len(parts) > 3 else dt.date(*parts)
    if isinstance(value, (dt.date, dt.datetime)):
        value = value.isoformat()
    text = str(value).strip().strip("'\"`").strip()
    return text if case else text.lower()


def _scalar_key(value: Any, *, exact_text: bool = False) -> str:
    """Compare list elements and dict keys as text, numbers by value (1004 == "1004" == 1004.0)."""
    number = as_number(value) if not isinstance(value, str) or value.strip()[:1].isdigit() else None
    if number is not None:
        return str(int(number)) if number == int(number) else repr(round(number, 6))
    return value if exact_text and isinstance(value, str) else _text(value)


def number(expected: float, tol: float = 0.011) -> Checker:
    @_described(f"a number within {tol:g} of {expected!r}", scalar=True)
    def check(answer: Any) -> bool:
        got = as_number(answer)
        return got is not None and math.isclose(got, expected, abs_tol=tol)

    return check


def integer(expected: int) -> Checker:
    return number(expected, tol=0.0)


def text(expected: str) -> Checker:
    @_described(f"the text {expected!r} (case and surrounding quotes ignored)", scalar=True)
    def check(answer: Any) -> bool:
        return isinstance(answer, (str, dt.date)) and _text(answer) == _text(expected)

    return check


def iso_date(expected: str) -> Checker:
    @_described(f"the date {expected} (a date, or a string starting YYYY-MM-DD)", scalar=True)
    def check(answer: Any) -> bool:
        return _text(answer)[:10] == expected

    return check


def same_items(expected: list[Any], *, ordered: bool = False, exact_text: bool = False) -> Checker:
    """A list (or set) with exactly these elements; numbers and numeric strings are equal.

    ``exact_text`` compares strings as written, for tasks whose point is the normalizing
    (lowercase emails, canonical SKUs): there, case and spaces are the answer.
    """
    want = [_scalar_key(v, exact_text=exact_text) for v in expected]
    exactly = ", text exactly as written" if exact_text else ""

    @_described(f"{'the list' if ordered else 'these elements in any order'}{exactly}: {expected!r}")
    def check(answer: Any) -> bool:
        if isinstance(answer, (set, frozenset)) and not ordered:
            answer = list(answer)
        if not isinstance(answer, list):
            return False
        got = [_scalar_key(v, exact_text=exact_text) for v in answer]
        return got == want if ordered else sorted(got) == sorted(want)

    return check


def mapping(expected: Mapping[str, Any], value_check: Callable[[Any], Checker] | None = None, *,
            extra_keys: bool = False) -> Checker:
    """A dict with these keys (compared as text) whose values pass ``value_check(expected_value)``."""
    make = value_check or _value_checker
    checks = {_scalar_key(k): make(v) for k, v in expected.items()}

    @_described(f"a dict equal to {dict(expected)!r}" + (" (extra keys allowed)" if extra_keys else ""))
    def check(answer: Any) -> bool:
        if not isinstance(answer, Mapping):
            return False
        got = {_scalar_key(k): v for k, v in answer.items()}
        if not extra_keys and set(got) != set(checks):
            return False
        return all(key in got and checks[key](got[key]) for key in checks)

    return check


def _value_checker(expected: Any) -> Checker:
    if isinstance(expected, bool):
        return lambda answer: answer is expected or _text(answer) == str(expected).lower()
    if isinstance(expected, (int, float)):
        return number(expected)
    if isinstance(expected, list):
        return same_items(expected)
    if isinstance(expected, Mapping):
        return mapping(expected)
    return text(str(expected))


def dates(expected: Mapping[str, str]) -> Checker:
    return mapping(expected, iso_date)


def fields(**checks: Checker) -> Checker:
    """A dict whose named fields pass their checkers; other keys are ignored."""
    names = ", ".join(f"{k}: {getattr(c, 'describe', '?')}" for k, c in checks.items())

    @_described(f"a dict with {names}")
    def check(answer: Any) -> bool:
        if not isinstance(answer, Mapping):
            return False
        got = {_text(k): v for k, v in answer.items()}
        return all(key.lower() in got and c(got[key.lower()]) for key, c in checks.items())

    return check


def describe(check: Checker) -> str:
    return getattr(check, "describe", getattr(check, "__name__", "checker"))
