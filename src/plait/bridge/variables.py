"""Linen variable collections and plait Variables, both ways, without importing Flax.

Linen keeps a model's state as ``{collection: {path...: value}}``; plait keeps it as
Variables on attributes, typed by what they are for. The two meet through the registry of
:func:`plait.variable_type_from_name`: collection ``'params'`` is :class:`plait.Param`,
``'batch_stats'`` is :class:`plait.BatchStat`, and a collection with no registered type gets
a Variable subclass named after it.

A Linen value may be *boxed* in axis metadata (``nn.Partitioned``, ``nn.LogicallyPartitioned``,
any ``flax.core.meta.AxisMetadata``). Boxes are recognised by what they do, not by their
class: a value with ``unbox`` and ``replace_boxed`` methods. Its metadata becomes the
Variable's (``names`` becomes ``out_sharding``, through the box's own ``to_nnx_metadata``
when it has one), and the box type is kept as ``linen_meta_type`` metadata so the same box
is rebuilt when the value goes back to Linen.

Example:
    >>> import jax.numpy as jnp
    >>> from plait.bridge.variables import linen_vars_to_nnx_attrs, nnx_attrs_to_linen_vars
    >>> attrs = linen_vars_to_nnx_attrs({"params": {"Dense_0": {"kernel": jnp.ones((2, 3))}},
    ...                                  "batch_stats": {"BatchNorm_0": {"mean": jnp.zeros(3)}}})
    >>> type(attrs["Dense_0"]["kernel"]).__name__, type(attrs["BatchNorm_0"]["mean"]).__name__
    ('Param', 'BatchStat')
    >>> sorted(nnx_attrs_to_linen_vars(attrs))
    ['batch_stats', 'params']
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import GraphError
from ..variable_names import variable_name_from_type, variable_type_from_name
from ..variables import Variable

__all__ = [
    "is_linen_box",
    "is_vanilla_variable",
    "to_nnx_var",
    "linen_value",
    "flatten_mapping",
    "unflatten_mapping",
    "linen_vars_to_nnx_attrs",
    "nnx_attrs_to_linen_vars",
]

#: Metadata key holding the Linen box type a Variable came from (the reference's name).
LINEN_META_TYPE = "linen_meta_type"


def is_linen_box(x: Any) -> bool:
    """True for a Linen axis-metadata box (``nn.Partitioned`` and the like): a value that can
    ``unbox`` itself and ``replace_boxed`` its value."""
    return callable(getattr(x, "unbox", None)) and callable(getattr(x, "replace_boxed", None))


def is_vanilla_variable(v: Variable) -> bool:
    """True if ``v`` carries no metadata, so Linen gets its bare value."""
    return not v.get_metadata()


def to_nnx_var(collection: str, x: Any) -> Variable:
    """The Variable for Linen value ``x`` of ``collection`` (unboxing axis metadata).

    Example:
        >>> import jax.numpy as jnp
        >>> from plait.bridge.variables import to_nnx_var
        >>> to_nnx_var("params", jnp.ones(2))
        Param(shape=(2,), dtype=float32)
    """
    vtype = variable_type_from_name(collection, allow_register=True)
    if not is_linen_box(x):
        return vtype(x)
    from_var = getattr(x, "to_nnx_variable", None)  # a box that holds a whole Variable (NNXMeta)
    if callable(from_var):
        var = from_var()
        if type(var) is not vtype:
            raise GraphError(
                f"a Linen value in collection {collection!r} holds a {type(var).__name__}, but {collection!r} "
                f"is the collection of {vtype.__name__}.\n"
                f"Register the name of {type(var).__name__}: nnx.register_variable_name({collection!r}, "
                f"{type(var).__name__}, overwrite=True)"
            )
        return var
    to_meta = getattr(x, "to_nnx_metadata", None)
    metadata = dict(to_meta()) if callable(to_meta) else dict(vars(x))
    if "value" not in metadata:
        raise GraphError(
            f"a {type(x).__name__} box in Linen collection {collection!r} has no `value` field, so plait cannot "
            "tell its value from its metadata.\n"
            f"Give {type(x).__name__} a `to_nnx_metadata()` method returning {{'value': ..., **metadata}}, "
            "or unbox the variables first (flax.linen.unbox)."
        )
    value = metadata.pop("value")
    return vtype(value, **metadata, **{LINEN_META_TYPE: type(x)})


def linen_value(v: Variable) -> Any:
    """What Linen gets for Variable ``v``: the box it came from, rebuilt around its value,
    or its bare value (Linen reads a box's value the same way it reads a bare one)."""
    metadata = v.get_metadata()
    box = metadata.get(LINEN_META_TYPE)
    if box is None:
        return v.get_value()
    if hasattr(box, "from_nnx_metadata"):
        return box.from_nnx_metadata({"value": v.get_value(), **metadata})
    metadata.pop(LINEN_META_TYPE)
    return box(v.get_value(), **metadata)


def flatten_mapping(tree: Mapping, prefix: tuple = ()) -> dict[tuple, Any]:
    """``{path: leaf}`` of a nested mapping (an empty mapping is left out, as Linen does)."""
    flat: dict[tuple, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(flatten_mapping(value, (*prefix, key)))
        else:
            flat[(*prefix, key)] = value
    return flat


def unflatten_mapping(flat: Mapping[tuple, Any]) -> dict:
    """The nested dict of ``{path: leaf}``."""
    tree: dict = {}
    for path, value in flat.items():
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return tree


def linen_vars_to_nnx_attrs(variables: Mapping[str, Any]) -> dict[str, Any]:
    """Linen variables (``{collection: tree}``) as nested attributes of Variables; the
    collection level goes away (the Variable's type keeps it), as in the reference, so a
    path used by two collections is refused."""
    flat: dict[tuple, Variable] = {}
    where: dict[tuple, str] = {}
    for collection, tree in variables.items():
        entries = flatten_mapping(tree) if isinstance(tree, Mapping) else {(): tree}
        for path, x in entries.items():
            if not path:
                raise GraphError(f"Linen collection {collection!r} is a bare value, not a mapping of names: {x!r}")
            if path in flat:
                raise GraphError(
                    f"`{'.'.join(map(str, path))}` is a variable of Linen collections {where[path]!r} and "
                    f"{collection!r}: as plait attributes (one Variable per path) the two would collide.\n"
                    "Rename one of them in the Linen module."
                )
            flat[path] = to_nnx_var(collection, x)
            where[path] = collection
    return unflatten_mapping(flat)


def nnx_attrs_to_linen_vars(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Attributes holding Variables (nested in mappings) as Linen variables, by collection."""
    flat: dict[tuple, Any] = {}
    for path, v in flatten_mapping(attrs).items():
        if not isinstance(v, Variable):
            raise GraphError(
                f"`{'.'.join(map(str, path))}` is a {type(v).__name__}, not a Variable, so it has no Linen "
                "collection.\n"
                "Wrap it in the Variable type of its collection (nnx.Param for 'params', ...), or keep it out "
                "of the ToNNX wrapper."
            )
        flat[(variable_name_from_type(type(v), allow_register=True), *path)] = linen_value(v)
    return unflatten_mapping(flat)
