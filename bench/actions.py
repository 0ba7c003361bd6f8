"""Code actions vs JSON tool calls, on the same tasks, with a real model.

The claim this project rests on is that an agent that writes code beats one
that calls one tool per step with JSON. This bench checks it: every task of
``bench/action_tasks`` (38 small data-engineering tasks with offline tools
and checkable answers) runs in every mode, paired and in the same order, with
the same tools, the same task text and the same caps:

- ``code``: Python in a markdown fence (``action_mode="code"``);
- ``json``: one tool call per step, ``final_answer`` as a tool (``action_mode="json"``);
- ``code-json``: Python inside a {"thought", "code"} JSON object
  (``action_mode="code", code_format="json"``), with structured output where
  litellm knows the model takes a schema, else prompted only (a local server);
- ``code-json-object`` / ``code-json-schema``: the same with the schema sent
  (``structured_output="json_object"``, llama-cpp-python's shape, or
  ``"json_schema"``, OpenAI's, also vLLM, Ollama and llama.cpp's llama-server),
  so the server constrains every reply to the object. Not in the default
  ``--modes``: pick the one your server reads.

It prints, per mode, the success rate, mean steps, LLM calls, input and
output tokens and wall time, success per task family, and the paired
differences between code and each other mode; it writes every run as a JSONL
row (with its full trace) and draws a PNG chart. Rows already in the JSONL for
the same task (same version), mode, model and step cap are skipped, so an
interrupted run resumes where it stopped.

    python -m bench.actions --start-server                      # serve the local model on :8767
    python -m bench.actions --api-base http://127.0.0.1:8765/v1 --modes code,json --tasks lookup
    python -m bench.actions --report                            # tables and chart from the JSONL
    python -m bench.actions --self-test                         # the runner end to end, scripted model
    python -m bench.actions --list

Your own tasks: write builders like those in ``bench/action_tasks`` (tools
with Google-style docstrings and type hints that return plain data, a prompt,
the expected answer and a checker) and add them to a family's ``TASKS``.
"""

from __future__ import annotations

import os

# litellm otherwise spends seconds trying to download its price table at import.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import argparse
import contextlib
import datetime as dt
import functools
import hashlib
import json
import math
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from airflow_codeagent import CodeAgent
from airflow_codeagent.agent.trace import to_json_native

from bench import local_llm
from bench.action_tasks import FAMILIES, ActionTask, all_tasks

MODES: dict[str, dict[str, str]] = {
    "code": {"action_mode": "code", "code_format": "markdown"},
    "json": {"action_mode": "json"},
    "code-json": {"action_mode": "code", "code_format": "json"},
    "code-json-object": {"action_mode": "code", "code_format": "json", "structured_output": "json_object"},
    "code-json-schema": {"action_mode": "code", "code_format": "json", "structured_output": "json_schema"},
}
DEFAULT_MODES = ("code", "json", "code-json")
DEFAULT_PORT = 8767
DEFAULT_MODEL = f"openai/{local_llm.DEFAULT_ALIAS}"
DEFAULT_API_BASE = f"http://127.0.0.1:{DEFAULT_PORT}/v1"
DEFAULT_OUT = Path("bench/results/actions.jsonl")
AUTHORIZED_IMPORTS = ("collections", "datetime", "json", "math", "re", "statistics")
# Consecutive runs whose model API could not be reached before the bench gives up:
# a dead server must not be recorded as a column of failures.
MAX_UNREACHABLE = 3


class BenchError(RuntimeError):
    """A setup problem the user can fix (bad arguments, missing matplotlib, no server)."""


# ---------------------------------------------------------------- modes


def mode_unavailable(mode: str, model: str = "openai/probe") -> str | None:
    """None if this agent supports ``mode``; else the reason, recorded in place of results."""
    try:
        CodeAgent(model, model_kwargs={"api_base": "http://127.0.0.1:9/v1", "api_key": "probe"},
                  tools=[], max_steps=1, **MODES[mode])
    except (TypeError, ValueError) as exc:
        return f"mode not available: {type(exc).__name__}: {exc}"
    return None


# ---------------------------------------------------------------- one run


def _step_error_type(step: Mapping[str, Any]) -> str | None:
    error = step.get("error")
    return error.get("type") if isinstance(error, Mapping) else None


def _unreachable(trace: Mapping[str, Any]) -> bool:
    """The model API could not be reached: the harness failed, not the model."""
    for step in trace.get("steps", []):
        if _step_error_type(step) == "ModelCallError":
            message = str(step["error"].get("message", "")).lower()
            if any(word in message for word in ("connect", "refused", "unreachable", "reset by peer")):
                return True
    return False


def repeated_actions(trace: Mapping[str, Any]) -> int:
    """Steps whose action (code, or tool calls with their arguments) repeats the step before.

    A small model at temperature 0 often answers an error with the very same
    action until the step cap: this counts how much of a run went to that.
    """
    count, previous = 0, None
    for step in trace.get("steps", []):
        if step.get("kind") != "action":
            continue
        calls = tuple((c.get("name"), str(c.get("arguments"))) for c in step.get("tool_calls") or [])
        action = (step.get("code"), calls) if step.get("code") or calls else None
        if action is not None and action == previous:
            count += 1
        previous = action
    return count


@functools.lru_cache(maxsize=1)
def agent_fingerprint() -> str:
    """A hash of the agent's source as imported, so rows from different agent versions can be told apart."""
    import airflow_codeagent

    root = Path(airflow_codeagent.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.suffix in (".py", ".md", ".json") and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


# What a row was measured under; a row is reused only under the same settings, so a run
# with another temperature or output cap into the same file runs again instead of mixing in.
# Rows written before temperature was recorded were all measured at the default, 0.0.
_SETTING_DEFAULTS = {"temperature": 0.0}


def run_settings(args: argparse.Namespace) -> dict[str, Any]:
    return {"model": args.model, "max_steps": args.max_steps, "max_tokens": args.max_tokens or None,
            "temperature": args.temperature}


def base_row(task: ActionTask, mode: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    return {**settings, "mode": mode, "task": task.name, "family": task.family,
            "task_fp": task.fingerprint(), "min_calls": task.min_calls,
            "host": f"{platform.machine()} {os.cpu_count()} cpus, python {platform.python_version()}",
            "agent_fp": agent_fingerprint(),
            "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}


def run_one(task: ActionTask, mode: str, settings: Mapping[str, Any], *, api_base: str,
            max_run_seconds: float | None, include_trace: bool = True) -> dict[str, Any]:
    """Run one task in one mode under ``run_settings``; always returns a row, never raises for a
    model's failure."""
    row = base_row(task, mode, settings)
    model_kwargs: dict[str, Any] = {"api_base": api_base, "api_key": "local",
                                    "temperature": settings["temperature"]}
    if settings["max_tokens"]:
        model_kwargs["max_tokens"] = settings["max_tokens"]
    try:
        agent = CodeAgent(settings["model"], model_kwargs=model_kwargs, tools=list(task.tools),
                          max_steps=settings["max_steps"],
                          authorized_imports=AUTHORIZED_IMPORTS, max_run_seconds=max_run_seconds,
                          **MODES[mode])
    except (TypeError, ValueError) as exc:
        return {**row, "success": False, "status": "unavailable", "harness_error": True,
                "error": f"mode not available: {type(exc).__name__}: {exc}"}
    started = time.perf_counter()
    try:
        run = agent.run(task.prompt)
    except Exception as exc:  # noqa: BLE001 - a bench bug or agent crash is a row, not the end
        return {**row, "success": False, "status": "exception", "harness_error": True,
                "wall_s": round(time.perf_counter() - started, 2),
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc()[-4000:]}
    wall = time.perf_counter() - started
    trace = run.trace
    totals = trace["totals"]
    final = run.status.value == "final_answer"
    steps = trace["steps"]
    row.update(
        success=final and task.check(run.answer),
        status=run.status.value,
        answer=trace["answer"],
        expected=task.expected,
        answer_source=trace.get("answer_source"),
        # A fallback answer (after the step cap) never counts as success, in any mode; it is
        # recorded so the reader can see how often the model knew but did not finish.
        fallback_correct=(not final and run.answer is not None and task.check(run.answer)),
        steps=totals["steps"],
        llm_calls=totals["llm_calls"],
        input_tokens=totals["input_tokens"],
        output_tokens=totals["output_tokens"],
        cost_usd=totals.get("cost_usd"),
        tool_calls=sum(len(s.get("tool_calls") or []) for s in steps),
        parse_errors=sum(1 for s in steps if "Parse" in (_step_error_type(s) or "")),
        repeats=repeated_actions(trace),
        step_errors=[f"step {s['index']}: {_step_error_type(s)}: {str(s['error'].get('message'))[:160]}"
                     for s in steps if s.get("error")],
        wall_s=round(wall, 2),
        error=trace.get("error"),
        harness_error=_unreachable(trace),
        action_mode=trace.get("action_mode"),
    )
    if include_trace:
        row["trace"] = trace
    return row


# ---------------------------------------------------------------- rows on disk


def _end_torn_line(path: Path) -> None:
    """A run killed mid-write leaves a line without its newline; the next row must not join it."""
    if path.exists() and path.stat().st_size:
        with path.open("rb+") as handle:
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                handle.write(b"\n")


def load_rows(path: Path) -> list[dict[str, Any]]:
    """Every row of the JSONL; a torn last line (killed mid-write) is skipped."""
    if not path.exists():
        return []
    rows = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except ValueError:
                print(f"warning: {path}:{number} is not JSON; ignored", file=sys.stderr)
    return rows


def current_rows(rows: Sequence[Mapping[str, Any]], tasks: Sequence[ActionTask], modes: Sequence[str],
                 settings: Mapping[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """The latest row per (task, mode) for these settings (model, caps, temperature) and task version."""
    by_name = {t.name: t for t in tasks}
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        task = by_name.get(row.get("task", ""))
        if (task is not None and row.get("mode") in modes and row.get("task_fp") == task.fingerprint()
                and all(row.get(k, _SETTING_DEFAULTS.get(k)) == v for k, v in settings.items())):
            latest[(row["task"], row["mode"])] = rejudge(dict(row), task)
    return latest


def rejudge(row: dict[str, Any], task: ActionTask) -> dict[str, Any]:
    """Judge the recorded answer with the task's current checker (checkers may grow more tolerant)."""
    if row.get("harness_error") or "status" not in row or "answer" not in row:
        return row
    final = row["status"] == "final_answer"
    row["success"] = final and task.check(row["answer"])
    row["fallback_correct"] = not final and row["answer"] is not None and task.check(row["answer"])
    return row


def is_done(row: Mapping[str, Any] | None) -> bool:
    """A finished measurement; harness failures (mode missing, server down, crash) are retried."""
    return row is not None and not row.get("harness_error")


# ---------------------------------------------------------------- report


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _fmt(value: float, digits: int = 1) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:,.{digits}f}"


def sign_test_p(wins: int, losses: int) -> float:
    """Two-sided exact sign test (McNemar's exact test) on the discordant pairs."""
    n = wins + losses
    if n == 0:
        return 1.0
    k = min(wins, losses)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


_METRICS = ("steps", "llm_calls", "input_tokens", "output_tokens", "wall_s")


def summarize(latest: Mapping[tuple[str, str], Mapping[str, Any]], tasks: Sequence[ActionTask],
              modes: Sequence[str]) -> dict[str, Any]:
    """Numbers for the tables and the chart; harness failures are counted apart, not as losses."""
    per_mode: dict[str, dict[str, Any]] = {}
    per_family: dict[str, dict[str, tuple[int, int]]] = {}
    for mode in modes:
        rows = [latest[(t.name, mode)] for t in tasks if is_done(latest.get((t.name, mode)))]
        unavailable = [latest[(t.name, mode)] for t in tasks
                       if (t.name, mode) in latest and not is_done(latest[(t.name, mode)])]
        stats: dict[str, Any] = {"n": len(rows), "ok": sum(bool(r["success"]) for r in rows),
                                 "harness_errors": len(unavailable),
                                 "harness_error_text": unavailable[0].get("error") if unavailable else None,
                                 "fallback_correct": sum(bool(r.get("fallback_correct")) for r in rows),
                                 "statuses": {}}
        for r in rows:
            stats["statuses"][r["status"]] = stats["statuses"].get(r["status"], 0) + 1
        for r in rows:
            if "repeats" not in r and isinstance(r.get("trace"), Mapping):
                r["repeats"] = repeated_actions(r["trace"])
        for metric in (*_METRICS, "tool_calls", "parse_errors", "repeats"):
            stats[metric] = _mean([float(r.get(metric) or 0) for r in rows])
        per_mode[mode] = stats
        per_family[mode] = {}
        for family in FAMILIES:
            fam = [r for r in rows if r["family"] == family]
            per_family[mode][family] = (sum(bool(r["success"]) for r in fam), len(fam))
    pairs = {}
    if "code" in modes:
        for other in modes:
            if other == "code":
                continue
            both_rows = [(latest[(t.name, "code")], latest[(t.name, other)]) for t in tasks
                         if is_done(latest.get((t.name, "code"))) and is_done(latest.get((t.name, other)))]
            code_only = [a["task"] for a, b in both_rows if a["success"] and not b["success"]]
            other_only = [a["task"] for a, b in both_rows if b["success"] and not a["success"]]
            solved = [(a, b) for a, b in both_rows if a["success"] and b["success"]]
            pairs[other] = {
                "n": len(both_rows),
                "both": len(solved),
                "neither": sum(1 for a, b in both_rows if not a["success"] and not b["success"]),
                "code_only": code_only, "other_only": other_only,
                "p": sign_test_p(len(code_only), len(other_only)),
                "solved_means": {m: (_mean([float(a.get(m) or 0) for a, _ in solved]),
                                     _mean([float(b.get(m) or 0) for _, b in solved])) for m in _METRICS},
            }
    return {"modes": list(modes), "families": list(FAMILIES), "per_mode": per_mode,
            "per_family": per_family, "pairs": pairs, "tasks": len(tasks)}


def format_report(summary: Mapping[str, Any], latest: Mapping[tuple[str, str], Mapping[str, Any]],
                  tasks: Sequence[ActionTask], *, header: str = "") -> str:
    modes = summary["modes"]
    lines = [header] if header else []
    lines.append(f"{'mode':<16} {'runs':>4}  {'success':>12}  {'steps':>5}  {'llm_calls':>9}  "
                 f"{'in_tok':>7}  {'out_tok':>7}  {'wall_s':>7}  {'tool_calls':>10}")
    lines.append("-" * len(lines[-1]))
    for mode in modes:
        s = summary["per_mode"][mode]
        if s["n"] == 0:
            lines.append(f"{mode:<16} {0:>4}  {s['harness_error_text'] or 'not run'}")
            continue
        rate = f"{s['ok']}/{s['n']} {100 * s['ok'] / s['n']:.0f}%"
        lines.append(f"{mode:<16} {s['n']:>4}  {rate:>12}  {_fmt(s['steps']):>5}  {_fmt(s['llm_calls']):>9}  "
                     f"{_fmt(s['input_tokens'], 0):>7}  {_fmt(s['output_tokens'], 0):>7}  "
                     f"{_fmt(s['wall_s']):>7}  {_fmt(s['tool_calls']):>10}")
    lines.append("(means per task run; success = final_answer called with an answer the task's checker "
                 "accepts; an answer given only in the post-cap fallback call counts as failure, and that "
                 "call is counted in steps and llm_calls)")
    extra = []
    for mode in modes:
        s = summary["per_mode"][mode]
        if s["n"]:
            statuses = ", ".join(f"{k} {v}" for k, v in sorted(s["statuses"].items()))
            extra.append(f"  {mode}: statuses: {statuses}; parse errors/run {_fmt(s['parse_errors'], 2)}; "
                         f"repeated actions/run {_fmt(s['repeats'], 2)}; "
                         f"right answer only in the post-cap fallback: {s['fallback_correct']}"
                         + (f"; {s['harness_errors']} run(s) not measured: {s['harness_error_text']}"
                            if s["harness_errors"] else ""))
    lines += extra

    lines += ["", "success by family:"]
    head = f"  {'family':<10}" + "".join(f"{m:>17}" for m in modes)
    lines.append(head)
    for family in summary["families"]:
        cells = []
        for mode in modes:
            ok, n = summary["per_family"][mode][family]
            cells.append(f"{ok}/{n}" if n else "-")
        lines.append(f"  {family:<10}" + "".join(f"{c:>17}" for c in cells))

    for other, p in summary["pairs"].items():
        lines += ["", f"paired, code vs {other} ({p['n']} tasks run in both):"]
        if not p["n"]:
            lines.append("  no task has a measured row in both modes")
            continue
        lines.append(f"  both solved {p['both']}, neither {p['neither']}, "
                     f"code only {len(p['code_only'])}, {other} only {len(p['other_only'])} "
                     f"(exact sign test on the {len(p['code_only']) + len(p['other_only'])} discordant "
                     f"tasks: p = {p['p']:.3g})")
        lines.append(f"  code solved, {other} failed: {', '.join(p['code_only']) or '-'}")
        lines.append(f"  {other} solved, code failed: {', '.join(p['other_only']) or '-'}")
        if p["both"]:
            lines.append(f"  on the {p['both']} tasks both solved, mean per task (code / {other} / "
                         f"{other} minus code):")
            for metric, (a, b) in p["solved_means"].items():
                digits = 0 if "tokens" in metric else 2
                lines.append(f"    {metric:<13} {_fmt(a, digits):>8} / {_fmt(b, digits):>8} / "
                             f"{'+' if b - a >= 0 else ''}{_fmt(b - a, digits)}")

    lines += ["", "per task (ok/FAIL, steps; * = harness failure, not measured):"]
    lines.append(f"  {'task':<20} {'family':<10} {'min':>3}" + "".join(f"  {m:<18}" for m in modes))
    for task in tasks:
        cells = []
        for mode in modes:
            row = latest.get((task.name, mode))
            if row is None:
                cells.append("")
            elif not is_done(row):
                cells.append("*" + str(row.get("status", "")))
            else:
                mark = "ok" if row["success"] else "FAIL"
                status = "" if row["status"] == "final_answer" else f" {row['status']}"
                cells.append(f"{mark} {row.get('steps', '?')}{status}")
        lines.append(f"  {task.name:<20} {task.family:<10} {task.min_calls:>3}"
                     + "".join(f"  {c:<18}" for c in cells))
    return "\n".join(lines)


# ---------------------------------------------------------------- CLI


def select_tasks(spec: Sequence[str] | None) -> list[ActionTask]:
    """Task names and/or family names (space or comma separated); all tasks by default."""
    tasks = all_tasks()
    if not spec:
        return tasks
    wanted = [w for item in spec for w in item.split(",") if w]
    names = {t.name for t in tasks}
    unknown = [w for w in wanted if w not in names and w not in FAMILIES]
    if unknown:
        raise BenchError(f"unknown task or family {unknown}; see --list")
    return [t for t in tasks if t.name in wanted or t.family in wanted]


def run_order(tasks: Sequence[ActionTask]) -> list[ActionTask]:
    """Round-robin over the families, so a run stopped early still covers every family."""
    queues = [[t for t in tasks if t.family == f] for f in FAMILIES]
    ordered: list[ActionTask] = []
    while any(queues):
        for queue in queues:
            if queue:
                ordered.append(queue.pop(0))
    return ordered


def select_modes(spec: str) -> list[str]:
    modes = [m.strip() for m in spec.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise BenchError(f"unknown mode(s) {unknown}; choose from {list(MODES)}")
    return list(dict.fromkeys(modes))


@contextlib.contextmanager
def _server_if_asked(args: argparse.Namespace) -> Iterator[str]:
    if not args.start_server:
        yield args.api_base
        return
    with local_llm.running_server(local_llm.config_from_args(args)) as api_base:
        yield api_base


def chart_path(args: argparse.Namespace) -> Path | None:
    if args.no_chart:
        return None
    return args.chart or args.out.with_suffix(".png")


def write_outputs(args: argparse.Namespace, tasks: Sequence[ActionTask], modes: Sequence[str]) -> dict[str, Any]:
    latest = current_rows(load_rows(args.out), tasks, modes, run_settings(args))
    summary = summarize(latest, tasks, modes)
    header = (f"model {args.model}; {len(tasks)} tasks; modes {','.join(modes)}; max_steps {args.max_steps}; "
              f"rows from {args.out}")
    versions = sorted({str(row.get("agent_fp")) for row in latest.values()})
    if len(versions) > 1:
        header += (f"\nWARNING: these rows come from {len(versions)} agent versions ({', '.join(versions)}); "
                   "compare modes on rows of one version (use a new --out per agent change)")
    print(format_report(summary, latest, tasks, header=header))
    path = chart_path(args)
    if path is not None:
        from bench import plot_actions

        measured = len({task for (task, _), row in latest.items() if is_done(row)})
        scope = f"{len(tasks)} tasks" if measured == len(tasks) else f"{measured} of {len(tasks)} tasks"
        plot_actions.plot(summary, path, title=f"code vs JSON actions: {args.model}, "
                                               f"{scope}, max_steps {args.max_steps}")
        print(f"\nchart written to {path}")
    return summary


def run_bench(args: argparse.Namespace) -> int:
    tasks = select_tasks(args.tasks)
    modes = select_modes(args.modes)
    if chart_path(args) is not None:
        from bench import plot_actions

        plot_actions.require_matplotlib()  # fail now, not after hours of model calls
    if args.report:
        write_outputs(args, tasks, modes)
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    latest = current_rows(load_rows(args.out), tasks, modes, run_settings(args))
    unavailable = {m: mode_unavailable(m) for m in modes}
    # Paired: every mode of a task runs before the next task, in the same order for every task.
    pending = [(t, m) for t in run_order(tasks) for m in modes if not is_done(latest.get((t.name, m)))]
    todo = [(t, m) for t, m in pending if unavailable[m] is None]
    print(f"{len(tasks)} task(s) x {len(modes)} mode(s): {len(tasks) * len(modes) - len(pending)} already in "
          f"{args.out}, {len(todo)} to run" + "".join(f"; {m}: {why}" for m, why in unavailable.items() if why),
          flush=True)
    _end_torn_line(args.out)
    with args.out.open("a", encoding="utf-8") as out:
        def write(row: Mapping[str, Any]) -> None:
            out.write(json.dumps(row, default=repr) + "\n")
            out.flush()

        for task, mode in pending:
            # A missing mode leaves one marker row per task (so the table says why), not one per attempt.
            if unavailable[mode] is not None and (task.name, mode) not in latest:
                write({**base_row(task, mode, run_settings(args)), "success": False,
                       "status": "unavailable", "harness_error": True, "error": unavailable[mode]})
        if todo:
            with _server_if_asked(args) as api_base:
                print(f"model {args.model} at {api_base}; max_steps={args.max_steps}; "
                      f"max_tokens={args.max_tokens or None}; temperature={args.temperature}", flush=True)
                unreachable = 0
                for number, (task, mode) in enumerate(todo, 1):
                    row = run_one(task, mode, run_settings(args), api_base=api_base,
                                  max_run_seconds=args.max_run_seconds, include_trace=not args.no_trace)
                    write(row)
                    verdict = "*" + row["status"] if row.get("harness_error") else ("ok" if row["success"] else "FAIL")
                    print(f"[{number}/{len(todo)}] {mode:<9} {task.name:<20} {verdict:<5} {row['status']:<15} "
                          f"steps={row.get('steps', '-')} calls={row.get('llm_calls', '-')} "
                          f"in={row.get('input_tokens', '-')} out={row.get('output_tokens', '-')} "
                          f"{row.get('wall_s', 0):.1f}s answer={row.get('answer')!r:.80} "
                          f"expected={task.expected!r:.60}"
                          + (f" error={row.get('error')!r:.200}" if row.get("harness_error") else ""),
                          flush=True)
                    unreachable = unreachable + 1 if row.get("harness_error") else 0
                    if unreachable >= MAX_UNREACHABLE:
                        raise BenchError(f"{unreachable} runs in a row could not be measured (last: "
                                         f"{row.get('error')}); is the model server at {api_base} up?")
    print()
    write_outputs(args, tasks, modes)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.actions", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="litellm model (default: %(default)s)")
    parser.add_argument("--api-base", default=DEFAULT_API_BASE,
                        help="OpenAI-compatible endpoint (default: %(default)s); ignored with --start-server")
    parser.add_argument("--start-server", action="store_true",
                        help="serve the local GGUF model for this run (see bench/local_llm.py)")
    parser.add_argument("--modes", default=",".join(DEFAULT_MODES),
                        help=f"comma-separated, of {', '.join(MODES)} (default: %(default)s)")
    parser.add_argument("--tasks", nargs="+", metavar="NAME",
                        help="task and/or family names, space or comma separated (default: all; see --list)")
    parser.add_argument("--max-steps", type=int, default=8, help="step cap, the same in every mode (default: %(default)s)")
    parser.add_argument("--max-tokens", type=int, default=1024,
                        help="output cap per model call (0 = none; default: %(default)s)")
    parser.add_argument("--temperature", type=float, default=0.0, help="default: %(default)s")
    parser.add_argument("--max-run-seconds", type=float, default=None,
                        help="wall-clock cap per task run, the same in every mode (default: none)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSONL rows, appended (default: %(default)s)")
    parser.add_argument("--chart", type=Path, default=None, help="PNG chart (default: --out with .png)")
    parser.add_argument("--no-chart", action="store_true", help="skip the chart (and the matplotlib check)")
    parser.add_argument("--no-trace", action="store_true", help="leave full traces out of the JSONL rows")
    parser.add_argument("--report", action="store_true", help="print tables and draw the chart from --out only")
    parser.add_argument("--list", action="store_true", help="list the tasks and exit")
    parser.add_argument("--self-test", action="store_true",
                        help="check the suite and run the bench end to end against a scripted model")
    local_llm.add_server_arguments(parser)
    parser.set_defaults(port=DEFAULT_PORT)
    return parser


def list_tasks() -> None:
    for task in all_tasks():
        print(f"{task.family:<10} {task.name:<20} min_calls={task.min_calls}  tools="
              f"{','.join(t.name for t in task.tools)}")
        print(f"    {task.prompt}")
        print(f"    expected: {task.expected!r}; checker: {task.checker_text}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list:
        list_tasks()
        return 0
    if args.self_test:
        return self_test()
    local_llm.exit_on_sigterm()
    try:
        return run_bench(args)
    except (BenchError, local_llm.LocalLLMError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


# ---------------------------------------------------------------- self-test


def _check_suite(tasks: Sequence[ActionTask]) -> list[str]:
    """Static checks every task must pass before a model ever sees it."""
    import inspect

    problems = []
    if len(tasks) < 30:
        problems.append(f"only {len(tasks)} tasks; the suite promises at least 30")
    for task in tasks:
        where = f"task {task.name}"
        if not task.check(task.expected):
            problems.append(f"{where}: its checker rejects its own expected answer")
        if not task.check(to_json_native(task.expected)):  # what --report re-checks from the JSONL
            problems.append(f"{where}: its checker rejects its expected answer as the trace stores it")
        for miss in task.near_misses:
            if task.check(miss):
                problems.append(f"{where}: its checker accepts the near miss {miss!r}")
        for wrong in (None, "", "I don't know", -1, [], {}):
            if task.check(wrong):
                problems.append(f"{where}: its checker accepts {wrong!r}")
        if not 1 <= task.min_calls <= 6:
            problems.append(f"{where}: min_calls {task.min_calls} outside 1..6")
        for t in task.tools:
            sig = t.signature
            if sig.return_annotation is inspect.Signature.empty:
                problems.append(f"{where}: tool {t.name} has no return type hint")
            for p in sig.parameters.values():
                if p.annotation is inspect.Parameter.empty:
                    problems.append(f"{where}: tool {t.name} argument {p.name} has no type hint")
                if p.name not in t.argument_descriptions:
                    problems.append(f"{where}: tool {t.name} does not document {p.name} under Args:")
    return problems


def reference_calls(task: ActionTask, limit: int = 6) -> list[tuple[str, dict[str, Any]]]:
    """The distinct tool calls the task's reference solution makes, in order, as keyword arguments.

    This is how a JSON agent that knew the way would solve the task: the
    self-test plays these calls back as the scripted model's replies.
    """
    import inspect

    calls: list[tuple[str, dict[str, Any]]] = []

    def recorder(t: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            bound = inspect.signature(t.func).bind(*args, **kwargs)
            entry = (t.name, dict(bound.arguments))
            if entry not in calls:
                calls.append(entry)
            return t.func(*args, **kwargs)

        return call

    namespace: dict[str, Any] = {t.name: recorder(t) for t in task.tools}
    namespace["final_answer"] = lambda answer: None
    exec(compile(task.reference, f"<reference {task.name}>", "exec"), namespace)  # noqa: S102 - our own code
    return calls[:limit]


def self_test() -> int:
    """The runner end to end against ``ScriptedLLMServer``: no real model involved.

    The scripted model answers each task with the task's reference solution
    (code mode, and code-json as a JSON envelope) or, in json mode, with the
    reference solution's tool calls one per step and then a final_answer
    call holding the expected answer, so every available mode must score
    100% with no step errors; the reference solutions also run through the
    real sandbox, which checks the tasks themselves. Then: resume makes no new
    calls; a wrong answer counts as a failure; a dead server stops the bench.
    """
    from airflow_codeagent.testing.scripted_llm import RecordedRequest, Reply, ScriptedLLMServer

    tasks = all_tasks()
    problems = _check_suite(tasks)
    by_prompt = {t.prompt: t for t in tasks}
    wrong: set[str] = set()
    json_calls = {t.name: reference_calls(t) for t in tasks}

    def responder(request: RecordedRequest) -> Reply | None:
        messages = request.messages
        system = next((str(m.get("content")) for m in messages if m.get("role") == "system"), "")
        task = next((t for p, t in by_prompt.items() for m in messages if p in str(m.get("content"))), None)
        if task is None:
            return Reply("Thought: no task found.\n```python\nfinal_answer(None)\n```")
        code = "final_answer(-1)" if task.name in wrong else task.reference
        if "calling tools" in system or "tools" in request.body:
            # The reference solution's tool calls, one per step, then final_answer.
            done = sum(1 for m in messages if m.get("role") == "assistant")
            calls = json_calls[task.name]
            if done < len(calls):
                name, arguments = calls[done]
            else:
                name, arguments = "final_answer", {"answer": -1 if task.name in wrong else task.expected}
            if "tools" in request.body:
                return Reply("", tool_calls=({"name": name, "arguments": arguments},))
            return Reply(json.dumps({"thought": "Next call.", "tool": name, "arguments": arguments}))
        if '{"thought"' in system:
            return Reply(json.dumps({"thought": "I use the tools.", "code": code}))
        return Reply(f"Thought: I use the tools.\n```python\n{code}\n```")

    available = [m for m in MODES if mode_unavailable(m) is None]
    print(f"self-test: {len(tasks)} tasks; modes available in this agent: {available}; "
          f"not available: {[m for m in MODES if m not in available]}")
    with tempfile.TemporaryDirectory() as tmp, ScriptedLLMServer(responder=responder) as server:
        out = Path(tmp) / "actions.jsonl"
        argv = ["--model", "openai/scripted-model", "--api-base", server.api_base, "--out", str(out),
                "--max-steps", "8", "--no-trace", "--modes", ",".join(MODES)]
        if run_bench(build_parser().parse_args(argv)) != 0:
            problems.append("first run did not exit 0")
        rows = load_rows(out)
        latest = current_rows(rows, tasks, list(MODES), run_settings(build_parser().parse_args(argv)))
        for mode in MODES:
            for task in tasks:
                row = latest.get((task.name, mode))
                if row is None:
                    problems.append(f"{mode}/{task.name}: no row")
                elif mode in available and not row.get("success"):
                    problems.append(f"{mode}/{task.name}: scripted right answer not counted as success: "
                                    f"{row.get('status')} answer={row.get('answer')!r} "
                                    f"errors={row.get('step_errors') or row.get('error')}")
                elif mode in available and (row.get("step_errors") or row["steps"] != (
                        len(json_calls[task.name]) + 1 if mode == "json" else 1)):
                    problems.append(f"{mode}/{task.name}: expected a clean run of "
                                    f"{len(json_calls[task.name]) + 1 if mode == 'json' else 1} step(s), got "
                                    f"{row['steps']}: {row.get('step_errors')}")
                elif mode not in available and not str(row.get("error", "")).startswith("mode not available"):
                    problems.append(f"{mode}/{task.name}: unavailable mode not recorded as such: {row}")
        calls = len(server.requests)
        count = len(rows)
        if run_bench(build_parser().parse_args(argv)) != 0:
            problems.append("resumed run did not exit 0")
        if len(server.requests) != calls:
            problems.append(f"resume made {len(server.requests) - calls} model calls; expected none")
        if len(load_rows(out)) != count:
            problems.append(f"resume appended {len(load_rows(out)) - count} rows; expected none")
        # Killed mid-write: the last row torn in half, without its newline. Resume reruns that run only.
        text = out.read_text(encoding="utf-8").rstrip("\n")
        out.write_text(text[:len(text) - len(text.rsplit("\n", 1)[-1]) // 2], encoding="utf-8")
        run_bench(build_parser().parse_args(argv))
        if len(load_rows(out)) != count:
            problems.append(f"after a torn last row, resume left {len(load_rows(out))} rows; expected {count}")
        # Another temperature into the same file is another measurement, not a resume.
        calls = len(server.requests)
        run_bench(build_parser().parse_args([*argv, "--temperature", "0.5", "--tasks", tasks[0].name]))
        if len(server.requests) == calls or len(load_rows(out)) != count + len(MODES):
            problems.append("a run at another temperature was skipped as already measured")
        if not (Path(tmp) / "actions.png").stat().st_size:
            problems.append("no chart written")

        wrong.update({tasks[0].name, tasks[-1].name})
        out2 = Path(tmp) / "wrong.jsonl"
        argv2 = [*argv[:5], str(out2), *argv[6:], "--tasks", tasks[0].name, tasks[-1].name, "--modes", "code"]
        run_bench(build_parser().parse_args(argv2))
        for row in load_rows(out2):
            if row.get("success") or row.get("status") != "final_answer":
                problems.append(f"wrong scripted answer for {row['task']} not a plain failure: {row.get('status')}")

    with tempfile.TemporaryDirectory() as tmp:
        dead = ["--model", "openai/scripted-model", "--api-base", "http://127.0.0.1:9/v1",
                "--out", str(Path(tmp) / "dead.jsonl"), "--no-chart", "--modes", "code"]
        try:
            run_bench(build_parser().parse_args(dead))
            problems.append("a dead server did not stop the bench")
        except BenchError as exc:
            print(f"self-test: dead server stops the bench: {exc}")
        if any(not r.get("harness_error") for r in load_rows(Path(tmp) / "dead.jsonl")):
            problems.append("a dead server's runs were recorded as model failures")

    print()
    if problems:
        print(f"SELF-TEST FAILED ({len(problems)} problem(s)):")
        for p in problems:
            print(f"  - {p}")
        return 1
    print(f"SELF-TEST PASSED: {len(tasks)} tasks; modes run end to end: {available}; "
          f"python {platform.python_version()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
