"""Module: the base class of layers and models.

A Module is a plain mutable Python object (an :class:`~plait.object.Object`): assign
sub-modules, Variables, arrays, and lists/dicts/tuples of them as attributes in
``__init__``. There is no registration step and no special container: a plain list of
layers works.

Example:
    >>> import jax.numpy as jnp, plait as nnx
    >>> class MLP(nnx.Module):
    ...     def __init__(self, rngs):
    ...         self.layers = [nnx.Linear(4, 4, rngs=rngs) for _ in range(2)]
    ...         self.dropout = nnx.Dropout(0.1, rngs=rngs)
    ...     def __call__(self, x):
    ...         for layer in self.layers:
    ...             x = self.dropout(layer(x))
    ...         return x
    >>> model = MLP(nnx.Rngs(0))
    >>> model(jnp.ones((1, 4))).shape
    (1, 4)
    >>> model.eval().dropout.deterministic
    True
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp

from .errors import StateError
from .graph import iter_children, iter_graph
from .object import Object
from .variable_names import variable_type_from_name
from .variables import Perturbation, Variable, describe

__all__ = ["Module", "iter_modules"]


class Module(Object):
    """Base class for layers and models; see the module docstring."""

    def iter_modules(self) -> Iterator[tuple[tuple, Module]]:
        """Yield ``(path, module)`` for every sub-module, children first, ending with self."""
        return iter_modules(self)

    def iter_children(self) -> Iterator[tuple[str, Module]]:
        """Yield ``(name, module)`` for the direct sub-module attributes (the reference's
        deprecated method; :func:`iter_children` also yields Variables)."""
        return iter_module_children(self)

    def sow(
        self,
        variable_type: type[Variable],
        name: str,
        value: Any,
        reduce_fn: Callable[[Any, Any], Any] = lambda xs, x: (*xs, x),
        init_fn: Callable[[], Any] = tuple,
    ) -> None:
        """Record ``value`` in a Variable attribute ``name`` of type ``variable_type``.

        The first call creates it holding ``reduce_fn(init_fn(), value)``; later calls set it to
        ``reduce_fn(current, value)``. By default the Variable holds a tuple of every value
        sown since it was created (or last popped with ``nnx.pop``). Under ``nnx.jit`` and the
        other transforms the new attribute is written back like any other change.

        Example:
            >>> import jax.numpy as jnp, plait as nnx
            >>> class Probe(nnx.Module):
            ...     def __call__(self, x):
            ...         self.sow(nnx.Intermediate, "seen", x.mean())
            ...         return 2 * x
            >>> probe = Probe(); _ = probe(jnp.ones(3)); _ = probe(jnp.zeros(3))
            >>> [float(v) for v in probe.seen.value]
            [1.0, 0.0]
            >>> len(nnx.pop(probe, nnx.Intermediate)["seen"].value), hasattr(probe, "seen")
            (2, False)
        """
        if not (isinstance(variable_type, type) and issubclass(variable_type, Variable)):
            raise TypeError(
                f"sow: variable_type must be a Variable type such as nnx.Intermediate, got {variable_type!r}"
            )
        current = self.__dict__.get(name)
        if current is None and name not in self.__dict__:
            setattr(self, name, variable_type(reduce_fn(init_fn(), value)))
        elif type(current) is variable_type:
            current.value = reduce_fn(current.value, value)
        else:
            found = type(current).__name__
            what = describe(f"{type(self).__name__}.{name}", current)
            raise StateError(
                f"sow: {what} is already there, and sow({variable_type.__name__}, {name!r}, ...) can only add to "
                f"a {variable_type.__name__}.\n"
                f"Sow under another name, or remove what is there first (nnx.pop(module, nnx.{found}) for a "
                "Variable)."
            )

    def perturb(self, name: str, value: Any, variable_type: type[Variable] | str = Perturbation) -> Any:
        """``value`` plus the perturbation stored under ``name`` (zeros, created on first use).

        Differentiating a loss with respect to the perturbations gives the gradient with
        respect to the intermediate ``value``; use the returned value downstream. See
        :func:`plait.capture` for the workflow (capture the zeros, pass them back as ``init``).

        Example:
            >>> import jax.numpy as jnp, plait as nnx
            >>> class Model(nnx.Module):
            ...     def __call__(self, x):
            ...         return 3 * self.perturb("h", x)
            >>> model, x = Model(), jnp.ones(2)
            >>> _, zeros = nnx.capture(model, nnx.Perturbation)(x)
            >>> loss = lambda model, p, x: nnx.capture(model, init=p)(x).sum()
            >>> grads = nnx.grad(loss, argnums=nnx.DiffState(1, nnx.Perturbation))(model, zeros, x)
            >>> grads["h"].value.tolist()
            [3.0, 3.0]
        """
        if isinstance(variable_type, str):
            variable_type = variable_type_from_name(variable_type, allow_register=True)
        current = self.__dict__.get(name)
        if current is None and name not in self.__dict__:
            old = jax.tree.map(jnp.zeros_like, value)
            setattr(self, name, variable_type(old))
        elif isinstance(current, variable_type):
            old = current.value
        else:
            what = describe(f"{type(self).__name__}.{name}", current)
            raise StateError(
                f"perturb: {what} is already there, and perturb({name!r}, ..., {variable_type.__name__}) can only "
                f"read a {variable_type.__name__}.\nPerturb under another name."
            )
        return jax.tree.map(lambda a, b: a + b, old, value)

    def set_attributes(self, *filters: type, raise_if_not_found: bool = True, **attributes: Any) -> None:
        """Set attributes on every sub-module (of the given types, if any) that has them.

        Example:
            >>> import plait as nnx
            >>> model = nnx.Dropout(0.5)
            >>> model.set_attributes(deterministic=True); model.deterministic
            True
        """
        found = set()
        for _, module in iter_modules(self):
            if filters and not isinstance(module, filters):
                continue
            for name, value in attributes.items():
                if hasattr(module, name):
                    setattr(module, name, value)
                    found.add(name)
        missing = set(attributes) - found
        if raise_if_not_found and missing:
            raise AttributeError(f"no sub-module of {type(self).__name__} has the attribute(s) {sorted(missing)}")

    def train(self, **attributes: Any) -> Module:
        """Training mode: ``deterministic=False`` and ``use_running_average=False`` where present.

        Returns ``self`` so it chains: ``model.train()(x)``.
        """
        self.set_attributes(deterministic=False, use_running_average=False, raise_if_not_found=False, **attributes)
        return self

    def eval(self, **attributes: Any) -> Module:
        """Evaluation mode: ``deterministic=True`` and ``use_running_average=True`` where present."""
        self.set_attributes(deterministic=True, use_running_average=True, raise_if_not_found=False, **attributes)
        return self


def iter_module_children(node: Any, /) -> Iterator[tuple[Any, Module]]:
    """Yield ``(key, module)`` for the direct children of ``node`` that are Modules.

    Example:
        >>> import plait as nnx
        >>> class Block(nnx.Module):
        ...     def __init__(self, rngs):
        ...         self.linear = nnx.Linear(2, 2, rngs=rngs)
        ...         self.norm = nnx.LayerNorm(2, rngs=rngs)
        >>> [k for k, _ in nnx.iter_module_children(Block(nnx.Rngs(0)))]
        ['linear', 'norm']
    """
    for key, value in iter_children(node):
        if isinstance(value, Module):
            yield key, value


def iter_modules(node: Any) -> Iterator[tuple[tuple, Module]]:
    """Yield ``(path, module)`` for every Module reachable from ``node``, children first."""
    for path, value in iter_graph(node):
        if isinstance(value, Module):
            yield path, value
