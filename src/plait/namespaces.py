"""The reference's submodules (``nnx.graphlib``, ``nnx.statelib``, ...) as plait namespaces.

Flax NNX code sometimes reaches a name through the module that defines it
(``nnx.statelib.State``, ``nnx.traversals.flatten_mapping``). plait keeps one module per
concept under other names, so each of the reference's submodules is a small module of
re-exports (``plait.graphlib``, ``plait.statelib``, ...), on top of the import graph: the core
never imports them. A name such a module does not have raises an ``AttributeError`` that
says where plait keeps it, via :func:`missing`.

Example:
    >>> import plait as nnx
    >>> nnx.statelib.State is nnx.State, nnx.rnglib.Rngs is nnx.Rngs
    (True, True)
    >>> try:
    ...     nnx.graphlib.NodeDef
    ... except AttributeError as e:
    ...     print(str(e)[:60])
    plait.graphlib has no attribute 'NodeDef' (the reference's f
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping

__all__ = ["missing"]


def missing(module: str, hints: Mapping[str, str] | None = None) -> Callable[[str], object]:
    """A module ``__getattr__`` for ``plait.<module>``: every call raises ``AttributeError``
    naming what to use instead (a hint from ``hints``, or the top-level plait name).

    Example:
        >>> __getattr__ = missing("statelib", {"diff": "compare two States with =="})
        >>> try:
        ...     __getattr__("diff")
        ... except AttributeError as e:
        ...     print(e)
        plait.statelib has no attribute 'diff' (the reference's flax.nnx.statelib has); compare two States with ==
    """
    hints = dict(hints or {})

    def __getattr__(name: str) -> object:
        if name.startswith("__"):
            raise AttributeError(f"module 'plait.{module}' has no attribute {name!r}")
        head = f"plait.{module} has no attribute {name!r} (the reference's flax.nnx.{module} has)"
        if name in hints:
            raise AttributeError(f"{head}; {hints[name]}")
        top = sys.modules.get("plait")  # the package, already imported: no import edge to it
        if top is not None and name in getattr(top, "__all__", ()):
            raise AttributeError(f"{head}; plait has it at the top level: nnx.{name}")
        raise AttributeError(
            f"{head}; it is an internal of the reference with no plait equivalent. "
            "docs/differences.md lists what plait provides instead."
        )

    return __getattr__
