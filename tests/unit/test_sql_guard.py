"""The statement check behind SQLTool: one statement, read-only, table names (no database needed)."""

from __future__ import annotations

import pytest

from airflow_codeagent.tools.sql_guard import (
    SQLRefused,
    check_statement,
    normalize_table_name,
    referenced_tables,
    split_table_name,
)


def refused(sql: str, **kwargs) -> str:
    with pytest.raises(SQLRefused) as info:
        check_statement(sql, **kwargs)
    return str(info.value)


@pytest.mark.parametrize("sql", [
    "INSERT INTO t VALUES (1)", "insert into t select * from u", "UPDATE t SET a = 1", "DELETE FROM t",
    "MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN DELETE", "REPLACE INTO t VALUES (1)",
    "UPSERT INTO t VALUES (1)", "DROP TABLE t", "CREATE TABLE t (a int)", "CREATE INDEX i ON t (a)",
    "ALTER TABLE t ADD COLUMN b int", "TRUNCATE t", "ATTACH DATABASE 'x.db' AS x", "DETACH x", "VACUUM",
    "GRANT ALL ON t TO bob", "REVOKE ALL ON t FROM bob", "COPY t FROM '/etc/passwd'", "CALL p()", "EXEC p",
    "EXECUTE p", "SET search_path = evil", "BEGIN", "COMMIT", "DO $$ BEGIN END $$", "LOCK TABLE t",
    "ANALYZE t", "REINDEX t", "LOAD DATA INFILE 'x' INTO TABLE t", "COMMENT ON TABLE t IS 'x'",
])
def test_statements_that_do_not_read_are_refused(sql):
    message = refused(sql)
    assert "read-only" in message or "dollar-quoted" in message


@pytest.mark.parametrize(("sql", "word"), [
    ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", "DELETE"),
    ("WITH u AS (UPDATE t SET a = 1 RETURNING a) SELECT a FROM u", "UPDATE"),
    ("WITH i AS (INSERT INTO t VALUES (1) RETURNING *) SELECT * FROM i", "INSERT"),
    ("WITH x AS (SELECT 1) DELETE FROM t", "DELETE"),
    ("WITH RECURSIVE r AS (SELECT 1) INSERT INTO t SELECT * FROM r", "INSERT"),
    ("EXPLAIN ANALYZE UPDATE t SET a = 1", "UPDATE"),
    ("EXPLAIN (ANALYZE) DELETE FROM t", "DELETE"),
    ("SELECT * INTO copy FROM t", "INTO"),
    ("SELECT * FROM t INTO OUTFILE '/tmp/x'", "INTO"),
    ("SELECT * FROM t FOR UPDATE", "UPDATE"),
    ("(SELECT 1) UNION (SELECT 2 FROM t) ; ", None),
])
def test_writes_hidden_inside_a_reading_statement_are_refused(sql, word):
    if word is None:
        assert check_statement(sql).tables == ("t",)
    else:
        assert f"contains {word}" in refused(sql)


@pytest.mark.parametrize("sql", [
    "SELECT 1; DROP TABLE t",
    "SELECT 1;DROP TABLE t;",
    "SELECT 1; SELECT 2",
    "SELECT 1 -- comment\n; DELETE FROM t",
    "SELECT 1 /* ; */; DELETE FROM t",
    "SELECT ';'; DELETE FROM t",
])
def test_more_than_one_statement_is_refused_in_both_modes(sql):
    assert "2 statements" in refused(sql)
    assert "2 statements" in refused(sql, read_only=False)


@pytest.mark.parametrize(("sql", "executed"), [
    ("SELECT 1;", "SELECT 1"),
    ("SELECT 1;;  -- bye\n", "SELECT 1"),
    ("/* hello */ SELECT 1 -- there", "SELECT 1"),
    ("SELECT 1 /*! ; DROP TABLE t */", "SELECT 1"),  # a MySQL executable comment never reaches MySQL
    ("SELECT '-- not a comment', \"/* nor this */\" FROM t", "SELECT '-- not a comment', \"/* nor this */\" FROM t"),
])
def test_comments_are_removed_from_what_runs(sql, executed):
    assert check_statement(sql).text == executed


@pytest.mark.parametrize("sql", [
    "/* SELECT */ DELETE FROM t",
    "-- SELECT 1\nDELETE FROM t",
    "DEL/**/ETE FROM t",
    "SELECT 1 /* */ ; /* */ DELETE FROM t",
])
def test_comment_tricks_do_not_hide_a_write(sql):
    refused(sql)


def test_ambiguous_quoting_is_refused_rather_than_guessed():
    # MySQL reads '\'' as one escaped quote, standard SQL as a string that ends at the backslash.
    assert "backslash before a quote" in refused("SELECT '\\'; DELETE FROM t; --'")
    assert "backslash before a quote" in refused("SELECT \"\\\"; DELETE FROM t; --\"")
    assert "backslash before a quote" in refused("SELECT '\\''")
    assert "dollar-quoted" in refused("SELECT $$ ; DELETE FROM t $$")
    assert "dollar-quoted" in refused("SELECT $tag$x$tag$", read_only=False)
    assert "'#' starts a comment in MySQL" in refused("SELECT a # b\nFROM t")
    assert check_statement("SELECT a #> '{x}', a ->> 'k' FROM t").tables == ("t",)
    assert "unterminated string" in refused("SELECT 'abc; DROP TABLE t")
    assert "stray backslash" in refused("SELECT \\ 1")
    # backslashes that cannot change where a string ends are fine
    assert check_statement("SELECT 'C:\\\\path', 'a\\b', 'it''s' FROM t").tables == ("t",)


@pytest.mark.parametrize("sql", [
    "SELECT * FROM t", "select count(*) from t where a > 1 group by b order by 1 limit 10",
    "WITH x AS (SELECT * FROM t) SELECT * FROM x", "VALUES (1, 2)", "EXPLAIN SELECT * FROM t",
    "EXPLAIN QUERY PLAN SELECT * FROM t", "SHOW TABLES", "DESCRIBE t", "PRAGMA table_info(t)",
    "PRAGMA main.table_info('t')", "PRAGMA user_version", "SELECT replace(a, 'x', 'y') FROM t",
    "SELECT * FROM t WHERE note = 'please delete me; drop table t'", 'SELECT "delete", `update` FROM t',
    "(SELECT a FROM t) UNION ALL (SELECT a FROM t)", "SELECT 1 -- the end",
])
def test_reading_statements_pass(sql):
    assert check_statement(sql).text


@pytest.mark.parametrize(("sql", "message"), [
    ("PRAGMA query_only = OFF", "changes a database setting"),
    ("PRAGMA query_only=0", "changes a database setting"),
    ("PRAGMA main.journal_mode = WAL", "changes a database setting"),
    ("PRAGMA journal_mode(WAL)", "with an argument changes a setting"),
    ("PRAGMA writable_schema", "not on the read-only list"),
    ("PRAGMA optimize", "not on the read-only list"),
    ("PRAGMA", "PRAGMA needs a name"),
])
def test_pragma_writes_and_unknown_pragmas_are_refused(sql, message):
    assert message in refused(sql)


@pytest.mark.parametrize("function", ["load_extension", "pg_read_file", "set_config", "nextval", "lo_export",
                                      "dblink_exec", "pg_terminate_backend", "lo_creat",
                                      "pg_advisory_lock_shared"])
def test_functions_with_effects_outside_the_query_are_refused(function):
    assert "effects outside the query" in refused(f"SELECT {function}('x')")
    # a quoted name calls the same function (MySQL has no READ ONLY transaction behind this check)
    assert "effects outside the query" in refused(f'SELECT "{function}"(\'x\')')
    assert "effects outside the query" in refused(f'SELECT "pg_catalog"."{function}"(\'x\')')
    assert check_statement(f'SELECT "{function}" FROM t').tables == ("t",)  # a quoted column is no call
    if function not in ("load_extension",):  # a write-mode tool may call them (it reaches no host file)
        assert check_statement(f'SELECT "{function}"(\'x\')', read_only=False).text


def test_refusals_say_what_to_do():
    assert "quote it: \"update\"" in refused("SELECT update FROM t")
    assert "send exactly one statement" in refused("SELECT 1; SELECT 2")
    assert "only statements that read are allowed (DESCRIBE, EXPLAIN, PRAGMA, SELECT, SHOW, VALUES, WITH)" in \
        refused("DELETE FROM t")
    assert "is empty" in refused("  -- nothing\n")
    assert "must be a string" in refused(None)  # type: ignore[arg-type]


def test_write_mode_skips_the_read_only_check_but_not_the_rest():
    assert check_statement("DELETE FROM t WHERE id = 1", read_only=False).text == "DELETE FROM t WHERE id = 1"
    assert check_statement("CREATE TABLE t (a int)", read_only=False).first_word == "CREATE"
    assert "2 statements" in refused("INSERT INTO t VALUES (1); DROP TABLE t", read_only=False)
    for sql in ("ATTACH 'x.db' AS x", "VACUUM INTO '/tmp/x.db'", "SELECT * FROM t INTO OUTFILE '/tmp/x'",
                "SELECT load_extension('x')"):
        assert "reaches files on the database host" in refused(sql, read_only=False)
    assert "table 'u' is not one" in refused("INSERT INTO u SELECT * FROM t", read_only=False, allowed_tables=["t"])


@pytest.mark.parametrize(("sql", "tables"), [
    ("SELECT * FROM orders", ["orders"]),
    ("SELECT * FROM main.orders o", ["main.orders"]),
    ('SELECT * FROM "Sales"."Orders"', ["sales.orders"]),
    ("SELECT * FROM `orders`, [customers]", ["orders", "customers"]),
    ("SELECT * FROM a JOIN b ON a.id = b.id LEFT OUTER JOIN c USING (id), d NATURAL JOIN e", list("abcde")),
    ("SELECT * FROM a, b WHERE x IN (SELECT y FROM c) AND EXISTS (SELECT 1 FROM d)", list("abcd")),
    ("SELECT (SELECT max(x) FROM a), coalesce((SELECT 1 FROM b), 0) FROM c", list("abc")),
    ("SELECT * FROM (a JOIN b ON a.x = b.x) JOIN c ON 1 = 1", list("abc")),
    ("SELECT * FROM (SELECT * FROM a) sub, LATERAL (SELECT * FROM b) l", list("ab")),
    ("SELECT extract(year FROM d), trim(both ' ' FROM n), x IS DISTINCT FROM y FROM a", ["a"]),
    ("SELECT * FROM generate_series(1, 10) g, json_each(x), a", ["a"]),
    ("WITH x AS (SELECT * FROM a), y (c) AS (SELECT 1) SELECT * FROM x JOIN y ON 1 = 1", ["a"]),
    ("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT * FROM r", []),
    ("WITH a AS MATERIALIZED (SELECT * FROM b) SELECT * FROM a", ["b"]),
    ("SELECT * FROM secret, (WITH secret AS (SELECT 1) SELECT * FROM secret) q", ["secret"]),
    ("SELECT * FROM a UNION SELECT * FROM b EXCEPT SELECT * FROM c", list("abc")),
    ("SELECT * FROM ONLY a", ["a"]),
    ("SELECT * FROM a LIMIT 1, 2", ["a"]),
    ("SELECT * FROM a WINDOW w AS (PARTITION BY x ORDER BY y)", ["a"]),
    ("SELECT * FROM user, data, events", ["user", "data", "events"]),  # words sqlparse calls keywords
    ("PRAGMA table_info(orders)", []),
])
def test_referenced_tables(sql, tables):
    assert referenced_tables(sql) == tables


@pytest.mark.parametrize(("sql", "tables"), [
    ("INSERT INTO a (x) SELECT x FROM b", ["a", "b"]),
    ("UPDATE a SET x = 1 FROM b WHERE a.id = b.id", ["a", "b"]),
    ("DELETE FROM a USING b WHERE a.id = b.id", ["a", "b"]),
    ("MERGE INTO a USING b ON a.id = b.id WHEN MATCHED THEN UPDATE SET x = 1", ["a", "b"]),
    ("INSERT INTO a VALUES (1) ON CONFLICT (id) DO UPDATE SET x = 1", ["a"]),
    ("CREATE TABLE IF NOT EXISTS a AS SELECT * FROM b", ["a", "b"]),
    ("DROP TABLE IF EXISTS a", ["a"]),
    ("TRUNCATE a", ["a"]),
    ("CREATE VIEW v AS SELECT * FROM a", ["v", "a"]),
])
def test_referenced_tables_of_writes(sql, tables):
    assert list(check_statement(sql, read_only=False).tables) == tables


def test_allowed_tables_refuse_everything_else():
    allowed = ["orders", "Sales.Customers"]
    assert check_statement("SELECT * FROM ORDERS o JOIN sales.customers c ON 1 = 1",
                           allowed_tables=allowed).tables == ("orders", "sales.customers")
    message = refused("SELECT * FROM customers", allowed_tables=allowed)
    assert message == ("table 'customers' is not one this SQL tool may use; the allowed tables are: orders, "
                       "sales.customers. Name them exactly like that in the query")
    refused("SELECT * FROM orders WHERE id IN (SELECT id FROM secret)", allowed_tables=allowed)
    refused("WITH orders AS (SELECT * FROM secret) SELECT * FROM orders", allowed_tables=allowed)
    refused("PRAGMA table_info(secret)", allowed_tables=allowed)
    refused("DESCRIBE secret", allowed_tables=allowed)
    assert check_statement("SELECT 1", allowed_tables=[]).tables == ()
    # a FROM followed by something the parser cannot read as a table fails closed
    assert "could not tell which table" in refused("SELECT * FROM 42", allowed_tables=allowed)


def test_unbalanced_parentheses_are_refused():
    assert "unmatched ')'" in refused("SELECT 1)")
    assert "unmatched '('" in refused("SELECT (1")


def test_table_names_are_normalized():
    assert normalize_table_name(' "Sales" . Orders ') == "sales.orders"
    assert normalize_table_name("`a``b`") == "a`b"
    assert split_table_name('sales."Order Lines"') == ["sales", "Order Lines"]
    assert split_table_name('"a.b".c') == ["a.b", "c"]


def test_very_long_queries_are_refused():
    assert "characters long" in refused("SELECT " + "1, " * 50_000 + "1")


@pytest.mark.parametrize("sql", [
    'SELECT U&"nextva\\006C"(\'s\')',
    'SELECT u&"pg_terminate_backen\\0064"(1)',
    "SELECT U&'\\0041' AS a",
    'SELECT U&"d!0061t!+000061" UESCAPE \'!\' FROM t',
])
def test_unicode_escapes_are_refused(sql):
    assert "plainly" in refused(sql)


def test_functions_that_run_a_query_given_as_text_are_refused():
    assert "effects outside the query" in refused(
        "SELECT query_to_xml('select pg_terminate_backend(1)', true, false, '')")
