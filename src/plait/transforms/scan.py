"""``scan``: run a function over the leading axis of stacked arguments, carrying state.

``in_axes`` marks one argument ``nnx.Carry`` (the value passed from step to step); the
others are scanned over an axis (an int) or broadcast to every step (``None``). A module
argument can mix these per Variable with ``StateAxes``, e.g. carry the RNG state while
scanning the parameters: ``StateAxes({nnx.RngState: nnx.Carry, ...: 0})``.

State comes back the way it went in: carried state holds its final value, scanned state
is stacked again on its axis. Writing to broadcast state inside a step is an error,
because one value cannot hold a different write per step; carry it instead.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from ..errors import StateError, TransformError
from ..mode import check_graph_mode
from ..variables import RngState
from .axes import Carry, SameKeys, resolve
from .lift import Call, Compiled, Facts, Store, check_callable, mapped_size, reject_removed_kwargs
from .messages import broadcast_draw_error
from .partition import AxisMetadata, check_transform_metadata
from .refs import check_prefix, ref_leaves, ref_shape, ref_text
from .vmap import arg_specs

__all__ = ["scan"]

_MISSING = object()
_NO_METADATA: Mapping[str, Any] = {}


def scan(
    f: Callable = _MISSING,  # type: ignore[assignment]
    *,
    length: int | None = None,
    reverse: bool = False,
    unroll: int | bool = 1,
    in_axes: Any = (Carry, 0),
    out_axes: Any = (Carry, 0),
    transform_metadata: Mapping[str, Any] = _NO_METADATA,
    graph: bool | None = None,
    graph_updates: bool | None = None,
    **removed: Any,
) -> Callable:
    """Scan ``f`` over stacked arguments; ``f(carry, x) -> (carry, y)`` by default.

    ``transform_metadata={nnx.PARTITION_NAME: 'layers'}``: each step sees scanned Variables
    without the scanned axis's name in their ``out_sharding`` (it is put back afterwards);
    see ``docs/sharding.md``.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> @nnx.split_rngs(splits=3)
        ... @nnx.vmap(axis_size=3)
        ... def stack(rngs):
        ...     return nnx.Linear(2, 2, rngs=rngs)
        >>> layers = stack(nnx.Rngs(0))
        >>> @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
        ... def forward(x, layer):
        ...     return layer(x)
        >>> forward(jnp.ones(2), layers).shape
        (2,)
    """
    check_graph_mode("nnx.scan", graph, graph_updates)
    reject_removed_kwargs("scan", removed)
    if f is _MISSING:
        return functools.partial(scan, length=length, reverse=reverse, unroll=unroll, in_axes=in_axes, out_axes=out_axes,
                                 transform_metadata=transform_metadata)
    check_callable(f, "scan")

    cache = Compiled()  # compiled per structure, for calls outside any trace

    @functools.wraps(f)
    def scanned(*args: Any, **kwargs: Any) -> Any:
        return _scan_call(f, args, kwargs, length, reverse, unroll, in_axes, out_axes, cache, metadata)

    metadata = check_transform_metadata(transform_metadata, "scan")
    return scanned


def _carry_positions(spec: Any, name: str) -> list[int]:
    if spec is Carry:
        return [-1]
    if not isinstance(spec, (tuple, list)):
        return []
    found = [i for i, s in enumerate(spec) if s is Carry]
    if len(found) > 1:
        raise TransformError(
            f"scan: nnx.Carry appears {len(found)} times in {name} (positions {found}); exactly one "
            "position is the carry. Put several carried values in one tuple: f((a, b), x)"
        )
    return found


def _scan_call(f, args, kwargs, length, reverse, unroll, in_axes, out_axes, cache, metadata=None):
    call = Call(f, "scan", args, kwargs)
    specs = arg_specs(in_axes, call.args, "scan", fun=f)
    same_keys: set[int] = set()  # broadcast RNG state that may be drawn from (nnx.SameKeys)
    carry_in = [i for i, s in enumerate(specs) if s is Carry]
    if len(carry_in) > 1:
        raise TransformError(
            f"scan: nnx.Carry appears {len(carry_in)} times in in_axes (arguments {carry_in}); exactly one "
            "argument is the carry. Pass several carried values as one tuple: f((a, b), x)"
        )
    carry_out = _carry_positions(out_axes, "out_axes")
    if bool(carry_in) != bool(carry_out):
        where = "in_axes" if carry_in else "out_axes"
        other = "out_axes" if carry_in else "in_axes"
        raise TransformError(
            f"scan: {where} has nnx.Carry but {other} does not. The carry goes in and comes out: "
            "in_axes=(nnx.Carry, 0), out_axes=(nnx.Carry, 0) for f(carry, x) -> (carry, y), "
            "or out_axes=nnx.Carry for f(carry, x) -> carry"
        )

    axes: list = []
    for k, axis in enumerate(call.resolve(specs, "in_axes", keyword_spec=None)):  # keywords: every step
        root = call.graphdef.leaf_paths[k][0]
        if axis is Carry and specs[root] is not Carry and not call.is_state(k):
            raise TransformError(
                f"scan: nnx.Carry must mark a whole argument (or module state in StateAxes), but in_axes gives it "
                f"to {call.describe_leaf(k)} inside argument {root}.\nWrite in_axes=(nnx.Carry, 0) with the whole "
                "carried value as one argument."
            )
        if axis is SameKeys:
            if isinstance(call.flat.slots[k], RngState):
                same_keys.add(k)
            axis = None
        axes.append(axis)
    size, scanned = mapped_size(call, axes, length, "scan", "length")

    key = (call.graphdef, tuple(axes), size, frozenset(same_keys), call.n_args)
    fn, context = cache.get(key, f, lambda context: _scan_outer(
        context, specs, axes, same_keys, size, carry_in, carry_out, out_axes, reverse, unroll, metadata))
    context.call, context.store = call, Store()
    try:
        facts, values = fn(call.leaves)
    finally:
        context.call = None
    col, emitted = facts.value
    return call.finish(col, emitted, values)


def _scan_outer(context, specs, axes, same_keys, size, carry_in, carry_out, out_axes, reverse, unroll, metadata=None):
    """The function that runs ``lax.scan``: every leaf in; the written state and the outputs
    out (as leaves of the output GraphDef), with the trace's facts."""
    scanned = [k for k, a in enumerate(axes) if type(a) is int]

    def outer(leaves: list) -> tuple:
        call = context.call
        gd = call.graphdef
        carry_state = [k for k, a in enumerate(axes) if a is Carry and call.is_state(k)]
        carry_raw_in = ref_leaves(gd.roots[carry_in[0]]) if carry_in else []
        broadcast_state = [k for k, a in enumerate(axes) if a is None and call.is_state(k)]
        scanned_state = [k for k in scanned if call.is_state(k)]
        xs = [jnp.moveaxis(leaves[k], axes[k], 0) if axes[k] % jnp.ndim(leaves[k]) else leaves[k] for k in scanned]

        def body(carry: tuple, x: list) -> tuple:
            step = list(leaves)
            for k, v in zip(carry_state, carry[0]):
                step[k] = v
            for k, v in zip(carry_raw_in, carry[1]):
                step[k] = v
            for k, v in zip(scanned, x):
                step[k] = v
            _, col, flat2 = call.run(step, around=AxisMetadata(axes, metadata) if metadata else None)
            if not col.same:
                raise TransformError(
                    "scan: the structure of an input module changed inside a step (an attribute or "
                    "Variable was added, removed or replaced). Every step must see the same structure: "
                    "create attributes before the scan."
                )
            gd2 = col.graphdef
            out_ref = gd2.roots[-1]
            carry_ref = None
            if carry_out:
                if carry_out == [-1]:
                    carry_ref = out_ref
                elif type(out_ref) is not int and out_ref[0] == "tuple" and len(out_ref[1]) == len(out_axes):
                    carry_ref = out_ref[1][carry_out[0]]
                else:
                    raise TransformError(
                        f"scan: out_axes={out_axes!r} says the function returns a tuple of {len(out_axes)}, "
                        f"but it returned {ref_text(out_ref, gd2)}. Return (carry, y), or use out_axes=nnx.Carry "
                        "to return only the carry."
                    )
            if isinstance(out_axes, (tuple, list, dict)):
                check_prefix(out_axes, out_ref, gd2, "scan: out_axes")
            raw_out = ref_leaves(carry_ref) if carry_ref is not None else []
            if carry_in:
                _check_carry(call, carry_in[0], carry_ref, gd2, carry_raw_in, raw_out, step, flat2.leaves)
            for k in carry_state:
                _check_same_type(call, k, step[k], flat2.leaves[k], call.describe_leaf(k))
            written = [k for k in broadcast_state if col.changed[k] and k not in same_keys]
            for k in written:  # a repeated key first: it is the silent failure worth naming
                if isinstance(call.flat.slots[k], RngState):
                    raise broadcast_draw_error(call, k, "scan", size)
            if written:
                raise StateError(
                    f"scan: {call.describe_leaf(written[0])} is broadcast to every step (axis None) but was written "
                    "inside a step; one value cannot hold a different write per step.\n"
                    "Carry it through the steps instead: in_axes=(nnx.Carry, nnx.StateAxes({<its type>: nnx.Carry, ...: 0}))"
                )
            # Scanned state that was written is stacked; SameKeys state writes the same value in
            # every step, so it is stacked too and step 0's value is written back.
            ys_state = [k for k in scanned_state + sorted(same_keys) if col.changed[k]]
            in_carry = set(raw_out)
            out_ys, out_ys_axes = [], []
            for k2 in col.out_leaves():
                if k2 in in_carry:
                    continue
                slot = flat2.slots[k2]
                axis = resolve(out_axes, gd2.leaf_paths[k2][1:], slot if slot is not None else flat2.leaves[k2],
                               lambda k2=k2: call.path_text(gd2.leaf_paths[k2]), "scan", "out_axes")
                if type(axis) is not int:
                    raise TransformError(
                        f"scan: output `{call.path_text(gd2.leaf_paths[k2])}` has out axis {axis!r}; outputs that are "
                        "not the carry are stacked over the steps and need an int axis, e.g. "
                        "out_axes=(nnx.Carry, 0)"
                    )
                out_ys.append(k2)
                out_ys_axes.append(axis)
            context.store.put((col, ys_state, raw_out, out_ys, out_ys_axes))
            new_carry = ([flat2.leaves[k] for k in carry_state], [flat2.leaves[k] for k in raw_out])
            return new_carry, ([flat2.leaves[k] for k in ys_state], [flat2.leaves[k] for k in out_ys])

        init = ([leaves[k] for k in carry_state], [leaves[k] for k in carry_raw_in])
        (carry_state_out, carry_raw_out), (ys_state_out, ys_out) = jax.lax.scan(
            body, init, xs, length=size, reverse=reverse, unroll=unroll
        )
        col, ys_state, raw_out, out_ys, out_ys_axes = context.store.get()
        emitted, values = list(carry_state), list(carry_state_out)
        for k, v in zip(ys_state, ys_state_out):
            emitted.append(k)
            if k in same_keys:
                values.append(v[0])
            else:
                values.append(jnp.moveaxis(v, 0, axes[k]) if axes[k] % max(jnp.ndim(v), 1) else v)
        emitted += raw_out
        values += carry_raw_out
        for k2, axis, v in zip(out_ys, out_ys_axes, ys_out):
            emitted.append(k2)
            values.append(jnp.moveaxis(v, 0, axis) if axis else v)
        return Facts((col, emitted)), values

    return outer


def _check_carry(call: Call, position: int, out_ref: Any, gd2: Any, raw_in: list, raw_out: list,
                 leaves_in: list, leaves_out: list) -> None:
    in_ref = call.graphdef.roots[position]
    if ref_shape(in_ref) != ref_shape(out_ref):
        name = call.path_text((position,))
        raise TransformError(
            f"scan: the carry `{name}` changed structure in a step: it went in as "
            f"{ref_text(in_ref, call.graphdef)} and came out as {ref_text(out_ref, gd2)}.\n"
            "Return a carry of the same structure, shapes and dtypes as the one passed in."
        )
    for k_in, k_out in zip(raw_in, raw_out):
        what = f"the carry `{call.path_text(call.graphdef.leaf_paths[k_in])}`"
        _check_same_type(call, k_in, leaves_in[k_in], leaves_out[k_out], what)


def _check_same_type(call: Call, k: int, a: Any, b: Any, what: str) -> None:
    if jnp.shape(a) != jnp.shape(b) or jnp.result_type(a) != jnp.result_type(b):
        raise TransformError(
            f"scan: {what} went into a step with shape {tuple(jnp.shape(a))} and dtype {jnp.result_type(a)} "
            f"but came out with shape {tuple(jnp.shape(b))} and dtype {jnp.result_type(b)}.\n"
            "Carried values keep their shape and dtype from step to step; cast or reshape inside the step."
        )
