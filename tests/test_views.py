"""nnx.view / nnx.with_attributes / nnx.view_info: copies that share the Variables."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import plait as nnx


class Block(nnx.Module):
    def __init__(self, rngs):
        self.linear = nnx.Linear(3, 3, rngs=rngs)
        self.dropout = nnx.Dropout(0.5, rngs=rngs)
        self.norm = nnx.BatchNorm(3, rngs=rngs)
        self.tied = self.linear  # shared inside the model

    def __call__(self, x):
        return self.dropout(self.norm(self.linear(x)))


def test_view_sets_modes_on_the_view_only_and_shares_variables():
    model = Block(nnx.Rngs(0))
    ev = nnx.view(model, deterministic=True, use_running_average=True)
    assert ev.dropout.deterministic and ev.norm.use_running_average
    assert not model.dropout.deterministic and not model.norm.use_running_average
    assert ev is not model and ev.linear is not model.linear
    assert ev.linear.kernel is model.linear.kernel
    assert ev.tied is ev.linear  # sharing kept inside the view
    x = jnp.ones((4, 3))
    np.testing.assert_array_equal(ev(x), ev(x))  # deterministic: no dropout, running stats


def test_update_through_view_is_seen_by_original_and_back():
    model = Block(nnx.Rngs(0))
    ev = nnx.view(model, deterministic=True, use_running_average=True)
    model.linear.kernel.value = jnp.zeros((3, 3))
    np.testing.assert_array_equal(ev.linear.kernel.value, 0)

    opt = nnx.Optimizer(ev, optax.sgd(0.1), wrt=nnx.Param)

    @nnx.jit
    def step(ev, opt, x):
        grads = nnx.grad(lambda m: (m(x) ** 2).sum() + m.linear.bias.value.sum())(ev)
        opt.update(ev, grads)

    before = model.linear.bias.value
    step(ev, opt, jnp.ones((2, 3)))
    assert not np.allclose(model.linear.bias.value, before)
    np.testing.assert_array_equal(model.linear.bias.value, ev.linear.bias.value)


def test_training_mode_batchnorm_in_original_updates_stats_seen_by_view():
    model = Block(nnx.Rngs(0))
    ev = nnx.view(model, deterministic=True, use_running_average=True)
    model(jnp.arange(12.0).reshape(4, 3))
    assert ev.norm.mean.value is model.norm.mean.value
    assert float(jnp.abs(ev.norm.mean.value).sum()) > 0


def test_view_only_filter_and_unknown_keyword():
    model = Block(nnx.Rngs(0))
    ev = nnx.view(model, only=nnx.Dropout, deterministic=True)
    assert ev.dropout.deterministic
    with pytest.raises(nnx.GraphError, match=r"nnx.view.*\['use_running_averag'\]"):
        nnx.view(model, use_running_averag=True)
    assert nnx.view(model, bogus=1, raise_if_not_found=False).linear.kernel is model.linear.kernel


def test_view_never_replaces_methods():
    model = Block(nnx.Rngs(0))
    with pytest.raises(nnx.GraphError, match="train"):
        nnx.view(model, train=True)
    assert callable(model.train)


def test_set_view_protocol():
    class Decoder(nnx.Module):
        def __init__(self):
            self.mode = "train"
            self.length = 0

        def set_view(self, decode: bool | None = None, length: int | None = None):
            """Set the decoding mode.

            Args:
              decode: if True, decode one step at a time.
              length: the cache length.
            """
            if decode is not None:
                self.mode = "decode" if decode else "train"
            if length is not None:
                self.length = length

    class Model(nnx.Module):
        def __init__(self):
            self.dec = Decoder()
            self.drop = nnx.Dropout(0.1)

    model = Model()
    v = nnx.view(model, decode=True, length=8, deterministic=True)
    assert (v.dec.mode, v.dec.length, v.drop.deterministic) == ("decode", 8, True)
    assert model.dec.mode == "train"
    info = nnx.view_info(model)
    assert "Decoder:\n  decode: bool | None = None\n    if True, decode one step at a time." in info
    assert "Dropout:\n  deterministic: bool (attribute)" in info


def test_with_attributes():
    model = Block(nnx.Rngs(0))
    frozen = nnx.with_attributes(model, only=nnx.BatchNorm, use_running_average=True)
    assert frozen.norm.use_running_average and not model.norm.use_running_average
    assert frozen.norm.scale is model.norm.scale
    with pytest.raises(nnx.GraphError, match="with_attributes"):
        nnx.with_attributes(model, only=nnx.Dropout, use_running_average=True)


def test_graph_false_is_refused():
    model = Block(nnx.Rngs(0))
    for fn in (nnx.view, nnx.with_attributes):
        with pytest.raises(nnx.TransformError, match="graph=False.*one semantics"):
            fn(model, graph=False, deterministic=True)
    assert nnx.view(model, graph=True, deterministic=True).dropout.deterministic
