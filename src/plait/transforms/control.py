"""Control flow over modules: ``cond``, ``switch``, ``while_loop``, ``fori_loop``.

``cond``/``switch`` run one branch; each branch gets the operands (modules included) and
whatever a branch writes is written back. All branches must leave the same structure (the
same Variables, shapes and dtypes), because only one of them runs.

``while_loop``/``fori_loop`` carry their value, modules included, from one iteration to the
next; the final state is written back. An iteration must keep the structure, shapes and
dtypes of the value.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax

from ..encoding import flatten, unflatten
from ..errors import StateError, TransformError
from ..mode import check_graph_mode
from .lift import Call, Store, arg_names, check_callable
from .refs import first_difference

__all__ = ["cond", "switch", "while_loop", "fori_loop"]


def _branches(call: Call, branches: Sequence[Callable], transform: str) -> tuple[list, list[Store]]:
    """One traced function per branch; each branch's facts (its output structure, and the
    shape and dtype of every leaf it leaves) in a Store of its own."""
    facts = [Store() for _ in branches]

    def make(i: int, fun: Callable) -> Callable:
        def branch(leaves: list) -> list:
            _, col, flat2 = call.run(list(leaves), target=fun)
            facts[i].put((col, [(jax.numpy.shape(v), jax.numpy.result_type(v)) for v in flat2.leaves]))
            return flat2.leaves

        return branch

    for fun in branches:
        check_callable(fun, transform)
    return [make(i, fun) for i, fun in enumerate(branches)], facts


def _same_structure(call: Call, facts: list[Store], transform: str) -> Any:
    first = facts[0].get()[0]
    for i, branch in enumerate(facts[1:], start=1):
        if branch.filled and branch.get()[0].graphdef != first.graphdef:
            raise TransformError(
                f"{transform}: branch {i} leaves a different structure than branch 0 (a Variable or "
                "attribute added, removed, or of another type, or a different output structure). "
                "Only one branch runs, so every branch must return and leave the same structure."
            )
    return first


def cond(pred: Any, true_fun: Callable, false_fun: Callable, *operands: Any, graph: bool | None = None,
         graph_updates: bool | None = None) -> Any:
    """``true_fun(*operands)`` if ``pred`` else ``false_fun(*operands)``, modules allowed.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> counter = nnx.Variable(jnp.zeros(()))
        >>> def bump(v): v.value = v.value + 1
        >>> nnx.cond(True, bump, lambda v: None, counter); float(counter.value)
        1.0
    """
    check_graph_mode("nnx.cond", graph, graph_updates)
    return switch(jax.numpy.where(pred, 1, 0), (false_fun, true_fun), *operands, transform="cond")


def switch(index: Any, branches: Sequence[Callable], *operands: Any, transform: str = "switch",
           graph: bool | None = None, graph_updates: bool | None = None) -> Any:
    """``branches[index](*operands)``, modules allowed; the index is clamped like ``lax.switch``.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> v = nnx.Variable(jnp.ones(()))
        >>> def double(v): v.value = v.value * 2
        >>> def negate(v): v.value = -v.value
        >>> nnx.switch(1, [double, negate], v); float(v.value)
        -1.0
    """
    check_graph_mode(f"nnx.{transform}", graph, graph_updates)
    call = Call(branches[0], transform, operands, {})
    fns, facts = _branches(call, list(branches), transform)
    try:
        leaves = jax.lax.switch(index, fns, call.leaves)
    except TypeError as e:
        n = len(fns)
        if all(f.filled for f in facts):
            col = _same_structure(call, facts, transform)
            for i in range(1, n):
                for k, (a, b) in enumerate(zip(facts[0].get()[1], facts[i].get()[1])):
                    if a != b:
                        path = col.graphdef.leaf_paths[k]
                        where = (f"`{call.path_text(path)}`" if path[0] < col.n_roots else "the output")
                        raise TransformError(
                            f"{transform}: {where} has shape {a[0]} and dtype {a[1]} after branch 0 but shape "
                            f"{b[0]} and dtype {b[1]} after branch {i}.\nOnly one branch runs, so every branch "
                            "must leave each Variable (and return outputs) with the same shape and dtype."
                        ) from e
        raise TransformError(f"{transform}: the branches return different shapes or dtypes: {e}") from e
    col = _same_structure(call, facts, transform)
    return call.write_back(col, leaves)


def _loop_value(call: Call, transform: str) -> Any:
    """The loop's value as one root; the iteration must keep its structure."""

    def step(leaves: list, fun: Callable, prefix: tuple) -> list:
        roots, _ = unflatten(call.graphdef, list(leaves))
        out = fun(*prefix, roots[0])
        flat2, leaves2 = flatten((out,), scalars=True)
        if flat2.graphdef != call.graphdef:
            where = first_difference(call.graphdef.roots[0], call.graphdef, flat2.graphdef.roots[0], flat2.graphdef,
                                     call.path_text((0,)))
            raise TransformError(
                f"{transform}: the loop body returned a value of a different structure than it was given: {where}.\n"
                "Return the same structure (same modules, Variables, and containers) every iteration."
            )
        for k, (a, b) in enumerate(zip(leaves, leaves2)):
            if jax.numpy.shape(a) != jax.numpy.shape(b) or jax.numpy.result_type(a) != jax.numpy.result_type(b):
                raise TransformError(
                    f"{transform}: `{call.path_text(call.graphdef.leaf_paths[k])}` went into an iteration with "
                    f"shape {tuple(jax.numpy.shape(a))} and dtype {jax.numpy.result_type(a)} and came out with "
                    f"shape {tuple(jax.numpy.shape(b))} and dtype {jax.numpy.result_type(b)}; a loop value keeps its type."
                )
        return leaves2

    return step


def while_loop(cond_fun: Callable, body_fun: Callable, init_val: Any, *, graph: bool | None = None,
               graph_updates: bool | None = None) -> Any:
    """``while cond_fun(val): val = body_fun(val)``; ``val`` may hold modules, updated in place.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> v = nnx.Variable(jnp.ones(()))
        >>> def double(v):
        ...     v.value = v.value * 2
        ...     return v
        >>> out = nnx.while_loop(lambda v: v.value < 10, double, v)
        >>> out is v, float(v.value)
        (True, 16.0)
    """
    check_graph_mode("nnx.while_loop", graph, graph_updates)
    check_callable(cond_fun, "while_loop")
    check_callable(body_fun, "while_loop")
    call = Call(body_fun, "while_loop", (init_val,), {}, scalars=True)
    step = _loop_value(call, "while_loop")

    def cond_leaves(leaves: list) -> Any:
        roots, _ = unflatten(call.graphdef, list(leaves))
        before = flatten(roots, scalars=True)[1]
        result = cond_fun(roots[0])
        after = flatten(roots, scalars=True)[1]
        if any(a is not b for a, b in zip(before, after)):
            raise StateError("while_loop: cond_fun wrote state; the condition must only read it")
        return result

    final = jax.lax.while_loop(cond_leaves, lambda leaves: step(leaves, body_fun, ()), call.leaves)
    return _finish(call, final)


def fori_loop(lower: int, upper: int, body_fun: Callable, init_val: Any, *, unroll: int | bool | None = None,
              graph: bool | None = None, graph_updates: bool | None = None) -> Any:
    """``for i in range(lower, upper): val = body_fun(i, val)``; ``val`` may hold modules.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> v = nnx.Variable(jnp.zeros(()))
        >>> def add(i, v):
        ...     v.value = v.value + i
        ...     return v
        >>> _ = nnx.fori_loop(0, 4, add, v); float(v.value)
        6.0
    """
    check_graph_mode("nnx.fori_loop", graph, graph_updates)
    check_callable(body_fun, "fori_loop")
    call = Call(body_fun, "fori_loop", (init_val,), {}, names=arg_names(body_fun)[1:], scalars=True)
    step = _loop_value(call, "fori_loop")
    kwargs = {} if unroll is None else {"unroll": unroll}
    final = jax.lax.fori_loop(lower, upper, lambda i, leaves: step(leaves, body_fun, (i,)), call.leaves, **kwargs)
    return _finish(call, final)


def _finish(call: Call, leaves: list) -> Any:
    roots, _ = unflatten(call.graphdef, list(leaves), call.flat.objs)
    return roots[0]
