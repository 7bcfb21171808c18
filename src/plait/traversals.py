"""``nnx.traversals``: flatten and unflatten nested mappings (paths as tuples or joined strings).

Empty mappings are dropped unless ``keep_empty_nodes=True``, which keeps them as
:data:`empty_node` so that :func:`unflatten_mapping` restores them.

Example:
    >>> import plait as nnx
    >>> flat = nnx.traversals.flatten_mapping({"a": 1, "b": {"c": 2, "d": {}}})
    >>> flat
    {('a',): 1, ('b', 'c'): 2}
    >>> nnx.traversals.unflatten_mapping(flat)
    {'a': 1, 'b': {'c': 2}}
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .namespaces import missing

__all__ = ["empty_node", "flatten_mapping", "flatten_to_sequence", "unflatten_mapping"]


class _EmptyNode:
    """The value standing for an empty mapping in a flattened one (``keep_empty_nodes=True``)."""

    def __repr__(self) -> str:
        return "empty_node"


#: What an empty mapping flattens to with ``keep_empty_nodes=True``.
empty_node = _EmptyNode()

IsLeaf = Callable[[tuple, Any], bool]


def _walk(xs: Any, prefix: tuple, is_leaf: IsLeaf | None, keep_empty: bool, out: list) -> None:
    if not isinstance(xs, Mapping) or (is_leaf is not None and is_leaf(prefix, xs)):
        out.append((prefix, xs))
        return
    if not xs and keep_empty and prefix:
        out.append((prefix, empty_node))
    for key, value in xs.items():
        _walk(value, (*prefix, key), is_leaf, keep_empty, out)


def _check_mapping(xs: Any, where: str) -> None:
    if not isinstance(xs, Mapping):
        raise TypeError(f"{where} expects a mapping (a dict, a State, ...), got a {type(xs).__qualname__}")


def flatten_mapping(xs: Mapping[Any, Any], /, *, keep_empty_nodes: bool = False, is_leaf: IsLeaf | None = None,
                    sep: str | None = None) -> dict[Any, Any]:
    """``{path: leaf}`` for a nested mapping; paths are tuples of keys, or ``sep``-joined strings.

    ``is_leaf(path, mapping)`` may stop the descent at a mapping.

    Example:
        >>> import plait as nnx
        >>> nnx.traversals.flatten_mapping({"a": {"b": 1}}, sep="/")
        {'a/b': 1}
    """
    _check_mapping(xs, "flatten_mapping")
    out: list = []
    _walk(xs, (), is_leaf, keep_empty_nodes, out)
    if sep is None:
        return dict(out)
    return {sep.join(map(str, path)): value for path, value in out}


def flatten_to_sequence(xs: Mapping[Any, Any], /, *, is_leaf: IsLeaf | None = None) -> list[tuple[tuple, Any]]:
    """``[(path, leaf), ...]`` for a nested mapping, in its order.

    Example:
        >>> import plait as nnx
        >>> nnx.traversals.flatten_to_sequence({"a": 1, "b": {"c": 2}})
        [(('a',), 1), (('b', 'c'), 2)]
    """
    _check_mapping(xs, "flatten_to_sequence")
    out: list = []
    _walk(xs, (), is_leaf, False, out)
    return out


def unflatten_mapping(xs: Mapping[Any, Any] | Iterable[tuple[Any, Any]], /, *, sep: str | None = None) -> dict:
    """The nested dict of a flattened mapping (or of ``(path, value)`` pairs); see :func:`flatten_mapping`.

    Example:
        >>> import plait as nnx
        >>> nnx.traversals.unflatten_mapping({"a/b": 1, "c": 2}, sep="/")
        {'a': {'b': 1}, 'c': 2}
    """
    items = xs.items() if isinstance(xs, Mapping) else xs
    if not isinstance(items, Iterable):
        raise TypeError(f"unflatten_mapping expects a mapping or (path, value) pairs, got a {type(xs).__qualname__}")
    result: dict = {}
    for path, value in items:
        keys = tuple(path.split(sep)) if sep is not None else tuple(path)
        if not keys:
            raise ValueError("unflatten_mapping: an empty path has no place in a nested mapping")
        cursor = result
        for key in keys[:-1]:
            cursor = cursor.setdefault(key, {})
        cursor[keys[-1]] = {} if value is empty_node else value
    return result


__getattr__ = missing("traversals")
