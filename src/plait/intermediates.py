"""``nnx.capture``: run a function and collect what its modules sow, as States.

``Module.sow`` (and ``Module.perturb``) store values as Variable attributes of the module
that sows them. ``capture(fn, nnx.Intermediate)`` runs ``fn`` and hands back those of the
requested types as a :class:`~plait.state.State` (``result, intermediates``), removing them
from the modules, so a model is left as it was. Because sown values are ordinary Variable
attributes, this composes with the transforms either way round: ``capture`` of an
``nnx.jit`` function (the attributes are written back, then collected) or ``nnx.jit`` of a
captured function (collected inside, returned as outputs).

Variables of the captured types that the modules held *before* the call are set aside
and put back afterwards: the States hold only what this call sowed, as in the reference.

``method_outputs=nnx.Intermediate`` also sows the output of every public method (and
``__call__``) of the module classes under the method's name, for the length of the call.
``init`` (a State, e.g. of ``nnx.Perturbation`` zeros from a first capture) puts its
Variables on the modules at its paths before the call, so ``perturb`` adds them: the
gradient with respect to ``init`` is the gradient with respect to the intermediates.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from .module import Module, iter_modules
from .object import Object
from .state import State
from .variables import Variable

__all__ = ["capture"]


def capture(fn: Any, *var_types: type[Variable], init: State | None = None,
            method_outputs: type[Variable] | None = None) -> Callable:
    """Wrap ``fn`` to return ``(result, state)`` (one State per type in ``var_types``) of what was sown.

    ``fn`` is a function whose first argument is the module, a module (its ``__call__``),
    or a bound method. Called with a Variable type first (``@nnx.capture(nnx.Intermediate)``)
    it returns a decorator. With no ``var_types`` the wrapper returns the result alone.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> class Model(nnx.Module):
        ...     def __init__(self, rngs):
        ...         self.linear = nnx.Linear(2, 3, rngs=rngs)
        ...     def __call__(self, x):
        ...         h = self.linear(x)
        ...         self.sow(nnx.Intermediate, "features", h)
        ...         return h.sum()
        >>> model = Model(nnx.Rngs(0))
        >>> y, inter = nnx.capture(model, nnx.Intermediate)(jnp.ones(2))
        >>> inter["features"].value[0].shape, hasattr(model, "features")
        ((3,), False)
    """
    if isinstance(fn, type) and issubclass(fn, Variable):
        types = (fn, *var_types)
        return lambda actual: capture(actual, *types, init=init, method_outputs=method_outputs)
    for t in var_types:
        if not (isinstance(t, type) and issubclass(t, Variable)):
            raise TypeError(f"capture: variable types must be Variable types such as nnx.Intermediate, got {t!r}")
    if method_outputs is not None and not (isinstance(method_outputs, type) and issubclass(method_outputs, Variable)):
        raise TypeError(f"capture: method_outputs must be a Variable type such as nnx.Intermediate, got {method_outputs!r}")
    if not callable(fn):
        raise TypeError(f"capture: expected a function, a module or a bound method, got {type(fn).__name__}")

    bound = fn.__self__ if inspect.ismethod(fn) and isinstance(fn.__self__, Module) else None
    instance = fn if isinstance(fn, Module) else bound

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        module = instance if instance is not None else (args[0] if args else None)
        if not isinstance(module, Module):
            raise TypeError(
                "capture: the function's first argument must be the module to collect from, got "
                f"{type(module).__name__}.\nWrap the module or a bound method instead: nnx.capture(model, ...)"
            )
        init_flat = init.flat_state() if init is not None else []
        taken = set(var_types) | {type(v) for _, v in init_flat}
        if method_outputs is not None:
            taken.add(method_outputs)
        saved = _take(module, taken)
        patched: list = []
        try:
            for path, var in init_flat:
                setattr(_at(module, path[:-1]), path[-1], type(var).from_metadata(var.raw_value, var.get_metadata()))
            if method_outputs is not None:
                patched = _patch_methods(module, method_outputs)
            result = fn(*args, **kwargs)
        finally:
            for cls, name, original in patched:
                setattr(cls, name, original)
            captured = _take(module, taken)
            for _, owner, name, var in saved:
                setattr(owner, name, var)
        if not var_types:
            return result
        states = tuple(
            State.from_flat_state([(path, var) for path, _, _, var in captured if type(var) is t]) for t in var_types
        )
        return (result, *states)

    return wrapper


def _take(module: Module, types: set) -> list:
    """Remove and return ``(path, owner, name, variable)`` for each Variable of exactly one of ``types``."""
    out = []
    for path, m in list(iter_modules(module)):
        for name, value in list(vars(m).items()):
            if type(value) in types:
                delattr(m, name)
                out.append(((*path, name), m, name, value))
    return out


def _at(node: Any, path: tuple) -> Any:
    for part in path:
        node = getattr(node, part) if isinstance(node, Object) else node[part]
    return node


def _patch_methods(module: Module, variable_type: type[Variable]) -> list:
    """Sow the output of each public method (and ``__call__``) of the module classes; returns what to undo."""
    undo = []
    for cls in {type(m) for _, m in iter_modules(module)}:
        for name, method in list(vars(cls).items()):
            if not inspect.isfunction(method) or (name.startswith("_") and name != "__call__"):
                continue
            label = "__call__" if name == "__call__" else name

            def sowing(self: Module, *a: Any, _method: Any = method, _label: str = label, **kw: Any) -> Any:
                out = _method(self, *a, **kw)
                self.sow(variable_type, _label, out)
                return out

            functools.update_wrapper(sowing, method)
            undo.append((cls, name, method))
            setattr(cls, name, sowing)
    return undo
