"""``nnx.proxy_caller``: the reference's proxy behind ``nnx.call``. plait's
:func:`~plait.transforms.call` returns its own proxy: ``nnx.call((graphdef, state)).method(x)``
gives ``(output, (graphdef, state))``; the proxy classes are not public.

Example:
    >>> import jax.numpy as jnp, plait as nnx
    >>> out, (gd, st) = nnx.call(nnx.split(nnx.Linear(2, 3, rngs=nnx.Rngs(0))))(jnp.ones((1, 2)))
    >>> out.shape
    (1, 3)
"""

from __future__ import annotations

from .namespaces import missing

__all__: list[str] = []

__getattr__ = missing("proxy_caller", {
    name: "nnx.call((graphdef, state)).method(...) returns (output, (graphdef, state)); its proxy is not public"
    for name in ("ApplyCaller", "CallableProxy", "DelayedAccessor", "GetAttr", "GetItem")
})
