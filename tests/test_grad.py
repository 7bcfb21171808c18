"""Tests for ``nnx.grad`` and ``nnx.value_and_grad``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import plait as nnx
from helpers import is_concrete

# -- helpers ---------------------------------------------------------------------------------


class MLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.layer1 = nnx.Linear(3, 4, rngs=rngs)
        self.layer2 = nnx.Linear(4, 2, rngs=rngs)

    def __call__(self, x):
        return self.layer2(jnp.tanh(self.layer1(x)))


def raw_mlp(p, x):
    h = jnp.tanh(x @ p["layer1"]["kernel"] + p["layer1"]["bias"])
    return h @ p["layer2"]["kernel"] + p["layer2"]["bias"]


def raw_params(model):
    return nnx.state(model, nnx.Param).to_pure_dict()


def loss(model, x):
    return (model(x) ** 2).sum()


def raw_loss(p, x):
    return (raw_mlp(p, x) ** 2).sum()


class Stateful(nnx.Module):
    """A Param, a running statistic it writes, and a dropout that draws from an RNG stream."""

    def __init__(self, rngs: nnx.Rngs) -> None:
        self.w = nnx.Param(jnp.array([1.0, 2.0]))
        self.mean = nnx.BatchStat(jnp.array([0.5, 0.5]))
        self.dropout = nnx.Dropout(0.5, rngs=rngs)

    def __call__(self, x):
        y = x * self.w.value
        out = (y * self.mean.value).sum()
        self.mean.value = 0.5 * self.mean.value + 0.5 * y.mean(0)
        return out + 0.0 * self.dropout(y).sum()


def flat_paths(state):
    return [path for path, _ in state.flat_state()]


X = jnp.array([[1.0, -2.0, 0.5], [0.3, 0.2, -1.0]])


# -- gradients with respect to a module -------------------------------------------------------


def test_grad_of_module_is_state_of_params_equal_to_jax_grad():
    model = MLP(nnx.Rngs(0))
    grads = nnx.grad(loss)(model, X)

    assert isinstance(grads, nnx.State)
    params = nnx.state(model, nnx.Param)
    assert flat_paths(grads) == flat_paths(params)
    for (_, g), (_, p) in zip(grads.flat_state(), params.flat_state()):
        assert type(g) is nnx.Param
        assert g.value.shape == p.value.shape and g.value.dtype == p.value.dtype

    expected = jax.grad(raw_loss)(raw_params(model), X)
    for name in ("layer1", "layer2"):
        for leaf in ("kernel", "bias"):
            np.testing.assert_allclose(grads[name][leaf].value, expected[name][leaf], rtol=1e-5, atol=1e-6)


def test_grad_does_not_change_the_model():
    model = MLP(nnx.Rngs(0))
    before = raw_params(model)
    kernel_var = model.layer1.kernel
    nnx.grad(loss)(model, X)
    assert model.layer1.kernel is kernel_var
    after = raw_params(model)
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)):
        np.testing.assert_array_equal(a, b)


def test_unused_param_gets_zero_gradient():
    class M(nnx.Module):
        def __init__(self):
            self.used = nnx.Param(jnp.array([1.0, 2.0]))
            self.unused = nnx.Param(jnp.ones(3))

    grads = nnx.grad(lambda m: (m.used.value ** 2).sum())(M())
    np.testing.assert_array_equal(grads.used.value, [2.0, 4.0])
    np.testing.assert_array_equal(grads.unused.value, np.zeros(3))


def test_non_param_state_is_written_back_and_not_differentiated():
    rngs = nnx.Rngs(0)
    model = Stateful(rngs)
    x = jnp.array([[1.0, 1.0], [3.0, 3.0]])
    mean_var = model.mean

    grads = nnx.grad(lambda m, x: m(x))(model, x)

    assert flat_paths(grads) == [("w",)]
    # out = sum(x * w * mean) -> d/dw = sum_rows(x) * mean = [4, 4] * 0.5
    np.testing.assert_allclose(grads.w.value, [2.0, 2.0])
    # y.mean(0) = [2, 4]; new mean = 0.5 * 0.5 + 0.5 * [2, 4]
    assert model.mean is mean_var
    assert is_concrete(model.mean.value)
    np.testing.assert_allclose(model.mean.value, [1.25, 2.25])
    count = rngs.default.count.value
    assert is_concrete(count) and int(count) == 1
    np.testing.assert_array_equal(model.w.value, [1.0, 2.0])  # Params are not written


def test_value_and_grad_returns_the_value():
    model = MLP(nnx.Rngs(1))
    value, grads = nnx.value_and_grad(loss)(model, X)
    np.testing.assert_allclose(value, loss(model, X), rtol=1e-6)
    expected = jax.grad(raw_loss)(raw_params(model), X)
    np.testing.assert_allclose(grads.layer2.kernel.value, expected["layer2"]["kernel"], rtol=1e-5, atol=1e-6)


# -- argnums ------------------------------------------------------------------------------------


def test_argnums_int_on_array_argument():
    model = MLP(nnx.Rngs(0))
    gx = nnx.grad(loss, argnums=1)(model, X)
    assert isinstance(gx, jax.Array) and gx.shape == X.shape
    np.testing.assert_allclose(gx, jax.grad(raw_loss, argnums=1)(raw_params(model), X), rtol=1e-5, atol=1e-6)

    gx_neg = nnx.grad(loss, argnums=-1)(model, X)
    np.testing.assert_array_equal(gx_neg, gx)


def test_argnums_tuple_module_and_array():
    model = MLP(nnx.Rngs(0))
    result = nnx.grad(loss, argnums=(0, 1))(model, X)
    assert isinstance(result, tuple) and len(result) == 2
    gm, gx = result
    expected_p, expected_x = jax.grad(raw_loss, argnums=(0, 1))(raw_params(model), X)
    assert isinstance(gm, nnx.State)
    np.testing.assert_allclose(gm.layer1.kernel.value, expected_p["layer1"]["kernel"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gx, expected_x, rtol=1e-5, atol=1e-6)

    value, (gm2, gx2) = nnx.value_and_grad(loss, argnums=(0, 1))(model, X)
    np.testing.assert_allclose(value, loss(model, X), rtol=1e-6)
    np.testing.assert_allclose(gx2, expected_x, rtol=1e-5, atol=1e-6)


def test_argnums_tuple_of_one_returns_tuple():
    model = MLP(nnx.Rngs(0))
    result = nnx.grad(loss, argnums=(0,))(model, X)
    assert isinstance(result, tuple) and len(result) == 1
    assert isinstance(result[0], nnx.State)


def test_diffstate_path_contains_differentiates_one_submodule():
    model = MLP(nnx.Rngs(0))
    grads = nnx.grad(loss, argnums=nnx.DiffState(0, nnx.PathContains("layer1")))(model, X)
    assert isinstance(grads, nnx.State)
    assert flat_paths(grads) == [("layer1", "bias"), ("layer1", "kernel")]
    full = nnx.grad(loss)(model, X)
    np.testing.assert_allclose(grads.layer1.kernel.value, full.layer1.kernel.value, rtol=1e-6)
    np.testing.assert_allclose(grads.layer1.bias.value, full.layer1.bias.value, rtol=1e-6)


def test_diffstate_batchstat():
    model = Stateful(nnx.Rngs(0))
    x = jnp.array([[1.0, 1.0], [3.0, 3.0]])
    grads = nnx.grad(lambda m, x: m(x), argnums=nnx.DiffState(0, nnx.BatchStat))(model, x)
    assert flat_paths(grads) == [("mean",)]
    assert type(grads.mean) is nnx.BatchStat
    # d/dmean sum(x * w * mean) = sum_rows(x) * w = [4, 4] * [1, 2]
    np.testing.assert_allclose(grads.mean.value, [4.0, 8.0])
    np.testing.assert_allclose(model.mean.value, [1.25, 2.25])  # still written back


def test_diffstate_and_array_in_argnums_tuple():
    model = MLP(nnx.Rngs(0))
    g_bias, gx = nnx.grad(loss, argnums=(nnx.DiffState(0, nnx.PathContains("bias")), 1))(model, X)
    assert flat_paths(g_bias) == [("layer1", "bias"), ("layer2", "bias")]
    expected_p, expected_x = jax.grad(raw_loss, argnums=(0, 1))(raw_params(model), X)
    np.testing.assert_allclose(g_bias.layer2.bias.value, expected_p["layer2"]["bias"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gx, expected_x, rtol=1e-5, atol=1e-6)


def test_argnums_errors():
    model = MLP(nnx.Rngs(0))
    with pytest.raises(nnx.TransformError, match=r"argnums refers to argument 5.*2 positional argument"):
        nnx.grad(loss, argnums=5)(model, X)
    with pytest.raises(nnx.TransformError, match="argnums entries must be ints or nnx.DiffState"):
        nnx.grad(loss, argnums="x")(model, X)


# -- plain pytrees ------------------------------------------------------------------------------


def test_plain_pytree_argument_gets_same_structure():
    params = {"w": jnp.array([1.0, 2.0, 3.0]), "b": jnp.array(0.5), "extra": [jnp.ones(2), (jnp.zeros(()),)]}

    def f(p, x):
        return jnp.sin(x @ p["w"] + p["b"]).sum() + (p["extra"][0] ** 2).sum() + 3.0 * p["extra"][1][0]

    grads = nnx.grad(f)(params, X)
    assert jax.tree.structure(grads) == jax.tree.structure(params)
    expected = jax.grad(f)(params, X)
    for g, e in zip(jax.tree.leaves(grads), jax.tree.leaves(expected)):
        np.testing.assert_allclose(g, e, rtol=1e-6)
    np.testing.assert_allclose(grads["extra"][0], [2.0, 2.0])
    np.testing.assert_allclose(grads["extra"][1][0], 3.0)


def test_module_inside_pytree_argument_differentiates_params():
    rngs = nnx.Rngs(0)

    class WithDropout(nnx.Module):
        def __init__(self):
            self.linear = nnx.Linear(3, 2, rngs=rngs)
            self.dropout = nnx.Dropout(0.5, rngs=rngs)

        def __call__(self, x):
            return self.dropout(self.linear(x))

    model = WithDropout()
    grads = nnx.grad(lambda d, x: (d["model"](x) + d["shift"]).sum())({"model": model, "shift": jnp.ones(())}, X)
    paths = [p for p, _ in jax.tree_util.tree_flatten_with_path(grads)[0]]
    assert not any("rngs" in jax.tree_util.keystr(p) for p in paths)
    assert grads["model"]["linear"]["kernel"].value.shape == (3, 2)
    assert int(rngs.default.count.value) == 3


# -- has_aux ------------------------------------------------------------------------------------


def test_has_aux_returns_aux_with_arrays():
    model = MLP(nnx.Rngs(0))

    def f(m, x):
        y = m(x)
        return (y ** 2).sum(), {"y": y, "n": 3}

    grads, aux = nnx.grad(f, has_aux=True)(model, X)
    assert isinstance(grads, nnx.State)
    assert aux["n"] == 3
    assert is_concrete(aux["y"])
    np.testing.assert_allclose(aux["y"], model(X), rtol=1e-6)
    expected = jax.grad(raw_loss)(raw_params(model), X)
    np.testing.assert_allclose(grads.layer1.kernel.value, expected["layer1"]["kernel"], rtol=1e-5, atol=1e-6)

    (value, aux2), grads2 = nnx.value_and_grad(f, has_aux=True)(model, X)
    np.testing.assert_allclose(value, loss(model, X), rtol=1e-6)
    np.testing.assert_allclose(aux2["y"], model(X), rtol=1e-6)
    np.testing.assert_allclose(grads2.layer1.kernel.value, expected["layer1"]["kernel"], rtol=1e-5, atol=1e-6)


def test_aux_holding_input_objects_returns_callers_objects():
    model = MLP(nnx.Rngs(0))
    _, aux = nnx.grad(lambda m, x: (loss(m, x), (m, m.layer1.kernel)), has_aux=True)(model, X)
    assert aux[0] is model
    assert aux[1] is model.layer1.kernel


def test_has_aux_requires_a_pair():
    model = MLP(nnx.Rngs(0))
    with pytest.raises(nnx.TransformError, match=r"has_aux=True\): the function must return \(loss, aux\)"):
        nnx.grad(loss, has_aux=True)(model, X)


def test_decorator_forms():
    model = MLP(nnx.Rngs(0))

    @nnx.grad(argnums=1)
    def grad_x(m, x):
        return loss(m, x)

    @nnx.value_and_grad(has_aux=True)
    def vg(m, x):
        return loss(m, x), "aux"

    np.testing.assert_allclose(grad_x(model, X), jax.grad(raw_loss, argnums=1)(raw_params(model), X), rtol=1e-5, atol=1e-6)
    (value, aux), grads = vg(model, X)
    assert aux == "aux"
    np.testing.assert_allclose(value, loss(model, X), rtol=1e-6)
    assert isinstance(grads, nnx.State)


def test_module_in_keyword_argument_is_written_back_not_differentiated():
    rngs = nnx.Rngs(0)
    model = Stateful(rngs)
    x = jnp.array([[1.0, 1.0], [3.0, 3.0]])

    def f(scale, x, *, other):
        return scale * other(x)

    g = nnx.grad(f)(jnp.float32(2.0), x, other=model)
    assert isinstance(g, jax.Array) and g.shape == ()
    np.testing.assert_allclose(g, 6.0)  # other(x) = sum(x * w * mean) = 0.5 * (1 + 2 + 3 + 6)
    np.testing.assert_allclose(model.mean.value, [1.25, 2.25])
    assert int(rngs.default.count.value) == 1


# -- with jit -----------------------------------------------------------------------------------


def test_grad_inside_jit_writes_back():
    rngs = nnx.Rngs(0)
    model = Stateful(rngs)
    x = jnp.array([[1.0, 1.0], [3.0, 3.0]])

    @nnx.jit
    def step(m, x):
        grads = nnx.grad(lambda m, x: m(x))(m, x)
        m.w.value = m.w.value - 0.1 * grads.w.value
        return grads

    grads = step(model, x)
    assert isinstance(grads, nnx.State) and flat_paths(grads) == [("w",)]
    np.testing.assert_allclose(grads.w.value, [2.0, 2.0])
    np.testing.assert_allclose(model.w.value, [0.8, 1.8], rtol=1e-6)
    np.testing.assert_allclose(model.mean.value, [1.25, 2.25])
    assert int(rngs.default.count.value) == 1

    grads = step(model, x)
    # second step: mean is [1.25, 2.25] -> d/dw = [4, 4] * mean
    np.testing.assert_allclose(grads.w.value, [5.0, 9.0], rtol=1e-6)
    assert int(rngs.default.count.value) == 2


def test_jit_of_value_and_grad_with_dropout_advances_rng_each_call():
    rngs = nnx.Rngs(0)

    class Net(nnx.Module):
        def __init__(self):
            self.linear = nnx.Linear(3, 8, rngs=rngs)
            self.dropout = nnx.Dropout(0.5, rngs=rngs)

        def __call__(self, x):
            return self.dropout(self.linear(x))

    model = Net()
    optimizer = nnx.Optimizer(model, optax.sgd(0.0))  # lr 0: only the dropout mask changes
    start = int(rngs.default.count.value)

    @nnx.jit
    def train_step(model, optimizer, x):
        loss, grads = nnx.value_and_grad(lambda m: (m(x) ** 2).mean())(model)
        optimizer.update(grads)
        return loss, grads

    losses, kernel_grads = [], []
    for i in range(3):
        loss_value, grads = train_step(model, optimizer, X)
        count = rngs.default.count.value
        assert is_concrete(count) and int(count) == start + i + 1
        losses.append(float(loss_value))
        kernel_grads.append(np.asarray(grads.linear.kernel.value))

    assert len(set(losses)) == 3, f"dropout masks repeated across calls: {losses}"
    assert not np.array_equal(kernel_grads[0], kernel_grads[1])
    assert int(optimizer.step.value) == 3
