"""CodeAgentOperator in a real Airflow: SQLite metadata DB, dag.test(), XComs read back from the DB."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import jsonschema
import pendulum
import pytest

from airflow_codeagent.agent.trace import load_schema
from airflow_codeagent.testing.scripted_llm import HTTPError, Reply
from tests.integration.model_connection import scripted_model_connection

pytestmark = pytest.mark.integration

LOGICAL_DATE = pendulum.datetime(2024, 3, 1, tz="UTC")
PASSWORD = "sk-conn-password-4242"


def code(body: str) -> str:
    return f"Thought: next.\n```python\n{body}\n```"


@pytest.fixture(scope="module")
def model_server():
    with scripted_model_connection(password=PASSWORD) as server:
        yield server


@pytest.fixture
def llm(model_server):
    model_server.reset()
    return model_server


def run_dag(dag_id: str, dag_bag):
    dag = dag_bag.get_dag(dag_id)
    assert dag is not None, dag_bag.import_errors
    return dag.test(logical_date=LOGICAL_DATE)


def task_states(dag_run) -> dict[tuple[str, int], str]:
    return {(ti.task_id, ti.map_index): ti.state for ti in dag_run.get_task_instances()}


def test_pipeline_answer_trace_templating_and_native_inputs(llm, test_dags, xcoms):
    llm.reset([
        code("names = {o['customer_id']: lookup_customer(o['customer_id'])['name'] for o in orders}\n"
             "print(isinstance(orders, list), isinstance(limit, int), day)"),
        code("final_answer({names[o['customer_id']]: o['total'] for o in orders})"),
    ])
    dag_run = run_dag("test_agent_pipeline", test_dags)

    assert task_states(dag_run) == {("extract_orders", -1): "success", ("agent", -1): "success",
                                    ("load", -1): "success"}
    values = xcoms("test_agent_pipeline", dag_run.run_id)
    assert values[("agent", "return_value", -1)] == {"acme": 10.5, "globex": 4.5}
    assert values[("load", "return_value", -1)] == "loaded 2 customers"
    trace = values[("agent", "codeagent_trace", -1)]
    jsonschema.validate(trace, load_schema())
    assert trace["status"] == "final_answer" and trace["task"] == "Summarise the orders of 2024-03-01 by customer name"
    assert trace["steps"][0]["stdout"] == "True True 2024-03-01\n"  # upstream XCom arrived as a list
    assert trace["inputs"]["orders"].startswith("list of 2 dicts with keys ['order_id', 'customer_id', 'total']")
    first_request = llm.requests[0]
    assert first_request.body["model"] == "scripted-model" and first_request.body["temperature"] == 0
    assert first_request.headers["authorization"] == f"Bearer {PASSWORD}"
    assert "Task: Summarise the orders of 2024-03-01 by customer name" in first_request.messages[1]["content"]


@pytest.mark.parametrize("policy", ["fail", "succeed_with_partial"])
def test_on_max_steps(llm, test_dags, xcoms, policy, capfd):
    llm.reset([code("n = 1"), code("n = n + 1"), code("final_answer(n)")])
    dag_run = run_dag(f"test_agent_max_steps_{policy}", test_dags)

    values = xcoms(dag_run.dag_id, dag_run.run_id)
    trace = values[("agent", "codeagent_trace", -1)]
    assert trace["status"] == "max_steps" and trace["answer"] == 2
    assert [s["kind"] for s in trace["steps"]] == ["action", "action", "final_answer_fallback"]
    output = capfd.readouterr().out
    assert "status=max_steps steps=3/2" in output
    if policy == "fail":
        assert task_states(dag_run)[("agent", -1)] == "failed"
        assert ("agent", "return_value", -1) not in values
        assert "agent stopped with status max_steps after 3 steps (max_steps=2): no final answer after 2 steps" in output
    else:
        assert task_states(dag_run)[("agent", -1)] == "success"
        assert values[("agent", "return_value", -1)] == 2


def test_model_failure_at_step_three_keeps_steps_one_and_two(llm, test_dags, xcoms):
    llm.reset([code("a = 1"), code("b = 2"), HTTPError(401, "key revoked")])
    dag_run = run_dag("test_agent_pipeline", test_dags)

    assert task_states(dag_run)[("agent", -1)] == "failed"
    trace = xcoms(dag_run.dag_id, dag_run.run_id)[("agent", "codeagent_trace", -1)]
    assert trace["status"] == "error"
    assert [s["code"] for s in trace["steps"][:2]] == ["a = 1", "b = 2"]
    assert trace["steps"][2]["error"]["type"] == "ModelCallError"


def test_mapped_prompts_each_have_their_own_trace(llm, test_dags, xcoms):
    llm.reset([code("final_answer('first')"), code("final_answer('second')")])
    dag_run = run_dag("test_agent_mapped", test_dags)

    assert task_states(dag_run) == {("agent", 0): "success", ("agent", 1): "success"}
    values = xcoms(dag_run.dag_id, dag_run.run_id)
    tasks = {values[("agent", "codeagent_trace", i)]["task"] for i in (0, 1)}
    assert tasks == {"Double 0", "Double 1 again"}
    answers = {values[("agent", "return_value", i)] for i in (0, 1)}
    assert answers == {"first", "second"}


def test_task_decorator_returns_prompt_and_arguments_become_variables(llm, test_dags, xcoms):
    llm.reset([code("final_answer({label: sum(values)})")])
    dag_run = run_dag("test_agent_decorated", test_dags)

    values = xcoms(dag_run.dag_id, dag_run.run_id)
    assert values[("total", "return_value", -1)] == {"sum": 12}
    trace = values[("total", "codeagent_trace", -1)]
    assert trace["task"] == "Add up the 3 values and call the result sum"
    assert set(trace["inputs"]) == {"values", "label"}


def test_connection_password_is_redacted_from_the_trace(llm, test_dags, xcoms):
    llm.reset([code("secret = read_connection_password()\nprint(secret)"), code("final_answer(secret)")])
    dag_run = run_dag("test_agent_secret_tool", test_dags)

    trace = xcoms(dag_run.dag_id, dag_run.run_id)[("agent", "codeagent_trace", -1)]
    text = json.dumps(trace)
    assert PASSWORD not in text
    assert trace["steps"][0]["stdout"] == "the password is ***\n"
    assert trace["totals"]["input_tokens"] == 200  # numbers are not mistaken for secrets


def test_execution_timeout_stops_model_code_and_keeps_the_trace(llm, test_dags, xcoms):
    llm.reset([code("x = 0\nwhile True:\n    try:\n        x += 1\n    except BaseException:\n        pass")])
    dag_run = run_dag("test_agent_execution_timeout", test_dags)

    assert task_states(dag_run)[("agent", -1)] == "failed"
    trace = xcoms(dag_run.dag_id, dag_run.run_id)[("agent", "codeagent_trace", -1)]
    assert trace["status"] == "error"
    assert trace["error"].startswith("run interrupted by AirflowTaskTimeout")
    assert len(llm.requests) == 1


def test_non_json_answer_is_sent_back_to_the_model_to_fix(llm, test_dags, xcoms):
    llm.reset([code("final_answer({1, 2})"), code("final_answer(sorted([1, 2]))")])
    dag_run = run_dag("test_agent_non_json_answer", test_dags)

    assert task_states(dag_run)[("agent", -1)] == "success"
    values = xcoms(dag_run.dag_id, dag_run.run_id)
    assert values[("agent", "return_value", -1)] == [1, 2]
    error = values[("agent", "codeagent_trace", -1)]["steps"][0]["error"]
    assert error["type"] == "NotPlainData"
    assert "got set; convert it first, e.g. sorted(list(x))" in error["message"]
    assert "NotPlainData" in llm.requests[1].messages[-1]["content"]


def _start_dags_test(dag_id: str, logical_date: str, log_path):
    return subprocess.Popen(
        [sys.executable, "-m", "airflow", "dags", "test", dag_id, logical_date],
        stdout=log_path.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )


def _wait_for_requests(server, count: int, process, log_path) -> None:
    deadline = time.monotonic() + 120
    while len(server.requests) < count:
        assert process.poll() is None, log_path.read_text()[-3000:]
        assert time.monotonic() < deadline, "the agent never made that many model calls"
        time.sleep(0.1)


def _run_id(dag_id: str, logical_date) -> str:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        return session.query(DagRun).filter(DagRun.dag_id == dag_id,
                                            DagRun.logical_date == logical_date).one().run_id


def test_killed_task_still_shows_the_steps_it_finished(llm, xcoms, tmp_path):
    """`airflow dags test` in a subprocess, SIGKILLed while the model 'thinks' about step 3."""
    llm.reset([code("a = 1\nprint('one')"), code("b = 2\nprint('two')"), Reply(code("final_answer(3)"), delay_s=60)])
    log_path = tmp_path / "out.log"
    process = _start_dags_test("test_agent_pipeline", "2024-03-02", log_path)
    try:
        _wait_for_requests(llm, 3, process, log_path)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    run_id = _run_id("test_agent_pipeline", pendulum.datetime(2024, 3, 2, tz="UTC"))
    trace = xcoms("test_agent_pipeline", run_id)[("agent", "codeagent_trace", -1)]
    assert trace["status"] == "running"
    assert [s["stdout"] for s in trace["steps"]] == ["one\n", "two\n"]


def test_sigterm_stops_the_agent_mid_call_and_records_why(llm, xcoms, tmp_path):
    """SIGTERM (what a task kill sends) reaches on_kill: the in-flight call is abandoned at once."""
    llm.reset([code("a = 1"), Reply(code("final_answer(a)"), delay_s=600)])
    log_path = tmp_path / "out.log"
    process = _start_dags_test("test_agent_pipeline", "2024-03-03", log_path)
    try:
        _wait_for_requests(llm, 2, process, log_path)
        os.kill(process.pid, signal.SIGTERM)
        process.wait(timeout=120)  # far below the 600 s the model would take
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    run_id = _run_id("test_agent_pipeline", pendulum.datetime(2024, 3, 3, tz="UTC"))
    trace = xcoms("test_agent_pipeline", run_id)[("agent", "codeagent_trace", -1)]
    assert trace["status"] == "error" and trace["error"] == "run cancelled"
    assert trace["steps"][0]["code"] == "a = 1"
    assert trace["steps"][1]["error"]["message"] == "model call abandoned: the run was cancelled"


def test_trace_command_prints_a_task_trace_from_the_db(llm, test_dags):
    import io

    from airflow_codeagent.cli.main import main

    llm.reset([code("final_answer('first')"), code("final_answer('second')")])
    dag_run = run_dag("test_agent_mapped", test_dags)
    out = io.StringIO()
    assert main(["trace", "test_agent_mapped", "agent", "--run-id", dag_run.run_id, "--map-index", "1"],
                out=out) == 0
    text = out.getvalue()
    assert "Task: Double 1 again" in text
    assert "status: final_answer   steps: 1" in text
    missing = io.StringIO()
    assert main(["trace", "test_agent_mapped", "no_such_task"], out=missing) == 1
    assert "no agent trace for test_agent_mapped.no_such_task" in missing.getvalue()


def test_retry_replays_paid_steps_from_the_task_state_store(llm, test_dags, xcoms, capfd):
    llm.reset([code("a = 1"), code("b = a + 1"), code("c = b + 1"), HTTPError(401, "key rotated"),
               code("final_answer(c)")])
    dag_run = run_dag("test_agent_retry_replay", test_dags)

    tis = {ti.task_id: ti for ti in dag_run.get_task_instances()}
    assert tis["agent"].state == "success" and tis["agent"].try_number == 2
    assert len(llm.requests) == 5  # 4 in the first try, 1 in the retry: steps 1-3 were not paid twice
    values = xcoms(dag_run.dag_id, dag_run.run_id)
    assert values[("agent", "return_value", -1)] == 3
    trace = values[("agent", "codeagent_trace", -1)]
    assert [s["replayed"] for s in trace["steps"]] == [True, True, True, False]
    assert trace["totals"]["replayed_calls"] == 3 and trace["totals"]["llm_calls"] == 1
    assert "status=error steps=4/5" in capfd.readouterr().out  # the failed try's summary is in the log


def test_the_provider_is_registered_with_airflow(airflow_db):
    listed = subprocess.run([sys.executable, "-m", "airflow", "providers", "list", "-o", "json"],
                            capture_output=True, text=True, timeout=300, check=True)
    providers = {p["package_name"]: p for p in json.loads(listed.stdout)}
    assert "airflow-codeagent" in providers
    hooks = subprocess.run([sys.executable, "-m", "airflow", "providers", "hooks", "-o", "json"],
                           capture_output=True, text=True, timeout=300, check=True)
    litellm_hook = [h for h in json.loads(hooks.stdout) if h["connection_type"] == "litellm"]
    assert litellm_hook and litellm_hook[0]["class"] == "airflow_codeagent.hooks.litellm.LiteLLMHook"


def test_retry_replay_through_object_storage_and_cleanup_on_success(llm, test_dags, xcoms):
    from pathlib import Path

    llm.reset([code("a = 1"), code("b = a + 1"), HTTPError(401, "key rotated"), code("final_answer(b)")])
    dag_run = run_dag("test_agent_retry_replay_object_storage", test_dags)

    assert len(llm.requests) == 4  # 3 in the first try, 1 in the retry
    values = xcoms(dag_run.dag_id, dag_run.run_id)
    assert values[("agent", "return_value", -1)] == 2
    assert [s["replayed"] for s in values[("agent", "codeagent_trace", -1)]["steps"]] == [True, True, False]
    journal_dir = Path(os.environ["CODEAGENT_REPLAY_DIR"]) / dag_run.dag_id / dag_run.run_id / "agent" / "-1"
    assert journal_dir.is_dir() and list(journal_dir.iterdir()) == []  # cleared once the task succeeded


def test_operator_in_json_action_mode(llm, test_dags, xcoms):
    llm.reset([json.dumps({"thought": "look up", "tool": "lookup_customer", "arguments": {"customer_id": 2}}),
               json.dumps({"tool": "final_answer", "arguments": {"answer": "globex"}})])
    dag_run = run_dag("test_agent_json_mode", test_dags)

    values = xcoms(dag_run.dag_id, dag_run.run_id)
    assert values[("agent", "return_value", -1)] == "globex"
    trace = values[("agent", "codeagent_trace", -1)]
    assert trace["action_mode"] == "json"
    assert trace["steps"][0]["tool_calls"][0]["name"] == "lookup_customer"


def test_an_impossible_action_option_is_a_dag_import_error_naming_what_to_change(airflow_db, tmp_path):
    """Caught when the DAG is parsed, not at 3 a.m. when the task first runs."""
    from tests.integration.airflow_env import dag_bag

    (tmp_path / "bad_options.py").write_text(
        "import pendulum\n"
        "from airflow.sdk import DAG\n"
        "from airflow_codeagent import CodeAgentOperator\n"
        "with DAG('bad_options', schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz='UTC')):\n"
        "    CodeAgentOperator(task_id='agent', prompt='p', model='openai/m', structured_output='json_object')\n")
    errors = dag_bag(tmp_path).import_errors

    assert list(errors) == [str(tmp_path / "bad_options.py")]
    assert 'structured_output applies to action_mode="code" with code_format="json" only; set both' in \
        next(iter(errors.values()))
