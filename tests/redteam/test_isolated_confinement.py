"""What an escaped payload can still do inside the isolated child: as little as Landlock allows.

Every other red-team test attacks the RestrictedPython policy. These assume
it already fell: ``IsolatedExecutor._probe`` runs *unrestricted* Python in a
child set up exactly like the sandbox (namespaces, Landlock, limits), which
is what a full escape would give an attacker. The worker's files, another
sandbox's scratch directory and the worker process itself must stay out of
reach. Runs only where the kernel has Landlock; elsewhere the executor must
say that the child is not confined.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from airflow_codeagent.sandbox import landlock
from airflow_codeagent.sandbox.isolated import IsolatedExecutor

SECRET = "landlock-canary-2b7f90"

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Landlock is Linux-only")


@pytest.fixture
def executor():
    ex = IsolatedExecutor(authorized_imports=["json", "math"])
    yield ex
    ex.close()


@pytest.fixture
def confined(executor):
    """The executor, after checking that its child really is confined (or saying why it cannot be)."""
    probe = executor._probe("result = 1")
    if landlock.abi_version() < 1:
        assert probe["filesystem"].startswith("not confined"), probe
        pytest.skip(f"this kernel has no Landlock: {probe['filesystem']}")
    assert probe["filesystem"] == landlock.CONFINED, probe
    return executor


def _escape(ex: IsolatedExecutor, code: str) -> dict:
    return ex._probe(code)


@pytest.mark.parametrize("path", ["/etc/passwd", "/etc/hostname", "/root", "/proc/1/environ", "/home"])
def test_host_files_cannot_be_read(confined, path):
    probe = _escape(confined, f"import os\nresult = os.listdir({path!r}) if os.path.isdir({path!r}) "
                              f"else open({path!r}, 'rb').read(64)")
    assert not probe["ok"] and probe["error"].startswith(("PermissionError", "FileNotFoundError")), probe


def test_a_secret_file_of_the_worker_cannot_be_read(confined, tmp_path):
    secret = tmp_path / "connection.json"
    secret.write_text(SECRET)
    secret.chmod(0o600)  # owned by the worker's user, as the child is: only Landlock stands in the way
    probe = _escape(confined, f"result = open({str(secret)!r}).read()")
    assert not probe["ok"] and probe["error"].startswith("PermissionError"), probe
    assert SECRET not in str(probe)


def test_nothing_can_be_written_outside_the_scratch_directory(confined, tmp_path):
    target = tmp_path / "planted.py"
    probe = _escape(confined, f"open({str(target)!r}, 'w').write('import os')\nresult = 'written'")
    assert not probe["ok"] and probe["error"].startswith("PermissionError"), probe
    assert not target.exists()
    # ...while the scratch directory is the child's own
    inside = _escape(confined, "open('notes.txt', 'w').write('ok')\nresult = open('notes.txt').read()")
    assert inside == {**inside, "ok": True, "result": "ok"}


def test_another_sandbox_scratch_directory_is_out_of_reach(confined):
    other = IsolatedExecutor(authorized_imports=["json"])
    try:
        assert other.run("1 + 1").value_repr == "2"  # its child is up and its scratch directory exists
        planted = os.path.join(other.scratch_dir, "answer.txt")
        with open(planted, "w") as handle:  # the host writes it, so the test does not depend on the policy
            handle.write(SECRET)
        probe = _escape(confined, f"result = open({planted!r}).read()")
        assert not probe["ok"] and probe["error"].startswith("PermissionError"), probe
    finally:
        other.close()


def test_the_worker_and_other_host_processes_cannot_be_signalled(confined):
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for pid in (os.getpid(), bystander.pid):
            probe = _escape(confined, f"import os, signal\nos.kill({pid}, signal.SIGKILL)\nresult = 'sent'")
            assert not probe["ok"] and probe["error"].startswith("PermissionError"), probe
        assert bystander.poll() is None  # still running
    finally:
        bystander.send_signal(signal.SIGKILL)
        bystander.wait()


def test_tcp_is_refused_by_landlock_too(confined):
    """Beside the network namespace: even a loopback inside the namespace cannot be bound or reached."""
    if landlock.abi_version() < 4:
        pytest.skip("Landlock ABI < 4 has no TCP rules")
    probe = _escape(confined, "import socket\ns = socket.socket()\ns.bind(('127.0.0.1', 0))\nresult = 'bound'")
    assert not probe["ok"] and probe["error"].startswith("PermissionError"), probe


def test_the_sandbox_still_works_under_confinement(confined):
    observation = confined.run("import json, math\nprint(json.dumps({'r': math.sqrt(16)}))")
    assert observation.error is None and observation.stdout == '{"r": 4.0}\n'
