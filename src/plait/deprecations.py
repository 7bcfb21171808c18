"""``nnx.deprecations``: :func:`deprecated`, the reference's helper for renamed functions.

Example:
    >>> import warnings, plait as nnx
    >>> def new_api(x):
    ...     return x * 2
    >>> old_api = nnx.deprecations.deprecated(new_api)
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     old_api(1), str(caught[0].message)
    (2, 'This function is deprecated. Use new_api instead.')
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

from .namespaces import missing

__all__ = ["deprecated"]

F = TypeVar("F", bound=Callable[..., Any])


def deprecated(new_fn: F) -> F:
    """``new_fn`` under an old name: each call warns (``DeprecationWarning``, as the
    reference's), then calls it; the docstring says what to use.

    Example:
        >>> import plait as nnx
        >>> nnx.deprecations.deprecated(len).__doc__.splitlines()[0]
        'Deprecated: use len instead.'
    """
    name = getattr(new_fn, "__qualname__", repr(new_fn))

    @functools.wraps(new_fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        warnings.warn(f"This function is deprecated. Use {name} instead.", DeprecationWarning, stacklevel=2)
        return new_fn(*args, **kwargs)

    wrapper.__doc__ = f"Deprecated: use {name} instead.\n\n{new_fn.__doc__ or ''}"
    return wrapper  # type: ignore[return-value]


__getattr__ = missing("deprecations")
