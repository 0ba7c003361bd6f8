"""Tool signatures a model pasted from its prompt into its own code.

The prompt shows each tool as a Python signature with its docstring, and small
models copy them, with no body, above the code that calls the tool. The
sandbox refuses any rebinding of a provided function, so such a step never
ran; told so, the 1.5B model in ``bench/`` pasted the same copy again until the
step cap (business_days, lineage_root, sla_due_dates). A copy with no body can
do nothing the provided function would not, so it is blanked out, the rest
runs, and the model is told. A definition with a body is still refused by the
sandbox, as is one nested in other code. Blanking only ever runs less of the
model's code than it wrote: a default value or annotation in the copy is not
evaluated either.
"""

from __future__ import annotations

import ast
from collections.abc import Collection

from airflow_codeagent.agent.actions import parsed_python
from airflow_codeagent.sandbox.instrument import physical_lines


def _is_empty_body(statement: ast.stmt) -> bool:
    """``pass``, ``...``, a docstring, or ``raise NotImplementedError``."""
    if isinstance(statement, ast.Pass):
        return True
    if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
        return isinstance(statement.value.value, str) or statement.value.value is Ellipsis
    if isinstance(statement, ast.Raise) and statement.cause is None:
        raised = statement.exc.func if isinstance(statement.exc, ast.Call) else statement.exc
        return isinstance(raised, ast.Name) and raised.id == "NotImplementedError" and (
            not isinstance(statement.exc, ast.Call) or all(
                isinstance(arg, ast.Constant) for arg in statement.exc.args) and not statement.exc.keywords)
    return False


def _is_pasted_stub(node: ast.stmt, provided: Collection[str]) -> bool:
    return (isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in provided
            and not node.decorator_list  # the prompt shows none: not a copy of it
            and all(_is_empty_body(statement) for statement in node.body))


def blank_pasted_stubs(code: str, provided: Collection[str]) -> tuple[str, list[str]]:
    """``code`` with top-level body-less copies of ``provided`` functions blanked, and a note per name.

    The lines are emptied, not removed, so line numbers in a traceback still
    match the code the model wrote. The result must parse to exactly the other
    statements, at the same positions; anything else (a line break the parser
    does not count, such as a form feed inside the copy) leaves the code as
    written, for the sandbox to refuse.
    """
    tree = parsed_python(code)
    if tree is None:
        return code, []  # the sandbox reports what is wrong with it
    stubs = [node for node in tree.body if _is_pasted_stub(node, provided)]
    if not stubs:
        return code, []
    lines = physical_lines(code)
    for node in stubs:
        for index in range(node.lineno - 1, node.end_lineno or node.lineno):
            lines[index] = lines[index][len(lines[index].rstrip("\r\n")):]  # keep the line break
    blanked = "".join(lines)
    kept = ast.Module(body=[node for node in tree.body if node not in stubs], type_ignores=[])
    reparsed = parsed_python(blanked)
    if reparsed is None or ast.dump(reparsed, include_attributes=True) != ast.dump(kept, include_attributes=True):
        return code, []
    return blanked, _notes(stubs)


_MAX_RANGES = 3


def _notes(stubs: list[ast.stmt]) -> list[str]:
    """One note per name, however many copies: the trace and the prompt stay small."""
    ranges: dict[str, list[str]] = {}
    for node in stubs:
        end = node.end_lineno or node.lineno
        ranges.setdefault(node.name, []).append(str(node.lineno) if end == node.lineno else f"{node.lineno}-{end}")
    notes = []
    for name, spans in ranges.items():
        where = ", ".join(spans[:_MAX_RANGES]) + (f" and {len(spans) - _MAX_RANGES} more" if len(spans) > _MAX_RANGES else "")
        notes.append(f"{'line' if len(spans) == 1 and '-' not in spans[0] else 'lines'} {where}: your copy of "
                     f"{name}() had no body, so it was ignored; the provided {name} stays in place. Call "
                     "provided functions; do not copy their definitions.")
    return notes
