"""``Sequential``: call layers one after another."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import LayerError
from ..module import Module

__all__ = ["Sequential"]


class Sequential(Module):
    """Call each layer on the output of the one before: ``layers[-1](...layers[0](*args))``.

    The first layer gets the call's arguments; each later one gets the previous output as
    its one argument. Layers may be modules or plain functions (``nnx.relu``). They are
    kept in the list ``layers``. With no layers the call returns its one argument.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> rngs = nnx.Rngs(0)
        >>> mlp = nnx.Sequential(nnx.Linear(3, 4, rngs=rngs), nnx.relu, nnx.Linear(4, 2, rngs=rngs))
        >>> mlp(jnp.ones((4, 3))).shape, len(mlp.layers)
        ((4, 2), 3)
    """

    def __init__(self, *layers: Callable[..., Any]) -> None:
        for i, layer in enumerate(layers):
            if not callable(layer):
                raise LayerError(
                    f"Sequential: layer {i} is a {type(layer).__name__}, which cannot be called; "
                    "every layer must be a module or a function"
                )
        self.layers = list(layers)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self.layers:
            if len(args) != 1 or kwargs:
                raise LayerError("an empty Sequential returns its input, so it takes exactly one argument")
            return args[0]
        first, *rest = self.layers
        out = first(*args, **kwargs)
        for layer in rest:
            out = layer(out)
        return out
