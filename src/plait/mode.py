"""Flax NNX 0.12's modes, and plait's one semantics.

Flax NNX 0.12 has two switches: ``graph`` (graph mode, which keeps shared references, or
tree mode, which treats modules as pytrees) and ``graph_updates`` (whether a transform
writes structural changes back to the objects passed in). Its default is ``True`` for
both, and that default is the only semantics plait has: shared sub-modules and tied
weights stay shared, and every state change made inside a transform is written back.

So ``graph=True`` / ``graph_updates=True`` (and ``None``, the default) are accepted
everywhere, and ``False`` is refused with a :class:`~plait.errors.TransformError` saying
what to write instead: a keyword the reference gives meaning to is never accepted and
ignored.

Example:
    >>> import plait as nnx
    >>> with nnx.set_graph_mode(True):
    ...     nnx.set_graph_mode.current_value()
    True
    >>> try:
    ...     nnx.set_graph_updates(False)
    ... except nnx.TransformError as e:
    ...     print(str(e).splitlines()[0][:58])
    set_graph_updates(False): plait has one semantics, Flax NN
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from .errors import TransformError

__all__ = ["check_graph_mode", "set_graph_mode", "set_graph_updates"]

F = TypeVar("F", bound=Callable[..., Any])

_ONE_SEMANTICS = (
    "plait has one semantics, Flax NNX's default graph mode with graph updates: shared sub-modules and "
    "tied weights stay shared, and state and structure changed inside a transform are written back to the "
    "objects passed in."
)


def _instead(keyword: str, where: str) -> str:
    if keyword == "graph":
        return (f"Leave the keyword out (or pass graph=True): {where}. For a pytree of a module's state use "
                "graphdef, state = nnx.split(module) and nnx.merge(graphdef, state) inside.")
    return (f"Leave the keyword out (or pass graph_updates=True): {where}. To keep the caller's module "
            "unchanged, pass a copy: nnx.clone(module).")


def check_graph_mode(transform_name: str, graph: Any = None, graph_updates: Any = None) -> None:
    """Accept ``graph``/``graph_updates`` of ``None`` or ``True``; refuse anything else.

    ``transform_name`` is how the error names the call, e.g. ``"nnx.jit"``.

    Example:
        >>> from plait.mode import check_graph_mode
        >>> check_graph_mode("nnx.jit", graph=True, graph_updates=None)
        >>> try:
        ...     check_graph_mode("nnx.vmap", graph=False)
        ... except TypeError as e:
        ...     print(str(e).splitlines()[0][:40])
        nnx.vmap(graph=False): plait has one sem
    """
    for keyword, value in (("graph", graph), ("graph_updates", graph_updates)):
        if value is None or value is True:
            continue
        if value is False:
            raise TransformError(f"{transform_name}({keyword}=False): {_ONE_SEMANTICS}\n"
                                 + _instead(keyword, f"{transform_name}(...)"))
        raise TransformError(f"{transform_name}: {keyword} must be True or None (the default), got {value!r}")


class NoOpContext:
    """A setting that changes nothing in plait, usable as a context manager or a decorator
    (the reference's mode switches and Variable defaults, where plait has one behaviour)."""

    def __enter__(self) -> NoOpContext:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def __call__(self, f: F) -> F:
        """As a decorator: ``f`` runs inside the context (``with self:``)."""
        @functools.wraps(f)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self:
                return f(*args, **kwargs)

        return wrapper  # type: ignore[return-value]


class _ModeSwitch(NoOpContext):
    """A switch that only takes ``True``: as a call, a context manager or a decorator."""

    _keyword = ""

    def __init__(self, value: bool, /) -> None:
        if value is not True:
            if value is False:
                raise TransformError(f"{type(self).__name__}(False): {_ONE_SEMANTICS}\n"
                                     + _instead(self._keyword, f"{type(self).__name__}(True), or no call at all"))
            raise TransformError(f"{type(self).__name__}: the value must be True, got {value!r}")
        self.value = value

    @classmethod
    def current_value(cls) -> bool:
        """Always ``True``: plait's one mode."""
        return True



class set_graph_mode(_ModeSwitch):  # noqa: N801  (the reference's name)
    """``nnx.set_graph_mode(True)``: plait's only mode (graph mode); ``False`` is refused.

    Works as a call, a ``with`` block and a decorator, like the reference's.

    Example:
        >>> import plait as nnx
        >>> @nnx.set_graph_mode(True)
        ... def f():
        ...     return nnx.set_graph_mode.current_value()
        >>> f()
        True
    """

    _keyword = "graph"


class set_graph_updates(_ModeSwitch):  # noqa: N801  (the reference's name)
    """``nnx.set_graph_updates(True)``: transforms write changes back (plait's only mode); ``False`` is refused.

    Example:
        >>> import plait as nnx
        >>> with nnx.set_graph_updates(True):
        ...     nnx.set_graph_updates.current_value()
        True
    """

    _keyword = "graph_updates"
