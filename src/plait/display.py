"""Text display of module graphs.

``repr(module)`` shows the tree of sub-modules with every Variable's type, shape and dtype,
so you can see at a glance which state has a batch or layer axis (for example, whether a
Dropout's RNG state was split). An object reachable by a second path is shown once, then
referred to by its first path.
"""

from __future__ import annotations

from typing import Any

from . import object as _object
from .encoding import ARRAY_TYPES
from .object import Dict, List, Object
from .variables import Variable

__all__ = ["graph_repr"]


def graph_repr(node: Any) -> str:
    seen: dict[int, str] = {}
    return _repr(node, "", seen, "")


def _repr(value: Any, indent: str, seen: dict[int, str], path: str) -> str:
    if isinstance(value, (Object, Variable)) and id(value) in seen:
        return f"{type(value).__name__}(<same object as `{seen[id(value)] or '<root>'}`>)"
    if isinstance(value, Variable):
        seen[id(value)] = path
        return repr(value)
    if isinstance(value, Object):
        seen[id(value)] = path
        inner = indent + "  "
        lines = [f"{type(value).__name__}("]
        for name, attr in value.__dict__.items():
            if name == "_plait_marks":  # nnx.data / nnx.static bookkeeping, not an attribute to show
                continue
            sub = f"{path}.{name}" if path else name
            lines.append(f"{inner}{name}={_repr(attr, inner, seen, sub)},")
        lines.append(f"{indent})")
        return "\n".join(lines) if len(lines) > 2 else f"{type(value).__name__}()"
    if type(value) in (list, tuple, List) and any(_interesting(v) for v in value):
        inner = indent + "  "
        open_, close = ("[", "]") if type(value) is not tuple else ("(", ")")
        items = [f"{inner}{_repr(v, inner, seen, f'{path}.{j}')}," for j, v in enumerate(value)]
        return "\n".join([open_, *items, f"{indent}{close}"])
    if type(value) in (dict, Dict) and any(_interesting(v) for v in value.values()):
        inner = indent + "  "
        items = [f"{inner}{k!r}: {_repr(v, inner, seen, f'{path}.{k}')}," for k, v in value.items()]
        return "\n".join(["{", *items, f"{indent}}}"])
    if isinstance(value, ARRAY_TYPES):
        return f"Array(shape={tuple(value.shape)}, dtype={value.dtype})"
    if callable(value) and hasattr(value, "__name__"):
        return getattr(value, "__qualname__", value.__name__)
    return repr(value)


def _interesting(value: Any) -> bool:
    return isinstance(value, (Object, Variable, *ARRAY_TYPES, list, tuple, dict))


_object.repr_hook = graph_repr  # every Object's repr is the graph view
