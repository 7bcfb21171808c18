"""A plait module class as a Linen module (:func:`to_linen`, ``ToLinen``), for code that
still trains Linen models. Needs Flax, imported here only when one of these is used.

Linen modules are stateless, so ``ToLinen`` builds the plait module inside each Linen call:
at ``init`` it builds it with keys from Linen's ``rngs`` and stores its Variables in Linen
collections (``nnx.Param`` in ``'params'``, ``nnx.BatchStat`` in ``'batch_stats'``, another
type in the collection :func:`plait.variable_name_from_type` names); at ``apply`` it builds
it again, writes the given variables into it, calls it, and stores back what changed (in
the collections Linen lets change). RNG state stays out of the collections: each call's
streams come from the keys passed to ``init``/``apply``.

A Variable with metadata (a sharding annotation from ``nnx.with_partitioning``) goes to
Linen inside an :class:`NNXMeta` box, so ``nn.get_partition_spec`` reads its layout and
``nn.unbox`` its value; one that came from a Linen box (``nn.Partitioned``) goes back in
that box.

Example:
    >>> import jax, jax.numpy as jnp, plait as nnx
    >>> model = nnx.bridge.to_linen(nnx.Linear, 3, 2)
    >>> variables = model.init(jax.random.key(0), jnp.ones((1, 3)))
    >>> jax.tree.map(jnp.shape, variables["params"])
    {'bias': (2,), 'kernel': (3, 2)}
    >>> jax.jit(model.apply)(variables, jnp.ones((1, 3))).shape
    (1, 2)
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import jax

from ..errors import GraphError, MissingDependencyError
from ..filters import Not
from ..graph import state, update
from ..module import Module
from ..rngs import Rngs
from ..spmd import get_var_pspec
from ..state import to_flat_state
from ..variable_names import variable_name_from_type
from ..variables import RngState, Variable
from .variables import (
    LINEN_META_TYPE,
    flatten_mapping,
    is_linen_box,
    is_vanilla_variable,
    linen_value,
    unflatten_mapping,
)

__all__ = ["linen_classes", "to_linen", "to_linen_var", "with_partitioning"]


def _flax() -> Any:
    try:
        import flax.core
        import flax.linen
        import flax.struct
    except ImportError as e:
        raise MissingDependencyError(
            "nnx.bridge.ToLinen/to_linen/NNXMeta/with_partitioning make Linen objects, which needs Flax; it is not "
            "installed.\n"
            "Install it with:   pip install flax   (plait itself never needs it: ToNNX works without)"
        ) from e
    return flax


@functools.cache
def linen_classes() -> dict[str, Any]:
    """``{'ToLinen': ..., 'NNXMeta': ...}``: the Linen classes, made once, the first time asked."""
    flax = _flax()
    linen, meta, struct = flax.linen, flax.core.meta, flax.struct

    class NNXMeta(struct.PyTreeNode, meta.AxisMetadata):
        """A plait Variable's value with its type and metadata, as a Linen axis-metadata box."""

        var_type: type = struct.field(pytree_node=False)
        value: Any = struct.field(pytree_node=True)
        metadata: dict = struct.field(pytree_node=False)

        def unbox(self) -> Any:
            return self.value

        def replace_boxed(self, val: Any) -> Any:
            return self.replace(value=val)

        def add_axis(self, index: int, params: dict) -> Any:
            return self  # as the reference: Linen transforms leave the metadata as it is

        def remove_axis(self, index: int, params: dict) -> Any:
            return self

        def get_partition_spec(self) -> jax.sharding.PartitionSpec:
            """The ``PartitionSpec`` of the Variable's ``out_sharding`` (logical names mapped)."""
            return get_var_pspec(self.to_nnx_variable())

        def to_nnx_variable(self) -> Variable:
            return self.var_type(self.value, **self.metadata)

    class ToLinen(linen.Module):
        """A plait module class as a Linen module: ``ToLinen(nnx.Linear, args=(3, 2))``.

        ``nnx_class(*args, **kwargs, rngs=nnx.Rngs(...))`` is built in every Linen call
        (``skip_rng=True``: without ``rngs``); ``metadata_fn`` turns each Variable into what
        Linen stores (default :func:`to_linen_var`). A call runs ``__call__`` of the plait
        module, or the method ``nnx_method=`` names; ``model.encode(x)`` reaches the plait
        class's other methods.
        """

        nnx_class: Callable[..., Module]
        args: tuple = ()
        kwargs: Mapping[str, Any] = flax.core.FrozenDict({})
        skip_rng: bool = False
        metadata_fn: Callable[[Variable], Any] | None = to_linen_var

        @linen.compact
        def __call__(self, *args: Any, nnx_method: Callable[..., Any] | str | None = None, **kwargs: Any) -> Any:
            initializing = self.is_initializing()
            module_kwargs = dict(self.kwargs)
            if not self.skip_rng:
                keys = {name: self.make_rng(name) for name in self.scope.rngs}
                if not initializing and "default" not in keys:
                    keys["default"] = 0  # the module is rebuilt, then its state replaced: any key will do
                module_kwargs["rngs"] = Rngs(**keys)
            module = self.nnx_class(*self.args, **module_kwargs)
            if initializing:
                self._store(module)  # the initial state, whatever the call does
                return _method(module, nnx_method)(module, *args, **kwargs)
            _load(module, self.variables)
            out = _method(module, nnx_method)(module, *args, **kwargs)
            self._store(module)
            return out

        def __getattr__(self, name: str) -> Any:
            try:
                return linen.Module.__getattr__(self, name)
            except AttributeError:
                if name.startswith("_"):
                    raise
                if name in (self.__dict__.get("kwargs") or {}):
                    return self.__dict__["kwargs"][name]
                method = getattr(self.__dict__.get("nnx_class"), name, None)
                if not callable(method):
                    raise
                bound = functools.partial(self.__call__, nnx_method=method)
                bound.__self__ = self  # type: ignore[attr-defined]
                return bound

        def _store(self, module: Module) -> None:
            """Put the plait module's Variables (RNG state aside) into their Linen collections."""
            by_collection: dict[str, dict] = {}
            for path, var in to_flat_state(state(module, Not(RngState))):
                collection = variable_name_from_type(type(var), allow_register=True)
                leaf = self.metadata_fn(var) if self.metadata_fn is not None else var.get_value()
                by_collection.setdefault(collection, {})[path] = leaf
            for collection, flat in by_collection.items():
                if self.is_mutable_collection(collection):
                    for name, value in unflatten_mapping(flat).items():
                        self.put_variable(collection, name, value)

    for cls in (NNXMeta, ToLinen):
        cls.__module__ = "plait.bridge"
        cls.__qualname__ = cls.__name__
    return {"ToLinen": ToLinen, "NNXMeta": NNXMeta}


def _method(module: Module, method: Callable[..., Any] | str | None) -> Callable[..., Any]:
    """The plait module's method to call, as a function of the module."""
    name = "__call__" if method is None else method
    fn = getattr(type(module), name, None) if isinstance(name, str) else name
    if not callable(fn):
        raise GraphError(
            f"ToLinen(nnx_method={method!r}): {type(module).__name__} has no method of that name.\n"
            f"Name one of its methods, e.g. nnx_method='__call__'"
        )
    return fn


def _load(module: Module, variables: Mapping[str, Any]) -> None:
    """Write Linen's variables (all collections; boxes unboxed) into the rebuilt module."""
    flat: dict[tuple, Any] = {}
    for tree in variables.values():
        for path, leaf in flatten_mapping(tree).items():
            flat[path] = leaf.unbox() if is_linen_box(leaf) else leaf
    known = {path for path, _ in to_flat_state(state(module))}
    unknown = [path for path in flat if path not in known]
    if unknown:
        listed = "".join(f"\n  - {'/'.join(map(str, p))}" for p in unknown)
        warnings.warn(f"Found unknown module paths in incoming state:{listed}", stacklevel=4)
    if len(unknown) < len(flat):
        update(module, unflatten_mapping({p: v for p, v in flat.items() if p in known}))


def to_linen_var(v: Variable) -> Any:
    """What ``ToLinen`` stores for Variable ``v`` in its Linen collection: the bare value
    when ``v`` has no metadata, the Linen box it came from, else an :class:`NNXMeta` box.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> nnx.bridge.to_linen_var(nnx.Param(jnp.ones(2))).shape
        (2,)
        >>> type(nnx.bridge.to_linen_var(nnx.Param(jnp.ones(2), out_sharding=("a",)))).__name__
        'NNXMeta'
    """
    metadata = v.get_metadata()
    if LINEN_META_TYPE in metadata:
        return linen_value(v)
    if is_vanilla_variable(v):
        return v.get_value()
    return linen_classes()["NNXMeta"](type(v), v.get_value(), metadata)


def to_linen(nnx_class: Callable[..., Module], *args: Any, metadata_fn: Callable[[Variable], Any] | None = to_linen_var,
             name: str | None = None, skip_rng: bool = False, abstract_init: bool = True, **kwargs: Any) -> Any:
    """``ToLinen(nnx_class, args=args, kwargs=kwargs, ...)``: the plait module class as a
    Linen module. ``abstract_init`` does nothing (as in the reference, where it is kept for
    old code).

    Example:
        >>> import jax, jax.numpy as jnp, plait as nnx
        >>> model = nnx.bridge.to_linen(nnx.Dropout, rate=0.5)
        >>> variables = model.init({"dropout": jax.random.key(0)}, jnp.ones(4))
        >>> y = model.apply(variables, jnp.ones(4), rngs={"dropout": jax.random.key(1)})
        >>> sorted(set(y.tolist())) in ([0.0, 2.0], [0.0], [2.0])
        True
    """
    flax = _flax()
    return linen_classes()["ToLinen"](nnx_class, args=args, kwargs=flax.core.FrozenDict(kwargs),
                                      metadata_fn=metadata_fn, skip_rng=skip_rng, name=name)


def with_partitioning(fn: Callable[..., Any], names: Any, mesh: jax.sharding.Mesh | None = None) -> Callable[..., Any]:
    """``nnx.with_partitioning`` whose Variables go to Linen as ``nn.Partitioned`` boxes
    (through ``ToLinen``), as Linen's own ``nn.with_partitioning`` would make them.

    Example:
        >>> import jax, plait as nnx
        >>> init = nnx.bridge.with_partitioning(nnx.initializers.ones, ("a", None))
        >>> v = nnx.Param(init(jax.random.key(0), (2, 3)))
        >>> v.out_sharding, type(nnx.bridge.to_linen_var(v)).__name__
        (('a', None), 'Partitioned')
    """
    from ..spmd import with_partitioning as nnx_with_partitioning

    return nnx_with_partitioning(fn, names, mesh, **{LINEN_META_TYPE: _flax().core.meta.Partitioned})
