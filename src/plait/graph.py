"""The one path between a module graph and (structure, leaves).

:func:`flatten` walks a tuple of *roots* (modules, Variables, Rngs, and any lists, tuples,
dicts or pytrees holding them) depth first and returns a :class:`GraphDef`, the static
structure, plus the leaves: each Variable's value once, and raw arrays. Every graph node
(Object or Variable) gets an index on first visit; a second visit records a reference to
that index, which is how shared sub-modules, tied weights and cycles survive a round trip.

:func:`unflatten` rebuilds objects from a GraphDef and leaves. Given ``reuse`` (existing
objects by node index) it writes into those objects instead of creating new ones: that is
how transforms write state and structure changes back to the caller's objects, and how an
output that is an input object comes back as that same object.

``split``/``merge``/``state``/``update``/``clone``/``pop`` and every transform use these two
functions; nothing else walks the object graph. Flattening a module whose structure has not
changed since the last call is served from a cache (see :mod:`plait.object`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import jax
import numpy as np

from . import object as _object
from .errors import AxisError, GraphError
from .filters import Filter, _Predicate
from .object import Dict, List, Object, trace_state
from .state import Origin, State, build, partition, skeleton
from .variables import Variable

__all__ = [
    "GraphDef",
    "Flat",
    "flatten",
    "flatten_cached",
    "unflatten",
    "split",
    "merge",
    "update",
    "state",
    "graphdef",
    "clone",
    "pop",
    "iter_graph",
    "is_graph_node",
]

VAR, OBJ = 0, 1  # node kinds
ARRAY_TYPES = (jax.Array, np.ndarray)
_MISSING = object()
_SIMPLE_STATIC = (int, float, bool, str, complex, bytes, type(None), type(Ellipsis))


def is_graph_node(x: Any) -> bool:
    """True for Objects (modules, Rngs) and Variables: things with identity in a graph."""
    return isinstance(x, (Object, Variable))


class _ByIdentity:
    """Wraps an unhashable static attribute so a GraphDef stays hashable."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __eq__(self, other: Any) -> bool:
        return type(other) is _ByIdentity and other.value is self.value

    def __hash__(self) -> int:
        return id(self.value)

    def __repr__(self) -> str:
        return repr(self.value)


class GraphDef:
    """The static structure of a module graph: types, static attributes, shape of sharing.

    Equal GraphDefs describe graphs that can exchange leaves. It is hashable, so it can
    key compilation caches.

    Example:
        >>> import plait as nnx
        >>> gd, params = nnx.split(nnx.Linear(2, 2, rngs=nnx.Rngs(0)))
        >>> gd == nnx.graphdef(nnx.Linear(2, 2, rngs=nnx.Rngs(1)))  # same structure
        True
        >>> gd == nnx.graphdef(nnx.Linear(2, 3, rngs=nnx.Rngs(0)))  # static attribute differs
        False
        >>> model = nnx.merge(gd, params); type(model).__name__
        'Linear'
    """

    __slots__ = ("nodes", "roots", "leaf_paths", "leaf_nodes", "leaf_owners", "has_raw_leaves", "_hash", "_path_index",
                 "_plan")

    def __init__(self, nodes: tuple, roots: tuple, leaf_paths: tuple, leaf_nodes: tuple, leaf_owners: tuple) -> None:
        self.nodes = nodes
        self.roots = roots
        self.leaf_paths = leaf_paths  # per leaf: (root index, *path)
        self.leaf_nodes = leaf_nodes  # per leaf: node index of its Variable, or -1 for a raw array
        self.leaf_owners = leaf_owners  # per leaf: (object node index, attribute) holding it, or None
        self.has_raw_leaves = -1 in leaf_nodes
        self._hash: int | None = None
        self._path_index: dict | None = None
        self._plan: tuple | None = None  # how to build new objects from leaves (see _build_new)

    def __eq__(self, other: Any) -> bool:
        if self is other:
            return True
        return type(other) is GraphDef and self.roots == other.roots and self.nodes == other.nodes

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash((self.nodes, self.roots))
        return self._hash

    # Pickled without its caches (hash, path index, build plan): they are rebuilt on use.
    def __getstate__(self) -> tuple:
        return (self.nodes, self.roots, self.leaf_paths, self.leaf_nodes, self.leaf_owners)

    def __setstate__(self, state: tuple) -> None:
        self.__init__(*state)

    @property
    def num_leaves(self) -> int:
        return len(self.leaf_nodes)

    def path_index(self) -> dict:
        """``{path relative to root 0: leaf index}``, built once."""
        if self._path_index is None:
            self._path_index = {p[1:]: k for k, p in enumerate(self.leaf_paths)}
        return self._path_index

    def __repr__(self) -> str:
        kinds = [nd[1].__name__ for nd in self.nodes if nd[0] == OBJ]
        return f"GraphDef(objects={kinds}, leaves={self.num_leaves})"


# A GraphDef is static: as a pytree it has no leaves, so (graphdef, state) pairs pass
# through raw jax.jit and jax.tree functions.
jax.tree_util.register_pytree_node(GraphDef, lambda gd: ((), gd), lambda gd, _: gd)


class Flat:
    """A flattening: the GraphDef, the node objects by index, and the leaves."""

    __slots__ = ("graphdef", "objs", "leaves", "slots", "cacheable", "node_paths", "post", "plans")

    def __init__(self, graphdef: GraphDef, objs: list, leaves: list, cacheable: bool = True,
                 node_paths: list | None = None, post: list | None = None) -> None:
        self.graphdef = graphdef
        self.node_paths = node_paths or []
        self.post = post or []
        self.cacheable = cacheable and not graphdef.has_raw_leaves
        self.objs = objs
        self.leaves = leaves
        # The Variable that holds each leaf (None for raw arrays): where values are written.
        self.slots = [objs[n] if n >= 0 else None for n in graphdef.leaf_nodes]
        self.plans: dict = {}  # filters -> how state/split lay out their States (see _states)

    def current_leaves(self) -> list:
        """The leaves as they are now (values may have been written since flattening)."""
        if self.graphdef.has_raw_leaves:
            return flatten(tuple(_roots_of(self)))[0].leaves
        return [v._value for v in self.slots]


def _roots_of(flat: Flat) -> list:
    return [flat.objs[r] if type(r) is int else _MISSING for r in flat.graphdef.roots]


class _Flattener:
    __slots__ = ("nodes", "objs", "index", "leaves", "leaf_paths", "leaf_nodes", "leaf_owners", "owner", "untracked",
                 "node_paths", "post")

    def __init__(self) -> None:
        self.nodes: list = []
        self.objs: list = []
        self.index: dict[int, int] = {}
        self.leaves: list = []
        self.leaf_paths: list = []
        self.leaf_nodes: list = []
        self.leaf_owners: list = []
        self.owner: tuple | None = None
        # A plain list/dict inside a module (e.g. in a NamedTuple attribute) can change without
        # telling anyone, so a flattening that contains one must not be cached.
        self.untracked = False
        self.node_paths: list = []  # path of each node at its first visit
        self.post: list = []  # ("node", i) / ("leaf", k), children before parents (for iter_graph)

    def ref(self, value: Any, path: tuple) -> Any:
        if isinstance(value, Variable):
            i = self.index.get(id(value))
            if i is not None:
                return i
            i = len(self.nodes)
            self.index[id(value)] = i
            self.objs.append(value)
            value._plait_seen = True
            k = len(self.leaves)
            self.leaves.append(value._value)
            self.leaf_paths.append(path)
            self.leaf_nodes.append(i)
            self.leaf_owners.append(self.owner)
            meta = value._meta
            self.nodes.append((VAR, type(value), _static_items(meta) if meta else (), k))
            self.node_paths.append(path)
            self.post.append(("node", i))
            return i
        if isinstance(value, Object):
            i = self.index.get(id(value))
            if i is not None:
                return i
            i = len(self.nodes)
            self.index[id(value)] = i
            self.objs.append(value)
            self.nodes.append(None)
            self.node_paths.append(path)
            object.__setattr__(value, "_plait_seen", True)
            saved = self.owner
            items = []
            for name, attr in value.__dict__.items():
                self.owner = (i, name)
                items.append((name, self.ref(attr, path + (name,))))
            self.owner = saved
            self.nodes[i] = (OBJ, type(value), tuple(items))
            self.post.append(("node", i))
            return i
        t = type(value)
        if (t is list or t is dict) and self.owner is not None:
            self.untracked = True
        if t is list or t is List:
            return ("list", t, tuple([self.ref(v, path + (j,)) for j, v in enumerate(value)]))
        if t is tuple:
            return ("tuple", tuple([self.ref(v, path + (j,)) for j, v in enumerate(value)]))
        if t is dict or t is Dict:
            keys = tuple(value)
            return ("dict", t, keys, tuple([self.ref(value[key], path + (key,)) for key in keys]))
        if isinstance(value, ARRAY_TYPES):
            k = len(self.leaves)
            self.leaves.append(value)
            self.leaf_paths.append(path)
            self.leaf_nodes.append(-1)
            self.leaf_owners.append(self.owner)
            self.post.append(("leaf", k))
            return ("leaf", k)
        if self.owner is None and isinstance(value, (float, complex, np.generic)) and t is not bool:
            # A Python float passed to a transform is data, as in JAX (grad w.r.t. it, map it);
            # held by a module it is configuration (epsilon, rate) and stays static.
            k = len(self.leaves)
            self.leaves.append(value)
            self.leaf_paths.append(path)
            self.leaf_nodes.append(-1)
            self.leaf_owners.append(None)
            self.post.append(("leaf", k))
            return ("leaf", k)
        if t in _SIMPLE_STATIC:
            return ("static", value, t)  # the type too: 1, 1.0 and True are different structure
        # One level at a time, so containers inside other pytrees are seen by this walk.
        pairs, treedef = jax.tree_util.tree_flatten_with_path(value, is_leaf=lambda x: x is not value)
        if treedef.num_nodes == 1 and treedef.num_leaves == 1:  # opaque to JAX: static
            return ("static", _hashable(value), t)
        return ("tree", treedef, tuple([self.ref(v, path + _key_path(kp)) for kp, v in pairs]))


def _hashable(value: Any) -> Any:
    try:
        hash(value)
    except TypeError:
        return _ByIdentity(value)
    return value


def _static_items(meta: dict) -> tuple:
    return tuple((k, _hashable(v)) for k, v in meta.items())


def _key_path(kp: tuple) -> tuple:
    out = []
    for entry in kp:
        for attr in ("key", "idx", "name"):
            if hasattr(entry, attr):
                out.append(getattr(entry, attr))
                break
        else:
            out.append(str(entry))
    return tuple(out)


def flatten(roots: tuple) -> tuple[Flat, list]:
    """Flatten ``roots`` jointly (shared objects across roots are stored once).

    Returns the :class:`Flat` and the leaves. Leaf paths start with the root's position.
    """
    f = _Flattener()
    root_refs = tuple([f.ref(r, (i,)) for i, r in enumerate(roots)])
    gd = GraphDef(
        tuple(f.nodes), root_refs, tuple(f.leaf_paths), tuple(f.leaf_nodes), tuple(f.leaf_owners)
    )
    flat = Flat(gd, f.objs, f.leaves, cacheable=not f.untracked, node_paths=f.node_paths, post=f.post)
    return flat, f.leaves


_CACHE: dict[tuple, tuple] = {}
_CACHE_EPOCH = -1


def flatten_cached(roots: tuple) -> Flat:
    """:func:`flatten` for roots that are graph nodes, cached while structure is unchanged.

    The cached :class:`Flat` is only structure: read current values with
    ``flat.current_leaves()``.
    """
    global _CACHE_EPOCH
    if _CACHE_EPOCH != _object.STRUCTURE_EPOCH:
        _CACHE.clear()
        _CACHE_EPOCH = _object.STRUCTURE_EPOCH
    key = tuple([id(r) for r in roots])
    hit = _CACHE.get(key)
    if hit is not None and all(a is b for a, b in zip(hit[0], roots)):
        return hit[1]
    flat, _ = flatten(roots)
    if _CACHE_EPOCH != _object.STRUCTURE_EPOCH:  # flattening itself never changes structure
        _CACHE.clear()
        _CACHE_EPOCH = _object.STRUCTURE_EPOCH
    if len(_CACHE) > 64:
        _CACHE.clear()
    if flat.cacheable:
        _CACHE[key] = (roots, flat)
    return flat


class _Builder:
    """Rebuilds attribute values from refs, given node objects and leaves."""

    __slots__ = ("objs", "leaves")

    def __init__(self, objs: list, leaves: list) -> None:
        self.objs = objs
        self.leaves = leaves

    def build(self, ref: Any, current: Any = _MISSING) -> Any:
        if type(ref) is int:
            return self.objs[ref]
        tag = ref[0]
        if tag == "leaf":
            return self.leaves[ref[1]]
        if tag == "static":
            value = ref[1]
            return value.value if type(value) is _ByIdentity else value
        if tag == "list":
            t, refs = ref[1], ref[2]
            same = type(current) is t and len(current) == len(refs)
            items = [self.build(r, current[j] if same else _MISSING) for j, r in enumerate(refs)]
            if same and all(a is b for a, b in zip(items, current)):
                return current
            return t(items) if t is List else items
        if tag == "tuple":
            refs = ref[1]
            same = type(current) is tuple and len(current) == len(refs)
            items = tuple([self.build(r, current[j] if same else _MISSING) for j, r in enumerate(refs)])
            if same and all(a is b for a, b in zip(items, current)):
                return current
            return items
        if tag == "dict":
            t, keys, refs = ref[1], ref[2], ref[3]
            same = type(current) is t and len(current) == len(keys)
            values = [self.build(r, current.get(k, _MISSING) if same else _MISSING) for k, r in zip(keys, refs)]
            if same and all(k in current and current[k] is v for k, v in zip(keys, values)):
                return current
            return t(zip(keys, values)) if t is Dict else dict(zip(keys, values))
        if tag == "tree":
            return ref[1].unflatten([self.build(r) for r in ref[2]])
        raise AssertionError(f"unknown ref {ref!r}")


def _new_object(cls: type, trace: Any) -> Object:
    obj = object.__new__(cls)
    object.__setattr__(obj, "_plait_seen", False)
    object.__setattr__(obj, "_plait_trace", trace)
    return obj


def unflatten(graphdef: GraphDef, leaves: list, reuse: list | None = None) -> tuple[tuple, list]:
    """Rebuild the roots of ``graphdef`` from ``leaves``; returns ``(roots, objects)``.

    With ``reuse`` (a list of existing objects or None, by node index), existing objects are
    updated in place: Variable values and metadata set, object attributes replaced where
    they differ, removed attributes deleted.
    """
    if reuse is None:
        return _build_new(graphdef, leaves)
    nodes = graphdef.nodes
    objs: list = [None] * len(nodes)
    n_reuse = len(reuse)
    trace = trace_state()
    for i, nd in enumerate(nodes):
        old = reuse[i] if i < n_reuse else None
        if nd[0] == VAR:
            if old is None:
                old = object.__new__(nd[1])
                old._meta = _meta_of(nd[2])
                old._plait_seen = False
                old._trace = trace
            elif nd[2] != _static_items(old._meta):
                old._meta = _meta_of(nd[2])
            old._value = leaves[nd[3]]
            objs[i] = old
        else:
            objs[i] = old if old is not None else _new_object(nd[1], trace)
    builder = _Builder(objs, leaves)
    for i, nd in enumerate(nodes):
        if nd[0] != OBJ:
            continue
        attrs = objs[i].__dict__
        if i < n_reuse and reuse[i] is not None:
            names = set()
            for name, ref in nd[2]:
                names.add(name)
                current = attrs.get(name, _MISSING)
                new = builder.build(ref, current)
                if new is not current:
                    attrs[name] = new
            for name in [n for n in attrs if n not in names]:
                del attrs[name]
        else:
            for name, ref in nd[2]:
                attrs[name] = builder.build(ref)
    roots = tuple([builder.build(r) for r in graphdef.roots])
    return roots, objs


def _meta_of(items: tuple) -> dict:
    return {k: v.value if type(v) is _ByIdentity else v for k, v in items}


def _plan(graphdef: GraphDef) -> tuple:
    """How to build a GraphDef's objects anew, worked out once per GraphDef.

    Variables: ``(node, type, metadata, leaf)``; the metadata dict is shared by every build
    (it is replaced, never edited, see ``Variable.set_metadata``). Objects: ``(node, type)``
    to create, then ``(node, attributes, node_refs, other_refs)`` to fill: ``attributes``
    holds the static attributes in their order, with placeholders that ``node_refs``
    (``(name, node)``) and ``other_refs`` (containers, arrays) overwrite.
    """
    if graphdef._plan is None:
        variables, objects, fills = [], [], []
        for i, nd in enumerate(graphdef.nodes):
            if nd[0] == VAR:
                variables.append((i, nd[1], _meta_of(nd[2]), nd[3]))
                continue
            objects.append((i, nd[1]))
            attrs, node_refs, other_refs = {}, [], []
            for name, ref in nd[2]:
                if type(ref) is int:
                    attrs[name] = None
                    node_refs.append((name, ref))
                elif ref[0] == "static":
                    attrs[name] = ref[1].value if type(ref[1]) is _ByIdentity else ref[1]
                else:
                    attrs[name] = None
                    other_refs.append((name, ref))
            fills.append((i, attrs, tuple(node_refs), tuple(other_refs)))
        graphdef._plan = (tuple(variables), tuple(objects), tuple(fills))
    return graphdef._plan


def _build_new(graphdef: GraphDef, leaves: list) -> tuple[tuple, list]:
    """:func:`unflatten` without ``reuse``: every object new, following :func:`_plan`."""
    variables, objects, fills = _plan(graphdef)
    objs: list = [None] * len(graphdef.nodes)
    trace = trace_state()
    new = object.__new__
    for i, cls, meta, k in variables:
        v = new(cls)
        v._value = leaves[k]
        v._meta = meta
        v._plait_seen = False
        v._trace = trace
        objs[i] = v
    set_slot = object.__setattr__
    for i, cls in objects:
        obj = new(cls)
        set_slot(obj, "_plait_seen", False)
        set_slot(obj, "_plait_trace", trace)
        objs[i] = obj
    builder = _Builder(objs, leaves)
    for i, attrs, node_refs, other_refs in fills:
        d = objs[i].__dict__
        d.update(attrs)
        for name, j in node_refs:
            d[name] = objs[j]
        for name, ref in other_refs:
            d[name] = builder.build(ref)
    return tuple([builder.build(r) for r in graphdef.roots]), objs


def write_leaves(flat: Flat, updates: Mapping[int, Any]) -> None:
    """Write new values for some leaves of ``flat`` (by leaf index) into the live objects."""
    gd = flat.graphdef
    raw_owners = set()
    for k, value in updates.items():
        slot = flat.slots[k]
        if slot is not None:
            slot._value = value
        else:
            owner = gd.leaf_owners[k]
            if owner is None:
                raise GraphError(f"cannot write the array at `{_path_text(gd.leaf_paths[k][1:])}`: it is not held by a module")
            raw_owners.add(owner)
    if raw_owners:
        leaves = flatten(tuple(_roots_of(flat)))[1]
        for k, value in updates.items():
            leaves[k] = value
        builder = _Builder(flat.objs, leaves)
        for node_index, name in raw_owners:
            obj = flat.objs[node_index]
            ref = dict(gd.nodes[node_index][2])[name]
            obj.__dict__[name] = builder.build(ref)


# -- public graph functions --------------------------------------------------------------------


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
    from .errors import FilterError, describe

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
        from .object import closed_over_error

        raise closed_over_error(f"the state of a {type(node).__name__}", "cannot update", node)
    flat = flatten_cached((node,))
    gd, given = flat.graphdef, (state, *states)
    origins = [_origin(s, gd) for s in given]
    if not gd.has_raw_leaves and all(o is not None for o in origins):  # leaves by position
        slots = flat.slots
        for o in origins:
            for k, e in zip(o.indices, o.entries):
                slots[k]._value = e._value if isinstance(e, Variable) else e
        return
    index = gd.path_index()
    updates = {}
    for path, leaf in _flat_entries((state, *states)).items():
        k = index.get(path)
        if k is None:
            close = [p for p in index if p[: len(path) - 1] == path[:-1]][:5]
            hint = f" Paths next to it: {', '.join(_path_text(p) for p in close)}." if close else ""
            raise GraphError(f"update: `{_path_text(path)}` is not a Variable or array of this graph.{hint}")
        updates[k] = leaf._value if isinstance(leaf, Variable) else leaf
    write_leaves(flat, updates)


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
        if nd[0] != OBJ:
            continue
        obj = flat.objs[i]
        for name, ref in nd[2]:
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


def ref_leaves(ref: Any) -> list[int]:
    """Indices of the raw-array leaves under a ref (not those inside objects it points to)."""
    if type(ref) is int:
        return []
    tag = ref[0]
    if tag == "leaf":
        return [ref[1]]
    if tag == "static":
        return []
    refs = {"list": 2, "tuple": 1, "dict": 3, "tree": 2}[tag]
    out: list[int] = []
    for r in ref[refs]:
        out.extend(ref_leaves(r))
    return out


def ref_shape(ref: Any) -> Any:
    """A ref with its leaf indices erased: equal for values of the same structure."""
    if type(ref) is int or ref[0] == "static":
        return ref
    if ref[0] == "leaf":
        return "leaf"
    pos = {"list": 2, "tuple": 1, "dict": 3, "tree": 2}[ref[0]]
    return ref[:pos] + (tuple(ref_shape(r) for r in ref[pos]),)


def ref_text(ref: Any, graphdef: GraphDef) -> str:
    """A ref described for a person: ``a tuple of (an array, a Linear)``."""
    if type(ref) is int:
        return f"a {graphdef.nodes[ref][1].__name__}"
    tag = ref[0]
    if tag == "leaf":
        return "an array"
    if tag == "static":
        return repr(ref[1])
    if tag == "dict":
        inner = ", ".join(f"{k!r}: {ref_text(r, graphdef)}" for k, r in zip(ref[2], ref[3]))
        return f"a dict {{{inner}}}"
    refs = ref[2] if tag in ("list", "tree") else ref[1]
    kind = {"list": "list", "tuple": "tuple", "tree": str(ref[1])}[tag]
    return f"a {kind} of {len(refs)} ({', '.join(ref_text(r, graphdef) for r in refs)})"


def check_prefix(spec: Any, ref: Any, graphdef: GraphDef, where: str) -> None:
    """A tuple/list/dict spec must match the structure of the value it describes, entry for entry."""
    if isinstance(spec, (tuple, list)):
        if type(ref) is int or ref[0] not in ("tuple", "list"):
            raise AxisError(f"{where} is a {type(spec).__name__} of {len(spec)}, but the value is {ref_text(ref, graphdef)}")
        refs = ref[2] if ref[0] == "list" else ref[1]
        if len(refs) != len(spec):
            raise AxisError(
                f"{where} has {len(spec)} entries, but the value it describes has {len(refs)}: "
                f"{ref_text(ref, graphdef)}. Give one entry per element."
            )
        for i, (s, r) in enumerate(zip(spec, refs)):
            check_prefix(s, r, graphdef, f"{where}[{i}]")
    elif isinstance(spec, dict):
        if type(ref) is int or ref[0] != "dict" or set(ref[2]) != set(spec):
            raise AxisError(f"{where} has keys {sorted(map(str, spec))}, but the value is {ref_text(ref, graphdef)}")
        for k, r in zip(ref[2], ref[3]):
            check_prefix(spec[k], r, graphdef, f"{where}[{k!r}]")
