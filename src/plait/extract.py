"""``nnx.extract``: the reference's helpers for moving graph nodes through raw JAX functions.

The ones users reach for: :func:`to_tree`/:func:`from_tree` and :class:`NodeStates` (graph
nodes inside pytrees, from :mod:`plait.tree`), :func:`prefix` (an axis spec per Variable,
from :mod:`plait.graph_map`), :func:`broadcast_prefix` (a prefix tree's value for each leaf of
a full tree) and :func:`check_consistent_aliasing` (a node reached through two arguments must
get the same spec). The reference's other names there are its transforms' internals.

Example:
    >>> import plait as nnx
    >>> nnx.extract.broadcast_prefix((0, 1), ([1, 2], {"a": 3}))
    [0, 0, 1]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from .encoding import is_graph_node
from .errors import AxisError
from .graph import iter_graph
from .graph_map import prefix
from .transforms.axes import StateAxes
from .tree import NodeStates, from_tree, to_tree
from .variables import Variable, describe

__all__ = ["NodeStates", "to_tree", "from_tree", "prefix", "broadcast_prefix", "check_consistent_aliasing"]


def broadcast_prefix(prefix_tree: Any, full_tree: Any, prefix_is_leaf: Callable[[Any], bool] | None = None,
                     tree_is_leaf: Callable[[Any], bool] | None = None) -> list[Any]:
    """The value of ``prefix_tree`` for each leaf of ``full_tree``, in leaf order: each prefix
    leaf repeated once per leaf of the subtree it stands for. A graph node (module, Variable)
    in ``full_tree`` counts as one leaf. ``None`` is an empty pytree to JAX, so a ``None`` in
    the prefix needs ``prefix_is_leaf=lambda x: x is None``, as in the reference.

    Example:
        >>> import plait as nnx
        >>> nnx.extract.broadcast_prefix({"x": 1, "y": None}, {"x": (7, 8), "y": 9},
        ...                              prefix_is_leaf=lambda x: x is None)
        [1, 1, None]
    """
    result: list = []

    def count(subtree: Any) -> int:
        if is_graph_node(subtree):
            return 1
        return jax.tree_util.tree_structure(subtree, is_leaf=lambda x: is_graph_node(x) or (
            tree_is_leaf is not None and tree_is_leaf(x))).num_leaves

    def add(x: Any, subtree: Any) -> None:
        result.extend([x] * count(subtree))

    jax.tree.map(add, prefix_tree, full_tree,
                 is_leaf=lambda x: is_graph_node(x) or (prefix_is_leaf is not None and prefix_is_leaf(x)))
    return result


def check_consistent_aliasing(node: Any, prefix: Any, /, *,
                              node_prefixes: dict[int, list[tuple[tuple, Any]]] | None = None) -> None:
    """Raise if a Variable gets two different specs: record each Variable of ``node`` with the
    spec ``prefix`` gives it (a ``StateAxes`` chooses by filter) into ``node_prefixes``; call
    it once per argument with the same dict to check across arguments.

    Example:
        >>> import plait as nnx
        >>> layer = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
        >>> seen = {}
        >>> nnx.extract.check_consistent_aliasing(layer, 0, node_prefixes=seen)
        >>> try:
        ...     nnx.extract.check_consistent_aliasing([layer], None, node_prefixes=seen)
        ... except nnx.AxisError as e:
        ...     print(str(e).splitlines()[0])
        Inconsistent aliasing: 2 Variable(s) get different specs by different paths:
    """
    if node_prefixes is None:
        node_prefixes = {}
    variables: dict[int, Variable] = {}
    for path, value in iter_graph(node):
        if not isinstance(value, Variable):
            continue
        spec = prefix.axis_for(path, value) if isinstance(prefix, StateAxes) else prefix
        variables[id(value)] = value
        node_prefixes.setdefault(id(value), []).append((path, spec))
    lines = []
    for key, found in node_prefixes.items():
        if len({repr(spec) for _, spec in found}) > 1 and key in variables:
            where = "\n".join(f"    {'.'.join(map(str, p)) if p else '<root>'}: {spec!r}" for p, spec in found)
            lines.append(f"  {describe('.'.join(map(str, found[-1][0])) or '<root>', variables[key])}\n{where}")
    if lines:
        raise AxisError(
            f"Inconsistent aliasing: {len(lines)} Variable(s) get different specs by different paths:\n"
            + "\n".join(lines)
            + "\nOne Variable can be transformed only one way: give every path to it the same spec."
        )
