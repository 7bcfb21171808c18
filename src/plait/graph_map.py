"""Functions that map over a graph's Variables: ``nnx.map``, ``nnx.as_pure``,
``nnx.prefix`` (per-Variable axes for a transform).

``map(f, node)`` calls ``f(path, variable)`` once per Variable (a shared Variable once, at
its first path) and returns a copy of ``node`` holding what ``f`` returned, with the type
and metadata ``f`` gave; sharing is kept. ``as_pure`` replaces Variables by their values in
a pytree (a State). ``prefix`` turns a filter map (or a function of path and Variable) into
the ``in_axes``/``out_axes`` entry plait's transforms take for that argument: a
:class:`~plait.transforms.axes.StateAxes` for a module, the same structure of axes for a
list/dict of Variables.
"""

from __future__ import annotations

import builtins
import warnings
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import jax

from .array_refs import is_mutable_array
from .encoding import flatten, unflatten
from .errors import GraphError, TransformError
from .filters import to_predicate
from .mode import check_graph_mode
from .object import Object
from .transforms.axes import StateAxes
from .variables import Variable

__all__ = ["map", "as_pure", "pure", "prefix", "set_metadata"]

A = TypeVar("A")


def map(f: Callable[[tuple, Variable], Any], node: A, /, *, graph: bool | None = None,  # noqa: A001
        recreate_variables: bool = True) -> A:
    """A copy of ``node`` whose Variables are ``f(path, variable)``; the original is unchanged.

    ``f`` gets a copy of each Variable (the Variable itself with
    ``recreate_variables=False``, so returning it shares it with ``node``) and returns a
    Variable (its type and metadata are kept) or a value for a copy of the old one.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
        >>> zeros = nnx.map(lambda path, v: v.replace(jnp.zeros_like(v.value)), model)
        >>> float(zeros.kernel.value.sum()), float(abs(model.kernel.value).sum()) > 0
        (0.0, True)
    """
    check_graph_mode("nnx.map", graph)
    flat, leaves = flatten((node,))
    leaves = list(leaves)
    reuse: list = [None] * len(flat.objs)
    metas = {}
    for i, obj in enumerate(flat.objs):
        if not isinstance(obj, Variable):
            continue
        given = obj if not recreate_variables else obj.copy()
        new = f(flat.node_paths[i][1:], given)
        if not isinstance(new, Variable):
            new = obj.copy(new)
        elif recreate_variables and new is obj:
            new = obj.copy()
        reuse[i] = new
        metas[i] = new._meta
        leaves[flat.graphdef.nodes[i].leaf] = new._value
    roots, objs = unflatten(flat.graphdef, leaves, reuse=reuse)
    for i, meta in metas.items():
        objs[i]._meta = meta  # unflatten restores the graph's metadata; keep what f gave
    return roots[0]


def as_pure(tree: A) -> A:
    """``tree`` (a pytree such as a State) with every Variable replaced by its raw value.

    Example:
        >>> import jax, plait as nnx
        >>> state = nnx.state(nnx.Linear(2, 3, rngs=nnx.Rngs(0)))
        >>> jax.tree.map(lambda x: x.shape, nnx.as_pure(state)).to_pure_dict()
        {'bias': (3,), 'kernel': (2, 3)}
    """
    if isinstance(tree, Object):
        raise GraphError(
            f"as_pure takes a pytree such as a State, got a {type(tree).__name__} (plait modules are not pytrees).\n"
            "Take its state first: nnx.as_pure(nnx.state(model))"
        )
    def pure_leaf(x: Any) -> Any:
        if isinstance(x, Variable):
            return as_pure(x.raw_value)
        return x[...] if is_mutable_array(x) else x  # a JAX ref: the array it holds

    return jax.tree.map(pure_leaf, tree, is_leaf=lambda x: isinstance(x, Variable))


def pure(tree: A) -> A:
    """Deprecated name of :func:`as_pure` (as in the reference, it warns).

    Example:
        >>> import warnings, jax.numpy as jnp, plait as nnx
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     nnx.pure({"w": nnx.Param(jnp.ones(2))})["w"].tolist()
        [1.0, 1.0]
    """
    warnings.warn("'pure' is deprecated, use 'as_pure' instead.", DeprecationWarning, stacklevel=2)
    return as_pure(tree)


def set_metadata(node: Any, /, *, only: Any = Variable, **metadata: Any) -> None:
    """Set ``metadata`` on every Variable of ``node`` that ``only`` selects, in place.

    Each shared Variable is set once. ``only`` is any filter (a type, a tag, a path
    predicate, ...); the default selects every Variable.

    Example:
        >>> import plait as nnx
        >>> model = nnx.BatchNorm(2, rngs=nnx.Rngs(0))
        >>> nnx.set_metadata(model, only=nnx.Param, frozen=True)
        >>> model.scale.get_metadata("frozen"), model.mean.get_metadata("frozen", None)
        (True, None)
    """
    predicate = to_predicate(only)
    if not metadata:
        return
    flat, _ = flatten((node,))
    for i, obj in enumerate(flat.objs):
        if isinstance(obj, Variable) and predicate(flat.node_paths[i][1:], obj):
            obj.set_metadata(**metadata)


def prefix(node: Any, filter_map: Mapping | Callable[[tuple, Any], Any], /, *, graph: bool | None = None) -> Any:
    """The ``in_axes``/``out_axes`` entry for ``node`` that gives each Variable the axis ``filter_map`` chooses.

    ``filter_map`` is ``{filter: axis}`` (first match wins) or a function ``(path, variable)
    -> axis``. For a module the result is a ``StateAxes``; for a list/tuple/dict it is the
    same structure holding each entry's prefix. Pass a tuple of arguments to get a tuple.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> d = {"a": nnx.Param(jnp.array(2.0)), "b": nnx.BatchStat(jnp.arange(3.0))}
        >>> axes = nnx.prefix(d, {nnx.Param: None, nnx.BatchStat: 0})
        >>> axes
        {'a': None, 'b': 0}
        >>> nnx.vmap(lambda d: d["a"].value * d["b"].value, in_axes=(axes,))(d).tolist()
        [0.0, 2.0, 4.0]
    """
    check_graph_mode("nnx.prefix", graph)
    if isinstance(filter_map, Mapping):
        pairs = [(to_predicate(f), axis) for f, axis in filter_map.items()]

        def choose(path: tuple, leaf: Any) -> Any:
            for predicate, axis in pairs:
                if predicate(path, leaf):
                    return axis
            raise TransformError(
                f"nnx.prefix: no filter matches the {type(leaf).__name__} at `{'.'.join(builtins.map(str, path))}`; "
                f"the filters are {list(filter_map)}.\nAdd a last entry for the rest: {{..., ...: None}}"
            )
    elif callable(filter_map):
        choose = filter_map
    else:
        raise TypeError(f"nnx.prefix takes {{filter: axis}} or a function (path, variable) -> axis, got {filter_map!r}")
    return _prefix(node, (), choose)


def _prefix(value: Any, path: tuple, choose: Callable) -> Any:
    if isinstance(value, Object):
        groups: dict = {}
        flat = flatten((value,))[0]
        for i, obj in enumerate(flat.objs):
            if isinstance(obj, Variable):
                sub = flat.node_paths[i][1:]
                groups.setdefault(choose((*path, *sub), obj), set()).add(sub)
        if not groups:
            return None
        return StateAxes({_AtPaths(frozenset(paths)): axis for axis, paths in groups.items()})
    if isinstance(value, (Variable, jax.Array)):
        return choose(path, value)
    if isinstance(value, tuple) and type(value) is tuple:
        return tuple(_prefix(v, (*path, j), choose) for j, v in enumerate(value))
    if isinstance(value, list):
        return [_prefix(v, (*path, j), choose) for j, v in enumerate(value)]
    if isinstance(value, Mapping):
        return {k: _prefix(v, (*path, k), choose) for k, v in value.items()}
    return None


class _AtPaths:
    """A filter matching Variables at the given paths (relative to the argument)."""

    def __init__(self, paths: frozenset) -> None:
        self.paths = paths

    def __call__(self, path: tuple, value: Any) -> bool:
        return tuple(path) in self.paths

    def __repr__(self) -> str:
        shown = sorted(".".join(builtins.map(str, p)) for p in self.paths)
        return f"AtPaths({shown})"

    def __eq__(self, other: Any) -> bool:
        return type(other) is _AtPaths and other.paths == self.paths

    def __hash__(self) -> int:
        return hash(self.paths)
