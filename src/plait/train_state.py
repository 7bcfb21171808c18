"""``TrainState``: the functional training record of Flax NNX 0.10 (a frozen pytree).

Where :class:`~plait.optimizer.Optimizer` updates a model in place, a ``TrainState`` is a
value: a frozen dataclass holding the ``graphdef``, the ``params`` State, optax's
``opt_state`` and the ``step``, with ``tx`` as static data. ``apply_gradients`` returns a new
one. It is a JAX pytree, so raw ``jax.jit``/``jax.grad`` take it directly; subclasses add
fields (``class MyState(nnx.TrainState): batch_stats: nnx.State``) and are dataclasses and
pytrees too. A field declared with ``dataclasses.field(metadata={"pytree_node": False})``
(what ``flax.struct.field(pytree_node=False)`` makes) is static.

Example:
    >>> import jax, jax.numpy as jnp, optax, plait as nnx
    >>> graphdef, params = nnx.split(nnx.Linear(2, 1, rngs=nnx.Rngs(0)))
    >>> ts = nnx.TrainState.create(graphdef, params=params, tx=optax.sgd(0.1))
    >>> @jax.jit
    ... def train_step(ts, x):
    ...     loss_fn = lambda p: (nnx.merge(ts.graphdef, p)(x) ** 2).mean()
    ...     return ts.apply_gradients(grads=jax.grad(loss_fn)(ts.params))
    >>> ts = train_step(ts, jnp.ones((4, 2)))
    >>> int(ts.step), type(ts.params["kernel"]).__name__
    (1, 'Param')
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from .graph import GraphDef, merge, split
from .state import State

__all__ = ["TrainState"]


def _make_pytree_dataclass(cls: type) -> type:
    cls = dataclasses.dataclass(frozen=True)(cls)
    fields = dataclasses.fields(cls)
    data = [f.name for f in fields if f.metadata.get("pytree_node", True)]
    meta = [f.name for f in fields if not f.metadata.get("pytree_node", True)]
    jax.tree_util.register_dataclass(cls, data_fields=data, meta_fields=meta)
    return cls


class _Apply:
    """``state.apply(...)`` then ``.method(...)`` or ``(...)``: merge, call, split again."""

    def __init__(self, graphdef: GraphDef, states: tuple, names: tuple = ()) -> None:
        self._graphdef, self._states, self._names = graphdef, states, names

    def __getattr__(self, name: str) -> _Apply:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Apply(self._graphdef, self._states, self._names + (name,))

    def __call__(self, *args: Any, **kwargs: Any) -> tuple[Any, tuple[GraphDef, State]]:
        module = merge(self._graphdef, *self._states)
        fn = module
        for name in self._names:
            fn = getattr(fn, name)
        out = fn(*args, **kwargs)
        return out, split(module)


class TrainState:
    """A frozen pytree with ``graphdef``, ``params``, ``opt_state``, ``step`` and static ``tx``.

    Build it with :meth:`create`; :meth:`apply_gradients` returns the next one; :meth:`apply`
    runs the model on the state's fields.

    Example:
        >>> import dataclasses, jax.numpy as jnp, optax, plait as nnx
        >>> class WithStats(nnx.TrainState):
        ...     rest: nnx.State
        >>> graphdef, params, rest = nnx.split(nnx.BatchNorm(2, rngs=nnx.Rngs(0)), nnx.Param, ...)
        >>> ts = WithStats.create(graphdef, params=params, tx=optax.adam(1e-3), rest=rest)
        >>> y, (graphdef, new_state) = ts.apply("params", "rest")(jnp.ones((3, 2)))
        >>> y.shape, sorted(new_state)
        ((3, 2), ['bias', 'mean', 'scale', 'var'])
    """

    graphdef: GraphDef
    params: State
    opt_state: Any
    step: jax.Array
    tx: Any = dataclasses.field(metadata={"pytree_node": False})

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _make_pytree_dataclass(cls)

    @classmethod
    def create(cls, graphdef: GraphDef, *, params: State, tx: Any, step: int = 0, **kwargs: Any) -> Any:
        """A state at ``step`` with optax's state initialised from ``params``; ``kwargs`` fill
        the fields a subclass adds."""
        return cls(graphdef=graphdef, params=params, opt_state=tx.init(params), step=jnp.asarray(step), tx=tx, **kwargs)

    def apply(self, state: State | str, *states: State | str) -> _Apply:
        """``ts.apply("params", other_state)(x)`` (or ``.method(x)``): the output of the model
        merged from those States (a string names a field), and ``(graphdef, state)`` after it."""
        resolved = []
        for s in (state, *states):
            if isinstance(s, str):
                value = getattr(self, s)
                if not isinstance(value, State):
                    raise TypeError(f"{type(self).__name__}.{s} is a {type(value).__name__}, not a State")
                s = value
            resolved.append(s)
        return _Apply(self.graphdef, tuple(resolved))

    def apply_gradients(self, grads: State, **kwargs: Any) -> Any:
        """The next state: ``tx`` applied to ``grads`` (a State like ``params``), ``step + 1``,
        and any other field replaced by ``kwargs``."""
        import optax

        updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
        params = optax.apply_updates(self.params, updates)
        return self.replace(params=params, opt_state=opt_state, step=self.step + 1, **kwargs)

    def replace(self, **changes: Any) -> Any:
        """A copy with the given fields replaced (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)


TrainState = _make_pytree_dataclass(TrainState)  # type: ignore[misc]
