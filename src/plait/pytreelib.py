"""``nnx.pytreelib``: the reference's data/static module (0.10's ``nnx.object``), as
plait's :mod:`plait.pytree` names.

Example:
    >>> import plait as nnx
    >>> nnx.pytreelib.Pytree is nnx.Pytree, nnx.pytreelib.data is nnx.data
    (True, True)
"""

from __future__ import annotations

from .namespaces import missing
from .object import Object
from .pytree import (
    Data,
    Pytree,
    Static,
    check_pytree,
    data,
    dataclass,
    field,
    has_data,
    is_data,
    register_data_type,
    static,
)

__all__ = [
    "Data", "Object", "Pytree", "Static", "check_pytree", "data", "dataclass", "field", "has_data", "is_data",
    "register_data_type", "static",
]

__getattr__ = missing("pytreelib")
