"""plait: neural networks for JAX with ordinary Python modules and explicit RNG streams.

Code written for Flax NNX runs with ``import plait as nnx``.

Example:
    >>> import jax.numpy as jnp, plait as nnx
    >>> model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    >>> nnx.jit(lambda m, x: m(x))(model, jnp.ones((1, 3))).shape
    (1, 2)
"""

# The reference's submodules as namespaces (nnx.graphlib.split, nnx.statelib.State, ...); nothing in plait imports them.
from . import (
    bridge,
    checkpoints,
    compat,
    deprecations,
    extract,
    filterlib,
    filters,
    graphlib,
    helpers,
    initializers,
    metrics,
    nn,
    proxy_caller,
    pytreelib,
    reprlib,
    rnglib,
    spmd,
    statelib,
    summary,
    tracers,
    training,
    transforms,
    traversals,
    variablelib,
    wrappers,
)
from .contexts import (
    MergeContext,
    SplitContext,
    UpdateContext,
    current_update_context,
    merge_context,
    split_context,
    unpack,
    update_context,
)
from .display import graph_repr as _graph_repr  # noqa: F401  (installs the graph view as every Object's repr)
from .ema import EMA
from .errors import (
    AxisError,
    CheckpointError,
    FilterError,
    GraphError,
    LayerError,
    MetricError,
    MissingDependencyError,
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
    GraphState,
    PureState,
    clone,
    find_duplicates,
    graphdef,
    iter_children,
    iter_graph,
    merge,
    pop,
    recursive_map,
    split,
    state,
    update,
)
from .graph import flatten as flatten  # the reference's nnx.flatten: (graphdef, flat_state)
from .graph import unflatten as unflatten
from .graph_map import as_pure, map, prefix  # noqa: A004  (the reference's nnx.map)
from .graph_map import pure as pure  # the reference's deprecated name of as_pure
from .graph_map import set_metadata as set_metadata
from .intermediates import capture
from .metrics import Metric, MultiMetric
from .mode import set_graph_mode, set_graph_updates
from .module import Module, iter_module_children, iter_modules
from .mutable_arrays import MutableArray as MutableArray  # 0.10.7's mutable arrays (JAX refs)
from .mutable_arrays import freeze as freeze
from .mutable_arrays import is_mutable_array as is_mutable_array
from .mutable_arrays import mutable as mutable
from .mutable_arrays import mutable_array as mutable_array
from .nn import *  # noqa: F403  (every layer; see nn/__init__.py)
from .object import Dict, List, Object
from .optimizer import ModelAndOptimizer, OptArray, Optimizer, OptVariable
from .pytree import Data as Data  # the reference's annotations: x: nnx.Data[jax.Array]
from .pytree import Pytree, check_pytree, data, dataclass, has_data, is_data, register_data_type, static
from .pytree import Static as Static
from .pytree import field as field  # 0.10.7's dataclass field
from .rngs import ForkStates as ForkStates  # the reference's 0.10 functional fork's result
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
from .state import (
    FlatState,
    State,
    filter_state,
    from_flat_state,
    map_state,
    merge_state,
    replace_by_pure_dict,
    restore_int_paths,
    split_state,
    to_flat_state,
    to_pure_dict,
)
from .summary import tabulate
from .train_state import TrainState
from .transforms import *  # noqa: F403  (every transform; see transforms/__init__.py)
from .tree import NodeStates, from_tree, to_tree
from .typevars import A, Initializer, M
from .variable_modes import VarDefaults, var_defaults, vars_as, with_vars
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
from .views import view, view_info, with_attributes
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
    "MissingDependencyError", "PlaitError", "RngError", "StateError", "TransformError", "VariableError",
    # modules, Variables, state
    "Dict", "List", "Module", "Object", "State", "capture", "iter_modules",
    "BatchStat", "Cache", "Intermediate", "OptState", "PARTITION_NAME", "Param", "Perturbation", "RngCount", "RngKey",
    "RngState", "Variable", "VariableMetadata", "VariableState", "register_variable_name", "variable_name_from_type",
    "variable_type_from_name", "with_metadata", "VarDefaults", "var_defaults", "vars_as", "with_vars",
    # filters
    "All", "Any", "Everything", "Not", "Nothing", "OfType", "PathContains", "WithTag", "filterlib", "filters",
    # graph functions
    "GraphDef", "clone", "graphdef", "iter_graph", "merge", "pop", "split", "state", "update",
    "as_pure", "map", "prefix",
    "GraphState", "PureState", "find_duplicates", "flatten", "iter_children", "iter_module_children", "recursive_map",
    "unflatten", "NodeStates", "from_tree", "to_tree",
    "FlatState", "filter_state", "from_flat_state", "map_state", "merge_state", "replace_by_pure_dict",
    "restore_int_paths", "split_state", "to_flat_state", "to_pure_dict",
    # randomness
    "RngStream", "Rngs", "SplitBackups", "fork", "fork_rngs", "reseed", "restore_rngs", "split_rngs", "with_rngs",
    # training, display, checkpoints
    "EMA", "Metric", "ModelAndOptimizer", "MultiMetric", "Optimizer", "TrainState", "checkpoints", "display",
    "metrics", "summary", "tabulate", "compat", "bridge",
    "OptArray", "OptVariable", "A", "M", "Initializer",
    "initializers", "nn",
    # data and static attributes
    "Pytree", "check_pytree", "data", "dataclass", "has_data", "is_data", "register_data_type", "static",
    # views; Flax NNX's modes (plait has one)
    "set_graph_mode", "set_graph_updates", "view", "view_info", "with_attributes",
    # sharding
    "abstract_with_sharding", "as_abstract", "get_abstract_model", "get_logical_axis_rules", "get_named_sharding",
    "get_partition_spec", "logical_axis_rules", "logical_to_mesh_axes", "logical_to_mesh_sharding",
    "set_logical_axis_rules", "spmd", "use_eager_sharding", "using_eager_sharding", "with_partitioning",
    "with_sharding_constraint",
    # building lifted transforms by hand
    "MergeContext", "SplitContext", "UpdateContext", "current_update_context", "merge_context", "split_context",
    "unpack", "update_context", "ForkStates", "extract",
    # the reference's remaining names (typing annotations, 0.10.7 helpers)
    "Data", "Static", "field", "pure", "set_metadata",
    "MutableArray", "freeze", "is_mutable_array", "mutable", "mutable_array",
    "deprecations", "graphlib", "helpers", "proxy_caller", "pytreelib", "reprlib", "rnglib", "statelib", "tracers",
    "training", "traversals", "variablelib", "wrappers",
    *nn.__all__,
    *transforms.__all__,
]
