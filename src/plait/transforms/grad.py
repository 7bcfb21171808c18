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

from ..encoding import VAR, _Builder, flatten, is_graph_node
from ..errors import TransformError
from ..filters import to_predicate
from ..mode import check_graph_mode
from ..state import State
from ..variables import Param, Variable
from .axes import DiffState
from .lift import Call, Store, check_callable

__all__ = ["grad", "value_and_grad", "vjp", "jvp"]

_MISSING = object()


def grad(
    f: Callable = _MISSING,  # type: ignore[assignment]
    argnums: int | DiffState | tuple[int | DiffState, ...] = 0,
    *,
    has_aux: bool = False,
    holomorphic: bool = False,
    allow_int: bool = False,
    graph: bool | None = None,
    graph_updates: bool | None = None,
) -> Callable:
    """The gradient of ``f`` with respect to ``argnums`` (a module's Params by default).

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
        >>> grads = nnx.grad(lambda m, x: m(x).sum())(model, jnp.ones((3, 2)))
        >>> grads.kernel.value.tolist(), type(grads).__name__
        ([[3.0], [3.0]], 'State')
    """
    check_graph_mode("nnx.grad", graph, graph_updates)
    return _make(f, argnums, has_aux, holomorphic, allow_int, with_value=False)


def value_and_grad(
    f: Callable = _MISSING,  # type: ignore[assignment]
    argnums: int | DiffState | tuple[int | DiffState, ...] = 0,
    *,
    has_aux: bool = False,
    holomorphic: bool = False,
    allow_int: bool = False,
    graph: bool | None = None,
    graph_updates: bool | None = None,
) -> Callable:
    """Like :func:`grad`, returning ``(value, grads)`` (``((value, aux), grads)`` with ``has_aux``).

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
        >>> loss, grads = nnx.value_and_grad(lambda m: (m(jnp.ones(2)) ** 2).sum())(model)
        >>> grads.bias.value.shape
        (1,)
    """
    check_graph_mode("nnx.value_and_grad", graph, graph_updates)
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
    call = Call(f, transform, args, kwargs, scalars=True)  # a Python int is data: refused unless allow_int
    specs = _diff_specs(argnums, call.args, transform)
    diff_of = _choose(call, specs)
    diff = [k for chosen in diff_of for k in chosen]
    if not allow_int:
        _check_differentiable(call, diff, transform)
    facts = Store()
    pure = _pure(call, diff, has_aux, transform, facts)
    (value, (emitted, _)), grads = jax.value_and_grad(
        pure, has_aux=True, holomorphic=holomorphic, allow_int=allow_int
    )([call.leaves[k] for k in diff])
    aux = _write_back(call, facts, emitted)
    grad_of = dict(zip(diff, grads))
    results = [_arg_grads(call, argnum, chosen, grad_of) for (argnum, _), chosen in zip(specs, diff_of)]
    out = results[0] if not isinstance(argnums, (tuple, list)) else tuple(results)
    if with_value:
        return ((value, aux), out) if has_aux else (value, out)
    return (out, aux) if has_aux else out


def _check_differentiable(call: Call, diff: list[int], transform: str) -> None:
    for k in diff:
        dtype = jax.numpy.result_type(call.leaves[k])
        if not jax.numpy.issubdtype(dtype, jax.numpy.inexact):
            raise TransformError(
                f"{transform}: cannot differentiate with respect to {call.describe_leaf(k)}: its dtype is {dtype}, "
                "and gradients need floating-point (or complex) values.\n"
                "Leave it out with a filter, e.g. argnums=nnx.DiffState(0, nnx.Param), or pass allow_int=True "
                "to get float0 zeros for it."
            )


def _choose(call: Call, specs: list[tuple[int, Any]]) -> list[list[int]]:
    """For each (argnum, predicate): the leaf indices to differentiate (each leaf once)."""
    gd = call.graphdef
    diff_of: list[list[int]] = []
    taken: set[int] = set()
    for argnum, predicate in specs:
        chosen = []
        for k, path in enumerate(gd.leaf_paths):
            if path[0] != argnum or k in taken:
                continue
            if _takes(call, predicate, k, path):
                chosen.append(k)
                taken.add(k)
        diff_of.append(chosen)
    _check_aliases(call, specs, diff_of)
    return diff_of


def _takes(call: Call, predicate: Any, k: int, path: tuple) -> bool:
    slot = call.flat.slots[k]
    value = slot if slot is not None else call.leaves[k]
    if predicate is None:
        return _default_diff(slot is not None, call.graphdef.leaf_owners[k] is not None, value)
    return bool(predicate(path[1:], value))


def _check_aliases(call: Call, specs: list[tuple[int, Any]], diff_of: list[list[int]]) -> None:
    """A Variable first reached through an argument that is not differentiated, and again through
    one that is, would silently get no gradient (its first path decides): refused, naming both.
    (Differentiated first and reached again through another argument is fine: the gradient,
    through every use, is reported under the differentiated argument.)"""
    gd = call.graphdef
    if not gd.aliases():
        return
    chosen = {k for ks in diff_of for k in ks}
    by_arg = dict(specs)
    for k, path in gd.aliases():
        first = gd.leaf_paths[k]
        if path[0] == first[0]:
            continue
        again = path[0] in by_arg and _takes(call, by_arg[path[0]], k, path)
        if again and k not in chosen:
            yes, no = path, first
            raise TransformError(
                f"{call.transform}: {call.describe_leaf(k)} is differentiated as `{call.path_text(yes)}` but not as "
                f"`{call.path_text(no)}`: the same Variable is passed through two arguments whose argnums disagree.\n"
                "Pass the shared module once, or also differentiate the argument it is reached through first, "
                f"e.g. argnums=({first[0]}, {path[0]})."
            )



def _pure(call: Call, diff: list[int], has_aux: bool, transform: str, facts: Store) -> Any:
    """The function of the differentiated leaves: ``-> (output, (written state, aux))``."""

    def pure(diff_values: list) -> tuple:
        leaves = list(call.leaves)
        for k, v in zip(diff, diff_values):
            leaves[k] = v

        def split_aux(result: Any) -> Any:
            if not has_aux:
                return None
            if not (isinstance(result, tuple) and len(result) == 2):
                what = "(loss, aux)" if "grad" in transform else "(output, aux)"
                raise TransformError(f"{transform}(has_aux=True): the function must return {what}")
            return result[1]

        result, col, flat2 = call.run(leaves, select=split_aux)
        output = result[0] if has_aux else result
        emit = [k2 for k2 in range(col.graphdef.num_leaves) if col.changed[k2]]
        facts.put((col, emit))
        return output, ([flat2.leaves[k2] for k2 in emit], None)

    return pure


def _write_back(call: Call, facts: Store, emitted: list) -> Any:
    col, emit = facts.get()
    return call.finish(col, emit, emitted)


def vjp(f: Callable, *primals: Any, has_aux: bool = False, graph: bool | None = None,
        graph_updates: bool | None = None) -> tuple:
    """``(output, vjp_fn)`` (``(output, vjp_fn, aux)`` with ``has_aux``), modules allowed.

    ``vjp_fn(cotangent)`` returns one gradient per primal: a State of the Params for a
    module, the same pytree for plain data. State the function writes is written back.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
        >>> y, vjp_fn = nnx.vjp(lambda m, x: m(x), model, jnp.ones((1, 2)))
        >>> g_model, g_x = vjp_fn(jnp.ones((1, 1)))
        >>> g_model.kernel.value.tolist(), g_x.shape
        ([[1.0], [1.0]], (1, 2))
    """
    check_graph_mode("nnx.vjp", graph, graph_updates)
    check_callable(f, "vjp")
    call = Call(f, "vjp", primals, {})
    specs = [(i, None) for i in range(len(primals))]
    diff_of = _choose(call, specs)
    diff = [k for chosen in diff_of for k in chosen]
    facts = Store()
    out, raw_vjp, (emitted, _) = jax.vjp(_pure(call, diff, has_aux, "vjp", facts), [call.leaves[k] for k in diff],
                                        has_aux=True)
    aux = _write_back(call, facts, emitted)

    def vjp_fn(cotangent: Any) -> tuple:
        (grads,) = raw_vjp(cotangent)
        grad_of = dict(zip(diff, grads))
        return tuple(_arg_grads(call, i, chosen, grad_of) for (i, _), chosen in zip(specs, diff_of))

    return (out, vjp_fn, aux) if has_aux else (out, vjp_fn)


def jvp(f: Callable, primals: tuple, tangents: tuple, *, has_aux: bool = False, graph: bool | None = None,
        graph_updates: bool | None = None) -> tuple:
    """``(output, output_tangent)`` (and ``aux``), modules allowed among the primals.

    A module's tangent is a State with the paths of its Params (missing paths count as
    zero); plain data's tangent has the primal's structure.

    Example:
        >>> import jax, jax.numpy as jnp, plait as nnx
        >>> model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
        >>> t_model = jax.tree.map(jnp.zeros_like, nnx.state(model, nnx.Param))
        >>> y, t = nnx.jvp(lambda m, x: m(x), (model, jnp.ones((1, 2))), (t_model, jnp.ones((1, 2))))
        >>> bool(jnp.allclose(t, model.kernel.value.sum()))
        True
    """
    check_graph_mode("nnx.jvp", graph, graph_updates)
    check_callable(f, "jvp")
    primals, tangents = tuple(primals), tuple(tangents)
    if len(primals) != len(tangents):
        raise TransformError(f"jvp: {len(primals)} primals but {len(tangents)} tangents; give one tangent per primal")
    call = Call(f, "jvp", primals, {})
    specs = [(i, None) for i in range(len(primals))]
    diff_of = _choose(call, specs)
    diff = [k for chosen in diff_of for k in chosen]
    tangent_values = []
    for (i, _), chosen in zip(specs, diff_of):
        tangent_values.extend(_tangent_leaves(call, i, chosen, tangents[i]))
    facts = Store()
    out, out_tangent, (emitted, _) = jax.jvp(
        _pure(call, diff, has_aux, "jvp", facts), ([call.leaves[k] for k in diff],), (tangent_values,), has_aux=True
    )
    aux = _write_back(call, facts, emitted)
    return (out, out_tangent, aux) if has_aux else (out, out_tangent)


def _tangent_leaves(call: Call, argnum: int, chosen: list[int], tangent: Any) -> list:
    gd = call.graphdef
    if is_graph_node(call.args[argnum]) or isinstance(tangent, State):
        given = dict(State(tangent).flat_state()) if not isinstance(tangent, State) else dict(tangent.flat_state())
        out = []
        for k in chosen:
            t = given.get(gd.leaf_paths[k][1:])
            t = t._value if isinstance(t, Variable) else t
            out.append(jax.numpy.zeros_like(call.leaves[k]) if t is None else t)
        return out
    t_flat, t_leaves = flatten((tangent,))
    primal_leaves = [k for k in range(gd.num_leaves) if gd.leaf_paths[k][0] == argnum]
    if len(t_leaves) != len(primal_leaves):
        raise TransformError(f"jvp: the tangent for primal {argnum} does not have the primal's structure")
    by_leaf = dict(zip(primal_leaves, t_leaves))
    return [by_leaf[k] for k in chosen]


def _arg_grads(call: Call, argnum: int, chosen: list[int], grad_of: dict) -> Any:
    """Gradients for one argument: a State for a module, the same pytree for plain data, and
    for a container holding modules the container with a State in place of each module."""
    gd = call.graphdef
    arg = call.args[argnum]
    if isinstance(arg, Variable):  # a bare Variable: its gradient, as that kind of Variable
        k = gd.nodes[gd.roots[argnum]].leaf
        return arg.replace(grad_of[k]) if k in grad_of else State({})
    if is_graph_node(arg):
        return _state_of(call, chosen, grad_of, (argnum,))
    leaves = [grad_of.get(k) for k in range(gd.num_leaves)]
    objs: list = []
    for i, nd in enumerate(gd.nodes):
        if nd.kind == VAR:  # a Variable held by the container itself: its gradient, as that Variable (or None)
            objs.append(call.flat.slots[nd.leaf].replace(grad_of[nd.leaf]) if nd.leaf in grad_of else None)
        else:
            objs.append(_state_of(call, chosen, grad_of, call.flat.node_paths[i]))
    return _Builder(objs, leaves).build(gd.roots[argnum])


def _state_of(call: Call, chosen: list[int], grad_of: dict, prefix: tuple) -> State:
    """The gradients of the chosen leaves under ``prefix``, as a State with paths below it."""
    gd, n = call.graphdef, len(prefix)
    entries = []
    for k in chosen:
        path = gd.leaf_paths[k]
        if path[:n] == prefix:
            slot = call.flat.slots[k]
            entries.append((path[n:], slot.replace(grad_of[k]) if slot is not None else grad_of[k]))
    return State.from_flat_state(entries)
