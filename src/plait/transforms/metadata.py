"""``transform_metadata``: the sharding-axis name of a mapped axis, taken out of Variables'
metadata for a function and put back after it, on its own.

``vmap``/``scan``/``pmap`` do this with their ``transform_metadata=`` keyword (see
:mod:`plait.transforms.partition`). A transform written by hand around raw ``jax.vmap`` (with
:func:`~plait.update_context`) has no such keyword; wrapping the mapped function in
``nnx.transform_metadata(in_axes=..., out_axes=..., partition='layers')`` gives it the same
metadata: inside, each input Variable's ``out_sharding`` lacks the name at its axis (and
``on_remove_axis`` hooks run); after, the name is back, and Variables created inside get it
at their out axis. Values are not touched: that is the JAX transform's job.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import jax.numpy as jnp

from ..encoding import flatten
from ..errors import TransformError
from ..mode import check_graph_mode
from ..variable_axes import add_axis, remove_axis
from ..variables import PARTITION_NAME, Variable
from .axes import Carry, SameKeys, resolve
from .lift import Call, check_callable
from .vmap import arg_specs

__all__ = ["transform_metadata"]

F = TypeVar("F", bound=Callable[..., Any])
_MISSING: Any = object()


def _axis(spec_value: Any, where: str) -> int | None:
    if spec_value is None or spec_value is SameKeys:
        return None
    if spec_value is Carry:
        raise TransformError(f"transform_metadata: nnx.Carry is for scan; in {where} use an int or None")
    return spec_value


def transform_metadata(f: Any = _MISSING, *, in_axes: Any = 0, out_axes: Any = 0, partition: str | None,
                       graph: bool | None = None) -> Any:
    """Remove ``partition`` from the sharding metadata of the input Variables at their
    ``in_axes`` axis while ``f`` runs, and add it back after (to new Variables in the output
    at their ``out_axes`` axis, to new Variables in an argument at that argument's axis).

    ``in_axes``/``out_axes`` are prefixes of the arguments and output as in ``vmap`` (ints,
    ``None`` to leave alone, ``StateAxes``). Used as a decorator without ``f``.

    Limitations: ``f`` runs on the caller's objects (writes and structure changes stay, as in
    every plait transform); the reference runs it on copies and keeps only value changes. A
    Variable's metadata travels in the GraphDef, not in a State, so wrap the function that
    takes the modules (after ``merge``), not one that takes ``(graphdef, state)``.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> w = nnx.Param(jnp.ones((3, 4)), out_sharding=("layers", "model"))
        >>> @nnx.transform_metadata(in_axes=0, out_axes=0, partition="layers")
        ... def inside(w):
        ...     return w.out_sharding
        >>> inside(w), w.out_sharding
        (('model',), ('layers', 'model'))
    """
    check_graph_mode("nnx.transform_metadata", graph)
    if f is _MISSING:
        return functools.partial(transform_metadata, in_axes=in_axes, out_axes=out_axes, partition=partition)
    check_callable(f, "transform_metadata")
    metadata = {PARTITION_NAME: partition}

    @functools.wraps(f)
    def transform_metadata_wrapper(*args: Any, **kwargs: Any) -> Any:
        call = Call(f, "transform_metadata", args, kwargs)
        specs = arg_specs(in_axes, call.args, "transform_metadata", fun=f)
        axes = call.resolve(specs, "in_axes", keyword_spec=0)
        inputs: list[tuple[Variable, int]] = []
        seen: set[int] = set()
        for k, slot in enumerate(call.flat.slots):
            axis = _axis(axes[k], "in_axes")
            if isinstance(slot, Variable) and type(axis) is int and id(slot) not in seen:
                seen.add(id(slot))
                inputs.append((slot, axis % max(jnp.ndim(slot.get_raw_value()), 1)))
        for slot, axis in inputs:
            remove_axis([slot], axis, metadata)
        try:
            out = f(*args, **kwargs)
        finally:
            for slot, axis in inputs:
                add_axis([slot], axis, metadata)
        _name_new_variables(call, specs, out, out_axes, seen, metadata)
        return out

    return transform_metadata_wrapper


def _name_new_variables(call: Call, specs: tuple, out: Any, out_axes: Any, seen: set, metadata: dict) -> None:
    """Variables the function created (in the output, or added to an argument's modules) get
    the name at their out axis, as ``vmap``'s ``transform_metadata`` gives stacked state."""
    roots = call.roots
    flat, leaves = flatten(tuple(roots) + (out,))
    n_roots = len(roots)
    for k, slot in enumerate(flat.slots):
        if not isinstance(slot, Variable) or id(slot) in seen:
            continue
        seen.add(id(slot))
        path = flat.graphdef.leaf_paths[k]
        if path[0] == n_roots:
            spec, name = out_axes, "out_axes"
        elif path[0] < call.n_args:
            spec, name = specs[path[0]], "in_axes"
        else:
            spec, name = 0, "in_axes"
        axis = _axis(resolve(spec, path[1:], slot, lambda path=path: call.path_text(path), "transform_metadata", name), name)
        if type(axis) is int:
            add_axis([slot], axis % (max(jnp.ndim(slot.get_raw_value()), 1)), metadata)
