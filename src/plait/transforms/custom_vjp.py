"""``custom_vjp``: a function of modules with a hand-written backward pass.

As in the reference, ``fwd(*args) -> (output, residuals)`` and
``bwd(*nondiff_args, residuals, g) -> cotangents`` where ``g = (input_updates_g, out_g)``:
``out_g`` is the output's cotangent and ``input_updates_g`` has one entry per differentiable
argument, a :class:`~plait.State` of the cotangents of its updated state for an argument that
holds modules, ``None`` for plain data. A module argument's cotangent is a State with the
paths of the Variables it differentiates (``nnx.state(module, nnx.Param)`` shaped); missing
paths and non-float state count as zero.

State the function (or ``fwd``) writes is written back: the updated state leaves the JAX
``custom_vjp`` as extra outputs. Residuals may hold modules: they are flattened like every
value that crosses a transform and rebuilt for ``bwd``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax

from ..encoding import flatten, is_graph_node, unflatten
from ..errors import TransformError
from ..mode import check_graph_mode
from ..state import State
from ..variables import Variable
from .lift import Call, Store, check_callable

__all__ = ["custom_vjp"]


class custom_vjp:  # noqa: N801 - named like jax.custom_vjp
    """Define a function's VJP by hand; modules may be among its arguments.

    Example:
        >>> import jax, jax.numpy as jnp, plait as nnx
        >>> class Foo(nnx.Module):
        ...     def __init__(self, x, y):
        ...         self.x, self.y = nnx.Param(x), nnx.Param(y)
        >>> @nnx.custom_vjp
        ... def f(m):
        ...     return jnp.sin(m.x.value) * m.y.value
        >>> def f_fwd(m):
        ...     return f(m), (jnp.cos(m.x.value), jnp.sin(m.x.value), m)
        >>> def f_bwd(res, g):
        ...     input_updates_g, out_g = g
        ...     cos_x, sin_x, m = res
        ...     return (nnx.State({"x": cos_x * out_g * m.y.value, "y": sin_x * out_g}),)
        >>> f.defvjp(f_fwd, f_bwd)
        >>> grads = nnx.grad(f)(Foo(jnp.array(0.0), jnp.array(2.0)))
        >>> float(grads.x.value), float(grads.y.value)
        (2.0, 0.0)
    """

    def __new__(cls, fun: Callable | None = None, nondiff_argnums: Sequence[int] = (), graph: bool | None = None,
                graph_updates: bool | None = None) -> Any:
        check_graph_mode("nnx.custom_vjp", graph, graph_updates)
        if fun is None:  # @nnx.custom_vjp(nondiff_argnums=(1,))
            return functools.partial(cls, nondiff_argnums=nondiff_argnums)
        return super().__new__(cls)

    def __init__(self, fun: Callable, nondiff_argnums: Sequence[int] = (), graph: bool | None = None,
                 graph_updates: bool | None = None) -> None:
        check_callable(fun, "custom_vjp")
        for i in nondiff_argnums:
            if type(i) is not int:
                raise TransformError(
                    f"custom_vjp: nondiff_argnums entries must be ints, got {i!r}. plait differentiates a module "
                    "argument with respect to all its float state; to leave part of it out, return None (zero) "
                    "for those paths from bwd."
                )
        self.fun = fun
        self.nondiff_argnums = tuple(nondiff_argnums)
        self.fwd: Callable | None = None
        self.bwd: Callable | None = None
        functools.update_wrapper(self, fun)

    def defvjp(self, fwd: Callable, bwd: Callable) -> None:
        self.fwd, self.bwd = fwd, bwd

    def __call__(self, *args: Any) -> Any:
        if self.fwd is None or self.bwd is None:
            raise TransformError(f"custom_vjp: call {self.fun.__name__}.defvjp(fwd, bwd) before calling it")
        nondiff = {i % len(args): args[i] for i in self.nondiff_argnums}
        diff_pos = [i for i in range(len(args)) if i not in nondiff]
        call = Call(self.fun, "custom_vjp", tuple(args[i] for i in diff_pos), {}, bind=False)
        gd = call.graphdef
        state = [k for k in range(gd.num_leaves) if call.is_state(k)]  # comes out updated
        facts, residual_def = Store(), Store()

        def run(leaves: list, fun: Callable, returns_residuals: bool) -> tuple:
            def target(*diff_args: Any) -> Any:
                full = list(args)
                for i, a in zip(diff_pos, diff_args):
                    full[i] = a
                return fun(*full)

            result, col, flat2 = call.run(list(leaves), target=target,
                                          select=(lambda r: r[0]) if returns_residuals else None)
            if not col.same:
                raise TransformError(
                    f"custom_vjp: {getattr(fun, '__name__', 'the function')} changed the structure of a module "
                    "argument (added, removed or replaced an attribute or Variable); only values can change. "
                    "Create attributes before calling it."
                )
            facts.put(col)
            return result, [flat2.leaves[k] for k in state]

        @jax.custom_vjp
        def primal(leaves: list) -> Any:
            out, updates = run(leaves, self.fun, False)
            return out, updates

        def fwd(leaves: list) -> tuple:
            (out, residuals), updates = run(leaves, self.fwd, True)
            res_flat, res_leaves = flatten((residuals,))
            residual_def.put(res_flat.graphdef)
            return (out, updates), res_leaves

        def bwd(res_leaves: list, g: tuple) -> tuple:
            out_g, updates_g = g
            (residuals,), _ = unflatten(residual_def.get(), list(res_leaves))
            input_updates_g = _updates_by_argument(call, state, updates_g)
            cotangents = self.bwd(*[nondiff[i] for i in sorted(nondiff)], residuals, (input_updates_g, out_g))
            if not isinstance(cotangents, tuple) or len(cotangents) != len(diff_pos):
                raise TransformError(
                    f"custom_vjp: bwd must return a tuple with one cotangent per differentiable argument "
                    f"({len(diff_pos)}), got {type(cotangents).__name__}"
                )
            per_leaf: list = [None] * gd.num_leaves
            for root, ct in enumerate(cotangents):
                _fill(call, root, ct, per_leaf)
            return (per_leaf,)

        primal.defvjp(fwd, bwd)
        out, updates = primal(call.leaves)
        call.finish(facts.get(), state, updates)
        return out


def _updates_by_argument(call: Call, state: list[int], updates_g: list) -> tuple:
    """``input_updates_g``: per argument, a State of its updated state's cotangents, or None
    for an argument without state."""
    gd = call.graphdef
    by_root: list[list] = [[] for _ in range(call.n_args)]
    for k, g in zip(state, updates_g):
        slot = call.flat.slots[k]
        by_root[gd.leaf_paths[k][0]].append((gd.leaf_paths[k][1:], slot.replace(g) if slot is not None else g))
    return tuple(State.from_flat_state(entries) if entries else None for entries in by_root)


def _fill(call: Call, root: int, cotangent: Any, per_leaf: list) -> None:
    gd = call.graphdef
    leaves = [k for k, p in enumerate(gd.leaf_paths) if p[0] == root]
    if cotangent is None:
        return
    if is_graph_node(call.args[root]) or isinstance(cotangent, State):
        given = dict((cotangent if isinstance(cotangent, State) else State(cotangent)).flat_state())
        for k in leaves:
            ct = given.get(gd.leaf_paths[k][1:])
            per_leaf[k] = ct._value if isinstance(ct, Variable) else ct
        return
    ct_leaves = flatten((cotangent,))[1]
    if len(ct_leaves) != len(leaves):
        raise TransformError(f"custom_vjp: the cotangent for argument {root} does not have the argument's structure")
    for k, ct in zip(leaves, ct_leaves):
        per_leaf[k] = ct
