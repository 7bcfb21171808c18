"""JAX array refs (``jax.Ref``, ``jax.new_ref``): the mutable arrays behind ref-backed Variables.

A ref is a mutable array that JAX itself tracks: ``jax.jit`` takes it as an argument and
applies the writes made inside to it in place. Flax NNX 0.10 exposed them as
``nnx.mutable_array``/``nnx.MutableArray``, 0.12 as ``nnx.Variable(..., ref=True)``; plait
offers both on top of JAX's own API, typed.

Example:
    >>> import jax, jax.numpy as jnp, plait as nnx
    >>> counter = nnx.mutable_array(jnp.zeros(()))
    >>> @jax.jit
    ... def bump(ref):
    ...     ref[...] += 1
    >>> bump(counter); bump(counter)
    >>> nnx.is_mutable_array(counter), float(counter[...])
    (True, 2.0)
"""

from __future__ import annotations

from typing import Any, TypeGuard

import jax
import jax.numpy as jnp

__all__ = ["MutableArray", "mutable_array", "is_mutable_array"]

#: The type of a JAX array ref (``jax.Ref``); traced refs inside ``jax.jit`` are instances too.
MutableArray = jax.Ref


def mutable_array(value: Any, /) -> jax.Ref:
    """A new JAX ref holding ``value`` (an array, or anything ``jnp.asarray`` takes).

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> ref = nnx.mutable_array(jnp.arange(3.0))
        >>> ref[1] = 5.0
        >>> ref[...].tolist()
        [0.0, 5.0, 2.0]
    """
    if isinstance(value, jax.Ref):
        raise TypeError("mutable_array(ref): the value is already a JAX ref; use it as it is (or copy ref[...])")
    return jax.new_ref(jnp.asarray(value))


def is_mutable_array(value: Any, /) -> TypeGuard[jax.Ref]:
    """True for a JAX array ref (concrete or traced), False for anything else.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> nnx.is_mutable_array(nnx.mutable_array(1.0)), nnx.is_mutable_array(jnp.ones(()))
        (True, False)
    """
    return isinstance(value, jax.Ref)


def read(ref: jax.Ref) -> jax.Array:
    """The array a ref holds now (a copy: later writes to the ref do not change it)."""
    return ref[...]


def write(ref: jax.Ref, index: Any, value: Any, what: str) -> None:
    """``ref[index] = value``; a whole-value write must keep the ref's shape and dtype kind
    (a ref is one buffer), else :class:`~plait.errors.VariableError` naming ``what``."""
    if index is Ellipsis:
        shape = tuple(getattr(value, "shape", ()))
        if shape != tuple(ref.shape):
            try:
                value = jnp.broadcast_to(value, ref.shape)
            except (TypeError, ValueError):
                from .errors import VariableError

                raise VariableError(
                    f"{what} is backed by a JAX ref of shape {tuple(ref.shape)}, {ref.dtype}; a value of shape "
                    f"{shape} cannot be written into it (a ref keeps its shape).\n"
                    "Write a value of the same shape, or use a plain Variable (ref=False) whose value can be replaced."
                ) from None
    ref[index] = value
