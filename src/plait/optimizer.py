"""``Optimizer``: an optax transformation and its state, held as a graph node.

The optimizer's state (optax's moments, counters) are ``OptState`` Variables and its step
counter is one too, so a jitted train step that takes the optimizer writes them back like
any other state. It keeps a reference to the model it was built for, which gives the two
call forms Flax NNX has had:

- ``optimizer.update(model, grads, **kwargs)`` (Flax NNX 0.11 and later), and
- ``optimizer.update(grads, **kwargs)`` (0.10, and :class:`ModelAndOptimizer`): the model
  given at construction.

What optax sees is a :class:`~plait.state.State` of raw arrays with the paths of
``nnx.state(model, wrt)``: parameters, gradients (entries of other Variable types are
dropped, as ``wrt`` says) and any State given as an extra argument. So optax wrappers that
need the parameter tree's structure work with a label or mask tree built from that State
(``optax.multi_transform``/``optax.partition``, ``optax.masked``), and a callable extra
argument, such as the ``value_fn`` of ``optax.lbfgs`` and the line searches, is called with
a State of the parameter Variables (``nnx.merge(graphdef, params)`` rebuilds the model).

Gradients that do not match the parameters (another model, another ``wrt``) are refused
with a :class:`~plait.errors.GraphError` that names the paths that differ.

Example:
    >>> import jax.numpy as jnp, optax, plait as nnx
    >>> model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
    >>> optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)
    >>> @nnx.jit
    ... def step(model, optimizer, x):
    ...     loss, grads = nnx.value_and_grad(lambda m: (m(x) ** 2).mean())(model)
    ...     optimizer.update(model, grads)
    ...     return loss
    >>> first = step(model, optimizer, jnp.ones((4, 2)))
    >>> bool(step(model, optimizer, jnp.ones((4, 2))) < first), int(optimizer.step.value)
    (True, 2)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from .errors import GraphError, TransformError
from .filters import Filter, to_predicate
from .graph import state, update
from .object import Dict, List, Object
from .state import State
from .variables import OptState, Param, Variable

__all__ = ["Optimizer", "ModelAndOptimizer", "OptArray", "OptVariable"]


class OptArray(OptState):
    """Optimizer state for a plain array (the reference's name; plait's Optimizer stores OptState)."""

    __slots__ = ()


class OptVariable(OptState):
    """Optimizer state for a Variable (the reference's name; plait's Optimizer stores OptState)."""

    __slots__ = ()


def check_graph_mode(graph: bool | None, where: str) -> None:
    """Flax NNX 0.12's ``graph=`` keyword: plait has only graph semantics (shared references
    and all), so ``None``/``True`` are accepted and ``False`` is refused."""
    if graph is None or graph is True:
        return
    raise TransformError(
        f"{where}(graph={graph!r}): plait has one semantics, Flax NNX's graph mode (shared "
        "sub-modules and tied weights are kept), and no separate tree mode.\n"
        f"Leave the keyword out (or pass graph=True): {where}(...)"
    )


def _is_variable(x: Any) -> bool:
    return isinstance(x, Variable)


def _value_of(x: Any) -> Any:
    return x._value if isinstance(x, Variable) else x


def _pure(tree: Any) -> Any:
    """Values instead of Variables; plain dicts/lists instead of plait's tracked ones (optax
    builds plain ones, and the structures must compare equal). States stay States."""
    t = type(tree)
    if isinstance(tree, Variable):
        return tree._value
    if t is State:
        return jax.tree.map(_value_of, tree, is_leaf=_is_variable)
    if t is dict or t is Dict:
        return {k: _pure(v) for k, v in tree.items()}
    if t is list or t is List:
        return [_pure(v) for v in tree]
    if isinstance(tree, tuple):
        items = [_pure(v) for v in tree]
        return t(*items) if hasattr(t, "_fields") else tuple(items)
    return jax.tree.map(_value_of, tree, is_leaf=_is_variable)


def _to_opt_state(tree: Any) -> Any:
    """optax's state as OptState Variables; an entry that mirrors a parameter keeps its
    metadata (e.g. sharding), so the optimizer state can be laid out like the parameters."""

    def wrap(x: Any) -> OptState:
        return OptState(x._value, **x._meta) if isinstance(x, Variable) else OptState(x)

    return jax.tree.map(wrap, tree, is_leaf=_is_variable)


def _filter_text(f: Any) -> str:
    if isinstance(f, type):
        return f"nnx.{f.__name__}"
    return "..." if f is Ellipsis else repr(f)


def _path_text(path: tuple) -> str:
    return ".".join(str(p) for p in path) or "<root>"


def _paths_text(paths: list) -> str:
    shown = ", ".join(f"`{_path_text(p)}`" for p in paths[:8])
    return shown + (f" and {len(paths) - 8} more" if len(paths) > 8 else "")


def _flat_entries(tree: Any, what: str) -> list:
    if isinstance(tree, State):
        return tree.flat_state()
    if isinstance(tree, Mapping):
        return State(tree).flat_state()
    if isinstance(tree, Object):
        raise TransformError(
            f"Optimizer.update: {what} is a {type(tree).__name__} (a module), not a State of gradients.\n"
            "The call forms are optimizer.update(model, grads) and optimizer.update(grads), with "
            "grads = nnx.grad(loss_fn)(model)."
        )
    raise TransformError(
        f"Optimizer.update: {what} must be a State (as nnx.grad returns) or a nested dict of arrays, "
        f"got a {type(tree).__name__}."
    )


class Optimizer(Object):
    """Holds an optax ``tx``, its state and a step counter, for the Variables ``wrt`` selects.

    Args:
        model: the module whose ``wrt`` Variables are optimized. It is kept (``.model``) for the
            one-argument call form ``update(grads)``.
        tx: an optax ``GradientTransformation``.
        wrt: a filter: which Variables are optimized (``nnx.Param`` by default). Gradients may
            hold more (e.g. from ``nnx.grad`` with a ``DiffState``); Variables of other types
            are dropped from them.
        graph: Flax NNX 0.12's mode switch; plait has graph semantics only, so only ``None`` or
            ``True`` are accepted.

    Attributes:
        step: an ``OptState`` counting the updates (``uint32``).
        opt_state: optax's state, with ``OptState`` Variables as leaves.

    Example:
        >>> import jax.numpy as jnp, optax, plait as nnx
        >>> model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
        >>> optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
        >>> grads = nnx.grad(lambda m: m(jnp.ones((1, 2))).sum())(model)
        >>> updates = optimizer.update(model, grads)   # or optimizer.update(grads)
        >>> int(optimizer.step.value), sorted(updates)
        (1, ['bias', 'kernel'])
    """

    def __init__(self, model: Any, tx: Any, *, wrt: Filter = Param, graph: bool | None = None) -> None:
        check_graph_mode(graph, type(self).__name__)
        self.model = model
        self.tx = tx
        self.wrt = wrt
        self.step = OptState(jnp.zeros((), jnp.uint32))
        # optax gets the parameter Variables here, so moments that mirror a parameter can
        # inherit its metadata; at update time it gets raw arrays in the same State layout.
        self.opt_state = _to_opt_state(tx.init(state(model, wrt)))

    def update(self, *args: Any, **kwargs: Any) -> State:
        """Apply one optimizer step: ``update(model, grads, **kwargs)`` or ``update(grads, **kwargs)``.

        ``grads`` is a State like ``nnx.state(model, wrt)`` (what ``nnx.grad`` returns) or a nested
        dict of arrays with the same paths. Keyword arguments go to ``tx.update`` (e.g. ``value``,
        ``grad``, ``value_fn`` for ``optax.lbfgs``): Variables and States become raw arrays laid
        out like the parameters, and a callable is called with parameter States.

        Returns:
            The updates optax computed, a State of arrays with the parameters' paths.
        """
        import optax

        if len(args) == 2:
            model, grads = args
            if not isinstance(model, Object):
                raise TransformError(
                    f"Optimizer.update(model, grads): the first argument is a {type(model).__name__}, not a "
                    "module. Pass the model first: optimizer.update(model, grads)."
                )
        elif len(args) == 1:
            model, grads = self.model, args[0]
        else:
            raise TransformError(
                f"Optimizer.update takes (model, grads) or (grads), got {len(args)} positional arguments."
            )
        params = state(model, self.wrt)
        flat = params.flat_state()
        pure_params = State.from_flat_state([(p, v._value) for p, v in flat])
        pure_grads = self._aligned(grads, flat, "grads")
        extra = {k: self._extra_argument(k, v, flat) for k, v in kwargs.items()}
        opt_state = _pure(self.opt_state)
        updates, new_opt_state = self.tx.update(pure_grads, opt_state, pure_params, **extra)
        new_params = optax.apply_updates(pure_params, updates)
        for (_, var), value in zip(flat, jax.tree.leaves(new_params)):
            var._value = value  # the State's own copies; `update` then writes them by position
        update(model, params)
        self._write_opt_state(opt_state, new_opt_state)
        self.step.value = self.step.value + 1
        return updates

    def _aligned(self, tree: Any, flat: list, what: str) -> State:
        """``tree``'s values at the parameters' paths, as a State of arrays laid out like them."""
        keep = to_predicate(self.wrt)
        given = [(p, v) for p, v in _flat_entries(tree, what) if not isinstance(v, Variable) or keep(p, v)]
        if len(given) == len(flat) and all(g[0] == f[0] for g, f in zip(given, flat)):
            values = [_value_of(v) for _, v in given]
        else:
            by_path = dict(given)
            missing = [p for p, _ in flat if p not in by_path]
            known = {p for p, _ in flat}
            extra = [p for p, _ in given if p not in known]
            if missing or extra:
                lines = []
                if missing:
                    lines.append(f"  parameters with no entry in {what}: {_paths_text(missing)}")
                if extra:
                    lines.append(f"  entries of {what} that are not parameters: {_paths_text(extra)}")
                raise GraphError(
                    f"Optimizer.update: {what} do not match the parameters (wrt={_filter_text(self.wrt)}) of the model:\n"
                    + "\n".join(lines)
                    + "\nTake the gradients of the model this optimizer updates, with the same filter: "
                    "grads = nnx.grad(loss_fn)(model), then optimizer.update(model, grads)."
                )
            values = [_value_of(by_path[p]) for p, _ in flat]
        wrong = [(p, jnp.shape(g), var.shape) for (p, var), g in zip(flat, values) if jnp.shape(g) != var.shape]
        if wrong:
            shown = "; ".join(f"`{_path_text(p)}` has shape {tuple(g)}, the parameter {tuple(s)}" for p, g, s in wrong[:5])
            raise GraphError(f"Optimizer.update: {what} have the wrong shape: {shown}.")
        return State.from_flat_state([(p, v) for (p, _), v in zip(flat, values)])

    def _extra_argument(self, name: str, value: Any, flat: list) -> Any:
        if isinstance(value, State):
            return self._aligned(value, flat, f"the `{name}` argument")
        if callable(value) and not isinstance(value, (Object, Variable)):
            return _with_param_states(value, flat)
        return _pure(value)

    def _write_opt_state(self, old: Any, new: Any) -> None:
        old_def, new_def = jax.tree.structure(old), jax.tree.structure(new)
        if old_def != new_def:
            raise GraphError(
                "Optimizer.update: the optax state changed structure during the update, so it cannot be "
                f"written back into the optimizer's OptState Variables.\n  before: {old_def}\n  after:  {new_def}\n"
                "Was the optimizer built for a model with other parameters? Build it for this model: "
                "nnx.Optimizer(model, tx, wrt=...)."
            )
        # Both trees list dict entries in sorted key order, so the leaves line up one to one.
        for var, value in zip(jax.tree.leaves(self.opt_state, is_leaf=_is_variable), jax.tree.leaves(new)):
            var.value = value


def _with_param_states(fn: Callable, flat: list) -> Callable:
    """``fn`` called with parameter States (Variables of the parameters' types, the values
    optax passes) wherever optax passes a State laid out like the parameters."""
    paths = [p for p, _ in flat]

    def as_params(x: Any) -> Any:
        if type(x) is not State:
            return x
        entries = x.flat_state()
        if [p for p, _ in entries] != paths:
            return x
        return State.from_flat_state([(p, var.replace(_value_of(v))) for (p, var), (_, v) in zip(flat, entries)])

    def called_with_param_states(*args: Any, **kwargs: Any) -> Any:
        return fn(*[as_params(a) for a in args], **{k: as_params(v) for k, v in kwargs.items()})

    return called_with_param_states


class ModelAndOptimizer(Optimizer):
    """An :class:`Optimizer` that updates the model it was built for: ``update(grads)`` only
    (Flax NNX 0.11-0.12's name for the 0.10 behaviour).

    Example:
        >>> import jax.numpy as jnp, optax, plait as nnx
        >>> model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
        >>> state = nnx.ModelAndOptimizer(model, optax.sgd(0.1))
        >>> _ = state.update(nnx.grad(lambda m: m(jnp.ones((1, 2))).sum())(state.model))
        >>> int(state.step.value)
        1
    """

    def __init__(self, model: Any, tx: Any, *, wrt: Filter = Param) -> None:
        super().__init__(model, tx, wrt=wrt)

    def update(self, grads: Any, /, **kwargs: Any) -> State:  # type: ignore[override]
        """Apply ``grads`` (a State like ``nnx.state(self.model, wrt)``) to ``self.model``."""
        return super().update(self.model, grads, **kwargs)
