"""RestrictedPython's transformer, with augmented assignment to items and attributes.

RestrictedPython refuses ``counts[key] += 1`` and ``self.total += x``: the
most common counting idiom in Python fails to compile, and models (small
ones especially) keep writing it. We compile it into the same guarded calls
RestrictedPython uses for a plain read and write, so it stays exactly as safe
as ``counts[key] = counts[key] + 1`` while keeping Python's semantics: the
container and key are evaluated once, and the update is in place
(``__iadd__``) as in ordinary Python::

    counts[key] += 1   ->   _tmp0 = counts
                            _tmp1 = key
                            _write_(_tmp0)[_tmp1] = _inplacevar_("+=", _getitem_(_tmp0, _tmp1), 1)

    obj.total += x     ->   _tmp0 = obj
                            _write_(_tmp0).total = _inplacevar_("+=", _getattr_(_tmp0, "total"), x)

The ``_tmp`` names cannot be named by model code (names starting with "_"
are refused). Slice targets (``xs[1:3] += ys``) stay refused: they are
rare, and the message tells the model how to write them out.
"""

from __future__ import annotations

import ast

from RestrictedPython.transformer import IOPERATOR_TO_STR, RestrictingNodeTransformer, copy_locations


def _call(name: str, *args: ast.expr) -> ast.Call:
    return ast.Call(func=ast.Name(name, ast.Load()), args=list(args), keywords=[])


def _has_slice(node: ast.expr) -> bool:
    return isinstance(node, ast.Slice) or (
        isinstance(node, ast.Tuple) and any(isinstance(e, ast.Slice) for e in node.elts))


class ModelCodeTransformer(RestrictingNodeTransformer):
    """The policy model code is compiled under."""

    def visit_AugAssign(self, node: ast.AugAssign) -> ast.AST | list[ast.stmt]:
        target = node.target
        if isinstance(target, ast.Name):
            return super().visit_AugAssign(node)
        if isinstance(target, ast.Subscript) and _has_slice(target.slice):
            self.error(node, "Augmented assignment to a slice is not supported; "
                             "write it out: xs[a:b] = xs[a:b] + ys.")
            return node
        if not isinstance(target, (ast.Subscript, ast.Attribute)):  # pragma: no cover - the grammar has no other
            return super().visit_AugAssign(node)
        # Visiting the target as a store applies RestrictedPython's checks (attribute
        # names) and gives ``_write_(obj)[key]`` / ``_write_(obj).attr``.
        store = self.visit(target)
        write_call = store.value
        obj_name = self.gen_tmp_name()
        statements: list[ast.stmt] = [ast.Assign([ast.Name(obj_name, ast.Store())], write_call.args[0])]
        write_call.args[0] = ast.Name(obj_name, ast.Load())
        if isinstance(store, ast.Subscript):
            key_name = self.gen_tmp_name()
            statements.append(ast.Assign([ast.Name(key_name, ast.Store())], store.slice))
            store.slice = ast.Name(key_name, ast.Load())
            current = _call("_getitem_", ast.Name(obj_name, ast.Load()), ast.Name(key_name, ast.Load()))
        else:
            current = _call("_getattr_", ast.Name(obj_name, ast.Load()), ast.Constant(store.attr))
        value = self.visit(node.value)
        operator = ast.Constant(IOPERATOR_TO_STR[type(node.op)])
        statements.append(ast.Assign([store], _call("_inplacevar_", operator, current, value)))
        for statement in statements:
            copy_locations(statement, node)
        return statements
