"""``jit``: compile a function of modules; state changes are written back.

``jit`` is the lifting protocol of :mod:`plait.transforms.lift` plus two caches. Its roles
are per argument: arguments holding graph nodes are flattened by :class:`~.lift.Call`;
plain ones are *held* out of the flattening and handed to ``jax.jit`` as pytrees; static
ones go as static values. ``Call.resolve`` gives each leaf its ``in_shardings`` entry and
whether it is donated; ``Call.run`` rebuilds the objects and runs the function inside the
trace; the protocol's :func:`~.lift.finish` writes back. What the function wrote, and
whether structure changed, is found at trace time and returned as static output, so a
cached compilation knows which leaves to write back without looking.

The cost that matters is per call, so ``jit`` keeps compiled functions by structure and
the last flattening of its module arguments (``_Last``). While those are the same objects
and no structure anywhere has changed (see :mod:`plait.object`), a call is: read each
Variable's value, call the compiled function on the flat list, assign the values it wrote.
No walk of the object graph, no per-Variable Python call, no ``Call``.
"""

from __future__ import annotations

import functools
import inspect
import operator
import sys
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from .. import object as _object
from ..encoding import ARRAY_TYPES, Flat, is_graph_node, unflatten
from ..errors import TransformError
from ..mode import check_graph_mode
from ..sharding_rules import constrain
from ..variables import Variable
from .axes import resolve
from .lift import Call, Collected, Facts, bind_arguments, check_callable, finish, forward_unchanged

__all__ = ["jit", "JitWrapped"]

_MISSING = object()
_UNSET = object()
# Argument types the fast path accepts with one set lookup. The concrete jax.Array type is
# added when the first one is seen (creating an array at import would start JAX's backend,
# after which the device count can no longer be set).
_PLAIN_FAST = {type(np.zeros(())), np.ndarray, int, float, bool, complex, type(None)}


class _Info:
    """Static result of one trace: what to write back, and whether the fast path applies. It
    leaves the trace in a :class:`~.lift.Facts` node (pytree structure, no leaves), which JAX
    hands back on every cached call."""

    __slots__ = ("collected", "emit", "fast", "graph_out")

    def __init__(self, collected: Collected, emit: tuple, fast: bool, graph_out: bool) -> None:
        self.collected = collected
        self.emit = emit  # leaf indices of the output GraphDef whose values are returned
        self.fast = fast  # structure unchanged and only Variable values written
        self.graph_out = graph_out  # the output holds modules/Variables: rebuild it


class _Entry:
    """One compiled function per (structure, argument layout)."""

    __slots__ = ("jitted", "node_pos", "plain_pos", "static_pos", "graph_kw", "n_args", "donated")

    def __init__(self, jitted: Any, node_pos: tuple, plain_pos: tuple, static_pos: tuple, graph_kw: tuple, n_args: int,
                 donated: tuple = ()):
        self.jitted = jitted
        self.donated = donated  # leaves whose buffers the compiled function donates
        self.node_pos = node_pos
        self.plain_pos = plain_pos
        self.static_pos = static_pos
        self.graph_kw = graph_kw
        self.n_args = n_args


class _Last:
    """The fast-path cache: valid while the same module objects come in, structure unchanged."""

    __slots__ = ("epoch", "n_args", "nodes", "plain_pos", "flat", "entry")

    def __init__(self, epoch: int, n_args: int, nodes: tuple, plain_pos: tuple, flat: Flat, entry: _Entry):
        self.epoch = epoch
        self.n_args = n_args
        self.nodes = nodes  # ((position, object), ...)
        self.plain_pos = plain_pos
        self.flat = flat
        self.entry = entry


def _has_graph(value: Any) -> bool:
    if is_graph_node(value):
        return True
    if type(value) in _PLAIN_FAST or isinstance(value, ARRAY_TYPES):
        return False
    return any(is_graph_node(leaf) for leaf in jax.tree_util.tree_leaves(value, is_leaf=is_graph_node))


class JitWrapped:
    """A jitted function of modules; call it like the original."""

    def __init__(
        self,
        fun: Callable,
        static_argnums: Sequence[int],
        static_argnames: Sequence[str],
        donate_argnums: Sequence[int],
        keep_unused: bool,
        inline: bool,
        donate_argnames: Sequence[str] = (),
        in_shardings: Any = _UNSET,
        out_shardings: Any = _UNSET,
    ) -> None:
        self.fun = fun
        static_argnums, static_argnames = _infer_static(fun, static_argnums, static_argnames)
        self.static_argnums = frozenset(static_argnums)
        self.static_argnames = frozenset(static_argnames)
        donate_argnums, donate_argnames = _infer_static(fun, donate_argnums, donate_argnames)
        self.donate_argnums = frozenset(donate_argnums)
        self.donate_argnames = frozenset(donate_argnames)
        self.keep_unused = keep_unused
        self.inline = inline
        self.in_shardings = in_shardings
        self.out_shardings = out_shardings
        self._entries: dict = {}
        self._last: _Last | None = None
        functools.update_wrapper(self, fun)

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        if obj is None:
            return self
        return functools.partial(self, obj)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        last = self._last
        if last is not None and not kwargs and last.epoch == _object.STRUCTURE_EPOCH and len(args) == last.n_args:
            for i, node in last.nodes:
                if args[i] is not node:
                    break
            else:
                for i in last.plain_pos:
                    if type(args[i]) not in _PLAIN_FAST:
                        break
                else:
                    return self._run(last.flat, last.entry, args, kwargs)
        return self._slow(args, kwargs)

    def _roles(self, args: tuple, kwargs: dict) -> tuple[tuple, tuple, tuple, tuple]:
        """jit's roles per argument: positions that hold graph nodes (flattened by the
        protocol), plain positions (handed to ``jax.jit`` as pytrees), static positions, and
        the keyword arguments that hold graph nodes."""
        static_argnums = {i % len(args) for i in self.static_argnums if -len(args) <= i < len(args)}
        node_pos, plain_pos, static_pos = [], [], []
        for i, a in enumerate(args):
            if i in static_argnums:
                static_pos.append(i)
            elif _has_graph(a):
                node_pos.append(i)
            else:
                plain_pos.append(i)
        graph_kw = tuple(k for k, v in kwargs.items() if k not in self.static_argnames and _has_graph(v))
        return tuple(node_pos), tuple(plain_pos), tuple(static_pos), graph_kw

    def _call(self, args: tuple, kwargs: dict) -> tuple[Call, _Entry]:
        """The protocol's :class:`Call` over the graph-holding arguments (the others held
        out), and the compiled function for its structure (compiled on the first call)."""
        node_pos, plain_pos, static_pos, graph_kw = self._roles(args, kwargs)
        held = {*plain_pos, *static_pos, *(k for k in kwargs if k not in graph_kw)}
        call = Call(self.fun, "jit", args, kwargs, bind=False, held=held, cached=True, refs=True)
        key = (call.graphdef, node_pos, plain_pos, static_pos, graph_kw, len(args))
        entry = self._entries.get(key)
        if entry is None:
            entry = self._compile(call, node_pos, plain_pos, static_pos, graph_kw)
            self._entries[key] = entry
        return call, entry

    def _slow(self, args: tuple, kwargs: dict) -> Any:
        args, kwargs = bind_arguments(self.fun, args, kwargs)
        for a in args:
            if type(a) not in _PLAIN_FAST and isinstance(a, jax.Array) and not isinstance(a, jax.core.Tracer):
                _PLAIN_FAST.add(type(a))
        call, entry = self._call(args, kwargs)
        flat = call.flat
        if call.cached and flat.cacheable and not kwargs:
            self._last = _Last(_object.STRUCTURE_EPOCH, len(args), tuple((i, args[i]) for i in entry.node_pos),
                               entry.plain_pos, flat, entry)
        return self._run(flat, entry, args, kwargs, call.leaves)

    def _inputs(self, flat: Flat, entry: _Entry, args: tuple, kwargs: dict, leaves: list | None = None) -> tuple[list, tuple]:
        """The leaves (read from the Variables unless given), and the positional arguments of
        the compiled function."""
        if leaves is None:
            leaves = [v._value for v in flat.slots]  # the fast path's flattening has no raw leaves
        plain = [args[i] for i in entry.plain_pos]
        if kwargs:
            plain_kw = {k: v for k, v in kwargs.items() if k not in self.static_argnames and k not in entry.graph_kw}
            static_kw = tuple(sorted((k, v) for k, v in kwargs.items() if k in self.static_argnames))
        else:
            plain_kw, static_kw = {}, ()
        statics = (tuple([args[i] for i in entry.static_pos]), static_kw)
        return leaves, (*leaves, *plain, plain_kw, statics)

    def _stage(self, args: tuple, kwargs: dict) -> tuple[Call, _Entry, tuple]:
        args, kwargs = bind_arguments(self.fun, args, kwargs)
        call, entry = self._call(args, kwargs)
        return call, entry, self._inputs(call.flat, entry, args, kwargs, call.leaves)[1]

    def lower(self, *args: Any, **kwargs: Any) -> Any:
        """``jax.stages.Lowered`` for these arguments (inspect HLO, compile ahead of time)."""
        _, entry, inputs = self._stage(args, kwargs)
        return entry.jitted.lower(*inputs)

    def trace(self, *args: Any, **kwargs: Any) -> Any:
        """``jax.stages.Traced`` for these arguments (inspect the jaxpr)."""
        _, entry, inputs = self._stage(args, kwargs)
        return entry.jitted.trace(*inputs)

    def eval_shape(self, *args: Any, **kwargs: Any) -> Any:
        """The output's shapes and dtypes, without running; module state is not written."""
        call, entry, inputs = self._stage(args, kwargs)
        facts, values, out = entry.jitted.eval_shape(*inputs)
        info = facts.value
        if not info.graph_out:
            return out
        shapes = [jax.ShapeDtypeStruct(jax.numpy.shape(x), jax.numpy.result_type(x)) for x in call.leaves]
        full = forward_unchanged(shapes, info.collected, info.emit, values)
        return unflatten(info.collected.graphdef, full)[0][-1]  # fresh objects: nothing is written

    def _run(self, flat: Flat, entry: _Entry, args: tuple, kwargs: dict, leaves: list | None = None) -> Any:
        leaves, inputs = self._inputs(flat, entry, args, kwargs, leaves)
        if entry.donated:
            inputs = _keep_snapshots(entry.donated, leaves, inputs)
        facts, values, out = entry.jitted(*inputs)
        info = facts.value
        if info.fast:
            slots = flat.slots
            for k, v in zip(info.emit, values):
                slots[k]._value = v
            return out
        graph_out = finish(flat, leaves, info.collected, info.emit, values)
        return graph_out if info.graph_out else out

    def _leaf_shardings(self, call: Call, plain_pos: tuple, static_pos: tuple) -> tuple[list, list] | None:
        """``in_shardings`` resolved by the protocol to one sharding per leaf (and per plain argument)."""
        spec = self.in_shardings
        if spec is _UNSET:
            return None

        def for_arg(i: int) -> Any:
            if isinstance(spec, (tuple, list)):
                if i >= len(spec):
                    raise TransformError(f"jit: in_shardings has {len(spec)} entries but argument {i} was given")
                return spec[i]
            return spec

        specs = tuple(None if i in static_pos else for_arg(i) for i in range(call.n_args))
        per_leaf = call.resolve(specs, "in_shardings", None, leaf_types=(jax.sharding.Sharding,))
        return per_leaf, [specs[i] for i in plain_pos]

    def _compile(self, call: Call, node_pos: tuple, plain_pos: tuple, static_pos: tuple, graph_kw: tuple) -> _Entry:
        gd = call.graphdef
        n_args = call.n_args
        n_leaves, n_plain = gd.num_leaves, len(plain_pos)
        # Donation per leaf, by the protocol: a Variable reached through a donated argument and
        # another one is donated (every donated leaf is written back, so no holder loses it).
        donate = call.resolve(tuple(i in self.donate_argnums for i in range(n_args)), "donate_argnums",
                              {k: k in self.donate_argnames for k in graph_kw}, leaf_types=(bool,),
                              combine=operator.or_)
        donated = frozenset(k for k, d in enumerate(donate) if d)
        donate_argnums = sorted(donated) + [n_leaves + j for j, i in enumerate(plain_pos) if i in self.donate_argnums]
        shardings = self._leaf_shardings(call, plain_pos, static_pos)
        shape = call.structure()  # no arrays or caller's objects kept with the compiled function
        out_spec = self.out_shardings

        def inner(*xs: Any) -> tuple:
            leaves = list(xs[:n_leaves])
            plain = xs[n_leaves:n_leaves + n_plain]
            plain_kw, (static_args, static_kw) = xs[-2], xs[-1]
            given = {**dict(zip(plain_pos, plain)), **dict(zip(static_pos, static_args)), **plain_kw, **dict(static_kw)}
            out, col, flat2 = shape.run(leaves, select=lambda r: r if _holds_graph(r) else None, given=given)
            graph_out = _holds_graph(out)
            emit = tuple(k for k in range(col.graphdef.num_leaves) if col.changed[k] or k in donated)
            fast = col.same and not graph_out and all(gd.leaf_nodes[k] >= 0 for k in emit)
            info = _Info(col, emit, fast, graph_out)
            values = [flat2.leaves[k] for k in emit]
            for k, v in zip(emit, values):
                if isinstance(v, jax.Ref):  # JAX cannot return a ref from jit (a new one, or one moved)
                    raise TransformError(
                        f"jit: `{shape.path_text(col.graphdef.leaf_paths[k])}` is a Variable "
                        "backed by a JAX ref (ref=True) that was created or moved inside the jitted function; a ref "
                        "cannot leave jit.\nCreate ref-backed Variables outside nnx.jit and pass them in (their "
                        "writes come back in place), or make this one a plain Variable (ref=False)."
                    )
            if shardings is not None:  # state keeps the sharding it came in with
                values = [
                    constrain(v, shardings[0][col.input_leaf[k]])
                    if col.input_leaf[k] >= 0 and shardings[0][col.input_leaf[k]] is not None else v
                    for k, v in zip(emit, values)
                ]
            if out_spec is not _UNSET:
                # out_shardings describes the output, which may hold modules: its leaves leave
                # as written values, so each gets its sharding here rather than from jax.jit.
                if graph_out:
                    values = [_out_constraint(out_spec, col, flat2, k, v, shape) for k, v in zip(emit, values)]
                else:
                    out = _constrain_tree(out_spec, out)
            return Facts(info), values, None if graph_out else out

        options: dict = {}
        if shardings is not None:
            options["in_shardings"] = (*shardings[0], *shardings[1], None)
        jitted = jax.jit(
            inner,
            static_argnums=(n_leaves + n_plain + 1,),
            donate_argnums=tuple(donate_argnums),
            keep_unused=self.keep_unused,
            inline=self.inline,
            **options,
        )
        return _Entry(jitted, node_pos, plain_pos, static_pos, graph_kw, n_args, tuple(sorted(donated)))


def _holds_graph(value: Any) -> bool:
    return any(is_graph_node(leaf) for leaf in jax.tree_util.tree_leaves(value, is_leaf=is_graph_node))


_SHARDING_TYPES = (jax.sharding.Sharding, jax.sharding.PartitionSpec)


def _out_constraint(spec: Any, col: Collected, flat2: Flat, k: int, value: Any, shape: Call) -> Any:
    """Leaf ``k`` of the output GraphDef with the sharding ``out_shardings`` gives it (leaves
    first reached through an input keep the input's sharding rules instead)."""
    path = col.graphdef.leaf_paths[k]
    if path[0] != col.n_roots:
        return value
    slot = flat2.slots[k]
    sharding = resolve(spec, path[1:], slot if slot is not None else value,
                       lambda: shape.path_text(path), "jit", "out_shardings",
                       leaf_types=_SHARDING_TYPES)
    return value if sharding is None else constrain(value, sharding)


def _constrain_tree(spec: Any, out: Any) -> Any:
    """``out`` constrained by ``spec``, a pytree prefix of shardings (None: unconstrained)."""
    def one(s: Any, sub: Any) -> Any:
        return sub if s is None else jax.tree.map(lambda x: constrain(x, s), sub)

    return jax.tree.map(one, spec, out, is_leaf=lambda s: s is None or isinstance(s, _SHARDING_TYPES))


# References an array of a donated leaf has while only the model holds it: the Variable's slot,
# the leaves list, the inputs tuple, and getrefcount's own argument.
_OWN_REFERENCES = 4


def _keep_snapshots(donated: tuple, leaves: list, inputs: tuple) -> tuple:
    """Donating a buffer deletes it, but a State taken with ``nnx.state``/``nnx.split`` before the
    call (a snapshot) may hold the same array. Such an array is copied, and the copy donated, so
    the snapshot stays readable. Other holders (a local variable) see JAX's donation as usual.
    Who holds an array is only asked when something besides the model does (rare, and slow)."""
    shared = [k for k in donated if sys.getrefcount(leaves[k]) > _OWN_REFERENCES and _in_a_snapshot(leaves[k])]
    if not shared:
        return inputs
    inputs = list(inputs)
    for k in shared:
        inputs[k] = jax.numpy.copy(leaves[k])
    return tuple(inputs)


def _in_a_snapshot(array: Any) -> bool:
    """A Variable of a State (``state``/``split`` copies have no trace of their own) holds ``array``."""
    import gc

    return any(isinstance(r, Variable) and r._trace is None and r._value is array for r in gc.get_referrers(array))


def _infer_static(fun: Callable, argnums: Sequence[int], argnames: Sequence[str]) -> tuple[set, set]:
    """Like jax.jit: a static argument is static whether it is passed by position or by name."""
    nums, names = set(argnums), set(argnames)
    try:
        params = list(inspect.signature(fun).parameters.values())
    except (TypeError, ValueError):
        return nums, names
    positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if not any(p.kind == p.VAR_POSITIONAL for p in params):
        for i in argnums:
            if not -len(positional) <= i < len(positional):
                name = getattr(fun, "__name__", "the function")
                raise TransformError(
                    f"jit: static_argnums has {i}, but {name} takes {len(positional)} positional argument(s)"
                )
    for name in argnames:
        if name in positional:
            nums.add(positional.index(name))
    for i in argnums:
        if -len(positional) <= i < len(positional):
            names.add(positional[i])
    return nums, names


def _as_tuple(v: Any) -> tuple:
    return (v,) if isinstance(v, (int, str)) else tuple(v)


def _shift_shardings(in_shardings: Any) -> Any:
    """A bound method's ``self`` gets its state's shardings from no spec (left to XLA)."""
    if isinstance(in_shardings, (tuple, list)):
        return (None, *in_shardings)
    return in_shardings


def _shift(argnums: Any) -> tuple:
    """Positions after a bound method's ``self`` became the first argument."""
    return tuple(i + 1 for i in _as_tuple(argnums) if i >= 0)


def jit(
    fun: Callable = _MISSING,  # type: ignore[assignment]
    *,
    static_argnums: int | Sequence[int] = (),
    static_argnames: str | Sequence[str] = (),
    donate_argnums: int | Sequence[int] = (),
    donate_argnames: str | Sequence[str] = (),
    keep_unused: bool = False,
    inline: bool = False,
    in_shardings: Any = _UNSET,
    out_shardings: Any = _UNSET,
    graph: bool | None = None,
    graph_updates: bool | None = None,
) -> Any:
    """Compile ``fun`` with ``jax.jit``; modules in its arguments are updated in place.

    ``in_shardings`` takes, per argument, a ``jax.sharding.Sharding`` or for a module a
    ``nnx.StateSharding({filter: sharding, ...})``; written state keeps its sharding.
    ``out_shardings`` applies to the function's output. ``.lower``, ``.trace`` and
    ``.eval_shape`` work as on a ``jax.jit`` function.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
        >>> @nnx.jit
        ... def shrink(model, factor):
        ...     model.kernel.value = model.kernel.value * factor
        >>> before = model.kernel.value
        >>> shrink(model, 0.5)
        >>> bool(jnp.allclose(model.kernel.value, before * 0.5))
        True
    """
    check_graph_mode("nnx.jit", graph, graph_updates)
    if fun is _MISSING:
        return functools.partial(
            jit, static_argnums=static_argnums, static_argnames=static_argnames,
            donate_argnums=donate_argnums, donate_argnames=donate_argnames, keep_unused=keep_unused,
            inline=inline, in_shardings=in_shardings, out_shardings=out_shardings,
        )
    check_callable(fun, "jit")
    owner = getattr(fun, "__self__", None)
    if inspect.ismethod(fun) and is_graph_node(owner):
        # A bound method of a module: the module is an argument like any other, so its state
        # is read on every call and written back (not captured as a constant at first trace).
        jitted = JitWrapped(fun.__func__, _shift(static_argnums), _as_tuple(static_argnames),
                            _shift(donate_argnums), keep_unused, inline, _as_tuple(donate_argnames),
                            _shift_shardings(in_shardings), out_shardings)
        return functools.update_wrapper(functools.partial(jitted, owner), fun)
    return JitWrapped(fun, _as_tuple(static_argnums), _as_tuple(static_argnames), _as_tuple(donate_argnums),
                      keep_unused, inline, _as_tuple(donate_argnames), in_shardings, out_shardings)
