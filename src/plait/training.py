"""``nnx.training``: the reference's training package; ``nnx.training.metrics`` and
``nnx.training.optimizer`` are plait's :mod:`plait.metrics` and :mod:`plait.optimizer`.

Example:
    >>> import plait as nnx
    >>> nnx.training.metrics.Average is nnx.metrics.Average
    True
    >>> nnx.training.optimizer.Optimizer is nnx.Optimizer
    True
"""

from __future__ import annotations

from . import metrics, optimizer
from .namespaces import missing

__all__ = ["metrics", "optimizer"]

__getattr__ = missing("training")
