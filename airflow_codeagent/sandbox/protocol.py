"""Wire format between the isolated executor (host) and its sandbox child: JSON lines only.

Every message is one JSON object on one line, over one pipe per direction.
``json.dumps`` escapes newlines inside strings and ``ensure_ascii`` keeps even
lone surrogates encodable, so a newline always ends a message. Nothing is
ever unpickled: the host parses JSON text and rebuilds a closed set of plain
types from it, whatever the child sends.

Values (inputs, tool arguments and results, the final answer) are plain JSON
where JSON fits, and a tagged object ``{"$t": tag, "v": payload}`` for the
common Python types JSON lacks, so that a tuple stays a tuple, ``{2024: 3}``
keeps its int key and a ``datetime`` stays a ``datetime``:

    tuple, set, frozenset, dict (with non-str keys, or a "$t" key), bytes,
    bytearray, datetime.datetime / date / time / timedelta, decimal.Decimal,
    complex, and ints too large for JSON text (sent as hex)

Subclasses cross as their base type (an ``OrderedDict`` or ``Counter`` as a
dict, a namedtuple as a tuple, an ``IntEnum`` as an int), numpy scalars as the
Python scalar their ``.item()`` gives. Datetimes keep their UTC offset but not
the zone's name (a ``zoneinfo`` zone comes back as a fixed offset). Anything
else raises ``WireError`` naming where it was found, e.g. ``answer['rows'][3]``.
"""

from __future__ import annotations

import base64
import builtins
import datetime as _dt
import decimal
import json
import numbers
from collections.abc import Callable
from typing import Any

TAG = "$t"
MAX_DEPTH = 100
# ``int`` -> decimal text is refused beyond 4300 digits (sys.int_max_str_digits);
# hex is exempt, so large ints travel as hex.
_INT_TEXT_BITS = 14_000

SUPPORTED_TYPES_TEXT = (
    "JSON data (None, bool, int, float, str, list, dict) or a tuple, set, frozenset, bytes, "
    "datetime, date, time, timedelta, Decimal or complex"
)

_HINTS = {
    "DataFrame": "convert it first, e.g. df.to_dict('records')",
    "Series": "convert it first, e.g. s.tolist() or s.to_dict()",
    "ndarray": "convert it first with .tolist()",
}


class WireError(TypeError):
    """A value that cannot cross the sandbox boundary; ``path`` says where it sits."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path: list[str] = []

    def describe(self, root: str) -> str:
        return f"{root}{''.join(self.path)} {self.reason}"


class ProtocolError(Exception):
    """A message that does not follow this protocol (a broken or hostile child)."""


def _type_name(value: Any) -> str:
    cls = type(value)
    module = getattr(cls, "__module__", "") or ""
    name = getattr(cls, "__qualname__", cls.__name__)
    if module in ("builtins", "agent", ""):
        return name
    return f"{module.split('.', 1)[0]}.{name}"


def encode(value: Any, _depth: int = 0) -> Any:
    """``value`` as a JSON-ready structure; raises ``WireError`` for what cannot cross."""
    cls = type(value)
    if cls is str or cls is float or cls is bool or value is None:
        return value
    if cls is int:
        return value if value.bit_length() <= _INT_TEXT_BITS else {TAG: "int", "v": hex(value)}
    if _depth >= MAX_DEPTH:
        raise WireError(f"is nested more than {MAX_DEPTH} levels deep (or contains itself)")
    depth = _depth + 1
    if cls is list:
        return _encode_items(value, depth)
    if cls is dict:
        return _encode_dict(value, depth)
    if cls is tuple:
        return {TAG: "tuple", "v": _encode_items(value, depth)}
    return _encode_other(value, depth)


def _encode_items(items: Any, depth: int) -> list[Any]:
    out: list[Any] = []
    for index, item in enumerate(items):
        try:
            out.append(encode(item, depth))
        except WireError as exc:
            exc.path.insert(0, f"[{index}]")
            raise
    return out


def _encode_dict(mapping: Any, depth: int) -> Any:
    if TAG not in mapping and all(type(k) is str for k in mapping):
        out = {}
        for key, item in mapping.items():
            try:
                out[key] = encode(item, depth)
            except WireError as exc:
                exc.path.insert(0, f"[{key!r}]")
                raise
        return out
    pairs = []
    for key, item in mapping.items():
        try:
            encoded_key = encode(key, depth)
        except WireError as exc:
            exc.path.insert(0, f" (a key: {_short_repr(key)})")
            raise
        try:
            pairs.append([encoded_key, encode(item, depth)])
        except WireError as exc:
            exc.path.insert(0, f"[{_short_repr(key)}]")
            raise
    return {TAG: "dict", "v": pairs}


def _short_repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a model-defined __repr__ may raise anything
        return f"<{type(value).__name__}>"
    return text if len(text) <= 40 else text[:37] + "..."


def _encode_other(value: Any, depth: int) -> Any:
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return encode(int(value), depth)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, dict):
        return _encode_dict(value, depth)
    if isinstance(value, list):
        return _encode_items(value, depth)
    if isinstance(value, tuple):
        return {TAG: "tuple", "v": _encode_items(value, depth)}
    if isinstance(value, (set, frozenset)):
        tag = "frozenset" if isinstance(value, frozenset) else "set"
        return {TAG: tag, "v": _encode_items(value, depth)}
    if isinstance(value, (bytes, bytearray)):
        tag = "bytearray" if isinstance(value, bytearray) else "bytes"
        return {TAG: tag, "v": base64.b64encode(value).decode("ascii")}
    if isinstance(value, _dt.datetime):
        return {TAG: "datetime", "v": _dt.datetime.isoformat(value)}
    if isinstance(value, _dt.date):
        return {TAG: "date", "v": _dt.date.isoformat(value)}
    if isinstance(value, _dt.time):
        return {TAG: "time", "v": _dt.time.isoformat(value)}
    if isinstance(value, _dt.timedelta):
        return {TAG: "timedelta", "v": [value.days, value.seconds, value.microseconds]}
    if isinstance(value, decimal.Decimal):
        return {TAG: "decimal", "v": str(value)}
    if isinstance(value, complex):
        return {TAG: "complex", "v": [value.real, value.imag]}
    if _is_numpy_scalar(value):
        item = value.item()  # numpy scalar -> Python scalar
        if not _is_numpy_scalar(item):
            return encode(item, depth)
    if isinstance(value, numbers.Integral):
        return encode(int(value), depth)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, numbers.Complex):
        return encode(complex(value), depth)
    name = _type_name(value)
    hint = _HINTS.get(type(value).__name__)
    raise WireError(f"is a {name}" + (f"; {hint}" if hint else ""))


def _is_numpy_scalar(value: Any) -> bool:
    return any(c.__name__ == "generic" and c.__module__ == "numpy" for c in type(value).__mro__)


def _decode_tagged(tag: str, payload: Any) -> Any:
    decoder = _DECODERS.get(tag)
    if decoder is None:
        raise ProtocolError(f"unknown value tag {tag!r}")
    return decoder(payload)


def _pairs(payload: Any) -> dict[Any, Any]:
    return {key: item for key, item in payload}


_DECODERS: dict[str, Callable[[Any], Any]] = {
    "tuple": tuple,
    "set": set,
    "frozenset": frozenset,
    "dict": _pairs,
    "int": lambda v: int(v, 16),
    "bytes": lambda v: base64.b64decode(v, validate=True),
    "bytearray": lambda v: bytearray(base64.b64decode(v, validate=True)),
    "datetime": _dt.datetime.fromisoformat,
    "date": _dt.date.fromisoformat,
    "time": _dt.time.fromisoformat,
    "timedelta": lambda v: _dt.timedelta(days=v[0], seconds=v[1], microseconds=v[2]),
    "decimal": decimal.Decimal,
    "complex": lambda v: complex(v[0], v[1]),
}


def _object_hook(obj: dict[str, Any]) -> Any:
    if TAG not in obj:
        return obj
    if len(obj) != 2 or "v" not in obj or not isinstance(obj[TAG], str):
        raise ProtocolError("malformed tagged value")
    return _decode_tagged(obj[TAG], obj["v"])


_ENCODER = json.JSONEncoder(separators=(",", ":"), check_circular=False)  # ensure_ascii: one line, ASCII
_DECODER = json.JSONDecoder(object_hook=_object_hook)


def dumps(message: dict[str, Any]) -> bytes:
    """One message as one line; values inside must already be ``encode``-d."""
    return _ENCODER.encode(message).encode("ascii") + b"\n"


def loads(line: bytes) -> dict[str, Any]:
    """Parse one line; tagged values come back as their Python types."""
    try:
        message = _DECODER.decode(line.decode("ascii"))
    except ProtocolError:
        raise
    except Exception as exc:  # noqa: BLE001 - anything malformed from the other side
        raise ProtocolError(f"unreadable message: {type(exc).__name__}: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("op"), str):
        raise ProtocolError("a message must be a JSON object with an 'op'")
    return message


# -- exceptions crossing from the host's tools into model code ---------------------------


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # noqa: BLE001
        return f"<unprintable {type(exc).__name__}>"


def describe_exception(exc: BaseException) -> dict[str, Any]:
    """What model code needs to see of a tool's exception: its type name and message."""
    cls = type(exc)
    try:
        args = encode(exc.args)
    except Exception:  # noqa: BLE001 - arguments that cannot cross; the message still does
        args = None
    return {
        "type": cls.__name__,
        "message": _message(exc),
        "builtin": getattr(builtins, cls.__name__, None) is cls,
        "exception": isinstance(exc, Exception),
        "args": args,
    }


_STAND_INS: dict[tuple[type, str], type] = {}
_FIXED = "_codeagent_message"


def _stand_in_class(base: type[BaseException], name: str, module: str) -> type:
    """A subclass of ``base`` named ``name`` whose instances may carry a fixed ``str()``.

    An instance built by ``_with_message`` prints exactly the host's message;
    one built the normal way (``cls(text)``) behaves like ``base``, so code
    that rebuilds the exception from its type gets what the builtin would give.
    """
    key = (base, name)
    cls = _STAND_INS.get(key)
    if cls is None:
        def __str__(self: BaseException) -> str:
            fixed = self.__dict__.get(_FIXED)
            return fixed if fixed is not None else base.__str__(self)

        cls = type(name, (base,), {"__str__": __str__, "__module__": module})
        _STAND_INS[key] = cls
    return cls


def _with_message(cls: type, base: type[BaseException], message: str) -> BaseException:
    exc = base.__new__(cls)
    BaseException.__init__(exc, message)
    exc.__dict__[_FIXED] = message
    return exc


def rebuild_exception(description: Any) -> BaseException:
    """The exception a tool stub raises in the child: the host's type name and message.

    A builtin type is rebuilt as that type from the original arguments when
    they crossed (so ``except KeyError`` works and the in-process executor's
    own handling of tool errors applies unchanged), else as a same-named
    builtin subclass printing the original message; any other type as a
    stand-in class of the same name deriving from ``Exception`` (or
    ``BaseException``, as the original did).
    """
    if not isinstance(description, dict):
        raise ProtocolError("malformed tool error")
    name = str(description.get("type") or "Exception")
    message = str(description.get("message") or "")
    cls = getattr(builtins, name, None) if description.get("builtin") else None
    if isinstance(cls, type) and issubclass(cls, BaseException):
        args = description.get("args")
        if isinstance(args, tuple):
            try:
                exc = cls(*args)
                if _message(exc) == message:
                    return exc
            except Exception:  # noqa: BLE001 - fall back to the message below
                pass
        try:
            return _with_message(_stand_in_class(cls, name, "builtins"), cls, message)
        except Exception:  # noqa: BLE001 - a builtin that refuses subclassing
            pass
    base = Exception if description.get("exception", True) else BaseException
    if not name.isidentifier():
        name = "ToolError"
    return _with_message(_stand_in_class(base, name, "tools"), base, message)
