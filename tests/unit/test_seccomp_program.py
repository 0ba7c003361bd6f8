"""The seccomp program, run on a small classic-BPF interpreter for every architecture it supports.

The red-team tests (``tests/redteam/test_isolated_syscalls.py``) attack the
installed filter on this machine; these check the program itself, also for
the architectures CI does not run on, call by call and argument by argument.
"""

from __future__ import annotations

import struct

import pytest

from airflow_codeagent.sandbox import seccomp

PID = 4242
OTHER_PID = 999


def run_filter(program, *, arch: int, nr: int, args: tuple[int, ...] = ()) -> int:
    """Evaluate ``program`` on one seccomp_data (little-endian), as the kernel does."""
    args = (*args, *(0,) * (6 - len(args)))
    data = struct.pack("<iIQ6Q", nr, arch, 0, *(a & 0xFFFFFFFFFFFFFFFF for a in args))
    accumulator, pc = 0, 0
    while True:
        code, jt, jf, k = program[pc]
        if code == 0x20:
            accumulator = struct.unpack_from("<I", data, k)[0]
            pc += 1
        elif code == 0x05:
            pc += 1 + k
        elif code in (0x15, 0x35, 0x45):
            hit = {0x15: accumulator == k, 0x35: accumulator >= k, 0x45: bool(accumulator & k)}[code]
            pc += 1 + (jt if hit else jf)
        elif code == 0x06:
            return k
        else:
            raise AssertionError(f"unexpected instruction {code:#x} at {pc}")


ALLOW, REFUSE, NO_SUCH_CALL = 0x7FFF0000, 0x00050000 | 1, 0x00050000 | 38
ARCHES = sorted(seccomp._ARCHITECTURES.items())


def numbers(arch, names):
    tables = {**seccomp._REFUSED, **seccomp._UNAVAILABLE,
              **{n: rule[0] for n, rule in [*seccomp._SELF_ONLY.items(), *seccomp._REFUSED_ARGUMENTS.items()]}}
    return [tables[n][arch.table] for n in names]


@pytest.mark.parametrize(("machine", "arch"), ARCHES)
def test_every_listed_call_is_refused_and_every_other_allowed(machine, arch):
    program = seccomp.filter_program(arch, PID)
    refused = {n[arch.table] for n in seccomp._REFUSED.values() if n[arch.table] is not None}
    conditional = {rule[0][arch.table] for rule in [*seccomp._SELF_ONLY.values(),
                                                     *seccomp._REFUSED_ARGUMENTS.values()]}
    conditional |= {n[arch.table] for n in seccomp._UNAVAILABLE.values()}
    for nr in range(0, 1000):
        if nr in conditional:
            continue
        verdict = run_filter(program, arch=arch.audit_arch, nr=nr)
        assert verdict == (REFUSE if nr in refused else ALLOW), (machine, nr)


@pytest.mark.parametrize(("machine", "arch"), ARCHES)
def test_a_call_through_another_abi_is_refused_whatever_its_number(machine, arch):
    program = seccomp.filter_program(arch, PID)
    i386 = 0x40000003
    for nr in (0, 1, 39, 359):  # read, write, getpid (x86-64), socket (i386)
        assert run_filter(program, arch=i386, nr=nr) == REFUSE
    if arch.other_abi_bit:  # x32 shares the audit arch and sets a bit in the number
        assert run_filter(program, arch=arch.audit_arch, nr=0x40000000 | 39) == REFUSE
        assert run_filter(program, arch=arch.audit_arch, nr=-1) == REFUSE


def assert_verdicts(arch, name, allowed, refused) -> None:
    program = seccomp.filter_program(arch, PID)
    (nr,) = numbers(arch, [name])
    for args in allowed:
        assert run_filter(program, arch=arch.audit_arch, nr=nr, args=args) == ALLOW, (name, args)
    for args in refused:
        assert run_filter(program, arch=arch.audit_arch, nr=nr, args=args) == REFUSE, (name, args)


SELF_ONLY_CASES = [
    # name, args allowed, args refused
    ("prlimit64", [(0, 0)], [(PID, 0), (OTHER_PID, 0), (1, 0)]),
    ("sched_setaffinity", [(0,)], [(OTHER_PID,)]),
    ("sched_setscheduler", [(0,)], [(OTHER_PID,)]),
    ("sched_setparam", [(0,)], [(OTHER_PID,)]),
    ("sched_setattr", [(0,)], [(OTHER_PID,)]),
    ("setpriority", [(0, 0, 19)], [(0, OTHER_PID, 19), (2, 0, 19), (1, 0, 19)]),  # PRIO_USER, PRIO_PGRP
    ("ioprio_set", [(1, 0, 7)], [(1, OTHER_PID, 7), (3, 0, 7)]),  # IOPRIO_WHO_USER
    ("kill", [(0, 15), (PID, 15), (-PID, 15)], [(OTHER_PID, 9), (-1, 9), (-OTHER_PID, 9), (1, 9)]),
    ("tgkill", [(PID, PID + 1, 10)], [(OTHER_PID, OTHER_PID, 9)]),
    ("tkill", [(PID, 10)], [(OTHER_PID, 9)]),
    ("rt_sigqueueinfo", [(PID, 10, 0)], [(OTHER_PID, 10, 0)]),
    ("rt_tgsigqueueinfo", [(PID, PID, 10, 0)], [(OTHER_PID, OTHER_PID, 10, 0)]),
]


@pytest.mark.parametrize(("machine", "arch"), ARCHES)
@pytest.mark.parametrize(("name", "allowed", "refused"), SELF_ONLY_CASES, ids=[c[0] for c in SELF_ONLY_CASES])
def test_process_controls_reach_only_the_child_itself(machine, arch, name, allowed, refused):
    assert_verdicts(arch, name, allowed, refused)


@pytest.mark.parametrize(("machine", "arch"), ARCHES)
def test_a_pid_is_read_as_the_kernel_reads_it(machine, arch):
    """pid_t is the low 32 bits: junk in the high half changes nothing the kernel would do."""
    program = seccomp.filter_program(arch, PID)
    (kill,) = numbers(arch, ["kill"])
    assert run_filter(program, arch=arch.audit_arch, nr=kill, args=((1 << 32) | OTHER_PID, 9)) == REFUSE
    assert run_filter(program, arch=arch.audit_arch, nr=kill, args=((1 << 32) | PID, 9)) == ALLOW


REFUSED_ARGUMENT_CASES = [
    # name, args allowed, args refused
    ("fcntl", [(3, 1), (3, 2, 1), (3, 3), (3, 4, 2048), (3, 1030, 0)],  # GETFD, SETFD, GETFL, SETFL, DUPFD_CLOEXEC
     [(3, 8, OTHER_PID), (3, 10, 9), (3, 15, 0), (3, 1024, 1), (3, 1026, 0)]),  # SETOWN, SETSIG, ...
    ("prctl", [(15, 0), (38, 1)], [(62, 1, OTHER_PID)]),  # SET_NAME, SET_NO_NEW_PRIVS; SCHED_CORE
    ("clone", [(0x11,), (0x003D0F00,)],  # fork (SIGCHLD), pthread_create's flags
     [(0x8000 | 0x11,), (0x20000000 | 0x11,), (0x40000000,), (0x00020000,), (0x10000000 | 0x11,)]),
]


@pytest.mark.parametrize(("machine", "arch"), ARCHES)
@pytest.mark.parametrize(("name", "allowed", "refused"), REFUSED_ARGUMENT_CASES,
                         ids=[c[0] for c in REFUSED_ARGUMENT_CASES])
def test_some_arguments_of_everyday_calls_are_refused(machine, arch, name, allowed, refused):
    assert_verdicts(arch, name, allowed, refused)


@pytest.mark.parametrize(("machine", "arch"), ARCHES)
def test_clone3_is_answered_as_missing_so_libc_falls_back_to_clone(machine, arch):
    program = seccomp.filter_program(arch, PID)
    assert run_filter(program, arch=arch.audit_arch, nr=435) == NO_SUCH_CALL
