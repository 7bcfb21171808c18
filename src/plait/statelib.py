"""``nnx.statelib``: the reference's State module, as plait's :mod:`plait.state` names.

Example:
    >>> import plait as nnx
    >>> nnx.statelib.State is nnx.State, nnx.statelib.to_flat_state is nnx.to_flat_state
    (True, True)
"""

from __future__ import annotations

from .namespaces import missing
from .state import (
    FlatState,
    State,
    filter_state,
    from_flat_state,
    map_state,
    merge_state,
    replace_by_pure_dict,
    restore_int_paths,
    split_state,
    to_flat_state,
    to_pure_dict,
)

__all__ = [
    "FlatState", "State", "filter_state", "from_flat_state", "map_state", "merge_state", "replace_by_pure_dict",
    "restore_int_paths", "split_state", "to_flat_state", "to_pure_dict",
]

__getattr__ = missing("statelib", {
    "diff": "compare States with == or filter one with nnx.filter_state",
    "create_path_filters": "nnx.PathContains / a (path, value) predicate as a filter",
})
