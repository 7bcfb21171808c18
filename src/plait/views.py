"""Views of a model: the same Variables, other attributes (``nnx.view``, ``nnx.with_attributes``).

A view is a copy of a model's *objects* (modules, ``Rngs``) that shares its *Variables*:
a parameter updated through the view is seen by the original and the other way round,
while attributes such as ``deterministic`` or ``use_running_average`` are set on the view
only. It is how to hold a training and an evaluation form of one model side by side,
without toggling ``model.train()`` / ``model.eval()``.

Shared sub-modules stay shared inside the view (the copy is made through the graph
encoding, which keeps sharing), and the view's RNG streams are the original's streams (the
same key and count Variables), so a draw through either advances both, as in the
reference.

``nnx.view(model, **kwargs)`` calls ``set_view(**kwargs)`` on each module that defines it
(the reference's protocol, keywords filtered by the method's signature). plait's own
layers keep their modes as plain attributes, so on a module without ``set_view`` it sets
each keyword the module already has as an attribute (``Dropout.deterministic``,
``BatchNorm.use_running_average``, ``MultiHeadAttention.decode``): the result is the one
the reference's ``set_view`` methods give.

Example:
    >>> import jax.numpy as jnp, plait as nnx
    >>> model = nnx.Sequential(nnx.Linear(2, 2, rngs=nnx.Rngs(0)), nnx.Dropout(0.5, rngs=nnx.Rngs(1)))
    >>> evaluation = nnx.view(model, deterministic=True)
    >>> evaluation.layers[1].deterministic, model.layers[1].deterministic
    (True, False)
    >>> evaluation.layers[0].kernel is model.layers[0].kernel
    True
"""

from __future__ import annotations

import inspect
from typing import Any, TypeVar

from .encoding import flatten, unflatten
from .errors import GraphError
from .filters import Filter, to_predicate
from .graph import iter_graph
from .mode import check_graph_mode
from .module import Module
from .object import Object
from .variables import Variable

__all__ = ["view", "view_info", "with_attributes"]

A = TypeVar("A")


def _copy_sharing_variables(node: A) -> A:
    """New Objects, the same Variables (and the same arrays for raw array attributes)."""
    flat, leaves = flatten((node,))
    reuse = [o if isinstance(o, Variable) else None for o in flat.objs]
    roots, _ = unflatten(flat.graphdef, leaves, reuse=reuse)
    return roots[0]


def _has_attribute(module: Any, name: str) -> bool:
    # Instance attributes (and properties) only: view(model, train=True) must not replace a method.
    return name in vars(module) or isinstance(getattr(type(module), name, None), property)


def _set_view_keywords(method: Any, kwargs: dict) -> tuple[dict, set]:
    """The keywords ``set_view`` takes out of ``kwargs``, and the names it accepts."""
    params = inspect.signature(method).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return dict(kwargs), set(kwargs)
    names = {p.name for p in params if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                   inspect.Parameter.KEYWORD_ONLY)}
    return {k: v for k, v in kwargs.items() if k in names}, names


def _not_found(what: str, node: Any, remaining: set) -> GraphError:
    return GraphError(
        f"{what}: no selected module of the {type(node).__name__} has {sorted(remaining)} (neither as an attribute "
        "nor as a set_view keyword).\n"
        f"Check the spelling, or pass raise_if_not_found=False to skip them: {what}(model, ..., "
        "raise_if_not_found=False)"
    )


def view(node: A, /, *, only: Filter = ..., raise_if_not_found: bool = True, graph: bool | None = None,
         **kwargs: Any) -> A:
    """A copy of ``node`` sharing its Variables, with ``kwargs`` set on the modules ``only`` selects.

    Modules with a ``set_view`` method get ``set_view(**the keywords it takes)``; other
    modules get each keyword they have as an attribute. A keyword no selected module takes
    raises :class:`~plait.errors.GraphError` unless ``raise_if_not_found=False``.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> model = nnx.Dropout(0.5, rngs=nnx.Rngs(0))
        >>> x = jnp.ones(4)
        >>> bool((nnx.view(model, deterministic=True)(x) == x).all()), model.deterministic
        (True, False)
    """
    check_graph_mode("nnx.view", graph)
    predicate = to_predicate(only)
    remaining = set(kwargs)
    out = _copy_sharing_variables(node)
    for path, obj in iter_graph(out):
        if not isinstance(obj, Object) or not predicate(path, obj):
            continue
        set_view = getattr(obj, "set_view", None)
        if callable(set_view):
            chosen, names = _set_view_keywords(set_view, kwargs)
            set_view(**chosen)
            remaining -= names
        elif isinstance(obj, Module):
            remaining -= _set_existing(obj, kwargs)
    if raise_if_not_found and remaining:
        raise _not_found("nnx.view", node, remaining)
    return out


def with_attributes(node: A, /, *, only: Filter = ..., raise_if_not_found: bool = True, graph: bool | None = None,
                    **attributes: Any) -> A:
    """A copy of ``node`` sharing its Variables, with ``attributes`` set on every selected module that has them.

    Unlike ``Module.set_attributes`` the original is left as it is.

    Example:
        >>> import plait as nnx
        >>> model = nnx.Sequential(nnx.Dropout(0.1), nnx.BatchNorm(2, rngs=nnx.Rngs(0)))
        >>> frozen = nnx.with_attributes(model, use_running_average=True)
        >>> frozen.layers[1].use_running_average, model.layers[1].use_running_average
        (True, False)
    """
    check_graph_mode("nnx.with_attributes", graph)
    predicate = to_predicate(only)
    remaining = set(attributes)
    out = _copy_sharing_variables(node)
    for path, obj in iter_graph(out):
        if isinstance(obj, Module) and predicate(path, obj):
            remaining -= _set_existing(obj, attributes)
    if raise_if_not_found and remaining:
        raise _not_found("nnx.with_attributes", node, remaining)
    return out


def _set_existing(module: Module, attributes: dict) -> set:
    """Set the attributes ``module`` already has (a view never adds one); return their names."""
    found = {name for name in attributes if _has_attribute(module, name)}
    for name in found:
        setattr(module, name, attributes[name])
    return found


#: Attributes of plait's layers that select a mode (what a reference layer's set_view takes).
_MODE_ATTRIBUTES = ("deterministic", "use_running_average", "decode")


def view_info(node: Any, /, *, only: Filter = ..., graph: bool | None = None) -> str:
    """What :func:`view` can set on ``node``: per module class, the ``set_view`` keywords (with
    their docstring's descriptions) or the mode attributes it has.

    Example:
        >>> import plait as nnx
        >>> model = nnx.Sequential(nnx.Dropout(0.1), nnx.BatchNorm(2, rngs=nnx.Rngs(0)))
        >>> print(nnx.view_info(model))
        BatchNorm:
          use_running_average: bool (attribute)
        Dropout:
          deterministic: bool (attribute)
    """
    check_graph_mode("nnx.view_info", graph)
    predicate = to_predicate(only)
    classes: dict[type, Any] = {}
    for path, obj in iter_graph(node):
        if isinstance(obj, Object) and predicate(path, obj) and type(obj) not in classes:
            if callable(getattr(obj, "set_view", None)) or any(_has_attribute(obj, n) for n in _MODE_ATTRIBUTES):
                classes[type(obj)] = obj
    lines: list[str] = []
    for cls in sorted(classes, key=lambda c: c.__qualname__):
        obj = classes[cls]
        lines.append(f"{cls.__qualname__}:")
        if callable(getattr(cls, "set_view", None)):
            lines.extend(_set_view_lines(cls.set_view))
        else:
            for name in _MODE_ATTRIBUTES:
                if _has_attribute(obj, name):
                    lines.append(f"  {name}: {type(getattr(obj, name)).__name__} (attribute)")
    return "\n".join(lines)


def _set_view_lines(method: Any) -> list[str]:
    doc = inspect.getdoc(method) or ""
    described: dict[str, list[str]] = {}
    if "Args:" in doc:
        current = None
        for line in doc.split("Args:", 1)[1].split("Returns:", 1)[0].splitlines():
            if line.startswith("  ") and not line.startswith("    ") and ":" in line:
                current, text = line.strip().split(":", 1)
                described[current] = [text.strip()] if text.strip() else []
            elif current is not None and line.strip():
                described[current].append(line.strip())
    lines = []
    for name, p in inspect.signature(method).parameters.items():
        if name == "self" or p.kind in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL):
            continue
        annotation = "" if p.annotation is inspect.Parameter.empty else f": {p.annotation}"
        default = "" if p.default is inspect.Parameter.empty else f" = {p.default!r}"
        lines.append(f"  {name}{annotation}{default}")
        lines.extend(f"    {text}" for text in described.get(name, ()))
    return lines
