"""Linen interoperation: ``nnx.bridge`` of the reference.

* :class:`ToNNX` wraps a Linen module (any object with Linen's ``init_with_output``/``apply``)
  as a plait module; :func:`lazy_init` creates its variables from a sample input. Works
  without importing Flax: the Linen module you pass in is all it uses.
* ``ToLinen`` / :func:`to_linen` wrap a plait module class as a ``flax.linen.Module``;
  ``NNXMeta`` is the Linen metadata box of a plait Variable with metadata;
  :func:`with_partitioning` annotates so that Linen sees ``nn.Partitioned``. These make
  Linen objects, so they import Flax when first used (``pip install flax``).
* :func:`functional` / :class:`Functional`: a plait module class as an ``init``/``apply`` pair.

``docs/bridge.md`` walks through both directions.

Example:
    >>> import plait as nnx
    >>> nnx.bridge.ToNNX.__name__, nnx.bridge.lazy_init.__name__
    ('ToNNX', 'lazy_init')
"""

from typing import Any

from .. import initializers
from . import variables, wrappers
from .linen import to_linen, to_linen_var, with_partitioning
from .wrappers import Functional, ToNNX, functional, lazy_init

# ToLinen and NNXMeta (below) are left out of __all__ so that `from plait.bridge import *` needs no Flax.
__all__ = [
    "ToNNX", "Functional", "functional", "initializers", "lazy_init", "to_linen", "to_linen_var",
    "variables", "with_partitioning", "wrappers",
]

_LINEN_CLASSES = ("ToLinen", "NNXMeta")

# The reference's "NNX modules written in Linen style" API, which plait does not have.
_NOT_PROVIDED = ("Module", "Scope", "AttrPriority", "compact", "current_context", "current_module",
                 "nnx_in_bridge_mdl", "linen_in_bridge_mdl")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LINEN_CLASSES})


def __getattr__(name: str) -> Any:
    if name in _LINEN_CLASSES:  # subclasses of Flax classes: made (and Flax imported) on first use
        from .linen import linen_classes

        return linen_classes()[name]
    if name in _NOT_PROVIDED:
        raise AttributeError(
            f"plait.bridge has no {name}: the reference's Linen-style NNX modules (bridge.Module, @bridge.compact, "
            "scopes) are not in plait (see docs/differences.md).\n"
            "Write the module as a plait Module, and wrap Linen parts with nnx.bridge.ToNNX or export it to "
            "Linen with nnx.bridge.to_linen."
        )
    raise AttributeError(f"module 'plait.bridge' has no attribute {name!r}")
