"""``EMA``: an exponential moving average of a model's Variables, for evaluation.

``EMA(model, decay)`` keeps its own copy of the Variables ``only`` selects (by default all
of them), as a :class:`~plait.state.State` in ``ema.params``. Each ``ema.update(model)``
moves every copy towards the model's current value::

    ema = decay * ema + (1 - decay) * value

The copies are ordinary Variables of the same types, so a jitted train step that takes the
``ema`` writes them back. ``ema.apply_to(model)`` builds a model of the same structure whose
averaged Variables *are* the EMA's: it is built once and follows every later update, so an
eval step can simply take it.

Example:
    >>> import jax.numpy as jnp, optax, plait as nnx
    >>> model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
    >>> optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)
    >>> ema = nnx.EMA(model, decay=0.9)
    >>> ema_model = ema.apply_to(model)
    >>> @nnx.jit
    ... def train_step(model, optimizer, ema, x):
    ...     optimizer.update(model, nnx.grad(lambda m: (m(x) ** 2).mean())(model))
    ...     ema.update(model)
    >>> train_step(model, optimizer, ema, jnp.ones((4, 2)))
    >>> ema_model.kernel is ema.params["kernel"], bool((ema_model.kernel.value != model.kernel.value).all())
    (True, True)
"""

from __future__ import annotations

from typing import Any, TypeVar

import jax.numpy as jnp

from .encoding import flatten_cached, unflatten
from .errors import GraphError
from .filters import Filter
from .graph import state
from .object import Object
from .optimizer import check_graph_mode
from .state import State
from .variables import Variable, describe

__all__ = ["EMA"]

M = TypeVar("M")


def _path_text(path: tuple) -> str:
    return ".".join(str(p) for p in path)


class EMA(Object):
    """Exponential moving average of the Variables of ``params`` that ``only`` selects.

    Args:
        params: a module (or other graph node) whose Variables are averaged.
        decay: the weight of the old average in each update, e.g. ``0.999``.
        only: a filter: which Variables to average (``...``, all, by default; use
            ``only=nnx.Param`` for a model that also holds RNG streams or counters).
        graph: Flax NNX 0.12's mode switch; plait has graph semantics only, so only ``None``
            or ``True`` are accepted.

    Attributes:
        decay: as given.
        filter: the ``only`` filter.
        params: a State of Variables (same types and metadata as the model's) holding the
            averages.

    Example:
        >>> import jax, jax.numpy as jnp, plait as nnx
        >>> model = nnx.Linear(1, 1, use_bias=False, rngs=nnx.Rngs(0))
        >>> ema = nnx.EMA(model, decay=0.5)
        >>> start = float(model.kernel.value[0, 0])
        >>> model.kernel.value = jnp.zeros((1, 1)); ema.update(model)
        >>> float(ema.params["kernel"].value[0, 0]) == 0.5 * start
        True
    """

    def __init__(self, params: Any, decay: float, *, only: Filter = ..., graph: bool | None = None) -> None:
        check_graph_mode(graph, "EMA")
        self.decay = decay
        self.filter = only
        copies = []
        for path, leaf in state(params, only).flat_state():
            if not isinstance(leaf, Variable):
                raise GraphError(
                    f"EMA averages Variables, but {describe(_path_text(path), leaf)} is a plain array in the "
                    "module. Hold it in a Variable (e.g. nnx.Param), or leave it out with only=nnx.Param."
                )
            if not jnp.issubdtype(jnp.result_type(leaf._value), jnp.inexact):
                raise GraphError(
                    f"EMA averages floating-point values, but {describe(_path_text(path), leaf)} has dtype "
                    f"{jnp.result_type(leaf._value)}; an average of it would be meaningless.\n"
                    "Select the Variables to average: nnx.EMA(model, decay, only=nnx.Param)"
                )
            # New Variables (not the State's detached copies), so a write from a transform the
            # EMA was closed over in is caught like any other.
            copies.append((path, type(leaf)(leaf._value, **leaf._meta)))
        self.params = State.from_flat_state(copies)

    def update(self, updates: Any) -> None:
        """Move each average towards ``updates``' value: ``decay * ema + (1 - decay) * value``.

        Args:
            updates: the model (or a State of it) with the structure given at construction.
        """
        if isinstance(updates, Object):
            new = state(updates, self.filter)
        elif isinstance(updates, State):
            new = updates.filter(self.filter)
        else:
            raise GraphError(
                f"EMA.update expects the model (or its State), got a {type(updates).__name__}: ema.update(model)"
            )
        mine = self.params.flat_state()
        theirs = new.flat_state()
        if [p for p, _ in mine] != [p for p, _ in theirs]:
            theirs = self._aligned(mine, theirs)
        decay = self.decay
        for (_, average), (_, leaf) in zip(mine, theirs):
            value = leaf._value if isinstance(leaf, Variable) else leaf
            average.value = decay * average._value + (1.0 - decay) * value

    def _aligned(self, mine: list, theirs: list) -> list:
        given = dict(theirs)
        missing = [p for p, _ in mine if p not in given]
        known = {p for p, _ in mine}
        extra = [p for p, _ in theirs if p not in known]
        if missing or extra:
            def show(paths: list) -> str:
                return ", ".join(f"`{_path_text(p)}`" for p in paths[:8]) + (" ..." if len(paths) > 8 else "")

            lines = ([f"  averaged but not given: {show(missing)}"] if missing else []) + (
                [f"  given but not averaged: {show(extra)}"] if extra else []
            )
            raise GraphError(
                "EMA.update: the model does not have the structure the EMA was built for:\n"
                + "\n".join(lines)
                + "\nPass the model given to nnx.EMA(model, decay) (or one built the same way)."
            )
        return [(p, given[p]) for p, _ in mine]

    def apply_to(self, model: M) -> M:
        """A model like ``model`` whose averaged Variables are the EMA's own.

        Everything else (Variables ``only`` left out, static attributes) is copied from
        ``model``. Because the averaged Variables are shared, the returned model shows every
        later :meth:`update`: build it once and evaluate with it.
        """
        flat = flatten_cached((model,))
        gd = flat.graphdef
        index = gd.path_index()
        leaves = flat.current_leaves()
        reuse: list = [None] * len(gd.nodes)
        missing = []
        for path, average in self.params.flat_state():
            k = index.get(path)
            if k is None or gd.leaf_nodes[k] < 0:
                missing.append(path)
                continue
            reuse[gd.leaf_nodes[k]] = average
            leaves[k] = average._value
        if missing:
            raise GraphError(
                "EMA.apply_to: the model has no Variable at "
                + ", ".join(f"`{_path_text(p)}`" for p in missing[:8])
                + ". Pass a model with the structure given to nnx.EMA(model, decay)."
            )
        roots, _ = unflatten(gd, leaves, reuse)
        return roots[0]
