"""Canaries and resource attacks, against both executors where meaningful.

Canaries (checked after every payload in this file, in both modes):

- a secret FILE on disk (in ``tmp_path``), whose path model code is told;
- an environment variable set in the host;
- a host module global reachable from a tool's ``__globals__``;
- a private attribute on the object whose bound method is a tool.

Each payload must end as a compile error, a runtime error or a limit, with
every canary intact, absent from the observation, and the host still able to
run the next step. Payloads that crash or wedge CPython itself (deep C
recursion, a single huge C computation, multi-GB allocations) run only
against the isolated executor, whose worker must survive them.
"""

from __future__ import annotations

import os
import socket
import textwrap
from typing import Any

import pytest

from airflow_codeagent.sandbox.isolated import IsolatedExecutor
from airflow_codeagent.sandbox.observation import Observation
from airflow_codeagent.sandbox.restricted import RestrictedExecutor
from tests.redteam.conftest import isolated_only

FILE_SECRET = "file-canary-5d21c8e0"
ENV_SECRET = "env-canary-91ab77f3"
GLOBAL_SECRET = "global-canary-0c6e4b19"
ATTR_SECRET = "attr-canary-e84f2a6d"
ENV_NAME = "CODEAGENT_REDTEAM_TOKEN"
MARKER = "PWNED-9c4d"
ALL_SECRETS = (FILE_SECRET, ENV_SECRET, GLOBAL_SECRET, ATTR_SECRET)

_HOST_GLOBAL_TOKEN = GLOBAL_SECRET  # reachable only through a tool function's __globals__

IMPORTS = ["math", "json", "datetime", "statistics", "re", "collections", "functools",
           "itertools", "string", "random", "time", "decimal", "fractions", "unicodedata"]

Executor = RestrictedExecutor | IsolatedExecutor
_FACTORIES = {"restricted": RestrictedExecutor, "isolated": IsolatedExecutor}


class _Vault:
    """A tool object holding a credential in a private attribute."""

    def __init__(self) -> None:
        self._api_key = ATTR_SECRET

    public_region = "eu-west-1"

    def fetch(self, key):
        """Public data only; an unknown key raises AttributeError with ``.obj`` = the vault."""
        if key == "token_len":
            return len(_HOST_GLOBAL_TOKEN) + len(self._api_key)
        return getattr(self, f"public_{key}")


class Canaries:
    def __init__(self, path: str, vault: _Vault) -> None:
        self.path = path
        self.vault = vault

    def check(self, obs: Observation) -> None:
        text = _observation_text(obs)
        for secret in ALL_SECRETS:
            assert secret not in text, f"canary {secret} leaked:\n{text[:2000]}"
        produced = f"{obs.stdout}\n{obs.value_repr}\n{obs.final_answer!r}"
        assert MARKER not in produced, f"escape marker printed:\n{text[:2000]}"
        with open(self.path) as handle:
            assert handle.read() == FILE_SECRET, "the secret file was changed"
        assert os.environ.get(ENV_NAME) == ENV_SECRET, "the host environment was changed"
        assert _HOST_GLOBAL_TOKEN == GLOBAL_SECRET, "the host global was changed"
        assert self.vault._api_key == ATTR_SECRET, "the tool object's private attribute was changed"
        assert vars(self.vault) == {"_api_key": ATTR_SECRET}


def _observation_text(obs: Observation) -> str:
    try:
        answer = repr(obs.final_answer)
    except BaseException:  # noqa: BLE001
        answer = "<unrepresentable>"
    parts = [obs.stdout, obs.value_repr or "", answer]
    if obs.error is not None:
        parts += [obs.error.type, obs.error.message, obs.error.traceback]
    for call in obs.tool_calls:
        parts += [call.arguments, call.error or ""]
    return "\n".join(parts)


@pytest.fixture
def canaries(tmp_path, monkeypatch):
    path = tmp_path / "secret.txt"
    path.write_text(FILE_SECRET)
    monkeypatch.setenv(ENV_NAME, ENV_SECRET)
    return Canaries(str(path), _Vault())


@pytest.fixture
def make(sandbox_kind, canaries):
    """``make(**kwargs)``: the current kind of executor with the canary tools; closed afterwards."""
    made: list[Executor] = []

    def build(step_timeout_s: float | None = 2, **kwargs: Any) -> Executor:
        if sandbox_kind == "isolated":
            kwargs.setdefault("kill_grace_s", 0.5)
        else:
            for key in ("memory_limit_mb", "kill_grace_s"):
                kwargs.pop(key, None)
        ex = _FACTORIES[sandbox_kind](
            tools={"fetch": canaries.vault.fetch, "token_len": _token_len},
            variables={"secret_path": canaries.path, "env_name": ENV_NAME},
            authorized_imports=IMPORTS, step_timeout_s=step_timeout_s, **kwargs)
        made.append(ex)
        return ex

    yield build
    for ex in made:
        ex.close()


def _token_len():
    """A plain function tool: its ``__globals__`` is this module, holding ``_HOST_GLOBAL_TOKEN``."""
    return len(_HOST_GLOBAL_TOKEN)


def run(ex: Executor, code: str) -> Observation:
    try:
        return ex.run(textwrap.dedent(code))
    except BaseException as exc:  # noqa: BLE001
        escaped = f"{type(exc).__name__}: {str(exc)[:200]}"
    pytest.fail(f"{type(ex).__name__}.run raised {escaped}", pytrace=False)


def assert_next_step_works(ex: Executor) -> None:
    obs = run(ex, "40 + 2")
    assert obs.error is None, obs.error
    assert obs.value_repr == "42"


# --------------------------------------------------------------------------------------
# Canaries: file, environment, host global, private tool attribute
# --------------------------------------------------------------------------------------

CANARY_PAYLOADS = [
    # the file
    "open(secret_path).read()",
    "import io\nio.open(secret_path).read()",
    "import os\nos.open(secret_path, 0)",
    "import pathlib\npathlib.Path(secret_path).read_text()",
    "import json\njson.load(secret_path)",
    "import codecs\ncodecs.open(secret_path).read()",
    "import linecache\nlinecache.getline(secret_path, 1)",
    "import fileinput\nlist(fileinput.input(secret_path))",
    "__builtins__['open'](secret_path).read()",
    "getattr(__builtins__, 'open')(secret_path)",
    "fetch.__globals__['__builtins__']['open'](secret_path).read()",
    "getattr(token_len, '__globals__')['open']",
    "import time\ntime.strptime(secret_path, '%s')",
    # the environment
    "import os\nos.environ[env_name]",
    "import os\nos.getenv(env_name)",
    "import posix\nposix.environ",
    "import sys\nsys.modules['os'].environ",
    "import datetime\ndatetime.sys.modules['os'].environ",
    "import time\ntime.tzname, time.timezone\nimport json\njson.codecs.sys",
    # the host global
    "token_len.__globals__['_HOST_GLOBAL_TOKEN']",
    "getattr(token_len, '__globals__')",
    "token_len.__code__.co_names",
    "import functools\ndef g():\n    pass\nfunctools.update_wrapper(g, token_len, assigned=(), "
    "updated=('__globals__',))\n_HOST_GLOBAL_TOKEN",
    "import functools\nfunctools.wraps(token_len, assigned=('__globals__',))(lambda: 0).__globals__",
    "fetch.__func__.__globals__",
    # the tool object's private attribute
    "fetch.__self__._api_key",
    "getattr(fetch, '__self__')",
    "getattr(fetch, '__self__', None) or 1/0",
    "fetch._api_key",
    "fetch('_api_key')",
    "fetch('__dict__')",
    "try:\n    fetch('nope')\nexcept AttributeError as e:\n    print(e.obj._api_key)",
    "try:\n    fetch('nope')\nexcept AttributeError as e:\n    print(getattr(e, 'obj'))",
    "try:\n    fetch('nope')\nexcept Exception as e:\n    print(e.__context__, e.__cause__, e.args)\n    1/0",
    "fetch.__self__._api_key = 'x'",
    "setattr(fetch, '_api_key', 'x')",
    "vars(fetch)",
    "import string\nstring.Template('${x._api_key}').substitute(x=fetch)",
    "'{0.__self__._api_key}'.format(fetch)",
    "'%s' % fetch.__repr__.__self__",
    "import collections\ncollections.UserString('{0.__self__._api_key}').format(fetch)",
]


@pytest.mark.parametrize("code", CANARY_PAYLOADS)
def test_canaries_cannot_be_read_or_changed(make, canaries, code):
    ex = make()
    obs = run(ex, code)
    canaries.check(obs)
    assert obs.error is not None, f"payload ran without an error: {obs}"
    assert_next_step_works(ex)


def test_canary_positive_control(make, canaries):
    """The tools really use the secrets they hold, without handing them out."""
    ex = make()
    obs = run(ex, "print(fetch('token_len'), token_len())")
    canaries.check(obs)
    assert obs.error is None
    assert obs.stdout.split() == [str(len(GLOBAL_SECRET) + len(ATTR_SECRET)), str(len(GLOBAL_SECRET))]


@isolated_only("only the child's OS setup is under test; in-process there is no such layer")
def test_isolated_child_environment_has_no_host_canary(make):
    """Unrestricted code in a child set up like the sandbox does not see the host's variable."""
    ex = make()
    reply = ex._probe(f"import os\nresult = os.environ.get({ENV_NAME!r})")
    assert reply.get("ok") and reply.get("result") is None, reply


# --------------------------------------------------------------------------------------
# Resource attacks the isolated executor exists for
# --------------------------------------------------------------------------------------

# Each of these crashes or wedges the interpreter running it: in-process that is the worker.
C_CRASHERS = {
    "nested_map": "x = iter([])\nfor i in range(1000000):\n    x = map(abs, x)\nnext(x)",
    "nested_filter": "x = iter([])\nfor i in range(1000000):\n    x = filter(None, x)\nnext(x)",
    "nested_zip": "x = iter([])\nfor i in range(1000000):\n    x = zip(x)\nnext(x)",
    "nested_tuple_hash": "t = ()\nfor i in range(1000000):\n    t = (t,)\nhash(t)",
    "nested_chain": "import itertools\nx = iter([])\nfor i in range(1000000):\n"
                    "    x = itertools.chain(x)\nnext(x, None)",
}


@isolated_only("segfaults CPython in-process: the worker itself would die")
@pytest.mark.parametrize("name", sorted(C_CRASHERS))
def test_deep_c_recursion_kills_only_the_child(make, canaries, name):
    ex = make(step_timeout_s=10)
    assert run(ex, "kept = 1").error is None
    obs = run(ex, C_CRASHERS[name])
    canaries.check(obs)
    # A crash is a SandboxError; CPython may also catch the depth itself (RecursionError/MemoryError).
    assert obs.error is not None, f"{name} finished without an error: {obs}"
    assert obs.error.type in {"SandboxError", "RecursionError", "MemoryError", "StepInterrupted"}, obs.error
    assert_next_step_works(ex)


@isolated_only("one uninterruptible C call: in-process it holds the worker until it finishes")
@pytest.mark.parametrize("code", [
    "10**10**10",
    "x = 10**10**8\nx * x",
    "pow(7, 10**9, None)",
    "import math\nmath.factorial(10**8)",
    "import decimal\ndecimal.Decimal(10) ** (10**9)",
])
def test_a_huge_c_computation_is_stopped(make, canaries, code):
    ex = make(step_timeout_s=0.5)
    obs = run(ex, code)
    canaries.check(obs)
    assert obs.error is not None, obs
    assert obs.error.type in {"StepInterrupted", "MemoryError", "ValueError", "OverflowError",
                              "Overflow", "SandboxError"}, obs.error
    assert_next_step_works(ex)


@isolated_only("a multi-GB allocation in-process would hit the worker's memory, not a sandbox limit")
@pytest.mark.parametrize("code", [
    "'a' * 10**10",
    "b'a' * 10**10",
    "[0] * 10**10",
    "bytes(10**10)",
    "x = []\nwhile True:\n    x.append(' ' * 10**6)",
    "x = {}\ni = 0\nwhile True:\n    x[i] = [i] * 1000\n    i = i + 1",
    "s = 'a'\nwhile True:\n    s = s + s",
    "import itertools\nlist(itertools.repeat(0, 10**10))",
    "list(range(10**10))",
])
def test_memory_bombs_hit_the_memory_limit(make, canaries, code):
    ex = make(memory_limit_mb=512, step_timeout_s=10)
    obs = run(ex, code)
    canaries.check(obs)
    assert obs.error is not None, obs
    assert obs.error.type in {"MemoryError", "OverflowError", "SandboxError", "StepInterrupted"}, obs.error
    run(ex, "x = None\ns = None")  # let go of what a gradual bomb kept, if the child survived
    obs = run(ex, "40 + 2")
    assert obs.error is None and obs.value_repr == "42", obs  # a child out of memory is replaced


# --------------------------------------------------------------------------------------
# Output bombs (both executors: bounded output is not isolation-specific)
# --------------------------------------------------------------------------------------

OUTPUT_LIMIT = 10_000
_OBS_BOUND = 100_000  # no field of an observation may grow with what model code produces


@pytest.mark.parametrize("code", [
    "print('a' * 10**7)",
    "for i in range(10**4):\n    print('x' * 1000)",
    "while True:\n    print('y' * 10**5)",
    "print(*(['z'] * 10**6))",
    "print('a', end='b' * 10**7)",
    "print('a', sep='b' * 10**7)",
    "'a' * 10**7",
    "list(range(10**6))",
    "class R:\n    def __repr__(self):\n        return 'r' * 10**7\nR()",
    "for i in range(10**5):\n    fetch('token_len')",
])
def test_output_bombs_are_bounded(make, canaries, code):
    ex = make(output_limit_chars=OUTPUT_LIMIT)
    obs = run(ex, code)
    canaries.check(obs)
    assert len(obs.stdout) <= OUTPUT_LIMIT + 200, len(obs.stdout)
    assert obs.value_repr is None or len(obs.value_repr) <= 10_100
    if obs.error is not None:
        assert len(obs.error.traceback) <= _OBS_BOUND
    assert_next_step_works(ex)


@pytest.mark.parametrize("code", [
    "raise ValueError('e' * 10**7)",
    "raise KeyError('k' * 10**7)",
    "class E(Exception):\n    def __str__(self):\n        return 's' * 10**7\nraise E()",
    "final_answer('f' * 10**7)",
    "final_answer(['f' * 1000] * 10**4)",
    "fetch('x' * 10**7)",
])
def test_error_answer_and_argument_bombs_are_bounded(make, canaries, code, sandbox_kind):
    """What the host keeps from one step (error message, final answer, tool-call record)."""
    ex = make(output_limit_chars=OUTPUT_LIMIT)
    obs = run(ex, code)
    canaries.check(obs)
    sizes = {
        "error.message": len(obs.error.message) if obs.error else 0,
        "final_answer": len(repr(obs.final_answer)),
        "tool_calls": sum(len(c.arguments) + len(c.error or "") for c in obs.tool_calls),
    }
    big = {k: v for k, v in sizes.items() if v > _OBS_BOUND}
    assert_next_step_works(ex)
    assert not big, f"{sandbox_kind}: what the host keeps from one step grew with model output: {big}"


# --------------------------------------------------------------------------------------
# Network egress: a listener in the test must receive nothing
# --------------------------------------------------------------------------------------


@pytest.fixture
def listener():
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.setblocking(False)
    yield server
    server.close()


def _connections(server: socket.socket) -> int:
    """Connections already queued: a connect() that succeeded has completed its handshake."""
    count = 0
    while True:
        try:
            conn, _ = server.accept()
        except BlockingIOError:
            return count
        conn.close()
        count += 1


NETWORK_PAYLOADS = [
    "import socket\ns = socket.create_connection(('127.0.0.1', PORT))",
    "import _socket\ns = _socket.socket()\ns.connect(('127.0.0.1', PORT))",
    "import urllib.request\nurllib.request.urlopen('http://127.0.0.1:PORT/')",
    "import http.client\nhttp.client.HTTPConnection('127.0.0.1', PORT).request('GET', '/')",
    "import asyncio\nasyncio.run(asyncio.open_connection('127.0.0.1', PORT))",
    "import smtplib\nsmtplib.SMTP('127.0.0.1', PORT)",
    "import ftplib\nftplib.FTP('127.0.0.1:PORT')",
    "import xmlrpc.client\nxmlrpc.client.ServerProxy('http://127.0.0.1:PORT').x()",
    "import multiprocessing.connection\nmultiprocessing.connection.Client(('127.0.0.1', PORT))",
    "import datetime\ndatetime.sys.modules['socket'].create_connection(('127.0.0.1', PORT))",
    "fetch.__globals__['socket'].create_connection(('127.0.0.1', PORT))",
    "token_len.__globals__['socket'].socket().connect(('127.0.0.1', PORT))",
    "import json\njson.codecs.sys.modules['socket'].create_connection(('127.0.0.1', PORT))",
    "fetch('http://127.0.0.1:PORT/')",
]


@pytest.mark.parametrize("code", NETWORK_PAYLOADS)
def test_model_code_cannot_reach_the_network(make, canaries, listener, code):
    ex = make()
    port = listener.getsockname()[1]
    obs = run(ex, code.replace("PORT", str(port)))
    canaries.check(obs)
    assert obs.error is not None, obs
    assert _connections(listener) == 0, "the listener received a connection from model code"
    assert_next_step_works(ex)


@isolated_only("unrestricted code only runs in the child; this tests its network namespace")
def test_isolated_child_cannot_reach_a_host_listener_even_unrestricted(make, listener):
    ex = make()
    port = listener.getsockname()[1]
    reply = ex._probe(textwrap.dedent(f"""
        import socket
        try:
            socket.create_connection(("127.0.0.1", {port}), timeout=2).close()
            result = "connected"
        except OSError as exc:
            result = type(exc).__name__
    """))
    assert reply.get("ok"), reply
    assert reply["result"] != "connected"
    assert _connections(listener) == 0

