"""The graph encoding: the one path between a module graph and (structure, leaves).

Internal to plait: transforms and :mod:`plait.graph` use it; users use ``nnx.split``,
``nnx.merge`` and the transforms.

:func:`flatten` walks a tuple of *roots* (modules, Variables, Rngs, and any lists, tuples,
dicts or pytrees holding them) depth first and returns a :class:`Flat` holding the
:class:`GraphDef`, the static structure, plus the leaves: each Variable's value once, and raw
arrays. Every graph node (Object or Variable) gets an index on first visit; a second visit
records a reference to that index, which is how shared sub-modules, tied weights and cycles
survive a round trip.

:func:`unflatten` rebuilds objects from a GraphDef and leaves. Given ``reuse`` (existing
objects by node index) it writes into those objects instead of creating new ones: that is
how transforms write state and structure changes back to the caller's objects, and how an
output that is an input object comes back as that same object.

Flattening a module whose structure has not changed since the last call is served from a
cache (:func:`flatten_cached`, see :mod:`plait.object`).

The encoding: a node is a :class:`VariableNode` or an :class:`ObjectNode`; an attribute or
root is a *ref*: a node index (int), or one of :class:`LeafRef`, :class:`StaticRef`,
:class:`ListRef`, :class:`TupleRef`, :class:`DictRef`, :class:`TreeRef`, whose first field
(``tag``) says which. All are NamedTuples, so a GraphDef hashes and compares as plain tuples
do and stays a fast cache key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import numpy as np

from . import object as _object
from .build_code import compile_builder
from .errors import GraphError
from .object import TOP_TRACE, Dict, List, Object, trace_state
from .variables import Variable

__all__ = ["GraphDef", "Flat", "flatten", "flatten_cached", "unflatten", "write_leaves", "is_graph_node",
           "path_text", "ARRAY_TYPES"]

VAR, OBJ = 0, 1  # node kinds


class VariableNode(NamedTuple):
    """A Variable: its type, its metadata (hashable items) and where its value is among the leaves."""

    kind: int  # VAR
    type: type
    metadata: tuple
    leaf: int


class ObjectNode(NamedTuple):
    """An Object (module, Rngs, ...): its type and its attributes as ``(name, ref)`` pairs."""

    kind: int  # OBJ
    type: type
    attributes: tuple


class LeafRef(NamedTuple):
    """An array (or a Python float passed to a transform): leaf ``index``."""

    tag: str  # "leaf"
    index: int


class StaticRef(NamedTuple):
    """A value that is structure, not data (an int, a string, a function)."""

    tag: str  # "static"
    value: Any
    type: Any  # for 1, 1.0 and True, which are equal but different structure; else None


class ListRef(NamedTuple):
    tag: str  # "list"
    type: type  # list or List
    items: tuple


class TupleRef(NamedTuple):
    tag: str  # "tuple"
    items: tuple


class DictRef(NamedTuple):
    tag: str  # "dict"
    type: type  # dict or Dict
    keys: tuple
    items: tuple


class TreeRef(NamedTuple):
    """Any other pytree (a namedtuple, a State, an optax state), one level of it."""

    tag: str  # "tree"
    treedef: Any
    items: tuple


_new = tuple.__new__  # builds the NamedTuple refs without a Python-level __new__ call

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
                 "_plan", "revisits", "node_paths", "_aliases", "_builds", "_builder")

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
        self._builds = 0  # how often it was built anew, and the generated builder once that is often
        self._builder: Any = None
        self.revisits: tuple = ()  # (node, path) for each second path to a node (not part of equality)
        self.node_paths: tuple = ()
        self._aliases: tuple | None = None

    def aliases(self) -> tuple:
        """``(leaf, path)`` for every further path by which a leaf is reached (a shared module
        or Variable seen from a second place), so per-argument specs can be checked to agree."""
        if self._aliases is None:
            out = []
            for node, path in self.revisits:
                first = self.node_paths[node]
                n = len(first)
                for k, p in enumerate(self.leaf_paths):
                    if p[:n] == first and (self.leaf_nodes[k] >= 0 or self.leaf_owners[k] is not None):
                        out.append((k, path + p[n:]))
            self._aliases = tuple(out)
        return self._aliases

    def __eq__(self, other: Any) -> bool:
        if self is other:
            return True
        return type(other) is GraphDef and self.roots == other.roots and self.nodes == other.nodes

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash((self.nodes, self.roots))
        return self._hash

    # Pickled without its caches (hash, path index, build plan, aliases): they are rebuilt on use.
    def __getstate__(self) -> tuple:
        return (self.nodes, self.roots, self.leaf_paths, self.leaf_nodes, self.leaf_owners, self.revisits,
                self.node_paths)

    def __setstate__(self, state: tuple) -> None:
        self.__init__(*state[:5])
        self.revisits, self.node_paths = state[5], state[6]

    @property
    def num_leaves(self) -> int:
        return len(self.leaf_nodes)

    def path_index(self) -> dict:
        """``{path relative to root 0: leaf index}``, built once."""
        if self._path_index is None:
            self._path_index = {p[1:]: k for k, p in enumerate(self.leaf_paths)}
        return self._path_index

    def __repr__(self) -> str:
        kinds = [nd.type.__name__ for nd in self.nodes if nd.kind == OBJ]
        return f"GraphDef(objects={kinds}, leaves={self.num_leaves})"


# A GraphDef is static: as a pytree it has no leaves, so (graphdef, state) pairs pass
# through raw jax.jit and jax.tree functions.
jax.tree_util.register_pytree_node(GraphDef, lambda gd: ((), gd), lambda gd, _: gd)


class Flat:
    """A flattening: the GraphDef, the node objects by index, and the leaves."""

    __slots__ = ("graphdef", "objs", "leaves", "slots", "cacheable", "node_paths", "post", "plans", "roots")

    def __init__(self, graphdef: GraphDef, objs: list, leaves: list, cacheable: bool = True,
                 node_paths: list | None = None, post: list | None = None, roots: tuple = ()) -> None:
        self.graphdef = graphdef
        self.roots = roots
        self.node_paths = node_paths or []
        self.post = post or []
        self.cacheable = cacheable and not graphdef.has_raw_leaves
        self.objs = objs
        self.leaves = leaves  # as flattened; a cached Flat drops them (see flatten_cached)
        # The Variable that holds each leaf (None for raw arrays): where values are written.
        self.slots = [objs[n] if n >= 0 else None for n in graphdef.leaf_nodes]
        self.plans: dict = {}  # filters -> how state/split lay out their States (see _states)

    def current_leaves(self) -> list:
        """The leaves as they are now (values may have been written since flattening)."""
        if self.graphdef.has_raw_leaves:
            return flatten(self.roots)[1]
        return [v._value for v in self.slots]


class _Flattener:
    __slots__ = ("nodes", "objs", "index", "leaves", "leaf_paths", "leaf_nodes", "leaf_owners", "owner", "untracked",
                 "node_paths", "post", "scalars", "revisits")

    def __init__(self, scalars: bool = False) -> None:
        self.scalars = scalars  # Python ints and bools outside modules are data too (loop values)
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
        self.revisits: list = []  # (node, path): a node reached again by another path

    def node(self, value: Any, path: tuple) -> tuple[int, bool]:
        """The node index of a graph node, and whether this is its first visit (then it is
        registered; its entry in ``nodes`` is filled by the caller)."""
        i = self.index.get(id(value))
        if i is not None:
            self.revisits.append((i, path))
            return i, False
        i = len(self.nodes)
        self.index[id(value)] = i
        self.objs.append(value)
        self.nodes.append(None)
        self.node_paths.append(path)
        return i, True

    def ref(self, value: Any, path: tuple) -> Any:
        if isinstance(value, Variable):
            i, first = self.node(value, path)
            if not first:
                return i
            value._plait_seen = True
            k = len(self.leaves)
            self.leaves.append(value._value)
            self.leaf_paths.append(path)
            self.leaf_nodes.append(i)
            self.leaf_owners.append(self.owner)
            meta = value._meta
            self.nodes[i] = VariableNode(VAR, type(value), _static_items(meta) if meta else (), k)
            self.post.append(("node", i))
            return i
        if isinstance(value, Object):
            i, first = self.node(value, path)
            if not first:
                return i
            object.__setattr__(value, "_plait_seen", True)
            saved = self.owner
            items = []
            attrs = value.__dict__
            order = type(value)._plait_attr_order
            for name in sorted(attrs) if order is None else order(value):  # the reference's order: by name
                self.owner = (i, name)
                items.append((name, self.ref(attrs[name], path + (name,))))
            self.owner = saved
            self.nodes[i] = ObjectNode(OBJ, type(value), tuple(items))
            self.post.append(("node", i))
            return i
        t = type(value)
        if (t is list or t is dict) and self.owner is not None:
            self.untracked = True
        if t is list or t is List:
            return _new(ListRef, ("list", t, tuple([self.ref(v, path + (j,)) for j, v in enumerate(value)])))
        if t is tuple:
            return _new(TupleRef, ("tuple", tuple([self.ref(v, path + (j,)) for j, v in enumerate(value)])))
        if t is dict or t is Dict:
            keys = sorted_keys(value)
            return _new(DictRef, ("dict", t, keys, tuple([self.ref(value[key], path + (key,)) for key in keys])))
        if isinstance(value, ARRAY_TYPES) or self.owner is None and (
                isinstance(value, (float, complex, np.generic)) and t is not bool or self.scalars and t in (int, bool)):
            # A Python float passed to a transform is data, as in JAX (grad w.r.t. it, map it);
            # held by a module it is configuration (epsilon, rate) and stays static.
            k = len(self.leaves)
            self.leaves.append(value)
            self.leaf_paths.append(path)
            self.leaf_nodes.append(-1)
            self.leaf_owners.append(self.owner)
            self.post.append(("leaf", k))
            return _new(LeafRef, ("leaf", k))
        if t in _SIMPLE_STATIC:
            return _new(StaticRef, ("static", value, t))  # the type too: 1, 1.0 and True are different structure
        # One level at a time, so containers inside other pytrees are seen by this walk.
        pairs, treedef = jax.tree_util.tree_flatten_with_path(value, is_leaf=lambda x: x is not value)
        if treedef.num_nodes == 1 and treedef.num_leaves == 1:  # opaque to JAX: static
            return _new(StaticRef, ("static", _hashable(value), None))  # the value implies its type
        return _new(TreeRef, ("tree", treedef, tuple([self.ref(v, path + _key_path(kp)) for kp, v in pairs])))


def sorted_keys(mapping: Any) -> tuple:
    """A mapping's keys sorted, as JAX and the reference order dict keys; keys of types that
    do not compare (``1`` and ``"a"``) are sorted by type name first."""
    try:
        return tuple(sorted(mapping))
    except TypeError:
        pass
    try:
        return tuple(sorted(mapping, key=lambda k: (type(k).__name__, k)))
    except TypeError:
        return tuple(mapping)


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


def flatten(roots: tuple, scalars: bool = False) -> tuple[Flat, list]:
    """Flatten ``roots`` jointly (shared objects across roots are stored once).

    Returns the :class:`Flat` and the leaves. Leaf paths start with the root's position.
    With ``scalars``, Python ints and bools outside modules are leaves (as in a JAX loop
    value) instead of structure.
    """
    f = _Flattener(scalars)
    root_refs = tuple([f.ref(r, (i,)) for i, r in enumerate(roots)])
    gd = GraphDef(
        tuple(f.nodes), root_refs, tuple(f.leaf_paths), tuple(f.leaf_nodes), tuple(f.leaf_owners)
    )
    if f.revisits:
        gd.revisits, gd.node_paths = tuple(f.revisits), tuple(f.node_paths)
    flat = Flat(gd, f.objs, f.leaves, cacheable=not f.untracked, node_paths=f.node_paths, post=f.post, roots=roots)
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
    if len(roots) == 1:  # the common case, without the loops
        key: tuple = (id(roots[0]),)
        hit = _CACHE.get(key)
        if hit is not None and hit[0][0] is roots[0]:
            return hit[1]
    else:
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
        # Values are read from the Variables when needed: a cached flattening must not keep the
        # arrays of its first call alive (after an update they would never be freed).
        flat.leaves = None
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
        tag = ref.tag
        if tag == "leaf":
            return self.leaves[ref.index]
        if tag == "static":
            value = ref.value
            return value.value if type(value) is _ByIdentity else value
        if tag == "list":
            t, refs = ref.type, ref.items
            same = type(current) is t and len(current) == len(refs)
            items = [self.build(r, current[j] if same else _MISSING) for j, r in enumerate(refs)]
            if same and all(a is b for a, b in zip(items, current)):
                return current
            return t(items) if t is List else items
        if tag == "tuple":
            refs = ref.items
            same = type(current) is tuple and len(current) == len(refs)
            items = tuple([self.build(r, current[j] if same else _MISSING) for j, r in enumerate(refs)])
            if same and all(a is b for a, b in zip(items, current)):
                return current
            return items
        if tag == "dict":
            t, keys, refs = ref.type, ref.keys, ref.items
            same = type(current) is t and len(current) == len(keys)
            values = [self.build(r, current.get(k, _MISSING) if same else _MISSING) for k, r in zip(keys, refs)]
            if same and all(k in current and current[k] is v for k, v in zip(keys, values)):
                return current
            return t(zip(keys, values)) if t is Dict else dict(zip(keys, values))
        if tag == "tree":
            return ref.treedef.unflatten([self.build(r) for r in ref.items])
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
        if nd.kind == VAR:
            if old is None:
                old = object.__new__(nd.type)
                old._meta = _meta_of(nd.metadata)
                old._plait_seen = False
                old._trace = trace
                old._value = leaves[nd.leaf]
            else:
                if nd.metadata != _static_items(old._meta):
                    old._meta = _meta_of(nd.metadata)
                _store(old, leaves[nd.leaf])
            objs[i] = old
        else:
            objs[i] = old if old is not None else _new_object(nd.type, trace)
    builder = _Builder(objs, leaves)
    for i, nd in enumerate(nodes):
        if nd.kind != OBJ:
            continue
        attrs = objs[i].__dict__
        if i < n_reuse and reuse[i] is not None:
            names = set()
            for name, ref in nd.attributes:
                names.add(name)
                current = attrs.get(name, _MISSING)
                new = builder.build(ref, current)
                if new is not current:
                    attrs[name] = new
            for name in [n for n in attrs if n not in names]:
                del attrs[name]
        else:
            for name, ref in nd.attributes:
                attrs[name] = builder.build(ref)
    roots = tuple([builder.build(r) for r in graphdef.roots])
    return roots, objs


def _store(variable: Variable, value: Any) -> None:
    """A value written back into an existing Variable; a ref-backed one keeps its ref (the value
    goes into it), since a transform carried the ref's array, not the ref."""
    old = variable._value
    if not isinstance(old, jax.Ref) or isinstance(value, jax.Ref):
        variable._value = value
    elif value is not old:
        old[...] = value


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
            if nd.kind == VAR:
                variables.append((i, nd.type, _meta_of(nd.metadata), nd.leaf))
                continue
            objects.append((i, nd.type))
            attrs, node_refs, other_refs = {}, [], []
            for name, ref in nd.attributes:
                if type(ref) is int:
                    attrs[name] = None
                    node_refs.append((name, ref))
                elif ref.tag == "static":
                    attrs[name] = ref.value.value if type(ref.value) is _ByIdentity else ref.value
                else:
                    attrs[name] = None
                    other_refs.append((name, ref))
            fills.append((i, attrs, tuple(node_refs), tuple(other_refs)))
        graphdef._plan = (tuple(variables), tuple(objects), tuple(fills))
    return graphdef._plan


# Builds of one GraphDef that follow its plan before it gets generated straight-line code.
COMPILE_AFTER = 3


def _static_value(value: Any) -> Any:
    return value.value if type(value) is _ByIdentity else value


def _build_new(graphdef: GraphDef, leaves: list) -> tuple[tuple, list]:
    """:func:`unflatten` without ``reuse``: every object new, following :func:`_plan` (or, for
    a GraphDef built often, the code generated from it, see :mod:`plait.build_code`)."""
    builder = graphdef._builder
    if builder is not None:
        return builder(leaves, trace_state())
    graphdef._builds += 1
    if graphdef._builds == COMPILE_AFTER:
        graphdef._builder = compile_builder(graphdef, _plan(graphdef), _static_value)
        if graphdef._builder is not None:
            return graphdef._builder(leaves, trace_state())
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
    top = trace == TOP_TRACE  # outside every transform the bookkeeping slots may stay unset (object._settle)
    set_slot = object.__setattr__
    for i, cls in objects:
        objs[i] = obj = new(cls)
        if not (top and cls._plait_unset_slots):
            set_slot(obj, "_plait_seen", False)
            set_slot(obj, "_plait_trace", trace)
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
            _store(slot, value)
        else:
            owner = gd.leaf_owners[k]
            if owner is None:
                raise GraphError(f"cannot write the array at `{path_text(gd.leaf_paths[k][1:])}`: it is not held by a module")
            raw_owners.add(owner)
    if raw_owners:
        leaves = flatten(flat.roots)[1]
        for k, value in updates.items():
            leaves[k] = value
        builder = _Builder(flat.objs, leaves)
        for node_index, name in raw_owners:
            obj = flat.objs[node_index]
            ref = dict(gd.nodes[node_index].attributes)[name]
            obj.__dict__[name] = builder.build(ref)


def path_text(path: tuple) -> str:
    """A path below a root as a person reads it: ``layers.0.kernel``."""
    return ".".join(str(p) for p in path) if path else "<root>"
