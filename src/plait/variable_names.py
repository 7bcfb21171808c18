"""Variable types by collection name: ``'params'`` is ``Param``, ``'batch_stats'`` is
``BatchStat``, and so on (the names the reference's Linen interoperation uses).

Example:
    >>> import plait as nnx
    >>> nnx.variable_type_from_name("params") is nnx.Param
    True
"""

from __future__ import annotations

import functools
from typing import Any

from .errors import VariableError
from .variables import BatchStat, Cache, Intermediate, Param, Perturbation, Variable

__all__ = ["register_variable_name", "variable_name_from_type", "variable_type_from_name"]

_MISSING = object()

_TYPES_BY_NAME: dict[str, type] = {}


def register_variable_name(name: str, typ: Any = _MISSING, *, overwrite: bool = False) -> Any:
    """Map collection name ``name`` to Variable type ``typ`` (also a class decorator).

    Example:
        >>> import plait as nnx
        >>> @nnx.register_variable_name("counters")
        ... class Counter(nnx.Variable):
        ...     pass
        >>> nnx.variable_type_from_name("counters") is Counter, nnx.variable_name_from_type(Counter)
        (True, 'counters')
    """
    if typ is _MISSING:
        return functools.partial(register_variable_name, name, overwrite=overwrite)
    if not (isinstance(typ, type) and issubclass(typ, Variable)):
        raise VariableError(f"register_variable_name({name!r}, ...) needs a Variable type, got {typ!r}")
    if not overwrite and name in _TYPES_BY_NAME and _TYPES_BY_NAME[name] is not typ:
        raise VariableError(
            f"the name {name!r} already names {_TYPES_BY_NAME[name].__name__}.\n"
            f"To map it to {typ.__name__} instead: nnx.register_variable_name({name!r}, {typ.__name__}, overwrite=True)"
        )
    _TYPES_BY_NAME[name] = typ
    return typ


def variable_type_from_name(name: str, /, *, base: type = Variable, allow_register: bool = False) -> type:
    """The Variable type registered under ``name`` (with ``allow_register``, a new subclass
    of ``base`` named ``name`` is made and registered if there is none)."""
    if name not in _TYPES_BY_NAME:
        if not allow_register:
            raise VariableError(
                f"no Variable type is registered under the name {name!r} (registered: {sorted(_TYPES_BY_NAME)}).\n"
                f"Register one: nnx.register_variable_name({name!r}, MyVariable), or pass allow_register=True"
            )
        _TYPES_BY_NAME[name] = type(name, (base,), {"__slots__": ()})
    return _TYPES_BY_NAME[name]


def variable_name_from_type(typ: type, /, *, allow_register: bool = False) -> str:
    """The collection name of Variable type ``typ`` (the inverse of :func:`variable_type_from_name`)."""
    for name, t in _TYPES_BY_NAME.items():
        if t is typ:
            return name
    if not allow_register:
        raise VariableError(
            f"{getattr(typ, '__name__', typ)} has no registered collection name.\n"
            f"Register one: nnx.register_variable_name('my_name', {getattr(typ, '__name__', 'MyVariable')}), "
            "or pass allow_register=True to use its class name"
        )
    if typ.__name__ in _TYPES_BY_NAME:
        raise VariableError(f"the name {typ.__name__!r} already names {_TYPES_BY_NAME[typ.__name__].__name__}")
    return register_variable_name(typ.__name__, typ).__name__


register_variable_name("params", Param)
register_variable_name("batch_stats", BatchStat)
register_variable_name("cache", Cache)
register_variable_name("intermediates", Intermediate)
register_variable_name("perturbations", Perturbation)
