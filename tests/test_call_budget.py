"""The Python cost of a jitted train step is pinned: a call count, not a timing.

The model is the benchmarks' W1 workload (benchmarks/run.py): an MLP of Linear(32, 32)
layers with Dropout and ReLU, batch 4, optax Adam, value-and-grad, state written back.
cProfile counts every Python and builtin call made during one warmed-up step. The count
must not grow with the model (at most one call per Variable) and stays under a small
constant: a step reads Variable values through slots, calls the compiled function and
writes values back, without walking the object graph.
"""

import cProfile
import pstats

import jax
import jax.numpy as jnp
import optax
import pytest

import plait as nnx
from plait.encoding import flatten

BUDGET = 30  # calls per step, whatever the depth


class MLP(nnx.Module):
    def __init__(self, depth: int, rngs: nnx.Rngs):
        self.layers = [nnx.Linear(32, 32, rngs=rngs) for _ in range(depth)]
        self.drops = [nnx.Dropout(0.1, rngs=rngs) for _ in range(depth)]

    def __call__(self, x):
        for layer, drop in zip(self.layers, self.drops):
            x = jax.nn.relu(drop(layer(x)))
        return x


@nnx.jit
def train_step(model, optimizer, x, y):
    loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
    optimizer.update(grads)
    return loss


def profiled_calls(fn) -> int:
    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    return pstats.Stats(prof).total_calls


def count_variables(*nodes) -> int:
    flat, _ = flatten(nodes)
    return sum(slot is not None for slot in flat.slots)


@pytest.mark.parametrize("depth", [8, 32])
def test_train_step_python_calls_within_budget(depth):
    model = MLP(depth, nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(1e-3))
    x, y = jnp.ones((4, 32)), jnp.zeros((4, 32))

    def step():
        return train_step(model, optimizer, x, y)

    jax.block_until_ready(step())  # compile
    jax.block_until_ready(step())  # the cached path
    calls = profiled_calls(step) - profiled_calls(lambda: None)  # minus `step` and the profiler's own
    n_vars = count_variables(model, optimizer)
    assert n_vars == 6 * depth + 4  # kernel, bias and their 2 Adam moments; Adam count, step; RNG key, count
    assert calls <= n_vars, f"{calls} Python calls per step for {n_vars} Variables"
    assert calls <= BUDGET, f"{calls} Python calls per step (budget {BUDGET})"


def test_count_sees_the_slow_path():
    """The count is real: a call after a structural change (re-flatten, re-trace) counts far
    more; the next call is back on the cached path at the same count as before."""
    model = MLP(2, nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(1e-3))
    x, y = jnp.ones((4, 32)), jnp.zeros((4, 32))

    def step():
        return train_step(model, optimizer, x, y)

    jax.block_until_ready(step())
    jax.block_until_ready(step())
    steady = profiled_calls(step)
    model.tag = "changed"  # a new static attribute: the next call flattens and traces again
    assert profiled_calls(step) > 10 * BUDGET
    assert profiled_calls(step) == steady
