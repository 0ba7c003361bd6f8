"""The agent loop end to end: real litellm HTTP calls to a scripted server on 127.0.0.1."""

from __future__ import annotations

import json

import jsonschema
import pytest

from airflow_codeagent import CodeAgent, RetryPolicy, RunStatus, tool
from airflow_codeagent.agent.trace import load_schema
from airflow_codeagent.sandbox.restricted import IN_PROCESS_CONFINEMENT, RestrictedExecutor
from airflow_codeagent.testing.scripted_llm import DropConnection, HTTPError, Malformed, Reply
from tests.sandbox_host import host_confinement

pytestmark = pytest.mark.integration

FAST_RETRY = RetryPolicy(max_retries=2, initial_delay_s=0.01, max_delay_s=0.02)


@tool
def get_rate(currency: str) -> float:
    """Exchange rate to EUR.

    Args:
        currency: ISO code such as "USD".
    """
    return {"USD": 0.9, "GBP": 1.2}[currency]


def make_agent(server, **kwargs) -> CodeAgent:
    kwargs.setdefault("tools", [get_rate])
    kwargs.setdefault("max_steps", 5)
    kwargs.setdefault("retry", FAST_RETRY)
    return CodeAgent("openai/scripted-model",
                     model_kwargs={"api_base": server.api_base, "api_key": "sk-test-key-0001"}, **kwargs)


def code(body: str, thought: str = "Next step.") -> str:
    return f"Thought: {thought}\n```python\n{body}\n```"


def assert_valid_trace(trace: dict) -> None:
    jsonschema.validate(trace, load_schema())
    json.dumps(trace)  # JSON-native all the way down


def test_multi_step_run_with_tool_and_persisted_variables(llm_server):
    server = llm_server([
        code("rates = {c: get_rate(c) for c in amounts}\nprint(rates)", "Look up the rates."),
        code("eur = {c: amounts[c] * rates[c] for c in amounts}\neur"),
        code("final_answer(round(sum(eur.values()), 2))", "Sum and finish."),
    ])
    run = make_agent(server).run("Convert 120 USD and 80 GBP to EUR and return the total",
                                 inputs={"amounts": {"USD": 120, "GBP": 80}})

    assert run.status is RunStatus.FINAL_ANSWER
    assert run.answer == 204.0
    assert run.trace["answer_source"] == "final_answer"
    steps = run.trace["steps"]
    assert [s["index"] for s in steps] == [1, 2, 3]
    assert steps[0]["stdout"] == "{'USD': 0.9, 'GBP': 1.2}\n"
    assert steps[0]["thought"] == "Look up the rates."
    assert [c["name"] for c in steps[0]["tool_calls"]] == ["get_rate", "get_rate"]
    assert steps[1]["value"] == "{'USD': 108.0, 'GBP': 96.0}"  # variables from step 1 persisted
    assert steps[2]["final_answer_called"] and steps[2]["final_answer"] == 204.0
    assert run.trace["totals"] == {"llm_calls": 3, "input_tokens": 300, "output_tokens": 60,
                                   "cost_usd": None, "retries": 0, "replayed_calls": 0, "steps": 3}
    assert_valid_trace(run.trace)

    # What the model was told: tools, inputs, imports in the system prompt; observations fed back.
    system = server.requests[0].messages[0]["content"]
    assert "def get_rate(currency: str) -> float:" in system
    assert "Exchange rate to EUR." in system and 'currency: ISO code such as "USD".' in system
    assert "- amounts: dict with 2 keys, e.g. {'USD': 120, 'GBP': 80}" in system
    assert "math, statistics, json" not in system  # default imports, not the example list
    assert "final_answer(" in system
    assert server.requests[0].messages[1] == {"role": "user", "content": "Task: Convert 120 USD and "
                                              "80 GBP to EUR and return the total"}
    second = server.requests[1].messages
    assert second[2]["role"] == "assistant" and "rates = {c: get_rate(c)" in second[2]["content"]
    assert second[3]["role"] == "user" and "{'USD': 0.9, 'GBP': 1.2}" in second[3]["content"]
    third = server.requests[2].messages
    assert "Last expression value: {'USD': 108.0, 'GBP': 96.0}" in third[5]["content"]


def test_authorized_imports_are_listed_and_enforced(llm_server):
    server = llm_server([
        code("import os\nos.listdir('/')"),
        code("import statistics\nfinal_answer(statistics.mean([1, 2, 3]))"),
    ])
    run = make_agent(server, authorized_imports=["math", "statistics", "json"]).run("Mean of 1,2,3")

    assert "You may only import these modules: math, statistics, json." in \
        server.requests[0].messages[0]["content"]
    first = run.trace["steps"][0]
    assert first["error"]["type"] == "ImportError"
    assert "import of 'os' is not allowed. Authorized imports: math, statistics, json" == \
        first["error"]["message"]
    assert "ImportError: import of 'os' is not allowed" in server.requests[1].messages[-1]["content"]
    assert run.status is RunStatus.FINAL_ANSWER and run.answer == 2


def test_reply_without_code_is_a_parse_error_step_then_recovery(llm_server):
    server = llm_server([
        "I think the answer is probably 42.",
        code("final_answer(6 * 7)"),
    ])
    run = make_agent(server).run("What is 6 times 7?")

    assert run.status is RunStatus.FINAL_ANSWER and run.answer == 42
    parse_step = run.trace["steps"][0]
    assert parse_step["error"]["type"] == "ParseError"
    assert parse_step["code"] is None
    assert parse_step["model_output"] == "I think the answer is probably 42."
    feedback = server.requests[1].messages[-1]["content"]
    assert "no code block" in feedback and "```python" in feedback and "final_answer(" in feedback
    assert run.trace["totals"]["steps"] == 2  # the parse error counted as a step


def test_prose_after_a_good_observation_is_told_how_to_finish(llm_server):
    # The commonest small-model failure: the right value printed, then a prose answer.
    server = llm_server([code("print(get_rate('USD'))"), "The rate of USD is 0.9.",
                         code("final_answer(0.9)")])
    run = make_agent(server).run("Rate of USD")

    assert run.status is RunStatus.FINAL_ANSWER and run.answer == 0.9
    feedback = server.requests[2].messages[-1]["content"]
    assert "no code block" in feedback
    assert "If you already have the answer, do not explore further: reply with one short ```python code block" \
        in feedback
    assert "If you already have the answer" in run.trace["steps"][1]["error"]["message"]


def test_a_trailing_return_ends_the_run_with_its_value(llm_server):
    server = llm_server([code("rate = get_rate('USD')\nreturn {'USD': rate}")])
    run = make_agent(server).run("Return the USD rate as a dict")

    assert run.status is RunStatus.FINAL_ANSWER and run.answer == {"USD": 0.9}
    assert run.trace["steps"][0]["code"].endswith("return {'USD': rate}")  # the reviewer sees what ran
    assert len(server.requests) == 1


@pytest.mark.parametrize("sandbox", ["restricted", "isolated"])
def test_an_error_raised_by_a_tool_names_the_call_that_raised_it(llm_server, sandbox):
    # The traceback ends at the model's own line; the local model passed whole records as ids
    # for eight steps without seeing it.
    rows = "[{'currency': 'USD', 'amount': 10}]"
    server = llm_server([code(f"rows = {rows}\ntotal = sum(get_rate(r) for r in rows)"),
                         code("final_answer(get_rate(rows[0]['currency']))")])
    run = make_agent(server, sandbox=sandbox).run("Rate")

    observation = server.requests[1].messages[-1]["content"]
    assert "Error: TypeError: unhashable type: 'dict'" in observation
    assert ("It was raised inside the tool call get_rate({'currency': 'USD', 'amount': 10}): check these "
            "arguments against the tool's signature.") in observation
    assert run.answer == 0.9


def test_an_error_in_model_code_after_a_good_tool_call_names_no_tool(llm_server):
    server = llm_server([code("rate = get_rate('USD')\nrate / 0"), code("final_answer(1)")])
    make_agent(server).run("Rate")

    observation = server.requests[1].messages[-1]["content"]
    assert "ZeroDivisionError" in observation and "raised inside the tool call" not in observation


def test_a_repeat_with_another_outcome_is_not_called_the_same_result(llm_server):
    # The repeat is resampled first; sent again, it runs.
    server = llm_server([code("print(queue.pop())")] * 3 + [code("final_answer(1)")])
    make_agent(server).run("Drain the queue", inputs={"queue": [7]})

    note = server.requests[3].messages[-1]["content"]
    assert "IndexError" in note and "yet its outcome differs" in note
    assert "same result" not in note and "failed the same way" not in note


def test_prose_after_a_failed_step_gets_no_finish_hint(llm_server):
    server = llm_server([code("1 / 0"), "Division by zero is undefined.", code("final_answer(0)")])
    make_agent(server).run("One")

    feedback = server.requests[2].messages[-1]["content"]
    assert "no code block" in feedback and "If you already have the answer" not in feedback


def test_model_code_error_comes_back_with_trimmed_traceback_and_is_fixed(llm_server):
    server = llm_server([
        code("def ratio(a, b):\n    return a / b\nvalues = [ratio(10, n) for n in [5, 0]]"),
        code("values = [ratio(10, n) for n in [5, 2]]\nfinal_answer(values)"),
    ])
    run = make_agent(server).run("Compute ratios")

    error = run.trace["steps"][0]["error"]
    assert error["type"] == "ZeroDivisionError"
    assert error["message"] == "division by zero"
    assert "line 3: values = [ratio(10, n) for n in [5, 0]]" in error["traceback"]
    assert "line 2, in ratio: return a / b" in error["traceback"]
    assert "site-packages" not in error["traceback"] and "restricted.py" not in error["traceback"]
    observation = server.requests[1].messages[-1]["content"]
    assert "Error: ZeroDivisionError: division by zero" in observation
    assert "line 2, in ratio: return a / b" in observation
    assert run.status is RunStatus.FINAL_ANSWER and run.answer == [2.0, 5.0]


def test_max_steps_with_final_answer_fallback(llm_server):
    server = llm_server([
        code("partial = 10\nprint(partial)"),
        code("partial = partial + 5\nprint(partial)"),
        code("final_answer(partial)", "Best answer from what I have."),
    ])
    run = make_agent(server, max_steps=2).run("Keep counting")

    assert run.status is RunStatus.MAX_STEPS
    assert run.answer == 15 and run.answer_is_partial
    steps = run.trace["steps"]
    assert [s["kind"] for s in steps] == ["action", "action", "final_answer_fallback"]
    assert run.trace["error"] == "no final answer after 2 steps"
    request = server.requests[2].messages[-1]["content"]
    assert "You have used all your steps." in request and "final_answer(" in request
    assert_valid_trace(run.trace)


def test_max_steps_without_fallback_makes_no_extra_call(llm_server):
    server = llm_server([code("x = 1"), code("x = 2"), code("final_answer(x)")])
    run = make_agent(server, max_steps=2, final_answer_fallback=False).run("Count")

    assert run.status is RunStatus.MAX_STEPS
    assert run.answer is None and not run.answer_is_partial
    assert len(server.requests) == 2 and server.remaining == 1
    assert [s["kind"] for s in run.trace["steps"]] == ["action", "action"]


def test_rate_limit_with_retry_after_is_honoured_then_succeeds(llm_server):
    server = llm_server([
        HTTPError(429, "slow down", headers={"Retry-After": "1"}),
        code("final_answer('ok')"),
    ])
    run = make_agent(server, retry=RetryPolicy(max_retries=3, initial_delay_s=5.0)).run("Say ok")

    assert run.status is RunStatus.FINAL_ANSWER and run.answer == "ok"
    retries = run.trace["steps"][0]["retries"]
    assert len(retries) == 1
    assert retries[0]["status_code"] == 429 and retries[0]["error_type"] == "RateLimitError"
    assert retries[0]["waited_s"] == 1.0  # the server's Retry-After, not the 5 s backoff
    assert run.trace["totals"]["retries"] == 1 and run.trace["totals"]["llm_calls"] == 1
    assert len(server.requests) == 2


def test_server_errors_until_retries_exhausted_end_with_error_keeping_steps(llm_server):
    server = llm_server([
        code("progress = 'step one done'\nprint(progress)"),
        HTTPError(500), HTTPError(503), HTTPError(500),
    ])
    run = make_agent(server).run("Do two things")

    assert run.status is RunStatus.ERROR
    assert "failed after 3 attempts" in run.error
    steps = run.trace["steps"]
    assert steps[0]["stdout"] == "step one done\n"  # the completed step is kept
    assert steps[1]["error"]["type"] == "ModelCallError"
    assert [r["status_code"] for r in steps[1]["retries"]] == [500, 503]
    assert run.trace["totals"]["retries"] == 2
    assert_valid_trace(run.trace)


@pytest.mark.parametrize("fault", [DropConnection(), Malformed()], ids=["dropped", "malformed"])
def test_transient_transport_faults_are_retried(llm_server, fault):
    server = llm_server([fault, code("final_answer(1)")])
    run = make_agent(server).run("Answer 1")

    assert run.status is RunStatus.FINAL_ANSWER and run.answer == 1
    assert len(run.trace["steps"][0]["retries"]) == 1


def test_authentication_error_is_not_retried(llm_server):
    server = llm_server([HTTPError(401, "invalid api key"), code("final_answer(1)")])
    run = make_agent(server).run("Answer 1")

    assert run.status is RunStatus.ERROR
    assert "AuthenticationError" in run.error
    assert len(server.requests) == 1


@pytest.mark.parametrize("body", ["raise SystemExit(0)", "raise KeyboardInterrupt()",
                                  "try:\n    raise SystemExit(1)\nexcept Exception:\n    pass\n1/0"])
def test_system_exit_and_interrupts_from_model_code_do_not_end_the_run(llm_server, body):
    server = llm_server([code(body), code("final_answer('survived')")])
    run = make_agent(server).run("Try to exit")

    assert run.status is RunStatus.FINAL_ANSWER and run.answer == "survived"
    assert run.trace["steps"][0]["error"]["type"] in {"SystemExit", "KeyboardInterrupt"}


def test_huge_output_is_truncated_for_the_model_with_head_and_tail(llm_server):
    body = "for i in range(20000):\n    print('row', i)"
    server = llm_server([code(body), code("final_answer('done')")])
    run = make_agent(server, max_observation_chars=2000, max_output_chars=20_000).run("Print a lot")

    observation = server.requests[1].messages[-1]["content"]
    assert len(observation) < 2300
    assert "row 0\n" in observation and "row 19999" in observation
    assert "characters cut: print a slice or a summary" in observation
    stdout = run.trace["steps"][0]["stdout"]
    assert "characters of output dropped" in stdout and stdout.endswith("row 19999\n")
    assert run.status is RunStatus.FINAL_ANSWER


def test_infinite_loop_is_stopped_by_step_timeout_and_run_continues(llm_server):
    server = llm_server([
        code("n = 0\nwhile True:\n    try:\n        n += 1\n    except BaseException:\n        pass"),
        code("final_answer(n > 0)"),
    ])
    run = make_agent(server, step_timeout_seconds=0.5).run("Loop")

    error = run.trace["steps"][0]["error"]
    assert error["type"] == "StepInterrupted" and "0.5 s time limit" in error["message"]
    assert run.status is RunStatus.FINAL_ANSWER and run.answer is True


def test_run_time_limit_ends_with_timeout_and_fallback(llm_server):
    server = llm_server([
        code("found = 'partial result'\nwhile True:\n    pass"),
        code("final_answer(found)"),
    ])
    run = make_agent(server, max_run_seconds=1.0, step_timeout_seconds=None).run("Loop forever")

    assert run.status is RunStatus.TIMEOUT
    assert "1 s time limit" in run.error
    assert run.answer == "partial result" and run.answer_is_partial
    assert run.trace["steps"][-1]["kind"] == "final_answer_fallback"
    assert "time limit for this task has been reached" in server.requests[-1].messages[-1]["content"]


def test_input_budget_refuses_the_call_that_would_cross_it(llm_server):
    server = llm_server([Reply(code("x = 1"), prompt_tokens=600), code("x = 2"), code("final_answer(x)")])
    run = make_agent(server, max_input_tokens=1000).run("Spend tokens")

    assert run.status is RunStatus.BUDGET_EXCEEDED
    assert run.error.startswith("max_input_tokens=1000 would be exceeded by ")
    assert "600 used, the next call needs about " in run.error
    assert len(server.requests) == 1 and server.remaining == 2  # the refused call never reached the server
    assert run.trace["totals"]["input_tokens"] == 600


def test_cost_budget_caps_max_tokens_and_refuses_the_unaffordable_call(llm_server):
    import litellm

    prices = {"input_cost_per_token": 0.0001, "output_cost_per_token": 0.001}
    server = llm_server([Reply(code("x = 1"), prompt_tokens=100, completion_tokens=20), code("x = 2")])
    agent = CodeAgent("openai/scripted-model", tools=[get_rate], retry=FAST_RETRY, max_cost_usd=0.07,
                      model_kwargs={"api_base": server.api_base, "api_key": "k", **prices})
    run = agent.run("Spend money")

    first = server.requests[0]
    prompt = litellm.token_counter(model="openai/scripted-model", messages=first.messages)
    # What the output may cost is what the budget leaves after the prompt.
    assert first.body["max_tokens"] == int((0.07 - prompt * 0.0001) / 0.001)
    assert run.trace["steps"][0]["cost_usd"] == pytest.approx(100 * 0.0001 + 20 * 0.001)
    assert run.status is RunStatus.BUDGET_EXCEEDED
    assert run.error.startswith("max_cost_usd=0.07 would be exceeded: 0.030000 spent")
    assert len(server.requests) == 1 and server.remaining == 1  # the second call was never made


def test_output_budget_caps_max_tokens_of_each_call(llm_server):
    server = llm_server([Reply(code("x = 1"), completion_tokens=30), code("final_answer(x)")])
    run = make_agent(server, max_output_tokens=100).run("Count")

    assert [r.body["max_tokens"] for r in server.requests] == [100, 70]
    assert run.status is RunStatus.FINAL_ANSWER


def test_cost_budget_needs_a_known_price():
    with pytest.raises(ValueError, match="litellm has no price for 'openai/scripted-model'"):
        CodeAgent("openai/scripted-model", max_cost_usd=1.0)


def test_api_key_and_declared_secrets_are_redacted_from_the_trace(llm_server):
    @tool
    def read_config(name: str) -> str:
        """Read a config value.

        Args:
            name: key to read.
        """
        return {"dsn": "postgres://etl:hunter2-password@db/prod"}[name]

    server = llm_server([code("print(read_config('dsn'))"), code("final_answer(read_config('dsn'))")])
    run = make_agent(server, tools=[read_config], secrets=["hunter2-password"]).run("Show the DSN")

    text = json.dumps(run.trace)
    assert "hunter2-password" not in text and "sk-test-key-0001" not in text
    assert run.trace["steps"][0]["stdout"] == "postgres://etl:***@db/prod\n"
    assert server.requests[0].headers["authorization"] == "Bearer sk-test-key-0001"


def test_numeric_model_settings_named_like_tokens_are_not_taken_for_secrets(llm_server):
    # "max_tokens" contains "token"; redacting 1024 would mask every 1024 in the trace's data.
    server = llm_server([code("print('sent Bearer hdr-secret-0002')"), code("final_answer(1024)")])
    agent = CodeAgent("openai/scripted-model", retry=FAST_RETRY, model_kwargs={
        "api_base": server.api_base, "api_key": "sk-test-key-0001", "max_tokens": 1024,
        "extra_headers": {"Authorization": "Bearer hdr-secret-0002"}})
    run = agent.run("How many rows?")

    assert run.answer == 1024 and run.trace["steps"][1]["code"] == "final_answer(1024)"
    assert server.requests[0].headers["authorization"] == "Bearer hdr-secret-0002"
    assert run.trace["steps"][0]["stdout"] == "sent ***\n"  # a header credential is a secret too


def test_trace_is_published_after_every_step(llm_server):
    server = llm_server([code("a = 1"), code("b = 2"), code("final_answer(a + b)")])
    published: list[dict] = []
    run = make_agent(server).run("Add", on_step=published.append)

    assert [len(t["steps"]) for t in published] == [1, 2, 3, 3]
    assert [t["status"] for t in published] == ["running", "running", "running", "final_answer"]
    for document in published:
        assert_valid_trace(document)
    assert published[-1] == run.trace


def test_several_code_blocks_in_one_reply_run_in_order(llm_server):
    reply = ("First set a.\n```python\na = 2\n```\nThen b.\n```py\nb = a * 3\n```\n"
             "And finish.\n```\nfinal_answer(a + b)\n```")
    server = llm_server([reply])
    run = make_agent(server).run("Add")

    assert run.answer == 8
    assert run.trace["steps"][0]["code"] == "a = 2\n\nb = a * 3\n\nfinal_answer(a + b)"


def test_host_interrupt_publishes_the_trace_before_propagating(llm_server):
    class TaskKilled(BaseException):
        pass

    @tool
    def fetch(n: int) -> int:
        """Fetch row n.

        Args:
            n: row number.
        """
        if n == 2:
            raise TaskKilled("worker is shutting down")
        return n

    server = llm_server([code("a = fetch(1)\nprint(a)"), code("b = fetch(2)")])
    published: list[dict] = []
    agent = make_agent(server, tools=[fetch], interrupt_exceptions=(TaskKilled,))
    with pytest.raises(TaskKilled):
        agent.run("Fetch rows", on_step=published.append)

    last = published[-1]
    assert last["status"] == "error"
    assert last["error"] == "run interrupted by TaskKilled: worker is shutting down"
    assert last["steps"][0]["stdout"] == "1\n"
    assert_valid_trace(last)


def _chatty_steps(n: int) -> list[str]:
    """n steps that each print ~2000 distinct characters, then a final answer."""
    return [code(f"v{i} = {i}\nprint(('step {i} ' * 250)[:2000])") for i in range(1, n + 1)] + \
        [code(f"final_answer(v{n})")]


def test_compaction_keeps_the_prompt_bounded_and_the_task_verbatim(llm_server):
    import litellm

    def prompt_tokens(request) -> int:
        return litellm.token_counter(model="openai/scripted-model", messages=request.messages)

    compacted = llm_server(_chatty_steps(30))
    run = make_agent(compacted, max_steps=31, max_prompt_tokens=9000, compaction="digest").run("Count to 30")
    assert run.status is RunStatus.FINAL_ANSWER and run.answer == 30
    sizes = [prompt_tokens(r) for r in compacted.requests]
    assert max(sizes) <= 9000
    assert sizes[29] < sizes[9]  # step 10 is before the first compaction, step 30 after several
    last = compacted.requests[29].messages
    assert last[1]["content"].startswith("Task: Count to 30")
    assert "Progress so far (steps 1-" in last[1]["content"] and "v1 (int" in last[1]["content"]
    compactions = run.trace["compactions"]
    assert compactions and all(c["prompt_tokens_after"] < c["prompt_tokens_before"] for c in compactions)
    assert all(c["method"] == "digest" and c["input_tokens"] == 0 for c in compactions)
    assert run.trace["steps"][0]["stdout"].startswith("step 1 step 1")  # the trace keeps everything
    assert_valid_trace(run.trace)

    uncompacted = llm_server(_chatty_steps(30))
    make_agent(uncompacted, max_steps=31, max_prompt_tokens=9000, compaction="off").run("Count to 30")
    assert prompt_tokens(uncompacted.requests[29]) > 4 * sizes[29]


def test_llm_compaction_summary_is_a_recorded_model_call(llm_server):
    from airflow_codeagent.testing.scripted_llm import Reply as ScriptedReply

    def summarizer(request):
        if "You compress the working history" in request.messages[0]["content"]:
            return ScriptedReply("Found v1..v3; the counter is in v3.", prompt_tokens=500, completion_tokens=12)
        return None

    server = llm_server(_chatty_steps(6))
    server.responder = summarizer
    run = make_agent(server, max_steps=7, max_prompt_tokens=2200, compaction="llm").run("Count to 6")

    assert run.status is RunStatus.FINAL_ANSWER and run.answer == 6
    compactions = run.trace["compactions"]
    assert compactions and compactions[0]["method"] == "llm"
    assert compactions[0]["input_tokens"] == 500 and compactions[0]["output_tokens"] == 12
    summary_calls = [r for r in server.requests if "You compress" in r.messages[0]["content"]]
    assert run.trace["totals"]["llm_calls"] == 7 + len(summary_calls)
    later = [r for r in server.requests if "You compress" not in r.messages[0]["content"]][-1]
    assert "Found v1..v3; the counter is in v3." in later.messages[1]["content"]


def test_cancel_abandons_an_in_flight_model_call(llm_server):
    import threading

    server = llm_server([code("a = 1"), Reply(code("final_answer(a)"), delay_s=30)])
    agent = make_agent(server)
    published: list[dict] = []

    def cancel_when_second_call_arrives(trace: dict) -> None:
        published.append(trace)
        if len(trace["steps"]) == 1:
            threading.Thread(target=lambda: (_wait_for_requests(server, 2), agent.cancel()), daemon=True).start()

    run = agent.run("Wait", on_step=cancel_when_second_call_arrives)

    assert run.status is RunStatus.ERROR and run.error == "run cancelled"
    assert run.trace["steps"][1]["error"]["message"] == "model call abandoned: the run was cancelled"
    assert run.trace["steps"][0]["code"] == "a = 1"


def _wait_for_requests(server, count: int) -> None:
    import time

    while len(server.requests) < count:
        time.sleep(0.01)


def test_journal_replays_paid_calls_and_side_effect_tools_run_once(llm_server):
    from airflow_codeagent.agent.replay import CallJournal, InMemoryJournalStore

    sent: list[str] = []

    @tool(side_effect=True)
    def send_email(to: str) -> str:
        """Send the report by email.

        Args:
            to: recipient address.
        """
        sent.append(to)
        return f"message-id-{len(sent)}"

    steps = [code("a = get_rate('USD')\nprint(a)"),
             code("receipt = send_email('ops@example.com')\nprint(receipt)"),
             code("b = a * 2\nprint(b)")]
    journal = CallJournal(InMemoryJournalStore())
    first = llm_server([*steps, HTTPError(401, "revoked")])
    run = make_agent(first, tools=[get_rate, send_email]).run("Report", journal=journal)
    assert run.status is RunStatus.ERROR and len(first.requests) == 4
    assert sent == ["ops@example.com"]

    retry = llm_server([code("final_answer(receipt)")])
    run = make_agent(retry, tools=[get_rate, send_email]).run("Report", journal=journal)

    assert run.status is RunStatus.FINAL_ANSWER and run.answer == "message-id-1"
    assert len(retry.requests) == 1  # steps 1-3 came from the journal, not the model
    assert [s["replayed"] for s in run.trace["steps"]] == [True, True, True, False]
    assert run.trace["totals"]["replayed_calls"] == 3 and run.trace["totals"]["llm_calls"] == 1
    assert sent == ["ops@example.com"]  # the side effect was not repeated
    assert run.trace["steps"][1]["stdout"] == "message-id-1\n"

    changed = llm_server([code("final_answer(1)")])
    make_agent(changed, tools=[get_rate, send_email]).run("A different task", journal=journal)
    assert len(changed.requests) == 1 and changed.requests[0].messages[1]["content"] == "Task: A different task"

    journal.clear()
    assert journal.store.data == {}


def test_code_after_an_invented_observation_is_not_run(llm_server):
    deleted: list[str] = []

    @tool
    def delete_partition(day: str) -> str:
        """Delete one day's partition.

        Args:
            day: ISO date.
        """
        deleted.append(day)
        return "deleted"

    reply = ("Thought: count first.\n```python\nn = 0\nprint(n)\n```\nObservation: 0\n"
             "Thought: it is empty, delete it.\n```python\ndelete_partition('2024-01-01')\n```")
    server = llm_server([reply, code("final_answer(n)")])
    run = make_agent(server, tools=[delete_partition]).run("Clean up")

    assert deleted == []
    assert run.trace["steps"][0]["code"] == "n = 0\nprint(n)"
    assert run.trace["steps"][0]["model_output"] == reply  # the trace keeps what the model wrote
    assert server.requests[1].messages[2]["content"] == "Thought: count first.\n```python\nn = 0\nprint(n)\n```"
    assert server.requests[0].body["stop"] == ["Observation:"]


def test_redefining_a_tool_or_final_answer_is_refused_with_a_clear_error(llm_server):
    own = 'def get_rate(currency: str) -> float:\n    return 1.0'
    server = llm_server([code(own), code("final_answer = print"), code("final_answer(get_rate('USD'))")])
    run = make_agent(server).run("Rate")

    first, second = (s["error"] for s in run.trace["steps"][:2])
    assert first["type"] == "SyntaxError"
    assert "'get_rate' is a provided function; do not redefine or shadow it" in first["message"]
    assert "'final_answer' is a provided function" in second["message"]
    assert run.answer == 0.9


def test_a_tool_signature_pasted_from_the_prompt_is_ignored_and_the_model_told(llm_server):
    """The 1.5B model pastes body-less copies of the tools above its code, step after step."""
    pasted = ('def get_rate(currency: str) -> float:\n    """Exchange rate to EUR."""\n    pass\n\n'
              'rate = get_rate("USD")\nprint(rate)\nprint(1 / 0)')
    server = llm_server([code(pasted), code("final_answer(rate)")])
    run = make_agent(server).run("Rate")

    first = run.trace["steps"][0]
    assert first["code"] == pasted  # the trace shows what the model wrote
    assert first["stdout"] == "0.9\n" and [c["name"] for c in first["tool_calls"]] == ["get_rate"]
    assert first["notes"] == ["lines 1-3: your copy of get_rate() had no body, so it was ignored; the "
                              "provided get_rate stays in place. Call provided functions; do not copy their "
                              "definitions."]
    assert "line 7" in first["error"]["traceback"]  # line numbers still match the model's code
    observation = server.requests[1].messages[-1]["content"]
    assert observation.startswith("Observation:\nNote: lines 1-3: your copy of get_rate() had no body")
    assert run.answer == 0.9
    jsonschema.validate(run.trace, load_schema())


def test_comment_only_code_is_a_parse_error_and_repeated_code_is_pointed_out(llm_server):
    server = llm_server([code("# your code")] + [code("x = 1\nprint(x)")] * 3 + [code("final_answer(x)")])
    run = make_agent(server).run("One")

    assert run.trace["steps"][0]["error"]["type"] == "ParseError"
    assert "held only comments" in run.trace["steps"][0]["error"]["message"]
    assert "identical to your previous step" not in server.requests[2].messages[-1]["content"]
    assert "exactly the one from step 2" in server.requests[3].messages[-1]["content"]  # the resample
    assert "identical to your previous step" in server.requests[4].messages[-1]["content"]


def test_a_model_call_that_times_out_is_retried(llm_server):
    from airflow_codeagent.models.completion import LiteLLMModel

    server = llm_server([Reply(code("final_answer('late')"), delay_s=5), code("final_answer('on time')")])
    model = LiteLLMModel("openai/scripted-model", {"api_base": server.api_base, "api_key": "k"},
                         retry=FAST_RETRY, request_timeout_s=0.5)
    run = CodeAgent(model).run("Answer")

    assert run.status is RunStatus.FINAL_ANSWER and run.answer == "on time"
    retries = run.trace["steps"][0]["retries"]
    assert len(retries) == 1 and retries[0]["error_type"] in {"Timeout", "APIConnectionError"}


def test_rate_limit_without_retry_after_backs_off_and_succeeds(llm_server):
    server = llm_server([HTTPError(429, "slow down"), code("final_answer('ok')")])
    run = make_agent(server, retry=RetryPolicy(max_retries=2, initial_delay_s=0.2, max_delay_s=1)).run("Say ok")

    retries = run.trace["steps"][0]["retries"]
    assert run.answer == "ok" and len(retries) == 1
    assert retries[0]["status_code"] == 429 and 0.1 <= retries[0]["waited_s"] <= 0.2  # jittered first backoff


def test_repeating_the_code_that_just_failed_is_resampled_not_rerun(llm_server):
    failing = code("total = sum(get_rate(c) for c in currencies)", "Sum the rates.")
    server = llm_server([failing, Reply(failing, prompt_tokens=300, completion_tokens=30),
                         Reply(code("final_answer(get_rate('USD'))", "Only USD."), prompt_tokens=400)])
    run = make_agent(server).run("Rate of USD")

    assert run.status is RunStatus.FINAL_ANSWER and run.answer == 0.9
    first, second = run.trace["steps"]
    assert first["error"]["type"] == "NameError"
    assert second["rejected_outputs"] == [failing]  # kept for the reviewer, never executed
    assert second["code"] == "final_answer(get_rate('USD'))"
    # the step's usage is both calls it made
    assert (second["input_tokens"], second["output_tokens"]) == (700, 50)
    resample = server.requests[2]
    assert resample.body["temperature"] == 0.7 and "temperature" not in server.requests[1].body
    note = resample.messages[-1]["content"]
    assert "exactly the one from step 1" in note and "NameError" in note
    assert run.trace["limits"]["repeat_temperature"] == 0.7
    assert_valid_trace(run.trace)


def test_repeat_temperature_none_runs_the_repeat_as_sent(llm_server):
    failing = code("1 / 0")
    server = llm_server([failing, failing, code("final_answer(1)")])
    run = make_agent(server, repeat_temperature=None).run("One")

    assert [s["error"]["type"] if s["error"] else None for s in run.trace["steps"]] == \
        ["ZeroDivisionError", "ZeroDivisionError", None]
    assert all("temperature" not in r.body for r in server.requests)
    note = server.requests[2].messages[-1]["content"]
    assert "identical to your previous step" in note and "Change your approach" in note


def test_repeating_code_that_worked_is_resampled_with_its_result_and_told_to_finish(llm_server):
    # A small model that printed the answer reran that code to the step cap at temperature 0.
    printing = code("rate = get_rate('USD')\nprint(rate)")
    server = llm_server([printing, printing, code("final_answer(rate)")])
    run = make_agent(server).run("Rate of USD")

    assert run.status is RunStatus.FINAL_ANSWER and run.answer == 0.9
    first, second = run.trace["steps"]
    assert first["stdout"] == "0.9\n"
    assert second["rejected_outputs"] == [printing]  # kept for the reviewer, not run again
    resample = server.requests[2]
    assert resample.body["temperature"] == 0.7
    note = resample.messages[-1]["content"]
    assert note.startswith("Note: this code is exactly the one from step 1, which worked and gave:\n0.9\n")
    assert "do not explore further: reply with one short ```python code block that calls final_answer" in note
    assert "passing the variable that holds the answer" in note
    assert_valid_trace(run.trace)


def test_code_that_worked_runs_when_sent_again_after_the_resample(llm_server):
    # The world may have changed since (a table still loading): asked twice, it runs.
    server = llm_server([code("print(get_rate('USD'))")] * 3 + [code("final_answer(1)")])
    run = make_agent(server).run("One")

    assert run.status is RunStatus.FINAL_ANSWER
    assert [s["stdout"] for s in run.trace["steps"]] == ["0.9\n", "0.9\n", ""]
    note = server.requests[3].messages[-1]["content"]
    assert "identical to your previous step" in note and "pass it to final_answer now" in note
    assert "Change your approach" not in note


@pytest.mark.parametrize("value", [-0.1, 2.5, "hot", True])
def test_bad_repeat_temperature_is_refused_by_name(value):
    with pytest.raises(ValueError, match="repeat_temperature must be a number from 0 to 2"):
        CodeAgent("openai/x", repeat_temperature=value)


def test_alternating_between_two_failing_actions_is_caught_too(llm_server):
    first, second = code("1 / 0"), code("int('x')")
    server = llm_server([first, second, first, code("final_answer('stop')")])
    run = make_agent(server).run("One")

    assert run.status is RunStatus.FINAL_ANSWER and len(run.trace["steps"]) == 3
    assert run.trace["steps"][2]["rejected_outputs"] == [first]
    assert "exactly the one from step 1, which failed with ZeroDivisionError" in \
        server.requests[3].messages[-1]["content"]


def test_a_timed_out_step_may_be_sent_again(llm_server):
    """A time limit may not recur (a slow tool, a busy machine): the same code runs again as sent."""
    slow = code("while True:\n    pass")
    server = llm_server([slow, slow, code("final_answer(1)")])
    run = make_agent(server, step_timeout_seconds=0.2).run("One")

    assert [s["error"]["type"] if s["error"] else None for s in run.trace["steps"]] == \
        ["StepInterrupted", "StepInterrupted", None]
    assert len(server.requests) == 3


def test_an_action_that_failed_before_a_successful_step_is_run_again(llm_server):
    """The state changed in between: what failed may work now, so it is not resampled."""
    server = llm_server([code("print(total)"), code("total = 41 + 1"), code("print(total)"),
                         code("final_answer(total)")])
    run = make_agent(server).run("One")

    assert run.status is RunStatus.FINAL_ANSWER and run.answer == 42
    assert run.trace["steps"][2]["stdout"] == "42\n" and not run.trace["steps"][2]["rejected_outputs"]
    assert all("temperature" not in r.body for r in server.requests)


def test_a_failed_resample_call_runs_the_repeat_as_sent(llm_server):
    """A model that refuses the resampling temperature must not end the run."""
    failing = code("1 / 0")
    server = llm_server([failing, failing, HTTPError(400, "temperature is not supported by this model"),
                         code("final_answer(1)")])
    run = make_agent(server).run("One")

    assert run.status is RunStatus.FINAL_ANSWER
    second = run.trace["steps"][1]
    assert second["error"]["type"] == "ZeroDivisionError" and second["rejected_outputs"] == []


def test_a_repeated_data_shape_error_is_told_to_look_at_the_data_first(llm_server):
    """The 1.5B model rewrote a parser for a log it had never printed until the step cap (log_amounts)."""
    parse = code("lines = ['amount=EUR 1.250,50']\ntotal = sum(float(l.split('=')[1]) for l in lines)")
    server = llm_server([parse, parse, parse, code("final_answer(1)")])
    run = make_agent(server).run("Sum the amounts")

    resample_note = server.requests[2].messages[-1]["content"]
    assert resample_note.startswith("Error: this code is exactly the one from step 1, which failed with ValueError")
    assert resample_note.endswith("print a few items of it first (for example print(rows[:3])) and write the "
                                  "parsing code for what you see.")
    ran_again = server.requests[3].messages[-1]["content"]  # sent a third time: it runs, and is told again
    assert "identical to your previous step's, so it failed the same way" in ran_again
    assert "print a few items of it first" in ran_again
    assert run.answer == 1


def test_a_repeated_error_that_is_not_about_the_data_gets_no_data_hint(llm_server):
    server = llm_server([code("1 / 0"), code("1 / 0"), code("final_answer(1)")])
    make_agent(server).run("One")

    assert "exactly the one from step 1, which failed with ZeroDivisionError" in \
        server.requests[2].messages[-1]["content"]
    assert "print a few items" not in server.requests[2].messages[-1]["content"]


@pytest.mark.parametrize("sandbox", ["restricted", "isolated"])
def test_the_trace_says_how_the_sandbox_confined_the_code(llm_server, sandbox):
    """A reviewer must be able to tell a confined run from one that ran beside the worker's secrets."""
    server = llm_server([code("x = 1"), code("final_answer(x)")])
    published = []
    run = make_agent(server, sandbox=sandbox).run("One", on_step=published.append)

    expected = IN_PROCESS_CONFINEMENT if sandbox == "restricted" else host_confinement()
    assert run.trace["confinement"] == expected
    assert published[0]["confinement"] == expected  # from the first step on, not only at the end
    assert_valid_trace(run.trace)


def test_a_guard_the_worker_cannot_set_up_is_logged_once(llm_server, caplog):
    class HalfConfined(RestrictedExecutor):
        def confinement(self) -> dict[str, str]:
            return {"process": "child process", "filesystem": "not confined: the kernel has no Landlock"}

    server = llm_server([code("x = 1"), code("x += 1"), code("final_answer(x)")])
    agent = make_agent(server)
    agent._executor_factory = HalfConfined
    with caplog.at_level("WARNING", logger="airflow_codeagent.agent.loop"):
        run = agent.run("Two")

    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["the restricted sandbox runs model code without its filesystem guard "
                        "(not confined: the kernel has no Landlock)"]
    assert run.trace["confinement"]["filesystem"].startswith("not confined")
