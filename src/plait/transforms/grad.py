"""``grad`` and ``value_and_grad`` for functions of modules.

A module argument is differentiated with respect to its ``Param`` Variables by default
(``DiffState(argnum, filter)`` chooses other state); its gradient comes back as a
:class:`~plait.State` with the same paths. A plain array or pytree argument is
differentiated whole, as in ``jax.grad``. Other state the function writes (batch
statistics, RNG counts) is written back to the caller's objects.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax

from ..errors import TransformError
from ..filters import to_predicate
from ..graph import _Builder, is_graph_node
from ..state import State
from ..variables import Param
from .axes import DiffState
from .lift import Call, check_callable

__all__ = ["grad", "value_and_grad"]

_MISSING = object()


def grad(
    f: Callable = _MISSING,  # type: ignore[assignment]
    argnums: int | DiffState | tuple[int | DiffState, ...] = 0,
    *,
    has_aux: bool = False,
    holomorphic: bool = False,
    allow_int: bool = False,
) -> Callable:
    """The gradient of ``f`` with respect to ``argnums`` (a module's Params by default).

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
        >>> grads = nnx.grad(lambda m, x: m(x).sum())(model, jnp.ones((3, 2)))
        >>> grads.kernel.value.tolist(), type(grads).__name__
        ([[3.0], [3.0]], 'State')
    """
    return _make(f, argnums, has_aux, holomorphic, allow_int, with_value=False)


def value_and_grad(
    f: Callable = _MISSING,  # type: ignore[assignment]
    argnums: int | DiffState | tuple[int | DiffState, ...] = 0,
    *,
    has_aux: bool = False,
    holomorphic: bool = False,
    allow_int: bool = False,
) -> Callable:
    """Like :func:`grad`, returning ``(value, grads)`` (``((value, aux), grads)`` with ``has_aux``).

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
        >>> loss, grads = nnx.value_and_grad(lambda m: (m(jnp.ones(2)) ** 2).sum())(model)
        >>> grads.bias.value.shape
        (1,)
    """
    return _make(f, argnums, has_aux, holomorphic, allow_int, with_value=True)


def _make(f, argnums, has_aux, holomorphic, allow_int, with_value):
    if f is _MISSING:
        return functools.partial(_make, argnums=argnums, has_aux=has_aux, holomorphic=holomorphic,
                                 allow_int=allow_int, with_value=with_value)
    check_callable(f, "value_and_grad" if with_value else "grad")

    @functools.wraps(f)
    def differentiated(*args: Any, **kwargs: Any) -> Any:
        return _grad_call(f, args, kwargs, argnums, has_aux, holomorphic, allow_int, with_value)

    return differentiated


def _diff_specs(argnums: Any, args: tuple, transform: str) -> list[tuple[int, Any]]:
    items = argnums if isinstance(argnums, (tuple, list)) else (argnums,)
    specs = []
    for item in items:
        if isinstance(item, DiffState):
            argnum, filter = item.argnum, item.filter
        elif type(item) is int:
            argnum, filter = item, None
        else:
            raise TransformError(f"{transform}: argnums entries must be ints or nnx.DiffState, got {item!r}")
        if not -len(args) <= argnum < len(args):
            raise TransformError(
                f"{transform}: argnums refers to argument {argnum}, but the function was called with "
                f"{len(args)} positional argument(s)"
            )
        argnum %= len(args)
        specs.append((argnum, None if filter is None else to_predicate(filter)))
    return specs


def _default_diff(is_variable: bool, owned: bool, value: Any) -> bool:
    """Without a filter: a module's Params, and the arrays of plain data (not those inside modules)."""
    return isinstance(value, Param) if is_variable else not owned


def _grad_call(f, args, kwargs, argnums, has_aux, holomorphic, allow_int, with_value):
    transform = "value_and_grad" if with_value else "grad"
    call = Call(f, transform, args, kwargs)
    gd = call.graphdef
    specs = _diff_specs(argnums, args, transform)
    diff_of: list[list[int]] = []
    taken: set[int] = set()
    for argnum, predicate in specs:
        chosen = []
        for k, path in enumerate(gd.leaf_paths):
            if path[0] != argnum or k in taken:
                continue
            slot = call.flat.slots[k]
            value = slot if slot is not None else call.leaves[k]
            if predicate is None:
                take = _default_diff(slot is not None, gd.leaf_owners[k] is not None, value)
            else:
                take = predicate(path[1:], value)
            if take:
                chosen.append(k)
                taken.add(k)
        diff_of.append(chosen)
    diff = [k for chosen in diff_of for k in chosen]
    static: dict = {}

    def pure(diff_values: list) -> tuple:
        leaves = list(call.leaves)
        for k, v in zip(diff, diff_values):
            leaves[k] = v

        def split_aux(result: Any) -> Any:
            if not has_aux:
                return None
            if not (isinstance(result, tuple) and len(result) == 2):
                raise TransformError(f"{transform}(has_aux=True): the function must return (loss, aux)")
            return result[1]

        result, col, flat2 = call.run(leaves, select=split_aux)
        loss = result[0] if has_aux else result
        emit = [k2 for k2 in range(col.graphdef.num_leaves) if col.changed[k2]]
        static["col"], static["emit"] = col, emit
        return loss, [flat2.leaves[k2] for k2 in emit]

    (value, emitted), grads = jax.value_and_grad(pure, has_aux=True, holomorphic=holomorphic, allow_int=allow_int)(
        [call.leaves[k] for k in diff]
    )
    col = static["col"]
    full: list = [None] * col.graphdef.num_leaves
    for k2, i in enumerate(col.input_leaf):
        if i >= 0:
            full[k2] = call.leaves[i]
    for k2, v in zip(static["emit"], emitted):
        full[k2] = v
    aux = call.write_back(col, full)

    grad_of = dict(zip(diff, grads))
    results = []
    for (argnum, _), chosen in zip(specs, diff_of):
        results.append(_arg_grads(call, argnum, chosen, grad_of))
    out = results[0] if not isinstance(argnums, (tuple, list)) else tuple(results)
    if with_value:
        return ((value, aux), out) if has_aux else (value, out)
    return (out, aux) if has_aux else out


def _arg_grads(call: Call, argnum: int, chosen: list[int], grad_of: dict) -> Any:
    """Gradients for one argument: a State for a module, the same pytree for plain data."""
    gd = call.graphdef
    if is_graph_node(call.args[argnum]) or any(gd.leaf_nodes[k] >= 0 for k in chosen):
        entries = []
        for k in chosen:
            slot = call.flat.slots[k]
            g = grad_of[k]
            entries.append((gd.leaf_paths[k][1:], slot.replace(g) if slot is not None else g))
        return State.from_flat_state(entries)
    leaves = [grad_of.get(k) for k in range(gd.num_leaves)]
    return _Builder([], leaves).build(gd.roots[argnum])
