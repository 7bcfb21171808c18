"""``vmap``: map a function over an axis of its arguments, modules included.

``in_axes`` gives each argument an axis (an int, ``None`` to broadcast, or ``StateAxes``
for per-Variable axes of a module). Variables keep their axis on the way out: state mapped
on axis ``a`` comes back on axis ``a``, written values included. New state created inside
(a module built by the function) gets its axis from ``out_axes``.

RNG streams are never split here: a stream mapped on axis 0 must already have that axis,
which :func:`~plait.split_rngs` gives it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from ..encoding import flatten, is_graph_node
from ..errors import AxisError, StateError, TransformError
from ..mode import check_graph_mode
from ..variables import RngState
from .axes import Carry, SameKeys, StateAxes, resolve
from .lift import (
    Call,
    Compiled,
    Facts,
    Store,
    TraceContext,
    arg_names,
    check_callable,
    mapped_size,
    reject_removed_kwargs,
)
from .messages import broadcast_draw_error
from .partition import AxisMetadata, check_transform_metadata, shard_stacked
from .refs import check_prefix

__all__ = ["vmap", "pmap"]

_MISSING = object()
_NO_METADATA: Mapping[str, Any] = {}


def vmap(
    f: Callable = _MISSING,  # type: ignore[assignment]
    *,
    in_axes: Any = 0,
    out_axes: Any = 0,
    axis_size: int | None = None,
    axis_name: Any = None,
    spmd_axis_name: Any = None,
    transform_metadata: Mapping[str, Any] = _NO_METADATA,
    graph: bool | None = None,
    graph_updates: bool | None = None,
    **removed: Any,
) -> Callable:
    """Vectorise ``f`` over an axis of its arguments; modules may be anywhere in them.

    ``transform_metadata={nnx.PARTITION_NAME: 'layers'}`` names the mapped axis in the
    ``out_sharding`` of mapped Variables (see ``docs/sharding.md``): a stack built here
    has ``'layers'`` at its stacked axis, and the function sees each lane without it.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> @nnx.split_rngs(splits=4)
        ... @nnx.vmap(axis_size=4)
        ... def ensemble(rngs):
        ...     return nnx.Linear(3, 2, rngs=rngs)
        >>> models = ensemble(nnx.Rngs(0))
        >>> models.kernel.value.shape
        (4, 3, 2)
        >>> nnx.vmap(lambda m, x: m(x), in_axes=(0, None))(models, jnp.ones(3)).shape
        (4, 2)
    """
    check_graph_mode("nnx.vmap", graph, graph_updates)
    reject_removed_kwargs("vmap", removed)
    if f is _MISSING:
        return functools.partial(
            vmap, in_axes=in_axes, out_axes=out_axes, axis_size=axis_size, axis_name=axis_name,
            spmd_axis_name=spmd_axis_name, transform_metadata=transform_metadata,
        )
    check_callable(f, "vmap")

    def mapper(inner: Callable, leaf_axes: list, group_axes: tuple, size: int) -> Callable:
        return jax.vmap(inner, in_axes=(leaf_axes,), out_axes=(0, group_axes), axis_size=size,
                        axis_name=axis_name, spmd_axis_name=spmd_axis_name)

    cache = Compiled()  # compiled per structure, for calls outside any trace

    @functools.wraps(f)
    def vmapped(*args: Any, **kwargs: Any) -> Any:
        return mapped_call("vmap", mapper, f, args, kwargs, in_axes, out_axes, axis_size, cache, metadata)

    metadata = check_transform_metadata(transform_metadata, "vmap")
    return vmapped


def pmap(
    f: Callable = _MISSING,  # type: ignore[assignment]
    *,
    axis_name: Any = None,
    in_axes: Any = 0,
    out_axes: Any = 0,
    axis_size: int | None = None,
    devices: Any = None,
    backend: str | None = None,
    transform_metadata: Mapping[str, Any] = _NO_METADATA,
    graph: bool | None = None,
    graph_updates: bool | None = None,
    **removed: Any,
) -> Callable:
    """Like :func:`vmap`, but each lane runs on its own device (``jax.pmap``).

    The mapped size must not exceed the number of devices. Axes, ``StateAxes``,
    ``transform_metadata`` and the rules for state are those of ``vmap``.

    Example:
        >>> import jax, jax.numpy as jnp, plait as nnx
        >>> model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
        >>> n = jax.local_device_count()
        >>> nnx.pmap(lambda m, x: m(x), in_axes=(None, 0))(model, jnp.ones((n, 2))).shape == (n, 2)
        True
    """
    check_graph_mode("nnx.pmap", graph, graph_updates)
    reject_removed_kwargs("pmap", removed)
    if f is _MISSING:
        return functools.partial(pmap, axis_name=axis_name, in_axes=in_axes, out_axes=out_axes,
                                 axis_size=axis_size, devices=devices, backend=backend,
                                 transform_metadata=transform_metadata)
    check_callable(f, "pmap")

    def mapper(inner: Callable, leaf_axes: list, group_axes: tuple, size: int) -> Callable:
        return jax.pmap(inner, axis_name=axis_name, in_axes=(leaf_axes,), out_axes=(0, group_axes),
                        axis_size=size, devices=devices, backend=backend)

    cache = Compiled(jit=False)  # jax.pmap compiles itself; one pmapped function per structure keeps its cache

    @functools.wraps(f)
    def pmapped(*args: Any, **kwargs: Any) -> Any:
        return mapped_call("pmap", mapper, f, args, kwargs, in_axes, out_axes, axis_size, cache, metadata)

    metadata = check_transform_metadata(transform_metadata, "pmap")
    return pmapped


def arg_specs(spec: Any, args: tuple, transform: str, name: str = "in_axes", fun: Callable | None = None) -> tuple:
    """One spec per positional argument (a single spec applies to all of them)."""
    if isinstance(spec, (tuple, list)):
        if len(spec) != len(args):
            raise TransformError(
                f"{transform}: {name} has {len(spec)} entries but the function was called with "
                f"{len(args)} positional argument(s); give one entry per argument"
            )
        specs = tuple(spec)
    else:
        specs = (spec,) * len(args)
    for i, (s, a) in enumerate(zip(specs, args)):
        if isinstance(s, (tuple, list, dict)):
            flat, _ = flatten((a,))
            names = arg_names(fun) if fun is not None else []
            arg = f" (for `{names[i]}`)" if i < len(names) else ""
            check_prefix(s, flat.graphdef.roots[0], flat.graphdef, f"{transform}: {name}[{i}]{arg}")
        if isinstance(s, StateAxes) and not is_graph_node(a):
            raise TransformError(
                f"{transform}: {name}[{i}] is {s!r}, but argument {i} is a {type(a).__name__}, not a module.\n"
                "StateAxes chooses axes for a module's Variables; for arrays and pytrees use an int or None."
            )
    return specs


def spec_axes(spec: Any) -> set:
    """Every axis value that appears in a spec tree."""
    if spec is SameKeys:
        return {None}
    if spec is None or spec is Carry or type(spec) is int:
        return {spec}
    if isinstance(spec, StateAxes):
        return {None if a is SameKeys else a for a in spec.axes}
    if isinstance(spec, dict):
        spec = list(spec.values())
    out: set = set()
    if isinstance(spec, (tuple, list)):
        for s in spec:
            out |= spec_axes(s)
    return out


def mapped_call(transform: str, mapper: Callable, f: Callable, args: tuple, kwargs: dict, in_axes: Any, out_axes: Any,
                axis_size: int | None, cache: Compiled, metadata: Mapping | None = None) -> Any:
    """vmap and pmap: resolve axes per leaf, check them, map, write back.

    ``mapper(inner, leaf_axes, out_axes, size)`` calls the JAX transform. Called outside any
    trace, the mapped function is compiled once per structure and kept in ``cache``.
    """
    call = Call(f, transform, args, kwargs)
    specs = arg_specs(in_axes, call.args, transform, fun=f)
    axes: list = []
    same_keys: set[int] = set()  # broadcast RNG state that may be drawn from (nnx.SameKeys)
    for k, axis in enumerate(call.resolve(specs, "in_axes", keyword_spec=0)):
        if axis is Carry:
            raise TransformError(
                f"{transform}: nnx.Carry is for scan, but in_axes gives it to {call.describe_leaf(k)}.\n"
                f"In {transform} use an int or None (broadcast), e.g. nnx.StateAxes({{nnx.RngState: 0, ...: None}})"
            )
        if axis is SameKeys:
            if isinstance(call.flat.slots[k], RngState):
                same_keys.add(k)
            axis = None
        axes.append(axis)
    size, mapped = mapped_size(call, axes, axis_size, transform, "axis_size")
    if transform == "pmap" and not mapped:
        raise TransformError(
            "pmap: nothing is mapped (every in_axes entry is None); jax.pmap needs at least one argument with "
            "a device axis, even with axis_size.\nMap an argument over the devices, e.g. "
            "nnx.pmap(f, in_axes=(None, 0))(model, x) with x of shape (n_devices, ...), or use nnx.vmap."
        )

    group_axes = tuple(sorted(
        spec_axes(in_axes) | spec_axes(out_axes) | {0},
        key=lambda a: (a is None, a if a is not None else 0),
    ))
    key = (call.graphdef, tuple(axes), size, frozenset(same_keys), call.n_args)
    fn, context = cache.get(key, f, lambda context: mapper(
        _mapped_inner(context, transform, specs, axes, same_keys, size, out_axes, group_axes, metadata),
        axes, group_axes, size))
    context.call, context.store = call, Store()
    try:
        facts, results = fn(call.leaves)
    except ValueError as e:
        if "out_axes" not in str(e) or not context.store.filled:
            raise
        col, groups, _ = context.store.get()
        written = groups[group_axes.index(None)] if None in group_axes else []
        if not written:
            raise
        _per_lane_error(call, col, transform, written, e)
    finally:
        context.call = None
    col, groups, verify = facts.value
    emitted = [k2 for g in groups for k2 in g]
    values = [v for g_values in results for v in g_values]
    full_values = dict(zip(emitted, values))
    differ = [k2 for k2 in verify if not bool(jnp.all(full_values[k2] == full_values[k2][0]))]
    if differ:
        _per_lane_error(call, col, transform, differ, None)
    values = [v[0] if k2 in verify else v for k2, v in zip(emitted, values)]
    out = call.finish(col, emitted, values)
    if metadata:
        shard_stacked(out, metadata)
    return out


def _mapped_inner(context: TraceContext, transform: str, specs: tuple, axes: list, same_keys: set, size: int,
                  out_axes: Any, group_axes: tuple, metadata: Mapping | None = None) -> Callable:
    """The function JAX maps: all leaves in (mapped ones per lane), the written and new
    state and the output out, grouped by out axis, with the trace's facts."""
    group_of = {a: i for i, a in enumerate(group_axes)}

    def inner(leaves: list) -> tuple:
        call = context.call
        around = None
        if metadata:
            def new_axis(flat: Any, k: int, n_roots: int) -> Any:
                return _new_leaf_axis(call, n_roots, flat, k, flat.graphdef.leaf_paths[k], specs, out_axes, transform)

            around = AxisMetadata(axes, metadata, new_axis)
        _, col, flat2 = call.run(list(leaves), around=around)
        gd2 = col.graphdef
        if isinstance(out_axes, (tuple, list, dict)):
            check_prefix(out_axes, gd2.roots[-1], gd2, f"{transform}: out_axes")
        groups: list[list[int]] = [[] for _ in group_axes]
        verify: list[int] = []
        for k2, path in enumerate(gd2.leaf_paths):
            i = col.input_leaf[k2]
            if i >= 0:
                if not col.changed[k2]:
                    continue
                axis = axes[i]
                if axis is None and i not in same_keys and isinstance(call.flat.slots[i], RngState):
                    raise broadcast_draw_error(call, i, transform, size)
            else:
                axis = _new_leaf_axis(call, col.n_roots, flat2, k2, path, specs, out_axes, transform)
            if axis is None and transform == "pmap":
                # jax.pmap returns device 0's value for out_axes None without checking the others,
                # so broadcast writes come out per device and are compared outside.
                verify.append(k2)
                axis = 0
            groups[group_of[axis]].append(k2)
        context.store.put((col, groups, verify))
        return Facts((col, groups, verify)), tuple([flat2.leaves[k2] for k2 in g] for g in groups)

    return inner


def _new_leaf_axis(call: Call, n_roots: int, flat2: Any, k2: int, path: tuple, specs: tuple, out_axes: Any,
                   transform: str) -> Any:
    """The out axis of state created inside (or of the output): from out_axes, or from the
    in_axes of the argument whose module it was added to."""
    slot = flat2.slots[k2]
    value = slot if slot is not None else flat2.leaves[k2]
    root = path[0]
    if root == n_roots:
        spec, name = out_axes, "out_axes"
    elif root < call.n_args:
        spec, name = specs[root], "in_axes"
    else:
        spec, name = 0, "in_axes"
    axis = resolve(spec, path[1:], value, lambda: call.path_text(path), transform, name)
    if axis is Carry:
        raise TransformError(f"{transform}: nnx.Carry is for scan; in out_axes use an int or None")
    if axis is SameKeys:
        axis = None
    arrays = jax.tree.leaves(flat2.leaves[k2])  # a Variable may hold a pytree (sow's tuple)
    ndim = min((jnp.ndim(a) for a in arrays), default=0)
    if type(axis) is int and not -(ndim + 1) <= axis <= ndim:
        shapes = ", ".join(str(tuple(jnp.shape(a))) for a in arrays[:3])
        raise AxisError(
            f"{transform}: `{call.path_text(path)}` (created inside, shape {shapes}) "
            f"gets out axis {axis} from {name}, but a value of rank {ndim} can only be stacked on an axis "
            f"from {-(ndim + 1)} to {ndim}. Give it an axis in range, e.g. {name}=0 or StateAxes({{...: 0}})."
        )
    return axis


def _per_lane_error(call: Call, col: Any, transform: str, written: list[int], cause: Exception | None) -> None:
    def name(k2: int) -> str:
        i = col.input_leaf[k2]
        if i >= 0:
            return call.describe_leaf(i)
        return f"`{call.path_text(col.graphdef.leaf_paths[k2])}` (created inside)"

    names = "\n".join("  " + name(k2) for k2 in written)
    raise StateError(
        f"{transform}: state with axis None (one value for all lanes) was given values that differ per lane:\n"
        f"{names}\n"
        "A broadcast Variable holds one value, so per-lane values cannot be written back. Map it instead "
        "(an int axis in in_axes/out_axes, or StateAxes({...: 0})), or write a value that is the same in every lane."
    ) from cause
