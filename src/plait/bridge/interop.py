"""Plain plait modules and Linen modules as submodules of an ``nnx.bridge.Module``.

A bridge module makes its submodules while it runs, and ``apply`` loads their variables
when they are attached. :func:`nnx_in_bridge_mdl` does that for a module built the plait
way (a factory taking ``nnx.Rngs``), :func:`linen_in_bridge_mdl` for a Linen module (wrapped
in :class:`~plait.bridge.ToNNX`). Both draw their RNG keys from the running call's streams
and, in a :func:`~plait.bridge.compact` method, attach themselves under an automatic name
(``Linear_0``, ``Dense_0``: the class name of what they build or wrap).

Example:
    >>> import jax.numpy as jnp, plait as nnx
    >>> class Head(nnx.bridge.Module):
    ...     @nnx.bridge.compact
    ...     def __call__(self, x):
    ...         return nnx.bridge.nnx_in_bridge_mdl(lambda rngs: nnx.Linear(3, 2, rngs=rngs))(x)
    >>> variables = Head().init(0, jnp.ones((1, 3)))
    >>> variables["params"]["Linear_0"]["kernel"].shape
    (3, 2)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import GraphError
from ..graph import state, update
from ..module import Module
from ..rngs import Rngs
from ..transforms.functional import eval_shape
from ..transforms.jit import jit
from ..variables import RngState
from .module import Module as BridgeModule
from .module import ModuleStackEntry, attach, auto_submodule_name, current_context
from .wrappers import ToNNX

__all__ = ["nnx_in_bridge_mdl", "linen_in_bridge_mdl"]


def _running(what: str) -> tuple[ModuleStackEntry, BridgeModule]:
    entry = current_context()
    if entry is None or entry.module.scope is None:
        raise GraphError(
            f"{what} is called outside a running nnx.bridge.Module: it makes a submodule of the bridge module "
            "whose setup() or @nnx.bridge.compact method is running.\n"
            "Call it there; outside a bridge module, build the module directly (or wrap a Linen module with "
            "nnx.bridge.ToNNX)."
        )
    return entry, entry.module


def nnx_in_bridge_mdl(factory: Callable[[Rngs], Module], name: str | None = None) -> Module:
    """``factory(rngs)`` (a plait module) as a submodule of the running bridge module.

    In ``init`` it is built with the call's RNG streams; in ``apply`` it is built abstractly
    (nothing computed: ``nnx.eval_shape``) and gets its variables from the ones passed to
    ``apply`` when attached. In a :func:`~plait.bridge.compact` method it is attached
    under ``name`` (default: its class name and a counter, ``Linear_0``); in ``setup()``
    assign it to an attribute yourself.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> class Net(nnx.bridge.Module):
        ...     def setup(self):
        ...         self.linear = nnx.bridge.nnx_in_bridge_mdl(lambda r: nnx.Linear(2, 2, rngs=r))
        ...     def __call__(self, x):
        ...         return self.linear(x)
        >>> variables = Net().init(0, jnp.ones(2))
        >>> Net().apply(variables, jnp.ones(2)).shape
        (2,)
    """
    entry, parent = _running("nnx_in_bridge_mdl()")
    rngs = parent.scope.rngs
    if parent.is_initializing():
        module = factory(rngs)
    else:
        module = eval_shape(factory, rngs if rngs is not None and len(rngs) else Rngs(7))  # a stand-in: keys unused
        if rngs is not None and len(rngs):  # the RNG streams are its state too: make them for real
            update(module, jit(lambda r: state(factory(r), RngState))(rngs))
    if entry.in_compact:
        module = attach(parent, name if name is not None else auto_submodule_name(entry, type(module)), module, entry)
    return module


def linen_in_bridge_mdl(linen_module: Any, name: str | None = None) -> ToNNX:
    """A Linen module (wrapped in :class:`~plait.bridge.ToNNX`, its keys drawn from the call's
    streams) as a submodule of the running bridge module: initialized in ``init``, given its
    variables in ``apply``. Attached under ``name`` in a :func:`~plait.bridge.compact` method
    (default: the Linen class name and a counter, ``Dense_0``); in ``setup()`` assign it.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> class Scale:  # anything with Linen's init_with_output/apply protocol
        ...     def init_with_output(self, rngs, x, method=None):
        ...         return x, {"params": {"w": jnp.ones(x.shape[-1])}}
        ...     def apply(self, variables, x, rngs=None, method=None, mutable=False):
        ...         return x * variables["params"]["w"]
        >>> class Net(nnx.bridge.Module):
        ...     @nnx.bridge.compact
        ...     def __call__(self, x):
        ...         return nnx.bridge.linen_in_bridge_mdl(Scale())(x)
        >>> sorted(Net().init(0, jnp.ones(2))["params"])
        ['Scale_0']
    """
    entry, parent = _running("linen_in_bridge_mdl()")
    module = ToNNX(linen_module, parent.scope.rngs)
    module.to_nnx__initializing = parent.is_initializing()
    if entry.in_compact:
        name = name if name is not None else auto_submodule_name(entry, type(linen_module))
        module = attach(parent, name, module, entry)
    return module
