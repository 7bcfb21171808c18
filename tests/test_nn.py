"""Tests for the layers (Linear, Dropout), the initializers and the Optimizer."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import plait as nnx

optax = pytest.importorskip("optax")


# =======================================================================================
# Linear
# =======================================================================================


def test_linear_matches_numpy():
    layer = nnx.Linear(3, 4, bias_init=nnx.initializers.normal(1.0), rngs=nnx.Rngs(0))
    x = np.random.RandomState(0).randn(5, 3).astype(np.float32)
    kernel = np.asarray(layer.kernel.value)
    bias = np.asarray(layer.bias.value)
    assert np.any(bias != 0)  # a non-trivial bias, so the test sees it added
    y = layer(jnp.asarray(x))
    assert y.shape == (5, 4)
    assert y.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(y), x @ kernel + bias, rtol=1e-5, atol=1e-5)


def test_linear_parameter_shapes_and_types():
    layer = nnx.Linear(3, 4, rngs=nnx.Rngs(0))
    assert type(layer.kernel) is nnx.Param
    assert type(layer.bias) is nnx.Param
    assert layer.kernel.value.shape == (3, 4)
    assert layer.bias.value.shape == (4,)
    assert layer.kernel.value.dtype == jnp.float32
    # default bias init is zeros, default kernel init is not
    np.testing.assert_array_equal(np.asarray(layer.bias.value), np.zeros(4))
    assert np.std(np.asarray(layer.kernel.value)) > 0
    assert (layer.in_features, layer.out_features) == (3, 4)


def test_linear_default_kernel_init_is_lecun_normal_from_params_stream():
    rngs = nnx.Rngs(params=0)
    layer = nnx.Linear(3, 4, rngs=rngs)
    first_key = jax.random.fold_in(jax.random.key(0), 0)
    expected = nnx.initializers.lecun_normal()(first_key, (3, 4), jnp.float32)
    np.testing.assert_array_equal(np.asarray(layer.kernel.value), np.asarray(expected))
    assert int(rngs.params.count.value) == 2  # kernel and bias each draw once


def test_linear_batch_dimensions():
    layer = nnx.Linear(3, 4, bias_init=nnx.initializers.ones, rngs=nnx.Rngs(0))
    x = np.random.RandomState(1).randn(2, 3, 3).astype(np.float32)
    y = layer(jnp.asarray(x))
    assert y.shape == (2, 3, 4)
    expected = np.einsum("abi,io->abo", x, np.asarray(layer.kernel.value)) + 1.0
    np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-5, atol=1e-5)
    # a single vector works too
    assert layer(jnp.ones(3)).shape == (4,)


def test_linear_without_bias():
    rngs = nnx.Rngs(0)
    layer = nnx.Linear(3, 2, use_bias=False, rngs=rngs)
    assert layer.bias is None
    x = np.random.RandomState(2).randn(4, 3).astype(np.float32)
    np.testing.assert_allclose(
        np.asarray(layer(jnp.asarray(x))), x @ np.asarray(layer.kernel.value), rtol=1e-5, atol=1e-6
    )
    params = nnx.state(layer, nnx.Param)
    assert len(jax.tree.leaves(params)) == 1
    assert int(rngs.default.count.value) == 1  # only the kernel drew a key


def test_linear_custom_initializers():
    calls = []

    def kernel_init(key, shape, dtype):
        calls.append(("kernel", shape, dtype))
        return jnp.full(shape, 0.5, dtype)

    def bias_init(key, shape, dtype):
        calls.append(("bias", shape, dtype))
        return jnp.arange(shape[0], dtype=dtype)

    layer = nnx.Linear(3, 4, kernel_init=kernel_init, bias_init=bias_init, rngs=nnx.Rngs(0))
    assert calls == [("kernel", (3, 4), jnp.float32), ("bias", (4,), jnp.float32)]
    y = layer(jnp.ones((2, 3)))
    np.testing.assert_allclose(np.asarray(y), np.tile([1.5, 2.5, 3.5, 4.5], (2, 1)))


def test_linear_initializer_from_library():
    layer = nnx.Linear(
        2, 3, kernel_init=nnx.initializers.constant(2.0), bias_init=nnx.initializers.constant(-1.0), rngs=nnx.Rngs(0)
    )
    np.testing.assert_array_equal(np.asarray(layer(jnp.ones((1, 2)))), [[3.0, 3.0, 3.0]])


def test_linear_bfloat16_params_float32_compute():
    layer = nnx.Linear(3, 4, param_dtype=jnp.bfloat16, dtype=jnp.float32, rngs=nnx.Rngs(0))
    assert layer.kernel.value.dtype == jnp.bfloat16
    assert layer.bias.value.dtype == jnp.bfloat16
    x = jnp.ones((2, 3), jnp.float32)
    y = layer(x)
    assert y.dtype == jnp.float32
    expected = np.ones((2, 3), np.float32) @ np.asarray(layer.kernel.value, np.float32)
    np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-2, atol=1e-2)
    # bfloat16 input, float32 computation
    assert layer(jnp.ones((2, 3), jnp.bfloat16)).dtype == jnp.float32


def test_linear_float32_params_bfloat16_compute():
    layer = nnx.Linear(3, 4, param_dtype=jnp.float32, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    assert layer.kernel.value.dtype == jnp.float32
    y = layer(jnp.ones((2, 3), jnp.float32))
    assert y.dtype == jnp.bfloat16
    expected = np.ones((2, 3), np.float32) @ np.asarray(layer.kernel.value)
    np.testing.assert_allclose(np.asarray(y, np.float32), expected, rtol=3e-2, atol=3e-2)
    # the parameters themselves are not converted
    assert layer.kernel.value.dtype == jnp.float32


def test_linear_without_dtype_promotes_input_and_params():
    layer = nnx.Linear(3, 4, param_dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    assert layer(jnp.ones((1, 3), jnp.bfloat16)).dtype == jnp.bfloat16
    assert layer(jnp.ones((1, 3), jnp.float32)).dtype == jnp.float32


def test_linear_wrong_input_width_names_expected_width():
    layer = nnx.Linear(3, 4, rngs=nnx.Rngs(0))
    with pytest.raises(nnx.PlaitError) as info:
        layer(jnp.ones((2, 5)))
    msg = str(info.value)
    assert "(2, 5)" in msg
    assert "must be 3" in msg
    assert "Linear(3, 4)" in msg


def test_linear_needs_rngs():
    with pytest.raises(nnx.PlaitError, match="rngs=nnx.Rngs"):
        nnx.Linear(3, 4, rngs=None)


def test_linear_under_jit_matches_eager():
    layer = nnx.Linear(3, 2, rngs=nnx.Rngs(1))
    x = jnp.asarray(np.random.RandomState(3).randn(4, 3).astype(np.float32))
    np.testing.assert_allclose(np.asarray(nnx.jit(lambda m, x: m(x))(layer, x)), np.asarray(layer(x)), rtol=1e-6)


# =======================================================================================
# Dropout
# =======================================================================================


def test_dropout_rate_zero_returns_input():
    x = jnp.arange(5.0)
    assert nnx.Dropout(0.0)(x) is x  # no rngs needed either
    rngs = nnx.Rngs(0)
    assert nnx.Dropout(0.0, rngs=rngs)(x) is x
    assert int(rngs.default.count.value) == 0


def test_dropout_deterministic_returns_input():
    x = jnp.arange(5.0)
    rngs = nnx.Rngs(0)
    drop = nnx.Dropout(0.5, deterministic=True, rngs=rngs)
    assert drop(x) is x
    assert int(rngs.default.count.value) == 0
    # deterministic needs no rngs
    assert nnx.Dropout(0.9, deterministic=True)(x) is x


def test_dropout_rate_one_zeroes_everything():
    y = nnx.Dropout(1.0, rngs=nnx.Rngs(0))(jnp.ones((3, 2)))
    np.testing.assert_array_equal(np.asarray(y), np.zeros((3, 2)))


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.5, 0.8])
def test_dropout_mask_values_and_keep_fraction(rate):
    x = jnp.asarray(np.random.RandomState(0).uniform(1.0, 2.0, size=10_000).astype(np.float32))
    y = np.asarray(nnx.Dropout(rate, rngs=nnx.Rngs(0))(x))
    xs = np.asarray(x)
    kept = y != 0
    # every output is 0 or the input scaled by 1 / (1 - rate)
    np.testing.assert_allclose(y[kept], xs[kept] / (1 - rate), rtol=1e-6)
    assert np.all(y[~kept] == 0)
    # the kept fraction is close to 1 - rate (binomial sd is <= 0.005 here)
    assert abs(kept.mean() - (1 - rate)) < 0.025
    # the mean is preserved in expectation
    assert abs(y.mean() - xs.mean()) / xs.mean() < 0.05


def test_dropout_two_calls_give_different_masks():
    rngs = nnx.Rngs(dropout=0)
    drop = nnx.Dropout(0.5, rngs=rngs)
    x = jnp.ones(64)
    m1 = np.asarray(drop(x)) != 0
    m2 = np.asarray(drop(x)) != 0
    assert not np.array_equal(m1, m2)
    assert int(rngs.dropout.count.value) == 2


def test_dropout_uses_key_from_stream():
    rngs = nnx.Rngs(dropout=3)
    drop = nnx.Dropout(0.5, rngs=rngs)
    y = drop(jnp.ones(64))
    key = jax.random.fold_in(jax.random.key(3), 0)
    mask = np.asarray(jax.random.bernoulli(key, 0.5, (64,)))
    np.testing.assert_array_equal(np.asarray(y), np.where(mask, 2.0, 0.0))


def test_dropout_call_time_deterministic_overrides_constructor():
    x = jnp.ones(64)
    on = nnx.Dropout(0.5, deterministic=True, rngs=nnx.Rngs(0))
    y = np.asarray(on(x, deterministic=False))
    assert set(np.unique(y).tolist()) == {0.0, 2.0}
    off = nnx.Dropout(0.5, deterministic=False, rngs=nnx.Rngs(0))
    assert off(x, deterministic=True) is x
    assert int(off.rngs.default.count.value) == 0


def test_dropout_call_time_rngs_override_constructor():
    own = nnx.Rngs(dropout=0)
    other = nnx.Rngs(dropout=5)
    drop = nnx.Dropout(0.5, rngs=own)
    y = drop(jnp.ones(64), rngs=other)
    assert int(other.dropout.count.value) == 1
    assert int(own.dropout.count.value) == 0
    expected = nnx.Dropout(0.5, rngs=nnx.Rngs(dropout=5))(jnp.ones(64))
    np.testing.assert_array_equal(np.asarray(y), np.asarray(expected))


def test_dropout_call_time_rngs_without_constructor_rngs():
    rngs = nnx.Rngs(0)
    y = nnx.Dropout(0.5)(jnp.ones(64), rngs=rngs)
    assert set(np.unique(np.asarray(y)).tolist()) <= {0.0, 2.0}
    assert int(rngs.default.count.value) == 1


@pytest.mark.parametrize("dims, const_axes", [((0,), (0,)), ((-1,), (2,)), ((0, 2), (0, 2)), ((1,), (1,))])
def test_dropout_broadcast_dims(dims, const_axes):
    x = jnp.ones((8, 16, 4))
    y = np.asarray(nnx.Dropout(0.5, broadcast_dims=dims, rngs=nnx.Rngs(0))(x))
    assert y.shape == x.shape
    for axis in const_axes:
        first = np.take(y, [0], axis=axis)
        assert np.all(y == first), f"mask not constant along axis {axis}"
    assert np.any(y == 0) and np.any(y == 2.0)
    # along the other axes the mask still varies
    varying = [a for a in range(3) if a not in const_axes]
    for axis in varying:
        assert not np.all(y == np.take(y, [0], axis=axis))


def test_dropout_rng_collection_draws_from_that_stream():
    rngs = nnx.Rngs(0, noise=1)
    drop = nnx.Dropout(0.5, rng_collection="noise", rngs=rngs)
    drop(jnp.ones(64))
    assert int(rngs.noise.count.value) == 1
    assert int(rngs.default.count.value) == 0


def test_dropout_rng_collection_falls_back_to_default():
    rngs = nnx.Rngs(0)
    drop = nnx.Dropout(0.5, rng_collection="noise", rngs=rngs)
    drop(jnp.ones(64))
    assert int(rngs.default.count.value) == 1


def test_dropout_default_collection_is_dropout():
    rngs = nnx.Rngs(0, dropout=1)
    nnx.Dropout(0.5, rngs=rngs)(jnp.ones(64))
    assert int(rngs.dropout.count.value) == 1
    assert int(rngs.default.count.value) == 0


def test_dropout_missing_stream_without_default_raises():
    drop = nnx.Dropout(0.5, rngs=nnx.Rngs(params=0))
    with pytest.raises(nnx.RngError, match="'dropout'"):
        drop(jnp.ones(64))


def test_dropout_without_rngs_raises_with_fix():
    drop = nnx.Dropout(0.5)
    with pytest.raises(nnx.RngError) as info:
        drop(jnp.ones(64))
    msg = str(info.value)
    assert "rngs=rngs" in msg
    assert "deterministic=True" in msg
    # works once given rngs at call time
    assert drop(jnp.ones(64), rngs=nnx.Rngs(0)).shape == (64,)


@pytest.mark.parametrize("rate", [-0.1, 1.5, float("nan")])
def test_dropout_rate_out_of_range_raises(rate):
    with pytest.raises(ValueError, match="rate"):
        nnx.Dropout(rate)


class _Net(nnx.Module):
    def __init__(self, rngs):
        self.linear = nnx.Linear(4, 4, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)

    def __call__(self, x):
        return self.drop(self.linear(x))


def test_eval_and_train_toggle_dropout():
    model = _Net(nnx.Rngs(0))
    x = jnp.ones((64, 4))
    assert model.eval() is model
    assert model.drop.deterministic is True
    plain = np.asarray(model.linear(x))
    np.testing.assert_array_equal(np.asarray(model(x)), plain)
    assert model.train() is model
    assert model.drop.deterministic is False
    y = np.asarray(model(x))
    assert np.any(y == 0)
    nonzero = y != 0
    np.testing.assert_allclose(y[nonzero], 2 * plain[nonzero], rtol=1e-6)


def test_dropout_in_jit_advances_the_stream():
    rngs = nnx.Rngs(dropout=0)
    drop = nnx.Dropout(0.5, rngs=rngs)
    f = nnx.jit(lambda d, x: d(x))
    a = np.asarray(f(drop, jnp.ones(64)))
    b = np.asarray(f(drop, jnp.ones(64)))
    assert not np.array_equal(a, b)
    assert int(rngs.dropout.count.value) == 2
    # and the jitted masks are the eager ones
    eager = nnx.Dropout(0.5, rngs=nnx.Rngs(dropout=0))
    np.testing.assert_array_equal(np.asarray(eager(jnp.ones(64))), a)
    np.testing.assert_array_equal(np.asarray(eager(jnp.ones(64))), b)


# =======================================================================================
# initializers
# =======================================================================================

INIT = nnx.initializers

# how to build each exported name (None: it is itself an initializer, not a factory)
_FACTORIES = {
    "constant": lambda: INIT.constant(0.25),
    "delta_orthogonal": lambda: INIT.delta_orthogonal(),
    "glorot_normal": lambda: INIT.glorot_normal(),
    "glorot_uniform": lambda: INIT.glorot_uniform(),
    "he_normal": lambda: INIT.he_normal(),
    "he_uniform": lambda: INIT.he_uniform(),
    "kaiming_normal": lambda: INIT.kaiming_normal(),
    "kaiming_uniform": lambda: INIT.kaiming_uniform(),
    "lecun_normal": lambda: INIT.lecun_normal(),
    "lecun_uniform": lambda: INIT.lecun_uniform(),
    "normal": lambda: INIT.normal(),
    "orthogonal": lambda: INIT.orthogonal(),
    "truncated_normal": lambda: INIT.truncated_normal(),
    "uniform": lambda: INIT.uniform(),
    "variance_scaling": lambda: INIT.variance_scaling(1.0, "fan_in", "normal"),
    "xavier_normal": lambda: INIT.xavier_normal(),
    "xavier_uniform": lambda: INIT.xavier_uniform(),
    "zeros": None,
    "ones": None,
    "zeros_init": lambda: INIT.zeros_init(),
    "ones_init": lambda: INIT.ones_init(),
}
_NOT_INITIALIZERS = {"Initializer"}  # the protocol type
# bfloat16 for a few (each dtype costs a compile; JAX's QR, for orthogonal, has no bfloat16)
_ALSO_BFLOAT16 = {"he_normal", "glorot_uniform", "truncated_normal", "constant", "zeros_init"}
FAN_IN, FAN_OUT = 128, 256


def test_every_exported_initializer_is_covered():
    assert set(INIT.__all__) == set(_FACTORIES) | _NOT_INITIALIZERS
    for name in INIT.__all__:
        assert hasattr(INIT, name), name


def _build(name):
    factory = _FACTORIES[name]
    return getattr(INIT, name) if factory is None else factory()


@pytest.mark.parametrize("name", sorted(_FACTORIES))
def test_initializer_shape_and_dtype(name):
    init = _build(name)
    # the same shape as the statistics tests below, so JAX compiles each initializer once
    shape = (3, 3, 4, 5) if name == "delta_orthogonal" else (FAN_IN, FAN_OUT)
    dtypes = [jnp.float32, jnp.bfloat16] if name in _ALSO_BFLOAT16 else [jnp.float32]
    for dtype in dtypes:
        out = init(jax.random.key(0), shape, dtype)
        assert out.shape == shape
        assert out.dtype == dtype
        assert np.all(np.isfinite(np.asarray(out, np.float32)))


def test_initializer_default_dtype_is_float32():
    assert INIT.lecun_normal()(jax.random.key(0), (FAN_IN, FAN_OUT)).dtype == jnp.float32
    assert INIT.zeros_init()(jax.random.key(0), (FAN_IN, FAN_OUT)).dtype == jnp.float32


def test_constant_zeros_ones_values():
    key = jax.random.key(0)
    np.testing.assert_array_equal(np.asarray(INIT.constant(0.25)(key, (2, 3))), np.full((2, 3), 0.25))
    np.testing.assert_array_equal(np.asarray(INIT.zeros_init()(key, (3,))), np.zeros(3))
    np.testing.assert_array_equal(np.asarray(INIT.ones_init()(key, (3,))), np.ones(3))
    np.testing.assert_array_equal(np.asarray(INIT.zeros(key, (3,))), np.zeros(3))
    np.testing.assert_array_equal(np.asarray(INIT.ones(key, (3,))), np.ones(3))


def test_random_initializers_depend_on_key():
    init = INIT.he_normal()
    shape = (FAN_IN, FAN_OUT)
    a = np.asarray(init(jax.random.key(0), shape))
    b = np.asarray(init(jax.random.key(1), shape))
    c = np.asarray(init(jax.random.key(0), shape))
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize(
    "name, expected_var",
    [
        ("he_normal", 2.0 / FAN_IN),
        ("kaiming_normal", 2.0 / FAN_IN),
        ("lecun_normal", 1.0 / FAN_IN),
        ("glorot_normal", 2.0 / (FAN_IN + FAN_OUT)),
        ("he_uniform", 2.0 / FAN_IN),
        ("lecun_uniform", 1.0 / FAN_IN),
    ],
)
def test_variance_scaling_statistics(name, expected_var):
    w = np.asarray(_build(name)(jax.random.key(0), (FAN_IN, FAN_OUT), jnp.float32))
    assert abs(w.mean()) < 0.05 * np.sqrt(expected_var)
    assert w.var() == pytest.approx(expected_var, rel=0.03)


def test_glorot_uniform_bounds():
    limit = np.sqrt(6.0 / (FAN_IN + FAN_OUT))
    w = np.asarray(INIT.glorot_uniform()(jax.random.key(0), (FAN_IN, FAN_OUT)))
    assert np.all(np.abs(w) <= limit)
    # the samples fill the range: close to both ends
    assert w.max() > 0.99 * limit and w.min() < -0.99 * limit
    assert w.var() == pytest.approx(limit**2 / 3, rel=0.03)


def test_uniform_and_normal_scale():
    u = np.asarray(INIT.uniform(scale=0.5)(jax.random.key(0), (FAN_IN, FAN_OUT)))
    assert u.min() >= 0.0 and u.max() < 0.5
    assert u.mean() == pytest.approx(0.25, rel=0.02)
    n = np.asarray(INIT.normal(stddev=0.1)(jax.random.key(0), (FAN_IN, FAN_OUT)))
    assert n.std() == pytest.approx(0.1, rel=0.05)


def test_orthogonal_gives_orthonormal_rows():
    w = np.asarray(INIT.orthogonal()(jax.random.key(0), (FAN_IN, FAN_OUT)))
    np.testing.assert_allclose(w @ w.T, np.eye(FAN_IN), atol=1e-4)


# =======================================================================================
# Optimizer
# =======================================================================================


def _regression_data():
    rs = np.random.RandomState(0)
    x = rs.randn(32, 3).astype(np.float32)
    w = np.array([[1.0], [-2.0], [0.5]], np.float32)
    y = x @ w + 0.3
    return jnp.asarray(x), jnp.asarray(y)


def _mse(model, x, y):
    return jnp.mean((model(x) - y) ** 2)


def test_optimizer_state_is_opt_state_variables():
    model = nnx.Linear(3, 1, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(1e-2))
    assert optimizer.model is model
    assert type(optimizer.step) is nnx.OptState
    assert int(optimizer.step.value) == 0
    leaves = jax.tree.leaves(optimizer.opt_state, is_leaf=lambda v: isinstance(v, nnx.Variable))
    assert leaves, "adam has state"
    assert all(type(v) is nnx.OptState for v in leaves)
    # adam's mu and nu mirror the parameters
    adam_state = optimizer.opt_state[0]
    assert adam_state.mu["kernel"].value.shape == (3, 1)
    assert adam_state.nu["bias"].value.shape == (1,)
    # the module graph reports them as OptState
    opt_state = nnx.state(optimizer, nnx.OptState)
    n_opt = len(jax.tree.leaves(opt_state))
    assert n_opt == len(leaves) + 1  # + the step counter
    # and none of them is a Param
    params = nnx.state(optimizer, nnx.Param)
    assert len(jax.tree.leaves(params)) == 2


def test_iter_graph_sees_optimizer_state():
    model = nnx.Linear(3, 1, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(1e-2))
    found = [v for _, v in nnx.iter_graph(optimizer) if isinstance(v, nnx.OptState)]
    expected = jax.tree.leaves(optimizer.opt_state, is_leaf=lambda v: isinstance(v, nnx.Variable))
    assert len(found) == len(expected) + 1


def test_optimizer_jitted_train_step_reduces_loss_in_place():
    x, y = _regression_data()
    model = nnx.Linear(3, 1, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(5e-2))
    kernel_var = model.kernel
    kernel_before = np.asarray(model.kernel.value).copy()
    initial = float(_mse(model, x, y))
    seen_models = []

    @nnx.jit
    def train_step(model, optimizer, x, y):
        seen_models.append(model)  # the traced model (only during tracing)
        loss, grads = nnx.value_and_grad(_mse)(model, x, y)
        optimizer.update(grads)
        return loss

    losses = [float(train_step(model, optimizer, x, y)) for _ in range(20)]
    # the returned loss is the loss before each update
    assert losses[0] == pytest.approx(initial, rel=1e-5)
    assert all(b < a for a, b in zip(losses, losses[1:]))
    final = float(_mse(model, x, y))
    assert final < 0.5 * initial
    # the step counter and adam's own counter both counted 20 steps
    assert int(optimizer.step.value) == 20
    assert int(optimizer.opt_state[0].count.value) == 20
    # the caller's objects were updated in place
    assert optimizer.model is model
    assert model.kernel is kernel_var
    assert not np.array_equal(np.asarray(model.kernel.value), kernel_before)
    assert len(seen_models) == 1  # traced once, then cached


def test_optimizer_eager_update_matches_optax():
    x, y = _regression_data()
    model = nnx.Linear(3, 1, rngs=nnx.Rngs(0))
    tx = optax.sgd(0.1)
    optimizer = nnx.Optimizer(model, tx)
    params = {"kernel": model.kernel.value, "bias": model.bias.value}

    def pure_loss(p):
        return jnp.mean((x @ p["kernel"] + p["bias"] - y) ** 2)

    expected_grads = jax.grad(pure_loss)(params)
    loss, grads = nnx.value_and_grad(_mse)(model, x, y)
    assert float(loss) == pytest.approx(float(pure_loss(params)), rel=1e-6)
    np.testing.assert_allclose(np.asarray(grads["kernel"].value), np.asarray(expected_grads["kernel"]), rtol=1e-5)
    optimizer.update(grads)
    np.testing.assert_allclose(
        np.asarray(model.kernel.value),
        np.asarray(params["kernel"] - 0.1 * expected_grads["kernel"]),
        rtol=1e-5,
        atol=1e-6,
    )
    np.testing.assert_allclose(
        np.asarray(model.bias.value), np.asarray(params["bias"] - 0.1 * expected_grads["bias"]), rtol=1e-5, atol=1e-6
    )
    assert int(optimizer.step.value) == 1


def test_optimizer_with_dropout_model_trains():
    x, y = _regression_data()

    class Model(nnx.Module):
        def __init__(self, rngs):
            self.hidden = nnx.Linear(3, 16, rngs=rngs)
            self.drop = nnx.Dropout(0.1, rngs=rngs)
            self.out = nnx.Linear(16, 1, rngs=rngs)

        def __call__(self, x):
            return self.out(self.drop(jax.nn.relu(self.hidden(x))))

    rngs = nnx.Rngs(0)
    model = Model(rngs)
    optimizer = nnx.Optimizer(model, optax.adam(1e-2))
    count_before = int(rngs.default.count.value)

    @nnx.jit
    def train_step(model, optimizer, x, y):
        loss, grads = nnx.value_and_grad(_mse)(model, x, y)
        optimizer.update(grads)
        return loss

    losses = [float(train_step(model, optimizer, x, y)) for _ in range(20)]
    assert losses[-1] < losses[0]
    # each step drew one dropout key, and the count was written back
    assert int(rngs.default.count.value) == count_before + 20
    # the optimizer only touches Params: RNG state is not an optimizer target
    assert all(
        type(v) is nnx.OptState
        for v in jax.tree.leaves(optimizer.opt_state, is_leaf=lambda v: isinstance(v, nnx.Variable))
    )
