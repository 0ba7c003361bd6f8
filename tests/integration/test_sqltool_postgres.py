"""SQLTool on a real PostgreSQL server: the read-only promise, tested where the database keeps it.

A throwaway cluster (``postgres_server.py``: ``initdb`` in a temp dir, 127.0.0.1,
a free port) holds a ``shop`` database owned by the role ``agent``, whose
password is a canary. The Airflow connection (``AIRFLOW_CONN_*`` in JSON form, as
in ``test_connection_tools.py``) logs in as that owner: every write below is one
the role's grants allow, so what stops it is the tool, and for the writes the
statement check cannot see (a plpgsql function that INSERTs, a SQL function that
calls ``nextval``, a quoted function name) the ``READ ONLY`` transaction SQLTool
runs each query in. A separate psycopg2 connection checks afterwards that
nothing changed. Nothing is mocked; the ``psycopg2`` cases switch
``PostgresHook``'s own driver flag to run the other driver it supports.

No PostgreSQL binaries: skipped, or failed when ``CI`` is set (``.ci/run``
installs Debian's ``postgresql``).
"""

from __future__ import annotations

import importlib
import json
import os
import re
import time

import pytest

from airflow_codeagent.tools.sql import TRUNCATED_KEY, SQLTool
from tests.integration.postgres_server import PostgresServer, PostgresUnavailable
from tests.integration.toolkits import sandbox_with, tools_by_name

CANARY = "canary-pg-pw-5c2e81-DO-NOT-LEAK"
ROLE = "agent"
DATABASE = "shop"
CONN_ID = "codeagent_tools_postgres"

SCHEMA = """
    CREATE TABLE customers (id integer PRIMARY KEY, name text NOT NULL);
    CREATE TABLE orders (id serial PRIMARY KEY, customer_id integer REFERENCES customers(id),
                         total numeric(10, 2), placed date, receipt bytea, note text);
    CREATE TABLE secret (api_key text);
    CREATE VIEW order_totals AS SELECT customer_id, SUM(total) AS total FROM orders GROUP BY customer_id;
    CREATE SEQUENCE invoice_no START 1000;
    INSERT INTO customers VALUES (1, 'acme'), (2, 'globex');
    INSERT INTO secret VALUES ('sk-live-secret-table');
    INSERT INTO orders (customer_id, total, placed, receipt)
        SELECT CASE WHEN i <= 15 THEN 1 ELSE 2 END, i * 1.25, DATE '2024-03-01' + (i - 1), '\\x000102'::bytea
        FROM generate_series(1, 25) AS i;
    -- Writes hidden from the statement check: all it sees is SELECT some_function(...).
    CREATE FUNCTION add_order(amount numeric) RETURNS integer LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO orders (customer_id, total) VALUES (1, amount);
        RETURN 1;
    END $$;
    CREATE FUNCTION wipe_orders() RETURNS void LANGUAGE plpgsql AS $$
    BEGIN
        DELETE FROM orders;
    END $$;
    CREATE FUNCTION forget_secret() RETURNS void LANGUAGE plpgsql AS $$
    BEGIN
        EXECUTE 'DROP TABLE secret';
    END $$;
    CREATE FUNCTION next_invoice() RETURNS bigint LANGUAGE sql AS $$ SELECT nextval('invoice_no') $$;
    CREATE FUNCTION reset_orders_seq() RETURNS bigint LANGUAGE sql AS $$ SELECT setval('orders_id_seq', 1000) $$;
    CREATE FUNCTION new_large_object() RETURNS oid LANGUAGE sql AS $$ SELECT lo_creat(-1) $$;
    CREATE FUNCTION read_write() RETURNS text LANGUAGE sql AS
        $$ SELECT set_config('transaction_read_only', 'off', true) $$;
    CREATE FUNCTION read_write_sessions() RETURNS text LANGUAGE sql AS
        $$ SELECT set_config('default_transaction_read_only', 'off', false) $$;
"""


def _unavailable(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: failing instead of skipping)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL cluster of its own for the session, with the ``shop`` database; removed at the end."""
    for module, package in (("psycopg2", "psycopg2-binary"),
                            ("airflow.providers.postgres.hooks.postgres", "apache-airflow-providers-postgres")):
        try:
            importlib.import_module(module)
        except ImportError:
            _unavailable(f"{module} is not importable; install the test extra (pip install -e '.[test]'), "
                         f"which brings {package}")
    try:
        server = PostgresServer()
    except PostgresUnavailable as exc:
        _unavailable(str(exc))
    try:
        server.start()
        server.sql(f"CREATE ROLE {ROLE} LOGIN PASSWORD %s", CANARY)
        server.sql(f"CREATE DATABASE {DATABASE} OWNER {ROLE}")
        conn = _direct_connection(server)
        try:
            with conn.cursor() as cursor:
                cursor.execute(SCHEMA)
            conn.commit()
        finally:
            conn.close()
        yield server
    finally:
        server.stop()


def _direct_connection(server: PostgresServer):
    """psycopg2 as ``agent`` over TCP with the password: the same login the Airflow connection uses."""
    import psycopg2

    return psycopg2.connect(host=server.host, port=server.port, user=ROLE, password=CANARY, dbname=DATABASE)


def _state(server: PostgresServer) -> dict:
    """What any write would change: rows, tables, sequences, large objects, functions."""
    conn = _direct_connection(server)
    try:
        with conn.cursor() as cursor:
            def one(query: str):
                cursor.execute(query)
                return cursor.fetchone()

            return {
                "orders": one("SELECT COUNT(*), SUM(total), COUNT(note) FROM orders"),
                "customers": one("SELECT COUNT(*), string_agg(name, ',' ORDER BY id) FROM customers"),
                "tables": one("SELECT string_agg(relname, ',' ORDER BY relname) FROM pg_class "
                              "WHERE relnamespace = 'public'::regnamespace"),
                "secret": one("SELECT COUNT(*) FROM secret"),
                "invoice_no": one("SELECT last_value, is_called FROM invoice_no"),
                "orders_id_seq": one("SELECT last_value, is_called FROM orders_id_seq"),
                "large_objects": one("SELECT COUNT(*) FROM pg_largeobject_metadata"),
                "functions": one("SELECT COUNT(*) FROM pg_proc WHERE pronamespace = 'public'::regnamespace"),
            }
    finally:
        conn.close()


@pytest.fixture
def unchanged(postgres):
    """Asserts at the end of the test that the database is as the fixture left it."""
    before = _state(postgres)
    yield
    assert _state(postgres) == before


def _connection(server: PostgresServer, **overrides) -> str:
    conn = {"conn_type": "postgres", "host": server.host, "port": server.port, "login": ROLE,
            "password": CANARY, "schema": DATABASE}
    conn.update(overrides)
    return json.dumps(conn)


@pytest.fixture(params=["psycopg", "psycopg2"])
def pg_conn(request, postgres, monkeypatch) -> str:
    """CONN_ID as an Airflow connection of type postgres, with each driver PostgresHook supports.

    ``PostgresHook`` uses psycopg 3 when it and SQLAlchemy 2 are installed, psycopg2
    otherwise; its module flag picks the driver, both against the real server.
    """
    from airflow.providers.postgres.hooks import postgres as postgres_hook

    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", _connection(postgres))
    monkeypatch.setattr(postgres_hook, "USE_PSYCOPG3", request.param == "psycopg")
    return request.param


@pytest.fixture
def default_pg_conn(postgres, monkeypatch) -> None:
    """CONN_ID with the driver PostgresHook picks by itself."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", _connection(postgres))



# -- reading ----------------------------------------------------------------------------------------------------


def test_the_hook_runs_the_driver_asked_for(pg_conn):
    tool = SQLTool(CONN_ID)
    conn = tool._backend().hook.get_conn()
    try:
        assert type(conn).__module__.split(".")[0] == pg_conn
    finally:
        conn.close()
    assert tool._backend().dialect == "postgres"


def test_rows_come_back_as_plain_dicts(pg_conn, unchanged):
    sql = tools_by_name(SQLTool(CONN_ID))["sql"]
    rows = sql("SELECT o.id, o.total, o.placed, o.receipt, o.note, c.name, c.id "
               "FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.id = 2")
    assert rows == [{"id": 2, "total": 2.5, "placed": "2024-03-02", "receipt": "<3 bytes>", "note": None,
                     "name": "acme", "id_2": 1}]
    assert json.loads(json.dumps(rows)) == rows
    assert sql("SELECT c.name, COUNT(*) AS n, SUM(o.total) AS total FROM orders o "
               "JOIN customers c ON c.id = o.customer_id GROUP BY c.name ORDER BY c.name") == [
        {"name": "acme", "n": 15, "total": 150.0}, {"name": "globex", "n": 10, "total": 256.25}]
    assert sql("SELECT 12345678901234567890.123::numeric AS big, TIMESTAMP '2024-03-01 12:30' AS at, "
               "INTERVAL '2 minutes' AS wait, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid AS id") == [
        {"big": "12345678901234567890.123", "at": "2024-03-01T12:30:00", "wait": 120.0,
         "id": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"}]
    assert sql("SELECT * FROM orders WHERE id < 0") == []


def test_rows_are_dicts_of_values_when_the_connection_asks_the_driver_for_dict_rows(pg_conn, postgres, monkeypatch):
    """The postgres connection's ``cursor`` extra makes the driver return dicts, whose iteration gives keys."""
    cursor = "dictcursor" if pg_conn == "psycopg" else "realdictcursor"
    monkeypatch.setenv("AIRFLOW_CONN_CODEAGENT_PG_DICT_ROWS",
                       _connection(postgres, extra=json.dumps({"cursor": cursor})))
    tool = SQLTool("codeagent_pg_dict_rows", max_rows=2)
    assert tool.query("SELECT id, total, placed FROM orders ORDER BY id") == [
        {"id": 1, "total": 1.25, "placed": "2024-03-01"}, {"id": 2, "total": 2.5, "placed": "2024-03-02"},
        {TRUNCATED_KEY: tool.query("SELECT id FROM orders")[-1][TRUNCATED_KEY]}]
    with pytest.raises(ValueError, match="two columns with the same name.*AS"):
        tool.query("SELECT o.id, c.id FROM orders o JOIN customers c ON c.id = o.customer_id")


def test_rows_over_the_cap_end_with_a_marker(pg_conn):
    sql = tools_by_name(SQLTool(CONN_ID, max_rows=5))["sql"]
    rows = sql("SELECT id FROM orders ORDER BY id")
    assert rows[:5] == [{"id": i} for i in range(1, 6)]
    assert len(rows) == 6 and set(rows[5]) == {TRUNCATED_KEY}
    assert "showing the first 5 rows" in rows[5][TRUNCATED_KEY] and "LIMIT" in rows[5][TRUNCATED_KEY]
    assert sql("SELECT id FROM orders ORDER BY id LIMIT 5") == [{"id": i} for i in range(1, 6)]


def test_list_tables_and_describe(pg_conn):
    tools = tools_by_name(SQLTool(CONN_ID))
    assert tools["list_tables"]() == ["customers", "order_totals", "orders", "secret"]
    columns = tools["describe"]("orders")
    assert [c["name"] for c in columns] == ["id", "customer_id", "total", "placed", "receipt", "note"]
    assert columns[0] == {"name": "id", "type": "INTEGER", "nullable": False, "primary_key": True}
    assert columns[1] == {"name": "customer_id", "type": "INTEGER", "nullable": True, "primary_key": False}
    assert [c["type"] for c in columns[2:]] == ["NUMERIC(10, 2)", "DATE", "BYTEA", "TEXT"]
    assert tools["describe"]("public.customers") == [
        {"name": "id", "type": "INTEGER", "nullable": False, "primary_key": True},
        {"name": "name", "type": "TEXT", "nullable": False, "primary_key": False}]
    assert [c["name"] for c in tools["describe"]("order_totals")] == ["customer_id", "total"]
    with pytest.raises(ValueError, match="no table or view named 'nope'; list_tables"):
        tools["describe"]("nope")
    assert tools_by_name(SQLTool(CONN_ID, schema="public"))["list_tables"]() == tools["list_tables"]()


def test_allowed_tables_scope_listing_and_queries(pg_conn):
    tools = tools_by_name(SQLTool(CONN_ID, allowed_tables=["orders", "customers"]))
    assert tools["list_tables"]() == ["customers", "orders"]
    assert tools["sql"]("SELECT COUNT(*) AS n FROM orders") == [{"n": 25}]
    with pytest.raises(ValueError, match="table 'secret' is not one this SQL tool may use"):
        tools["sql"]("SELECT * FROM orders, secret")
    with pytest.raises(ValueError, match="not one this tool may use"):
        tools["describe"]("secret")


def test_long_queries_are_stopped_by_the_statement_timeout(pg_conn):
    sql = tools_by_name(SQLTool(CONN_ID, timeout=0.5))["sql"]
    started = time.monotonic()
    with pytest.raises(ValueError, match="the database refused the query: .*statement timeout"):
        sql("SELECT pg_sleep(10)")
    assert time.monotonic() - started < 5


# -- read-only: the statement check -------------------------------------------------------------------------------


@pytest.mark.parametrize(("query", "message"), [
    ("INSERT INTO orders (customer_id) VALUES (1)", "starts with 'INSERT'"),
    ("UPDATE orders SET total = 0", "starts with 'UPDATE'"),
    ("DELETE FROM orders", "starts with 'DELETE'"),
    ("DROP TABLE secret", "starts with 'DROP'"),
    ("CREATE TABLE t (a int)", "starts with 'CREATE'"),
    ("TRUNCATE orders", "starts with 'TRUNCATE'"),
    ("ALTER TABLE orders ADD COLUMN x int", "starts with 'ALTER'"),
    ("INSERT INTO customers VALUES (1, 'x') ON CONFLICT (id) DO UPDATE SET name = 'x'", "starts with 'INSERT'"),
    ("MERGE INTO customers c USING orders o ON c.id = o.customer_id WHEN MATCHED THEN DELETE",
     "starts with 'MERGE'"),
    ("COPY orders TO STDOUT", "starts with 'COPY'"),
    ("SET TRANSACTION READ WRITE", "starts with 'SET'"),
    ("BEGIN READ WRITE", "starts with 'BEGIN'"),
    ("DO 'BEGIN DELETE FROM orders; END'", "starts with 'DO'"),
    ("WITH x AS (DELETE FROM orders RETURNING *) SELECT * FROM x", "contains DELETE"),
    ("WITH x AS (INSERT INTO customers VALUES (9, 'x') RETURNING *) SELECT * FROM x", "contains INSERT"),
    ("WITH x AS (UPDATE orders SET total = 0 RETURNING id) SELECT COUNT(*) FROM x", "contains UPDATE"),
    ("EXPLAIN ANALYZE DELETE FROM orders", "contains DELETE"),
    ("SELECT * INTO orders_copy FROM orders", "contains INTO"),
    ("SELECT 1; DELETE FROM orders", "2 statements"),
    ("SELECT 1;\n-- harmless?\nDROP TABLE secret;", "2 statements"),
    ("SELECT 1 /* ; */ ; /* a comment hides nothing */ TRUNCATE orders", "2 statements"),
    ("/* SELECT */ DELETE FROM orders", "starts with 'DELETE'"),
    ("-- SELECT\nDELETE FROM orders", "starts with 'DELETE'"),
    ("SELECT 1 -- \n; DELETE FROM orders", "2 statements"),
    ("SELECT $$; DELETE FROM orders; $$", "dollar-quoted"),
    ("SELECT nextval('invoice_no')", "nextval() has effects outside the query"),
    ("SELECT setval('orders_id_seq', 1000)", "setval() has effects outside the query"),
    ("SELECT set_config('transaction_read_only', 'off', true)", "set_config() has effects"),
    ("SELECT lo_create(0)", "lo_create() has effects"),
])
def test_read_only_refuses_every_write_form(pg_conn, unchanged, query, message):
    sql = tools_by_name(SQLTool(CONN_ID))["sql"]
    with pytest.raises(ValueError, match=re.escape(message)) as refused:
        sql(query)
    assert type(refused.value) is ValueError


# -- read-only: the database's own guard ---------------------------------------------------------------------------


@pytest.mark.parametrize(("statement", "refused"), [
    ("INSERT INTO orders (customer_id) VALUES (1)", "INSERT"),
    ("UPDATE orders SET total = 0", "UPDATE"),
    ("DELETE FROM orders", "DELETE"),
    ("DROP TABLE secret", "DROP TABLE"),
    ("CREATE TABLE t (a int)", "CREATE TABLE"),
    ("TRUNCATE orders", "TRUNCATE TABLE"),
    # Postgres names the statement, not the DELETE inside it; the point is that it does not run.
    ("WITH x AS (DELETE FROM orders RETURNING *) SELECT * FROM x", "SELECT"),
    ("SELECT nextval('invoice_no')", "nextval()"),
    ("SELECT setval('orders_id_seq', 1000)", "setval()"),
])
def test_the_database_refuses_writes_the_statement_check_would_stop(pg_conn, unchanged, statement, refused):
    """The statement check bypassed: ``_execute`` runs SQL with only the read-only transaction."""
    with pytest.raises(ValueError, match=r"the database refused the query: \w+: cannot execute "
                                         + re.escape(refused) + " in a read-only transaction"):
        SQLTool(CONN_ID)._execute(statement)


@pytest.mark.parametrize(("query", "refused"), [
    ("SELECT add_order(99)", "INSERT"),
    ("SELECT * FROM add_order(5)", "INSERT"),
    ("SELECT wipe_orders()", "DELETE"),
    ("SELECT forget_secret()", "DROP TABLE"),
    ("SELECT next_invoice() AS n", "nextval()"),
    ("SELECT id, add_order(total) FROM orders WHERE id = 1", "INSERT"),
    ("SELECT reset_orders_seq()", "setval()"),
    ("EXPLAIN ANALYZE SELECT add_order(1)", "INSERT"),
])
def test_writes_the_statement_check_cannot_see_are_stopped_by_the_read_only_transaction(
        pg_conn, unchanged, query, refused):
    tool = SQLTool(CONN_ID)
    assert tool.check(query).text  # the check lets it through: it cannot see into functions
    with pytest.raises(ValueError, match=r"the database refused the query: \w+: cannot execute "
                                         + re.escape(refused) + " in a read-only transaction") as stopped:
        tools_by_name(tool)["sql"](query)
    assert type(stopped.value) is ValueError and CANARY not in str(stopped.value)


def test_a_write_the_read_only_transaction_allows_is_still_rolled_back(pg_conn, unchanged):
    """Postgres creates large objects even in a READ ONLY transaction; the check refuses the large-object
    functions by name, but not inside a function of the database: only the rollback after every
    read-only call undoes that."""
    tool = SQLTool(CONN_ID)
    for query in ("SELECT lo_creat(-1) AS oid", 'SELECT "lo_create"(0) AS oid'):
        with pytest.raises(ValueError, match="effects outside the query"):
            tool.check(query)
    for query in ("SELECT new_large_object() AS oid",):
        assert tool.check(query).text
        rows = tool.query(query)
        assert len(rows) == 1 and isinstance(rows[0]["oid"], int)  # it ran; `unchanged` shows it left nothing


def test_the_read_only_transaction_cannot_be_switched_off_from_a_query(pg_conn, unchanged):
    tool = SQLTool(CONN_ID)
    with pytest.raises(ValueError, match="effects outside the query"):
        tool.check("SELECT \"set_config\"('transaction_read_only', 'off', true)")
    switch = "SELECT read_write(), add_order(1)"
    assert tool.check(switch).text
    with pytest.raises(ValueError, match="transaction read-write mode must be set before any query"):
        tool.query(switch)
    # A session default changed by one call does not reach the next: each call is a new connection.
    tool.query("SELECT read_write_sessions() AS s")
    with pytest.raises(ValueError, match="cannot execute INSERT in a read-only transaction"):
        tool.query("SELECT add_order(1)")


# -- read_only=False -----------------------------------------------------------------------------------------------


def test_write_mode_commits_one_statement(pg_conn, postgres):
    sql = tools_by_name(SQLTool(CONN_ID, read_only=False))["sql"]
    try:
        assert sql("INSERT INTO customers VALUES (3, 'initech')") == [{"rows_affected": 1}]
        assert _state(postgres)["customers"] == (3, "acme,globex,initech")
        assert sql("UPDATE customers SET name = 'initrode' WHERE id = 3 RETURNING name") == [{"name": "initrode"}]
        with pytest.raises(ValueError, match="2 statements"):
            sql("DELETE FROM customers WHERE id = 3; DELETE FROM orders")
        with pytest.raises(ValueError, match="the database refused the query: .*violates foreign key"):
            sql("DELETE FROM customers WHERE id = 1")
        assert sql("DELETE FROM customers WHERE id = 3") == [{"rows_affected": 1}]
    finally:
        postgres.sql("DELETE FROM customers WHERE id > 2", dbname=DATABASE)
    assert _state(postgres)["customers"] == (2, "acme,globex")
    assert _state(postgres)["orders"][0] == 25


# -- the password ----------------------------------------------------------------------------------------------------


def test_the_password_never_appears_in_what_the_tool_returns(pg_conn, postgres, monkeypatch):
    tools = tools_by_name(SQLTool(CONN_ID))
    returned = [tools["sql"]("SELECT current_user AS who, current_database() AS db"),
                tools["list_tables"](), tools["describe"]("orders")]
    assert returned[0] == [{"who": ROLE, "db": DATABASE}]
    errors = []
    for call in (lambda: tools["sql"]("SELECT * FROM nope"), lambda: tools["sql"]("SELECT add_order(1)"),
                 lambda: tools["describe"]("nope")):
        with pytest.raises(ValueError) as refused:
            call()
        errors.append(refused.value)

    wrong = CANARY + "-wrong"
    monkeypatch.setenv("AIRFLOW_CONN_CODEAGENT_PG_WRONG_PW", _connection(postgres, password=wrong))
    monkeypatch.setenv("AIRFLOW_CONN_CODEAGENT_PG_NO_SERVER", _connection(postgres, port=1))
    for conn_id in ("codeagent_pg_wrong_pw", "codeagent_pg_no_server"):
        bad = tools_by_name(SQLTool(conn_id))
        for name, args in (("sql", ("SELECT 1",)), ("list_tables", ()), ("describe", ("orders",))):
            with pytest.raises(Exception) as failed:
                bad[name](*args)
            errors.append(failed.value)
    assert any("password authentication failed" in str(e) for e in errors)
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
def test_model_code_sees_data_and_the_refusal_but_never_the_password(default_pg_conn, unchanged, sandbox):
    with sandbox_with(SQLTool(CONN_ID), sandbox=sandbox) as executor:
        observation = executor.run(MODEL_CODE)
        assert observation.error is None, observation.error
        assert "[{'name': 'acme'}, {'name': 'globex'}]" in observation.stdout
        assert "cannot execute INSERT in a read-only transaction" in observation.stdout
        uncaught = executor.run("sql(\"SELECT forget_secret()\")")
        assert uncaught.error is not None
        assert "cannot execute DROP TABLE in a read-only transaction" in str(uncaught.error)
        everything = (repr(executor.variables()) + observation.stdout + repr(observation.tool_calls)
                      + repr(uncaught))
        assert CANARY not in everything
