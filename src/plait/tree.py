"""Graph nodes inside pytrees: :func:`to_tree` and :func:`from_tree`.

Modules are not pytrees (they are mutable objects with identity), so a pytree that holds
modules cannot go through a raw JAX function. :func:`to_tree` replaces each graph node
(module, Rngs, Variable) in a pytree with a :class:`NodeStates`, a pytree holding the node's
State and, as static data, the GraphDef of all the tree's nodes together, so a module that
appears twice is split once and comes back as one object. :func:`from_tree` is the inverse:
it builds new objects. This is the reference's ``nnx.to_tree``/``nnx.from_tree`` without
its prefix and custom split/merge hooks, which belong to its transform internals.

Example:
    >>> import jax, jax.numpy as jnp, plait as nnx
    >>> model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    >>> tree = nnx.to_tree({"model": model, "scale": 2.0})
    >>> out = jax.jit(lambda t: nnx.to_tree(nnx.from_tree(t)))(tree)  # raw jax.jit is fine now
    >>> nnx.from_tree(out)["model"](jnp.ones((1, 2))).shape
    (1, 3)
"""

from __future__ import annotations

from typing import Any

import jax

from .encoding import GraphDef, is_graph_node
from .errors import GraphError
from .graph import merge, split
from .state import State

__all__ = ["NodeStates", "to_tree", "from_tree"]


class NodeStates:
    """One graph node of a pytree made by :func:`to_tree`: its State(s) (the pytree children)
    and, as static data, the GraphDef of all the tree's nodes and this node's position."""

    __slots__ = ("_graphdef", "states", "metadata", "position")

    def __init__(self, graphdef: GraphDef | None, states: tuple, metadata: Any = None, position: int = 0) -> None:
        self._graphdef = graphdef
        self.states = tuple(states)
        self.metadata = metadata
        self.position = position

    @property
    def graphdef(self) -> GraphDef:
        if self._graphdef is None:
            raise GraphError("this NodeStates has no GraphDef (it was made from states alone)")
        return self._graphdef

    @property
    def state(self) -> Any:
        if len(self.states) != 1:
            raise GraphError(f"NodeStates.state needs exactly one State; this one has {len(self.states)}")
        return self.states[0]

    @classmethod
    def from_split(cls, graphdef: GraphDef | None, state: Any, /, *states: Any, metadata: Any = None) -> NodeStates:
        return cls(graphdef, (state, *states), metadata)

    @classmethod
    def from_states(cls, state: Any, *states: Any) -> NodeStates:
        return cls(None, (state, *states))

    def __repr__(self) -> str:
        return f"NodeStates(position={self.position}, states={self.states!r})"


jax.tree_util.register_pytree_node(
    NodeStates,
    lambda ns: (ns.states, (ns._graphdef, ns.metadata, ns.position)),
    lambda aux, states: NodeStates(aux[0], tuple(states), aux[1], aux[2]),
)


def to_tree(tree: Any, /) -> Any:
    """``tree`` with every graph node (module, Rngs, Variable) replaced by a
    :class:`NodeStates`; the result is a pytree of arrays and static data.

    Nodes are split together, so a node reached twice is stored once (the later places hold
    an empty State) and :func:`from_tree` gives one object back for both.

    Example:
        >>> import plait as nnx
        >>> layer = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
        >>> tree = nnx.to_tree([layer, layer])
        >>> sorted(tree[0].state), len(tree[1].state)
        (['bias', 'kernel'], 0)
        >>> a, b = nnx.from_tree(tree); a is b
        True
    """
    leaves, treedef = jax.tree_util.tree_flatten(tree, is_leaf=is_graph_node)
    nodes = [x for x in leaves if is_graph_node(x)]
    if not nodes:
        return tree
    graphdef, state = split(tuple(nodes))
    out, position = [], 0
    for leaf in leaves:
        if is_graph_node(leaf):
            out.append(NodeStates(graphdef, (state.get(position, State()),), None, position))
            position += 1
        else:
            out.append(leaf)
    return jax.tree_util.tree_unflatten(treedef, out)


def from_tree(tree: Any, /) -> Any:
    """The inverse of :func:`to_tree`: each :class:`NodeStates` becomes a new graph node built
    from its State (shared nodes come back shared).

    Example:
        >>> import plait as nnx
        >>> tree = nnx.to_tree({"m": nnx.Linear(2, 2, rngs=nnx.Rngs(0)), "lr": 0.1})
        >>> back = nnx.from_tree(tree)
        >>> type(back["m"]).__name__, back["lr"]
        ('Linear', 0.1)
    """
    def is_node_states(x: Any) -> bool:
        return isinstance(x, NodeStates)

    leaves, treedef = jax.tree_util.tree_flatten(tree, is_leaf=is_node_states)
    found = [x for x in leaves if is_node_states(x)]
    if not found:
        return tree
    graphdef = found[0].graphdef
    if [ns.position for ns in found] != list(range(len(found))) or any(ns._graphdef != graphdef for ns in found):
        raise GraphError(
            "from_tree: the NodeStates in this tree do not come from one to_tree call in the same order "
            f"(positions {[ns.position for ns in found]}). Pass the whole tree that to_tree returned, "
            "with its nodes in place."
        )
    state = State({ns.position: ns.state for ns in found if not (isinstance(ns.state, State) and not ns.state)})
    nodes = merge(graphdef, state)
    out = [nodes[leaf.position] if is_node_states(leaf) else leaf for leaf in leaves]
    return jax.tree_util.tree_unflatten(treedef, out)
