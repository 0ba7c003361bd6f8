"""RestrictedPython's transformer: augmented assignment to items and attributes, and guard fast paths.

RestrictedPython refuses ``counts[key] += 1`` and ``self.total += x``: the
most common counting idiom in Python fails to compile, and models (small
ones especially) keep writing it. We compile it into the same guarded calls
RestrictedPython uses for a plain read and write, so it stays exactly as safe
as ``counts[key] = counts[key] + 1`` while keeping Python's semantics: the
container and key are evaluated once, and the update is in place
(``__iadd__``) as in ordinary Python::

    counts[key] += 1   ->   _tmp0 = counts
                            _tmp2 = key
                            _tmp1 = _getitem_(_tmp0, _tmp2)
                            _tmp1 += 1
                            _write_(_tmp0)[_tmp2] = _tmp1

    obj.total += x     ->   _tmp0 = obj
                            _tmp1 = _getattr_(_tmp0, "total")
                            _tmp1 += x
                            _write_(_tmp0).total = _tmp1

The ``_tmp`` names cannot be named by model code (names starting with "_"
are refused). Slice targets (``xs[1:3] += ys``) stay refused: they are
rare, and the message tells the model how to write them out.

Guards are Python function calls, and in the loops data code is made of
they cost more than the work they guard. Where the receiver is a plain name,
the guard is skipped inline for the exact builtin types on which it would
do nothing but the plain operation (the same decision the guard takes, made
without a call)::

    counts.get      ->  (counts.get if _type_(counts) in _plain_readable_ else _getattr_(counts, "get"))
    counts[k] = v   ->  (counts if _type_(counts) in _plain_writable_ else _write_(counts))[k] = v

``format`` and ``format_map`` always go through the guard (``str.format``
walks attributes). ``x += y`` on a name compiles to itself: RestrictedPython's
``_inplacevar_`` hook would only apply the same operator, so the sandbox has none.
"""

from __future__ import annotations

import ast

from RestrictedPython.transformer import RestrictingNodeTransformer, copy_locations


TYPE_NAME = "_type_"
PLAIN_READABLE_NAME = "_plain_readable_"
PLAIN_WRITABLE_NAME = "_plain_writable_"
# Exact types whose public attributes are all safe to read (except format/format_map on str),
# and those model code may write items of; they must agree with the guards in policy.py.
PLAIN_READABLE_TYPES = frozenset({dict, list, set, frozenset, tuple, str, bytes, int, float, bool, complex})
PLAIN_WRITABLE_TYPES = frozenset({dict, list, set})
_ALWAYS_GUARDED_ATTRIBUTES = frozenset({"format", "format_map"})


def _call(name: str, *args: ast.expr) -> ast.Call:
    return ast.Call(func=ast.Name(name, ast.Load()), args=list(args), keywords=[])


def _is_plain(name: str, types_name: str) -> ast.Compare:
    """``_type_(name) in <types>``."""
    return ast.Compare(_call(TYPE_NAME, ast.Name(name, ast.Load())), [ast.In()],
                       [ast.Name(types_name, ast.Load())])


def _has_slice(node: ast.expr) -> bool:
    return isinstance(node, ast.Slice) or (
        isinstance(node, ast.Tuple) and any(isinstance(e, ast.Slice) for e in node.elts))


class ModelCodeTransformer(RestrictingNodeTransformer):
    """The policy model code is compiled under."""

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        guarded = super().visit_Attribute(node)
        receiver = node.value
        if (isinstance(node.ctx, ast.Load) and isinstance(guarded, ast.Call) and isinstance(receiver, ast.Name)
                and node.attr not in _ALWAYS_GUARDED_ATTRIBUTES):
            plain = ast.Attribute(ast.Name(receiver.id, ast.Load()), node.attr, ast.Load())
            fast = ast.IfExp(_is_plain(receiver.id, PLAIN_READABLE_NAME), plain, guarded)
            copy_locations(fast, node)
            return fast
        return guarded

    def visit_Subscript(self, node: ast.Subscript) -> ast.AST:
        guarded = super().visit_Subscript(node)
        write = getattr(guarded, "value", None)
        if (isinstance(guarded, ast.Subscript) and isinstance(write, ast.Call) and write.args
                and isinstance(write.args[0], ast.Name)):
            name = write.args[0].id
            guarded.value = ast.IfExp(_is_plain(name, PLAIN_WRITABLE_NAME), ast.Name(name, ast.Load()), write)
            copy_locations(guarded.value, node)
        return guarded

    def visit_AugAssign(self, node: ast.AugAssign) -> ast.AST | list[ast.stmt]:
        target = node.target
        if isinstance(target, ast.Name):
            # RestrictedPython routes this through ``_inplacevar_``; ours would only apply the operator.
            return self.node_contents_visit(node)
        if isinstance(target, ast.Subscript) and _has_slice(target.slice):
            self.error(node, "Augmented assignment to a slice is not supported; "
                             "write it out: xs[a:b] = xs[a:b] + ys.")
            return node
        if not isinstance(target, (ast.Subscript, ast.Attribute)):  # pragma: no cover - the grammar has no other
            return super().visit_AugAssign(node)
        # RestrictedPython's own visit of the target as a store applies its checks (attribute
        # names) and gives ``_write_(obj)[key]`` / ``_write_(obj).attr``.
        if isinstance(target, ast.Subscript):
            store = RestrictingNodeTransformer.visit_Subscript(self, target)
        else:
            store = RestrictingNodeTransformer.visit_Attribute(self, target)
        write_call = store.value
        obj_name, value_name = self.gen_tmp_name(), self.gen_tmp_name()
        statements: list[ast.stmt] = [ast.Assign([ast.Name(obj_name, ast.Store())], write_call.args[0])]
        write_call.args[0] = ast.Name(obj_name, ast.Load())
        if isinstance(store, ast.Subscript):
            key_name = self.gen_tmp_name()
            statements.append(ast.Assign([ast.Name(key_name, ast.Store())], store.slice))
            store.slice = ast.Name(key_name, ast.Load())
            current = _call("_getitem_", ast.Name(obj_name, ast.Load()), ast.Name(key_name, ast.Load()))
            store.value = ast.IfExp(_is_plain(obj_name, PLAIN_WRITABLE_NAME), ast.Name(obj_name, ast.Load()),
                                    write_call)
        else:
            current = _call("_getattr_", ast.Name(obj_name, ast.Load()), ast.Constant(store.attr))
        statements += [
            ast.Assign([ast.Name(value_name, ast.Store())], current),
            # the operator itself as Python applies it: __iadd__ in place where the type has it
            ast.AugAssign(ast.Name(value_name, ast.Store()), node.op, self.visit(node.value)),
            ast.Assign([store], ast.Name(value_name, ast.Load())),
        ]
        for statement in statements:
            copy_locations(statement, node)
        return statements
