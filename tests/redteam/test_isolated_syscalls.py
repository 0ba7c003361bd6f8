"""System calls an escaped payload tries in the isolated child, and the seccomp filter refuses.

Like ``test_isolated_confinement.py`` these assume RestrictedPython already
fell: ``IsolatedExecutor._probe`` runs *unrestricted* Python (ctypes, raw
system calls, machine code) in a child set up exactly like the sandbox. The
targets are what the worker's uid reaches and neither the network namespace
nor Landlock covers: a UNIX socket with a path (``/var/run/docker.sock``),
the metadata of the worker's files, the limits and priority of its
processes, its SysV IPC objects and its session keyring. Each attack is also
shown to work outside the sandbox where that is not obvious.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import socket
import subprocess
import sys
import textwrap

import pytest

from airflow_codeagent.sandbox import seccomp
from airflow_codeagent.sandbox.isolated import IsolatedExecutor

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="seccomp is Linux-only")

# machine code for: socket(AF_UNIX, SOCK_STREAM, 0) through the 32-bit ABI (int 0x80, i386 number 359)
_INT80_SOCKET = "53" "b867010000" "bb01000000" "b901000000" "31d2" "cd80" "5b" "c3"
_RUN_MACHINE_CODE = """
import ctypes, mmap
page = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
page.write(bytes.fromhex({code!r}))
result = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(page)))()
"""
_RAW_SYSCALL = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
args = {args}
returned = libc.syscall({number}, *args)
result = [returned, ctypes.get_errno()]
"""


@pytest.fixture
def executor():
    ex = IsolatedExecutor(authorized_imports=["json"])
    yield ex
    ex.close()


@pytest.fixture
def filtered(executor):
    """The executor, after checking that its child runs under the filter (or saying why it cannot)."""
    probe = executor._probe("result = 1")
    if platform.machine() not in ("x86_64", "aarch64", "riscv64"):
        assert probe["syscalls"].startswith("not filtered"), probe
        pytest.skip(f"no filter for this architecture: {probe['syscalls']}")
    assert probe["syscalls"] == seccomp.FILTERED, probe
    assert executor.syscall_filter is None  # a probe child is not the executor's sandbox
    executor.run("1")
    assert executor.syscall_filter == seccomp.FILTERED
    return executor


def _unconfined(code: str) -> object:
    """Run the same snippet in a plain child of the test, to show that the host would allow it."""
    script = code + "\nprint(repr(result))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return eval(out.stdout)  # noqa: S307 - our own repr of ints and lists


def _refused(probe: dict) -> bool:
    return not probe["ok"] and probe["error"].startswith("PermissionError")


def test_a_unix_socket_with_a_path_cannot_be_reached(filtered, tmp_path):
    path = str(tmp_path / "docker.sock")
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(path)
        server.listen(1)
        os.chmod(path, 0o666)  # anyone may connect: only the filter stands in the way
        probe = filtered._probe(f"import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect({path!r})\n"
                                f"s.sendall(b'POST /containers/create')\nresult = 'connected'")
        assert _refused(probe), probe
        server.setblocking(False)
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody knocked
    finally:
        server.close()


@pytest.mark.parametrize("snippet", [
    "import socket\nresult = socket.socketpair()",
    "import socket\nresult = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)",
    "import socket\nresult = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)",
])
def test_no_socket_of_any_family_can_be_made(filtered, snippet):
    assert _refused(filtered._probe(snippet))


def test_no_socket_even_through_raw_ctypes(filtered):
    """The Python-level socket module is not the guard: the system call itself is refused."""
    number = {"x86_64": 41}.get(platform.machine(), 198)
    probe = filtered._probe(_RAW_SYSCALL.format(number=number, args="[1, 1, 0]"))
    assert probe["ok"] and probe["result"] == [-1, errno.EPERM], probe


def test_io_uring_cannot_be_set_up(filtered):
    """io_uring can open and connect sockets without the socket() system call."""
    code = _RAW_SYSCALL.format(number=425, args="[8, ctypes.create_string_buffer(120)]")
    if _unconfined(code)[0] < 0:
        pytest.skip("io_uring is disabled on this host, so refusing it proves nothing here")
    probe = filtered._probe(code)
    assert probe["ok"] and probe["result"] == [-1, errno.EPERM], probe


def test_the_worker_cannot_be_traced_or_robbed_of_a_file_descriptor(filtered):
    ptrace_attach = {"x86_64": 101}.get(platform.machine(), 117)
    probe = filtered._probe(_RAW_SYSCALL.format(number=ptrace_attach, args=f"[16, {os.getpid()}, 0, 0]"))
    assert probe["ok"] and probe["result"] == [-1, errno.EPERM], probe
    # pidfd_getfd would copy the worker's descriptors (its database connection, its log) into the child
    steal = f"import os\npidfd = os.pidfd_open({os.getpid()})\n" + _RAW_SYSCALL.format(number=438, args="[pidfd, 0, 0]")
    probe = filtered._probe(steal)
    assert probe["ok"] and probe["result"] == [-1, errno.EPERM], probe


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the 32-bit ABI is an x86-64 matter")
def test_the_32_bit_abi_is_no_way_around_the_filter(filtered):
    """int 0x80 numbers socket() 359, not 41: a filter on the native numbers alone would let it through."""
    code = _RUN_MACHINE_CODE.format(code=_INT80_SOCKET)
    try:
        host_fd = _unconfined(code)
    except AssertionError:
        pytest.skip("this kernel runs no 32-bit system calls (no IA-32 emulation)")
    assert host_fd >= 0  # the host makes a socket this way
    probe = filtered._probe(code)
    assert probe["ok"] and probe["result"] == -errno.EPERM, probe


@pytest.mark.skipif(platform.machine() != "x86_64", reason="x32 is an x86-64 ABI")
def test_the_x32_abi_is_no_way_around_the_filter(filtered):
    code = _RAW_SYSCALL.format(number=41 | 0x40000000, args="[1, 1, 0]")
    probe = filtered._probe(code)
    assert probe["ok"] and probe["result"] == [-1, errno.EPERM], probe  # unfiltered: a socket, or ENOSYS


def test_model_code_still_runs_under_the_filter(filtered):
    observation = filtered.run(textwrap.dedent("""
        import json
        rows = [{"id": i, "ok": i % 2 == 0} for i in range(5)]
        print(json.dumps([r["id"] for r in rows if r["ok"]]))
    """))
    assert observation.error is None and observation.stdout == "[0, 2, 4]\n"


# -- what the worker's uid allows and Landlock does not cover --------------------------------


def test_file_metadata_of_the_workers_files_cannot_be_changed(filtered, tmp_path):
    """A child of a root worker could otherwise make any binary setuid root, or a secret world-readable."""
    secret = tmp_path / "connection.json"
    secret.write_text("canary")
    secret.chmod(0o600)
    before = secret.stat()
    for attack in (f"import os\nos.chmod({str(secret)!r}, 0o4777)",
                   f"import os\nos.chown({str(secret)!r}, {before.st_uid}, {before.st_gid})",
                   f"import os\nos.utime({str(secret)!r}, (0, 0))",
                   f"import os\nos.setxattr({str(secret)!r}, 'user.planted', b'x')"):
        probe = filtered._probe(attack + "\nresult = 'changed'")
        assert _refused(probe), (attack, probe)
    after = secret.stat()
    assert (after.st_mode, after.st_uid, after.st_mtime_ns) == (before.st_mode, before.st_uid, before.st_mtime_ns)


@pytest.fixture
def bystander():
    """A process of the worker's user that is not part of the sandbox (the worker itself, for all it matters)."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process
    process.kill()
    process.wait()


def test_another_process_of_the_user_cannot_be_limited_reniced_or_pinned(filtered, bystander):
    pid = bystander.pid
    niceness, affinity = os.getpriority(os.PRIO_PROCESS, pid), os.sched_getaffinity(pid)
    prlimit_cpu_1s = f"""
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
class Limit(ctypes.Structure):
    _fields_ = [("soft", ctypes.c_ulong), ("hard", ctypes.c_ulong)]
result = [libc.prlimit({pid}, 0, ctypes.byref(Limit(1, 1)), None), ctypes.get_errno()]
"""
    probe = filtered._probe(prlimit_cpu_1s)  # RLIMIT_CPU of 1 s: the kernel would kill it within a second
    assert probe["ok"] and probe["result"] == [-1, errno.EPERM], probe
    for attack in (f"import os\nos.setpriority(os.PRIO_PROCESS, {pid}, 19)",
                   "import os\nos.setpriority(os.PRIO_USER, 0, 19)",  # every process of the user
                   f"import os\nos.sched_setaffinity({pid}, {{0}})",
                   f"import os\nos.sched_setscheduler({pid}, os.SCHED_IDLE, os.sched_param(0))",
                   f"import os, signal\nos.kill({pid}, signal.SIGKILL)"):
        assert _refused(filtered._probe(attack + "\nresult = 'done'")), attack
    assert bystander.poll() is None
    assert (os.getpriority(os.PRIO_PROCESS, pid), os.sched_getaffinity(pid)) == (niceness, affinity)
    # ...while the child still sets its own limits and priority (19: lowering it needs a privilege)
    own = filtered._probe("import os, resource\nresource.setrlimit(resource.RLIMIT_NOFILE, (32, 32))\n"
                          "os.setpriority(os.PRIO_PROCESS, 0, 19)\nresult = resource.getrlimit(resource.RLIMIT_NOFILE)")
    assert own["ok"] and list(own["result"]) == [32, 32], own


_SYSV_SHM = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
result = [libc.shmget({key}, 0, 0), ctypes.get_errno()]
"""


def test_the_workers_shared_memory_cannot_be_attached(filtered):
    libc = ctypes.CDLL(None, use_errno=True)
    key = 0x0C0DE000 | (os.getpid() & 0xFFF)
    segment = libc.shmget(key, 4096, 0o600 | 0o1000)  # IPC_CREAT, owner only: the worker's uid
    if segment < 0:
        pytest.skip(f"no SysV shared memory here ({os.strerror(ctypes.get_errno())})")
    try:
        assert _unconfined(_SYSV_SHM.format(key=key))[0] == segment  # the same uid finds it
        probe = filtered._probe(_SYSV_SHM.format(key=key))
        assert probe["ok"] and probe["result"] == [-1, errno.EPERM], probe
    finally:
        libc.shmctl(segment, 0, None)  # IPC_RMID


_READ_SESSION_KEYRING = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
buffer = ctypes.create_string_buffer(4096)
result = [libc.syscall({keyctl}, 11, ctypes.c_long(-3), buffer, 4096), ctypes.get_errno()]  # KEYCTL_READ @s
"""


def test_the_workers_session_keyring_cannot_be_read(filtered):
    keyctl = {"x86_64": 250}.get(platform.machine(), 219)
    code = _READ_SESSION_KEYRING.format(keyctl=keyctl)
    if _unconfined(code)[0] < 0:
        pytest.skip("this kernel has no keyrings for this process")
    probe = filtered._probe(code)
    assert probe["ok"] and probe["result"] == [-1, errno.EPERM], probe


_X86_64 = platform.machine() == "x86_64"
KERNEL_SURFACE = {  # what each attempt needs; args of a raw syscall
    "unshare a mount namespace": (272 if _X86_64 else 97, "[0x20000]"),  # a private mount table to build on
    "unshare a PID namespace": (272 if _X86_64 else 97, "[0x20000000]"),
    "userfaultfd": (323 if _X86_64 else 282, "[1]"),  # user-mode only; stalls the kernel mid-copy in exploits
    "perf_event_open on the worker": (298 if _X86_64 else 241,  # samples another process's registers
                                      "[ctypes.create_string_buffer(bytes([1, 0, 0, 0, 128]) + bytes(123)), "
                                      "{worker}, -1, -1, 0]"),
}


@pytest.mark.parametrize("attempt", sorted(KERNEL_SURFACE))
def test_kernel_surface_the_child_has_no_use_for_is_closed(filtered, attempt):
    number, args = KERNEL_SURFACE[attempt]
    code = _RAW_SYSCALL.format(number=number, args=args.format(worker=os.getpid()))
    if _unconfined(code)[0] < 0:
        pytest.skip(f"this host refuses {attempt} to an unconfined process too")
    probe = filtered._probe(code)
    assert probe["ok"] and probe["result"] == [-1, errno.EPERM], probe


def test_no_sigio_can_be_aimed_at_another_process(filtered, bystander):
    """fcntl(F_SETOWN) + O_ASYNC delivers SIGIO (or any signal, with F_SETSIG) without kill()."""
    probe = filtered._probe(f"import os, fcntl\nr, w = os.pipe()\nfcntl.fcntl(r, fcntl.F_SETOWN, {bystander.pid})\n"
                            "result = 'owner set'")
    assert _refused(probe), probe
    assert bystander.poll() is None
    ordinary = filtered._probe("import os, fcntl\nr, w = os.pipe()\n"
                               "fcntl.fcntl(r, fcntl.F_SETFL, fcntl.fcntl(r, fcntl.F_GETFL) | os.O_NONBLOCK)\n"
                               "result = bool(fcntl.fcntl(r, fcntl.F_GETFL) & os.O_NONBLOCK)")
    assert ordinary == {**ordinary, "ok": True, "result": True}  # fcntl itself still works


_RAW_CLONE = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
pid = libc.syscall({number}, {flags}, 0, 0, 0, 0)
if pid == 0:
    os._exit(0)
if pid > 0:
    os.waitpid(pid, 0) if not {flags} & 0x8000 else None
result = [min(pid, 0), ctypes.get_errno() if pid < 0 else 0]
"""


@pytest.mark.parametrize(("what", "flags"), [("a child of the worker", 0x8000 | 17),
                                             ("a new PID namespace", 0x20000000 | 17)])
def test_clone_makes_no_child_of_the_worker_and_no_namespace(filtered, what, flags):
    code = _RAW_CLONE.format(number=56 if _X86_64 else 220, flags=flags)
    probe = filtered._probe(code)
    assert probe["ok"] and probe["result"] == [-1, errno.EPERM], (what, probe)


_GRANDCHILD_LEAVES_THE_GROUP = """
import os
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    try:
        os.setsid()
        os.write(w, b"left")
    except OSError as exc:
        os.write(w, str(exc.errno).encode())
    os._exit(0)
os.waitpid(pid, 0)
result = os.read(r, 16).decode()
"""


def test_what_the_child_starts_cannot_leave_its_process_group(filtered):
    """A grandchild outside the group would outlive close(), which kills the group."""
    assert _unconfined(_GRANDCHILD_LEAVES_THE_GROUP) == "left"
    probe = filtered._probe(_GRANDCHILD_LEAVES_THE_GROUP)
    assert probe["ok"] and probe["result"] == str(errno.EPERM), probe
    forked = filtered._probe("import os\npid = os.fork()\nif pid == 0:\n    os._exit(7)\n"
                             "result = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])")
    assert forked == {**forked, "ok": True, "result": 7}  # fork itself still works (clone3 falls back)


def test_directories_it_cannot_list_cannot_be_watched_either(filtered, tmp_path):
    watched = tmp_path / "other-task"
    watched.mkdir()
    probe = filtered._probe(f"import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nfd = libc.inotify_init1(0)\n"
                            f"result = [fd, libc.inotify_add_watch(fd, {str(watched).encode()!r}, 0x100), "
                            "ctypes.get_errno()]")
    assert probe["ok"] and probe["result"][0] == -1 and probe["result"][2] == errno.EPERM, probe
