"""``remat`` (alias ``checkpoint``): recompute a function's activations in the backward pass.

State behaves as in ``jit``: everything the function writes is written back.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax

from ..mode import check_graph_mode
from .lift import Call, check_callable

__all__ = ["remat", "checkpoint"]

_MISSING = object()


def remat(
    f: Callable = _MISSING,  # type: ignore[assignment]
    *,
    prevent_cse: bool = True,
    static_argnums: int | tuple[int, ...] = (),
    policy: Callable | None = None,
    graph: bool | None = None,
    graph_updates: bool | None = None,
) -> Callable:
    """Save memory in ``grad``: don't store ``f``'s intermediates, recompute them.

    Python ``int``/``bool``/``str`` arguments are static already (part of the structure);
    ``static_argnums`` is accepted for compatibility.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
        >>> loss = lambda m, x: nnx.remat(lambda m, x: (m(x) ** 2).sum())(m, x)
        >>> nnx.grad(loss)(model, jnp.ones((1, 2))).kernel.value.shape
        (2, 2)
    """
    check_graph_mode("nnx.remat", graph, graph_updates)
    if f is _MISSING:
        return functools.partial(remat, prevent_cse=prevent_cse, static_argnums=static_argnums, policy=policy)
    check_callable(f, "remat")

    @functools.wraps(f)
    def rematted(*args: Any, **kwargs: Any) -> Any:
        call = Call(f, "remat", args, kwargs)
        inner, facts = call.written()
        values = jax.checkpoint(inner, prevent_cse=prevent_cse, policy=policy)(call.leaves)
        return call.finish(*facts.get(), values)

    return rematted


checkpoint = remat
