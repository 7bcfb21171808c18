"""The reference's name for :mod:`plait.filters`: ``nnx.filterlib.OfType`` and
``from plait.filterlib import WithTag`` work as they do there.

Example:
    >>> import plait as nnx
    >>> nnx.filterlib.OfType is nnx.OfType
    True
"""

from .filters import (
    All,
    Any,
    Everything,
    Filter,
    Not,
    Nothing,
    OfType,
    PathContains,
    PathIn,
    Predicate,
    WithTag,
    filters_to_predicates,
    to_predicate,
)

__all__ = [
    "All", "Any", "Everything", "Filter", "Not", "Nothing", "OfType", "PathContains", "PathIn", "Predicate",
    "WithTag", "filters_to_predicates", "to_predicate",
]
