"""The isolated executor's child process: where model code runs.

``IsolatedExecutor`` starts this as ``python -I -S -B -c BOOTSTRAP CONFIG`` in
a new session, with an empty environment, a private scratch directory as
working directory, stdin/stdout on ``/dev/null`` and two pipes. The bootstrap
(see ``isolated.py``) puts only the directories it needs on ``sys.path`` and
registers a bare ``airflow_codeagent`` package, so that the top-level
``__init__`` (the agent loop, litellm, pendulum) is never imported here.

``main`` then, in this order:

1. leaves the host's network: ``unshare(CLONE_NEWUSER | CLONE_NEWNET)``, or
   ``CLONE_NEWNET`` alone, while the process is still single-threaded; the
   user namespace also drops every capability in the host's namespace, so
   even a child of a root worker cannot read ``/proc/<worker>/environ`` or
   raise its own limits again. If neither is permitted, socket creation is
   refused in Python instead (weaker: only Python code is covered);
2. confines itself with Landlock (``landlock.py``) where the kernel has it:
   reads only beneath the interpreter's own directories, writes only in its
   scratch directory, no TCP, no signals to processes outside the sandbox;
3. installs a seccomp filter (``seccomp.py``) against what the worker's uid
   reaches and neither of the above covers: no socket of any family (so no
   UNIX socket with a path), no io_uring, no ptrace, signals, limits or
   priorities of other processes, no chmod/chown/utime/xattr writes, no SysV
   IPC, POSIX message queues, keyrings or inotify, no leaving its process
   group, no namespaces, mounts, BPF or userfaultfd, no call through
   another ABI;
4. sets resource limits (address space, file size, open files, core dumps,
   optionally processes; CPU time per step);
5. imports the authorized modules (inside those limits);
6. serves the parent: ``init`` (inputs), then ``run`` / ``variables``
   requests until the command pipe closes.

Model code runs in a ``RestrictedExecutor`` whose tools are stubs: a call
becomes a ``tool`` message to the parent, which runs the real tool (holding
the credentials) and answers with the JSON result or the error's type and
message. The policy (``policy.py``), compiler (``instrument.py``), clock and
output buffer are the in-process executor's own, through its public API.
"""

from __future__ import annotations

import importlib
import os
import resource
import signal
import sys
from collections.abc import Callable
from typing import Any, BinaryIO

from airflow_codeagent.sandbox import landlock, protocol, seccomp
from airflow_codeagent.sandbox.observation import ExecutionError
from airflow_codeagent.sandbox.restricted import RestrictedExecutor

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000

NETWORK_USER_NAMESPACE = "user+network namespace"
NETWORK_NAMESPACE = "network namespace"
NETWORK_PYTHON_ONLY = "python socket block"

_VARIABLE_JSON_LIMIT = 1 << 20
_VARIABLE_ITEMS_LIMIT = 100_000


class Channel:
    """Line-delimited JSON over the two pipes the parent passed in."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self._reader: BinaryIO = open(read_fd, "rb", buffering=1 << 16)  # noqa: SIM115 - lives as long as the process
        self._write_fd = write_fd

    def send(self, message: dict[str, Any]) -> None:
        self.send_bytes(protocol.dumps(message))

    def send_bytes(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._write_fd, view)
            view = view[written:]

    def recv(self) -> dict[str, Any]:
        line = self._reader.readline()
        if not line:
            raise EOFError("the parent closed the command pipe")
        return protocol.loads(line)


# -- isolation -----------------------------------------------------------------------------


def isolate_network() -> str:
    """Leave the host's network namespace; say how (must run before any thread starts)."""
    unshare: Callable[[int], None] | None = getattr(os, "unshare", None)  # Python 3.12+
    if unshare is None:
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc_unshare = libc.unshare
        except (OSError, AttributeError):
            libc_unshare = None
        if libc_unshare is not None:
            def unshare(flags: int) -> None:
                if libc_unshare(flags) != 0:
                    errno = ctypes.get_errno()
                    raise OSError(errno, os.strerror(errno))
    if unshare is not None:
        for flags, label in ((CLONE_NEWUSER | CLONE_NEWNET, NETWORK_USER_NAMESPACE),
                             (CLONE_NEWNET, NETWORK_NAMESPACE)):
            try:
                unshare(flags)
            except OSError:
                continue
            return label
    _block_python_sockets()
    return NETWORK_PYTHON_ONLY


def _block_python_sockets() -> None:
    """Fallback without namespaces: no new sockets from Python code (C extensions are not covered)."""
    import _socket
    import socket

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError("network access is disabled in the sandbox")

    class NoNetworkSocket(_socket.socket):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            refuse()

    for module in (socket, _socket):
        module.socket = NoNetworkSocket  # type: ignore[misc]
        module.SocketType = NoNetworkSocket  # type: ignore[misc]
        if hasattr(module, "socketpair"):
            module.socketpair = refuse  # type: ignore[assignment]
        if hasattr(module, "fromfd"):
            module.fromfd = refuse  # type: ignore[assignment]
    socket.create_connection = refuse  # type: ignore[assignment]
    socket.create_server = refuse  # type: ignore[assignment]


def _cap(which: int, value: int) -> None:
    _, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(which, (value, value))


def set_limits(config: dict[str, Any]) -> None:
    """Process-wide limits; the CPU limit is re-armed per step (``arm_cpu_limit``)."""
    if config.get("memory_limit_mb"):
        _cap(resource.RLIMIT_AS, int(config["memory_limit_mb"]) << 20)
    if config.get("file_size_limit_mb") is not None:
        _cap(resource.RLIMIT_FSIZE, int(config["file_size_limit_mb"]) << 20)
    if config.get("open_files_limit"):
        _cap(resource.RLIMIT_NOFILE, int(config["open_files_limit"]))
    if config.get("process_limit"):
        _cap(resource.RLIMIT_NPROC, int(config["process_limit"]))
    _cap(resource.RLIMIT_CORE, 0)


def arm_cpu_limit(limit_s: float | None) -> None:
    """Allow ``limit_s`` more seconds of CPU time from now (SIGXCPU ends the process after)."""
    if limit_s is None:
        return
    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft = int(usage.ru_utime + usage.ru_stime + limit_s) + 1
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def preimport(names: list[str]) -> None:
    """Import authorized modules now, so the first step does not pay for them."""
    for name in names:
        try:
            importlib.import_module(name)
        except BaseException:  # noqa: BLE001 - model code gets the ImportError when it imports
            pass


# -- serving the parent --------------------------------------------------------------------


def _tool_stub(name: str, channel: Channel, max_message_bytes: int) -> Callable[..., Any]:
    def call_tool(*args: Any, **kwargs: Any) -> Any:
        wire_args = []
        for index, value in enumerate(args):
            try:
                wire_args.append(protocol.encode(value))
            except protocol.WireError as exc:
                raise TypeError(_argument_error(name, exc, f"argument {index + 1}")) from None
        wire_kwargs = {}
        for key, value in kwargs.items():
            try:
                wire_kwargs[key] = protocol.encode(value)
            except protocol.WireError as exc:
                raise TypeError(_argument_error(name, exc, f"argument {key!r}")) from None
        data = protocol.dumps({"op": "tool", "name": name, "args": wire_args, "kwargs": wire_kwargs})
        if len(data) > max_message_bytes:
            raise ValueError(f"the arguments of {name}() are {_mib(len(data))} as JSON; the sandbox "
                             f"sends at most {_mib(max_message_bytes)} to a tool; pass less data")
        channel.send_bytes(data)
        reply = channel.recv()
        if reply.get("op") != "tool_result":
            raise protocol.ProtocolError(f"expected a tool result, got {reply.get('op')!r}")
        if reply.get("ok"):
            return reply.get("value")
        raise protocol.rebuild_exception(reply.get("error"))

    call_tool.__name__ = name
    call_tool.__qualname__ = name
    return call_tool


def _argument_error(tool: str, exc: protocol.WireError, where: str) -> str:
    return (f"{tool}() cannot receive this value: {exc.describe(where)}. Tools run outside the "
            f"sandbox and take {protocol.SUPPORTED_TYPES_TEXT}")


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB"


def _result_message(executor: RestrictedExecutor, code: str, time_limit_s: float | None,
                    max_message_bytes: int) -> bytes:
    observation = executor.run(code, time_limit_s=time_limit_s)
    called = observation.final_answer_called
    error = observation.error
    answer = None
    if called:
        try:
            answer = protocol.encode(observation.final_answer)
        except protocol.WireError as exc:  # final_answer() admits plain data only; kept as a backstop
            called = False
            error = ExecutionError("TypeError", (
                f"final_answer() was not accepted: {exc.describe('the answer')}; convert the answer "
                "to plain data and call final_answer() again"), "")
    message = {
        "op": "result",
        "stdout": observation.stdout,
        "value_repr": observation.value_repr,
        "error": None if error is None else error.to_dict(),
        "final_answer_called": called,
        "final_answer": answer,
    }
    data = protocol.dumps(message)
    if len(data) > max_message_bytes:
        message.update(final_answer_called=False, final_answer=None, error=ExecutionError(
            "ValueError", f"the step's result is {_mib(len(data))} as JSON (final answer and output); "
            f"the sandbox returns at most {_mib(max_message_bytes)}; return less data", "").to_dict())
        data = protocol.dumps(message)
    return data


def _variables_message(executor: RestrictedExecutor, time_limit_s: float) -> dict[str, Any]:
    values: dict[str, Any] = {}
    executor.clock.start(time_limit_s, "listing variables took too long")
    try:
        for name, value in executor.variables().items():
            try:
                # Encoding is not interruptible: big containers go straight to the bounded repr.
                if not (hasattr(value, "__len__") and len(value) > _VARIABLE_ITEMS_LIMIT):
                    encoded = protocol.encode(value)
                    if len(protocol.dumps({"op": "v", "v": encoded})) <= _VARIABLE_JSON_LIMIT:
                        values[name] = {"value": encoded}
                        continue
            except BaseException:  # noqa: BLE001 - model-defined objects may do anything
                pass
            try:
                text = executor._safe_repr(value)
            except BaseException:  # noqa: BLE001 - model-defined __repr__
                text = f"<unrepresentable {type(value).__name__}>"
            values[name] = {"type": type(value).__name__, "repr": text}
    finally:
        executor.clock.stop()
    return {"op": "variables", "values": values}


class _Cancel:
    """SIGUSR1 from the parent cancels the run (sticky, like ``RestrictedExecutor.cancel``)."""

    requested = False
    executor: RestrictedExecutor | None = None

    @classmethod
    def handle(cls, signum: int, frame: Any) -> None:
        cls.requested = True
        if cls.executor is not None:
            cls.executor.cancel()


_cancel = _Cancel


def serve(config: dict[str, Any], channel: Channel) -> None:
    max_message_bytes = int(config["max_message_bytes"])
    tools = {name: _tool_stub(name, channel, max_message_bytes) for name in config["tools"]}
    init = channel.recv()
    if init.get("op") != "init":
        raise protocol.ProtocolError("the first message must be 'init'")
    executor = RestrictedExecutor(
        tools=tools, variables=init.get("variables") or {},
        authorized_imports=config["authorized_imports"], step_timeout_s=None,
        output_limit_chars=int(config["output_limit_chars"]), reraise=(),
    )
    _cancel.executor = executor
    if _cancel.requested:
        executor.cancel()
    while True:
        try:
            request = channel.recv()
        except EOFError:
            return
        op = request.get("op")
        if op == "run":
            if request.get("cancelled"):
                executor.cancel()
            arm_cpu_limit(config.get("cpu_limit_s"))
            try:
                data = _result_message(executor, str(request["code"]), request.get("time_limit_s"),
                                       max_message_bytes)
            except MemoryError:
                data = protocol.dumps({"op": "result", "stdout": "", "value_repr": None,
                                       "final_answer_called": False, "final_answer": None,
                                       "error": ExecutionError("MemoryError", "", "").to_dict()})
            channel.send_bytes(data)
        elif op == "variables":
            channel.send(_variables_message(executor, float(request.get("time_limit_s") or 5.0)))
        else:
            raise protocol.ProtocolError(f"unknown request {op!r}")


def probe(channel: Channel) -> None:
    """Test aid: run one raw, unrestricted snippet under the same OS setup; send back ``result``."""
    request = channel.recv()
    namespace: dict[str, Any] = {}
    try:
        exec(compile(request["code"], "<probe>", "exec"), namespace)  # noqa: S102 - test aid, host code
        reply = {"op": "probe", "ok": True, "result": protocol.encode(namespace.get("result"))}
    except BaseException as exc:  # noqa: BLE001
        reply = {"op": "probe", "ok": False, "error": f"{type(exc).__name__}: {exc}"}
    channel.send(reply)


def confine_filesystem(config: dict[str, Any]) -> str:
    """Landlock: read only what the interpreter needs, write only the scratch directory (cwd)."""
    return landlock.confine([*landlock.default_read_paths(), config["package"]], [os.getcwd()])


def main(config: dict[str, Any]) -> None:
    network = isolate_network()  # first: unshare needs a single-threaded process
    filesystem = confine_filesystem(config)  # before any thread: Landlock confines the caller's threads
    syscalls = seccomp.refuse()  # also before any thread: the filter binds the caller and what it starts
    set_limits(config)
    channel = Channel(int(config["read_fd"]), int(config["write_fd"]))
    ready = {"op": "ready", "network": network, "filesystem": filesystem, "syscalls": syscalls,
             "pid": os.getpid()}
    if config.get("mode") == "probe":
        channel.send(ready)
        probe(channel)
        return
    signal.signal(signal.SIGUSR1, _cancel.handle)
    preimport(list(config["authorized_imports"]))
    channel.send(ready)
    try:
        serve(config, channel)
    except EOFError:
        pass
    sys.exit(0)
