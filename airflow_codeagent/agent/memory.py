"""What the next prompt contains: the system prompt, the task, and the steps so far.

Observations are cut to a size budget here, never in the trace: the model
needs a readable prompt, the reviewer needs the whole record. When the
history outgrows the prompt budget, the oldest steps are replaced by a
summary (see ``compaction.py``) while the task and the latest steps stay
verbatim.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from airflow_codeagent.agent.truncation import truncate_middle
from airflow_codeagent.sandbox.observation import Observation, ToolCall

_CUT_HINT = "print a slice or a summary to see that part"


_REPEATED_FAILURE = ("Note: this code is identical to your previous step's, so it failed the same way. "
                     "Change your approach.")
# Errors that usually mean the code assumed a shape the data does not have. A small model
# writes a parser before it has seen one line of the data, and on the same error keeps
# rewriting the parser (log_amounts, error_code_counts, slowest_job_text in bench/).
DATA_SHAPE_ERRORS = frozenset({"ValueError", "KeyError", "IndexError", "TypeError", "AttributeError"})
LOOK_AT_THE_DATA = ("If the data is not shaped as you assumed, print a few items of it first "
                    "(for example print(rows[:3])) and write the parsing code for what you see.")
_REPEATED_OTHER_OUTCOME = ("Note: this code is identical to your previous step's, yet its outcome "
                           "differs: something it depends on changed.")
# Told "change your approach" after a repeat that worked, a small model drops a right result.
_REPEATED_SUCCESS = ("Note: this code is identical to your previous step's, so it gave the same result. "
                     "If that result answers the task, pass it to final_answer now.")


_MAX_CALL_CHARS = 300


def _raising_tool_call(observation: Observation) -> ToolCall | None:
    """The tool call the step's error came from, if it came from one: the last call, failed alike."""
    error = observation.error
    if error is None or not observation.tool_calls:
        return None
    last = observation.tool_calls[-1]
    raised = f"{error.type}: {error.message}"
    return last if last.error == raised else None


def format_observation(observation: Observation, limit_chars: int, *,
                       repeat_of_failed: bool | None = None, notes: Sequence[str] = ()) -> str:
    """The observation as the model reads it: output, value, or the error to fix.

    ``repeat_of_failed`` is set when the code is the previous step's again: whether that step failed.
    ``notes`` say what the agent changed before running the code.
    """
    parts: list[str] = [f"Note: {note}" for note in notes]
    if observation.stdout:
        parts.append(observation.stdout.rstrip("\n"))
    if observation.value_repr is not None:
        parts.append(f"Last expression value: {observation.value_repr}")
    if observation.error is not None:
        error = observation.error
        text = f"Error: {error.type}: {error.message}"
        failed_call = _raising_tool_call(observation)
        if failed_call is not None:
            # The traceback stops at the model's line; without the call, a small model does not
            # see that it passed a whole record where the tool wanted one field of it.
            text += (f"\nIt was raised inside the tool call {failed_call.name}"
                     f"({truncate_middle(failed_call.arguments, _MAX_CALL_CHARS)})")
            text += (": check these arguments against the tool's signature." if error.type == "TypeError"
                     else ".")
        if error.traceback:
            text += f"\nTraceback (your code, most recent call last):\n{error.traceback}"
        text += ("\nVariables from earlier steps and from lines before the error still exist. "
                 "Fix the code and try again.")
        parts.append(text)
    if len(parts) == len(notes):
        parts.append("The code ran and printed nothing. Use print() to see values.")
    text = truncate_middle("\n".join(parts), limit_chars, _CUT_HINT)
    if repeat_of_failed is not None:
        failed = observation.error is not None
        if failed == repeat_of_failed:
            text += "\n" + (_REPEATED_FAILURE if failed else _REPEATED_SUCCESS)
            if failed and observation.error.type in DATA_SHAPE_ERRORS:
                text += " " + LOOK_AT_THE_DATA
        else:  # the same code, another outcome: state changed between the steps
            text += "\n" + _REPEATED_OTHER_OUTCOME
    return "Observation:\n" + text


@dataclass(frozen=True)
class Turn:
    """One step as the model saw it: its reply and the observation that answered it.

    ``tool_call`` is set for a native tool call: the reply and the observation
    then travel as an assistant ``tool_calls`` message and a ``tool`` message.
    """

    step: int
    model_output: str
    observation: str
    tool_call: dict[str, str] | None = None

    def messages(self) -> list[dict[str, Any]]:
        if self.tool_call is None:
            return [{"role": "assistant", "content": self.model_output},
                    {"role": "user", "content": self.observation}]
        call = self.tool_call
        return [{"role": "assistant", "content": self.model_output or None,
                 "tool_calls": [{"id": call["id"], "type": "function",
                                 "function": {"name": call["name"], "arguments": call["arguments"]}}]},
                {"role": "tool", "tool_call_id": call["id"], "content": self.observation}]


@dataclass
class Memory:
    """The conversation sent to the model; one assistant/user pair per step."""

    system_prompt: str
    task: str
    max_observation_chars: int = 4_000
    turns: list[Turn] = field(default_factory=list)
    summary: str | None = None
    summarized_through: int = 0

    def messages(self) -> list[dict[str, Any]]:
        task = f"Task: {self.task}"
        if self.summary:
            task += (f"\n\nProgress so far (steps 1-{self.summarized_through}, summarized to save "
                     f"context; the variables it names still exist):\n{self.summary}")
        messages = [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": task}]
        for turn in self.turns:
            messages.extend(turn.messages())
        return messages

    def add_step(self, step: int, model_output: str, observation_text: str, *,
                 tool_call: dict[str, str] | None = None) -> None:
        self.turns.append(Turn(step, model_output, observation_text, tool_call))

    def add_observation(self, step: int, model_output: str, observation: Observation, *,
                        repeat_of_failed: bool | None = None, notes: Sequence[str] = ()) -> str:
        text = format_observation(observation, self.max_observation_chars, repeat_of_failed=repeat_of_failed,
                                  notes=notes)
        self.add_step(step, model_output, text)
        return text

    def compactable(self, keep_recent: int) -> list[Turn]:
        """The turns a compaction may replace: all but the ``keep_recent`` latest."""
        return self.turns[:max(0, len(self.turns) - keep_recent)]

    def compact(self, turns: list[Turn], summary: str) -> None:
        """Replace ``turns`` (the oldest) by ``summary``, which covers any earlier summary too."""
        self.turns = self.turns[len(turns):]
        self.summary = summary
        self.summarized_through = turns[-1].step

    def final_answer_request(self, reason: str, how: str) -> list[dict[str, Any]]:
        """Messages for the one last call that asks for the best answer so far."""
        return [*self.messages(), {
            "role": "user",
            "content": (f"{reason} Do not explore further. Using what you already have, give your "
                        f"best final answer now: {how}"),
        }]
