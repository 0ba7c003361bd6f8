"""Filesystem, TCP and signal confinement of the sandbox child with Linux Landlock.

The child's user namespace takes away its capabilities, but not its uid: a
child of a root worker still owns every root-owned file, so ordinary
permission checks would let an escaped payload read ``/etc/shadow``, the
Airflow config, a connection file or another task's scratch directory, and
signal the worker itself. Landlock (Linux 5.13+, unprivileged) closes that:
after ``confine`` the process and everything it starts may

- read (and execute) only beneath the directories Python needs: its
  ``sys.path``, the interpreter's prefixes, the system library directories,
  timezone data, and a few single files (``/etc/localtime``,
  ``/etc/ld.so.cache``, ``/dev/null``, ``/dev/urandom``, ``/proc/cpuinfo``);
- read, write, create and delete only beneath its scratch directory;
- make no TCP connection and bind no TCP port (ABI 4+), in addition to the
  network namespace;
- signal no process outside its own Landlock domain and reach no abstract
  unix socket outside it (ABI 6+): the worker cannot be killed from inside.

Only the rights the running kernel knows are handled; where Landlock is
missing or refused, ``confine`` says so and the child runs as before (the
executor reports it through ``filesystem_isolation``). It must be called
before any thread starts: Landlock confines the calling thread and the
threads and processes it creates afterwards.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Iterable

CONFINED = "landlock"

_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446  # the same on every architecture
_CREATE_RULESET_VERSION = 1 << 0
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

_EXECUTE, _WRITE_FILE, _READ_FILE, _READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_ABI1_FS = (1 << 13) - 1  # EXECUTE .. MAKE_SYM
_REFER, _TRUNCATE, _IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1 << 0, 1 << 1
_FILE_RIGHTS = _EXECUTE | _WRITE_FILE | _READ_FILE | _TRUNCATE | _IOCTL_DEV

SYSTEM_READ_PATHS = ("/lib", "/lib32", "/lib64", "/usr/lib", "/usr/lib32", "/usr/lib64", "/usr/local/lib",
                     "/usr/share/zoneinfo", "/etc/localtime", "/etc/ld.so.cache", "/dev/null", "/dev/urandom",
                     "/proc/cpuinfo", "/sys/devices/system/cpu")


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _handled_fs(abi: int) -> int:
    rights = _ABI1_FS
    if abi >= 2:
        rights |= _REFER
    if abi >= 3:
        rights |= _TRUNCATE
    if abi >= 5:
        rights |= _IOCTL_DEV
    return rights


class _Syscalls:
    def __init__(self) -> None:
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.syscall.restype = ctypes.c_long

    def call(self, number: int, *args: object) -> int:
        result = self.libc.syscall(number, *args)
        if result < 0:
            errno = ctypes.get_errno()
            raise OSError(errno, os.strerror(errno))
        return int(result)


def abi_version() -> int:
    """The kernel's Landlock ABI version; 0 where Landlock is absent or disabled."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        return _Syscalls().call(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0),
                                ctypes.c_uint32(_CREATE_RULESET_VERSION))
    except (OSError, AttributeError):
        return 0


def default_read_paths() -> list[str]:
    """What the child's interpreter reads: its import path, prefixes and the system's libraries."""
    paths = [p for p in sys.path if p]
    paths += [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
              os.path.dirname(os.path.realpath(sys.executable))]
    return [*dict.fromkeys(paths), *SYSTEM_READ_PATHS]


def confine(read_paths: Iterable[str], write_paths: Iterable[str]) -> str:
    """Confine this process as the module docstring says; return ``CONFINED`` or why it could not."""
    abi = abi_version()
    if abi < 1:
        return "not confined: the kernel has no Landlock"
    syscalls = _Syscalls()
    fs = _handled_fs(abi)
    attr = _RulesetAttr(fs, _NET_BIND_TCP | _NET_CONNECT_TCP if abi >= 4 else 0,
                        _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL if abi >= 6 else 0)
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    try:
        ruleset = syscalls.call(_SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    except OSError as exc:
        return f"not confined: Landlock refused a ruleset ({exc.strerror})"
    try:
        read = _EXECUTE | _READ_FILE | _READ_DIR
        for path in read_paths:
            _allow(syscalls, ruleset, path, read)
        for path in write_paths:
            _allow(syscalls, ruleset, path, fs)
        libc = syscalls.libc
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            return "not confined: no_new_privs could not be set"
        syscalls.call(_SYS_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0))
    except OSError as exc:
        return f"not confined: {exc.strerror}"
    finally:
        os.close(ruleset)
    return CONFINED


def _allow(syscalls: _Syscalls, ruleset: int, path: str, rights: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return  # a path this system does not have
    try:
        if not os.path.isdir(path):
            rights &= _FILE_RIGHTS  # directory rights on a file are refused by the kernel
        rule = _PathBeneathAttr(rights, fd)
        syscalls.call(_SYS_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(_RULE_PATH_BENEATH),
                      ctypes.byref(rule), ctypes.c_uint32(0))
    finally:
        os.close(fd)
