"""Bounded capture of what model code prints.

Model code can print in a loop for as long as it likes; the host must not
hold all of it. The buffer keeps a head and a tail and counts what it dropped,
so the observation still shows how the output began and how it ended.
"""

from __future__ import annotations

from collections import deque
from typing import Any


class OutputBuffer:
    """Keeps at most ``limit_chars`` characters: the first half and the last half."""

    def __init__(self, limit_chars: int) -> None:
        if limit_chars < 2:
            raise ValueError(f"limit_chars must be at least 2, got {limit_chars}")
        self._head_limit = limit_chars // 2
        self._tail_limit = limit_chars - self._head_limit
        self._head: list[str] = []
        self._head_len = 0
        self._tail: deque[str] = deque()
        self._tail_len = 0
        self.dropped_chars = 0

    def write(self, text: str) -> None:
        if self._head_len < self._head_limit:
            room = self._head_limit - self._head_len
            self._head.append(text[:room])
            self._head_len += min(room, len(text))
            text = text[room:]
            if not text:
                return
        self._tail.append(text)
        self._tail_len += len(text)
        while self._tail_len > self._tail_limit:
            excess = self._tail_len - self._tail_limit
            first = self._tail[0]
            if len(first) <= excess:
                self._tail.popleft()
                self._tail_len -= len(first)
                self.dropped_chars += len(first)
            else:
                self._tail[0] = first[excess:]
                self._tail_len -= excess
                self.dropped_chars += excess

    def getvalue(self) -> str:
        head = "".join(self._head)
        tail = "".join(self._tail)
        if not self.dropped_chars:
            return head + tail
        return (
            f"{head}\n[... {self.dropped_chars} characters of output dropped: "
            f"print less, or print a slice ...]\n{tail}"
        )


class SandboxPrinter:
    """Stands in for ``print`` inside RestrictedPython code.

    RestrictedPython rewrites ``print(...)`` into ``_print._call_print(...)``
    where ``_print = _print_(_getattr_)`` is created per scope; every scope's
    printer writes to the same per-step buffer, so a function defined in an
    earlier step still prints into the current step's observation.
    """

    def __init__(self, buffer: OutputBuffer) -> None:
        self._buffer = buffer

    def __call__(self) -> str:  # RestrictedPython's ``printed`` name
        return self._buffer.getvalue()

    def _call_print(self, *objects: Any, sep: str | None = " ", end: str | None = "\n",
                    file: Any = None, flush: bool = False) -> None:
        if file is not None:
            raise TypeError("print(file=...) is not available in the sandbox; print to stdout")
        sep = " " if sep is None else sep
        end = "\n" if end is None else end
        if not isinstance(sep, str) or not isinstance(end, str):
            raise TypeError("print() sep and end must be strings")
        self._buffer.write(sep.join(str(o) for o in objects) + end)
