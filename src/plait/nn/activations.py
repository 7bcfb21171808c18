"""Activation functions: JAX's own, re-exported, and ``PReLU``, the one with a parameter.

The functions are ``jax.nn``'s (``tanh`` is ``jax.numpy.tanh``), under the names layers and
models use, so ``nnx.relu`` and ``nnx.gelu`` work as in the reference system. ``PReLU``
is a module because its negative slope is learned.

Example:
    >>> import jax.numpy as jnp, plait as nnx
    >>> nnx.relu(jnp.array([-1.0, 2.0])).tolist()
    [0.0, 2.0]
    >>> nnx.PReLU(0.1)(jnp.array([-1.0, 2.0])).tolist()
    [-0.10000000149011612, 2.0]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from jax.nn import (
    celu,
    elu,
    gelu,
    glu,
    hard_sigmoid,
    hard_silu,
    hard_swish,
    hard_tanh,
    identity,
    leaky_relu,
    log_sigmoid,
    log_softmax,
    logsumexp,
    one_hot,
    relu,
    relu6,
    selu,
    sigmoid,
    silu,
    soft_sign,
    softmax,
    softplus,
    standardize,
    swish,
)
from jax.numpy import tanh

from ..module import Module
from ..variables import Param
from .linear import NO_METADATA, promote_dtype

__all__ = [
    "celu",
    "elu",
    "gelu",
    "glu",
    "hard_sigmoid",
    "hard_silu",
    "hard_swish",
    "hard_tanh",
    "identity",
    "leaky_relu",
    "log_sigmoid",
    "log_softmax",
    "logsumexp",
    "one_hot",
    "relu",
    "relu6",
    "selu",
    "sigmoid",
    "silu",
    "soft_sign",
    "softmax",
    "softplus",
    "standardize",
    "swish",
    "tanh",
    "PReLU",
]


class PReLU(Module):
    """Parametric ReLU: ``x`` where ``x >= 0``, else ``negative_slope * x``, the slope learned.

    ``negative_slope`` is a scalar ``Param`` of ``param_dtype``, starting at
    ``negative_slope_init``. With ``dtype`` given the computation runs in it; without, the
    slope is cast to the input's dtype, so a bfloat16 input gives a bfloat16 output.
    ``rngs`` is accepted for a uniform layer signature and not used.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> act = nnx.PReLU(negative_slope_init=0.5)
        >>> act(jnp.array([-2.0, 0.0, 3.0])).tolist(), act.negative_slope.value.item()
        ([-1.0, 0.0, 3.0], 0.5)
    """

    def __init__(
        self,
        negative_slope_init: float = 0.01,
        *,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        rngs: Any = None,
        promote_dtype: Callable[..., Any] = promote_dtype,
        negative_slope_metadata: Mapping[str, Any] = NO_METADATA,
    ) -> None:
        self.negative_slope = Param(jnp.asarray(negative_slope_init, dtype=param_dtype), **negative_slope_metadata)
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.promote_dtype = promote_dtype

    def __call__(self, inputs: jax.Array) -> jax.Array:
        slope = self.negative_slope.value
        if self.dtype is not None:
            inputs, slope = self.promote_dtype((inputs, slope), dtype=self.dtype)
        else:  # the slope takes the input's dtype
            slope = jnp.asarray(slope, jnp.result_type(inputs))
        return jnp.where(inputs >= 0, inputs, slope * inputs)
