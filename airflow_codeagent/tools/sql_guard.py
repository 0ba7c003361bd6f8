"""Statement checks for ``SQLTool``: one statement, read-only, and which tables it touches.

This is the *second* line of defence. The first is the database itself: a
read-only SQLite handle (``mode=ro``, ``PRAGMA query_only``, an authorizer) or a
read-only transaction on Postgres and MySQL (``sql.py``). The check here works
on the token stream of ``sqlparse``'s lexer, never on regular expressions over
the raw text, and it hands back the statement to execute with its comments
removed, so the database runs exactly the tokens that were checked: a comment
cannot hide code from the check, and code the check never saw cannot run.

Where databases disagree on how to read a token, the check refuses instead of
guessing: a backslash before a quote inside a string (MySQL reads ``'\\'`` as an
escaped quote, standard SQL as a complete string), dollar-quoted strings
(Postgres only), ``#`` (a MySQL comment, a Postgres operator) and anything the
lexer cannot read are refused with a message saying what to write instead.

Table names are found by a small state machine over the tokens (after
``FROM``/``JOIN``/``,`` in a FROM clause, ``INTO``, ``UPDATE``, ``TABLE``,
``USING``), with common table expressions scoped to the parentheses they are
defined in. It is best effort: it does not see through views, functions or
database-specific syntax it does not know, so ``allowed_tables`` scopes an
honest model; it is not an access control. Give the connection a database user
with only the grants the agent needs for that.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass

import sqlparse
from sqlparse import tokens as T

MAX_QUERY_CHARS = 100_000

# Statements a read-only tool may start with.
READ_FIRST_WORDS = frozenset({"SELECT", "WITH", "VALUES", "EXPLAIN", "SHOW", "DESCRIBE", "DESC", "PRAGMA"})

# Words that make a statement write, wherever they appear (a CTE body, after EXPLAIN ANALYZE, ...).
WRITE_WORDS = frozenset({
    "INSERT", "UPDATE", "DELETE", "MERGE", "REPLACE", "UPSERT", "DROP", "CREATE", "ALTER", "TRUNCATE",
    "ATTACH", "DETACH", "VACUUM", "GRANT", "REVOKE", "COPY", "CALL", "EXEC", "EXECUTE", "INTO",
    "LOCK", "REINDEX", "RENAME",
})
# ``REPLACE(...)`` is also a string function in SQLite, Postgres and MySQL.
_WRITE_WORDS_THAT_ARE_ALSO_FUNCTIONS = frozenset({"REPLACE"})

# Functions with effects outside the query's result: server files, other sessions, settings, sequences.
EFFECT_FUNCTIONS = frozenset({
    "SET_CONFIG", "PG_TERMINATE_BACKEND", "PG_CANCEL_BACKEND", "PG_RELOAD_CONF", "PG_ROTATE_LOGFILE",
    "PG_PROMOTE", "PG_SWITCH_WAL", "PG_CREATE_RESTORE_POINT", "PG_LOGICAL_EMIT_MESSAGE", "PG_NOTIFY",
    "LO_IMPORT", "LO_EXPORT", "LO_UNLINK", "LO_CREATE", "LO_CREAT", "LO_FROM_BYTEA", "LO_PUT",
    "LO_TRUNCATE", "LOWRITE", "LO_OPEN",
    "DBLINK", "DBLINK_EXEC", "DBLINK_CONNECT", "DBLINK_SEND_QUERY",
    "PG_READ_FILE", "PG_READ_BINARY_FILE", "PG_LS_DIR", "PG_STAT_FILE", "PG_FILE_WRITE",
    "NEXTVAL", "SETVAL", "PG_ADVISORY_LOCK", "PG_ADVISORY_XACT_LOCK", "PG_TRY_ADVISORY_LOCK",
    "PG_ADVISORY_LOCK_SHARED", "PG_ADVISORY_XACT_LOCK_SHARED", "PG_TRY_ADVISORY_LOCK_SHARED",
    "PG_TRY_ADVISORY_XACT_LOCK", "PG_TRY_ADVISORY_XACT_LOCK_SHARED",
    "LOAD_EXTENSION", "LOAD_FILE", "SYS_EXEC", "SYS_EVAL", "WRITEFILE", "READFILE", "EDIT",
    "FTS3_TOKENIZER",
    # run a query given as text, which the checks never see
    "QUERY_TO_XML", "QUERY_TO_XMLSCHEMA", "QUERY_TO_XML_AND_XMLSCHEMA", "CURSOR_TO_XML",
})

# SQLite PRAGMAs that only read. Those in the second set take a table or index name.
READ_PRAGMAS = frozenset({
    "table_info", "table_xinfo", "table_list", "index_list", "index_info", "index_xinfo",
    "foreign_key_list", "database_list", "collation_list", "function_list", "module_list",
    "pragma_list", "compile_options", "encoding", "user_version", "application_id", "schema_version",
    "page_count", "page_size", "freelist_count", "foreign_keys", "journal_mode", "data_version",
    "query_only", "read_uncommitted",
})
READ_PRAGMAS_WITH_ARGUMENT = frozenset({
    "table_info", "table_xinfo", "index_list", "index_info", "index_xinfo", "foreign_key_list",
})

_PRAGMAS_ABOUT_A_TABLE = frozenset({"table_info", "table_xinfo", "index_list", "foreign_key_list"})

# Write-mode statements that reach the database host's file system, not the database.
HOST_FILE_WORDS = frozenset({"ATTACH", "DETACH", "OUTFILE", "DUMPFILE"})

_QUERY_WORDS = frozenset({"SELECT", "WITH", "VALUES", "TABLE", "INSERT", "UPDATE", "DELETE", "MERGE"})
_FROM_CLAUSE_ENDS = frozenset({
    "WHERE", "GROUP", "GROUP BY", "ORDER", "ORDER BY", "HAVING", "LIMIT", "OFFSET", "UNION", "UNION ALL",
    "INTERSECT", "EXCEPT", "WINDOW", "RETURNING", "SET", "VALUES", "SELECT", "FETCH", "FOR", "QUALIFY",
})
_SKIP_BEFORE_TABLE = frozenset({"ONLY", "LATERAL", "IF", "NOT", "EXISTS", "IF NOT EXISTS", "IF EXISTS",
                                "TEMPORARY", "TEMP"})
_NOT_A_TABLE = frozenset({"SET", "OF", "WHERE", "SELECT", "VALUES", "DEFAULT", "AS", "ON", "NOWAIT", "SKIP"})
_QUOTES = {'"': '"', "`": "`", "[": "]"}
_DOLLAR_QUOTE = re.compile(r"^\$[A-Za-z_]*\$")
_ODD_BACKSLASHES_BEFORE_QUOTE = re.compile(r"(?<!\\)(?:\\\\)*\\['\"]")


class SQLRefused(ValueError):
    """A statement the tool will not run; the message says why and what to do instead."""


@dataclass(frozen=True)
class _Token:
    kind: str  # word, quoted, string, number, punct, op, comment, space, placeholder, error, other
    value: str

    @property
    def upper(self) -> str:
        return " ".join(self.value.upper().split())


@dataclass(frozen=True)
class CheckedStatement:
    """A statement that passed the checks.

    ``text`` is what to execute: the single statement with comments and the
    trailing semicolon removed. ``tables`` are the tables it names, normalized
    (best effort, see the module docstring).
    """

    text: str
    first_word: str
    tables: tuple[str, ...]


def _classify(ttype, value: str) -> str:
    if ttype in T.Error:
        return "error"
    if ttype in T.Comment:
        return "comment"
    if ttype in T.Text.Whitespace or ttype in T.Whitespace or ttype in T.Newline:
        return "space"
    if ttype in T.Name.Placeholder:
        return "placeholder"
    if ttype in T.String.Symbol or (value[:1] in _QUOTES and ttype in T.Name):
        return "quoted"
    if ttype in T.String or (ttype in T.Literal and _DOLLAR_QUOTE.match(value)):
        return "string"
    if ttype in T.Number:
        return "number"
    if ttype in T.Keyword or ttype in T.Name:
        return "word"
    if ttype in T.Punctuation:
        return "punct"
    if ttype in T.Operator or ttype in T.Wildcard:
        return "op"
    return "other"


def tokenize(sql: str) -> list[_Token]:
    """The lexer's tokens, classified; no grouping (it is where parsers disagree most)."""
    return [_Token(_classify(ttype, value), value) for ttype, value in sqlparse.lexer.tokenize(sql)]


def normalize_table_name(name: str) -> str:
    """``"Sales".Orders`` -> ``sales.orders``: quotes removed, lower case, dotted."""
    parts = _split_dotted(name.strip())
    return ".".join(_unquote(p).lower() for p in parts)


def split_table_name(name: str) -> list[str]:
    """``sales."Order Lines"`` -> ``["sales", "Order Lines"]``: parts unquoted, case kept."""
    return [_unquote(p) for p in _split_dotted(name.strip())]


def _split_dotted(name: str) -> list[str]:
    parts, current, quote = [], "", None
    for ch in name:
        if quote:
            current += ch
            if ch == quote:
                quote = None
        elif ch in _QUOTES:
            quote = _QUOTES[ch]
            current += ch
        elif ch == ".":
            parts.append(current.strip())
            current = ""
        else:
            current += ch
    parts.append(current.strip())
    return parts


def _unquote(part: str) -> str:
    if len(part) >= 2 and part[0] in _QUOTES and part[-1] == _QUOTES[part[0]]:
        inner = part[1:-1]
        return inner.replace(part[-1] * 2, part[-1])
    return part


def check_statement(sql: str, *, read_only: bool = True,
                    allowed_tables: Collection[str] | None = None) -> CheckedStatement:
    """Check one SQL statement; raise ``SQLRefused`` with an actionable message, or return it.

    Always: exactly one statement, no ambiguous string quoting. With
    ``read_only``: a reading statement with no write keyword anywhere (CTE
    bodies included), no PRAGMA assignment and no function with effects outside
    the query. With ``allowed_tables``: every table the statement names is in it.
    """
    if not isinstance(sql, str):
        raise SQLRefused(f"the query must be a string of SQL, got {type(sql).__name__}")
    if len(sql) > MAX_QUERY_CHARS:
        raise SQLRefused(f"the query is {len(sql)} characters long; the limit is {MAX_QUERY_CHARS}")
    tokens = tokenize(sql)
    _check_lexing(tokens)
    statement = _single_statement(tokens)
    significant = [t for t in statement if t.kind not in ("space", "comment")]
    if not significant:
        raise SQLRefused("the query is empty (only whitespace or comments); send one SQL statement")
    words = [t for t in significant if t.kind == "word"]
    first_word = words[0].upper if words else ""
    if read_only:
        _check_read_only(significant, first_word)
    else:
        _check_host_files(significant)
    tables = tuple(referenced_tables_in(significant))
    if first_word == "PRAGMA":
        tables += _pragma_table(significant)
    if allowed_tables is not None:
        _check_tables(tables, allowed_tables)
    text = "".join(" " if t.kind == "comment" else t.value for t in statement).strip()
    return CheckedStatement(text=text, first_word=first_word, tables=tables)


def _check_lexing(tokens: list[_Token]) -> None:
    """Refuse what databases would read differently from the lexer, instead of guessing."""
    for before, amp, after in zip(tokens, tokens[1:], tokens[2:]):
        # U&"nextva\006C" is nextval to Postgres and an unknown word to the checks below
        if (before.kind == "word" and before.value.upper() == "U" and amp.value == "&"
                and after.kind in ("quoted", "string")):
            raise SQLRefused("Unicode-escaped names and strings (U&\"...\") are refused: the checks cannot read "
                             "them. Write the name or text plainly")
    for t in tokens:
        if t.kind == "word" and t.value.upper() == "UESCAPE":
            raise SQLRefused("UESCAPE is refused: write the name or text plainly")
        if t.kind == "error":
            raise SQLRefused(f"the query has {t.value!r} where SQL cannot have it (an unterminated string or a "
                             "stray backslash?); fix the quoting")
        if t.kind == "comment" and t.value.startswith("#"):
            raise SQLRefused("'#' starts a comment in MySQL but is an operator in Postgres; write comments as "
                             "-- or /* */")
        if t.kind == "string" and t.value.startswith("$"):
            raise SQLRefused(
                "dollar-quoted strings ($$...$$) are refused: databases other than Postgres do not read "
                "them as strings. Use a standard 'single-quoted' string ('' for a quote inside it)")
        if t.kind in ("string", "quoted"):
            opening = min((p for p in (t.value.find("'"), t.value.find('"')) if p >= 0), default=-1)
            if opening < 0:
                continue
            if _ODD_BACKSLASHES_BEFORE_QUOTE.search(t.value[opening + 1:-1]):
                raise SQLRefused(
                    "a backslash before a quote inside a string is refused: databases disagree on whether "
                    "it ends the string. Write a quote inside a string as two quotes ('it''s')")


def _single_statement(tokens: list[_Token]) -> list[_Token]:
    """The tokens of the one statement; refuse a second one after a semicolon."""
    segments: list[list[_Token]] = [[]]
    for t in tokens:
        if t.kind == "punct" and t.value == ";":
            segments.append([])
        else:
            segments[-1].append(t)
    statements = [seg for seg in segments if any(t.kind not in ("space", "comment") for t in seg)]
    if len(statements) > 1:
        raise SQLRefused(f"the query has {len(statements)} statements; send exactly one statement per "
                         "call (a trailing semicolon is fine)")
    return statements[0] if statements else []


def _is_call(significant: list[_Token], index: int) -> bool:
    following = significant[index + 1] if index + 1 < len(significant) else None
    return following is not None and following.kind == "punct" and following.value == "("


def _check_read_only(significant: list[_Token], first_word: str) -> None:
    allowed = ", ".join(sorted(READ_FIRST_WORDS - {"DESC"}))
    if first_word not in READ_FIRST_WORDS or (significant[0].kind != "word"
                                              and not (significant[0].kind == "punct"
                                                       and significant[0].value == "(")):
        shown = first_word or significant[0].value
        raise SQLRefused(
            f"this SQL tool is read-only and the statement starts with {shown!r}; only statements that "
            f"read are allowed ({allowed}). To change data, ask for a task that may write")
    for index, t in enumerate(significant):
        if t.kind not in ("word", "quoted"):
            continue
        # a quoted name is no keyword, but "nextval"('s') calls nextval just the same
        word = t.upper if t.kind == "word" else _unquote(t.value).upper()
        if t.kind == "word" and word in WRITE_WORDS and not (word in _WRITE_WORDS_THAT_ARE_ALSO_FUNCTIONS
                                        and _is_call(significant, index)):
            raise SQLRefused(
                f"this SQL tool is read-only and the query contains {word}, which writes or changes "
                f"the database (also inside WITH, EXPLAIN or a subquery); only reading is allowed. (If "
                f"{t.value} is meant as a column or table name, quote it: \"{t.value}\")")
        if word in EFFECT_FUNCTIONS and _is_call(significant, index):
            raise SQLRefused(
                f"{t.value}() has effects outside the query (files, sessions, settings or sequences) "
                "and is refused by this read-only SQL tool")
    if first_word == "PRAGMA":
        _check_pragma(significant)


def _check_pragma(significant: list[_Token]) -> None:
    rest = significant[1:]
    if len(rest) >= 2 and rest[1].kind == "punct" and rest[1].value == ".":
        rest = rest[2:]  # schema-qualified: PRAGMA main.table_info(t)
    if not rest or rest[0].kind not in ("word", "quoted"):
        raise SQLRefused("PRAGMA needs a name, e.g. PRAGMA table_info(orders)")
    name = _unquote(rest[0].value).lower()
    after = rest[1:]
    if any(t.kind == "op" and t.value == "=" for t in after):
        raise SQLRefused(f"PRAGMA {name} = ... changes a database setting and is refused by this "
                         "read-only SQL tool; only reading PRAGMAs such as PRAGMA table_info(t) are allowed")
    if name not in READ_PRAGMAS:
        raise SQLRefused(f"PRAGMA {name} is not on the read-only list of this SQL tool; allowed: "
                         f"{', '.join(sorted(READ_PRAGMAS))}")
    if after and name not in READ_PRAGMAS_WITH_ARGUMENT:
        raise SQLRefused(f"PRAGMA {name}(...) with an argument changes a setting and is refused by this "
                         "read-only SQL tool; write PRAGMA {name} to read it".replace("{name}", name))


def _pragma_table(significant: list[_Token]) -> tuple[str, ...]:
    """The table a ``PRAGMA table_info(t)``-style statement reads about."""
    rest = significant[1:]
    if len(rest) >= 2 and rest[1].kind == "punct" and rest[1].value == ".":
        rest = rest[2:]
    if not rest or _unquote(rest[0].value).lower() not in _PRAGMAS_ABOUT_A_TABLE:
        return ()
    arguments = [t for t in rest[1:] if t.kind in ("word", "quoted", "string")]
    if not arguments:
        return ()
    value = arguments[0].value
    if arguments[0].kind == "string":
        value = value[1:-1].replace("''", "'")
    return (normalize_table_name(value),)


def _check_host_files(significant: list[_Token]) -> None:
    for index, t in enumerate(significant):
        if t.kind != "word":
            continue
        word = t.upper
        previous = significant[index - 1].upper if index and significant[index - 1].kind == "word" else ""
        if word in HOST_FILE_WORDS or (word == "INTO" and previous == "VACUUM") or (
                word == "LOAD_EXTENSION" and _is_call(significant, index)):
            shown = f"{significant[index - 1].value} {t.value}" if word == "INTO" else t.value
            raise SQLRefused(
                f"{shown} reaches files on the database host outside the connection's database and is "
                "refused by this SQL tool, even when it may write")


# -- tables --------------------------------------------------------------------------------


def referenced_tables(sql: str) -> list[str]:
    """Tables one statement names, normalized, in order of first appearance (best effort)."""
    tokens = _single_statement(tokenize(sql))
    return referenced_tables_in([t for t in tokens if t.kind not in ("space", "comment")])


def referenced_tables_in(significant: list[_Token]) -> list[str]:
    n = len(significant)
    parent = [-1] * n  # index of the innermost enclosing "(" (-1: top level)
    match: dict[int, int] = {}
    stack: list[int] = []
    for i, t in enumerate(significant):
        if t.kind == "punct" and t.value == "(":
            parent[i] = stack[-1] if stack else -1
            stack.append(i)
        elif t.kind == "punct" and t.value == ")":
            if not stack:
                raise SQLRefused("the query has an unmatched ')'; fix the parentheses")
            opened = stack.pop()
            match[opened] = i
            parent[i] = stack[-1] if stack else -1
        else:
            parent[i] = stack[-1] if stack else -1
    if stack:
        raise SQLRefused("the query has an unmatched '('; fix the parentheses")

    def is_query_group(opened: int) -> bool:
        if opened == -1:
            return True
        for t in significant[opened + 1:match[opened]]:
            if t.kind == "punct" and t.value == "(":
                continue
            return t.kind == "word" and t.upper in _QUERY_WORDS
        return False

    query_groups = {g: is_query_group(g) for g in {-1, *match}}
    ctes = _cte_scopes(significant, parent, match)

    def in_scope(index: int, scope: int) -> bool:
        if scope == -1:
            return True
        return scope < index < match[scope]

    def is_name(t: _Token) -> bool:
        return t.kind in ("word", "quoted")

    found: list[str] = []
    state: dict[int, dict[str, object]] = {}
    i = 0
    while i < n:
        t = significant[i]
        g = parent[i]
        if not query_groups.get(g, False):
            i += 1
            continue
        s = state.setdefault(g, {"from": False, "expect": None})
        word = t.upper if t.kind == "word" else ""
        if s["expect"]:
            if t.kind == "punct" and t.value == "(":
                if not query_groups.get(i, False) and s["expect"] == "from":
                    # a parenthesized join, ``FROM (a JOIN b ON ...)``: a FROM clause of its own
                    query_groups[i] = True
                    state[i] = {"from": True, "expect": "from"}
                s["expect"] = None
                i += 1
                continue
            if word in _SKIP_BEFORE_TABLE:
                i += 1
                continue
            if is_name(t) and word not in _NOT_A_TABLE:
                parts = [t.value]
                j = i + 1
                while (j + 1 < n and significant[j].kind == "punct" and significant[j].value == "."
                       and is_name(significant[j + 1])):
                    parts.append(significant[j + 1].value)
                    j += 2
                is_function = (s["expect"] == "from" and j < n and significant[j].kind == "punct"
                               and significant[j].value == "(")
                if not is_function:
                    name = ".".join(_unquote(p).lower() for p in parts)
                    is_cte = len(parts) == 1 and any(c == name and in_scope(i, scope) for c, scope in ctes)
                    if not is_cte and name not in found:
                        found.append(name)
                s["expect"] = None
                i = j
                continue
            if s["expect"] == "from":
                raise SQLRefused(
                    f"could not tell which table follows FROM/JOIN (found {t.value!r}); with a table "
                    "allow-list the query must name its tables plainly")
            s["expect"] = None
        previous = significant[i - 1].upper if i else ""
        if (word == "FROM" and previous != "DISTINCT") or word.endswith("JOIN"):
            s["from"], s["expect"] = True, "from"
        elif t.kind == "punct" and t.value == "," and s["from"]:
            s["expect"] = "from"
        elif word == "USING" and not (i + 1 < n and significant[i + 1].value == "("):
            s["expect"] = "single"
        elif word in ("INTO", "TABLE", "VIEW") or (word == "UPDATE" and _starts_update(significant, i)):
            s["from"], s["expect"] = False, "single"
        elif word == "TRUNCATE" or (word in ("DESCRIBE", "DESC") and i == 0):
            s["expect"] = "single"
        elif word in _FROM_CLAUSE_ENDS:
            s["from"] = False
        i += 1
    return found


def _starts_update(significant: list[_Token], index: int) -> bool:
    """UPDATE t ... (not FOR UPDATE, ON DUPLICATE KEY UPDATE, DO UPDATE)."""
    previous = significant[index - 1].upper if index else ""
    return previous not in ("FOR", "KEY", "DO", "NO KEY")


def _cte_scopes(significant: list[_Token], parent: list[int], match: dict[int, int]) -> list[tuple[str, int]]:
    """(name, scope) for each common table expression; scope is the enclosing '(' (-1: top level)."""
    result: list[tuple[str, int]] = []
    n = len(significant)
    for i, t in enumerate(significant):
        if not (t.kind == "word" and t.upper == "WITH"):
            continue
        scope = parent[i]
        j = i + 1
        if j < n and significant[j].upper == "RECURSIVE":
            j += 1
        while j < n and significant[j].kind in ("word", "quoted"):
            name = _unquote(significant[j].value).lower()
            j += 1
            if j < n and significant[j].value == "(" and j in match:  # column list
                j = match[j] + 1
            if not (j < n and significant[j].upper == "AS"):
                break
            j += 1
            while j < n and significant[j].upper in ("NOT", "MATERIALIZED"):
                j += 1
            if not (j < n and significant[j].value == "(" and j in match):
                break
            result.append((name, scope))
            j = match[j] + 1
            if j < n and significant[j].kind == "punct" and significant[j].value == ",":
                j += 1
                continue
            break
    return result


def _check_tables(tables: Iterable[str], allowed_tables: Collection[str]) -> None:
    allowed = {normalize_table_name(a) for a in allowed_tables}
    for name in tables:
        if name not in allowed:
            listed = ", ".join(sorted(allowed)) or "(none)"
            raise SQLRefused(
                f"table {name!r} is not one this SQL tool may use; the allowed tables are: {listed}. "
                "Name them exactly like that in the query")
