"""Optimizer: both call forms, ``wrt``, extra optax arguments (L-BFGS), optax wrappers that
need the parameter tree, mismatched gradients, ``ModelAndOptimizer``, inside ``nnx.jit``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import plait as nnx

optax = pytest.importorskip("optax")


def _data():
    rs = np.random.RandomState(0)
    x = rs.randn(16, 3).astype(np.float32)
    y = x @ np.array([[1.0], [-2.0], [0.5]], np.float32) + 0.3
    return jnp.asarray(x), jnp.asarray(y)


def _mse(model, x, y):
    return jnp.mean((model(x) - y) ** 2)


def _values(model):
    return {path[-1]: np.asarray(v.value) for path, v in nnx.state(model, nnx.Param).flat_state()}


def test_both_call_forms_apply_the_same_sgd_step():
    x, y = _data()
    results = []
    for form in ("model_and_grads", "grads"):
        model = nnx.Linear(3, 1, rngs=nnx.Rngs(0))
        before = _values(model)
        optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)
        grads = nnx.grad(_mse)(model, x, y)
        updates = optimizer.update(model, grads) if form == "model_and_grads" else optimizer.update(grads)
        after = _values(model)
        for name in ("kernel", "bias"):
            expected = before[name] - 0.1 * np.asarray(grads[name].value)
            np.testing.assert_allclose(after[name], expected, rtol=1e-6, atol=1e-7)
            np.testing.assert_allclose(np.asarray(updates[name]), -0.1 * np.asarray(grads[name].value), rtol=1e-6)
        assert int(optimizer.step.value) == 1
        results.append(after)
    np.testing.assert_array_equal(results[0]["kernel"], results[1]["kernel"])


def test_update_of_another_model_object_with_the_same_structure():
    """The two-argument form updates the model it is given (as in Flax NNX 0.11+)."""
    x, y = _data()
    built_for = nnx.Linear(3, 1, rngs=nnx.Rngs(0))
    other = nnx.Linear(3, 1, rngs=nnx.Rngs(1))
    optimizer = nnx.Optimizer(built_for, optax.sgd(0.1))
    kernel = np.asarray(built_for.kernel.value)
    optimizer.update(other, nnx.grad(_mse)(other, x, y))
    np.testing.assert_array_equal(np.asarray(built_for.kernel.value), kernel)
    assert not np.array_equal(np.asarray(other.kernel.value), np.asarray(nnx.Linear(3, 1, rngs=nnx.Rngs(1)).kernel.value))


class Scaled(nnx.Module):
    """A Linear and a scale of its own Variable type, to optimize one but not the other."""

    class Scale(nnx.Variable):
        pass

    def __init__(self):
        self.linear = nnx.Linear(3, 1, rngs=nnx.Rngs(0))
        self.scale = Scaled.Scale(jnp.ones(()))

    def __call__(self, x):
        return self.linear(x) * self.scale.value


def test_wrt_optimizes_only_the_selected_variables_and_drops_other_gradients():
    x, y = _data()
    model = Scaled()
    optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=Scaled.Scale)
    kernel = np.asarray(model.linear.kernel.value)
    # gradients for both types: the Params are dropped, as `wrt` says
    grads = nnx.grad(_mse, argnums=nnx.DiffState(0, (nnx.Param, Scaled.Scale)))(model, x, y)
    assert "linear" in grads and "scale" in grads
    optimizer.update(model, grads)
    np.testing.assert_array_equal(np.asarray(model.linear.kernel.value), kernel)
    np.testing.assert_allclose(float(model.scale.value), 1.0 - 0.1 * float(grads["scale"].value), rtol=1e-6)


def test_gradients_of_another_model_name_the_paths_that_differ():
    x = jnp.ones((2, 3))
    model = nnx.Linear(3, 1, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(1e-2))

    class Other(nnx.Module):
        def __init__(self):
            self.dense = nnx.Linear(3, 1, rngs=nnx.Rngs(0))

        def __call__(self, x):
            return self.dense(x)

    grads = nnx.grad(lambda m: m(x).sum())(Other())
    with pytest.raises(nnx.GraphError) as info:
        optimizer.update(model, grads)
    text = str(info.value)
    assert "`bias`, `kernel`" in text and "`dense.bias`, `dense.kernel`" in text
    assert "no entry in grads" in text and "not parameters" in text

    wide = nnx.grad(lambda m: m(jnp.ones((2, 4))).sum())(nnx.Linear(4, 1, rngs=nnx.Rngs(0)))
    with pytest.raises(nnx.GraphError, match=r"`kernel` has shape \(4, 1\), the parameter \(3, 1\)"):
        optimizer.update(model, wide)
    assert int(optimizer.step.value) == 0  # nothing was applied


def test_wrong_call_forms_are_refused_with_the_right_form():
    model = nnx.Linear(3, 1, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.sgd(0.1))
    grads = nnx.grad(lambda m: m(jnp.ones((1, 3))).sum())(model)
    with pytest.raises(nnx.TransformError, match=r"optimizer.update\(model, grads\)"):
        optimizer.update(grads, model)
    with pytest.raises(nnx.TransformError, match="is a Linear"):
        optimizer.update(model)
    with pytest.raises(nnx.TransformError, match="3 positional"):
        optimizer.update(model, grads, grads)


def test_graph_keyword():
    model = nnx.Linear(3, 1, rngs=nnx.Rngs(0))
    assert int(nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param, graph=True).step.value) == 0
    with pytest.raises(nnx.TransformError, match="one semantics"):
        nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param, graph=False)


def test_jitted_train_step_writes_back_params_step_and_opt_state():
    x, y = _data()
    model = nnx.Linear(3, 1, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(5e-2), wrt=nnx.Param)
    mu_before = np.asarray(optimizer.opt_state[0].mu["kernel"].value)
    traces = []

    @nnx.jit
    def train_step(model, optimizer, x, y):
        traces.append(1)
        loss, grads = nnx.value_and_grad(_mse)(model, x, y)
        optimizer.update(model, grads)
        return loss

    losses = [float(train_step(model, optimizer, x, y)) for _ in range(10)]
    assert all(b < a for a, b in zip(losses, losses[1:]))
    assert int(optimizer.step.value) == 10 and int(optimizer.opt_state[0].count.value) == 10
    assert not np.array_equal(np.asarray(optimizer.opt_state[0].mu["kernel"].value), mu_before)
    assert len(traces) == 1


def test_lbfgs_gets_value_grad_and_a_value_fn_of_the_param_state():
    x, y = _data()
    model = nnx.Linear(3, 1, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.lbfgs(), wrt=nnx.Param)
    seen = []

    @nnx.jit
    def train_step(model, optimizer, x, y):
        graphdef = nnx.graphdef(model)

        def value_fn(params):
            seen.append(type(params["kernel"]))
            return _mse(nnx.merge(graphdef, params), x, y)

        loss, grads = nnx.value_and_grad(_mse)(model, x, y)
        optimizer.update(model, grads, value=loss, grad=grads, value_fn=value_fn)
        return loss

    losses = [float(train_step(model, optimizer, x, y)) for _ in range(6)]
    assert float(_mse(model, x, y)) < 1e-4 < losses[0]  # a quadratic: L-BFGS solves it in a few steps
    assert seen and all(t is nnx.Param for t in seen)
    assert int(optimizer.step.value) == 6


def _labels_by_last_path_part(params: nnx.State) -> nnx.State:
    """A label per parameter from its path (what ``nnx.map_state`` does in Flax NNX)."""
    return nnx.State.from_flat_state([(path, "frozen" if path[-1] == "bias" else "trained") for path, _ in params.flat_state()])


def test_multi_transform_with_labels_made_from_the_param_state():
    x, y = _data()
    model = nnx.Linear(3, 1, rngs=nnx.Rngs(0))
    labels = _labels_by_last_path_part(nnx.state(model, nnx.Param))
    tx = optax.multi_transform({"trained": optax.sgd(0.1), "frozen": optax.set_to_zero()}, labels)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    bias, kernel = np.asarray(model.bias.value), np.asarray(model.kernel.value)
    grads = nnx.grad(_mse)(model, x, y)
    optimizer.update(model, grads)
    np.testing.assert_array_equal(np.asarray(model.bias.value), bias)
    np.testing.assert_allclose(np.asarray(model.kernel.value), kernel - 0.1 * np.asarray(grads["kernel"].value), rtol=1e-6)


def test_multi_transform_with_a_label_function_by_filter():
    """Labels from filters: the paths ``nnx.state(model, filter)`` selects get that label."""
    x, y = _data()
    model = Scaled()
    frozen = {path for path, _ in nnx.state(model, nnx.PathContains("linear")).flat_state()}

    def label_fn(params):
        return nnx.State.from_flat_state([(p, "frozen" if p in frozen else "trained") for p, _ in params.flat_state()])

    tx = optax.multi_transform({"trained": optax.sgd(0.1), "frozen": optax.set_to_zero()}, label_fn)
    optimizer = nnx.Optimizer(model, tx, wrt=(nnx.Param, Scaled.Scale))
    kernel = np.asarray(model.linear.kernel.value)
    nnx.jit(lambda m, o: o.update(m, nnx.grad(_mse, argnums=nnx.DiffState(0, (nnx.Param, Scaled.Scale)))(m, x, y)))(
        model, optimizer
    )
    np.testing.assert_array_equal(np.asarray(model.linear.kernel.value), kernel)
    assert float(model.scale.value) != 1.0


def test_masked_freezes_the_unmasked_complement():
    x, y = _data()
    model = nnx.Linear(3, 1, rngs=nnx.Rngs(0))
    is_bias = nnx.State.from_flat_state([(p, p[-1] == "bias") for p, _ in nnx.state(model, nnx.Param).flat_state()])
    optimizer = nnx.Optimizer(model, optax.chain(optax.masked(optax.set_to_zero(), is_bias), optax.sgd(0.1)))
    bias, kernel = np.asarray(model.bias.value), np.asarray(model.kernel.value)
    optimizer.update(model, nnx.grad(_mse)(model, x, y))
    np.testing.assert_array_equal(np.asarray(model.bias.value), bias)
    assert not np.array_equal(np.asarray(model.kernel.value), kernel)


def test_multisteps_accumulates_gradients_for_k_steps():
    x, y = _data()
    model = nnx.Linear(3, 1, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.MultiSteps(optax.sgd(0.1), every_k_schedule=3))
    start = np.asarray(model.kernel.value)
    batches = [(x[i::3], y[i::3]) for i in range(3)]

    @nnx.jit
    def train_step(model, optimizer, x, y):
        optimizer.update(model, nnx.grad(_mse)(model, x, y))

    grads = [np.asarray(nnx.grad(_mse)(model, bx, by)["kernel"].value) for bx, by in batches]
    for i, (bx, by) in enumerate(batches):
        train_step(model, optimizer, bx, by)
        if i < 2:
            np.testing.assert_array_equal(np.asarray(model.kernel.value), start)
    np.testing.assert_allclose(np.asarray(model.kernel.value), start - 0.1 * np.mean(grads, axis=0), rtol=1e-5, atol=1e-6)
    assert int(optimizer.step.value) == 3


def test_moments_keep_the_parameter_metadata():
    model = nnx.Linear(3, 1, rngs=nnx.Rngs(0))
    model.kernel.set_metadata("sharding_names", ("in", "out"))
    optimizer = nnx.Optimizer(model, optax.adam(1e-2))
    mu = optimizer.opt_state[0].mu["kernel"]
    assert type(mu) is nnx.OptState and mu.sharding_names == ("in", "out")
    assert type(optimizer.opt_state[0].count) is nnx.OptState


def test_model_and_optimizer_updates_its_own_model():
    x, y = _data()
    model = nnx.Linear(3, 1, rngs=nnx.Rngs(0))
    state = nnx.ModelAndOptimizer(model, optax.sgd(0.1))
    assert state.model is model and isinstance(state, nnx.Optimizer)

    @nnx.jit
    def train_step(state, x, y):
        loss, grads = nnx.value_and_grad(_mse)(state.model, x, y)
        state.update(grads)
        return loss

    losses = [float(train_step(state, x, y)) for _ in range(5)]
    assert losses[-1] < losses[0] and int(state.step.value) == 5
    with pytest.raises(TypeError):
        state.update(model, nnx.grad(_mse)(model, x, y))


def test_opt_state_is_opt_state_variables_in_the_graph():
    model = nnx.Linear(3, 1, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(1e-2))
    opt_vars = jax.tree.leaves(optimizer.opt_state, is_leaf=lambda v: isinstance(v, nnx.Variable))
    assert len(jax.tree.leaves(nnx.state(optimizer, nnx.OptState))) == len(opt_vars) + 1


def test_same_parameters_as_flax_nnx_after_adam_steps():
    flax_nnx = pytest.importorskip("flax.nnx")
    x, y = _data()
    ours = nnx.Linear(3, 1, rngs=nnx.Rngs(0))
    theirs = flax_nnx.Linear(3, 1, rngs=flax_nnx.Rngs(0))
    theirs.kernel[...] = ours.kernel.value
    opt_ours = nnx.Optimizer(ours, optax.adamw(0.05), wrt=nnx.Param)
    opt_theirs = flax_nnx.Optimizer(theirs, optax.adamw(0.05), wrt=flax_nnx.Param)
    for _ in range(3):
        opt_ours.update(ours, nnx.grad(_mse)(ours, x, y))
        opt_theirs.update(theirs, flax_nnx.grad(_mse)(theirs, x, y))
    np.testing.assert_allclose(np.asarray(ours.kernel.value), np.asarray(theirs.kernel[...]), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(ours.bias.value), np.asarray(theirs.bias[...]), rtol=1e-6)
    assert int(opt_ours.step.value) == int(opt_theirs.step[...]) == 3
