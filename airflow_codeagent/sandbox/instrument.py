"""Compile model code: RestrictedPython's policy first, then our instrumentation.

Instrumentation is applied to the already-restricted tree, so the names it
introduces (``_tick_``, ``_result_``) may start with an underscore while
model code itself may not use such names.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from types import CodeType

from airflow_codeagent.sandbox.restricting import ModelCodeTransformer

TICK_NAME = "_tick_"
EXCEPT_TICK_NAME = "_except_tick_"
RESULT_NAME = "_result_"
FINAL_ANSWER_NAME = "final_answer"


class RestrictedSyntaxError(Exception):
    """Code that does not parse, or that RestrictedPython's policy rejects."""

    def __init__(self, messages: list[str]) -> None:
        super().__init__("\n".join(messages))
        self.messages = messages


def _tick_call(name: str = TICK_NAME) -> ast.Call:
    return ast.Call(func=ast.Name(name, ast.Load()), args=[], keywords=[])


class _Instrumenter(ast.NodeTransformer):
    """Adds interruption points and captures the trailing expression's value."""

    def _prepend_tick(self, node: ast.AST) -> ast.AST:
        self.generic_visit(node)
        node.body.insert(0, ast.Expr(_tick_call()))  # type: ignore[attr-defined]
        return node

    visit_For = visit_AsyncFor = visit_While = _prepend_tick
    visit_FunctionDef = visit_AsyncFunctionDef = _prepend_tick

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> ast.AST:
        self.generic_visit(node)
        node.body.insert(0, ast.Expr(_tick_call(EXCEPT_TICK_NAME)))
        return node

    def visit_Try(self, node: ast.Try) -> ast.AST:
        # ``finally: return`` would swallow an interrupt; the tick raises it again.
        self.generic_visit(node)
        if node.finalbody:
            node.finalbody.insert(0, ast.Expr(_tick_call()))
        return node

    visit_TryStar = visit_Try

    def visit_Lambda(self, node: ast.Lambda) -> ast.AST:
        self.generic_visit(node)
        node.body = ast.BoolOp(op=ast.Or(), values=[_tick_call(), node.body])
        return node

    def visit_comprehension(self, node: ast.comprehension) -> ast.AST:
        self.generic_visit(node)
        node.ifs.insert(0, ast.UnaryOp(op=ast.Not(), operand=_tick_call()))
        return node


def _trailing_return_to_final_answer(tree: ast.Module) -> None:
    """``return value`` as the last top-level line means "this is my answer": read it so.

    Models (small ones above all, and any task that says "return a dict") end a
    step that way; as a SyntaxError it cost them every remaining step. Only a
    trailing return with a value is read so; its value is then restricted like
    any other code, because this runs before the policy transformer.
    """
    if tree.body and isinstance(tree.body[-1], ast.Return) and tree.body[-1].value is not None:
        last = tree.body[-1]
        call = ast.Call(func=ast.Name(FINAL_ANSWER_NAME, ast.Load()), args=[last.value], keywords=[])
        tree.body[-1] = ast.copy_location(ast.Expr(call), last)


def _capture_trailing_expression(tree: ast.Module) -> None:
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = tree.body[-1]
        last.value = ast.Call(func=ast.Name(RESULT_NAME, ast.Load()), args=[last.value], keywords=[])


@dataclass(frozen=True)
class CompiledCode:
    code: CodeType
    filename: str
    source_lines: tuple[str, ...]


def _rebinds(tree: ast.AST, protected: frozenset[str]) -> list[str]:
    """Lines where model code would rebind a provided function (a tool, final_answer)."""
    found = []
    for node in ast.walk(tree):
        names: list[tuple[str, int]] = []
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.append((node.id, node.lineno))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append((node.name, node.lineno))
        elif isinstance(node, ast.alias):
            names.append(((node.asname or node.name).split(".")[0], getattr(node, "lineno", 0)))
        elif isinstance(node, ast.arg):
            names.append((node.arg, node.lineno))
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.append((node.name, node.lineno))
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            names.extend((n, node.lineno) for n in node.names)
        found.extend(
            f"Line {line}: '{name}' is a provided function; do not redefine or shadow it "
            "(call it, or pick another name)"
            for name, line in names if name in protected)
    return found


_PHYSICAL_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")


def physical_lines(source: str) -> list[str]:
    """The lines as the parser numbers them, each with its line break.

    ``str.splitlines`` also breaks at form feeds, \\x1c-\\x1e, \\x85 and \\u2028,
    which the parser does not: its line numbers would then point elsewhere.
    """
    return _PHYSICAL_LINE.findall(source)


def compile_model_code(source: str, filename: str, protected: frozenset[str] = frozenset()) -> CompiledCode:
    """Compile ``source`` under the restricted policy; raise ``RestrictedSyntaxError``.

    ``protected`` names (tools, ``final_answer``) may not be rebound: a model
    that pastes a tool's stub from its prompt would otherwise silently
    replace the real tool.
    """
    try:
        tree = ast.parse(source, filename, "exec")
        _trailing_return_to_final_answer(tree)
        errors: list[str] = _rebinds(tree, protected)
        warnings: list[str] = []
        ModelCodeTransformer(errors, warnings, {}).visit(tree)
    except SyntaxError as exc:
        raise RestrictedSyntaxError([_describe_syntax_error(exc)]) from None
    except (RecursionError, MemoryError, ValueError) as exc:
        # ``-`` * 3000, deeply nested brackets, a NUL byte: the parser or a visitor gives up
        raise RestrictedSyntaxError([f"the code could not be compiled ({type(exc).__name__}): simplify "
                                     "deeply nested expressions"]) from None
    if errors:
        raise RestrictedSyntaxError(errors)
    _capture_trailing_expression(tree)
    tree = _Instrumenter().visit(tree)
    ast.fix_missing_locations(tree)
    lines = tuple(line.rstrip("\r\n") for line in physical_lines(source))
    try:
        code = compile(tree, filename, "exec")
    except (RecursionError, MemoryError, ValueError) as exc:
        raise RestrictedSyntaxError([f"the code could not be compiled ({type(exc).__name__}): simplify "
                                     "deeply nested expressions"]) from None
    except SyntaxError as exc:
        # What the parser accepts but the compiler does not: ``return`` or ``yield`` outside a
        # function, ``break``/``continue`` outside a loop. The text is the model's own line.
        if exc.lineno and 0 < exc.lineno <= len(lines):
            exc.text = lines[exc.lineno - 1]
        raise RestrictedSyntaxError([_describe_syntax_error(exc)]) from None
    return CompiledCode(code, filename, lines)


def _describe_syntax_error(exc: SyntaxError) -> str:
    where = f"line {exc.lineno}" if exc.lineno else "unknown line"
    text = f": {exc.text.strip()}" if exc.text else ""
    hint = ""
    if exc.msg.startswith(("'return' outside function", "'yield' outside function")):
        hint = ". Code runs at the top level: to finish, call final_answer(value) instead of return"
    return f"{exc.msg} ({where}{text}){hint}"
