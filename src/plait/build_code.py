"""Straight-line Python for building a GraphDef's objects anew (``merge``'s hot path).

:func:`plait.encoding.unflatten` without ``reuse`` follows a build plan: loops over the
Variables to create, the objects to create and the attributes to fill. Once one GraphDef
has been built a few times, the same steps are written out as one generated function with
no loops, no branches and no lookups of the plan: every object is a local variable, every
attribute store a line. It makes the same objects, in the same order, as the plan does.

Generating costs about a millisecond per hundred objects, so it is done only for GraphDefs
that are built again and again (``merge`` in a loop, eager transforms), never on the first
builds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .object import TOP_TRACE, Dict, List, Object

__all__ = ["compile_builder"]

# An Object's bookkeeping slots, set without its __setattr__ (which tracks user attributes).
_SET_SEEN = Object.__dict__["_plait_seen"].__set__
_SET_TRACE = Object.__dict__["_plait_trace"].__set__


class _Code:
    """Names for the constants a generated function refers to, and its lines."""

    def __init__(self) -> None:
        self.env: dict[str, Any] = {"new": object.__new__, "List": List, "Dict": Dict,
                                    "set_seen": _SET_SEEN, "set_trace": _SET_TRACE,
                                    "TOP": TOP_TRACE}
        self.lines: list[str] = []
        self._names: dict[int, str] = {}

    def const(self, value: Any) -> str:
        name = self._names.get(id(value))
        if name is None:
            name = f"c{len(self._names)}"
            self._names[id(value)] = name
            self.env[name] = value
        return name


def _expr(code: _Code, ref: Any, static_value: Callable[[Any], Any]) -> str:
    """A Python expression that builds ``ref`` (see ``encoding._Builder.build``)."""
    if type(ref) is int:
        return f"o{ref}"
    tag = ref.tag
    if tag == "leaf":
        return f"L[{ref.index}]"
    if tag == "static":
        return code.const(static_value(ref.value))
    if tag == "list":
        items = ", ".join(_expr(code, r, static_value) for r in ref.items)
        return f"List([{items}])" if ref.type is List else f"[{items}]"
    if tag == "tuple":
        return f"({''.join(_expr(code, r, static_value) + ', ' for r in ref.items)})"
    if tag == "dict":
        pairs = ", ".join(f"{code.const(k)}: {_expr(code, r, static_value)}" for k, r in zip(ref.keys, ref.items))
        return f"Dict({{{pairs}}})" if ref.type is Dict else f"{{{pairs}}}"
    if tag == "tree":
        items = ", ".join(_expr(code, r, static_value) for r in ref.items)
        return f"{code.const(ref.treedef)}.unflatten([{items}])"
    raise AssertionError(f"unknown ref {ref!r}")


def _define(name: str, params: str, lines: list[str], env: dict, filename: str) -> Callable | None:
    """The function ``name(params)`` with ``lines`` as its body, or None where Python cannot
    compile it (a structure nested deeper than its parser allows): the caller keeps the plan."""
    source = f"def {name}({params}):\n" + "".join(f"    {line}\n" for line in lines)
    namespace = dict(env)
    try:
        exec(compile(source, filename, "exec"), namespace)  # noqa: S102
    except (SyntaxError, RecursionError, MemoryError):
        return None
    return namespace[name]


def compile_builder(graphdef: Any, plan: tuple, static_value: Callable[[Any], Any]) -> Callable | None:
    """``build(leaves, trace) -> (roots, objs)`` for ``graphdef``, following ``plan``
    (``encoding._plan``'s Variables, objects and fills); None for containers nested too deep
    to write as one expression (the plan stays in use)."""
    try:
        return _compile_builder(graphdef, plan, static_value)
    except RecursionError:
        return None


def _compile_builder(graphdef: Any, plan: tuple, static_value: Callable[[Any], Any]) -> Callable | None:
    variables, objects, fills = plan
    code = _Code()
    out = code.lines
    for i, cls, meta, k in variables:
        out.append(f"o{i} = new({code.const(cls)}); o{i}._value = L[{k}]; o{i}._meta = {code.const(meta)}; "
                   f"o{i}._plait_seen = False; o{i}._trace = T")
    for i, cls in objects:
        eager = "" if cls._plait_unset_slots else f"; set_seen(o{i}, False); set_trace(o{i}, T)"
        out.append(f"o{i} = new({code.const(cls)}){eager}")
    lazy = [i for i, cls in objects if cls._plait_unset_slots]
    if lazy:  # outside every transform these bookkeeping slots stay unset (see object._settle)
        out.append("if T != TOP: " + "; ".join(f"set_seen(o{i}, False); set_trace(o{i}, T)" for i in lazy))
    for i, attrs, node_refs, other_refs in fills:
        out.append(f"d = o{i}.__dict__; d.update({code.const(attrs)})")
        for name, j in node_refs:
            out.append(f"d[{name!r}] = o{j}")
        for name, ref in other_refs:
            out.append(f"d[{name!r}] = {_expr(code, ref, static_value)}")
    roots = "".join(_expr(code, r, static_value) + ", " for r in graphdef.roots)
    objs = ", ".join(f"o{i}" for i in range(len(graphdef.nodes)))
    out.append(f"return ({roots}), [{objs}]")
    return _define("build", "L, T", out, code.env, f"<plait build of {len(graphdef.nodes)} objects>")


def compile_states(graphdef: Any, parts: list, state_cls: type, origin_cls: type) -> Callable | None:
    """``states(slots, leaves) -> [State, ...]`` for one ``split``/``state`` plan: each part
    ``(leaf indices, skeleton levels)`` becomes a State of Variable copies (or raw arrays), as
    ``graph._states`` builds them, written out as straight-line code."""
    code = _Code()
    code.env.update(State=state_cls, Origin=origin_cls, gd=graphdef)
    out = code.lines
    results = []
    for p, (indices, levels) in enumerate(parts):
        entries = []
        for j, k in enumerate(indices):
            node = graphdef.leaf_nodes[k]
            if node < 0:
                entries.append(f"leaves[{k}]")
                continue
            cls = code.const(graphdef.nodes[node].type)
            out.append(f"s = slots[{k}]; v = new({cls}); v._value = s._value; v._meta = s._meta; "
                       "v._plait_seen = False; v._trace = None")
            out.append(f"e{p}_{j} = v")
            entries.append(f"e{p}_{j}")
        names = list(entries)
        out.append(f"origin = Origin(gd, {code.const(tuple(indices))}, [{', '.join(entries)}])")
        for level, (keys, refs) in enumerate(levels):
            pairs = ", ".join(f"{code.const(key)}: {names[ref]}" for key, ref in zip(keys, refs))
            name = f"l{p}_{level}"
            out.append(f"{name} = new(State); {name}._origin = origin; {name}._mapping = {{{pairs}}}")
            names.append(name)
        out.append(f"origin.root = id({names[-1]})")
        results.append(names[-1])
    out.append(f"return [{', '.join(results)}]")
    return _define("states", "slots, leaves", out, code.env, f"<plait states of {graphdef.num_leaves} leaves>")
