"""The system calls the sandbox child may never make, refused with a seccomp filter.

The network namespace takes the host's interfaces away and Landlock refuses
TCP, but neither covers a UNIX socket that has a path: code that escaped
RestrictedPython could still connect to ``/var/run/docker.sock`` or a local
database's socket, which are files the worker's user may well be allowed to
open. The child needs no socket at all (it talks to the worker over two
pipes it inherited), so after ``refuse`` it and everything it starts get
``EPERM`` from

- ``socket`` and ``socketpair``, of every family (UNIX, TCP, netlink, ...);
- the ``io_uring`` calls, whose queued operations (``IORING_OP_SOCKET``,
  ``IORING_OP_CONNECT``) would bypass a filter on ``socket``;
- ``ptrace``, ``process_vm_readv``/``writev`` and ``pidfd_getfd``: reading
  the worker's memory or taking over one of its file descriptors (Landlock
  refuses these too, where the kernel has it);
- any system call made through another ABI than the interpreter's own
  (``int 0x80`` on x86-64, x32): those have other numbers, so a filter keyed
  on the native ones would not see them.

The filter is a classic BPF program handed to ``prctl(PR_SET_SECCOMP)``;
seccomp needs no privilege once ``no_new_privs`` is set, and a filter can
never be removed again by the process it confines. Architectures other than
those listed in ``_ARCHITECTURES`` are left unfiltered and ``refuse`` says so
(the executor reports it through ``syscall_filter``).
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct
import sys
from typing import NamedTuple

FILTERED = "seccomp"


class _Architecture(NamedTuple):
    audit_arch: int  # AUDIT_ARCH_* of the native ABI, as seccomp_data.arch reports it
    refused: tuple[int, ...]  # socket, socketpair, ptrace, process_vm_readv, process_vm_writev
    other_abi_bit: int = 0  # syscall numbers at or above this belong to another ABI (x32)


_IO_URING_AND_PIDFD_GETFD = (425, 426, 427, 438)  # the same number on every architecture
_ARCHITECTURES = {
    "x86_64": _Architecture(0xC000003E, (41, 53, 101, 310, 311), other_abi_bit=0x40000000),
    "aarch64": _Architecture(0xC00000B7, (198, 199, 117, 270, 271)),
    "riscv64": _Architecture(0xC00000F3, (198, 199, 117, 270, 271)),
}

# classic BPF, as linux/filter.h and linux/seccomp.h spell it
_LOAD_WORD = 0x00 | 0x00 | 0x20  # BPF_LD | BPF_W | BPF_ABS
_JUMP_IF_EQUAL = 0x05 | 0x10  # BPF_JMP | BPF_JEQ | BPF_K
_JUMP_IF_AT_LEAST = 0x05 | 0x30  # BPF_JMP | BPF_JGE | BPF_K
_RETURN = 0x06  # BPF_RET | BPF_K
_OFFSET_NR, _OFFSET_ARCH = 0, 4  # in struct seccomp_data
_ALLOW = 0x7FFF0000
_REFUSE = 0x00050000 | errno.EPERM  # SECCOMP_RET_ERRNO
_PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 38, 22, 2


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def filter_program(arch: _Architecture) -> list[tuple[int, int, int, int]]:
    """The BPF instructions (code, jump-if-true, jump-if-false, k) refusing what the docstring lists."""
    refused = (*arch.refused, *_IO_URING_AND_PIDFD_GETFD)
    program = [(_LOAD_WORD, 0, 0, _OFFSET_ARCH),
               (_JUMP_IF_EQUAL, 1, 0, arch.audit_arch),
               (_RETURN, 0, 0, _REFUSE),  # another ABI: refuse every call
               (_LOAD_WORD, 0, 0, _OFFSET_NR)]
    if arch.other_abi_bit:
        program.append((_JUMP_IF_AT_LEAST, len(refused) + 1, 0, arch.other_abi_bit))  # to the refusal
    for index, number in enumerate(refused):
        program.append((_JUMP_IF_EQUAL, len(refused) - index, 0, number))
    program += [(_RETURN, 0, 0, _ALLOW), (_RETURN, 0, 0, _REFUSE)]
    return program


def refuse() -> str:
    """Install the filter on this process; return ``FILTERED`` or why it could not."""
    if not sys.platform.startswith("linux"):
        return f"not filtered: seccomp is Linux-only, this is {sys.platform}"
    arch = _ARCHITECTURES.get(platform.machine())
    if arch is None or struct.calcsize("P") != 8:
        return f"not filtered: no system call table for {platform.machine()} ({struct.calcsize('P') * 8}-bit)"
    program = filter_program(arch)
    instructions = (_SockFilter * len(program))(*(_SockFilter(*i) for i in program))
    fprog = _SockFprog(len(program), instructions)
    libc = ctypes.CDLL(None, use_errno=True)
    zero = ctypes.c_ulong(0)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, ctypes.c_ulong(1), zero, zero, zero) != 0:
        return "not filtered: no_new_privs could not be set"
    if libc.prctl(_PR_SET_SECCOMP, ctypes.c_ulong(_SECCOMP_MODE_FILTER), ctypes.byref(fprog), zero, zero) != 0:
        return f"not filtered: the kernel refused the filter ({os.strerror(ctypes.get_errno())})"
    return FILTERED
