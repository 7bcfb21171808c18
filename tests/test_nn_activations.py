"""Tests for the activation functions (re-exported from jax.nn) and PReLU."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import plait as nnx
from plait.nn import activations

X = np.array([-3.0, -1.5, -0.2, 0.0, 0.3, 1.0, 2.5], np.float32)


def test_every_name_is_exported_at_the_top_level():
    for name in activations.__all__:
        assert getattr(nnx, name) is getattr(activations, name)


@pytest.mark.parametrize("name", [n for n in activations.__all__ if n not in ("PReLU", "tanh")])
def test_functions_are_jax_nn_own(name):
    assert getattr(nnx, name) is getattr(jax.nn, name)


def test_tanh_is_jax_numpy_tanh():
    assert nnx.tanh is jnp.tanh


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


REFERENCES = {
    "relu": lambda x: np.maximum(x, 0.0),
    "sigmoid": _sigmoid,
    "silu": lambda x: x * _sigmoid(x),
    "swish": lambda x: x * _sigmoid(x),
    "tanh": np.tanh,
    "elu": lambda x: np.where(x > 0, x, np.exp(x) - 1.0),
    "leaky_relu": lambda x: np.where(x >= 0, x, 0.01 * x),
    "celu": lambda x: np.maximum(x, 0.0) + np.minimum(0.0, np.exp(x) - 1.0),
    "selu": lambda x: 1.0507009873554805 * np.where(x > 0, x, 1.6732632423543772 * (np.exp(x) - 1.0)),
    "softplus": lambda x: np.log1p(np.exp(x)),
    "soft_sign": lambda x: x / (np.abs(x) + 1.0),
    "log_sigmoid": lambda x: -np.log1p(np.exp(-x)),
    "relu6": lambda x: np.clip(x, 0.0, 6.0),
    "hard_tanh": lambda x: np.clip(x, -1.0, 1.0),
    "hard_sigmoid": lambda x: np.clip(x + 3.0, 0.0, 6.0) / 6.0,
    "hard_silu": lambda x: x * np.clip(x + 3.0, 0.0, 6.0) / 6.0,
    "gelu": lambda x: 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3))),
    "softmax": lambda x: np.exp(x - x.max()) / np.exp(x - x.max()).sum(),
    "log_softmax": lambda x: x - x.max() - np.log(np.exp(x - x.max()).sum()),
    "logsumexp": lambda x: np.log(np.exp(x).sum()),
    "standardize": lambda x: (x - x.mean()) / np.sqrt(x.var() + 1e-5),
    "identity": lambda x: x,
}


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_activation_matches_numpy(name):
    y = getattr(nnx, name)(jnp.asarray(X))
    assert y.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(y), REFERENCES[name](X.astype(np.float64)), rtol=1e-5, atol=1e-6)


def test_glu_and_one_hot():
    x = np.array([[1.0, -2.0, 0.5, 3.0]], np.float32)
    np.testing.assert_allclose(np.asarray(nnx.glu(jnp.asarray(x))), x[:, :2] * _sigmoid(x[:, 2:]), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(nnx.one_hot(jnp.array([2, 0]), 3)), np.eye(3)[[2, 0]])


# =======================================================================================
# PReLU
# =======================================================================================


def _prelu(x, slope):
    return np.where(x >= 0, x, slope * x)


def test_prelu_matches_numpy_and_holds_a_scalar_param():
    act = nnx.PReLU()
    assert type(act.negative_slope) is nnx.Param
    assert act.negative_slope.value.shape == ()
    assert act.negative_slope.value.dtype == jnp.float32
    np.testing.assert_allclose(float(act.negative_slope.value), 0.01)
    np.testing.assert_allclose(np.asarray(act(jnp.asarray(X))), _prelu(X, 0.01), rtol=1e-6)

    act = nnx.PReLU(negative_slope_init=0.25, rngs=nnx.Rngs(0))  # rngs accepted, not needed
    x = np.random.RandomState(0).randn(3, 4).astype(np.float32)
    np.testing.assert_allclose(np.asarray(act(jnp.asarray(x))), _prelu(x, 0.25), rtol=1e-6)


def test_prelu_slope_is_learned():
    act = nnx.PReLU(0.1)
    x = jnp.asarray(X)
    grads = nnx.grad(lambda m, x: m(x).sum())(act, x)
    # d/d(slope) of sum(where(x >= 0, x, slope * x)) is the sum of the negative inputs
    np.testing.assert_allclose(float(grads.negative_slope.value), X[X < 0].sum(), rtol=1e-6)
    y = nnx.jit(lambda m, x: m(x))(act, x)
    np.testing.assert_allclose(np.asarray(y), _prelu(X, 0.1), rtol=1e-6)


def test_prelu_dtypes():
    # no dtype: the slope follows the input
    act = nnx.PReLU(0.5)
    assert act(jnp.ones(3, jnp.bfloat16)).dtype == jnp.bfloat16
    assert act(jnp.ones(3, jnp.float32)).dtype == jnp.float32
    # param_dtype is the slope's storage; dtype the computation's
    act = nnx.PReLU(0.5, param_dtype=jnp.bfloat16, dtype=jnp.float32)
    assert act.negative_slope.value.dtype == jnp.bfloat16
    y = act(-jnp.ones(3, jnp.bfloat16))
    assert y.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(y), [-0.5, -0.5, -0.5])


def test_prelu_negative_slope_metadata():
    act = nnx.PReLU(negative_slope_metadata={"role": "slope"})
    assert act.negative_slope.get_metadata() == {"role": "slope"}
