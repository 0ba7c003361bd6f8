"""SQLTool: a database behind an Airflow connection, as three tools the model can call.

``SQLTool("warehouse")`` gives the model ``sql(query)``, ``list_tables()`` and
``describe(table)``. The tools run in the worker; the hook, the connection and
its credentials stay there, and only plain data (lists, dicts, strings,
numbers, None) goes back to model code.

Read-only is enforced twice:

1. by the database, where it can be: SQLite is opened with ``mode=ro``,
   ``PRAGMA query_only=ON`` and an authorizer that denies every action but
   reading (and, with ``allowed_tables``, reading other tables); Postgres runs
   each query in a ``READ ONLY`` transaction, MySQL in ``START TRANSACTION READ
   ONLY``; every other database in a transaction that is rolled back;
2. by a statement check (``sql_guard.py``): one statement, no write keyword
   anywhere (CTE bodies and ``EXPLAIN ANALYZE`` included), no PRAGMA
   assignment, no function with effects outside the query.

Neither replaces a database user with only the grants the agent needs: MySQL
commits DDL implicitly even inside a read-only transaction, and a database
other than SQLite, Postgres or MySQL gets no database-level guard but the
rollback.

The hook is resolved at the first call, in the worker: building the tool in a
DAG file touches neither the connection nor the database.
"""

from __future__ import annotations

import datetime
import decimal
import json
import logging
import math
import sqlite3
import time
import urllib.parse
import uuid
from collections.abc import Callable, Collection, Mapping
from typing import Any

from airflow_codeagent.tools.base import Tool
from airflow_codeagent.tools.sql_guard import (
    EFFECT_FUNCTIONS,
    READ_PRAGMAS,
    READ_PRAGMAS_WITH_ARGUMENT,
    CheckedStatement,
    SQLRefused,
    check_statement,
    normalize_table_name,
    split_table_name,
)

log = logging.getLogger(__name__)

TRUNCATED_KEY = "_truncated"


class NotPlainValue(TypeError):
    """A host value with no plain-data form (raised when conversion is strict)."""


def plain_value(value: Any, *, max_chars: int | None = 2_000, strict: bool = False, _depth: int = 0) -> Any:
    """``value`` as plain data a sandbox can hold: dict, list, str, int, float, bool or None.

    Dates and times become ISO strings, ``timedelta`` seconds, ``Decimal`` a
    float when that keeps every digit (a string otherwise), bytes a
    ``"<N bytes>"`` marker, NaN and infinities strings. Strings longer than
    ``max_chars`` are cut with a visible marker. Anything else becomes its
    ``str`` unless ``strict``, which raises ``NotPlainValue`` instead: a hook
    may return a client object whose ``str`` shows credentials.
    """
    if _depth > 50:
        raise NotPlainValue("the value is nested more than 50 levels deep")
    if value is None or isinstance(value, bool) or type(value) is int:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return float(value)
    if isinstance(value, str):
        text = str(value)
        if max_chars is not None and len(text) > max_chars:
            return text[:max_chars] + f"...[{len(text) - max_chars} more characters]"
        return text
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            return str(value)
        as_float = float(value)
        return as_float if decimal.Decimal(repr(as_float)) == value else str(value)
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(bytes(value))} bytes>"
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return {plain_key(k, strict): plain_value(v, max_chars=max_chars, strict=strict, _depth=_depth + 1)
                for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        return [plain_value(v, max_chars=max_chars, strict=strict, _depth=_depth + 1) for v in items]
    if strict:
        raise NotPlainValue(f"a {type(value).__module__}.{type(value).__qualname__} is not plain data")
    return plain_value(str(value), max_chars=max_chars)


def plain_key(key: Any, strict: bool) -> str | int | float | bool | None:
    if key is None or isinstance(key, (str, int, float, bool)):
        return key
    if strict and not isinstance(key, (datetime.date, datetime.time, decimal.Decimal, uuid.UUID)):
        raise NotPlainValue(f"a dict key of type {type(key).__qualname__} is not plain data")
    converted = plain_value(key, max_chars=None)
    return converted if isinstance(converted, (str, int, float, bool)) else str(converted)


def truncation_marker(text: str) -> dict[str, str]:
    return {TRUNCATED_KEY: text}


def _tool_name(prefix: str | None, name: str) -> str:
    if not prefix:
        return name
    return f"{prefix.rstrip('_')}_{name}"


def _check_prefix(prefix: str | None) -> None:
    if prefix is not None and (not isinstance(prefix, str) or not prefix.rstrip("_").isidentifier()
                               or prefix.startswith("_")):
        raise ValueError(f"prefix must be a Python name such as 'warehouse', got {prefix!r}")


def _positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


class SQLTool:
    """``sql``, ``list_tables`` and ``describe`` on the database of an Airflow connection.

    Args:
        conn_id: an Airflow connection whose hook is a ``DbApiHook`` (common.sql),
            or of type ``sqlite`` (host: the database file), which is opened directly.
        read_only: enforce reading only (see the module docstring). ``False`` makes
            ``sql`` side-effecting: it is not re-run when a retried task replays
            its steps, and statements are committed.
        max_rows: rows ``sql`` returns at most; more are cut with a marker.
        allowed_tables: if given, the only tables the model may query, describe or
            see in ``list_tables`` (names as the model should write them,
            e.g. ``"orders"`` or ``"sales.orders"``; case-insensitive).
        timeout: seconds a query may run (SQLite: interrupted; Postgres:
            ``statement_timeout``; MySQL: ``MAX_EXECUTION_TIME``; MariaDB: ``max_statement_time``; other
            databases: not enforced by the tool).
        prefix: prepended to the tool names (``warehouse_sql``, ...) to give
            the model two databases.
        schema: the schema ``list_tables`` and unqualified ``describe`` use
            (the connection's default when omitted).
        description: a few words on what the database holds, shown to the model.
        max_result_chars: size cap of one ``sql`` result (as JSON).
        max_value_chars: longest text value returned; longer ones are cut.
    """

    def __init__(self, conn_id: str, *, read_only: bool = True, max_rows: int = 500,
                 allowed_tables: Collection[str] | None = None, timeout: float = 30,
                 prefix: str | None = None, schema: str | None = None, description: str | None = None,
                 max_result_chars: int = 100_000, max_value_chars: int = 2_000) -> None:
        if not isinstance(conn_id, str) or not conn_id:
            raise ValueError(f"conn_id must be the id of an Airflow connection, got {conn_id!r}")
        _positive_int("max_rows", max_rows)
        _positive_int("max_result_chars", max_result_chars)
        _positive_int("max_value_chars", max_value_chars)
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        if isinstance(allowed_tables, str):
            raise ValueError("allowed_tables must be a list of table names, not one string")
        _check_prefix(prefix)
        self.conn_id = conn_id
        self.read_only = bool(read_only)
        self.max_rows = max_rows
        self.allowed_tables = None if allowed_tables is None else [str(t) for t in allowed_tables]
        self._allowed = None if allowed_tables is None else {normalize_table_name(t) for t in self.allowed_tables}
        self.timeout = float(timeout)
        self.prefix = prefix
        self.schema = schema
        self.description = description
        self.max_result_chars = max_result_chars
        self.max_value_chars = max_value_chars
        self._tools: list[Tool] | None = None
        self._backend_instance: _SQLiteBackend | _DbApiBackend | None = None

    def __repr__(self) -> str:
        return f"SQLTool({self.conn_id!r}, read_only={self.read_only})"

    # -- the tools the model sees ------------------------------------------------------

    def tools(self) -> list[Tool]:
        if self._tools is None:
            self._tools = [
                Tool(self._sql_function(), name=_tool_name(self.prefix, "sql"), side_effect=not self.read_only),
                Tool(self._list_tables_function(), name=_tool_name(self.prefix, "list_tables")),
                Tool(self._describe_function(), name=_tool_name(self.prefix, "describe")),
            ]
        return list(self._tools)

    def _where(self) -> str:
        where = f"the database of Airflow connection {self.conn_id!r}"
        return f"{where} ({self.description})" if self.description else where

    def _tables_note(self) -> str:
        if self.allowed_tables is None:
            return ""
        return f" Only these tables may be used: {', '.join(self.allowed_tables)}."

    def _sql_function(self) -> Callable[[str], list[dict]]:
        def sql(query: str) -> list[dict]:
            return self.query(query)

        describe_name = _tool_name(self.prefix, "describe")
        list_name = _tool_name(self.prefix, "list_tables")
        if self.read_only:
            head = (f"Run one read-only SQL query on {self._where()} and return its rows.\n\n"
                    "One statement per call, and only reading: SELECT, WITH ... SELECT, VALUES, EXPLAIN, "
                    "SHOW, DESCRIBE or a reading PRAGMA. Writes (INSERT, UPDATE, DELETE, DDL, also inside "
                    "WITH), several statements and PRAGMA assignments raise ValueError saying why.")
        else:
            head = (f"Run one SQL statement on {self._where()}; it may change data and is committed.\n\n"
                    "One statement per call; several statements raise ValueError. A statement that "
                    "returns no rows gives [{\"rows_affected\": n}].")
        sql.__doc__ = (
            f"{head} At most {self.max_rows} rows come back: when the result had more rows, or was "
            f"larger than {self.max_result_chars} characters, the last item of the list is "
            f"{{\"{TRUNCATED_KEY}\": \"<what was cut>\"}} instead of a row, so filter, aggregate and LIMIT "
            f"in SQL rather than in Python.{self._tables_note()} A query is stopped after "
            f"{self.timeout:g} s. Use {list_name}() and {describe_name}(table) to see the schema.\n\n"
            "Args:\n"
            "    query: one SQL statement in the database's dialect, e.g. "
            "\"SELECT status, COUNT(*) AS n FROM orders GROUP BY status\".\n\n"
            "Returns:\n"
            "    A list of rows, each a dict {column: value}. Dates and times are ISO strings, decimals "
            "floats (strings when a float would lose digits), binary values \"<N bytes>\", text longer "
            f"than {self.max_value_chars} characters is cut with a marker; duplicate column names get "
            "a suffix (_2, _3).\n")
        return sql

    def _list_tables_function(self) -> Callable[[], list[str]]:
        def list_tables() -> list[str]:
            return self.list_tables()

        scope = ("the tables this tool may use" if self.allowed_tables is not None
                 else "the tables and views")
        schema = f" in schema {self.schema!r}" if self.schema else ""
        list_tables.__doc__ = (
            f"List {scope}{schema} of {self._where()}.\n\n"
            "Returns:\n    Table and view names, sorted.\n")
        return list_tables

    def _describe_function(self) -> Callable[[str], list[dict]]:
        def describe(table: str) -> list[dict]:
            return self.describe(table)

        describe.__doc__ = (
            f"Describe the columns of one table or view of {self._where()}.{self._tables_note()}\n\n"
            "Args:\n    table: a name from list_tables(), optionally schema-qualified (\"sales.orders\").\n\n"
            "Returns:\n    One dict per column: {\"name\", \"type\", \"nullable\", \"primary_key\"}.\n")
        return describe

    # -- what the tools do --------------------------------------------------------------

    def check(self, query: str) -> CheckedStatement:
        """The statement checks ``sql`` applies, without running anything.

        Raises a plain ``ValueError`` (not ``SQLRefused``): model code sees
        builtin exception types as themselves, so ``except ValueError`` works there.
        """
        try:
            return check_statement(query, read_only=self.read_only, allowed_tables=self.allowed_tables)
        except SQLRefused as exc:
            raise ValueError(str(exc)) from None

    def query(self, query: str) -> list[dict]:
        statement = self.check(query)
        columns, rows, more = self._execute(statement.text)
        if not columns:
            return [] if self.read_only else [{"rows_affected": rows}]
        return self._shape(columns, rows, more)

    def list_tables(self) -> list[str]:
        names = self._backend().table_names(self.schema, self.timeout)
        if self._allowed is None:
            return sorted(names)
        existing = {normalize_table_name(n) for n in names}
        shown = []
        for table in self.allowed_tables or []:
            normalized = normalize_table_name(table)
            if "." in normalized or normalized in existing:
                shown.append(table)
        return sorted(shown)

    def describe(self, table: str) -> list[dict]:
        if not isinstance(table, str) or not table.strip():
            raise ValueError("describe() needs a table name as a string, e.g. describe(\"orders\")")
        normalized = normalize_table_name(table)
        if self._allowed is not None and normalized not in self._allowed:
            raise ValueError(f"table {normalized!r} is not one this tool may use; the allowed tables are: "
                             f"{', '.join(sorted(self._allowed))}")
        parts = split_table_name(table)
        if len(parts) > 2 or not all(parts):
            raise ValueError(f"{table!r} is not a table name; write it as 'table' or 'schema.table'")
        schema, name = (parts[0], parts[1]) if len(parts) == 2 else (self.schema, parts[0])
        return self._backend().columns(name, schema, self.timeout, shown=table)

    # -- running a statement ------------------------------------------------------------

    def _execute(self, statement: str) -> tuple[list[str], Any, bool]:
        """Run one statement with the database-level guards and no statement check.

        Returns (column names, rows, whether there were more than ``max_rows``);
        for a statement without a result, ([], rows affected, False). Tests call
        this directly to show the database refusing a write the check would stop.
        """
        return self._backend().execute(statement, read_only=self.read_only, allowed=self._allowed,
                                       timeout=self.timeout, max_rows=self.max_rows)

    def _shape(self, columns: list[str], rows: list[tuple], more: bool) -> list[dict]:
        names = _unique(columns)
        result: list[dict] = []
        size = 2
        for row in rows[:self.max_rows]:
            values = _row_values(row, len(names))
            item = {name: plain_value(v, max_chars=self.max_value_chars) for name, v in zip(names, values)}
            size += len(json.dumps(item, default=str)) + 2
            if size > self.max_result_chars and result:
                result.append(truncation_marker(
                    f"showing the first {len(result)} rows: the result is larger than "
                    f"{self.max_result_chars} characters. Select fewer columns, filter with WHERE, "
                    "aggregate, or add LIMIT"))
                return result
            result.append(item)
        if more:
            result.append(truncation_marker(
                f"showing the first {self.max_rows} rows; the query returned more. Filter with WHERE, "
                "aggregate (COUNT, SUM, GROUP BY), or page with LIMIT/OFFSET"))
        return result

    def _backend(self) -> _SQLiteBackend | _DbApiBackend:
        if self._backend_instance is None:
            self._backend_instance = _resolve_backend(self.conn_id)
        return self._backend_instance

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_backend_instance"] = None  # a copy resolves its own hook, in its own process
        state["_tools"] = None
        return state


def _unique(columns: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    names = []
    for column in columns:
        name = str(column)
        if name in seen:
            seen[name] += 1
            name = f"{name}_{seen[name]}"
        else:
            seen[name] = 1
        names.append(name)
    return names


def _row_values(row: Any, width: int) -> Any:
    """A row's values in column order, also when the connection's ``cursor`` extra makes the driver
    return dicts (psycopg's ``dictcursor``, psycopg2's ``realdictcursor``): iterating those gives the keys."""
    if not isinstance(row, Mapping):
        return row
    values = tuple(row.values())
    if len(values) != width:
        raise ValueError("the result has two columns with the same name, which this connection's dict rows "
                         "cannot hold; give each column its own name with AS")
    return values


def _resolve_backend(conn_id: str) -> _SQLiteBackend | _DbApiBackend:
    from airflow.sdk import BaseHook

    connection = BaseHook.get_connection(conn_id)
    conn_type = (connection.conn_type or "").lower()
    if conn_type == "sqlite":
        if not connection.host:
            raise ValueError(f"connection {conn_id!r} is of type sqlite but has no database file in 'host'")
        return _SQLiteBackend(connection.host)
    from airflow.providers.common.sql.hooks.sql import DbApiHook

    hook = connection.get_hook()
    if not isinstance(hook, DbApiHook):
        raise ValueError(f"connection {conn_id!r} (type {conn_type!r}) has a {type(hook).__name__}, which is "
                         "not a SQL hook (DbApiHook); SQLTool needs a SQL database connection")
    return _DbApiBackend(hook, _dialect(conn_type, hook))


def _dialect(conn_type: str, hook: Any) -> str:
    names = {"postgres": "postgres", "postgresql": "postgres", "mysql": "mysql", "mariadb": "mysql",
             "sqlite": "sqlite"}
    if conn_type in names:
        return names[conn_type]
    try:
        return names.get(str(hook.dialect_name).lower(), str(hook.dialect_name).lower())
    except Exception:  # noqa: BLE001 - an unknown dialect gets the generic guards
        return conn_type or "unknown"


def _database_error(exc: Exception, denials: list[str] | None = None, timed_out: bool = False,
                    timeout: float = 0) -> ValueError:
    if timed_out:
        return ValueError(f"the query ran longer than the {timeout:g} s timeout and was stopped; narrow it "
                          "(WHERE, LIMIT) or aggregate less")
    if denials:
        return ValueError(f"the database refused the query: {denials[0]}")
    return ValueError(f"the database refused the query: {type(exc).__name__}: {exc}")


class _SQLiteBackend:
    """A SQLite file opened by this tool: read-only handles are ``mode=ro`` with an authorizer."""

    dialect = "sqlite"

    def __init__(self, path: str) -> None:
        self.path = path

    def _uri(self, read_only: bool) -> str:
        mode = "ro" if read_only else "rw"
        if self.path == ":memory:":
            return f"file::memory:?mode={mode}"
        return f"file:{urllib.parse.quote(self.path)}?mode={mode}"

    def connect(self, *, read_only: bool, allowed: set[str] | None, timeout: float,
                denials: list[str], timed_out: list[bool]) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self._uri(read_only), uri=True, timeout=min(timeout, 5.0),
                                   isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise ValueError(f"could not open the SQLite database: {exc}") from None
        if read_only:
            conn.execute("PRAGMA query_only = ON")
        conn.set_authorizer(_sqlite_authorizer(read_only, allowed, denials))
        deadline = time.monotonic() + timeout

        def progress() -> int:
            if time.monotonic() > deadline:
                timed_out[0] = True
                return 1
            return 0

        conn.set_progress_handler(progress, 10_000)
        return conn

    def execute(self, statement: str, *, read_only: bool, allowed: set[str] | None, timeout: float,
                max_rows: int) -> tuple[list[str], Any, bool]:
        denials: list[str] = []
        timed_out = [False]
        conn = self.connect(read_only=read_only, allowed=allowed, timeout=timeout, denials=denials,
                            timed_out=timed_out)
        try:
            cursor = conn.cursor()
            cursor.execute(statement)
            if cursor.description is None:
                return [], cursor.rowcount, False
            columns = [d[0] for d in cursor.description]
            rows = cursor.fetchmany(max_rows + 1)
            return columns, rows, len(rows) > max_rows
        except sqlite3.Error as exc:
            raise _database_error(exc, denials, timed_out[0], timeout) from None
        finally:
            conn.close()

    def _engine(self, timeout: float) -> Any:
        from sqlalchemy import create_engine
        from sqlalchemy.pool import NullPool

        def creator() -> sqlite3.Connection:
            return self.connect(read_only=True, allowed=None, timeout=timeout, denials=[], timed_out=[False])

        return create_engine("sqlite://", creator=creator, poolclass=NullPool)

    def table_names(self, schema: str | None, timeout: float) -> list[str]:
        return _inspector_table_names(self._engine(timeout), schema)

    def columns(self, table: str, schema: str | None, timeout: float, shown: str) -> list[dict]:
        return _inspector_columns(self._engine(timeout), table, schema, shown)


_SQLITE_ACTIONS = (
    "CREATE_INDEX", "CREATE_TABLE", "CREATE_TEMP_INDEX", "CREATE_TEMP_TABLE", "CREATE_TEMP_TRIGGER",
    "CREATE_TEMP_VIEW", "CREATE_TRIGGER", "CREATE_VIEW", "DELETE", "DROP_INDEX", "DROP_TABLE",
    "DROP_TEMP_INDEX", "DROP_TEMP_TABLE", "DROP_TEMP_TRIGGER", "DROP_TEMP_VIEW", "DROP_TRIGGER", "DROP_VIEW",
    "INSERT", "PRAGMA", "READ", "SELECT", "TRANSACTION", "UPDATE", "ATTACH", "DETACH", "ALTER_TABLE",
    "REINDEX", "ANALYZE", "CREATE_VTABLE", "DROP_VTABLE", "FUNCTION", "SAVEPOINT", "RECURSIVE",
)


def _sqlite_authorizer(read_only: bool, allowed: set[str] | None,
                       denials: list[str]) -> Callable[[int, str | None, str | None, str | None, str | None], int]:
    """The SQLite engine's own check of every action a statement takes."""
    reading = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION,
               getattr(sqlite3, "SQLITE_RECURSIVE", 33)}
    action_names = {getattr(sqlite3, f"SQLITE_{n}"): n.lower().replace("_", " ") for n in _SQLITE_ACTIONS
                    if hasattr(sqlite3, f"SQLITE_{n}")}

    def deny(reason: str) -> int:
        denials.append(reason)
        return sqlite3.SQLITE_DENY

    def authorize(action: int, arg1: str | None, arg2: str | None, db_name: str | None,
                  source: str | None) -> int:
        if action == sqlite3.SQLITE_ATTACH and arg1 == "" and not read_only:
            return sqlite3.SQLITE_OK  # a plain VACUUM, which rebuilds the database through a temporary one
        if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH):
            if arg1 == "":
                return deny("VACUUM is a write, and this connection is read-only")
            return deny("ATTACH, DETACH and VACUUM INTO reach files outside the connection's database "
                        "and are refused")
        if action == sqlite3.SQLITE_FUNCTION:
            if (arg2 or "").upper() in EFFECT_FUNCTIONS:
                return deny(f"{arg2}() is refused")
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_PRAGMA:
            name = (arg1 or "").lower()
            if not read_only:
                return sqlite3.SQLITE_OK
            if name in READ_PRAGMAS and (arg2 is None or name in READ_PRAGMAS_WITH_ARGUMENT):
                return sqlite3.SQLITE_OK
            return deny(f"PRAGMA {name} {'with a value ' if arg2 is not None else ''}is not allowed "
                        "on a read-only connection")
        if action == sqlite3.SQLITE_READ:
            if allowed is not None:
                table = (arg1 or "").lower()
                qualified = f"{(db_name or 'main').lower()}.{table}"
                if table not in allowed and qualified not in allowed:
                    return deny(f"reading table {table!r} is not allowed; the allowed tables are: "
                                f"{', '.join(sorted(allowed))}")
            return sqlite3.SQLITE_OK
        if action in reading or not read_only:
            return sqlite3.SQLITE_OK
        what = action_names.get(action, str(action))
        target = f" on {arg1!r}" if arg1 else ""
        return deny(f"{what}{target} is not allowed: this connection is read-only")

    return authorize


class _DbApiBackend:
    """Any ``DbApiHook``: a fresh connection per call, a read-only transaction where the dialect has one."""

    def __init__(self, hook: Any, dialect: str) -> None:
        self.hook = hook
        self.dialect = dialect
        self._warned = False

    def _begin(self, conn: Any, cursor: Any, read_only: bool, timeout: float) -> None:
        milliseconds = max(1, int(timeout * 1000))
        if self.dialect == "postgres":
            if read_only:
                if hasattr(conn, "set_session"):  # psycopg2
                    conn.set_session(readonly=True, autocommit=False)
                elif hasattr(conn, "read_only"):  # psycopg 3
                    conn.autocommit = False
                    conn.read_only = True
                cursor.execute("SET TRANSACTION READ ONLY")
                cursor.execute(f"SET LOCAL statement_timeout = {milliseconds}")
            else:
                cursor.execute(f"SET statement_timeout = {milliseconds}")
            return
        if self.dialect == "mysql":
            try:
                cursor.execute(f"SET SESSION MAX_EXECUTION_TIME = {milliseconds}")  # MySQL, milliseconds
            except Exception:  # noqa: BLE001 - MariaDB has no such variable: it has max_statement_time
                try:
                    cursor.execute(f"SET SESSION max_statement_time = {milliseconds / 1000:.3f}")  # seconds
                except Exception:  # noqa: BLE001 - a server with neither: the query runs without a timeout
                    log.warning("SQLTool: this MySQL-protocol server has no statement timeout setting; "
                                "queries run without the %s s timeout", timeout)
            if read_only:
                cursor.execute("START TRANSACTION READ ONLY")
            return
        try:
            self.hook.set_autocommit(conn, False)
        except Exception:  # noqa: BLE001 - drivers without autocommit control
            pass
        if read_only and not self._warned:
            self._warned = True
            log.warning("SQLTool: no database-level read-only mode is known for dialect %r; relying on the "
                        "statement check and a rollback. Use a read-only database user.", self.dialect)

    def execute(self, statement: str, *, read_only: bool, allowed: set[str] | None, timeout: float,
                max_rows: int) -> tuple[list[str], Any, bool]:
        conn = self.hook.get_conn()
        try:
            cursor = conn.cursor()
            try:
                self._begin(conn, cursor, read_only, timeout)
                cursor.execute(statement)
                if cursor.description is None:
                    result: tuple[list[str], Any, bool] = ([], cursor.rowcount, False)
                else:
                    columns = [d[0] for d in cursor.description]
                    rows = list(cursor.fetchmany(max_rows + 1))
                    result = (columns, rows, len(rows) > max_rows)
                if read_only:
                    conn.rollback()
                else:
                    conn.commit()
                return result
            except Exception as exc:  # noqa: BLE001 - the driver's errors, reported to the model
                raise _database_error(exc) from None
            finally:
                try:
                    cursor.close()
                except Exception:  # noqa: BLE001
                    pass
        finally:
            try:
                if read_only:
                    conn.rollback()
            except Exception:  # noqa: BLE001
                pass
            conn.close()

    def table_names(self, schema: str | None, timeout: float) -> list[str]:
        return _inspector_table_names(self.hook.get_sqlalchemy_engine(), schema)

    def columns(self, table: str, schema: str | None, timeout: float, shown: str) -> list[dict]:
        return _inspector_columns(self.hook.get_sqlalchemy_engine(), table, schema, shown)


def _inspector_table_names(engine: Any, schema: str | None) -> list[str]:
    from sqlalchemy import inspect

    try:
        inspector = inspect(engine)
        return sorted({*inspector.get_table_names(schema=schema), *inspector.get_view_names(schema=schema)})
    except Exception as exc:  # noqa: BLE001 - driver errors become the model's observation
        raise _database_error(exc) from None
    finally:
        engine.dispose()


def _inspector_columns(engine: Any, table: str, schema: str | None, shown: str) -> list[dict]:
    from sqlalchemy import inspect
    from sqlalchemy.exc import NoSuchTableError

    try:
        inspector = inspect(engine)
        columns = inspector.get_columns(table, schema=schema)
        try:
            primary = set(inspector.get_pk_constraint(table, schema=schema).get("constrained_columns") or ())
        except NoSuchTableError:
            primary = set()
    except NoSuchTableError:
        raise ValueError(f"there is no table or view named {shown!r}; list_tables() shows the tables") from None
    except Exception as exc:  # noqa: BLE001
        raise _database_error(exc) from None
    finally:
        engine.dispose()
    if not columns:
        raise ValueError(f"there is no table or view named {shown!r}; list_tables() shows the tables")
    described = []
    for column in columns:
        try:
            kind = str(column["type"])
        except Exception:  # noqa: BLE001 - a type SQLAlchemy cannot render
            kind = type(column["type"]).__name__
        described.append({"name": str(column["name"]), "type": kind,
                          "nullable": bool(column.get("nullable", True)),
                          "primary_key": column["name"] in primary})
    return described


__all__ = ["SQLRefused", "SQLTool", "plain_value"]
