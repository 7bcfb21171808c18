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
``PathContains(k, exact=F)``  values with an element whose text contains ``str(k)``
``PathIn(path, ...)``         values at exactly one of these paths
a callable ``(path, value)``  what it returns
============================  =========================================================

In a list of filters (``nnx.split(model, nnx.Param, ...)``) the first match wins, so ``...``
(or ``True``) takes everything left: it may only come last. :func:`filters_to_predicates`
checks that, and every place that takes a list of filters calls it.

The reference names this module ``filterlib``; ``nnx.filterlib.OfType`` works too.

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
    "filters_to_predicates",
    "Not",
    "All",
    "Any",
    "PathContains",
    "PathIn",
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
    """Matches instances of ``type`` (what a bare type as a filter means).

    Example:
        >>> import plait as nnx
        >>> nnx.OfType(nnx.Param)((), nnx.Param(0)), nnx.OfType(nnx.Param).type.__name__
        (True, 'Param')
    """

    def __init__(self, type: type) -> None:  # noqa: A002 (the reference's field name)
        self.kind = type

    @property
    def type(self) -> type:
        return self.kind

    def __call__(self, path: tuple, value: builtins.object) -> bool:
        return isinstance(value, self.kind)

    def _key(self) -> tuple:
        return (self.kind,)

    def __repr__(self) -> str:
        return f"OfType({self.kind.__name__})"


class WithTag(_Predicate):
    """Matches Variables (and RNG streams) whose ``tag`` is ``tag``: a string filter.

    Example:
        >>> import plait as nnx
        >>> nnx.WithTag("dropout")((), nnx.Rngs(dropout=0).dropout.key)
        True
    """

    def __init__(self, tag: str) -> None:
        self.tag = tag

    def __call__(self, path: tuple, value: builtins.object) -> bool:
        meta = getattr(value, "_meta", None)
        if meta is not None:
            return meta.get("tag") == self.tag
        return isinstance(getattr(value, "tag", None), str) and value.tag == self.tag  # e.g. an RngStream

    def _key(self) -> tuple:
        return (self.tag,)

    def __repr__(self) -> str:
        return f"WithTag({self.tag!r})"


class PathContains(_Predicate):
    """Matches values whose path (tuple of attribute names / indices) contains ``key``.

    With ``exact=False`` it is enough that one element's text contains ``str(key)``.

    Example:
        >>> import plait as nnx
        >>> nnx.PathContains("dropout")(("blocks", 0, "dropout", "rngs"), None)
        True
        >>> nnx.PathContains("drop")(("dropout",), None), nnx.PathContains("drop", exact=False)(("dropout",), None)
        (False, True)
    """

    def __init__(self, key: typing.Any, exact: bool = True) -> None:
        self.key = key
        self.exact = exact

    def __call__(self, path: tuple, value: builtins.object) -> bool:
        if self.exact:
            return self.key in path
        text = str(self.key)
        return any(text in str(part) for part in path)

    def _key(self) -> tuple:
        return (self.key, self.exact)

    def __repr__(self) -> str:
        return f"PathContains({self.key!r})" if self.exact else f"PathContains({self.key!r}, exact=False)"


class PathIn(_Predicate):
    """Matches values at exactly one of ``paths`` (tuples of path parts).

    Example:
        >>> import plait as nnx
        >>> f = nnx.filters.PathIn(("linear", "kernel"), ("bias",))
        >>> f(("linear", "kernel"), None), f(("linear", "bias"), None)
        (True, False)
    """

    def __init__(self, *paths: tuple) -> None:
        self.paths = frozenset(tuple(p) for p in paths)

    def __call__(self, path: tuple, value: builtins.object) -> bool:
        return path in self.paths

    def _key(self) -> tuple:
        return (self.paths,)

    def __repr__(self) -> str:
        return f"PathIn({', '.join(map(repr, sorted(self.paths, key=repr)))})"


class Everything(_Predicate):
    """Matches everything (what ``...`` and ``True`` mean as filters)."""

    def __call__(self, path: tuple, value: builtins.object) -> bool:
        return True

    def __repr__(self) -> str:
        return "Everything()"


class Nothing(_Predicate):
    """Matches nothing (what ``None`` and ``False`` mean as filters)."""

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


def _filter_text(f: Filter) -> str:
    if f is Ellipsis:
        return "..."
    return f"nnx.{f.__name__}" if isinstance(f, type) else repr(f)


def filters_to_predicates(filters: typing.Sequence[Filter], where: str = "filters") -> tuple[Predicate, ...]:
    """The predicates of a list of filters, where the first match wins.

    ``...`` (or ``True``, ``nnx.Everything()``) matches everything, so a filter after it
    could never match: that is refused with a :class:`~plait.errors.FilterError`.

    Example:
        >>> import plait as nnx
        >>> len(nnx.filters.filters_to_predicates([nnx.Param, ...]))
        2
        >>> try:
        ...     nnx.filters.filters_to_predicates([..., nnx.Param])
        ... except nnx.FilterError as e:
        ...     print(str(e).splitlines()[0])
        filters (..., nnx.Param): `...` at position 0 matches everything, so nnx.Param after it would never match.
    """
    predicates = tuple(to_predicate(f) for f in filters)
    for i, p in enumerate(predicates[:-1]):
        if type(p) is Everything:
            later = [f for f, q in zip(filters[i + 1 :], predicates[i + 1 :]) if type(q) is not Everything]
            if not later:
                continue
            names = ", ".join(_filter_text(f) for f in filters)
            rest = [_filter_text(f) for f in filters if type(to_predicate(f)) is not Everything]
            raise FilterError(
                f"{where} ({names}): `{_filter_text(filters[i])}` at position {i} matches everything, so "
                f"{', '.join(_filter_text(f) for f in later)} after it would never match.\n"
                "The first filter that matches takes a Variable; put `...` last to collect the rest: "
                f"({', '.join([*rest, '...'])})"
            )
    return predicates
