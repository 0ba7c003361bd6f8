"""Executor speed, side by side in one run, as ratios against plain ``exec``.

    python -m bench.executor_speed            # from the repository root
    python -m bench.executor_speed --quick    # fewer repetitions, smaller loop

Measures, for each executor that is importable:

- start-up: constructing it and running a first trivial step (for the isolated
  executor this is a fresh child interpreter; for monty a session checked out
  of an already-started pool);
- a trivial step (``x = 1``) in a warm executor;
- a loop-heavy step (nested loops with arithmetic and dict updates, about
  0.2 s in plain ``exec`` on the machine this was written on);
- the overhead of one tool call: a step making 200 calls minus the same loop
  without them, divided by 200.

Executors: plain ``exec`` (the baseline: compile + exec in a persistent
namespace), ``RestrictedExecutor``, ``IsolatedExecutor``, and, when
installed, smolagents' ``LocalPythonExecutor`` and pydantic-monty. The peers
are not dependencies of this project; install them into a separate venv:

    python3 -m venv /work/benchvenv
    /work/benchvenv/bin/pip install smolagents pydantic-monty
    /work/benchvenv/bin/pip install -e /work/main
    cd /work/main && /work/benchvenv/bin/python -m bench.executor_speed

Samples are taken round-robin across executors (so drift hits all alike) and
summarised by their median. Numbers are for comparison within one run, never
as pass/fail limits.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

TRIVIAL = "x = 1"
TOOL_CALLS = 200
WITH_TOOLS = f"for i in range({TOOL_CALLS}):\n    echo(i)"
WITHOUT_TOOLS = f"for i in range({TOOL_CALLS}):\n    pass"


def loop_snippet(n: int) -> str:
    return (
        "counts = {}\n"
        "total = 0\n"
        f"for i in range({n}):\n"
        "    for j in range(20):\n"
        "        k = (i * j) % 97\n"
        "        counts[k] = counts.get(k, 0) + j\n"
        "        total = total + k * j\n"
        "total + len(counts)\n"
    )


def echo(value: Any) -> Any:
    return value


class Runner:
    """One executor under test: ``start()`` returns a function that runs one step."""

    name = ""
    slow = False  # an AST interpreter: fewer loop samples

    def start(self, stack: ExitStack) -> Callable[[str], Any]:
        raise NotImplementedError


class PlainExec(Runner):
    name = "plain exec"

    def start(self, stack: ExitStack) -> Callable[[str], Any]:
        namespace: dict[str, Any] = {"echo": echo}

        def run(code: str) -> Any:
            exec(compile(code, "<step>", "exec"), namespace)  # noqa: S102 - the baseline

        return run


class Restricted(Runner):
    name = "RestrictedExecutor"

    def start(self, stack: ExitStack) -> Callable[[str], Any]:
        from airflow_codeagent.sandbox.restricted import RestrictedExecutor

        executor = RestrictedExecutor(tools={"echo": echo}, step_timeout_s=None)
        stack.callback(executor.close)
        return _checked(executor.run)


class Isolated(Runner):
    name = "IsolatedExecutor"

    def start(self, stack: ExitStack) -> Callable[[str], Any]:
        from airflow_codeagent.sandbox.isolated import IsolatedExecutor

        executor = IsolatedExecutor(tools={"echo": echo}, step_timeout_s=None)
        stack.callback(executor.close)
        return _checked(executor.run)


class Smolagents(Runner):
    name = "smolagents LocalPythonExecutor"
    slow = True

    def start(self, stack: ExitStack) -> Callable[[str], Any]:
        from smolagents import local_python_executor
        from smolagents.local_python_executor import LocalPythonExecutor

        # Its operation budget (10 million AST nodes per step) would stop the loop snippet.
        local_python_executor.MAX_OPERATIONS = 10**12

        executor = LocalPythonExecutor(additional_authorized_imports=[], additional_functions={"echo": echo},
                                       timeout_seconds=None)
        executor.send_tools({})
        return executor


class MontyRunner(Runner):
    name = "pydantic-monty"

    def __init__(self) -> None:
        self._pool: Any = None

    def start(self, stack: ExitStack) -> Callable[[str], Any]:
        # Tool calls are "suspensions", capped at 1000 per checkout by default.
        session = self._pool.checkout(limits={"max_suspensions": 10**9}).__enter__()
        stack.callback(session.__exit__, None, None, None)
        lookup = {"echo": echo}

        def run(code: str) -> Any:
            return session.feed_run(code, external_lookup=lookup)

        return run


def _checked(run: Callable[..., Any]) -> Callable[[str], Any]:
    def checked(code: str) -> Any:
        observation = run(code)
        if observation.error is not None:
            raise RuntimeError(f"benchmark step failed: {observation.error}")
        return observation

    return checked


def _timed(func: Callable[..., Any], *args: Any) -> float:
    started = time.perf_counter()
    func(*args)
    return time.perf_counter() - started


def _start_and_step(runner: Runner, stack: ExitStack) -> None:
    runner.start(stack)(TRIVIAL)


def measure(runners: list[Runner], loop_code: str, *, trivial_reps: int, tool_reps: int, loop_reps: int,
            slow_loop_reps: int, startup_reps: int) -> dict[str, dict[str, float]]:
    samples: dict[str, dict[str, list[float]]] = {
        r.name: {"startup": [], "trivial": [], "tools": [], "no_tools": [], "loop": []} for r in runners}
    with ExitStack() as stack:
        # Start-up: fresh executors, closed right away.
        for _ in range(startup_reps):
            for runner in runners:
                with ExitStack() as own:
                    samples[runner.name]["startup"].append(_timed(_start_and_step, runner, own))
        warm = {r.name: r.start(stack) for r in runners}
        for run in warm.values():
            run(TRIVIAL)
            run(WITH_TOOLS)
        for _ in range(trivial_reps):
            for name, run in warm.items():
                samples[name]["trivial"].append(_timed(run, TRIVIAL))
        for _ in range(tool_reps):
            for name, run in warm.items():
                samples[name]["tools"].append(_timed(run, WITH_TOOLS))
                samples[name]["no_tools"].append(_timed(run, WITHOUT_TOOLS))
        for rep in range(loop_reps):
            for runner in runners:
                if runner.slow and rep >= slow_loop_reps:
                    continue
                samples[runner.name]["loop"].append(_timed(warm[runner.name], loop_code))
    results = {}
    for name, kinds in samples.items():
        med = {kind: statistics.median(values) for kind, values in kinds.items() if values}
        med["tool_call"] = max(0.0, (med["tools"] - med["no_tools"]) / TOOL_CALLS)
        results[name] = med
    return results


def _cell(value: float, base: float, scale: float, unit: str, digits: int) -> str:
    ratio = value / base if base > 0 else float("inf")
    return f"{value * scale:,.{digits}f} {unit} ({ratio:,.1f}x)"


def render(results: dict[str, dict[str, float]]) -> str:
    base = results[PlainExec.name]
    header = ("executor", "start-up", "trivial step", "loop-heavy step", "per tool call")
    rows = [header]
    for name, med in results.items():
        rows.append((
            name,
            f"{med['startup'] * 1e3:,.1f} ms",
            _cell(med["trivial"], base["trivial"], 1e6, "us", 1),
            _cell(med["loop"], base["loop"], 1e3, "ms", 0),
            _cell(med["tool_call"], base["tool_call"], 1e6, "us", 2),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row))
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and a smaller loop")
    parser.add_argument("--loop-n", type=int, default=None, help="outer iterations of the loop snippet")
    args = parser.parse_args(argv)
    quick = args.quick
    loop_n = args.loop_n or (5_000 if quick else 33_000)
    runners: list[Runner] = [PlainExec(), Restricted(), Isolated()]
    missing = []
    try:
        import smolagents  # noqa: F401
    except ImportError:
        missing.append("smolagents")
    else:
        runners.append(Smolagents())
    monty_pool = None
    try:
        from pydantic_monty import Monty
    except ImportError:
        missing.append("pydantic-monty")
    with ExitStack() as stack:
        if "pydantic-monty" not in missing:
            started = time.perf_counter()
            monty_pool = stack.enter_context(Monty())
            pool_start = time.perf_counter() - started
            monty = MontyRunner()
            monty._pool = monty_pool
            runners.append(monty)
        print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs; "
              f"loop snippet n={loop_n}; medians of round-robin samples")
        if monty_pool is not None:
            print(f"pydantic-monty pool start (once, not in the table): {pool_start * 1e3:.1f} ms")
        if missing:
            print(f"not installed, skipped: {', '.join(missing)}")
        results = measure(
            runners, loop_snippet(loop_n),
            trivial_reps=60 if quick else 300, tool_reps=10 if quick else 40,
            loop_reps=3 if quick else 7, slow_loop_reps=1 if quick else 3, startup_reps=3 if quick else 7,
        )
    print()
    print(render(results))
    print()
    print("start-up: construct + first trivial step. Ratios: against plain exec measured in the same run.")
    print(f"per tool call: (step with {TOOL_CALLS} calls - same loop without them) / {TOOL_CALLS}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
