"""``Dropout``: zero a random fraction of the inputs while training."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from ..errors import RngError
from ..module import Module
from ..rngs import Rngs

__all__ = ["Dropout"]


class Dropout(Module):
    """Zero each input with probability ``rate`` and scale the rest by ``1 / (1 - rate)``.

    The layer keeps a reference to the :class:`~plait.Rngs` it is given and draws a key
    from its ``rng_collection`` stream (falling back to ``default``) on every call, so each
    call gets a new mask. ``deterministic=True`` (or ``model.eval()``) turns it off. Both
    ``deterministic`` and ``rngs`` can be given per call. ``broadcast_dims`` shares one
    mask value along those axes.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> drop = nnx.Dropout(0.5, rngs=nnx.Rngs(0))
        >>> y1, y2 = drop(jnp.ones(8)), drop(jnp.ones(8))
        >>> set(y1.tolist()) <= {0.0, 2.0}, bool((y1 != y2).any())
        (True, True)
        >>> drop(jnp.ones(3), deterministic=True).tolist()
        [1.0, 1.0, 1.0]
    """

    def __init__(
        self,
        rate: float,
        *,
        broadcast_dims: Sequence[int] = (),
        deterministic: bool = False,
        rng_collection: str = "dropout",
        rngs: Rngs | None = None,
    ) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"Dropout rate must be in [0, 1], got {rate}")
        self.rate = rate
        self.broadcast_dims = tuple(broadcast_dims)
        self.deterministic = deterministic
        self.rng_collection = rng_collection
        self.rngs = rngs

    def __call__(self, inputs: jax.Array, *, deterministic: bool | None = None, rngs: Rngs | None = None) -> jax.Array:
        deterministic = self.deterministic if deterministic is None else deterministic
        if deterministic or self.rate == 0.0:
            return inputs
        if self.rate == 1.0:
            return jnp.zeros_like(inputs)
        rngs = rngs if rngs is not None else self.rngs
        if rngs is None:
            raise RngError(
                "Dropout has no RNG: it was built without rngs and none was passed to the call.\n"
                "Give it one: nnx.Dropout(rate, rngs=rngs), or call it as dropout(x, rngs=rngs); "
                "or turn it off with deterministic=True / model.eval()."
            )
        key = rngs[self.rng_collection]() if isinstance(rngs, Rngs) else rngs()
        keep = 1.0 - self.rate
        shape = list(jnp.shape(inputs))
        for dim in self.broadcast_dims:
            shape[dim] = 1
        mask = jax.random.bernoulli(key, keep, shape, out_sharding=_mask_sharding(inputs, self.broadcast_dims))
        mask = jnp.broadcast_to(mask, jnp.shape(inputs))
        return jax.lax.select(mask, inputs / keep, jnp.zeros_like(inputs))


def _mask_sharding(inputs: Any, broadcast_dims: Any) -> Any:
    """Under a mesh with explicit axes the mask must be laid out like ``inputs`` (select
    refuses mixed shardings); broadcast dimensions have size 1 and are not split."""
    sharding = getattr(jax.typeof(inputs), "sharding", None)
    mesh = getattr(sharding, "mesh", None)
    if mesh is None or mesh.empty or not getattr(mesh, "are_all_axes_explicit", False):
        return None
    spec = list(sharding.spec) + [None] * (jnp.ndim(inputs) - len(sharding.spec))
    for dim in broadcast_dims:
        spec[dim] = None
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(*spec))
