"""EMA: averages equal the hand-computed ones, inside ``nnx.jit`` too; ``apply_to`` shares
the averaged Variables; wrong input is refused naming the path."""

import jax.numpy as jnp
import numpy as np
import pytest

import plait as nnx

optax = pytest.importorskip("optax")


def test_averages_after_n_updates_equal_the_hand_computed_ones():
    model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    decay = 0.8
    expected = {"kernel": np.asarray(model.kernel.value), "bias": np.asarray(model.bias.value)}
    ema = nnx.EMA(model, decay)
    rs = np.random.RandomState(0)
    for _ in range(5):
        for name in ("kernel", "bias"):
            value = rs.randn(*expected[name].shape).astype(np.float32)
            getattr(model, name).value = jnp.asarray(value)
            expected[name] = decay * expected[name] + (1 - decay) * value
        ema.update(model)
    for name in ("kernel", "bias"):
        np.testing.assert_allclose(np.asarray(ema.params[name].value), expected[name], rtol=1e-6)
        assert type(ema.params[name]) is nnx.Param


def test_jitted_train_step_updates_the_ema_and_apply_to_follows_it():
    rs = np.random.RandomState(1)
    x = jnp.asarray(rs.randn(8, 2).astype(np.float32))
    y = jnp.asarray(rs.randn(8, 1).astype(np.float32))
    model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)
    ema = nnx.EMA(model, decay=0.9)
    ema_model = ema.apply_to(model)
    assert ema_model is not model and ema_model.kernel is ema.params["kernel"]
    averaged = np.asarray(model.kernel.value)

    @nnx.jit
    def train_step(model, optimizer, ema, x, y):
        optimizer.update(model, nnx.grad(lambda m: jnp.mean((m(x) - y) ** 2))(model))
        ema.update(model)

    for _ in range(4):
        train_step(model, optimizer, ema, x, y)
        averaged = 0.9 * averaged + 0.1 * np.asarray(model.kernel.value)
    np.testing.assert_allclose(np.asarray(ema.params["kernel"].value), averaged, rtol=1e-6)
    # the model built before training shows the averages, with no rebuild
    np.testing.assert_allclose(np.asarray(ema_model.kernel.value), averaged, rtol=1e-6)
    out = nnx.jit(lambda m, x: m(x))(ema_model, x)
    np.testing.assert_allclose(np.asarray(out), np.asarray(x) @ averaged + np.asarray(ema_model.bias.value), rtol=1e-5)


def test_only_selects_what_is_averaged_and_apply_to_copies_the_rest():
    class Net(nnx.Module):
        def __init__(self, rngs):
            self.linear = nnx.Linear(2, 2, rngs=rngs)
            self.norm = nnx.BatchNorm(2, rngs=rngs)
            self.drop = nnx.Dropout(0.5, rngs=rngs)

    model = Net(nnx.Rngs(0))
    ema = nnx.EMA(model, 0.5, only=nnx.Param)
    assert {p[-1] for p, _ in ema.params.flat_state()} == {"kernel", "bias", "scale"}
    model.norm.mean.value = jnp.ones(2)
    ema_model = ema.apply_to(model)
    assert ema_model.norm.mean is not model.norm.mean
    np.testing.assert_array_equal(np.asarray(ema_model.norm.mean.value), np.ones(2))
    assert ema_model.linear.kernel is ema.params["linear"]["kernel"]
    assert ema_model.drop.rngs is not model.drop.rngs  # copied, not shared


def test_tied_weights_stay_tied_in_apply_to():
    class Tied(nnx.Module):
        def __init__(self):
            self.a = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
            self.b = self.a

    ema = nnx.EMA(Tied(), 0.9)
    copy = ema.apply_to(Tied())
    assert copy.a is copy.b and copy.a.kernel is ema.params["a"]["kernel"]


def test_refusals_name_the_path():
    with pytest.raises(nnx.GraphError, match=r"(?s)`drop.rngs.default.count` \(RngCount.*only=nnx.Param"):
        class WithDropout(nnx.Module):
            def __init__(self):
                self.linear = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
                self.drop = nnx.Dropout(0.5, rngs=nnx.Rngs(1))

        nnx.EMA(WithDropout(), 0.9)
    ema = nnx.EMA(nnx.Linear(2, 2, rngs=nnx.Rngs(0)), 0.9)
    with pytest.raises(nnx.GraphError, match="averaged but not given: `bias`"):
        ema.update(nnx.Linear(2, 2, use_bias=False, rngs=nnx.Rngs(0)))
    with pytest.raises(nnx.TransformError, match="one semantics"):
        nnx.EMA(nnx.Linear(2, 2, rngs=nnx.Rngs(0)), 0.9, graph=False)


def test_closed_over_ema_update_is_refused():
    model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    ema = nnx.EMA(model, 0.9)
    with pytest.raises(nnx.StateError, match="closed over"):
        nnx.jit(lambda m: ema.update(m))(model)


def test_same_averages_as_flax_nnx():
    flax_nnx = pytest.importorskip("flax.nnx")
    ours = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    theirs = flax_nnx.Linear(2, 2, rngs=flax_nnx.Rngs(0))
    theirs.kernel[...] = ours.kernel.value
    ema_ours, ema_theirs = nnx.EMA(ours, 0.7), flax_nnx.EMA(theirs, 0.7)
    for step in range(3):
        ours.kernel.value = ours.kernel.value + step
        theirs.kernel[...] = theirs.kernel[...] + step
        ema_ours.update(ours)
        ema_theirs.update(theirs)
    np.testing.assert_allclose(
        np.asarray(ema_ours.params["kernel"].value), np.asarray(ema_theirs.params["kernel"][...]), rtol=1e-6
    )
