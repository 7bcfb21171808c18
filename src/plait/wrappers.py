"""``nnx.wrappers``: the reference's name for its Linen interop wrappers, which are
``nnx.bridge``'s (:mod:`plait.bridge`): ``ToNNX``, ``lazy_init``, ``ToLinen``, ``to_linen``,
``functional``/``Functional``. ``ToLinen`` is a ``flax.linen.Module`` and imports Flax when
first read.

Example:
    >>> import plait as nnx
    >>> nnx.wrappers.ToNNX is nnx.bridge.ToNNX, nnx.wrappers.lazy_init is nnx.bridge.lazy_init
    (True, True)
"""

from __future__ import annotations

from . import bridge
from .bridge import Functional, ToNNX, functional, lazy_init, to_linen
from .namespaces import missing

__all__ = ["Functional", "ToNNX", "functional", "lazy_init", "to_linen"]

_missing = missing("wrappers", {
    "to_linen_class": "not public in the reference either; use nnx.bridge.to_linen(ModuleClass, ...)",
})


def __getattr__(name: str) -> object:
    if name == "ToLinen":  # a flax.linen.Module subclass: made (and Flax imported) on first use
        return bridge.ToLinen
    return _missing(name)
