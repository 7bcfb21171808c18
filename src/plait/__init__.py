"""plait: neural networks for JAX with ordinary Python modules and explicit RNG streams.

Code written for Flax NNX runs with ``import plait as nnx``.

Example:
    >>> import jax.numpy as jnp, plait as nnx
    >>> model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    >>> nnx.jit(lambda m, x: m(x))(model, jnp.ones((1, 3))).shape
    (1, 2)
"""

from . import checkpoints, filters, initializers, metrics, nn, summary, transforms
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
)
from .filters import All, Any, Not, PathContains
from .graph import GraphDef, clone, graphdef, iter_graph, merge, pop, split, state, update
from .metrics import Metric, MultiMetric
from .module import Module, iter_modules
from .nn import *  # noqa: F403  (every layer; see nn/__init__.py)
from .object import Dict, List, Object
from .optimizer import ModelAndOptimizer, Optimizer
from .rngs import Rngs, RngStream, SplitBackups, fork, reseed, restore_rngs, split_rngs
from .state import State
from .summary import tabulate
from .train_state import TrainState
from .transforms import *  # noqa: F403  (every transform; see transforms/__init__.py)
from .variables import BatchStat, Cache, Intermediate, OptState, Param, RngCount, RngKey, RngState, Variable
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
    "All", "Any", "AxisError", "BatchStat", "Cache", "CheckpointError", "Dict", "EMA", "FilterError",
    "GraphDef", "GraphError", "LayerError", "Intermediate", "List", "Metric", "MetricError", "MultiMetric", "MissingStreamError", "ModelAndOptimizer", "Module", "Not", "Object", "OptState", "Optimizer",
    "Param", "PathContains", "PlaitError", "RngCount", "RngError", "RngKey", "RngState", "RngStream", "Rngs",
    "SplitBackups", "State", "StateError", "TrainState", "TransformError", "Variable", "clone", "filters",
    "fork", "graphdef", "initializers", "iter_graph", "iter_modules", "merge", "metrics", "nn",
    "pop", "reseed", "restore_rngs", "split", "split_rngs", "state", "update",
    "checkpoints", "display", "summary", "tabulate",

    *nn.__all__,
    *transforms.__all__,
]
