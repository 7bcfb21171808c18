"""``Linear``: ``y = x @ kernel + bias``."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from .. import initializers
from ..errors import PlaitError
from ..module import Module
from ..rngs import Rngs
from ..variables import Param

__all__ = ["Linear"]

default_kernel_init = initializers.lecun_normal()
default_bias_init = initializers.zeros


class Linear(Module):
    """A dense layer over the last axis: ``y = x @ kernel + bias``.

    ``kernel`` has shape ``(in_features, out_features)``. ``param_dtype`` is the dtype of the
    parameters; ``dtype`` (if given) is the dtype of the computation, else the inputs and
    parameters are promoted together.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> layer = nnx.Linear(3, 4, rngs=nnx.Rngs(0))
        >>> layer(jnp.ones((2, 3))).shape, layer.kernel.value.shape
        ((2, 4), (3, 4))
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        use_bias: bool = True,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        precision: Any = None,
        kernel_init: Any = default_kernel_init,
        bias_init: Any = default_bias_init,
        rngs: Rngs,
    ) -> None:
        if not isinstance(rngs, Rngs):
            raise PlaitError(
                f"Linear needs rngs=nnx.Rngs(...) to initialise its parameters, got {type(rngs).__name__}.\n"
                "Write nnx.Linear(in_features, out_features, rngs=nnx.Rngs(0))"
            )
        self.kernel = Param(kernel_init(rngs.params(), (in_features, out_features), param_dtype))
        self.bias = Param(bias_init(rngs.params(), (out_features,), param_dtype)) if use_bias else None
        self.in_features = in_features
        self.out_features = out_features
        self.use_bias = use_bias
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.precision = precision

    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.kernel.value
        bias = self.bias.value if self.bias is not None else None
        if jnp.shape(x)[-1:] != (self.in_features,):
            raise PlaitError(
                f"Linear({self.in_features}, {self.out_features}) got input of shape {tuple(jnp.shape(x))}: "
                f"its last axis must be {self.in_features}"
            )
        dtype = self.dtype or jnp.result_type(x, kernel)
        x, kernel = jnp.asarray(x, dtype), jnp.asarray(kernel, dtype)
        y = jax.lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())), precision=self.precision)
        if bias is not None:
            y = y + jnp.asarray(bias, dtype)
        return y
