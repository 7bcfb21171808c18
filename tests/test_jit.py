"""Tests for ``nnx.jit``: write-back, identity, RNG streams, caching and per-call cost."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import plait as nnx
from helpers import is_concrete

# -- helpers ---------------------------------------------------------------------------------


class Block(nnx.Module):
    def __init__(self, rngs: nnx.Rngs, rate: float = 0.5) -> None:
        self.linear = nnx.Linear(4, 4, rngs=rngs)
        self.dropout = nnx.Dropout(rate, rngs=rngs)

    def __call__(self, x):
        return self.dropout(self.linear(x))


class Seq(nnx.Module):
    def __init__(self, n: int, rngs: nnx.Rngs) -> None:
        self.layers = [nnx.Linear(3, 3, rngs=rngs) for _ in range(n)]

    def __call__(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


def count_of(rngs: nnx.Rngs, stream: str = "default") -> int:
    value = rngs[stream].count.value
    assert is_concrete(value), f"RNG count is not a concrete array: {value!r}"
    return int(value)


# -- write-back of values ----------------------------------------------------------------------


def test_decorator_writes_new_values_into_the_same_variables():
    model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    kernel_var, bias_var = model.kernel, model.bias
    kernel0 = model.kernel.value

    @nnx.jit
    def update(m, factor):
        m.kernel.value = m.kernel.value * factor
        m.bias.value = m.bias.value + 1.0

    assert update(model, 3.0) is None
    assert model.kernel is kernel_var and model.bias is bias_var
    assert is_concrete(model.kernel.value) and is_concrete(model.bias.value)
    np.testing.assert_allclose(model.kernel.value, kernel0 * 3.0, rtol=1e-6)
    np.testing.assert_array_equal(model.bias.value, np.ones(3))

    update(model, 2.0)  # second call: cached path, same write-back
    np.testing.assert_allclose(model.kernel.value, kernel0 * 6.0, rtol=1e-6)
    np.testing.assert_array_equal(model.bias.value, np.full(3, 2.0))
    assert model.kernel is kernel_var


def test_direct_call_form_matches_eager():
    model = nnx.Linear(3, 2, rngs=nnx.Rngs(1))
    x = jnp.arange(6.0).reshape(2, 3)

    def forward(m, x):
        return m(x) * 2.0

    jitted = nnx.jit(forward)
    np.testing.assert_allclose(jitted(model, x), forward(model, x), rtol=1e-6)
    np.testing.assert_allclose(nnx.jit(forward)(model, x), forward(model, x), rtol=1e-6)
    assert jitted.__name__ == "forward"


def test_variable_argument_is_written_back():
    counter = nnx.Variable(jnp.zeros(2))

    @nnx.jit
    def bump(v):
        v.value = v.value + 1.0

    bump(counter)
    bump(counter)
    np.testing.assert_array_equal(counter.value, [2.0, 2.0])


def test_exception_inside_leaves_callers_objects_untouched():
    model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    bias0 = model.bias.value

    @nnx.jit
    def bad(m):
        m.bias.value = m.bias.value + 1.0
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        bad(model)
    np.testing.assert_array_equal(model.bias.value, bias0)
    assert is_concrete(model.bias.value)


# -- RNG streams -------------------------------------------------------------------------------


def test_rng_count_advances_outside_and_masks_differ_between_calls():
    rngs = nnx.Rngs(0)
    dropout = nnx.Dropout(0.5, rngs=rngs)
    x = jnp.ones(64)

    @nnx.jit
    def apply(d, x):
        return d(x)

    assert count_of(rngs) == 0
    y1 = apply(dropout, x)
    assert count_of(rngs) == 1
    y2 = apply(dropout, x)
    assert count_of(rngs) == 2

    assert set(np.unique(np.asarray(y1)).tolist()) <= {0.0, 2.0}
    assert bool((y1 != y2).any()), "two jitted dropout calls gave the same mask"

    # Same keys as eager execution from the same seed: jit changes nothing about the draws.
    eager = nnx.Dropout(0.5, rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(y1, eager(x))
    np.testing.assert_array_equal(y2, eager(x))


def test_rngs_passed_as_separate_argument_advance():
    rngs = nnx.Rngs(3)
    dropout = nnx.Dropout(0.5)  # no rngs of its own

    @nnx.jit
    def apply(d, x, rngs):
        return d(x, rngs=rngs)

    a = apply(dropout, jnp.ones(32), rngs)
    b = apply(dropout, jnp.ones(32), rngs)
    assert count_of(rngs) == 2
    assert bool((a != b).any())


# -- containers and keyword arguments ----------------------------------------------------------


def test_modules_in_tuples_lists_dicts_and_kwargs_are_written_back():
    mods = [nnx.Linear(2, 2, rngs=nnx.Rngs(i)) for i in range(5)]
    bias_vars = [m.bias for m in mods]

    @nnx.jit
    def bump(pair, lst, d, *, kw):
        pair[0].bias.value = pair[0].bias.value + 1.0
        pair[1].bias.value = pair[1].bias.value + 2.0
        lst[0].bias.value = lst[0].bias.value + 3.0
        d["inner"]["m"].bias.value = d["inner"]["m"].bias.value + 4.0
        kw.bias.value = kw.bias.value + 5.0

    for _ in range(2):
        bump((mods[0], mods[1]), [mods[2]], {"inner": {"m": mods[3]}}, kw=mods[4])

    for i, m in enumerate(mods):
        assert m.bias is bias_vars[i]
        np.testing.assert_array_equal(m.bias.value, np.full(2, 2.0 * (i + 1)))


def test_same_module_in_two_arguments_is_one_object_inside():
    model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))

    identical = []

    @nnx.jit
    def f(a, b):
        identical.append(a is b)
        a.bias.value = a.bias.value + 1.0
        return b.bias.value

    seen_by_b = f(model, model)
    assert identical == [True]
    np.testing.assert_array_equal(seen_by_b, np.ones(2))
    np.testing.assert_array_equal(model.bias.value, np.ones(2))


def test_tied_variable_stays_tied():
    class Tied(nnx.Module):
        def __init__(self):
            self.w = nnx.Param(jnp.ones(2))
            self.alias = self.w

    t = Tied()

    @nnx.jit
    def bump(t):
        t.alias.value = t.alias.value + 1.0
        return t.w.value

    seen = bump(t)
    np.testing.assert_array_equal(seen, [2.0, 2.0])
    assert t.w is t.alias
    np.testing.assert_array_equal(t.w.value, [2.0, 2.0])


# -- identity of outputs -----------------------------------------------------------------------


def test_returned_input_module_is_the_same_object():
    model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    other = nnx.Linear(2, 2, rngs=nnx.Rngs(1))
    x = jnp.ones((1, 2))

    out = nnx.jit(lambda m: m)(model)
    assert out is model

    out, y = nnx.jit(lambda m, x: (m, m(x)))(model, x)
    assert out is model
    np.testing.assert_allclose(y, model(x), rtol=1e-6)

    swapped = nnx.jit(lambda a, b: {"first": b, "second": a})(model, other)
    assert swapped["first"] is other and swapped["second"] is model


def test_returned_input_variable_is_the_same_object():
    model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    out = nnx.jit(lambda m: m.kernel)(model)
    assert out is model.kernel


def test_module_built_inside_refers_to_callers_objects():
    rngs = nnx.Rngs(0)

    @nnx.jit
    def make(rngs):
        return nnx.Dropout(0.5, rngs=rngs)

    out = make(rngs)
    assert isinstance(out, nnx.Dropout)
    assert out.rngs is rngs
    # It draws from the caller's stream afterwards.
    out(jnp.ones(4))
    assert count_of(rngs) == 1


def test_module_built_inside_wrapping_an_input_module():
    class Wrapper(nnx.Module):
        def __init__(self, inner, rngs):
            self.inner = inner
            self.head = nnx.Linear(2, 1, rngs=rngs)

    model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    rngs = nnx.Rngs(7)
    out = nnx.jit(lambda m, r: Wrapper(m, r))(model, rngs)
    assert out.inner is model
    assert is_concrete(out.head.kernel.value) and out.head.kernel.value.shape == (2, 1)
    assert count_of(rngs) == 2  # kernel and bias each drew one key
    # Same parameters as building it eagerly from the same seed.
    eager = Wrapper(model, nnx.Rngs(7))
    np.testing.assert_array_equal(out.head.kernel.value, eager.head.kernel.value)


# -- structural changes ------------------------------------------------------------------------


def test_new_variable_attribute_propagates_to_caller():
    model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    kernel_var = model.kernel

    @nnx.jit
    def add_extra(m, x):
        m.extra = nnx.Variable(x * 2.0)

    add_extra(model, jnp.arange(3.0))
    assert isinstance(model.extra, nnx.Variable)
    assert is_concrete(model.extra.value)
    np.testing.assert_array_equal(model.extra.value, [0.0, 2.0, 4.0])
    assert model.kernel is kernel_var

    # The new structure is seen by later jitted calls.
    total = nnx.jit(lambda m: m.extra.value.sum())(model)
    assert float(total) == 6.0

    add_extra(model, jnp.ones(3))
    np.testing.assert_array_equal(model.extra.value, [2.0, 2.0, 2.0])


def test_removed_attribute_and_new_submodule_propagate():
    model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    model.extra = nnx.Variable(jnp.ones(2))
    rngs = nnx.Rngs(1)

    @nnx.jit
    def restructure(m, rngs):
        del m.extra
        m.sub = nnx.Linear(2, 3, rngs=rngs)

    restructure(model, rngs)
    assert not hasattr(model, "extra")
    assert isinstance(model.sub, nnx.Linear)
    assert is_concrete(model.sub.kernel.value) and model.sub.kernel.value.shape == (2, 3)
    assert model.sub.in_features == 2 and model.sub.out_features == 3
    assert count_of(rngs) == 2


# -- shared objects across arguments -----------------------------------------------------------


@pytest.mark.parametrize("optimizer_first", [False, True])
def test_optimizer_and_model_stay_consistent(optimizer_first):
    model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.sgd(0.1))
    x = jnp.arange(8.0).reshape(4, 2)
    kernel_var = model.kernel

    def loss_fn(m):
        return ((m(x) - 1.0) ** 2).mean()

    expected_loss = loss_fn(model)
    expected_grads = nnx.grad(loss_fn)(model)
    expected_kernel = model.kernel.value - 0.1 * expected_grads.kernel.value
    expected_bias = model.bias.value - 0.1 * expected_grads.bias.value

    def step(model, optimizer):
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(grads)
        return loss

    if optimizer_first:
        jitted = nnx.jit(lambda o, m: step(m, o))
        loss = jitted(optimizer, model)
    else:
        loss = nnx.jit(step)(model, optimizer)

    np.testing.assert_allclose(loss, expected_loss, rtol=1e-5)
    assert optimizer.model is model
    assert model.kernel is kernel_var
    np.testing.assert_allclose(model.kernel.value, expected_kernel, rtol=1e-5)
    np.testing.assert_allclose(model.bias.value, expected_bias, rtol=1e-5)
    np.testing.assert_allclose(optimizer.model.kernel.value, expected_kernel, rtol=1e-5)
    assert int(optimizer.step.value) == 1


# -- static and donated arguments --------------------------------------------------------------


def test_static_argnums_retrace_per_value():
    model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    x = jnp.ones((1, 2))
    traces = []

    @nnx.jit(static_argnums=(1, 2))
    def f(m, double, n_times, x):
        traces.append((double, n_times))
        y = m(x)
        for _ in range(n_times):  # Python control flow on a static int
            y = y + 1.0
        return y * 2.0 if double else y

    base = model(x)
    np.testing.assert_allclose(f(model, True, 2, x), (base + 2.0) * 2.0, rtol=1e-6)
    np.testing.assert_allclose(f(model, False, 2, x), base + 2.0, rtol=1e-6)
    np.testing.assert_allclose(f(model, True, 2, x), (base + 2.0) * 2.0, rtol=1e-6)
    np.testing.assert_allclose(f(model, False, 0, x), base, rtol=1e-6)
    assert traces == [(True, 2), (False, 2), (False, 0)]


def test_static_argnames_retrace_per_value():
    model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    x = jnp.ones((1, 2))
    traces = []

    @nnx.jit(static_argnames="train")
    def f(m, x, train=False):
        traces.append(train)
        return m(x) + (10.0 if train else 0.0)

    base = model(x)
    np.testing.assert_allclose(f(model, x, train=True), base + 10.0, rtol=1e-6)
    np.testing.assert_allclose(f(model, x, train=False), base, rtol=1e-6)
    np.testing.assert_allclose(f(model, x, train=True), base + 10.0, rtol=1e-6)
    assert traces == [True, False]


def test_static_argnames_applies_to_positional_argument():
    model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    x = jnp.ones((1, 2))

    @nnx.jit(static_argnames="train")
    def f(m, x, train=False):
        return m(x) + (10.0 if train else 0.0)

    np.testing.assert_allclose(f(model, x, True), model(x) + 10.0, rtol=1e-6)


def test_static_argnums_applies_to_keyword_argument():
    model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    x = jnp.ones((1, 2))

    @nnx.jit(static_argnums=2)
    def f(m, x, train=False):
        return m(x) + (10.0 if train else 0.0)

    np.testing.assert_allclose(f(model, x, train=True), model(x) + 10.0, rtol=1e-6)


def test_static_argnums_out_of_range_error():
    model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    with pytest.raises(nnx.TransformError, match=r"static_argnums has 5.*1 positional argument"):
        nnx.jit(lambda m: m, static_argnums=5)(model)


def test_jit_rejects_non_callable():
    with pytest.raises(nnx.TransformError, match="jit expects a function, got a int"):
        nnx.jit(3)


def test_donated_module_is_usable_with_new_values():
    model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    kernel0 = np.asarray(model.kernel.value)
    bias0 = np.asarray(model.bias.value)
    x = jnp.ones((1, 2))

    @nnx.jit(donate_argnums=0)
    def step(m, x):
        m.kernel.value = m.kernel.value + 1.0  # bias is donated but not written
        return m(x)

    y = step(model, x)
    np.testing.assert_allclose(y, x @ (kernel0 + 1.0) + bias0, rtol=1e-6)
    y = step(model, x)
    np.testing.assert_allclose(model.kernel.value, kernel0 + 2.0, rtol=1e-6)
    np.testing.assert_array_equal(model.bias.value, bias0)
    # Eager use after donation reads live buffers.
    np.testing.assert_allclose(model(x), x @ (kernel0 + 2.0) + bias0, rtol=1e-6)
    np.testing.assert_allclose(y, model(x), rtol=1e-6)


# -- compilation cache -------------------------------------------------------------------------


def test_same_module_and_shapes_trace_once():
    model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    traces = []

    @nnx.jit
    def f(m, x):
        traces.append(x.shape)
        return m(x)

    x = jnp.ones((4, 3))
    for _ in range(3):
        np.testing.assert_allclose(f(model, x), model(x), rtol=1e-6)
    assert len(traces) == 1
    f(model, jnp.ones((5, 3)))  # new shape: new trace
    assert len(traces) == 2
    f(model, x)
    assert len(traces) == 2


def test_outside_writes_are_seen_by_cached_calls():
    model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    x = jnp.ones((1, 2))
    f = nnx.jit(lambda m, x: m(x))
    f(model, x)
    f(model, x)

    model.kernel.value = jnp.zeros((2, 2))
    np.testing.assert_array_equal(f(model, x), model.bias.value[None])

    model.bias = nnx.Param(jnp.full((2,), 5.0))  # a new Variable object
    np.testing.assert_array_equal(f(model, x), [[5.0, 5.0]])

    nnx.update(model, nnx.State({"bias": jnp.full((2,), -1.0)}))
    np.testing.assert_array_equal(f(model, x), [[-1.0, -1.0]])


def test_eval_retraces_and_turns_dropout_off():
    rngs = nnx.Rngs(0)
    model = Block(rngs)
    x = jnp.ones((2, 4))
    traces = []

    @nnx.jit
    def f(m, x):
        traces.append(m.dropout.deterministic)
        return m(x)

    y_train = f(model, x)
    assert traces == [False]
    assert bool((y_train == 0).any())
    assert count_of(rngs, "dropout") == 3  # 2 draws for Linear init, 1 for the mask

    model.eval()
    y_eval = f(model, x)
    assert traces == [False, True]
    np.testing.assert_allclose(y_eval, model.linear(x), rtol=1e-6)
    assert count_of(rngs, "dropout") == 3  # no draw in eval mode

    model.train()
    y_train2 = f(model, x)
    assert traces == [False, True]  # back to the first structure: cached trace
    assert count_of(rngs, "dropout") == 4
    assert bool((y_train2 != y_train).any())


def test_appending_a_layer_retraces_with_correct_result():
    model = Seq(1, nnx.Rngs(0))
    x = jnp.ones((2, 3))
    traces = []

    @nnx.jit
    def f(m, x):
        traces.append(len(m.layers))
        return m(x)

    np.testing.assert_allclose(f(model, x), model(x), rtol=1e-6)
    model.layers.append(nnx.Linear(3, 3, rngs=nnx.Rngs(5)))
    expected = model.layers[1](model.layers[0](x))
    np.testing.assert_allclose(f(model, x), expected, rtol=1e-6)
    assert traces == [1, 2]

    model.layers.pop()
    np.testing.assert_allclose(f(model, x), model.layers[0](x), rtol=1e-6)
    assert traces == [1, 2]  # the one-layer structure was compiled already


def test_list_inside_namedtuple_attribute_change_is_seen():
    class Holder(NamedTuple):
        params: list

    class M(nnx.Module):
        def __init__(self):
            self.holder = Holder([nnx.Param(jnp.ones(()))])

    m = M()
    f = nnx.jit(lambda m: sum(p.value for p in m.holder.params))
    assert float(f(m)) == 1.0
    m.holder.params.append(nnx.Param(jnp.full((), 10.0)))
    assert float(f(m)) == 11.0


def test_other_object_of_same_structure_reuses_trace_and_gets_its_own_writes():
    traces = []

    @nnx.jit
    def step(m, x):
        traces.append(1)
        m.linear.bias.value = m.linear.bias.value + 1.0
        return m(x)

    rngs_a, rngs_b = nnx.Rngs(0), nnx.Rngs(1)
    a, b = Block(rngs_a), Block(rngs_b)
    x = jnp.ones((1, 4))
    step(a, x)
    step(b, x)
    step(b, x)
    step(a, x)
    step(b, x)
    assert len(traces) == 1
    np.testing.assert_array_equal(a.linear.bias.value, np.full(4, 2.0))
    np.testing.assert_array_equal(b.linear.bias.value, np.full(4, 3.0))
    assert count_of(rngs_a) == 2 + 2
    assert count_of(rngs_b) == 2 + 3


# -- methods -----------------------------------------------------------------------------------


def test_jit_as_method_decorator():
    traces = []

    class Acc(nnx.Module):
        def __init__(self):
            self.total = nnx.Variable(jnp.zeros(()))

        @nnx.jit
        def add(self, x):
            traces.append(1)
            self.total.value = self.total.value + x
            return self.total.value * 2.0

    acc = Acc()
    assert float(acc.add(jnp.float32(1.0))) == 2.0
    assert float(acc.add(jnp.float32(2.0))) == 6.0
    assert float(acc.total.value) == 3.0
    assert len(traces) == 1

    other = Acc()
    other.add(jnp.float32(5.0))
    assert float(other.total.value) == 5.0 and float(acc.total.value) == 3.0


def test_jit_of_bound_method():
    rngs = nnx.Rngs(0)
    model = Block(rngs)
    x = jnp.ones((2, 4))
    f = nnx.jit(model.__call__)

    f(x)
    assert count_of(rngs) == 3  # the draw made inside is written back as a concrete count

    model.eval()
    model.linear.kernel.value = jnp.zeros((4, 4))
    np.testing.assert_allclose(f(x), jnp.broadcast_to(model.linear.bias.value, (2, 4)))


def test_nested_jit():
    model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))

    @nnx.jit
    def inner(m):
        m.bias.value = m.bias.value + 1.0

    @nnx.jit
    def outer(m):
        inner(m)
        inner(m)
        return m.bias.value

    np.testing.assert_array_equal(outer(model), [2.0, 2.0])
    np.testing.assert_array_equal(model.bias.value, [2.0, 2.0])


# -- Python cost per call ----------------------------------------------------------------------


class MLP(nnx.Module):
    def __init__(self, n_layers: int, rngs: nnx.Rngs) -> None:
        self.layers = [nnx.Linear(8, 8, rngs=rngs) for _ in range(n_layers)]
        self.dropout = nnx.Dropout(0.1, rngs=rngs)

    def __call__(self, x):
        for layer in self.layers:
            x = self.dropout(jax.nn.relu(layer(x)))
        return x


