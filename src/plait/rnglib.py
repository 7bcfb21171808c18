"""``nnx.rnglib``: the reference's RNG module, as plait's :mod:`plait.rngs` names.

Example:
    >>> import plait as nnx
    >>> nnx.rnglib.Rngs is nnx.Rngs, nnx.rnglib.RngKey is nnx.RngKey
    (True, True)
"""

from __future__ import annotations

from .namespaces import missing
from .rngs import Rngs, RngStream, SplitBackups, fork, fork_rngs, reseed, restore_rngs, split_rngs, with_rngs
from .variables import RngCount, RngKey, RngState

__all__ = [
    "RngCount", "RngKey", "RngState", "RngStream", "Rngs", "SplitBackups", "fork", "fork_rngs", "reseed",
    "restore_rngs", "split_rngs", "with_rngs",
]

__getattr__ = missing("rnglib", {
    "backup_keys": "nnx.split_rngs(...) / nnx.fork_rngs(...) as a context manager (they restore the keys)",
})
