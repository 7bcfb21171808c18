"""Error messages shared by the mapping transforms (vmap, scan)."""

from __future__ import annotations

import jax.numpy as jnp

from ..errors import AxisError
from ..variables import RngKey, RngState


def stream_key(call, k: int) -> int:
    """For a leaf of an RNG stream, the stream's key (the leaf a person thinks of as the stream;
    its count sorts first); any other leaf is itself."""
    slot = call.flat.slots[k]
    if not isinstance(slot, RngState) or isinstance(slot, RngKey):
        return k
    paths = call.flat.graphdef.leaf_paths
    for k2, other in enumerate(call.flat.slots):
        if isinstance(other, RngKey) and paths[k2][:-1] == paths[k][:-1]:
            return k2
    return k


def rank_error(call, k: int, axis: int, transform: str, size: int | None) -> AxisError:
    """The error for an axis that a leaf does not have, with the fixes that apply."""
    k = stream_key(call, k)
    slot = call.flat.slots[k]
    ndim = len(jnp.shape(call.leaves[k]))
    verb = "iterate over" if transform == "scan" else "map"
    n = size if size is not None else "N"
    head = f"{transform} cannot {verb} axis {axis} of {call.describe_leaf(k)}"
    if isinstance(slot, RngState):
        what = "layer" if transform == "scan" else "batch"
        if transform == "scan":
            fixes = (
                f"Either split it for this call:   @nnx.split_rngs(splits={n}) above @nnx.scan(...)\n"
                "or carry it through the steps:   "
                "in_axes=(nnx.Carry, nnx.StateAxes({nnx.RngState: nnx.Carry, ...: 0}))"
            )
        else:
            fixes = (
                f"Split it for this call:   @nnx.split_rngs(splits={n}) above @nnx.vmap(...)\n"
                "so that each lane draws its own keys (transforms never split RNG streams themselves)."
            )
        return AxisError(f"{head}: the RNG stream is not split, so it has no {what} axis.\n{fixes}")
    return AxisError(
        f"{head}: it has rank {ndim}, so axis {axis} does not exist.\n"
        f"Give it a smaller axis, or do not {verb} it: None in in_axes "
        "(for module state, nnx.StateAxes({Type: None, ...: 0}))."
    )


def broadcast_draw_error(call, k: int, transform: str, size: int | None):
    """A stream broadcast into vmap/scan (axis None) was drawn from: randomness would repeat."""
    from ..errors import RngError

    n = size if size is not None else "N"
    unit = "step" if transform == "scan" else "lane"
    carry = (
        "or carry it through the steps:  nnx.StateAxes({nnx.RngState: nnx.Carry, ...: None})\n"
        if transform == "scan" else ""
    )
    return RngError(
        f"{transform}: {call.describe_leaf(k)} was drawn from, but its RNG stream is broadcast "
        f"(axis None), so every {unit} would get the same key.\n"
        f"Split it so that each {unit} draws its own: @nnx.split_rngs(splits={n}) above "
        f"@nnx.{transform}(...), with axis 0 for the RNG state: nnx.StateAxes({{nnx.RngState: 0, ...: None}})\n"
        f"{carry}"
        f"or, if every {unit} should draw the same key on purpose, say so: "
        "nnx.StateAxes({nnx.RngState: nnx.SameKeys, ...: None})"
    )
