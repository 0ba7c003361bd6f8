"""The system calls the sandbox child may never make, refused with a seccomp filter.

The network namespace takes the host's interfaces away and Landlock confines
file access, TCP and (on recent kernels) signals, but the child keeps the
worker's uid, so whatever the kernel allows between processes and files of
one uid, and Landlock does not cover, stays open to code that escaped
RestrictedPython. After ``refuse`` the child and everything it starts get
``EPERM`` from

- **sockets**: ``socket`` and ``socketpair`` of every family, so no UNIX
  socket with a path (``/var/run/docker.sock``, a local database) either; and
  io_uring, whose queued operations would open one without ``socket()``;
- **the worker's process**: ``ptrace``, ``process_vm_readv``/``writev``,
  ``pidfd_getfd`` (taking its file descriptors), ``pidfd_send_signal``,
  ``perf_event_open`` (sampling its registers) and the other calls that
  take another process's pid (``process_madvise``, ``move_pages``, ...); and
  signals, resource limits, priorities, CPU affinity and scheduling for any
  process but the child itself: ``prlimit(worker, RLIMIT_CPU, 1)`` would
  kill the worker, ``setpriority(PRIO_USER, ...)`` renice all of its user's
  processes, and Landlock scopes only signals, only from Linux 6.12; also
  ``fcntl(F_SETOWN)`` (a SIGIO to another process), ``clone(CLONE_PARENT)``
  (a child of the worker), and ``setsid``/``setpgid``, so that everything
  the child starts stays in its process group and dies with it;
- **file metadata**: ``chmod``, ``chown``, ``utime`` and extended-attribute
  writes on any path, which Landlock does not guard: a child of a root worker
  could otherwise make any binary setuid root or a secret world-readable;
- **shared kernel objects**: SysV shared memory, semaphores and message
  queues, POSIX message queues and the kernel keyring, which the child would
  share with the worker (the worker's session keyring is inherited);
- **kernel surface** it has no use for once set up: new namespaces (by
  ``unshare``, ``setns`` or ``clone`` flags; ``clone3``, whose flags the
  filter cannot read, answers ``ENOSYS`` so that libc falls back to
  ``clone``), mounts, ``chroot``, BPF, ``userfaultfd`` (a favourite of
  kernel exploits), and inotify/fanotify, which would report the names of
  files in directories Landlock does not let it list;
- anything through **another ABI** than the interpreter's own (``int 0x80``
  on x86-64, x32): those have other numbers, so a filter keyed on the native
  ones would not see them.

The filter is a classic BPF program handed to ``prctl(PR_SET_SECCOMP)``;
seccomp needs no privilege once ``no_new_privs`` is set, and a filter can
never be removed by the process it confines. A process id is compared on
the low 32 bits of its argument, the ``pid_t`` the kernel reads. Other
architectures than those in ``_ARCHITECTURES`` are left unfiltered and
``refuse`` says so (the executor reports it through ``syscall_filter``).
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct
import sys
from collections.abc import Callable, Sequence
from typing import NamedTuple

FILTERED = "seccomp"

# name: (x86-64 number, number in the generic table of arm64 and riscv64)
_REFUSED = {
    # sockets
    "socket": (41, 198), "socketpair": (53, 199),
    "io_uring_setup": (425, 425), "io_uring_enter": (426, 426), "io_uring_register": (427, 427),
    # the worker's process
    "ptrace": (101, 117), "process_vm_readv": (310, 270), "process_vm_writev": (311, 271),
    "pidfd_getfd": (438, 438), "pidfd_send_signal": (424, 424), "perf_event_open": (298, 241),
    "process_madvise": (440, 440), "migrate_pages": (256, 238), "move_pages": (279, 239), "kcmp": (312, 272),
    # file metadata
    "chmod": (90, None), "fchmod": (91, 52), "fchmodat": (268, 53), "fchmodat2": (452, 452),
    "chown": (92, None), "fchown": (93, 55), "lchown": (94, None), "fchownat": (260, 54),
    "utime": (132, None), "utimes": (235, None), "futimesat": (261, None), "utimensat": (280, 88),
    "setxattr": (188, 5), "lsetxattr": (189, 6), "fsetxattr": (190, 7), "setxattrat": (463, 463),
    "removexattr": (197, 14), "lremovexattr": (198, 15), "fremovexattr": (199, 16),
    "removexattrat": (466, 466),
    # shared kernel objects
    "shmget": (29, 194), "shmat": (30, 196), "shmctl": (31, 195), "shmdt": (67, 197),
    "semget": (64, 190), "semop": (65, 193), "semctl": (66, 191), "semtimedop": (220, 192),
    "msgget": (68, 186), "msgsnd": (69, 189), "msgrcv": (70, 188), "msgctl": (71, 187),
    "mq_open": (240, 180), "mq_unlink": (241, 181), "mq_timedsend": (242, 182),
    "mq_timedreceive": (243, 183), "mq_notify": (244, 184), "mq_getsetattr": (245, 185),
    "add_key": (248, 217), "request_key": (249, 218), "keyctl": (250, 219),
    # leaving the child's process group: what it starts must die with it (killpg on close)
    "setsid": (112, 157), "setpgid": (109, 154),
    # watching directories Landlock will not let it list (names and timing of other files)
    "inotify_init": (253, None), "inotify_init1": (294, 26), "inotify_add_watch": (254, 27),
    "fanotify_init": (300, 262), "fanotify_mark": (301, 263),
    # kernel surface the child has no use for once it is set up (namespaces, mounts, BPF, userfaultfd)
    "unshare": (272, 97), "setns": (308, 268), "bpf": (321, 280), "userfaultfd": (323, 282),
    "mount": (165, 40), "umount2": (166, 39), "pivot_root": (155, 41), "chroot": (161, 51),
    "open_tree": (428, 428), "move_mount": (429, 429), "fsopen": (430, 430), "fsconfig": (431, 431),
    "fsmount": (432, 432), "fspick": (433, 433), "mount_setattr": (442, 442),
}

# Allowed only on the child itself: name -> (numbers as above, the arguments' allowed values for
# the child's pid). Each entry of the list is (argument index, allowed values); all must match.
_PRIO_PROCESS, _IOPRIO_WHO_PROCESS = 0, 1
_Rule = Callable[[int], Sequence[tuple[int, tuple[int, ...]]]]
_SELF_ONLY: dict[str, tuple[tuple[int, int], _Rule]] = {
    "prlimit64": ((302, 261), lambda pid: [(0, (0,))]),
    "sched_setparam": ((142, 118), lambda pid: [(0, (0,))]),
    "sched_setscheduler": ((144, 119), lambda pid: [(0, (0,))]),
    "sched_setaffinity": ((203, 122), lambda pid: [(0, (0,))]),
    "sched_setattr": ((314, 274), lambda pid: [(0, (0,))]),
    "setpriority": ((141, 140), lambda pid: [(0, (_PRIO_PROCESS,)), (1, (0,))]),
    "ioprio_set": ((251, 30), lambda pid: [(0, (_IOPRIO_WHO_PROCESS,)), (1, (0,))]),
    # kill(0) and kill(-pid) reach the child's own process group: it leads its own session
    "kill": ((62, 129), lambda pid: [(0, (0, pid, -pid & 0xFFFFFFFF))]),
    "tkill": ((200, 130), lambda pid: [(0, (pid,))]),
    "tgkill": ((234, 131), lambda pid: [(0, (pid,))]),
    "rt_sigqueueinfo": ((129, 138), lambda pid: [(0, (pid,))]),
    "rt_tgsigqueueinfo": ((297, 240), lambda pid: [(0, (pid,))]),
}

# Refused for some arguments only: name -> (numbers, argument index, refused values, refused bits).
_F_SETOWN, _F_SETSIG, _F_SETOWN_EX, _F_SETLEASE, _F_NOTIFY = 8, 10, 15, 1024, 1026
_PR_SCHED_CORE = 62
_CLONE_PARENT = 0x00008000
_CLONE_NEW_NAMESPACES = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000
_REFUSED_ARGUMENTS: dict[str, tuple[tuple[int, int], int, tuple[int, ...], int]] = {
    # a signal (SIGIO, or any with F_SETSIG) to another process when a descriptor becomes ready
    "fcntl": ((72, 25), 1, (_F_SETOWN, _F_SETSIG, _F_SETOWN_EX, _F_SETLEASE, _F_NOTIFY), 0),
    "prctl": ((157, 167), 0, (_PR_SCHED_CORE,), 0),  # core scheduling of another process
    # a child of the worker (CLONE_PARENT), or new namespaces that unshare would be refused
    "clone": ((56, 220), 0, (), _CLONE_PARENT | _CLONE_NEW_NAMESPACES),
}
# Answered "no such call": clone3's flags are in memory the filter cannot read, and glibc and
# CPython fall back to clone, whose flags it can.
_UNAVAILABLE = {"clone3": (435, 435)}


class _Architecture(NamedTuple):
    audit_arch: int  # AUDIT_ARCH_* of the native ABI, as seccomp_data.arch reports it
    table: int  # which column of the number tables above
    other_abi_bit: int = 0  # syscall numbers at or above this belong to another ABI (x32)


_ARCHITECTURES = {
    "x86_64": _Architecture(0xC000003E, 0, other_abi_bit=0x40000000),
    "aarch64": _Architecture(0xC00000B7, 1),
    "riscv64": _Architecture(0xC00000F3, 1),
}

# classic BPF, as linux/filter.h and linux/seccomp.h spell it
_LOAD_WORD = 0x00 | 0x00 | 0x20  # BPF_LD | BPF_W | BPF_ABS
_JUMP_IF_EQUAL = 0x05 | 0x10  # BPF_JMP | BPF_JEQ | BPF_K
_JUMP_IF_AT_LEAST = 0x05 | 0x30  # BPF_JMP | BPF_JGE | BPF_K
_JUMP_IF_ANY_BIT = 0x05 | 0x40  # BPF_JMP | BPF_JSET | BPF_K
_JUMP = 0x05 | 0x00  # BPF_JMP | BPF_JA
_RETURN = 0x06  # BPF_RET | BPF_K
_OFFSET_NR, _OFFSET_ARCH, _OFFSET_ARGS = 0, 4, 16  # in struct seccomp_data; args are 8 bytes each
_ALLOW = 0x7FFF0000
_REFUSE = 0x00050000 | errno.EPERM  # SECCOMP_RET_ERRNO
_UNAVAILABLE_ERRNO = 0x00050000 | errno.ENOSYS
_PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 38, 22, 2

Instruction = tuple[int, int, int, int]  # code, jump-if-true, jump-if-false, k


class _Assembler:
    """BPF with named jump targets: a jump's offsets are filled in once every label is placed."""

    def __init__(self) -> None:
        self._code: list[tuple[int, str | None, str | None, int]] = []
        self._labels: dict[str, int] = {}

    def label(self, name: str) -> None:
        self._labels[name] = len(self._code)

    def emit(self, code: int, k: int, if_true: str | None = None, if_false: str | None = None) -> None:
        self._code.append((code, if_true, if_false, k))

    def program(self) -> list[Instruction]:
        resolved = []
        for index, (code, if_true, if_false, k) in enumerate(self._code):
            jt, jf = (0 if label is None else self._labels[label] - index - 1 for label in (if_true, if_false))
            if code == _JUMP:
                k, jt = jt, 0  # an unconditional jump's offset is k, and has no 255 limit
            if not (0 <= jt <= 255 and 0 <= jf <= 255 and k >= 0):
                raise ValueError(f"instruction {index}: a forward jump of {jt}/{jf} does not fit BPF")
            resolved.append((code, jt, jf, k))
        return resolved


def filter_program(arch: _Architecture, pid: int) -> list[Instruction]:
    """The BPF instructions that refuse what the module docstring lists, for a child of ``pid``."""
    asm = _Assembler()
    asm.emit(_LOAD_WORD, _OFFSET_ARCH)
    asm.emit(_JUMP_IF_EQUAL, arch.audit_arch, if_false="refuse")  # another ABI: refuse every call
    asm.emit(_LOAD_WORD, _OFFSET_NR)
    if arch.other_abi_bit:
        asm.emit(_JUMP_IF_AT_LEAST, arch.other_abi_bit, if_true="refuse")
    for numbers in _REFUSED.values():
        if numbers[arch.table] is not None:
            asm.emit(_JUMP_IF_EQUAL, numbers[arch.table], if_true="refuse")
    for numbers in _UNAVAILABLE.values():
        asm.emit(_JUMP_IF_EQUAL, numbers[arch.table], if_true="unavailable")
    for name, (numbers, *_) in [*_SELF_ONLY.items(), *_REFUSED_ARGUMENTS.items()]:
        asm.emit(_JUMP_IF_EQUAL, numbers[arch.table], if_true=name)
    asm.emit(_RETURN, _ALLOW)
    for name, (_, argument, values, bits) in _REFUSED_ARGUMENTS.items():
        asm.label(name)
        asm.emit(_LOAD_WORD, _OFFSET_ARGS + 8 * argument)
        for value in values:
            asm.emit(_JUMP_IF_EQUAL, value, if_true="refuse")
        if bits:
            asm.emit(_JUMP_IF_ANY_BIT, bits, if_true="refuse")
        asm.emit(_RETURN, _ALLOW)
    for name, (_, rule) in _SELF_ONLY.items():
        asm.label(name)
        for check, (argument, allowed) in enumerate(rule(pid)):
            passed = f"{name}.{check + 1}"
            asm.emit(_LOAD_WORD, _OFFSET_ARGS + 8 * argument)  # the low half: little-endian only
            for value in allowed:
                asm.emit(_JUMP_IF_EQUAL, value, if_true=passed)
            asm.emit(_JUMP, 0, if_true="refuse")
            asm.label(passed)
        asm.emit(_RETURN, _ALLOW)
    asm.label("unavailable")
    asm.emit(_RETURN, _UNAVAILABLE_ERRNO)
    asm.label("refuse")
    asm.emit(_RETURN, _REFUSE)
    return asm.program()


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def refuse() -> str:
    """Install the filter on this process; return ``FILTERED`` or why it could not."""
    if not sys.platform.startswith("linux"):
        return f"not filtered: seccomp is Linux-only, this is {sys.platform}"
    arch = _ARCHITECTURES.get(platform.machine())
    if arch is None or struct.calcsize("P") != 8 or sys.byteorder != "little":
        return f"not filtered: no system call table for {platform.machine()} ({struct.calcsize('P') * 8}-bit)"
    program = filter_program(arch, os.getpid())
    instructions = (_SockFilter * len(program))(*(_SockFilter(*i) for i in program))
    fprog = _SockFprog(len(program), instructions)
    libc = ctypes.CDLL(None, use_errno=True)
    zero = ctypes.c_ulong(0)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, ctypes.c_ulong(1), zero, zero, zero) != 0:
        return "not filtered: no_new_privs could not be set"
    if libc.prctl(_PR_SET_SECCOMP, ctypes.c_ulong(_SECCOMP_MODE_FILTER), ctypes.byref(fprog), zero, zero) != 0:
        return f"not filtered: the kernel refused the filter ({os.strerror(ctypes.get_errno())})"
    return FILTERED
