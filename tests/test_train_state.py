"""TrainState (Flax NNX 0.10): a frozen pytree; create / apply_gradients / apply / replace;
subclasses add fields."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import plait as nnx

optax = pytest.importorskip("optax")


def _data():
    rs = np.random.RandomState(0)
    x = rs.randn(16, 3).astype(np.float32)
    return jnp.asarray(x), jnp.asarray(x @ np.array([[1.0], [-2.0], [0.5]], np.float32))


def test_jitted_functional_training_loop():
    x, y = _data()
    graphdef, params = nnx.split(nnx.Linear(3, 1, rngs=nnx.Rngs(0)))
    ts = nnx.TrainState.create(graphdef, params=params, tx=optax.adam(0.05))

    @jax.jit
    def train_step(ts, x, y):
        def loss_fn(params):
            return jnp.mean((nnx.merge(ts.graphdef, params)(x) - y) ** 2)

        loss, grads = jax.value_and_grad(loss_fn)(ts.params)
        return ts.apply_gradients(grads=grads), loss

    losses = []
    for _ in range(10):
        ts, loss = train_step(ts, x, y)
        losses.append(float(loss))
    assert all(b < a for a, b in zip(losses, losses[1:]))
    assert int(ts.step) == 10 and type(ts.params["kernel"]) is nnx.Param
    assert int(ts.opt_state[0].count) == 10


def test_apply_gradients_is_one_optax_step():
    graphdef, params = nnx.split(nnx.Linear(3, 1, rngs=nnx.Rngs(0)))
    ts = nnx.TrainState.create(graphdef, params=params, tx=optax.sgd(0.5), step=3)
    grads = jax.tree.map(jnp.ones_like, params)
    new = ts.apply_gradients(grads)
    np.testing.assert_allclose(np.asarray(new.params["kernel"].value), np.asarray(params["kernel"].value) - 0.5)
    assert int(new.step) == 4 and int(ts.step) == 3  # a new value; the old one is unchanged
    with pytest.raises(dataclasses.FrozenInstanceError):
        ts.step = 0


def test_subclass_fields_static_fields_and_apply():
    class Net(nnx.Module):
        def __init__(self, rngs):
            self.linear = nnx.Linear(2, 2, rngs=rngs)
            self.norm = nnx.BatchNorm(2, rngs=rngs)

        def __call__(self, x):
            return self.norm(self.linear(x))

        def features(self, x):
            return self.linear(x)

    class State(nnx.TrainState):
        batch_stats: nnx.State
        name: str = dataclasses.field(default="run", metadata={"pytree_node": False})

    graphdef, params, stats = nnx.split(Net(nnx.Rngs(0)), nnx.Param, ...)
    ts = State.create(graphdef, params=params, tx=optax.sgd(0.1), batch_stats=stats)
    # tx and name are static: only arrays are leaves
    leaves = jax.tree.leaves(ts)
    assert all(isinstance(v, jax.Array) for v in leaves)
    assert len(jax.tree.leaves(ts.params)) + len(jax.tree.leaves(ts.batch_stats)) + 1 == len(leaves)
    x = jnp.ones((4, 2))
    y, (gd, new_state) = ts.apply("params", "batch_stats")(x)
    assert y.shape == (4, 2) and gd == graphdef
    # BatchNorm in training mode updated its running mean, which comes back in the new state
    assert not np.allclose(np.asarray(new_state["norm"]["mean"].value), np.asarray(stats["norm"]["mean"].value))
    feats, _ = ts.apply(ts.params, ts.batch_stats).features(x)
    np.testing.assert_allclose(np.asarray(feats), np.asarray(x @ params["linear"]["kernel"].value + params["linear"]["bias"].value), rtol=1e-6)
    assert ts.replace(name="other").name == "other"
    with pytest.raises(TypeError, match="not a State"):
        ts.apply("step")
