"""Model text -> the action to take: code to run, or a parse failure to explain.

Small models are sloppy with formatting; being generous here (several
fences, ``py`` labels, an unclosed last fence, a JSON envelope) saves whole
steps, while a reply with no code at all gets an instructive message back.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n(.*?)(?:\n[ \t]*```|\Z)", re.DOTALL)
_CODE_LABELS = {"python", "py", "python3", ""}
_THOUGHT_PREFIX = re.compile(r"^\s*(thought|thoughts|reasoning)\s*:\s*", re.IGNORECASE)


@dataclass(frozen=True)
class CodeAction:
    thought: str
    code: str


@dataclass(frozen=True)
class ParseFailure:
    thought: str
    message: str


def _thought_before(text: str, end: int) -> str:
    return _THOUGHT_PREFIX.sub("", text[:end].strip()).strip()


def _json_envelope(text: str) -> CodeAction | None:
    stripped = text.strip()
    if not (stripped.startswith("{") and stripped.endswith("}")):
        return None
    try:
        data = json.loads(stripped)
    except ValueError:
        return None
    if isinstance(data, dict) and isinstance(data.get("code"), str) and data["code"].strip():
        thought = data.get("thought")
        return CodeAction(thought if isinstance(thought, str) else "", data["code"].strip("\n"))
    return None


EXPECTED_FORMAT = (
    "Reply with a short thought, then exactly one Python code block:\n"
    "Thought: what you will do next\n"
    "```python\n"
    "# your code\n"
    "```\n"
    "When you have the result, call final_answer(result) inside a code block."
)


def parse_code_action(text: str) -> CodeAction | ParseFailure:
    """Find the code in a reply; several code blocks run in order as one step."""
    envelope = _json_envelope(text)
    if envelope is not None:
        return envelope
    blocks: list[str] = []
    other_labels: list[str] = []
    first_start: int | None = None
    for match in _FENCE.finditer(text):
        label = match.group(1).lower()
        if label in _CODE_LABELS:
            if first_start is None:
                first_start = match.start()
            if match.group(2).strip():
                blocks.append(match.group(2).rstrip())
        else:
            other_labels.append(label)
    if blocks:
        return CodeAction(_thought_before(text, first_start or 0), "\n\n".join(blocks))
    if other_labels:
        message = (f"Your reply had a ```{other_labels[0]} block but no Python code block. "
                   "Only Python code is executed.")
    elif not text.strip():
        message = "Your reply was empty."
    else:
        message = "Your reply had no code block, so nothing was executed."
    return ParseFailure(_thought_before(text, len(text)), f"{message}\n{EXPECTED_FORMAT}")
