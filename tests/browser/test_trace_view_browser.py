"""The "Agent trace" tab as a person sees it: real api-server, real Airflow UI, headless Chromium.

Agent DAGs run (dag.test) against the scripted model server. In the main run
step 1 calls a tool and prints HTML, step 2 raises, step 3 answers. Chromium
signs in to the Airflow UI, follows the task's "Agent trace" extra link to
the task instance's tab, and reads the trace inside the tab's frame.

Screenshots are saved in each test's tmp dir; with CODEAGENT_UPDATE_SCREENSHOT=1
the first one is also copied to docs/trace-view.png.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from pathlib import Path
from urllib.parse import quote

import pendulum
import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser.conftest import USERNAME
from tests.sandbox_host import host_confinement

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
XSS = '<script>document.title="pwned"</script><img src=x onerror="window.pwned=1">'
STEP_1 = ('names = {o["customer_id"]: lookup_customer(o["customer_id"])["name"] for o in orders}\n'
          f"print(names)\nprint({XSS!r})")
STEP_2 = 'totals = {}\nfor order in orders:\n    totals[names[order["customer"]]] = order["total"]'
STEP_3 = 'totals = {names[o["customer_id"]]: o["total"] for o in orders}\nfinal_answer(totals)'
WAIT_S = 30


def waiter(driver) -> WebDriverWait:
    # The page re-renders when the trace changes: an element read mid-render is simply read again.
    return WebDriverWait(driver, WAIT_S, ignored_exceptions=(StaleElementReferenceException,))


def reply(thought: str, body: str) -> str:
    return f"Thought: {thought}\n```python\n{body}\n```"


def run_dag(test_dags, dag_id: str, day: int, script: list[str]):
    from airflow_codeagent.testing.scripted_llm import ScriptedLLMServer

    with ScriptedLLMServer(script) as server:
        os.environ["AIRFLOW_CONN_LITELLM_DEFAULT"] = json.dumps({
            "conn_type": "litellm", "host": server.api_base, "password": "sk-browser-test",
            "extra": {"model": "openai/scripted-model", "temperature": 0}})
        try:
            return test_dags.get_dag(dag_id).test(logical_date=pendulum.datetime(2024, 6, day, tz="UTC"))
        finally:
            del os.environ["AIRFLOW_CONN_LITELLM_DEFAULT"]


@pytest.fixture(scope="module")
def agent_run(test_dags):
    dag_run = run_dag(test_dags, "test_agent_pipeline", 1, [
        reply("Look up the name of each order's customer.", STEP_1),
        reply("Add up the totals per customer name.", STEP_2),
        reply("The key is customer_id, not customer. Build the totals again.", STEP_3),
    ])
    states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
    assert states == {"extract_orders": "success", "agent": "success", "load": "success"}, states
    return dag_run


def api_get(api_server, path: str) -> dict:
    """GET on the public REST API with a token from SimpleAuthManager's login endpoint."""
    login = urllib.request.Request(
        f"{api_server.base_url}/auth/token", method="POST",
        data=json.dumps({"username": USERNAME, "password": api_server.password}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(login, timeout=10) as response:
        token = json.load(response)["access_token"]
    request = urllib.request.Request(f"{api_server.base_url}{path}",
                                     headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def open_tab(driver, api_server, url: str, title: str):
    """Open a plugin tab of the UI, signing in like a person if the UI asks; return a wait inside its frame."""
    driver.switch_to.default_content()
    driver.get(url)
    wait = waiter(driver)
    login = (By.CSS_SELECTOR, "input[name=username]")
    frame = (By.CSS_SELECTOR, f'iframe[title="{title}"]')
    wait.until(EC.any_of(EC.visibility_of_element_located(login), EC.presence_of_element_located(frame)))
    if driver.find_elements(*login):
        driver.find_element(*login).send_keys(USERNAME)
        driver.find_element(By.CSS_SELECTOR, "input[name=password]").send_keys(api_server.password)
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait.until(lambda d: "/auth/login" not in d.current_url)
        if driver.current_url.split("?")[0] != url.split("?")[0]:
            driver.get(url)
    driver.switch_to.frame(wait.until(EC.presence_of_element_located(frame)))
    return wait


def enter_tab_frame(driver, title: str) -> None:
    """Switch (back) into the iframe the UI shows for a plugin tab."""
    driver.switch_to.default_content()
    frame = (By.CSS_SELECTOR, f'iframe[title="{title}"]')
    driver.switch_to.frame(waiter(driver).until(EC.presence_of_element_located(frame)))


def tab_url(api_server, dag_run, task_id: str) -> str:
    return (f"{api_server.base_url}/dags/{dag_run.dag_id}/runs/{quote(dag_run.run_id, safe='')}"
            f"/tasks/{task_id}/plugin/agent-trace")


def stats(driver) -> dict[str, str]:
    return {s.find_element(By.CLASS_NAME, "stat-label").text.lower(): s.find_element(By.CLASS_NAME, "stat-value").text
            for s in driver.find_elements(By.CSS_SELECTOR, ".stats .stat")}


def steps_shown(count: int):
    return lambda d: len(d.find_elements(By.CSS_SELECTOR, "section.step")) == count


def test_agent_trace_tab_shows_the_run(api_server, browser, agent_run, tmp_path):
    driver = browser
    run_id = quote(agent_run.run_id, safe="")

    # The task's extra link is the way in: it points at the task instance's "Agent trace" tab.
    links = api_get(api_server, f"/api/v2/dags/test_agent_pipeline/dagRuns/{run_id}/taskInstances/agent/links")
    link = links["extra_links"]["Agent trace"]
    assert link == tab_url(api_server, agent_run, "agent")

    wait = open_tab(driver, api_server, link, "Agent trace")
    wait.until(steps_shown(3))

    # Header: status, answer, the numbers.
    header = driver.find_element(By.CSS_SELECTOR, "header.run-header")
    assert header.find_element(By.CSS_SELECTOR, ".pill").text == "Final answer"
    assert "Agent trace · agent" in header.find_element(By.TAG_NAME, "h1").text
    shown = stats(driver)
    assert shown.pop("total time").endswith(("ms", " s"))
    assert shown == {"model": "openai/scripted-model", "steps": "3 of 4", "llm calls": "3", "input tokens": "300",
                     "output tokens": "60", "cost": "unknown", "retries": "0", "sandbox": "isolated"}
    # ...and, on hover, how this worker confined the sandbox child: what a child here really gets.
    guards = host_confinement()
    assert list(guards) == ["process", "network", "filesystem", "syscalls"]
    sandbox = header.find_element(By.XPATH, ".//div[@class='stat-label' and text()='Sandbox']/..")
    assert sandbox.get_attribute("title") == "\n".join(f"{guard}: {why}" for guard, why in guards.items())
    answer = header.find_element(By.CSS_SELECTOR, "pre.answer-text").text
    assert json.loads(answer) == {"acme": 10.5, "globex": 4.5}

    first, second, third = driver.find_elements(By.CSS_SELECTOR, "section.step")

    # Step 1: thought, numbered code, the tool calls, and the HTML it printed shown as text.
    assert "Look up the name of each order's customer." in first.text
    code_lines = [line.text for line in first.find_elements(By.CSS_SELECTOR, ".code .line")]
    assert code_lines == [f"{n}\n{text}" for n, text in enumerate(STEP_1.split("\n"), start=1)]
    assert first.find_elements(By.CSS_SELECTOR, ".code .tok-agent")  # highlighted
    assert first.find_element(By.CSS_SELECTOR, "pre.stdout").text == "{1: 'acme', 2: 'globex'}\n" + XSS
    assert first.find_element(By.CSS_SELECTOR, "table.grid").text.count("lookup_customer") == 2
    assert "100 in / 20 out tokens" in first.find_element(By.CSS_SELECTOR, ".step-meta").text
    assert "step-error" not in first.get_attribute("class")

    # Step 2: marked as an error, with its type, message and traceback.
    assert "step-error" in second.get_attribute("class")
    assert second.find_element(By.CSS_SELECTOR, ".badge-error").text == "Error: KeyError"
    assert second.find_element(By.CSS_SELECTOR, ".error-title").text == "KeyError: 'customer'"
    assert "line 3" in second.find_element(By.CSS_SELECTOR, "pre.traceback").text

    # Step 3: the final answer.
    assert third.find_element(By.CSS_SELECTOR, ".badge-ok").text == "final_answer"
    assert "step-error" not in third.get_attribute("class")

    # The HTML in the trace stayed text: no element was made from it and nothing ran.
    assert driver.execute_script("return document.querySelectorAll('#app img, #app script').length") == 0
    assert driver.execute_script("return window.pwned === undefined")
    assert driver.execute_script("return document.title") == "Agent trace: agent"

    driver.switch_to.default_content()
    assert driver.title.endswith("Airflow")  # 3.3's UI puts the task first ("agent - Airflow"), 3.2's not
    driver.set_window_size(1440, 1700)  # tall enough to show the header and the error step
    screenshot = tmp_path / "trace-view.png"
    assert driver.save_screenshot(str(screenshot))
    driver.set_window_size(1440, 1100)
    if os.environ.get("CODEAGENT_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(screenshot, REPO / "docs" / "trace-view.png")

    # Every task instance has the tab; one that is not an agent gets a plain explanation.
    open_tab(driver, api_server, tab_url(api_server, agent_run, "extract_orders"), "Agent trace")
    explanation = waiter(driver).until(
        EC.visibility_of_element_located((By.CSS_SELECTOR, ".explain")))
    assert explanation.text == ("No agent trace\nTask extract_orders runs @task, not a CodeAgentOperator, "
                                "so it has no agent trace.")

    # The DAG run's tab lists the agent task and links to its trace.
    wait = open_tab(driver, api_server, f"{api_server.base_url}/dags/test_agent_pipeline/runs/{run_id}"
                    "/plugin/agent-traces", "Agent traces")
    row = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "table.runs tbody tr")))
    cells = [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
    assert cells[:6] == ["agent", "—", "Final answer", "3 of 4", "300 in / 60 out", "unknown"]
    driver.switch_to.default_content()
    assert driver.save_screenshot(str(tmp_path / "run-view.png"))
    enter_tab_frame(driver, "Agent traces")
    driver.find_element(By.LINK_TEXT, "open trace").click()
    waiter(driver).until(steps_shown(3))
    assert driver.find_element(By.CSS_SELECTOR, ".run-header .pill").text == "Final answer"


def test_a_running_run_and_then_a_killed_one_show_the_steps_so_far(api_server, browser, agent_run, tmp_path):
    """The stored trace is rewritten as published mid-run (status running, two steps); the task is
    running, then it dies without closing the trace, as a SIGKILLed task does."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select, update

    from airflow_codeagent.operators.codeagent import TRACE_XCOM_KEY

    driver = browser
    key = {"dag_id": agent_run.dag_id, "run_id": agent_run.run_id, "task_id": "agent"}

    def set_state(state: str) -> None:
        with create_session() as session:
            session.execute(update(TaskInstance).where(
                *(getattr(TaskInstance, k) == v for k, v in key.items())).values(state=state))

    def set_trace(trace: dict) -> None:
        with create_session() as session:
            XComModel.set(TRACE_XCOM_KEY, trace, session=session, **key)

    with create_session() as session:
        finished = XComModel.deserialize_value(session.scalars(select(XComModel).where(
            *(getattr(XComModel, k) == v for k, v in key.items()), XComModel.key == TRACE_XCOM_KEY)).one())
    long_output = "".join(f"row {i}\n" for i in range(1, 201))
    partial = {**finished, "status": "running", "answer": None, "answer_source": None, "error": None,
               "ended_at": None, "duration_s": None,
               "steps": [{**finished["steps"][0], "stdout": long_output}, finished["steps"][1]],
               "totals": {**finished["totals"], "steps": 2}}
    set_trace(partial)
    set_state("running")
    try:
        wait = open_tab(driver, api_server, tab_url(api_server, agent_run, "agent"), "Agent trace")
        wait.until(steps_shown(2))
        assert driver.find_element(By.CSS_SELECTOR, ".run-header .pill").text == "Running"
        assert driver.find_element(By.CSS_SELECTOR, ".notice-running").text == (
            "The agent is still running: showing the 2 steps so far. This page refreshes by itself.")
        assert "Step 3 is in progress" in driver.find_element(By.CSS_SELECTOR, ".steps").text
        assert stats(driver)["steps"] == "2 of 4"

        # A long output shows its head; "show all" shows the rest.
        output = driver.find_element(By.CSS_SELECTOR, "#step-1 pre.stdout")
        assert output.text.split("\n")[:2] == ["row 1", "row 2"] and output.text.endswith("row 24\n…")
        button = driver.find_element(By.CSS_SELECTOR, "#step-1 .show-all")
        assert button.text == "show all (201 lines, 1,492 characters)"
        button.click()
        assert output.text == long_output.rstrip("\n") and button.text == "show less"

        # The task dies; the page, which polls while the run goes on, says so by itself.
        set_state("failed")
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, ".run-header .pill").text
                   == "Stopped mid-run (killed)")
        notice = driver.find_element(By.CSS_SELECTOR, ".notice-stopped").text
        assert notice.startswith("The agent never finished: its trace was left open when the task stopped "
                                 "(task state: failed), so the task was killed or crashed mid-run.")
        assert "Showing the 2 steps it recorded" in notice
        assert stats(driver)["total time"].startswith("at least ")
        assert len(driver.find_elements(By.CSS_SELECTOR, "section.step")) == 2
        assert "in progress" not in driver.find_element(By.CSS_SELECTOR, ".steps").text
        driver.switch_to.default_content()
        assert driver.save_screenshot(str(tmp_path / "trace-view-killed.png"))
    finally:
        set_trace(finished)
        set_state("success")


def test_parse_errors_and_the_fallback_step_are_labelled(api_server, browser, test_dags, tmp_path):
    dag_run = run_dag(test_dags, "test_agent_max_steps_succeed_with_partial", 2, [
        "I would rather explain than write code.",
        "I would rather explain than write code.",  # the failed reply again: re-asked, not a step
        reply("Start counting.", 'def final_answer(answer):\n    """Ends the task."""\n\nn = 1'),
        reply("Out of steps: answer with what I have.", "final_answer(n)"),
    ])
    driver = browser
    wait = open_tab(driver, api_server, tab_url(api_server, dag_run, "agent"), "Agent trace")
    wait.until(steps_shown(3))
    assert driver.find_element(By.CSS_SELECTOR, ".run-header .pill").text == "Max steps reached"
    assert stats(driver)["steps"] == "3 of 2"
    answer = driver.find_element(By.CSS_SELECTOR, ".answer").text
    assert "Final answer (from the final-answer fallback step)" in answer
    assert "Why the run stopped\nno final answer after 2 steps" in answer

    parse, counting, fallback = driver.find_elements(By.CSS_SELECTOR, "section.step")
    assert parse.find_element(By.CSS_SELECTOR, ".badge-error").text == "Parse error"
    assert "step-error" in parse.get_attribute("class")
    assert "Model reply (no code could be read from it)\nI would rather explain than write code." in parse.text
    assert [label.text for label in parse.find_elements(By.CSS_SELECTOR, ".label")] == [
        "Model reply (no code could be read from it)", "Error"]  # the reply is shown once, not as a thought too
    assert "1 re-asked" in counting.find_element(By.CSS_SELECTOR, ".step-meta").text
    rejected = counting.find_element(By.CSS_SELECTOR, ".section-rejected")
    assert rejected.text.startswith("Replies not run (1)\nThe model was asked again within this step")
    assert "I would rather explain than write code." in rejected.text
    notes = counting.find_element(By.CSS_SELECTOR, ".section-notes").text
    assert notes.startswith("Changed before running (the model was told)\nlines 1-2: your copy of final_answer()")
    assert fallback.find_element(By.CSS_SELECTOR, ".badge-fallback").text == "Final-answer fallback"
    assert "asked once more for one" in fallback.text
    driver.switch_to.default_content()
    assert driver.save_screenshot(str(tmp_path / "trace-view-fallback.png"))
