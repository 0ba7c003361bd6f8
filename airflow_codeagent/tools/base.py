"""Tools: host functions the model may call from its code.

A tool runs in the worker with the worker's credentials; model code only
ever receives a plain function that forwards to it. What the model sees of a
tool is its signature and docstring, rendered by ``Tool.signature_text``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any, Protocol, get_type_hints, overload, runtime_checkable

from airflow_codeagent.tools.docstring import parse_docstring


class ToolDefinitionError(ValueError):
    """A tool the model could not use correctly as written."""


_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", list: "array",
               dict: "object", tuple: "array"}


def _json_type(annotation: Any) -> dict[str, Any]:
    """A JSON Schema fragment for a parameter annotation; {} when it has no JSON equivalent."""
    import types
    import typing

    origin = typing.get_origin(annotation)
    if annotation in _JSON_TYPES:
        return {"type": _JSON_TYPES[annotation]}
    if origin in _JSON_TYPES:
        return {"type": _JSON_TYPES[origin]}
    if origin in (typing.Union, types.UnionType):
        options = [_json_type(a) for a in typing.get_args(annotation)]
        names = [o["type"] for o in options if "type" in o] + (
            ["null"] if type(None) in typing.get_args(annotation) else [])
        return {"type": names} if names else {}
    return {}


def _annotation_text(annotation: Any) -> str:
    if annotation is inspect.Parameter.empty:
        return ""
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


class Tool:
    """A named, documented callable the agent exposes to model code."""

    def __init__(self, func: Callable[..., Any], *, name: str | None = None,
                 description: str | None = None, side_effect: bool = False) -> None:
        if not callable(func):
            raise ToolDefinitionError(f"a tool must be callable, got {type(func).__name__}")
        self.func = func
        # A side-effecting tool changes the world (writes, sends, deletes): on replay
        # after a task retry it is not called again; its recorded result is used.
        self.side_effect = side_effect
        self.name = name or getattr(func, "__name__", "")
        if not self.name.isidentifier() or self.name.startswith("_"):
            raise ToolDefinitionError(
                f"tool name {self.name!r} is not a usable Python name; pass name='...' to @tool"
            )
        parsed = parse_docstring(func.__doc__)
        self.description = (description or parsed.summary).strip()
        if not self.description:
            raise ToolDefinitionError(
                f"tool {self.name!r} has no docstring: the model only knows a tool by its "
                "docstring, so say what it does (and describe its arguments under 'Args:')"
            )
        self.argument_descriptions = parsed.arguments
        self.returns_description = parsed.returns
        self.signature = inspect.signature(func)
        try:
            hints = get_type_hints(func)
        except Exception:  # noqa: BLE001 - unresolved forward references: fall back to raw annotations
            hints = {}
        self.signature = self.signature.replace(
            parameters=[p.replace(annotation=hints.get(p.name, p.annotation))
                        for p in self.signature.parameters.values()],
            return_annotation=hints.get("return", self.signature.return_annotation),
        )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Tool({self.name}{self.signature})"

    def json_schema(self) -> dict[str, Any]:
        """The tool in OpenAI function-calling form, for JSON action mode."""
        properties: dict[str, Any] = {}
        required: list[str] = []
        for p in self.signature.parameters.values():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            prop = _json_type(p.annotation)
            if p.name in self.argument_descriptions:
                prop["description"] = self.argument_descriptions[p.name]
            properties[p.name] = prop
            if p.default is inspect.Parameter.empty:
                required.append(p.name)
        description = self.description
        if self.returns_description:
            description += f" Returns: {self.returns_description}"
        return {"type": "function", "function": {
            "name": self.name, "description": description,
            "parameters": {"type": "object", "properties": properties, "required": required}}}

    def signature_text(self) -> str:
        """The tool as a Python stub, which a code model reads most reliably."""
        params = []
        for p in self.signature.parameters.values():
            text = p.name if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) else (
                ("*" if p.kind == p.VAR_POSITIONAL else "**") + p.name)
            annotation = _annotation_text(p.annotation)
            if annotation:
                text += f": {annotation}"
            if p.default is not inspect.Parameter.empty:
                text += f" = {p.default!r}"
            params.append(text)
        returns = _annotation_text(self.signature.return_annotation)
        head = f"def {self.name}({', '.join(params)})" + (f" -> {returns}" if returns else "") + ":"
        doc = [self.description]
        if self.argument_descriptions:
            doc += ["", "Args:"] + [f"    {k}: {v}" for k, v in self.argument_descriptions.items()]
        if self.returns_description:
            doc += ["", f"Returns: {self.returns_description}"]
        body = "\n".join(("    " + line).rstrip() for line in doc)
        return f'{head}\n    """\n{body}\n    """'


@overload
def tool(func: Callable[..., Any], /) -> Tool: ...


@overload
def tool(*, name: str | None = None, description: str | None = None,
         side_effect: bool = False) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(func: Callable[..., Any] | None = None, /, *, name: str | None = None,
         description: str | None = None, side_effect: bool = False) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Make a function available to the agent: ``@tool`` or ``@tool(name=..., side_effect=True)``."""
    if func is not None:
        return Tool(func, name=name, description=description, side_effect=side_effect)
    return lambda f: Tool(f, name=name, description=description, side_effect=side_effect)


def as_tool(obj: Tool | Callable[..., Any]) -> Tool:
    """Accept plain documented functions where a ``Tool`` is expected."""
    return obj if isinstance(obj, Tool) else Tool(obj)


@runtime_checkable
class Toolkit(Protocol):
    """Several related tools built from one thing, e.g. ``SQLTool(conn_id)``: sql, list_tables, describe."""

    def tools(self) -> list[Tool]: ...


def expand_tools(items: Iterable[Tool | Toolkit | Callable[..., Any]]) -> list[Tool]:
    """What users pass as ``tools=``: tools, documented functions, and toolkits, flattened."""
    expanded: list[Tool] = []
    for item in items:
        if isinstance(item, Tool):
            expanded.append(item)
        elif isinstance(item, Toolkit):
            expanded.extend(item.tools())
        else:
            expanded.append(as_tool(item))
    return expanded
