"""pandas and numpy by opt-in, without their I/O, pickle and eval surfaces.

Module level (``allowlist.py``) applies to both executors. Method level
(``dataframes.py``) needs the ``guarded_getattr`` hook in ``policy.py``; until
that hook is in, the in-process tests install it for the test, and the
isolated executor is only tested at module level.
"""

from __future__ import annotations

import os
import textwrap

import pytest

pd = pytest.importorskip("pandas")
np = pytest.importorskip("numpy")

from airflow_codeagent.sandbox import dataframes, policy  # noqa: E402
from airflow_codeagent.sandbox.isolated import IsolatedExecutor  # noqa: E402
from airflow_codeagent.sandbox.restricted import RestrictedExecutor  # noqa: E402

HOOK_IN_POLICY = getattr(policy, "dataframes", None) is dataframes
IMPORTS = ["pandas", "numpy", "numpy.linalg", "numpy.random", "math", "json"]
KINDS = ["restricted", "isolated"]


@pytest.fixture
def hook(monkeypatch):
    if not HOOK_IN_POLICY:
        monkeypatch.setattr(policy, "guarded_getattr", dataframes.guarded_getattr(policy.guarded_getattr))


@pytest.fixture
def make(tmp_path, monkeypatch):
    made = []

    def build(kind="restricted", **kwargs):
        cls = RestrictedExecutor if kind == "restricted" else IsolatedExecutor
        ex = cls(authorized_imports=IMPORTS, step_timeout_s=20,
                 variables={"target": str(tmp_path / "out")}, **kwargs)
        made.append(ex)
        return ex

    monkeypatch.chdir(tmp_path)
    yield build
    for ex in made:
        ex.close()


def run(ex, code):
    return ex.run(textwrap.dedent(code))


def _written(tmp_path):
    return sorted(p.name for p in tmp_path.iterdir())


# --- module level: both executors ------------------------------------------------------

MODULE_SURFACES = [
    "pd.read_csv(target)", "pd.read_pickle(target)", "pd.read_json(target)", "pd.read_parquet(target)",
    "pd.read_sql('select 1', 'sqlite://')", "pd.read_html(target)", "pd.read_clipboard()",
    "pd.read_excel(target)", "pd.read_table(target)", "pd.read_fwf(target)", "pd.read_xml(target)",
    "pd.to_pickle(pd.DataFrame(), target)", "pd.eval('1 + 1')", "pd.io", "pd.compat", "pd.api",
    "pd.options", "pd.set_option('display.max_rows', 1)", "pd.option_context", "pd.show_versions()",
    "pd.HDFStore(target)", "pd.ExcelWriter(target)", "pd.plotting", "pd.core", "pd.util", "pd.testing",
    "np.load(target)", "np.save(target, np.zeros(2))", "np.savez(target, a=np.zeros(2))",
    "np.savetxt(target, np.zeros(2))", "np.loadtxt(target)", "np.genfromtxt(target)",
    "np.fromfile(target)", "np.fromregex(target, 'x', [('a', 'i4')])", "np.memmap(target)",
    "np.DataSource()", "np.f2py", "np.ctypeslib", "np.lib", "np.testing",
    "np.seterr(all='ignore')", "np.seterrcall(print)", "np.set_printoptions(precision=1)",
    "np.info(np.add)", "np.show_config()", "np.bmat('target')", "np.empty(10)", "np.empty_like([1])",
    "np.ndarray((10,))", "np.sctypeDict", "np.typecodes", "np.random.seed(1)", "np.random.rand()",
    "np.random.bit_generator",
]


@pytest.fixture(scope="module", params=KINDS)
def shared(request, tmp_path_factory):
    """One executor per kind for payloads that only fail (they leave no state behind)."""
    cls = RestrictedExecutor if request.param == "restricted" else IsolatedExecutor
    target = tmp_path_factory.mktemp("shared")
    ex = cls(authorized_imports=IMPORTS, step_timeout_s=20, variables={"target": str(target / "out")})
    assert ex.run("import pandas as pd\nimport numpy as np\nimport numpy.random").error is None
    yield ex, target
    ex.close()


@pytest.mark.parametrize("expr", MODULE_SURFACES)
def test_removed_module_surfaces_fail(shared, expr):
    ex, target = shared
    obs = run(ex, expr)
    assert obs.error is not None, (expr, obs)
    assert obs.error.type in {"AttributeError", "ImportError", "SyntaxError"}, (expr, obs.error)
    assert _written(target) == [], "a file was written"


@pytest.mark.parametrize("kind", KINDS)
def test_pandas_and_numpy_are_opt_in(make, kind):
    ex = make(kind)
    ex_default = RestrictedExecutor()
    try:
        assert ex_default.run("import pandas").error.type == "ImportError"
        assert ex_default.run("import numpy").error.type == "ImportError"
    finally:
        ex_default.close()
    assert run(ex, "import pandas, numpy").error is None


GROUPBY = """
    import pandas as pd
    import numpy as np
    df = pd.DataFrame({"team": ["a", "b", "a", "c"], "score": [1.0, 2.0, 3.0, 4.0], "n": [1, 2, 3, 4]})
    teams = pd.DataFrame({"team": ["a", "b", "c"], "city": ["x", "y", "z"]})
    g = df.groupby("team").agg(total=("score", "sum"), mean=("score", "mean")).reset_index()
    m = g.merge(teams, on="team", how="left")
    d = df.describe()
    pivot = df.pivot_table(index="team", values="score", aggfunc="sum")
    arr = np.arange(6).reshape(2, 3)
    rng = np.random.default_rng(0)
    final_answer({
        "groups": m.to_dict(orient="records"),
        "count": float(d.loc["count", "score"]),
        "pivot": pivot["score"].to_list(),
        "sum": int(arr.sum()), "col": arr.sum(axis=0).tolist(),
        "inv": np.linalg.inv(np.eye(2)).tolist(),
        "applied": float(df["score"].apply("sum")), "agg": df[["score", "n"]].agg(["sum", "mean"]).loc["sum", "n"].item(),
        "csv": df.head(1).to_csv(index=False), "json": df.head(1).to_json(orient="records"),
        "text": len(df.to_string()) > 0, "rand": 0 <= rng.random() < 1,
    })
"""


@pytest.mark.parametrize("kind", KINDS)
def test_ordinary_groupby_merge_describe_work(make, hook, kind):
    ex = make(kind)
    obs = run(ex, GROUPBY)
    assert obs.error is None, obs.error
    answer = obs.final_answer
    assert answer["groups"] == [
        {"team": "a", "total": 4.0, "mean": 2.0, "city": "x"},
        {"team": "b", "total": 2.0, "mean": 2.0, "city": "y"},
        {"team": "c", "total": 4.0, "mean": 4.0, "city": "z"},
    ]
    assert answer["count"] == 4.0 and answer["pivot"] == [4.0, 2.0, 4.0]
    assert answer["sum"] == 15 and answer["col"] == [3, 5, 7]
    assert answer["inv"] == [[1.0, 0.0], [0.0, 1.0]]
    assert answer["applied"] == 10.0 and answer["agg"] == 10
    assert answer["csv"].splitlines() == ["team,score,n", "a,1.0,1"]
    assert answer["json"] == '[{"team":"a","score":1.0,"n":1}]'
    assert answer["text"] is True and answer["rand"] is True


# --- method level: in-process with the hook (both executors once policy.py has it) ----

METHOD_SURFACES = [
    "df.to_csv(target)", "df.to_csv(path_or_buf=target)", "df.to_json(target)", "df.to_string(target)",
    "df.to_html(target)", "df.to_markdown(target)", "df.to_latex(target)",
    "df.to_pickle(target)", "df.to_parquet(target)", "df.to_feather(target)", "df.to_excel(target)",
    "df.to_hdf(target, key='k')", "df.to_sql('t', 'sqlite:///' + target)", "df.to_stata(target)",
    "df.to_xml(target)", "df.to_orc(target)", "df.to_clipboard()", "df.to_xarray()",
    "df.query('a > 1')", "df.eval('a + 1')", "df.style", "df.plot", "df.hist()", "df.boxplot()",
    "df.info()", "df['a'].to_csv(target)", "df['a'].to_pickle(target)", "df['a'].plot",
    "df.index.to_csv", "df.groupby('a').plot", "df.groupby('a').hist",
    "getattr(df, 'to_pickle')(target)", "if getattr(df, 'query', None) is None:\n    raise AttributeError('refused')",
    "pd.DataFrame.to_csv(df, target)", "pd.DataFrame.to_pickle(df, target)",
    "pd.DataFrame.query(df, 'a > 1')", "pd.Series.to_csv(df['a'], target)",
    "type(df).to_csv(df, target)", "type(df).to_pickle(df, target)",
    "df.apply('to_csv', args=(target,))", "df['a'].apply('to_csv', args=(target,))",
    "df.agg('to_csv', 0, target)", "df.agg(['sum', 'to_pickle'])", "df.agg({'a': 'to_pickle'})",
    "df.transform('to_csv', 0, target)", "df.aggregate(func='query', expr='a > 1')",
    "df.apply('__reduce__')", "pd.DataFrame.apply(df, 'to_csv', args=(target,))",
    "arr.tofile(target)", "arr.dump(target)", "arr.dumps()", "arr.ctypes", "arr.data",
    "np.float64(1).tofile(target)", "np.float64(1).dumps()", "np.ndarray.tofile(arr, target)",
    "type(arr).dump(arr, target)", "df.to_numpy().tofile(target)", "df.values.dump(target)",
    "class D(pd.DataFrame):\n    pass\nD(df).to_pickle(target)",
    "np.matrix.mro()", "pd.Series.mro()",
    "class D(pd.DataFrame):\n    def save(self):\n        return self.to_csv(target)\nD(df).save()",
]

SETUP = "import pandas as pd\nimport numpy as np\ndf = pd.DataFrame({'a': [1, 2], 'b': [3, 4]})\narr = np.arange(3)\n"


@pytest.mark.parametrize("kind", KINDS if HOOK_IN_POLICY else ["restricted"])
@pytest.mark.parametrize("code", METHOD_SURFACES)
def test_removed_method_surfaces_fail(make, hook, tmp_path, kind, code):
    ex = make(kind)
    obs = run(ex, SETUP + code)
    assert obs.error is not None, (code, obs)
    assert obs.error.type in {"AttributeError", "PermissionError", "SyntaxError"}, (code, obs.error)
    assert _written(tmp_path) == [], f"a file was written by {code!r}"


TYPE_GUARDED = HOOK_IN_POLICY and getattr(policy, "_guarded_type", None) is not None and \
    "dataframes.guard_type" in open(policy.__file__).read()


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # numpy.matrix
@pytest.mark.parametrize("kind", KINDS if TYPE_GUARDED else ["restricted"])
@pytest.mark.parametrize("code", [
    # numpy does not check a negative offset: out-of-bounds read AND write of the worker's heap
    "b = np.zeros(4096, 'u1')\nT = type(b)\nx = T((4096,), 'u1', buffer=b, offset=-2048)",
    "T = type(np.zeros(1))\nT((4096,), 'u1')",  # uninitialized memory
    "T = type(np.asmatrix(np.zeros((1, 1))))\nT((4,), 'u1', buffer=np.zeros(8, 'u1'), offset=-4)",
    "class M(np.matrix):\n    pass\nT = type(M(np.zeros((1, 1))))\nT((4,), 'u1')",
])
def test_array_constructor_with_raw_buffer_is_unreachable(make, hook, kind, code, monkeypatch):
    if not TYPE_GUARDED:
        monkeypatch.setattr(policy, "_guarded_type", _guarded_type_with_standin)
    ex = make(kind)
    obs = run(ex, SETUP + code)
    assert obs.error is not None and obs.error.type == "TypeError", (code, obs)
    assert "cannot be called in the sandbox" in obs.error.message
    ok = run(ex, SETUP + "a = np.zeros(2)\n(isinstance(a, type(a)), str(type(a)))")
    assert ok.error is None and ok.value_repr == "(True, \"<class 'numpy.ndarray'>\")", ok


_ORIGINAL_GUARDED_TYPE = policy._guarded_type


def _guarded_type_with_standin(*args):
    result = _ORIGINAL_GUARDED_TYPE(*args)
    return result if result is _ORIGINAL_GUARDED_TYPE else dataframes.guard_type(result)


def test_refusal_list_has_no_gaps_on_the_installed_versions():
    """Every ``to_*`` of the installed pandas/numpy types is either in-memory, text-only or refused."""
    names = set()
    for cls in (pd.DataFrame, pd.Series, pd.Index, np.ndarray, np.generic,
                type(pd.DataFrame({"a": [1]}).groupby("a"))):
        names |= {n for n in dir(cls) if not n.startswith("_")}
    for name in sorted(n for n in names if n.startswith("to") or n.startswith("dump")):
        allowed = name in dataframes._SAFE_TO or name in dataframes.PATH_ARGUMENT
        assert allowed or dataframes.refused_name(name) is not None or name in {"tolist", "tobytes",
                                                                                 "toordinal"}, name
    for surface in ("query", "eval", "to_pickle", "to_clipboard", "style", "tofile", "dump", "ctypes"):
        assert dataframes.refused_name(surface) is not None


def test_guard_ignores_other_objects():
    assert dataframes.attribute_refusal({"query": 1}, "query") is None
    assert dataframes.attribute_refusal(os, "eval") is None
    assert dataframes.guard_value(str, "apply", len) is len


def test_written_nothing_in_the_working_directory(make, hook, tmp_path):
    ex = make()
    obs = run(ex, SETUP + "df.to_csv()\narr.tolist()")
    assert obs.error is None
    assert os.listdir(tmp_path) == []
