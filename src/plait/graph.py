"""Graph functions: ``split``, ``merge``, ``state``, ``update``, ``graphdef``, ``clone``,
``pop``, ``iter_graph``.

They all go through the one graph encoding (:mod:`plait.encoding`): ``split``/``state``
flatten the graph (cached per structure) and copy each Variable into a :class:`~plait.State`;
``merge`` builds a new graph from a GraphDef and States; ``update`` writes States' values into
an existing graph. States made by ``split``/``state`` remember where their leaves sit
(:class:`~plait.state.Origin`), so ``merge``/``update`` take them by position.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from .encoding import OBJ, Flat, GraphDef, flatten, flatten_cached, is_graph_node, path_text, unflatten, write_leaves
from .errors import FilterError, GraphError
from .filters import Filter, _Predicate
from .object import Object, closed_over_error, trace_state
from .state import Origin, State, build, partition, skeleton
from .variables import Variable, describe

__all__ = ["GraphDef", "split", "merge", "update", "state", "graphdef", "clone", "pop", "iter_graph", "is_graph_node"]

_MISSING = object()
_path_text = path_text



def _path_text(path: tuple) -> str:
    return ".".join(str(p) for p in path) if path else "<root>"


def _states(flat: Flat, filters: tuple, strict: bool = False) -> list[State]:
    """One State per filter (all state if none) of the graph ``flat`` describes.

    Each leaf goes to the first filter that selects it (with ``strict``, one must); Variables
    are copied. Which leaf goes where, and the nesting of each State, depend only on the
    structure when the filters are structural (types, tags, paths), so they are worked out
    once per cached flattening; each State remembers its :class:`~plait.state.Origin`.
    """
    gd = flat.graphdef
    structural = not filters or all(_structural(f) for f in filters)
    plan = flat.plans.get(filters) if structural else None
    leaves = flat.current_leaves() if gd.has_raw_leaves else None
    if plan is None:
        if filters:
            values = [leaves[k] if s is None else s for k, s in enumerate(flat.slots)] if leaves else flat.slots
            entries = [(p[1:], values[k]) for k, p in enumerate(gd.leaf_paths)]
            groups = partition(entries, filters)
        else:
            groups = [list(range(gd.num_leaves)), []]
        parts = [(tuple(g), skeleton([gd.leaf_paths[k][1:] for k in g])) for g in groups[:-1]]
        plan = (parts, groups[-1])  # and the leaves no filter selects
        if structural:
            flat.plans[filters] = plan
    parts, unclaimed = plan
    if strict and unclaimed:
        _unclaimed(gd, unclaimed, flat, leaves, filters)
    slots, new = flat.slots, object.__new__
    out = []
    for indices, skel in parts:
        entries = []
        for k in indices:
            s = slots[k]
            if s is None:
                entries.append(leaves[k])  # type: ignore[index]
                continue
            v = new(type(s))
            v._value = s._value
            v._meta = s._meta  # shared: metadata is replaced, never edited
            v._plait_seen = False
            v._trace = None
            entries.append(v)
        origin = Origin(gd, indices, entries)
        st = build(skel, entries, origin)
        origin.root = id(st)
        out.append(st)
    return out


def _structural(f: Filter) -> bool:
    """A filter whose choice depends only on the structure (types, tags, paths), and that is
    a safe cache key (no bools or ints, which would collide: ``True == 1``)."""
    if f is Ellipsis or f is None or isinstance(f, (type, str, _Predicate)):
        return True
    return type(f) is tuple and all(_structural(g) for g in f)


def _unclaimed(gd: GraphDef, rest: list, flat: Flat, leaves: list | None, filters: tuple) -> None:
    def value(k: int) -> Any:
        return flat.slots[k] if flat.slots[k] is not None else leaves[k]  # type: ignore[index]

    left = "\n".join("  " + describe(_path_text(gd.leaf_paths[k][1:]), value(k)) for k in rest[:10])
    more = f"\n  ... and {len(rest) - 10} more" if len(rest) > 10 else ""
    names = ", ".join(_filter_name(f) for f in filters)
    raise FilterError(
        f"split({names}) leaves {len(rest)} Variable(s) unclaimed:\n{left}{more}\n"
        f"Every Variable must match one filter. Add `...` as the last filter to collect the "
        f"rest: nnx.split(model, {names}, ...)"
    )


def _origin(state: Any, graphdef: GraphDef) -> Origin | None:
    """The :class:`~plait.state.Origin` of ``state`` if it is a State that :func:`split` or
    :func:`state` made for a graph of ``graphdef``'s structure, not edited since; else None."""
    o = state._origin if type(state) is State else None
    if o is None or not o.of(state) or not (o.graphdef is graphdef or o.graphdef == graphdef):
        return None
    return o


def _origin_leaves(graphdef: GraphDef, states: tuple) -> list | None:
    """The leaves of ``graphdef`` taken by position from the States' Origins; None if a State
    has none, or they do not give every leaf exactly once."""
    origins = [_origin(s, graphdef) for s in states]
    if any(o is None for o in origins) or sum(len(o.indices) for o in origins) != graphdef.num_leaves:
        return None
    if len(origins) == 1:
        return [e._value if isinstance(e, Variable) else e for e in origins[0].entries]
    out: list = [_MISSING] * graphdef.num_leaves
    for o in origins:
        for k, e in zip(o.indices, o.entries):
            out[k] = e._value if isinstance(e, Variable) else e
    return None if any(x is _MISSING for x in out) else out


def _check_node(node: Any, what: str) -> None:
    if isinstance(node, Variable):
        raise GraphError(
            f"{what} expects a module or Rngs; a {type(node).__name__} on its own has no paths to put in a State.\n"
            "Use variable.value, variable.copy(), or pass the module that holds it."
        )
    if not isinstance(node, Object):
        raise GraphError(
            f"{what} expects a module or Rngs, got a {type(node).__name__}.\n"
            "Pass the module itself, e.g. nnx.state(model)."
        )


def split(node: Any, *filters: Filter) -> tuple:
    """Split a graph into its GraphDef and one State per filter (all state if none).

    Filters are tried in order and the first that matches takes a Variable; with filters,
    every Variable must be taken by one of them (end with ``...`` to collect the rest).

    Example:
        >>> import plait as nnx
        >>> model = nnx.Dropout(0.5, rngs=nnx.Rngs(0))
        >>> gd, rng_state = nnx.split(model, nnx.RngState)
        >>> sorted(rng_state["rngs"]["default"])
        ['count', 'key']
    """
    _check_node(node, "split")
    flat = flatten_cached((node,))
    return (flat.graphdef, *_states(flat, filters, strict=True))


def _filter_name(f: Any) -> str:
    if isinstance(f, type):
        return f"nnx.{f.__name__}"
    return "..." if f is Ellipsis else repr(f)


def state(node: Any, *filters: Filter) -> Any:
    """The State of a graph: all of it, or one State per filter (first match wins).

    Example:
        >>> import plait as nnx
        >>> model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
        >>> nnx.state(model, nnx.Param).kernel.value.shape
        (2, 3)
    """
    _check_node(node, "state")
    states = _states(flatten_cached((node,)), filters)
    return states[0] if len(states) == 1 else tuple(states)


def graphdef(node: Any) -> GraphDef:
    """The GraphDef of a graph (its static structure)."""
    _check_node(node, "graphdef")
    return flatten_cached((node,)).graphdef


def _flat_entries(states: tuple) -> dict:
    flat: dict = {}
    for s in states:
        if not isinstance(s, State):
            if not isinstance(s, Mapping):
                raise GraphError(f"expected a State, got a {type(s).__name__}")
            s = State(s)
        flat.update(s.flat_state())
    return flat


def merge(graphdef: GraphDef, state: Any, /, *states: Any) -> Any:
    """Build a new graph from a GraphDef and State(s): the inverse of :func:`split`.

    Example:
        >>> import plait as nnx
        >>> model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
        >>> gd, params, rest = nnx.split(model, nnx.Param, ...)
        >>> copy = nnx.merge(gd, params, rest)
        >>> copy is model, bool((copy.kernel.value == model.kernel.value).all())
        (False, True)
    """
    if not isinstance(graphdef, GraphDef):
        raise GraphError(f"merge expects a GraphDef first, got a {type(graphdef).__name__}")
    leaves = _origin_leaves(graphdef, (state, *states))
    if leaves is None:
        leaves = _leaves_by_path(graphdef, (state, *states))
    roots, _ = unflatten(graphdef, leaves)
    return roots[0]


def _leaves_by_path(graphdef: GraphDef, states: tuple) -> list:
    given = _flat_entries(states)
    leaves = []
    missing = []
    for path in graphdef.leaf_paths:
        leaf = given.pop(path[1:], _MISSING)
        if leaf is _MISSING:
            missing.append(path[1:])
            leaves.append(None)
        else:
            leaves.append(leaf._value if isinstance(leaf, Variable) else leaf)
    if missing:
        shown = ", ".join(f"`{_path_text(p)}`" for p in missing[:8])
        raise GraphError(
            f"merge: the state has no value for {len(missing)} path(s) of the GraphDef: {shown}.\n"
            "Pass every State that split returned: nnx.merge(graphdef, params, rest)"
        )
    if given:
        shown = ", ".join(f"`{_path_text(p)}`" for p in list(given)[:8])
        raise GraphError(f"merge: the state has path(s) the GraphDef does not have: {shown}")
    return leaves


def update(node: Any, state: Any, /, *states: Any) -> None:
    """Write the values of State(s) into an existing graph, in place.

    Example:
        >>> import jax, plait as nnx
        >>> model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
        >>> params = nnx.state(model, nnx.Param)
        >>> nnx.update(model, jax.tree.map(lambda x: 0 * x, params))
        >>> float(model.kernel.value.sum())
        0.0
    """
    _check_node(node, "update")
    if node._plait_trace != trace_state():
        raise closed_over_error(f"the state of a {type(node).__name__}", "cannot update", node)
    flat = flatten_cached((node,))
    gd, given = flat.graphdef, (state, *states)
    origins = [_origin(s, gd) for s in given]
    if not gd.has_raw_leaves and all(o is not None for o in origins):  # leaves by position
        slots = flat.slots
        for o in origins:
            for k, e in zip(o.indices, o.entries):
                value = e._value if isinstance(e, Variable) else e
                _check_fits(flat, k, slots[k]._value, value)
        for o in origins:
            for k, e in zip(o.indices, o.entries):
                slots[k]._value = e._value if isinstance(e, Variable) else e
        return
    index = gd.path_index()
    updates = {}
    current = flat.current_leaves()
    for path, leaf in _flat_entries((state, *states)).items():
        k = index.get(path)
        if k is None:
            close = [p for p in index if p[: len(path) - 1] == path[:-1]][:5]
            hint = f" Paths next to it: {', '.join(_path_text(p) for p in close)}." if close else ""
            raise GraphError(
                f"update: `{_path_text(path)}` is not a Variable or array of this graph.{hint}\n"
                "update only writes values into Variables the model has. To add one, set it on its module: "
                f"model.{_path_text(path)} = nnx.Param(value) (or the Variable type it should have)."
            )
        updates[k] = leaf._value if isinstance(leaf, Variable) else leaf
        _check_fits(flat, k, current[k], updates[k])
    write_leaves(flat, updates)


def _check_fits(flat: Flat, k: int, old: Any, new: Any) -> None:
    """A value written by ``update`` keeps the shape and dtype the model has: a State of another
    model's shapes would otherwise turn this model into that one, silently."""
    old_shape, new_shape = getattr(old, "shape", None), getattr(new, "shape", None)
    if old_shape is None or new_shape is None:
        return
    old_dtype, new_dtype = getattr(old, "dtype", None), getattr(new, "dtype", None)
    if tuple(old_shape) == tuple(new_shape) and old_dtype == new_dtype:
        return
    path = _path_text(flat.graphdef.leaf_paths[k][1:])
    slot = flat.slots[k]
    kind = type(slot).__name__ if slot is not None else "array"
    raise GraphError(
        f"update: `{path}` ({kind}) has shape {tuple(old_shape)} and dtype {old_dtype}, but the state gives "
        f"shape {tuple(new_shape)} and dtype {new_dtype}.\n"
        "update writes values into the model as it is. Check that the state comes from a model of the same "
        "configuration; convert the dtype with .astype if that is all that differs. To change the shape on "
        f"purpose (model surgery), set the Variable itself: model.{path}.value = new_value "
        f"(or model.{path} = nnx.{kind if slot is not None else 'Param'}(new_value))."
    )


def clone(node: Any) -> Any:
    """A deep copy of a graph (sharing inside it is preserved; arrays are shared).

    Example:
        >>> import plait as nnx
        >>> model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
        >>> copy = nnx.clone(model)
        >>> copy is model, copy.kernel is model.kernel
        (False, False)
    """
    if isinstance(node, Variable):
        return node.copy()
    _check_node(node, "clone")
    flat = flatten_cached((node,))
    roots, _ = unflatten(flat.graphdef, flat.current_leaves())
    return roots[0]


def pop(node: Any, *filters: Filter) -> Any:
    """Remove the Variables the filters select from the graph and return them as State.

    A Variable reachable by several paths is removed from all of them.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> class M(nnx.Module):
        ...     def __init__(self):
        ...         self.seen = nnx.Intermediate(jnp.ones(2))
        >>> m = M(); popped = nnx.pop(m, nnx.Intermediate)
        >>> hasattr(m, "seen"), popped.seen.value.shape
        (False, (2,))
    """
    if not filters:
        raise GraphError("pop needs at least one filter, e.g. nnx.pop(model, nnx.Intermediate)")
    found = state(node, *filters)
    found_states = found if isinstance(found, tuple) else (found,)
    flat = flatten_cached((node,))
    gd = flat.graphdef
    index = gd.path_index()
    doomed = set()
    for s in found_states:
        for path, _ in s.flat_state():
            n = gd.leaf_nodes[index[path]]
            if n < 0:
                raise GraphError(f"pop: `{_path_text(path)}` is a plain array, not a Variable; only Variables can be popped")
            doomed.add(n)
    for i, nd in enumerate(gd.nodes):
        if nd.kind != OBJ:
            continue
        obj = flat.objs[i]
        for name, ref in nd.attributes:
            if type(ref) is int and ref in doomed:
                delattr(obj, name)
            elif type(ref) is not int:
                _remove_refs(obj.__dict__[name], ref, doomed, name)
    return found


def _remove_refs(value: Any, ref: Any, doomed: set, where: Any) -> None:
    """Delete entries of containers that point to doomed nodes (dicts only; lists would shift)."""
    tag = ref[0]
    if tag == "dict":
        for key, r in zip(ref[2], ref[3]):
            if type(r) is int and r in doomed:
                del value[key]
            elif type(r) is not int:
                _remove_refs(value[key], r, doomed, key)
    elif tag in ("list", "tuple"):
        refs = ref[2] if tag == "list" else ref[1]
        for j, r in enumerate(refs):
            if type(r) is int and r in doomed:
                raise GraphError(f"pop: cannot remove a Variable from a {tag} (at {where!r}[{j}]); hold it in an attribute or a dict")
            if type(r) is not int:
                _remove_refs(value[j], r, doomed, j)


def iter_graph(node: Any) -> Iterator[tuple[tuple, Any]]:
    """Yield ``(path, value)`` for every Object, Variable and array, children first.

    Each shared object is visited once, at its first path. ``node`` may also be a tuple,
    list or dict holding modules.

    Example:
        >>> import plait as nnx
        >>> model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
        >>> [p for p, v in nnx.iter_graph(model) if isinstance(v, nnx.Param)]
        [('kernel',), ('bias',)]
    """
    flat, leaves = flatten((node,))
    gd = flat.graphdef
    for kind, i in flat.post:
        if kind == "node":
            yield flat.node_paths[i][1:], flat.objs[i]
        else:
            yield gd.leaf_paths[i][1:], leaves[i]
