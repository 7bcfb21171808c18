"""How every transform moves modules across a JAX transform boundary.

1. Outside: :class:`Call` flattens the call's arguments jointly (one GraphDef, one list of
   leaves, the caller's objects by node index). Each leaf is a Variable value, an array
   held by a module, or a plain argument array.
2. Inside the JAX transform: :func:`enter` rebuilds fresh objects from the GraphDef and the
   traced leaves, and the user function runs on them.
3. Still inside: :func:`collect` flattens the (possibly changed) inputs together with the
   output. It records, as static information, the new GraphDef, which of its objects are
   input objects, and which input leaves were written.
4. Outside again: :meth:`Call.write_back` writes the new values into the caller's objects
   (and the new structure, if it changed) and rebuilds the output, mapping input objects to
   the caller's own objects so that identity holds across the boundary.

A transform only decides which leaves go where (mapped, carried, broadcast,
differentiated) and calls JAX on flat lists of arrays.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Container
from typing import Any

import jax

from .. import object as _object
from ..encoding import ARRAY_TYPES, Flat, GraphDef, flatten, flatten_cached, is_graph_node, unflatten
from ..errors import AxisError, TransformError
from ..variables import Variable, describe
from .axes import resolve
from .messages import rank_error, stream_key

__all__ = ["Call", "Collected", "enter", "collect", "finish", "reject_removed_kwargs"]


class Collected:
    """Static facts about one traced call: the output GraphDef and how it maps to inputs."""

    __slots__ = ("graphdef", "origin", "same", "input_leaf", "changed", "n_roots")

    def __init__(self, graphdef: GraphDef, origin: tuple, same: bool, input_leaf: tuple, changed: tuple, n_roots: int):
        self.graphdef = graphdef  # GraphDef of (*input roots, output)
        self.origin = origin  # per node: index of the input node it is, or -1 if new
        self.same = same  # input structure unchanged (leaf k of the output is input leaf k)
        self.input_leaf = input_leaf  # per leaf: the input leaf it continues, or -1 if new
        self.changed = changed  # per leaf: an input leaf that was written, or a new leaf
        self.n_roots = n_roots

    def out_leaves(self) -> list[int]:
        """Indices of leaves that belong to the output alone (not reachable from inputs)."""
        n = self.n_roots
        return [k for k, p in enumerate(self.graphdef.leaf_paths) if p[0] == n]


def enter(graphdef: GraphDef, leaves: list) -> tuple[tuple, list]:
    """Inside a transform: fresh objects for the inputs (see :func:`plait.graph.unflatten`)."""
    return unflatten(graphdef, leaves)


def collect(graphdef: GraphDef, objs: list, leaves: list, roots: tuple, out: Any) -> tuple[Collected, Flat]:
    """Inside a transform: flatten inputs and output together; compare with the inputs."""
    flat2, leaves2 = flatten(tuple(roots) + (out,))
    gd2 = flat2.graphdef
    n_nodes, n_roots = len(graphdef.nodes), len(roots)
    position = {id(o): i for i, o in enumerate(objs)}
    origin = tuple(position.get(id(o), -1) for o in flat2.objs)
    # The same structure is not enough: swapping two sub-modules of one type leaves the
    # encoding equal but puts other objects at each node, so identities are compared too.
    same = (gd2.roots[:n_roots] == graphdef.roots and gd2.nodes[:n_nodes] == graphdef.nodes
            and all(o == i for i, o in enumerate(origin[:n_nodes])))
    n_in = graphdef.num_leaves
    input_leaf = []
    for k, node in enumerate(gd2.leaf_nodes):
        if same and k < n_in:
            input_leaf.append(k)
        elif node >= 0 and origin[node] >= 0:
            input_leaf.append(graphdef.nodes[origin[node]].leaf)
        else:
            input_leaf.append(-1)
    changed = tuple(i < 0 or leaves2[k] is not leaves[i] for k, i in enumerate(input_leaf))
    return Collected(gd2, origin, same, tuple(input_leaf), changed, n_roots), flat2


def reject_removed_kwargs(transform: str, removed: dict) -> None:
    """The pre-0.9 keyword arguments get an error that shows the new spelling."""
    if not removed:
        return
    name = next(iter(removed))
    if name == "split_rngs":
        raise TypeError(
            f"{transform}() no longer takes split_rngs=: transforms never split RNG streams "
            "themselves. Say where to split with the split_rngs decorator, above the transform:\n"
            "    @nnx.split_rngs(splits=3)\n"
            f"    @nnx.{transform}(...)\n"
            "    def f(rngs): ..."
        )
    if name == "state_axes":
        raise TypeError(
            f"{transform}() no longer takes state_axes=: give a module argument its per-Variable "
            "axes with StateAxes in in_axes:\n"
            f"    @nnx.{transform}(in_axes=(nnx.StateAxes({{nnx.Param: 0, ...: None}}), 0))"
        )
    raise TypeError(f"{transform}() got an unexpected keyword argument {name!r}")


class Store:
    """Facts found while JAX traces an inner function (the output GraphDef, which leaves
    were written, ...), read by the code that called the transform.

    Reading it before the trace wrote it is a bug in plait, not in the user's code, and
    raises instead of returning a stale or empty value (like ``linear_util.Store``).
    """

    __slots__ = ("_value",)

    def __init__(self) -> None:
        self._value: Any = _UNSET

    def put(self, value: Any) -> None:
        self._value = value

    @property
    def filled(self) -> bool:
        """The trace got as far as writing its facts (it can fail before, e.g. in JAX)."""
        return self._value is not _UNSET

    def get(self) -> Any:
        if self._value is _UNSET:
            raise AssertionError("plait: a transform read its trace facts before JAX traced the function")
        return self._value


_UNSET = object()


def bind_arguments(fun: Callable, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Keyword arguments that name positional parameters become positional, as the
    function's signature says; per-argument specs (``in_axes``, ``argnums``) then apply to
    them whether they were passed by position or by name."""
    if not kwargs:
        return args, kwargs
    try:
        bound = inspect.signature(fun).bind(*args, **kwargs)
    except (TypeError, ValueError):  # no signature, or a call the function itself will refuse
        return args, kwargs
    return tuple(bound.args), dict(bound.kwargs)


class Call:
    """One call of a transformed function, outside the JAX transform.

    Keyword arguments are bound to their positions first (:func:`bind_arguments`); the
    rest (keyword-only) travel as one dict root after the positional ones.

    ``held`` names arguments (positions, keyword names) that stay out of the flattening:
    ``jit`` hands its plain arguments to ``jax.jit`` as pytrees and its static ones as static
    values. A held position keeps a ``None`` placeholder among the roots, so every other
    root stays at its argument's position (for specs and for paths in errors), and
    :meth:`run` is given the held values inside the trace. With ``cached``, a call whose
    roots are all graph nodes is flattened through the structure cache
    (:func:`~plait.encoding.flatten_cached`); its leaves are read from the Variables.
    """

    __slots__ = ("fun", "transform", "args", "kwargs", "roots", "flat", "leaves", "n_args", "names", "graphdef",
                 "has_kwargs", "cached")

    def __init__(self, fun: Callable, transform: str, args: tuple, kwargs: dict, names: list[str] | None = None,
                 bind: bool = True, scalars: bool = False, *, held: Container = (), cached: bool = False,
                 refs: bool = False) -> None:
        if bind:
            args, kwargs = bind_arguments(fun, args, kwargs)
        self.fun = fun
        self.names = names  # argument names for errors, if not the function's own
        self.transform = transform
        self.args = args
        self.n_args = len(args)
        if held:
            if kwargs:
                kwargs = {k: v for k, v in kwargs.items() if k not in held}
            roots = tuple([None if i in held else a for i, a in enumerate(args)])
        else:
            roots = args
        self.kwargs = kwargs  # the keyword-only arguments that are flattened
        self.has_kwargs = bool(kwargs)
        self.roots = roots + (kwargs,) if kwargs else roots
        self.cached = cached and not kwargs and _graph_nodes_or_none(roots)
        if self.cached:
            self.flat = flatten_cached(self.roots)
            self.leaves = self.flat.leaves if self.flat.leaves is not None else self.flat.current_leaves()
        else:
            self.flat, self.leaves = flatten(self.roots, scalars=scalars)
        self.graphdef = self.flat.graphdef
        if not refs:
            self.read_refs()

    def structure(self) -> Call:
        """This call without its values (no arrays, none of the caller's objects): what an
        inner function kept with a compiled function may hold, to :meth:`run` and name paths
        for every later call of the same structure."""
        shape = object.__new__(Call)
        shape.fun, shape.transform, shape.names, shape.n_args = self.fun, self.transform, self.names, self.n_args
        shape.graphdef, shape.has_kwargs, shape.cached = self.graphdef, self.has_kwargs, self.cached
        shape.args, shape.kwargs, shape.roots, shape.flat, shape.leaves = (), {}, (), None, None
        return shape

    def read_refs(self) -> None:
        """A ref-backed Variable goes into a transform other than ``jit`` as the array its ref
        holds now (JAX cannot differentiate, batch or loop over a ref); what the transform
        writes to it goes back into the ref (see ``encoding._store``), which the Variable keeps."""
        copied = False
        for k, leaf in enumerate(self.leaves):
            if isinstance(leaf, jax.Ref):
                if not copied:
                    self.leaves, copied = list(self.leaves), True
                self.leaves[k] = leaf[...]

    def is_state(self, k: int) -> bool:
        """Leaf ``k`` is held by a Variable or a module (so writes to it go back)."""
        return self.flat.slots[k] is not None or self.flat.graphdef.leaf_owners[k] is not None

    def value(self, k: int) -> Any:
        """What filters and errors see for leaf ``k``: its Variable, or the raw array."""
        slot = self.flat.slots[k]
        return slot if slot is not None else self.leaves[k]

    def resolve(self, specs: tuple, name: str, keyword_spec: Any = None, leaf_types: tuple = (),
                combine: Callable | None = None) -> list:
        """Each leaf's spec value (axis, sharding, ...), from ``specs`` (one per positional
        argument; keyword-only arguments get ``keyword_spec``). This is the one place where
        a module reached through two arguments (or two paths) must get the same value, or,
        for a spec where two values can be reconciled (``jit``'s donation), where
        ``combine(first, other)`` gives the one it gets."""
        gd, n_args = self.graphdef, self.n_args

        def at(path: tuple, k: int) -> Any:
            spec = specs[path[0]] if path[0] < n_args else keyword_spec
            return resolve(spec, path[1:], self.value(k), lambda: describe(self.path_text(path), self.value(k)),
                           self.transform, name, leaf_types)

        out = [at(path, k) for k, path in enumerate(gd.leaf_paths)]
        for k, path in gd.aliases():
            other = at(path, k)
            if other is not out[k] and other != out[k] and combine is not None:
                out[k] = combine(out[k], other)
            elif other is not out[k] and other != out[k]:
                first = gd.leaf_paths[k]
                raise AxisError(
                    f"{self.transform}: {self.describe_leaf(k)} is also reached as `{self.path_text(path)}`, "
                    f"and the two get different specs from {name}: {out[k]!r} by way of `{self.path_text(first)}`, "
                    f"{other!r} by way of `{self.path_text(path)}`.\n"
                    "One Variable can be transformed only one way. Give both places the same spec, "
                    f"e.g. {name} entry {_spec_text(out[k])} for both arguments, or pass the shared module once."
                )
        return out

    def split_roots(self, roots: tuple) -> tuple[tuple, dict]:
        if self.has_kwargs:
            return roots[: self.n_args], roots[self.n_args]
        return roots, {}

    def written(self) -> tuple[Callable, Store]:
        """For transforms that treat every leaf alike (remat, checkify): the inner function,
        every leaf in and the written leaves out, and the Store its trace fills with
        ``(collected, written leaf indices)`` for :meth:`finish`."""
        facts = Store()

        def inner(leaves: list) -> list:
            _, col, flat2 = self.run(list(leaves))
            emit = [k for k, changed in enumerate(col.changed) if changed]
            facts.put((col, emit))
            return [flat2.leaves[k] for k in emit]

        return inner, facts

    def finish(self, collected: Collected, emitted: list[int], values: list) -> Any:
        """Outside: every output leaf (unchanged inputs forwarded from the caller, the
        ``emitted`` ones from ``values``) written back; returns the function's output."""
        return finish(self.flat, self.leaves, collected, emitted, values)

    def run(self, leaves: list, select: Callable | None = None, target: Callable | None = None,
            prefix: tuple = (), around: Any = None, given: dict | None = None) -> tuple[Any, Collected, Flat]:
        """Inside: rebuild inputs from ``leaves``, call the function, collect inputs and output.

        ``select`` maps the function's raw result to what is collected as the output;
        ``target`` replaces the function (a cond branch, a loop body), called with
        ``*prefix`` before the rebuilt arguments. ``around`` (vmap/scan transform_metadata)
        has ``before(roots)``, run on the fresh inputs before the function, and
        ``after(roots, out)``, run before they are collected. ``given`` holds the values of
        the ``held`` arguments, by position or keyword name.
        """
        gd = self.graphdef
        roots, objs = enter(gd, leaves)
        if around is not None:
            around.before(roots)
        args, kwargs = self.split_roots(roots)
        if given:
            args, kwargs = list(args), dict(kwargs)
            for key, value in given.items():
                if type(key) is int:
                    args[key] = value
                else:
                    kwargs[key] = value
        result = (target or self.fun)(*prefix, *args, **kwargs)
        out = select(result) if select is not None else result
        if around is not None:
            around.after(roots, out)
        collected, flat2 = collect(gd, objs, leaves, roots, out)
        return result, collected, flat2

    def write_back(self, collected: Collected, leaves: list) -> Any:
        """Outside: write values (and structure) into the caller's objects; return the output."""
        return write_back(self.flat, collected, leaves)

    # -- naming things in errors ------------------------------------------------------------
    def path_text(self, path: tuple) -> str:
        return path_text(self.fun, self.n_args, self.has_kwargs, path, self.names)

    def describe_leaf(self, k: int) -> str:
        return describe(self.path_text(self.graphdef.leaf_paths[k]), self.value(k))


def _graph_nodes_or_none(roots: tuple) -> bool:
    for r in roots:
        if r is not None and not isinstance(r, _GRAPH_TYPES):
            return False
    return True


_GRAPH_TYPES = (_object.Object, Variable)


def _spec_text(spec: Any) -> str:
    return repr(spec)


class Facts:
    """Static facts of one trace carried out of JAX as a pytree node with no leaves.

    JAX hands the node back from its own caches (``jax.jit`` on a cache hit returns the
    facts of the trace that compiled the function), so the facts always belong to the
    compiled function that ran, even when several are cached. The node itself is the
    structure: a cached call gets the very object back, for one Python call (``jit``'s
    fast path counts on that).
    """

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


jax.tree_util.register_pytree_node(Facts, lambda f: ((), f), lambda f, _: f)

_TOP = _object.trace_state()


def eager() -> bool:
    """No JAX trace is running: a transform called here may compile and cache itself."""
    return _object.trace_state() == _TOP


class TraceContext:
    """What an inner function reads at trace time: the call being traced, and a Store for the
    trace's facts. A compiled function kept in a :class:`Compiled` cache outlives its first
    call, so it must not hold that call (or its arrays) itself; the caller sets both around
    each JAX call."""

    __slots__ = ("call", "store")

    def __init__(self) -> None:
        self.call: Call | None = None
        self.store = Store()


class Compiled:
    """One transformed function's JAX functions by structure key. Built anew under a trace;
    called eagerly, built once per key and kept (wrapped in ``jax.jit`` with ``jit=True``), so a
    second eager call with the same structure does not run the Python function again. A
    function that closes over arrays or modules is never kept (it would read stale values)."""

    __slots__ = ("entries", "jit")

    def __init__(self, jit: bool = True) -> None:
        self.entries: dict = {}
        self.jit = jit

    def get(self, key: Any, f: Callable, build: Callable[[TraceContext], Callable]) -> tuple[Callable, TraceContext]:
        entry = self.entries.get(key)
        if entry is not None:
            return entry
        context = TraceContext()
        fn = build(context)
        if eager() and not closes_over_state(f):
            if self.jit:
                fn = jax.jit(fn)
            if len(self.entries) > 32:
                self.entries.clear()
            self.entries[key] = (fn, context)
        return fn, context


def closes_over_state(fun: Callable) -> bool:
    """``fun`` (or a function it wraps) holds arrays or graph objects in its closure or
    defaults: a compiled, cached version would keep their first values."""
    seen = 0
    while fun is not None and seen < 8:
        seen += 1
        cells = [c.cell_contents for c in (getattr(fun, "__closure__", None) or ()) if _filled(c)]
        cells += list(getattr(fun, "__defaults__", None) or ())
        cells += list(getattr(fun, "args", ()) or ()) + list((getattr(fun, "keywords", None) or {}).values())
        for value in cells:
            if callable(value) and not isinstance(value, type) and closes_over_state(value):
                return True
            leaves = jax.tree_util.tree_leaves(value, is_leaf=is_graph_node)
            if any(is_graph_node(x) or isinstance(x, ARRAY_TYPES) for x in leaves):
                return True
        fun = getattr(fun, "__wrapped__", None) or getattr(fun, "func", None) or getattr(fun, "__func__", None)
    return False


def _filled(cell: Any) -> bool:
    try:
        cell.cell_contents  # noqa: B018
    except ValueError:
        return False
    return True


def mapped_size(call: Call, axes: list, size: int | None, transform: str, size_name: str) -> tuple[int, list[int]]:
    """The common length of every leaf with an int axis (vmap's lanes, scan's steps), checked
    against ``size`` when given; returns it and the mapped leaves."""
    sized_by = None
    mapped = []
    lacking = None  # the first leaf without the axis: raised once the size is known, for the fix
    for k, axis in enumerate(axes):
        if type(axis) is not int:
            continue
        shape = jax.numpy.shape(call.leaves[k])
        if not -len(shape) <= axis < len(shape):
            lacking = (k, axis) if lacking is None else lacking
            continue
        n = shape[axis]
        if size is None:
            size, sized_by = n, k
        elif n != size and lacking is None:
            k = stream_key(call, k)
            first = f"{size_name}={size}" if sized_by is None else f"{call.describe_leaf(sized_by)} has {size}"
            what = "scanned" if transform == "scan" else "mapped"
            sizes = "lengths" if transform == "scan" else "sizes"
            raise AxisError(
                f"{transform}: {what} axes have different {sizes}: {call.describe_leaf(k)} has {n} on axis {axis}, "
                f"but {first}.\nEvery {what} argument and Variable needs the same size on its {what} axis; "
                f"{'broadcast the odd one out with None' if transform != 'scan' else 'broadcast the odd one out with None in in_axes'}."
            )
        mapped.append(k)
    if lacking is not None:
        raise rank_error(call, lacking[0], lacking[1], transform, size)
    if size is None:
        verb = "scanned over" if transform == "scan" else "mapped"
        raise TransformError(
            f"{transform}: nothing is {verb} (no int axis in in_axes), so the {'length' if transform == 'scan' else 'axis size'} "
            f"is unknown; pass {size_name}=N, e.g. nnx.{transform}(f, {size_name}=3)"
        )
    return size, mapped


def forward_unchanged(leaves: list, collected: Collected, emitted: list[int], values: list) -> list:
    """All leaves of the output GraphDef: unchanged inputs from the caller's ``leaves``, the
    ``emitted`` ones from ``values``."""
    full: list = [None] * collected.graphdef.num_leaves
    for k2, i in enumerate(collected.input_leaf):
        if i >= 0:
            full[k2] = leaves[i]
    for k2, v in zip(emitted, values):
        full[k2] = v
    return full


def finish(flat: Flat, leaves: list, collected: Collected, emitted: list[int], values: list) -> Any:
    """See :meth:`Call.finish`: for a caller that keeps a flattening (and its leaves) without a
    :class:`Call`, as ``jit``'s per-structure fast path does."""
    return write_back(flat, collected, forward_unchanged(leaves, collected, emitted, values))


def write_back(flat: Flat, collected: Collected, leaves: list) -> Any:
    """See :meth:`Call.write_back`; ``leaves`` are the final values of every output leaf."""
    if collected.same:
        reuse = flat.objs + [None] * (len(collected.graphdef.nodes) - len(flat.objs))
    else:
        reuse = [flat.objs[o] if o >= 0 else None for o in collected.origin]
    roots, _ = unflatten(collected.graphdef, leaves, reuse)
    if not collected.same:
        _object.structure_changed()
    return roots[-1]


def arg_names(fun: Callable) -> list[str]:
    try:
        params = inspect.signature(fun).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def path_text(fun: Callable, n_args: int, has_kwargs: bool, path: tuple, names: list[str] | None = None) -> str:
    root, rest = path[0], path[1:]
    if root < n_args:
        names = names if names is not None else arg_names(fun)
        head = names[root] if root < len(names) else f"args[{root}]"
    elif has_kwargs and root == n_args and rest:
        head, rest = str(rest[0]), rest[1:]
    else:
        head = "<output>"
    return ".".join([head, *map(str, rest)])


_DECORATORS = {"jit", "vmap", "pmap", "scan", "grad", "value_and_grad", "remat", "shard_map", "custom_vjp"}


def check_callable(fun: Any, transform: str) -> None:
    if not callable(fun):
        how = (f"Use it as a decorator, @nnx.{transform}(...), or call nnx.{transform}(f, ...)."
               if transform in _DECORATORS else f"Call it as nnx.{transform}(f, ...) with a function f.")
        raise TransformError(f"{transform} expects a function, got a {type(fun).__name__}.\n{how}")
