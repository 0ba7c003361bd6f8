"""Body-less copies of provided functions are blanked; anything that is more than a copy is left to the sandbox."""

from __future__ import annotations

import pytest

from airflow_codeagent.agent.pasted_stubs import blank_pasted_stubs
from airflow_codeagent.sandbox.restricted import RestrictedExecutor

PROVIDED = frozenset({"get_rate", "final_answer"})


@pytest.mark.parametrize("body", ['"""Exchange rate."""', "pass", "...", '"""Doc."""\n    pass',
                                  "raise NotImplementedError", 'raise NotImplementedError("stub")'])
def test_a_body_less_copy_is_blanked_line_for_line(body):
    code = f"def get_rate(currency: str, day: str = 'today') -> float:\n    {body}\nprint(get_rate('USD'))"
    blanked, notes = blank_pasted_stubs(code, PROVIDED)

    assert blanked.splitlines()[-1] == "print(get_rate('USD'))"
    assert blanked.count("\n") == code.count("\n")  # line numbers unchanged
    assert not blanked.strip().startswith("def")
    assert len(notes) == 1 and "get_rate() had no body" in notes[0]


def test_final_answer_copied_from_the_prompt_is_blanked_too():
    code = 'def final_answer(answer):\n    """Ends the task."""\n\nfinal_answer(3)'
    blanked, notes = blank_pasted_stubs(code, PROVIDED)
    assert blanked == "\n\n\nfinal_answer(3)" and notes[0].startswith("lines 1-2: your copy of final_answer()")


@pytest.mark.parametrize("code", [
    "def get_rate(currency):\n    return 1.0",  # a body: a real redefinition
    "if True:\n    def get_rate(currency):\n        pass",  # not a top-level copy
    "@staticmethod\ndef get_rate(currency):\n    pass",  # the prompt shows no decorator
    "def get_rate(currency):\n    raise ValueError('no')",
    "def get_rate(currency):\n    raise NotImplementedError(open('/etc/passwd').read())",
    "def my_rate(currency):\n    pass",  # not a provided name
    "class get_rate:\n    pass",
    "def get_rate(:\n    pass",  # does not parse: the sandbox says so
])
def test_anything_more_than_a_body_less_copy_is_left_as_written(code):
    assert blank_pasted_stubs(code, PROVIDED) == (code, [])


@pytest.mark.parametrize("code", [
    "def get_rate(currency=print('PWNED')):\n    pass",
    "def get_rate(currency: print('PWNED')) -> print('PWNED'):\n    pass",
])
def test_red_team_code_in_a_copied_signature_is_blanked_with_it_never_run(code):
    """Blanking only ever runs less than the model wrote: defaults and annotations included."""
    blanked, _ = blank_pasted_stubs(code, PROVIDED)
    observation = RestrictedExecutor(tools={"get_rate": lambda currency: 0.9}).run(blanked)

    assert "PWNED" not in observation.stdout and observation.error is None


def test_red_team_a_real_redefinition_after_a_blanked_copy_is_still_refused_by_the_sandbox():
    code = "def get_rate(currency):\n    pass\n\nget_rate = lambda currency: 99.0\nprint(get_rate('USD'))"
    blanked, notes = blank_pasted_stubs(code, PROVIDED)
    observation = RestrictedExecutor(tools={"get_rate": lambda currency: 0.9}).run(blanked)

    assert notes and observation.error is not None and observation.error.type == "SyntaxError"
    assert "Line 4: 'get_rate' is a provided function" in observation.error.message
    assert "99.0" not in observation.stdout
