"""``nnx.helpers``: the reference's helper classes (``Sequential``, ``List``, ``Dict``,
``TrainState``), as plait's.

Example:
    >>> import plait as nnx
    >>> nnx.helpers.Sequential is nnx.Sequential, nnx.helpers.TrainState is nnx.TrainState
    (True, True)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from .namespaces import missing
from .nn.sequential import Sequential
from .object import Dict, List
from .train_state import TrainState

__all__ = ["Dict", "List", "Sequential", "TrainState", "has_keyword_arg"]


def has_keyword_arg(func: Callable[..., Any], name: str) -> bool:
    """True if ``func`` takes a parameter ``name`` by keyword (as the reference's helper).

    Example:
        >>> import plait as nnx
        >>> nnx.helpers.has_keyword_arg(lambda x, *, train: x, "train")
        True
    """
    return any(p.name == name and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
               for p in inspect.signature(func).parameters.values())


__getattr__ = missing("helpers")
