"""Tests for Sequential."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import plait as nnx


def _mlp():
    rngs = nnx.Rngs(0)
    return nnx.Sequential(nnx.Linear(3, 4, rngs=rngs), nnx.relu, nnx.Linear(4, 2, rngs=rngs))


def test_sequential_matches_manual_composition():
    model = _mlp()
    first, _, last = model.layers
    x = np.random.RandomState(0).randn(4, 3).astype(np.float32)
    h = np.maximum(x @ np.asarray(first.kernel.value) + np.asarray(first.bias.value), 0.0)
    expected = h @ np.asarray(last.kernel.value) + np.asarray(last.bias.value)
    np.testing.assert_allclose(np.asarray(model(jnp.asarray(x))), expected, rtol=1e-5, atol=1e-6)


def test_sequential_state_paths_and_transforms():
    model = _mlp()
    params = nnx.state(model, nnx.Param)
    assert params["layers"][0]["kernel"].value.shape == (3, 4)
    assert params["layers"][2]["bias"].value.shape == (2,)
    x = jnp.ones((2, 3))
    np.testing.assert_allclose(np.asarray(nnx.jit(lambda m, x: m(x))(model, x)), np.asarray(model(x)), rtol=1e-6)
    grads = nnx.grad(lambda m, x: m(x).sum())(model, x)
    assert grads["layers"][0]["kernel"].value.shape == (3, 4)
    assert len(jax.tree.leaves(grads)) == 4


def test_first_layer_gets_all_arguments_later_layers_the_output():
    seen = []

    def first(a, b, *, scale):
        seen.append(("first", a, b, scale))
        return (a + b) * scale

    def second(x):
        seen.append(("second", x))
        return x - 1

    model = nnx.Sequential(first, second, lambda x: x * 10)
    assert model(1, 2, scale=3) == 80
    assert seen == [("first", 1, 2, 3), ("second", 9)]


def test_nested_sequential_and_dropout_inside():
    rngs = nnx.Rngs(0)
    model = nnx.Sequential(nnx.Sequential(nnx.Linear(3, 4, rngs=rngs)), nnx.Dropout(0.5, rngs=rngs))
    x = jnp.ones((2, 3))
    assert bool((model(x) != model(x)).any())  # dropout draws a new mask every call
    model.eval()
    np.testing.assert_allclose(np.asarray(model(x)), np.asarray(model.layers[0](x)), rtol=1e-6)


def test_empty_sequential_is_the_identity():
    assert nnx.Sequential()(5) == 5
    with pytest.raises(nnx.PlaitError, match="exactly one argument"):
        nnx.Sequential()(1, 2)


def test_non_callable_layer_is_refused():
    with pytest.raises(nnx.PlaitError, match="layer 1 is a int"):
        nnx.Sequential(nnx.relu, 3)
