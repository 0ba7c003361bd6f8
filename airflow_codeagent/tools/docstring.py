"""Reads a Google-style docstring into a summary and per-argument descriptions.

The model only knows a tool by its signature and docstring, so the parser is
strict about the one thing that matters: every tool says what it does.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field

_SECTION = re.compile(r"^\s*(Args|Arguments|Parameters|Returns|Return|Raises|Yields|Examples?|Notes?)\s*:\s*$")
_ARG = re.compile(r"^\s*(\*{0,2}\w+)\s*(\([^)]*\))?\s*:\s*(.*)$")


@dataclass(frozen=True)
class ParsedDocstring:
    summary: str
    arguments: dict[str, str] = field(default_factory=dict)
    returns: str = ""


def parse_docstring(doc: str | None) -> ParsedDocstring:
    text = inspect.cleandoc(doc or "")
    summary_lines: list[str] = []
    arguments: dict[str, str] = {}
    returns: list[str] = []
    section: str | None = None
    current_arg: str | None = None
    for line in text.splitlines():
        match = _SECTION.match(line)
        if match:
            section = match.group(1).lower()
            current_arg = None
            continue
        if section is None:
            summary_lines.append(line)
        elif section in ("args", "arguments", "parameters"):
            arg = _ARG.match(line)
            indent = len(line) - len(line.lstrip())
            if arg and indent <= 4:
                current_arg = arg.group(1).lstrip("*")
                arguments[current_arg] = arg.group(3).strip()
            elif current_arg and line.strip():
                arguments[current_arg] = f"{arguments[current_arg]} {line.strip()}".strip()
        elif section in ("returns", "return") and line.strip():
            returns.append(line.strip())
    return ParsedDocstring("\n".join(summary_lines).strip(), arguments, " ".join(returns))
