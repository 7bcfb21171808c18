"""The libcst transformers: find transform sites, apply a :class:`~plait.migrate.plan.Plan`, or mark.

A site is a decorator (``@partial(nnx.vmap, ...)``, ``@nnx.vmap(..., split_rngs=...)``) or a
call (``nnx.vmap(f, ..., split_rngs=...)``, ``partial(nnx.vmap, ...)(f)``). A converted
decorator becomes ``@nnx.split_rngs(...)`` above ``@nnx.vmap(...)``; a converted call becomes
``nnx.split_rngs(...)(nnx.vmap(f, ...))``, the same thing written as an expression. A
refused site is left as it was, with a ``# plait.migrate:`` comment above its statement.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import libcst as cst
from libcst.metadata import ParentNodeProvider, PositionProvider

from .plan import DECORATOR_FORM, REMOVED, Facts, Plan, code, dotted, function_of, plan
from .report import MARKER, Diagnostic, Refuse

__all__ = ["Migrator", "ImportRewriter", "drop_unused_partial"]

_LIFTED = {"Vmap": "vmap", "Scan": "scan", "Pmap": "pmap", "Jit": "jit", "Grad": "grad", "Remat": "remat"}
_STATEMENTS = ("SimpleStatementLine", "If", "For", "While", "With", "Try", "FunctionDef", "ClassDef")


class Migrator(cst.CSTTransformer):
    """Rewrites every transform site it can; records a :class:`Diagnostic` for each it cannot."""

    METADATA_DEPENDENCIES = (PositionProvider, ParentNodeProvider)

    def __init__(self, facts: Facts, path: str, source: str) -> None:
        super().__init__()
        self.facts, self.path = facts, path
        # comments of an earlier run: a second run reports the site again but adds no second comment
        self._present = {line.strip() for line in source.splitlines() if line.strip().startswith(MARKER)}
        self.diagnostics: list[Diagnostic] = []
        self.changed_partial = False
        self._comments: list[list[str]] = []  # per open statement: comments to put above it
        self._decorator_exprs: set[int] = set()

    # -- statements collect the comments of refused calls inside them -------------------------
    def on_visit(self, node: cst.CSTNode) -> bool:
        if type(node).__name__ in _STATEMENTS:
            self._comments.append([])
        if isinstance(node, cst.Decorator):
            self._decorator_exprs.add(id(node.decorator))
        return super().on_visit(node)

    def on_leave(self, original_node: cst.CSTNode, updated_node: Any) -> Any:
        result = super().on_leave(original_node, updated_node)
        if type(original_node).__name__ in _STATEMENTS:
            comments = self._comments.pop()
            if comments and isinstance(result, cst.CSTNode):
                result = result.with_changes(leading_lines=_with_comments(result.leading_lines, comments))
        return result

    def _refuse(self, node: cst.CSTNode, why: Refuse) -> Diagnostic:
        line = self.get_metadata(PositionProvider, node).start.line
        d = Diagnostic(self.path, line, why.reason, why.suggestion)
        self.diagnostics.append(d)
        return d

    # -- decorators ----------------------------------------------------------------------------
    def leave_FunctionDef(self, original_node: cst.FunctionDef, updated_node: cst.FunctionDef) -> cst.FunctionDef:
        fn = function_of(original_node, self.facts, self._in_module_class(original_node))
        decorators: list[cst.Decorator] = []
        pairs = list(zip(original_node.decorators, updated_node.decorators))
        for i, (orig, dec) in enumerate(pairs):
            # another decorator below may change the signature the transform sees
            below = [dotted(d.decorator.func if isinstance(d.decorator, cst.Call) else d.decorator) for d, _ in pairs[i + 1:]]
            seen = fn if all(b and b.rpartition(".")[0] in self.facts.aliases for b in below) else None
            decorators += self._decorator(orig, dec, seen)
        return updated_node.with_changes(decorators=decorators)

    def _in_module_class(self, node: cst.CSTNode) -> bool:
        block = self.get_metadata(ParentNodeProvider, node, None)
        owner = self.get_metadata(ParentNodeProvider, block, None) if block is not None else None
        return isinstance(owner, cst.ClassDef) and owner.name.value in self.facts.module_classes

    def _decorator(self, orig: cst.Decorator, dec: cst.Decorator, fn: Any) -> list[cst.Decorator]:
        site = self._site(dec.decorator)
        if site is None:
            return [dec]
        t, attr, kwargs, positional, via_partial, ws = site
        if not via_partial and not any(a.keyword.value in REMOVED for a in kwargs):
            return [dec]  # new-style already
        try:
            if positional:
                raise Refuse(f"{'partial(' if via_partial else ''}{code(attr)}{', ...)' if via_partial else '(...)'} "
                             "with positional arguments is not converted", f"@{code(attr)}(<keyword arguments>)")
            p = plan(t, _by_name(kwargs), fn, self._alias(attr), implicit=via_partial)
        except Refuse as why:
            d = self._refuse(orig, why)
            if d.comment in self._present:
                return [dec]
            return [dec.with_changes(leading_lines=_with_comments(dec.leading_lines, [d.comment]))]
        if p is None and not via_partial:
            return [dec]
        self.changed_partial |= via_partial
        new = _transform_expr(attr, _edit(kwargs, p), ws)
        if p is None or p.split is None:
            return [dec.with_changes(decorator=new)]
        split = cst.Decorator(decorator=cst.parse_expression(p.split), leading_lines=dec.leading_lines)
        return [split, dec.with_changes(decorator=new, leading_lines=[])]

    def _site(self, expr: cst.BaseExpression) -> tuple | None:
        """``(name, transform attr, keyword args, positional args, via partial, whitespace)`` or None."""
        if not isinstance(expr, cst.Call):
            return None
        if dotted(expr.func) in self.facts.partials and expr.args and expr.args[0].keyword is None:
            t = self.facts.transform_name(expr.args[0].value)
            if t in DECORATOR_FORM and not any(a.star for a in expr.args):
                rest = list(expr.args[1:])
                kwargs = [a for a in rest if a.keyword is not None]
                positional = [a for a in rest if a.keyword is None]
                return t, expr.args[0].value, kwargs, positional, True, expr.whitespace_before_args
            return None
        t = self.facts.transform_name(expr.func)
        if t is None or any(a.star for a in expr.args):
            return None
        if t not in DECORATOR_FORM and not any(a.keyword is not None and a.keyword.value in REMOVED for a in expr.args):
            return None  # nnx.Linear(...), nnx.split_rngs(...): not a transform with old keywords
        kwargs = [a for a in expr.args if a.keyword is not None]
        positional = [a for a in expr.args if a.keyword is None]
        return t, expr.func, kwargs, positional, False, expr.whitespace_before_args

    # -- calls ---------------------------------------------------------------------------------
    def leave_Call(self, original_node: cst.Call, updated_node: cst.Call) -> cst.BaseExpression:
        if id(original_node) in self._decorator_exprs:
            return updated_node  # a decorator: leave_FunctionDef handles it
        parent = self.get_metadata(ParentNodeProvider, original_node, None)
        if isinstance(parent, cst.Call) and parent.func is original_node:
            own = self._site(original_node)
            if own is not None and own[4]:
                return updated_node  # partial(nnx.vmap, ...)(f): the outer call handles it
        if isinstance(updated_node.func, cst.Call):
            inner = self._site(updated_node.func)
            if inner is not None and inner[4]:  # partial(nnx.T, **kw)(f, ...)
                return self._partial_call(original_node, updated_node, inner)
        lifted = self._lifted_module(updated_node)
        if lifted is not None:
            return self._mark(original_node, updated_node, lifted)
        site = self._site(updated_node)
        if site is None:
            return updated_node
        t, attr, kwargs, positional, via_partial, ws = site
        if via_partial:  # partial(nnx.T, ...) as a value, not applied here
            return self._partial_value(original_node, updated_node, site)
        if not any(a.keyword is not None and a.keyword.value in REMOVED for a in kwargs):
            return updated_node
        fn_node = positional[0].value if positional else None
        return self._convert_call(original_node, updated_node, t, attr, kwargs, positional, fn_node, ws, False)

    def _partial_call(self, original: cst.Call, updated: cst.Call, inner: tuple) -> cst.BaseExpression:
        t, attr, kwargs, positional, _, ws = inner
        outer_pos = [a for a in updated.args if a.keyword is None and not a.star]
        if positional or len(outer_pos) != 1 or len(updated.args) != 1:
            return self._mark(original, updated, Refuse(
                f"partial({code(attr)}, ...)(...) with other positional arguments is not converted",
                f"{code(attr)}(f, <keyword arguments>)"))
        args = [outer_pos[0].with_changes(comma=cst.MaybeSentinel.DEFAULT), *kwargs]
        return self._convert_call(original, updated, t, attr, kwargs, args, outer_pos[0].value, ws, True)

    def _convert_call(self, original: cst.Call, updated: cst.Call, t: str, attr: Any, kwargs: list,
                      positional: list, fn_node: Any, ws: Any, via_partial: bool) -> cst.BaseExpression:
        a = self._alias(attr)
        try:
            if sum(1 for x in positional if x.keyword is None) > 1:
                raise Refuse(f"{t}() is called with positional arguments after the function",
                             f"{a}.{t}(f, <keyword arguments>)")
            if fn_node is None:
                raise Refuse(f"{t}() is called with the old keywords but without the function, so there is no "
                             "place for a split_rngs decorator and no arguments to put StateAxes at",
                             f"@{a}.split_rngs(splits=N) above @{a}.{t}(...) where it decorates the function")
            p = plan(t, _by_name(kwargs), function_of(fn_node, self.facts), a, implicit=via_partial)
        except Refuse as why:
            return self._mark(original, updated, why)
        if p is None and not via_partial:
            return updated
        self.changed_partial |= via_partial
        kept = positional[:1] if via_partial else positional
        args = _edit([*kept, *kwargs], p)
        new: cst.BaseExpression = cst.Call(func=attr, args=args, whitespace_before_args=ws)
        if p is not None and p.split is not None:
            new = cst.Call(func=cst.parse_expression(p.split), args=[cst.Arg(new)])
        return new

    def _partial_value(self, original: cst.Call, updated: cst.Call, site: tuple) -> cst.BaseExpression:
        t, attr, kwargs, positional, _, ws = site
        try:
            if positional:
                raise Refuse(f"partial({code(attr)}, ...) with positional arguments is not converted",
                             f"{code(attr)}(<keyword arguments>)")
            a = self._alias(attr)
            p = plan(t, _by_name(kwargs), None, a, implicit=True)
            if p is not None and p.split is not None:
                raise Refuse(f"partial({code(attr)}, ...) is not applied to a function here, so there is no "
                             "place for the split_rngs decorator it needs",
                             f"@{p.split} above @{code(attr)}(<keyword arguments>) where it decorates the function")
        except Refuse as why:
            return self._mark(original, updated, why)
        self.changed_partial = True
        return _transform_expr(attr, _edit(kwargs, p), ws)

    def _mark(self, original: cst.CSTNode, updated: cst.BaseExpression, why: Refuse) -> cst.BaseExpression:
        d = self._refuse(original, why)
        if self._comments and d.comment not in self._present:
            self._comments[-1].append(d.comment)
        return updated

    def _lifted_module(self, node: cst.Call) -> Refuse | None:
        """``nnx.Vmap(...)``, ``nnx.Scan.constructor(...)``: the 0.8 lifted module classes, removed."""
        name = dotted(node.func) or ""
        if name.endswith(".constructor"):
            name = name[: -len(".constructor")]
        head, _, last = name.rpartition(".")
        if head not in self.facts.aliases or last not in _LIFTED:
            return None
        return Refuse(f"{name} (a lifted module class) was removed in Flax NNX 0.9 and plait has none",
                      f"build a stack with @{head}.split_rngs(splits=N) above @{head}.vmap(axis_size=N) on "
                      f"`def create(rngs): return Block(rngs)`, then use @{head}.{_LIFTED[last]}(...) on a "
                      "function that takes the module")

    def _alias(self, attr: Any) -> str:
        name = dotted(attr) or "nnx.x"
        return name.rpartition(".")[0]


def _by_name(kwargs: Sequence[cst.Arg]) -> dict[str, cst.Arg]:
    return {a.keyword.value: a for a in kwargs if a.keyword is not None}


def _with_comments(lines: Sequence[cst.EmptyLine], comments: list[str]) -> list[cst.EmptyLine]:
    return [*lines, *(cst.EmptyLine(comment=cst.Comment(c)) for c in dict.fromkeys(comments))]


def _edit(args: Sequence[cst.Arg], p: Plan | None) -> list[cst.Arg]:
    """Drop and set keyword arguments as ``p`` says, keeping each argument's own formatting."""
    if not args and (p is None or not p.set_kw):
        return []
    trailing = args[-1].comma if args else cst.MaybeSentinel.DEFAULT
    out: list[cst.Arg] = []
    done: set[str] = set()
    for arg in args:
        name = arg.keyword.value if arg.keyword is not None else None
        if p is not None and name in p.drop and name not in p.set_kw:
            continue
        if p is not None and name in p.set_kw:
            arg = arg.with_changes(value=cst.parse_expression(p.set_kw[name]))
            done.add(name)
        out.append(arg)
    for name, value in (p.set_kw.items() if p is not None else ()):
        if name not in done:
            out.append(cst.Arg(keyword=cst.Name(name), value=cst.parse_expression(value),
                               equal=cst.AssignEqual(whitespace_before=cst.SimpleWhitespace(""),
                                                     whitespace_after=cst.SimpleWhitespace(""))))
    for i, arg in enumerate(out):
        if i < len(out) - 1 and not isinstance(arg.comma, cst.Comma):
            out[i] = arg.with_changes(comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" ")))
    if out:
        out[-1] = out[-1].with_changes(comma=trailing)
    return out


def _transform_expr(attr: Any, args: list[cst.Arg], ws: Any) -> cst.BaseExpression:
    if not args:
        return attr  # @partial(nnx.jit) -> @nnx.jit
    return cst.Call(func=attr, args=args, whitespace_before_args=ws)


# -- imports -------------------------------------------------------------------------------------


class ImportRewriter(cst.CSTTransformer):
    """``from flax import nnx`` -> ``import plait as nnx``; ``from flax.nnx import X`` -> ``from plait import X``."""

    def leave_SimpleStatementLine(self, original_node: cst.SimpleStatementLine,
                                  updated_node: cst.SimpleStatementLine) -> Any:
        if len(updated_node.body) != 1:
            return updated_node
        stmt = updated_node.body[0]
        if isinstance(stmt, cst.Import):
            names = list(stmt.names)
            for i, alias in enumerate(names):
                if dotted(alias.name) in ("flax.nnx", "flax.experimental.nnx") and alias.asname is not None:
                    names[i] = alias.with_changes(name=cst.Name("plait"))
            return updated_node.with_changes(body=[stmt.with_changes(names=names)])
        if not isinstance(stmt, cst.ImportFrom) or stmt.relative or isinstance(stmt.names, cst.ImportStar):
            return updated_node
        mod = dotted(stmt.module)
        if mod in ("flax.nnx", "flax.experimental.nnx"):
            return updated_node.with_changes(body=[stmt.with_changes(module=cst.Name("plait"))])
        if mod not in ("flax", "flax.experimental"):
            return updated_node
        nnx = [a for a in stmt.names if dotted(a.name) == "nnx"]
        if not nnx:
            return updated_node
        bound = nnx[0].asname.name.value if nnx[0].asname else "nnx"
        new_import = cst.Import(names=[cst.ImportAlias(cst.Name("plait"), asname=cst.AsName(name=cst.Name(bound)))])
        rest = [a for a in stmt.names if dotted(a.name) != "nnx"]
        if not rest:
            return updated_node.with_changes(body=[new_import])
        rest[-1] = rest[-1].with_changes(comma=cst.MaybeSentinel.DEFAULT)
        kept = updated_node.with_changes(body=[stmt.with_changes(names=rest)])
        return cst.FlattenSentinel([kept, cst.SimpleStatementLine(body=[new_import])])


def drop_unused_partial(module: cst.Module, facts: Facts) -> cst.Module:
    """Remove ``from functools import partial`` once no ``partial`` is left in the file."""
    bound = {p for p in facts.partials if "." not in p}

    class Uses(cst.CSTVisitor):
        found = False

        def visit_ImportFrom(self, node: cst.ImportFrom) -> bool:
            return False

        def visit_Name(self, node: cst.Name) -> None:
            if node.value in bound:
                Uses.found = True

    module.visit(Uses())
    if Uses.found:
        return module

    class Drop(cst.CSTTransformer):
        def leave_ImportFrom(self, original_node: cst.ImportFrom, updated_node: cst.ImportFrom) -> Any:
            if dotted(updated_node.module) != "functools" or isinstance(updated_node.names, cst.ImportStar):
                return updated_node
            names = [a for a in updated_node.names if not (dotted(a.name) == "partial" and
                                                           (a.asname.name.value if a.asname else "partial") in bound)]
            if len(names) == len(updated_node.names):
                return updated_node
            if not names:
                return cst.RemoveFromParent()
            names[-1] = names[-1].with_changes(comma=cst.MaybeSentinel.DEFAULT)
            return updated_node.with_changes(names=names)

        def leave_Module(self, original_node: cst.Module, updated_node: cst.Module) -> cst.Module:
            # the import was the file's first line: do not leave the blank line after it on top
            if original_node.body and updated_node.body and updated_node.body[0] is not original_node.body[0]:
                first = updated_node.body[0]
                lines = list(first.leading_lines)
                while lines and lines[0].comment is None:
                    lines.pop(0)
                return updated_node.with_changes(body=[first.with_changes(leading_lines=lines), *updated_node.body[1:]])
            return updated_node

    return module.visit(Drop())
