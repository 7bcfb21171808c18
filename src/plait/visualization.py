"""``display``: show modules, States and Variables, interactively in a notebook.

In a Jupyter notebook with ``treescope`` installed, ``nnx.display(model)`` renders a
foldable, interactive tree. Anywhere else (a terminal, a script, a notebook without
treescope) it prints plait's text repr, which shows the same tree of sub-modules with every
Variable's type, shape and dtype. ``treescope`` is optional: ``pip install "plait[display]"``.
"""

from __future__ import annotations

from typing import Any

# Importing the text-repr module here, before ``plait/__init__`` binds the name ``display``
# to the function below, matters: a submodule imported for the first time later would
# rebind ``plait.display`` to itself.
from .display import graph_repr

__all__ = ["display"]


def _in_notebook() -> bool:
    """True inside a Jupyter kernel (a terminal IPython has no kernel and cannot show HTML)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _register_treescope(treescope: Any) -> None:
    """Teach treescope to draw plait objects (idempotent).

    Without this, treescope treats a module as a JAX pytree, which plait refuses to be.
    A module is drawn as ``Type(attr=..., ...)``, a Variable as ``Param(value=..., **metadata)``,
    a State as ``State({...})``; arrays inside get treescope's own array view.
    """
    from treescope import formatting_util, repr_lib, type_registries

    from .object import Object
    from .state import State
    from .variables import Variable

    def object_handler(node: Any, path: str | None, subtree_renderer: Any) -> Any:
        attributes = {k: v for k, v in vars(node).items() if not k.startswith("_plait")}
        return repr_lib.render_object_constructor(
            type(node), attributes, path, subtree_renderer,
            color=formatting_util.color_from_string(type(node).__qualname__),
        )

    def variable_handler(node: Any, path: str | None, subtree_renderer: Any) -> Any:
        return repr_lib.render_object_constructor(
            type(node), {"value": node._value, **node._meta}, path, subtree_renderer,
            color=formatting_util.color_from_string(type(node).__qualname__),
        )

    def state_handler(node: Any, path: str | None, subtree_renderer: Any) -> Any:
        return repr_lib.render_dictionary_wrapper(type(node), dict(node), path, subtree_renderer)

    type_registries.TREESCOPE_HANDLER_REGISTRY.setdefault(Object, object_handler)
    type_registries.TREESCOPE_HANDLER_REGISTRY.setdefault(State, state_handler)
    type_registries.TREESCOPE_HANDLER_REGISTRY.setdefault(Variable, variable_handler)


def display(*objs: Any) -> None:
    """Show each object: treescope's interactive view in a notebook, the text repr otherwise.

    Example:
        >>> import plait as nnx
        >>> nnx.display(nnx.Linear(2, 3, rngs=nnx.Rngs(0)))
        Linear(
          kernel=Param(shape=(2, 3), dtype=float32),
          bias=Param(shape=(3,), dtype=float32),
          ...
        )
    """
    if _in_notebook():
        try:
            import treescope
        except ImportError:
            treescope = None
        if treescope is not None:
            _register_treescope(treescope)
            for obj in objs:
                treescope.display(obj, ignore_exceptions=True, autovisualize=True)
            return
    for obj in objs:
        print(graph_repr(obj))
