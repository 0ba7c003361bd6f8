"""JSON tool-call mode and JSON-formatted code, against the scripted server over real HTTP."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest

from airflow_codeagent import CodeAgent, RetryPolicy, RunStatus, tool
from airflow_codeagent.agent.modes import _CODE_REPLY_SCHEMA
from airflow_codeagent.agent.trace import load_schema
from airflow_codeagent.testing.scripted_llm import HTTPError, Reply

pytestmark = pytest.mark.integration


@tool
def get_rate(currency: str) -> float:
    """Exchange rate to EUR.

    Args:
        currency: ISO code such as "USD".
    """
    return {"USD": 0.9, "GBP": 1.2}[currency]


def agent(server, model="openai/scripted-model", **kwargs) -> CodeAgent:
    return CodeAgent(model, model_kwargs={"api_base": server.api_base, "api_key": "k"},
                     tools=[get_rate], max_steps=5, retry=RetryPolicy(max_retries=0), **kwargs)


def call(tool_name: str, thought: str = "next", **arguments) -> str:
    return json.dumps({"thought": thought, "tool": tool_name, "arguments": arguments})


def test_prompted_json_mode_calls_one_tool_per_step(llm_server):
    server = llm_server([
        call("get_rate", "USD first", currency="USD"),
        call("get_rate", currency="CHF"),
        "```json\n" + call("final_answer", answer=108.0) + "\n```",
    ])
    run = agent(server, action_mode="json").run("Convert 120 USD to EUR")

    assert run.status is RunStatus.FINAL_ANSWER and run.answer == 108.0
    steps = run.trace["steps"]
    assert run.trace["action_mode"] == "json"
    assert json.loads(steps[0]["code"]) == {"tool": "get_rate", "arguments": {"currency": "USD"}}
    assert steps[0]["value"] == "0.9" and steps[0]["thought"] == "USD first"
    assert steps[0]["tool_calls"][0]["name"] == "get_rate"
    assert steps[1]["error"]["type"] == "ToolError" and "KeyError: 'CHF'" in steps[1]["error"]["message"]
    system = server.requests[0].messages[0]["content"]
    assert '"name": "get_rate"' in system and '"final_answer"' in system
    assert "tools" not in server.requests[0].body  # an unknown model gets the prompted format
    assert server.requests[1].messages[-1] == {"role": "user", "content": "Observation:\n0.9"}
    jsonschema.validate(run.trace, load_schema())


_PROMPTED_JSON_STOPS = ["Observation:", ', {"thought"', '```\n\n```json']
_NATIVE_FINISH = Reply(tool_calls=({"name": "final_answer", "arguments": {"answer": 1}},))


@pytest.mark.parametrize(("options", "model", "reply", "stop"), [
    ({"action_mode": "json"}, "openai/gpt-4o-mini", _NATIVE_FINISH, ["Observation:"]),  # no JSON text
    ({"code_format": "json"}, "openai/gpt-4o-mini", json.dumps({"thought": "t", "code": "final_answer(1)"}),
     ["Observation:"]),  # structured output: the reply is one object
    ({}, "openai/scripted-model", "```python\nfinal_answer(1)\n```", ["Observation:"]),
], ids=["json native", "code-json structured", "markdown"])
def test_only_a_prompted_json_format_gets_the_next_object_stops(llm_server, options, model, reply, stop):
    server = llm_server([reply])
    run = agent(server, model=model, **options).run("One")

    assert run.answer == 1
    assert server.requests[0].body["stop"] == stop


def _fenced(*objects: str) -> str:
    return "\n\n".join(f"```json\n{o}\n```" for o in objects)


@pytest.mark.parametrize(("options", "first", "then"), [
    ({"action_mode": "json"}, call("get_rate", currency="USD"), call("final_answer", answer=0.5)),
    ({"code_format": "json"}, json.dumps({"thought": "t", "code": "rate = get_rate('USD')\nprint(rate)"}),
     json.dumps({"thought": "t", "code": "final_answer(0.5)"})),
], ids=["json", "code-json"])
@pytest.mark.parametrize("joined", ["fenced", "comma"])
def test_a_prompted_json_reply_ends_where_a_second_object_would_start(llm_server, options, first, then, joined):
    """The 1.5B model planned every call in one reply; only the first object is acted on.

    The server cuts at the stop strings as llama.cpp and OpenAI do: the first object,
    fence included, must come through whole, and nothing of the planned rest.
    """
    planned = _fenced(first, then) if joined == "fenced" else f"{first}, {then}"
    finish = call("final_answer", answer=0.9) if "action_mode" in options else \
        json.dumps({"thought": "t", "code": "final_answer(rate)"})
    server = llm_server([planned, finish], honour_stop=True)
    run = agent(server, **options).run("USD rate")

    assert server.requests[0].body["stop"] == _PROMPTED_JSON_STOPS
    assert run.status is RunStatus.FINAL_ANSWER and run.answer == 0.9  # the planned 0.5 never ran
    first_step = run.trace["steps"][0]
    assert first_step["error"] is None and "0.9" in (first_step["value"] or first_step["stdout"])
    assert first_step["model_output"] == (f"```json\n{first}\n" if joined == "fenced" else first)


def test_native_tool_calls_use_the_provider_interface(llm_server):
    server = llm_server([
        Reply(tool_calls=({"name": "get_rate", "arguments": {"currency": "GBP"}},)),
        Reply(tool_calls=({"name": "final_answer", "arguments": {"answer": 96.0}},)),
    ])
    run = agent(server, model="openai/gpt-4o-mini", action_mode="json").run("Convert 80 GBP")

    assert run.status is RunStatus.FINAL_ANSWER and run.answer == 96.0
    first = server.requests[0].body
    assert [t["function"]["name"] for t in first["tools"]] == ["get_rate", "final_answer"]
    assert first["tools"][0]["function"]["parameters"]["properties"]["currency"] == {
        "type": "string", "description": 'ISO code such as "USD".'}
    second = server.requests[1].messages
    assert second[2]["tool_calls"][0]["function"] == {"name": "get_rate", "arguments": '{"currency": "GBP"}'}
    assert second[3] == {"role": "tool", "tool_call_id": "call_0", "content": "Observation:\n1.2"}
    assert run.trace["totals"]["cost_usd"] is not None  # a priced model: cost is known


def test_unknown_tool_is_named_back_to_the_model(llm_server):
    server = llm_server([call("get_weather", city="Paris"), call("final_answer", answer="n/a")])
    run = agent(server, action_mode="json").run("Weather?")

    error = run.trace["steps"][0]["error"]
    assert error["type"] == "ToolError"
    assert "there is no tool named 'get_weather'; the tools are: get_rate, final_answer" in error["message"]
    assert run.answer == "n/a"


def test_a_native_model_that_calls_no_tool_is_told_to_call_one_not_to_write_json(llm_server):
    server = llm_server(["The GBP rate is probably 1.2.",
                         Reply(tool_calls=({"name": "final_answer", "arguments": {"answer": 1.2}},))])
    run = agent(server, model="openai/gpt-4o-mini", action_mode="json").run("GBP rate")

    assert run.answer == 1.2
    told = server.requests[1].messages[-1]["content"]
    assert told.startswith("Error: Your reply called no tool.\nCall exactly one of the tools")
    assert "Reply with one JSON object" not in told


def test_native_tool_call_arguments_that_are_not_json_are_named_back(llm_server):
    server = llm_server([
        Reply(tool_calls=({"name": "get_rate", "arguments": '{"currency": GBP}'},)),
        Reply(tool_calls=({"name": "final_answer", "arguments": {"answer": 1.2}},)),
    ])
    run = agent(server, model="openai/gpt-4o-mini", action_mode="json").run("GBP rate")

    assert run.status is RunStatus.FINAL_ANSWER and run.answer == 1.2
    bad_json = run.trace["steps"][0]
    assert bad_json["error"]["type"] == "ParseError"
    assert bad_json["model_output"] == '[tool call] get_rate {"currency": GBP}'  # the call as sent
    assert "The arguments of your get_rate call are not valid JSON" in bad_json["error"]["message"]
    echoed, feedback = server.requests[1].messages[-2:]
    assert "tool_calls" not in echoed  # a call that was never made must not wait for a tool reply
    assert feedback["role"] == "user" and "not valid JSON" in feedback["content"]
    jsonschema.validate(run.trace, load_schema())


def test_a_second_native_call_in_one_reply_is_named_back_not_dropped_silently(llm_server):
    server = llm_server([
        Reply(tool_calls=({"name": "get_rate", "arguments": {"currency": "USD"}},
                          {"name": "get_rate", "arguments": {"currency": "GBP"}})),
        Reply(tool_calls=({"name": "final_answer", "arguments": {"answer": 0.9}},)),
    ])
    run = agent(server, model="openai/gpt-4o-mini", action_mode="json").run("USD rate")

    first = run.trace["steps"][0]
    assert [call["arguments"] for call in first["tool_calls"]] == ["currency='USD'"]  # one call per step
    assert first["model_output"] == ('[tool call] get_rate {"currency": "USD"}\n'
                                     '[tool call] get_rate {"currency": "GBP"}')
    told = server.requests[1].messages[-1]
    assert told["role"] == "tool" and "not called: get_rate" in told["content"]


@pytest.mark.parametrize("options", [{"action_mode": "json"}, {"code_format": "json"}, {}])
@pytest.mark.parametrize(("reply", "told"), [
    ('{"thought": "t", "code": ' + "[" * 5000 + "]" * 5000 + "}", "nested too deeply to read"),
    ('{"thought": "t", "code": ' + "1" * 4301 + "}", "Exceeds the limit (4300 digits)"),
    ("print(" + "-" * 2979 + "1)", ""),
], ids=["nested 5,000 deep", "4,301-digit number", "2,979 unary minuses"])
def test_a_reply_json_or_ast_cannot_read_is_a_parse_error_in_the_trace_not_a_crash(llm_server, options, reply, told):
    """A hostile or degenerate reply must not take the run down: json and ast raise on these."""
    finish = {"action_mode": call("final_answer", answer=1),
              "code_format": json.dumps({"thought": "t", "code": "final_answer(1)"})}
    server = llm_server([reply, next((finish[k] for k in options), "```python\nfinal_answer(1)\n```")])
    run = agent(server, **options).run("One")

    assert run.status is RunStatus.FINAL_ANSWER and run.answer == 1
    first = run.trace["steps"][0]
    assert first["model_output"] == reply
    assert first["error"]["type"] in ("ParseError", "SyntaxError")  # markdown mode runs unfenced code
    feedback = server.requests[1].messages[-1]["content"]
    assert feedback.startswith("Error: ") and (told in feedback or not options)  # markdown mode has no JSON to read


def test_json_code_format_uses_structured_output_where_supported(llm_server):
    reply = json.dumps({"thought": "convert", "code": "final_answer(round(120 * get_rate('USD'), 2))"})
    server = llm_server([reply])
    run = agent(server, model="openai/gpt-4o-mini", code_format="json").run("Convert 120 USD")

    assert run.answer == 108.0
    response_format = server.requests[0].body["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["schema"]["required"] == ["thought", "code"]
    assert '{"thought": "<one sentence>", "code": "<python code, newlines as \\n>"}' in \
        server.requests[0].messages[0]["content"]


@pytest.mark.parametrize("structured_output", ["auto", "json_object"])
def test_json_code_syntax_error_is_reported_as_such(llm_server, structured_output):
    server = llm_server([json.dumps({"thought": "t", "code": "x = (1,"}),
                         json.dumps({"thought": "t", "code": "final_answer(1)"})])
    run = agent(server, code_format="json", structured_output=structured_output).run("One")

    assert run.trace["steps"][0]["error"]["type"] == "SyntaxError"
    assert "'(' was never closed" in server.requests[1].messages[-1]["content"]
    # an unknown model is only prompted for the format unless the shape is named
    assert ("response_format" in server.requests[0].body) is (structured_output == "json_object")
    assert run.answer == 1


def test_json_code_reply_that_is_not_json_is_told_what_is_wrong_and_a_python_dict_runs(llm_server):
    broken = ('```json\n{"thought": "t", "code": """\ndef get_rate(currency):\n    """Rate."""\n'
              'print(get_rate("USD"))\n"""}\n```')
    python_dict = '{"thought": "convert", "code": """\nrate = get_rate("USD")\nfinal_answer(rate * 10)\n"""}'
    server = llm_server([broken, python_dict])
    run = agent(server, code_format="json").run("Convert 10 USD")

    assert run.status is RunStatus.FINAL_ANSWER and run.answer == 9.0
    first, second = run.trace["steps"]
    assert first["model_output"] == broken  # every raw reply stays in the trace
    assert first["error"]["type"] == "ParseError"
    feedback = server.requests[1].messages[-1]["content"]
    assert "Your JSON used a triple-quoted string, which JSON does not have" in feedback
    assert '{"thought": "<one sentence>", "code": "<python code, newlines as \\n>"}' in feedback
    assert second["code"] == 'rate = get_rate("USD")\nfinal_answer(rate * 10)'


def test_json_mode_repeating_a_tool_call_that_worked_is_resampled_and_told_to_finish(llm_server):
    lookup = call("get_rate", currency="USD")
    server = llm_server([lookup, lookup, call("final_answer", answer=0.9)])
    run = agent(server, action_mode="json").run("Rate of USD")

    assert run.status is RunStatus.FINAL_ANSWER and run.answer == 0.9
    assert [json.loads(s["code"])["tool"] for s in run.trace["steps"]] == ["get_rate", "final_answer"]
    assert run.trace["steps"][1]["rejected_outputs"] == [lookup]
    resample = server.requests[2]
    assert resample.body["temperature"] == 0.7
    note = resample.messages[-1]["content"]
    assert note.startswith("Note: this tool call is exactly the one from step 1, which worked and gave:\n0.9")
    assert 'call the tool final_answer with {"answer": <value>}' in note


@pytest.mark.parametrize("answer", [[1004, 1009], "'); import os; os.system('id'); ('",
                                    {"__class__": "x", "total": 1.5}])
def test_json_code_final_answer_key_ends_the_run_with_that_value_as_data(llm_server, answer):
    # {"code": "", "final_answer": ...} is how the 1.5B model finishes; the value stays data.
    server = llm_server([json.dumps({"thought": "done", "code": "", "final_answer": answer})])
    run = agent(server, code_format="json").run("Which orders are missing?")

    assert run.status is RunStatus.FINAL_ANSWER and run.answer == answer
    assert run.trace["steps"][0]["tool_calls"] == []


def test_parse_retries_re_ask_within_the_step_and_keep_every_reply(llm_server):
    server = llm_server(["I would call the rate tool.", call("final_answer", answer=1)])
    run = agent(server, action_mode="json", parse_retries=1).run("One")

    assert run.status is RunStatus.FINAL_ANSWER and len(run.trace["steps"]) == 1
    step = run.trace["steps"][0]
    assert step["rejected_outputs"] == ["I would call the rate tool."]
    retry_request = server.requests[1].messages
    assert retry_request[-2] == {"role": "assistant", "content": "I would call the rate tool."}
    assert "Your reply had no JSON object." in retry_request[-1]["content"]
    assert run.trace["totals"]["llm_calls"] == 2


def test_json_mode_prose_after_a_tool_result_is_told_to_call_final_answer(llm_server):
    server = llm_server([call("get_rate", currency="USD"), "The rate is 0.9.",
                         call("final_answer", answer=0.9)])
    run = agent(server, action_mode="json", parse_retries=1).run("Rate of USD")

    assert run.status is RunStatus.FINAL_ANSWER and len(run.trace["steps"]) == 2
    feedback = server.requests[2].messages[-1]["content"]
    assert feedback.startswith("Error: Your reply had no tool call, so nothing was executed.")
    assert 'do not explore further: call the tool final_answer with {"answer": <value>}' in feedback


def test_json_mode_refuses_a_code_format():
    with pytest.raises(ValueError, match='code_format applies to action_mode="code" only'):
        CodeAgent("openai/x", action_mode="json", code_format="json")


@pytest.mark.parametrize(("style", "expected"), [
    ("json_schema", {"type": "json_schema", "json_schema": {"name": "code_action", "strict": True,
                                                            "schema": _CODE_REPLY_SCHEMA}}),
    ("json_object", {"type": "json_object", "schema": _CODE_REPLY_SCHEMA}),
])
def test_structured_output_can_be_named_for_a_server_litellm_does_not_know(llm_server, style, expected):
    """A local llama.cpp, vLLM or Ollama server is unknown to litellm: "auto" would only prompt."""
    server = llm_server([json.dumps({"thought": "t", "code": "final_answer(get_rate('USD'))"})])
    run = agent(server, code_format="json", structured_output=style).run("USD rate")

    assert run.answer == 0.9
    body = server.requests[0].body
    assert body["response_format"] == expected
    assert body["stop"] == ["Observation:"]  # a constrained reply is one object: no next-object stops
    assert run.trace["limits"]["structured_output"] == style
    jsonschema.validate(run.trace, load_schema())


def test_structured_output_off_only_prompts_even_where_litellm_knows_the_schema_support(llm_server):
    server = llm_server([json.dumps({"thought": "t", "code": "final_answer(1)"})])
    run = agent(server, model="openai/gpt-4o-mini", code_format="json", structured_output="off").run("One")

    assert run.answer == 1
    assert "response_format" not in server.requests[0].body
    assert server.requests[0].body["stop"] == _PROMPTED_JSON_STOPS
    assert run.trace["limits"]["structured_output"] is None


@pytest.mark.parametrize(("model", "chosen", "sent"), [
    ("openai/scripted-model", "json_schema", 'the response_format of structured_output="json_schema"'),
    ("openai/gpt-4o-mini", "auto", 'structured_output="auto" sent "json_schema" (litellm lists the model'),
])
def test_a_server_that_refuses_the_response_format_fails_the_run_with_its_own_words(llm_server, model, chosen,
                                                                                     sent):
    refusal = HTTPError(422, "response_format.type: Input should be 'text' or 'json_object'")
    server = llm_server([refusal])
    run = agent(server, model=model, code_format="json", structured_output=chosen).run("One")

    assert run.status is RunStatus.ERROR
    for said in (run.trace["error"], run.trace["steps"][0]["error"]["message"]):
        assert "Input should be 'text' or 'json_object'" in said  # the server's own words
        assert sent in said  # what was sent, and who chose it
        assert 'set structured_output="json_object"' in said  # and what to change


@pytest.mark.parametrize(("options", "told"), [
    ({"structured_output": "json_schema"}, 'structured_output applies to action_mode="code" with code_format="json"'),
    ({"action_mode": "json", "structured_output": "json_object"}, 'structured_output applies to action_mode="code"'),
    ({"code_format": "json", "structured_output": "grammar"}, "structured_output must be one of"),
    ({"action_mode": "tools"}, "action_mode must be one of"),
])
def test_impossible_action_options_are_refused_by_name(options, told):
    with pytest.raises(ValueError, match=re.escape(told)):
        CodeAgent("openai/x", **options)


def test_json_mode_resamples_a_repeated_failing_tool_call(llm_server):
    bad = call("get_rate", currency="CHF")
    server = llm_server([bad, bad, call("final_answer", answer="no CHF rate")])
    run = agent(server, action_mode="json").run("Rate of CHF")

    assert run.status is RunStatus.FINAL_ANSWER and run.answer == "no CHF rate"
    assert run.trace["steps"][1]["rejected_outputs"] == [bad]
    assert server.requests[2].body["temperature"] == 0.7
    assert "this tool call is exactly the one" in server.requests[2].messages[-1]["content"]
    assert len(run.trace["steps"][0]["tool_calls"]) == 1  # the repeat never reached the tool
    assert all(not step["tool_calls"] or step["index"] == 1 for step in run.trace["steps"])


def test_a_parameter_schema_sent_as_arguments_is_answered_with_the_parameters_wanted(llm_server):
    server = llm_server([
        call("get_rate", currency={"type": "string", "description": "ISO code"}),
        call("final_answer", answer=0.9),
    ])
    run = agent(server, action_mode="json").run("Rate of USD")

    error = run.trace["steps"][0]["error"]
    assert error["type"] == "ToolError" and "the arguments you sent are the parameter schema" in error["message"]
    assert error["message"].endswith("send a value for each parameter: currency (string)")
    assert run.trace["steps"][0]["tool_calls"] == []  # the tool was not called with a schema
    # no placeholder value anywhere in the prompt for a small model to copy as an argument
    assert "<string>" not in server.requests[0].messages[0]["content"]


@tool
def file_ticket(fields: dict) -> str:
    """File a ticket.

    Args:
        fields: the ticket's fields.
    """
    return f"filed {fields['type']}"


def test_data_that_merely_has_a_type_key_is_not_taken_for_a_schema(llm_server):
    server = llm_server([call("file_ticket", fields={"type": "bug", "description": "login fails"}),
                         call("final_answer", answer="done")])
    run = CodeAgent("openai/scripted-model", model_kwargs={"api_base": server.api_base, "api_key": "k"},
                    tools=[file_ticket], max_steps=3, action_mode="json").run("File a bug")

    assert run.trace["steps"][0]["error"] is None and run.trace["steps"][0]["value"] == "'filed bug'"
