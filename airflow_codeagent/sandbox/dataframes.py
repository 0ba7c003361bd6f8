"""Method-level guards for pandas and numpy objects handed to model code.

``allowlist.py`` limits what ``import pandas`` / ``import numpy`` expose by
name. The objects those hand out (DataFrame, Series, Index, GroupBy,
ndarray, numpy scalars) and their classes carry their own I/O, pickle and
eval surfaces: ``df.to_csv(path)``, ``df.to_pickle``, ``df.query``/``eval``,
``df.style``/``plot``/``to_clipboard``, ``arr.tofile``/``dump``, ``arr.ctypes``.
``guarded_getattr`` in ``policy.py`` asks ``attribute_refusal`` before it
reads an attribute of such an object and passes what it read through
``guard_value``:

- refused names raise ``AttributeError`` (every ``to_*`` that is not plainly
  in-memory, plus the eval/pickle/clipboard/plot/ctypes names below);
- ``to_csv``/``to_json``/``to_string``/``to_html``/``to_markdown``/``to_latex``
  stay usable for their return-a-string form: the wrapper refuses a path or
  buffer argument;
- ``apply``/``agg``/``aggregate``/``transform`` dispatch on method *names*
  given as strings (``df.apply("to_csv", args=(path,))`` writes a file), so
  their wrappers refuse any string naming a refused or private method.

Nothing here imports pandas or numpy: objects are recognised by their type's
module, so the guard costs nothing when neither is installed.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

_LIBRARIES = ("pandas", "numpy")

# ``to_*`` methods that only convert in memory.
_SAFE_TO = frozenset({
    "to_dict", "to_list", "to_numpy", "to_frame", "to_period", "to_timestamp", "to_records",
    "to_flat_index", "to_series", "to_pydatetime", "to_pytimedelta", "to_tuples",
    "to_datetime64", "to_timedelta64", "to_julian_date", "to_offset", "to_device",
})

# ``to_*`` methods that return text when given no destination: argument name of the destination.
PATH_ARGUMENT: Mapping[str, str] = {
    "to_csv": "path_or_buf",
    "to_json": "path_or_buf",
    "to_string": "buf",
    "to_html": "buf",
    "to_markdown": "buf",
    "to_latex": "buf",
}

REFUSED: Mapping[str, str] = {
    # eval
    "query": "evaluates a string expression",
    "eval": "evaluates a string expression",
    # pickle / raw bytes to files
    "dump": "pickles to a file",
    "dumps": "pickles",
    "tofile": "writes a file",
    "to_pickle": "pickles to a file",
    # clipboard, plotting, styling (imports and runs much more)
    "to_clipboard": "uses the system clipboard",
    "style": "builds HTML/Jinja templates",
    "plot": "plotting imports matplotlib",
    "hist": "plotting imports matplotlib",
    "boxplot": "plotting imports matplotlib",
    # raw memory
    "ctypes": "exposes raw pointers",
    "data": "exposes the raw buffer",
    # reaches ``numpy.ndarray`` itself (see ``guard_type``)
    "mro": "hands out the real base classes",
    # writes to the worker's stdout, outside the sandbox's output buffer
    "info": "prints to the worker's stdout; use df.dtypes or df.describe()",
}

DISPATCHING = frozenset({"apply", "agg", "aggregate", "transform"})


def _library_type(cls: type) -> bool:
    module = getattr(cls, "__module__", None) or ""
    return module.split(".", 1)[0] in _LIBRARIES


def handles(obj: Any) -> bool:
    """Whether ``obj`` is a pandas/numpy object or class (cheap: one module-name check)."""
    if isinstance(obj, type):
        return any(_library_type(klass) for klass in obj.__mro__)
    return _library_type(type(obj)) or any(_library_type(klass) for klass in type(obj).__mro__[1:])


def refused_name(name: str) -> str | None:
    """Why ``name`` is not available on pandas/numpy objects, or None."""
    if name in REFUSED:
        return REFUSED[name]
    if name.startswith("to_") and name not in _SAFE_TO and name not in PATH_ARGUMENT:
        return "writes to files, databases or other processes"
    return None


def attribute_refusal(obj: Any, name: str) -> str | None:
    """The message for a refused attribute of a pandas/numpy object (or class), else None."""
    if not handles(obj):
        return None
    why = refused_name(name)
    if why is None:
        return None
    owner = obj.__name__ if isinstance(obj, type) else type(obj).__name__
    return f"'{owner}.{name}' is not available in the sandbox ({why})"


def guard_value(obj: Any, name: str, value: Any) -> Any:
    """Wrap methods whose arguments can reach a refused surface; anything else unchanged."""
    if not callable(value) or not handles(obj):
        return value
    # Read from the class, the function's first argument is the object itself.
    offset = 1 if isinstance(obj, type) else 0
    owner = obj.__name__ if isinstance(obj, type) else type(obj).__name__
    if name in PATH_ARGUMENT:
        return _without_destination(value, f"{owner}.{name}", PATH_ARGUMENT[name], offset)
    if name in DISPATCHING:
        return _without_refused_names(value, f"{owner}.{name}", offset)
    return value


def _without_destination(method: Callable[..., Any], label: str, keyword: str,
                         offset: int) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        given = args[offset] if len(args) > offset else kwargs.get(keyword)
        if given is not None:
            raise PermissionError(f"{label}() cannot write to a file or buffer in the sandbox; "
                                  "call it without a destination to get the text")
        return method(*args, **kwargs)

    return _named(call, method)


def _named(wrapper: Callable[..., Any], method: Callable[..., Any]) -> Callable[..., Any]:
    """The method's name and docstring, without ``functools.wraps``' ``__wrapped__`` link to it."""
    wrapper.__name__ = getattr(method, "__name__", "method")
    wrapper.__qualname__ = getattr(method, "__qualname__", wrapper.__name__)
    wrapper.__doc__ = getattr(method, "__doc__", None)
    return wrapper


def _names_in(spec: Any, depth: int = 0) -> list[str]:
    """Strings in an apply/agg spec: a name, a list/tuple of them, a dict of them."""
    if depth > 4:
        return []
    if isinstance(spec, str):
        return [spec]
    if isinstance(spec, Mapping):
        return [n for v in spec.values() for n in _names_in(v, depth + 1)]
    if isinstance(spec, (list, tuple)):
        return [n for v in spec for n in _names_in(v, depth + 1)]
    return []


def _without_refused_names(method: Callable[..., Any], label: str, offset: int) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        specs = list(args[offset:offset + 1])
        specs += [kwargs[k] for k in ("func", "arg") if k in kwargs]
        for spec in specs:
            for name in _names_in(spec):
                if name.startswith("_") or name in PATH_ARGUMENT or refused_name(name) is not None:
                    raise PermissionError(f"{label}() cannot call {name!r} in the sandbox")
        return method(*args, **kwargs)

    return _named(call, method)


def guarded_getattr(base: Callable[..., Any]) -> Callable[..., Any]:
    """``base`` (policy's ``guarded_getattr``) with the pandas/numpy guards in front.

    For tests and for the policy hook; see the proposed diff to ``policy.py``.
    """

    def getattr_with_dataframe_guards(obj: Any, name: str, *default: Any) -> Any:
        if type(obj) in (dict, list, set) or not isinstance(name, str):
            return base(obj, name, *default)
        refusal = attribute_refusal(obj, name)
        if refusal is not None:
            if default:
                return default[0]
            raise AttributeError(refusal)
        return guard_value(obj, name, base(obj, name, *default))

    getattr_with_dataframe_guards.__name__ = "getattr"
    getattr_with_dataframe_guards.__qualname__ = "getattr"
    return getattr_with_dataframe_guards


# ``type(arr)`` is the real ``numpy.ndarray``, whose constructor takes ``buffer=`` and an ``offset=``
# that numpy does not check for being negative: ``type(a)((n,), "u1", buffer=a, offset=-k)`` reads
# and WRITES memory before ``a``'s data (the worker's heap, in-process). Model code gets a stand-in
# class instead: ``isinstance`` works, calling it does not.
_STANDINS: dict[type, type] = {}


class _ArrayTypeStandIn(type):
    _real: type

    def __instancecheck__(cls, obj: Any) -> bool:
        return isinstance(obj, cls._real)

    def __subclasscheck__(cls, sub: Any) -> bool:
        return isinstance(sub, type) and issubclass(sub, cls._real)

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"{cls._real.__name__}(...) cannot be called in the sandbox; "
                        "use numpy.array, numpy.zeros or numpy.asarray")

    def __repr__(cls) -> str:
        return repr(cls._real)


def guard_type(cls: type) -> type:
    """What ``type(x)`` gives model code for a numpy array type; any other class unchanged."""
    numpy = sys.modules.get("numpy")
    if numpy is None or not isinstance(cls, type) or not issubclass(cls, numpy.ndarray):
        return cls
    standin = _STANDINS.get(cls)
    if standin is None:
        standin = _STANDINS[cls] = _ArrayTypeStandIn(cls.__name__, (), {"_real": cls})
    return standin
