"""Sharding a model: partition annotations on Variables, and the specs they give.

A parameter says how it should be laid out across devices by naming, per axis, a mesh
axis or a logical name (``out_sharding`` metadata; :func:`with_partitioning` attaches it
through an initializer). Those annotations are all a model carries; the layout itself is
decided where the model is trained:

* :func:`get_partition_spec` / :func:`get_named_sharding` turn a State's annotations into
  ``PartitionSpec`` / ``NamedSharding`` trees (logical names mapped by
  :func:`logical_axis_rules`), for ``jax.device_put``, ``nnx.jit(out_shardings=...)`` or a
  checkpoint restore.
* Parameters created under ``jax.set_mesh(mesh)`` are sharded as they are created (eager
  sharding, :mod:`plait.sharding_rules`).
* ``vmap``/``scan`` with ``transform_metadata={nnx.PARTITION_NAME: 'layers'}`` add the
  stacked axis to the annotations of a layer stack, and take it out inside a step.
* :func:`with_sharding_constraint` constrains an intermediate value by logical names.

``docs/sharding.md`` walks through a sharded training run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import jax
from jax.sharding import NamedSharding, PartitionSpec

from .encoding import is_graph_node
from .graph import split, update
from .sharding_rules import (
    composite_rules,
    constrain,
    current_mesh,
    get_logical_axis_rules,
    logical_axis_rules,
    logical_to_mesh_axes,
    set_logical_axis_rules,
    use_eager_sharding,
    using_eager_sharding,
)
from .transforms.functional import eval_shape
from .variable_axes import add_axis, remove_axis
from .variables import PARTITION_NAME, Variable, with_metadata

__all__ = [
    "PARTITION_NAME",
    "add_axis",
    "remove_axis",
    "with_partitioning",
    "get_var_pspec",
    "get_partition_spec",
    "get_named_sharding",
    "get_abstract_model",
    "as_abstract",
    "abstract_with_sharding",
    "with_sharding_constraint",
    "logical_to_mesh_axes",
    "logical_to_mesh_sharding",
    "logical_axis_rules",
    "set_logical_axis_rules",
    "get_logical_axis_rules",
    "composite_rules",
    "use_eager_sharding",
    "using_eager_sharding",
]

A = TypeVar("A")


def with_partitioning(initializer: Callable, sharding: Sequence[Any], mesh: Any = None, **metadata: Any) -> Callable:
    """Wrap ``initializer`` so the Variable made from it has ``out_sharding=sharding``
    (one mesh axis or logical name, or None, per axis of the value) and, if given, ``mesh``.

    Example:
        >>> import plait as nnx
        >>> init = nnx.with_partitioning(nnx.initializers.lecun_normal(), (None, "model"))
        >>> layer = nnx.Linear(2, 4, kernel_init=init, rngs=nnx.Rngs(0))
        >>> layer.kernel.out_sharding
        (None, 'model')
        >>> nnx.get_partition_spec(nnx.state(layer))["kernel"].value
        P(None, 'model')
    """
    if mesh is not None:
        metadata["mesh"] = mesh
    return with_metadata(initializer, out_sharding=tuple(sharding) if isinstance(sharding, list) else sharding,
                         **metadata)


def get_var_pspec(v: Variable) -> PartitionSpec | None:
    """The ``PartitionSpec`` of one Variable: its ``out_sharding`` with logical names mapped
    (context rules and its own ``sharding_rules`` metadata); ``PartitionSpec()`` (replicated)
    for an unannotated array, None for a value that is not an array.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> nnx.spmd.get_var_pspec(nnx.Param(jnp.ones((2, 3)), out_sharding=("data", None)))
        P('data', None)
    """
    meta = v.get_metadata()
    spec = meta.get("out_sharding")
    if spec:
        if isinstance(spec, NamedSharding):
            spec = spec.spec
        return logical_to_mesh_axes(spec, meta.get("sharding_rules"))
    return PartitionSpec() if hasattr(v.get_raw_value(), "shape") else None


def get_partition_spec(tree: A) -> A:
    """``tree`` (a State, a module, or any pytree of Variables and arrays) with each Variable's value
    replaced by its ``PartitionSpec`` (see :func:`get_var_pspec`) and each array by
    ``PartitionSpec()``.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> state = nnx.State({"w": nnx.Param(jnp.ones((2, 3)), out_sharding=("embed", "mlp"))})
        >>> with nnx.logical_axis_rules([("embed", None), ("mlp", "model")]):
        ...     spec = nnx.get_partition_spec(state)
        >>> spec["w"].value
        P(None, 'model')
    """

    if is_graph_node(tree):  # a module: the State of its Variables
        tree = split(tree)[1]

    def one(x: Any) -> Any:
        if isinstance(x, Variable):
            return x.replace(get_var_pspec(x))
        return PartitionSpec() if hasattr(x, "shape") else None

    return jax.tree.map(one, tree, is_leaf=lambda x: isinstance(x, Variable))


def get_named_sharding(tree: A, mesh: jax.sharding.Mesh) -> A:
    """Like :func:`get_partition_spec`, with ``NamedSharding(mesh, spec)`` values.

    Example:
        >>> import jax, jax.numpy as jnp, plait as nnx
        >>> mesh = jax.make_mesh((1,), ("model",))
        >>> state = nnx.State({"w": nnx.Param(jnp.ones((2, 3)), out_sharding=(None, "model"))})
        >>> nnx.get_named_sharding(state, mesh)["w"].value.spec
        P(None, 'model')
    """
    specs = get_partition_spec(tree)
    return jax.tree.map(lambda p: NamedSharding(mesh, p), specs, is_leaf=lambda x: isinstance(x, PartitionSpec))


def logical_to_mesh_sharding(specs: Any, mesh: jax.sharding.Mesh, rules: Sequence[tuple[str, Any]] | None = None) -> Any:
    """A tree of logical ``PartitionSpec`` s (or name tuples) as ``NamedSharding`` s on ``mesh``.

    Example:
        >>> import jax, plait as nnx
        >>> mesh = jax.make_mesh((1,), ("model",))
        >>> nnx.logical_to_mesh_sharding(jax.P("mlp"), mesh, [("mlp", "model")]).spec
        P('model',)
    """
    return jax.tree.map(lambda p: NamedSharding(mesh, logical_to_mesh_axes(p, rules)), specs,
                        is_leaf=lambda x: isinstance(x, (PartitionSpec, tuple)))


def with_sharding_constraint(x: A, names: Any, mesh: Any = None, rules: Sequence[tuple[str, Any]] | None = None) -> A:
    """Constrain ``x`` (an array or a pytree of arrays) to the layout ``names`` describes:
    a ``PartitionSpec``, a tuple of logical names/mesh axes, or a ``NamedSharding``. Logical
    names are mapped by :func:`logical_axis_rules` (and ``rules``); the mesh is ``mesh`` or
    the current one (``jax.set_mesh``). Without a mesh (one device) ``x`` is returned as is.

    Example:
        >>> import jax, jax.numpy as jnp, plait as nnx
        >>> mesh = jax.make_mesh((1,), ("data",))
        >>> with nnx.logical_axis_rules([("batch", "data")]):
        ...     y = jax.jit(lambda x: nnx.with_sharding_constraint(x, ("batch", None), mesh))(jnp.ones((2, 3)))
        >>> y.sharding.spec
        P('data', None)
    """
    if isinstance(names, NamedSharding):
        sharding = NamedSharding(names.mesh, logical_to_mesh_axes(names.spec, rules))
    else:
        mesh = mesh if mesh is not None else current_mesh()
        if mesh is None:
            return x
        sharding = NamedSharding(mesh, logical_to_mesh_axes(names, rules))
    return jax.tree.map(lambda a: constrain(a, sharding), x)


def as_abstract(tree: A) -> A:
    """An abstract model (from :func:`plait.eval_shape`) whose annotated Variables hold
    ``jax.ShapeDtypeStruct`` s that carry their ``NamedSharding`` (mesh from the Variable's
    ``mesh`` metadata or the current mesh); the target a sharded checkpoint restores into.

    Example:
        >>> import jax, plait as nnx
        >>> mesh = jax.make_mesh((1,), ("model",))
        >>> init = nnx.with_partitioning(nnx.initializers.lecun_normal(), (None, "model"))
        >>> with jax.set_mesh(mesh):
        ...     abstract = nnx.as_abstract(nnx.eval_shape(lambda: nnx.Linear(2, 4, kernel_init=init, rngs=nnx.Rngs(0))))
        >>> abstract.kernel.value.sharding.spec
        P(None, 'model')
    """
    _, state = split(tree)
    for v in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, Variable)):
        value = v.get_raw_value()
        if not (isinstance(v, Variable) and hasattr(value, "shape") and v.has_metadata("out_sharding")):
            continue
        if getattr(value, "sharding", None) is not None:
            continue
        mesh = v.get_metadata("mesh", None) or current_mesh()
        if mesh is None:
            continue
        v.set_raw_value(jax.ShapeDtypeStruct(value.shape, value.dtype, sharding=NamedSharding(mesh, get_var_pspec(v))))
    # split copies each Variable; write the sharded abstract values into tree's own ones.
    update(tree, state)
    return tree


abstract_with_sharding = as_abstract


def get_abstract_model(init_fn: Callable[[], Any], mesh: jax.sharding.Mesh) -> tuple[Any, Any]:
    """``(graphdef, abstract_state)`` of the model ``init_fn`` builds, without allocating it:
    each leaf a ``jax.ShapeDtypeStruct`` with the ``NamedSharding`` its annotations ask for.

    Example:
        >>> import jax, plait as nnx
        >>> mesh = jax.make_mesh((1,), ("model",))
        >>> init = nnx.with_partitioning(nnx.initializers.lecun_normal(), (None, "model"))
        >>> _, state = nnx.get_abstract_model(lambda: nnx.Linear(2, 4, kernel_init=init, rngs=nnx.Rngs(0)), mesh)
        >>> state["kernel"].value.sharding.spec
        P(None, 'model')
    """
    with jax.set_mesh(mesh):
        graphdef, state = split(eval_shape(init_fn))
        shardings = get_named_sharding(state, mesh)
        state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), state, shardings)
    return graphdef, state
