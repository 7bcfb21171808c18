"""Reading an old transform call and planning its new spelling (no rewriting here).

The rules, in one place. Before Flax NNX 0.9:

- ``vmap``/``pmap`` split every RNG stream reachable from their arguments (``split_rngs=...``
  by default, or the streams a filter chose) over the mapped axis and broadcast the other
  streams; ``state_axes={filter: axis}`` (default ``{...: 0}``) gave the axes of *every*
  module argument's other state, whatever ``in_axes`` said at that position (``in_axes``
  applied to plain arrays only), and state no filter matched was broadcast.
- ``scan`` carried the chosen streams' state from step to step (so each step drew new
  keys), kept the other streams fixed, scanned module state by ``state_axes`` and carried
  what no filter matched.

The new spelling says all of that explicitly: ``split_rngs(splits=N, only=...)`` above a
``vmap``, and at each module argument's position in ``in_axes`` either ``0`` (when that is
what the old defaults meant) or a ``StateAxes`` that lists RNG state first, then the old
filters, then the rest. Whenever a fact the rewrite needs is not in the source text (the
axis size, which arguments are modules, what a variable holds), planning raises
:class:`~plait.migrate.report.Refuse` and the site is left as it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import libcst as cst

from .report import Refuse

__all__ = ["Facts", "Function", "Plan", "plan", "function_of", "dotted", "code", "SPLITTING", "DECORATOR_FORM", "REMOVED"]

# Transforms that moved RNG streams implicitly before 0.9 (split or carried), and their size keyword.
SPLITTING = {"vmap": "axis_size", "pmap": "axis_size", "scan": "length"}
# Transforms whose plait version is a keyword-only decorator (``@nnx.jit(static_argnums=0)``).
DECORATOR_FORM = {"jit", "grad", "value_and_grad", "remat", "checkpoint", "shard_map", "custom_vjp", *SPLITTING}
REMOVED = ("split_rngs", "state_axes")
# Annotations that say an argument holds no module (so no RNG stream and no state to place).
_DATA_NAMES = {"int", "float", "bool", "complex", "Array", "ndarray", "ArrayLike"}
# ``nnx.X`` annotations that are not graph nodes (every other capitalised ``nnx.X`` is a module or Rngs).
_NOT_GRAPH = {"State", "GraphDef", "Variable", "VariableState", "Param", "BatchStat", "Cache", "Intermediate",
              "RngState", "RngKey", "RngCount", "OptState", "Carry", "StateAxes", "SameKeys"}

GRAPH, DATA, UNKNOWN = "module", "array", "unknown"


def dotted(node: Any) -> str | None:
    """``a.b.c`` for a Name/Attribute chain, else None."""
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        head = dotted(node.value)
        return f"{head}.{node.attr.value}" if head else None
    return None


def code(node: Any) -> str:
    """The source text of an expression node."""
    return cst.Module(body=[]).code_for_node(node).strip()


# -- what the file tells us ---------------------------------------------------------------------


class Facts:
    """Names bound in the file: the nnx aliases, ``partial``, module classes, function defs."""

    def __init__(self) -> None:
        self.aliases: set[str] = set()
        self.partials: set[str] = {"partial", "functools.partial"}
        self.module_classes: set[str] = set()
        self.defs: dict[str, list[Any]] = {}  # functions (not methods) by name
        self.rebound: set[str] = set()  # names also bound by an import or an assignment

    @classmethod
    def collect(cls, module: Any) -> Facts:
        facts = cls()
        class_bases: dict[str, list[str | None]] = {}

        class Collector(cst.CSTVisitor):
            def __init__(self) -> None:
                super().__init__()
                self.scopes: list[bool] = []  # per enclosing def/class: is it a class

            def visit_AssignTarget(self, node: Any) -> None:
                if isinstance(node.target, cst.Name):
                    facts.rebound.add(node.target.value)

            def visit_Param(self, node: Any) -> None:
                facts.rebound.add(node.name.value)  # a parameter shadows a def of the same name

            def visit_ImportAlias(self, node: Any) -> None:
                bound = node.asname.name if node.asname else node.name
                if isinstance(bound, cst.Name):
                    facts.rebound.add(bound.value)

            def visit_ImportFrom(self, node: Any) -> None:
                mod = dotted(node.module) if node.module is not None else ""
                if isinstance(node.names, cst.ImportStar):
                    return
                for alias in node.names:
                    name = dotted(alias.name)
                    bound = alias.asname.name.value if alias.asname else name
                    if name == "nnx" and mod in ("flax", "flax.experimental"):
                        facts.aliases.add(bound)
                    if mod == "functools" and name == "partial":
                        facts.partials.add(bound)

            def visit_Import(self, node: Any) -> None:
                for alias in node.names:
                    name = dotted(alias.name)
                    bound = alias.asname.name.value if alias.asname else None
                    if name in ("plait", "flax.nnx", "flax.experimental.nnx"):
                        facts.aliases.add(bound or name)
                    if name == "functools":
                        facts.partials.add(f"{bound or 'functools'}.partial")

            def visit_ClassDef(self, node: Any) -> None:
                class_bases[node.name.value] = [dotted(b.value) for b in node.bases]
                self.scopes.append(True)

            def leave_ClassDef(self, node: Any) -> None:
                self.scopes.pop()

            def visit_FunctionDef(self, node: Any) -> None:
                if not (self.scopes and self.scopes[-1]):  # a method is not what a bare name refers to
                    facts.defs.setdefault(node.name.value, []).append(node)
                self.scopes.append(False)

            def leave_FunctionDef(self, node: Any) -> None:
                self.scopes.pop()

        module.visit(Collector())
        if not facts.aliases:
            facts.aliases.add("nnx")
        changed = True
        while changed:  # a subclass of a module class is a module class
            changed = False
            for name, bases in class_bases.items():
                if name not in facts.module_classes and any(facts.is_graph_type(b) for b in bases):
                    facts.module_classes.add(name)
                    changed = True
        return facts

    def is_graph_type(self, name: str | None) -> bool:
        if not name:
            return False
        head, _, last = name.rpartition(".")
        if head in self.aliases:
            return last[:1].isupper() and last not in _NOT_GRAPH
        return name in self.module_classes

    def transform_name(self, node: Any) -> str | None:
        """``nnx.vmap`` -> ``'vmap'`` when ``nnx`` is an nnx alias of this file."""
        name = dotted(node)
        if name is None:
            return None
        head, _, last = name.rpartition(".")
        return last if head in self.aliases else None


# -- the arguments of the function a transform is applied to -------------------------------------


@dataclass
class Param:
    name: str
    kind: str  # GRAPH, DATA or UNKNOWN


@dataclass
class Function:
    params: list[Param]
    variadic: str | None  # the name of a *args / keyword-only / **kwargs parameter, if any
    returns: str = UNKNOWN  # the kind of its return annotation


def function_of(node: Any, facts: Facts, method_of_module: bool = False) -> Function | None:
    """The positional parameters of a def or lambda (or of the one def a Name refers to)."""
    if isinstance(node, cst.Name):
        defs = facts.defs.get(node.value, [])
        if len(defs) != 1 or node.value in facts.rebound:
            return None  # which function the name means is not certain
        node = defs[0]
    if not isinstance(node, (cst.FunctionDef, cst.Lambda)):
        return None
    ps = node.params
    variadic = None
    for extra in (ps.star_arg, ps.star_kwarg, *ps.kwonly_params):
        if isinstance(extra, cst.Param):
            variadic = extra.name.value
    params = []
    for i, p in enumerate([*ps.posonly_params, *ps.params]):
        kind = _annotation_kind(p.annotation.annotation, facts) if p.annotation is not None else UNKNOWN
        if i == 0 and method_of_module and p.name.value == "self":
            kind = GRAPH
        params.append(Param(p.name.value, kind))
    returns = getattr(node, "returns", None)
    return Function(params, variadic, _annotation_kind(returns.annotation, facts) if returns is not None else UNKNOWN)


def _annotation_kind(node: Any, facts: Facts) -> str:
    if isinstance(node, cst.SimpleString):  # a string annotation: look inside
        try:
            node = cst.parse_expression(node.evaluated_value)
        except Exception:
            return UNKNOWN
    name = dotted(node)
    if name is None:
        return UNKNOWN
    if facts.is_graph_type(name):
        return GRAPH
    if name.rpartition(".")[2] in _DATA_NAMES:
        return DATA
    return UNKNOWN


# -- the old keywords, read ---------------------------------------------------------------------


def _is_pure(node: Any) -> bool:
    """An expression that can be written twice with the same value (literals, names, arithmetic)."""
    if isinstance(node, (cst.Integer, cst.Name)):
        return True
    if isinstance(node, cst.Attribute):
        return dotted(node) is not None
    if isinstance(node, cst.BinaryOperation):
        return _is_pure(node.left) and _is_pure(node.right)
    if isinstance(node, cst.UnaryOperation):
        return _is_pure(node.expression)
    return False


def literal(node: Any) -> str | None:
    """``'0'``, ``'-1'``, ``'None'``, ``'True'``, ``'False'``, ``'...'`` for those literals, else None."""
    if isinstance(node, cst.Integer):
        return node.value
    if isinstance(node, cst.Name) and node.value in ("None", "True", "False"):
        return node.value
    if isinstance(node, cst.Ellipsis):
        return "..."
    if isinstance(node, cst.UnaryOperation) and isinstance(node.operator, cst.Minus) and isinstance(node.expression, cst.Integer):
        return "-" + node.expression.value
    return None


@dataclass
class _Splits:
    mode: str  # "all", "none" or "filter"
    only: str | None = None


def _read_split_rngs(arg: Any, t: str, a: str) -> _Splits:
    if arg is None:
        return _Splits("all")
    value = arg.value
    lit = literal(value)
    if lit in ("...", "True"):
        return _Splits("all")
    if lit in ("None", "False"):
        return _Splits("none")
    if isinstance(value, cst.SimpleString) or (
        isinstance(value, cst.Tuple) and value.elements
        and all(isinstance(e.value, cst.SimpleString) for e in value.elements)
    ):
        return _Splits("filter", code(value))
    if dotted(value) == f"{a}.RngState":
        return _Splits("all")
    if isinstance(value, cst.Dict):  # {"params": True, "dropout": False}
        names = []
        for el in value.elements:
            flag = literal(el.value) if isinstance(el, cst.DictElement) else None
            if not isinstance(el, cst.DictElement) or not isinstance(el.key, cst.SimpleString) or flag not in ("True", "False"):
                raise Refuse(
                    f"{t}(split_rngs={code(value)}): a dict needs string keys and True/False values",
                    f"@{a}.split_rngs(splits=N, only=<the streams to split>) above @{a}.{t}(...)",
                )
            if flag == "True":
                names.append(code(el.key))
        if not names:
            return _Splits("none")
        return _Splits("filter", names[0] if len(names) == 1 else "(" + ", ".join(names) + ")")
    raise Refuse(
        f"{t}(split_rngs={code(value)}): the streams to split are given by an expression plait.migrate cannot see",
        f"@{a}.split_rngs(splits=N, only={code(value)}) above @{a}.{t}(...); at each module argument's "
        f"in_axes position {a}.StateAxes({{{code(value)}: 0, {a}.RngState: None, ...: 0}})",
    )


def _read_state_axes(arg: Any, t: str, a: str) -> list[tuple[str, str]] | None:
    if arg is None:
        return None
    value = arg.value
    hint = f"in_axes with {a}.StateAxes({{{a}.RngState: 0, <filter>: <axis>, ..., ...: None}}) at each module argument's position"
    if not isinstance(value, cst.Dict):
        raise Refuse(f"{t}(state_axes={code(value)}): the state axes are given by an expression plait.migrate cannot see", hint)
    entries = []
    for el in value.elements:
        axis = literal(el.value) if isinstance(el, cst.DictElement) else None
        if axis is None or axis in ("True", "False", "..."):
            raise Refuse(f"{t}(state_axes={code(value)}): each axis must be an int or None literal", hint)
        entries.append((code(el.key), axis))
    return entries


def _state_spec(splits: _Splits, state_axes: list[tuple[str, str]] | None, a: str, scan: bool = False) -> str:
    """What a module argument gets in the new in_axes: ``'0'`` or a StateAxes expression.

    vmap/pmap split the chosen streams over the axis (after ``split_rngs`` they sit on axis 0)
    and broadcast state no filter matched; scan carried the chosen streams' state from step
    to step and carried the unmatched state too.
    """
    if not scan and splits.mode == "all" and (state_axes is None or state_axes == [("...", "0")]):
        return "0"
    moved = f"{a}.Carry" if scan else "0"
    if splits.mode == "all":
        entries = [(f"{a}.RngState", moved)]
    elif splits.mode == "none":
        entries = [(f"{a}.RngState", "None")]
    else:
        entries = [(splits.only or "", moved), (f"{a}.RngState", "None")]
    entries += state_axes if state_axes is not None else [("...", "0")]
    if all(f != "..." for f, _ in entries):
        entries.append(("...", f"{a}.Carry" if scan else "None"))
    inner = ", ".join(f"{f}: {x}" for f, x in entries)
    return f"{a}.StateAxes({{{inner}}})"


def _check_new_state(t: str, kw: dict[str, Any], state_axes: list[tuple[str, str]] | None,
                     fn: Function | None, a: str) -> None:
    """The old state_axes (not out_axes) gave the axes of state created inside; the new form uses out_axes."""
    all_zero = state_axes is None or (all(x == "0" for _, x in state_axes) and any(f == "..." for f, _ in state_axes))
    out = kw.get("out_axes")
    out_zero = out is None or literal(out.value) == "0" or t == "scan"  # scan's out_axes: refused unless 0
    if (all_zero and out_zero) or (fn is not None and fn.returns == DATA):
        return
    what = "state_axes=..." if not all_zero else f"out_axes={code(out.value)}"
    raise Refuse(
        f"{t}({what}): the old {t} gave state created inside the function the axes of state_axes, the new one "
        "gives it out_axes. If the function returns arrays only, annotate it (`-> jax.Array`) and run again",
        f"the same in_axes with {a}.StateAxes at each module argument, and out_axes with a {a}.StateAxes "
        "for a module the function returns",
    )


# -- one transform site -------------------------------------------------------------------------


@dataclass
class Plan:
    """The new spelling of one transform: keyword edits and the split_rngs decorator, if any."""

    drop: set[str]
    set_kw: dict[str, str]
    split: str | None  # e.g. "nnx.split_rngs(splits=3)"


def plan(t: str, kw: dict[str, Any], fn: Function | None, a: str, implicit: bool) -> Plan | None:
    """How to spell transform ``t`` (nnx alias ``a``) without the old keywords; None: nothing to do.

    ``kw`` maps keyword names to libcst ``Arg`` nodes. ``implicit``: the site is old-style
    (a ``partial`` decorator) even without the removed keywords, so the old default applies:
    every stream reachable from the arguments moves (split by vmap/pmap, carried by scan).
    """
    old = [k for k in REMOVED if k in kw]
    if t not in SPLITTING:
        if old:
            raise Refuse(f"{t}() took {old[0]}= in Flax NNX 0.8; there is no rule to rewrite it",
                         f"@{a}.split_rngs(splits=N) above @{a}.{t}(...), and {a}.StateAxes in its axes")
        return None
    if not old and not implicit:
        return None
    if "in_axes_kwargs" in kw:
        raise Refuse(f"{t}(in_axes_kwargs=...): axes of keyword arguments are not converted",
                     "pass those arguments positionally and give their axes in in_axes")
    splits = _read_split_rngs(kw.get("split_rngs"), t, a)
    state_axes = _read_state_axes(kw.get("state_axes"), t, a)
    _check_new_state(t, kw, state_axes, fn, a)
    if t == "scan":
        return _plan_scan(kw, fn, a, _state_spec(splits, state_axes, a, scan=True))
    spec = _state_spec(splits, state_axes, a)
    set_kw: dict[str, str] = {}
    in_arg = kw.get("in_axes")
    entries: str | list[str]
    if in_arg is None:
        entries = "0"
    elif literal(in_arg.value) is not None:
        entries = literal(in_arg.value) or "0"
    elif isinstance(in_arg.value, (cst.Tuple, cst.List)):
        entries = [code(e.value) for e in in_arg.value.elements]
    else:
        entries = "<unseen>"
    uniform_zero = entries == "0" or (isinstance(entries, list) and all(e == "0" for e in entries))
    if spec == "0" and uniform_zero:
        # in_axes=0 gives a module's state axis 0, as state_axes={...: 0} did: nothing to place
        maybe_graph = fn is None or fn.variadic is not None or any(p.kind != DATA for p in fn.params)
    else:
        new = _place(t, fn, entries, spec, a)
        maybe_graph = any(p.kind != DATA for p in fn.params) if fn else True
        if not (in_arg is None and all(e == "0" for e in new)):
            set_kw["in_axes"] = new[0] if isinstance(entries, str) and len(set(new)) == 1 else _tuple(new)
    split = None
    if splits.mode != "none" and maybe_graph:
        split = _split_call(t, kw, SPLITTING[t], splits, a,
                            f"a module argument takes {spec} in in_axes")
    return Plan({k for k in REMOVED if k in kw}, set_kw, split)


def _split_call(t: str, kw: dict[str, Any], size_kw: str, splits: _Splits, a: str, note: str) -> str:
    size = kw.get(size_kw)
    if size is None or not _is_pure(size.value):
        what = "is only known at run time" if size is None else f"({code(size.value)}) cannot be repeated safely"
        raise Refuse(
            f"{t}() split RNG streams over the mapped axis, whose size {what}",
            f"@{a}.split_rngs(splits=<size>{_only(splits)}) above @{a}.{t}({size_kw}=<size>, ...); {note}. "
            f"If no RNG stream reaches the function, no split_rngs",
        )
    return f"{a}.split_rngs(splits={code(size.value)}{_only(splits)})"


def _only(splits: _Splits) -> str:
    return f", only={splits.only}" if splits.mode == "filter" else ""


def _tuple(items: list[str]) -> str:
    return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"


def _place(t: str, fn: Function | None, entries: str | list[str], spec: str, a: str) -> list[str]:
    """The new in_axes entry per argument: ``spec`` for modules, the old entry for arrays."""
    hint = f"@{a}.{t}(in_axes=...) with {spec} at each module argument's position and the old entry elsewhere"
    if fn is None:
        raise Refuse(f"{t}(): the function's arguments are not visible here (an expression, a name bound more than once, "
                     "or another decorator below), so which are modules is unknown", hint)
    if fn.variadic is not None:
        raise Refuse(f"{t}(): the function takes *args, keyword-only or **kwargs arguments ({fn.variadic})", hint)
    if entries == "<unseen>" or (isinstance(entries, list) and len(entries) != len(fn.params)):
        raise Refuse(f"{t}(): in_axes does not give one entry per argument of the function", hint)
    new = []
    for i, p in enumerate(fn.params):
        old = entries if isinstance(entries, str) else entries[i]
        if p.kind == GRAPH:
            new.append(spec)
        elif p.kind == DATA or (spec == "0" and old == "0"):
            new.append(old)
        else:
            raise Refuse(
                f"{t}(): cannot tell whether argument `{p.name}` is a module (annotate it, e.g. "
                f"`{p.name}: {a}.Module` or `{p.name}: jax.Array`, and run again)", hint)
    return new


def _plan_scan(kw: dict[str, Any], fn: Function | None, a: str, spec: str) -> Plan:
    """Old scan: ``f(carry, *xs)``; modules' RNG state was carried, other state scanned by state_axes."""
    hint = f"@{a}.scan(in_axes=({a}.Carry, <{spec} for a module, 0 for an array>, ...), out_axes=({a}.Carry, 0))"
    for name in ("carry_argnum", "in_axes", "out_axes"):
        if name in kw and literal(kw[name].value) != "0":
            raise Refuse(f"scan({name}={code(kw[name].value)}): only the 0.8 default (0) is converted", hint)
    if "_split_transpose" in kw:
        raise Refuse("scan(_split_transpose=...) is not converted", hint)
    out = f"({a}.Carry, 0)"
    if "scan_output" in kw:
        flag = literal(kw["scan_output"].value)
        if flag not in ("True", "False"):
            raise Refuse("scan(scan_output=...) must be True or False to be converted", hint)
        out = out if flag == "True" else f"{a}.Carry"
    if fn is None:
        raise Refuse("scan(): the function's arguments are not visible here (an expression, a name bound more than "
                     "once, or another decorator below), so which are modules is unknown", hint)
    if fn.variadic is not None or not fn.params:
        raise Refuse(f"scan(): the function takes *args, keyword-only or **kwargs arguments ({fn.variadic})", hint)
    if fn.params[0].kind == GRAPH:
        raise Refuse(f"scan(): the carry `{fn.params[0].name}` is a module, whose state the old scan scanned "
                     "by state_axes; the new Carry carries it whole", hint)
    entries = [f"{a}.Carry"]
    for p in fn.params[1:]:
        if p.kind == UNKNOWN:
            raise Refuse(
                f"scan(): cannot tell whether argument `{p.name}` is a module (annotate it, e.g. "
                f"`{p.name}: {a}.Module` or `{p.name}: jax.Array`, and run again)", hint)
        entries.append(spec if p.kind == GRAPH else "0")
    set_kw = {}
    if entries != [f"{a}.Carry", "0"]:
        set_kw["in_axes"] = _tuple(entries)
    if out != f"({a}.Carry, 0)":
        set_kw["out_axes"] = out
    drop = {k for k in (*REMOVED, "carry_argnum", "in_axes", "out_axes", "scan_output") if k in kw}
    return Plan(drop, set_kw, None)  # the old scan carried RNG state; it never split it
