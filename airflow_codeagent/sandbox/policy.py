"""What model code may touch: builtins, attribute/item/write guards, imports.

RestrictedPython rewrites attribute access, item access, iteration, unpacking,
augmented assignment and attribute writes into calls to the hooks defined
here. A missing hook is a crash; a naive one is an escape. Imports are the
real boundary: modules reach ``sys``/``os`` through public attributes, so
model code only ever sees a ``ModuleProxy`` that refuses module-valued and
private attributes, and imports are limited to the authorized list.
"""

from __future__ import annotations

import builtins
import collections
import importlib
import operator
import random
import types
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from airflow_codeagent.sandbox import dataframes, restricting
from airflow_codeagent.sandbox.allowlist import GENERIC_DENYLIST, MODULE_ALLOWLIST
from RestrictedPython.Guards import (
    full_write_guard,
    guarded_iter_unpack_sequence,
    guarded_unpack_sequence,
    safe_builtins,
    safer_getattr,
    safer_getattr_raise,
)

DEFAULT_AUTHORIZED_IMPORTS: tuple[str, ...] = (
    "collections",
    "datetime",
    "decimal",
    "fractions",
    "functools",
    "itertools",
    "json",
    "math",
    "random",
    "re",
    "statistics",
    "string",
    "time",
    "unicodedata",
)

# Builtins beyond RestrictedPython's ``safe_builtins`` that ordinary data code
# needs and that hand out no host object. ``type`` is limited to its
# one-argument form below; ``getattr``/``hasattr`` go through the guard.
_EXTRA_BUILTINS = (
    "all", "any", "bin", "bytes", "dict", "enumerate", "filter", "format", "frozenset",
    "iter", "list", "map", "max", "min", "next", "reversed", "set", "sorted", "sum",
    "tuple", "zip", "object", "property", "staticmethod", "classmethod", "ascii",
    "StopAsyncIteration", "RecursionError", "TimeoutError", "NotADirectoryError",
    "FileNotFoundError", "PermissionError", "ConnectionError",
)

_MISSING = object()
_PLAIN_CONTAINERS = tuple(restricting.PLAIN_WRITABLE_TYPES)  # one definition for the guard and its fast path

class ModuleProxy:
    """A module as model code sees it: public, non-module attributes only.

    The real module is held in a closure-free slot that RestrictedPython's
    underscore rule keeps model code away from.
    """

    __slots__ = ("__module", "__name", "__overrides", "__submodules")

    def __init__(self, module: types.ModuleType, *, overrides: Mapping[str, Any] | None = None,
                 submodules: Mapping[str, ModuleProxy] | None = None) -> None:
        self.__module = module
        self.__name = module.__name__
        self.__overrides = dict(overrides or {})
        self.__submodules = dict(submodules or {})

    def __getattr__(self, name: str) -> Any:
        # The lookup never raises inside this frame's ``except``: an AttributeError
        # from the real module would carry it in ``.obj`` to model code.
        refusal = self.__refusal(name)
        if refusal is None:
            if name in self.__submodules:
                return self.__submodules[name]
            if name in self.__overrides:
                return self.__overrides[name]
            value = getattr(self.__module, name, _MISSING)
            if value is _MISSING:
                refusal = f"module '{self.__name}' has no attribute '{name}'"
            elif isinstance(value, types.ModuleType):
                refusal = f"'{self.__name}.{name}' is a module; import it directly if it is authorized"
            else:
                return value
        raise AttributeError(refusal)

    def __refusal(self, name: str) -> str | None:
        if name.startswith("_"):
            return f"module '{self.__name}' has no public attribute '{name}'"
        if name in self.__submodules or name in self.__overrides:
            return None
        allowed = MODULE_ALLOWLIST.get(self.__name)
        if allowed is not None and name not in allowed:
            return f"'{self.__name}.{name}' is not available in the sandbox"
        if name in GENERIC_DENYLIST.get(self.__name, ()):
            return f"'{self.__name}.{name}' is not available in the sandbox"
        return None

    def __dir__(self) -> list[str]:
        names = {n for n in dir(self.__module) if not n.startswith("_")}
        names |= set(self.__overrides) | set(self.__submodules)
        return sorted(n for n in names if self.__refusal(n) is None
                      and not isinstance(getattr(self.__module, n, None), types.ModuleType))

    def __repr__(self) -> str:
        return f"<module '{self.__name}' (sandboxed)>"


def _random_proxy(module: types.ModuleType) -> ModuleProxy:
    """``random`` bound to a private generator, so model code cannot reseed the host's."""
    private = random.Random()
    overrides = {name: getattr(private, name) for name in MODULE_ALLOWLIST["random"]
                 if name != "Random" and hasattr(private, name)}
    return ModuleProxy(module, overrides=overrides)


class ImportPolicy:
    """Resolves ``import x`` in model code against the authorized list."""

    def __init__(self, authorized: Iterable[str]) -> None:
        self.authorized = tuple(dict.fromkeys(authorized))
        for name in self.authorized:
            if not isinstance(name, str) or not name or name.startswith(".") or "*" in name:
                raise ValueError(f"authorized_imports entries must be module names, got {name!r}")
        self._proxies: dict[str, ModuleProxy] = {}

    def _proxy(self, name: str) -> ModuleProxy:
        if name not in self._proxies:
            module = importlib.import_module(name)
            submodules = {
                child.rsplit(".", 1)[1]: self._proxy(child)
                for child in self.authorized
                if child.rpartition(".")[0] == name
            }
            if name == "random":
                self._proxies[name] = _random_proxy(module)
            else:
                self._proxies[name] = ModuleProxy(module, submodules=submodules)
        return self._proxies[name]

    def guarded_import(self, name: str, globals: Any = None, locals: Any = None,
                       fromlist: Any = (), level: int = 0) -> ModuleProxy | _PackageChain:
        if level != 0:
            raise ImportError("relative imports are not available in the sandbox")
        if type(fromlist) is list:
            # C code importing for itself (datetime.strftime needs ``time``, strptime needs
            # ``_strptime``): CPython's PyImport_Import passes the caller's globals, so it lands
            # here, always with a list as fromlist. Import statements in model code pass None
            # or a tuple, and model code cannot call __import__ itself; the module goes to the
            # C caller, not into the sandbox.
            return importlib.import_module(name)  # type: ignore[return-value]
        if name not in self.authorized:
            allowed = ", ".join(self.authorized) or "none"
            raise ImportError(f"import of '{name}' is not allowed. Authorized imports: {allowed}")
        if fromlist or "." not in name:
            return self._proxy(name)
        # ``import a.b`` binds ``a``: hand out ``a`` exposing only the authorized chain.
        top = name.split(".", 1)[0]
        if top in self.authorized:
            return self._proxy(top)
        return self._chain_proxy(name)

    def _chain_proxy(self, name: str) -> _PackageChain:
        parts = name.split(".")
        proxy: ModuleProxy | _PackageChain = self._proxy(name)
        for depth in range(len(parts) - 1, 0, -1):
            proxy = _PackageChain(".".join(parts[:depth]), parts[depth], proxy)
        return proxy  # type: ignore[return-value]


class _PackageChain:
    """A parent package that is not authorized itself: it exposes one authorized submodule."""

    __slots__ = ("__child", "__name", "__proxy")

    def __init__(self, name: str, child: str, proxy: ModuleProxy | _PackageChain) -> None:
        self.__name = name
        self.__child = child
        self.__proxy = proxy

    def __getattr__(self, name: str) -> Any:
        if name != self.__child:
            raise AttributeError(f"only '{self.__name}.{self.__child}' is authorized in '{self.__name}'")
        return self.__proxy

    def __dir__(self) -> list[str]:
        return [self.__child]

    def __repr__(self) -> str:
        return f"<package '{self.__name}' exposing only '{self.__child}' (sandboxed)>"


def guarded_getattr(obj: Any, name: str, *default: Any) -> Any:
    """``getattr`` with Python's semantics and RestrictedPython's checks.

    RestrictedPython's ``safer_getattr`` defaults to ``None`` for a missing
    attribute, which turns a typo in model code into a silent ``None``; a
    missing attribute must raise, as it does in Python.
    """
    if not default and type(obj) in _PLAIN_CONTAINERS and not name.startswith("_"):
        return getattr(obj, name)  # the hot path of data code: nothing to guard on these types
    if len(default) > 1:
        raise TypeError(f"getattr expected at most 3 arguments, got {2 + len(default)}")
    if name == "obj" and isinstance(obj, AttributeError):
        raise AttributeError("AttributeError.obj is not available in the sandbox")
    if name in ("format", "format_map") and isinstance(obj, collections.UserString):
        raise NotImplementedError("format() on UserString is not safe")
    if isinstance(name, str) and dataframes.handles(obj):
        # pandas/numpy objects and classes: I/O, pickle and eval methods refused, others wrapped.
        refusal = dataframes.attribute_refusal(obj, name)
        if refusal is not None:
            if default:
                return default[0]
            raise AttributeError(refusal)
        value = safer_getattr(obj, name, default[0]) if default else safer_getattr_raise(obj, name)
        return dataframes.guard_value(obj, name, value)
    if default:
        return safer_getattr(obj, name, default[0])
    return safer_getattr_raise(obj, name)


def guarded_hasattr(obj: Any, name: str) -> bool:
    try:
        guarded_getattr(obj, name)
    except AttributeError:
        return False
    return True


def guarded_apply(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return func(*args, **kwargs)


def _guarded_type(*args: Any) -> Any:
    """``type(x)`` only; the three-argument form would build classes around the guards.

    ``type(SomeClass)`` is the real ``type`` (or a metaclass), which would
    bring the three-argument form back, so a class's type is this function.
    """
    if len(args) != 1:
        raise TypeError("only type(obj) is available in the sandbox; define classes with 'class'")
    result = builtins.type(args[0])
    if issubclass(result, type):
        return _guarded_type
    return dataframes.guard_type(result)  # numpy.ndarray's constructor reads raw memory


def build_builtins(import_policy: ImportPolicy) -> dict[str, Any]:
    """The ``__builtins__`` of one sandbox; a fresh dict so model code cannot alter another's."""
    names = dict(safe_builtins)
    for name in _EXTRA_BUILTINS:
        names[name] = getattr(builtins, name)
    names.pop("_getattr_", None)
    names["type"] = _guarded_type
    names["getattr"] = guarded_getattr
    names["hasattr"] = guarded_hasattr
    names["__import__"] = import_policy.guarded_import
    return names


class SandboxClasses:
    """Classes that model code defined itself: their instances may have attributes set.

    RestrictedPython's default write guard refuses ``self.x = 1`` on every
    object that does not opt in; model code that defines a small class
    reasonably expects it to work. Host objects stay read-only.
    """

    def __init__(self) -> None:
        self._classes: weakref.WeakSet[type] = weakref.WeakSet()

    def define(self, name: str, bases: tuple[type, ...], namespace: dict[str, Any]) -> type:
        cls = type(name, bases, namespace)
        self._classes.add(cls)
        return cls

    def write_guard(self, obj: Any) -> Any:
        if type(obj) in _PLAIN_CONTAINERS:
            return obj
        if any(klass in self._classes for klass in type(obj).__mro__):
            return obj
        return full_write_guard(obj)


def restricted_globals(import_policy: ImportPolicy, classes: SandboxClasses) -> dict[str, Any]:
    """Hooks RestrictedPython's rewritten code calls; re-applied before every step."""
    return {
        "__builtins__": build_builtins(import_policy),
        "__name__": "agent",
        "__metaclass__": classes.define,
        "_getattr_": guarded_getattr,
        "_getitem_": operator.getitem,
        "_getiter_": iter,
        "_iter_unpack_sequence_": guarded_iter_unpack_sequence,
        "_unpack_sequence_": guarded_unpack_sequence,
        "_write_": classes.write_guard,
        "_apply_": guarded_apply,
        # the compiler's inline fast paths (restricting.py)
        restricting.TYPE_NAME: builtins.type,
        restricting.PLAIN_READABLE_NAME: restricting.PLAIN_READABLE_TYPES,
        restricting.PLAIN_WRITABLE_NAME: restricting.PLAIN_WRITABLE_TYPES,
    }
