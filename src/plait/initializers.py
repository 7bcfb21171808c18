"""Parameter initializers: functions ``init(key, shape, dtype) -> array``.

These are JAX's own (``jax.nn.initializers``), re-exported under the names layers use, so
``kernel_init=nnx.initializers.he_normal()`` works as in the reference system.

Example:
    >>> import jax, plait as nnx
    >>> init = nnx.initializers.glorot_uniform()
    >>> init(jax.random.key(0), (3, 4)).shape
    (3, 4)
    >>> nnx.initializers.constant(0.5)(jax.random.key(0), (2,)).tolist()
    [0.5, 0.5]
"""

from __future__ import annotations

from jax.nn.initializers import (
    Initializer,
    constant,
    delta_orthogonal,
    glorot_normal,
    glorot_uniform,
    he_normal,
    he_uniform,
    kaiming_normal,
    kaiming_uniform,
    lecun_normal,
    lecun_uniform,
    normal,
    ones,
    orthogonal,
    truncated_normal,
    uniform,
    variance_scaling,
    xavier_normal,
    xavier_uniform,
    zeros,
)

__all__ = [
    "Initializer",
    "constant",
    "delta_orthogonal",
    "glorot_normal",
    "glorot_uniform",
    "he_normal",
    "he_uniform",
    "kaiming_normal",
    "kaiming_uniform",
    "lecun_normal",
    "lecun_uniform",
    "normal",
    "ones",
    "orthogonal",
    "truncated_normal",
    "uniform",
    "variance_scaling",
    "xavier_normal",
    "xavier_uniform",
    "zeros",
    "zeros_init",
    "ones_init",
]


def zeros_init() -> Initializer:
    """An initializer of zeros (``zeros_init()(key, shape)``), as the reference spells it."""
    return zeros


def ones_init() -> Initializer:
    """An initializer of ones (``ones_init()(key, shape)``)."""
    return ones
