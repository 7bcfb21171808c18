"""Filters: ways to select Variables in a module graph.

A filter is turned into a predicate ``(path, value) -> bool`` by :func:`to_predicate`:

============================  =========================================================
filter                        matches
============================  =========================================================
a type (``nnx.Param``)        values that are instances of it
a string (``'dropout'``)      Variables whose ``tag`` metadata is that string (RNG streams)
``...`` or ``True``           everything
``None`` or ``False``         nothing
a tuple/list of filters       any of them
``Not(f)``, ``All(..)``,      negation, conjunction, disjunction
``Any(..)``
``PathContains(key)``         values whose path has ``key`` as one element
a callable ``(path, value)``  what it returns
============================  =========================================================

Example:
    >>> import plait as nnx
    >>> is_rng = nnx.filters.to_predicate(nnx.RngState)
    >>> is_rng(("rngs", "default", "key"), nnx.RngKey(0)), is_rng((), nnx.Param(0))
    (True, False)
"""

from __future__ import annotations

import builtins
import typing
from collections.abc import Callable
from typing import Union

from .errors import FilterError

__all__ = [
    "Filter",
    "Predicate",
    "to_predicate",
    "Not",
    "All",
    "Any",
    "PathContains",
    "OfType",
    "WithTag",
    "Everything",
    "Nothing",
]

Predicate = Callable[[tuple, builtins.object], bool]
Filter = Union[type, str, "ellipsis", bool, None, Callable, tuple, list]  # noqa: F821


class _Predicate:
    """Base of the named predicates; they compare equal by what they match."""

    def __eq__(self, other: builtins.object) -> bool:
        return type(self) is type(other) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash((type(self), self._key()))

    def _key(self) -> tuple:
        return ()


class OfType(_Predicate):
    def __init__(self, kind: type) -> None:
        self.kind = kind

    def __call__(self, path: tuple, value: builtins.object) -> bool:
        return isinstance(value, self.kind)

    def _key(self) -> tuple:
        return (self.kind,)

    def __repr__(self) -> str:
        return f"OfType({self.kind.__name__})"


class WithTag(_Predicate):
    def __init__(self, tag: str) -> None:
        self.tag = tag

    def __call__(self, path: tuple, value: builtins.object) -> bool:
        meta = getattr(value, "_meta", None)
        return meta is not None and meta.get("tag") == self.tag

    def _key(self) -> tuple:
        return (self.tag,)

    def __repr__(self) -> str:
        return f"WithTag({self.tag!r})"


class PathContains(_Predicate):
    """Matches values whose path (tuple of attribute names / indices) contains ``key``.

    Example:
        >>> import plait as nnx
        >>> nnx.PathContains("dropout")(("blocks", 0, "dropout", "rngs"), None)
        True
    """

    def __init__(self, key: typing.Any) -> None:
        self.key = key

    def __call__(self, path: tuple, value: builtins.object) -> bool:
        return self.key in path

    def _key(self) -> tuple:
        return (self.key,)

    def __repr__(self) -> str:
        return f"PathContains({self.key!r})"


class Everything(_Predicate):
    def __call__(self, path: tuple, value: builtins.object) -> bool:
        return True

    def __repr__(self) -> str:
        return "Everything()"


class Nothing(_Predicate):
    def __call__(self, path: tuple, value: builtins.object) -> bool:
        return False

    def __repr__(self) -> str:
        return "Nothing()"


class Not(_Predicate):
    """Matches what ``filter`` does not.

    Example:
        >>> import plait as nnx
        >>> nnx.filters.to_predicate(nnx.Not(nnx.Param))((), nnx.BatchStat(0))
        True
    """

    def __init__(self, filter: Filter) -> None:
        self.filter = filter
        self.predicate = to_predicate(filter)

    def __call__(self, path: tuple, value: builtins.object) -> bool:
        return not self.predicate(path, value)

    def _key(self) -> tuple:
        return (self.predicate,)

    def __repr__(self) -> str:
        return f"Not({self.filter!r})"


class All(_Predicate):
    """Matches what every one of ``filters`` matches."""

    def __init__(self, *filters: Filter) -> None:
        self.filters = filters
        self.predicates = tuple(to_predicate(f) for f in filters)

    def __call__(self, path: tuple, value: builtins.object) -> bool:
        return all(p(path, value) for p in self.predicates)

    def _key(self) -> tuple:
        return self.predicates

    def __repr__(self) -> str:
        return f"All{self.filters!r}"


class Any(_Predicate):
    """Matches what at least one of ``filters`` matches."""

    def __init__(self, *filters: Filter) -> None:
        self.filters = filters
        self.predicates = tuple(to_predicate(f) for f in filters)

    def __call__(self, path: tuple, value: builtins.object) -> bool:
        return any(p(path, value) for p in self.predicates)

    def _key(self) -> tuple:
        return self.predicates

    def __repr__(self) -> str:
        return f"Any{self.filters!r}"


def to_predicate(filter: Filter) -> Predicate:
    """Turn a filter into a predicate ``(path, value) -> bool``; see the module docstring."""
    if isinstance(filter, _Predicate):
        return filter
    if isinstance(filter, type):
        return OfType(filter)
    if isinstance(filter, str):
        return WithTag(filter)
    if filter is Ellipsis or filter is True:
        return Everything()
    if filter is None or filter is False:
        return Nothing()
    if isinstance(filter, (tuple, list)):
        return Any(*filter)
    if callable(filter):
        return filter
    raise FilterError(
        f"{filter!r} (a {type(filter).__name__}) is not a filter.\n"
        "A filter is a Variable type (nnx.Param), a stream tag ('dropout'), ... (everything), "
        "None (nothing), nnx.Not/All/Any/PathContains, a tuple of filters, or a function "
        "(path, value) -> bool.\n"
        "For example: nnx.state(model, nnx.Param) or nnx.split(model, nnx.Param, ...)"
    )
