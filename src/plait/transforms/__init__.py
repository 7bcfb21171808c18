"""Lifted JAX transforms: they take modules anywhere in their arguments and write state back."""

from .axes import Carry, DiffState, SameKeys, StateAxes
from .grad import grad, value_and_grad
from .jit import jit
from .scan import scan
from .vmap import vmap

__all__ = ["Carry", "DiffState", "SameKeys", "StateAxes", "grad", "jit", "scan", "value_and_grad", "vmap"]
