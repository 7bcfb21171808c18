"""Logical axis names, the rules that map them to mesh axes, and eager sharding.

A model names the axes of its parameters by what they mean (``("embed", "mlp")``), and a
training script decides how those meanings map onto the device mesh
(``[("embed", None), ("mlp", "model")]``). The rules are a context
(:func:`logical_axis_rules`), so one model definition serves every layout.

*Eager sharding*: a Variable created with ``out_sharding`` metadata while a mesh is known
(its ``mesh`` metadata, or ``jax.set_mesh``) is placed on the mesh at creation, outside a
trace with ``jax.device_put`` and inside one with a sharding constraint. It is on by
default, as in the reference; :func:`use_eager_sharding` turns it off. Without a mesh the
value stays where it is and the annotation only informs
:func:`plait.get_partition_spec` (the reference raises instead; a model built for one
device should not need a mesh).

This module sits below ``variables`` (which calls :func:`shard_value`); it imports only
JAX and ``errors``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import jax
from jax.sharding import NamedSharding, PartitionSpec

from .errors import AxisError

__all__ = [
    "logical_axis_rules",
    "set_logical_axis_rules",
    "get_logical_axis_rules",
    "composite_rules",
    "logical_to_mesh_axes",
    "use_eager_sharding",
    "using_eager_sharding",
    "shard_value",
    "eager_shard",
    "current_mesh",
]

LogicalRules = Sequence[tuple[str, Any]]


class _Context(threading.local):
    def __init__(self) -> None:
        self.rules: tuple = ()
        self.eager: list[bool] = []


_CONTEXT = _Context()


def set_logical_axis_rules(rules: LogicalRules) -> None:
    """Set the logical-to-mesh axis rules for this thread (prefer :func:`logical_axis_rules`).

    Example:
        >>> import plait as nnx
        >>> nnx.set_logical_axis_rules([("mlp", "model")]); nnx.get_logical_axis_rules()
        (('mlp', 'model'),)
        >>> nnx.set_logical_axis_rules(())
    """
    _CONTEXT.rules = tuple(tuple(r) for r in rules)


def get_logical_axis_rules() -> tuple:
    """The logical-to-mesh axis rules in effect (a tuple of ``(logical, mesh_axis)`` pairs).

    Example:
        >>> import plait as nnx
        >>> nnx.get_logical_axis_rules()
        ()
    """
    return _CONTEXT.rules


@contextlib.contextmanager
def logical_axis_rules(rules: LogicalRules) -> Iterator[None]:
    """Within the block, logical axis names map to mesh axes by ``rules``.

    Example:
        >>> import plait as nnx
        >>> with nnx.logical_axis_rules([("batch", "data"), ("mlp", "model")]):
        ...     nnx.logical_to_mesh_axes(("batch", "mlp", None))
        P('data', 'model', None)
    """
    old = _CONTEXT.rules
    set_logical_axis_rules(rules)
    try:
        yield
    finally:
        _CONTEXT.rules = old


def composite_rules(outer: LogicalRules, inner: LogicalRules) -> tuple:
    """``outer`` rules extended by ``inner`` ones; a name mapped two different ways is an error.

    Example:
        >>> import plait as nnx
        >>> nnx.spmd.composite_rules([("a", "x")], [("b", "y")])
        (('a', 'x'), ('b', 'y'))
    """
    rules = dict(tuple(r) for r in outer or ())
    for name, axis in inner or ():
        if name in rules and rules[name] != axis:
            raise ValueError(
                f"logical axis {name!r} is mapped to mesh axis {rules[name]!r} by the logical_axis_rules context "
                f"but to {axis!r} by a Variable's sharding_rules metadata; map it one way."
            )
        rules[name] = axis
    return tuple(rules.items())


def logical_to_mesh_axes(names: Sequence[Any] | PartitionSpec, rules: LogicalRules | None = None) -> PartitionSpec:
    """The ``PartitionSpec`` over mesh axes for logical axis ``names``: each name the rules
    know becomes its mesh axis; other entries (mesh axis names, ``None``) stay as they are.
    ``rules`` defaults to the :func:`logical_axis_rules` context.

    Example:
        >>> import plait as nnx
        >>> nnx.logical_to_mesh_axes(("embed", "mlp"), rules=[("embed", None), ("mlp", "model")])
        P(None, 'model')
    """
    table = dict(composite_rules(get_logical_axis_rules(), rules or ()))

    def one(name: Any) -> Any:
        if isinstance(name, tuple):
            mapped = tuple(a for n in name for a in _as_tuple(table.get(n, n)) if a is not None)
            return mapped or None
        return table.get(name, name) if isinstance(name, str) else name

    spec = PartitionSpec(*(one(n) for n in names))
    used = [a for entry in spec for a in _as_tuple(entry) if a is not None]
    twice = sorted({a for a in used if used.count(a) > 1}, key=str)
    if twice:
        raise AxisError(
            f"logical axes {tuple(names)!r} map to {spec} under the rules {dict(table)!r}: mesh axis "
            f"{twice[0]!r} would shard two dimensions of one array, and a mesh axis can shard only one.\n"
            "Give these dimensions logical names the rules map to different mesh axes (or to None), e.g. "
            "a separate name for activations: ('batch', 'activation_embed')."
        )
    return spec


def _as_tuple(axis: Any) -> tuple:
    return axis if isinstance(axis, tuple) else (axis,)


class use_eager_sharding:  # noqa: N801  (the reference's name; a function-like context)
    """Whether Variables with ``out_sharding`` metadata are placed on the mesh when created.

    Call it to set the default, or use it as a context manager for one block.

    Example:
        >>> import plait as nnx
        >>> with nnx.use_eager_sharding(False):
        ...     nnx.using_eager_sharding()
        False
        >>> nnx.using_eager_sharding()
        True
    """

    def __init__(self, value: bool) -> None:
        self.value = bool(value)
        self._previous = list(_CONTEXT.eager)
        _CONTEXT.eager[:] = [self.value]

    def __enter__(self) -> use_eager_sharding:
        return self

    def __exit__(self, *exc: Any) -> None:
        _CONTEXT.eager[:] = self._previous

    def __repr__(self) -> str:
        return f"use_eager_sharding({self.value})"


def using_eager_sharding() -> bool:
    """Whether new Variables with ``out_sharding`` metadata are sharded at creation (default True).

    Example:
        >>> import plait as nnx
        >>> nnx.using_eager_sharding()
        True
    """
    return _CONTEXT.eager[-1] if _CONTEXT.eager else True


def current_mesh() -> Any:
    """The mesh set with ``jax.set_mesh`` (concrete if one is, else abstract), or None.

    Example:
        >>> from plait.sharding_rules import current_mesh
        >>> current_mesh() is None
        True
    """
    try:
        mesh = jax.sharding.get_mesh()
        if mesh is not None and not mesh.empty:
            return mesh
    except Exception:  # noqa: BLE001  (older JAX, or no concrete mesh inside a trace)
        pass
    mesh = jax.sharding.get_abstract_mesh()
    if mesh is None or mesh.empty:
        return None
    # Inside shard_map/pmap values are per-device blocks (Manual axes): nothing to place.
    return None if jax.sharding.AxisType.Manual in tuple(mesh.axis_types) else mesh


def _is_tracer(value: Any) -> bool:
    return isinstance(value, jax.core.Tracer)


def shard_value(value: Any, out_sharding: Any, sharding_rules: LogicalRules | None = None, mesh: Any = None) -> Any:
    """``value`` placed by ``out_sharding`` (logical names mapped by the rules) on ``mesh``
    (default: the current mesh). Without a mesh, ``value`` is returned unchanged.

    Example:
        >>> import jax.numpy as jnp
        >>> from plait.sharding_rules import shard_value
        >>> shard_value(jnp.ones(2), ("model",)).shape  # no mesh: unchanged
        (2,)
    """
    if not out_sharding or not hasattr(value, "shape"):
        return value
    if isinstance(out_sharding, NamedSharding):
        sharding = out_sharding
        sharding = NamedSharding(sharding.mesh, logical_to_mesh_axes(sharding.spec, sharding_rules))
    else:
        mesh = mesh if mesh is not None else current_mesh()
        if mesh is None:
            return value
        sharding = NamedSharding(mesh, logical_to_mesh_axes(out_sharding, sharding_rules))
    if isinstance(value, jax.ShapeDtypeStruct):
        return jax.ShapeDtypeStruct(value.shape, value.dtype, sharding=sharding)
    return constrain(value, sharding)


def eager_shard(value: Any, metadata: dict, flag: bool | None) -> Any:
    """A new Variable's value, sharded by its ``out_sharding`` metadata if eager sharding is
    on (``flag``, else :func:`using_eager_sharding`) and a mesh is known.

    Example:
        >>> import jax.numpy as jnp
        >>> from plait.sharding_rules import eager_shard
        >>> eager_shard(jnp.ones(2), {"out_sharding": ("x",)}, None).shape  # no mesh: unchanged
        (2,)
    """
    if not (flag if flag is not None else using_eager_sharding()):
        return value
    return shard_value(value, metadata["out_sharding"], metadata.get("sharding_rules"), metadata.get("mesh"))


def constrain(value: Any, sharding: Any) -> Any:
    """``value`` with ``sharding``: a sharding constraint under a trace, a transfer outside.
    Meshes whose axes are all explicit move values with ``jax.sharding.reshard``."""
    mesh = getattr(sharding, "mesh", None)
    if not _is_tracer(value):
        if isinstance(mesh, jax.sharding.AbstractMesh):
            concrete = current_mesh()
            if isinstance(concrete, jax.sharding.Mesh):
                sharding = NamedSharding(concrete, sharding.spec)
        return jax.device_put(value, sharding)
    if mesh is not None and mesh.axis_names and getattr(mesh, "are_all_axes_explicit", False):
        return jax.sharding.reshard(value, sharding)
    return jax.lax.with_sharding_constraint(value, sharding)
