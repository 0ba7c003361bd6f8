"""The isolated executor with real child processes: no mocks, no wall-clock speed assertions.

Where a behaviour is shared with the in-process executor, the test runs the
same code in both and compares the observations, so the two cannot drift
apart unnoticed. OS-level isolation (environment, network, limits) is checked
with ``IsolatedExecutor._probe``, which runs an unrestricted snippet in a child
set up exactly like the sandbox, and from the host through ``/proc``.
"""

from __future__ import annotations

import datetime
import decimal
import os
import signal
import socket
import subprocess
import sys
import threading
from typing import Any

import pytest

from airflow_codeagent.sandbox import protocol
from airflow_codeagent.sandbox.child import NETWORK_NAMESPACE, NETWORK_USER_NAMESPACE
from airflow_codeagent.sandbox.executor import executor_factory
from airflow_codeagent.sandbox.isolated import IsolatedExecutor, OpaqueValue, SandboxError
from airflow_codeagent.sandbox.restricted import RestrictedExecutor

CANARY = "canary-5d2e81-DO-NOT-LEAK"

pytestmark = pytest.mark.skipif(not hasattr(os, "killpg") or not hasattr(__import__("select"), "poll"),
                                reason="the isolated executor needs POSIX process groups and poll()")


@pytest.fixture
def make():
    """``make(**kwargs)`` -> IsolatedExecutor, closed after the test."""
    executors: list[IsolatedExecutor] = []

    def build(**kwargs: Any) -> IsolatedExecutor:
        kwargs.setdefault("step_timeout_s", 10)
        executor = IsolatedExecutor(**kwargs)
        executors.append(executor)
        return executor

    yield build
    for executor in executors:
        executor.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _comparable(observation):
    return (observation.stdout, observation.value_repr, observation.error,
            observation.final_answer_called, observation.final_answer,
            [(c.name, c.arguments, c.result_chars, c.error) for c in observation.tool_calls])


class Unavailable(Exception):
    pass


def _tools():
    def lookup(key):
        return {"a": 1, "b": [1, 2]}[key]

    def fail(kind):
        if kind == "value":
            raise ValueError("bad value")
        raise Unavailable("service down")

    def when():
        return datetime.date(2024, 5, 17)

    return {"lookup": lookup, "fail": fail, "when": when}


# -- the same observations as in-process ----------------------------------------------------

PARITY_STEPS = [
    "print('hello', 1, sep='-')",
    "x = [1, 2]\nx + [3]",
    "def f(n):\n    return 1 / n\n\nf(0)",
    "def f(:\n    pass",
    "y = [].__class__",
    "import os",
    "import math\nmath.floor(2.5)",
    "raise SystemExit(3)",
    "raise KeyboardInterrupt('stop')",
    "undefined_name",
    "lookup('a')\nlookup('b')",
    "lookup('zzz')",
    "try:\n    lookup('zzz')\nexcept KeyError as e:\n    print('caught', type(e).__name__)",
    "fail('value')",
    "fail('other')",
    "when().year",
    "final_answer({'rows': (1, 2), 3: 'three', 'ok': True})",
    "final_answer(None)",
    "final_answer({1, 2})",
    "for i in range(3):\n    print(i)\nfinal_answer(i)",
    "print('x' * 500)",
    "class P:\n    def __init__(self, v):\n        self.v = v\nP(3).v",
    "counts = {}\nfor w in 'a b a'.split():\n    counts[w] = counts.get(w, 0)\n    counts[w] += 1\ncounts",
    "class T:\n    n = 0\nt = T()\nt.n += 2\nt.n *= 5\nt.n",
    "math.pi += 1",
    "xs = [1]\nxs[0:1] += [2]",
    "sqrt(4)",
    "[x for xx in data if x]",
    "return data",
]


@pytest.mark.parametrize("code", PARITY_STEPS)
def test_observations_match_the_in_process_executor(make, code):
    kwargs = {"tools": _tools(), "variables": {"data": [1, 2]}, "output_limit_chars": 200,
              "authorized_imports": ["math"]}
    isolated = make(**kwargs)
    in_process = RestrictedExecutor(**kwargs)
    assert _comparable(isolated.run(code)) == _comparable(in_process.run(code))


def test_state_persists_across_steps_and_variables_cross_back_as_data(make):
    ex = make(variables={"rows": [{"id": 1}], "pair": (1, 2)})
    assert ex.run("def show(x):\n    print('value', x)\ncount = 1").stdout == ""
    observation = ex.run("count += 1\nshow(count)\nrows.append({'id': 2})")
    assert observation.stdout == "value 2\n" and observation.error is None
    values = ex.variables()
    assert values["count"] == 2
    assert values["rows"] == [{"id": 1}, {"id": 2}]
    assert values["pair"] == (1, 2)
    assert isinstance(values["show"], OpaqueValue) and values["show"].type == "function"


def test_inputs_are_private_copies_and_keep_their_types(make):
    rows = [{"id": 1, "day": datetime.date(2024, 1, 2), "amount": decimal.Decimal("1.50")}]
    ex = make(variables={"rows": rows})
    observation = ex.run("rows[0]['id'] = 99\n(rows[0]['day'], rows[0]['amount'] * 2)")
    assert observation.value_repr == "(datetime.date(2024, 1, 2), Decimal('3.00'))"
    assert rows[0]["id"] == 1


def test_inputs_that_are_not_data_are_refused_with_their_name():
    with pytest.raises(ValueError, match=r"input 'conn' cannot be sent .*conn\['handle'\] is a _thread.lock"):
        IsolatedExecutor(variables={"conn": {"handle": threading.Lock()}})


@pytest.mark.parametrize("name", ["_private", "final_answer", "not an identifier"])
def test_bad_tool_names_are_refused_as_in_process(name):
    with pytest.raises(ValueError, match="rename the tool"):
        IsolatedExecutor(tools={name: print})


def test_bad_input_names_are_refused_as_in_process():
    with pytest.raises(ValueError, match="rename it"):
        IsolatedExecutor(variables={"my-table": []})


def test_executor_factory_knows_the_isolated_executor():
    assert executor_factory("isolated") is IsolatedExecutor


# -- tools run in the host ------------------------------------------------------------------


def test_tools_run_in_the_host_and_their_secrets_stay_there(make, monkeypatch):
    monkeypatch.setenv("CODEAGENT_CANARY", CANARY)
    calls = []

    def make_tool():
        credential = CANARY  # what a real tool closes over

        def query(sql):
            calls.append(os.getpid())
            return {"rows": [[1, "a"]], "credential_chars": len(credential)}

        return query

    ex = make(tools={"query": make_tool()})
    observation = ex.run("r = query('select 1')\nprint(r)\nr['credential_chars']")
    assert observation.error is None and observation.value_repr == str(len(CANARY))
    assert calls == [os.getpid()]  # the tool ran here, in the host, not in the child
    assert [(c.name, c.arguments, c.error) for c in observation.tool_calls] == [("query", "'select 1'", None)]
    pid = ex.child_pid
    assert pid is not None and pid != os.getpid()
    with open(f"/proc/{pid}/environ", "rb") as handle:  # the child's real environment, read from the host
        child_environ = handle.read()
    assert CANARY.encode() not in child_environ
    with open(f"/proc/{pid}/cmdline", "rb") as handle:
        assert CANARY.encode() not in handle.read()
    assert CANARY not in repr(observation) and CANARY not in repr(ex.variables())


def test_tool_results_that_are_not_data_become_a_clear_error(make):
    ex = make(tools={"conn": lambda: threading.Lock()})
    observation = ex.run("conn()")
    assert observation.error.type == "TypeError"
    assert "conn() returned a value that cannot enter the sandbox" in observation.error.message
    assert observation.tool_calls[0].error.startswith("TypeError: conn() returned")


def test_tool_arguments_that_are_not_data_raise_in_model_code(make):
    ex = make(tools={"lookup": lambda x: x})
    observation = ex.run("class Thing:\n    pass\nlookup(Thing())")
    assert observation.error.type == "TypeError"
    assert "lookup() cannot receive this value: argument 1 is a Thing" in observation.error.message
    assert observation.error.traceback == "  line 3: lookup(Thing())"


# -- hard limits ----------------------------------------------------------------------------


def test_a_runaway_c_call_is_killed_and_the_next_step_gets_a_fresh_child(make):
    ex = make(step_timeout_s=1, kill_grace_s=0.5, variables={"seed": 7})
    assert ex.run("x = 1").error is None
    first_pid = ex.child_pid
    observation = ex.run("10**10**10")
    assert observation.error.type == "StepInterrupted"
    assert observation.error.message == (
        "step stopped: exceeded the 1 s time limit; the sandbox was restarted and variables from "
        "earlier steps are lost")
    assert not _alive(first_pid)
    observation = ex.run("x")
    assert observation.error.type == "NameError"  # earlier variables are gone ...
    assert ex.run("seed + 1").value_repr == "8"  # ... the inputs are back
    assert ex.child_pid != first_pid


def test_a_python_loop_stops_at_the_limit_like_in_process_and_keeps_variables(make):
    ex = make(step_timeout_s=0.5)
    ex.run("kept = 'yes'")
    pid = ex.child_pid
    observation = ex.run("while True:\n    pass")
    in_process = RestrictedExecutor(step_timeout_s=0.5).run("while True:\n    pass")
    assert (observation.error.type, observation.error.message) == (in_process.error.type, in_process.error.message)
    assert ex.child_pid == pid and ex.run("kept").value_repr == "'yes'"


def test_a_memory_bomb_is_a_memory_error_and_the_sandbox_survives(make):
    ex = make(memory_limit_mb=512)
    ex.run("kept = 1")
    observation = ex.run("s = 'a' * 10**10")
    assert observation.error.type == "MemoryError"
    assert "memory limit of 512 MiB" in observation.error.message
    observation = ex.run("chunks = []\nwhile True:\n    chunks.append('x' * 10**7)")
    assert observation.error.type == "MemoryError"
    assert ex.run("chunks = None\nkept").value_repr == "1"


def test_output_is_limited_like_in_process(make):
    code = "for i in range(2000):\n    print('line', i)"
    isolated = make(output_limit_chars=300).run(code)
    in_process = RestrictedExecutor(output_limit_chars=300).run(code)
    assert isolated.stdout == in_process.stdout
    assert "characters of output dropped" in isolated.stdout


def test_files_cannot_be_opened_and_file_size_is_limited(make):
    ex = make(file_size_limit_mb=1)
    assert ex.run("open('x.txt', 'w')").error.type == "NameError"
    probe = ex._probe(
        "import os, resource\n"
        "result = {'fsize': resource.getrlimit(resource.RLIMIT_FSIZE), 'cwd': os.getcwd()}\n"
        "try:\n"
        "    with open('big.bin', 'wb') as f:\n"
        "        f.write(b'x' * (2 << 20))\n"
        "    result['write'] = 'ok'\n"
        "except OSError as exc:\n"
        "    result['write'] = exc.errno\n"
    )
    assert probe["ok"], probe
    assert probe["result"]["fsize"] == (1 << 20, 1 << 20)
    assert probe["result"]["cwd"] == ex.scratch_dir
    assert probe["result"]["write"] == 27  # EFBIG: the write past the limit failed


def test_resource_limits_are_set_in_the_child(make):
    ex = make(memory_limit_mb=1024, open_files_limit=32)
    probe = ex._probe(
        "import resource\n"
        "result = {name: resource.getrlimit(getattr(resource, name))\n"
        "          for name in ('RLIMIT_AS', 'RLIMIT_NOFILE', 'RLIMIT_CORE')}\n"
    )
    assert probe["result"] == {"RLIMIT_AS": (1 << 30, 1 << 30), "RLIMIT_NOFILE": (32, 32), "RLIMIT_CORE": (0, 0)}
    # Inside a user namespace the child cannot raise its own limits again.
    if probe["network"] == NETWORK_USER_NAMESPACE:
        raised = ex._probe("import resource\nresource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))")
        assert not raised["ok"] and raised["error"].startswith("ValueError")


def test_the_environment_is_scrubbed(make, monkeypatch):
    monkeypatch.setenv("CODEAGENT_CANARY", CANARY)
    ex = make()
    assert ex._child_env().get("CODEAGENT_CANARY") is None
    probe = ex._probe(
        "import os\n"
        "try:\n"
        "    raw = open('/proc/self/environ', 'rb').read()\n"
        "except PermissionError:\n"
        "    raw = b'denied'\n"  # Landlock: /proc is not among the readable paths
        "result = {'environ': dict(os.environ), 'raw': raw}\n"
    )
    assert probe["ok"], probe
    assert "CODEAGENT_CANARY" not in probe["result"]["environ"]
    assert CANARY.encode() not in probe["result"]["raw"]
    assert probe["result"]["raw"] == b"denied" or probe["filesystem"] != "landlock"


def test_the_child_cannot_read_the_hosts_memory_or_environment(make, monkeypatch):
    monkeypatch.setenv("CODEAGENT_CANARY", CANARY)
    ex = make()
    probe = ex._probe(
        f"result = {{}}\n"
        f"for part in ('environ', 'mem'):\n"
        f"    try:\n"
        f"        result[part] = open('/proc/{os.getpid()}/' + part, 'rb').read(64).hex()\n"
        f"    except OSError as exc:\n"
        f"        result[part] = type(exc).__name__\n"
    )
    if probe["network"] != NETWORK_USER_NAMESPACE:
        pytest.skip("no user namespace here: a child of the same user can read /proc/<host>")
    assert probe["result"] == {"environ": "PermissionError", "mem": "PermissionError"}


def test_the_network_is_unreachable(make):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    try:
        ex = make(authorized_imports=["math"])
        assert ex.run("import socket").error.type == "ImportError"  # not importable by model code
        probe = ex._probe(
            "import socket\n"
            "try:\n"
            f"    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
            "    result = 'connected'\n"
            "except OSError as exc:\n"
            "    result = type(exc).__name__ + ': ' + str(exc)\n"
        )
        assert probe["ok"], probe
        assert probe["result"] != "connected"
        assert probe["network"] in (NETWORK_USER_NAMESPACE, NETWORK_NAMESPACE) or "disabled" in probe["result"]
        with pytest.raises(TimeoutError):
            listener.accept()
    finally:
        listener.close()


def test_the_python_level_socket_block_used_without_namespaces():
    code = (
        "from airflow_codeagent.sandbox.child import _block_python_sockets\n"
        "_block_python_sockets()\n"
        "import socket, urllib.request\n"
        "for attempt in (lambda: socket.socket(), lambda: socket.create_connection(('127.0.0.1', 9)),\n"
        "                lambda: urllib.request.urlopen('http://127.0.0.1:9/', timeout=1)):\n"
        "    try:\n"
        "        attempt()\n"
        "        print('CONNECTED')\n"
        "    except Exception as exc:\n"
        "        print(type(exc).__name__, exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "CONNECTED" not in out.stdout
    assert out.stdout.count("network access is disabled in the sandbox") == 3, out.stdout


# -- cancel, host exceptions, close ---------------------------------------------------------


def test_cancel_from_another_thread_stops_a_python_loop_cooperatively(make):
    ex = make(step_timeout_s=None)
    ex.run("kept = 1")
    pid = ex.child_pid
    timer = threading.Timer(0.3, ex.cancel)
    timer.start()
    observation = ex.run("while True:\n    pass")
    timer.join()
    assert (observation.error.type, observation.error.message) == ("StepInterrupted", "run cancelled")
    assert ex.child_pid == pid
    # Cancellation is sticky, as in-process: later steps stop at their first tick.
    assert ex.run("for i in range(3):\n    pass").error.message == "run cancelled"


def test_cancel_kills_a_child_stuck_in_a_c_call(make):
    ex = make(step_timeout_s=None, kill_grace_s=0.3)
    ex.run("x = 1")
    pid = ex.child_pid
    timer = threading.Timer(0.3, ex.cancel)
    timer.start()
    observation = ex.run("10**10**10")
    timer.join()
    assert observation.error.type == "StepInterrupted"
    assert observation.error.message.startswith("run cancelled; the sandbox was stopped")
    assert not _alive(pid)


class TaskKilled(BaseException):
    pass


def test_host_exceptions_from_tools_propagate_and_kill_the_child(make):
    def killer():
        raise TaskKilled()

    ex = make(tools={"work": killer}, reraise=(TaskKilled,))
    ex.run("x = 1")
    pid = ex.child_pid
    with pytest.raises(TaskKilled):
        ex.run("try:\n    work()\nexcept BaseException:\n    pass")
    assert not _alive(pid)
    assert ex.run("1 + 1").value_repr == "2"  # a fresh child serves the next step


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals need the main thread")
def test_a_signal_raised_in_the_host_while_waiting_kills_the_child(make):
    ex = make(step_timeout_s=None)
    ex.run("x = 1")
    pid = ex.child_pid

    def on_alarm(signum, frame):
        raise TaskKilled()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        with pytest.raises(TaskKilled):
            ex.run("while True:\n    pass")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert not _alive(pid)
    assert ex.run("2 * 21").value_repr == "42"


def test_a_child_killed_from_outside_is_reported_and_replaced(make):
    ex = make(step_timeout_s=None)
    ex.run("x = 1")
    pid = ex.child_pid
    timer = threading.Timer(0.3, os.kill, (pid, signal.SIGKILL))
    timer.start()
    observation = ex.run("while True:\n    pass")
    timer.join()
    assert observation.error.type == "SandboxError"
    assert "killed by SIGKILL" in observation.error.message and "variables" in observation.error.message
    assert ex.run("3").value_repr == "3"


def test_the_cpu_limit_ends_a_step(make):
    ex = make(step_timeout_s=None, cpu_limit_s=1)
    observation = ex.run("while True:\n    pass")
    assert observation.error.type == "StepInterrupted"
    assert "CPU time limit" in observation.error.message


def test_close_removes_the_scratch_dir_and_leaves_no_child():
    ex = IsolatedExecutor()
    ex.run("x = 1")
    pid, scratch = ex.child_pid, ex.scratch_dir
    assert os.path.isdir(scratch) and _alive(pid)
    ex.close()
    assert not os.path.exists(scratch)
    assert not _alive(pid)
    ex.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        ex.run("x")


def test_close_from_another_thread_ends_a_running_step():
    ex = IsolatedExecutor(step_timeout_s=None)
    ex.run("x = 1")
    pid, scratch = ex.child_pid, ex.scratch_dir
    timer = threading.Timer(0.3, ex.close)
    timer.start()
    observation = ex.run("while True:\n    pass")
    timer.join()
    assert observation.error.type == "StepInterrupted"
    assert observation.error.message == "the executor was closed while the step ran"
    assert not _alive(pid) and not os.path.exists(scratch)
    assert ex.child_pid is None


def test_a_child_that_cannot_start_is_a_clear_host_error(tmp_path):
    broken = tmp_path / "python"
    broken.write_text("#!/bin/sh\necho 'no interpreter here' >&2\nexit 3\n")
    broken.chmod(0o755)
    ex = IsolatedExecutor(python=str(broken))
    try:
        with pytest.raises(SandboxError, match=r"did not start \(exit status 3\).*no interpreter here"):
            ex.run("1")
    finally:
        ex.close()


# -- the wire format ------------------------------------------------------------------------


def test_values_round_trip_through_the_wire_format():
    value = {
        "t": (1, "a"), "s": {1, 2}, "f": frozenset({"x"}), 2024: "int key", "$t": "not a tag",
        "b": b"\x00\xff", "dt": datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
        "d": datetime.date(2024, 1, 2), "td": datetime.timedelta(days=1, seconds=2),
        "dec": decimal.Decimal("1.10"), "c": 1 + 2j, "big": 7 ** 20000, "nan": float("inf"),
    }
    line = protocol.dumps({"op": "x", "v": protocol.encode(value)})
    assert line.count(b"\n") == 1
    assert protocol.loads(line)["v"] == value


def test_the_wire_format_refuses_objects_and_names_where_they_are():
    with pytest.raises(protocol.WireError) as info:
        protocol.encode({"rows": [1, 2, object()]})
    assert info.value.describe("answer") == "answer['rows'][2] is a object"


@pytest.mark.parametrize("line", [
    b"not json", b"[1, 2]", b'{"no_op": 1}', b'{"op": "x", "v": {"$t": "pickle", "v": "gASV"}}',
    b'{"op": "x", "v": {"$t": "set", "v": [[1]]}}',
])
def test_malformed_messages_are_protocol_errors(line):
    with pytest.raises(protocol.ProtocolError):
        protocol.loads(line)


def test_the_host_runs_no_helper_threads(make):
    before = threading.active_count()
    ex = make()
    ex.run("1")
    assert threading.active_count() == before


# -- inside the agent loop ------------------------------------------------------------------


@pytest.mark.integration
def test_the_agent_loop_runs_on_the_isolated_executor(llm_server):
    from airflow_codeagent import CodeAgent, RunStatus, tool

    @tool
    def get_rate(currency: str) -> float:
        """Exchange rate to EUR.

        Args:
            currency: ISO code such as "USD".
        """
        return {"USD": 0.9, "GBP": 1.2}[currency]

    def step(body: str) -> str:
        return f"Thought: next.\n```python\n{body}\n```"

    server = llm_server([
        step("rates = {c: get_rate(c) for c in amounts}\nprint(rates)"),
        step("10**10**10"),
        step("rates = {c: get_rate(c) for c in amounts}\neur = {c: amounts[c] * rates[c] for c in amounts}"),
        step("final_answer({'total': round(sum(eur.values()), 2), 'by_currency': eur})"),
    ])
    agent = CodeAgent("openai/scripted-model", tools=[get_rate], max_steps=6, step_timeout_seconds=1,
                      sandbox="isolated",
                      model_kwargs={"api_base": server.api_base, "api_key": "sk-test-key-0001"})
    run = agent.run("Convert 120 USD and 80 GBP to EUR", inputs={"amounts": {"USD": 120, "GBP": 80}})
    assert run.status is RunStatus.FINAL_ANSWER, run.trace
    assert run.answer == {"total": 204.0, "by_currency": {"USD": 108.0, "GBP": 96.0}}
    steps = run.trace["steps"]
    assert steps[0]["stdout"] == "{'USD': 0.9, 'GBP': 1.2}\n"
    assert [c["name"] for c in steps[0]["tool_calls"]] == ["get_rate", "get_rate"]
    assert steps[1]["error"]["type"] == "StepInterrupted"
    assert "variables from earlier steps are lost" in steps[1]["error"]["message"]
    assert run.trace["limits"]["sandbox"] == "isolated"


def test_large_variables_come_back_as_a_bounded_repr(make):
    ex = make()
    ex.run("big = list(range(300000))\nn = 1")
    values = ex.variables()
    assert values["n"] == 1
    assert isinstance(values["big"], OpaqueValue) and values["big"].type == "list"
    assert values["big"].repr.startswith("[0, 1, 2") and "more characters]" in values["big"].repr


def test_a_child_that_does_not_list_its_variables_in_time_is_stopped(make):
    ex = make()
    ex.run("n = 1")
    pid = ex.child_pid
    os.kill(pid, signal.SIGSTOP)  # a child that cannot answer at all
    ex.variables_timeout_s = 0.2
    assert ex.variables() == {}  # as in-process, listing variables does not raise ...
    assert not _alive(pid)
    observation = ex.run("n")  # ... the next step reports what happened
    assert observation.error.type == "SandboxError"
    assert "did not list its variables" in observation.error.message
    assert ex.run("n").error.type == "NameError"
