"""What one execution of model code produced: the contract between sandbox and agent loop."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ExecutionError:
    """An error raised by model code, trimmed to what the model can act on.

    ``traceback`` lists only frames of the model's own code, so the model is
    not distracted (or informed) by host internals.
    """

    type: str
    message: str
    traceback: str

    def to_dict(self) -> dict[str, str]:
        return {"type": self.type, "message": self.message, "traceback": self.traceback}


@dataclass(frozen=True)
class ToolCall:
    """One call from model code into a host tool, as recorded for the trace."""

    name: str
    arguments: str
    duration_s: float
    result_chars: int | None
    error: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "arguments": self.arguments,
            "duration_s": round(self.duration_s, 6),
            "result_chars": self.result_chars,
            "error": self.error,
        }


@dataclass(frozen=True)
class Observation:
    """Result of running one code action.

    ``final_answer_called`` is separate from ``final_answer`` because
    ``final_answer(None)`` is a legitimate answer.
    """

    stdout: str
    value_repr: str | None
    error: ExecutionError | None
    duration_s: float
    final_answer_called: bool = False
    final_answer: Any = None
    tool_calls: tuple[ToolCall, ...] = field(default_factory=tuple)
