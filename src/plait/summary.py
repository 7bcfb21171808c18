"""``tabulate``: a table of every module call in one forward pass, with shapes and state sizes.

``nnx.tabulate(model, x)`` calls ``model(x)`` once, *abstractly* (under
:func:`plait.eval_shape`, so no arithmetic is done and no state is written), and records
each sub-module call made on the way: its path in the model, its type, the shapes of its
inputs and outputs. Each row then shows the module's Variables by type (``Param``,
``BatchStat``, ``RngState``, ...) with their shapes, and the number of elements and bytes
of the module's whole subtree. A shared sub-module or Variable is counted once, at the
first path that reaches it, so the totals row equals ``nnx.state(model, nnx.Param)``
summed.

How the calls are seen: for the length of the trace, the ``__call__`` and public methods of
the model's module classes are replaced by recording wrappers and restored afterwards,
also when the call raises. The trace runs on a clone of the model whose modules carry
their path as a static attribute, so a sub-module still knows its path when a transform
inside the model (``nnx.scan`` over a stack, ``nnx.vmap``, ``nnx.remat``) rebuilds it.
Each *call* is a row: a module called twice has two rows (the reference lists a repeated
call with the same input shapes once).

FLOPs (``compute_flops=True``) are XLA's cost analysis of each call lowered on its own, on
abstract inputs: lowering costs some time, but nothing runs on a device.

``rich`` draws the table; it is optional: ``pip install "plait[display]"``.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import itertools
import math
import types
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .encoding import ARRAY_TYPES, flatten, unflatten
from .errors import TransformError
from .graph import clone, iter_graph
from .module import Module
from .object import Object
from .rngs import RngStream
from .transforms.functional import eval_shape
from .variables import RngState, Variable

__all__ = ["CallInfo", "filter_rng_streams", "tabulate"]

# The attribute that tells a module of the clone its path (and which tabulate call it
# belongs to). It is static graph data, so it survives a transform rebuilding the module.
# The run id makes each call's GraphDef new, so a jit inside the model cannot answer from
# its cache (skipping the Python calls we record); the price is one cache entry per call.
_TAG = "_plait_tabulate_path"
_RUN_IDS = itertools.count()


@dataclasses.dataclass
class CallInfo:
    """One row of the table: one call of a module method during the traced forward pass.

    ``path`` is the module's path in the model (with the method name appended for methods
    other than ``__call__``); ``outputs`` holds ``jax.ShapeDtypeStruct`` where arrays were.
    ``flops``/``vjp_flops`` are None unless asked for. ``row_filter`` receives these.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> rows = []
        >>> keep = lambda row: rows.append(row) or True
        >>> _ = nnx.tabulate(nnx.Linear(2, 3, rngs=nnx.Rngs(0)), jnp.ones((1, 2)), row_filter=keep)
        >>> rows[0].path, rows[0].type.__name__, rows[0].inputs_repr, rows[0].outputs
        ((), 'Linear', 'float32[1,2]', ShapeDtypeStruct(shape=(1, 3), dtype=float32))
    """

    call_order: int
    type: type
    path: tuple
    inputs_repr: str
    outputs: Any
    flops: int | None = None
    vjp_flops: int | None = None
    module_path: tuple = dataclasses.field(default=(), repr=False)


def filter_rng_streams(row: CallInfo) -> bool:
    """The default ``row_filter``: leave out calls of an RNG stream.

    Example:
        >>> import plait as nnx
        >>> row = nnx.summary.CallInfo(0, nnx.Linear, ("encoder",), "float32[1,2]", None)
        >>> nnx.summary.filter_rng_streams(row)
        True
    """
    return not issubclass(row.type, RngStream)


# -- sizes ---------------------------------------------------------------------------------


def _shape_dtype(value: Any) -> tuple[tuple, Any] | None:
    if isinstance(value, (*ARRAY_TYPES, jax.ShapeDtypeStruct)):
        return tuple(value.shape), value.dtype
    if isinstance(value, (bool, int, float, complex, np.generic)):
        return (), np.result_type(value)
    return None


def _size_bytes(value: Any) -> tuple[int, int]:
    """Elements and bytes of a Variable's value: an array, or a pytree of them (what ``sow`` keeps)."""
    size = nbytes = 0
    for leaf in jax.tree.leaves(value):
        sd = _shape_dtype(leaf)
        if sd is not None:
            n = math.prod(sd[0])
            size, nbytes = size + n, nbytes + n * sd[1].itemsize  # PRNG key dtypes have an itemsize too
    return size, nbytes


def _bytes_text(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n > scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n:,} B"


def _size_text(size: int, nbytes: int) -> str:
    return f"{size:,} ({_bytes_text(nbytes)})"


def _column_type(variable: Variable) -> type:
    # An RNG stream's key and count are one column, as in the reference.
    return RngState if isinstance(variable, RngState) else type(variable)


@dataclasses.dataclass
class _NodeStats:
    own: dict  # column type -> [(relative name, Variable)]: Variables whose nearest module is this one
    totals: dict  # column type -> [size, bytes] over the subtree, each Variable counted once


def _collect_stats(root: Any) -> dict[tuple, _NodeStats]:
    """Per module path: its own Variables and the sizes of its subtree."""
    entries = list(iter_graph(root))
    stats = {path: _NodeStats({}, {}) for path, value in entries if isinstance(value, Module)}
    stats.setdefault((), _NodeStats({}, {}))
    for path, value in entries:  # iter_graph visits each shared Variable once, at its first path
        if not isinstance(value, Variable):
            continue
        column = _column_type(value)
        size, nbytes = _size_bytes(value._value)
        owners = [path[:k] for k in range(len(path)) if path[:k] in stats]
        owner = owners[-1]
        stats[owner].own.setdefault(column, []).append((".".join(map(str, path[len(owner):])), value))
        for p in owners:
            total = stats[p].totals.setdefault(column, [0, 0])
            total[0] += size
            total[1] += nbytes
    return stats


# -- describing inputs and outputs -----------------------------------------------------------


class _ObjectRepr:
    """Stands for a module or other graph object among a call's inputs or outputs."""

    def __init__(self, obj: Any) -> None:
        self.type = type(obj)

    def __repr__(self) -> str:
        return f"{self.type.__name__}(...)"


def _is_node(x: Any) -> bool:
    return isinstance(x, (Object, Variable))


def _abstract(tree: Any) -> Any:
    """Arrays (and tracers) to ShapeDtypeStruct, graph objects to a placeholder."""

    def leaf(x: Any) -> Any:
        if isinstance(x, (Object, Variable)):
            return _ObjectRepr(x)
        if isinstance(x, ARRAY_TYPES):
            return jax.ShapeDtypeStruct(x.shape, x.dtype)
        return x

    return jax.tree.map(leaf, tree, is_leaf=_is_node)


_SCALARS = (bool, int, float, complex, str, type(None))


def _describe(value: Any, indent: str = "") -> str:
    if isinstance(value, jax.ShapeDtypeStruct):
        return f"{value.dtype}[{','.join(map(str, value.shape))}]"
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, _SCALARS) for v in value):
        return repr(value)  # a shape such as (2, 3) reads best as itself
    if isinstance(value, (list, tuple)) and value:
        return "\n".join(f"{indent}- {_describe(v, indent + '  ').lstrip()}" for v in value)
    if isinstance(value, dict) and value:
        return "\n".join(_keyed(k, v, indent) for k, v in value.items())
    if isinstance(value, type):
        return f"type[{value.__name__}]"
    return repr(value)


def _keyed(key: Any, value: Any, indent: str) -> str:
    text = _describe(value, indent + "  ")
    if "\n" in text or (isinstance(value, (list, tuple, dict)) and value):
        return f"{indent}{key}:\n{text}"
    return f"{indent}{key}: {text}"


def _inputs_text(args: tuple, kwargs: dict) -> str:
    parts = []
    if args:
        parts.append(_describe(args[0]) if len(args) == 1 and not kwargs else _describe(list(args)))
    if kwargs:
        parts.append(_describe(kwargs))
    return "\n".join(parts)


# -- recording calls ------------------------------------------------------------------------


@dataclasses.dataclass
class _Recorder:
    run_id: int
    want_cost: bool
    rows: list = dataclasses.field(default_factory=list)
    costs: list = dataclasses.field(default_factory=list)  # per row: (fn, graphdef, abstract leaves)
    active: list = dataclasses.field(default_factory=list)
    counter: Any = dataclasses.field(default_factory=itertools.count)


def _shape_of(x: Any) -> jax.ShapeDtypeStruct:
    # Keep weak typing: a weakly typed float32 would otherwise promote a bfloat16 computation.
    return jax.ShapeDtypeStruct(x.shape, x.dtype, weak_type=getattr(getattr(x, "aval", None), "weak_type", False))


def _recording(fn: Callable, name: str, rec: _Recorder) -> Callable:
    @functools.wraps(fn)
    def wrapper(*all_args: Any, **kwargs: Any) -> Any:
        # Not a call on a module of the model being tabulated (a method used as a plain
        # function, a module built during the call), or a super() call inside the same call.
        self = all_args[0] if all_args else None
        tag = self.__dict__.get(_TAG) if isinstance(self, Object) else None
        key = (id(self), name)
        if tag is None or tag[0] != rec.run_id or (rec.active and rec.active[-1] == key):
            return fn(*all_args, **kwargs)
        args = all_args[1:]
        path = tag[1] if name == "__call__" else (*tag[1], name)
        abstract_args, abstract_kwargs = _abstract((args, kwargs))
        row = CallInfo(next(rec.counter), type(self), path, _inputs_text(abstract_args, abstract_kwargs), None,
                       module_path=tag[1])
        rec.rows.append(row)
        if rec.want_cost:
            flat, leaves = flatten((self, args, kwargs))
            rec.costs.append((fn, flat.graphdef, [_shape_of(x) for x in leaves]))
        rec.active.append(key)
        try:
            out = fn(self, *args, **kwargs)
        finally:
            rec.active.pop()
        row.outputs = _abstract(out)
        return out

    return wrapper


def _methods_to_wrap(classes: set[type]) -> dict[tuple[type, str], Callable]:
    """``(class, name) -> function`` for ``__call__`` and public methods, where each is defined.

    plait's own bases (Module, Object) are left alone: their methods (``train``, ``sow``,
    ...) are not calls worth a row.
    """
    found = {}
    for cls in classes:
        for klass in cls.__mro__:
            if klass in (Module, Object, object):
                break
            for name, fn in vars(klass).items():
                if isinstance(fn, types.FunctionType) and (name == "__call__" or not name.startswith("_")):
                    found[(klass, name)] = fn
    return found


def _cost(fn: Callable, graphdef: Any, abstract: list, backward: bool) -> int | None:
    """XLA's FLOP count of one call lowered on its own; None if it uses an enclosing axis name."""
    def run(leaves: list) -> list:
        (obj, args, kwargs), _ = unflatten(graphdef, leaves)
        out = fn(obj, *args, **kwargs)
        # Return the written state as well, so its computation (BatchNorm's running
        # statistics) is not removed as dead code before it is counted.
        return flatten((out,))[1] + ([] if backward else flatten((obj,))[1])

    def run_with_vjp(leaves: list) -> list:
        where = [i for i, x in enumerate(leaves) if jnp.issubdtype(x.dtype, jnp.inexact)]

        def differentiable(diff: list) -> list:
            full = list(leaves)
            for i, d in zip(where, diff):
                full[i] = d
            return [y for y in run(full) if jnp.issubdtype(y.dtype, jnp.inexact)]

        primals, pullback = jax.vjp(differentiable, [leaves[i] for i in where])
        return pullback(primals)

    try:
        lowered = jax.jit(run_with_vjp if backward else run).lower(abstract)
    except NameError as e:  # jax.lax.pmean(x, "batch") under the model's own vmap(axis_name="batch")
        if "axis name" not in str(e):
            raise
        return None
    cost = lowered.cost_analysis() or lowered.compile().cost_analysis()
    if isinstance(cost, (list, tuple)):  # older JAX: one dict per device program
        cost = cost[0] if cost else None
    return int(cost.get("flops", 0)) if cost else 0


class _AbstractInput(Variable):
    """Carries a ``jax.ShapeDtypeStruct`` input into the trace (a bare one would be static)."""


def _box_abstract(inputs: Any) -> Any:
    box = lambda x: _AbstractInput(x) if isinstance(x, jax.ShapeDtypeStruct) else x  # noqa: E731
    return jax.tree.map(box, inputs, is_leaf=_is_node)


def _call_unboxed(model: Any, method: str, boxed: Any) -> Any:
    unbox = lambda x: x.value if isinstance(x, _AbstractInput) else x  # noqa: E731
    args, kwargs = jax.tree.map(unbox, boxed, is_leaf=_is_node)
    return getattr(model, method)(*args, **kwargs)


# -- the table -------------------------------------------------------------------------------


def _rich() -> Any:
    try:
        import rich.console
        import rich.markup
        import rich.table
        import rich.text
    except ImportError as e:
        raise ImportError(
            'nnx.tabulate draws its table with `rich`, which is not installed: pip install "plait[display]"'
        ) from e
    return rich


def tabulate(
    obj: Any,
    *input_args: Any,
    depth: int | None = None,
    method: str = "__call__",
    row_filter: Callable[[CallInfo], bool] = filter_rng_streams,
    table_kwargs: Mapping[str, Any] = MappingProxyType({}),
    column_kwargs: Mapping[str, Any] = MappingProxyType({}),
    console_kwargs: Mapping[str, Any] = MappingProxyType({}),
    compute_flops: bool = False,
    compute_vjp_flops: bool = False,
    **input_kwargs: Any,
) -> str:
    """A table of every module call in ``obj.method(*input_args, **input_kwargs)``, as a string.

    Columns: the module's path, its type, the shapes of the call's inputs and outputs,
    (with ``compute_flops``) XLA's FLOP estimate of the call, (with ``compute_vjp_flops``)
    that of its forward plus backward pass, then one column per Variable type: the
    module's own Variables with their shapes, and the size (elements and bytes) of its
    whole subtree. The footer has the totals; the caption the grand total.

    The call is traced abstractly on a clone, so it computes nothing and ``obj`` is left
    exactly as it was (RNG counts and batch statistics included).

    Args:
        obj: the model (a Module, or any plait Object with the method).
        *input_args: positional arguments of the call: arrays (their values are not used) or
            ``jax.ShapeDtypeStruct``; with an abstract model (``nnx.eval_shape(lambda: Model(...))``)
            nothing is allocated at all.
        depth: show only rows whose path has at most this many parts (0: the model's own row).
        method: the method of ``obj`` to call.
        row_filter: keep the rows (:class:`CallInfo`) for which this returns True.
        table_kwargs: passed to ``rich.table.Table``.
        column_kwargs: passed to ``rich.table.Table.add_column`` for every column.
        console_kwargs: passed to ``rich.console.Console`` (default ``force_terminal=True``,
            so the string has colour codes; pass ``{"force_terminal": False}`` for plain text,
            ``{"width": 200}`` for a wide table).
        compute_flops: add a ``flops`` column (each call lowered with XLA; slower, nothing runs).
        compute_vjp_flops: add a ``vjp_flops`` column (forward and backward pass).
        **input_kwargs: keyword arguments of the call.

    Returns:
        The rendered table. Needs ``rich``: ``pip install "plait[display]"``.

    Limitations:
        - While the trace runs, the methods of the model's module classes are replaced on
          the classes; do not run the same classes on another thread meanwhile.
        - A module built during the call (not an attribute of the model) has no row.
        - A ``scan`` body (a scanned layer stack, an ``RNN``) is traced once: one row for
          the layer, with one step's shapes; and XLA's cost analysis counts a loop body
          once, so the parent's FLOPs are those of one step (an ``RNN`` over 5 steps shows
          about one cell call).

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> model = nnx.Sequential(nnx.Linear(4, 8, rngs=nnx.Rngs(0)), nnx.relu, nnx.Linear(8, 2, rngs=nnx.Rngs(1)))
        >>> table = nnx.tabulate(model, jnp.ones((1, 4)), console_kwargs={"force_terminal": False, "width": 200})
        >>> print(table)
                                      Sequential Summary
        ┏━━━━━━━━━━┳━━━━━━━━━━━━┳━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━┓
        ┃ path     ┃ type       ┃ inputs       ┃ outputs      ┃ Param                ┃
        ┡━━━━━━━━━━╇━━━━━━━━━━━━╇━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━┩
        │          │ Sequential │ float32[1,4] │ float32[1,2] │ 58 (232 B)           │
        ├──────────┼────────────┼──────────────┼──────────────┼──────────────────────┤
        │ layers/0 │ Linear     │ float32[1,4] │ float32[1,8] │ bias: float32[8]     │
        │          │            │              │              │ kernel: float32[4,8] │
        │          │            │              │              │                      │
        │          │            │              │              │ 40 (160 B)           │
        ├──────────┼────────────┼──────────────┼──────────────┼──────────────────────┤
        │ layers/2 │ Linear     │ float32[1,8] │ float32[1,2] │ bias: float32[2]     │
        │          │            │              │              │ kernel: float32[8,2] │
        │          │            │              │              │                      │
        │          │            │              │              │ 18 (72 B)            │
        ├──────────┼────────────┼──────────────┼──────────────┼──────────────────────┤
        │          │            │              │        Total │ 58 (232 B)           │
        └──────────┴────────────┴──────────────┴──────────────┴──────────────────────┘
        <BLANKLINE>
                                 Total Parameters: 58 (232 B)
        <BLANKLINE>

        ``nnx.relu`` (index 1) is a function, not a module, so it has no row.
    """
    rich = _rich()
    if not isinstance(obj, Object):
        raise TransformError(
            f"tabulate: expected a module (a plait Object) to call, got a {type(obj).__name__}.\n"
            "Pass the model and the inputs of its call: nnx.tabulate(model, x)"
        )
    if not callable(getattr(obj, method, None)):
        own = sorted({name for _, name in _methods_to_wrap({type(obj)})})
        raise TransformError(
            f"tabulate: {type(obj).__name__} has no method {method!r} to call; its own methods are "
            f"{', '.join(own) or 'none'}.\nName one: nnx.tabulate(model, x, method='...')"
        )
    if depth is not None and depth < 0:
        raise ValueError(f"tabulate: depth must be None or >= 0, got {depth}")

    model = clone(obj)  # tagging and tracing touch only the clone
    run_id = next(_RUN_IDS)
    stats = _collect_stats(model)
    classes = {type(model)}
    for path, node in iter_graph(model):
        if isinstance(node, Module) or node is model:
            # A tuple of strings and ints: static data, so transforms keep it on rebuilt modules.
            setattr(node, _TAG, (run_id, path))
            classes.add(type(node))
    rec = _Recorder(run_id, compute_flops or compute_vjp_flops)
    originals = _methods_to_wrap(classes)
    try:
        for (klass, name), fn in originals.items():
            setattr(klass, name, _recording(fn, name, rec))
        try:
            eval_shape(_call_unboxed, model, method, _box_abstract((input_args, input_kwargs)))
        except Exception as e:
            e.add_note(f"(raised while nnx.tabulate traced {type(obj).__name__}.{method})")
            raise
    finally:
        for (klass, name), fn in originals.items():
            setattr(klass, name, fn)

    if compute_flops or compute_vjp_flops:
        for row, (fn, graphdef, abstract) in zip(rec.rows, rec.costs):
            row.flops = _cost(fn, graphdef, abstract, backward=False) if compute_flops else None
            row.vjp_flops = _cost(fn, graphdef, abstract, backward=True) if compute_vjp_flops else None

    rows = [r for r in rec.rows if (depth is None or len(r.path) <= depth) and row_filter(r)]
    return _render(rich, type(obj).__name__, rows, stats, compute_flops, compute_vjp_flops,
                   table_kwargs, column_kwargs, console_kwargs)


def _render(rich: Any, title: str, rows: list[CallInfo], stats: dict, compute_flops: bool, compute_vjp_flops: bool,
            table_kwargs: Mapping, column_kwargs: Mapping, console_kwargs: Mapping) -> str:
    escape = rich.markup.escape
    columns = sorted(stats[()].totals, key=lambda t: t.__name__)
    table = rich.table.Table(show_header=True, show_lines=True, show_footer=True, title=f"{title} Summary",
                             **table_kwargs)
    fixed = ["path", "type", "inputs", "outputs"] + ["flops"] * compute_flops + ["vjp_flops"] * compute_vjp_flops
    for name in fixed + [c.__name__ for c in columns]:
        table.add_column(name, **column_kwargs)
    for row in rows:
        node = stats.get(row.module_path, _NodeStats({}, {}))
        cells = [escape("/".join(map(str, row.path))), row.type.__name__, escape(row.inputs_repr),
                 escape(_describe(row.outputs) if row.outputs is not None else "")]
        if compute_flops:
            cells.append("n/a" if row.flops is None else f"{row.flops:,}")
        if compute_vjp_flops:
            cells.append("n/a" if row.vjp_flops is None else f"{row.vjp_flops:,}")
        for column in columns:
            own = sorted(node.own.get(column, []), key=lambda item: item[0])  # by name, as the reference
            lines = [escape(_keyed(name, _abstract(v._value), "")) for name, v in own]
            total = node.totals.get(column)
            if total:
                lines += ([""] if lines else []) + [f"[bold]{_size_text(*total)}[/bold]"]
            cells.append("\n".join(lines))
        table.add_row(*cells)
    table.columns[len(fixed) - 1].footer = rich.text.Text("Total", justify="right")
    for i, column in enumerate(columns):
        table.columns[len(fixed) + i].footer = _size_text(*stats[()].totals[column])
    size = sum(t[0] for t in stats[()].totals.values())
    nbytes = sum(t[1] for t in stats[()].totals.values())
    table.caption = f"\nTotal Parameters: {_size_text(size, nbytes)}"
    if any((compute_flops and r.flops is None) or (compute_vjp_flops and r.vjp_flops is None) for r in rows):
        table.caption += ("\nn/a: the call uses the axis name of a transform around it (vmap's axis_name), "
                          "so it cannot be lowered on its own")
    table.caption_style = "bold"
    buffer = io.StringIO()
    # force_jupyter=False: in a notebook rich would display the table itself and return "".
    console = rich.console.Console(file=buffer, **{"force_terminal": True, "force_jupyter": False, **console_kwargs})
    console.print(table)
    return buffer.getvalue()
