"""``custom_vjp``: a function of modules with a hand-written backward pass.

``fwd(*args) -> (output, residuals)`` and ``bwd(*nondiff_args, residuals, g) -> cotangents``
as in JAX, where a module argument's cotangent is a :class:`~plait.State` with the paths of
the Variables it differentiates (``nnx.state(module, nnx.Param)`` shaped); missing paths
and non-float state count as zero. The function must not write state (it would have no
backward rule); that is refused with an error.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax

from ..errors import StateError, TransformError
from ..graph import flatten, is_graph_node, unflatten
from ..state import State
from ..variables import Variable
from .lift import Call, check_callable

__all__ = ["custom_vjp"]


class custom_vjp:  # noqa: N801 - named like jax.custom_vjp
    """Define a function's VJP by hand; modules may be among its arguments.

    Example:
        >>> import jax, jax.numpy as jnp, plait as nnx
        >>> @nnx.custom_vjp
        ... def scale(m, x):
        ...     return m.kernel.value.sum() * x
        >>> def fwd(m, x):
        ...     return scale(m, x), (m.kernel.value, x)
        >>> def bwd(res, g):
        ...     kernel, x = res
        ...     return nnx.State({"kernel": jnp.full_like(kernel, (g * x).sum() * 10)}), g * kernel.sum()
        >>> scale.defvjp(fwd, bwd)
        >>> model = nnx.Linear(2, 2, use_bias=False, rngs=nnx.Rngs(0))
        >>> grads = nnx.grad(lambda m: scale(m, jnp.ones(())))(model)
        >>> grads.kernel.value.tolist()
        [[10.0, 10.0], [10.0, 10.0]]
    """

    def __new__(cls, fun: Callable | None = None, nondiff_argnums: Sequence[int] = ()) -> Any:
        if fun is None:  # @nnx.custom_vjp(nondiff_argnums=(1,))
            return functools.partial(cls, nondiff_argnums=nondiff_argnums)
        return super().__new__(cls)

    def __init__(self, fun: Callable, nondiff_argnums: Sequence[int] = ()) -> None:
        check_callable(fun, "custom_vjp")
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
        call = Call(self.fun, "custom_vjp", tuple(args[i] for i in diff_pos), {})
        gd = call.graphdef

        def rebuild(leaves: list) -> tuple[list, tuple]:
            roots, _ = unflatten(gd, list(leaves))
            full = list(args)
            for i, r in zip(diff_pos, roots):
                full[i] = r
            return full, roots

        def refuse_writes(roots: tuple, leaves: list, where: str) -> None:
            after = flatten(roots)[1]
            changed = [k for k, (a, b) in enumerate(zip(after, leaves)) if a is not b]
            if len(after) != len(leaves) or changed:
                what = call.describe_leaf(changed[0]) if changed else "the module structure"
                raise StateError(
                    f"custom_vjp: {where} wrote {what}; a custom_vjp function must not write state "
                    "(its writes would have no backward rule). Do the update outside, e.g. in the caller."
                )

        @jax.custom_vjp
        def primal(leaves: list) -> Any:
            full, roots = rebuild(leaves)
            out = self.fun(*full)
            refuse_writes(roots, leaves, self.fun.__name__)
            return out

        def fwd(leaves: list) -> tuple:
            full, roots = rebuild(leaves)
            out, residuals = self.fwd(*full)
            refuse_writes(roots, leaves, "fwd")
            return out, residuals

        def bwd(residuals: Any, g: Any) -> tuple:
            cotangents = self.bwd(*[nondiff[i] for i in sorted(nondiff)], residuals, g)
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
        return primal(call.leaves)


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
