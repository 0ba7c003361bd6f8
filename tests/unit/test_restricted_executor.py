import threading

import pytest

from airflow_codeagent.sandbox.restricted import RestrictedExecutor


def test_state_persists_and_functions_from_earlier_steps_print_into_the_current_step():
    ex = RestrictedExecutor()
    assert ex.run("def show(x):\n    print('value', x)\ncount = 1").stdout == ""
    observation = ex.run("count += 1\nshow(count)")
    assert observation.stdout == "value 2\n"
    assert ex.variables()["count"] == 2


def test_augmented_assignment_to_items_and_attributes_works_as_in_python():
    ex = RestrictedExecutor()
    observation = ex.run(
        "calls = []\n"
        "def key(k):\n"
        "    calls.append(k)\n"
        "    return k\n"
        "counts = {'a': 0}\n"
        "counts[key('a')] += 1\n"  # the key expression runs once, as in Python
        "nested = {'rows': [1]}\n"
        "alias = nested['rows']\n"
        "nested['rows'] += [2]\n"  # in place (__iadd__): the alias sees it
        "grid = [[0, 0], [0, 0]]\n"
        "grid[1][0] -= 3\n"
        "class Acc:\n"
        "    def __init__(self):\n"
        "        self.total = 10\n"
        "    def add(self, x):\n"
        "        self.total //= x\n"
        "acc = Acc()\n"
        "acc.add(3)\n"
        "(counts, calls, alias, grid, acc.total)")
    assert observation.error is None, observation.error
    assert observation.value_repr == "({'a': 1}, ['a'], [1, 2], [[0, 0], [-3, 0]], 3)"
    assert "_tmp0" not in ex.variables()


def test_guard_fast_paths_behave_like_python():
    ex = RestrictedExecutor()
    observation = ex.run(
        "counts = {}\n"
        "for word in 'b a b c'.split():\n"
        "    counts[word] = counts.get(word, 0) + 1\n"
        "del counts['c']\n"
        "class D(dict):\n"
        "    def get(self, key, default=None):\n"
        "        return 'own get'\n"
        "d = D()\n"
        "d['k'] = 1\n"  # a subclass goes through the guard, and model-defined classes may be written
        "x = 2.5\n"
        "(counts, d.get('k'), x.is_integer(), 'A-b'.lower().split('-'), (1).bit_length())")
    assert observation.error is None, observation.error
    assert observation.value_repr == "({'b': 2, 'a': 1}, 'own get', False, ['a', 'b'], 1)"
    missing = ex.run("counts.nope").error
    assert (missing.type, missing.message) == ("AttributeError", "'dict' object has no attribute 'nope'")


def test_augmented_assignment_to_a_slice_explains_how_to_write_it():
    error = RestrictedExecutor().run("xs = [1, 2]\nxs[0:1] += [5]").error
    assert error.type == "SyntaxError"
    assert "xs[a:b] = xs[a:b] + ys" in error.message


@pytest.mark.parametrize("code, message", [
    ("datetime.date(2024, 1, 1)", "name 'datetime' is not defined. Import it first: import datetime"),
    ("timedelta(days=1)", "name 'timedelta' is not defined. Import it first: from datetime import timedelta"),
    ("sum(revenue(store) for store_id in stores if store['region'] == 'EMEA')",
     "name 'store' is not defined. Did you mean 'store_id'?"),
    ("def f(rows):\n    return row[0]\nf([1])", "name 'row' is not defined. Did you mean 'rows'?"),
    ("totl", "name 'totl' is not defined. Did you mean 'total'?"),
    ("open('/etc/passwd')", "name 'open' is not defined"),  # no hint towards what the sandbox lacks
    ("os.getcwd()", "name 'os' is not defined"),
])
def test_name_errors_name_the_fix(code, message):
    ex = RestrictedExecutor(authorized_imports=("datetime", "math"), tools={"revenue": len},
                            variables={"stores": [{"region": "EMEA"}], "total": 1})
    error = ex.run(code).error
    assert (error.type, error.message) == ("NameError", message)


def test_trailing_expression_value_is_reported_but_none_is_not():
    ex = RestrictedExecutor()
    assert ex.run("x = [1, 2]\nx + [3]").value_repr == "[1, 2, 3]"
    assert ex.run("print('hi')").value_repr is None


def test_inputs_are_private_copies():
    rows = [{"id": 1}]
    ex = RestrictedExecutor(variables={"rows": rows})
    ex.run("rows[0]['id'] = 99\nrows.append({'id': 2})")
    assert rows == [{"id": 1}]
    assert ex.variables()["rows"] == [{"id": 99}, {"id": 2}]


def test_tool_calls_and_tool_errors_are_recorded():
    def lookup(key):
        return {"a": 1}[key]

    ex = RestrictedExecutor(tools={"lookup": lookup})
    observation = ex.run("lookup('a')\nlookup(key='b')")
    assert [(c.name, c.arguments, c.error) for c in observation.tool_calls] == [
        ("lookup", "'a'", None), ("lookup", "key='b'", "KeyError: 'b'")]
    assert observation.error.type == "KeyError"


def test_model_code_may_not_rebind_tools_for_later_steps():
    ex = RestrictedExecutor(tools={"lookup": lambda: "real"})
    ex.run("lookup = lambda: 'fake'")
    assert ex.run("lookup()").value_repr == "'real'"


def test_classes_defined_by_model_code_work_but_host_objects_stay_read_only():
    ex = RestrictedExecutor(variables={"cfg": {"a": 1}})
    observation = ex.run(
        "class Point:\n    def __init__(self, x):\n        self.x = x\n"
        "    def double(self):\n        return Point(self.x * 2)\nPoint(2).double().x")
    assert observation.value_repr == "4"
    import datetime
    ex2 = RestrictedExecutor(authorized_imports=["datetime"])
    observation = ex2.run("import datetime\nd = datetime.date(2024, 1, 1)\nd.year = 1999")
    assert observation.error.type in {"TypeError", "AttributeError"}
    assert datetime.date(2024, 1, 1).year == 2024


def test_syntax_errors_and_policy_violations_are_observations():
    ex = RestrictedExecutor()
    observation = ex.run("def f(:\n    pass")
    assert observation.error.type == "SyntaxError" and "line 1" in observation.error.message
    observation = ex.run("x = [].__class__")
    assert observation.error.type == "SyntaxError" and "__class__" in observation.error.message


def test_cancel_from_another_thread_stops_a_running_step():
    ex = RestrictedExecutor(step_timeout_s=None)
    timer = threading.Timer(0.2, ex.cancel)
    timer.start()
    observation = ex.run("while True:\n    pass")
    timer.join()
    assert observation.error.type == "StepInterrupted"
    assert observation.error.message == "run cancelled"


def test_host_exceptions_listed_in_reraise_propagate():
    class TaskKilled(BaseException):
        pass

    def killer():
        raise TaskKilled()

    ex = RestrictedExecutor(tools={"work": killer}, reraise=(TaskKilled,))
    with pytest.raises(TaskKilled):
        ex.run("try:\n    work()\nexcept Exception:\n    pass")


@pytest.mark.parametrize("name", ["_private", "final_answer", "not an identifier"])
def test_bad_tool_names_are_refused(name):
    with pytest.raises(ValueError, match="rename the tool"):
        RestrictedExecutor(tools={name: print})


def test_bad_input_names_are_refused():
    with pytest.raises(ValueError, match="rename it"):
        RestrictedExecutor(variables={"my-table": []})


def test_random_is_private_to_the_sandbox():
    import random

    random.seed(7)
    expected = random.random()
    random.seed(7)
    ex = RestrictedExecutor(authorized_imports=["random"])
    ex.run("import random\nrandom.seed(1)\nx = random.random()")
    assert random.random() == expected


def test_dotted_import_exposes_only_the_authorized_chain():
    ex = RestrictedExecutor(authorized_imports=["os.path"])
    assert ex.run("import os.path\nos.path.join('a', 'b')").value_repr == "'a/b'"
    observation = ex.run("import os.path\nos.getcwd()")
    assert observation.error.type == "AttributeError"
    assert "only 'os.path' is authorized in 'os'" in observation.error.message


def test_host_exception_cannot_be_swallowed_by_model_except_handlers():
    class WorkerTimeout(BaseException):
        pass

    raised = []

    def tick_then_timeout():
        raised.append(1)
        if len(raised) == 3:
            raise WorkerTimeout()

    ex = RestrictedExecutor(tools={"work": tick_then_timeout}, reraise=(WorkerTimeout,),
                            step_timeout_s=None)
    with pytest.raises(WorkerTimeout):
        ex.run("while True:\n    try:\n        work()\n    except BaseException:\n        pass")
    assert len(raised) == 3


@pytest.mark.parametrize("answer, message", [
    ("{1, 2}", "got set; convert it first, e.g. sorted(list(x))"),
    ("float('nan')", "JSON cannot hold"),
    ("len", "got builtin_function_or_method"),
])
def test_final_answer_refuses_what_is_not_plain_data(answer, message):
    ex = RestrictedExecutor()
    observation = ex.run(f"final_answer({answer})")
    assert not observation.final_answer_called
    assert observation.error.type == "NotPlainData" and message in observation.error.message


def test_final_answer_is_a_fresh_plain_copy():
    ex = RestrictedExecutor(authorized_imports=["collections"])
    observation = ex.run("import collections\nc = collections.Counter('aab')\nfinal_answer({'c': c, 't': (1, 2)})")
    assert observation.final_answer == {"c": {"a": 2, "b": 1}, "t": [1, 2]}
    assert type(observation.final_answer["c"]) is dict


def test_c_code_may_import_what_it_needs_but_model_code_may_not():
    ex = RestrictedExecutor(authorized_imports=["datetime"])
    observation = ex.run("import datetime\n"
                         "d = datetime.datetime.strptime('2024-03-01', '%Y-%m-%d')\n"
                         "(d.day, d.strftime('%d.%m.%Y'))")  # strptime imports _strptime, strftime time
    assert observation.error is None and observation.value_repr == "(1, '01.03.2024')"
    assert ex.run("import _strptime").error.type == "SyntaxError"
    assert ex.run("import time").error.type == "ImportError"
    assert ex.run("from time import strftime").error.type == "ImportError"


def test_a_huge_step_limit_does_not_stop_the_clock_of_other_steps():
    assert RestrictedExecutor(step_timeout_s=1e12).run("sum(range(10))").value_repr == "45"
    error = RestrictedExecutor(step_timeout_s=0.3).run("while True:\n    pass").error
    assert error.type == "StepInterrupted"


@pytest.mark.parametrize("separator", ["\x0c", "\x1c", "\u2028", "\x85"])
def test_a_traceback_shows_the_line_the_parser_numbered(separator):
    """str.splitlines breaks at these; the parser does not, so line 2 must still be ``1/0``."""
    observation = RestrictedExecutor().run(f"x = 1  # {separator} note\n1/0\n")

    assert observation.error.type == "ZeroDivisionError"
    assert "line 2" in observation.error.traceback and "1/0" in observation.error.traceback
