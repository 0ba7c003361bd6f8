"""Intents: side-effecting tool calls staged for a human instead of executed.

With ``approval="required"`` every tool marked ``side_effect=True`` is
replaced, for one agent run, by a stand-in with the same name, signature
and argument docs. Calling it validates the call where a cheap check exists
(SQL statement rules, path rules), builds a human-readable preview (the SQL
text and, where a rolled-back dry run can say, the number of rows it would
touch; the first lines of a file to write) and returns
``"staged as intent #n"`` to model code. Nothing is executed.

The staged calls are plain JSON (``Intent.to_dict``) so they travel in XCom
(``codeagent_intents``) to the approval step and the apply step.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from airflow_codeagent.tools.base import Tool, Toolkit, expand_tools

log = logging.getLogger(__name__)

INTENTS_XCOM_KEY = "codeagent_intents"
PREVIEW_LINES = 20
PREVIEW_CHARS = 4_000

Previewer = Callable[[tuple[Any, ...], dict[str, Any]], dict[str, Any]]


@dataclass
class Intent:
    """One staged side-effecting call: what would run, and what a human needs to judge it."""

    id: int
    tool: str
    args: list[Any]
    kwargs: dict[str, Any]
    arguments: dict[str, Any]
    preview: str
    row_count: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def fingerprint(self) -> str:
        return intent_fingerprint(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["fingerprint"] = intent_fingerprint(data)
        return data


def intent_fingerprint(intent: Mapping[str, Any]) -> str:
    """What identifies an intent: its number, its tool and its exact arguments."""
    payload = json.dumps({"id": intent["id"], "tool": intent["tool"], "args": intent["args"],
                          "kwargs": intent["kwargs"]}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def intents_digest(intents: Iterable[Mapping[str, Any]]) -> str:
    """One hash over a list of intents: what the approver saw is what gets applied."""
    return hashlib.sha256("|".join(intent_fingerprint(i) for i in intents).encode()).hexdigest()[:16]


def _plain_json(name: str, value: Any) -> Any:
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError):
        raise TypeError(f"{name}: a staged call's arguments must be plain data (str, int, float, bool, "
                        f"None, list, dict), got {type(value).__name__}") from None


def _clip(text: str) -> str:
    lines = text.splitlines()
    clipped = "\n".join(lines[:PREVIEW_LINES])
    if len(clipped) > PREVIEW_CHARS:
        clipped = clipped[:PREVIEW_CHARS]
    if clipped != text:
        clipped += f"\n... ({len(lines)} lines, {len(text)} characters in all)"
    return clipped


# -- previews -----------------------------------------------------------------------------


def _sql_previewer(toolkit: Any) -> Previewer:
    """SQLTool.sql: a read runs now, read-only; a write is checked like the tool would and its rows counted."""
    import copy

    from airflow_codeagent.tools.sql_guard import SQLRefused, check_statement

    reader = copy.copy(toolkit)  # same connection and limits, read-only at the database too
    reader.read_only = True

    def preview(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        query = kwargs.get("query", args[0] if args else None)
        if not isinstance(query, str):
            raise TypeError("sql() takes the statement as a string")
        try:
            check_statement(query, read_only=True, allowed_tables=toolkit.allowed_tables)
        except SQLRefused:
            pass
        else:
            return {"run_now": lambda: reader.query(query)}
        statement = toolkit.check(query)  # ValueError to model code, as the real call would
        row_count, note = _sql_dry_run_rows(toolkit, statement.text)
        return {"preview": statement.text, "row_count": row_count, "notes": [note] if note else []}

    return preview


def _sql_dry_run_rows(toolkit: Any, statement: str) -> tuple[int | None, str | None]:
    """Rows the statement would change, from executing it in a transaction that is rolled back.

    SQLite only (its DDL is transactional too); other databases get no count.
    """
    try:
        backend = toolkit._backend()
    except Exception as exc:  # noqa: BLE001 - no count is not a reason to refuse staging
        return None, f"no dry run: {exc}"
    if getattr(backend, "dialect", None) != "sqlite":
        return None, f"no dry run for dialect {getattr(backend, 'dialect', '?')!r}"
    denials: list[str] = []
    conn = backend.connect(read_only=False, allowed=toolkit._allowed, timeout=toolkit.timeout,
                           denials=denials, timed_out=[False])
    try:
        conn.execute("BEGIN")
        cursor = conn.execute(statement)
        count = cursor.rowcount if cursor.description is None else None
        return (count if count is not None and count >= 0 else None), None
    except sqlite3.Error as exc:
        return None, f"dry run failed: {exc}" + (f" ({'; '.join(denials)})" if denials else "")
    finally:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        conn.close()


def _write_text_previewer(toolkit: Any) -> Previewer:
    """ObjectStorageTool.write_text: resolve the path like the tool would; show the first lines."""

    def preview(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        path = kwargs.get("path", args[0] if args else None)
        text = kwargs.get("text", args[1] if len(args) > 1 else None)
        if not isinstance(path, str) or not isinstance(text, str):
            raise TypeError("write_text() takes a path and the content as strings")
        if len(text) > toolkit.max_write_chars:
            raise ValueError(f"the text has {len(text)} characters; write_text() accepts at most "
                             f"{toolkit.max_write_chars}")
        target, relative = toolkit.resolve(path)
        exists = target.exists()
        head = f"write {relative} ({len(text)} characters, {'overwrites the existing file' if exists else 'new file'})"
        return {"preview": f"{head}\n{_clip(text)}", "row_count": None, "notes": []}

    return preview


def previewers_for(items: Iterable[Tool | Toolkit | Callable[..., Any]]) -> dict[str, Previewer]:
    """Previewers for the side-effecting tools of the known toolkits, by tool name."""
    from airflow_codeagent.tools.object_storage import ObjectStorageTool
    from airflow_codeagent.tools.sql import SQLTool

    found: dict[str, Previewer] = {}
    for item in items:
        if isinstance(item, SQLTool) and not item.read_only:
            found[item.tools()[0].name] = _sql_previewer(item)
        elif isinstance(item, ObjectStorageTool) and item.write:
            for t in item.tools():
                if t.side_effect:
                    found[t.name] = _write_text_previewer(item)
    return found


def _generic_preview(tool: Tool, bound: Mapping[str, Any]) -> dict[str, Any]:
    lines = [f"{tool.name}("]
    for name, value in bound.items():
        lines.append(f"  {name}={_clip(json.dumps(value, ensure_ascii=False, default=repr))},")
    lines.append(")")
    return {"preview": "\n".join(lines), "row_count": None, "notes": []}


# -- staging ------------------------------------------------------------------------------


class IntentStager:
    """Per-run list of intents; ``wrap(tool)`` gives the stand-in the model calls."""

    def __init__(self, previewers: Mapping[str, Previewer] | None = None) -> None:
        self.previewers = dict(previewers or {})
        self.intents: list[Intent] = []

    def stage(self, tool: Tool, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        try:
            bound = tool.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{tool.name}(): {exc}") from None
        plain_args = _plain_json(tool.name, list(args))
        plain_kwargs = _plain_json(tool.name, dict(kwargs))
        arguments = _plain_json(tool.name, dict(bound.arguments))
        previewer = self.previewers.get(tool.name)
        shown = previewer(args, kwargs) if previewer else _generic_preview(tool, arguments)
        if "run_now" in shown:  # the previewer found this call changes nothing (e.g. a SELECT)
            return shown["run_now"]()
        intent = Intent(id=len(self.intents) + 1, tool=tool.name, args=plain_args, kwargs=plain_kwargs,
                        arguments=arguments, preview=shown["preview"], row_count=shown.get("row_count"),
                        notes=list(shown.get("notes", [])))
        self.intents.append(intent)
        log.info("staged intent #%d: %s", intent.id, tool.name)
        return f"staged as intent #{intent.id}"

    def wrap(self, tool: Tool) -> Tool:
        """The stand-in for a side-effecting tool: same name and arguments, stages instead of running."""
        if not tool.side_effect:
            return tool
        stager = self

        @functools.wraps(tool.func)
        def staged(*args: Any, **kwargs: Any) -> str:
            return stager.stage(tool, args, kwargs)

        staged.__annotations__ = {**getattr(tool.func, "__annotations__", {}), "return": str}
        description = (f"{tool.description} In this run a call that changes something is not executed: "
                       "it is staged for human approval and returns 'staged as intent #n'; approved "
                       "intents are applied after the run, exactly as called, so do not call it again "
                       "to check the effect." + (" Reading calls run as usual." if tool.name in
                                                 self.previewers else ""))
        wrapped = Tool(staged, name=tool.name, description=description, side_effect=False)
        wrapped.returns_description = "'staged as intent #n' for a staged call"
        return wrapped

    def wrap_all(self, tools: Iterable[Tool]) -> list[Tool]:
        return [self.wrap(t) for t in tools]

    def to_xcom(self) -> list[dict[str, Any]]:
        return [i.to_dict() for i in self.intents]


def staging_tools(items: Iterable[Tool | Toolkit | Callable[..., Any]]) -> tuple[list[Tool], IntentStager]:
    """``tools=`` as the agent sees it under ``approval="required"``, and the stager that collects intents."""
    items = list(items)
    stager = IntentStager(previewers_for(items))
    return stager.wrap_all(expand_tools(items)), stager


def render_markdown(intents: Iterable[Mapping[str, Any]]) -> str:
    """The approval body: one section per intent, with its preview as a code block."""
    intents = list(intents)
    if not intents:
        return "The agent staged no side-effecting call."
    parts = [f"The agent staged **{len(intents)}** side-effecting call{'s' if len(intents) != 1 else ''}. "
             "**Approve** applies exactly these, in this order; **Reject** applies none.", ""]
    for intent in intents:
        head = f"### Intent #{intent['id']}: `{intent['tool']}`"
        if intent.get("row_count") is not None:
            head += f" — would touch **{intent['row_count']}** row{'s' if intent['row_count'] != 1 else ''}"
        parts.append(head)
        language = "sql" if intent["tool"].endswith("sql") else ""
        fence = "````" if "```" in intent["preview"] else "```"
        parts += [f"{fence}{language}", intent["preview"], fence]
        parts += [f"_{note}_" for note in intent.get("notes") or []]
        parts.append("")
    return "\n".join(parts)
