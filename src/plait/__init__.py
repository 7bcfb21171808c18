"""plait: neural networks for JAX with ordinary Python modules and explicit RNG streams.

Code written for Flax NNX runs with ``import plait as nnx``.

Example:
    >>> import jax.numpy as jnp, plait as nnx
    >>> model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    >>> nnx.jit(lambda m, x: m(x))(model, jnp.ones((1, 3))).shape
    (1, 2)
"""

from . import checkpoints, filterlib, filters, initializers, metrics, nn, spmd, summary, transforms
from .display import graph_repr as _graph_repr  # noqa: F401  (installs the graph view as every Object's repr)
from .ema import EMA
from .errors import (
    AxisError,
    CheckpointError,
    FilterError,
    GraphError,
    LayerError,
    MetricError,
    MissingStreamError,
    PlaitError,
    RngError,
    StateError,
    TransformError,
    VariableError,
)
from .filters import All, Any, Everything, Not, Nothing, OfType, PathContains, WithTag
from .graph import GraphDef, clone, graphdef, iter_graph, merge, pop, split, state, update
from .metrics import Metric, MultiMetric
from .module import Module, iter_modules
from .nn import *  # noqa: F403  (every layer; see nn/__init__.py)
from .object import Dict, List, Object
from .optimizer import ModelAndOptimizer, Optimizer
from .rngs import Rngs, RngStream, SplitBackups, fork, fork_rngs, reseed, restore_rngs, split_rngs, with_rngs
from .sharding_rules import (
    get_logical_axis_rules,
    logical_axis_rules,
    logical_to_mesh_axes,
    set_logical_axis_rules,
    use_eager_sharding,
    using_eager_sharding,
)
from .spmd import (
    abstract_with_sharding,
    as_abstract,
    get_abstract_model,
    get_named_sharding,
    get_partition_spec,
    logical_to_mesh_sharding,
    with_partitioning,
    with_sharding_constraint,
)
from .state import State
from .summary import tabulate
from .train_state import TrainState
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
from .visualization import display

__version__ = "0.1.0"


def _hide_own_frames() -> None:
    """Leave plait's frames out of the tracebacks JAX filters, as JAX and Equinox do with
    theirs, so an error points at the user's line."""
    import os

    try:
        from jax._src import traceback_util
    except ImportError:  # pragma: no cover - JAX moved it
        return
    traceback_util.register_exclusion(os.path.dirname(__file__))


_hide_own_frames()

__all__ = [
    # errors
    "AxisError", "CheckpointError", "FilterError", "GraphError", "LayerError", "MetricError", "MissingStreamError",
    "PlaitError", "RngError", "StateError", "TransformError", "VariableError",
    # modules, Variables, state
    "Dict", "List", "Module", "Object", "State", "iter_modules",
    "BatchStat", "Cache", "Intermediate", "OptState", "PARTITION_NAME", "Param", "Perturbation", "RngCount", "RngKey",
    "RngState", "Variable", "VariableMetadata", "VariableState", "register_variable_name", "variable_name_from_type",
    "variable_type_from_name", "with_metadata",
    # filters
    "All", "Any", "Everything", "Not", "Nothing", "OfType", "PathContains", "WithTag", "filterlib", "filters",
    # graph functions
    "GraphDef", "clone", "graphdef", "iter_graph", "merge", "pop", "split", "state", "update",
    # randomness
    "RngStream", "Rngs", "SplitBackups", "fork", "fork_rngs", "reseed", "restore_rngs", "split_rngs", "with_rngs",
    # training, display, checkpoints
    "EMA", "Metric", "ModelAndOptimizer", "MultiMetric", "Optimizer", "TrainState", "checkpoints", "display",
    "metrics", "summary", "tabulate",
    "initializers", "nn",
    # sharding
    "abstract_with_sharding", "as_abstract", "get_abstract_model", "get_logical_axis_rules", "get_named_sharding",
    "get_partition_spec", "logical_axis_rules", "logical_to_mesh_axes", "logical_to_mesh_sharding",
    "set_logical_axis_rules", "spmd", "use_eager_sharding", "using_eager_sharding", "with_partitioning",
    "with_sharding_constraint",
    *nn.__all__,
    *transforms.__all__,
]
