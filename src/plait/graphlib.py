"""``nnx.graphlib``: the reference's graph module, as plait's graph functions.

Example:
    >>> import plait as nnx
    >>> nnx.graphlib.split is nnx.split, nnx.graphlib.GraphDef is nnx.GraphDef
    (True, True)
"""

from __future__ import annotations

from .graph import (
    GraphDef,
    GraphState,
    Key,
    PureState,
    clone,
    find_duplicates,
    flatten,
    graphdef,
    is_graph_node,
    iter_children,
    iter_graph,
    merge,
    pop,
    recursive_map,
    split,
    state,
    unflatten,
    update,
)
from .graph_map import as_pure, map, pure, set_metadata  # noqa: A004  (the reference's names)
from .mode import set_graph_mode, set_graph_updates
from .module import iter_module_children
from .namespaces import missing
from .state import State
from .transforms import cached_partial, call
from .variable_modes import vars_as, with_vars
from .variables import Variable

__all__ = [
    "GraphDef", "GraphState", "Key", "PureState", "State", "Variable", "as_pure", "cached_partial", "call", "clone",
    "find_duplicates", "flatten", "graphdef", "is_graph_node", "iter_children", "iter_graph", "iter_module_children",
    "map", "merge", "pop", "pure", "recursive_map", "set_graph_mode", "set_graph_updates", "set_metadata", "split",
    "state", "unflatten", "update", "vars_as", "with_vars",
]

__getattr__ = missing("graphlib", {
    "is_node": "nnx.graphlib.is_graph_node (plait objects are graph nodes; pytrees are not)",
    "register_graph_node_type": "subclass nnx.Object (nnx.Pytree) or nnx.Module; plait registers no other node types",
    "register_pytree_node_type": "jax.tree_util.register_pytree_node: plait walks any JAX pytree",
    "graph_pop": "nnx.pop(node, filter)",
})
