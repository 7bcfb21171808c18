"""Flax NNX 0.10's mutable-array API over pytrees: ``nnx.mutable`` turns arrays (and the
values of Variables) into JAX refs, ``nnx.freeze`` turns refs back into arrays.

Both take a pytree (a State, a list, a dict of Variables or arrays) and return a new one;
Variables in it are replaced by new Variables of the same type and metadata. A module is
not a pytree: use ``nnx.with_vars(model, ref=True)`` / ``ref=False`` for a module, or apply
these to ``nnx.state(model)``. The same array (or ref) reached twice is refused: converting it
twice would make two independent buffers of what was one.

Example:
    >>> import jax.numpy as jnp, plait as nnx
    >>> tree = {"w": nnx.Param(jnp.ones(2)), "b": jnp.zeros(2)}
    >>> refs = nnx.mutable(tree)
    >>> nnx.is_mutable_array(refs["b"]), refs["w"].get_metadata("ref")
    (True, True)
    >>> frozen = nnx.freeze(refs)
    >>> type(frozen["b"]).__name__, frozen["w"].get_metadata("ref", False)
    ('ArrayImpl', False)
"""

from __future__ import annotations

from typing import Any, TypeVar

import jax

from .array_refs import MutableArray, is_mutable_array, mutable_array
from .errors import GraphError
from .filters import Filter, to_predicate
from .object import Object
from .variables import Variable

__all__ = ["MutableArray", "mutable_array", "is_mutable_array", "mutable", "freeze"]

A = TypeVar("A")


def _mutable_like(path: tuple, x: Any) -> bool:
    return (isinstance(x, Variable) and is_mutable_array(x.raw_value)) or is_mutable_array(x)


def _array_like(path: tuple, x: Any) -> bool:
    return (isinstance(x, Variable) and isinstance(x.raw_value, jax.Array)) or isinstance(x, jax.Array)


def _key(entry: Any) -> Any:
    for attr in ("key", "idx", "name"):
        if hasattr(entry, attr):
            return getattr(entry, attr)
    return str(entry)


def _convert(tree: Any, only: Filter, what: str, select: Any, convert: Any) -> Any:
    if isinstance(tree, Object):
        raise GraphError(
            f"nnx.{what} takes a pytree (a State, a list or dict of Variables and arrays), got a "
            f"{type(tree).__name__} (plait modules are not pytrees).\n"
            f"For a module write nnx.with_vars(model, ref={what == 'mutable'}), or nnx.{what}(nnx.state(model))."
        )
    predicate = to_predicate(only)
    seen: dict[int, str] = {}

    def once(jax_path: tuple, x: Any) -> None:
        where = jax.tree_util.keystr(jax_path)
        if id(x) in seen:
            kind = "MutableArray" if what == "freeze" else "Array"
            raise GraphError(
                f"nnx.{what}: found duplicate {kind} at path {where} and {seen[id(x)]}; converting it twice would "
                "make two buffers of one.\nPass each array once (or convert the shared one yourself)."
            )
        seen[id(x)] = where

    def one(jax_path: tuple, x: Any) -> Any:
        path = tuple(_key(p) for p in jax_path)
        if not predicate(path, x) or not select(x):
            return x
        raw = x.raw_value if isinstance(x, Variable) else x
        once(jax_path, raw)
        new = convert(raw)
        if isinstance(x, Variable):
            meta = {k: v for k, v in x.get_metadata().items() if k != "ref"}
            return type(x).from_metadata(new, {**meta, "ref": True} if what == "mutable" else meta)
        return new

    return jax.tree_util.tree_map_with_path(one, tree, is_leaf=lambda x: isinstance(x, Variable))


def mutable(tree: A, /, only: Filter = _array_like) -> A:
    """``tree`` with its arrays, and the array values of its Variables, turned into JAX refs
    (selected by ``only``, a filter on ``(path, value)``; by default every array).

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> tree = nnx.mutable([jnp.ones(()), jnp.zeros(())], only=lambda path, x: path[0] == 0)
        >>> nnx.is_mutable_array(tree[0]), nnx.is_mutable_array(tree[1])
        (True, False)
    """
    return _convert(tree, only, "mutable", lambda x: isinstance(x.raw_value if isinstance(x, Variable) else x,
                                                                jax.Array), mutable_array)


def freeze(tree: A, /, only: Filter = _mutable_like) -> A:
    """``tree`` with its JAX refs, and the ref values of its Variables, turned into arrays
    (copies of what the refs hold now; selected by ``only``, by default every ref).

    Example:
        >>> import jax, jax.numpy as jnp, plait as nnx
        >>> tree = [nnx.mutable_array(jnp.array(1.0)), jnp.array(2.0)]
        >>> frozen = nnx.freeze(tree)
        >>> isinstance(frozen[0], jax.Array) and not nnx.is_mutable_array(frozen[0])
        True
    """
    return _convert(tree, only, "freeze", lambda x: is_mutable_array(x.raw_value if isinstance(x, Variable) else x),
                    lambda ref: ref[...])


