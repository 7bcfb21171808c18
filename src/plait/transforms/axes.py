"""Axis specifications for transforms: ``Carry``, ``StateAxes``, ``DiffState``.

A transform's ``in_axes``/``out_axes`` is a pytree prefix of the arguments: an int, ``None``
or ``Carry`` applies to everything under its position, and ``StateAxes`` (only at the
position of a module) chooses per Variable, by filter. :func:`resolve` turns these into one
axis per leaf before JAX is called; that is where axis and shape errors are raised, with
the path of the variable in the model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import AxisError, TransformError
from ..filters import Filter, filters_to_predicates
from ..variables import Variable

__all__ = ["Carry", "SameKeys", "StateAxes", "StateSharding", "DiffState"]


class _CarryType:
    """Marks the argument (or, in StateAxes, the state) that ``scan`` carries between steps."""

    _instance = None

    def __new__(cls) -> _CarryType:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "nnx.Carry"

    def __reduce__(self) -> str:
        return "Carry"


Carry = _CarryType()


class _SameKeysType:
    """Broadcast RNG state *on purpose*: every lane (vmap) or step (scan) draws the same keys.

    Drawing from an RNG stream that is broadcast (axis ``None``) is an error, because it
    silently repeats randomness. Say ``nnx.SameKeys`` instead of ``None`` when that is what
    you want: ``nnx.StateAxes({nnx.RngState: nnx.SameKeys, ...: None})``. For Variables
    that are not RNG state it means the same as ``None``.
    """

    _instance = None

    def __new__(cls) -> _SameKeysType:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "nnx.SameKeys"

    def __reduce__(self) -> str:
        return "SameKeys"


SameKeys = _SameKeysType()


class StateAxes:
    """Per-Variable axes for one module argument: ``StateAxes({filter: axis, ...})``.

    Filters are tried in order; the first that matches a Variable gives its axis (an int,
    ``None`` for broadcast, or ``nnx.Carry`` in ``scan``). Every Variable must match one.

    Example:
        >>> import plait as nnx
        >>> axes = nnx.StateAxes({nnx.RngState: nnx.Carry, ...: 0})
        >>> axes
        StateAxes({nnx.RngState: nnx.Carry, ...: 0})
    """

    def __init__(self, filter_axes: Any) -> None:
        if type(filter_axes).__name__ == "State":
            raise TransformError(
                "StateAxes takes {filter: axis} (e.g. StateAxes({nnx.Param: 0, ...: None})), not a State: a State maps "
                "paths to Variables, and its keys would be read as filters (a string filter selects an RNG stream tag).\n"
                "To give Variables at certain paths an axis, filter by path: "
                "StateAxes({nnx.PathContains('kernel'): 0, ...: None})"
            )
        items = list(filter_axes.items() if hasattr(filter_axes, "items") else filter_axes)
        if not items:
            raise TransformError("StateAxes needs at least one {filter: axis} entry, e.g. StateAxes({...: 0})")
        for _, axis in items:
            if not (axis is None or axis is Carry or axis is SameKeys or type(axis) is int):
                raise TransformError(f"StateAxes axis must be an int, None, nnx.Carry or nnx.SameKeys, got {axis!r}")
        self.filters = tuple(f for f, _ in items)
        self.axes = tuple(a for _, a in items)
        self.predicates = filters_to_predicates(self.filters, type(self).__name__)

    def items(self) -> list[tuple[Filter, Any]]:
        return list(zip(self.filters, self.axes))

    def axis_for(self, path: tuple, value: Any) -> Any:
        for predicate, axis in zip(self.predicates, self.axes):
            if predicate(path, value):
                return axis
        return _NO_MATCH

    def __repr__(self) -> str:
        def name(f: Any) -> str:
            return "..." if f is Ellipsis else (f"nnx.{f.__name__}" if isinstance(f, type) else repr(f))

        inner = ", ".join(f"{name(f)}: {a!r}" for f, a in self.items())
        return f"StateAxes({{{inner}}})"

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, StateAxes) and self.items() == other.items()

    def __hash__(self) -> int:
        return hash(tuple(self.items()))


class StateSharding(StateAxes):
    """Per-Variable shardings for one module argument of ``jit``: ``{filter: sharding}``.

    Example:
        >>> import jax, plait as nnx
        >>> replicated = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        >>> nnx.StateSharding({nnx.Param: replicated, ...: None}).axes[1] is None
        True
    """

    def __init__(self, filter_shardings: Any) -> None:
        items = list(filter_shardings.items() if hasattr(filter_shardings, "items") else filter_shardings)
        if not items:
            raise TransformError("StateSharding needs at least one {filter: sharding} entry")
        self.filters = tuple(f for f, _ in items)
        self.axes = tuple(a for _, a in items)
        self.predicates = filters_to_predicates(self.filters, type(self).__name__)


class DiffState:
    """For ``grad``: differentiate argument ``argnum`` with respect to the state ``filter`` selects.

    Example:
        >>> import plait as nnx
        >>> nnx.DiffState(0, nnx.Param)
        DiffState(argnum=0, filter=Param)
    """

    def __init__(self, argnum: int, filter: Filter) -> None:
        self.argnum = argnum
        self.filter = filter

    def __repr__(self) -> str:
        name = getattr(self.filter, "__name__", repr(self.filter))
        return f"DiffState(argnum={self.argnum}, filter={name})"


_NO_MATCH = object()


def resolve(spec: Any, path: tuple, value: Any, describe_leaf: Any, transform: str, in_or_out: str,
            leaf_types: tuple = ()) -> Any:
    """The axis that ``spec`` (a prefix tree) gives the leaf at ``path`` (below the argument).

    ``leaf_types`` are further spec values that apply to a whole subtree (shardings).
    """
    rest = path
    module_path: tuple = ()
    while True:
        if spec is None or spec is Carry or spec is SameKeys or type(spec) is int or isinstance(spec, leaf_types):
            return spec
        if isinstance(spec, StateAxes):
            axis = spec.axis_for(rest, value)
            if axis is _NO_MATCH:
                raise AxisError(
                    f"{transform}: no StateAxes filter matches {describe_leaf()}.\n"
                    f"{spec!r} must give every Variable of the module an axis. Add a last entry "
                    "for the rest, e.g. StateAxes({..., ...: 0})"
                )
            return axis
        if isinstance(spec, Variable):
            # A State of specs (nnx.get_named_sharding(state, mesh)) holds each spec in a
            # Variable at the position of the Variable it describes.
            spec = spec.get_raw_value()
            continue
        if isinstance(spec, (tuple, list, dict, Mapping)) and not isinstance(spec, leaf_types):
            if not rest:
                raise AxisError(
                    f"{transform}: {in_or_out}={spec!r} is deeper than the value it describes: {describe_leaf()}.\n"
                    f"Give that value one spec instead of a {type(spec).__name__}, e.g. 0 or None."
                )
            key = rest[0]
            try:
                spec = getattr(spec, key) if isinstance(key, str) and hasattr(spec, "_fields") else spec[key]
            except (IndexError, KeyError, TypeError):
                raise AxisError(
                    f"{transform}: {in_or_out} has no entry for {key!r} on the way to {describe_leaf()}; "
                    f"the spec there is {spec!r}.\nGive every entry of the value a spec, or one spec (0 or None) "
                    "for the whole value."
                ) from None
            module_path += (key,)
            rest = rest[1:]
            continue
        raise AxisError(
            f"{transform}: {spec!r} is not an axis spec; use an int, None, "
            f"{'nnx.Carry, ' if transform == 'scan' else ''}nnx.StateAxes, or a tuple/list/dict of them"
        )
