"""Module.sow: recording values in Variables during a forward pass, eagerly and under transforms."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import plait as nnx


class Probe(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.linear = nnx.Linear(3, 3, rngs=rngs)

    def __call__(self, x):
        y = self.linear(x)
        self.sow(nnx.Intermediate, "activations", y)
        return y.sum()


@pytest.fixture
def probe() -> Probe:
    return Probe(nnx.Rngs(0))


def test_sow_collects_a_tuple_of_every_value(probe):
    x = jnp.arange(3.0)
    probe(x)
    probe(2 * x)
    sown = probe.activations
    assert type(sown) is nnx.Intermediate and isinstance(sown.value, tuple) and len(sown.value) == 2
    np.testing.assert_allclose(np.asarray(sown.value[1]), 2 * np.asarray(sown.value[0]) - np.asarray(probe.linear.bias.value))


def test_custom_reduce_and_init(probe):
    class Counter(nnx.Module):
        def __call__(self, x):
            self.sow(nnx.Intermediate, "total", x, reduce_fn=lambda acc, v: acc + v, init_fn=lambda: 10.0)

    c = Counter()
    c(1.0)
    c(2.0)
    assert c.total.value == 13.0


def test_pop_takes_the_sown_values_and_sowing_starts_again(probe):
    probe(jnp.ones(3))
    popped = nnx.pop(probe, nnx.Intermediate)
    assert len(popped["activations"].value) == 1 and not hasattr(probe, "activations")
    probe(jnp.ones(3))
    assert len(probe.activations.value) == 1


def test_sow_under_jit_is_written_back(probe):
    step = nnx.jit(lambda m, x: m(x))
    step(probe, jnp.ones(3))
    assert len(probe.activations.value) == 1 and isinstance(probe.activations.value[0], jax.Array)
    step(probe, 2 * jnp.ones(3))  # the tuple grows: a new structure, traced again
    assert len(probe.activations.value) == 2
    np.testing.assert_allclose(
        np.asarray(probe.activations.value[1]),
        np.asarray(probe.linear(2 * jnp.ones(3))),
        rtol=1e-6,
    )


def test_sow_under_grad_is_written_back_and_does_not_change_the_gradient(probe):
    x = jnp.arange(3.0)
    grads = nnx.grad(lambda m: m(x))(probe)
    assert len(probe.activations.value) == 1
    np.testing.assert_allclose(np.asarray(grads["linear"]["bias"].value), np.ones(3))


def test_sow_into_an_attribute_of_another_type_names_it(probe):
    probe.activations = nnx.Param(jnp.zeros(3))
    with pytest.raises(nnx.StateError, match=r"(?s)`Probe.activations` \(Param, shape \(3,\)\).*Intermediate.*nnx.pop"):
        probe(jnp.ones(3))


def test_sow_needs_a_variable_type(probe):
    with pytest.raises(TypeError, match="Variable type such as nnx.Intermediate"):
        probe.sow("intermediates", "x", 1.0)


class Scale(nnx.Module):
    def __init__(self):
        self.w = nnx.Param(jnp.ones(3))

    def __call__(self, x):
        self.sow(nnx.Intermediate, "h", x * self.w)
        return x * self.w


def test_sow_under_vmap_with_intermediates_mapped():
    m = Scale()
    axes = nnx.StateAxes({nnx.Intermediate: 0, ...: None})
    nnx.vmap(lambda m, x: m(x), in_axes=(axes, 0))(m, jnp.arange(12.0).reshape(4, 3))
    (h,) = m.h.value
    assert h.shape == (4, 3)
    np.testing.assert_allclose(np.asarray(h[:, 0]), [0.0, 3.0, 6.0, 9.0])


def test_sow_under_vmap_into_a_broadcast_module_says_how_to_map_it():
    m = Scale()
    with pytest.raises(nnx.StateError, match=r"(?s)`m.h` \(created inside\).*StateAxes"):
        nnx.vmap(lambda m, x: m(x), in_axes=(None, 0))(m, jnp.ones((4, 3)))


def test_sow_inside_scan_is_refused_with_the_reason():
    @nnx.split_rngs(splits=2)
    @nnx.vmap(in_axes=0, out_axes=0)
    def make(rngs):
        return Scale()

    stack = make(nnx.Rngs(0))
    with pytest.raises(nnx.TransformError, match="structure of an input module changed inside a step"):
        nnx.scan(lambda x, layer: (layer(x), None), in_axes=(nnx.Carry, 0))(jnp.ones(3), stack)
