"""Child-process executor: model code runs in a separate, limited process; tools stay in the host.

For untrusted work. From the agent loop's point of view it behaves like
``RestrictedExecutor`` (same constructor, same ``Observation``s, same
RestrictedPython policy, compiler, clock and output limits, which the child
imports rather than copies); underneath:

- model code runs in a child interpreter (``python -I -S -B``: no site
  hooks, no user site, ignoring ``PYTHON*`` variables) started in a new
  session with an **empty environment** (a few fixed locale and thread-count
  variables, ``TZ`` if set; nothing else of the host's), a **private scratch
  directory** as working directory (removed by ``close``), no inherited file
  descriptors but its two pipes, stdin/stdout on ``/dev/null`` and stderr in a
  log file the host reads when the child dies;
- **no network**: the child unshares a user + network namespace (or a
  network namespace alone) before anything else; where neither is permitted
  it refuses socket creation in Python (see ``network_isolation``), and the
  seccomp filter below refuses every socket in any case. The user
  namespace also leaves the child no capability in the host's namespace:
  even the child of a root worker cannot read ``/proc/<worker>/environ`` or
  its memory, nor raise its own limits again;
- **filesystem, TCP and signals**: where the kernel has Landlock, the child
  reads only beneath the interpreter's own directories, writes only in its
  scratch directory, opens no TCP connection, and cannot signal the worker
  or any process outside the sandbox (``landlock.py``; see
  ``filesystem_isolation``);
- **system calls**: a seccomp filter refuses what the worker's uid would
  reach past Landlock: every socket (also UNIX sockets with a path, such as
  ``/var/run/docker.sock``), io_uring, ptrace, signals, limits and
  priorities of any other process, file metadata writes (chmod, chown,
  utime, xattrs), SysV IPC, POSIX message queues and keyrings, and any call
  through another ABI (``seccomp.py``; see ``syscall_filter``);
- **limits** via ``setrlimit``: address space (``memory_limit_mb``), file
  size (``file_size_limit_mb``), open files, no core dumps, CPU seconds per
  step (``cpu_limit_s``) and, on request, processes (``process_limit``;
  off by default because ``RLIMIT_NPROC`` counts every process of the user,
  not just the sandbox's);
- **tools are proxied**: model code calls a stub; the call (name, arguments)
  crosses to the host as JSON, the host runs the real tool (which keeps its
  credentials) and sends back the JSON result, or the error's type name and
  message, which the stub raises again (a builtin type as itself, so
  ``except KeyError`` works). Only JSON crosses, in both directions; nothing
  from the child is ever unpickled (``protocol.py``);
- **hard stop**: the child's own clock interrupts loops at the time limit,
  exactly as in-process (variables survive). A single long C call
  (``10**10**10``) cannot be interrupted that way, so once the limit plus
  ``kill_grace_s`` has passed the host kills the child's whole process group
  and answers ``StepInterrupted``: "step stopped: exceeded the 2 s time limit;
  the sandbox was restarted and variables from earlier steps are lost". A
  fresh child is started at once and receives the inputs again. ``cancel()``
  works the same way: cooperative first (SIGUSR1), kill after the grace.

Differences from ``RestrictedExecutor`` a caller can see:

- inputs (``variables=``) and tool arguments and results must be data: JSON,
  or tuple, set, frozenset, bytes, datetime, date, time, timedelta, Decimal,
  complex (``protocol.py`` says how each crosses, keeping the type). A
  non-data input raises ``ValueError`` naming the input; a non-data tool
  argument or result raises ``TypeError`` into model code, naming where the
  offending value sits. The final answer is plain data already
  (``final_answer()`` refuses anything else, in both executors) and crosses
  as JSON, coming back equal to what the in-process executor returns;
- ``variables()`` returns values that could cross as data, and an
  ``OpaqueValue(type, repr)`` for the others (functions, modules, objects);
- ``ToolCall`` entries are recorded by the host around the real tool call
  (so a child cannot forge them); arguments are described from the decoded
  JSON, which for data is what model code passed;
- a step killed by the host loses its output and the child's variables;
  a child that dies on its own (killed from outside, a crash) gives a
  ``SandboxError`` observation, CPU time exhausted a ``StepInterrupted``
  one, and an empty ``MemoryError`` names the memory limit; all say that
  variables were lost where they were;
- ``Observation.duration_s`` includes the round trip, and on a first step
  (or after a restart) waiting for the child to finish starting.

Start-up (a fresh interpreter, RestrictedPython, the authorized modules)
happens in the background from the constructor on, so it overlaps with the
first model call.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import os
import select
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from airflow_codeagent.sandbox import protocol
from airflow_codeagent.sandbox.observation import ExecutionError, Observation, ToolCall
from airflow_codeagent.sandbox.output import OutputBuffer
from airflow_codeagent.sandbox.policy import DEFAULT_AUTHORIZED_IMPORTS
from airflow_codeagent.sandbox.restricted import RestrictedExecutor, _describe_arguments, _min_limit, clip_message

try:  # how the in-process executor presents a tool's exception to model code (and records it)
    from airflow_codeagent.sandbox.restricted import _model_safe_exception
except ImportError:  # pragma: no cover - an in-process executor that passes tool errors through
    def _model_safe_exception(exc: Exception) -> Exception:
        return exc

# Runs in the child as ``python -I -S -B -c _BOOTSTRAP CONFIG``: only the needed
# directories on sys.path, and a bare ``airflow_codeagent`` package so that its
# ``__init__`` (agent loop, litellm, pendulum) is not imported into the sandbox.
_BOOTSTRAP = """\
import sys, json, types
c = json.loads(sys.argv[1])
sys.path.extend(c["path"])
p = types.ModuleType("airflow_codeagent")
p.__path__ = [c["package"]]
sys.modules["airflow_codeagent"] = p
from airflow_codeagent.sandbox.child import main
main(c)
"""

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # .../airflow_codeagent
LOST = "the sandbox was restarted and variables from earlier steps are lost"
_READ_CHUNK = 1 << 16
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                     "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")


@dataclass(frozen=True, repr=False)
class OpaqueValue:
    """A sandbox variable that is not data (a function, module, object): its type name and repr.

    ``repr()`` gives the child's repr of the value, so a description of the
    variables reads as it would in-process.
    """

    type: str
    repr: str

    def __repr__(self) -> str:
        return self.repr


class SandboxError(RuntimeError):
    """The sandbox process could not be started or stopped answering: a host-side problem."""


class _ChildGone(Exception):
    """The child's pipe closed: it exited or was killed."""


class _ChildBroken(Exception):
    """The child sent something outside the protocol."""


class _Child:
    """One sandbox process and the host's ends of its pipes."""

    def __init__(self, proc: subprocess.Popen[bytes], command_fd: int, result_fd: int,
                 wake_fd: int, max_message_bytes: int, stderr_path: str) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.command_fd = command_fd
        self.result_fd = result_fd
        self.wake_fd = wake_fd
        self.max_message_bytes = max_message_bytes
        self.stderr_path = stderr_path
        self.ready = False
        self.killed = False
        self.note = ""  # why the host killed it outside a step, for the next step's observation
        self._buffer = bytearray()
        self._scanned = 0
        self._poll = select.poll()
        self._poll.register(result_fd, select.POLLIN)
        self._poll.register(wake_fd, select.POLLIN)

    def send(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.command_fd, view):]
        except (BrokenPipeError, OSError) as exc:
            raise _ChildGone() from exc

    def read_line(self, deadline: float | None) -> bytes | None:
        """The next line, or ``None`` once ``deadline`` (monotonic) passed or the wake pipe was poked."""
        while True:
            newline = self._buffer.find(b"\n", self._scanned)
            if newline >= 0:
                line = bytes(self._buffer[:newline])
                del self._buffer[:newline + 1]
                self._scanned = 0
                return line
            self._scanned = len(self._buffer)
            if self._scanned > self.max_message_bytes:
                raise _ChildBroken(f"a message larger than {self.max_message_bytes >> 20} MiB")
            if deadline is None:
                timeout_ms = -1
            else:
                timeout_ms = max(0, math.ceil((deadline - time.monotonic()) * 1000))
            events = self._poll.poll(timeout_ms)
            if not events:
                return None
            woken = False
            for fd, mask in events:
                if mask & select.POLLNVAL:  # our end was closed: close() from another thread
                    raise _ChildGone()
                if fd == self.result_fd:
                    try:
                        chunk = os.read(fd, _READ_CHUNK)
                    except OSError as exc:
                        raise _ChildGone() from exc
                    if not chunk:
                        raise _ChildGone()
                    self._buffer += chunk
                else:
                    woken = True
            if woken:
                _drain(self.wake_fd)
                return None

    def signal(self, signum: int) -> None:
        if self.proc.returncode is None:
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:
                pass

    def kill_group(self) -> None:
        """SIGKILL the child's whole process group (safe from any thread; the pipes stay open)."""
        if not self.killed:
            self.killed = True
            if self.proc.returncode is None:
                try:
                    os.killpg(self.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass

    def kill(self) -> None:
        """Kill the whole process group, reap the child, close the pipes (idempotent)."""
        self.kill_group()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for fd in (self.command_fd, self.result_fd):
            try:
                os.close(fd)
            except OSError:
                pass
        self.command_fd = self.result_fd = -1

    def stderr_tail(self) -> str:
        """Last line the child wrote to stderr (e.g. a fatal error), shortened."""
        try:
            with open(self.stderr_path, "rb") as handle:
                handle.seek(max(0, os.fstat(handle.fileno()).st_size - 4096))
                lines = [ln.strip() for ln in handle.read().decode("utf-8", "replace").splitlines()]
        except OSError:
            return ""
        lines = [ln for ln in lines if ln]
        return lines[-1][:300] if lines else ""


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except (BlockingIOError, OSError):
        pass


class _Resources:
    """What ``close`` (or garbage collection) releases; holds no reference to the executor.

    ``close()`` may come from another thread while ``run`` waits on the pipes:
    then it only kills the child and wakes the waiting thread, which finishes
    the release when it leaves ``run`` (closing file descriptors under a
    thread that polls them could hand it a reused descriptor).
    """

    def __init__(self, base_dir: str, wake_fds: tuple[int, int]) -> None:
        self.base_dir = base_dir
        self.wake_fds = wake_fds
        self.child: _Child | None = None
        self.lock = threading.RLock()
        self.closed = False
        self.released = False
        self.busy = 0

    def enter(self) -> None:
        with self.lock:
            if self.closed:
                raise RuntimeError("this IsolatedExecutor is closed; create a new one")
            self.busy += 1

    def leave(self) -> None:
        with self.lock:
            self.busy -= 1
            pending = self.closed and not self.released and self.busy == 0
        if pending:
            self.release()

    def release(self) -> None:
        with self.lock:
            self.closed = True
            if self.released:
                return
            if self.busy:
                if self.child is not None:
                    self.child.kill_group()
                try:
                    os.write(self.wake_fds[1], b"!")
                except OSError:
                    pass
                return
            self.released = True
            child, self.child = self.child, None
        if child is not None:
            child.kill()
        for fd in self.wake_fds:
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.base_dir, onerror=_force_remove)


def _force_remove(function: Callable[..., Any], path: str, exc_info: Any) -> None:
    """``rmtree`` helper: the child may have left directories without write permission."""
    try:
        os.chmod(os.path.dirname(path), stat.S_IRWXU)
        if os.path.isdir(path) and not os.path.islink(path):
            os.chmod(path, stat.S_IRWXU)
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
    except OSError:
        pass


@functools.lru_cache(maxsize=32)
def _child_sys_path(modules: tuple[str, ...]) -> tuple[str, ...]:
    """Directories the child needs beyond the standard library: RestrictedPython and the authorized modules.

    The child starts with ``-S`` (no site-packages, no ``.pth`` hooks), so
    only these are importable besides the standard library; a module's own
    dependencies are found when they live next to it (as in a site-packages).
    """
    skip = {os.path.realpath(p) for p in (sysconfig.get_path("stdlib"), sysconfig.get_path("platstdlib")) if p}
    skip |= {os.path.join(p, "lib-dynload") for p in set(skip)}
    roots: list[str] = []
    for name in ("RestrictedPython", *modules):
        top = name.split(".", 1)[0]
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            continue
        if spec is None:
            continue
        if spec.submodule_search_locations:
            dirs = [os.path.dirname(p) for p in spec.submodule_search_locations]
        elif spec.has_location and spec.origin:
            dirs = [os.path.dirname(spec.origin)]
        else:
            continue  # built-in or frozen
        for directory in dirs:
            real = os.path.realpath(directory)
            if real not in skip and directory not in roots:
                roots.append(directory)
    return tuple(roots)


class IsolatedExecutor:
    """Runs code actions in a child process with OS limits; tools run in the host.

    ``reraise`` lists host exception types (a task timeout, a termination
    signal): raised by a tool, they propagate out of ``run``. Any exception
    raised in the host while it waits for the child (such as a timeout
    signal's) kills the child and propagates; the next ``run`` starts a fresh
    child.

    Beyond the in-process executor's parameters:

    - ``memory_limit_mb``: address space of the child (``RLIMIT_AS``); None: unlimited.
    - ``cpu_limit_s``: CPU seconds per step (``RLIMIT_CPU``, re-armed each step; it
      also bounds a child whose host died mid-step); None: unlimited.
    - ``file_size_limit_mb``: largest file the child may write (``RLIMIT_FSIZE``).
    - ``open_files_limit``: ``RLIMIT_NOFILE``.
    - ``process_limit``: ``RLIMIT_NPROC``; only meaningful when sandboxes run as a
      dedicated user, since the kernel counts all of that user's processes and threads.
    - ``kill_grace_s``: how long past the time limit (or a ``cancel()``) the child may
      take to stop by itself before it is killed.
    - ``startup_timeout_s``: how long a starting child may take to import what it needs.
    - ``max_message_mb``: largest message either side accepts (a final answer, tool
      arguments or results).
    - ``python``: the interpreter for the child (default: this one); it must be able
      to import RestrictedPython and the authorized modules from this one's paths.
    """

    variables_timeout_s = 15.0  # how long ``variables()`` waits for the child

    def __init__(
        self,
        *,
        tools: Mapping[str, Callable[..., Any]] | None = None,
        variables: Mapping[str, Any] | None = None,
        authorized_imports: Iterable[str] = DEFAULT_AUTHORIZED_IMPORTS,
        step_timeout_s: float | None = 60.0,
        output_limit_chars: int = 100_000,
        reraise: tuple[type[BaseException], ...] = (),
        memory_limit_mb: int | None = 2048,
        cpu_limit_s: float | None = 600.0,
        file_size_limit_mb: int = 64,
        open_files_limit: int = 64,
        process_limit: int | None = None,
        kill_grace_s: float = 1.0,
        startup_timeout_s: float = 60.0,
        max_message_mb: int = 64,
        python: str | None = None,
    ) -> None:
        variables = dict(variables or {})
        # The in-process executor owns the naming rules; let it check them (names only: no copy).
        checked = RestrictedExecutor(tools=tools, variables=dict.fromkeys(variables),
                                     authorized_imports=authorized_imports)
        OutputBuffer(output_limit_chars)  # same ValueError as the in-process executor for a bad limit
        if kill_grace_s < 0 or startup_timeout_s <= 0 or max_message_mb < 1:
            raise ValueError("kill_grace_s must be >= 0, startup_timeout_s > 0 and max_message_mb >= 1")
        self._authorized = checked.authorized_imports
        self._repr = checked._safe_repr  # the same bounded repr the in-process executor records
        self._tools = dict(tools or {})
        self.step_timeout_s = step_timeout_s
        self.output_limit_chars = output_limit_chars
        self.memory_limit_mb = memory_limit_mb
        self.cpu_limit_s = cpu_limit_s
        self.kill_grace_s = kill_grace_s
        self.startup_timeout_s = startup_timeout_s
        self._reraise = reraise
        self._max_message_bytes = max_message_mb << 20
        self._python = python or sys.executable
        self._init_message = protocol.dumps({"op": "init", "variables": _encode_inputs(variables)})
        self._config = {
            "path": list(_child_sys_path(self._authorized)),
            "package": _PACKAGE_DIR,
            "tools": sorted(self._tools),
            "authorized_imports": list(self._authorized),
            "output_limit_chars": output_limit_chars,
            "memory_limit_mb": memory_limit_mb,
            "cpu_limit_s": cpu_limit_s,
            "file_size_limit_mb": file_size_limit_mb,
            "open_files_limit": open_files_limit,
            "process_limit": process_limit,
            "max_message_bytes": self._max_message_bytes,
        }
        base_dir = tempfile.mkdtemp(prefix="codeagent-sandbox-")
        self._scratch = os.path.join(base_dir, "scratch")
        os.mkdir(self._scratch, 0o700)
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        self._wake_w = wake_w
        self._res = _Resources(base_dir, (wake_r, wake_w))
        self._finalizer = weakref.finalize(self, self._res.release)
        self._cancelled = False
        self._confinement: dict[str, str] = {}  # the last started child's guards, once it is ready
        try:
            self._res.child = self._spawn()  # starts in the background; run() waits for it
        except BaseException:
            self.close()
            raise

    # -- public API -----------------------------------------------------------------------

    @property
    def authorized_imports(self) -> tuple[str, ...]:
        return self._authorized

    @property
    def scratch_dir(self) -> str:
        """The child's private working directory (removed by ``close``)."""
        return self._scratch

    @property
    def child_pid(self) -> int | None:
        child = self._res.child
        return None if child is None else child.pid

    @property
    def network_isolation(self) -> str | None:
        """How the last started child left the network (``child.NETWORK_*``); None before it is ready."""
        return self._confinement.get("network")

    @property
    def filesystem_isolation(self) -> str | None:
        """``landlock.CONFINED`` if the last started child is confined, else why not; None before it is ready."""
        return self._confinement.get("filesystem")

    @property
    def syscall_filter(self) -> str | None:
        """``seccomp.FILTERED`` if the last started child runs under the seccomp filter, else why not;
        None before it is ready."""
        return self._confinement.get("syscalls")

    def confinement(self) -> dict[str, str]:
        return dict(self._confinement)

    def run(self, code: str, *, time_limit_s: float | None = None) -> Observation:
        """Execute one code action in the child; never raises for anything model code does."""
        self._res.enter()
        try:
            started = time.perf_counter()
            limit = _min_limit(self.step_timeout_s, time_limit_s)
            tool_calls: list[ToolCall] = []
            try:
                outcome = self._run_in_child(code, limit, tool_calls)
            except BaseException:
                # A host exception (timeout signal, reraise-listed tool error) or a child that
                # could not start: leave no half-run child behind; the next run starts afresh.
                self._discard_child(respawn=False)
                raise
        finally:
            self._res.leave()
        duration = time.perf_counter() - started
        if isinstance(outcome, ExecutionError):
            return Observation(stdout="", value_repr=None, error=outcome, duration_s=duration,
                               tool_calls=tuple(tool_calls))
        error = outcome["error"]
        if error is not None:
            error = ExecutionError(error["type"], error["message"], error["traceback"])
            if error.type == "MemoryError":
                limit_text = (f"the sandbox's memory limit of {self.memory_limit_mb} MiB was reached"
                              if self.memory_limit_mb else "the sandbox ran out of memory")
                message = error.message or limit_text
                if not self._child_can_allocate():
                    # What fills the address space is still referenced (a dict the loop grew) and
                    # even a step that frees it would fail: the child is replaced.
                    self._discard_child(respawn=True)
                    message = f"{message}; {LOST}"
                error = ExecutionError("MemoryError", message, error.traceback)
        return Observation(
            stdout=outcome["stdout"],
            value_repr=outcome["value_repr"],
            error=error,
            duration_s=duration,
            final_answer_called=outcome["final_answer_called"],
            final_answer=outcome["final_answer"],
            tool_calls=tuple(tool_calls),
        )

    def _child_can_allocate(self) -> bool:
        """After a MemoryError: has the child 1 MiB to spare, enough to run a step that frees memory?"""
        self._res.enter()
        try:
            probe = self._run_in_child("len(' ' * 1048576)", 5.0, [])
        except BaseException:
            self._discard_child(respawn=False)
            raise
        finally:
            self._res.leave()
        return not isinstance(probe, ExecutionError) and probe["error"] is None

    def cancel(self) -> None:
        """Stop the running step and every later one (as in-process); callable from any thread.

        The child is asked first (its clock stops model code at the next
        tick, keeping variables); if it has not answered ``kill_grace_s``
        later, it is killed.
        """
        self._cancelled = True
        if self._res.closed:
            return
        try:
            os.write(self._wake_w, b"!")
        except OSError:
            pass

    def close(self) -> None:
        """Kill the child, remove the scratch directory; the executor is not used afterwards."""
        self._finalizer()

    def variables(self) -> dict[str, Any]:
        """Names model code has defined so far, as the child holds them.

        Values that are data (see ``protocol.py``) come back as values; the
        others as ``OpaqueValue(type, repr)``. Each call is a round trip to
        the child.
        """
        if self._res.closed:
            return {}
        self._res.enter()
        try:
            return self._variables()
        finally:
            self._res.leave()

    def _variables(self) -> dict[str, Any]:
        child = self._ready_child()
        try:
            # The child interrupts model-defined __repr__ loops itself well before the host gives up.
            child.send(protocol.dumps({"op": "variables", "time_limit_s": self.variables_timeout_s / 3}))
            deadline = time.monotonic() + self.variables_timeout_s
            while True:
                line = child.read_line(deadline)
                if line is not None:
                    break
                if self._res.closed:
                    raise _ChildGone()
                if time.monotonic() >= deadline:
                    raise _ChildBroken("no answer to a variables request")
            message = protocol.loads(line)
            values = message.get("values")
            if message["op"] != "variables" or not isinstance(values, dict):
                raise _ChildBroken("a malformed variables answer")
            result: dict[str, Any] = {}
            for name, entry in values.items():
                if isinstance(entry, dict) and "value" in entry:
                    result[name] = entry["value"]
                elif isinstance(entry, dict):
                    result[name] = OpaqueValue(str(entry.get("type")), str(entry.get("repr")))
                else:
                    raise _ChildBroken("a malformed variables answer")
            return result
        except _ChildGone:
            return {}  # it died: the next step finds out how, and says so
        except (_ChildBroken, protocol.ProtocolError) as exc:
            # As in-process, listing variables does not raise for what model code did (a
            # __repr__ stuck in C): the child is stopped and the next step says so.
            if not child.killed:
                child.note = f"was stopped: it did not list its variables ({exc})"
                child.kill()  # stays registered: the next step finds it dead and reports the note
            return {}
        except BaseException:
            self._discard_child(respawn=False)
            raise

    # -- the child's life -----------------------------------------------------------------

    def _child_env(self) -> dict[str, str]:
        """The child's whole environment: nothing of the host's but ``TZ``."""
        env = {
            "PATH": "/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "HOME": self._scratch,
            "TMPDIR": self._scratch,
        }
        env.update(dict.fromkeys(_THREAD_VARIABLES, "1"))
        if "TZ" in os.environ:
            env["TZ"] = os.environ["TZ"]
        return env

    def _spawn(self, mode: str = "sandbox") -> _Child:
        command_r, command_w = os.pipe()
        result_r, result_w = os.pipe()
        config = dict(self._config, mode=mode, read_fd=command_r, write_fd=result_w)
        stderr_path = os.path.join(self._res.base_dir, f"{mode}-stderr.log")
        try:
            with open(stderr_path, "wb") as stderr:
                proc = subprocess.Popen(
                    [self._python, "-I", "-S", "-B", "-c", _BOOTSTRAP, json.dumps(config)],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                    pass_fds=(command_r, result_w), cwd=self._scratch, env=self._child_env(),
                    start_new_session=True,
                )
        except BaseException:
            for fd in (command_w, result_r):
                os.close(fd)
            raise
        finally:
            os.close(command_r)
            os.close(result_w)
        return _Child(proc, command_w, result_r, self._res.wake_fds[0], self._max_message_bytes,
                      stderr_path)

    def _ready_child(self) -> _Child:
        """The current child once it has started and received the inputs (starting one if needed)."""
        with self._res.lock:
            child = self._res.child
            if child is None:
                child = self._res.child = self._spawn()
        if child.ready:
            return child
        deadline = time.monotonic() + self.startup_timeout_s
        try:
            while True:
                line = child.read_line(deadline)
                if line is not None:
                    break
                if self._res.closed:
                    raise _ChildGone()
                if time.monotonic() >= deadline:
                    raise _ChildBroken(f"not ready after {self.startup_timeout_s:g} s")
            message = protocol.loads(line)
            if message["op"] != "ready":
                raise _ChildBroken(f"{message['op']!r} instead of 'ready'")
        except (_ChildGone, _ChildBroken, protocol.ProtocolError) as exc:
            closed_meanwhile = child.killed
            child.kill()
            tail = child.stderr_tail()
            self._res.child = None
            if closed_meanwhile:
                raise RuntimeError("the IsolatedExecutor was closed while its sandbox was starting") from None
            raise SandboxError(
                f"the sandbox process did not start (exit status {child.proc.returncode}"
                f"{'; ' + str(exc) if str(exc) else ''}){': ' + tail if tail else ''}. "
                f"Check that {self._python} can import RestrictedPython and the authorized modules"
            ) from None
        self._confinement = _confinement_reported(message)
        child.send(self._init_message)
        child.ready = True
        return child

    def _discard_child(self, *, respawn: bool) -> None:
        with self._res.lock:
            child, self._res.child = self._res.child, None
        if child is not None:
            child.kill()
        if respawn and not self._res.closed and not self._cancelled:
            try:
                with self._res.lock:
                    if self._res.child is None:
                        self._res.child = self._spawn()  # warm up while the model thinks
            except OSError:
                pass  # the next run tries again and reports

    # -- one step -------------------------------------------------------------------------

    def _run_in_child(self, code: str, limit: float | None,
                      tool_calls: list[ToolCall]) -> dict[str, Any] | ExecutionError:
        child = self._ready_child()
        try:
            return self._exchange(child, code, limit, tool_calls)
        except _ChildGone:
            return self._after_death(child, limit)
        except (_ChildBroken, protocol.ProtocolError) as exc:
            self._discard_child(respawn=True)
            return ExecutionError("SandboxError", f"the sandbox process broke the protocol ({exc}); {LOST}", "")

    def _exchange(self, child: _Child, code: str, limit: float | None,
                  tool_calls: list[ToolCall]) -> dict[str, Any] | ExecutionError:
        child.send(protocol.dumps({"op": "run", "code": code, "time_limit_s": limit,
                                   "cancelled": self._cancelled}))
        grace = self.kill_grace_s
        hard_deadline = None if limit is None else time.monotonic() + limit + grace
        cancel_deadline: float | None = None
        while True:
            if self._cancelled and cancel_deadline is None:
                child.signal(signal.SIGUSR1)
                cancel_deadline = time.monotonic() + grace
            deadlines = [d for d in (hard_deadline, cancel_deadline) if d is not None]
            line = child.read_line(min(deadlines) if deadlines else None)
            if line is None:
                if self._res.closed:
                    raise _ChildGone()
                now = time.monotonic()
                if cancel_deadline is not None and now >= cancel_deadline:
                    self._discard_child(respawn=False)
                    return ExecutionError("StepInterrupted", "run cancelled; the sandbox was stopped "
                                          "and variables from earlier steps are lost", "")
                if hard_deadline is not None and now >= hard_deadline:
                    self._discard_child(respawn=True)
                    return ExecutionError("StepInterrupted",
                                          f"step stopped: exceeded the {limit:g} s time limit; {LOST}", "")
                continue
            message = protocol.loads(line)
            if message["op"] == "result":
                return _checked_result(message)
            if message["op"] != "tool":
                raise _ChildBroken(f"unexpected message {message['op']!r}")
            self._serve_tool_call(child, message, tool_calls)
            # The child was blocked while the tool ran: give it time to notice its deadline.
            now = time.monotonic()
            if hard_deadline is not None:
                hard_deadline = max(hard_deadline, now + grace)
            if cancel_deadline is not None:
                cancel_deadline = max(cancel_deadline, now + grace)

    def _serve_tool_call(self, child: _Child, message: dict[str, Any], tool_calls: list[ToolCall]) -> None:
        name, args, kwargs = message.get("name"), message.get("args"), message.get("kwargs")
        func = self._tools.get(name) if isinstance(name, str) else None
        if (func is None or not isinstance(args, list) or not isinstance(kwargs, dict)
                or not all(isinstance(k, str) for k in kwargs)):
            raise _ChildBroken("a malformed tool call")
        arguments = _describe_arguments(tuple(args), kwargs, self._repr)
        started = time.perf_counter()
        reply: dict[str, Any]
        try:
            result = func(*args, **kwargs)
        except self._reraise:
            raise
        except Exception as exc:  # noqa: BLE001 - the tool's error goes to model code, as in-process
            # Recorded as the in-process executor records it; the child's own copy of that
            # executor turns the rebuilt exception into the same model-facing error.
            shown = _model_safe_exception(exc)
            tool_calls.append(ToolCall(name, arguments, time.perf_counter() - started, None,
                                       clip_message(f"{type(shown).__name__}: {shown}")))
            reply = {"op": "tool_result", "ok": False, "error": protocol.describe_exception(exc)}
        except BaseException as exc:  # noqa: BLE001 - not a host exception: model code sees it, as in-process
            reply = {"op": "tool_result", "ok": False, "error": protocol.describe_exception(exc)}
        else:
            duration = time.perf_counter() - started
            result_chars = len(self._repr(result))
            problem = None
            try:
                data = protocol.dumps({"op": "tool_result", "ok": True, "value": protocol.encode(result)})
            except protocol.WireError as exc:
                problem = TypeError(f"{name}() returned a value that cannot enter the sandbox: "
                                    f"{exc.describe('the result')}; tools used with the isolated executor "
                                    f"must return {protocol.SUPPORTED_TYPES_TEXT}")
            else:
                if len(data) > self._max_message_bytes:
                    problem = ValueError(f"{name}() returned {len(data) / (1 << 20):.1f} MiB of JSON; the "
                                         f"sandbox accepts at most {self._max_message_bytes >> 20} MiB "
                                         "from a tool; ask it for less data")
            if problem is None:
                tool_calls.append(ToolCall(name, arguments, duration, result_chars, None))
                child.send(data)
                return
            tool_calls.append(ToolCall(name, arguments, duration, result_chars,
                                       f"{type(problem).__name__}: {problem}"))
            reply = {"op": "tool_result", "ok": False, "error": protocol.describe_exception(problem)}
        child.send(protocol.dumps(reply))

    def _after_death(self, child: _Child, limit: float | None) -> ExecutionError:
        killed_by_host = child.killed  # close() from another thread, or a failed variables listing
        # Dead but not yet reaped, the child's pid still names its process group: whatever it
        # started (and could not move out of the group) dies with it, before the pid can be reused.
        child.kill_group()
        try:
            status = child.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            status = None
        tail = "" if killed_by_host else child.stderr_tail()
        self._discard_child(respawn=True)
        if killed_by_host and child.note:
            return ExecutionError("SandboxError", f"the sandbox process {child.note}; {LOST}", "")
        if killed_by_host:
            return ExecutionError("StepInterrupted", "the executor was closed while the step ran", "")
        if status is not None and status == -signal.SIGXCPU:
            return ExecutionError("StepInterrupted", f"step stopped: exceeded the {self.cpu_limit_s:g} s "
                                  f"CPU time limit; {LOST}", "")
        if status is not None and status < 0:
            try:
                how = f"was killed by {signal.Signals(-status).name}"
            except ValueError:
                how = f"was killed by signal {-status}"
            if status == -signal.SIGKILL:
                how += " (often: the machine ran out of memory)"
        else:
            how = f"exited with status {status}"
        detail = f" [{tail}]" if tail else ""
        return ExecutionError("SandboxError", f"the sandbox process {how}{detail}; {LOST}", "")

    # -- test aid -------------------------------------------------------------------------

    def _probe(self, code: str, timeout_s: float = 30.0) -> dict[str, Any]:
        """Run raw, *unrestricted* ``code`` in a fresh child set up exactly like the sandbox.

        For tests of the OS-level isolation (environment, network, limits,
        working directory), which model code cannot reach on its own. The
        snippet's ``result`` variable comes back as data; returns
        the child's guards (as ``confinement``) with ``"ok": True, "result": ...`` or with
        ``"ok": False, "error": "Type: message"``.
        """
        child = self._spawn(mode="probe")
        try:
            deadline = time.monotonic() + timeout_s
            replies = []
            while len(replies) < 2:
                line = child.read_line(deadline)
                if line is None:
                    if time.monotonic() >= deadline:
                        raise SandboxError("the probe did not answer in time")
                    continue
                replies.append(protocol.loads(line))
                if len(replies) == 1:
                    child.send(protocol.dumps({"op": "probe", "code": code}))
            ready, reply = replies
            return {**_confinement_reported(ready), **{k: v for k, v in reply.items() if k != "op"}}
        except _ChildGone:
            raise SandboxError(f"the probe process died: {child.stderr_tail()}") from None
        finally:
            child.kill()


def _confinement_reported(ready: Mapping[str, Any]) -> dict[str, str]:
    """The guards a child's ``ready`` message says it set up, as ``Executor.confinement`` gives them."""
    return {"process": "child process",
            **{guard: str(ready.get(guard)) for guard in ("network", "filesystem", "syscalls")}}


def _encode_inputs(variables: Mapping[str, Any]) -> dict[str, Any]:
    encoded = {}
    for name, value in variables.items():
        try:
            encoded[name] = protocol.encode(value)
        except protocol.WireError as exc:
            raise ValueError(
                f"input {name!r} cannot be sent to the isolated sandbox: {exc.describe(name)}. Inputs "
                f"of the isolated executor must be {protocol.SUPPORTED_TYPES_TEXT}; convert it "
                "before the run, or use executor='restricted' for trusted code"
            ) from None
    return encoded


def _checked_result(message: dict[str, Any]) -> dict[str, Any]:
    """The child is not trusted: a result must have exactly the expected shape."""
    error = message.get("error")
    ok = (isinstance(message.get("stdout"), str)
          and (message.get("value_repr") is None or isinstance(message.get("value_repr"), str))
          and isinstance(message.get("final_answer_called"), bool)
          and (error is None or (isinstance(error, dict)
                                 and all(isinstance(error.get(k), str) for k in ("type", "message", "traceback")))))
    if not ok:
        raise _ChildBroken("a malformed step result")
    return message


__all__ = ["IsolatedExecutor", "OpaqueValue", "SandboxError"]
