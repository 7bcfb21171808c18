"""``shard_map``: run a function on each device's shard of its arguments, modules included.

``in_specs`` gives each argument a ``PartitionSpec`` (or, for a module,
``nnx.StateSharding({filter: PartitionSpec, ...})``); inside, the function sees the local
shards. State comes back with the spec it went in with; new outputs use ``out_specs``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
from jax.sharding import PartitionSpec

from ..errors import AxisError, TransformError
from ..mode import check_graph_mode
from .axes import StateAxes, resolve
from .lift import Call, check_callable

__all__ = ["shard_map"]

_MISSING = object()


def _specs_in(tree: Any) -> list:
    """Every PartitionSpec in a spec tree (None counts as replicated)."""
    if tree is None:
        return [PartitionSpec()]
    if isinstance(tree, PartitionSpec):
        return [tree]
    if isinstance(tree, StateAxes):
        return [PartitionSpec() if a is None else a for a in tree.axes]
    if isinstance(tree, dict):
        tree = list(tree.values())
    if isinstance(tree, (tuple, list)):
        return [s for t in tree for s in _specs_in(t)]
    raise TransformError(f"shard_map: {tree!r} is not a PartitionSpec, None, nnx.StateSharding, or a tuple/list/dict of them")


def shard_map(
    f: Callable = _MISSING,  # type: ignore[assignment]
    *,
    mesh: Any,
    in_specs: Any,
    out_specs: Any,
    check_vma: bool = True,
    graph: bool | None = None,
    graph_updates: bool | None = None,
) -> Callable:
    """Map ``f`` over the shards of its arguments on ``mesh`` (``jax.shard_map``).

    Example:
        >>> import jax, jax.numpy as jnp, plait as nnx
        >>> from jax.sharding import Mesh, PartitionSpec as P
        >>> mesh = Mesh(jax.devices()[:1], ("data",))
        >>> model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
        >>> f = nnx.shard_map(lambda m, x: m(x), mesh=mesh, in_specs=(P(), P("data")), out_specs=P("data"))
        >>> f(model, jnp.ones((4, 2))).shape
        (4, 2)
    """
    check_graph_mode("nnx.shard_map", graph, graph_updates)
    if f is _MISSING:
        return functools.partial(shard_map, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=check_vma)
    check_callable(f, "shard_map")

    @functools.wraps(f)
    def sharded(*args: Any, **kwargs: Any) -> Any:
        return _shard_map_call(f, args, kwargs, mesh, in_specs, out_specs, check_vma)

    return sharded


def _shard_map_call(f, args, kwargs, mesh, in_specs, out_specs, check_vma):
    call = Call(f, "shard_map", args, kwargs)
    gd = call.graphdef
    if isinstance(in_specs, PartitionSpec) or in_specs is None or isinstance(in_specs, StateAxes):
        specs = (in_specs,) * len(args)
    elif isinstance(in_specs, (tuple, list)) and len(in_specs) == len(args):
        specs = tuple(in_specs)
    else:
        raise TransformError(
            f"shard_map: in_specs must give one spec per positional argument ({len(args)}), got {in_specs!r}"
        )

    def leaf_spec(spec: Any, path: tuple, value: Any, name: str) -> PartitionSpec:
        s = resolve(spec, path[1:], value, lambda: call.path_text(path), "shard_map", name, leaf_types=(PartitionSpec,))
        return PartitionSpec() if s is None else s

    leaf_specs = []
    for k, path in enumerate(gd.leaf_paths):
        slot = call.flat.slots[k]
        value = slot if slot is not None else call.leaves[k]
        if path[0] >= call.n_args:
            leaf_specs.append(PartitionSpec())
            continue
        spec = leaf_spec(specs[path[0]], path, value, "in_specs")
        if len(spec) > len(jax.numpy.shape(call.leaves[k])):
            raise AxisError(
                f"shard_map: in_specs gives {call.describe_leaf(k)} the spec {spec}, which has more "
                "entries than the value has axes"
            )
        leaf_specs.append(spec)

    groups_specs = list(dict.fromkeys(_specs_in(specs) + _specs_in(out_specs) + [PartitionSpec()]))
    group_of = {s: i for i, s in enumerate(groups_specs)}
    static: dict = {}

    def inner(leaves: list) -> tuple:
        _, col, flat2 = call.run(list(leaves))
        groups: list[list[int]] = [[] for _ in groups_specs]
        for k2, path in enumerate(col.graphdef.leaf_paths):
            i = col.input_leaf[k2]
            if i >= 0:
                if not col.changed[k2]:
                    continue
                spec = leaf_specs[i]
            else:
                slot = flat2.slots[k2]
                value = slot if slot is not None else flat2.leaves[k2]
                spec = leaf_spec(out_specs if path[0] == col.n_roots else specs[path[0]], path, value, "out_specs")
            groups[group_of[spec]].append(k2)
        static["col"], static["groups"] = col, groups
        return tuple([flat2.leaves[k2] for k2 in g] for g in groups)

    results = jax.shard_map(inner, mesh=mesh, in_specs=(leaf_specs,), out_specs=tuple(groups_specs),
                            check_vma=check_vma)(call.leaves)
    col = static["col"]
    emitted = [k2 for g in static["groups"] for k2 in g]
    values = [v for g_values in results for v in g_values]
    return call.finish(col, emitted, values)
