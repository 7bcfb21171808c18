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
    if type(ref) is int:
        return []
    tag = ref[0]
    if tag == "leaf":
        return [ref[1]]
    if tag == "static":
        return []
    refs = {"list": 2, "tuple": 1, "dict": 3, "tree": 2}[tag]
    out: list[int] = []
    for r in ref[refs]:
        out.extend(ref_leaves(r))
    return out


def ref_shape(ref: Any) -> Any:
    """A ref with its leaf indices erased: equal for values of the same structure."""
    if type(ref) is int or ref[0] == "static":
        return ref
    if ref[0] == "leaf":
        return "leaf"
    pos = {"list": 2, "tuple": 1, "dict": 3, "tree": 2}[ref[0]]
    return ref[:pos] + (tuple(ref_shape(r) for r in ref[pos]),)


def ref_text(ref: Any, graphdef: GraphDef) -> str:
    """A ref described for a person: ``a tuple of (an array, a Linear)``."""
    if type(ref) is int:
        return f"a {graphdef.nodes[ref].type.__name__}"
    tag = ref[0]
    if tag == "leaf":
        return "an array"
    if tag == "static":
        return repr(ref[1])
    if tag == "dict":
        inner = ", ".join(f"{k!r}: {ref_text(r, graphdef)}" for k, r in zip(ref[2], ref[3]))
        return f"a dict {{{inner}}}"
    refs = ref[2] if tag in ("list", "tree") else ref[1]
    kind = {"list": "list", "tuple": "tuple", "tree": str(ref[1])}[tag]
    return f"a {kind} of {len(refs)} ({', '.join(ref_text(r, graphdef) for r in refs)})"


def first_difference(a: Any, gd_a: GraphDef, b: Any, gd_b: GraphDef, where: str) -> str:
    """Where two refs first differ in structure, for a person: ``at `val[1]`: an array, then 0``."""
    if type(a) is int or type(b) is int:
        node_a, node_b = (gd_a.nodes[a] if type(a) is int else None), (gd_b.nodes[b] if type(b) is int else None)
        if node_a is not None and node_b is not None and node_a[:2] == node_b[:2]:
            if node_a.kind == OBJ:
                attrs_a, attrs_b = dict(node_a.attributes), dict(node_b.attributes)
                if set(attrs_a) != set(attrs_b):
                    extra = sorted(set(attrs_a) ^ set(attrs_b))
                    return f"at `{where}`: attributes {extra} were added or removed"
                for name in attrs_a:
                    found = first_difference(attrs_a[name], gd_a, attrs_b[name], gd_b, f"{where}.{name}")
                    if found:
                        return found
                return ""
            return f"at `{where}`: the Variable's metadata changed" if gd_a.nodes[a] != gd_b.nodes[b] else ""
        return f"at `{where}`: {ref_text(a, gd_a)} became {ref_text(b, gd_b)}"
    if a[0] != b[0] or a[0] in ("static", "leaf") or a[0] == "tree" and a[1] != b[1]:
        if a[0] == "leaf" and b[0] == "leaf":
            return ""
        return "" if a == b else f"at `{where}`: {ref_text(a, gd_a)} became {ref_text(b, gd_b)}"
    if a[0] == "dict" and a[2] != b[2]:
        return f"at `{where}`: {ref_text(a, gd_a)} became {ref_text(b, gd_b)}"
    pos = {"list": 2, "tuple": 1, "dict": 3, "tree": 2}[a[0]]
    if len(a[pos]) != len(b[pos]):
        return f"at `{where}`: {ref_text(a, gd_a)} became {ref_text(b, gd_b)}"
    keys = a[2] if a[0] == "dict" else range(len(a[pos]))
    for key, ra, rb in zip(keys, a[pos], b[pos]):
        found = first_difference(ra, gd_a, rb, gd_b, f"{where}[{key!r}]")
        if found:
            return found
    return ""


def _suggest(ref: Any, graphdef: GraphDef) -> str:
    """A spec with one 0 per entry of the value a ref describes, e.g. ``(0, 0)`` or ``{'a': 0}``."""
    if type(ref) is int or ref[0] not in ("tuple", "list", "dict"):
        return "0"
    if ref[0] == "dict":
        return "{" + ", ".join(f"{k!r}: 0" for k in ref[2]) + "}"
    refs = ref[2] if ref[0] == "list" else ref[1]
    inner = ", ".join("0" for _ in refs)
    return f"({inner},)" if len(refs) == 1 else f"({inner})"


def check_prefix(spec: Any, ref: Any, graphdef: GraphDef, where: str) -> None:
    """A tuple/list/dict spec must match the structure of the value it describes, entry for entry."""
    if isinstance(spec, (tuple, list)):
        if type(ref) is not int and ref[0] == "tree" and len(ref[2]) == len(spec) and hasattr(spec, "_fields"):
            for i, (s, r) in enumerate(zip(spec, ref[2])):  # a namedtuple spec for a namedtuple value
                check_prefix(s, r, graphdef, f"{where}.{spec._fields[i]}")
            return
        if type(ref) is int or ref[0] not in ("tuple", "list"):
            name = where.split(": ")[-1].split("[")[0]
            other = _suggest(ref, graphdef)
            raise AxisError(
                f"{where} is a {type(spec).__name__} of {len(spec)}, but the value is {ref_text(ref, graphdef)}.\n"
                f"A tuple spec describes a tuple value entry by entry; for this value give one spec for all of it, "
                f"e.g. {name}=0 or {name}=None" + (f", or entry by entry: {name}={other}." if other != "0" else ".")
            )
        refs = ref[2] if ref[0] == "list" else ref[1]
        if len(refs) != len(spec):
            raise AxisError(
                f"{where} has {len(spec)} entries, but the value it describes has {len(refs)}: "
                f"{ref_text(ref, graphdef)}. Give one entry per element, e.g. {_suggest(ref, graphdef)}."
            )
        for i, (s, r) in enumerate(zip(spec, refs)):
            check_prefix(s, r, graphdef, f"{where}[{i}]")
    elif isinstance(spec, dict):
        if type(ref) is int or ref[0] != "dict" or set(ref[2]) != set(spec):
            raise AxisError(
                f"{where} has keys {sorted(map(str, spec))}, but the value is {ref_text(ref, graphdef)}.\n"
                f"Give one entry per key of the value, e.g. {_suggest(ref, graphdef)}, or one spec for all of it."
            )
        for k, r in zip(ref[2], ref[3]):
            check_prefix(spec[k], r, graphdef, f"{where}[{k!r}]")
