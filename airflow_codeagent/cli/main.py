"""``python -m airflow_codeagent run|demo``: the agent loop in a terminal.

Prints each step as it completes so a user sees the Thought -> Code ->
Observation cycle, and writes the trace JSON for later inspection.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from airflow_codeagent.agent.loop import AgentRun, CodeAgent
from airflow_codeagent.sandbox.policy import DEFAULT_AUTHORIZED_IMPORTS
from airflow_codeagent.tools.base import Tool

_RULE = "-" * 72


class StepPrinter:
    """Prints the steps of a trace that it has not printed yet."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.printed = 0

    def __call__(self, trace: dict[str, Any]) -> None:
        for step in trace["steps"][self.printed:]:
            self._print_step(step)
        self.printed = len(trace["steps"])

    def _print_step(self, step: dict[str, Any]) -> None:
        w = self.out.write
        label = "final-answer fallback" if step["kind"] == "final_answer_fallback" else "step"
        w(f"{_RULE}\n{label} {step['index']}  ({step['input_tokens']} in / "
          f"{step['output_tokens']} out tokens, LLM {step['llm_latency_s'] or 0:.1f} s)\n")
        if step["thought"]:
            w(f"Thought: {step['thought']}\n")
        if step["code"]:
            w("Code:\n" + "\n".join(f"  {line}" for line in step["code"].splitlines()) + "\n")
        if step["stdout"]:
            w("Output:\n" + "\n".join(f"  {line}" for line in step["stdout"].rstrip().splitlines()) + "\n")
        if step["value"] is not None:
            w(f"Value: {step['value']}\n")
        if step["error"]:
            w(f"Error: {step['error']['type']}: {step['error']['message']}\n")
            if step["error"]["traceback"]:
                w(step["error"]["traceback"] + "\n")
        if step["final_answer_called"]:
            w(f"final_answer: {json.dumps(step['final_answer'])}\n")
        self.out.flush()


def _parse_input(text: str) -> tuple[str, Any]:
    name, sep, value = text.partition("=")
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"--input takes NAME=JSON, got {text!r}")
    try:
        return name, json.loads(value)
    except ValueError:
        return name, value  # a plain string


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m airflow_codeagent",
                                     description="Run a code-writing LLM agent in a terminal.")
    sub = parser.add_subparsers(dest="command", required=True)

    def model_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--model", default=os.environ.get("CODEAGENT_MODEL", "openai/qwen-coder-1.5b"),
                       help="litellm model string (default: %(default)s)")
        p.add_argument("--api-base", default=os.environ.get("CODEAGENT_API_BASE"),
                       help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8765/v1")
        p.add_argument("--api-key", default=os.environ.get("CODEAGENT_API_KEY"),
                       help="API key (or set CODEAGENT_API_KEY; never printed)")
        p.add_argument("--max-steps", type=int, default=8)
        p.add_argument("--max-run-seconds", type=float, default=None)
        p.add_argument("--temperature", type=float, default=None)
        p.add_argument("--trace", type=Path, help="write the trace JSON here")

    run = sub.add_parser("run", help="solve a task with no tools, only inputs and imports")
    run.add_argument("task")
    run.add_argument("--input", action="append", type=_parse_input, default=[], metavar="NAME=JSON",
                     help="a variable for the sandbox (repeatable)")
    run.add_argument("--import", dest="imports", action="append", metavar="MODULE",
                     help=f"authorize a module (repeatable; default: {', '.join(DEFAULT_AUTHORIZED_IMPORTS)})")
    model_options(run)

    demo = sub.add_parser("demo", help="the invoice demo: a rate tool, five invoices, a checked answer")
    model_options(demo)

    trace = sub.add_parser("trace", help="print an agent task's trace from the Airflow metadata DB")
    trace.add_argument("dag_id")
    trace.add_argument("task_id")
    trace.add_argument("--run-id", help="default: the latest run that has a trace for the task")
    trace.add_argument("--map-index", type=int, default=-1)
    return parser


def _agent(args: argparse.Namespace, tools: list[Tool], imports: list[str] | None) -> CodeAgent:
    kwargs: dict[str, Any] = {}
    if args.api_base:
        kwargs["api_base"] = args.api_base
    if args.api_key:
        kwargs["api_key"] = args.api_key
    elif args.api_base:
        kwargs["api_key"] = "not-needed"  # local OpenAI-compatible servers ignore it
    if args.temperature is not None:
        kwargs["temperature"] = args.temperature
    return CodeAgent(args.model, model_kwargs=kwargs, tools=tools, max_steps=args.max_steps,
                     max_run_seconds=args.max_run_seconds,
                     authorized_imports=imports or DEFAULT_AUTHORIZED_IMPORTS)


def _report(run: AgentRun, args: argparse.Namespace, out: TextIO) -> None:
    totals = run.trace["totals"]
    cost = "unknown" if totals["cost_usd"] is None else f"${totals['cost_usd']:.6f}"
    out.write(f"{_RULE}\nstatus: {run.status.value}   steps: {run.steps}   LLM calls: "
              f"{totals['llm_calls']}   tokens: {totals['input_tokens']} in / "
              f"{totals['output_tokens']} out   cost: {cost}   time: {run.trace['duration_s']:.1f} s\n")
    if run.error:
        out.write(f"reason: {run.error}\n")
    label = "answer (partial, from the final-answer fallback)" if run.answer_is_partial else "answer"
    out.write(f"{label}: {json.dumps(run.answer)}\n")
    if args.trace:
        args.trace.write_text(json.dumps(run.trace, indent=2), encoding="utf-8")
        out.write(f"trace written to {args.trace}\n")


def _print_trace(trace: dict[str, Any], out: TextIO) -> None:
    out.write(f"Task: {trace['task']}\nmodel: {trace['model']}   started: {trace['started_at']}\n")
    StepPrinter(out)(trace)
    totals = trace["totals"]
    cost = "unknown" if totals["cost_usd"] is None else f"${totals['cost_usd']:.6f}"
    duration = "-" if trace["duration_s"] is None else f"{trace['duration_s']:.1f} s"
    out.write(f"{_RULE}\nstatus: {trace['status']}   steps: {totals['steps']}   LLM calls: "
              f"{totals['llm_calls']}   tokens: {totals['input_tokens']} in / {totals['output_tokens']} out"
              f"   cost: {cost}   time: {duration}\n")
    if trace["error"]:
        out.write(f"reason: {trace['error']}\n")
    out.write(f"answer: {json.dumps(trace['answer'])}\n")


def main(argv: list[str] | None = None, out: TextIO = sys.stdout) -> int:
    args = _build_parser().parse_args(argv)
    if args.command == "trace":
        from airflow_codeagent.cli.airflow_trace import read_trace

        trace = read_trace(args.dag_id, args.task_id, run_id=args.run_id, map_index=args.map_index)
        if trace is None:
            out.write(f"no agent trace for {args.dag_id}.{args.task_id} (map index {args.map_index}"
                      f"{', run ' + args.run_id if args.run_id else ''}): the task is not an agent "
                      "task, has not started, or its XComs were cleared by a retry\n")
            return 1
        _print_trace(trace, out)
        return 0
    printer = StepPrinter(out)
    if args.command == "demo":
        from airflow_codeagent.cli import demo

        agent = _agent(args, demo.TOOLS, None)
        out.write(f"Task: {demo.TASK}\n")
        run = agent.run(demo.TASK, inputs={"invoices": demo.INVOICES}, on_step=printer)
        _report(run, args, out)
        correct = demo.check_answer(run.answer)
        out.write(f"expected: {json.dumps(demo.expected_answer())}   correct: {correct}\n")
        return 0 if correct else 1
    agent = _agent(args, [], args.imports)
    run = agent.run(args.task, inputs=dict(args.input), on_step=printer)
    _report(run, args, out)
    return 0 if run.status.value == "final_answer" else 1
