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
    assert len(notes) == 1 and "get_rate() had no body, so it was ignored" in notes[0]


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


@pytest.mark.parametrize("code", [
    "def final_answer(x): '\x0cprint(\"PWNED\") #'\n",  # a form feed: splitlines breaks there, the parser not
    "# \x0c\x0c\x0c\nx = '''\nprint('PWNED')\nx = '''\ndef final_answer(answer): ...\n# '''\n",
    "s = '\u2028'\nt = '''\nprint('PWNED')\n'''\ndef get_rate(c): pass\nprint(get_rate('x'))\n",
    "def get_rate(c):\n    '''a\x0cb'''\nprint('PWNED' * 0)\n",
])
def test_red_team_line_breaks_the_parser_does_not_count_cannot_turn_a_string_into_code(code):
    blanked, notes = blank_pasted_stubs(code, PROVIDED)
    observation = RestrictedExecutor(tools={"get_rate": lambda c: 0.9}).run(blanked)

    assert "PWNED" not in observation.stdout
    if notes:  # blanked: exactly the copies went, everything else is where it was
        assert blanked.count("\n") == code.count("\n") and observation.error is None


def test_carriage_return_line_ends_keep_their_numbers():
    code = "def get_rate(c):\r    pass\rx = 1\r1/0\r"
    blanked, notes = blank_pasted_stubs(code, PROVIDED)
    observation = RestrictedExecutor(tools={"get_rate": lambda c: 0.9}).run(blanked)

    assert notes and blanked == "\r\rx = 1\r1/0\r"
    assert "line 4" in observation.error.traceback and "1/0" in observation.error.traceback


def test_many_copies_make_one_short_note_per_name():
    blanked, notes = blank_pasted_stubs("def final_answer(a): ...\n" * 2000 + "final_answer(1)", PROVIDED)

    assert notes == ["lines 1, 2, 3 and 1997 more: your copy of final_answer() had no body, so it was ignored; "
                     "the provided final_answer stays in place. Call provided functions; do not copy their "
                     "definitions."]
    assert blanked == "\n" * 2000 + "final_answer(1)"
