"""Flax NNX 0.12's Variable modes (``hijax``, ``ref``, ``mutable``): ``nnx.with_vars``,
``nnx.vars_as``, ``nnx.var_defaults``.

The reference can back a Variable by a JAX mutable array (``ref=True``) or a hijax type
(``hijax=True``), and can make it immutable (``mutable=False``). A plait Variable is one
kind of thing: a plain mutable Python cell whose value plait's transforms carry in and out
(that is what writes state back, with no mutable arrays involved). So these functions
accept the values that describe plait's Variables (``hijax=False``, ``ref=False``,
``mutable=True``) and refuse the others with a :class:`~plait.errors.VariableError`
instead of accepting and ignoring them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

from .errors import VariableError
from .filters import Filter, to_predicate
from .mode import NoOpContext
from .views import _copy_sharing_variables

__all__ = ["with_vars", "vars_as", "var_defaults", "VarDefaults"]

A = TypeVar("A")
F = TypeVar("F", bound=Callable[..., Any])


def _refuse(where: str, hijax: Any, ref: Any, mutable: Any = None) -> None:
    for name, value, plain in (("hijax", hijax, False), ("ref", ref, False), ("mutable", mutable, True)):
        if value is None or value is plain:
            continue
        if value is not (not plain):
            raise VariableError(f"{where}: {name} must be True, False or None, got {value!r}")
        raise VariableError(
            f"{where}({name}={value!r}): plait Variables are plain mutable Python cells that its transforms carry "
            f"in and out; there is no {'immutable' if name == 'mutable' else name} mode.\n"
            f"Leave {name} out (or pass {name}={plain!r})."
            + (" To keep a Variable from changing, leave it out of the optimizer (wrt=nnx.Param) or differentiate "
               "with a DiffState filter." if name == "mutable" else "")
        )


def with_vars(node: A, /, *, hijax: bool | None = None, ref: bool | None = None, mutable: bool | None = None,
              only: Filter = ..., allow_duplicates: bool = False) -> A:
    """A copy of ``node`` (sharing its Variables) with the Variables ``only`` selects in the given mode.

    plait's Variables are always ``hijax=False, ref=False, mutable=True``: asking for that
    returns a copy sharing every Variable (as the reference does when nothing changes);
    asking for another mode raises :class:`~plait.errors.VariableError`.

    Example:
        >>> import plait as nnx
        >>> model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
        >>> nnx.with_vars(model, ref=False).kernel is model.kernel
        True
    """
    _refuse("nnx.with_vars", hijax, ref, mutable)
    to_predicate(only)  # a bad filter is an error here too
    return _copy_sharing_variables(node)


def vars_as(node: A, /, **kwargs: Any) -> A:
    """Deprecated spelling of :func:`with_vars` (as in the reference).

    Example:
        >>> import warnings, plait as nnx
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     copy = nnx.vars_as(nnx.Linear(2, 2, rngs=nnx.Rngs(0)), hijax=False)
        >>> type(copy).__name__
        'Linear'
    """
    warnings.warn("'vars_as' is deprecated, use 'with_vars' instead.", DeprecationWarning, stacklevel=2)
    return with_vars(node, **kwargs)


class VarDefaults(NamedTuple):
    """The defaults new Variables get: in plait always ``hijax=False, ref=False``."""

    hijax: bool
    ref: bool


class _VarDefaultsContext(NoOpContext):
    pass


def var_defaults(*, hijax: bool | None = None, ref: bool | None = None) -> Any:
    """The defaults for new Variables (no arguments), or a context/decorator setting them.

    Only plait's one kind of Variable exists: ``hijax=False``/``ref=False`` are accepted
    (a no-op), ``True`` is refused.

    Example:
        >>> import plait as nnx
        >>> nnx.var_defaults()
        VarDefaults(hijax=False, ref=False)
        >>> with nnx.var_defaults(hijax=False):
        ...     nnx.Param(1.0).value
        1.0
    """
    if hijax is None and ref is None:
        return VarDefaults(hijax=False, ref=False)
    _refuse("nnx.var_defaults", hijax, ref)
    return _VarDefaultsContext()
