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
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from ..errors import AxisError, StateError, TransformError
from ..graph import check_prefix, flatten, is_graph_node
from ..variables import RngState
from .axes import Carry, SameKeys, StateAxes, resolve
from .lift import Call, arg_names, check_callable, reject_removed_kwargs
from .messages import broadcast_draw_error, rank_error

__all__ = ["vmap", "pmap"]

_MISSING = object()


def vmap(
    f: Callable = _MISSING,  # type: ignore[assignment]
    *,
    in_axes: Any = 0,
    out_axes: Any = 0,
    axis_size: int | None = None,
    axis_name: Any = None,
    spmd_axis_name: Any = None,
    **removed: Any,
) -> Callable:
    """Vectorise ``f`` over an axis of its arguments; modules may be anywhere in them.

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
    reject_removed_kwargs("vmap", removed)
    if f is _MISSING:
        return functools.partial(
            vmap, in_axes=in_axes, out_axes=out_axes, axis_size=axis_size, axis_name=axis_name, spmd_axis_name=spmd_axis_name
        )
    check_callable(f, "vmap")

    def mapper(inner: Callable, mapped_axes: list, group_axes: tuple, size: int) -> Callable:
        return jax.vmap(inner, in_axes=(mapped_axes,), out_axes=group_axes, axis_size=size,
                        axis_name=axis_name, spmd_axis_name=spmd_axis_name)

    @functools.wraps(f)
    def vmapped(*args: Any, **kwargs: Any) -> Any:
        return mapped_call("vmap", mapper, f, args, kwargs, in_axes, out_axes, axis_size)

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
    **removed: Any,
) -> Callable:
    """Like :func:`vmap`, but each lane runs on its own device (``jax.pmap``).

    The mapped size must not exceed the number of devices. Axes, ``StateAxes`` and the
    rules for state are those of ``vmap``.

    Example:
        >>> import jax, jax.numpy as jnp, plait as nnx
        >>> model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
        >>> n = jax.local_device_count()
        >>> nnx.pmap(lambda m, x: m(x), in_axes=(None, 0))(model, jnp.ones((n, 2))).shape == (n, 2)
        True
    """
    reject_removed_kwargs("pmap", removed)
    if f is _MISSING:
        return functools.partial(pmap, axis_name=axis_name, in_axes=in_axes, out_axes=out_axes,
                                 axis_size=axis_size, devices=devices, backend=backend)
    check_callable(f, "pmap")

    def mapper(inner: Callable, mapped_axes: list, group_axes: tuple, size: int) -> Callable:
        return jax.pmap(inner, axis_name=axis_name, in_axes=(mapped_axes,), out_axes=group_axes,
                        axis_size=size, devices=devices, backend=backend)

    @functools.wraps(f)
    def pmapped(*args: Any, **kwargs: Any) -> Any:
        return mapped_call("pmap", mapper, f, args, kwargs, in_axes, out_axes, axis_size)

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
                axis_size: int | None) -> Any:
    """vmap and pmap: resolve axes per leaf, check them, map, write back.

    ``mapper(inner, in_axes_list, group_axes, size)`` calls the JAX transform.
    """
    call = Call(f, transform, args, kwargs)
    gd = call.graphdef
    n_args = call.n_args
    specs = arg_specs(in_axes, args, transform, fun=f)
    axes: list = []
    same_keys: set[int] = set()  # broadcast RNG state that may be drawn from (nnx.SameKeys)
    for k, path in enumerate(gd.leaf_paths):
        if path[0] >= n_args:  # keyword arguments are mapped on axis 0, as in jax.vmap
            axes.append(0)
            continue
        slot = call.flat.slots[k]
        axis = resolve(specs[path[0]], path[1:], slot if slot is not None else call.leaves[k],
                       lambda k=k: call.describe_leaf(k), transform, "in_axes")
        if axis is Carry:
            raise TransformError(f"{transform}: nnx.Carry is for scan; in {transform} use an int or None")
        if axis is SameKeys:
            if isinstance(call.flat.slots[k], RngState):
                same_keys.add(k)
            axis = None
        axes.append(axis)

    size = axis_size
    sized_by = None
    mapped, mapped_axes = [], []
    for k, axis in enumerate(axes):
        if axis is None:
            continue
        shape = jnp.shape(call.leaves[k])
        if not -len(shape) <= axis < len(shape):
            raise rank_error(call, k, axis, transform, size)
        n = shape[axis]
        if size is None:
            size, sized_by = n, k
        elif n != size:
            first = f"axis_size={axis_size}" if sized_by is None else f"{call.describe_leaf(sized_by)} has {size}"
            raise AxisError(
                f"{transform}: mapped axes have different sizes: {call.describe_leaf(k)} has {n} on axis {axis}, "
                f"but {first}.\nEvery mapped argument and Variable needs the same size on its mapped axis; "
                "broadcast the odd one out with None."
            )
        mapped.append(k)
        mapped_axes.append(axis)
    if size is None:
        raise TransformError(
            f"{transform}: nothing is mapped (every in_axes entry is None), so the axis size is unknown; "
            "pass axis_size=N"
        )

    group_axes = sorted(
        spec_axes(in_axes) | spec_axes(out_axes) | {0},
        key=lambda a: (a is None, a if a is not None else 0),
    )
    group_of = {a: i for i, a in enumerate(group_axes)}
    static: dict = {}

    def inner(values: list) -> tuple:
        leaves = list(call.leaves)
        for k, v in zip(mapped, values):
            leaves[k] = v
        _, col, flat2 = call.run(leaves)
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
                slot = flat2.slots[k2]
                value = slot if slot is not None else flat2.leaves[k2]
                root = path[0]
                if root == col.n_roots:
                    spec, name = out_axes, "out_axes"
                elif root < n_args:
                    spec, name = specs[root], "in_axes"
                else:
                    spec, name = 0, "in_axes"
                axis = resolve(spec, path[1:], value, lambda p=path: call.path_text(p), transform, name)
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
                        f"from {-(ndim + 1)} to {ndim}. Give it an axis in range, e.g. StateAxes({{...: 0}})."
                    )
            if axis not in group_of:
                raise AxisError(f"{transform}: unexpected axis {axis!r} for `{call.path_text(path)}`")
            if axis is None and transform == "pmap":
                # jax.pmap returns device 0's value for out_axes None without checking the others,
                # so broadcast writes come out per device and are compared below.
                verify.append(k2)
                axis = 0
            groups[group_of[axis]].append(k2)
        static["col"], static["groups"], static["verify"] = col, groups, verify
        return tuple([flat2.leaves[k2] for k2 in g] for g in groups)

    try:
        results = mapper(inner, mapped_axes, tuple(group_axes), size)([call.leaves[k] for k in mapped])
    except ValueError as e:
        col = static.get("col")
        if col is None or "out_axes" not in str(e):
            raise
        written = static["groups"][group_of[None]]
        if not written:
            raise
        _per_lane_error(call, col, transform, written, e)

    col, groups = static["col"], static["groups"]
    full: list = [None] * col.graphdef.num_leaves
    for k2, i in enumerate(col.input_leaf):
        if i >= 0 and not col.changed[k2]:
            full[k2] = call.leaves[i]
    for g, values in zip(groups, results):
        for k2, v in zip(g, values):
            full[k2] = v
    differ = [k2 for k2 in static["verify"] if not bool(jnp.all(full[k2] == full[k2][0]))]
    if differ:
        _per_lane_error(call, col, transform, differ, None)
    for k2 in static["verify"]:
        full[k2] = full[k2][0]
    return call.write_back(col, full)


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
