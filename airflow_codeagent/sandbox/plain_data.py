"""Turning what model code hands back into plain data the host can hold safely.

A live object from the sandbox (a tool function, a module proxy, an
instance of a model-defined class) would let model code run later in the
host with no guard and no deadline, e.g. when the trace calls ``repr``.
Only plain data crosses, rebuilt by this module so no reference survives.
"""

from __future__ import annotations

from typing import Any

_SCALARS = (type(None), bool, int, float, str)
_MAX_DEPTH = 100

_HINTS = {
    "set": "sorted(list(x))",
    "frozenset": "sorted(list(x))",
    "Decimal": "str(x) or float(x)",
    "datetime": "x.isoformat()",
    "date": "x.isoformat()",
    "time": "x.isoformat()",
    "timedelta": "x.total_seconds()",
    "Fraction": "float(x)",
    "bytes": "x.decode()",
}


class NotPlainData(TypeError):
    """Raised into model code when ``final_answer`` gets something that is not plain data."""


def to_plain_data(value: Any, _depth: int = 0) -> Any:
    """A fresh copy of ``value`` made only of dict, list, str, int, float, bool and None.

    Tuples become lists. Anything else raises ``NotPlainData`` naming the
    type and the usual conversion, so the model can fix its code.
    """
    if _depth > _MAX_DEPTH:
        raise NotPlainData(f"the answer is nested more than {_MAX_DEPTH} levels deep")
    kind = type(value)
    if kind is float and (value != value or value in (float("inf"), float("-inf"))):
        raise NotPlainData(f"final_answer() got {value!r}, which JSON cannot hold; use None or a string")
    if kind in _SCALARS:
        return value
    if isinstance(value, dict):
        result = {}
        for key, item in dict.items(value):
            if type(key) not in _SCALARS:
                raise NotPlainData(f"dict keys must be str, int, float, bool or None, not {type(key).__name__}")
            result[key] = to_plain_data(item, _depth + 1)
        return result
    if isinstance(value, (list, tuple)):
        return [to_plain_data(item, _depth + 1) for item in value]
    name = kind.__name__
    hint = _HINTS.get(name)
    advice = f"; convert it first, e.g. {hint}" if hint else ""
    raise NotPlainData(
        f"final_answer() takes plain data (dict, list, str, int, float, bool, None), got {name}{advice}"
    )
