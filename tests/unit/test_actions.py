import pytest

from airflow_codeagent.agent.actions import (
    CodeAction,
    ParseFailure,
    ToolCallAction,
    acted_text,
    parse_code_action,
    parse_json_code,
    parse_tool_call,
)


def test_python_fence_with_thought():
    action = parse_code_action("Thought: add them\n```python\nx = 1 + 2\nprint(x)\n```\n")
    assert action == CodeAction("add them", "x = 1 + 2\nprint(x)")


def test_py_and_unlabelled_fences_run_in_order():
    action = parse_code_action("a\n```py\na = 1\n```\nb\n```\nb = a + 1\n```")
    assert isinstance(action, CodeAction)
    assert action.code == "a = 1\n\nb = a + 1"


def test_unclosed_last_fence_is_accepted():
    action = parse_code_action("```python\nfinal_answer(3)")
    assert action == CodeAction("", "final_answer(3)")


def test_json_envelope():
    action = parse_code_action('{"thought": "t", "code": "final_answer(1)"}')
    assert action == CodeAction("t", "final_answer(1)")


def test_non_python_block_is_named_in_the_error():
    failure = parse_code_action("Let me run\n```bash\nls\n```")
    assert isinstance(failure, ParseFailure)
    assert "```bash block but no Python code block" in failure.message
    assert "```python" in failure.message


def test_plain_text_reply_is_a_parse_failure_with_expected_format():
    failure = parse_code_action("The answer is 42.")
    assert isinstance(failure, ParseFailure)
    assert failure.thought == "The answer is 42."
    assert "no code block" in failure.message and "final_answer(result)" in failure.message


def test_empty_reply():
    failure = parse_code_action("   ")
    assert isinstance(failure, ParseFailure) and "empty" in failure.message


def test_empty_code_block_does_not_count_as_code():
    assert isinstance(parse_code_action("```python\n\n```"), ParseFailure)


def test_bare_final_answer_without_fence_is_accepted():
    assert parse_code_action("final_answer(2813.35)") == CodeAction("", "final_answer(2813.35)")
    action = parse_code_action("I am done.\nfinal_answer({'a': 1})")
    assert action == CodeAction("", "final_answer({'a': 1})")


def test_unfenced_python_is_code_but_prose_is_not():
    assert parse_code_action("x = get_rate('USD')\nprint(x)") == CodeAction("", "x = get_rate('USD')\nprint(x)")
    assert isinstance(parse_code_action("The answer is 42."), ParseFailure)
    assert isinstance(parse_code_action("total"), ParseFailure)  # a bare name is not an action


@pytest.mark.parametrize("marker", ["Observation:", "Output:", "**Output:**", "Result:", "Execution result:",
                                    "Expected output:"])
def test_an_invented_output_after_the_code_is_neither_run_nor_kept(marker):
    reply = ("Thought: diff the counts.\n```python\ndiffs = compute()\nprint(diffs)\n```\n"
             f"{marker}\n```python\n{{'orders': 10}}\n```\nSo the answer is 10.")
    action = parse_code_action(reply)
    assert action == CodeAction("diff the counts.", "diffs = compute()\nprint(diffs)")
    assert acted_text(reply) == "Thought: diff the counts.\n```python\ndiffs = compute()\nprint(diffs)\n```"


def test_marker_words_inside_the_code_are_code():
    reply = "Thought: x\n```python\nresult: int = 3\noutput = {'a': 1}\nprint(result)\n```"
    assert acted_text(reply) == reply
    assert parse_code_action(reply).code == "result: int = 3\noutput = {'a': 1}\nprint(result)"


def test_output_heading_before_the_code_introduces_it():
    reply = "Thought: count rows.\nOutput:\n```python\nprint(len(rows))\n```"
    assert parse_code_action(reply).code == "print(len(rows))"
    invented = parse_code_action("Observation: 5 rows\n```python\nfinal_answer(5)\n```")
    assert isinstance(invented, ParseFailure) and invented.message.startswith("Your reply was empty.")


# -- code_format="json" and JSON tool calls: precise feedback, unambiguous slips accepted ------------

def test_json_code_with_literal_line_breaks_in_the_string_is_accepted():
    # Strict JSON refuses a raw newline inside a string; the intent is not in doubt.
    action = parse_json_code('```json\n{"thought": "sum", "code": "x = 1\nprint(x)"}\n```')
    assert action == CodeAction("sum", "x = 1\nprint(x)")


def test_json_code_as_a_python_dict_with_triple_quotes_is_accepted():
    action = parse_json_code('{"thought": "t", "code": """\nrows = {"a": 1}\nprint(rows)\n"""}')
    assert action == CodeAction("t", 'rows = {"a": 1}\nprint(rows)')


def test_triple_quotes_that_do_not_parse_are_named_and_no_dict_inside_the_code_runs():
    # The docstring ends the triple-quoted string early, so the reply is neither JSON nor a
    # Python dict. The {"code": ...} dict *inside* the code must not be run in its place.
    reply = ('{"thought": "t", "code": """\ndef f():\n    """Doc."""\nrequest = {"code": "print(1)"}\n'
             'print(f())\n"""}')
    failure = parse_json_code(reply)
    assert isinstance(failure, ParseFailure) and not failure.prose_only
    assert failure.message.startswith("Your JSON used a triple-quoted string")
    assert '\\n for a line break' in failure.message and '"code": "<python code' in failure.message


def test_a_python_dict_followed_by_prose_with_braces_is_read_up_to_its_own_end():
    action = parse_json_code('{"thought": "t", "code": """\nx = 1\n"""}\nThis sets {x}.')
    assert action == CodeAction("t", "x = 1")


def test_invalid_json_names_the_error_and_shows_where_it_is():
    failure = parse_json_code('{"thought": "look up the stores first", "code" "stores = list_stores()"}')
    assert isinstance(failure, ParseFailure)
    assert "Expecting ':' delimiter at line 1, column 48 of the object" in failure.message
    assert 'near ` up the stores first", "code" "stores = list_stores()"}`' in failure.message


def test_a_triple_quoted_docstring_inside_a_json_string_is_not_blamed_for_a_missing_comma():
    failure = parse_json_code('{"thought": "t" "code": "def f():\\n    \'\'\'Doc.\'\'\'"}')
    assert isinstance(failure, ParseFailure)
    assert "Expecting ',' delimiter" in failure.message and "triple-quoted" not in failure.message


def test_json_object_without_code_lists_the_keys_it_had():
    failure = parse_json_code('{"thought": "t", "python": "final_answer(1)"}')
    assert isinstance(failure, ParseFailure)
    assert 'had no "code" string (its keys: "thought", "python")' in failure.message


@pytest.mark.parametrize("reply", ["The total is 17911.", "The answer is {x} items.",
                                   "Use {store_id} for each store, then sum."])
def test_prose_reply_in_json_code_format_is_prose_only(reply):
    failure = parse_json_code(reply)
    assert isinstance(failure, ParseFailure) and failure.prose_only
    assert failure.message.startswith("Your reply had no JSON object.")


def test_a_broken_object_after_prose_braces_is_the_one_described():
    failure = parse_json_code('Use {store} then:\n{"thought": "t" "code": "x=1"}')
    assert isinstance(failure, ParseFailure) and not failure.prose_only
    assert 'near `{"thought": "t" "code": "x=1"}`' in failure.message


def test_tool_call_with_broken_json_names_the_error_not_an_inner_object():
    # The inner {"name": ...} decodes and has a key the parser reads as a tool name;
    # calling a tool named "S-01" would send the model astray.
    failure = parse_tool_call('{"thought": "t", "tool" "get_store", "arguments": {"name": "S-01"}}')
    assert isinstance(failure, ParseFailure)
    assert failure.message.startswith("Your JSON object is not valid JSON: Expecting ':' delimiter")


def test_tool_call_as_python_dict_is_accepted_as_json_values():
    action = parse_tool_call("{'tool': 'final_answer', 'arguments': {'answer': (True, None)}}")
    assert action == ToolCallAction("", "final_answer", {"answer": [True, None]})
    assert action.as_json() == '{"tool": "final_answer", "arguments": {"answer": [true, null]}}'


@pytest.mark.parametrize("value", ["{'USD'}", "b'USD'", "1j", "..."])
def test_a_python_dict_with_values_json_cannot_carry_is_a_parse_failure(value):
    failure = parse_tool_call(f"{{'tool': 'get_rate', 'arguments': {{'currency': {value}}}}}")
    assert isinstance(failure, ParseFailure)
    assert "Expecting property name enclosed in double quotes" in failure.message


def test_a_reply_full_of_python_dicts_is_evaluated_once_not_from_every_brace(monkeypatch):
    # Evaluating from every brace to the end was quadratic: seconds on a 37k-character reply.
    from airflow_codeagent.agent import actions

    evaluated: list[str] = []
    literal_eval = actions.ast.literal_eval
    monkeypatch.setattr(actions.ast, "literal_eval", lambda source: evaluated.append(source) or literal_eval(source))
    rows = "\n".join(f"{{'store': 'S-{i:04}', 'revenue': {i}}}," for i in range(5000))
    failure = parse_json_code("Rows:\n" + rows)

    assert isinstance(failure, ParseFailure)
    assert 'its keys: "store", "revenue"' in failure.message
    assert evaluated == ["{'store': 'S-0000', 'revenue': 0}"]


@pytest.mark.parametrize("reply", ['{"thought": "done", "code": "", "final_answer": [1004, 1009]}',
                                   '{"thought": "done", "final_answer": [1004, 1009]}'])
def test_a_final_answer_key_without_code_finishes_with_that_value(reply):
    # The 1.5B model's way to finish in code_format="json"; it looped on "code was empty" before.
    assert parse_json_code(reply) == CodeAction("done", "final_answer([1004, 1009])")


def test_a_final_answer_key_beside_code_leaves_the_code_to_run():
    action = parse_json_code('{"thought": "t", "code": "print(1)", "final_answer": 2}')
    assert action == CodeAction("t", "print(1)")


def test_empty_json_code_is_told_how_to_finish():
    failure = parse_json_code('{"thought": "t", "code": ""}')
    assert isinstance(failure, ParseFailure)
    assert 'To finish, call final_answer in the code: {"thought": "...", "code": "final_answer(result)"}' \
        in failure.message


def test_native_tool_call_arguments_nested_too_deeply_are_a_parse_failure():
    """json raises RecursionError, not ValueError, past ~1,000 levels: it must not escape the parser."""
    deep = '{"currency": ' + "[" * 5000 + "]" * 5000 + "}"
    action = parse_tool_call("", ({"name": "get_rate", "arguments": deep, "id": "call_0"},))

    assert isinstance(action, ParseFailure)
    assert action.message.startswith("Your JSON is nested too deeply to read")


_HOSTILE_REPLIES = {
    "a 4,301-digit number": '{"tool": "x", "arguments": {"n": ' + "1" * 4301 + "}}",
    "an envelope nested 991 deep": '{"code": "x", "a": ' + "[" * 991 + "]" * 991 + "}",
    "2,979 unary minuses": "print(" + "-" * 2979 + "1)",
    "200 unclosed dict lines": "{'a': 1,\n" * 200,
}


@pytest.mark.parametrize("parse", [parse_code_action, parse_json_code, parse_tool_call])
@pytest.mark.parametrize("reply", list(_HOSTILE_REPLIES.values()), ids=list(_HOSTILE_REPLIES))
def test_a_reply_that_json_or_ast_cannot_read_is_a_parse_failure_not_an_exception(parse, reply):
    # json and ast raise ValueError, RecursionError or MemoryError on these; before, that ended
    # the run with the reply missing from the trace.
    assert isinstance(parse(reply), ParseFailure)


@pytest.mark.parametrize("reply", [
    "I would write:\n```python\nplan = {'tool': 'delete_rows', 'arguments': {'table': 'orders'}}\n```\n"
    "but there is nothing to run yet.",
    'The call {"tool": "drop_table", "arguments": {"name": "tmp"}} would be destructive, so I ask first.',
    'The record was:\n{"name": "list_tables", "rows": 3}',
])
def test_a_call_the_model_only_shows_or_mentions_is_not_made(reply):
    assert isinstance(parse_tool_call(reply), ParseFailure)


def test_a_call_on_its_own_line_after_the_thought_is_made():
    reply = 'Thought: rates first.\n{"tool": "get_rate", "arguments": {"currency": "USD"}} then convert.'
    assert parse_tool_call(reply) == ToolCallAction("", "get_rate", {"currency": "USD"})
    assert parse_tool_call('{"name": "get_rate", "arguments": {}}') == ToolCallAction("", "get_rate", {})


def test_a_fence_with_an_info_string_is_still_the_code_and_later_prose_is_not():
    reply = ('I will check first.\n```python title="check.py"\nrows = list_orders()\n```\n'
             "If it is empty I will call\n```\ndelete_orders()\n```")
    action = parse_code_action(reply)
    assert action == CodeAction("I will check first.", "rows = list_orders()\n\ndelete_orders()")


def test_a_fence_inside_a_python_string_does_not_silently_change_the_code():
    reply = '```python\nreport = """\n```sql\nSELECT 1\n```\n"""\nprint(report)\n```'
    action = parse_code_action(reply)
    # The inner bare ``` still closes the block; the code then fails to compile and the model
    # sees a SyntaxError, instead of a different program running without a word.
    assert action.code == 'report = """\n```sql\nSELECT 1'


@pytest.mark.parametrize("reply", ["Total: 2813.35 (USD)", "Answer: Paris (France)"])
def test_a_label_line_that_parses_as_an_annotation_is_prose_not_code(reply):
    failure = parse_code_action(reply)
    assert isinstance(failure, ParseFailure) and failure.prose_only


@pytest.mark.parametrize("reply", ["Yes (confirmed)", "Done (see above)", "Paris (France)",
                                   "Genève (Suisse)", "Réponse (oui)", "Ja\x0c (bestätigt)"])
def test_a_word_and_a_parenthesis_is_prose_not_a_call(reply):
    failure = parse_code_action(reply)
    assert isinstance(failure, ParseFailure) and failure.prose_only


def test_unfenced_code_with_a_spaced_call_among_other_lines_still_runs():
    reply = "rows = list_orders()\nprint (len(rows))"
    assert parse_code_action(reply) == CodeAction("", reply)
    assert parse_code_action("final_answer (42)") == CodeAction("", "final_answer (42)")


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_a_final_answer_key_that_is_not_json_data_is_refused_not_run_as_a_name(value):
    failure = parse_json_code(f'{{"thought": "t", "code": "", "final_answer": {value}}}')
    assert isinstance(failure, ParseFailure)
    assert failure.message.startswith('"final_answer" must be JSON data: NaN and Infinity are not.')


def test_a_python_dict_with_a_unicode_line_separator_in_a_string_is_read():
    reply = "{'tool': 'get_rate', 'note': 'a\u2028b',\n 'arguments': {'currency': 'USD'}}"
    assert parse_tool_call(reply) == ToolCallAction("", "get_rate", {"currency": "USD"})


def test_json_code_after_an_invented_observation_is_not_run():
    # The memory keeps only the text before "Observation:"; running the rest would run unseen code.
    failure = parse_json_code('Observation: 3 rows.\n{"thought": "t", "code": "final_answer(3)"}')
    assert isinstance(failure, ParseFailure)
    assert parse_json_code('{"thought": "t", "code": "print(1)"}\nObservation: 1') == CodeAction("t", "print(1)")
