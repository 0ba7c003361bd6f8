"""SQLTool on a real MySQL server (MariaDB): the read-only promise, tested where the database keeps it.

A throwaway MariaDB server (``mysql_server.py``: ``mariadb-install-db`` in a temp
dir, 127.0.0.1, a free port) holds a ``shop`` database on which the user
``agent``, whose password is a canary, has every privilege. The Airflow
connection (``AIRFLOW_CONN_*`` in JSON form, conn_type ``mysql``) logs in as that
user: every write below is one its grants allow, so what stops it is the tool,
and for the writes the statement check cannot see (a stored function that
INSERTs, also into a non-transactional MyISAM table, ``NEXT VALUE FOR`` a
sequence) the ``START TRANSACTION READ ONLY`` SQLTool runs each query in. A
separate mysqlclient connection checks afterwards that nothing changed. Nothing
is mocked; each case runs with both drivers ``MySqlHook`` supports, mysqlclient
(its default) and mysql-connector-python (connection extra
``{"client": "mysql-connector-python"}``).

No MariaDB binaries: skipped, or failed when ``CI`` is set (``.ci/run`` installs
Debian's ``mariadb-server``).
"""

from __future__ import annotations

import importlib
import json
import os
import re

import pytest

from airflow_codeagent.tools.sql import TRUNCATED_KEY, SQLTool
from tests.integration.mysql_server import MariaDBServer, MySQLUnavailable
from tests.integration.toolkits import sandbox_with, tools_by_name

CANARY = "canary-my-pw-9d41b7-DO-NOT-LEAK"
USER = "agent"
DATABASE = "shop"
CONN_ID = "codeagent_tools_mysql"
READ_ONLY_REFUSAL = r"the database refused the query: \w+: .*Cannot execute statement in a READ ONLY transaction"

SCHEMA = [
    "CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(40) NOT NULL) ENGINE=InnoDB",
    "CREATE TABLE orders (id INT AUTO_INCREMENT PRIMARY KEY, customer_id INT, total DECIMAL(10, 2), "
    "placed DATE, receipt BLOB, note TEXT, FOREIGN KEY (customer_id) REFERENCES customers (id)) ENGINE=InnoDB",
    "CREATE TABLE secret (api_key TEXT) ENGINE=InnoDB",
    # Not transactional: a rollback cannot undo a write here, only the READ ONLY transaction stops it.
    "CREATE TABLE audit_log (id INT AUTO_INCREMENT PRIMARY KEY, what VARCHAR(40)) ENGINE=MyISAM",
    "CREATE VIEW order_totals AS SELECT customer_id, SUM(total) AS total FROM orders GROUP BY customer_id",
    "CREATE SEQUENCE invoice_no START WITH 1000",
    "INSERT INTO customers VALUES (1, 'acme'), (2, 'globex')",
    "INSERT INTO secret VALUES ('sk-live-secret-table')",
    "INSERT INTO audit_log (what) VALUES ('created')",
    # Writes hidden from the statement check: all it sees is SELECT some_function(...).
    "CREATE FUNCTION add_order(amount DECIMAL(10, 2)) RETURNS INT MODIFIES SQL DATA "
    "BEGIN INSERT INTO orders (customer_id, total) VALUES (1, amount); RETURN 1; END",
    "CREATE FUNCTION wipe_orders() RETURNS INT MODIFIES SQL DATA BEGIN DELETE FROM orders; RETURN 1; END",
    "CREATE FUNCTION rename_customer() RETURNS INT MODIFIES SQL DATA "
    "BEGIN UPDATE customers SET name = 'renamed' WHERE id = 1; RETURN 1; END",
    "CREATE FUNCTION log_visit() RETURNS INT MODIFIES SQL DATA "
    "BEGIN INSERT INTO audit_log (what) VALUES ('visit'); RETURN 1; END",
    "CREATE FUNCTION next_invoice() RETURNS BIGINT MODIFIES SQL DATA RETURN NEXTVAL(invoice_no)",
    "CREATE FUNCTION make_read_write() RETURNS INT BEGIN SET SESSION tx_read_only = 0; RETURN 1; END",
    # A procedure may COMMIT, which ends the READ ONLY transaction: only the check's refusal of CALL stops it.
    "CREATE PROCEDURE wipe_orders_proc() BEGIN DELETE FROM orders; END",
    "CREATE PROCEDURE commit_then_log() BEGIN COMMIT; INSERT INTO audit_log (what) VALUES ('after commit'); END",
]


def _unavailable(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: failing instead of skipping)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def mysql():
    """A MariaDB server of its own for the session, with the ``shop`` database; removed at the end."""
    for module, package in (("MySQLdb", "mysqlclient"), ("mysql.connector", "mysql-connector-python"),
                            ("airflow.providers.mysql.hooks.mysql", "apache-airflow-providers-mysql")):
        try:
            importlib.import_module(module)
        except ImportError:
            _unavailable(f"{module} is not importable; install the test extra (pip install -e '.[test]'), "
                         f"which brings {package}")
    try:
        server = MariaDBServer()
    except MySQLUnavailable as exc:
        _unavailable(str(exc))
    try:
        server.start()
        server.sql(f"CREATE DATABASE {DATABASE}")
        server.sql("CREATE USER %s@'%%' IDENTIFIED BY %s", USER, CANARY)
        server.sql(f"GRANT ALL PRIVILEGES ON {DATABASE}.* TO %s@'%%'", USER)
        conn = _direct_connection(server)
        try:
            cursor = conn.cursor()
            for statement in SCHEMA:
                cursor.execute(statement)
            cursor.executemany(
                "INSERT INTO orders (customer_id, total, placed, receipt) VALUES (%s, %s, %s, %s)",
                [(1 if i <= 15 else 2, f"{i * 1.25:.2f}", f"2024-03-{i:02d}", b"\x00\x01\x02")
                 for i in range(1, 26)])
        finally:
            conn.close()
        yield server
    finally:
        server.stop()


def _direct_connection(server: MariaDBServer):
    """mysqlclient as ``agent`` over TCP with the password (the Airflow connection's login), autocommit."""
    import MySQLdb

    conn = MySQLdb.connect(host=server.host, port=server.port, user=USER, passwd=CANARY, database=DATABASE)
    conn.autocommit(True)
    return conn


def _state(server: MariaDBServer) -> dict:
    """What any write would change: rows (InnoDB and MyISAM), tables, the sequence, routines."""
    conn = _direct_connection(server)
    try:
        cursor = conn.cursor()

        def one(query: str):
            cursor.execute(query)
            return cursor.fetchone()

        return {
            "orders": one("SELECT COUNT(*), SUM(total), COUNT(note) FROM orders"),
            "customers": one("SELECT COUNT(*), GROUP_CONCAT(name ORDER BY id) FROM customers"),
            "secret": one("SELECT COUNT(*) FROM secret"),
            "audit_log": one("SELECT COUNT(*), GROUP_CONCAT(what ORDER BY id) FROM audit_log"),
            "invoice_no": one("SELECT next_not_cached_value FROM invoice_no"),
            "tables": one("SELECT GROUP_CONCAT(table_name ORDER BY table_name) FROM information_schema.tables "
                          f"WHERE table_schema = '{DATABASE}'"),
            "routines": one("SELECT COUNT(*) FROM information_schema.routines "
                            f"WHERE routine_schema = '{DATABASE}'"),
        }
    finally:
        conn.close()


@pytest.fixture
def unchanged(mysql):
    """Asserts at the end of the test that the database is as the fixture left it."""
    before = _state(mysql)
    yield
    assert _state(mysql) == before


CLIENTS = {"mysqlclient": "MySQLdb", "mysql-connector-python": "mysql"}  # extra "client" -> driver package


def _connection(server: MariaDBServer, client: str | None = None, **overrides) -> str:
    conn = {"conn_type": "mysql", "host": server.host, "port": server.port, "login": USER,
            "password": CANARY, "schema": DATABASE}
    if client:
        conn["extra"] = json.dumps({"client": client})
    conn.update(overrides)
    return json.dumps(conn)


@pytest.fixture(params=list(CLIENTS))
def my_conn(request, mysql, monkeypatch) -> str:
    """CONN_ID as an Airflow connection of type mysql, with each driver MySqlHook supports."""
    client = request.param
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}",
                       _connection(mysql, None if client == "mysqlclient" else client))
    return client


@pytest.fixture
def default_my_conn(mysql, monkeypatch) -> None:
    """CONN_ID with MySqlHook's default driver (mysqlclient)."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", _connection(mysql))



# -- reading ----------------------------------------------------------------------------------------------------


def test_the_hook_runs_the_driver_asked_for(my_conn):
    tool = SQLTool(CONN_ID)
    conn = tool._backend().hook.get_conn()
    try:
        assert type(conn).__module__.split(".")[0] == CLIENTS[my_conn]
    finally:
        conn.close()
    assert tool._backend().dialect == "mysql"


def test_rows_come_back_as_plain_dicts(my_conn, unchanged):
    sql = tools_by_name(SQLTool(CONN_ID))["sql"]
    rows = sql("SELECT o.id, o.total, o.placed, o.receipt, o.note, c.name, c.id "
               "FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.id = 2")
    assert rows == [{"id": 2, "total": 2.5, "placed": "2024-03-02", "receipt": "<3 bytes>", "note": None,
                     "name": "acme", "id_2": 1}]
    assert json.loads(json.dumps(rows)) == rows
    assert sql("SELECT c.name, COUNT(*) AS n, SUM(o.total) AS total FROM orders o "
               "JOIN customers c ON c.id = o.customer_id GROUP BY c.name ORDER BY c.name") == [
        {"name": "acme", "n": 15, "total": 150.0}, {"name": "globex", "n": 10, "total": 256.25}]
    assert sql("SELECT CAST(12345678901234567890.123 AS DECIMAL(30, 3)) AS big, "
               "TIMESTAMP '2024-03-01 12:30:00' AS at, TIME '00:02:00' AS wait") == [
        {"big": "12345678901234567890.123", "at": "2024-03-01T12:30:00", "wait": 120.0}]
    assert sql("SELECT * FROM orders WHERE id < 0") == []
    assert sql("SELECT current_user() AS who, DATABASE() AS db") == [{"who": f"{USER}@%", "db": DATABASE}]


def test_rows_over_the_cap_end_with_a_marker(my_conn, unchanged):
    sql = tools_by_name(SQLTool(CONN_ID, max_rows=5))["sql"]
    rows = sql("SELECT id FROM orders ORDER BY id")
    assert rows[:5] == [{"id": i} for i in range(1, 6)]
    assert len(rows) == 6 and set(rows[5]) == {TRUNCATED_KEY}
    assert "showing the first 5 rows" in rows[5][TRUNCATED_KEY] and "LIMIT" in rows[5][TRUNCATED_KEY]
    assert sql("SELECT id FROM orders ORDER BY id LIMIT 5") == [{"id": i} for i in range(1, 6)]


def test_list_tables_and_describe(my_conn, unchanged):
    tools = tools_by_name(SQLTool(CONN_ID))
    assert tools["list_tables"]() == ["audit_log", "customers", "order_totals", "orders", "secret"]
    columns = tools["describe"]("orders")
    assert [c["name"] for c in columns] == ["id", "customer_id", "total", "placed", "receipt", "note"]
    assert columns[0] == {"name": "id", "type": "INTEGER", "nullable": False, "primary_key": True}
    assert columns[1] == {"name": "customer_id", "type": "INTEGER", "nullable": True, "primary_key": False}
    assert [c["type"] for c in columns[2:]] == ["DECIMAL(10, 2)", "DATE", "BLOB", "TEXT"]
    assert tools["describe"](f"{DATABASE}.customers") == [
        {"name": "id", "type": "INTEGER", "nullable": False, "primary_key": True},
        {"name": "name", "type": "VARCHAR(40)", "nullable": False, "primary_key": False}]
    assert [c["name"] for c in tools["describe"]("order_totals")] == ["customer_id", "total"]
    with pytest.raises(ValueError, match="no table or view named 'nope'; list_tables"):
        tools["describe"]("nope")
    assert tools_by_name(SQLTool(CONN_ID, schema=DATABASE))["list_tables"]() == tools["list_tables"]()


def test_allowed_tables_scope_listing_and_queries(my_conn, unchanged):
    tools = tools_by_name(SQLTool(CONN_ID, allowed_tables=["orders", "customers"]))
    assert tools["list_tables"]() == ["customers", "orders"]
    assert tools["sql"]("SELECT COUNT(*) AS n FROM orders") == [{"n": 25}]
    with pytest.raises(ValueError, match="table 'secret' is not one this SQL tool may use"):
        tools["sql"]("SELECT * FROM orders, secret")
    with pytest.raises(ValueError, match="not one this tool may use"):
        tools["describe"]("secret")


def test_code_in_mysql_executable_comments_never_runs(my_conn, unchanged):
    """MySQL and MariaDB run what is inside ``/*! ... */``; the tool removes comments before the query
    runs, so the database runs what the check saw (``--1`` too is a comment to the check, not to MySQL)."""
    tools = tools_by_name(SQLTool(CONN_ID, allowed_tables=["orders"]))
    assert tools["sql"]("SELECT COUNT(*) AS n FROM orders /*!, (SELECT api_key FROM secret) AS k */") == [
        {"n": 25}]
    assert tools["sql"]("SELECT 1 AS a /*M!100000 , 2 AS b */") == [{"a": 1}]
    assert tools["sql"]("/*! DELETE FROM orders */ SELECT 1 AS a") == [{"a": 1}]
    assert tools["sql"]("SELECT 1 --1\n AS a") == [{"a": 1}]
    with pytest.raises(ValueError, match="'#' starts a comment in MySQL"):
        tools["sql"]("SELECT 1 # ; DELETE FROM orders")


def test_show_describe_and_explain_read(my_conn, unchanged):
    sql = tools_by_name(SQLTool(CONN_ID))["sql"]
    assert {"Tables_in_shop": "orders"} in sql("SHOW TABLES")
    assert [row["Field"] for row in sql("DESCRIBE customers")] == ["id", "name"]
    assert sql("EXPLAIN SELECT * FROM orders WHERE id = 1")[0]["table"] == "orders"


def test_long_queries_are_stopped_by_the_timeout(my_conn):
    """MariaDB has no MAX_EXECUTION_TIME: the tool sets its max_statement_time instead."""
    sql = tools_by_name(SQLTool(CONN_ID, timeout=0.3))["sql"]
    with pytest.raises(ValueError, match="max_statement_time"):
        sql("SELECT COUNT(*) FROM orders a, orders b, orders c, orders d, orders e, orders f WHERE SLEEP(0.01) = 0")


# -- read-only: the statement check -------------------------------------------------------------------------------


@pytest.mark.parametrize(("query", "message"), [
    ("INSERT INTO orders (customer_id) VALUES (1)", "starts with 'INSERT'"),
    ("INSERT INTO customers VALUES (1, 'x') ON DUPLICATE KEY UPDATE name = 'x'", "starts with 'INSERT'"),
    ("REPLACE INTO customers VALUES (1, 'x')", "starts with 'REPLACE'"),
    ("UPDATE orders SET total = 0", "starts with 'UPDATE'"),
    ("DELETE FROM orders", "starts with 'DELETE'"),
    ("DELETE o FROM orders o JOIN customers c ON c.id = o.customer_id", "starts with 'DELETE'"),
    ("DROP TABLE secret", "starts with 'DROP'"),
    ("CREATE TABLE t (a int)", "starts with 'CREATE'"),
    ("CREATE TEMPORARY TABLE t (a int)", "starts with 'CREATE'"),
    ("TRUNCATE orders", "starts with 'TRUNCATE'"),
    ("ALTER TABLE orders ADD COLUMN x int", "starts with 'ALTER'"),
    ("RENAME TABLE secret TO gone", "starts with 'RENAME'"),
    ("CALL wipe_orders_proc()", "starts with 'CALL'"),
    ("CALL commit_then_log()", "starts with 'CALL'"),
    ("DO add_order(1)", "starts with 'DO'"),
    ("HANDLER orders OPEN", "starts with 'HANDLER'"),
    ("LOAD DATA INFILE 'orders.csv' INTO TABLE orders", "starts with 'LOAD'"),
    ("SET autocommit = 1", "starts with 'SET'"),
    ("SET SESSION TRANSACTION READ WRITE", "starts with 'SET'"),
    ("START TRANSACTION READ WRITE", "starts with 'START'"),
    ("COMMIT", "starts with 'COMMIT'"),
    ("LOCK TABLES orders WRITE", "starts with 'LOCK'"),
    ("PREPARE s FROM 'DELETE FROM orders'", "starts with 'PREPARE'"),
    ("WITH x AS (SELECT 1) DELETE FROM orders", "contains DELETE"),
    ("EXPLAIN DELETE FROM orders", "contains DELETE"),
    ("SELECT * FROM orders FOR UPDATE", "contains UPDATE"),
    ("SELECT * FROM orders LOCK IN SHARE MODE", "contains LOCK"),
    ("SELECT * FROM orders INTO OUTFILE 'orders.csv'", "contains INTO"),
    ("SELECT COUNT(*) INTO @n FROM orders", "contains INTO"),
    ("SELECT 1; DELETE FROM orders", "2 statements"),
    ("SELECT 1 /* ; */ ; /* a comment hides nothing */ TRUNCATE orders", "2 statements"),
    ("/* SELECT */ DELETE FROM orders", "starts with 'DELETE'"),
    ("SELECT 'a\\'; DELETE FROM orders; -- '", "backslash before a quote"),
    ("SELECT NEXTVAL(invoice_no)", "NEXTVAL() has effects outside the query"),
    ("SELECT SETVAL(invoice_no, 5000)", "SETVAL() has effects outside the query"),
    ("SELECT LOAD_FILE('/etc/passwd')", "LOAD_FILE() has effects outside the query"),
])
def test_read_only_refuses_every_write_form(my_conn, unchanged, query, message):
    sql = tools_by_name(SQLTool(CONN_ID))["sql"]
    with pytest.raises(ValueError, match=re.escape(message)) as refused:
        sql(query)
    assert type(refused.value) is ValueError


# -- read-only: the database's own guard ---------------------------------------------------------------------------


@pytest.mark.parametrize("statement", [
    "INSERT INTO orders (customer_id) VALUES (1)",
    "INSERT INTO customers VALUES (1, 'x') ON DUPLICATE KEY UPDATE name = 'x'",
    "REPLACE INTO customers VALUES (1, 'x')",
    "UPDATE orders SET total = 0",
    "DELETE FROM orders",
    "INSERT INTO audit_log (what) VALUES ('x')",  # MyISAM: refused too, not only rolled back
    "DO add_order(1)",
    "SELECT NEXTVAL(invoice_no)",
    "SELECT SETVAL(invoice_no, 5000)",
])
def test_the_database_refuses_writes_the_statement_check_would_stop(my_conn, unchanged, statement):
    """The statement check bypassed: ``_execute`` runs SQL with only the READ ONLY transaction."""
    with pytest.raises(ValueError, match=READ_ONLY_REFUSAL):
        SQLTool(CONN_ID)._execute(statement)


@pytest.mark.parametrize("query", [
    "SELECT add_order(1)",
    "SELECT add_order(99) AS n",
    "SELECT * FROM (SELECT add_order(5) AS n) AS x",
    "WITH x AS (SELECT add_order(5) AS n) SELECT n FROM x",
    "SELECT id, add_order(total) FROM orders WHERE id = 1",
    "SELECT wipe_orders()",
    "SELECT rename_customer()",
    "SELECT log_visit()",  # into the MyISAM table, which no rollback would undo
    "SELECT next_invoice() AS n",
    "SELECT NEXT VALUE FOR invoice_no",  # MariaDB's sequence syntax: no function call the check could see
])
def test_writes_the_statement_check_cannot_see_are_stopped_by_the_read_only_transaction(
        my_conn, unchanged, query):
    tool = SQLTool(CONN_ID)
    assert tool.check(query).text  # the check lets it through: it cannot see into functions
    with pytest.raises(ValueError, match=READ_ONLY_REFUSAL) as stopped:
        tools_by_name(tool)["sql"](query)
    assert type(stopped.value) is ValueError and CANARY not in str(stopped.value)


def test_the_read_only_transaction_cannot_be_switched_off_from_a_query(my_conn, unchanged):
    tool = SQLTool(CONN_ID)
    switch = "SELECT make_read_write() AS rw, add_order(1) AS added"
    assert tool.check(switch).text
    with pytest.raises(ValueError, match=READ_ONLY_REFUSAL):
        tool.query(switch)
    # A session default changed by one call does not reach the next: each call is a new connection.
    assert tool.query("SELECT make_read_write() AS rw") == [{"rw": 1}]
    with pytest.raises(ValueError, match=READ_ONLY_REFUSAL):
        tool.query("SELECT add_order(1)")


def test_ddl_and_a_procedure_commit_end_the_read_only_transaction_so_only_the_check_stops_them(my_conn, mysql):
    """What README says of MySQL: DDL commits implicitly, and so may a stored procedure, after which
    the READ ONLY transaction no longer applies. With the check bypassed both reach the database;
    through ``sql`` both are refused."""
    tool = SQLTool(CONN_ID)
    before = _state(mysql)
    try:
        assert tool._execute("CREATE TABLE ddl_probe (a INT)")[0] == []
        assert "ddl_probe" in _state(mysql)["tables"][0]
        tool._execute("CALL commit_then_log()")
        assert _state(mysql)["audit_log"] == (before["audit_log"][0] + 1, "created,after commit")
    finally:
        conn = _direct_connection(mysql)
        try:
            cursor = conn.cursor()
            cursor.execute("DROP TABLE IF EXISTS ddl_probe")
            cursor.execute("DELETE FROM audit_log WHERE what <> 'created'")
        finally:
            conn.close()
    assert _state(mysql) == before
    for query in ("CREATE TABLE ddl_probe (a INT)", "CALL commit_then_log()"):
        with pytest.raises(ValueError, match="read-only"):
            tools_by_name(tool)["sql"](query)
    assert _state(mysql) == before


# -- read_only=False -----------------------------------------------------------------------------------------------


def test_write_mode_commits_one_statement(my_conn, mysql):
    sql = tools_by_name(SQLTool(CONN_ID, read_only=False))["sql"]
    try:
        assert sql("INSERT INTO customers VALUES (3, 'initech')") == [{"rows_affected": 1}]
        assert _state(mysql)["customers"] == (3, "acme,globex,initech")
        assert sql("UPDATE customers SET name = 'initrode' WHERE id = 3") == [{"rows_affected": 1}]
        assert sql("SELECT name FROM customers WHERE id = 3") == [{"name": "initrode"}]
        with pytest.raises(ValueError, match="2 statements"):
            sql("DELETE FROM customers WHERE id = 3; DELETE FROM orders")
        with pytest.raises(ValueError, match="the database refused the query: .*foreign key constraint fails"):
            sql("DELETE FROM customers WHERE id = 1")
        assert sql("DELETE FROM customers WHERE id = 3") == [{"rows_affected": 1}]
    finally:
        mysql.sql("DELETE FROM customers WHERE id > 2", database=DATABASE)
    assert _state(mysql)["customers"] == (2, "acme,globex")
    assert _state(mysql)["orders"][0] == 25


# -- the password ----------------------------------------------------------------------------------------------------


def test_the_password_never_appears_in_what_the_tool_returns(my_conn, mysql, monkeypatch):
    tools = tools_by_name(SQLTool(CONN_ID))
    returned = [tools["sql"]("SELECT current_user() AS who, DATABASE() AS db"),
                tools["list_tables"](), tools["describe"]("orders")]
    assert returned[0] == [{"who": f"{USER}@%", "db": DATABASE}]
    errors = []
    for call in (lambda: tools["sql"]("SELECT * FROM nope"), lambda: tools["sql"]("SELECT add_order(1)"),
                 lambda: tools["describe"]("nope")):
        with pytest.raises(ValueError) as refused:
            call()
        errors.append(refused.value)

    client = None if my_conn == "mysqlclient" else my_conn
    wrong = CANARY + "-wrong"
    monkeypatch.setenv("AIRFLOW_CONN_CODEAGENT_MY_WRONG_PW", _connection(mysql, client, password=wrong))
    monkeypatch.setenv("AIRFLOW_CONN_CODEAGENT_MY_NO_SERVER", _connection(mysql, client, port=1))
    for conn_id in ("codeagent_my_wrong_pw", "codeagent_my_no_server"):
        bad = tools_by_name(SQLTool(conn_id))
        for name, args in (("sql", ("SELECT 1",)), ("list_tables", ()), ("describe", ("orders",))):
            with pytest.raises(Exception) as failed:
                bad[name](*args)
            errors.append(failed.value)
    assert any("Access denied for user 'agent'" in str(e) for e in errors)
    text = repr(returned) + "".join(f"{e!s} {e!r} {e.__cause__!r} {e.__context__!r}" for e in errors)
    assert CANARY not in text and wrong not in text


MODEL_CODE = """
rows = sql("SELECT name FROM customers ORDER BY id")
tables = list_tables()
columns = describe("orders")
try:
    sql("SELECT add_order(1)")
except ValueError as exc:
    refusal = str(exc)
print(rows, tables, len(columns), refusal)
"""


@pytest.mark.parametrize("sandbox", ["restricted", "isolated"])
def test_model_code_sees_data_and_the_refusal_but_never_the_password(default_my_conn, unchanged, sandbox):
    with sandbox_with(SQLTool(CONN_ID), sandbox=sandbox) as executor:
        observation = executor.run(MODEL_CODE)
        assert observation.error is None, observation.error
        assert "[{'name': 'acme'}, {'name': 'globex'}]" in observation.stdout
        assert "Cannot execute statement in a READ ONLY transaction" in observation.stdout
        uncaught = executor.run("sql(\"SELECT log_visit()\")")
        assert uncaught.error is not None
        assert "Cannot execute statement in a READ ONLY transaction" in str(uncaught.error)
        everything = (repr(executor.variables()) + observation.stdout + repr(observation.tool_calls)
                      + repr(uncaught))
        assert CANARY not in everything
