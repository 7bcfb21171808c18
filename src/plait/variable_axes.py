"""Axes added and removed by mapping transforms (``vmap``/``scan``): the ``out_sharding``
(and other ``transform_metadata``) entries of the Variables they map, and their
``add_axis``/``remove_axis`` hooks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax

from .errors import VariableError
from .variables import PARTITION_NAME, Variable

__all__ = ["add_axis", "remove_axis"]


def _variables_in(tree: Any) -> list:
    # A State is a pytree whose children are its Variables, so it needs no case of its own.
    return [v for v in jax.tree.leaves(tree, is_leaf=lambda x: isinstance(x, Variable)) if isinstance(v, Variable)]


def _axis_fields(axis_name: Any) -> tuple[Any, dict]:
    """``axis_name`` (a name, None, or a transform_metadata mapping) as the name and
    ``{metadata key: entry}`` to insert into tuple metadata of that key (out_sharding: the name)."""
    if isinstance(axis_name, Mapping):
        if PARTITION_NAME not in axis_name:
            raise VariableError(
                f"transform_metadata {dict(axis_name)!r} has no {PARTITION_NAME!r} entry naming the new axis.\n"
                f"Write transform_metadata={{nnx.PARTITION_NAME: 'layers'}}"
            )
        rest = dict(axis_name)
        name = rest.pop(PARTITION_NAME)
        return name, {"out_sharding": name, **rest}
    return axis_name, {"out_sharding": axis_name}


def add_axis(tree: Any, axis_index: int, axis_name: Any) -> Any:
    """After a transform added axis ``axis_index`` to the values of the Variables in ``tree``
    (``vmap``/``scan`` outputs): insert ``axis_name`` into each ``out_sharding`` metadata and
    call each Variable's :meth:`Variable.add_axis`. ``axis_name`` may be the transform's
    ``transform_metadata`` mapping (``{nnx.PARTITION_NAME: name, other_key: entry}``: each
    other tuple metadata gets its entry too). Returns ``tree``.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> from plait.variable_axes import add_axis
        >>> v = nnx.Param(jnp.ones((3, 2)), out_sharding=("model",))
        >>> _ = add_axis([v], 0, "batch"); v.out_sharding
        ('batch', 'model')
    """
    name, fields = _axis_fields(axis_name)
    for v in _variables_in(tree):
        for key, entry in fields.items():
            spec = v._meta.get(key)
            if spec and isinstance(spec, (tuple, list)):
                new = list(spec) + [None] * max(0, axis_index - len(spec))
                new.insert(axis_index, entry)
                v.set_metadata(key, tuple(new))
        v.add_axis(axis_index, name)
    return tree


def remove_axis(tree: Any, axis_index: int, axis_name: Any) -> Any:
    """Before a transform removes axis ``axis_index`` (``vmap``/``scan`` inputs): the inverse
    of :func:`add_axis`. Returns ``tree``.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> from plait.variable_axes import remove_axis
        >>> v = nnx.Param(jnp.ones((3, 2)), out_sharding=("batch", "model"))
        >>> _ = remove_axis([v], 0, "batch"); v.out_sharding
        ('model',)
    """
    name, fields = _axis_fields(axis_name)
    for v in _variables_in(tree):
        for key, entry in fields.items():
            spec = v._meta.get(key)
            if spec and isinstance(spec, (tuple, list)):
                new = list(spec)
                if axis_index >= len(new) or new[axis_index] != entry:
                    raise VariableError(
                        f"remove_axis: a {type(v).__name__} with {key}={tuple(spec)!r} has no {entry!r} at axis "
                        f"{axis_index}; the transform's axis name must be the one its {key} names there."
                    )
                del new[axis_index]
                v.set_metadata(key, tuple(new))
        v.remove_axis(axis_index, name)
    return tree
