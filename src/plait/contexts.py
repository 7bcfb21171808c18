"""Split and merge contexts: the building blocks of a lifted transform written by hand.

plait's own transforms (``nnx.jit``, ``nnx.vmap``, ...) keep object identity across a JAX
transform through one internal protocol (:mod:`plait.transforms.lift`). These contexts give
the same guarantee to a transform a user writes around a raw ``jax.jit``/``jax.vmap``, with
the reference's names and four steps::

                 inner (traced once)
      (2) merge ----------------------> split (3)
          ^                               |
          |  graphdef, state              |  graphdef, state
          |                               v
      (1) split                         merge (4)
                  outer (every call)

- :func:`split_context` gives a :class:`SplitContext`; each ``ctx.split(node)`` in one
  context numbers the graph's objects (modules, Rngs, Variables) with indices shared by the
  whole context, so an object split twice gets one index.
- :func:`merge_context` gives a :class:`MergeContext`; ``ctx.merge(graphdef, state)`` builds
  the objects, and an index already built in this context gives the same object back.
- :func:`update_context` ties the four steps together under a tag: the outer split (1)
  remembers the caller's objects by index; the inner merge (2) remembers which fresh object
  stands for which outer index; the inner split (3) writes, for each node of the output, the
  outer index it stands for into the GraphDef it returns (static data, so it survives a
  cached ``jax.jit`` call that does not trace again); the outer merge (4) then writes values
  and structure into the caller's own objects instead of building new ones.

The GraphDefs the contexts make are :class:`ContextGraphDef`: an ordinary GraphDef (``nnx.merge``
takes it) that also carries those indices.

Example:
    >>> import jax, jax.numpy as jnp, plait as nnx
    >>> model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    >>> with nnx.update_context("step"):
    ...     with nnx.split_context("step") as ctx:
    ...         graphdef, state = ctx.split(model)
    ...     @jax.jit
    ...     def f(graphdef, state):
    ...         with nnx.merge_context("step", inner=True) as ctx:
    ...             m = ctx.merge(graphdef, state)
    ...         m.kernel.value = m.kernel.value * 0
    ...         with nnx.split_context("step") as ctx:
    ...             return ctx.split(m)
    ...     graphdef, state = f(graphdef, state)
    ...     with nnx.merge_context("step", inner=False) as ctx:
    ...         same = ctx.merge(graphdef, state)
    >>> same is model, float(model.kernel.value.sum())
    (True, 0.0)
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Hashable, Iterator
from typing import Any, TypeVar

import jax

from . import object as _object
from .encoding import GraphDef
from .encoding import flatten as encode
from .encoding import unflatten as decode
from .errors import GraphError
from .filters import Filter
from .graph import (
    _check_node,
    _leaves_by_path,
    _origin_leaves,
    _states,
    _variable_root,
    _variable_states,
    _variable_value,
    split,
)
from .mode import NoOpContext
from .state import FlatState, GraphDefState
from .variables import Variable

__all__ = ["ContextGraphDef", "SplitContext", "MergeContext", "UpdateContext", "split_context", "merge_context",
           "update_context", "current_update_context", "unpack"]

F = TypeVar("F", bound=Callable[..., Any])


class ContextGraphDef(GraphDef):
    """A GraphDef made inside a :func:`split_context`: besides the structure, each node's index
    in the context (``indices``) and, when it was split inside an :func:`update_context`
    transform, the caller's object each node stands for (``outer``, None for new objects).

    Two are equal when structure and indices are; a plain GraphDef of the same structure is not
    equal to it (they key different compiled functions).
    """

    __slots__ = ("indices", "outer")

    def __init__(self, base: GraphDef, indices: tuple, outer: tuple | None) -> None:
        super().__init__(base.nodes, base.roots, base.leaf_paths, base.leaf_nodes, base.leaf_owners)
        self.revisits, self.node_paths = base.revisits, base.node_paths
        self.indices = indices
        self.outer = outer

    def __eq__(self, other: Any) -> bool:
        if self is other:
            return True
        return (type(other) is ContextGraphDef and self.roots == other.roots and self.nodes == other.nodes
                and self.indices == other.indices and self.outer == other.outer)

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash((self.nodes, self.roots, self.indices, self.outer))
        return self._hash

    def __getstate__(self) -> tuple:
        return (*super().__getstate__(), self.indices, self.outer)

    def __setstate__(self, state: tuple) -> None:
        super().__setstate__(state[:7])
        self.indices, self.outer = state[7], state[8]


jax.tree_util.register_pytree_node(ContextGraphDef, lambda gd: ((), gd), lambda gd, _: gd)


class _Stacks(threading.local):
    def __init__(self) -> None:
        self.update: dict[Hashable, list[UpdateContext]] = {}


_STACKS = _Stacks()


class UpdateContext:
    """The bookkeeping of one :func:`update_context`: the caller's objects by index (from the
    outer split) and the fresh objects that stand for them inside (from the inner merge).

    It is static data for JAX (all UpdateContexts are equal), so a function may close over it
    or take it as an argument. ``ctx.split``/``ctx.merge`` are the reference's older spelling of
    the four steps (one split or merge each).
    """

    def __init__(self, tag: Hashable) -> None:
        self.tag = tag
        self.outer_index_outer_ref: dict[int, Any] | None = None  # (1): index -> caller's object
        self.outer_index_inner_ref: dict[int, Any] | None = None  # (2): index -> fresh object inside
        self.inner_ref_outer_index: dict[int, int] | None = None  # (2): id(fresh object) -> index

    def __hash__(self) -> int:
        return 0

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, UpdateContext)

    def __repr__(self) -> str:
        return f"UpdateContext(tag={self.tag!r})"

    def flatten_end(self, ref_index: dict[int, tuple[int, Any]]) -> None:
        """A split context of this tag closed: the first one is the outer split (1); a later one
        is the inner split (3), after which the inner maps are dropped."""
        if self.outer_index_outer_ref is None:
            self.outer_index_outer_ref = {i: obj for i, obj in ref_index.values()}
        else:
            self.outer_index_inner_ref = None
            self.inner_ref_outer_index = None

    def unflatten_end(self, index_ref: dict[int, Any], inner_merge: bool) -> None:
        """A merge context of this tag closed; an inner merge (2) records the fresh objects."""
        if inner_merge:
            self.outer_index_inner_ref = index_ref
            self.inner_ref_outer_index = {id(obj): i for i, obj in index_ref.items()}

    def split(self, node: Any, *filters: Filter) -> tuple:
        """One split of this context (outer (1) the first time, inner (3) after a merge)."""
        context = SplitContext(self.tag, self)
        try:
            return context.split(node, *filters)
        finally:
            self.flatten_end(context.ref_index)

    def merge(self, graphdef: GraphDef, state: Any, /, *states: Any) -> Any:
        """One merge of this context: the outer merge (4) for a GraphDef an inner split made
        (it knows the caller's objects), else the inner merge (2)."""
        inner = not (isinstance(graphdef, ContextGraphDef) and graphdef.outer is not None)
        context = MergeContext(self.tag, self, inner)
        try:
            return context.merge(graphdef, state, *states)
        finally:
            self.unflatten_end(context.index_ref, inner)


jax.tree_util.register_static(UpdateContext)


class SplitContext:
    """What :func:`split_context` yields: ``split``/``flatten`` whose objects are numbered across
    every call in the context."""

    def __init__(self, ctxtag: Hashable | None, update: UpdateContext | None = None) -> None:
        self.ctxtag = ctxtag
        self.update = update
        self.is_inner = None if update is None else update.outer_index_outer_ref is not None
        self.ref_index: dict[int, tuple[int, Any]] = {}  # id(obj) -> (index, obj); the obj keeps the id valid

    def _graphdef(self, base: GraphDef, objs: list) -> ContextGraphDef:
        ref_index = self.ref_index
        indices = []
        for obj in objs:
            entry = ref_index.get(id(obj))
            if entry is None:
                entry = ref_index[id(obj)] = (len(ref_index), obj)
            indices.append(entry[0])
        outer = None
        update = self.update
        if update is not None and update.inner_ref_outer_index is not None:  # inner split (3)
            known = update.inner_ref_outer_index
            inner_refs = update.outer_index_inner_ref or {}
            outer = tuple(i if (i := known.get(id(obj))) is not None and inner_refs.get(i) is obj else None
                          for obj in objs)
        return ContextGraphDef(base, tuple(indices), outer)

    def split(self, node: Any, *filters: Filter) -> tuple:
        """``nnx.split`` inside the context: ``(graphdef, *states)``, the GraphDef numbering
        the objects as the context does.

        Example:
            >>> import plait as nnx
            >>> layer = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
            >>> with nnx.split_context() as ctx:
            ...     gd1, s1 = ctx.split(layer)
            ...     gd2, s2 = ctx.split([layer])
            >>> with nnx.merge_context() as ctx:
            ...     a = ctx.merge(gd1, s1)
            ...     b = ctx.merge(gd2, s2)
            >>> b[0] is a
            True
        """
        _check_node(node, "split")
        flat, _ = encode((node,))
        flat.graphdef = self._graphdef(flat.graphdef, flat.objs)
        if isinstance(node, Variable):
            return (flat.graphdef, *_variable_states(node, filters, strict=True))
        return (flat.graphdef, *_states(flat, filters, strict=True))

    def flatten(self, node: Any, *filters: Filter, with_paths: bool = True) -> tuple:
        """``nnx.graph.flatten`` inside the context: ``(graphdef, flat_state, ...)`` (one
        FlatState per filter), or with ``with_paths=False`` the leaf values in order."""
        if not with_paths:
            if filters:
                raise GraphError("SplitContext.flatten: filters need with_paths=True (a list of leaves has no paths)")
            _check_node(node, "flatten")
            flat, leaves = encode((node,))
            return self._graphdef(flat.graphdef, flat.objs), leaves
        graphdef, *states = self.split(node, *filters)
        flats = [FlatState([((), s)], sort=False) if isinstance(s, Variable) else FlatState(s.flat_state(), sort=True)
                 for s in states]
        return (graphdef, *flats)


class MergeContext:
    """What :func:`merge_context` yields: ``merge``/``unflatten`` that give one object per index
    across every call in the context (and, for an outer merge, the caller's own objects)."""

    def __init__(self, ctxtag: Hashable | None, update: UpdateContext | None = None, inner: bool | None = None) -> None:
        self.ctxtag = ctxtag
        self.update = update
        self.is_inner = inner
        self.index_ref: dict[int, Any] = {}

    def merge(self, graphdef: GraphDef, state: Any, /, *states: Any) -> Any:
        """``nnx.merge`` inside the context.

        Example:
            >>> import plait as nnx
            >>> with nnx.split_context() as ctx:
            ...     gd, st = ctx.split(nnx.Linear(2, 3, rngs=nnx.Rngs(0)))
            >>> with nnx.merge_context() as ctx:
            ...     type(ctx.merge(gd, st)).__name__
            'Linear'
        """
        if not isinstance(graphdef, GraphDef):
            raise GraphError(f"merge expects a GraphDef first, got a {type(graphdef).__name__}")
        given = (state, *states)
        if _variable_root(graphdef):
            leaves = [_variable_value(graphdef, given, "merge")]
        else:
            leaves = _origin_leaves(graphdef, given)
            if leaves is None:
                leaves = _leaves_by_path(graphdef, given)
        return self._build(graphdef, leaves)

    def unflatten(self, graphdef: GraphDef, flat_state: Any, /, *flat_states: Any) -> Any:
        """``nnx.graph.unflatten`` inside the context: from FlatStates (merged), a State, or the
        list of leaf values ``SplitContext.flatten(..., with_paths=False)`` gave."""
        if type(flat_state) is list:
            if flat_states:
                raise GraphError("MergeContext.unflatten: a list of leaves comes alone, without further flat states")
            if len(flat_state) != graphdef.num_leaves:
                raise GraphError(f"unflatten: the GraphDef has {graphdef.num_leaves} leaves, "
                                 f"but {len(flat_state)} were given")
            return self._build(graphdef, [x._value if isinstance(x, Variable) else x for x in flat_state])
        states = [s.to_nested_state() if isinstance(s, FlatState) and not _variable_root(graphdef) else
                  (s.leaves[0] if isinstance(s, FlatState) else s) for s in (flat_state, *flat_states)]
        return self.merge(graphdef, *states)

    def _build(self, graphdef: GraphDef, leaves: list) -> Any:
        indices = graphdef.indices if isinstance(graphdef, ContextGraphDef) else None
        outer = graphdef.outer if isinstance(graphdef, ContextGraphDef) else None
        update = self.update
        callers = update.outer_index_outer_ref if update is not None and not self.is_inner else None
        reuse: list | None = None
        if indices is not None:
            reuse = [self.index_ref.get(i) for i in indices]
            if outer is not None and callers:  # outer merge (4): the caller's objects
                for n, i in enumerate(outer):
                    if reuse[n] is None and i is not None:
                        reuse[n] = callers.get(i)
            for n, obj in enumerate(reuse):
                if obj is not None and type(obj) is not graphdef.nodes[n].type:
                    raise GraphError(
                        f"merge: node {n} of the GraphDef is a {graphdef.nodes[n].type.__name__}, but the object "
                        f"it stands for in this context is a {type(obj).__name__}.\nMerge each GraphDef in the "
                        "context its split was paired with (the same tag, inner= as the split's side)."
                    )
            if all(obj is None for obj in reuse):
                reuse = None
        roots, objs = decode(graphdef, leaves, reuse=reuse)
        if reuse is not None:
            _object.structure_changed()  # the caller's objects may have new attributes
        if indices is not None:
            for i, obj in zip(indices, objs):
                self.index_ref.setdefault(i, obj)
        return roots[0]


def current_update_context(tag: Hashable) -> UpdateContext:
    """The innermost active :class:`UpdateContext` of ``tag``.

    Example:
        >>> import plait as nnx
        >>> with nnx.update_context("mine") as ctx:
        ...     nnx.current_update_context("mine") is ctx
        True
    """
    stack = _STACKS.update.get(tag)
    if not stack:
        raise GraphError(
            f"no update context with tag {tag!r} is active.\n"
            f"Open one around the outer split and merge: with nnx.update_context({tag!r}): ..."
        )
    return stack[-1]


@contextlib.contextmanager
def split_context(ctxtag: Hashable | None = None) -> Iterator[SplitContext]:
    """A :class:`SplitContext`: splits in it share one numbering of objects. With ``ctxtag``,
    it is a step of the active :func:`update_context` of that tag (outer the first time, inner
    after an inner merge).

    Example:
        >>> import plait as nnx
        >>> layer = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
        >>> with nnx.split_context() as ctx:
        ...     gd, state = ctx.split(layer)
        >>> sorted(state)
        ['bias', 'kernel']
    """
    update = current_update_context(ctxtag) if ctxtag is not None else None
    ctx = SplitContext(ctxtag, update)
    try:
        yield ctx
    finally:
        if update is not None:
            update.flatten_end(ctx.ref_index)
        ctx.ref_index = {}


@contextlib.contextmanager
def merge_context(ctxtag: Hashable | None = None, inner: bool | None = None) -> Iterator[MergeContext]:
    """A :class:`MergeContext`: merges in it give one object per index. With ``ctxtag``, it is
    a step of the active :func:`update_context` of that tag, and ``inner`` says which one:
    ``True`` inside the JAX transform (2), ``False`` outside after it (4), where the caller's
    objects are updated in place and returned.

    Example:
        >>> import plait as nnx
        >>> with nnx.split_context() as ctx:
        ...     gd, state = ctx.split(nnx.Rngs(0))
        >>> with nnx.merge_context() as ctx:
        ...     type(ctx.merge(gd, state)).__name__
        'Rngs'
    """
    if ctxtag is not None and inner is None:
        raise GraphError(
            f"merge_context({ctxtag!r}) needs inner=: True inside the JAX transform, False outside after it.\n"
            f"e.g. with nnx.merge_context({ctxtag!r}, inner=True) as ctx: ..."
        )
    update = current_update_context(ctxtag) if ctxtag is not None else None
    ctx = MergeContext(ctxtag, update, inner)
    try:
        yield ctx
    finally:
        if update is not None:
            update.unflatten_end(ctx.index_ref, bool(inner))
        ctx.index_ref = {}


class _UpdateContextManager(NoOpContext):
    """What :func:`update_context` returns: a context manager, and (``NoOpContext``'s
    decorator form) a decorator that runs the function inside a fresh context of the tag."""

    def __init__(self, tag: Hashable) -> None:
        self.tag = tag

    def __enter__(self) -> UpdateContext:
        ctx = UpdateContext(self.tag)
        _STACKS.update.setdefault(self.tag, []).append(ctx)
        return ctx

    def __exit__(self, *exc: Any) -> None:
        stack = _STACKS.update[self.tag]
        ctx = stack.pop()
        # Drop the references to the caller's and the traced objects: a context is one call.
        ctx.outer_index_outer_ref = ctx.outer_index_inner_ref = ctx.inner_ref_outer_index = None
        if not stack:
            del _STACKS.update[self.tag]


def update_context(tag: Hashable) -> _UpdateContextManager:
    """An :class:`UpdateContext` for a lifted transform written by hand, so the objects that come
    out of it are the caller's own, updated in place (values, new attributes, new sub-modules,
    reference cycles). Use it as ``with nnx.update_context(tag):`` around the four steps (see
    :mod:`plait.contexts`), or as a decorator ``@nnx.update_context(tag)``.

    Example:
        >>> import jax, plait as nnx
        >>> class Foo(nnx.Module):
        ...     pass
        >>> @jax.jit
        ... def f(graphdef, state):
        ...     with nnx.merge_context("example", inner=True) as ctx:
        ...         m = ctx.merge(graphdef, state)
        ...     m.a = 1
        ...     m.ref = m  # a reference cycle
        ...     with nnx.split_context("example") as ctx:
        ...         return ctx.split(m)
        >>> @nnx.update_context("example")
        ... def g(m1):
        ...     with nnx.split_context("example") as ctx:
        ...         graphdef, state = ctx.split(m1)
        ...     graphdef_out, state_out = f(graphdef, state)
        ...     with nnx.merge_context("example", inner=False) as ctx:
        ...         return ctx.merge(graphdef_out, state_out)
        >>> m1 = Foo()
        >>> m3 = g(m1)
        >>> m3 is m1, m1.a, m1.ref is m1
        (True, 1, True)
    """
    return _UpdateContextManager(tag)


def unpack(node: Any, *filters: Filter, graph: bool | None = None) -> Any:
    """:func:`~plait.split` with the GraphDef attached to each State (a
    :class:`~plait.state.GraphDefState`): one State for no filter or one, a tuple for two or
    more. ``nnx.merge`` takes them without a separate GraphDef.

    Example:
        >>> import plait as nnx
        >>> node = nnx.BatchNorm(2, rngs=nnx.Rngs(0))
        >>> params, batch_stats = nnx.unpack(node, nnx.Param, nnx.BatchStat)
        >>> sorted(params), type(nnx.merge(params, batch_stats)).__name__
        (['bias', 'scale'], 'BatchNorm')
    """
    if isinstance(node, Variable):
        raise GraphError(f"unpack: a bare {type(node).__name__} has no State to attach a GraphDef to; unpack the "
                         "module that holds it, or use nnx.split(variable)")
    graphdef, *states = split(node, *filters, graph=graph)
    packed = tuple(GraphDefState.of(graphdef, s) for s in states)
    return packed[0] if len(packed) == 1 else packed
