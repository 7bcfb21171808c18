"""plait: the shared NNX model code (models_nnx.py), plain ``nnx.jit``, ``nnx.Optimizer``."""

from __future__ import annotations

import contextlib
import types

import jax
import maths
import models_nnx
import optax
from harness import Runner

import plait as nnx
from plait.encoding import flatten

NAME = "plait"

M = models_nnx.build(
    nnx,
    scan_axes=nnx.StateAxes({nnx.RngState: nnx.Carry, ...: 0}),
    update=lambda optimizer, model, grads: optimizer.update(grads),
)


def n_variables(*nodes) -> int:
    flat, _ = flatten(tuple(nodes))
    return sum(slot is not None for slot in flat.slots)


def _runner(model, lr: float, step_fn, masks_fn, data) -> Runner:
    optimizer = nnx.Optimizer(model, optax.adam(lr))
    step, masks = nnx.jit(step_fn), nnx.jit(masks_fn)

    def run():
        return step(model, optimizer, *data)

    def run_masks():
        return masks(model, optimizer, *data)[1]

    # Diagnostics (W1): these reach into plait's jit cache, so run.py treats them as optional.
    def inner():
        """The ``jax.jit`` call that plait's jit makes, on the same inputs, and nothing else."""
        last = step._last
        leaves = [v._value for v in last.flat.slots]
        return last.entry.jitted(*leaves, *data, {}, ((), ()))

    @contextlib.contextmanager
    def stub():
        """Within: the compiled call returns a saved result at once, leaving plait's Python alone."""
        entry = step._last.entry
        jitted, result = entry.jitted, inner()
        entry.jitted = lambda *_: result
        try:
            yield
        finally:
            entry.jitted = jitted

    return Runner(run, run_masks, n_variables(model, optimizer), python_only=run, stub=stub,
                  lowered=lambda: step.lower(model, optimizer, *data))


def mlp(cfg: maths.MLPConfig) -> Runner:
    model = M.MLP(cfg, nnx.Rngs(0))
    return _runner(model, cfg.lr, M.mlp_step(False), M.mlp_step(True), maths.mlp_data(cfg))


def lm_model(cfg: maths.LMConfig, stacked: bool):
    return M.LM(cfg, nnx.Rngs(0), stacked)


def lm(cfg: maths.LMConfig, stacked: bool = True) -> Runner:
    return _runner(lm_model(cfg, stacked), cfg.lr, M.lm_step(False), M.lm_step(True), (maths.lm_data(cfg),))


def graph_ops(model) -> dict:
    """W3: the graph functions on a built model, each as a no-argument callable."""
    gd, state = nnx.split(model)
    jax.block_until_ready(jax.tree.leaves(state))
    return {
        "split": lambda: nnx.split(model),
        "merge": lambda: nnx.merge(gd, state),
        "state": lambda: nnx.state(model),
        "update": lambda: nnx.update(model, state),
    }


def object_floor(model):
    """W3's floor for any library that rebuilds Python objects: one ``types.SimpleNamespace``
    (the cheapest Python object with attributes, built in C) per object and Variable of
    ``model``'s graph, with as many attributes. No graph logic at all. Returns the callable
    and the number of objects it builds."""
    from plait import graph

    attrs = [dict(node[2]) if node[0] == graph.OBJ else {"_value": 0, "_meta": 0, "_plait_seen": 0, "_trace": 0}
             for node in graph.graphdef(model).nodes]
    namespace = types.SimpleNamespace
    return (lambda: [namespace(**a) for a in attrs]), len(attrs)
