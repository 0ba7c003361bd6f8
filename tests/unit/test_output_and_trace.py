import json

import pytest

from airflow_codeagent.agent.trace import Redactor, to_json_native
from airflow_codeagent.agent.truncation import truncate_middle
from airflow_codeagent.sandbox.output import OutputBuffer


def test_output_buffer_keeps_head_and_tail_and_counts_the_rest():
    buffer = OutputBuffer(20)
    for i in range(100):
        buffer.write(f"{i:03d}\n")
    text = buffer.getvalue()
    assert text.startswith("000\n001\n00")
    assert text.endswith("098\n099\n")
    assert "[... 380 characters of output dropped" in text


def test_output_buffer_under_limit_is_untouched():
    buffer = OutputBuffer(100)
    buffer.write("hello\n")
    assert buffer.getvalue() == "hello\n"


def test_truncate_middle_marks_the_cut():
    text = "a" * 50 + "b" * 50
    cut = truncate_middle(text, 20, "print less")
    assert cut.startswith("a" * 10) and cut.endswith("b" * 10)
    assert "[... 80 characters cut: print less ...]" in cut
    assert truncate_middle("short", 20) == "short"


def test_redactor_replaces_secrets_everywhere_longest_first():
    redactor = Redactor(["abcd", "abcd-efgh-long"])
    document = {"k": ["x abcd-efgh-long y", {"abcd": "abcd"}], "n": 3}
    assert redactor.document(document) == {"k": ["x *** y", {"***": "***"}], "n": 3}


@pytest.mark.parametrize("written", [
    '{"password": "hunter\\"2\\\\x\\u00e9"}',      # json.dumps, ASCII
    '{"password": "hunter\\"2\\\\xé"}',              # json.dumps, ensure_ascii=False
    "connect(password='hunter\"2\\\\xé')",            # repr
    'connect(password="hunter\\"2\\\\xé")',          # a double-quoted Python string
])
def test_redactor_finds_a_secret_written_escaped_in_json_or_python(written):
    # A password with a quote and a backslash, as a model writes it into a tool call or code.
    assert "hunter" not in Redactor(['hunter"2\\xé']).text(written)


def test_to_json_native_keeps_data_and_reprs_the_rest():
    class Thing:
        def __repr__(self):
            return "Thing()"

    value = {"a": [1, 2.5, None, True], "b": (1, 2), "c": Thing(), "d": float("nan"), 1: "x"}
    native = to_json_native(value)
    assert isinstance(native, str)  # non-string keys: the dict is represented as a whole
    assert to_json_native({"a": (1, 2), "c": Thing(), "d": float("nan")}) == \
        {"a": [1, 2], "c": "Thing()", "d": "nan"}
    json.dumps(to_json_native({"x": {1, 2}}))


def test_fit_to_size_cuts_long_fields_first_then_middle_steps_with_markers():
    from airflow_codeagent.agent.trace import fit_to_size

    def step(i: int, size: int) -> dict:
        return {"index": i, "stdout": f"s{i}-" + "x" * size, "model_output": "m" * size, "code": "c",
                "thought": "t", "value": None}

    document = {"steps": [step(i, 30_000) for i in range(1, 4)], "task": "keep me"}
    fitted = fit_to_size(document, 100_000)
    assert len(json.dumps(fitted)) <= 100_000
    assert [s["index"] for s in fitted["steps"]] == [1, 2, 3]
    assert "characters cut: trace size cap" in fitted["steps"][0]["stdout"]
    assert fitted["steps"][0]["stdout"].startswith("s1-")

    many = {"steps": [step(i, 1_000) for i in range(1, 200)], "task": "keep me"}
    fitted = fit_to_size(many, 20_000)
    assert len(json.dumps(fitted)) <= 20_000
    assert fitted["steps"][0]["index"] == 1 and fitted["steps"][-1]["index"] == 199
    assert fitted["steps_omitted"] == 199 - len(fitted["steps"])
    assert document["steps"][0]["stdout"].endswith("x" * 100)  # the input is not modified
