"""SQLTool, ObjectStorageTool and hook_tool on real parts.

A real SQLite file behind an Airflow connection (``AIRFLOW_CONN_*`` in JSON
form), a real ``ObjectStoragePath`` on ``file://`` in a temp directory, real
hooks, both real sandboxes, and ``dag.test()`` with the scripted model server.
The connection's password is a canary that must never reach model code, the
trace or the task log.
"""

from __future__ import annotations

import datetime
import decimal
import gzip
import hashlib
import json
import os
import re
import sqlite3
from pathlib import Path

import pendulum
import pytest

from airflow_codeagent.tools.hook import HookToolError, google_docstring, hook_tool
from airflow_codeagent.tools.object_storage import ObjectStorageTool, PathRefused
from airflow_codeagent.tools.sql import TRUNCATED_KEY, SQLTool
from tests.integration.toolkits import sandbox_with, tools_by_name

CANARY = "canary-conn-pw-7f3a19-DO-NOT-LEAK"
CONN_ID = "codeagent_tools_sqlite"  # the id tests/integration/dags/tool_test_dags.py uses
LOGICAL_DATE = pendulum.datetime(2024, 3, 1, tz="UTC")


def _conn_env(conn_id: str) -> str:
    return f"AIRFLOW_CONN_{conn_id.upper()}"


@pytest.fixture
def shop_db(tmp_path, monkeypatch) -> Path:
    """A SQLite file with customers, 25 orders and a table the agent must not see, behind CONN_ID."""
    path = tmp_path / "shop.db"
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
        CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customers(id),
                             total NUMERIC, placed DATE, receipt BLOB, note TEXT);
        CREATE TABLE secret (api_key TEXT);
        CREATE VIEW order_totals AS SELECT customer_id, SUM(total) AS total FROM orders GROUP BY customer_id;
        INSERT INTO customers VALUES (1, 'acme'), (2, 'globex');
        INSERT INTO secret VALUES ('sk-live-secret-table');
    """)
    for i in range(1, 26):
        conn.execute("INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?)",
                     (i, 1 if i <= 15 else 2, i * 1.25, f"2024-03-{i:02d}", b"\x00\x01\x02", None))
    conn.commit()
    conn.close()
    monkeypatch.setenv(_conn_env(CONN_ID), json.dumps({
        "conn_type": "sqlite", "host": str(path), "login": "agent", "password": CANARY}))
    return path


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _count(path: Path, table: str) -> int:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    finally:
        conn.close()


# -- SQLTool: building, docstrings -------------------------------------------------------------


def test_building_the_tools_does_not_touch_the_connection():
    tool = SQLTool("no_such_connection_anywhere", max_rows=7)
    tools = tools_by_name(tool)
    assert list(tools) == ["sql", "list_tables", "describe"]
    with pytest.raises(Exception, match="no_such_connection_anywhere"):
        tools["sql"]("SELECT 1")  # only calling a tool resolves the connection


def test_docstrings_tell_the_model_the_rules_and_prefix_disambiguates():
    read_only = tools_by_name(SQLTool(CONN_ID, max_rows=42, allowed_tables=["orders"], prefix="shop"))
    assert list(read_only) == ["shop_sql", "shop_list_tables", "shop_describe"]
    text = read_only["shop_sql"].signature_text()
    assert text.startswith("def shop_sql(query: str) -> list[dict]:")
    for phrase in ("read-only", "At most 42 rows", '{"_truncated":', "Only these tables may be used: orders",
                   "ValueError", "query: one SQL statement"):
        assert phrase in text
    assert not any(t.side_effect for t in read_only.values())

    writable = tools_by_name(SQLTool(CONN_ID, read_only=False))
    assert [t.side_effect for t in writable.values()] == [True, False, False]
    assert "it may change data" in writable["sql"].description


def test_bad_arguments_are_refused_at_definition_time():
    with pytest.raises(ValueError, match="max_rows"):
        SQLTool(CONN_ID, max_rows=0)
    with pytest.raises(ValueError, match="timeout"):
        SQLTool(CONN_ID, timeout=0)
    with pytest.raises(ValueError, match="list of table names"):
        SQLTool(CONN_ID, allowed_tables="orders")
    with pytest.raises(ValueError, match="prefix"):
        SQLTool(CONN_ID, prefix="two words")


# -- SQLTool: reading -----------------------------------------------------------------------------


def test_rows_come_back_as_plain_data(shop_db):
    sql = tools_by_name(SQLTool(CONN_ID))["sql"]
    rows = sql("SELECT o.id, o.total, o.placed, o.receipt, o.note, c.name, c.id "
               "FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.id = 2")
    assert rows == [{"id": 2, "total": 2.5, "placed": "2024-03-02", "receipt": "<3 bytes>", "note": None,
                     "name": "acme", "id_2": 1}]
    assert json.loads(json.dumps(rows)) == rows


def test_values_are_converted_to_plain_data():
    from airflow_codeagent.tools.sql import plain_value

    assert plain_value(decimal.Decimal("10.50")) == 10.5
    assert plain_value(decimal.Decimal("12345678901234567890.123")) == "12345678901234567890.123"
    assert plain_value(datetime.datetime(2024, 3, 1, 12, 30)) == "2024-03-01T12:30:00"
    assert plain_value(datetime.timedelta(minutes=2)) == 120.0
    assert plain_value(b"\x00" * 10) == "<10 bytes>"
    assert plain_value(float("nan")) == "NaN"
    assert plain_value("x" * 30, max_chars=10) == "x" * 10 + "...[20 more characters]"
    assert plain_value({"a": (1, {2})}) == {"a": [1, [2]]}


def test_rows_over_the_cap_end_with_a_marker(shop_db):
    sql = tools_by_name(SQLTool(CONN_ID, max_rows=5))["sql"]
    rows = sql("SELECT id FROM orders ORDER BY id")
    assert rows[:5] == [{"id": i} for i in range(1, 6)]
    assert len(rows) == 6 and set(rows[5]) == {TRUNCATED_KEY}
    assert "showing the first 5 rows" in rows[5][TRUNCATED_KEY] and "LIMIT" in rows[5][TRUNCATED_KEY]
    assert sql("SELECT id FROM orders ORDER BY id LIMIT 5") == [{"id": i} for i in range(1, 6)]  # no marker


def test_large_results_are_cut_by_size_with_a_marker(shop_db):
    sql = tools_by_name(SQLTool(CONN_ID, max_result_chars=200, max_value_chars=50))["sql"]
    rows = sql("SELECT id, printf('%.100c', 'x') AS padding FROM orders ORDER BY id")
    assert rows[0]["padding"] == "x" * 50 + "...[50 more characters]"
    assert TRUNCATED_KEY in rows[-1] and "larger than 200 characters" in rows[-1][TRUNCATED_KEY]
    assert 1 <= len(rows) - 1 < 25


def test_list_tables_and_describe(shop_db):
    tools = tools_by_name(SQLTool(CONN_ID))
    assert tools["list_tables"]() == ["customers", "order_totals", "orders", "secret"]
    columns = tools["describe"]("orders")
    assert [c["name"] for c in columns] == ["id", "customer_id", "total", "placed", "receipt", "note"]
    assert columns[0] == {"name": "id", "type": "INTEGER", "nullable": True, "primary_key": True}
    assert columns[2]["type"] == "NUMERIC"
    with pytest.raises(ValueError, match="no table or view named 'nope'; list_tables"):
        tools["describe"]("nope")


# -- SQLTool: read-only, the statement check -----------------------------------------------------


@pytest.mark.parametrize(("query", "message"), [
    ("INSERT INTO orders (id) VALUES (100)", "starts with 'INSERT'"),
    ("UPDATE orders SET total = 0", "starts with 'UPDATE'"),
    ("DELETE FROM orders", "starts with 'DELETE'"),
    ("REPLACE INTO customers VALUES (1, 'x')", "starts with 'REPLACE'"),
    ("MERGE INTO orders USING customers ON 1 = 1 WHEN MATCHED THEN DELETE", "starts with 'MERGE'"),
    ("INSERT INTO orders (id) VALUES (1) ON CONFLICT (id) DO UPDATE SET total = 0", "starts with 'INSERT'"),
    ("DROP TABLE orders", "starts with 'DROP'"),
    ("CREATE TABLE t (a)", "starts with 'CREATE'"),
    ("ALTER TABLE orders ADD COLUMN x", "starts with 'ALTER'"),
    ("TRUNCATE TABLE orders", "starts with 'TRUNCATE'"),
    ("ATTACH DATABASE '/tmp/elsewhere.db' AS other", "starts with 'ATTACH'"),
    ("DETACH DATABASE other", "starts with 'DETACH'"),
    ("VACUUM", "starts with 'VACUUM'"),
    ("GRANT SELECT ON orders TO public", "starts with 'GRANT'"),
    ("COPY orders TO '/tmp/x'", "starts with 'COPY'"),
    ("CALL refresh()", "starts with 'CALL'"),
    ("EXEC sp_who", "starts with 'EXEC'"),
    ("BEGIN", "starts with 'BEGIN'"),
    ("WITH gone AS (DELETE FROM orders RETURNING *) SELECT * FROM gone", "contains DELETE"),
    ("WITH x AS (SELECT 1) INSERT INTO orders (id) SELECT 100", "contains INSERT"),
    ("EXPLAIN ANALYZE DELETE FROM orders", "contains DELETE"),
    ("SELECT * INTO backup FROM orders", "contains INTO"),
    ("SELECT * FROM orders FOR UPDATE", "contains UPDATE"),
    ("SELECT 1; DELETE FROM orders", "2 statements"),
    ("SELECT 1;\n-- harmless?\nDROP TABLE orders;", "2 statements"),
    ("SELECT 1 /* ; */ ; /* a comment hides nothing */ DROP TABLE orders", "2 statements"),
    ("/* SELECT */ DELETE FROM orders", "starts with 'DELETE'"),
    ("-- SELECT\nDELETE FROM orders", "starts with 'DELETE'"),
    ("SELECT 1 -- \n; DELETE FROM orders", "2 statements"),
    ("SELECT '\\'; DELETE FROM orders; --'", "backslash before a quote"),
    ("SELECT $$; DELETE FROM orders; $$", "dollar-quoted"),
    ("PRAGMA query_only = OFF", "changes a database setting"),
    ("PRAGMA journal_mode = DELETE", "contains DELETE"),
    ("PRAGMA writable_schema(1)", "not on the read-only list"),
    ("PRAGMA user_version(5)", "with an argument changes a setting"),
    ("SELECT load_extension('/tmp/evil.so')", "load_extension() has effects outside the query"),
    ("", "empty"),
    ("-- only a comment", "empty"),
])
def test_read_only_refuses_every_write_form(shop_db, query, message):
    before = _digest(shop_db)
    sql = tools_by_name(SQLTool(CONN_ID))["sql"]
    with pytest.raises(ValueError, match=re.escape(message)) as refused:
        sql(query)
    assert type(refused.value) is ValueError  # model code sees a ValueError it can catch by name
    assert _digest(shop_db) == before


@pytest.mark.parametrize("query", [
    "SELECT COUNT(*) AS n FROM orders",
    "select replace(name, 'a', 'A') AS name FROM customers ORDER BY id",
    "WITH big AS (SELECT * FROM orders WHERE total > 20) SELECT COUNT(*) AS n FROM big",
    "SELECT name FROM customers WHERE name = 'delete; drop table orders'",
    'SELECT "update" FROM (SELECT 1 AS "update")',
    "/* leading comment */ SELECT 1 AS one; -- and a trailing one",
    "EXPLAIN QUERY PLAN SELECT * FROM orders",
    "PRAGMA table_info(orders)",
    "VALUES (1), (2)",
])
def test_read_only_allows_reading(shop_db, query):
    assert isinstance(tools_by_name(SQLTool(CONN_ID))["sql"](query), list)


# -- SQLTool: read-only, the database's own guard --------------------------------------------------


@pytest.mark.parametrize(("statement", "refusal"), [
    ("INSERT INTO orders (id) VALUES (100)", "insert on 'orders' is not allowed: this connection is read-only"),
    ("UPDATE orders SET total = 0", "update on 'orders' is not allowed"),
    ("DELETE FROM orders", "delete on 'orders' is not allowed"),
    ("WITH gone AS (SELECT 1) DELETE FROM orders", "delete on 'orders' is not allowed"),
    ("DROP TABLE orders", "not allowed: this connection is read-only"),
    ("CREATE TABLE t (a)", "not allowed: this connection is read-only"),
    ("ATTACH DATABASE '{tmp}/elsewhere.db' AS other", "ATTACH, DETACH and VACUUM INTO"),
    ("VACUUM INTO '{tmp}/copy.db'", "ATTACH, DETACH and VACUUM INTO"),
    ("PRAGMA query_only = OFF", "PRAGMA query_only with a value is not allowed"),
    ("SELECT load_extension('{tmp}/evil.so')", "load_extension() is refused"),
])
def test_the_database_refuses_writes_the_statement_check_would_stop(shop_db, tmp_path, statement, refusal):
    """The statement check bypassed: ``_execute`` runs SQL with only the database-level guards."""
    before = _digest(shop_db)
    tool = SQLTool(CONN_ID)
    with pytest.raises(ValueError, match="the database refused the query: .*" + re.escape(refusal)):
        tool._execute(statement.format(tmp=tmp_path))
    assert _digest(shop_db) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shop.db"]  # no attached or vacuumed file appeared
    assert _count(shop_db, "orders") == 25


def test_sqlite_itself_refuses_writes_on_the_read_only_handle_without_the_authorizer(shop_db):
    """Under the authorizer is ``mode=ro`` + ``query_only``: SQLite's own refusal, with nothing of ours."""
    tool = SQLTool(CONN_ID)
    conn = tool._backend().connect(read_only=True, allowed=None, timeout=5, denials=[], timed_out=[False])
    try:
        conn.set_authorizer(None)
        with pytest.raises(sqlite3.OperationalError, match="attempt to write a readonly database"):
            conn.execute("DELETE FROM orders")
        conn.execute("PRAGMA query_only = OFF")  # even with query_only off, the handle is mode=ro
        with pytest.raises(sqlite3.OperationalError, match="attempt to write a readonly database"):
            conn.execute("INSERT INTO customers VALUES (3, 'initech')")
    finally:
        conn.close()
    assert _count(shop_db, "orders") == 25 and _count(shop_db, "customers") == 2


def test_long_queries_are_stopped_at_the_timeout(shop_db):
    sql = tools_by_name(SQLTool(CONN_ID, timeout=0.001))["sql"]
    with pytest.raises(ValueError, match="longer than the 0.001 s timeout"):
        sql("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT COUNT(*) FROM n")


# -- SQLTool: allowed_tables --------------------------------------------------------------------------


def test_allowed_tables_scope_queries_listing_and_describe(shop_db):
    tool = SQLTool(CONN_ID, allowed_tables=["orders", "Customers"])
    tools = tools_by_name(tool)
    assert tools["list_tables"]() == ["Customers", "orders"]
    assert tools["sql"]("SELECT c.name, COUNT(*) AS n FROM orders o JOIN customers c ON c.id = o.customer_id "
                        "GROUP BY c.name ORDER BY c.name") == [{"name": "acme", "n": 15}, {"name": "globex", "n": 10}]
    for query in ("SELECT * FROM secret",
                  "SELECT * FROM orders, secret",
                  "SELECT (SELECT api_key FROM secret) AS k FROM orders",
                  "WITH orders AS (SELECT 1) SELECT * FROM orders, (SELECT * FROM secret) s",
                  "SELECT * FROM sqlite_master",
                  "SELECT * FROM order_totals",
                  "PRAGMA table_info(secret)"):
        with pytest.raises(ValueError, match="table '(secret|sqlite_master|order_totals)' is not one this SQL tool "
                                             "may use; the allowed tables are: customers, orders"):
            tools["sql"](query)
    with pytest.raises(ValueError, match="not one this tool may use"):
        tools["describe"]("secret")
    assert [c["name"] for c in tools["describe"]("customers")] == ["id", "name"]


def test_a_cte_named_like_an_allowed_table_cannot_smuggle_a_read(shop_db):
    sql = tools_by_name(SQLTool(CONN_ID, allowed_tables=["orders"]))["sql"]
    with pytest.raises(ValueError, match="table 'secret' is not one"):
        sql("WITH orders AS (SELECT api_key FROM secret) SELECT * FROM orders")


def test_allowed_tables_are_enforced_by_sqlite_too(shop_db):
    """With the parser bypassed, SQLite's authorizer still refuses reading other tables (views included)."""
    tool = SQLTool(CONN_ID, allowed_tables=["orders", "customers"])
    for statement in ("SELECT * FROM secret", "SELECT COUNT(*) FROM secret", "SELECT * FROM order_totals",
                      "SELECT name FROM sqlite_master"):
        with pytest.raises(ValueError, match="the database refused the query: reading table"):
            tool._execute(statement)
    assert tool._execute("SELECT COUNT(*) FROM orders")[1] == [(25,)]


# -- SQLTool: read_only=False ---------------------------------------------------------------------------


def test_write_mode_runs_one_statement_and_commits(shop_db, tmp_path):
    sql = tools_by_name(SQLTool(CONN_ID, read_only=False))["sql"]
    assert sql("INSERT INTO customers VALUES (3, 'initech')") == [{"rows_affected": 1}]
    assert _count(shop_db, "customers") == 3
    assert sql("UPDATE orders SET note = 'checked' WHERE customer_id = 2") == [{"rows_affected": 10}]
    assert sql("DELETE FROM customers WHERE id = 3 RETURNING name") == [{"name": "initech"}]
    with pytest.raises(ValueError, match="2 statements"):
        sql("DELETE FROM orders; DELETE FROM customers")
    with pytest.raises(ValueError, match="reaches files on the database host"):
        sql(f"ATTACH DATABASE '{tmp_path}/other.db' AS other")
    assert _count(shop_db, "orders") == 25


# -- the generic DbApiHook path (any SQL connection) -------------------------------------------------------


def test_generic_dbapi_hook_path_rolls_back_a_write_the_check_would_stop(tmp_path, monkeypatch):
    pytest.importorskip("airflow.providers.sqlite.hooks.sqlite")
    from airflow.providers.sqlite.hooks.sqlite import SqliteHook

    from airflow_codeagent.tools.sql import _DbApiBackend

    path = tmp_path / "generic.db"
    conn = sqlite3.connect(path)
    conn.executescript("CREATE TABLE t (a INTEGER); INSERT INTO t VALUES (1);")
    conn.commit()
    conn.close()
    monkeypatch.setenv(_conn_env("codeagent_generic_sqlite"), json.dumps({"conn_type": "sqlite", "host": str(path)}))
    tool = SQLTool("codeagent_generic_sqlite", max_rows=1)
    tool._backend_instance = _DbApiBackend(SqliteHook(sqlite_conn_id="codeagent_generic_sqlite"), "generic")

    assert tool.query("SELECT a FROM t") == [{"a": 1}]
    assert tool._execute("INSERT INTO t VALUES (2)")[0] == []  # the driver ran it ...
    assert _count(path, "t") == 1  # ... and the read-only transaction was rolled back
    with pytest.raises(ValueError, match="starts with 'INSERT'"):
        tool.query("INSERT INTO t VALUES (3)")
    assert tool.list_tables() == ["t"]
    assert [c["name"] for c in tool.describe("t")] == ["a"]


# -- ObjectStorageTool ------------------------------------------------------------------------------------


@pytest.fixture
def storage(tmp_path) -> Path:
    base = tmp_path / "base"
    (base / "2024").mkdir(parents=True)
    (base / "2024" / "orders.csv").write_text("id,total\n" + "".join(f"{i},{i * 1.5}\n" for i in range(1, 11)))
    (base / "2024" / "orders.tsv").write_text("id\ttotal\n1\t1.5\n")
    (base / "events.jsonl").write_text('{"id": 1, "kind": "click"}\n\n{"id": 2, "kind": "view"}\n')
    (base / "records.json").write_text(json.dumps([{"id": 1}, {"id": 2}, 3]))
    (base / "object.json").write_text(json.dumps({"not": "a list"}))
    (base / "notes.md").write_text("# Notes\n" + "line\n" * 100)
    with gzip.open(base / "orders.csv.gz", "wt") as f:
        f.write("id,total\n1,2.5\n")
    (tmp_path / "outside.txt").write_text(CANARY)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "x.txt").write_text(CANARY)
    (base / "leak.txt").symlink_to(tmp_path / "outside.txt")
    (base / "leakdir").symlink_to(tmp_path / "outside")
    (base / "same").symlink_to(base / "2024")
    return base


def _storage_tools(base: Path, **kwargs) -> dict:
    return tools_by_name(ObjectStorageTool(f"file://{base}/", **kwargs))


def test_storage_tools_list_read_text_and_tables(storage):
    tools = _storage_tools(storage)
    assert list(tools) == ["ls", "read_text", "read_table"]
    listing = tools["ls"]()
    assert [e["path"] for e in listing] == ["2024", "events.jsonl", "notes.md", "object.json", "orders.csv.gz",
                                            "records.json", "same"]  # links leaving base are not listed
    assert {"path": "2024", "type": "directory"} in listing and {"path": "same", "type": "directory"} in listing
    csv_size = (storage / "2024" / "orders.csv").stat().st_size
    assert tools["ls"]("2024") == [{"path": "2024/orders.csv", "type": "file", "size": csv_size},
                                   {"path": "2024/orders.tsv", "type": "file", "size": 15}]
    assert tools["ls"]("./same/") == [{"path": "same/orders.csv", "type": "file", "size": csv_size},
                                      {"path": "same/orders.tsv", "type": "file", "size": 15}]
    assert tools["read_text"]("notes.md").startswith("# Notes\nline\n")
    cut = tools["read_text"]("notes.md", max_chars=12)
    assert cut.startswith("# Notes\nline\n[... truncated: showing the first 12 characters of a 508-byte file")

    rows = tools["read_table"]("2024/orders.csv", max_rows=3)
    assert rows[:3] == [{"id": "1", "total": "1.5"}, {"id": "2", "total": "3.0"}, {"id": "3", "total": "4.5"}]
    assert TRUNCATED_KEY in rows[3] and "showing the first 3 rows" in rows[3][TRUNCATED_KEY]
    assert tools["read_table"]("2024/orders.tsv") == [{"id": "1", "total": "1.5"}]
    assert tools["read_table"]("events.jsonl") == [{"id": 1, "kind": "click"}, {"id": 2, "kind": "view"}]
    assert tools["read_table"]("records.json") == [{"id": 1}, {"id": 2}, {"value": 3}]
    assert tools["read_table"]("orders.csv.gz") == [{"id": "1", "total": "2.5"}]
    assert tools["read_table"]("notes.md", format="csv")[0] == {"# Notes": "line"}
    with pytest.raises(ValueError, match="one object, not a list of records"):
        tools["read_table"]("object.json")
    with pytest.raises(ValueError, match="cannot tell the format"):
        tools["read_table"]("notes.md")
    with pytest.raises(FileNotFoundError, match="no file 'missing.csv'"):
        tools["read_table"]("missing.csv")
    with pytest.raises(IsADirectoryError, match="ls"):
        tools["read_text"]("2024")


def test_read_table_reads_parquet_when_pyarrow_is_installed(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": [1, 2, 3], "day": [datetime.date(2024, 3, d) for d in (1, 2, 3)]}),
                   tmp_path / "t.parquet")
    rows = _storage_tools(tmp_path, max_rows=2)["read_table"]("t.parquet")
    assert rows[:2] == [{"id": 1, "day": "2024-03-01"}, {"id": 2, "day": "2024-03-02"}]
    assert TRUNCATED_KEY in rows[2]


@pytest.mark.parametrize(("path", "message"), [
    ("../outside.txt", "goes up with '..'"),
    ("2024/../../outside.txt", "goes up with '..'"),
    ("..\\outside.txt", "goes up with '..'"),
    ("/etc/passwd", "is absolute"),
    ("\\etc\\passwd", "is absolute"),
    ("~/.ssh/id_rsa", "is absolute"),
    ("file:///etc/passwd", "is a URL"),
    ("s3://bucket/key", "is a URL"),
    ("leak.txt", "through a symbolic link"),
    ("leakdir/x.txt", "through a symbolic link"),
])
def test_paths_cannot_leave_the_base(storage, path, message):
    tools = _storage_tools(storage, write=True)
    for name, args in (("read_text", (path,)), ("read_table", (path,)), ("write_text", (path, "overwritten"))):
        with pytest.raises(ValueError, match=message) as refused:
            tools[name](*args)
        assert type(refused.value) is ValueError  # what model code can catch by name
    assert (storage.parent / "outside.txt").read_text() == CANARY
    assert (storage.parent / "outside" / "x.txt").read_text() == CANARY
    with pytest.raises(ValueError):
        tools["ls"]("leakdir" if "leak" in path else path)
    with pytest.raises(PathRefused):  # the Python API keeps the specific type
        ObjectStorageTool(f"file://{storage}").read_text(path)


def test_write_text_only_with_write_and_only_under_base(storage):
    assert "write_text" not in _storage_tools(storage)
    tool = ObjectStorageTool(f"file://{storage}", write=True, prefix="reports")
    tools = tools_by_name(tool)
    assert [t.side_effect for t in tools.values()] == [False, False, False, True]
    assert tools["reports_write_text"]("out/new/summary.md", "# Done\n") == {
        "path": "out/new/summary.md", "characters": 7}
    assert (storage / "out" / "new" / "summary.md").read_text() == "# Done\n"
    assert tools["reports_write_text"]("same/through-inner-link.txt", "ok")["path"] == "same/through-inner-link.txt"
    assert (storage / "2024" / "through-inner-link.txt").read_text() == "ok"
    with pytest.raises(IsADirectoryError):
        tools["reports_write_text"]("2024", "x")
    with pytest.raises(ValueError, match="at most 10"):
        tools_by_name(ObjectStorageTool(f"file://{storage}", write=True, max_write_chars=10))["write_text"]("a", "x" * 11)


def test_an_object_storage_path_base_is_accepted_and_resolved_lazily(storage):
    from airflow.sdk import ObjectStoragePath

    tools = tools_by_name(ObjectStorageTool(ObjectStoragePath(f"file://{storage}")))
    assert tools["read_table"]("events.jsonl")[0] == {"id": 1, "kind": "click"}
    lazy = ObjectStorageTool("file:///no/such/place/")
    assert lazy._root is None and len(lazy.tools()) == 3 and lazy._root is None


# -- hook_tool -------------------------------------------------------------------------------------------


from airflow.sdk import BaseHook  # noqa: E402


class InventoryHook(BaseHook):
    """A hook as a provider would write one (reST docstrings)."""

    conn_name_attr = "inventory_conn_id"
    conn_type = "inventory"
    hook_name = "Inventory"

    def __init__(self, inventory_conn_id: str = "inventory_default", **kwargs) -> None:
        super().__init__(**kwargs)
        self.connection = self.get_connection(inventory_conn_id)

    def get_conn(self):
        """Return the client."""
        return object()

    def stock(self, sku: str, warehouses: list[str] | None = None, *, include_reserved: bool = False) -> dict:
        """
        Return the stock of one product.

        Counts every warehouse unless some are named.

        :param sku: the product code, e.g. ``"A-17"``.
        :param warehouses: warehouse codes to count; all when omitted.
            A second line of description.
        :param include_reserved: count reserved items too.
        :return: ``{"sku": ..., "count": ...}``.
        """
        count = 7 + (3 if include_reserved else 0)
        return {"sku": sku, "count": count, "warehouses": warehouses or ["all"],
                "checked": datetime.date(2024, 3, 1), "login": self.connection.login}

    def restock(self, sku: str, amount: int) -> str:
        """Order more of a product.

        Args:
            sku: the product code.
            amount: how many to order.
        """
        return f"ordered {amount} of {sku}"

    def client(self, name: str):
        """Return a client object (not data)."""
        return self.get_conn()

    def undocumented(self, sku: str) -> int:
        return 1

    def _private(self) -> int:
        """Private."""
        return 0

    @property
    def region(self) -> str:
        """The region."""
        return "eu"


@pytest.fixture
def inventory_conn(monkeypatch):
    monkeypatch.setenv(_conn_env("codeagent_inventory"), json.dumps({
        "conn_type": "inventory", "login": "inventory-user", "password": CANARY}))
    return "codeagent_inventory"


def test_hook_methods_become_tools_with_their_signatures_and_docstrings(inventory_conn):
    kit = hook_tool(inventory_conn, ["stock", "restock"], hook_class=InventoryHook, prefix="inv",
                    side_effect_methods=["restock"])
    tools = tools_by_name(kit)
    stock = tools["inv_stock"]
    text = stock.signature_text()
    assert text.startswith("def inv_stock(sku: str, warehouses: list[str] | None = None, "
                           "include_reserved: bool = False) -> dict:")
    assert "Return the stock of one product." in text and "Counts every warehouse unless some are named." in text
    assert "sku: the product code, e.g. ``\"A-17\"``." in text
    assert "warehouses: warehouse codes to count; all when omitted. A second line of description." in text
    assert "Returns: ``{\"sku\": ..., \"count\": ...}``." in text
    assert stock.json_schema()["function"]["parameters"]["required"] == ["sku"]
    assert [t.side_effect for t in tools.values()] == [False, True]
    assert stock("A-17", include_reserved=True) == {"sku": "A-17", "count": 10, "warehouses": ["all"],
                                                    "checked": "2024-03-01", "login": "inventory-user"}
    assert tools["inv_restock"]("A-17", 5) == "ordered 5 of A-17"
    with pytest.raises(TypeError, match=r"inv_stock\(sku: str.*missing a required argument: 'sku'"):
        stock()


@pytest.mark.parametrize(("methods", "message"), [
    (["undocumented"], "InventoryHook.undocumented has no docstring"),
    (["_private"], "is private"),
    (["get_conn"], "hands out a client, a connection or credentials"),
    (["region"], "is not a method"),
    (["missing"], "has no method 'missing'"),
    ("stock", "non-empty list"),
])
def test_hook_tool_refuses_methods_it_cannot_offer(methods, message):
    with pytest.raises(HookToolError, match=message):
        hook_tool("codeagent_inventory", methods, hook_class=InventoryHook)


def test_a_hook_result_that_is_not_data_is_refused_not_stringified(inventory_conn):
    client = tools_by_name(hook_tool(inventory_conn, ["client"], hook_class=InventoryHook))["client"]
    with pytest.raises(TypeError, match="client\\(\\) returned something that is not plain data"):
        client("x")


def test_hook_class_resolved_from_the_connection(tmp_path, monkeypatch):
    monkeypatch.setenv(_conn_env("codeagent_fs"), json.dumps({
        "conn_type": "fs", "password": CANARY, "extra": {"path": str(tmp_path)}}))
    tools = tools_by_name(hook_tool("codeagent_fs", ["get_path", "test_connection"]))
    assert tools["get_path"].signature_text().startswith("def get_path() -> str:")
    assert "Returns: the path." in tools["get_path"].signature_text()
    assert tools["get_path"]() == str(tmp_path)
    assert tools["test_connection"]() == [True, f"Path {tmp_path} is existing."]
    by_path = hook_tool("codeagent_fs", ["get_path"],
                        hook_class="airflow.providers.standard.hooks.filesystem.FSHook")
    assert by_path.tools()[0]() == str(tmp_path)


def test_google_docstring_rewrites_rest_fields():
    doc = ("Run a query.\n\n:param sql: the statement, see :class:`~airflow.models.Connection`.\n"
           ":type sql: str\n:param parameters: values\n    for placeholders.\n:return: rows.\n:rtype: list")
    assert google_docstring(doc) == ("Run a query.\n\nArgs:\n    sql: the statement, see Connection.\n"
                                     "    parameters: values for placeholders.\n\nReturns:\n    rows.\n")
    assert google_docstring("Already fine.\n\nArgs:\n    x: y") == "Already fine.\n\nArgs:\n    x: y"


# -- credentials never cross ---------------------------------------------------------------------------


MODEL_CODE = """
rows = sql("SELECT name FROM customers ORDER BY id")
tables = list_tables()
columns = describe("customers")
stock = inv_stock("A-17")
listing = ls()
text = read_text("notes.md")
functions = [sql, list_tables, inv_stock, ls]
print(rows, tables, columns, stock, listing, text, functions)
try:
    sql("SELECT * FROM customers; SELECT 1")
except ValueError as error:
    refusal = str(error)
"""


@pytest.mark.parametrize("sandbox", ["restricted", "isolated"])
def test_the_connection_password_never_reaches_the_sandbox(shop_db, storage, inventory_conn, sandbox):
    with sandbox_with(SQLTool(CONN_ID), hook_tool(inventory_conn, ["stock"], hook_class=InventoryHook, prefix="inv"),
                      ObjectStorageTool(f"file://{storage}"), sandbox=sandbox, step_timeout_s=30) as executor:
        observation = executor.run(MODEL_CODE)
        assert observation.error is None, observation.error
        assert "acme" in observation.stdout and "inventory-user" in observation.stdout
        assert [c.name for c in observation.tool_calls] == ["sql", "list_tables", "describe", "inv_stock", "ls",
                                                            "read_text", "sql"]
        variables = executor.variables()
        assert {"rows", "tables", "columns", "stock", "listing", "text", "refusal"} <= set(variables)
        assert "2 statements" in str(variables["refusal"])
        everything = repr(variables) + observation.stdout + repr(observation.tool_calls)
        assert CANARY not in everything
        leak = executor.run("print(sql.__closure__)")  # the sandbox refuses the way to host objects
        assert leak.error is not None and CANARY not in repr(leak)


# -- end to end: an agent in a DAG ------------------------------------------------------------------------


def _code(body: str) -> str:
    return f"Thought: next.\n```python\n{body}\n```"


@pytest.fixture(scope="module")
def model_server():
    from airflow_codeagent.testing.scripted_llm import ScriptedLLMServer

    server = ScriptedLLMServer().start()
    previous = os.environ.get("AIRFLOW_CONN_LITELLM_DEFAULT")
    os.environ["AIRFLOW_CONN_LITELLM_DEFAULT"] = json.dumps({
        "conn_type": "litellm", "host": server.api_base, "password": "sk-model-key-4242",
        "extra": {"model": "openai/scripted-model", "temperature": 0}})
    yield server
    server.stop()
    if previous is None:
        del os.environ["AIRFLOW_CONN_LITELLM_DEFAULT"]
    else:
        os.environ["AIRFLOW_CONN_LITELLM_DEFAULT"] = previous


QUERIES = [
    "SELECT c.name, COUNT(*) AS n FROM orders o JOIN customers c ON c.id = o.customer_id GROUP BY c.name "
    "ORDER BY c.name",
    "SELECT id FROM orders ORDER BY id",
    "DELETE FROM orders",
    "SELECT api_key FROM secret",
]


@pytest.mark.integration
@pytest.mark.parametrize("sandbox", ["isolated", "restricted"])
def test_an_agent_queries_sqlite_through_the_operator(model_server, shop_db, test_dags, xcoms, capfd, sandbox):
    model_server.reset([
        _code(f"tables = list_tables()\ncolumns = describe('orders')\ncounts = sql({QUERIES[0]!r})\n"
              "print(tables, len(columns), counts)"),
        _code(f"page = sql({QUERIES[1]!r})\nprint(len(page), page[-1])\n"
              f"for q in [{QUERIES[2]!r}, {QUERIES[3]!r}]:\n"
              "    try:\n        sql(q)\n    except ValueError as e:\n        print('refused:', e)"),
        _code("final_answer({row['name']: row['n'] for row in counts})"),
    ])
    dag = test_dags.get_dag(f"test_sql_tool_{sandbox}")
    dag_run = dag.test(logical_date=LOGICAL_DATE)

    assert {ti.task_id: ti.state for ti in dag_run.get_task_instances()} == {"agent": "success"}
    values = xcoms(dag_run.dag_id, dag_run.run_id)
    assert values[("agent", "return_value", -1)] == {"acme": 15, "globex": 10}
    trace = values[("agent", "codeagent_trace", -1)]
    assert trace["tools"] == ["sql", "list_tables", "describe"]
    calls = [[(c["name"], c["arguments"], c["error"]) for c in s["tool_calls"]] for s in trace["steps"]]
    assert calls[0] == [("list_tables", "", None), ("describe", "'orders'", None), ("sql", repr(QUERIES[0]), None)]
    assert [(name, arguments) for name, arguments, _ in calls[1]] == [("sql", repr(q)) for q in QUERIES[1:]]
    assert calls[1][0][2] is None
    assert "starts with 'DELETE'" in calls[1][1][2]
    assert "table 'secret' is not one this SQL tool may use" in calls[1][2][2]
    assert trace["steps"][0]["stdout"] == ("['customers', 'orders'] 6 [{'name': 'acme', 'n': 15}, "
                                           "{'name': 'globex', 'n': 10}]\n")
    assert trace["steps"][1]["stdout"].startswith(
        "4 {'_truncated': 'showing the first 3 rows; the query returned more.")
    assert _count(shop_db, "orders") == 25

    system_prompt = model_server.requests[0].messages[0]["content"]
    assert "def sql(query: str) -> list[dict]:" in system_prompt and "read-only" in system_prompt
    output = capfd.readouterr()
    logs = "".join(p.read_text(errors="replace") for p in Path(os.environ["AIRFLOW_HOME"]).rglob("*.log"))
    for text in (json.dumps(trace), output.out, output.err, logs, json.dumps([r.body for r in model_server.requests])):
        assert CANARY not in text
