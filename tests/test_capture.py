"""nnx.capture (the successor of reading sown attributes) and Module.perturb."""

import jax.numpy as jnp
import numpy as np
import pytest

import plait as nnx


class Block(nnx.Module):
    def __init__(self, rngs):
        self.linear = nnx.Linear(2, 2, rngs=rngs)

    def __call__(self, x):
        h = self.linear(x)
        self.sow(nnx.Intermediate, "h", h)
        self.sow(nnx.Cache, "norm", jnp.abs(h).sum())
        return h


class Net(nnx.Module):
    def __init__(self, rngs):
        self.blocks = [Block(rngs), Block(rngs)]

    def features(self, x):
        for b in self.blocks:
            x = b(x)
        return x

    def __call__(self, x):
        return self.features(x).sum()


def test_capture_collects_by_path_and_leaves_model_clean():
    net = Net(nnx.Rngs(0))
    x = jnp.ones(2)
    expected = nnx.clone(net)(x)
    y, inter = nnx.capture(net, nnx.Intermediate)(x)
    np.testing.assert_allclose(y, expected)
    assert sorted(p for p, _ in inter.flat_state()) == [("blocks", 0, "h"), ("blocks", 1, "h")]
    h1 = net.blocks[0].linear(x)
    np.testing.assert_allclose(inter["blocks"][0]["h"].value[0], h1)
    assert not hasattr(net.blocks[0], "h")
    # only the captured types are collected; the Cache sown alongside stays on the module
    assert isinstance(net.blocks[0].norm, nnx.Cache)


def test_capture_several_types_and_decorator_form():
    net = Net(nnx.Rngs(0))

    @nnx.capture(nnx.Intermediate, nnx.Cache)
    def forward(model, x):
        return model(x)

    y, inter, cache = forward(net, jnp.ones(2))
    assert set(p for p, _ in cache.flat_state()) == {("blocks", 0, "norm"), ("blocks", 1, "norm")}
    assert len(inter.flat_state()) == 2 and not hasattr(net.blocks[1], "norm")


def test_values_sown_before_are_set_aside_and_restored():
    net = Net(nnx.Rngs(0))
    net(jnp.zeros(2))  # sows outside capture: an attribute, as before
    before = net.blocks[0].h
    _, inter = nnx.capture(net, nnx.Intermediate)(jnp.ones(2))
    assert len(inter["blocks"][0]["h"].value) == 1  # only this call's value
    assert net.blocks[0].h is before


def test_capture_composes_with_jit_both_ways():
    net = Net(nnx.Rngs(0))
    x = jnp.ones(2)
    _, expected = nnx.capture(net, nnx.Intermediate)(x)
    _, outer = nnx.capture(nnx.jit(lambda m, x: m(x)), nnx.Intermediate)(net, x)
    _, inner = nnx.jit(nnx.capture(lambda m, x: m(x), nnx.Intermediate))(net, x)
    for got in (outer, inner):
        np.testing.assert_allclose(got["blocks"][1]["h"].value[0], expected["blocks"][1]["h"].value[0], rtol=1e-6)
    assert not hasattr(net.blocks[1], "h")


def test_method_outputs_and_classes_restored():
    net = Net(nnx.Rngs(0))
    y, out = nnx.capture(net, nnx.Intermediate, method_outputs=nnx.Intermediate)(jnp.ones(2))
    paths = {p for p, _ in out.flat_state()}
    assert {("features",), ("__call__",), ("blocks", 0, "__call__"), ("blocks", 0, "h")} <= paths
    np.testing.assert_allclose(out["__call__"].value[0], y)
    assert Net.features.__name__ == "features" and "sowing" not in Net.__call__.__qualname__


def test_bound_method_and_no_types():
    net = Net(nnx.Rngs(0))
    feats, inter = nnx.capture(net.features, nnx.Intermediate)(jnp.ones(2))
    assert feats.shape == (2,) and len(inter.flat_state()) == 2
    assert nnx.capture(net)(jnp.ones(2)).shape == ()


def test_capture_errors():
    with pytest.raises(TypeError, match="first argument must be the module"):
        nnx.capture(lambda x: x, nnx.Intermediate)(jnp.ones(1))
    with pytest.raises(TypeError, match="Variable types"):
        nnx.capture(lambda m: m, "intermediates")


def test_perturb_gradients_of_intermediates():
    class Model(nnx.Module):
        def __init__(self):
            self.w = nnx.Param(jnp.array(2.0))

        def __call__(self, x):
            h = self.perturb("h", self.w.value * x)
            self.sow(nnx.Intermediate, "h_value", h)  # one attribute namespace: another name than perturb's
            return (h ** 2).sum()

    model, x = Model(), jnp.array([1.0, 3.0])
    _, zeros = nnx.capture(model, nnx.Perturbation)(x)
    assert not hasattr(model, "h")
    np.testing.assert_array_equal(zeros["h"].value, 0)

    def loss(model, p, x):
        return nnx.capture(model, nnx.Intermediate, init=p)(x)

    (value, sown), grads = nnx.value_and_grad(loss, argnums=nnx.DiffState(1, nnx.Perturbation), has_aux=True)(
        model, zeros, x)
    np.testing.assert_allclose(grads["h"].value, 2 * 2.0 * x)  # d(h^2)/dh at h = w x
    np.testing.assert_allclose(sown["h_value"].value[0], 2.0 * x)
    assert not hasattr(model, "h")


def test_perturb_type_clash():
    class Model(nnx.Module):
        def __init__(self):
            self.h = nnx.Param(jnp.ones(1))

        def __call__(self, x):
            return self.perturb("h", x)

    with pytest.raises(nnx.StateError, match=r"perturb: .*Model.h"):
        Model()(jnp.ones(1))
