"""The functional side: ``eval_shape``, ``call`` on a ``(graphdef, state)`` pair, ``cached_partial``."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax

from ..encoding import GraphDef, unflatten
from ..graph import merge, split
from ..mode import check_graph_mode
from .jit import jit
from .lift import Call, Store, check_callable

__all__ = ["eval_shape", "call", "cached_partial", "make_jaxpr", "jit_partial"]


def eval_shape(f: Callable, *args: Any, graph: bool | None = None, graph_updates: bool | None = None,
               **kwargs: Any) -> Any:
    """Run ``f`` abstractly: the result has ``jax.ShapeDtypeStruct`` where arrays would be.

    Nothing runs, so nothing is written back; the result (modules included) is new and
    abstract. The usual use is building a model without allocating it.

    Example:
        >>> import plait as nnx
        >>> abstract = nnx.eval_shape(lambda: nnx.Linear(1024, 1024, rngs=nnx.Rngs(0)))
        >>> abstract.kernel.value
        ShapeDtypeStruct(shape=(1024, 1024), dtype=float32)
    """
    check_graph_mode("nnx.eval_shape", graph, graph_updates)
    check_callable(f, "eval_shape")
    lifted = Call(f, "eval_shape", args, kwargs)
    facts = Store()  # the output structure

    def pure(leaves: list) -> list:
        _, col, flat2 = lifted.run(list(leaves))
        facts.put(col)
        return flat2.leaves

    shapes = jax.eval_shape(pure, lifted.leaves)
    roots, _ = unflatten(facts.get().graphdef, shapes)
    return roots[-1]


class _Caller:
    """``call((graphdef, state)).method(*args)`` -> ``(output, (graphdef, new_state))``."""

    def __init__(self, graphdef: GraphDef, state: Any, path: tuple = ()) -> None:
        self._graphdef = graphdef
        self._state = state
        self._path = path

    def __getattr__(self, name: str) -> _Caller:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Caller(self._graphdef, self._state, self._path + (name,))

    def __call__(self, *args: Any, **kwargs: Any) -> tuple[Any, tuple[GraphDef, Any]]:
        node = merge(self._graphdef, self._state)
        target = node
        for name in self._path:
            target = getattr(target, name)
        out = target(*args, **kwargs)
        return out, split(node)


def call(graphdef_state: tuple[GraphDef, Any]) -> Any:
    """Call a module held as ``(graphdef, state)`` purely: returns the output and the new pair.

    The escape hatch for code that wants plain functions, e.g. inside raw ``jax.jit``.

    Example:
        >>> import jax, jax.numpy as jnp, plait as nnx
        >>> pair = nnx.split(nnx.Dropout(0.5, rngs=nnx.Rngs(0)))
        >>> @jax.jit
        ... def forward(pair, x):
        ...     y, pair = nnx.call(pair)(x)
        ...     return y, pair
        >>> y, pair = forward(pair, jnp.ones(4))
        >>> int(pair[1]["rngs"]["default"]["count"].value)
        1
    """
    graphdef, state = graphdef_state
    if not isinstance(graphdef, GraphDef):
        raise TypeError(f"call expects (graphdef, state) as returned by nnx.split, got a {type(graphdef).__name__} first")
    return _Caller(graphdef, state)


def cached_partial(f: Callable, *cached_args: Any, graph: bool | None = None,
                   graph_updates: bool | None = None) -> Callable:
    """``f`` with its first arguments fixed; for code written against the reference system.

    plait's ``jit`` already caches the structure of the modules it is called with, so a
    plain call is as fast; this is ``functools.partial`` with the same meaning.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
        >>> forward = nnx.cached_partial(nnx.jit(lambda m, x: m(x)), model)
        >>> forward(jnp.ones((1, 2))).shape
        (1, 2)
    """
    check_graph_mode("nnx.cached_partial", graph, graph_updates)
    check_callable(f, "cached_partial")
    return functools.partial(f, *cached_args)


def make_jaxpr(f: Callable | None = None, *, graph: bool | None = None, graph_updates: bool | None = None,
               static_argnums: int | tuple[int, ...] = ()) -> Callable:
    """``jax.make_jaxpr`` for functions of modules: the jaxpr of ``f`` over the leaves of its
    arguments (each Variable's value, then the arrays). Nothing runs, so nothing is written back.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
        >>> jaxpr = nnx.make_jaxpr(lambda m, x: m(x))(model, jnp.ones((1, 2)))
        >>> [v.aval.shape for v in jaxpr.jaxpr.invars]
        [(3,), (2, 3), (1, 2)]
    """
    check_graph_mode("nnx.make_jaxpr", graph, graph_updates)
    if f is None:
        return functools.partial(make_jaxpr, static_argnums=static_argnums)
    check_callable(f, "make_jaxpr")
    statics = (static_argnums,) if isinstance(static_argnums, int) else tuple(static_argnums)

    @functools.wraps(f)
    def traced(*args: Any, **kwargs: Any) -> Any:
        fixed = {i % len(args): args[i] for i in statics}
        lifted = Call(lambda *dynamic: f(*_place(args, fixed, dynamic)), "make_jaxpr",
                      tuple(a for i, a in enumerate(args) if i not in fixed), kwargs, bind=False)
        return jax.make_jaxpr(lambda leaves: lifted.run(list(leaves))[0])(lifted.leaves)

    return traced


def _place(args: tuple, fixed: dict, dynamic: tuple) -> list:
    out, rest = [], iter(dynamic)
    for i in range(len(args)):
        out.append(fixed[i] if i in fixed else next(rest))
    return out


def jit_partial(fun: Callable, *partial_args: Any, graph: bool | None = None, graph_updates: bool | None = None,
                **jit_kwargs: Any) -> Callable:
    """``nnx.jit(fun, **jit_kwargs)`` with its first arguments fixed to ``partial_args``.

    plait's ``jit`` already caches the structure of the modules it is given, so this is
    :func:`cached_partial` over :func:`~plait.jit`; ``static_argnums``, ``donate_argnums`` and
    ``in_shardings`` count the fixed arguments too, as in the reference.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
        >>> forward = nnx.jit_partial(lambda m, x: m(x), model)
        >>> forward(jnp.ones((1, 2))).shape
        (1, 3)
    """
    check_graph_mode("nnx.jit_partial", graph, graph_updates)
    return functools.partial(jit(fun, **jit_kwargs), *partial_args)
