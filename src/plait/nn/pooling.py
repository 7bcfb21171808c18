"""Pooling: reduce each window of the spatial axes to one value (functions, not modules).

Inputs are channels last, ``(*batch, *spatial, features)``, with as many spatial axes as
``window_shape`` has entries; the batch axes may be several or none. Each feature is
pooled on its own. ``strides`` defaults to 1 along every spatial axis, ``padding`` is
``'VALID'`` (no padding; the default), ``'SAME'``, or one ``(low, high)`` pair or int per
spatial axis. Padded positions never win a max or min; for ``avg_pool`` they count as
zeros unless ``count_include_pad=False``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import LayerError
from .conv import canonicalize_padding

__all__ = ["pool", "avg_pool", "max_pool", "min_pool"]


def _window(window_shape: Any, strides: Any, what: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    if isinstance(window_shape, (int, np.integer)):
        raise TypeError(
            f"{what}: window_shape must have one entry per spatial axis, got the int {window_shape}.\n"
            f"Write window_shape=({window_shape},) for sequences or window_shape=({window_shape}, {window_shape}) for images."
        )
    window_shape = tuple(int(w) for w in window_shape)
    if strides is None:
        strides = (1,) * len(window_shape)
    elif isinstance(strides, (int, np.integer)):
        strides = (int(strides),) * len(window_shape)
    else:
        strides = tuple(int(s) for s in strides)
    if len(strides) != len(window_shape):
        raise LayerError(
            f"{what}: strides {strides} has {len(strides)} entries but window_shape {window_shape} has "
            f"{len(window_shape)}; give one stride per spatial axis"
        )
    return window_shape, strides


def pool(
    inputs: jax.Array,
    init: Any,
    reduce_fn: Callable[[Any, Any], Any],
    window_shape: Sequence[int],
    strides: Sequence[int] | None = None,
    padding: Any = "VALID",
) -> jax.Array:
    """Reduce every window with ``reduce_fn`` (e.g. ``jax.lax.add``), starting from ``init``.

    ``init`` is also the value of padded positions, so it must be the identity of
    ``reduce_fn`` (0 for add, ``-inf`` for max).

    Example:
        >>> import jax, jax.numpy as jnp, plait as nnx
        >>> x = jnp.arange(8.0).reshape(1, 4, 2)             # batch 1, length 4, 2 features
        >>> nnx.pool(x, 0.0, jax.lax.add, (2,), strides=(2,))[0].tolist()
        [[2.0, 4.0], [10.0, 12.0]]
    """
    window_shape, strides = _window(window_shape, strides, "pool")
    rank = len(window_shape)
    shape = tuple(jnp.shape(inputs))
    if len(shape) < rank + 1:
        raise LayerError(
            f"pool: window_shape {window_shape} pools {rank} spatial axis(es) of inputs (*batch, *spatial, features), "
            f"so the inputs need at least {rank + 1} axes, but got shape {shape}"
        )
    n_batch = len(shape) - rank - 1
    padding = canonicalize_padding(padding, rank, "pool")
    if padding not in ("SAME", "VALID") and not isinstance(padding, list):
        raise LayerError(f"pool: padding {padding!r} is not supported; use 'SAME', 'VALID' or explicit pairs")
    if isinstance(padding, list):
        padding = ((0, 0),) * n_batch + tuple(padding) + ((0, 0),)
    dims = (1,) * n_batch + window_shape + (1,)
    strides = (1,) * n_batch + strides + (1,)
    dtype = jnp.result_type(inputs)
    try:
        # A concrete NumPy scalar: JAX then recognises (add, 0) and (max, -inf) as the
        # differentiable sum/max window reductions, even under jit.
        init = np.asarray(init, dtype)
    except (TypeError, jax.errors.ConcretizationTypeError):
        init = jnp.asarray(init, dtype)
    return jax.lax.reduce_window(inputs, init, reduce_fn, dims, strides, padding)


def avg_pool(
    inputs: jax.Array,
    window_shape: Sequence[int],
    strides: Sequence[int] | None = None,
    padding: Any = "VALID",
    count_include_pad: bool = True,
) -> jax.Array:
    """The mean of each window; integer inputs give a float result.

    With ``count_include_pad=False`` each window is divided by the number of real
    (unpadded) positions it covers instead of its full size.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> x = jnp.array([1.0, 2.0, 3.0, 4.0]).reshape(4, 1)     # one sequence, 1 feature
        >>> nnx.avg_pool(x, (2,), strides=(2,))[:, 0].tolist()
        [1.5, 3.5]
        >>> nnx.avg_pool(x, (3,), padding="SAME", count_include_pad=False)[:, 0].tolist()
        [1.5, 2.0, 3.0, 3.5]
    """
    dtype = jnp.result_type(inputs)
    if not jnp.issubdtype(dtype, jnp.inexact):
        inputs = jnp.asarray(inputs, jnp.promote_types(dtype, jnp.float32))
    y = pool(inputs, 0, jax.lax.add, window_shape, strides, padding)
    if count_include_pad:
        return y / np.prod(window_shape, dtype=np.int64)
    # Count the real positions under each window: pool a field of ones shaped like one example.
    rank = len(tuple(window_shape))
    ones = jnp.ones(tuple(jnp.shape(inputs))[-rank - 1 : -1] + (1,), y.dtype)
    return y / pool(ones, 0, jax.lax.add, window_shape, strides, padding)


def _lowest(dtype: Any) -> Any:
    return -jnp.inf if jnp.issubdtype(dtype, jnp.inexact) else jnp.iinfo(dtype).min


def _highest(dtype: Any) -> Any:
    return jnp.inf if jnp.issubdtype(dtype, jnp.inexact) else jnp.iinfo(dtype).max


def max_pool(
    inputs: jax.Array, window_shape: Sequence[int], strides: Sequence[int] | None = None, padding: Any = "VALID"
) -> jax.Array:
    """The largest value of each window.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> x = jnp.arange(16.0).reshape(1, 4, 4, 1)
        >>> nnx.max_pool(x, (2, 2), strides=(2, 2))[0, :, :, 0].tolist()
        [[5.0, 7.0], [13.0, 15.0]]
    """
    return pool(inputs, _lowest(jnp.result_type(inputs)), jax.lax.max, window_shape, strides, padding)


def min_pool(
    inputs: jax.Array, window_shape: Sequence[int], strides: Sequence[int] | None = None, padding: Any = "VALID"
) -> jax.Array:
    """The smallest value of each window.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> x = jnp.arange(16.0).reshape(1, 4, 4, 1)
        >>> nnx.min_pool(x, (2, 2), strides=(2, 2))[0, :, :, 0].tolist()
        [[0.0, 2.0], [8.0, 10.0]]
    """
    return pool(inputs, _highest(jnp.result_type(inputs)), jax.lax.min, window_shape, strides, padding)
