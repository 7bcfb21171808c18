"""plait: neural networks for JAX with ordinary Python modules and explicit RNG streams.

Code written for Flax NNX runs with ``import plait as nnx``.

Example:
    >>> import jax.numpy as jnp, plait as nnx
    >>> model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    >>> nnx.jit(lambda m, x: m(x))(model, jnp.ones((1, 3))).shape
    (1, 2)
"""

from . import filterlib, filters, initializers, nn, transforms
from .errors import (
    AxisError,
    FilterError,
    GraphError,
    LayerError,
    MissingStreamError,
    PlaitError,
    RngError,
    StateError,
    TransformError,
    VariableError,
)
from .filters import All, Any, Everything, Not, Nothing, OfType, PathContains, WithTag
from .graph import (
    GraphDef,
    clone,
    flatten,
    graphdef,
    iter_graph,
    merge,
    pop,
    split,
    state,
    unflatten,
    update,
)
from .module import Module, iter_modules
from .nn import *  # noqa: F403  (every layer; see nn/__init__.py)
from .object import Dict, List, Object
from .optimizer import Optimizer
from .rngs import Rngs, RngStream, SplitBackups, fork, fork_rngs, reseed, restore_rngs, split_rngs, with_rngs
from .state import State
from .transforms import *  # noqa: F403  (every transform; see transforms/__init__.py)
from .variable_names import register_variable_name, variable_name_from_type, variable_type_from_name
from .variables import (
    PARTITION_NAME,
    BatchStat,
    Cache,
    Intermediate,
    OptState,
    Param,
    Perturbation,
    RngCount,
    RngKey,
    RngState,
    Variable,
    VariableMetadata,
    VariableState,
    with_metadata,
)

__version__ = "0.1.0"

__all__ = [
    "All", "Any", "AxisError", "BatchStat", "Cache", "Dict", "FilterError",
    "GraphDef", "GraphError", "LayerError", "Intermediate", "List", "MissingStreamError", "Module", "Not", "Object", "OptState", "Optimizer",
    "Param", "PathContains", "PlaitError", "RngCount", "RngError", "RngKey", "RngState", "RngStream", "Rngs",
    "SplitBackups", "State", "StateError", "TransformError", "Variable", "clone", "filters",
    "flatten", "fork", "graphdef", "initializers", "iter_graph", "iter_modules", "merge", "nn",
    "pop", "reseed", "restore_rngs", "split", "split_rngs", "state", "unflatten", "update",

    "Everything", "Nothing", "OfType", "WithTag", "filterlib",
    "Perturbation", "VariableError", "VariableMetadata", "VariableState", "register_variable_name",
    "variable_name_from_type", "variable_type_from_name", "with_metadata", "fork_rngs", "with_rngs", "PARTITION_NAME",
    *nn.__all__,
    *transforms.__all__,
]
