"""Summaries that replace the oldest steps when the prompt outgrows its budget.

Two methods: ``"llm"`` asks the model for a short summary (better for
reasoning, costs one call, recorded like any other), ``"digest"`` builds a
deterministic one from the code and observations (free, predictable). Both
end with the variables that exist, since the model's next code depends on
them more than on any prose.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from airflow_codeagent.agent.memory import Turn
from airflow_codeagent.agent.truncation import truncate_middle
from airflow_codeagent.models.completion import Completion, LiteLLMModel

COMPACTION_METHODS = ("llm", "digest", "off")
_TURN_CHARS = 1_500
_DIGEST_CHARS = 1_500  # a summary that grows with every step would defeat compaction
_VARIABLES_CHARS = 1_000

_SUMMARY_INSTRUCTIONS = (
    "You compress the working history of an agent that solves a task by writing Python. "
    "Write at most 150 words: what has been found (numbers, names, intermediate results), which "
    "variables hold them, and which approaches failed and why. No code blocks, no advice."
)


@dataclass(frozen=True)
class Compaction:
    summary: str
    completion: Completion | None  # the summary call, when the method made one


def _first_line(text: str, limit: int = 120) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    line = lines[0] if lines else ""
    return line if len(line) <= limit else line[:limit] + "..."


def _variables_text(variables: Mapping[str, str]) -> str:
    if not variables:
        return "Variables defined: none."
    text = "Variables defined: " + "; ".join(f"{name} ({desc[:80]})" for name, desc in variables.items())
    return truncate_middle(text, _VARIABLES_CHARS, "more variables")


def digest(previous: str | None, turns: list[Turn], variables: Mapping[str, str]) -> str:
    """One line per step (its outcome), newest kept when over size, then the variables."""
    lines = previous.rsplit("\nVariables defined:", 1)[0].splitlines() if previous else []
    for turn in turns:
        observation = turn.observation.removeprefix("Observation:\n")
        outcome = _first_line(observation[observation.find("Error:"):], 80) if "Error:" in observation \
            else _first_line(observation, 80)
        lines.append(f"- step {turn.step}: {outcome}")
    while len("\n".join(lines)) > _DIGEST_CHARS and len(lines) > 1:
        lines.pop(0)
    return "\n".join([*lines, _variables_text(variables)])


def summarize(method: str, model: LiteLLMModel, previous: str | None, turns: list[Turn],
              variables: Mapping[str, str], *, deadline: float | None) -> Compaction:
    """Summarize ``turns`` (and any earlier summary); ``ModelCallError`` propagates."""
    if method == "digest":
        return Compaction(digest(previous, turns, variables), None)
    transcript = "\n\n".join(
        f"Step {t.step} reply:\n{truncate_middle(t.model_output, _TURN_CHARS)}\n"
        f"{truncate_middle(t.observation, _TURN_CHARS)}" for t in turns)
    request = [
        {"role": "system", "content": _SUMMARY_INSTRUCTIONS},
        {"role": "user", "content": (f"Earlier summary:\n{previous}\n\n" if previous else "")
                                    + f"Steps to summarize:\n{transcript}"},
    ]
    completion = model.complete(request, deadline=deadline, overrides={"max_tokens": 300})
    summary = completion.text.strip() or digest(None, turns, {})
    return Compaction(f"{summary}\n{_variables_text(variables)}", completion)
