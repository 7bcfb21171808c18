"""A Linen module as a plait module (:class:`ToNNX`), and the functional ``init``/``apply``
view of a plait module class (:func:`functional`).

A Linen module holds no state: ``init(keys, x)`` returns its variables, ``apply(variables,
x, rngs=..., mutable=...)`` computes with them. :class:`ToNNX` keeps those variables as
plait Variables on its own attributes (``model.Dense_0['kernel']`` is an ``nnx.Param``), so
``nnx.state``, ``nnx.jit``, optimizers and checkpoints see them like any module's, and
draws the keys Linen asks for from its own ``Rngs``. Nothing here imports Flax: any object
with Linen's ``init_with_output``/``apply`` protocol can be wrapped, and a user who wraps a
Linen module has Flax installed already.

Linen creates variables from a sample input, so a :class:`ToNNX` is empty until
:func:`lazy_init` runs it (on the wrapper itself or on any plait module that holds it).

Example:
    >>> import jax.numpy as jnp, plait as nnx
    >>> class Scale:  # anything with Linen's init_with_output/apply protocol
    ...     def init_with_output(self, rngs, x, method=None):
    ...         return x, {"params": {"w": jnp.ones(x.shape[-1])}}
    ...     def apply(self, variables, x, rngs=None, method=None, mutable=False):
    ...         return x * variables["params"]["w"]
    >>> model = nnx.bridge.lazy_init(nnx.bridge.ToNNX(Scale(), rngs=nnx.Rngs(0)), jnp.ones(3))
    >>> model.w
    Param(shape=(3,), dtype=float32)
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import warnings
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

import jax

from ..errors import GraphError, RngError
from ..graph import GraphDef, iter_graph, split
from ..module import Module
from ..rngs import Rngs
from ..state import State
from ..variables import Variable
from .module import current_module
from .variables import linen_vars_to_nnx_attrs, nnx_attrs_to_linen_vars

__all__ = ["ToNNX", "lazy_init", "Functional", "functional"]

M = TypeVar("M", bound=Module)

_OWN = "to_nnx__"  # prefix of the wrapper's own attributes (the reference's names)


def lazy_init(fn: Module | Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``fn`` (a module, or a method of one) with a sample input so that every
    :class:`ToNNX` in its graph creates its Linen variables (Linen's ``init``); returns ``fn``.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> class Outer(nnx.Module):
        ...     def __init__(self, inner):
        ...         self.inner = inner
        ...     def __call__(self, x):
        ...         return self.inner(x)
        >>> class Double:
        ...     def init_with_output(self, rngs, x, method=None):
        ...         return 2 * x, {"params": {"two": jnp.array(2.0)}}
        ...     def apply(self, variables, x, rngs=None, method=None, mutable=False):
        ...         return variables["params"]["two"] * x
        >>> model = nnx.bridge.lazy_init(Outer(nnx.bridge.ToNNX(Double())), jnp.ones(2))
        >>> float(model.inner.two.value)
        2.0
    """
    if isinstance(fn, Module):
        module = fn
    elif isinstance(getattr(fn, "__self__", None), Module):
        module = fn.__self__
    else:
        raise GraphError(
            f"lazy_init needs a plait module or a method of one, got {fn!r}.\n"
            "Pass the module that holds the ToNNX wrappers: nnx.bridge.lazy_init(model, x)"
        )
    wrappers = [node for _, node in iter_graph(module) if isinstance(node, ToNNX)]
    for w in wrappers:  # an attribute, not a context: transforms inside `fn` carry it to their copies
        w.to_nnx__initializing = True
    try:
        fn(*args, **kwargs)
    finally:
        for w in wrappers:
            w.to_nnx__initializing = False
    return fn


class ToNNX(Module):
    """A Linen module (any object with Linen's ``init_with_output``/``apply``) as a plait module.

    Its Linen variables live on the wrapper as Variables, one attribute per top-level name
    (``model.Dense_0['kernel']``); the collection picks the type (``'params'`` ->
    ``nnx.Param``, ``'batch_stats'`` -> ``nnx.BatchStat``, another name -> a Variable type
    of that name). Linen's RNG keys are drawn from a fork of ``rngs`` (one draw per stream
    per call; a ``default`` stream stands for ``params``). Call :func:`lazy_init` (or
    ``.lazy_init(x)``) with a sample input first.

    A call is Linen's ``apply``: ``mutable=`` says which collections the Linen module may
    change (e.g. ``['batch_stats']``, or ``True``), and what it changes is written back to
    the Variables. Other Linen methods are reached as attributes (``model.encode(x)``) or
    by ``method=``.

    Args:
        module: the Linen module.
        rngs: an ``nnx.Rngs`` (forked), a key (the ``params`` stream), or None.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> class Count:  # a Linen-style module with a 'counter' collection
        ...     def init_with_output(self, rngs, x, method=None):
        ...         return x, {"counter": {"n": jnp.array(0)}}
        ...     def apply(self, variables, x, rngs=None, method=None, mutable=False):
        ...         n = variables["counter"]["n"] + 1
        ...         return (x, {"counter": {"n": n}}) if mutable else x
        >>> model = nnx.bridge.ToNNX(Count()).lazy_init(jnp.ones(2))
        >>> _ = model(jnp.ones(2), mutable=True)
        >>> type(model.n).__name__, int(model.n.value)
        ('counter', 1)
    """

    def __init__(self, module: Any, rngs: Rngs | jax.Array | None = None) -> None:
        if not (callable(getattr(module, "apply", None)) and callable(getattr(module, "init_with_output", None))):
            raise GraphError(
                f"ToNNX wraps a Linen module, got a {type(module).__name__} without Linen's "
                "init_with_output/apply methods.\n"
                "Pass a flax.linen.Module instance: nnx.bridge.ToNNX(nn.Dense(4), rngs=nnx.Rngs(0))"
            )
        self.to_nnx__module = module
        if isinstance(rngs, Rngs):
            rngs = rngs.fork()
        elif isinstance(rngs, jax.Array):
            rngs = Rngs(params=rngs)
        elif rngs is not None:
            raise RngError(
                f"ToNNX(..., rngs={rngs!r}): rngs is an nnx.Rngs, a key (for the 'params' stream) or None.\n"
                "Pass e.g. rngs=nnx.Rngs(0) or rngs=nnx.Rngs(params=0, dropout=1)"
            )
        self.to_nnx__rngs = rngs
        self.to_nnx__initializing = False

    @property
    def rngs(self) -> Rngs | None:
        warnings.warn("`ToNNX.rngs` is deprecated. Please use `to_nnx__rngs` instead.", DeprecationWarning,
                      stacklevel=2)
        return self.to_nnx__rngs

    @property
    def module(self) -> Any:
        warnings.warn("`ToNNX.module` is deprecated. Please use `to_nnx__module` instead.", DeprecationWarning,
                      stacklevel=2)
        return self.to_nnx__module

    def lazy_init(self, *args: Any, **kwargs: Any) -> ToNNX:
        """``nnx.bridge.lazy_init(self, *args, **kwargs)``: create the Linen variables; returns self."""
        return lazy_init(self, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails: a method of the Linen module, called through apply.
        module = self.__dict__.get("to_nnx__module") if not name.startswith(("_", _OWN)) else None
        method = getattr(type(module), name, None) if module is not None else None
        if not callable(method):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        bound = functools.partial(self.__call__, method=method)
        bound.__self__ = self  # type: ignore[attr-defined]  # so lazy_init(model.encode, x) finds the module
        return bound

    def __call__(self, *args: Any, rngs: Rngs | jax.Array | Mapping | None = None,
                 method: Callable[..., Any] | str | None = None, mutable: Any = None, **kwargs: Any) -> Any:
        keys = _linen_keys(self.to_nnx__rngs if rngs is None else rngs)
        module = self.to_nnx__module
        if self.to_nnx__initializing:
            out, updates = module.init_with_output(keys, *args, method=method, **kwargs)
        else:
            variables = nnx_attrs_to_linen_vars(self._linen_attrs())
            if mutable is None:
                mutable = _enclosing_linen_mutable()
            out = module.apply(variables, *args, rngs=keys, method=method, mutable=mutable, **kwargs)
            out, updates = out if mutable is not False else (out, None)
        if updates:
            for name, value in linen_vars_to_nnx_attrs(updates).items():
                _write(self, name, value, is_attr=True)
        return out

    def _linen_attrs(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.startswith((_OWN, "_"))}


def _linen_keys(rngs: Any) -> dict[str, jax.Array]:
    """The keys one Linen call gets: one draw from each stream, ``default`` as ``params``."""
    if isinstance(rngs, Rngs):
        keys = {name: stream() for name, stream in rngs.items()}
    elif isinstance(rngs, jax.Array):
        keys = {"params": rngs}
    elif isinstance(rngs, Mapping):
        keys = dict(rngs)
    elif rngs is None:
        keys = {}
    else:
        raise RngError(
            f"ToNNX call with rngs={rngs!r}: rngs is an nnx.Rngs, a key (for 'params'), a dict of keys by "
            "stream name, or None (the wrapper's own streams)."
        )
    if "params" not in keys and "default" in keys:
        keys["params"] = keys.pop("default")
    return keys


def _enclosing_linen_mutable() -> Any:
    """The collections the enclosing module may change: the ``mutable`` of the running
    ``nnx.bridge.Module`` call, or of the enclosing Linen module (a ToNNX inside a ToLinen
    inside Linen), else False. Flax is only looked at if something imported it already."""
    bridge_module = current_module()
    if bridge_module is not None and bridge_module.scope is not None:
        return bridge_module.scope.mutable
    linen_module = sys.modules.get("flax.linen.module")
    stack = getattr(getattr(linen_module, "_context", None), "module_stack", None)
    if stack and stack[-1] is not None and getattr(stack[-1], "scope", None) is not None:
        return stack[-1].scope.mutable
    return False


def _write(holder: Any, key: str, new: Any, is_attr: bool) -> None:
    """Put ``new`` (a Variable or nested dict of them) at ``holder.key`` / ``holder[key]``:
    into an existing Variable of the same kind by value (not a structural change, so a
    jitted call stays on its fast path), else as new structure."""
    current = holder.__dict__.get(key) if is_attr else holder.get(key)
    if isinstance(new, Mapping) and isinstance(current, Mapping):
        for k, v in new.items():
            _write(current, k, v, is_attr=False)
        return
    if (isinstance(new, Variable) and type(current) is type(new)
            and current.get_metadata() == new.get_metadata()
            and jax.tree.structure(current.get_raw_value()) == jax.tree.structure(new.get_raw_value())):
        current.set_raw_value(new.get_raw_value())
        return
    if is_attr:
        setattr(holder, key, new)
    else:
        holder[key] = new


@dataclasses.dataclass
class Functional(Generic[M]):
    """A plait module class seen as Linen's ``init``/``apply`` pair (see :func:`functional`)."""

    module_type: type[M]
    graphdef: GraphDef | None
    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    def init(self, *, rngs: Rngs | None = None) -> State:
        """Build the module and return its State (keeping its GraphDef for :meth:`apply`)."""
        extra = {} if rngs is None else {"rngs": rngs}
        graphdef, state = split(self.module_type(*self.args, **self.kwargs, **extra))
        self.graphdef = graphdef
        return state

    def apply(self, *states: Any) -> Any:
        """``graphdef.apply(*states)``: call it (or one of its methods) to get ``(out, (graphdef, state))``."""
        if self.graphdef is None:
            raise GraphError(
                f"Functional({self.module_type.__name__}).apply before init: there is no GraphDef yet.\n"
                "Call .init(rngs=...) first and pass its state: f.apply(f.init(rngs=nnx.Rngs(0)))(x)"
            )
        return self.graphdef.apply(*states)


def functional(cls: type[M]) -> Callable[..., Functional[M]]:
    """``functional(Linear)(2, 3)``: a :class:`Functional` that builds ``cls(2, 3, rngs=...)`` on ``init``.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> f = nnx.bridge.functional(nnx.Linear)(2, 3)
        >>> state = f.init(rngs=nnx.Rngs(0))
        >>> y, _ = f.apply(state)(jnp.ones((1, 2)))
        >>> y.shape
        (1, 3)
    """

    def construct(*args: Any, **kwargs: Any) -> Functional[M]:
        return Functional(cls, None, args, kwargs)

    return construct
