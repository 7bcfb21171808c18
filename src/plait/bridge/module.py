"""Modules written the Linen way that are plait modules: ``nnx.bridge.Module``.

A Linen module declares its configuration as dataclass fields and creates its variables
when it first runs: ``self.param(name, init_fn, *shape)`` inside ``setup()`` or a method
decorated with :func:`compact`, where submodules made inline get names ``Dense_0``,
``Dense_1``... ``init(rngs, x)`` returns the variables by collection and
``apply(variables, x)`` computes with them. :class:`Module` keeps that programming model
while being a plait module, so the two styles mix in one graph.

How it works. ``apply`` runs a *copy* of the module (the instance you hold stays a
configuration): the variables you pass are loaded onto the copy's attributes, every bridge
module in the copy gets a :class:`Scope` (the RNG streams of this call, the ``mutable``
collections, whether it initializes), ``setup`` runs, then the method. A submodule made
during a call is attached to its parent right away (auto-named in :func:`compact`), and
the variables stored for its name are loaded into it before its ``setup`` runs, so
``self.param`` finds its value instead of initializing it. At the end the copy's Variables
go back out as Linen variables, and the scopes are dropped.

A stack of :class:`ModuleStackEntry` (:func:`current_context`, :func:`current_module`)
says which module is running and whether inside ``compact``; that is how a submodule knows
its parent without being told.

Example:
    >>> import jax.numpy as jnp, plait as nnx
    >>> class Dense(nnx.bridge.Module):
    ...     features: int
    ...     @nnx.bridge.compact
    ...     def __call__(self, x):
    ...         w = self.param("w", nnx.initializers.lecun_normal(), (x.shape[-1], self.features))
    ...         return x @ w
    >>> class MLP(nnx.bridge.Module):
    ...     @nnx.bridge.compact
    ...     def __call__(self, x):
    ...         h = jnp.tanh(Dense(4)(x))
    ...         return Dense(2)(h)
    >>> variables = MLP().init(0, jnp.ones((1, 3)))
    >>> {k: v["w"].shape for k, v in variables["params"].items()}
    {'Dense_0': (3, 4), 'Dense_1': (4, 2)}
    >>> MLP().apply(variables, jnp.ones((1, 3))).shape
    (1, 2)
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import inspect
import threading
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import jax
import numpy as np

from ..errors import GraphError, RngError
from ..graph import clone, is_graph_node, iter_graph, state
from ..module import Module as PlaitModule
from ..object import Dict, Object
from ..rngs import Rngs
from ..variable_names import variable_name_from_type, variable_type_from_name
from ..variables import Param, RngState, Variable
from .variables import flatten_mapping, linen_value, linen_vars_to_nnx_attrs, unflatten_mapping

__all__ = ["Module", "Scope", "AttrPriority", "ModuleStackEntry", "compact", "current_context", "current_module"]

F = TypeVar("F", bound=Callable[..., Any])


@dataclasses.dataclass
class ModuleStackEntry:
    """One running bridge-module method: the module, whether it is a :func:`compact` method,
    how many submodules of each class it has auto-named so far, and the names it gave."""

    module: Module
    in_compact: bool
    type_counter: defaultdict = dataclasses.field(default_factory=lambda: defaultdict(int))
    made: dict = dataclasses.field(default_factory=dict)


class ModuleContext(threading.local):
    """The per-thread stack of running bridge-module methods (``None`` at the bottom)."""

    def __init__(self) -> None:
        self.module_stack: list[ModuleStackEntry | None] = [None]


MODULE_CONTEXT = ModuleContext()


def current_context() -> ModuleStackEntry | None:
    """The innermost running bridge-module method, or None outside any.

    Example:
        >>> import plait as nnx
        >>> nnx.bridge.current_context() is None
        True
    """
    return MODULE_CONTEXT.module_stack[-1]


def current_module() -> Module | None:
    """The bridge module whose method is running (``setup``, a :func:`compact` method, or
    the method ``apply`` called), or None.

    Example:
        >>> import plait as nnx
        >>> class Who(nnx.bridge.Module):
        ...     def __call__(self):
        ...         return type(nnx.bridge.current_module()).__name__
        >>> Who().apply({})
        'Who'
    """
    entry = current_context()
    return None if entry is None else entry.module


class Scope(Object):
    """What a bridge module has while ``apply`` runs it: the call's RNG streams (one
    :class:`~plait.Rngs` shared by every module of the call), the ``mutable`` collections,
    and whether this call is ``init``.

    Example:
        >>> import plait as nnx
        >>> scope = nnx.bridge.Scope(nnx.Rngs(0), mutable=True)
        >>> scope.copy().rngs is scope.rngs, scope.mutable
        (True, True)
    """

    def __init__(self, rngs: Rngs, mutable: Any, initializing: bool = False) -> None:
        self.rngs = rngs
        self.mutable = mutable
        self.initializing = initializing

    def copy(self) -> Scope:
        """A scope with the same streams and settings (for a submodule)."""
        return Scope(self.rngs, self.mutable, self.initializing)


class AttrPriority(enum.IntEnum):
    """Where an attribute comes in a graph walk of a bridge module (lower first; ties by
    name). Submodules attached by their parent (``name=`` or auto-named) are
    ``INIT_PARENT``, so their variables sit under that name even if another attribute also
    refers to them."""

    HIGH = 0
    INIT_PARENT = 20
    DEFAULT = 50
    LOW = 100


def _attr_order(module: Module) -> list[str]:
    attrs = module.__dict__
    priorities = attrs.get("attr_priorities") or {}
    return sorted(attrs, key=lambda k: (priorities.get(k, AttrPriority.DEFAULT), k))


class _ModuleMeta(type):
    """Construction in context: ``Dense(4)`` inside a running bridge module is attached to
    it (auto-named ``Dense_0`` in :func:`compact`, or under ``name=``)."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        entry = current_context()
        is_field = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
        parent, name = None, None
        if "parent" in kwargs and "parent" not in is_field:
            parent = kwargs.pop("parent")
            if parent is not None and (entry is None or entry.in_compact):
                raise GraphError(
                    f"{cls.__name__}(parent={type(parent).__name__}(...)): a bridge submodule's parent is the module "
                    "whose method makes it; parent= can only be None (make it unattached).\n"
                    f"Create it inside the parent's setup() or @nnx.bridge.compact method: {cls.__name__}(...)"
                )
        elif entry is not None:
            parent = entry.module
        if "name" in kwargs:
            name = kwargs["name"] if "name" in is_field else kwargs.pop("name")
            if not isinstance(name, str):
                raise GraphError(f"{cls.__name__}(name={name!r}): name must be a str, like name='encoder'")
        elif entry is not None and entry.in_compact and parent is not None:
            name = auto_submodule_name(entry, cls)
        module = super().__call__(*args, **kwargs)
        if parent is not None and name is not None:
            module = attach(parent, name, module, entry)
        return module


def auto_submodule_name(entry: ModuleStackEntry, cls: type) -> str:
    """The next Linen-style name for a submodule of class ``cls``: ``Dense_0``, ``Dense_1``..."""
    index = entry.type_counter[cls]
    entry.type_counter[cls] += 1
    return f"{cls.__name__}_{index}"


def attach(parent: Module, name: str, module: Any, entry: ModuleStackEntry | None) -> Any:
    """Make ``module`` the attribute ``name`` of ``parent`` (a submodule made in one of its
    methods). A name can be given once per call; a module of the same class made under the
    same name by an earlier call takes over the earlier one's variables, as in Linen."""
    where = f"{_path(parent)}.{name}"
    if entry is not None and name in entry.made and entry.made[name] is not module:
        raise GraphError(
            f"`{where}`: two submodules named {name!r} in one call of {type(parent).__name__}; the second would "
            "replace the first and its variables.\n"
            "Give each its own name (name='...'), or leave name= out in a @nnx.bridge.compact method for "
            "automatic names."
        )
    existing = parent.__dict__.get(name)
    if existing is not None and existing is not module:
        if type(existing) is not type(module) or not is_graph_node(existing):
            raise GraphError(
                f"`{where}` is already a {type(existing).__name__}, so a {type(module).__name__} cannot be "
                f"attached under the name {name!r}.\n"
                "Choose another name for the submodule (name='...'), or rename the other attribute."
            )
        load(module, _variables_tree(existing))  # made again by a later call: same variables
    if entry is not None:
        entry.made[name] = module
    setattr(parent, name, module)
    parent.set_attr_priority(name, AttrPriority.INIT_PARENT)
    return module


def _variables_tree(node: Any) -> dict:
    """The Variables of ``node`` as a nested dict (RNG state left out: streams are per call)."""
    flat = {path: v for path, v in state(node).flat_state() if not isinstance(v, RngState)}
    return unflatten_mapping(flat)


def load(target: Any, tree: Mapping) -> None:
    """Put the Variables of ``tree`` (nested by attribute name) into ``target``: into its
    existing Variables by value, as new attributes where it has none. A part meant for a
    bridge submodule that does not exist yet waits until the submodule is attached."""
    is_object = isinstance(target, Object)
    for key, sub in tree.items():
        if is_object:
            current = target.__dict__.get(key, _MISSING)
        else:
            try:
                current = target[key]
            except (KeyError, IndexError, TypeError):
                current = _MISSING
        if isinstance(sub, Variable):
            if isinstance(current, Variable):
                current.set_raw_value(sub.get_raw_value())
                continue
            new: Any = sub
        elif isinstance(current, Module) or (current is not _MISSING and is_graph_node(current)) or isinstance(
                current, (list, dict, tuple)):
            load(current, sub)
            continue
        elif isinstance(target, Module):
            target._pending()[key] = sub
            continue
        else:
            new = {k: v for k, v in sub.items()}  # a plain module's attribute: a nested dict of Variables
        if is_object:
            setattr(target, key, new)
        else:
            target[key] = new


_MISSING = object()


def _path(module: Any) -> str:
    return getattr(module, "_bridge_path", None) or type(module).__name__


def _bind(parent: Module, name: str, value: Any) -> None:
    """Give the bridge modules in ``value`` (just assigned to ``parent.name``) the parent's
    scope and run their ``setup``; the variables stored for ``name`` are loaded first."""
    pending = parent._pending().pop(name, None)
    if pending is not None:
        if isinstance(value, Module) or is_graph_node(value) or isinstance(value, (list, dict, tuple)):
            load(value, pending)
    for node in reversed(_modules_in(value)):
        if isinstance(node, Module) and node.scope is None:
            object.__setattr__(node, "_bridge_path", f"{_path(parent)}.{name}" if node is value else _path(node))
            node.scope = parent.scope.copy()
            _maybe_call_setup(node)


def _modules_in(value: Any) -> list:
    """The bridge modules reachable from ``value`` (a module, or lists/dicts of them), children first."""
    if isinstance(value, PlaitModule):
        return [node for _, node in iter_graph(value) if isinstance(node, Module)]
    if isinstance(value, (list, tuple)):
        return [m for v in value for m in _modules_in(v)]
    if isinstance(value, dict):
        return [m for v in value.values() for m in _modules_in(v)]
    return []


def _maybe_call_setup(module: Module) -> None:
    if callable(getattr(module, "setup", None)) and not getattr(module, "_bridge_is_setup", False):
        object.__setattr__(module, "_bridge_is_setup", True)
        MODULE_CONTEXT.module_stack.append(ModuleStackEntry(module, in_compact=False))
        try:
            module.setup()
        finally:
            MODULE_CONTEXT.module_stack.pop()


class Module(PlaitModule, metaclass=_ModuleMeta):
    """A plait module written in Linen style (the reference's ``nnx.bridge.Module``): see the
    module docstring.

    Subclasses are dataclasses (annotated class attributes are constructor arguments).
    Variables are made by :meth:`param` / :meth:`variable` in ``setup()`` or in a
    :func:`compact` method, and the module is run with :meth:`init` / :meth:`apply`.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> class Affine(nnx.bridge.Module):
        ...     features: int
        ...     def setup(self):
        ...         self.scale = self.param("scale", nnx.initializers.ones, (self.features,))
        ...     def __call__(self, x):
        ...         return x * self.scale
        >>> variables = Affine(3).init(0, jnp.ones(3))
        >>> Affine(3).apply(variables, 2 * jnp.ones(3)).tolist()
        [2.0, 2.0, 2.0]
    """

    __slots__ = ("_bridge_pending", "_bridge_is_setup", "_bridge_path")
    _plait_attr_order = staticmethod(_attr_order)

    if TYPE_CHECKING:  # set on every instance by __new__
        scope: Scope | None
        attr_priorities: dict[str, AttrPriority]

    def __new__(cls, *args: Any, **kwargs: Any) -> Module:
        module = super().__new__(cls)
        object.__setattr__(module, "scope", None)
        object.__setattr__(module, "attr_priorities", Dict())
        return module

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        dataclasses.dataclass(repr=False)(cls)
        cls.__hash__ = object.__hash__  # type: ignore[method-assign]  # a module is its identity

    def __setattr__(self, name: str, value: Any) -> None:
        if self.__dict__.get("scope") is not None and name != "scope":
            super().__setattr__(name, value)
            _bind(self, name, self.__dict__[name])
            return
        super().__setattr__(name, value)

    def _pending(self) -> dict:
        try:
            return self._bridge_pending
        except AttributeError:
            object.__setattr__(self, "_bridge_pending", {})
            return self._bridge_pending

    def set_attr_priority(self, name: str, value: AttrPriority) -> None:
        """Where attribute ``name`` comes in a graph walk (see :class:`AttrPriority`)."""
        self.attr_priorities[name] = value

    def is_initializing(self) -> bool:
        """True while :meth:`init` runs this module."""
        scope = self.__dict__.get("scope")
        return scope is not None and scope.initializing

    def _scope(self, what: str) -> Scope:
        scope = self.__dict__.get("scope")
        if scope is None:
            raise GraphError(
                f"{_path(self)}.{what}: this {type(self).__name__} is not running, so it has no variables or RNG "
                "streams (a bridge module makes them inside init/apply).\n"
                f"Call it through init/apply: {type(self).__name__}(...).init(0, x), and make variables in setup() or "
                "a method decorated with @nnx.bridge.compact."
            )
        return scope

    def make_rng(self, name: str = "default") -> jax.Array:
        """A new key from stream ``name`` of this call's RNG streams (``default`` if there is
        no such stream)."""
        scope = self._scope(f"make_rng({name!r})")
        if scope.rngs is None:
            raise RngError(f"{_path(self)}.make_rng({name!r}): this call has no RNG streams.\n"
                           "Pass them to init/apply: module.apply(variables, x, rngs={'dropout': key})")
        return scope.rngs[name]()

    def param(self, name: str, init_fn: Callable[..., Any], *init_args: Any, unbox: bool = True,
              **init_kwargs: Any) -> Param:
        """The Param ``name`` of this module: made by ``init_fn(self.make_rng('params'), *init_args,
        **init_kwargs)`` the first time, found afterwards (loaded by ``apply``). The Param is
        returned either way, with ``unbox`` True or False: it is its value and its metadata at once.

        Example:
            >>> import jax.numpy as jnp, plait as nnx
            >>> class Bias(nnx.bridge.Module):
            ...     @nnx.bridge.compact
            ...     def __call__(self, x):
            ...         return x + self.param("b", nnx.initializers.zeros_init(), x.shape[-1:])
            >>> Bias().init(0, jnp.ones(2))["params"]["b"].tolist()
            [0.0, 0.0]
        """
        scope = self._scope(f"param({name!r})")
        current = self._existing(name, f"param({name!r}, ...)", Param)
        if current is _MISSING and not scope.initializing and not ("params" in scope.rngs or "default" in scope.rngs):
            raise GraphError(
                f"`{_path(self)}.{name}` is not in the variables passed to apply, and this call has no 'params' "
                "stream to initialize it.\n"
                "Pass the variables init returned (variables['params'] holds every Param), or add a 'params' stream "
                "to create it: apply(variables, x, rngs={'params': key})"
            )
        if current is _MISSING:
            variable = Param(init_fn(self.make_rng("params"), *init_args, **init_kwargs))
        else:
            self._check_shape(name, current, lambda: Param(init_fn(jax.random.key(0), *init_args,
                                                                   **init_kwargs)).get_value())
            if isinstance(current, Param):
                return current
            variable = Param(current)
        setattr(self, name, variable)
        return variable

    def variable(self, col: str, name: str, init_fn: Callable[..., Any] | None = None, *init_args: Any,
                 unbox: bool = True, **init_kwargs: Any) -> Variable:
        """The Variable ``name`` of collection ``col`` (its type: ``'batch_stats'`` ->
        ``BatchStat``, another name -> a Variable type of that name): made by
        ``init_fn(*init_args, **init_kwargs)`` the first time, found afterwards.

        Example:
            >>> import jax.numpy as jnp, plait as nnx
            >>> class Count(nnx.bridge.Module):
            ...     @nnx.bridge.compact
            ...     def __call__(self):
            ...         n = self.variable("counts", "n", jnp.zeros, (), jnp.int32)
            ...         n.value += 1
            >>> variables = Count().init(0)
            >>> _, updates = Count().apply(variables, mutable="counts")
            >>> int(updates["counts"]["n"])
            2
        """
        vtype = variable_type_from_name(col, allow_register=True)
        self._scope(f"variable({col!r}, {name!r})")
        current = self._existing(name, f"variable({col!r}, {name!r}, ...)", vtype)
        if isinstance(current, Variable):
            return current
        if init_fn is None:
            raise GraphError(
                f"{_path(self)}.variable({col!r}, {name!r}): there is no such variable yet and no init_fn to make it.\n"
                f"Pass one: self.variable({col!r}, {name!r}, jnp.zeros, shape)"
            )
        if current is _MISSING:
            variable = vtype(init_fn(*init_args, **init_kwargs))
        else:
            self._check_shape(name, current, lambda: init_fn(*init_args, **init_kwargs))
            variable = vtype(current)
        setattr(self, name, variable)
        return variable

    def _existing(self, name: str, what: str, vtype: type) -> Any:
        """What this module holds under ``name`` for :meth:`param`/:meth:`variable`: a Variable
        of type ``vtype``, an array to wrap, or _MISSING; anything else there is an error."""
        current = self.__dict__.get(name, _MISSING)
        if current is _MISSING and name not in type(self).__dict__ and not hasattr(type(self), name):
            return _MISSING
        if isinstance(current, vtype):
            return current
        if isinstance(current, (jax.Array, np.ndarray)) or (
                isinstance(current, Mapping) and all(isinstance(x, (jax.Array, np.ndarray))
                                                     for x in jax.tree.leaves(current))):
            return current
        found = "a method or class attribute" if current is _MISSING else f"a {type(current).__name__}"
        raise GraphError(
            f"`{_path(self)}.{name}` is {found}, so self.{what} cannot make or find a {vtype.__name__} named "
            f"{name!r} there.\n"
            f"Give the {vtype.__name__} another name (e.g. {name + '_' + vtype.__name__.lower()!r}), or rename the "
            "other attribute."
        )

    def _check_shape(self, name: str, value: Any, make: Callable[[], Any]) -> None:
        """Refuse a loaded ``value`` whose shape is not what ``make`` (the init call) gives."""
        try:
            abstract = jax.eval_shape(make)
        except Exception:  # an init function that cannot run abstractly: nothing to compare with
            return
        got = [np.shape(x) for x in jax.tree.leaves(value)]
        want = [np.shape(x) for x in jax.tree.leaves(abstract)]
        if got != want:
            shown = got[0] if len(got) == 1 else got
            expected = want[0] if len(want) == 1 else want
            raise GraphError(
                f"`{_path(self)}.{name}` has shape {shown}, but its init function makes shape {expected}: the "
                "variables passed to apply were not made by this module's configuration.\n"
                "Pass the variables init returned for this configuration (or make them again with init)."
            )

    def _get_variables(self) -> dict[str, Any]:
        collections: dict[str, dict] = {}
        for path, v in state(self).flat_state():
            if isinstance(v, RngState):  # per call, and Linen has no such collection
                continue
            collection = variable_name_from_type(type(v), allow_register=True)
            collections.setdefault(collection, {})[path] = linen_value(v)
        return {collection: unflatten_mapping(flat) for collection, flat in collections.items()}

    @property
    def variables(self) -> dict[str, Any]:
        """The Variables this module holds, as Linen variables by collection."""
        return self._get_variables()

    def apply(self, variables: Mapping[str, Any], *args: Any, rngs: Any = None,
              method: Callable[..., Any] | str = "__call__", mutable: Any = False, _initialize: bool = False,
              **kwargs: Any) -> Any:
        """Run ``method`` (``'__call__'``, another method's name, or a function taking the module
        first) on a copy of this module holding ``variables`` (``{collection: tree}``).

        ``rngs`` are the call's streams: a seed or key (the ``default`` stream), a dict of keys by
        stream name, or an ``nnx.Rngs``. With ``mutable`` other than False, the result is
        ``(output, variables)`` with every variable after the call, so changes the method made
        (a counter, batch statistics) come back; it is also what Linen modules inside see.
        """
        module = clone(self)
        tree = linen_vars_to_nnx_attrs({c: t for c, t in variables.items() if _non_empty(t)})
        load(module, tree)
        rngs = _as_rngs(rngs)
        fn = _method_fn(module, method)
        nodes = [node for _, node in iter_graph(module) if isinstance(node, Module)]
        for node in nodes:
            node.scope = Scope(rngs, mutable, _initialize)
        for node in nodes:
            _maybe_call_setup(node)
        MODULE_CONTEXT.module_stack.append(ModuleStackEntry(module, in_compact=False))
        try:
            out = fn(module, *args, **kwargs)
        finally:
            MODULE_CONTEXT.module_stack.pop()
            for _, node in iter_graph(module):
                if isinstance(node, Module):
                    node.scope = None
        return out if mutable is False else (out, module._get_variables())

    def init(self, rngs: Any = None, *args: Any, method: Callable[..., Any] | str = "__call__", **kwargs: Any) -> dict:
        """Run ``method`` once to make the variables; returns them by collection. ``rngs`` as
        in :meth:`apply` (``self.param`` draws from the ``params`` stream, else ``default``)."""
        _, variables = self.apply({}, *args, rngs=rngs, method=method, mutable=True, _initialize=True, **kwargs)
        return variables

    def init_with_output(self, rngs: Any = None, *args: Any, method: Callable[..., Any] | str = "__call__",
                         mutable: Any = False, **kwargs: Any) -> tuple[Any, dict]:
        """:meth:`init` that also returns the output: ``(output, variables)``; a ``mutable``
        other than False (a collection name or a list of them) keeps only those collections."""
        out, variables = self.apply({}, *args, rngs=rngs, method=method, mutable=True, _initialize=True, **kwargs)
        if mutable is not False and mutable is not True:
            keep = {mutable} if isinstance(mutable, str) else set(mutable)
            variables = {c: t for c, t in variables.items() if c in keep}
        return out, variables


def _non_empty(tree: Any) -> bool:
    return not isinstance(tree, Mapping) or bool(flatten_mapping(tree))


def _as_rngs(rngs: Any) -> Rngs:
    if rngs is None:
        return Rngs()
    if isinstance(rngs, Rngs):
        return rngs
    if isinstance(rngs, Mapping):
        return Rngs(**rngs)
    if isinstance(rngs, (int, jax.Array, np.ndarray)):
        return Rngs(rngs)
    raise RngError(
        f"init/apply got rngs={rngs!r}: rngs is a seed or key (the 'default' stream), a dict of keys by stream "
        "name, or an nnx.Rngs.\nPass e.g. rngs=0 or rngs={'params': key, 'dropout': key2}"
    )


def _method_fn(module: Module, method: Callable[..., Any] | str) -> Callable[..., Any]:
    if isinstance(method, str):
        attr = getattr(module, method, None)
        if isinstance(attr, PlaitModule):  # a submodule's name: call it
            return lambda m, *a, **k: getattr(m, method)(*a, **k)
        if not callable(attr):
            raise GraphError(
                f"apply(method={method!r}): {type(module).__name__}.{method} is "
                f"{'missing' if attr is None else 'not callable'}.\n"
                "Pass the name of a method, the method itself (Model.encode), or a function taking the module first."
            )
        method_fn: Callable[..., Any] = attr
    else:
        method_fn = method
    if inspect.ismethod(method_fn) and isinstance(method_fn.__self__, Module):
        method_fn = method_fn.__func__
    if not callable(method_fn):
        raise GraphError(f"apply(method={method_fn!r}): method must be callable, or the name of a method.")
    return method_fn


def compact(f: F) -> F:
    """Decorate a method of a :class:`Module` so that ``self.param``/``self.variable`` and
    submodules can be made inline; submodules without ``name=`` are named after their class
    and the order made: ``Dense_0``, ``Dense_1``...

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> class Block(nnx.bridge.Module):
        ...     @nnx.bridge.compact
        ...     def __call__(self, x):
        ...         return nnx.bridge.current_context().in_compact
        >>> Block().apply({}, jnp.ones(1))
        True
    """

    @functools.wraps(f)
    def compact_method(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(self, Module):
            raise GraphError(
                f"@nnx.bridge.compact method {f.__qualname__} called on a {type(self).__name__}, not an "
                "nnx.bridge.Module.\nMake the class a subclass of nnx.bridge.Module (or drop the decorator)."
            )
        MODULE_CONTEXT.module_stack.append(ModuleStackEntry(self, in_compact=True))
        try:
            return f(self, *args, **kwargs)
        finally:
            MODULE_CONTEXT.module_stack.pop()

    return compact_method  # type: ignore[return-value]
