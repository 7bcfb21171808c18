"""Graph nodes: Python objects whose attributes form a module graph.

An :class:`Object` is an ordinary mutable Python object. What makes it a *graph node* is
that :mod:`plait.graph` walks its ``__dict__`` to find Variables, arrays and other nodes,
and that it reports *structural* changes (an attribute set or deleted) so that cached
flattenings can be thrown away.

Why a global counter: the flattened structure of a graph depends on every object reachable
from its roots, and an object can be reachable from many roots. Rather than tracking
parents, each structural change to an object that has ever been flattened bumps one
counter, :data:`STRUCTURE_EPOCH`; a cache entry is valid while the counter is unchanged.
Objects that were never flattened (a model being built) change freely without invalidating
anything. Writing a Variable's value is not structural and bumps nothing.

Plain ``list`` and ``dict`` values assigned to an attribute are converted to :class:`List`
and :class:`Dict`, subclasses that report their own edits (``append``, ``__setitem__``...).
"""

from __future__ import annotations

import collections.abc as _abc
import dataclasses as _dataclasses
import os as _os
import re
import sys
import warnings
from typing import Any

import jax
import numpy as np

try:
    from jax.extend.core import get_opaque_trace_state as _get_trace_state
except ImportError:  # pragma: no cover - older JAX
    from jax.core import get_opaque_trace_state as _get_trace_state

from .errors import StateError

__all__ = ["Object", "List", "Dict", "structure_changed", "trace_state"]

STRUCTURE_EPOCH = 0


def trace_state() -> Any:
    """An opaque token for the JAX trace now running (compares equal within one trace).

    Objects and Variables remember the trace they were made in. Writing to one from inside
    a *different* trace means it was closed over by a transformed function instead of being
    passed in: the write could not be carried back out, so it is refused.
    """
    return _get_trace_state(convention="nnx")


#: The token outside every transform. An Object that ``merge`` builds there is left with its
#: bookkeeping slots unset (setting them costs as much as creating the object); unset reads
#: as "made outside every transform, not part of a cached flattening" (see ``_settle``).
TOP_TRACE = trace_state()


def closed_over_error(what: str, action: str, node: Any = None) -> StateError:
    where = owner_path(node) if node is not None else None
    if where is not None:
        what = f"{what} at `{where}`"
    return StateError(
        f"{action} {what} inside a transform it was not passed to: it was closed over, so the "
        "change could not be carried back out (it would leak a tracer or be lost).\n"
        "Pass the module that holds it as an argument of the transformed function, e.g. "
        "nnx.jit(f)(model, x) with def f(model, x): ..., instead of using `model` from the "
        "enclosing scope."
    )


def owner_path(target: Any, limit: int = 32) -> str | None:
    """Where ``target`` sits in a module graph, found from what refers to it, e.g.
    ``Net.blocks[0].linear.kernel`` (rooted at the outermost object's type); None if no module
    holds it. For error messages only: it asks the garbage collector, which is slow."""
    import gc

    parts: list[str] = []
    current = target
    for _ in range(limit):
        step = _owner_step(current, gc.get_referrers(current))
        if step is None:
            break
        current, part = step
        parts.append(part)
    if not parts:
        return None
    return type(current).__name__ + "".join(reversed(parts))


def _owner_step(target: Any, referrers: list) -> tuple[Any, str] | None:
    """One step up: the Object whose attribute, or the List/Dict (or attribute tuple) whose
    entry, ``target`` is; Objects first, and only containers that an Object holds."""
    import gc

    for ref in referrers:
        if isinstance(ref, Object):  # attributes held inline, without a dict object
            for name, value in ref.__dict__.items():
                if value is target:
                    return ref, f".{name}"
    for ref in referrers:
        if type(ref) is dict or type(ref) is Dict:
            for owner in gc.get_referrers(ref):
                if isinstance(owner, Object) and owner.__dict__ is ref:
                    return owner, "." + next(str(k) for k, v in ref.items() if v is target)
    for ref in referrers:
        if type(ref) is Dict:
            return ref, f"[{next(k for k, v in ref.items() if v is target)!r}]"
        if type(ref) is List or (type(ref) is tuple and _owner_step(ref, gc.get_referrers(ref)) is not None):
            return ref, f"[{next(i for i, v in enumerate(ref) if v is target)}]"
    return None


def _plain_repr(obj: Any) -> str:
    return object.__repr__(obj)


#: How an Object shows itself. :mod:`plait.display` installs the graph view when it is
#: imported (it imports this module, so this module cannot import it).
repr_hook: Any = _plain_repr


def structure_changed() -> None:
    """Invalidate every cached graph flattening (called on structural mutation)."""
    global STRUCTURE_EPOCH
    STRUCTURE_EPOCH += 1


def epoch() -> int:
    return STRUCTURE_EPOCH


def track(value: Any) -> Any:
    """Convert plain lists/dicts (recursively) into their change-reporting versions.

    Any other mutable container (``OrderedDict``, ``defaultdict``, ``deque``, ``set``, a custom
    mapping) that holds modules, Variables or arrays is refused: its edits would not be
    reported, so a cached flattening would keep running the old structure.
    """
    t = type(value)
    if t is list:
        return List(value)
    if t is dict:
        return Dict(value)
    if (t is not List and t is not Dict and t.__name__ != "State" and t not in _IMMUTABLE
            and isinstance(value, _MUTABLE) and _holds_data(value)):
        from .errors import GraphError

        use = "nnx.Dict({...})" if isinstance(value, _abc.Mapping) else "nnx.List([...])"
        raise GraphError(
            f"a {t.__name__} holding modules, Variables or arrays cannot be a module attribute: plait could not "
            "see its edits (an added layer would be skipped by cached calls).\n"
            f"Use {use} (or a plain {'dict' if use.startswith('nnx.Dict') else 'list'}, which plait converts), "
            "which reports its edits; it keeps insertion order."
        )
    if t is tuple and any(type(v) in (list, dict, tuple) or hasattr(type(v), "_fields") for v in value):
        return tuple(track(v) for v in value)
    if isinstance(value, tuple) and hasattr(t, "_fields"):  # a NamedTuple (optax states are)
        items = [track(v) for v in value]
        if any(a is not b for a, b in zip(items, value)):
            return t(*items)
    return value


# -- data / static marks (nnx.data, nnx.static; the public face is plait.pytree) ------------
#: Types registered with ``nnx.register_data_type``: their values are data wherever they sit.
DATA_TYPES: set[type] = set()
#: Key of the metadata of the ``dataclasses.Field`` that ``nnx.data``/``nnx.static`` return:
#: True for static, False for data; the value itself is under ``MARK_VALUE``.
MARK, MARK_VALUE = "plait_static", "plait_value"
#: The attribute (in ``__dict__``, so split/merge, transforms and pickling keep it) holding an
#: object's explicit marks as ``((name, is_static), ...)``.
MARKS_ATTR = "_plait_marks"
_SCALARS = (bool, int, float, complex, np.generic)


def mark_of(obj: Object, name: str) -> bool | None:
    """True if attribute ``name`` of ``obj`` is marked static, False if data, None if unmarked."""
    for n, is_static in obj.__dict__.get(MARKS_ATTR, ()):
        if n == name:
            return is_static
    return type(obj)._plait_class_marks.get(name)


def data_leaves(value: Any, depth: int = 0) -> list:
    """The data inside ``value`` (arrays, Variables, Objects, registered data types), looking
    through lists, tuples, dicts and other pytrees but not into graph nodes."""
    if hasattr(value, "_plait_node") or isinstance(value, (np.ndarray, jax.Array)) or type(value) in DATA_TYPES:
        return [value]
    if depth > 16 or isinstance(value, (str, bytes)) or type(value) in _SCALARS or value is None:
        return []
    if isinstance(value, _abc.Mapping):
        return [x for v in value.values() for x in data_leaves(v, depth + 1)]
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in data_leaves(v, depth + 1)]
    children = jax.tree_util.tree_leaves(value, is_leaf=lambda x: x is not value)
    if len(children) == 1 and children[0] is value:
        return []  # opaque to JAX: static
    return [x for v in children for x in data_leaves(v, depth + 1)]


def as_data(value: Any) -> Any:
    """``value`` with its Python numbers turned into 0-d arrays, so the encoding (which keeps
    numbers held by a module as structure) makes them leaves: what ``nnx.data`` asks for."""
    if type(value) in _SCALARS:
        return jax.numpy.asarray(value)
    if hasattr(value, "_plait_node") or isinstance(value, (str, bytes, np.ndarray, jax.Array)) or value is None:
        return value
    return jax.tree_util.tree_map(lambda x: jax.numpy.asarray(x) if type(x) in _SCALARS else x, value,
                                  is_leaf=lambda x: hasattr(x, "_plait_node"))


def _static_error(obj: Object, name: str, value: Any, found: list, explicit: bool) -> Exception:
    from .errors import GraphError

    kinds = ", ".join(sorted({type(x).__name__ for x in found}))
    what = f"a {kinds}" if found[0] is value else f"a {type(value).__name__} holding data ({kinds})"
    why = "was given to nnx.static(...)" if explicit else "was assigned to this attribute, marked static (nnx.static)"
    return GraphError(
        f"`{type(obj).__name__}.{name}`: {what} {why}. "
        "Static attributes are structure (part of the GraphDef, compared by value, never traced), so they "
        "cannot hold arrays, Variables or modules.\n"
        f"If it is state, write self.{name} = nnx.data(...) (or just self.{name} = ..., unmarked: arrays, "
        f"Variables and modules are state by default); if it is configuration, keep the arrays out of it."
    )


def _set_mark(obj: Object, name: str, is_static: bool | None) -> None:
    """Record ``name``'s explicit mark (None: forget it) where it differs from the class's."""
    marks = tuple(m for m in obj.__dict__.get(MARKS_ATTR, ()) if m[0] != name)
    if is_static is not None and type(obj)._plait_class_marks.get(name) != is_static:
        marks = (*marks, (name, is_static))
    if marks:
        object.__setattr__(obj, MARKS_ATTR, marks)
    elif MARKS_ATTR in obj.__dict__:
        object.__delattr__(obj, MARKS_ATTR)


def apply_mark(obj: Object, name: str, value: Any) -> Any:
    """What assigning ``value`` to ``obj.name`` stores, honouring ``nnx.data``/``nnx.static``
    (a marker value, or the attribute's earlier or class-level mark)."""
    explicit = type(value) is _dataclasses.Field and MARK in value.metadata
    if explicit:
        is_static, value = value.metadata[MARK], value.metadata[MARK_VALUE]
        if value is _dataclasses.MISSING:
            from .errors import GraphError

            raise GraphError(
                f"`{type(obj).__name__}.{name}` was assigned nnx.{'static' if is_static else 'data'}() without a "
                "value: with keywords only (default=..., ...) it declares a field of an nnx.dataclass.\n"
                f"Assign a value: self.{name} = nnx.{'static' if is_static else 'data'}(value)"
            )
    else:
        is_static = mark_of(obj, name)
        if is_static is None:
            return value
    if is_static:
        found = data_leaves(value)
        if found:
            raise _static_error(obj, name, value, found, explicit)
    else:
        value = as_data(value)
    if explicit:
        _set_mark(obj, name, is_static)
    return value


#: The metadata of ``nnx.Data[T]``/``nnx.Static[T]`` (``Annotated[T, token]``); the reference's tokens.
DATA_ANNOTATION, STATIC_ANNOTATION = "__data__", "__static__"
_ANNOTATED_MARK = re.compile(r"^\s*(?:\w+\.)*(Data|Static)\[")


def _annotation_mark(cls: type, annotation: Any) -> bool | None:
    """True for ``nnx.Static[T]``, False for ``nnx.Data[T]``, None for any other annotation.

    A string annotation (``from __future__ import annotations``) is evaluated in the class's
    module; if that fails, ``Data[...]``/``Static[...]`` at its start decides, as in the reference."""
    if isinstance(annotation, str):
        found = _ANNOTATED_MARK.match(annotation)
        if not found:
            return None
        module = sys.modules.get(cls.__module__)
        try:
            annotation = eval(annotation, dict(vars(module)) if module else {}, {cls.__name__: cls, **vars(cls)})
        except Exception:  # an unresolvable name: go by the spelling
            return found.group(1) == "Static"
    tokens = getattr(annotation, "__metadata__", ())
    if STATIC_ANNOTATION in tokens:
        return True
    if DATA_ANNOTATION in tokens:
        return False
    return None


def _user_level() -> int:
    """The ``stacklevel`` of the first frame outside plait (the class statement being run)."""
    here, level, frame = _os.path.dirname(__file__), 1, sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(here):
        frame, level = frame.f_back, level + 1
    return level


def _class_marks(cls: type) -> dict:
    """Marks declared on the class (``x: int = nnx.static()`` fields, ``x: nnx.Static[int]``
    annotations), over its bases' marks."""
    marks: dict = {}
    for base in reversed(cls.__mro__[1:]):
        marks.update(getattr(base, "_plait_class_marks", {}))
    annotated: dict = {}
    for name, annotation in dict(vars(cls).get("__annotations__", {})).items():
        is_static = _annotation_mark(cls, annotation)
        if is_static is not None:
            which = "Static" if is_static else "Data"
            warnings.warn(
                f"'{which}' is deprecated, please replace:\n\n  {name}: nnx.{which}[SomeType]\n\nwith:\n\n"
                f"  {name}: SomeType = nnx.{which.lower()}()\n", DeprecationWarning, stacklevel=_user_level())
            annotated[name] = is_static
    marks.update(annotated)
    for name, value in list(vars(cls).items()):
        if type(value) is not _dataclasses.Field:
            continue
        if MARK in value.metadata:
            is_static = value.metadata[MARK]
        elif isinstance(value.metadata.get("static"), bool):  # dataclasses.field(metadata={"static": ...})
            is_static = value.metadata["static"]
        else:
            continue
        if annotated.get(name, is_static) != is_static:
            from .errors import GraphError

            field = "static" if is_static else "data"
            raise GraphError(
                f"`{cls.__name__}.{name}` is annotated nnx.{'Data' if is_static else 'Static'}[...] but its field "
                f"is nnx.{field}(...): the two marks conflict.\nKeep one: {name}: SomeType = nnx.{field}(...)"
            )
        marks[name] = is_static
    return marks


_IMMUTABLE = (tuple, str, bytes, frozenset, type(None))
_MUTABLE = (_abc.MutableMapping, _abc.MutableSequence, _abc.MutableSet)


def _holds_data(value: Any, depth: int = 0) -> bool:
    """``value`` holds a graph node (Object or Variable) or an array, at any depth."""
    if hasattr(value, "_plait_node") or isinstance(value, (np.ndarray, jax.Array)):
        return True
    if depth > 8 or isinstance(value, (str, bytes)):
        return False
    if isinstance(value, _abc.Mapping):
        return any(_holds_data(v, depth + 1) for v in value.values())
    if isinstance(value, (_abc.Collection,)) and not hasattr(value, "shape"):
        try:
            return any(_holds_data(v, depth + 1) for v in value)
        except TypeError:
            return False
    return False


class Object:
    """Base class of every graph node (``Module``, ``Rngs``, ``RngStream``, ...).

    Example:
        >>> import plait as nnx
        >>> class Counter(nnx.Object):
        ...     def __init__(self):
        ...         self.count = nnx.Variable(0)
        >>> Counter().count.value
        0
    """

    # _plait_trace: the JAX trace it was made in; _plait_seen: part of a cached flattening (so
    # a structural change must drop the caches). Both may be unset: see _settle.
    __slots__ = ("_plait_seen", "_plait_trace", "__dict__", "__weakref__")
    #: Marks plait's graph nodes (Objects and Variables) for duck-typed checks.
    _plait_node = True
    #: Whether ``merge`` may leave the bookkeeping slots unset (see _settle): not for a class
    #: whose ``__getattr__``/``__getattribute__`` would answer for an unset slot.
    _plait_unset_slots = True
    _plait_class_marks: dict = {}
    #: The order in which a graph walk visits the attributes: None for sorted by name (the
    #: reference's order), or a function of the object returning its attribute names.
    _plait_attr_order: Any = None

    def __new__(cls, *args: Any, **kwargs: Any) -> Object:
        obj = object.__new__(cls)
        object.__setattr__(obj, "_plait_seen", False)
        object.__setattr__(obj, "_plait_trace", trace_state())
        return obj

    def __init_subclass__(cls, pytree: bool | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if pytree:
            from .errors import GraphError

            raise GraphError(
                f"class {cls.__name__}(..., pytree=True): plait objects are never JAX pytrees; they are graph "
                "nodes (shared references are kept and state is written back), which raw jax.jit/jax.tree "
                "functions could not do.\n"
                f"Leave pytree out (or pass pytree=False), use nnx.jit/nnx.vmap/... on {cls.__name__} objects, "
                "and nnx.split/nnx.state to get a pytree of their state."
            )
        cls._plait_class_marks = _class_marks(cls)
        cls._plait_unset_slots = not hasattr(cls, "__getattr__") and cls.__getattribute__ is object.__getattribute__
        _refuse_as_pytree(cls)

    def _check_trace(self, name: str) -> bool:
        """Refuse a write from another trace than the object's; whether it is part of a
        cached flattening."""
        try:  # unset only in classes without __getattr__ (_plait_unset_slots)
            trace, seen = self._plait_trace, self._plait_seen
        except AttributeError:
            trace, seen = _settle(self)
        if trace != trace_state():
            raise closed_over_error(f"attribute {name!r} of a {type(self).__name__}", "cannot set", self)
        return seen

    def __setattr__(self, name: str, value: Any) -> None:
        if self._check_trace(name):
            structure_changed()
        if (type(value) is _dataclasses.Field or MARKS_ATTR in self.__dict__
                or name in type(self)._plait_class_marks):
            value = apply_mark(self, name, value)
        object.__setattr__(self, name, track(value))

    def __delattr__(self, name: str) -> None:
        if self._check_trace(name):
            structure_changed()
        object.__delattr__(self, name)
        marks = self.__dict__.get(MARKS_ATTR)
        if marks and name != MARKS_ATTR:
            _set_mark(self, name, None)

    def __repr__(self) -> str:
        return repr_hook(self)

    # Pickling and copying keep the attributes only: the trace token belongs to this
    # process's JAX trace (it holds a weak reference), and "seen" to its flatten cache.
    def __getstate__(self) -> dict:
        return {name: _portable(value, name, self) for name, value in self.__dict__.items()}

    def __setstate__(self, state: dict) -> None:
        object.__setattr__(self, "_plait_seen", False)
        object.__setattr__(self, "_plait_trace", trace_state())
        self.__dict__.update(state)

    def __copy__(self) -> Object:
        new = _blank(type(self))
        new.__dict__.update(self.__dict__)
        return new

    def __deepcopy__(self, memo: dict) -> Object:
        import copy

        new = _blank(type(self))
        memo[id(self)] = new
        new.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return new


_get_trace = Object.__dict__["_plait_trace"].__get__
_get_seen = Object.__dict__["_plait_seen"].__get__


def _settle(obj: Object) -> tuple:
    """Set the bookkeeping slots ``merge`` left unset to what unset means (made outside
    every transform, not seen by a cached flattening); returns ``(trace, seen)``."""
    try:
        trace = _get_trace(obj)
    except AttributeError:
        trace = TOP_TRACE
        object.__setattr__(obj, "_plait_trace", trace)
    try:
        seen = _get_seen(obj)
    except AttributeError:
        seen = False
        object.__setattr__(obj, "_plait_seen", seen)
    return trace, seen


def object_trace(obj: Object) -> Any:
    """The trace token of the transform ``obj`` was made in (see :func:`trace_state`)."""
    try:  # unset only in classes without __getattr__ (_plait_unset_slots)
        return obj._plait_trace
    except AttributeError:
        return _settle(obj)[0]


def _blank(cls: type) -> Object:
    obj = object.__new__(cls)
    object.__setattr__(obj, "_plait_seen", False)
    object.__setattr__(obj, "_plait_trace", trace_state())
    return obj


# -- pickling attribute values the standard pickle cannot store ------------------------------
class _ByName:
    """A public function pickled by its import path: JAX's jitted and custom-derivative
    functions (``jax.nn.relu``, ``jnp.tanh``) cannot be pickled by the standard library, but
    they are module attributes, so the name finds them again."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def __reduce__(self) -> tuple:
        return (_lookup, (self.module, self.name))


def _lookup(module: str, name: str) -> Any:
    import importlib

    value: Any = importlib.import_module(module)
    for part in name.split("."):
        value = getattr(value, part)
    return value


class _Cloudpickled:
    """A closure or lambda (an optax transformation, an initializer) stored by cloudpickle
    inside a standard pickle; loading it needs cloudpickle installed too."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __reduce__(self) -> tuple:
        import pickle

        return (pickle.loads, (self.data,))


def _portable(value: Any, name: Any, owner: Any) -> Any:
    """``value`` as the standard pickle can store it (the same object when it already can)."""
    t = type(value)
    if t in (tuple, list, List) or (isinstance(value, tuple) and hasattr(t, "_fields")):
        items = [_portable(v, name, owner) for v in value]
        if all(a is b for a, b in zip(items, value)):
            return value
        return t(*items) if t is not tuple and isinstance(value, tuple) else t(items)  # a NamedTuple: t(*items)
    if t in (dict, Dict):
        items = {k: _portable(v, name, owner) for k, v in value.items()}
        return value if all(items[k] is v for k, v in value.items()) else t(items)
    if isinstance(value, type) or not callable(value) or hasattr(value, "_plait_node"):
        return value  # data, classes, and plait objects (which pickle themselves)
    import pickle
    import types

    if t is types.FunctionType and "<" not in value.__qualname__:
        return value  # a module-level function: pickle stores its name
    try:
        pickle.dumps(value)
        return value
    except Exception:
        pass
    module, qualname = getattr(value, "__module__", None), getattr(value, "__qualname__", None)
    if isinstance(module, str) and isinstance(qualname, str) and "<" not in qualname:
        try:
            if _lookup(module, qualname) is value:
                return _ByName(module, qualname)
        except (ImportError, AttributeError):
            pass
    try:
        import cloudpickle
    except ImportError:
        raise pickle.PicklingError(
            f"attribute {name!r} of a {type(owner).__name__} holds {value!r}, which the standard pickle cannot "
            "store (a closure or lambda, such as an optax transformation).\n"
            'Install cloudpickle (pip install "plait[pickle]") and plait stores it with cloudpickle, or pickle '
            "with cloudpickle.dumps(...), or pickle only the state: pickle.dumps(nnx.state(model))"
        ) from None
    return _Cloudpickled(cloudpickle.dumps(value))


def _refuse_as_pytree(cls: type) -> None:
    """Modules are not pytrees: a raw JAX transform given one fails loudly, saying what to use.

    (Otherwise JAX would take a module with a ``dtype`` attribute for an array.)
    """
    import jax

    def flatten(obj: Any) -> Any:
        raise TypeError(
            f"a {type(obj).__name__} (a plait module) was passed to a JAX function that takes arrays and "
            "pytrees, such as raw jax.jit or jax.tree.map. Modules are mutable objects, not pytrees.\n"
            "Use plait's transforms (nnx.jit, nnx.vmap, nnx.grad, ...), which take modules and write their "
            "state back; or pass its state: graphdef, state = nnx.split(module), and nnx.merge it inside."
        )

    jax.tree_util.register_pytree_node(cls, flatten, lambda aux, children: None)


def _mutator(base_type: type, name: str):
    base = getattr(base_type, name)

    def method(self, *args, **kwargs):
        structure_changed()
        return base(self, *args, **kwargs)

    method.__name__ = name
    return method


class List(list):
    """A ``list`` that reports edits, so cached structure stays correct.

    Module attributes that are plain lists become ``List`` automatically.

    Example:
        >>> import plait as nnx
        >>> layers = nnx.List([1, 2])
        >>> layers.append(3); list(layers)
        [1, 2, 3]
    """

    __slots__ = ()

    def __init__(self, items: Any = ()) -> None:
        super().__init__(track(v) for v in items)

    def append(self, value: Any) -> None:
        structure_changed()
        list.append(self, track(value))

    def __setitem__(self, index: Any, value: Any) -> None:
        structure_changed()
        list.__setitem__(self, index, track(value) if not isinstance(index, slice) else [track(v) for v in value])

    def insert(self, index: Any, value: Any) -> None:
        structure_changed()
        list.insert(self, index, track(value))

    def extend(self, values: Any) -> None:
        structure_changed()
        list.extend(self, [track(v) for v in values])

    def __iadd__(self, values: Any) -> List:
        self.extend(values)
        return self

    __delitem__ = _mutator(list, "__delitem__")
    pop = _mutator(list, "pop")
    remove = _mutator(list, "remove")
    clear = _mutator(list, "clear")
    sort = _mutator(list, "sort")
    reverse = _mutator(list, "reverse")
    __imul__ = _mutator(list, "__imul__")


class Dict(dict):
    """A ``dict`` that reports edits, so cached structure stays correct.

    Module attributes that are plain dicts become ``Dict`` automatically.

    Example:
        >>> import plait as nnx
        >>> d = nnx.Dict(a=1); d["b"] = 2; sorted(d)
        ['a', 'b']
    """

    __slots__ = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        dict.update(self, {k: track(v) for k, v in dict(*args, **kwargs).items()})

    def __setitem__(self, key: Any, value: Any) -> None:
        structure_changed()
        dict.__setitem__(self, key, track(value))

    def update(self, *args: Any, **kwargs: Any) -> None:
        structure_changed()
        dict.update(self, {k: track(v) for k, v in dict(*args, **kwargs).items()})

    def setdefault(self, key: Any, default: Any = None) -> Any:
        structure_changed()
        return dict.setdefault(self, key, track(default))

    __delitem__ = _mutator(dict, "__delitem__")
    pop = _mutator(dict, "pop")
    popitem = _mutator(dict, "popitem")
    clear = _mutator(dict, "clear")
    __ior__ = _mutator(dict, "__ior__")


_refuse_as_pytree(Object)


def _register_containers() -> None:
    import jax

    jax.tree_util.register_pytree_with_keys(
        List,
        lambda xs: (tuple((jax.tree_util.SequenceKey(i), x) for i, x in enumerate(xs)), None),
        lambda _, xs: List(xs),
        flatten_func=lambda xs: (tuple(xs), None),
    )

    def sorted_keys(d):  # the order jax uses for dict, so Dict and dict flatten alike
        try:
            return tuple(sorted(d))
        except TypeError:
            return tuple(d)

    def dict_flatten_with_keys(d):
        keys = sorted_keys(d)
        return tuple((jax.tree_util.DictKey(k), d[k]) for k in keys), keys

    def dict_flatten(d):
        keys = sorted_keys(d)
        return tuple(d[k] for k in keys), keys

    jax.tree_util.register_pytree_with_keys(
        Dict, dict_flatten_with_keys, lambda keys, vs: Dict(zip(keys, vs)), flatten_func=dict_flatten
    )


_register_containers()
