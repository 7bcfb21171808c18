"""Reading refs of the graph encoding for transforms: which raw leaves sit under a value,
its shape of structure, a text for errors, and checking a spec tree against a value
(``in_axes``/``out_axes`` prefixes), with the spec to write when they do not match.
"""

from __future__ import annotations

from typing import Any

from ..encoding import OBJ, GraphDef
from ..errors import AxisError

__all__ = ["ref_leaves", "ref_shape", "ref_text", "first_difference", "check_prefix"]


def ref_leaves(ref: Any) -> list[int]:
    """Indices of the raw-array leaves under a ref (not those inside objects it points to)."""
    if type(ref) is int or ref.tag == "static":
        return []
    if ref.tag == "leaf":
        return [ref.index]
    out: list[int] = []
    for r in ref.items:
        out.extend(ref_leaves(r))
    return out


def ref_shape(ref: Any) -> Any:
    """A ref with its leaf indices erased: equal for values of the same structure."""
    if type(ref) is int or ref.tag == "static":
        return ref
    if ref.tag == "leaf":
        return "leaf"
    return ref._replace(items=tuple(ref_shape(r) for r in ref.items))


def ref_text(ref: Any, graphdef: GraphDef) -> str:
    """A ref described for a person: ``a tuple of (an array, a Linear)``."""
    if type(ref) is int:
        return f"a {graphdef.nodes[ref].type.__name__}"
    tag = ref.tag
    if tag == "leaf":
        return "an array"
    if tag == "static":
        return repr(ref.value)
    if tag == "dict":
        inner = ", ".join(f"{k!r}: {ref_text(r, graphdef)}" for k, r in zip(ref.keys, ref.items))
        return f"a dict {{{inner}}}"
    kind = str(ref.treedef) if tag == "tree" else tag
    return f"a {kind} of {len(ref.items)} ({', '.join(ref_text(r, graphdef) for r in ref.items)})"


def first_difference(a: Any, gd_a: GraphDef, b: Any, gd_b: GraphDef, where: str) -> str:
    """Where two refs first differ in structure, for a person: ``at `c[1]`: an array became a tuple``;
    empty when they do not differ."""
    changed = f"at `{where}`: {ref_text(a, gd_a)} became {ref_text(b, gd_b)}"
    if type(a) is int or type(b) is int:
        node_a, node_b = (gd_a.nodes[a] if type(a) is int else None), (gd_b.nodes[b] if type(b) is int else None)
        if node_a is None or node_b is None or node_a[:2] != node_b[:2]:
            return changed
        if node_a.kind != OBJ:
            return f"at `{where}`: the Variable's metadata changed" if node_a != node_b else ""
        attrs_a, attrs_b = dict(node_a.attributes), dict(node_b.attributes)
        if set(attrs_a) != set(attrs_b):
            return f"at `{where}`: attributes {sorted(set(attrs_a) ^ set(attrs_b))} were added or removed"
        for name in attrs_a:
            found = first_difference(attrs_a[name], gd_a, attrs_b[name], gd_b, f"{where}.{name}")
            if found:
                return found
        return ""
    if a.tag != b.tag:
        return changed
    if a.tag == "leaf":
        return ""
    if a.tag == "static" or a.tag == "tree" and a.treedef != b.treedef or a.tag == "dict" and a.keys != b.keys:
        return "" if a == b else changed
    if len(a.items) != len(b.items):
        return changed
    keys = a.keys if a.tag == "dict" else range(len(a.items))
    for key, ra, rb in zip(keys, a.items, b.items):
        found = first_difference(ra, gd_a, rb, gd_b, f"{where}[{key!r}]")
        if found:
            return found
    return ""


def _suggest(ref: Any, graphdef: GraphDef) -> str:
    """A spec with one 0 per entry of the value a ref describes, e.g. ``(0, 0)`` or ``{'a': 0}``."""
    if type(ref) is int or ref.tag not in ("tuple", "list", "dict"):
        return "0"
    if ref.tag == "dict":
        return "{" + ", ".join(f"{k!r}: 0" for k in ref.keys) + "}"
    inner = ", ".join("0" for _ in ref.items)
    return f"({inner},)" if len(ref.items) == 1 else f"({inner})"


def check_prefix(spec: Any, ref: Any, graphdef: GraphDef, where: str) -> None:
    """A tuple/list/dict spec must match the structure of the value it describes, entry for entry."""
    if isinstance(spec, (tuple, list)):
        if type(ref) is not int and ref.tag == "tree" and len(ref.items) == len(spec) and hasattr(spec, "_fields"):
            for i, (s, r) in enumerate(zip(spec, ref.items)):  # a namedtuple spec for a namedtuple value
                check_prefix(s, r, graphdef, f"{where}.{spec._fields[i]}")
            return
        if type(ref) is int or ref.tag not in ("tuple", "list"):
            name = where.split(": ")[-1].split("[")[0]
            other = _suggest(ref, graphdef)
            raise AxisError(
                f"{where} is a {type(spec).__name__} of {len(spec)}, but the value is {ref_text(ref, graphdef)}.\n"
                f"A tuple spec describes a tuple value entry by entry; for this value give one spec for all of it, "
                f"e.g. {name}=0 or {name}=None" + (f", or entry by entry: {name}={other}." if other != "0" else ".")
            )
        refs = ref.items
        if len(refs) != len(spec):
            raise AxisError(
                f"{where} has {len(spec)} entries, but the value it describes has {len(refs)}: "
                f"{ref_text(ref, graphdef)}. Give one entry per element, e.g. {_suggest(ref, graphdef)}."
            )
        for i, (s, r) in enumerate(zip(spec, refs)):
            check_prefix(s, r, graphdef, f"{where}[{i}]")
    elif isinstance(spec, dict):
        if type(ref) is int or ref.tag != "dict" or set(ref.keys) != set(spec):
            raise AxisError(
                f"{where} has keys {sorted(map(str, spec))}, but the value is {ref_text(ref, graphdef)}.\n"
                f"Give one entry per key of the value, e.g. {_suggest(ref, graphdef)}, or one spec for all of it."
            )
        for k, r in zip(ref.keys, ref.items):
            check_prefix(spec[k], r, graphdef, f"{where}[{k!r}]")
