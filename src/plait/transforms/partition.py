"""``transform_metadata`` of ``vmap`` and ``scan``: the mapped axis in partition annotations.

A stack of layers built by ``vmap`` has one more axis than each layer; with
``transform_metadata={nnx.PARTITION_NAME: 'layers'}`` that axis is named in each stacked
Variable's ``out_sharding`` (so ``get_partition_spec`` shards or replicates it like any
other). Inside a ``scan`` over the stack, a step sees one layer, so the name is taken out
for the step and put back on the way out. The Variables' ``on_add_axis`` /
``on_remove_axis`` hooks run at the same moments (:func:`plait.variable_axes.add_axis`).

This runs at trace time on the fresh objects a transform builds, so the caller's Variables
never see the intermediate metadata, and a cached compiled transform pays nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax.numpy as jnp

from ..encoding import flatten
from ..errors import TransformError
from ..sharding_rules import current_mesh, shard_value, using_eager_sharding
from ..variable_axes import add_axis, remove_axis
from ..variables import PARTITION_NAME, Variable

__all__ = ["AxisMetadata", "check_transform_metadata", "shard_stacked"]


class AxisMetadata:
    """Removes the mapped axis from input Variables' metadata before the function runs and
    adds it back after; Variables created inside get it at their out axis (``new_axis``).

    ``axes`` is the call's axis per leaf (ints are mapped; anything else is left alone).
    ``new_axis(flat, k, n_roots)`` gives the out axis of leaf ``k`` of state created inside,
    or None where the transform creates no state (``scan``).
    """

    __slots__ = ("axes", "metadata", "new_axis", "_inputs", "_known")

    def __init__(self, axes: list, metadata: Mapping, new_axis: Callable | None = None) -> None:
        self.axes = axes
        self.metadata = metadata
        self.new_axis = new_axis
        self._inputs: list = []
        self._known: set[int] = set()

    def before(self, roots: tuple) -> None:
        flat, _ = flatten(tuple(roots))
        seen: set[int] = set()
        inputs = []
        for k, slot in enumerate(flat.slots):
            axis = self.axes[k] if k < len(self.axes) else None
            if isinstance(slot, Variable) and type(axis) is int and id(slot) not in seen:
                seen.add(id(slot))
                # The value inside has lost the axis: a negative axis counts from the full rank.
                axis = axis % (jnp.ndim(slot.get_raw_value()) + 1)
                inputs.append((slot, axis))
                remove_axis([slot], axis, self.metadata)
        self._inputs = inputs
        self._known = {id(slot) for slot in flat.slots if slot is not None}

    def after(self, roots: tuple, out: Any) -> None:
        inputs, known = self._inputs, self._known
        self._inputs, self._known = [], set()
        for slot, axis in inputs:
            add_axis([slot], axis, self.metadata)
        if self.new_axis is None:
            return
        n_roots = len(roots)
        flat, _ = flatten(tuple(roots) + (out,))
        for k, slot in enumerate(flat.slots):
            if not isinstance(slot, Variable) or id(slot) in known:
                continue
            known.add(id(slot))
            axis = self.new_axis(flat, k, n_roots)
            if type(axis) is int:
                add_axis([slot], axis % (jnp.ndim(slot.get_raw_value()) + 1), self.metadata)


def check_transform_metadata(metadata: Any, transform: str) -> dict | None:
    """``transform_metadata`` as a dict, or None when empty; refused unless it is a mapping
    that names the axis with ``nnx.PARTITION_NAME``."""
    if not metadata:
        return None
    if not isinstance(metadata, Mapping) or PARTITION_NAME not in metadata:
        raise TransformError(
            f"{transform}: transform_metadata={metadata!r} does not name the mapped axis.\n"
            f"Write transform_metadata={{nnx.PARTITION_NAME: 'layers'}} (other keys name the axis in "
            "other tuple metadata of the same name)."
        )
    return dict(metadata)


def shard_stacked(out: Any, metadata: Mapping) -> None:
    """Eager sharding for a stack ``vmap`` built: inside, each lane was placed by its
    per-layer annotation; the stacked axis (now named in ``out_sharding``) is placed here,
    so a rule that maps the name to a mesh axis splits the stack over it."""
    if current_mesh() is None or not using_eager_sharding():
        return
    name = metadata[PARTITION_NAME]
    flat, _ = flatten((out,))
    for v in {id(v): v for v in flat.slots if isinstance(v, Variable)}.values():
        spec = v.get_metadata().get("out_sharding")
        if isinstance(spec, (tuple, list)) and name in spec and v.get_metadata().get("eager_sharding", True):
            meta = v.get_metadata()
            v.set_raw_value(shard_value(v.get_raw_value(), spec, meta.get("sharding_rules"), meta.get("mesh")))
