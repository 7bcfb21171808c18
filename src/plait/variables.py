"""Variables: the mutable cells that hold a module's state.

A :class:`Variable` wraps one value (usually an array) plus metadata given as keyword
arguments. Its *type* says what the state is for (``Param`` is trained, ``BatchStat`` is a
running statistic, ``RngKey``/``RngCount`` are an RNG stream's state), and filters select
state by that type.

A Variable is also a JAX pytree with its value as the only child, so a :class:`State` of
Variables works with ``jax.tree.map`` and optax directly. Reading and writing go through
``.value`` or ``v[...]``; arithmetic behaves like the value.

Plait writes values back from transforms by assigning the ``_value`` slot directly: no
Python call per Variable on the hot path.
"""

from __future__ import annotations

import operator
from typing import Any

import jax
import jax.numpy as jnp

from .object import closed_over_error, structure_changed, trace_state

__all__ = [
    "Variable",
    "Param",
    "BatchStat",
    "Cache",
    "Intermediate",
    "RngState",
    "RngKey",
    "RngCount",
    "OptState",
]


_KEEP = object()


class Variable:
    """A mutable cell holding one value and its metadata.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> w = nnx.Param(jnp.ones((2, 3)), note="init")
        >>> w.value.shape, w.note, (w * 2).sum().item()
        ((2, 3), 'init', 12.0)
        >>> w[0] = jnp.zeros(3); w.value.sum().item()
        3.0
    """

    # _trace: the JAX trace this Variable belongs to (None: a value in a State, not checked)
    __slots__ = ("_value", "_meta", "_plait_seen", "_trace")

    def __init__(self, value: Any, **metadata: Any) -> None:
        if isinstance(value, Variable):
            value = value._value
        self._value = value
        self._meta = metadata
        self._plait_seen = False
        self._trace = trace_state()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _register(cls)

    # -- value ------------------------------------------------------------------------------
    @property
    def value(self) -> Any:
        return self._value

    @value.setter
    def value(self, new: Any) -> None:
        if self._trace is not None and self._trace != trace_state():
            self._closed_over()
        self._value = new

    def _closed_over(self) -> None:
        shape = tuple(getattr(self._value, "shape", ()))
        if isinstance(self, RngCount):
            tag = self._meta.get("tag")
            raise closed_over_error(f"RNG stream {tag!r}", "drew from", self)
        raise closed_over_error(f"a {type(self).__name__} (shape {shape})", "wrote", self)

    def get_value(self) -> Any:
        return self._value

    def set_value(self, new: Any) -> None:
        self.value = new

    def __getitem__(self, index: Any) -> Any:
        if index is Ellipsis:
            return self._value
        return self._value[index]

    def __setitem__(self, index: Any, new: Any) -> None:
        if index is Ellipsis:
            self.value = new
        else:
            self.value = jnp.asarray(self._value).at[index].set(new)

    # -- metadata ---------------------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails: metadata given as keyword arguments.
        if name.startswith("__") or name in Variable.__slots__:
            raise AttributeError(name)
        try:
            return self._meta[name]
        except KeyError:
            raise AttributeError(
                f"{type(self).__name__} has no attribute or metadata {name!r}; "
                f"its metadata is {sorted(self._meta)}"
            ) from None

    def get_metadata(self) -> dict[str, Any]:
        return dict(self._meta)

    def set_metadata(self, name: str, value: Any) -> None:
        """Set one metadata entry (metadata is part of the structure, so caches reset).

        The metadata dict is replaced, never changed in place: copies of a Variable (its
        entries in a State, a merged graph) share it until one of them sets something.
        """
        if self._plait_seen:
            structure_changed()
        self._meta = {**self._meta, name: value}

    def replace(self, value: Any = _KEEP, **metadata: Any) -> Variable:
        """A new Variable of the same type: same metadata (updated), a new value."""
        new = object.__new__(type(self))
        new._value = self._value if value is _KEEP else value
        new._meta = {**self._meta, **metadata}
        new._plait_seen = False
        new._trace = None
        return new

    def copy(self) -> Variable:
        return self.replace()

    # -- array behaviour --------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return jnp.shape(self._value)

    @property
    def dtype(self) -> Any:
        return getattr(self._value, "dtype", None)

    @property
    def ndim(self) -> int:
        return jnp.ndim(self._value)

    @property
    def size(self) -> int:
        return jnp.size(self._value)

    @property
    def T(self) -> Any:
        return self._value.T

    def __jax_array__(self) -> Any:
        return self._value

    def __array__(self, dtype: Any = None, copy: Any = None) -> Any:
        import numpy as np

        return np.asarray(self._value, dtype=dtype)

    def __len__(self) -> int:
        return len(self._value)

    def __iter__(self):
        return iter(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __float__(self) -> float:
        return float(self._value)

    def __int__(self) -> int:
        return int(self._value)

    def __round__(self, ndigits: int | None = None) -> Any:
        return round(self._value, ndigits) if ndigits is not None else round(self._value)

    def __index__(self) -> int:
        return self._value.__index__()

    def __neg__(self) -> Any:
        return -self._value

    def __pos__(self) -> Any:
        return +self._value

    def __abs__(self) -> Any:
        return abs(self._value)

    def __invert__(self) -> Any:
        return ~self._value

    def __repr__(self) -> str:
        return f"{type(self).__name__}({_describe_value(self._value)}{_meta_text(self._meta)})"

    # Variables are mutable cells: identity, not value, decides equality and hashing.
    __hash__ = object.__hash__

    def __eq__(self, other: Any) -> Any:
        return self._value == _unwrap(other)

    def __ne__(self, other: Any) -> Any:
        return self._value != _unwrap(other)


def describe(path: str, value: object) -> str:
    """``path (Type, shape (..))``: how errors name a Variable or an array."""
    if isinstance(value, Variable):
        kind = type(value).__name__
        raw = value._value
        tag = value._meta.get("tag")
        extra = f", stream {tag!r}" if tag is not None else ""
    else:
        kind = type(value).__name__
        raw = value
        extra = ""
    shape = getattr(raw, "shape", None)
    shape_text = f", shape {tuple(shape)}" if shape is not None else ""
    return f"`{path}` ({kind}{shape_text}{extra})"


def _unwrap(x: Any) -> Any:
    return x._value if isinstance(x, Variable) else x


# Arithmetic goes through the operator module, so Python's full protocol applies to the value
# (int + float works, reflected operands are tried): a Variable behaves exactly like its value.
_OPERATORS = {
    "add": operator.add, "sub": operator.sub, "mul": operator.mul, "truediv": operator.truediv,
    "floordiv": operator.floordiv, "mod": operator.mod, "pow": operator.pow, "matmul": operator.matmul,
    "and": operator.and_, "or": operator.or_, "xor": operator.xor, "lshift": operator.lshift,
    "rshift": operator.rshift,
}


def _binary(fn):
    return lambda self, other: fn(self._value, _unwrap(other))


def _reflected(fn):
    return lambda self, other: fn(_unwrap(other), self._value)


def _inplace(fn):
    def op(self, other):
        self.value = fn(self._value, _unwrap(other))
        return self

    return op


for _name, _fn in _OPERATORS.items():
    setattr(Variable, f"__{_name}__", _binary(_fn))
    setattr(Variable, f"__r{_name}__", _reflected(_fn))
    setattr(Variable, f"__i{_name}__", _inplace(_fn))
for _name, _fn in {"lt": operator.lt, "le": operator.le, "gt": operator.gt, "ge": operator.ge}.items():
    setattr(Variable, f"__{_name}__", _binary(_fn))


def _describe_value(value: Any) -> str:
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    if shape is None or dtype is None:
        return repr(value)
    return f"shape={tuple(shape)}, dtype={dtype}"


def _meta_text(meta: dict[str, Any]) -> str:
    return "".join(f", {k}={v!r}" for k, v in meta.items())


def _register(cls: type) -> None:
    value_key = (jax.tree_util.GetAttrKey("value"),)

    def flatten_with_keys(v):
        return ((value_key[0], v._value),), tuple(v._meta.items())

    def flatten(v):
        return (v._value,), tuple(v._meta.items())

    def unflatten(meta, children):
        new = object.__new__(cls)
        new._value = children[0]
        new._meta = dict(meta)
        new._plait_seen = False
        new._trace = None
        return new

    jax.tree_util.register_pytree_with_keys(cls, flatten_with_keys, unflatten, flatten)


_register(Variable)


class Param(Variable):
    """A trainable parameter; ``grad`` differentiates with respect to these by default."""

    __slots__ = ()


class BatchStat(Variable):
    """A running statistic (e.g. BatchNorm's mean and variance)."""

    __slots__ = ()


class Cache(Variable):
    """Decoding caches and other state written during inference."""

    __slots__ = ()


class Intermediate(Variable):
    """Values recorded during a forward pass for inspection."""

    __slots__ = ()


class OptState(Variable):
    """An optimizer's state (moments, step counts)."""

    __slots__ = ()


class RngState(Variable):
    """The state of an RNG stream; ``tag`` metadata names the stream."""

    __slots__ = ()


class RngKey(RngState):
    """An RNG stream's key."""

    __slots__ = ()


class RngCount(RngState):
    """How many keys an RNG stream has drawn since its key was set."""

    __slots__ = ()
