"""``nnx.compat``: the reference's namespace for the graph-mode API, which is plait's only API.

Flax NNX 0.12 keeps its graph-mode functions and transforms (``graph=True``,
``graph_updates=True``) under ``nnx.compat`` for code that wants them regardless of the
global mode. Those semantics are plait's everywhere, so ``nnx.compat.jit`` *is*
``nnx.jit``, ``nnx.compat.split`` is ``nnx.split``, and so on. A name of the reference's
``compat`` that plait does not have raises an ``AttributeError`` naming what to use.

Example:
    >>> import plait as nnx
    >>> nnx.compat.jit is nnx.jit, nnx.compat.split is nnx.split
    (True, True)
"""

from __future__ import annotations

from .graph import clone, graphdef, iter_graph, split, state
from .mode import set_graph_mode, set_graph_updates
from .module import iter_modules
from .rngs import fork_rngs, reseed, split_rngs
from .transforms import (
    cached_partial,
    cond,
    custom_vjp,
    eval_shape,
    fori_loop,
    grad,
    jit,
    jvp,
    pmap,
    remat,
    scan,
    shard_map,
    switch,
    value_and_grad,
    vjp,
    vmap,
    while_loop,
)
from .views import view, view_info

__all__ = [
    "cached_partial", "clone", "cond", "custom_vjp", "eval_shape", "fori_loop", "fork_rngs", "grad", "graphdef",
    "iter_graph", "iter_modules", "jit", "jvp", "pmap", "remat", "reseed", "scan", "set_graph_mode",
    "set_graph_updates", "shard_map", "split", "split_rngs", "state", "switch", "value_and_grad", "view",
    "view_info", "vjp", "vmap", "while_loop",
]

_MISSING_HERE = {
    "flatten": "nnx.split(node) (plait's encoding is internal; split gives the GraphDef and State)",
    "recursive_map": "nnx.iter_graph(node) to visit every object, and nnx.view/nnx.with_attributes for copies",
    "iter_children": "module.iter_children()",
    "backup_keys": "nnx.split_rngs(...) / nnx.fork_rngs(...) as a context manager (they restore the keys)",
    "checkify": "jax.experimental.checkify on a function of (graphdef, state) (plait has no lifted checkify)",
    "get_abstract_model": "nnx.eval_shape(lambda: Model(...))",
}


def __getattr__(name: str) -> object:
    if name in _MISSING_HERE:
        raise AttributeError(f"plait.compat has no {name!r} (the reference's compat does); use {_MISSING_HERE[name]}")
    raise AttributeError(f"module 'plait.compat' has no attribute {name!r}")
