"""Flax NNX: the shared NNX model code (models_nnx.py) under each of Flax's jit modes.

- ``jit``: ``nnx.jit`` with its defaults (graph mode, graph updates).
- ``jit(graph=False)``: tree mode, modules treated as pytrees (only if this Flax has it).
- ``cached_partial``: ``nnx.cached_partial(nnx.jit(step), model, optimizer)``, which caches
  the graph traversal of the bound arguments.
"""

from __future__ import annotations

import inspect

import jax
import maths
import models_nnx
import optax
from flax import nnx
from harness import Runner

NAME = "Flax NNX"

M = models_nnx.build(
    nnx,
    scan_axes=0,
    update=lambda optimizer, model, grads: optimizer.update(model, grads),
)

HAS_TREE_MODE = "graph" in inspect.signature(nnx.jit).parameters
VARIANTS = ["jit", *(["jit(graph=False)"] if HAS_TREE_MODE else []), "cached_partial"]


def n_variables(*nodes) -> int:
    return sum(len(jax.tree.leaves(nnx.state(n))) for n in nodes)


def _wrap(variant: str, fn, model, optimizer, data):
    """``() -> fn(model, optimizer, *data)`` through the variant's jit, as one closure; and
    ``() -> Lowered`` where the variant can lower."""
    if variant == "cached_partial":
        cached = nnx.cached_partial(nnx.jit(fn), model, optimizer)
        return (lambda: cached(*data)), None
    jitted = nnx.jit(fn) if variant == "jit" else nnx.jit(fn, graph=False)
    return (lambda: jitted(model, optimizer, *data)), (lambda: jitted.lower(model, optimizer, *data))


def _runner(variant: str, model, lr: float, step_fn, masks_fn, data) -> Runner:
    optimizer = nnx.Optimizer(model, optax.adam(lr), wrt=nnx.Param)
    step, lowered = _wrap(variant, step_fn, model, optimizer, data)
    masks, _ = _wrap(variant, masks_fn, model, optimizer, data)
    return Runner(step, lambda: masks()[1], n_variables(model, optimizer), lowered=lowered)


def mlp(cfg: maths.MLPConfig, variant: str = "jit") -> Runner:
    model = M.MLP(cfg, nnx.Rngs(0))
    return _runner(variant, model, cfg.lr, M.mlp_step(False), M.mlp_step(True), maths.mlp_data(cfg))


def lm_model(cfg: maths.LMConfig, stacked: bool):
    return M.LM(cfg, nnx.Rngs(0), stacked)


def lm(cfg: maths.LMConfig, stacked: bool = True, variant: str = "jit") -> Runner:
    model = lm_model(cfg, stacked)
    return _runner(variant, model, cfg.lr, M.lm_step(False), M.lm_step(True), (maths.lm_data(cfg),))


def graph_ops(model) -> dict:
    gd, state = nnx.split(model)
    return {
        "split": lambda: nnx.split(model),
        "merge": lambda: nnx.merge(gd, state),
        "state": lambda: nnx.state(model),
        "update": lambda: nnx.update(model, state),
    }
