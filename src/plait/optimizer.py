"""``Optimizer``: an optax transformation with its state, held as a module.

The optimizer keeps a reference to the model, and its state as ``OptState`` Variables, so
a jitted train step that takes ``(model, optimizer)`` updates both in place.

Example:
    >>> import jax.numpy as jnp, optax, plait as nnx
    >>> model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
    >>> optimizer = nnx.Optimizer(model, optax.sgd(0.1))
    >>> @nnx.jit
    ... def step(model, optimizer, x):
    ...     loss, grads = nnx.value_and_grad(lambda m: (m(x) ** 2).mean())(model)
    ...     optimizer.update(grads)
    ...     return loss
    >>> first = step(model, optimizer, jnp.ones((4, 2)))
    >>> bool(step(model, optimizer, jnp.ones((4, 2))) < first), int(optimizer.step.value)
    (True, 2)
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from .filters import Filter
from .graph import state, update
from .object import Object
from .state import State
from .variables import OptState, Param, Variable

__all__ = ["Optimizer"]


def _is_variable(x: Any) -> bool:
    return isinstance(x, Variable)


def _to_pure(tree: Any) -> Any:
    """Values instead of Variables, and plain dicts/lists instead of plait's tracked ones."""
    if isinstance(tree, Variable):
        return tree._value
    if isinstance(tree, State):
        return tree.to_pure_dict()
    if isinstance(tree, dict):
        return {k: _to_pure(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_to_pure(v) for v in tree]
    if isinstance(tree, tuple):
        items = [_to_pure(v) for v in tree]
        return type(tree)(*items) if hasattr(type(tree), "_fields") else tuple(items)
    return jax.tree.map(lambda v: v._value if isinstance(v, Variable) else v, tree, is_leaf=_is_variable)


class Optimizer(Object):
    """Holds ``model``, an optax ``tx`` and its state; ``update(grads)`` applies one step."""

    def __init__(self, model: Any, tx: Any, *, wrt: Filter = Param) -> None:
        self.model = model
        self.tx = tx
        self.wrt = wrt
        self.step = OptState(jnp.zeros((), jnp.uint32))
        params = state(model, wrt)
        self.opt_state = jax.tree.map(OptState, tx.init(params.to_pure_dict()))

    def update(self, grads: State, **kwargs: Any) -> None:
        """Apply ``grads`` (a State like ``nnx.state(model, wrt)``) to the model."""
        import optax

        params = state(self.model, self.wrt)
        pure_params = params.to_pure_dict()
        pure_grads = grads.to_pure_dict() if isinstance(grads, State) else _to_pure(grads)
        opt_state = _to_pure(self.opt_state)
        updates, new_opt_state = self.tx.update(pure_grads, opt_state, pure_params, **kwargs)
        new_params = optax.apply_updates(pure_params, updates)
        params.replace_by_pure_dict(new_params)
        update(self.model, params)
        # plait's Dict flattens in sorted key order, like dict, so the leaves line up.
        for var, value in zip(jax.tree.leaves(self.opt_state, is_leaf=_is_variable), jax.tree.leaves(new_opt_state)):
            var.value = value
        self.step.value = self.step.value + 1
