"""Lifted JAX transforms: they take modules anywhere in their arguments and write state back."""

from .axes import Carry, DiffState, SameKeys, StateAxes, StateSharding
from .checkify import checkify
from .control import cond, fori_loop, switch, while_loop
from .custom_vjp import custom_vjp
from .functional import cached_partial, call, eval_shape, jit_partial, make_jaxpr
from .grad import grad, jvp, value_and_grad, vjp
from .jit import jit
from .metadata import transform_metadata
from .remat import checkpoint, remat
from .scan import scan
from .shard_map import shard_map
from .vmap import pmap, vmap

__all__ = [
    "Carry", "DiffState", "SameKeys", "StateAxes", "StateSharding", "cached_partial", "call", "checkify", "checkpoint", "cond", "custom_vjp", "eval_shape",
    "fori_loop", "grad", "jit", "jit_partial", "jvp", "make_jaxpr", "pmap", "remat", "scan", "shard_map", "switch", "value_and_grad", "vjp", "vmap", "while_loop",
    "transform_metadata",
]
