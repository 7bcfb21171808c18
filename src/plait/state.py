"""State: a nested mapping of a module graph's Variables, and a JAX pytree.

``nnx.state(model)`` gives a :class:`State` whose keys follow the attribute path
(``state["linear"]["kernel"]`` or ``state.linear.kernel``) and whose leaves are Variables
(copies of the module's, holding the same arrays) or raw arrays. Because State and
Variable are pytrees, ``jax.tree.map`` and optax work on it directly; the leaves JAX sees
are the arrays.

Example:
    >>> import jax, plait as nnx
    >>> model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    >>> params = nnx.state(model, nnx.Param)
    >>> sorted(params), params.kernel.value.shape
    (['bias', 'kernel'], (2, 3))
    >>> doubled = jax.tree.map(lambda x: 2 * x, params)
    >>> type(doubled.kernel).__name__
    'Param'
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import Any

import jax
import numpy as np

from .filters import Filter, filters_to_predicates
from .object import structure_changed
from .variables import Variable

__all__ = ["State", "PathParts", "Origin"]

PathParts = tuple  # a path: attribute names, list indices and dict keys from the root


class Origin:
    """Where a State that ``split``/``state`` built came from, so ``merge``/``update`` can
    take its leaves by position instead of looking each path up.

    Every level of one State tree shares it; an edit to any level (``__setitem__``,
    ``__delitem__``, ``replace_by_pure_dict``) marks it stale, and the path-by-path route is
    taken again. Changing a Variable's value in place keeps it valid: entries are read when
    used.
    """

    __slots__ = ("graphdef", "indices", "entries", "root", "intact")

    def __init__(self, graphdef: Any, indices: tuple, entries: list) -> None:
        self.graphdef = graphdef  # the GraphDef the entries' positions refer to
        self.indices = indices  # per entry: its leaf index in the GraphDef
        self.entries = entries  # the State's leaves, in flat order (Variables or arrays)
        self.root = 0  # id() of the root State (sub-States share the Origin but are not it)
        self.intact = True

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
        """Same paths, same Variable types, equal values."""
        if not isinstance(other, State):
            return NotImplemented
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

    def to_pure_dict(self) -> dict:
        """Nested plain dicts of raw values (Variables replaced by their ``.value``)."""
        return {
            k: v.to_pure_dict() if isinstance(v, State) else (v._value if isinstance(v, Variable) else v)
            for k, v in self._mapping.items()
        }

    def replace_by_pure_dict(self, pure_dict: Mapping, replace_fn: Callable | None = None) -> None:
        """Put the values of a pure dict (see :meth:`to_pure_dict`) into this State, in place."""
        self._edited()
        for key, value in pure_dict.items():
            if key not in self._mapping and isinstance(key, str) and key.isdigit() and int(key) in self._mapping:
                key = int(key)  # checkpoints store list indices as strings
            if key not in self._mapping:
                raise KeyError(f"State has no entry {key!r}; its keys are {list(self._mapping)}")
            current = self._mapping[key]
            if isinstance(current, State):
                current.replace_by_pure_dict(value, replace_fn)
            elif isinstance(current, Variable):
                self._mapping[key] = current.replace(replace_fn(current, value) if replace_fn else value)
            else:
                self._mapping[key] = replace_fn(current, value) if replace_fn else value

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
