"""What the trace view shows, as plain data: highlighted code, run state, explanations, the HTML shell.

Pure functions, no Airflow and no FastAPI, so they are tested on their own.
Nothing here turns trace text into HTML: the browser renders every string
from the trace with ``textContent``; the page shell only carries values the
server produced itself (escaped all the same).
"""

from __future__ import annotations

import builtins
import html
import io
import keyword
import token
import tokenize
from typing import Any

TRACE_SCHEMA_PREFIX = "airflow_codeagent.trace/"
AGENT_OPERATOR_NAMES = frozenset({"CodeAgentOperator", "_CodeAgentDecoratedOperator", "@task.codeagent"})

# Task-instance states, as strings so that this module does not import Airflow.
_RUNNING_STATES = frozenset({"running", "restarting"})
_NOT_STARTED_STATES = frozenset({"", "none", "scheduled", "queued", "up_for_reschedule", "deferred"})
_DID_NOT_RUN_STATES = frozenset({"skipped", "upstream_failed", "removed"})

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
JSON_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}

# -- syntax highlighting -----------------------------------------------------

_BUILTINS = frozenset(name for name in dir(builtins) if not name.startswith("_"))
_CONSTANTS = frozenset({"True", "False", "None"})
_STRING_TYPES = {token.STRING} | {getattr(token, n) for n in ("FSTRING_START", "FSTRING_MIDDLE", "FSTRING_END")
                                  if hasattr(token, n)}
_SKIP_TYPES = {token.NEWLINE, token.NL, token.INDENT, token.DEDENT, token.ENDMARKER}
_AGENT_FUNCTIONS = frozenset({"final_answer", "print"})

Segment = list  # [css class, text]; class "" is plain text


def highlight_python(code: str) -> list[list[Segment]]:
    """``code`` as lines of ``[class, text]`` segments, for the browser to render as text.

    Joining every segment's text gives ``code`` back exactly (split on ``\\n``).
    Uses the standard tokenizer; from a point it cannot read on (an unclosed
    string, bad indentation) the rest is plain text.
    """
    lines = code.split("\n")
    starts = [0]
    for line in lines[:-1]:
        starts.append(starts[-1] + len(line) + 1)

    def offset(row: int, col: int) -> int:
        return starts[row - 1] + col if row - 1 < len(starts) else len(code)

    flat: list[tuple[str, str]] = []
    position = 0
    previous = ""
    try:
        for tok in tokenize.generate_tokens(io.StringIO(code).readline):
            if tok.type in _SKIP_TYPES:
                continue
            start, end = offset(*tok.start), offset(*tok.end)
            if start < position or end > len(code):
                continue
            if start > position:
                flat.append(("", code[position:start]))
            flat.append((_token_class(tok, previous), code[start:end]))
            position = end
            previous = tok.string
    except (tokenize.TokenError, SyntaxError):
        pass
    if position < len(code):
        flat.append(("", code[position:]))
    return _split_lines(flat)


def _token_class(tok: tokenize.TokenInfo, previous: str) -> str:
    if tok.type == token.COMMENT:
        return "tok-com"
    if tok.type in _STRING_TYPES:
        return "tok-str"
    if tok.type == token.NUMBER:
        return "tok-num"
    if tok.type == token.OP:
        return "tok-op"
    if tok.type == token.NAME:
        if tok.string in _CONSTANTS:
            return "tok-const"
        if keyword.iskeyword(tok.string):
            return "tok-kw"
        if previous in ("def", "class"):
            return "tok-def"
        if tok.string in _AGENT_FUNCTIONS:
            return "tok-agent"
        if tok.string in _BUILTINS:
            return "tok-bi"
    return ""


def _split_lines(flat: list[tuple[str, str]]) -> list[list[Segment]]:
    lines: list[list[Segment]] = [[]]
    for cls, text in flat:
        parts = text.split("\n")
        for i, part in enumerate(parts):
            if i:
                lines.append([])
            if not part:
                continue
            line = lines[-1]
            if line and line[-1][0] == cls:
                line[-1][1] += part
            else:
                line.append([cls, part])
    return lines


# -- run state -----------------------------------------------------------------


def is_trace_document(value: Any) -> bool:
    return isinstance(value, dict) and str(value.get("schema", "")).startswith(TRACE_SCHEMA_PREFIX)


def liveness(trace: dict[str, Any], ti_state: str | None) -> str:
    """``finished``, ``running`` (the agent is still going) or ``stopped`` (killed mid-run)."""
    if trace.get("status") != "running":
        return "finished"
    return "running" if (ti_state or "").lower() in _RUNNING_STATES else "stopped"


def notice(trace: dict[str, Any], ti_state: str | None) -> str | None:
    """A sentence for a trace that is not a finished run, ``None`` otherwise."""
    state = liveness(trace, ti_state)
    steps = len(trace.get("steps") or [])
    counted = f"{steps} step{'s' if steps != 1 else ''}"
    if state == "running":
        return f"The agent is still running: showing the {counted} so far. This page refreshes by itself."
    if state == "stopped":
        return (f"The agent never finished: its trace was left open when the task stopped (task state: "
                f"{ti_state or 'none'}), so the task was killed or crashed mid-run. Showing the {counted} it "
                "recorded; the task log may say what stopped it.")
    return None


def is_agent_operator(operator: str | None) -> bool:
    return operator in AGENT_OPERATOR_NAMES


def no_trace_explanation(*, task_id: str, ti_state: str | None, operator: str | None,
                         agent: bool) -> tuple[str, str]:
    """``(reason, message)`` for a task instance that exists but has no trace."""
    state = (ti_state or "none").lower()
    if not agent:
        runs = f"runs {operator}" if operator else "is not an agent task"
        return ("not_an_agent_task",
                f"Task {task_id} {runs}, not a CodeAgentOperator, so it has no agent trace.")
    if state in _NOT_STARTED_STATES:
        return ("not_started",
                f"Task {task_id} has not started yet (state: {ti_state or 'none'}). Its agent trace "
                "appears here after the agent's first step.")
    if state in _RUNNING_STATES:
        return ("no_step_yet",
                f"Task {task_id} is running, but the agent has not finished its first step yet. "
                "This page refreshes by itself.")
    if state in _DID_NOT_RUN_STATES:
        return ("did_not_run", f"Task {task_id} did not run (state: {state}), so there is no agent trace.")
    return ("no_trace",
            f"Task {task_id} ended (state: {state}) without an agent trace: it stopped before the agent's "
            "first step, for example on a bad input or a missing connection. The task log says why.")


def run_summary(trace: dict[str, Any], ti_state: str | None) -> dict[str, Any]:
    """The numbers one row of the DAG-run table shows."""
    totals = trace.get("totals") or {}
    limits = trace.get("limits") or {}
    return {
        "status": trace.get("status"),
        "liveness": liveness(trace, ti_state),
        "steps": totals.get("steps", len(trace.get("steps") or [])),
        "max_steps": limits.get("max_steps"),
        "llm_calls": totals.get("llm_calls"),
        "input_tokens": totals.get("input_tokens"),
        "output_tokens": totals.get("output_tokens"),
        "cost_usd": totals.get("cost_usd"),
        "duration_s": trace.get("duration_s"),
        "model": trace.get("model"),
    }


# -- the HTML shell ------------------------------------------------------------

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="same-origin">
<title>{title}</title>
<link rel="stylesheet" href="{static}/trace.css">
<script src="{static}/trace.js" defer></script>
</head>
<body data-view="{view}" data-json="{json_url}" data-heading="{heading}">
<main id="app" aria-live="polite"><p class="loading">Loading the agent trace&hellip;</p></main>
<noscript><p class="explain">This page needs JavaScript to show the agent trace.</p></noscript>
</body>
</html>
"""


def page_html(*, view: str, title: str, heading: str, static_url: str, json_url: str) -> str:
    """The page shell; ``trace.js`` fetches ``json_url`` and builds the view with DOM text nodes."""
    esc = lambda value: html.escape(str(value), quote=True)  # noqa: E731
    return _PAGE.format(title=esc(title), static=esc(static_url.rstrip("/")), view=esc(view),
                        json_url=esc(json_url), heading=esc(heading))
