"""The terminal entry point, against the scripted server over real HTTP."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import jsonschema
import pytest

from airflow_codeagent.agent.trace import load_schema
from airflow_codeagent.cli.main import main

pytestmark = pytest.mark.integration


def test_demo_prints_each_step_and_checks_the_answer(llm_server, tmp_path):
    server = llm_server([
        "Thought: get the rates.\n```python\nrates = {i['currency']: get_rate(i['currency']) for i in invoices}\n"
        "print(rates)\n```",
        "Thought: convert and pick.\n```python\neur = {i['id']: i['amount'] * rates[i['currency']] for i in invoices}\n"
        "final_answer({'total_eur': round(sum(eur.values()), 2), 'largest': max(eur, key=lambda k: eur[k])})\n```",
    ])
    out = io.StringIO()
    trace_path = tmp_path / "trace.json"
    code = main(["demo", "--model", "openai/scripted", "--api-base", server.api_base,
                 "--trace", str(trace_path)], out=out)
    text = out.getvalue()

    assert code == 0
    assert "step 1" in text and "step 2" in text
    assert "Thought: get the rates." in text
    assert "  rates = {i['currency']: get_rate(i['currency']) for i in invoices}" in text
    assert "'USD': 0.92" in text  # the observation of step 1
    assert "status: final_answer   steps: 2   LLM calls: 2" in text
    assert "cost: unknown" in text
    assert 'answer: {"total_eur": 3505.39, "largest": "INV-1"}' in text
    assert "correct: True" in text
    jsonschema.validate(json.loads(trace_path.read_text()), load_schema())


def test_run_command_as_a_module_with_inputs_and_exit_status(llm_server, tmp_path):
    server = llm_server(["```python\nfinal_answer(sum(values))\n```"])
    trace_path = tmp_path / "t.json"
    result = subprocess.run(
        [sys.executable, "-m", "airflow_codeagent", "run", "Sum the values", "--input", "values=[1, 2, 3]",
         "--model", "openai/scripted", "--api-base", server.api_base, "--max-steps", "3",
         "--trace", str(trace_path)],
        capture_output=True, text=True, timeout=120, env=dict(os.environ),
    )
    assert result.returncode == 0, result.stderr
    assert "answer: 6" in result.stdout
    trace = json.loads(trace_path.read_text())
    assert trace["inputs"] == {"values": "list of length 3, e.g. [1, 2, 3]"}
    assert trace["limits"]["max_steps"] == 3


def test_run_command_exits_non_zero_when_no_answer(llm_server):
    server = llm_server(["no code", "still no code"])
    out = io.StringIO()
    code = main(["run", "Anything", "--model", "openai/scripted", "--api-base", server.api_base,
                 "--max-steps", "1"], out=out)
    assert code == 1
    assert "status: max_steps" in out.getvalue()
    assert "reason: no final answer after 1 steps" in out.getvalue()
