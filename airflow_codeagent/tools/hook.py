"""hook_tool: chosen methods of an Airflow hook as tools, with their real signatures and docstrings.

``hook_tool("my_http", ["run"], hook_class=HttpHook)`` gives the model a
``run(endpoint, data=None, headers=None, extra_options=None)`` tool whose
docstring is the method's own (reST ``:param x:`` fields are rewritten to the
``Args:`` form the model reads). The hook is created from the connection at
the first call, in the worker; the hook, its client and the connection never
reach model code: a method's result crosses only if it is plain data, and a
result that is not (a client, a response object, a connection) is refused
rather than turned into a string that might show credentials.
"""

from __future__ import annotations

import functools
import inspect
import json
import re
import typing
from collections.abc import Callable, Collection, Sequence
from typing import Any

from airflow_codeagent.tools.base import Tool
from airflow_codeagent.tools.sql import (
    TRUNCATED_KEY,
    NotPlainValue,
    _check_prefix,
    _positive_int,
    _tool_name,
    plain_value,
)

# Methods that hand out a live client, a session or credentials: never a tool.
CREDENTIAL_METHODS = frozenset({
    "get_conn", "get_connection", "get_connections", "get_uri", "get_sqlalchemy_engine",
    "get_sqlalchemy_connection", "get_credentials", "get_session", "get_client", "get_client_type",
    "get_resource_type", "get_hook", "get_cursor", "get_db_hook", "get_async_conn", "get_conn_value",
    "get_connection_from_secrets", "connection", "get_password", "get_token", "get_access_token",
    "get_ui_field_behaviour", "get_connection_form_widgets",
})

_PARAM = re.compile(r"^:param\s+(?:[\w\[\], |.]+\s+)?(\*{0,2}\w+)\s*:\s*(.*)$")
_RETURNS = re.compile(r"^:returns?\s*:\s*(.*)$")
_OTHER_FIELD = re.compile(r"^:(type|rtype|raises?|meta|ivar|var)\b[^:]*:")
_ROLE = re.compile(r":[\w:]+:`(~?)(?:[^`<]*<)?([^`>]+)>?`")


class HookToolError(ValueError):
    """A method that cannot be offered to the model as written; the message says why."""


def hook_tool(conn_id: str, methods: Sequence[str], *, hook_class: type | str | None = None,
              prefix: str | None = None, side_effect_methods: Collection[str] = (),
              max_result_chars: int = 100_000) -> HookToolkit:
    """Expose ``methods`` of the hook of Airflow connection ``conn_id`` as tools.

    Args:
        conn_id: the Airflow connection whose hook runs the methods.
        methods: public method names, each with a docstring (the model knows a tool only by it).
        hook_class: the hook class (or its import path). With it, building the
            tools (at DAG parse time) does not read the connection; without it,
            the connection is looked up once to find its hook class.
        prefix: prepended to the tool names, e.g. ``"crm"`` -> ``crm_get_records``.
        side_effect_methods: those of ``methods`` that change something (sent,
            written, deleted): they are not called again when a retried task
            replays its steps.
        max_result_chars: size cap of one result (as JSON); longer lists and
            strings are cut with a marker, other results refused.
    """
    return HookToolkit(conn_id, methods, hook_class=hook_class, prefix=prefix,
                       side_effect_methods=side_effect_methods, max_result_chars=max_result_chars)


class HookToolkit:
    """The tools ``hook_tool`` returns; pass it in ``tools=[...]`` like any toolkit."""

    def __init__(self, conn_id: str, methods: Sequence[str], *, hook_class: type | str | None = None,
                 prefix: str | None = None, side_effect_methods: Collection[str] = (),
                 max_result_chars: int = 100_000) -> None:
        if not isinstance(conn_id, str) or not conn_id:
            raise HookToolError(f"conn_id must be the id of an Airflow connection, got {conn_id!r}")
        if isinstance(methods, str) or not methods:
            raise HookToolError("methods must be a non-empty list of method names, e.g. ['get_records']")
        unknown_side_effects = set(side_effect_methods) - set(methods)
        if unknown_side_effects:
            raise HookToolError(f"side_effect_methods names methods not in methods: {sorted(unknown_side_effects)}")
        _check_prefix(prefix)
        _positive_int("max_result_chars", max_result_chars)
        self.conn_id = conn_id
        self.methods = list(methods)
        self.hook_class_spec = hook_class
        self.prefix = prefix
        self.side_effect_methods = frozenset(side_effect_methods)
        self.max_result_chars = max_result_chars
        self._hook: Any = None
        self._tools: list[Tool] | None = None
        self._class = self._resolve_class()
        for name in self.methods:
            self._method(name)  # every refusal at definition time, before a run starts

    def __repr__(self) -> str:
        return f"hook_tool({self.conn_id!r}, {self.methods!r})"

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_hook"] = None
        state["_tools"] = None
        return state

    def _resolve_class(self) -> type:
        spec = self.hook_class_spec
        if isinstance(spec, str):
            spec = _import_string(spec)
        if spec is None:
            spec = _hook_class_of_connection(self.conn_id)
        if not isinstance(spec, type):
            raise HookToolError(f"hook_class must be a hook class or its import path, got {spec!r}")
        return spec

    def _method(self, name: Any) -> Callable[..., Any]:
        hook_name = self._class.__name__
        if not isinstance(name, str) or not name.isidentifier():
            raise HookToolError(f"method names must be strings naming a method of {hook_name}, got {name!r}")
        if name.startswith("_"):
            raise HookToolError(f"{hook_name}.{name} is private; only public methods can be tools")
        if name in CREDENTIAL_METHODS:
            raise HookToolError(f"{hook_name}.{name} hands out a client, a connection or credentials, which "
                                "must not reach model code; expose a method that returns data instead")
        attribute = inspect.getattr_static(self._class, name, None)
        if attribute is None:
            raise HookToolError(f"{hook_name} has no method {name!r}")
        if isinstance(attribute, (staticmethod, classmethod)):
            attribute = attribute.__func__
        if not inspect.isfunction(attribute):
            raise HookToolError(f"{hook_name}.{name} is not a method (it is a {type(attribute).__name__})")
        if not inspect.getdoc(getattr(self._class, name)):
            raise HookToolError(f"{hook_name}.{name} has no docstring: the model only knows a tool by its "
                                "docstring; wrap the method in a documented @tool function instead")
        return getattr(self._class, name)

    def tools(self) -> list[Tool]:
        if self._tools is None:
            self._tools = [self._make_tool(name) for name in self.methods]
        return list(self._tools)

    def _make_tool(self, name: str) -> Tool:
        method = self._method(name)
        static = isinstance(inspect.getattr_static(self._class, name), staticmethod)
        signature = inspect.signature(method)
        parameters = list(signature.parameters.values())
        if parameters and not static and parameters[0].name in ("self", "cls"):
            parameters = parameters[1:]
        try:
            hints = typing.get_type_hints(method)
        except Exception:  # noqa: BLE001 - unresolvable annotations are shown as written
            hints = {}
        parameters = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in parameters]
        signature = signature.replace(parameters=parameters,
                                      return_annotation=hints.get("return", signature.return_annotation))

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                bound = signature.bind(*args, **kwargs)
            except TypeError as exc:
                raise TypeError(f"{tool_name}{signature}: {exc}") from None
            try:
                hook = self.hook()
            except HookToolError as exc:
                raise ValueError(str(exc)) from None
            result = getattr(hook, name)(*bound.args, **bound.kwargs)
            return self._plain_result(tool_name, result)

        tool_name = _tool_name(self.prefix, name)
        call.__name__ = call.__qualname__ = tool_name
        call.__doc__ = google_docstring(inspect.getdoc(method) or "")
        call.__signature__ = signature  # type: ignore[attr-defined]
        call.__annotations__ = {}
        return Tool(call, name=tool_name, side_effect=name in self.side_effect_methods)

    def hook(self) -> Any:
        """The hook, made from the connection at the first call (in the worker)."""
        if self._hook is None:
            attribute = getattr(self._class, "conn_name_attr", None)
            if attribute:
                hook = self._class(**{attribute: self.conn_id})
            else:
                from airflow.sdk import BaseHook

                hook = BaseHook.get_connection(self.conn_id).get_hook()
            if not isinstance(hook, self._class):
                raise HookToolError(f"connection {self.conn_id!r} gives a {type(hook).__name__}, not a "
                                    f"{self._class.__name__}")
            self._hook = hook
        return self._hook

    def _plain_result(self, name: str, result: Any) -> Any:
        if inspect.isgenerator(result) or inspect.iscoroutine(result):
            if inspect.iscoroutine(result):
                result.close()
            raise TypeError(f"{name}() returned a {type(result).__name__}, which is not plain data; only "
                            "methods that return data can be tools")
        try:
            value = plain_value(result, max_chars=self.max_result_chars, strict=True)
        except NotPlainValue as exc:
            raise TypeError(f"{name}() returned something that is not plain data ({exc}); only methods "
                            "that return dicts, lists, strings, numbers or None can be tools") from None
        size = len(json.dumps(value))
        if size <= self.max_result_chars:
            return value
        if isinstance(value, list):
            kept: list[Any] = []
            used = 2
            for item in value:
                used += len(json.dumps(item)) + 2
                if used > self.max_result_chars:
                    break
                kept.append(item)
            kept.append({TRUNCATED_KEY: f"showing the first {len(kept)} of {len(value)} items: the result "
                                        f"is larger than {self.max_result_chars} characters"})
            return kept
        raise ValueError(f"{name}() returned {size} characters of data; the limit is {self.max_result_chars}; "
                         "ask for less")


def _hook_class_of_connection(conn_id: str) -> type:
    from airflow.sdk import BaseHook

    from airflow_codeagent.airflow_compat import hook_class_name

    conn_type = BaseHook.get_connection(conn_id).conn_type
    class_name = hook_class_name(conn_type)
    if class_name is None:
        raise HookToolError(f"no installed provider has a hook for connection type {conn_type!r} (connection "
                            f"{conn_id!r}); install it or pass hook_class=")
    return _import_string(class_name)


def _import_string(path: str) -> Any:
    import importlib

    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise HookToolError(f"cannot import hook class {path!r}: {exc}") from None


@functools.lru_cache(maxsize=256)
def google_docstring(doc: str) -> str:
    """A reST docstring (``:param x: ...``, ``:return: ...``) in the Google form the tool parser reads.

    A docstring that already has an ``Args:`` section, or no fields, comes back as it was.
    """
    lines = doc.splitlines()
    if not any(_PARAM.match(line.strip()) or _RETURNS.match(line.strip()) for line in lines):
        return _ROLE.sub(_role_text, doc)
    summary: list[str] = []
    arguments: list[list[str]] = []
    returns: list[str] = []
    target: list[str] | None = None  # where a continuation line goes; None: still in the summary
    for raw in lines:
        line = raw.strip()
        param, ret = _PARAM.match(line), _RETURNS.match(line)
        if param:
            arguments.append([param.group(1).lstrip("*"), param.group(2)])
            target = arguments[-1]
        elif ret:
            returns.append(ret.group(1))
            target = returns
        elif _OTHER_FIELD.match(line):
            target = []  # :type:, :raises: ... are left out
        elif target is None:
            summary.append(raw)
        elif line:
            if target is returns:
                returns.append(line)
            elif target:
                target[-1] = f"{target[-1]} {line}".strip()
    text = "\n".join(summary).strip()
    if arguments:
        text += "\n\nArgs:\n" + "\n".join(f"    {name}: {desc}" for name, desc in arguments)
    if returns:
        text += "\n\nReturns:\n    " + " ".join(r for r in returns if r)
    return _ROLE.sub(_role_text, text) + "\n"


def _role_text(match: re.Match[str]) -> str:
    """``:class:`~a.b.C``` -> ``C``; ``:meth:`x.y``` -> ``x.y`` (as Sphinx shows them)."""
    target = match.group(2)
    return target.rsplit(".", 1)[-1] if match.group(1) else target


__all__ = ["HookToolError", "HookToolkit", "google_docstring", "hook_tool"]
