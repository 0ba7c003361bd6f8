"""An OpenAI-compatible chat server on 127.0.0.1 that answers from a script.

For testing agent DAGs without a model: the real litellm client makes real
HTTP calls, and the server records what it was asked. Each scripted entry is
one HTTP response: a reply text, an HTTP error, a malformed body, or a
dropped connection.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Reply:
    """A successful chat completion with the given text and token counts.

    ``tool_calls`` makes it a native tool-calling reply: each is
    ``{"name": ..., "arguments": {...}}``; a string ``arguments`` is sent as it is, to
    script a provider that returns arguments which are not valid JSON.
    """

    text: str = ""
    prompt_tokens: int = 100
    completion_tokens: int = 20
    delay_s: float = 0.0
    tool_calls: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class HTTPError:
    """An error response, e.g. ``HTTPError(429, headers={"Retry-After": "1"})``."""

    status: int
    message: str = "scripted error"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Malformed:
    """A 200 response whose body is not a chat completion."""

    body: str = "{not json"


@dataclass(frozen=True)
class DropConnection:
    """Close the socket without answering."""


ScriptEntry = Reply | HTTPError | Malformed | DropConnection | str


@dataclass(frozen=True)
class RecordedRequest:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def messages(self) -> list[dict[str, Any]]:
        return self.body.get("messages", [])


class ScriptedLLMServer:
    """``with ScriptedLLMServer(["reply 1", "reply 2"]) as server: server.api_base``.

    A plain string is shorthand for ``Reply(text)``. When the script runs out,
    the server answers 500 with a message saying so, which fails a test
    loudly instead of hanging it.
    """

    def __init__(self, script: Iterable[ScriptEntry] = (), *, model: str = "scripted-model",
                 responder: Callable[[RecordedRequest], ScriptEntry | None] | None = None,
                 honour_stop: bool = False) -> None:
        """``responder`` may answer a request itself (return an entry) before the script is used,
        e.g. to answer side calls such as summaries wherever they happen.

        ``honour_stop`` cuts each reply text before the first of the request's ``stop``
        strings, as a real server does; off by default, so a script sends exactly its text."""
        self._script: deque[ScriptEntry] = deque(script)
        self.honour_stop = honour_stop
        self.responder = responder
        self._lock = threading.Lock()
        self.requests: list[RecordedRequest] = []
        self.model = model
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="scripted-llm", daemon=True)

    @property
    def api_base(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    @property
    def remaining(self) -> int:
        with self._lock:
            return len(self._script)

    def reset(self, script: Iterable[ScriptEntry] = ()) -> None:
        """Replace the script and forget recorded requests (one server across many tests)."""
        with self._lock:
            self._script = deque(script)
            self.requests.clear()

    def extend(self, entries: Iterable[ScriptEntry]) -> None:
        with self._lock:
            self._script.extend(entries)

    def start(self) -> ScriptedLLMServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> ScriptedLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _next(self, request: RecordedRequest) -> ScriptEntry | None:
        with self._lock:
            self.requests.append(request)
            if self.responder is not None:
                answer = self.responder(request)
                if answer is not None:
                    return answer
            return self._script.popleft() if self._script else None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

            def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802 - http.server naming
                if self.path.rstrip("/").endswith("/models"):
                    body = {"object": "list", "data": [{"id": server.model, "object": "model"}]}
                    self._send(200, json.dumps(body).encode())
                else:
                    self._send(404, b'{"error": {"message": "not found"}}')

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {"_unparsed": raw.decode("utf-8", "replace")}
                headers = {k.lower(): v for k, v in self.headers.items()}
                entry = server._next(RecordedRequest(self.path, headers, body))
                if entry is None:
                    error = {"error": {"message": "scripted server: script exhausted", "type": "server_error"}}
                    self._send(500, json.dumps(error).encode())
                    return
                if isinstance(entry, str):
                    entry = Reply(entry)
                if isinstance(entry, Reply) and server.honour_stop:
                    entry = _cut_at_stop(entry, body.get("stop"))
                if isinstance(entry, Reply):
                    if entry.delay_s:
                        time.sleep(entry.delay_s)
                    self._send(200, json.dumps(_completion(entry, body.get("model", server.model))).encode())
                elif isinstance(entry, HTTPError):
                    error = {"error": {"message": entry.message, "type": "scripted", "code": entry.status}}
                    self._send(entry.status, json.dumps(error).encode(), entry.headers)
                elif isinstance(entry, Malformed):
                    self._send(200, entry.body.encode())
                elif isinstance(entry, DropConnection):
                    self.close_connection = True
                    self.connection.close()

        return Handler


def _cut_at_stop(reply: Reply, stop: str | list[str] | None) -> Reply:
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    cuts = [reply.text.find(s) for s in stops if s and s in reply.text]
    return replace(reply, text=reply.text[:min(cuts)]) if cuts else reply


def _arguments_text(arguments: dict[str, Any] | str) -> str:
    return arguments if isinstance(arguments, str) else json.dumps(arguments)


def _completion(reply: Reply, model: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
    if reply.tool_calls:
        message["tool_calls"] = [
            {"id": f"call_{index}", "type": "function",
             "function": {"name": call["name"], "arguments": _arguments_text(call.get("arguments", {}))}}
            for index, call in enumerate(reply.tool_calls)]
    return {
        "id": "chatcmpl-scripted",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{
            "index": 0,
            "message": message,
            "finish_reason": "tool_calls" if reply.tool_calls else "stop",
        }],
        "usage": {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens,
        },
    }
