"""Variables: the mutable cells that hold a module's state.

A :class:`Variable` wraps one value (usually an array) plus metadata given as keyword
arguments. Its *type* says what the state is for (``Param`` is trained, ``BatchStat`` is a
running statistic, ``RngKey``/``RngCount`` are an RNG stream's state), and filters select
state by that type. ``nnx.Param[jax.Array]`` works in annotations.

A Variable is also a JAX pytree with its value as the only child, so a :class:`State` of
Variables works with ``jax.tree.map`` and optax directly. Reading and writing go through
``.value``, ``v[...]`` or ``get_value``/``set_value``; arithmetic behaves like the value, and
attributes that are neither methods nor metadata are the value's (``v.sum()``).

**Value hooks.** A subclass may define ``on_get_value(self, value)``,
``on_set_value(self, value)``, ``on_create_value(self, value)`` (each returns the value to
use), ``on_add_axis(self, axis_index, axis_name)`` and ``on_remove_axis(...)`` (called when
a mapping transform adds or removes an axis of the value), or override ``get_value`` /
``set_value`` / ``create_value``. :func:`with_metadata` attaches the same hooks to one
Variable through its initializer. The raw value (``raw_value``, what transforms carry) is
what is stored, before ``on_get_value``.

Plait writes values back from transforms by assigning the ``_value`` slot directly: no
Python call per Variable on the hot path (and so no hook either: a write-back is the raw
value a transform computed).
"""

from __future__ import annotations

import dataclasses
import functools
import operator
import types
import warnings
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import jax
import jax.numpy as jnp

from .array_refs import is_mutable_array, mutable_array, write
from .errors import VariableError
from .object import _portable, closed_over_error, owner_path, structure_changed, trace_state
from .sharding_rules import eager_shard

__all__ = [
    "Variable",
    "VariableState",
    "VariableMetadata",
    "Param",
    "BatchStat",
    "Cache",
    "Intermediate",
    "Perturbation",
    "RngState",
    "RngKey",
    "RngCount",
    "OptState",
    "with_metadata",
    "PARTITION_NAME",
]

A = TypeVar("A")
_KEEP = object()
_MISSING = object()
_HOOKS = ("on_get_value", "on_set_value", "on_create_value", "on_add_axis", "on_remove_axis")


@dataclasses.dataclass
class VariableMetadata(Generic[A]):
    """A value with the metadata and hooks its Variable should get; what an initializer
    wrapped by :func:`with_metadata` returns. ``Variable(VariableMetadata(...))`` unpacks it.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> nnx.Param(nnx.VariableMetadata(jnp.ones(2), metadata={"note": "x"})).note
        'x'
    """

    raw_value: A
    on_set_value: tuple = ()
    on_get_value: tuple = ()
    on_create_value: tuple = ()
    on_add_axis: tuple = ()
    on_remove_axis: tuple = ()
    metadata: dict = dataclasses.field(default_factory=dict)


def _remap_sharding(metadata: dict, stacklevel: int) -> None:
    # The reference renamed ``sharding``/``sharding_names`` to ``out_sharding``; old code
    # still passes them, and reads them back under the new name.
    for old in ("sharding", "sharding_names"):
        if old in metadata:
            warnings.warn(f"'{old}' is deprecated, use 'out_sharding' instead.", DeprecationWarning,
                          stacklevel=stacklevel)
            metadata["out_sharding"] = metadata.pop(old)


def _refuse_modes(hijax: Any) -> None:
    if hijax:
        raise VariableError(
            "hijax=True: plait Variables are plain Python cells that transforms carry in and out; they have no "
            "hijax mode.\nLeave hijax out (or pass hijax=False); ref=True backs a Variable by a JAX ref."
        )


# Whether a new Variable given no ``ref=`` is backed by a JAX ref (``nnx.var_defaults(ref=True)``
# sets it for a block of code; one cell, read when a Variable is made, never in a train step).
REF_DEFAULT: list[bool] = [False]


class Variable(Generic[A]):
    """A mutable cell holding one value and its metadata.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> w = nnx.Param(jnp.ones((2, 3)), note="init")
        >>> w.value.shape, w.note, (w * 2).sum().item()
        ((2, 3), 'init', 12.0)
        >>> w[0] = jnp.zeros(3); w.value.sum().item()
        3.0
        >>> class Doubled(nnx.Variable):  # a value hook
        ...     def on_get_value(self, value):
        ...         return 2 * value
        >>> d = Doubled(jnp.ones(2)); d.value.tolist(), d.raw_value.tolist()
        ([2.0, 2.0], [1.0, 1.0])
    """

    # _trace: the JAX trace this Variable belongs to (None: a value in a State, not checked)
    __slots__ = ("_value", "_meta", "_plait_seen", "_trace")
    _plait_node = True  # a plait graph node (see Object._plait_node)
    # False when a class changes what reading gives (see _read) / what creating stores
    _plait_plain_get = True
    _plait_plain_create = True

    def __init__(self, value: Any, *, hijax: bool | None = None, ref: bool | None = None,
                 eager_sharding: bool | None = None, **metadata: Any) -> None:
        _refuse_modes(hijax)
        if isinstance(value, VariableMetadata):
            carried = value
            metadata = {**carried.metadata, **metadata}
            for name in _HOOKS:
                if getattr(carried, name) and name not in metadata:
                    metadata[name] = tuple(getattr(carried, name))
            _refuse_modes(metadata.pop("hijax", None))
            carried_ref = metadata.pop("ref", None)
            ref = carried_ref if ref is None else ref
            carried_eager = metadata.pop("eager_sharding", None)
            eager_sharding = carried_eager if eager_sharding is None else eager_sharding
            value = carried.raw_value
        if isinstance(value, Variable):
            value = value._value
        if metadata:
            _remap_sharding(metadata, stacklevel=3)
        self._meta = metadata
        self._plait_seen = False
        self._trace = trace_state()
        self._value = value
        if not (self._plait_plain_create and not (metadata and "on_create_value" in metadata)):
            for hook in self._hooks("on_create_value"):
                value = hook(self, value)
            self._value = self.create_value(value)
        if metadata and metadata.get("out_sharding"):  # placed on the mesh as it is created
            self._value = eager_shard(self._value, metadata, eager_sharding)
        if ref is None and REF_DEFAULT[0]:  # inside nnx.var_defaults(ref=True)
            ref = True
        if ref is False and is_mutable_array(self._value):
            self._value = self._value[...]
        elif ref or is_mutable_array(self._value):  # ref-backed: reads and writes go to a JAX ref
            self._value = self._value if is_mutable_array(self._value) else mutable_array(self._value)
            self._meta = {**metadata, "ref": True}

    __class_getitem__ = classmethod(types.GenericAlias)  # nnx.Param[jax.Array] in annotations

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._plait_plain_get = cls.get_value is Variable.get_value and getattr(cls, "on_get_value", None) is None
        cls._plait_plain_create = (cls.create_value is Variable.create_value
                                   and getattr(cls, "on_create_value", None) is None)
        _register(cls)

    def _hooks(self, name: str) -> tuple:
        """The hooks ``name`` runs: from metadata (``with_metadata``), else the class's method."""
        hooks = self._meta.get(name) if self._meta else None
        if hooks is None:
            method = getattr(type(self), name, None)
            return () if method is None else (method,)
        return hooks if isinstance(hooks, tuple) else (hooks,)

    def _read(self) -> Any:
        """The value as users see it: the raw value, through ``get_value`` if that changes it."""
        if self._plait_plain_get and not (self._meta and ("on_get_value" in self._meta or "ref" in self._meta)):
            return self._value
        return self.get_value()

    # -- value ------------------------------------------------------------------------------
    @property
    def value(self) -> Any:
        if self._plait_plain_get and not (self._meta and ("on_get_value" in self._meta or "ref" in self._meta)):
            return self._value  # _read inlined: the common case costs one attribute read
        return self.get_value()

    @value.setter
    def value(self, new: Any) -> None:
        self.set_value(new)

    def _check_trace(self) -> None:
        if self._trace is not None and self._trace != trace_state():
            self._closed_over()

    def _closed_over(self) -> None:
        shape = tuple(getattr(self._value, "shape", ()))
        if isinstance(self, RngCount):
            tag = self._meta.get("tag")
            raise closed_over_error(f"RNG stream {tag!r}", "drew from", self)
        raise closed_over_error(f"a {type(self).__name__} (shape {shape})", "wrote", self)

    def create_value(self, value: Any) -> Any:
        """What a new Variable stores for ``value`` (after ``on_create_value``); override to convert."""
        return value

    def get_value(self, *, index: Any = _MISSING) -> Any:
        """The value (``v[index]`` if given), through the ``on_get_value`` hooks."""
        value = self._value
        if is_mutable_array(value):
            value = value[...]
        if index is not _MISSING and index is not Ellipsis:
            value = value[index]
        for hook in self._hooks("on_get_value"):
            value = hook(self, value)
        return value

    def set_value(self, value: Any, *, index: Any = _MISSING) -> None:
        """Set the value (or ``v[index]``), through the ``on_set_value`` hooks."""
        for hook in self._hooks("on_set_value"):
            value = hook(self, value)
        self._check_trace()
        if is_mutable_array(self._value):  # written into the ref, which stays
            write(self._value, Ellipsis if index is _MISSING else index, _unwrap(value), type(self).__name__)
            return
        if index is not _MISSING and index is not Ellipsis:
            value = _set_index(self._value, index, value)
        self._value = value

    @property
    def raw_value(self) -> Any:
        """The stored value, before any ``on_get_value`` hook (what transforms carry)."""
        return self._value

    @raw_value.setter
    def raw_value(self, new: Any) -> None:
        self.set_raw_value(new)

    def get_raw_value(self) -> Any:
        return self._value

    def set_raw_value(self, value: Any) -> None:
        """Store ``value`` as is, skipping the ``on_set_value`` hooks (into the ref, if ref-backed)."""
        self._check_trace()
        if is_mutable_array(self._value) and not is_mutable_array(value):
            write(self._value, Ellipsis, value, type(self).__name__)
            return
        self._value = value

    def __getitem__(self, index: Any) -> Any:
        if index is Ellipsis and self._plait_plain_get and not self._meta:
            return self._value
        return self.get_value(index=index)

    def __setitem__(self, index: Any, new: Any) -> None:
        self.set_value(new, index=index)

    def __delitem__(self, index: Any) -> None:
        value = _copied(self._read())
        del value[index]
        self.set_value(value)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the value: a Variable holding a function is called like it."""
        value = self._read()
        if not callable(value):
            raise VariableError(
                f"a {type(self).__name__} holding {_describe_value(value)} was called, but its value is not callable.\n"
                "Read it with variable.value (or variable[...]); only a Variable holding a function can be called."
            )
        return value(*args, **kwargs)

    # -- axes (called by mapping transforms) --------------------------------------------------
    def add_axis(self, axis_index: int, axis_name: str | None) -> None:
        """A transform (``vmap``/``scan`` out) added axis ``axis_index`` to the value: run ``on_add_axis``."""
        for hook in self._hooks("on_add_axis"):
            hook(self, axis_index, axis_name)

    def remove_axis(self, axis_index: int, axis_name: str | None) -> None:
        """A transform (``vmap``/``scan`` in) removed axis ``axis_index``: run ``on_remove_axis``."""
        for hook in self._hooks("on_remove_axis"):
            hook(self, axis_index, axis_name)

    # -- metadata ---------------------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails: metadata, else the value's own attribute.
        if name.startswith("_"):
            raise AttributeError(name)
        meta = self._meta
        if name in meta:
            return meta[name]
        try:
            return getattr(self._read(), name)
        except AttributeError:
            pass
        raise AttributeError(
            f"{type(self).__name__} has no attribute or metadata {name!r} (nor has its value, "
            f"{_describe_value(self._value)}); its metadata is {sorted(meta)}"
        ) from None

    @property
    def type(self) -> type:
        """The Variable's type (the reference's ``VariableState.type``)."""
        return type(self)

    var_type = type

    @property
    def sharding_names(self) -> Any:
        warnings.warn("'sharding_names' is deprecated, use 'out_sharding' instead.", DeprecationWarning, stacklevel=2)
        return self._meta.get("out_sharding")

    def get_metadata(self, name: str | None = None, default: Any = _MISSING, *,
                     exclude_required: bool | None = None) -> Any:
        """All metadata (a new dict), or the entry ``name`` (``default`` if given and absent).

        Example:
            >>> import plait as nnx
            >>> v = nnx.Param(0, note="a")
            >>> v.get_metadata(), v.get_metadata("note"), v.get_metadata("other", None)
            ({'note': 'a'}, 'a', None)
        """
        if name is None:
            if default is not _MISSING:
                raise TypeError("get_metadata(default=...) needs a name: v.get_metadata('note', None)")
            return dict(self._meta)  # plait keeps no required entries, so exclude_required changes nothing
        if exclude_required is not None:
            raise TypeError("get_metadata takes either a name or exclude_required, not both")
        if name in self._meta:
            return self._meta[name]
        if default is not _MISSING:
            return default
        raise KeyError(f"{type(self).__name__} has no metadata {name!r}; its metadata is {sorted(self._meta)}")

    def set_metadata(self, *args: Any, **kwargs: Any) -> None:
        """Set metadata: ``set_metadata(name, value)``, ``set_metadata(name=value, ...)``, or
        ``set_metadata(mapping)`` to replace all of it.

        Metadata is part of the structure, so caches reset. The metadata dict is replaced,
        never changed in place: copies of a Variable (its entries in a State, a merged graph)
        share it until one of them sets something.

        Example:
            >>> import plait as nnx
            >>> v = nnx.Param(0, a=1); v.set_metadata("b", 2); v.set_metadata(c=3)
            >>> v.get_metadata()
            {'a': 1, 'b': 2, 'c': 3}
            >>> v.set_metadata({"z": 0}); v.get_metadata()
            {'z': 0}
        """
        if args and kwargs:
            raise TypeError("set_metadata takes (name, value), keyword arguments, or one mapping; not a mix")
        if len(args) == 2:
            new = {**self._meta, args[0]: args[1]}
        elif len(args) == 1:
            new = dict(args[0])
        elif kwargs and not args:
            new = {**self._meta, **kwargs}
        else:
            raise TypeError(f"set_metadata takes (name, value), keyword arguments, or one mapping; got {len(args)} "
                            "positional arguments")
        _remap_sharding(new, stacklevel=3)
        self._set_meta(new)

    def has_metadata(self, name: str) -> bool:
        return name in self._meta

    def del_metadata(self, name: str) -> None:
        """Remove the metadata entry ``name``."""
        if name not in self._meta:
            raise KeyError(f"{type(self).__name__} has no metadata {name!r}; its metadata is {sorted(self._meta)}")
        self._set_meta({k: v for k, v in self._meta.items() if k != name})

    def _set_meta(self, new: dict) -> None:
        self._check_trace()
        if self._plait_seen:
            structure_changed()
        self._meta = new

    def copy_from(self, other: Variable) -> None:
        """Take ``other``'s value and metadata (same type only)."""
        if type(other) is not type(self):
            raise VariableError(f"copy_from: expected a {type(self).__name__}, got a {type(other).__name__}")
        if other is not self:
            self.update_from_state(other)

    def update_from_state(self, state: Variable) -> None:
        """Take the value and metadata of ``state`` (a Variable from a State)."""
        if state._meta != self._meta:
            self._set_meta(state._meta)
        self.set_raw_value(state._value)

    def replace(self, value: Any = _KEEP, **metadata: Any) -> Variable:
        """A new Variable of the same type: same metadata (updated), a new value."""
        new = object.__new__(type(self))
        new._value = self._value if value is _KEEP else value
        new._meta = {**self._meta, **metadata} if metadata else self._meta
        new._plait_seen = False
        new._trace = None
        return new

    def copy(self, value: Any = _KEEP, **metadata: Any) -> Variable:
        """An independent Variable of the same type (optionally a new value / metadata)."""
        return self.replace(value, **metadata)

    to_state = copy

    @classmethod
    def from_metadata(cls, value: Any, metadata: dict[str, Any]) -> Variable:
        """A Variable of this type with ``value`` and ``metadata`` as they are (no hooks run)."""
        new = object.__new__(cls)
        new._value = value
        new._meta = dict(metadata)
        new._plait_seen = False
        new._trace = trace_state()
        return new

    # -- array behaviour --------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return jnp.shape(self._read())

    @property
    def dtype(self) -> Any:
        return getattr(self._read(), "dtype", None)

    @property
    def ndim(self) -> int:
        return jnp.ndim(self._read())

    @property
    def size(self) -> int:
        return jnp.size(self._read())

    @property
    def T(self) -> Any:
        return self._read().T

    def __jax_array__(self) -> Any:
        return self._read()

    def __array__(self, dtype: Any = None, copy: Any = None) -> Any:
        import numpy as np

        return np.asarray(self._read(), dtype=dtype)

    def __len__(self) -> int:
        return len(self._read())

    def __iter__(self):
        return iter(self._read())

    def __contains__(self, item: Any) -> bool:
        return item in self._read()

    def __bool__(self) -> bool:
        value = self._read()
        if value is None or isinstance(value, (bool, int, float, complex, str)):
            return bool(value)
        try:
            return bool(value)
        except jax.errors.ConcretizationTypeError:
            raise self._truth_error("its value is traced (inside jit, vmap, grad, ...), so Python cannot branch on it",
                                    "Branch with jnp.where(v, a, b) or nnx.cond(v, ...), or pass the value as static") from None
        except ValueError as e:
            if "ambiguous" not in str(e):
                raise
            raise self._truth_error(f"it has {jnp.size(value)} elements, so its truth value is ambiguous",
                                    "Use v.value.any() or v.value.all(); to ask whether it is set, write "
                                    "`if v is not None:`") from None

    def _truth_error(self, why: str, fix: str) -> VariableError:
        where = owner_path(self)
        at = f" at `{where}`" if where else ""
        return VariableError(
            f"`if variable:` / bool() on a {type(self).__name__}{at} ({_describe_value(self._value)}): {why}.\n{fix}."
        )

    def __float__(self) -> float:
        return float(self._read())

    def __int__(self) -> int:
        return int(self._read())

    def __complex__(self) -> complex:
        return complex(self._read())

    def __round__(self, ndigits: int | None = None) -> Any:
        return round(self._read(), ndigits) if ndigits is not None else round(self._read())

    def __index__(self) -> int:
        return self._read().__index__()

    def __neg__(self) -> Any:
        return -self._read()

    def __pos__(self) -> Any:
        return +self._read()

    def __abs__(self) -> Any:
        return abs(self._read())

    def __invert__(self) -> Any:
        return ~self._read()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({_describe_value(self._value)}{_meta_text(self._meta)})"

    # Pickling keeps the value and metadata; the trace token is this process's (a Variable
    # that was checked is checked against the trace it is unpickled in).
    def __getstate__(self) -> tuple:
        meta = {k: _portable(v, k, self) for k, v in self._meta.items()} if self._meta else self._meta
        value = self._value[...] if is_mutable_array(self._value) else self._value  # a ref pickles as its array
        return (value, meta, self._trace is not None)

    def __setstate__(self, state: tuple) -> None:
        self._value, self._meta, checked = state
        if self._meta and self._meta.get("ref") and not is_mutable_array(self._value):
            self._value = mutable_array(self._value)
        self._plait_seen = False
        self._trace = trace_state() if checked else None

    # Variables are mutable cells: identity, not value, decides equality and hashing.
    __hash__ = object.__hash__

    def __eq__(self, other: Any) -> Any:
        return self._read() == _unwrap(other)

    def __ne__(self, other: Any) -> Any:
        return self._read() != _unwrap(other)


VariableState = Variable  # the reference's old name for a Variable in a State; plait's State holds Variables


def _set_index(current: Any, index: Any, new: Any) -> Any:
    if isinstance(current, (list, dict)):
        out = _copied(current)  # a new object, so identity-based write detection sees the change
        out[index] = new
        return out
    return jnp.asarray(current).at[index].set(new)


def _copied(value: Any) -> Any:
    return type(value)(value) if isinstance(value, (list, dict)) else value


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
    return x._read() if isinstance(x, Variable) else x


# Arithmetic goes through the operator module, so Python's full protocol applies to the value
# (int + float works, reflected operands are tried): a Variable behaves exactly like its value.
_OPERATORS = {
    "add": operator.add, "sub": operator.sub, "mul": operator.mul, "truediv": operator.truediv,
    "floordiv": operator.floordiv, "mod": operator.mod, "pow": operator.pow, "matmul": operator.matmul,
    "and": operator.and_, "or": operator.or_, "xor": operator.xor, "lshift": operator.lshift,
    "rshift": operator.rshift,
}


def _binary(fn):
    return lambda self, other: fn(self._read(), _unwrap(other))


def _reflected(fn):
    return lambda self, other: fn(_unwrap(other), self._read())


def _inplace(fn):
    def op(self, other):
        self.value = fn(self._read(), _unwrap(other))
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


class Perturbation(Intermediate):
    """Perturbations added to intermediate values (for gradients with respect to them)."""

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


# -- initializers that carry metadata ------------------------------------------------------
def _as_hooks(hooks: Any) -> tuple:
    if not hooks:
        return ()
    return (hooks,) if callable(hooks) else tuple(hooks)


def with_metadata(
    initializer: Callable,
    on_set_value: Any = (),
    on_get_value: Any = (),
    on_create_value: Any = (),
    on_add_axis: Any = (),
    on_remove_axis: Any = (),
    **metadata: Any,
) -> Callable:
    """Wrap ``initializer`` so the Variable made from its result gets ``metadata`` (and hooks).

    The wrapped initializer returns a :class:`VariableMetadata`, which ``nnx.Param(...)``
    (any Variable type) unpacks; a layer given it as ``kernel_init`` passes the metadata on.

    Example:
        >>> import jax, plait as nnx
        >>> init = nnx.with_metadata(nnx.initializers.lecun_normal(), out_sharding=(None, "model"))
        >>> layer = nnx.Linear(2, 3, kernel_init=init, rngs=nnx.Rngs(0))
        >>> layer.kernel.out_sharding, layer.kernel.value.shape
        ((None, 'model'), (2, 3))
    """
    hooks = {
        "on_set_value": _as_hooks(on_set_value), "on_get_value": _as_hooks(on_get_value),
        "on_create_value": _as_hooks(on_create_value), "on_add_axis": _as_hooks(on_add_axis),
        "on_remove_axis": _as_hooks(on_remove_axis),
    }

    @functools.wraps(initializer)
    def wrapper(*args: Any, **kwargs: Any) -> VariableMetadata:
        return VariableMetadata(initializer(*args, **kwargs), metadata=dict(metadata), **hooks)

    return wrapper


PARTITION_NAME = "partition_name"  # the key of the axis name in a transform's transform_metadata
