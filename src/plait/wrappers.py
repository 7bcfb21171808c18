"""``nnx.wrappers``: the reference's Linen interop wrappers (``nnx.bridge.wrappers``:
``ToNNX``, ``ToLinen``). plait has no Linen; see docs/differences.md.

Example:
    >>> import plait as nnx
    >>> try:
    ...     nnx.wrappers.ToNNX
    ... except AttributeError as e:
    ...     print(str(e)[:44])
    plait.wrappers has no attribute 'ToNNX' (the
"""

from __future__ import annotations

from .namespaces import missing

__all__: list[str] = []

__getattr__ = missing("wrappers", {
    name: "Linen interop (nnx.bridge) is not in plait: plait has no Linen modules to wrap"
    for name in ("ToNNX", "ToLinen", "to_linen", "to_linen_class", "lazy_init", "functional", "Functional",
                 "linen_rngs_dict", "current_linen_module")
})
