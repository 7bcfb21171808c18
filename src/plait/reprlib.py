"""``nnx.reprlib``: the reference's repr machinery. plait draws every object with one graph
view (:func:`plait.display.graph_repr`, installed as every Object's ``repr``); the
reference's ``Representable`` protocol has no plait equivalent.

Example:
    >>> import plait as nnx
    >>> print(nnx.reprlib.graph_repr(nnx.Linear(2, 3, rngs=nnx.Rngs(0))).splitlines()[0])
    Linear(
"""

from __future__ import annotations

from .display import graph_repr
from .namespaces import missing

__all__ = ["graph_repr"]

__getattr__ = missing("reprlib", {
    name: "plait draws objects with one graph view (repr(obj), nnx.display(obj)); define __repr__ for your own types"
    for name in ("Representable", "Object", "Attr", "get_repr", "MappingReprMixin", "SequenceReprMixin",
                 "PrettyMapping", "PrettySequence")
})
