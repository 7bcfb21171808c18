"""The reference's type names for annotations: ``nnx.A``, ``nnx.M``, ``nnx.Initializer``.

Example:
    >>> import plait as nnx
    >>> def first(xs: list[nnx.A]) -> nnx.A:
    ...     return xs[0]
    >>> first([3, 4])
    3
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, Union

import jax

from .module import Module

__all__ = ["A", "M", "Initializer"]

A = TypeVar("A")
M = TypeVar("M", bound=Module)
Initializer = Union[jax.nn.initializers.Initializer, Callable[..., Any]]  # noqa: UP007  (a runtime alias)
