"""Layers."""

from .dropout import Dropout
from .linear import Linear

__all__ = ["Dropout", "Linear"]
