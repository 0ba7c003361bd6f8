"""Cutting long text so that both its beginning and its end survive."""

from __future__ import annotations


def truncate_middle(text: str, limit: int, hint: str = "") -> str:
    """Keep the head and tail of ``text`` within ``limit`` characters, marking the cut.

    The tail matters as much as the head: the end of an output is where a
    loop's last value or an error message usually is.
    """
    if limit <= 0 or len(text) <= limit:
        return text
    head = limit // 2
    tail = limit - head
    cut = len(text) - limit
    marker = f"\n[... {cut} characters cut{': ' + hint if hint else ''} ...]\n"
    return text[:head] + marker + text[len(text) - tail:]
