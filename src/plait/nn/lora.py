"""LoRA: low-rank adapters, ``y = base(x) + x @ lora_a @ lora_b``.

The adapters are held in :class:`LoRAParam` Variables, a subtype of ``Param``. Training
with ``nnx.grad(loss, argnums=nnx.DiffState(0, nnx.LoRAParam))`` then differentiates the
adapters only and leaves the base weights frozen.

Example:
    >>> import jax.numpy as jnp, plait as nnx
    >>> layer = nnx.LoRALinear(3, 4, lora_rank=2, rngs=nnx.Rngs(0))
    >>> grads = nnx.grad(lambda m, x: m(x).sum(), argnums=nnx.DiffState(0, nnx.LoRAParam))(layer, jnp.ones((1, 3)))
    >>> sorted(grads.lora.keys()), "kernel" in grads
    (['lora_a', 'lora_b'], False)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from .. import initializers
from ..errors import LayerError
from ..module import Module
from ..rngs import Rngs
from ..variables import Param, Variable
from .linear import NO_METADATA, Linear, check_rngs, promote_dtype

__all__ = ["LoRAParam", "LoRA", "LoRALinear"]

default_a_initializer = initializers.he_uniform()
default_b_initializer = initializers.zeros


class LoRAParam(Param):
    """A LoRA adapter weight: a ``Param``, so it trains by default, and selectable on its own."""

    __slots__ = ()


class LoRA(Module):
    """A low-rank update ``x @ lora_a @ lora_b``, added to ``base_module(x)`` if one is given.

    ``lora_a`` is ``(in_features, lora_rank)`` (He-uniform by default) and ``lora_b``
    ``(lora_rank, out_features)`` (zeros by default, so a new adapter changes nothing), both
    of type ``lora_param_type``. ``dtype`` (if given) is the dtype of the computation, else
    the input and adapters are promoted together.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> base = nnx.Linear(3, 4, rngs=nnx.Rngs(0))
        >>> lora = nnx.LoRA(3, 2, 4, base_module=base, rngs=nnx.Rngs(1))
        >>> lora.lora_a.value.shape, lora.lora_b.value.shape
        ((3, 2), (2, 4))
        >>> x = jnp.ones((5, 3))
        >>> bool(jnp.allclose(lora(x), base(x)))      # lora_b starts at zero
        True
    """

    def __init__(
        self,
        in_features: int,
        lora_rank: int,
        out_features: int,
        *,
        base_module: Any = None,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        a_initializer: Any = default_a_initializer,
        b_initializer: Any = default_b_initializer,
        lora_param_type: type[Variable] = LoRAParam,
        promote_dtype: Callable[..., Any] = promote_dtype,
        rngs: Rngs,
        a_metadata: Mapping[str, Any] = NO_METADATA,
        b_metadata: Mapping[str, Any] = NO_METADATA,
    ) -> None:
        check_rngs(rngs, "LoRA", "nnx.LoRA(in_features, lora_rank, out_features, rngs=nnx.Rngs(0))")
        if base_module is not None and not callable(base_module):
            raise LayerError(f"LoRA: base_module must be callable (a layer), got {type(base_module).__name__}")
        self.lora_a = lora_param_type(a_initializer(rngs.params(), (in_features, lora_rank), param_dtype), **a_metadata)
        self.lora_b = lora_param_type(b_initializer(rngs.params(), (lora_rank, out_features), param_dtype), **b_metadata)
        self.base_module = base_module
        self.in_features = in_features
        self.out_features = out_features
        self.lora_rank = lora_rank
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.lora_param_type = lora_param_type
        self.promote_dtype = promote_dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        if jnp.shape(x)[-1:] != (self.in_features,):
            raise LayerError(
                f"LoRA({self.in_features}, rank {self.lora_rank}, {self.out_features}) got input of shape "
                f"{tuple(jnp.shape(x))}: its last axis must be {self.in_features}"
            )
        xp, a, b = self.promote_dtype((x, self.lora_a.value, self.lora_b.value), dtype=self.dtype)
        out = xp @ a @ b
        if self.base_module is not None:
            out = out + self.base_module(x)
        return out


class LoRALinear(Linear):
    """A :class:`~plait.Linear` with a LoRA adapter: ``x @ kernel + bias + x @ lora_a @ lora_b``.

    Its ``kernel`` and ``bias`` are those of a ``Linear`` with the same arguments (the same
    state structure, so a trained ``Linear``'s weights load into it); the adapter is the
    sub-module ``lora``. ``lora_dtype``/``lora_param_dtype`` are the adapter's ``dtype``
    and ``param_dtype``; other keyword arguments go to ``Linear``.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> layer = nnx.LoRALinear(3, 4, lora_rank=2, rngs=nnx.Rngs(0))
        >>> layer.kernel.value.shape, layer.lora.lora_a.value.shape, layer(jnp.ones((5, 3))).shape
        ((3, 4), (3, 2), (5, 4))
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        lora_rank: int,
        lora_base_module: Any = None,
        lora_dtype: Any = None,
        lora_param_dtype: Any = jnp.float32,
        a_initializer: Any = default_a_initializer,
        b_initializer: Any = default_b_initializer,
        lora_param_type: type[Variable] = LoRAParam,
        lora_promote_dtype: Callable[..., Any] = promote_dtype,
        rngs: Rngs,
        a_metadata: Mapping[str, Any] = NO_METADATA,
        b_metadata: Mapping[str, Any] = NO_METADATA,
        **kwargs: Any,
    ) -> None:
        super().__init__(in_features, out_features, rngs=rngs, **kwargs)
        self.lora = LoRA(
            in_features,
            lora_rank,
            out_features,
            base_module=lora_base_module,
            dtype=lora_dtype,
            param_dtype=lora_param_dtype,
            a_initializer=a_initializer,
            b_initializer=b_initializer,
            lora_param_type=lora_param_type,
            promote_dtype=lora_promote_dtype,
            rngs=rngs,
            a_metadata=a_metadata,
            b_metadata=b_metadata,
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        return super().__call__(x) + self.lora(x)
