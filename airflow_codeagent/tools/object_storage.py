"""ObjectStorageTool: files under one base location (local, S3, GCS, ...) as tools the model can call.

Built on Airflow's ``ObjectStoragePath``, so any store Airflow can reach with a
connection works. Every path the model passes is relative to ``base`` and is
checked before anything touches storage: ``..``, absolute paths, ``~`` and URL
schemes are refused, and on a local file system the real path (symbolic links
resolved) must stay under the real ``base``. Results are plain data, capped
with a visible marker.

Limit: the symbolic-link check and the following read or write are two steps;
a process that can create links under ``base`` between them could redirect
one operation. Model code cannot (it has no file system access of its own).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import re
from collections.abc import Callable, Iterator
from typing import Any

from airflow_codeagent.tools.base import Tool
from airflow_codeagent.tools.sql import TRUNCATED_KEY, _check_prefix, _positive_int, _tool_name, plain_value

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")
_LOCAL_PROTOCOLS = ("file", "local", "")
_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json",
            ".parquet": "parquet", ".pq": "parquet"}
_MAX_JSON_BYTES = 20 * 1024 * 1024


class PathRefused(ValueError):
    """A path that is not under the tool's base; the message says what to pass instead.

    The tools hand model code a plain ``ValueError`` with the same message
    (model code sees builtin exception types as themselves).
    """


def _plain_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``func``; a ``PathRefused`` leaves as the ``ValueError`` model code can catch."""

    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except PathRefused as exc:
            raise ValueError(str(exc)) from None

    return call


class ObjectStorageTool:
    """``ls``, ``read_text``, ``read_table`` (and with ``write=True`` ``write_text``) under ``base``.

    Args:
        base: the root the model may use, e.g. ``"s3://reports/daily/"`` or
            ``"file:///data/exports/"`` (or an ``ObjectStoragePath``).
        conn_id: the Airflow connection for the store (credentials stay in the worker).
        write: add ``write_text`` (side-effecting: not repeated when a retried
            task replays its steps).
        prefix: prepended to the tool names (``reports_ls``, ...).
        max_chars: most characters ``read_text`` returns (the model may ask for fewer).
        max_rows: most rows ``read_table`` returns (the model may ask for fewer).
        max_entries: most entries ``ls`` returns.
        max_result_chars: size cap of one ``read_table`` result (as JSON).
        max_write_chars: largest text ``write_text`` accepts.
        description: a few words on what the files are, shown to the model.
    """

    def __init__(self, base: Any, conn_id: str | None = None, *, write: bool = False,
                 prefix: str | None = None, max_chars: int = 20_000, max_rows: int = 200,
                 max_entries: int = 500, max_result_chars: int = 100_000, max_write_chars: int = 1_000_000,
                 description: str | None = None) -> None:
        if not isinstance(base, str):
            if not hasattr(base, "joinpath") or not hasattr(base, "protocol"):
                raise ValueError(f"base must be a URL string or an ObjectStoragePath, got {type(base).__name__}")
            if conn_id is None:
                conn_id = getattr(base, "conn_id", None)
        elif not base:
            raise ValueError("base must name a location, e.g. 'file:///data/exports/' or 's3://bucket/prefix/'")
        for name, value in (("max_chars", max_chars), ("max_rows", max_rows), ("max_entries", max_entries),
                            ("max_result_chars", max_result_chars), ("max_write_chars", max_write_chars)):
            _positive_int(name, value)
        _check_prefix(prefix)
        self.base = base
        self.conn_id = conn_id
        self.write = bool(write)
        self.prefix = prefix
        self.max_chars = max_chars
        self.max_rows = max_rows
        self.max_entries = max_entries
        self.max_result_chars = max_result_chars
        self.max_write_chars = max_write_chars
        self.description = description
        self._root: Any = None if isinstance(base, str) else base
        self._tools: list[Tool] | None = None

    def __repr__(self) -> str:
        return f"ObjectStorageTool({str(self.base)!r}, write={self.write})"

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_tools"] = None
        if isinstance(self.base, str):
            state["_root"] = None
        return state

    # -- the tools the model sees ------------------------------------------------------

    def tools(self) -> list[Tool]:
        if self._tools is None:
            tools = [Tool(self._ls_function(), name=_tool_name(self.prefix, "ls")),
                     Tool(self._read_text_function(), name=_tool_name(self.prefix, "read_text")),
                     Tool(self._read_table_function(), name=_tool_name(self.prefix, "read_table"))]
            if self.write:
                tools.append(Tool(self._write_text_function(), name=_tool_name(self.prefix, "write_text"),
                                  side_effect=True))
            self._tools = tools
        return list(self._tools)

    def _where(self) -> str:
        where = f"the storage location {str(self.base)!r}"
        return f"{where} ({self.description})" if self.description else where

    _PATH_RULE = ("Paths are relative to that location, e.g. \"2024/summary.csv\"; '..', absolute paths and "
                  "URLs are refused with a ValueError.")

    def _ls_function(self) -> Callable[..., list[dict]]:
        def ls(path: str = ".") -> list[dict]:
            return _plain_errors(self.ls)(path)

        ls.__doc__ = (
            f"List the files and folders in a folder of {self._where()}.\n\n{self._PATH_RULE} At most "
            f"{self.max_entries} entries; when there are more, the last item is "
            f"{{\"{TRUNCATED_KEY}\": \"...\"}}.\n\n"
            "Args:\n    path: the folder, relative to the location; \".\" is the location itself.\n\n"
            "Returns:\n    One dict per entry: {\"path\": relative path, \"type\": \"file\" or \"directory\", "
            "\"size\": bytes}, sorted by path.\n")
        return ls

    def _read_text_function(self) -> Callable[..., str]:
        def read_text(path: str, max_chars: int = self.max_chars) -> str:
            return _plain_errors(self.read_text)(path, max_chars)

        read_text.__doc__ = (
            f"Read a text file of {self._where()} (UTF-8; undecodable bytes are replaced).\n\n"
            f"{self._PATH_RULE} At most {self.max_chars} characters: a longer file is cut and ends with a "
            "line starting \"[... truncated\" that says how much was left out.\n\n"
            "Args:\n    path: the file, relative to the location.\n"
            f"    max_chars: characters to return at most (up to {self.max_chars}).\n\n"
            "Returns:\n    The file's text.\n")
        return read_text

    def _read_table_function(self) -> Callable[..., list[dict]]:
        def read_table(path: str, max_rows: int = self.max_rows, format: str | None = None) -> list[dict]:
            return _plain_errors(self.read_table)(path, max_rows, format)

        read_table.__doc__ = (
            f"Read rows from a CSV, TSV, JSON lines, JSON (a list of records) or Parquet file of "
            f"{self._where()}; a .gz suffix is decompressed.\n\n"
            f"{self._PATH_RULE} At most {self.max_rows} rows: when the file has more, or the rows are larger "
            f"than {self.max_result_chars} characters, the last item is {{\"{TRUNCATED_KEY}\": \"...\"}} "
            "instead of a row.\n\n"
            "Args:\n    path: the file, relative to the location.\n"
            f"    max_rows: rows to return at most (up to {self.max_rows}).\n"
            "    format: \"csv\", \"tsv\", \"jsonl\", \"json\" or \"parquet\" when the file name does not say.\n\n"
            "Returns:\n    A list of rows, each a dict {column: value}. CSV and TSV values are strings "
            "(convert them yourself); dates are ISO strings.\n")
        return read_table

    def _write_text_function(self) -> Callable[[str, str], dict]:
        def write_text(path: str, text: str) -> dict:
            return _plain_errors(self.write_text)(path, text)

        write_text.__doc__ = (
            f"Write a text file (UTF-8) under {self._where()}, replacing it if it exists; missing folders "
            f"are created.\n\n{self._PATH_RULE} At most {self.max_write_chars} characters.\n\n"
            "Args:\n    path: the file, relative to the location.\n    text: the whole content.\n\n"
            "Returns:\n    {\"path\": relative path, \"characters\": characters written}.\n")
        return write_text

    # -- paths --------------------------------------------------------------------------

    def root(self) -> Any:
        """The base as an ``ObjectStoragePath``, made at first use (in the worker)."""
        if self._root is None:
            from airflow.sdk import ObjectStoragePath

            self._root = ObjectStoragePath(self.base, conn_id=self.conn_id)
        return self._root

    def _is_local(self) -> bool:
        return str(getattr(self.root(), "protocol", "") or "") in _LOCAL_PROTOCOLS

    def resolve(self, path: Any) -> tuple[Any, str]:
        """(ObjectStoragePath, path relative to base) for a model-supplied path, or ``PathRefused``."""
        if not isinstance(path, str):
            raise PathRefused(f"a path must be a string, got {type(path).__name__}")
        if "\x00" in path:
            raise PathRefused("a path cannot contain a NUL character")
        if _SCHEME.match(path) or "://" in path:
            raise PathRefused(f"{path!r} is a URL; paths are relative to {str(self.base)!r}, e.g. "
                              "'2024/summary.csv'")
        if path.startswith(("/", "\\", "~")):
            raise PathRefused(f"{path!r} is absolute; paths are relative to {str(self.base)!r}, e.g. "
                              "'2024/summary.csv'")
        parts = re.split(r"[/\\]", path)
        if ".." in parts:
            raise PathRefused(f"{path!r} goes up with '..'; only paths under {str(self.base)!r} can be used")
        clean = [p for p in parts if p not in ("", ".")]
        relative = "/".join(clean)
        root = self.root()
        target = root.joinpath(*clean) if clean else root
        if self._is_local():
            base_real = os.path.realpath(root.path)
            real = os.path.realpath(target.path)
            if real != base_real and not real.startswith(base_real.rstrip(os.sep) + os.sep):
                raise PathRefused(f"{relative or '.'!r} leads outside {str(self.base)!r} through a symbolic "
                                  "link; only files under the location can be used")
        return target, relative or "."

    # -- what the tools do --------------------------------------------------------------

    def ls(self, path: str = ".") -> list[dict]:
        target, relative = self.resolve(path)
        if not target.exists():
            raise FileNotFoundError(f"there is no folder {relative!r} under {str(self.base)!r}; ls() shows "
                                    "the top level")
        if not target.is_dir():
            raise NotADirectoryError(f"{relative!r} is a file, not a folder; read it with read_text() or "
                                     "read_table()")
        entries = []
        listed = os.path.realpath(target.path) if self._is_local() else target.path
        for info in target.fs.ls(listed, detail=True):
            name = str(info.get("name", "")).rstrip("/").rsplit("/", 1)[-1]
            if not name:
                continue
            child = name if relative == "." else f"{relative}/{name}"
            if self._is_local() and info.get("islink"):
                try:
                    self.resolve(child)
                except PathRefused:
                    continue  # a link out of the base: not the model's to see
                kind = "directory" if os.path.isdir(os.path.join(listed, name)) else "file"
            else:
                kind = "directory" if info.get("type") == "directory" else "file"
            entry: dict[str, Any] = {"path": child, "type": kind}
            if kind == "file":
                entry["size"] = int(info.get("size") or 0)
            entries.append(entry)
        entries.sort(key=lambda e: e["path"])
        if len(entries) > self.max_entries:
            total = len(entries)
            entries = entries[:self.max_entries]
            entries.append({TRUNCATED_KEY: f"showing the first {self.max_entries} of {total} entries; list a "
                                           "sub-folder to see fewer"})
        return entries

    def _file(self, path: str) -> tuple[Any, str]:
        target, relative = self.resolve(path)
        if relative == "." or target.is_dir():
            raise IsADirectoryError(f"{relative!r} is a folder; ls({relative!r}) lists it")
        if not target.exists():
            raise FileNotFoundError(f"there is no file {relative!r} under {str(self.base)!r}; ls() shows what "
                                    "is there")
        return target, relative

    def read_text(self, path: str, max_chars: int | None = None) -> str:
        limit = self._cap("max_chars", max_chars, self.max_chars)
        target, relative = self._file(path)
        with target.open("rb") as raw:
            stream = gzip.GzipFile(fileobj=raw) if relative.endswith(".gz") else raw
            with io.TextIOWrapper(stream, encoding="utf-8", errors="replace") as text_stream:
                text = text_stream.read(limit + 1)
        if len(text) <= limit:
            return text
        try:
            size = f" of a {int(target.stat().st_size)}-byte file"
        except Exception:  # noqa: BLE001 - a store without sizes: the marker says less
            size = ""
        more = f"; pass max_chars up to {self.max_chars}" if limit < self.max_chars else ""
        return (text[:limit] + f"\n[... truncated: showing the first {limit} characters{size}{more}; "
                "read_table() reads tabular files row by row]")

    def read_table(self, path: str, max_rows: int | None = None, format: str | None = None) -> list[dict]:
        limit = self._cap("max_rows", max_rows, self.max_rows)
        target, relative = self._file(path)
        kind = self._format(relative, format)
        with target.open("rb") as raw:
            stream = gzip.GzipFile(fileobj=raw) if relative.endswith(".gz") else raw
            if kind == "parquet":
                rows_iter = _parquet_rows(stream, limit + 1)
            elif kind == "json":
                rows_iter = _json_rows(stream)
            elif kind == "jsonl":
                rows_iter = _jsonl_rows(stream, relative)
            else:
                text = io.TextIOWrapper(stream, encoding="utf-8", errors="replace", newline="")
                rows_iter = iter(csv.DictReader(text, delimiter="\t" if kind == "tsv" else ","))
            return self._collect(rows_iter, limit)

    def _collect(self, rows: Iterator[Any], limit: int) -> list[dict]:
        result: list[dict] = []
        size = 2
        for row in rows:
            if len(result) == limit:
                result.append({TRUNCATED_KEY: f"showing the first {limit} rows; the file has more"
                                              + (f" (pass max_rows up to {self.max_rows})"
                                                 if limit < self.max_rows else "")})
                return result
            item = plain_value(row if isinstance(row, dict) else {"value": row}, max_chars=2_000)
            item = {("" if k is None else str(k)): v for k, v in item.items()}
            size += len(json.dumps(item)) + 2
            if size > self.max_result_chars and result:
                result.append({TRUNCATED_KEY: f"showing the first {len(result)} rows: the rows are larger than "
                                              f"{self.max_result_chars} characters; ask for fewer rows"})
                return result
            result.append(item)
        return result

    def write_text(self, path: str, text: str) -> dict:
        if not isinstance(text, str):
            raise TypeError(f"write_text() takes the content as a string, got {type(text).__name__}")
        if len(text) > self.max_write_chars:
            raise ValueError(f"the text has {len(text)} characters; write_text() accepts at most "
                             f"{self.max_write_chars}")
        target, relative = self.resolve(path)
        if relative == ".":
            raise IsADirectoryError("write_text() needs a file path, e.g. 'summary.md'")
        if target.exists() and target.is_dir():
            raise IsADirectoryError(f"{relative!r} is a folder; choose a file name inside it")
        target.parent.mkdir(parents=True, exist_ok=True)
        target, relative = self.resolve(relative)  # folders now exist: check the real path again
        target.write_text(text, encoding="utf-8")
        return {"path": relative, "characters": len(text)}

    @staticmethod
    def _cap(name: str, requested: Any, cap: int) -> int:
        if requested is None:
            return cap
        if not isinstance(requested, int) or isinstance(requested, bool) or requested < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {requested!r}")
        return min(requested, cap)

    @staticmethod
    def _format(relative: str, format: str | None) -> str:
        if format is not None:
            kind = str(format).lower().lstrip(".")
            if kind in ("ndjson",):
                kind = "jsonl"
            if kind not in set(_FORMATS.values()):
                raise ValueError(f"format must be one of csv, tsv, jsonl, json, parquet; got {format!r}")
            return kind
        name = relative[:-3] if relative.endswith(".gz") else relative
        suffix = os.path.splitext(name)[1].lower()
        if suffix not in _FORMATS:
            raise ValueError(f"cannot tell the format of {relative!r} from its name; pass format=\"csv\", "
                             "\"tsv\", \"jsonl\", \"json\" or \"parquet\", or read_text() it")
        return _FORMATS[suffix]


def _jsonl_rows(stream: Any, relative: str) -> Iterator[Any]:
    text = io.TextIOWrapper(stream, encoding="utf-8", errors="replace")
    for number, line in enumerate(text, start=1):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"line {number} of {relative!r} is not JSON: {exc.msg}") from None


def _json_rows(stream: Any) -> Iterator[Any]:
    data = stream.read(_MAX_JSON_BYTES + 1)
    if len(data) > _MAX_JSON_BYTES:
        raise ValueError(f"the JSON file is larger than {_MAX_JSON_BYTES >> 20} MiB; read_text() a part of it")
    try:
        value = json.loads(data.decode("utf-8", errors="replace"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"the file is not JSON: {exc.msg} (line {exc.lineno}); for JSON lines pass "
                         "format=\"jsonl\"") from None
    if not isinstance(value, list):
        raise ValueError("the JSON file holds one object, not a list of records; read_text() it instead")
    return iter(value)


def _parquet_rows(stream: Any, count: int) -> Iterator[Any]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError("reading Parquet needs pyarrow, which is not installed in the worker") from None
    reader = pq.ParquetFile(stream)
    produced = 0
    for batch in reader.iter_batches(batch_size=min(count, 10_000)):
        for row in batch.to_pylist():
            yield row
            produced += 1
            if produced >= count:
                return


__all__ = ["ObjectStorageTool", "PathRefused"]
