"""Flax NNX 0.12's Variable modes (``hijax``, ``ref``, ``mutable``): ``nnx.with_vars``,
``nnx.vars_as``, ``nnx.var_defaults``.

The reference can back a Variable by a JAX mutable array (``ref=True``) or a hijax type
(``hijax=True``), and can make it immutable (``mutable=False``). A plait Variable is a plain
mutable Python cell whose value plait's transforms carry in and out, or (``ref=True``) a
cell backed by a JAX ref (see :mod:`plait.array_refs`). ``with_vars(ref=...)`` converts a
model's Variables either way, and ``var_defaults(ref=True)`` makes new ones ref-backed for a
block of code; the other modes (``hijax=True``, ``mutable=False``) are refused with a
:class:`~plait.errors.VariableError` instead of being accepted and ignored.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

from .array_refs import is_mutable_array, mutable_array
from .errors import VariableError
from .filters import Filter, to_predicate
from .graph import find_duplicates
from .graph_map import map as map_variables
from .mode import NoOpContext
from .variables import REF_DEFAULT, Variable
from .views import _copy_sharing_variables

__all__ = ["with_vars", "vars_as", "var_defaults", "VarDefaults"]

A = TypeVar("A")
F = TypeVar("F", bound=Callable[..., Any])


def _refuse(where: str, hijax: Any, ref: Any, mutable: Any = None, ref_ok: bool = False) -> None:
    for name, value, plain in (("hijax", hijax, False), ("ref", ref, None if ref_ok else False),
                               ("mutable", mutable, True)):
        if value is None or value is plain:
            continue
        if value not in (True, False):
            raise VariableError(f"{where}: {name} must be True, False or None, got {value!r}")
        if plain is None:  # both accepted
            continue
        raise VariableError(
            f"{where}({name}={value!r}): plait Variables are plain mutable Python cells that its transforms carry "
            f"in and out; there is no {'immutable' if name == 'mutable' else name} mode.\n"
            f"Leave {name} out (or pass {name}={plain!r})."
            + (" plait has no default mode for new Variables: back one by a JAX ref with nnx.Param(x, ref=True), or "
               "a model's with nnx.with_vars(model, ref=True)." if name == "ref" else "")
            + (" To keep a Variable from changing, leave it out of the optimizer (wrt=nnx.Param) or differentiate "
               "with a DiffState filter." if name == "mutable" else "")
        )


def with_vars(node: A, /, *, hijax: bool | None = None, ref: bool | None = None, mutable: bool | None = None,
              only: Filter = ..., allow_duplicates: bool = False) -> A:
    """A copy of ``node`` (sharing its Variables) with the Variables ``only`` selects in the given mode.

    ``ref=True`` gives the selected Variables that are not ref-backed new ref-backed copies
    (``ref=False`` the reverse: plain copies holding the refs' current arrays); the others
    stay shared. plait's Variables are always ``hijax=False, mutable=True``: asking for another
    of those modes raises :class:`~plait.errors.VariableError`.

    Example:
        >>> import plait as nnx
        >>> model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
        >>> nnx.with_vars(model, ref=False).kernel is model.kernel
        True
    """
    _refuse("nnx.with_vars", hijax, ref, mutable, ref_ok=True)
    predicate = to_predicate(only)  # a bad filter is an error here too
    if ref is None:
        return _copy_sharing_variables(node)

    def different(path: tuple, v: Any) -> bool:
        return isinstance(v, Variable) and is_mutable_array(v.raw_value) is not ref and predicate(path, v)

    if not allow_duplicates and (shared := find_duplicates(node, only=different)):
        paths = "; ".join(" and ".join("/".join(map(str, p)) for p in group) for group in shared)
        raise VariableError(
            f"nnx.with_vars(ref={ref}): these Variables are reached by two paths: {paths}. A new Variable for "
            "each path would split one Variable in two.\nPass allow_duplicates=True to give them one new Variable."
        )

    def convert(path: tuple, v: Variable) -> Variable:
        if not different(path, v):
            return v
        meta = {k: x for k, x in v.get_metadata().items() if k != "ref"}
        raw = v.raw_value
        return type(v).from_metadata(mutable_array(raw) if ref else raw[...], {**meta, "ref": True} if ref else meta)

    return map_variables(convert, node, recreate_variables=False)


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
    """The defaults new Variables get: ``hijax`` is always False; ``ref`` is what
    ``var_defaults(ref=...)`` set (False outside it)."""

    hijax: bool
    ref: bool


class _VarDefaultsContext(NoOpContext):
    """Sets the ``ref`` default of new Variables for a ``with`` block or a decorated function,
    and restores the previous default after it (also when it raises)."""

    def __init__(self, ref: bool | None) -> None:
        self.ref = ref
        self.saved: list[bool] = []

    def __enter__(self) -> _VarDefaultsContext:
        self.saved.append(REF_DEFAULT[0])
        if self.ref is not None:
            REF_DEFAULT[0] = self.ref
        return self

    def __exit__(self, *exc: Any) -> None:
        REF_DEFAULT[0] = self.saved.pop()


def var_defaults(*, hijax: bool | None = None, ref: bool | None = None) -> Any:
    """The defaults for new Variables (no arguments), or a context/decorator setting them.

    ``ref=True`` makes Variables created inside (given no ``ref=`` of their own) ref-backed,
    as ``nnx.Param(x, ref=True)`` does; ``hijax=True`` is refused (plait has no hijax mode).

    Example:
        >>> import plait as nnx
        >>> nnx.var_defaults()
        VarDefaults(hijax=False, ref=False)
        >>> with nnx.var_defaults(hijax=False):
        ...     nnx.Param(1.0).value
        1.0
        >>> with nnx.var_defaults(ref=True):
        ...     layer = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
        >>> nnx.is_mutable_array(layer.kernel.raw_value), nnx.var_defaults().ref
        (True, False)
    """
    if hijax is None and ref is None:
        return VarDefaults(hijax=False, ref=REF_DEFAULT[0])
    _refuse("nnx.var_defaults", hijax, ref, ref_ok=True)
    return _VarDefaultsContext(ref)
