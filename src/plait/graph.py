"""Graph functions: ``split``, ``merge``, ``state``, ``update``, ``graphdef``, ``clone``,
``pop``, ``iter_graph``, ``flatten``/``unflatten``, ``iter_children``, ``recursive_map``,
``find_duplicates``.

Each takes a module (or Rngs), a bare Variable, or a plain list, tuple or dict of them, as the
reference does: ``nnx.split([m1, m2])`` gives a State keyed ``0`` and ``1`` and ``merge`` gives
the list back.

They all go through the one graph encoding (:mod:`plait.encoding`): ``split``/``state``
flatten the graph (cached per structure) and copy each Variable into a :class:`~plait.State`;
``merge`` builds a new graph from a GraphDef and States; ``update`` writes States' values into
an existing graph. States made by ``split``/``state`` remember where their leaves sit
(:class:`~plait.state.Origin`), so ``merge``/``update`` take them by position.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax

from . import filterlib  # noqa: F401  (nnx.graph.filterlib, as in the reference)
from .array_refs import is_mutable_array, mutable_array
from .build_code import compile_states
from .encoding import COMPILE_AFTER, OBJ, VAR, Flat, GraphDef, flatten_cached, is_graph_node, sorted_keys, write_leaves
from .encoding import flatten as encode
from .encoding import unflatten as decode
from .errors import FilterError, GraphError
from .filters import Filter, _Predicate, filters_to_predicates
from .mode import check_graph_mode
from .object import Object, closed_over_error, object_trace, trace_state
from .state import FlatState, GraphDefState, Key, Origin, PathParts, State, build, map_state, partition, skeleton
from .variables import Variable, describe

__all__ = ["GraphDef", "split", "merge", "update", "state", "graphdef", "clone", "pop", "iter_graph", "is_graph_node",
           "flatten", "unflatten", "iter_children", "recursive_map", "find_duplicates",
           "Key", "PathParts", "GraphState", "GraphFlatState", "PureState", "FlatState", "State", "Variable", "map_state",
           "filterlib"]

# The reference's type names: a graph's State, its flat form, and a (GraphDef, State) pair.
GraphState = State
GraphFlatState = FlatState
PureState = tuple[GraphDef, State]

_MISSING = object()
_CONTAINERS = (list, tuple, dict)


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
        plan = [parts, groups[-1], 0, None]  # and the leaves no filter selects, uses, generated code
        if structural:
            flat.plans[filters] = plan
    parts, unclaimed, uses, code = plan
    if strict and unclaimed:
        _unclaimed(gd, unclaimed, flat, leaves, filters)
    if code is None and uses + 1 == COMPILE_AFTER and structural:
        code = plan[3] = compile_states(gd, parts, State, Origin)
    if code is not None:
        return code(flat.slots, leaves)
    plan[2] = uses + 1
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


def _origin_values(o: Origin) -> list:
    """The values of an Origin's entries (a Variable's value, or the raw array), in its order."""
    if o.variables is None:  # entries are all Variables (no raw arrays): known once per State
        o.variables = all(isinstance(e, Variable) for e in o.entries)
    if o.variables:
        return list(map(_VALUE, o.entries))
    return [e._value if isinstance(e, Variable) else e for e in o.entries]


def _origin_leaves(graphdef: GraphDef, states: tuple) -> list | None:
    """The leaves of ``graphdef`` taken by position from the States' Origins; None if a State
    has none, or they do not give every leaf exactly once."""
    origins = [_origin(s, graphdef) for s in states]
    if any(o is None for o in origins) or sum(len(o.indices) for o in origins) != graphdef.num_leaves:
        return None
    if len(origins) == 1:
        return _origin_values(origins[0])
    out: list = [_MISSING] * graphdef.num_leaves
    for o in origins:
        for k, e in zip(o.indices, o.entries):
            out[k] = e._value if isinstance(e, Variable) else e
    return None if any(x is _MISSING for x in out) else out


def _check_node(node: Any, what: str) -> None:
    """Refuse what is neither a graph node nor a plain list, tuple or dict (of graph nodes), nor
    a State (a mapping of Variables, e.g. gradients: ``nnx.state(grads, nnx.Param)``)."""
    if isinstance(node, (Object, Variable, State, *_CONTAINERS)):
        return
    raise GraphError(
        f"{what} expects a module, Rngs, Variable, State, or a list, tuple or dict of them; got a "
        f"{type(node).__name__}.\n"
        f"Pass the module itself, e.g. nnx.{what}(model)."
    )


def _flat(node: Any, what: str) -> Flat:
    """The flattening of ``node``: cached for a graph node (its edits are tracked), fresh for a
    plain list, tuple or dict (whose edits are not)."""
    _check_node(node, what)
    if isinstance(node, Object):
        return flatten_cached((node,))
    return encode((node,))[0]


def _variable_states(var: Variable, filters: tuple, strict: bool) -> list:
    """The States of a bare Variable: the Variable itself (a copy) has the empty path, so it is
    given as it is, for the first filter that selects it; an empty State for the others."""
    copy = var.copy()
    if not filters:
        return [copy]
    predicates = filters_to_predicates(filters)
    chosen = next((i for i, p in enumerate(predicates) if p((), copy)), None)
    if chosen is None and strict:
        names = ", ".join(_filter_name(f) for f in filters)
        raise FilterError(f"split({names}): no filter selects the {describe('<root>', var)}. "
                          f"Add `...` as the last filter: nnx.split(variable, {names}, ...)")
    return [copy if i == chosen else State() for i in range(len(filters))]


def split(node: Any, *filters: Filter, graph: bool | None = None) -> tuple:
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
    check_graph_mode("nnx.split", graph)
    flat = _flat(node, "split")
    if isinstance(node, Variable):
        return (flat.graphdef, *_variable_states(node, filters, strict=True))
    return (flat.graphdef, *_states(flat, filters, strict=True))


def _filter_name(f: Any) -> str:
    if isinstance(f, type):
        return f"nnx.{f.__name__}"
    return "..." if f is Ellipsis else repr(f)


def state(node: Any, *filters: Filter, graph: bool | None = None) -> Any:
    """The State of a graph: all of it, or one State per filter (first match wins).

    Example:
        >>> import plait as nnx
        >>> model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
        >>> nnx.state(model, nnx.Param).kernel.value.shape
        (2, 3)
    """
    check_graph_mode("nnx.state", graph)
    if isinstance(node, Variable):
        _check_node(node, "state")
        states = _variable_states(node, filters, strict=False)
    else:
        states = _states(_flat(node, "state"), filters)
    return states[0] if len(states) == 1 else tuple(states)


def graphdef(node: Any, *, graph: bool | None = None) -> GraphDef:
    """The GraphDef of a graph (its static structure).

    Example:
        >>> import plait as nnx
        >>> nnx.graphdef([nnx.Linear(2, 3, rngs=nnx.Rngs(0))]).num_leaves
        2
    """
    check_graph_mode("nnx.graphdef", graph)
    return _flat(node, "graphdef").graphdef


def _flat_entries(states: tuple) -> dict:
    flat: dict = {}
    for s in states:
        if not isinstance(s, State):
            if not isinstance(s, Mapping):
                raise GraphError(f"expected a State, got a {type(s).__name__}")
            s = State(s)
        flat.update(s.flat_state())
    return flat


def merge(graphdef: GraphDef, state: Any = _MISSING, /, *states: Any) -> Any:
    """Build a new graph from a GraphDef and State(s): the inverse of :func:`split`.

    Example:
        >>> import plait as nnx
        >>> model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
        >>> gd, params, rest = nnx.split(model, nnx.Param, ...)
        >>> copy = nnx.merge(gd, params, rest)
        >>> copy is model, bool((copy.kernel.value == model.kernel.value).all())
        (False, True)
    """
    if not states and type(graphdef) is GraphDef and type(state) is State:  # one State split made: by position
        o = state._origin
        if o is not None and o.graphdef is graphdef and o.intact and o.root == id(state) \
                and len(o.indices) == len(graphdef.leaf_nodes) and not _variable_root(graphdef):
            build = graphdef._builder  # the generated code, once this structure was built often
            if build is not None:
                return build(_origin_values(o), trace_state())[0][0]
            return decode(graphdef, _origin_values(o))[0][0]
    if isinstance(graphdef, GraphDefState):  # nnx.merge(*nnx.unpack(node, ...)): the GraphDef travels with them
        graphdef, state, states = _unpacked(graphdef, (state, *states) if state is not _MISSING else ())
    if not isinstance(graphdef, GraphDef):
        raise GraphError(f"merge expects a GraphDef first, got a {type(graphdef).__name__}")
    if state is _MISSING:
        raise GraphError("merge: no State given. Pass the State(s) split gave: nnx.merge(graphdef, state)")
    if _variable_root(graphdef):
        roots, _ = decode(graphdef, [_variable_value(graphdef, (state, *states), "merge")])
        return roots[0]
    leaves = _origin_leaves(graphdef, (state, *states))
    if leaves is None:
        leaves = _leaves_by_path(graphdef, (state, *states))
    roots, _ = decode(graphdef, leaves)
    return roots[0]


def _unpacked(first: GraphDefState, rest: tuple) -> tuple:
    """``(graphdef, state, states)`` from States that :func:`~plait.unpack` made."""
    for s in rest:
        if not isinstance(s, GraphDefState) or not (s.graphdef is first.graphdef or s.graphdef == first.graphdef):
            raise GraphError("merge: given an unpacked State first, every State must come from the same nnx.unpack "
                             "call; pass them all: nnx.merge(*nnx.unpack(model, nnx.Param, ...))")
    return first.graphdef, first, rest


def _variable_root(graphdef: GraphDef) -> bool:
    root = graphdef.roots[0]
    return type(root) is int and graphdef.nodes[root].kind == VAR


def _variable_value(graphdef: GraphDef, states: tuple, what: str) -> Any:
    """The value for a GraphDef that is one bare Variable: from the one Variable (or array)
    given, with empty States (what other filters gave) ignored."""
    given = [s for s in states if not (isinstance(s, Mapping) and not s)]
    if len(given) != 1 or isinstance(given[0], Mapping):
        raise GraphError(
            f"{what}: the graph is a single {graphdef.nodes[graphdef.roots[0]].type.__name__}; pass the Variable "
            f"(or value) that split gave for it: nnx.{what}(graphdef, variable)"
        )
    leaf = given[0]
    return leaf._value if isinstance(leaf, Variable) else leaf


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
    flat = _flat(node, "update")
    gd, given = flat.graphdef, (state, *states)
    origins = [_origin(state, gd)] if not states else [_origin(s, gd) for s in given]
    if not gd.has_raw_leaves and None not in origins:  # leaves by position
        slots = flat.slots
        writes = []
        for o in origins:
            if o.variables is None:  # entries are all Variables (no raw arrays): known once per State
                o.variables = all(isinstance(e, Variable) for e in o.entries)
            if o.variables and all(map(operator.is_, map(_VALUE, o.entries), map(_VALUE, map(slots.__getitem__, o.indices)))):
                continue  # the same arrays, compared without a Python loop: nothing to check or write
            values = _origin_values(o)
            olds = [slots[k]._value for k in o.indices]
            for k, value, old in zip(o.indices, values, olds):
                if value is not old:  # the same array is trivially of the same shape
                    _check_fits(flat, k, old, value)
                    writes.append((k, value))
        if writes:
            _check_trace(node)
        for k, value in writes:  # written only once every value is known to fit
            slots[k]._value = value
        return
    _check_trace(node)
    if isinstance(node, Variable):
        value = _variable_value(gd, given, "update")
        _check_fits(flat, 0, node._value, value)
        node.value = value  # the public setter: refuses a write from inside another trace
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


_VALUE = operator.attrgetter("_value")


def _check_trace(node: Any) -> None:
    if isinstance(node, Object) and object_trace(node) != trace_state():
        raise closed_over_error(f"the state of a {type(node).__name__}", "cannot update", node)


def _check_fits(flat: Flat, k: int, old: Any, new: Any) -> None:
    """A value written by ``update`` keeps the shape and dtype the model has: a State of another
    model's shapes would otherwise turn this model into that one, silently."""
    try:
        old_shape, new_shape, old_dtype, new_dtype = old.shape, new.shape, old.dtype, new.dtype
    except AttributeError:  # not arrays (a Python number, a pytree held by a Variable): nothing to compare
        return
    if old_shape == new_shape and old_dtype == new_dtype:
        return
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


def clone(node: Any, variables: bool = True, *, arrays: bool = False, graph: bool | None = None) -> Any:
    """A deep copy of a graph: new modules and (by default) new Variables, sharing inside it
    preserved. The arrays are shared with the original unless ``arrays=True``, which copies
    them too (needed to donate the clone's buffers to ``jit``).

    ``variables=False`` shares the Variables themselves with the original (only the modules and
    containers are new); it cannot be combined with ``arrays=True``.

    Example:
        >>> import plait as nnx
        >>> model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
        >>> copy = nnx.clone(model)
        >>> copy is model, copy.kernel is model.kernel, copy.kernel.value is model.kernel.value
        (False, False, True)
        >>> nnx.clone(model, arrays=True).kernel.value is model.kernel.value
        False
    """
    check_graph_mode("nnx.clone", graph)
    if arrays and not variables:
        raise GraphError("clone(arrays=True) copies the arrays into new Variables; it cannot share the Variables "
                         "(variables=False) too. Use nnx.clone(node, arrays=True).")
    flat = _flat(node, "clone")
    leaves = flat.current_leaves()
    if arrays:
        leaves = [jax.numpy.array(x, copy=True) if isinstance(x, jax.Array) else x for x in leaves]
    if variables:  # a ref is a mutable buffer: new Variables get their own, or the clone would write the original
        leaves = [mutable_array(x[...]) if is_mutable_array(x) else x for x in leaves]
        roots, _ = decode(flat.graphdef, leaves)
        return roots[0]
    if isinstance(node, Variable):
        return node
    # Reuse only the Variables: writing each its own value back changes nothing.
    reuse = [obj if isinstance(obj, Variable) else None for obj in flat.objs]
    roots, _ = decode(flat.graphdef, leaves, reuse=reuse)
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
    flat = _flat(node, "pop")
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


def iter_graph(node: Any, *, graph: bool | None = None) -> Iterator[tuple[tuple, Any]]:
    """Yield ``(path, value)`` for every Object, Variable and array, children first.

    Each shared object is visited once, at its first path. ``node`` may also be a tuple,
    list or dict holding modules.

    Example:
        >>> import plait as nnx
        >>> model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
        >>> [p for p, v in nnx.iter_graph(model) if isinstance(v, nnx.Param)]
        [('bias',), ('kernel',)]
    """
    check_graph_mode("nnx.iter_graph", graph)
    flat, leaves = encode((node,))
    gd = flat.graphdef
    for kind, i in flat.post:
        if kind == "node":
            yield flat.node_paths[i][1:], flat.objs[i]
        else:
            yield gd.leaf_paths[i][1:], leaves[i]


def flatten(node: Any, /, *, with_paths: bool = True) -> tuple[GraphDef, Any]:
    """A graph as ``(graphdef, flat_state)``: the reference's ``nnx.graph.flatten``.

    ``flat_state`` is a :class:`~plait.state.FlatState` of ``(path, Variable)`` pairs (copies of
    the graph's Variables) sorted by path; with ``with_paths=False`` it is the list of leaf
    values in the GraphDef's order, which :func:`unflatten` takes by position.

    Example:
        >>> import plait as nnx
        >>> gd, flat = nnx.graph.flatten(nnx.Linear(2, 3, rngs=nnx.Rngs(0)))
        >>> flat.paths
        (('bias',), ('kernel',))
        >>> gd, leaves = nnx.graph.flatten(nnx.Linear(2, 3, rngs=nnx.Rngs(0)), with_paths=False)
        >>> type(nnx.graph.unflatten(gd, leaves)).__name__
        'Linear'
    """
    flat = _flat(node, "flatten")
    if not with_paths:
        return flat.graphdef, flat.current_leaves()
    if isinstance(node, Variable):
        return flat.graphdef, FlatState([((), node.copy())], sort=False)
    st = _states(flat, ())[0]
    return flat.graphdef, FlatState(st.flat_state(), sort=True)


def unflatten(graphdef: GraphDef, state: Any, /) -> Any:
    """Build a graph from a GraphDef and a State, dict, FlatState, or a list of leaf values in
    the GraphDef's order (what ``flatten(..., with_paths=False)`` gives).

    Example:
        >>> import plait as nnx
        >>> gd, flat = nnx.graph.flatten([nnx.Linear(2, 3, rngs=nnx.Rngs(0))])
        >>> type(nnx.graph.unflatten(gd, flat)[0]).__name__
        'Linear'
    """
    if not isinstance(graphdef, GraphDef):
        raise GraphError(f"unflatten expects a GraphDef first, got a {type(graphdef).__name__}")
    if isinstance(state, FlatState):
        if _variable_root(graphdef):
            return merge(graphdef, state.leaves[0])
        return merge(graphdef, state.to_nested_state())
    if isinstance(state, list):
        if len(state) != graphdef.num_leaves:
            raise GraphError(f"unflatten: the GraphDef has {graphdef.num_leaves} leaves, but {len(state)} were given")
        roots, _ = decode(graphdef, [x._value if isinstance(x, Variable) else x for x in state])
        return roots[0]
    return merge(graphdef, state)


def _children(node: Any, what: str) -> Iterator[tuple[Any, Any]]:
    if isinstance(node, Object):  # the reference's order: attributes and keys sorted
        attrs, order = node.__dict__, type(node)._plait_attr_order
        return iter([(name, attrs[name]) for name in (sorted(attrs) if order is None else order(node))])
    if isinstance(node, dict):
        return iter([(key, node[key]) for key in sorted_keys(node)])
    if isinstance(node, (list, tuple)):
        return iter(list(enumerate(node)))
    raise GraphError(f"{what} expects a module, Rngs, or a list, tuple or dict; got a {type(node).__name__}")


def iter_children(node: Any, /) -> Iterator[tuple[Key, Any]]:
    """Yield ``(key, child)`` for the direct children of ``node`` that are graph nodes (modules,
    Rngs, Variables), and its list and dict attributes (which the reference makes nodes too).
    Unlike :func:`iter_graph` it does not recurse.

    Example:
        >>> import plait as nnx
        >>> [(k, type(v).__name__) for k, v in nnx.iter_children(nnx.Linear(2, 3, rngs=nnx.Rngs(0)))]
        [('bias', 'Param'), ('kernel', 'Param')]
    """
    for key, value in _children(node, "iter_children"):
        if is_graph_node(value) or (isinstance(node, Object) and isinstance(value, (list, dict))):
            yield key, value


def recursive_map(f: Callable[[PathParts, Any], Any], node: Any, /) -> Any:
    """Apply ``f(path, value)`` to every value of a graph, children before their parent, and
    return the result for the root. It works on a copy (:func:`clone` with the Variables
    shared): where ``f`` returns a new value, the copy's attribute is set to it. A module or
    Variable reached by two paths is mapped once.

    Example:
        >>> import plait as nnx
        >>> class M(nnx.Module):
        ...     def __init__(self, rngs):
        ...         self.a = nnx.Linear(2, 2, rngs=rngs)
        ...         self.b = nnx.Linear(2, 2, rngs=rngs)
        >>> wider = lambda path, v: nnx.Linear(2, 5, rngs=nnx.Rngs(1)) if path == ("b",) else v
        >>> m = nnx.recursive_map(wider, M(nnx.Rngs(0)))
        >>> m.a.kernel.value.shape, m.b.kernel.value.shape
        ((2, 2), (2, 5))
    """
    _check_node(node, "recursive_map")
    copy = clone(node, variables=False)
    done: dict = {}
    return _map_into(f, copy, (), done, set())


def _map_into(f: Callable, value: Any, path: tuple, done: dict, active: set) -> Any:
    key = id(value)
    identity = is_graph_node(value)
    if identity and key in done:
        return done[key]
    if key in active:
        raise GraphError(f"recursive_map: a cycle at `{_path_text(path)}` ({type(value).__name__}); "
                         "recursive_map needs a graph without cycles")
    if isinstance(value, (Object, *_CONTAINERS)) and not isinstance(value, Variable):
        active.add(key)
        changed = {}
        for k, child in _children(value, "recursive_map"):
            new = _map_into(f, child, (*path, k), done, active)
            if new is not child:
                changed[k] = new
        active.discard(key)
        if changed:
            if isinstance(value, tuple):
                value = type(value)(*(changed.get(i, c) for i, c in enumerate(value))) if hasattr(value, "_fields") \
                    else type(value)(changed.get(i, c) for i, c in enumerate(value))
            else:
                for k, new in changed.items():
                    if isinstance(value, Object):
                        setattr(value, k, new)
                    else:
                        value[k] = new
    out = f(path, value)
    if identity:
        done[key] = out
    return out


def find_duplicates(node: Any, /, *, only: Filter = ...) -> list[list[PathParts]]:
    """The paths of every module or Variable reached by more than one path (shared sub-modules,
    tied weights), one list per shared object, first path first. ``only`` limits it to what a
    filter selects.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> class Tied(nnx.Module):
        ...     def __init__(self):
        ...         self.a = nnx.Param(jnp.ones(2))
        ...         self.b = self.a
        >>> nnx.find_duplicates(Tied())
        [[('a',), ('b',)]]
    """
    _check_node(node, "find_duplicates")
    flat, _ = encode((node,))
    gd = flat.graphdef
    predicate = filters_to_predicates((only,))[0]
    paths: dict[int, list] = {}
    for n, path in gd.revisits:
        if n not in paths:
            paths[n] = [gd.node_paths[n][1:]]
        paths[n].append(path[1:])
    out = []
    for n, found in paths.items():
        obj = flat.objs[n]
        kept = [p for p in found if predicate(p, obj)]
        if len(kept) > 1:
            out.append(kept)
    return out


class _ApplyCaller:
    """What ``graphdef.apply(state)`` returns: attribute and item access pick the method; the
    call merges, calls it, and returns ``(output, (graphdef, state))`` after the call."""

    __slots__ = ("_graphdef", "_states", "_access")

    def __init__(self, graphdef: GraphDef, states: tuple, access: tuple = ()) -> None:
        self._graphdef, self._states, self._access = graphdef, states, access

    def __getattr__(self, name: str) -> _ApplyCaller:
        if name.startswith("__"):
            raise AttributeError(name)
        return _ApplyCaller(self._graphdef, self._states, (*self._access, (True, name)))

    def __getitem__(self, key: Any) -> _ApplyCaller:
        return _ApplyCaller(self._graphdef, self._states, (*self._access, (False, key)))

    def __call__(self, *args: Any, **kwargs: Any) -> tuple[Any, tuple[GraphDef, State]]:
        node = merge(self._graphdef, *self._states)
        fn = node
        for is_attr, key in self._access:
            fn = getattr(fn, key) if is_attr else fn[key]
        out = fn(*args, **kwargs)
        gd, st = split(node)
        return out, (gd, st)


def _apply(self: GraphDef, state: Any, /, *states: Any) -> _ApplyCaller:
    """Call a method of the graph ``merge(self, state, *states)`` builds, functionally:
    ``graphdef.apply(state).method(x)`` returns ``(output, (graphdef, state))`` with the state
    after the call; the inputs are not changed.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> gd, st = nnx.split(nnx.Linear(2, 3, rngs=nnx.Rngs(0)))
        >>> y, (gd2, st2) = gd.apply(st)(jnp.ones((1, 2)))
        >>> y.shape, gd2 == gd
        ((1, 3), True)
    """
    return _ApplyCaller(self, (state, *states))


GraphDef.apply = _apply  # type: ignore[attr-defined]  # GraphDef lives in the encoding; its methods that use merge live here
