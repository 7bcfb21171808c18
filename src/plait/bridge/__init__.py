"""Linen interoperation: ``nnx.bridge`` of the reference.

* :class:`ToNNX` wraps a Linen module (any object with Linen's ``init_with_output``/``apply``)
  as a plait module; :func:`lazy_init` creates its variables from a sample input. Works
  without importing Flax: the Linen module you pass in is all it uses.
* ``ToLinen`` / :func:`to_linen` wrap a plait module class as a ``flax.linen.Module``;
  ``NNXMeta`` is the Linen metadata box of a plait Variable with metadata;
  :func:`with_partitioning` annotates so that Linen sees ``nn.Partitioned``. These make
  Linen objects, so they import Flax when first used (``pip install flax``).
* :func:`functional` / :class:`Functional`: a plait module class as an ``init``/``apply`` pair.
* :class:`Module` with :func:`compact`: plait modules written like Linen ones (dataclass
  fields, ``self.param`` in ``setup``/``compact``, auto-named submodules, ``init``/``apply``);
  :func:`nnx_in_bridge_mdl` / :func:`linen_in_bridge_mdl` put plait and Linen modules inside.

``docs/bridge.md`` walks through both directions.

Example:
    >>> import plait as nnx
    >>> nnx.bridge.ToNNX.__name__, nnx.bridge.lazy_init.__name__
    ('ToNNX', 'lazy_init')
"""

from typing import Any

from .. import initializers
from . import interop, module, variables, wrappers
from .interop import linen_in_bridge_mdl, nnx_in_bridge_mdl
from .linen import to_linen, to_linen_var, with_partitioning
from .module import AttrPriority, Module, Scope, compact, current_context, current_module
from .wrappers import Functional, ToNNX, functional, lazy_init

# ToLinen and NNXMeta (below) are left out of __all__ so that `from plait.bridge import *` needs no Flax.
__all__ = [
    "ToNNX", "Functional", "functional", "initializers", "lazy_init", "to_linen", "to_linen_var",
    "variables", "with_partitioning", "wrappers", "Module", "Scope", "AttrPriority", "compact",
    "current_context", "current_module", "nnx_in_bridge_mdl", "linen_in_bridge_mdl", "interop", "module",
]

_LINEN_CLASSES = ("ToLinen", "NNXMeta")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LINEN_CLASSES})


def __getattr__(name: str) -> Any:
    if name in _LINEN_CLASSES:  # subclasses of Flax classes: made (and Flax imported) on first use
        from .linen import linen_classes

        return linen_classes()[name]
    raise AttributeError(f"module 'plait.bridge' has no attribute {name!r}")
