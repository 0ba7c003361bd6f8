"""Red-team tests for the sandbox, run against BOTH executors.

Every payload runs against the in-process ``RestrictedExecutor`` and the
child-process ``IsolatedExecutor`` (``conftest.py`` parametrizes the autouse
``sandbox_kind`` fixture; ``make_executor`` builds whichever is current, with
the same keywords). Checks of host state that only the in-process executor
could touch are marked ``@inprocess_only`` with the reason.

Every test runs one attack written as hostile model code and asserts that the
attack FAILED in a specific way: an error observation of the expected kind, no
canary secret in any observation field, no marker printed by a successful
escape, and host state (global ``random``, ``decimal`` context, host objects
handed in as variables or returned by tools, host functions) left unchanged.

A failing test here is a sandbox finding, not a flaky test.
"""

from __future__ import annotations

import decimal
import random
import textwrap
import threading
from typing import Any

import pytest

from airflow_codeagent.sandbox import policy
from airflow_codeagent.sandbox.isolated import IsolatedExecutor
from airflow_codeagent.sandbox.observation import Observation
from airflow_codeagent.sandbox.restricted import RestrictedExecutor
from tests.redteam.conftest import inprocess_only

SECRET = "canary-7f3a9c51-DO-NOT-LEAK"
MARKER = "PWNED-3b1e"

IMPORTS = [
    "math", "json", "datetime", "statistics", "re", "collections", "functools",
    "itertools", "string", "random", "time", "decimal", "fractions", "unicodedata",
]


def _make_lookup():
    """A tool whose closure holds a secret, like a tool closing over a credential."""
    secret = SECRET

    def lookup(query):
        return f"result for {query!r} ({len(secret)} chars of credential used)"

    return lookup


class _Connection:
    """A host object a tool works with; holds a credential."""

    def __init__(self) -> None:
        self.password = SECRET
        self.host = "db.internal"

    def ok_status(self) -> str:
        return "ok"


_CONNECTION = _Connection()


def _status(kind):
    """A tool with an ordinary bug: unknown ``kind`` raises AttributeError on the connection."""
    return getattr(_CONNECTION, f"{kind}_status")()


_HOST_REGISTRY: dict[str, Any] = {"owner": "host", "items": [1, 2, 3]}


def _registry():
    """A tool that returns a host-owned object (e.g. a cached config dict)."""
    return _HOST_REGISTRY


Executor = RestrictedExecutor | IsolatedExecutor
_FACTORIES = {"restricted": RestrictedExecutor, "isolated": IsolatedExecutor}
_CURRENT: dict[str, Any] = {"kind": "restricted", "made": []}


@pytest.fixture(autouse=True)
def _executor_kind(sandbox_kind):
    """Which executor ``make_executor`` builds for this test; closes them all afterwards."""
    _CURRENT["kind"] = sandbox_kind
    made: list[Executor] = []
    _CURRENT["made"] = made
    yield sandbox_kind
    for ex in made:
        ex.close()
    _CURRENT["made"] = []


def make_executor(step_timeout_s: float | None = 2, **kwargs: Any) -> Executor:
    tools = {"lookup": _make_lookup(), "status": _status, "registry": _registry}
    tools.update(kwargs.pop("tools", {}))
    ex = _FACTORIES[_CURRENT["kind"]](
        tools=tools,
        variables=kwargs.pop("variables", {"data": [1, 2]}),
        authorized_imports=IMPORTS,
        step_timeout_s=step_timeout_s,
        **kwargs,
    )
    _CURRENT["made"].append(ex)
    return ex


def run(ex: Executor, code: str) -> Observation:
    """``ex.run`` must never raise; a BaseException escaping it is itself a finding.

    Converting it here also keeps a KeyboardInterrupt/SystemExit from model code
    from aborting the whole pytest session.
    """
    escaped = None
    try:
        return ex.run(textwrap.dedent(code))
    except BaseException as exc:  # noqa: BLE001
        # Keep only text: the traceback holds model objects whose repr runs model code.
        escaped = f"{type(exc).__name__}: {_message(exc)}"
        del exc
    pytest.fail(f"{type(ex).__name__}.run raised {escaped} "
                "(model code ended the host call instead of producing an error observation)",
                pytrace=False)


def _message(exc: BaseException) -> str:
    try:
        return str(exc)[:200]
    except BaseException:  # noqa: BLE001
        return "<unprintable>"


def observation_text(obs: Observation) -> str:
    try:
        answer = repr(obs.final_answer)
    except BaseException:  # noqa: BLE001 - a model object's repr; covered by its own test
        answer = "<unrepresentable final answer>"
    parts = [obs.stdout, obs.value_repr or "", answer]
    if obs.error is not None:
        parts += [obs.error.type, obs.error.message, obs.error.traceback]
    for call in obs.tool_calls:
        parts += [call.arguments, call.error or ""]
    return "\n".join(parts)


def assert_no_leak(obs: Observation) -> None:
    text = observation_text(obs)
    assert SECRET not in text, f"canary secret leaked into the observation:\n{text[:2000]}"
    # The traceback echoes the model's source lines, marker included; the marker only
    # proves an escape where the code's own output or values show it.
    produced = f"{obs.stdout}\n{obs.value_repr}\n{obs.final_answer!r}"
    assert MARKER not in produced, f"escape marker printed: sandbox escaped:\n{text[:2000]}"


def assert_host_still_works(ex: Executor) -> None:
    obs = run(ex, "40 + 2")
    assert obs.error is None, obs.error
    assert obs.value_repr == "42"


def run_in_thread(ex: Executor, code: str, join_timeout_s: float):
    """Run a step that may never return; cancel it if it outlives ``join_timeout_s``."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["obs"] = ex.run(textwrap.dedent(code))
        except BaseException as exc:  # noqa: BLE001
            box["raised"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(join_timeout_s)
    finished = not thread.is_alive()
    if not finished:
        ex.cancel()  # ticks honour cancellation even after the clock is stopped
        thread.join(10)
    return finished, box.get("obs"), box.get("raised")


# --------------------------------------------------------------------------------------
# 1. Reaching os / sys / builtins / eval / frames through the guards
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("module", ["datetime", "json", "random", "re", "collections", "decimal"])
def test_attributeerror_obj_does_not_hand_out_the_real_module(module):
    """A missing attribute on a ModuleProxy raises AttributeError whose ``.obj`` is the real module."""
    ex = make_executor()
    obs = run(ex, f"""
        import {module}
        real = None
        try:
            {module}.no_such_attribute
        except AttributeError as e:
            real = getattr(e, "obj", None)
        if real is not None and real is not {module}:
            print("{MARKER}", real)
    """)
    assert_no_leak(obs)


def test_attributeerror_obj_reaches_os():
    ex = make_executor()
    obs = run(ex, f"""
        import datetime
        try:
            datetime.no_such_attribute
        except AttributeError as e:
            real = e.obj
        os = real.sys.modules["os"]
        print("{MARKER}", os.getpid())
    """)
    assert_no_leak(obs)
    assert obs.error is not None and obs.error.type == "AttributeError", obs.error
    assert_host_still_works(ex)


def test_functools_update_wrapper_cannot_import_host_globals():
    """update_wrapper(updated=('__globals__',)) merges a host function's globals into the sandbox."""
    ex = make_executor()
    obs = run(ex, f"""
        import functools
        def g():
            pass
        functools.update_wrapper(g, getattr, assigned=(), updated=("__globals__",))
        os = importlib.import_module("os")
        real_getattr = importlib.import_module("builtins").getattr
        cells = real_getattr(lookup, "__closure__")
        inner = [c.cell_contents for c in cells if callable(c.cell_contents)][0]
        print("{MARKER}", os.getpid(), real_getattr(inner, "__closure__")[0].cell_contents)
    """)
    assert_no_leak(obs)
    assert obs.error is not None, "update_wrapper globals merge was not refused"
    assert "importlib" not in ex.variables() and "builtins" not in ex.variables()
    assert_host_still_works(ex)


def test_functools_update_wrapper_cannot_rewrite_host_functions():
    """update_wrapper writes arbitrary (dunder) attributes onto its first argument, host functions included."""
    attrs = ("__name__", "__qualname__", "__module__", "__doc__")
    original = {a: getattr(policy.guarded_getattr, a) for a in attrs}
    ex = make_executor()
    try:
        obs = run(ex, """
            import functools
            def impostor(obj, name, *default):
                "replaced by model code"
            functools.update_wrapper(getattr, impostor)
        """)
        assert {a: getattr(policy.guarded_getattr, a) for a in attrs} == original
        assert not hasattr(policy.guarded_getattr, "__wrapped__")
        assert obs.error is not None
    finally:
        for a, v in original.items():
            setattr(policy.guarded_getattr, a, v)
        policy.guarded_getattr.__dict__.pop("__wrapped__", None)


def test_singledispatch_register_does_not_eval_string_annotations():
    """singledispatch.register -> typing.get_type_hints evals string annotations unrestricted."""
    ex = make_executor()
    payload = "[lookup.__closure__[0].cell_contents.__closure__[0].cell_contents, '" + MARKER + "']"
    obs = run(ex, f"""
        import functools
        @functools.singledispatch
        def f(x):
            return 1
        def g(x: "{payload}"):
            return 2
        f.register(g)
    """)
    assert_no_leak(obs)
    assert obs.error is not None
    assert_host_still_works(ex)


def test_singledispatchmethod_register_does_not_eval_string_annotations():
    ex = make_executor()
    payload = "[lookup.__closure__[0].cell_contents.__closure__[0].cell_contents, '" + MARKER + "']"
    obs = run(ex, f"""
        import functools
        class A:
            @functools.singledispatchmethod
            def f(self, x):
                return 1
            def g(self, x: "{payload}"):
                return 2
        A.f.register(A.g)
    """)
    assert_no_leak(obs)
    assert obs.error is not None


def test_functools_wraps_cannot_import_host_globals():
    ex = make_executor()
    obs = run(ex, f"""
        import functools
        def g():
            pass
        functools.wraps(getattr, assigned=(), updated=("__globals__",))(g)
        print("{MARKER}", importlib.import_module("os").getpid())
    """)
    assert_no_leak(obs)
    assert obs.error is not None
    assert "importlib" not in ex.variables()


def test_metaclass_from_type_of_a_class_is_refused():
    """``type(int)`` is the real ``type`` too: subclassing it gives a working metaclass."""
    ex = make_executor()
    obs = run(ex, """
        class Meta(type(int)):
            pass
        def fake_repr(self):
            return "model-defined __repr__"
        X = Meta("X", (), {"__repr__": fake_repr})
        X()
    """)
    assert obs.error is not None and obs.error.type == "TypeError", obs
    assert obs.value_repr is None


@pytest.mark.parametrize("method", ["format", "format_map"])
def test_userstring_format_does_not_traverse_attributes(method):
    """collections.UserString.format is str.format on ``.data``; RestrictedPython only blocks it on str."""
    ex = make_executor()
    template = "{0.__closure__[0].cell_contents.__closure__[0].cell_contents}"
    if method == "format":
        code = f"""
            import collections
            print(collections.UserString("{template}").format(lookup))
        """
    else:
        template = template.replace("{0.", "{f.")
        code = f"""
            import collections
            print(collections.UserString("{template}").format_map({{"f": lookup}}))
        """
    obs = run(ex, code)
    assert_no_leak(obs)
    assert obs.error is not None
    assert_host_still_works(ex)


@pytest.mark.parametrize("code", [
    'print("{0.__class__}".format(1))',
    'print("{x.__class__}".format_map({"x": 1}))',
    'print(str.format("{0.__class__}", 1))',
    'class S(str):\n    pass\nprint(S("{0.__class__}").format(1))',
    'import string\nstring.Formatter().format("{0.__class__}", 1)',
    # a name receiver takes the compiler's inline fast path for str; format must still be guarded
    'fmt = "{0.__class__}"\nprint(fmt.format(1))',
    'fmt = "{x.__class__}"\nf = fmt.format_map\nprint(f({"x": 1}))',
    'fmt = "{0.__class__}"\nprint(getattr(fmt, "format")(1))',
])
def test_str_format_attribute_traversal_is_refused(code):
    ex = make_executor()
    obs = run(ex, code)
    assert obs.error is not None
    assert obs.error.type in {"NotImplementedError", "AttributeError"}
    assert "<class" not in obs.stdout


def test_tool_exceptions_do_not_hand_out_host_objects():
    """A tool's AttributeError carries ``.obj`` = the host object it failed on (here a connection)."""
    ex = make_executor()
    obs = run(ex, f"""
        try:
            status("bogus")
        except AttributeError as e:
            print("{MARKER}", e.obj.password)
    """)
    assert_no_leak(obs)
    assert obs.error is not None and obs.error.type == "AttributeError"


@pytest.mark.parametrize("code, error_type", [
    ("import os", "ImportError"),
    ("import sys", "ImportError"),
    ("import subprocess", "ImportError"),
    ("import builtins", "SyntaxError"),  # RestrictedPython reserves the name
    ("import importlib", "ImportError"),
    ("import collections.abc", "ImportError"),
    ("from json import decoder", "ImportError"),
    ("from datetime import sys", "ImportError"),
    ("from collections import abc", "ImportError"),
    ("from . import x", "ImportError"),
    ("__import__('os')", "SyntaxError"),
    ("open('/etc/passwd')", "NameError"),
    ("eval('1')", "SyntaxError"),
    ("exec('1')", "SyntaxError"),
    ("compile('1', 'x', 'eval')", "NameError"),
    ("vars()", "NameError"),
    ("dir()", "NameError"),
    ("globals()", "NameError"),
    ("locals()", "NameError"),
    ("super()", "NameError"),
    ("breakpoint()", "SyntaxError"),
    ("input()", "NameError"),
    ("memoryview(b'x')", "NameError"),
])
def test_forbidden_names_and_imports(code, error_type):
    ex = make_executor()
    obs = run(ex, code)
    assert obs.error is not None, code
    assert obs.error.type == error_type, obs.error
    assert_host_still_works(ex)


@pytest.mark.parametrize("expr", [
    "datetime.sys", "json.decoder", "json.codecs", "re.enum", "re.functools", "collections.abc",
    "statistics.random", "fractions.sys", "string.Formatter", "time.sleep", "json.load", "json.dump",
])
def test_module_proxy_refuses_modules_and_denied_names(expr):
    ex = make_executor()
    obs = run(ex, f"import {expr.split('.')[0]}\n{expr}")
    assert obs.error is not None and obs.error.type == "AttributeError", obs.error
    assert obs.value_repr is None


@pytest.mark.parametrize("code", [
    "lookup.__closure__",
    "final_answer.__closure__",
    "lookup.__globals__",
    "(lambda: 0).__code__",
    "getattr(lookup, '__closure__')",
    "getattr(final_answer, '__closure__')",
    "getattr(lookup, '__wrapped__')",
    "getattr(lookup, '__globals__', None) or 1/0",
    "if not hasattr(lookup, '__closure__'):\n    raise AttributeError('refused')",
    "def g():\n    yield 1\ng().gi_frame",
    "def g():\n    yield 1\ngetattr(g(), 'gi_frame')",
    "def g():\n    yield 1\ngetattr(g(), 'gi_code')",
    "try:\n    1/0\nexcept Exception as e:\n    e.__traceback__",
    "try:\n    1/0\nexcept Exception as e:\n    getattr(e, '__traceback__')",
    "import json\njson.loads.__globals__",
    "import json\ngetattr(json.loads, '__globals__')",
    "import random\ngetattr(random.random, '__self__')",
    "().__class__.__base__.__subclasses__()",
    "getattr(getattr((), '__class__'), '__base__')",
])
def test_introspection_of_host_functions_is_refused(code):
    ex = make_executor()
    obs = run(ex, code)
    assert obs.error is not None, code
    assert obs.error.type in {"SyntaxError", "AttributeError"}, obs.error
    assert_no_leak(obs)


@pytest.mark.parametrize("code", [
    "try:\n    pass\nexcept* Exception:\n    pass",
    "def f(_getattr_, /):\n    pass",
    "def f(_tick_, /):\n    while True:\n        pass",
    "def f(*, _write_):\n    pass",
    "def f(*_getiter_):\n    pass",
    "lambda _tick_: 0",
    "global _tick_\n_tick_ = int",
    "for _tick_ in [int]:\n    pass",
    "with open as _write_:\n    pass",
    "import json as _getattr_",
    "try:\n    pass\nexcept Exception as _tick_:\n    pass",
    "(_tick_ := int)",
    "class C(metaclass=type):\n    pass",
    "class C:\n    def __repr__(self):\n        return 'x'",
    "x = 1\nx.__class__ = int",
    "async def f():\n    pass",
    "match 1:\n    case _tick_:\n        pass",
    "def f():\n    nonlocal x",
    # the names of the compiler's fast paths and temporaries
    "_type_ = lambda x: dict",
    "_plain_readable_ = frozenset({type(print)})",
    "_plain_writable_ |= {object}",
    "def f(_type_):\n    return _type_",
    "_tmp0 = 1\nx = {}\nx['a'] += _tmp0",
])
def test_hook_shadowing_and_forbidden_syntax_is_rejected_at_compile_time(code):
    ex = make_executor()
    obs = run(ex, code)
    assert obs.error is not None and obs.error.type == "SyntaxError", (code, obs.error)


def test_type_of_type_does_not_give_the_three_argument_type():
    """``type`` is limited to one argument, but ``type(type(0))`` is the real ``type``."""
    ex = make_executor()
    obs = run(ex, """
        T = type(type(0))
        def fake_repr(self):
            return "model-defined __repr__"
        X = T("X", (), {"__repr__": fake_repr})
        X()
    """)
    assert obs.error is not None and obs.error.type == "TypeError", obs
    assert obs.value_repr is None


def test_type_three_argument_form_is_refused():
    ex = make_executor()
    obs = run(ex, "type('X', (), {})")
    assert obs.error is not None and obs.error.type == "TypeError"


@pytest.mark.parametrize("code", [
    "setattr(lookup, '__doc__', 'x')",
    "setattr(getattr, 'x', 1)",
    "lookup.x = 1",
    "getattr.x = 1",
    "final_answer.x = 1",
    "import json\njson.x = 1",
    "import json\nsetattr(json, 'loads', print)",
    "import decimal\ndecimal.getcontext().prec = 1",
    "import decimal\ndecimal.DefaultContext.prec = 1",
    "class C:\n    pass\nsetattr(C(), '__class__', int)",
    "delattr(lookup, '__name__')",
    # augmented assignment compiles to the same write guard as plain assignment
    "lookup.x += 1",
    "final_answer.x += 1",
    "import json\njson.x += 1",
    "import json\njson.loads += 1",
    "import decimal\ndecimal.getcontext().prec -= 27",
    "import decimal\ndecimal.DefaultContext.prec -= 27",
    "lookup.__doc__ += 'x'",
    "class C:\n    pass\nC().__class__ += 1",
    "xs = [1, 2]\nxs[0:1] += [3]",
    "_tmp0 = 1",
    # a plain-name receiver takes the inline fast path only for exact dict/list/set
    "f = lookup\nf.x = 1",
    "import json\nj = json\nj.x = 1",
    "import json\nj = json\nj.loads += 1",
    "f = lookup\nf.x += 1",
])
def test_writes_to_host_objects_are_refused(code):
    before = decimal.getcontext().prec, decimal.DefaultContext.prec
    ex = make_executor()
    obs = run(ex, code)
    assert obs.error is not None and obs.error.type in {"TypeError", "SyntaxError", "AttributeError"}, \
        (code, obs.error)
    assert (decimal.getcontext().prec, decimal.DefaultContext.prec) == before
    assert getattr(policy.guarded_getattr, "x", None) is None


# --------------------------------------------------------------------------------------
# 2. Host state: inputs, tool results, random, decimal
# --------------------------------------------------------------------------------------


def test_inputs_cannot_be_mutated_through_the_sandbox():
    host = {"rows": [{"id": 1}], "meta": {"n": 1}}
    ex = make_executor(variables={"payload": host})
    obs = run(ex, """
        payload["meta"]["n"] += 41
        payload["rows"] += [{"id": 3}]
        payload["rows"][0]["id"] = 999
        payload["rows"].append({"id": 2})
        payload["meta"].clear()
        payload["new"] = 1
    """)
    assert obs.error is None
    assert host == {"rows": [{"id": 1}], "meta": {"n": 1}}
    # ...while the sandbox's own copy changed as ordinary Python would have done it
    assert run(ex, "payload['rows']").value_repr == "[{'id': 999}, {'id': 3}, {'id': 2}]"


def test_host_objects_returned_by_tools_cannot_be_mutated():
    """Tool results are handed over by reference; dict/list writes are allowed by the write guard."""
    snapshot = {"owner": "host", "items": [1, 2, 3]}
    ex = make_executor()
    try:
        run(ex, f"""
            r = registry()
            r["owner"] = "{MARKER}"
            r["items"].append(4)
            r["items"][0] += 100
            r["owner"] += "!"
        """)
        assert _HOST_REGISTRY == snapshot
    finally:
        _HOST_REGISTRY.clear()
        _HOST_REGISTRY.update(snapshot)
        _HOST_REGISTRY["items"] = [1, 2, 3]


@inprocess_only("the child has its own random module; the host's can only change in-process")
@pytest.mark.parametrize("code", [
    "import random\nrandom.seed(12345)\nrandom.random()",
    "import random\nrandom.setstate(random.getstate())\nrandom.random()",
    "import random\nrandom.getrandbits(64)\nrandom.shuffle(data)\nrandom.choice(data)",
    "import random\nr = random.Random(1)\nr.random()",
    "import statistics\nstatistics.NormalDist(0, 1).samples(5)",
])
def test_host_global_random_state_is_untouched(code):
    state = random.getstate()
    ex = make_executor()
    try:
        obs = run(ex, code)
        assert random.getstate() == state, "model code advanced/reseeded the host's global random"
        del obs
    finally:
        random.setstate(state)


@inprocess_only("the child has its own random module; the host's can only change in-process")
def test_random_getstate_is_not_the_host_state():
    random.seed(424242)
    state = random.getstate()
    ex = make_executor()
    obs = run(ex, "import random\nrandom.getstate()")
    assert obs.error is None
    assert repr(state) != obs.value_repr
    assert random.getstate() == state


@inprocess_only("the child has its own decimal contexts; the host's can only change in-process")
@pytest.mark.parametrize("code", [
    "import decimal\ndecimal.setcontext(decimal.Context(prec=3))",
    "import decimal\ndecimal.getcontext().traps.update({decimal.Inexact: True})",
    "import decimal\ndecimal.getcontext().clear_traps()",
    "import decimal\ndecimal.DefaultContext.traps.update({decimal.Inexact: True})",
    "import decimal\ndecimal.ExtendedContext.traps.update({decimal.Inexact: True})",
])
def test_host_decimal_context_is_untouched(code):
    host_ctx = decimal.getcontext()
    saved = host_ctx.copy()
    saved_templates = {
        name: getattr(decimal, name).copy() for name in ("DefaultContext", "ExtendedContext", "BasicContext")
    }

    def fingerprint(ctx: decimal.Context) -> tuple:
        return (ctx.prec, ctx.rounding, ctx.Emin, ctx.Emax, ctx.capitals, ctx.clamp,
                tuple(sorted((s.__name__, v) for s, v in ctx.traps.items())))

    ex = make_executor()
    try:
        run(ex, code)
        assert decimal.getcontext() is host_ctx, "model code replaced the host thread's decimal context"
        assert fingerprint(decimal.getcontext()) == fingerprint(saved)
        for name, copy in saved_templates.items():
            assert fingerprint(getattr(decimal, name)) == fingerprint(copy), f"decimal.{name} was mutated"
    finally:
        decimal.setcontext(saved)
        for name, copy in saved_templates.items():
            template = getattr(decimal, name)
            for signal, value in copy.traps.items():
                template.traps[signal] = value


# --------------------------------------------------------------------------------------
# 3. Time limit and termination
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [
    "while True:\n    pass",
    "while True:\n    try:\n        while True:\n            pass\n    except BaseException:\n        pass",
    "while True:\n    try:\n        while True:\n            pass\n    except BaseException as e:\n        continue",
    "import itertools\nfor _ in itertools.count():\n    pass",
    "def g():\n    while True:\n        yield 1\nfor x in g():\n    pass",
    "def g():\n    while True:\n        try:\n            yield 1\n        except BaseException:\n            pass\nfor x in g():\n    pass",
    "import itertools\nany(map(lambda x: False, itertools.count()))",
    "import itertools\nany(False for x in itertools.count())",
    "import itertools\n{0 for x in itertools.count()}",
    "import itertools\n{0: 0 for x in itertools.count()}",
    "import itertools\n[0 for x in itertools.count() if False]",
    "def f():\n    try:\n        f()\n    finally:\n        f()\nf()",
    "def f():\n    try:\n        f()\n    except BaseException:\n        f()\nf()",
    "def f():\n    try:\n        return f()\n    except RecursionError:\n        return f()\nf()",
    "class C:\n    while True:\n        pass",
    "class E(Exception):\n    def __init__(self):\n        while True:\n            pass\nraise E()",
    "class K:\n    def __eq__(self, other):\n        while True:\n            pass\nK() == 1",
    "import functools\nfunctools.reduce(lambda a, b: a, iter(int, 1))",
    "try:\n    final_answer(1)\nexcept BaseException:\n    pass\nwhile True:\n    pass",
])
def test_runaway_python_code_is_interrupted(code):
    ex = make_executor(step_timeout_s=0.5)
    obs = run(ex, code)
    if "final_answer(1)" in code:
        # final_answer was given first: the answer stands, the runaway was still stopped.
        assert obs.final_answer_called and obs.final_answer == 1
    elif obs.error is not None and obs.error.type == "SyntaxError":
        pytest.fail(f"snippet did not compile: {obs.error.message}")
    else:
        assert obs.error is not None, code
        assert obs.error.type == "StepInterrupted", obs.error
    assert_host_still_works(ex)


def test_finally_return_cannot_swallow_the_interrupt():
    """``finally: return`` swallows StepInterrupted; the overrun step then reports success."""
    ex = make_executor(step_timeout_s=0.5)
    obs = run(ex, """
        def f():
            try:
                while True:
                    pass
            finally:
                return "survived"
        f()
    """)
    assert obs.error is not None and obs.error.type == "StepInterrupted", obs
    assert obs.value_repr is None


def test_finally_continue_cannot_swallow_the_interrupt():
    ex = make_executor(step_timeout_s=0.5)
    obs = run(ex, """
        n = 0
        for i in range(3):
            try:
                while True:
                    pass
            finally:
                n = n + 1
                continue
        n
    """)
    assert obs.error is not None and obs.error.type == "StepInterrupted", obs


def test_generator_resumed_in_a_later_step_is_interrupted():
    ex = make_executor(step_timeout_s=0.5)
    assert run(ex, "def g():\n    while True:\n        yield 1\nit = g()\nnext(it)").error is None
    obs = run(ex, "for x in it:\n    pass")
    assert obs.error is not None and obs.error.type == "StepInterrupted"
    assert_host_still_works(ex)


@pytest.mark.parametrize("code", [
    "def f(n):\n    return f(n + 1)\nf(0)",
    "f = lambda n: f(n + 1)\nf(0)",
    "class C:\n    def __eq__(self, other):\n        return self == other\nC() == C()",
])
def test_unbounded_recursion_ends_in_recursion_error(code):
    ex = make_executor()
    obs = run(ex, code)
    assert obs.error is not None and obs.error.type == "RecursionError", obs.error
    assert_host_still_works(ex)


@pytest.mark.parametrize("exc", ["SystemExit", "SystemExit(0)", "KeyboardInterrupt", "GeneratorExit",
                                 "BaseException('x')"])
def test_raising_base_exceptions_is_an_observation(exc):
    ex = make_executor()
    obs = run(ex, f"raise {exc}")
    assert obs.error is not None and obs.error.type == exc.split("(")[0]
    assert_host_still_works(ex)


# --- model code that runs outside the step's try/except or after the clock stopped ---

COUNTER_RAISES = textwrap.dedent("""
    import collections
    class C(collections.Counter):
        def most_common(self, n=None):
            raise {exc}
""")


@pytest.mark.parametrize("exc", ["KeyboardInterrupt", "SystemExit(1)", "GeneratorExit"])
def test_trailing_value_repr_cannot_raise_out_of_run(exc):
    """The trailing value is repr'd by the host after exec, catching only Exception.

    Counter.__repr__ calls self.most_common(), which model code may override.
    """
    ex = make_executor()
    obs = run(ex, COUNTER_RAISES.format(exc=exc) + "C(a=1)\n")
    assert obs.error is None or obs.error.type == exc.split("(")[0]
    assert_host_still_works(ex)


@pytest.mark.parametrize("exc", ["KeyboardInterrupt", "SystemExit(1)"])
def test_error_message_cannot_raise_out_of_run(exc):
    """str(exc) for the error observation runs model code (KeyError repr's its argument)."""
    ex = make_executor()
    obs = run(ex, COUNTER_RAISES.format(exc=exc) + "raise KeyError(C(a=1))\n")
    assert obs.error is not None
    assert_host_still_works(ex)


def test_tool_argument_repr_cannot_raise_out_of_run(sandbox_kind):
    ex = make_executor()
    obs = run(ex, COUNTER_RAISES.format(exc="KeyboardInterrupt") + "lookup(C(a=1))\n")
    if sandbox_kind == "isolated":
        # The argument crosses as JSON data (a plain dict): no model code runs in the host.
        assert obs.error is None and obs.tool_calls[0].arguments == "{'a': 1}", obs
    else:
        assert obs.error is not None and obs.error.type == "KeyboardInterrupt"
    assert_host_still_works(ex)


def test_replayed_final_answer_exception_cannot_escape_through_repr():
    ex = make_executor()
    run(ex, """
        try:
            final_answer("first")
        except BaseException as e:
            saved = e
    """)
    obs = run(ex, COUNTER_RAISES.format(exc="saved") + "C(a=1)\n")
    assert obs is not None
    assert_host_still_works(ex)


RUNAWAY_COUNTER = textwrap.dedent("""
    import collections
    class C(collections.Counter):
        def most_common(self, n=None):
            while True:
                pass
""")


@pytest.mark.parametrize("tail", ["C(a=1)", "raise KeyError(C(a=1))"])
def test_runaway_code_in_value_or_message_repr_is_stopped_cleanly(tail):
    """The value repr runs after the clock is stopped (no deadline at all); the
    error message runs with the clock armed but outside the handler that turns
    StepInterrupted into an observation."""
    ex = make_executor(step_timeout_s=0.5)
    finished, obs, raised = run_in_thread(ex, RUNAWAY_COUNTER + tail + "\n", join_timeout_s=15)
    assert finished, "step never ended: model code ran without a deadline (had to cancel it)"
    assert raised is None, f"run() raised {type(raised).__name__}: {raised!r}"
    assert obs is not None and obs.error is not None and obs.error.type == "StepInterrupted", obs


# --------------------------------------------------------------------------------------
# 4. What leaves the sandbox
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("expr", [
    "lookup", "getattr", "final_answer", "json", "json.loads", "decimal.getcontext()", "random.random",
])
def test_final_answer_does_not_return_live_host_objects(expr):
    """Only plain data crosses: a live object is refused back into model code as an error."""
    ex = make_executor()
    obs = run(ex, f"import json, decimal, random\nfinal_answer({expr})")
    assert not obs.final_answer_called
    assert obs.final_answer is None
    assert obs.error is not None and obs.error.type == "NotPlainData", obs.error
    assert "final_answer() takes plain data" in obs.error.message


def test_final_answer_object_cannot_run_model_code_in_the_host():
    """A model object given to final_answer never reaches the host live (its repr would run
    model code with no deadline); plain data made from it does."""
    ex = make_executor()
    obs = run(ex, COUNTER_RAISES.format(exc="KeyboardInterrupt") + "final_answer(C(a=1))\n")
    assert obs.final_answer_called
    assert type(obs.final_answer) is dict and obs.final_answer == {"a": 1}
    assert repr(obs.final_answer) == "{'a': 1}"


def test_canary_never_appears_in_ordinary_tool_use():
    """Positive control: the canary tool really runs (and uses its secret) without leaking it."""
    ex = make_executor()
    obs = run(ex, "r = lookup('x')\nprint(r)\nr")
    assert obs.error is None
    assert f"{len(SECRET)} chars" in obs.stdout
    assert_no_leak(obs)
    assert obs.tool_calls and obs.tool_calls[0].name == "lookup"


# --------------------------------------------------------------------------------------
# 5. Breaking RestrictedPython's hooks must give a clean error observation
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [
    "a, b = 1",
    "a, b = [1, 2, 3]",
    "(a, (b, c)) = (1, 2)",
    "a, *b, (c, d) = [1, 2, 3]",
    "for a, b in [1]:\n    pass",
    "for a, (b, c) in [(1, 2)]:\n    pass",
    "x = 1\nx @= 2",
    "x = 'a'\nx -= 1",
    "print(*5)",
    "print(**5)",
    "lookup(*5)",
    "lookup(**{'a': 1, 'b': 2})",
    "print(sep=5)",
    "print(end=[])",
    "print(file=1)",
    "x = [1]\nx[0:1] = 5",
    "x = (1,)\nx[0] = 2",
    "del getattr.x",
    "import json\ndel json.loads",
    "x = 1\nx[0]",
    "x = {}\nx[[]] = 1",
    "for x in 5:\n    pass",
    "[x for x in 5]",
    "printed.x",
    "class A:\n    pass\nclass B(A, A):\n    pass",
    "class B(lookup):\n    pass",
    "class B(type(lookup)):\n    pass",
    "class B(1):\n    pass",
    "import json\nclass B(type(json)):\n    pass\nB(1)",
    "with 1:\n    pass",
    "x = iter([])\nnext(x)",
    "getattr(1, 2)",
    "getattr(1, 'x', 2, 3)",
    "hasattr(1, 2)",
])
def test_hook_abuse_gives_a_clean_observation(code):
    ex = make_executor()
    obs = run(ex, code)
    assert isinstance(obs, Observation)
    assert obs.error is not None, code
    assert_host_still_works(ex)

# Deep C-level recursion (a million nested map() iterators, hash() of a million nested
# tuples) segfaults CPython 3.11 with no Python frame to tick: the in-process executor
# cannot stop it. Those payloads belong to the isolated executor's suite.


@inprocess_only("the child's garbage collector runs in the child; only in-process is it the worker's")
def test_model_code_cannot_run_in_the_host_between_steps():
    """A generator whose ``finally`` never ends, left in a reference cycle: the worker's next
    garbage collection (any thread, any time) runs it with the step clock stopped."""
    import gc

    ex = make_executor(step_timeout_s=1)
    obs = run(ex, """
        def g():
            try:
                yield 1
            finally:
                while True:
                    pass
        cycle = [g()]
        next(cycle[0])
        cycle.append(cycle)
        cycle = None
    """)
    assert obs.error is None, obs.error
    done = threading.Event()

    def collect() -> None:
        gc.collect()
        done.set()

    thread = threading.Thread(target=collect, daemon=True)
    thread.start()
    finished = done.wait(5)  # hang detector only: gc.collect() itself takes milliseconds
    if not finished:
        ex.cancel()  # the tick honours cancellation: frees the worker
        thread.join(10)
        pytest.xfail("model code ran in the host outside any step (worker's gc); fix: clock.stop() diff")
    assert_host_still_works(ex)


@pytest.mark.parametrize("code", [
    "return",
    "if True:\n    return 1",
    "return 1\nx = 2",
    "yield 5",
    "for i in range(3):\n    pass\nbreak",
    "continue",
    "class C:\n    return 1",
    "x = [(yield) for _ in range(1)]",
])
def test_code_only_the_compiler_rejects_is_an_observation_and_keeps_state(code):
    """ast.parse accepts these; compile() does not. Raised from run(), the in-process executor would
    end the agent run, and the isolated child would die and lose every variable (found on the local
    model, which put ``return`` at the top level eight steps in a row)."""
    ex = make_executor()
    assert run(ex, "kept = 41").error is None
    obs = run(ex, code)
    assert obs.error is not None and obs.error.type == "SyntaxError", obs.error
    assert "line" in obs.error.message
    assert run(ex, "kept + 1").value_repr == "42"


def test_a_trailing_top_level_return_is_the_final_answer():
    """Models end with ``return value`` (the example DAG's task says "return a dict"); as a
    SyntaxError the local model repeated it to the step cap."""
    ex = make_executor()
    obs = run(ex, "counts = {'negative': 2}\nreturn {**counts, 'bad_status': 2}")
    assert obs.error is None and obs.final_answer_called
    assert obs.final_answer == {"negative": 2, "bad_status": 2}


@pytest.mark.parametrize("code", [
    "return ().__class__.__mro__[1].__subclasses__()",
    "return getattr(print, '__self__')",
    "return [c for c in ().__class__.__base__.__subclasses__()]",
])
def test_a_trailing_return_value_is_restricted_like_any_code(code):
    ex = make_executor()
    obs = run(ex, code)
    assert not obs.final_answer_called
    # refused by the policy (so the rewrite ran before it), not by "'return' outside function"
    assert obs.error is not None and "is an invalid attribute name because it starts with" in obs.error.message, \
        obs.error


@pytest.mark.parametrize("code", ["x = " + "-" * 400 + "1", "-" * 3000, "(" * 5000 + ")" * 5000, "-" * 100_000])
def test_code_that_exhausts_the_parser_is_an_observation_and_keeps_state(code):
    """Deep nesting makes the parser, our transformer or the compiler give up with RecursionError or
    MemoryError; raised from run() it would end the run or kill the isolated child."""
    ex = make_executor()
    assert run(ex, "kept = 41").error is None
    obs = run(ex, code)
    assert obs.error is not None and obs.error.type == "SyntaxError", obs.error
    assert run(ex, "kept + 1").value_repr == "42"


def test_a_name_error_carrying_a_str_subclass_runs_no_model_code_in_the_host():
    ex = make_executor()
    obs = run(ex, """
        seen = []
        class S(str):
            def __eq__(self, other):
                seen.append(other)
                return False
        try:
            raise NameError("x", name=S("sqrt"))
        except NameError as exc:
            err = exc
        raise err
    """)
    assert obs.error is not None and obs.error.type in ("NameError", "SyntaxError"), obs.error
    if obs.error.type == "NameError":
        assert run(ex, "seen").value_repr == "[]"  # the hint compared nothing with the model's object
