"""State: a nested mapping of a module graph's Variables, and a JAX pytree.

``nnx.state(model)`` gives a :class:`State` whose keys follow the attribute path
(``state["linear"]["kernel"]`` or ``state.linear.kernel``) and whose leaves are Variables
(copies of the module's, holding the same arrays) or raw arrays. Because State and
Variable are pytrees, ``jax.tree.map`` and optax work on it directly; the leaves JAX sees
are the arrays.

Example:
    >>> import jax, plait as nnx
    >>> model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    >>> _, params, _ = nnx.split(model, nnx.Param, ...)
    >>> sorted(params), params.kernel.value.shape
    (['bias', 'kernel'], (2, 3))
    >>> doubled = jax.tree.map(lambda x: 2 * x, params)
    >>> type(doubled.kernel).__name__
    'Param'
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, MutableMapping, Sequence
from typing import Any

import jax
import numpy as np

from .filters import Filter, filters_to_predicates
from .object import structure_changed
from .variables import Variable

__all__ = [
    "State", "PathParts", "Origin", "FlatState", "Key", "to_flat_state", "from_flat_state", "to_pure_dict",
    "replace_by_pure_dict", "restore_int_paths", "split_state", "filter_state", "merge_state", "map_state",
]

Key = Hashable  # one part of a path: an attribute name, a list index or a dict key
PathParts = tuple  # a path: attribute names, list indices and dict keys from the root


class Origin:
    """Where a State that ``split``/``state`` built came from, so ``merge``/``update`` can
    take its leaves by position instead of looking each path up.

    Every level of one State tree shares it; an edit to any level (``__setitem__``,
    ``__delitem__``, ``replace_by_pure_dict``) marks it stale, and the path-by-path route is
    taken again. Changing a Variable's value in place keeps it valid: entries are read when
    used.
    """

    __slots__ = ("graphdef", "indices", "entries", "root", "intact", "variables")

    def __init__(self, graphdef: Any, indices: tuple, entries: list) -> None:
        self.graphdef = graphdef  # the GraphDef the entries' positions refer to
        self.indices = indices  # per entry: its leaf index in the GraphDef
        self.entries = entries  # the State's leaves, in flat order (Variables or arrays)
        self.root = 0  # id() of the root State (sub-States share the Origin but are not it)
        self.intact = True
        self.variables: bool | None = None  # every entry is a Variable (found when first needed)

    def of(self, state: State) -> bool:
        """True if ``state`` is, unchanged, the root State this Origin describes."""
        return self.intact and self.root == id(state)


class State(MutableMapping):
    """A nested mapping from path parts to Variables (or raw arrays)."""

    __slots__ = ("_mapping", "_origin")

    def __init__(self, mapping: Mapping | None = None, /) -> None:
        self._mapping: dict = {}
        self._origin: Origin | None = None
        if mapping is not None:
            for key, value in mapping.items():
                self._mapping[key] = State(value) if _is_mapping(value) else value

    # Pickled without its Origin: positions are a fast path for this process's GraphDefs.
    def __getstate__(self) -> dict:
        return self._mapping

    def __setstate__(self, mapping: dict) -> None:
        self._mapping = mapping
        self._origin = None

    @classmethod
    def _wrap(cls, mapping: dict) -> State:
        new = object.__new__(cls)
        new._mapping = mapping
        new._origin = None
        return new

    def _edited(self) -> None:
        # A State can be held by a module (optimizer moments are): an edit changes the
        # structure of the graph it is in, so cached flattenings are dropped, as for List/Dict.
        structure_changed()
        if self._origin is not None:
            self._origin.intact = False

    # -- mapping protocol -------------------------------------------------------------------
    def __getitem__(self, key: Any) -> Any:
        return self._mapping[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        self._edited()
        self._mapping[key] = State(value) if _is_mapping(value) else value

    def __delitem__(self, key: Any) -> None:
        self._edited()
        del self._mapping[key]

    def __iter__(self) -> Iterator:
        return iter(self._mapping)

    def __len__(self) -> int:
        return len(self._mapping)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return self._mapping[name]
        except KeyError:
            raise AttributeError(f"State has no entry {name!r}; its keys are {list(self._mapping)}") from None

    def __eq__(self, other: Any) -> bool:
        """Same paths, same Variable types, equal values; a plain (nested) dict with the same
        content compares equal too, as in the reference.

        Example:
            >>> import plait as nnx
            >>> nnx.State({"a": {"b": 1}}) == {"a": {"b": 1}}
            True
        """
        if not isinstance(other, Mapping):
            return NotImplemented
        if not isinstance(other, State):
            other = State(other)
        mine, theirs = dict(self.flat_state()), dict(other.flat_state())
        if mine.keys() != theirs.keys():
            return False
        return all(_leaf_equal(leaf, theirs[path]) for path, leaf in mine.items())

    __hash__ = None  # type: ignore[assignment]

    # -- flat views -------------------------------------------------------------------------
    def flat_state(self) -> list[tuple[PathParts, Any]]:
        """``[(path, leaf), ...]`` in order, with ``path`` a tuple of keys.

        Example:
            >>> import plait as nnx
            >>> s = nnx.State({"a": {"b": 1}, "c": 2})
            >>> s.flat_state()
            [(('a', 'b'), 1), (('c',), 2)]
        """
        out: list[tuple[PathParts, Any]] = []
        _flatten_into(self, (), out)
        return out

    @classmethod
    def from_flat_state(cls, flat: Any) -> State:
        """The inverse of :meth:`flat_state` (also accepts a ``{path: leaf}`` dict)."""
        items = list(flat.items() if isinstance(flat, Mapping) else flat)
        return build(skeleton([path for path, _ in items]), [leaf for _, leaf in items])

    def to_pure_dict(self, extract_fn: Callable | None = None) -> dict:
        """Nested plain dicts of raw values (Variables replaced by their ``.value``, or by
        ``extract_fn(leaf)`` if given)."""
        return {
            k: v.to_pure_dict(extract_fn) if isinstance(v, State)
            else (extract_fn(v) if extract_fn else v._value if isinstance(v, Variable) else v)
            for k, v in self._mapping.items()
        }

    def replace_by_pure_dict(self, pure_dict: Mapping, replace_fn: Callable | None = None) -> None:
        """Put the values of a pure dict (see :meth:`to_pure_dict`) into this State, in place.

        ``replace_fn(leaf, value)``, if given, returns the new leaf (as in the reference); by
        default a Variable gets the value (``leaf.replace(value)``) and a raw leaf is replaced.
        """
        self._edited()
        for key, value in pure_dict.items():
            if key not in self._mapping and isinstance(key, str) and key.isdigit() and int(key) in self._mapping:
                key = int(key)  # checkpoints store list indices as strings
            if key not in self._mapping:
                raise KeyError(f"State has no entry {key!r}; its keys are {list(self._mapping)}")
            current = self._mapping[key]
            if isinstance(current, State):
                current.replace_by_pure_dict(value, replace_fn)
            elif replace_fn is not None:
                self._mapping[key] = replace_fn(current, value)
            elif isinstance(current, Variable):
                self._mapping[key] = current.replace(value)
            else:
                self._mapping[key] = value

    # -- filtering and merging ----------------------------------------------------------------
    def filter(self, first: Filter, /, *filters: Filter) -> State | tuple[State, ...]:
        """The entries each filter selects (first match wins); one State per filter."""
        flat = self.flat_state()
        parts = partition(flat, (first, *filters))
        states = tuple(State.from_flat_state([flat[k] for k in p]) for p in parts[:-1])
        return states[0] if len(states) == 1 else states

    def split(self, first: Filter, /, *filters: Filter) -> State | tuple[State, ...]:
        """Like :meth:`filter`, but every entry must be selected by some filter."""
        all_filters = (first, *filters)
        flat = self.flat_state()
        parts = partition(flat, all_filters)
        if parts[-1]:
            from .errors import FilterError

            left = ", ".join(".".join(map(str, flat[k][0])) for k in parts[-1][:8])
            raise FilterError(
                f"State.split filters {all_filters!r} leave entries unselected: {left}.\n"
                "Add `...` as the last filter to collect the rest."
            )
        states = tuple(State.from_flat_state([flat[k] for k in p]) for p in parts[:-1])
        return states[0] if len(states) == 1 else states

    @staticmethod
    def merge(state: Mapping, /, *states: Mapping) -> State:
        """One State with the entries of all (later ones win on equal paths)."""
        flat: dict = {}
        for s in (state, *states):
            flat.update(s.flat_state() if isinstance(s, State) else State(s).flat_state())
        return State.from_flat_state(flat)

    def __or__(self, other: Mapping) -> State:
        return State.merge(self, other)

    def __repr__(self) -> str:
        lines = ["State({"]
        _repr_into(self, "  ", lines)
        lines.append("})")
        return "\n".join(lines)


def _is_mapping(value: Any) -> bool:
    return isinstance(value, Mapping) and not isinstance(value, State)


def _leaf_equal(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, Variable):
        a, b = a._value, b._value
    try:
        return bool(np.array_equal(np.asarray(a), np.asarray(b)))
    except (TypeError, ValueError):  # key arrays and other values numpy cannot hold
        return bool(jax.numpy.all(a == b))


def skeleton(paths: list) -> tuple:
    """How to nest leaves at ``paths`` into a State, for :func:`build`: its levels, children
    before parents (the root last), each ``(keys, refs)``. A ref below ``len(paths)`` is a
    leaf's position in ``paths``; above, ``len(paths) + j`` is the ``j``-th level. Worked out
    once per graph structure (and filter) and reused."""
    root: dict = {}
    for position, path in enumerate(paths):
        if not path:
            raise ValueError("a State entry needs a non-empty path")
        node = root
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if type(node) is not dict:
                raise ValueError(f"path {path} runs through a leaf")
        if type(node.get(path[-1])) is dict:
            raise ValueError(f"path {path} is a leaf and a prefix of other paths")
        node[path[-1]] = position
    levels: list = []

    def visit(node: dict) -> int:
        refs = tuple([visit(v) if type(v) is dict else v for v in node.values()])
        levels.append((tuple(node), refs))
        return len(paths) + len(levels) - 1

    visit(root)
    return tuple(levels)


def build(levels: tuple, entries: list, origin: Origin | None = None) -> State:
    """The State that :func:`skeleton` ``levels`` describe, holding ``entries`` (the leaves,
    in the order of the paths given to it)."""
    values = list(entries)
    new = object.__new__
    for keys, refs in levels:
        mapping = {}
        for key, ref in zip(keys, refs):
            mapping[key] = values[ref]
        level = new(State)
        level._origin = origin
        level._mapping = mapping
        values.append(level)
    return values[-1]


def _flatten_into(state: State, prefix: tuple, out: list) -> None:
    for key, value in state._mapping.items():
        if type(value) is State:
            _flatten_into(value, prefix + (key,), out)
        else:
            out.append((prefix + (key,), value))


def partition(flat: list, filters: tuple) -> list[list[int]]:
    """Positions in ``flat`` (``[(path, leaf), ...]``) of the entries each filter selects (the
    first match wins), and last, of those none selects. ``...`` before another filter is an
    error (:func:`~plait.filters.filters_to_predicates`)."""
    predicates = filters_to_predicates(filters)
    parts: list[list[int]] = [[] for _ in range(len(predicates) + 1)]
    for k, (path, leaf) in enumerate(flat):
        for i, predicate in enumerate(predicates):
            if predicate(path, leaf):
                parts[i].append(k)
                break
        else:
            parts[-1].append(k)
    return parts


def _repr_into(state: State, indent: str, lines: list[str]) -> None:
    for key, value in state._mapping.items():
        if isinstance(value, State):
            lines.append(f"{indent}{key!r}: {{")
            _repr_into(value, indent + "  ", lines)
            lines.append(f"{indent}}},")
        else:
            lines.append(f"{indent}{key!r}: {_leaf_repr(value)},")


def _leaf_repr(value: Any) -> str:
    if isinstance(value, Variable):
        return repr(value)
    shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
    if shape is not None and dtype is not None:
        return f"Array(shape={tuple(shape)}, dtype={dtype})"
    return repr(value)


def _state_flatten_with_keys(s: State):
    return tuple((jax.tree_util.DictKey(k), v) for k, v in s._mapping.items()), tuple(s._mapping)


def _state_flatten(s: State):
    return tuple(s._mapping.values()), tuple(s._mapping)


def _state_unflatten(keys: tuple, children: Any) -> State:
    return State._wrap(dict(zip(keys, children)))


jax.tree_util.register_pytree_with_keys(State, _state_flatten_with_keys, _state_unflatten, _state_flatten)


# -- the reference's State functions ------------------------------------------------------------
def _sorted_items(items: Iterable) -> list:
    """Entries sorted by path, as the reference orders a flat state; paths that mix key types at
    one position (an int index beside a str name) sort by type name first instead of failing."""
    items = list(items)
    try:
        return sorted(items, key=lambda item: item[0])
    except TypeError:
        return sorted(items, key=lambda item: tuple((type(p).__name__, p) for p in item[0]))


class FlatState(Sequence):
    """A State as a sequence of ``(path, leaf)`` pairs; what :func:`to_flat_state` returns.

    Example:
        >>> import plait as nnx
        >>> flat = nnx.to_flat_state(nnx.State({"b": 2, "a": {"x": 1}}))
        >>> list(flat), flat.paths
        ([(('a', 'x'), 1), (('b',), 2)], (('a', 'x'), ('b',)))
        >>> flat.to_nested_state() == {"a": {"x": 1}, "b": 2}
        True
    """

    __slots__ = ("_keys", "_values")

    def __init__(self, items: Iterable, /, *, sort: bool) -> None:
        items = _sorted_items(items) if sort else list(items)
        self._keys = tuple(path for path, _ in items)
        self._values = [leaf for _, leaf in items]

    @property
    def paths(self) -> tuple:
        return self._keys

    @property
    def leaves(self) -> list:
        return self._values

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return FlatState(zip(self._keys[index], self._values[index]), sort=False)
        return self._keys[index], self._values[index]

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator:
        return iter(zip(self._keys, self._values))

    def __eq__(self, other: Any) -> bool:
        if not isinstance(other, FlatState):
            return NotImplemented
        return self._keys == other._keys and all(_leaf_equal(a, b) for a, b in zip(self._values, other._values))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return "FlatState([" + ", ".join(f"({p!r}, {_leaf_repr(v)})" for p, v in self) + "])"

    def to_nested_state(self) -> State:
        return from_flat_state(self)

    def filter(self, first: Filter, /, *filters: Filter) -> FlatState | tuple[FlatState, ...]:
        """The entries each filter selects (first match wins), one FlatState per filter."""
        entries = list(self)
        parts = partition(entries, (first, *filters))
        out = tuple(FlatState([entries[k] for k in p], sort=False) for p in parts[:-1])
        return out[0] if len(out) == 1 else out

    def split(self, first: Filter, /, *filters: Filter) -> FlatState | tuple[FlatState, ...]:
        """Like :meth:`filter`, but every entry must be selected by some filter."""
        entries = list(self)
        parts = partition(entries, (first, *filters))
        _check_exhaustive(entries, parts[-1], (first, *filters), "FlatState.split")
        out = tuple(FlatState([entries[k] for k in p], sort=False) for p in parts[:-1])
        return out[0] if len(out) == 1 else out

    @staticmethod
    def merge(flat_state: Iterable, /, *flat_states: Iterable) -> FlatState:
        """One FlatState with every entry, sorted by path."""
        if not flat_states and isinstance(flat_state, FlatState):
            return flat_state
        return FlatState((e for fs in (flat_state, *flat_states) for e in fs), sort=True)


jax.tree_util.register_pytree_node(
    FlatState,
    lambda fs: (fs._values, fs._keys),
    lambda keys, values: FlatState(zip(keys, values), sort=False),
)


def _check_exhaustive(entries: list, rest: list, filters: tuple, where: str) -> None:
    if rest:
        from .errors import FilterError

        left = ", ".join(".".join(map(str, entries[k][0])) for k in rest[:8])
        raise FilterError(
            f"{where}: filters {filters!r} leave entries unselected: {left}.\n"
            "Add `...` as the last filter to collect the rest."
        )


def to_flat_state(state: Mapping) -> FlatState:
    """The ``(path, leaf)`` pairs of a State, sorted by path (as the reference orders them).

    Example:
        >>> import plait as nnx
        >>> model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
        >>> _, state = nnx.split(model)
        >>> [path for path, _ in nnx.to_flat_state(state)]
        [('bias',), ('kernel',)]
    """
    state = state if isinstance(state, State) else State(state)
    return FlatState(state.flat_state(), sort=True)


def from_flat_state(flat_state: Mapping | Iterable, *, cls: type = State) -> State:
    """A nested State from ``(path, leaf)`` pairs or a ``{path: leaf}`` dict: the inverse of
    :func:`to_flat_state`.

    Example:
        >>> import plait as nnx
        >>> nnx.from_flat_state({("a", "b"): 1, ("c",): 2}) == {"a": {"b": 1}, "c": 2}
        True
    """
    if cls is not State:
        raise TypeError(f"from_flat_state builds a plait State; cls={cls.__name__} is not supported")
    return State.from_flat_state(flat_state)


def to_pure_dict(state: Mapping, extract_fn: Callable | None = None) -> dict:
    """Nested plain dicts of raw values: each Variable replaced by its value (or by
    ``extract_fn(leaf)``). What checkpoints store.

    Example:
        >>> import plait as nnx
        >>> _, state = nnx.split(nnx.Linear(2, 3, rngs=nnx.Rngs(0)))
        >>> pure = nnx.to_pure_dict(state)
        >>> sorted(pure), type(pure["bias"]).__name__
        (['bias', 'kernel'], 'ArrayImpl')
    """
    state = state if isinstance(state, State) else State(state)
    return state.to_pure_dict(extract_fn)


def replace_by_pure_dict(state: State, pure_dict: Mapping, replace_fn: Callable | None = None) -> None:
    """Put the values of a pure dict (see :func:`to_pure_dict`) into ``state``, in place.

    Keys that a checkpoint stored as strings (``"0"``) match the State's int keys.
    ``replace_fn(leaf, value)`` returns the new leaf.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> _, state = nnx.split(nnx.Linear(2, 3, rngs=nnx.Rngs(0)))
        >>> nnx.replace_by_pure_dict(state, {"bias": jnp.ones(3)})
        >>> state["bias"].value.tolist()
        [1.0, 1.0, 1.0]
    """
    if not isinstance(state, State):
        raise TypeError(f"replace_by_pure_dict expects a State to write into, got a {type(state).__name__}")
    state.replace_by_pure_dict(pure_dict, replace_fn)


def restore_int_paths(pure_dict: Mapping) -> dict:
    """The pure dict with every key that is a decimal string (a checkpoint's list index) an int.

    Example:
        >>> import plait as nnx
        >>> nnx.restore_int_paths({"layers": {"0": {"w": 1}}})
        {'layers': {0: {'w': 1}}}
    """
    def key(k: Any) -> Any:
        try:
            return int(k)
        except (TypeError, ValueError):
            return k

    return {key(k): restore_int_paths(v) if isinstance(v, Mapping) else v for k, v in pure_dict.items()}


def split_state(state: State, first: Filter, /, *filters: Filter) -> State | tuple[State, ...]:
    """Split a State by filters (first match wins); every entry must be selected.

    Example:
        >>> import plait as nnx
        >>> _, state = nnx.split(nnx.BatchNorm(2, rngs=nnx.Rngs(0)))
        >>> params, stats = nnx.split_state(state, nnx.Param, nnx.BatchStat)
        >>> sorted(params), sorted(stats)
        (['bias', 'scale'], ['mean', 'var'])
    """
    state = state if isinstance(state, State) else State(state)
    return state.split(first, *filters)


def filter_state(state: State, first: Filter, /, *filters: Filter) -> State | tuple[State, ...]:
    """The entries of a State each filter selects (first match wins); entries no filter
    selects are left out.

    Example:
        >>> import plait as nnx
        >>> _, state = nnx.split(nnx.BatchNorm(2, rngs=nnx.Rngs(0)))
        >>> sorted(nnx.filter_state(state, nnx.BatchStat))
        ['mean', 'var']
    """
    state = state if isinstance(state, State) else State(state)
    return state.filter(first, *filters)


def merge_state(state: Mapping, /, *states: Mapping, cls: type = State) -> State:
    """One State with the entries of all (later ones win on equal paths): the inverse of
    :func:`split_state`. One State is returned as it is.

    Example:
        >>> import plait as nnx
        >>> model = nnx.BatchNorm(2, rngs=nnx.Rngs(0))
        >>> _, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
        >>> nnx.merge_state(params, stats) == nnx.split(model)[1]
        True
    """
    if cls is not State:
        raise TypeError(f"merge_state builds a plait State; cls={cls.__name__} is not supported")
    if not states:
        return state if isinstance(state, State) else State(state)
    return State.merge(state, *states)


def map_state(f: Callable[[tuple, Any], Any], state: State) -> State:
    """A new State with ``f(path, leaf)`` for each leaf.

    Example:
        >>> import plait as nnx
        >>> nnx.map_state(lambda path, x: 10 * x, nnx.State({"b": 2, "a": 1})) == {"a": 10, "b": 20}
        True
    """
    state = state if isinstance(state, State) else State(state)
    return from_flat_state([(path, f(path, leaf)) for path, leaf in to_flat_state(state)])


class GraphDefState(State):
    """A State with the GraphDef of its graph attached: what ``nnx.unpack`` returns (the
    reference's 0.12 ``GraphState``). ``nnx.merge(state, *states)`` takes it without a separate
    GraphDef; everywhere else it is a State. As a pytree the GraphDef is static data.

    Example:
        >>> import plait as nnx
        >>> packed = nnx.unpack(nnx.Linear(2, 3, rngs=nnx.Rngs(0)))
        >>> type(nnx.merge(packed)).__name__, sorted(packed)
        ('Linear', ['bias', 'kernel'])
    """

    __slots__ = ("_graphdef",)

    @classmethod
    def of(cls, graphdef: Any, state: State) -> GraphDefState:
        new = cls._wrap(state._mapping)
        new._graphdef = graphdef
        return new

    @property
    def graphdef(self) -> Any:
        return self._graphdef

    def __getstate__(self) -> tuple:  # type: ignore[override]
        return self._mapping, self._graphdef

    def __setstate__(self, state: Any) -> None:
        self._mapping, self._graphdef = state
        self._origin = None


jax.tree_util.register_pytree_with_keys(
    GraphDefState,
    lambda s: (_state_flatten_with_keys(s)[0], (tuple(s._mapping), s._graphdef)),
    lambda aux, children: GraphDefState.of(aux[1], State._wrap(dict(zip(aux[0], children)))),
    lambda s: (tuple(s._mapping.values()), (tuple(s._mapping), s._graphdef)),
)
