"""Model text -> the action to take: code to run, or a parse failure to explain.

Small models are sloppy with formatting; being generous here (several
fences, ``py`` labels, an unclosed last fence, a JSON envelope) saves whole
steps, while a reply with no code at all gets an instructive message back.
"""

from __future__ import annotations

import ast
import bisect
import functools
import io
import json
import re
import tokenize
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar, cast

from airflow_codeagent.sandbox.instrument import physical_lines

# A fence may carry an info string (```python title="x.py"); only a bare ``` line closes it,
# so a ```sql inside a Python string does not end the block early.
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n`]*\n(.*?)(?:\n[ \t]*```[ \t]*(?=\n|\Z)|\Z)", re.DOTALL)
_CODE_LABELS = {"python", "py", "python3", ""}
_Parser = TypeVar("_Parser", bound=Callable[..., object])
_THOUGHT_PREFIX = re.compile(r"^\s*(thought|thoughts|reasoning)\s*:\s*", re.IGNORECASE)


@dataclass(frozen=True)
class CodeAction:
    thought: str
    code: str


@dataclass(frozen=True)
class ParseFailure:
    thought: str
    message: str
    prose_only: bool = False  # text with no attempt at an action: often an answer given in prose


def _never_raises(expected: str) -> Callable[[_Parser], _Parser]:
    """A reply the parser cannot read becomes a parse failure the model is told about.

    The reply is hostile input: json and ast raise ValueError, RecursionError or
    MemoryError on some of it (a 5,000-digit number, 5,000 nested brackets), and a
    parser must never be how one reply ends a run without its step in the trace.
    """
    def decorate(parse: _Parser) -> _Parser:
        @functools.wraps(parse)
        def guarded(text: str, *args: object, **kwargs: object) -> object:
            try:
                return parse(text, *args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - any parser failure is the reply's fault
                return ParseFailure("", f"Your reply could not be read ({type(exc).__name__}: "
                                        f"{str(exc)[:200]}).\n{expected}")
        return cast(_Parser, guarded)
    return decorate


def _thought_before(text: str, end: int) -> str:
    return _THOUGHT_PREFIX.sub("", text[:end].strip()).strip()


def _json_envelope(text: str) -> CodeAction | None:
    stripped = text.strip()
    if not (stripped.startswith("{") and stripped.endswith("}")):
        return None
    try:
        data = json.loads(stripped)
    except (ValueError, RecursionError):
        return None
    if isinstance(data, dict) and isinstance(data.get("code"), str) and data["code"].strip():
        return CodeAction(_thought_of(data), data["code"].strip("\n"))
    return None


EXPECTED_FORMAT = (
    "Reply with one sentence starting with 'Thought:', then exactly one ```python fenced block "
    "holding real code that uses the tools and variables you were given. End the reply there: the "
    "observation comes back to you in the next message. When you have the result, call "
    "final_answer(result) inside a code block."
)

# A line, outside any code fence, where the model starts writing what its code will
# print: "Observation:", "Output:", "**Result:**", "Execution result:", "Expected output:".
_INVENTED_OBSERVATION = re.compile(
    r"^[ \t]*(?:\*\*)?(?:observation|output|result|execution result|expected output|printed output)s?"
    r"(?:\*\*)?[ \t]*:", re.IGNORECASE | re.MULTILINE)


def _fenced_spans(text: str) -> list[tuple[int, int]]:
    return [match.span() for match in _FENCE.finditer(text)]


def acted_text(text: str) -> str:
    """The part of a reply the agent acts on: up to where the model began inventing the observation.

    A small model often writes the output it expects ("Output:" and a block
    holding a made-up result) and then code that relies on it; neither may
    run, and the made-up result must not stay in its memory as if it were real.
    Marker words inside a code fence are code, not a cut; "Output:" before the
    first fence may introduce the code, so only "Observation:" cuts there.
    """
    spans = _fenced_spans(text)
    starts = [start for start, _ in spans]
    for match in _INVENTED_OBSERVATION.finditer(text):
        inside = bisect.bisect_right(starts, match.start()) - 1  # spans are sorted and disjoint
        if inside >= 0 and match.start() < spans[inside][1]:
            continue
        # "Output:" before any code may just introduce it; "Observation:" never does.
        after_code = bool(spans) and match.start() >= spans[0][1]
        if after_code or match.group(0).strip(" \t*:").lower() == "observation":
            return text[:match.start()].rstrip()
    return text


def _unfenced_code(text: str) -> str | None:
    """Code a model sent without a fence: the whole reply if it is Python, or its final_answer lines.

    Small models often answer a finished task with a bare ``final_answer(x)``;
    prose ("The answer is 42.") does not parse, so it is not mistaken for code, and
    neither is a label line ("Total: 2813.35 (USD)"), which parses as an annotation,
    nor a word and a parenthesis ("Yes (confirmed)"), which parses as a call.
    """
    stripped = text.strip()
    tree = parsed_python(stripped)
    if (tree is not None and tree.body and any(isinstance(n, ast.Call) for n in ast.walk(tree))
            and not any(isinstance(n, ast.AnnAssign) and n.value is None for n in tree.body)
            and not _is_prose_call(tree, stripped)):
        return stripped
    lines = [line.strip() for line in stripped.splitlines() if line.strip().startswith("final_answer(")]
    return next((line for line in lines if parsed_python(line) is not None), None)


def _is_prose_call(tree: ast.Module, source: str) -> bool:
    """A one-statement reply like "Yes (confirmed)": a name, a space, then a parenthesis.

    Python style never puts a space between a function and its arguments; prose
    always does. Only a reply of one statement is judged, so code that happens
    to write ``print (x)`` among other lines still runs.
    """
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Expr):
        return False
    call = tree.body[0].value
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.end_lineno == 1
            and call.func.id != "final_answer"):
        return False
    # Column offsets count UTF-8 bytes ("Genève (Suisse)"), on the parser's own first line.
    first_line = physical_lines(source)[0].encode()
    return first_line[call.func.end_col_offset:call.func.end_col_offset + 1].isspace()


def parsed_python(source: str) -> ast.Module | None:
    """The module ``source`` parses to, or None for anything the parser gives up on."""
    try:
        return ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):  # deep nesting exhausts the parser
        return None


def _is_only_comments(code: str) -> bool:
    return all(not line.strip() or line.strip().startswith("#") for line in code.splitlines())


@_never_raises(EXPECTED_FORMAT)
def parse_code_action(text: str) -> CodeAction | ParseFailure:
    """Find the code in a reply; several code blocks run in order as one step."""
    text = acted_text(text)
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
    if not blocks and not other_labels:
        unfenced = _unfenced_code(text)
        if unfenced is not None:
            return CodeAction("", unfenced)
    if blocks and _is_only_comments("\n".join(blocks)):
        return ParseFailure(_thought_before(text, first_start or 0),
                            f"Your code block held only comments, so nothing was done.\n{EXPECTED_FORMAT}")
    if blocks:
        return CodeAction(_thought_before(text, first_start or 0), "\n\n".join(blocks))
    prose_only = not other_labels and bool(text.strip())
    if other_labels:
        message = (f"Your reply had a ```{other_labels[0]} block but no Python code block. "
                   "Only Python code is executed.")
    elif not text.strip():
        message = "Your reply was empty."
    else:
        message = "Your reply had no code block, so nothing was executed."
    return ParseFailure(_thought_before(text, len(text)), f"{message}\n{EXPECTED_FORMAT}", prose_only)


# -- JSON tool-call mode -------------------------------------------------------------

@dataclass(frozen=True)
class ToolCallAction:
    """One tool call, the whole action of a step in JSON mode."""

    thought: str
    name: str
    arguments: dict
    call_id: str | None = None  # set for native tool calls, echoed in the tool message
    not_called: tuple[str, ...] = ()  # further native calls in the same reply: one call per step

    def as_json(self) -> str:
        return json.dumps({"tool": self.name, "arguments": self.arguments}, ensure_ascii=False)


EXPECTED_TOOL_CALL = (
    'Reply with one JSON object and nothing else: {"thought": "...", "tool": "<tool name>", '
    '"arguments": {...}}. To finish, call the tool final_answer with {"answer": <value>}.'
)

EXPECTED_NATIVE_CALL = ("Call exactly one of the tools, with its arguments as one JSON object. To finish, call the "
                        'tool final_answer with {"answer": <value>}.')

_JSON_FENCE = re.compile(r"```(?:json)?\s*\n(.*?)(?:\n\s*```|\Z)", re.DOTALL)


# An object that starts a line with a quoted key: "{x}" in prose is not a reply, and
# neither is a call the model only mentions mid-sentence ("The call {...} would be ...").
_OBJECT_START = re.compile(r"""^[ \t]*(\{\s*["'])""", re.MULTILINE)
_TRIPLE_QUOTED_VALUE = re.compile(r"""[:,\[]\s*(?:'{3}|"{3})""")
_JSON_DECODER = json.JSONDecoder(strict=False)  # a raw line break inside a string is unambiguous
_TOO_DEEP = ("Your JSON is nested too deeply to read (json stops at about 1,000 levels): "
             "send a flat object.")


def _literal_end(source: str) -> int | None:
    """Where the bracketed Python literal at the start of ``source`` ends, by its tokens (linear)."""
    # The tokenizer counts rows by "\n" only; str.splitlines also breaks at \x0c and \u2028.
    line_starts = [0] + [match.end() for match in re.finditer("\n", source)]
    depth = 0
    try:
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type != tokenize.OP or token.string not in "{}[]()":
                continue
            depth += 1 if token.string in "{[(" else -1
            if depth == 0:
                row, column = token.end
                return line_starts[row - 1] + column
    except (tokenize.TokenError, SyntaxError):
        return None
    return None


def _python_literal_object(source: str) -> dict | None:
    """The object as a Python dict literal (small models triple-quote multi-line code).

    Only values JSON can carry are kept: a set or bytes would break the trace and the tool call.
    """
    end = _literal_end(source)
    if end is None:
        return None
    try:
        value = ast.literal_eval(source[:end])
        value = json.loads(json.dumps(value)) if isinstance(value, dict) else None
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None
    return value


def _describe_json_error(error: json.JSONDecodeError) -> str:
    if _TRIPLE_QUOTED_VALUE.search(error.doc):
        return ('Your JSON used a triple-quoted string, which JSON does not have: write each value as '
                'one string, with \\n for a line break and \\" for a double quote inside it.')
    near = error.doc[max(0, error.pos - 30):error.pos + 30].replace("\n", "\\n")
    return (f"Your JSON object is not valid JSON: {error.msg} at line {error.lineno}, column "
            f"{error.colno} of the object, near `{near}`.")


def _first_json_object(text: str) -> tuple[dict | None, str | None]:
    """The reply's JSON object (in a ```json fence or bare), or None and what is wrong with it.

    Only the first object that starts with a key is read: a later one may be a dict inside
    its code, and running that would be running something the model did not ask for.
    """
    for candidate in [m.group(1) for m in _JSON_FENCE.finditer(text)] + [_without_other_fences(text)]:
        start = _OBJECT_START.search(candidate)
        if start is None:
            continue
        source = candidate[start.start(1):]
        try:
            value, _ = _JSON_DECODER.raw_decode(source)
        except RecursionError:
            return None, _TOO_DEEP
        except json.JSONDecodeError as error:
            value = _python_literal_object(source)
            return (value, None) if value is not None else (None, _describe_json_error(error))
        except ValueError as error:  # e.g. an integer longer than int() accepts
            return None, f"Your JSON object could not be read: {str(error)[:200]}."
        return value, None
    return None, None


def _without_other_fences(text: str) -> str:
    """The reply with its code blocks blanked: a dict in a ```python block is code, not the call."""
    return _FENCE.sub(lambda m: m.group(0) if m.group(1).lower() in ("", "json") else "", text)


@_never_raises(EXPECTED_TOOL_CALL)
def parse_tool_call(text: str, native_calls: tuple[dict[str, str], ...] = (), *,
                    native: bool = False) -> ToolCallAction | ParseFailure:
    """A native tool call if the provider returned one, else the JSON object in the text.

    ``native``: the model was offered tools natively, so it is told to call one, not to
    write JSON text (which is still accepted from it).
    """
    text = acted_text(text)
    expected = EXPECTED_NATIVE_CALL if native else EXPECTED_TOOL_CALL
    if native_calls:
        call = native_calls[0]
        try:
            arguments = json.loads(call["arguments"] or "{}")
        except RecursionError:
            return ParseFailure(text.strip(), f"{_TOO_DEEP}\n{expected}")
        except ValueError as exc:
            return ParseFailure(text.strip(), f"The arguments of your {call['name']} call are not valid "
                                              f"JSON ({exc}).\n{expected}")
        if not isinstance(arguments, dict):
            return ParseFailure(text.strip(), f"Tool arguments must be a JSON object.\n{expected}")
        return ToolCallAction(text.strip(), call["name"], arguments, call["id"],
                              tuple(other["name"] for other in native_calls[1:]))
    data, problem = _first_json_object(text)
    if data is None:
        return ParseFailure(text.strip(), f"{_no_object_message(text, problem, native)}\n{expected}",
                            prose_only=problem is None and bool(text.strip()))
    arguments = data.get("arguments", data.get("action_input", data.get("args", {})))
    name = data.get("tool")
    if name is None and any(key in data for key in ("arguments", "action_input", "args")):
        # "name" and "action" are common keys in data; they name a tool only beside arguments.
        name = data.get("name") or data.get("action")
    if not isinstance(name, str) or not name:
        return ParseFailure(text.strip(), f'Your JSON object had no "tool" name.\n{expected}')
    if not isinstance(arguments, dict):
        return ParseFailure(text.strip(), f'"arguments" must be a JSON object.\n{expected}')
    return ToolCallAction(_thought_of(data), name, arguments)


def _thought_of(data: dict) -> str:
    thought = data.get("thought")
    return thought if isinstance(thought, str) else ""


def _no_object_message(text: str, problem: str | None, native: bool = False) -> str:
    if not text.strip():
        return "Your reply was empty."
    return problem or ("Your reply called no tool." if native else "Your reply had no JSON object.")


EXPECTED_JSON_CODE = ('Reply with one JSON object and nothing else: {"thought": "<one sentence>", '
                      '"code": "<python code, newlines as \\n>"}. Call final_answer(result) in the code '
                      "when you are done.")


@_never_raises(EXPECTED_JSON_CODE)
def parse_json_code(text: str) -> CodeAction | ParseFailure:
    """``code_format="json"``: the whole reply must be {"thought": ..., "code": ...}.

    As in markdown mode, what follows an invented "Observation:" is not acted on: the
    agent's memory keeps only the acted text, so running more would run unseen code.
    """
    text = acted_text(text)
    data, problem = _first_json_object(text)
    if data is None:
        return ParseFailure(text.strip(), f"{_no_object_message(text, problem)}\n{EXPECTED_JSON_CODE}",
                            prose_only=problem is None and bool(text.strip()))
    thought = _thought_of(data)
    code = data.get("code")
    if (not isinstance(code, str) or not code.strip()) and "final_answer" in data:
        # {"code": "", "final_answer": [1004, 1009]}: a small model's way to finish, and
        # only data: it runs as final_answer(<that value>) through the same sandbox.
        return _final_answer_key(thought, data["final_answer"])
    if not isinstance(code, str):
        keys = ", ".join(json.dumps(str(k)) for k in data) or "none"
        return ParseFailure(text.strip(), f'Your JSON object had no "code" string (its keys: {keys}).\n'
                                          f"{EXPECTED_JSON_CODE}")
    code = code.strip("\n")
    if not code.strip() or _is_only_comments(code):
        return ParseFailure(thought, 'Your "code" was empty or only comments, so nothing was done. To finish, '
                                     'call final_answer in the code: {"thought": "...", "code": '
                                     '"final_answer(result)"}.')
    return CodeAction(thought, code)


def _final_answer_key(thought: str, value: object) -> CodeAction | ParseFailure:
    """The value as a Python literal of JSON data, so that it can only be data.

    repr of NaN or Infinity is a bare name (``nan``), which the sandbox would look up.
    """
    try:
        json.dumps(value, allow_nan=False)
    except ValueError:
        return ParseFailure(thought, '"final_answer" must be JSON data: NaN and Infinity are not. '
                                     'Put the value in the code instead: {"thought": "...", "code": '
                                     '"final_answer(result)"}.')
    return CodeAction(thought, f"final_answer({value!r})")
