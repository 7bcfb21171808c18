"""Data and static attributes: ``nnx.data``, ``nnx.static``, ``nnx.dataclass``, ``nnx.Pytree``.

In plait an attribute's role follows from what it holds: arrays, Variables and modules (at
any depth in lists, dicts, tuples and pytrees) are *state*, leaves of the encoding that
transforms trace and write back; everything else (ints, strings, functions, Python floats
held by a module) is *structure*, kept in the ``GraphDef``. Flax NNX 0.12 lets a class say
so explicitly, and so does plait:

* ``self.x = nnx.data(value)``: ``x`` is state. Python numbers inside become 0-d arrays (so a
  float you want traced, a temperature, is a leaf); later assignments to ``x`` stay data.
* ``self.x = nnx.static(value)``: ``x`` is structure. Arrays, Variables or modules inside are
  refused (now and on any later assignment to ``x``): they would be compared by value,
  never traced.
* ``x: int = nnx.static()`` / ``w: jax.Array = nnx.data()`` as fields of an
  :func:`dataclass` mark every instance's attribute.

The marks live in the object (the attribute ``_plait_marks``), so ``split``/``merge``,
transforms, ``clone`` and pickling keep them; the mechanics are in :mod:`plait.object`.

``nnx.Pytree`` is :class:`~plait.object.Object`, the base of every graph node. Unlike the
reference, plait objects are *not* JAX pytrees (``pytree=True`` is refused): a raw
``jax.jit`` would copy shared sub-modules apart and drop the writes. Use plait's
transforms on objects, or ``nnx.split``/``nnx.state`` for a pytree of their state.

Example:
    >>> import jax.numpy as jnp, plait as nnx
    >>> class Scale(nnx.Pytree):
    ...     def __init__(self):
    ...         self.temperature = nnx.data(2.0)   # traced: a 0-d array
    ...         self.name = nnx.static("scale")    # structure
    >>> s = Scale()
    >>> float(s.temperature), nnx.is_data(s.temperature), nnx.is_data(s.name)
    (2.0, True, False)
    >>> nnx.jit(lambda s, x: x / s.temperature)(s, jnp.ones(2)).tolist()
    [0.5, 0.5]
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, TypeVar

import jax
import numpy as np

from .errors import GraphError
from .object import DATA_ANNOTATION, DATA_TYPES, MARK, MARK_VALUE, STATIC_ANNOTATION, Object, data_leaves, mark_of

__all__ = ["Pytree", "data", "static", "dataclass", "is_data", "has_data", "register_data_type", "check_pytree",
           "Data", "Static", "field"]

T = TypeVar("T")

#: The base of objects with data and static attributes: plait's :class:`~plait.object.Object`.
Pytree = Object

#: ``x: nnx.Data[jax.Array]`` in a class body marks ``x`` as data for every instance, as
#: ``x: jax.Array = nnx.data()`` does (the reference's deprecated spelling: it warns).
Data = Annotated[T, DATA_ANNOTATION]
#: ``x: nnx.Static[int]`` in a class body marks ``x`` as static for every instance, as
#: ``x: int = nnx.static()`` does (the reference's deprecated spelling: it warns).
Static = Annotated[T, STATIC_ANNOTATION]


def _marker(is_static: bool, value: Any, kwargs: dict) -> Any:
    what = "static" if is_static else "data"
    if value is not dataclasses.MISSING and kwargs:
        raise TypeError(
            f"nnx.{what}() takes either one value (self.x = nnx.{what}(value)) or field keywords "
            f"(x: int = nnx.{what}(default=...)), not both"
        )
    metadata = dict(kwargs.pop("metadata", None) or {})
    if MARK in metadata:
        raise ValueError(f"nnx.{what}(metadata=...) cannot use the key {MARK!r}: plait uses it for the mark")
    metadata[MARK], metadata[MARK_VALUE] = is_static, value
    return dataclasses.field(**kwargs, metadata=metadata)


def data(value: Any = dataclasses.MISSING, /, **kwargs: Any) -> Any:
    """Mark an attribute as state: ``self.x = nnx.data(value)``, or a field ``x: T = nnx.data()``.

    Python numbers inside ``value`` are stored as 0-d arrays so that transforms trace them.
    Keywords (``default``, ``default_factory``, ``init``, ...) are those of ``dataclasses.field``.

    Example:
        >>> import plait as nnx
        >>> class Cell(nnx.Module):
        ...     def __init__(self):
        ...         self.steps = nnx.data([0, 1])      # a list of traced numbers
        >>> [type(x).__name__ for x in Cell().steps]
        ['ArrayImpl', 'ArrayImpl']
    """
    return _marker(False, value, kwargs)


def static(value: Any = dataclasses.MISSING, /, **kwargs: Any) -> Any:
    """Mark an attribute as structure: ``self.x = nnx.static(value)``, or a field ``x: T = nnx.static()``.

    A static attribute is part of the ``GraphDef``; arrays, Variables or modules in it are
    refused with a :class:`~plait.errors.GraphError`, now and on later assignments.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> class Block(nnx.Module):
        ...     def __init__(self):
        ...         self.features = nnx.static((4, 8))
        >>> b = Block()
        >>> try:
        ...     b.features = jnp.ones(2)
        ... except nnx.GraphError as e:
        ...     print(str(e).splitlines()[0][:75])
        `Block.features`: a ArrayImpl was assigned to this attribute, marked static
    """
    return _marker(True, value, kwargs)


def field(*, static: bool = False, **kwargs: Any) -> Any:
    """A field of an :func:`dataclass` (Flax NNX 0.10's ``nnx.field``): ``static=True`` is
    ``nnx.static(...)``, ``static=False`` is ``nnx.data(...)``.

    The other keywords (``default``, ``default_factory``, ``init``, ``metadata``, ...) are those
    of ``dataclasses.field``; the field's metadata also gets ``"static": static``, as in the reference.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> @nnx.dataclass
        ... class Scaled(nnx.Pytree):
        ...     scale: float = nnx.field(default=2.0)
        ...     name: str = nnx.field(static=True, default="s")
        >>> s = Scaled()
        >>> type(s.scale).__name__, s.name, nnx.is_data(s.scale)
        ('ArrayImpl', 's', True)
    """
    metadata = dict(kwargs.pop("metadata", None) or {})
    if "static" in metadata and metadata["static"] != static:
        raise ValueError(
            f"nnx.field(static={static!r}, metadata={{'static': {metadata['static']!r}}}): the two disagree. "
            "Give static= only."
        )
    metadata["static"] = static
    return _marker(static, dataclasses.MISSING, {**kwargs, "metadata": metadata})


def dataclass(
    cls: type | None = None,
    /,
    *,
    init: bool = True,
    eq: bool = True,
    order: bool = False,
    unsafe_hash: bool = False,
    match_args: bool = True,
    kw_only: bool = False,
    slots: bool = False,
    weakref_slot: bool = False,
) -> Any:
    """``dataclasses.dataclass`` for modules and other plait objects, with ``nnx.data``/``nnx.static`` fields.

    The generated ``__init__`` assigns each field, so marks apply as they do for
    ``self.x = ...``. The ``repr`` stays plait's graph view.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> @nnx.dataclass
        ... class Affine(nnx.Module):
        ...     w: nnx.Param
        ...     features: int = nnx.static(default=3)
        ...     def __call__(self, x):
        ...         return x @ self.w
        >>> m = Affine(nnx.Param(jnp.ones((2, 3))))
        >>> m.features, m(jnp.ones((1, 2))).shape
        (3, (1, 3))
    """
    if slots or weakref_slot:
        raise TypeError(
            "nnx.dataclass(slots=True/weakref_slot=True): plait objects keep their attributes in __dict__ (the "
            "graph walks it) and already have a weakref slot. Leave slots and weakref_slot out."
        )

    def wrap(c: type) -> type:
        if not (isinstance(c, type) and issubclass(c, Object)):
            raise TypeError(
                f"nnx.dataclass decorates plait objects (nnx.Module, nnx.Pytree subclasses); got {c!r}. "
                "For other classes use dataclasses.dataclass (and jax.tree_util.register_dataclass for a pytree)."
            )
        return dataclasses.dataclass(c, init=init, eq=eq, order=order, unsafe_hash=unsafe_hash,
                                     match_args=match_args, kw_only=kw_only, repr=False)

    return wrap if cls is None else wrap(cls)


def register_data_type(type_: type[T], /) -> type[T]:
    """Make values of ``type_`` count as data (``nnx.is_data``), so ``nnx.static`` refuses them.

    Plait walks such values as it walks any pytree: the arrays inside are state. (A type
    opaque to JAX stays one static value in the encoding.)

    Example:
        >>> import plait as nnx
        >>> @nnx.register_data_type
        ... class Stats:
        ...     pass
        >>> nnx.is_data(Stats())
        True
    """
    DATA_TYPES.add(type_)
    return type_


def is_data(value: Any, /) -> bool:
    """True for values that are data by themselves: arrays, Variables, graph nodes (modules,
    ``Rngs``), and registered data types. Containers are not (see :func:`has_data`).

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> nnx.is_data(jnp.ones(2)), nnx.is_data(nnx.Param(1)), nnx.is_data(3), nnx.is_data([jnp.ones(2)])
        (True, True, False, False)
    """
    return hasattr(value, "_plait_node") or isinstance(value, (np.ndarray, jax.Array)) or type(value) in DATA_TYPES


def has_data(value: Any, /) -> list:
    """The data values (see :func:`is_data`) inside ``value``, looking through containers and pytrees.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> [x.shape for x in nnx.has_data({"a": [jnp.ones(2), "text"], "b": 1})]
        [(2,)]
    """
    return data_leaves(value)


def check_pytree(pytree: Any, /) -> None:
    """Check that no static attribute of ``pytree`` (marked with ``nnx.static``) holds data.

    Example:
        >>> import plait as nnx
        >>> nnx.check_pytree(nnx.Linear(2, 2, rngs=nnx.Rngs(0)))
    """
    if not isinstance(pytree, Object):
        raise TypeError(f"check_pytree expects a plait object (nnx.Pytree / nnx.Module), got {type(pytree).__name__}")
    for name, value in vars(pytree).items():
        if mark_of(pytree, name):
            found = data_leaves(value)
            if found:
                kinds = sorted({type(x).__name__ for x in found})
                raise GraphError(
                    f"`{type(pytree).__name__}.{name}` is marked static (nnx.static) but holds data "
                    f"({', '.join(kinds)}).\nMake it data: self.{name} = nnx.data(...), or keep the arrays out of it."
                )
