"""More transforms: remat, cond/switch, while/fori loops, eval_shape, vjp/jvp, custom_vjp,
the functional ``call``, ``cached_partial``, jit's ``lower``/``trace``/``eval_shape``/donation,
and (in one subprocess with 4 host devices) pmap, shard_map and jit shardings."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import plait as nnx
from helpers import Holder, Net, dropout_count, is_concrete, multi_device_fixtures, raises

# -- helpers ---------------------------------------------------------------------------------


X = jnp.array([[1.0, -2.0, 0.5], [0.3, 0.2, -1.0]])


# -- remat / checkpoint ------------------------------------------------------------------------


def tanh_loss(m, x):
    return (jnp.tanh(m(x)) ** 2).sum()


@pytest.mark.parametrize(
    "wrap",
    [
        lambda f: nnx.remat(f),
        lambda f: nnx.checkpoint(prevent_cse=False, policy=jax.checkpoint_policies.nothing_saveable)(f),
    ],
    ids=["remat", "checkpoint-decorator-policy-prevent_cse"],
)
def test_remat_gives_same_value_and_grads_as_without(wrap):
    model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    value, grads = nnx.value_and_grad(tanh_loss)(model, X)
    value_r, grads_r = nnx.value_and_grad(lambda m, x: wrap(tanh_loss)(m, x))(model, X)
    np.testing.assert_allclose(value_r, value, rtol=1e-6)
    np.testing.assert_allclose(grads_r.kernel.value, grads.kernel.value, rtol=1e-6)
    np.testing.assert_allclose(grads_r.bias.value, grads.bias.value, rtol=1e-6)
    assert isinstance(grads_r, nnx.State)


def test_remat_writes_state_back_also_under_grad():
    net = Net()
    y = nnx.remat(lambda m, x: m(x))(net, X)
    assert y.shape == (2, 2)
    assert int(net.calls.value) == 1 and dropout_count(net) == 1

    grads = nnx.grad(lambda m, x: nnx.checkpoint(lambda m, x: m(x).sum())(m, x))(net, X)
    assert int(net.calls.value) == 2 and dropout_count(net) == 2
    assert is_concrete(net.calls.value)
    assert grads.lin.kernel.value.shape == (3, 2)


def test_remat_returns_input_module_as_same_object():
    h = Holder(jnp.zeros(2))

    def bump(m):
        m.v.value = m.v.value + 1.0
        return m

    assert nnx.remat(bump)(h) is h
    np.testing.assert_array_equal(h.v.value, [1.0, 1.0])


# -- cond / switch -----------------------------------------------------------------------------


def plus_one(m, x):
    m.v.value = m.v.value + x
    return m, x * 2


def times_ten(m, x):
    m.v.value = m.v.value * 10
    return m, x * 3


@pytest.mark.parametrize("pred, expected_v, expected_y", [(True, 3.0, 4.0), (False, 10.0, 6.0)])
def test_cond_takes_one_branch_and_writes_back_only_its_writes(pred, expected_v, expected_y):
    h = Holder(jnp.float32(1.0))
    out, y = nnx.cond(pred, plus_one, times_ten, h, jnp.float32(2.0))
    assert out is h
    assert float(h.v.value) == expected_v
    assert float(y) == expected_y
    assert is_concrete(h.v.value)


def test_cond_with_traced_predicate_inside_jit():
    h = Holder(jnp.float32(0.0))

    @nnx.jit
    def step(m, p):
        nnx.cond(p > 0, lambda m: plus_one(m, 1.0), lambda m: times_ten(m, 1.0), m)

    step(h, 1.0)
    step(h, 1.0)
    assert float(h.v.value) == 2.0
    step(h, -1.0)
    assert float(h.v.value) == 20.0


def test_cond_dropout_in_taken_branch_advances_rng_count():
    drop = nnx.Dropout(0.5, rngs=nnx.Rngs(dropout=0))
    x = jnp.ones(16)

    y = nnx.cond(True, lambda d, x: d(x), lambda d, x: x, drop, x)
    assert int(drop.rngs.dropout.count.value) == 1
    assert set(np.asarray(y).tolist()) == {0.0, 2.0}  # dropout ran
    expected_mask = y

    y = nnx.cond(False, lambda d, x: d(x), lambda d, x: x, drop, x)
    assert int(drop.rngs.dropout.count.value) == 1  # the branch that draws did not run
    np.testing.assert_array_equal(y, x)

    y2 = nnx.cond(True, lambda d, x: d(x), lambda d, x: x, drop, x)
    assert int(drop.rngs.dropout.count.value) == 2
    assert not np.array_equal(y2, expected_mask)  # a new key, a new mask


def test_switch_runs_indexed_branch_and_clamps_like_lax_switch():
    def add(v):
        v.value = v.value + 1

    def scale(v):
        v.value = v.value * 10

    def negate(v):
        v.value = -v.value

    v = nnx.Variable(jnp.float32(1.0))
    nnx.switch(1, [add, scale, negate], v)
    assert float(v.value) == 10.0
    nnx.switch(0, [add, scale, negate], v)
    assert float(v.value) == 11.0
    nnx.switch(7, [add, scale, negate], v)  # clamped to the last branch
    assert float(v.value) == -11.0
    nnx.switch(-4, [add, scale, negate], v)  # clamped to the first
    assert float(v.value) == -10.0


def _add_attribute(m):
    m.extra = nnx.BatchStat(jnp.ones(()))


def _remove_attribute(m):
    del m.v


def _retype_variable(m):
    m.v = nnx.Param(m.v.value)


@pytest.mark.parametrize("branch", [_add_attribute, _remove_attribute, _retype_variable],
                         ids=["adds-variable", "removes-variable", "changes-variable-type"])
@pytest.mark.parametrize("transform", ["cond", "switch"])
def test_branches_leaving_different_structure_raise_transform_error(branch, transform):
    h = Holder(jnp.float32(1.0))
    v_before = h.v
    if transform == "cond":
        call = lambda: nnx.cond(True, branch, lambda m: None, h)  # noqa: E731
    else:
        call = lambda: nnx.switch(0, [lambda m: None, branch], h)  # noqa: E731
    raises(nnx.TransformError, call, transform, "structure")
    # nothing of the refused call reached the caller's module
    assert h.v is v_before and type(h.v) is nnx.BatchStat
    assert not hasattr(h, "extra")
    assert float(h.v.value) == 1.0


def test_branches_returning_different_shapes_raise_transform_error():
    h = Holder(jnp.float32(1.0))
    raises(nnx.TransformError, lambda: nnx.cond(True, lambda m: jnp.ones(2), lambda m: jnp.ones(3), h), "cond")


def test_branch_changing_a_variable_dtype_is_a_transform_error():
    h = Holder(jnp.float32(1.0))

    def to_int(m):
        m.v.value = jnp.ones((), jnp.int32)

    raises(nnx.TransformError, lambda: nnx.cond(True, to_int, lambda m: None, h), "cond")
    assert h.v.value.dtype == jnp.float32


def test_branch_changing_a_variable_dtype_error_names_the_variable():
    h = Holder(jnp.float32(1.0))

    def to_int(m):
        m.v.value = jnp.ones((), jnp.int32)

    raises(nnx.TransformError, lambda: nnx.cond(True, to_int, lambda m: None, h), "`m.v`")


# -- while_loop / fori_loop --------------------------------------------------------------------


def test_while_loop_updates_module_in_place_and_returns_it():
    h = Holder(jnp.float32(1.0))
    v_var = h.v

    def double(m):
        m.v.value = m.v.value * 2
        return m

    out = nnx.while_loop(lambda m: m.v.value < 20, double, h)
    assert out is h and h.v is v_var
    assert float(h.v.value) == 32.0
    assert is_concrete(h.v.value)


def test_fori_loop_tuple_value_with_module_and_dropout():
    drop = nnx.Dropout(0.5, rngs=nnx.Rngs(dropout=0))
    h = Holder(jnp.float32(0.0))

    def body(i, val):
        d, m, acc = val
        m.v.value = m.v.value + i
        return d, m, acc + d(jnp.ones(8))

    d_out, m_out, acc = nnx.fori_loop(0, 4, body, (drop, h, jnp.zeros(8)))
    assert d_out is drop and m_out is h
    assert float(h.v.value) == 0 + 1 + 2 + 3
    assert int(drop.rngs.dropout.count.value) == 4  # one draw per iteration, written back
    # each iteration drew its own key: the sum of 4 masks is not 4 copies of one mask
    ref = nnx.Dropout(0.5, rngs=nnx.Rngs(dropout=0))
    expected = sum(np.asarray(ref(jnp.ones(8))) for _ in range(4))
    np.testing.assert_allclose(acc, expected)


def test_fori_loop_unroll_gives_same_result():
    h1, h2 = Holder(jnp.float32(1.0)), Holder(jnp.float32(1.0))

    def body(i, m):
        m.v.value = m.v.value * 1.5 + i
        return m

    nnx.fori_loop(0, 5, body, h1)
    nnx.fori_loop(0, 5, body, h2, unroll=2)
    np.testing.assert_allclose(h1.v.value, h2.v.value)


def _to_int(m):
    m.v.value = m.v.value.astype(jnp.int32)
    return m


def _to_vector(m):
    m.v.value = jnp.zeros(2) + m.v.value
    return m


@pytest.mark.parametrize("body, what", [(_to_int, "int32"), (_to_vector, "(2,)")], ids=["dtype", "shape"])
def test_while_loop_body_changing_variable_type_names_it(body, what):
    h = Holder(jnp.float32(1.0))

    def loop_body(h):
        return body(h)

    msg = raises(nnx.TransformError, lambda: nnx.while_loop(lambda h: h.v.value < 3, loop_body, h),
                 "while_loop", "`h.v`", what, "float32")
    assert "()" in msg
    assert float(h.v.value) == 1.0 and h.v.value.dtype == jnp.float32


@pytest.mark.parametrize("body", [_to_int, _to_vector], ids=["dtype", "shape"])
def test_fori_loop_body_changing_variable_type_names_it(body):
    h = Holder(jnp.float32(1.0))

    def loop_body(i, h):
        return body(h)

    raises(nnx.TransformError, lambda: nnx.fori_loop(0, 3, loop_body, h), "fori_loop", "`h.v`")


@pytest.mark.parametrize("loop", ["while_loop", "fori_loop"])
def test_loop_body_changing_structure_is_transform_error(loop):
    h = Holder(jnp.float32(1.0))

    def grow(m):
        m.w = nnx.Param(jnp.ones(()))
        return m

    if loop == "while_loop":
        call = lambda: nnx.while_loop(lambda m: m.v.value < 3, grow, h)  # noqa: E731
    else:
        call = lambda: nnx.fori_loop(0, 3, lambda i, m: grow(m), h)  # noqa: E731
    raises(nnx.TransformError, call, loop, "structure")
    assert not hasattr(h, "w")
    assert float(h.v.value) == 1.0


def test_while_loop_cond_fun_writing_state_is_state_error():
    h = Holder(jnp.float32(0.0))

    def cond_fun(m):
        m.v.value = m.v.value + 1
        return m.v.value < 3

    def body(m):
        return m

    raises(nnx.StateError, lambda: nnx.while_loop(cond_fun, body, h), "cond_fun")
    assert float(h.v.value) == 0.0 and is_concrete(h.v.value)


# -- eval_shape --------------------------------------------------------------------------------


def test_eval_shape_gives_abstract_module_and_leaves_caller_untouched():
    h = Holder(jnp.zeros(3))
    before = h.v.value

    def build(m):
        m.v.value = m.v.value + 1  # nothing runs, so this is not written back
        return nnx.Linear(3, 4, rngs=nnx.Rngs(0)), m.v.value * 2

    model, y = nnx.eval_shape(build, h)
    assert isinstance(model, nnx.Linear)
    assert model.kernel.value == jax.ShapeDtypeStruct((3, 4), jnp.float32)
    assert model.bias.value == jax.ShapeDtypeStruct((4,), jnp.float32)
    assert isinstance(model.kernel, nnx.Param)
    assert y == jax.ShapeDtypeStruct((3,), jnp.float32)
    assert h.v.value is before and is_concrete(h.v.value)
    np.testing.assert_array_equal(h.v.value, np.zeros(3))


def test_eval_shape_of_input_module_is_a_new_abstract_copy():
    h = Holder(jnp.zeros((2, 5), jnp.int32))
    out = nnx.eval_shape(lambda m: m, h)
    assert out is not h
    assert out.v.value == jax.ShapeDtypeStruct((2, 5), jnp.int32)
    assert is_concrete(h.v.value)


# -- vjp / jvp ---------------------------------------------------------------------------------


def raw_sin_linear(kernel, bias, x):
    return jnp.sin(x @ kernel + bias)


def test_vjp_matches_jax_vjp_of_the_same_maths():
    model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    x = jnp.array([0.5, -1.0, 2.0])
    ct = jnp.array([1.0, -2.0])

    y, vjp_fn = nnx.vjp(lambda m, x: jnp.sin(m(x)), model, x)
    g_model, g_x = vjp_fn(ct)

    y_raw, raw_fn = jax.vjp(raw_sin_linear, model.kernel.value, model.bias.value, x)
    g_kernel, g_bias, g_x_raw = raw_fn(ct)
    np.testing.assert_allclose(y, y_raw, rtol=1e-6)
    assert isinstance(g_model, nnx.State)
    assert sorted(p for p, _ in g_model.flat_state()) == [("bias",), ("kernel",)]
    assert isinstance(g_model.kernel, nnx.Param)
    np.testing.assert_allclose(g_model.kernel.value, g_kernel, rtol=1e-6)
    np.testing.assert_allclose(g_model.bias.value, g_bias, rtol=1e-6)
    np.testing.assert_allclose(g_x, g_x_raw, rtol=1e-6)


def test_vjp_has_aux_and_writes_state_back():
    net = Net(rate=0.0)
    y, vjp_fn, aux = nnx.vjp(lambda m, x: (m(x), m.calls.value), net, X, has_aux=True)
    assert int(net.calls.value) == 1
    assert int(aux) == 1
    g_net, g_x = vjp_fn(jnp.ones_like(y))
    assert g_net.lin.kernel.value.shape == (3, 2)
    assert ("calls",) not in [p for p, _ in g_net.flat_state()]  # only Params are differentiated
    assert g_x.shape == X.shape


def test_jvp_matches_jax_jvp_of_the_same_maths():
    model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    x = jnp.array([0.5, -1.0, 2.0])
    t_kernel = jnp.arange(6.0).reshape(3, 2) / 6
    t_bias = jnp.array([0.5, -0.5])
    t_x = jnp.array([1.0, 0.0, -1.0])
    tangent = nnx.State({"kernel": nnx.Param(t_kernel), "bias": nnx.Param(t_bias)})

    y, t_out = nnx.jvp(lambda m, x: jnp.sin(m(x)), (model, x), (tangent, t_x))
    y_raw, t_raw = jax.jvp(raw_sin_linear, (model.kernel.value, model.bias.value, x), (t_kernel, t_bias, t_x))
    np.testing.assert_allclose(y, y_raw, rtol=1e-6)
    np.testing.assert_allclose(t_out, t_raw, rtol=1e-6)

    # a path missing from the module's tangent counts as zero
    only_kernel = nnx.State({"kernel": nnx.Param(t_kernel)})
    _, t_out2 = nnx.jvp(lambda m, x: jnp.sin(m(x)), (model, x), (only_kernel, t_x))
    _, t_raw2 = jax.jvp(raw_sin_linear, (model.kernel.value, model.bias.value, x),
                        (t_kernel, jnp.zeros(2), t_x))
    np.testing.assert_allclose(t_out2, t_raw2, rtol=1e-6)


def test_jvp_writes_state_back():
    net = Net(rate=0.0)
    tangent = jax.tree.map(jnp.ones_like, nnx.state(net, nnx.Param))
    y, t = nnx.jvp(lambda m: m(X).sum(), (net,), (tangent,))
    assert int(net.calls.value) == 1
    assert y.shape == () and t.shape == ()


# -- custom_vjp --------------------------------------------------------------------------------


def make_custom(kernel_grad: float, x_grad: float):
    @nnx.custom_vjp
    def f(m, x):
        return (m.kernel.value.sum(0) * x).sum()

    def fwd(m, x):
        return f(m, x), (m.kernel.value, x)

    def bwd(res, g):
        _, g = g  # (input_updates_g, out_g), as in the reference
        kernel, x = res
        return nnx.State({"kernel": jnp.full_like(kernel, kernel_grad) * g}), jnp.full_like(x, x_grad) * g

    f.defvjp(fwd, bwd)
    return f


def test_custom_vjp_uses_the_custom_backward():
    model = nnx.Linear(2, 2, use_bias=False, rngs=nnx.Rngs(0))
    x = jnp.array([1.0, 2.0])
    f = make_custom(7.0, 3.0)
    # forward value is the function's
    np.testing.assert_allclose(f(model, x), (model.kernel.value.sum(0) * x).sum(), rtol=1e-6)
    # gradients are bwd's, not the true derivative (which would be x per column)
    g_model, g_x = nnx.grad(lambda m, x: 2.0 * f(m, x), argnums=(0, 1))(model, x)
    np.testing.assert_array_equal(g_model.kernel.value, np.full((2, 2), 14.0))
    np.testing.assert_array_equal(g_x, [6.0, 6.0])
    assert isinstance(g_model, nnx.State)


class WithCount(nnx.Module):
    def __init__(self):
        self.w = nnx.Param(jnp.ones(2))
        self.n = nnx.BatchStat(jnp.zeros(()))


def _writes_in_primal():
    @nnx.custom_vjp
    def f(m, x):
        m.n.value = m.n.value + 1
        return (m.w.value * x).sum()

    f.defvjp(lambda m, x: (f(m, x), None), lambda res, g: (None, g[1] * jnp.ones(2)))
    return f


def _writes_in_fwd():
    @nnx.custom_vjp
    def f(m, x):
        return (m.w.value * x).sum()

    def fwd(m, x):
        m.n.value = m.n.value + 1
        return f(m, x), None

    f.defvjp(fwd, lambda res, g: (None, g[1] * jnp.ones(2)))
    return f


@pytest.mark.parametrize("make, under_grad", [
    (_writes_in_primal, False), (_writes_in_primal, True), (_writes_in_fwd, True),  # fwd runs only under grad
], ids=["primal", "primal-under-grad", "fwd-under-grad"])
def test_custom_vjp_writes_are_written_back(make, under_grad):
    m = WithCount()
    f = make()
    if under_grad:
        grads = nnx.grad(lambda m, x: f(m, x))(m, jnp.ones(2))
        assert grads is not None
    else:
        f(m, jnp.ones(2))
    assert float(m.n.value) == 1.0 and is_concrete(m.n.value)


def test_custom_vjp_bwd_gets_the_cotangents_of_updated_state():
    seen = {}
    m = WithCount()

    def bwd(res, g):
        input_updates_g, out_g = g
        seen["updates"] = input_updates_g
        return None, out_g * jnp.ones(2)

    f = _writes_in_primal()
    f.defvjp(lambda m, x: (f(m, x), None), bwd)
    nnx.grad(lambda x: f(m, x))(jnp.ones(2))
    (m_updates, x_updates) = seen["updates"]
    assert isinstance(m_updates, nnx.State) and x_updates is None
    assert sorted(m_updates) == ["n", "w"]


def test_custom_vjp_nondiff_argnums():
    seen = []

    def power_sum(power, m, x):
        return (m.kernel.value ** power * x).sum()

    f = nnx.custom_vjp(power_sum, nondiff_argnums=(0,))

    def fwd(power, m, x):
        return f(power, m, x), (m.kernel.value, x)

    def bwd(power, res, g):
        _, g = g
        seen.append(power)
        kernel, x = res
        return nnx.State({"kernel": jnp.full_like(kernel, float(power)) * g}), jnp.zeros_like(x)

    f.defvjp(fwd, bwd)
    model = nnx.Linear(2, 2, use_bias=False, rngs=nnx.Rngs(1))
    x = jnp.array([1.0, -1.0])
    np.testing.assert_allclose(f(2, model, x), (model.kernel.value ** 2 * x).sum(), rtol=1e-6)
    grads = nnx.grad(lambda m, x: f(3, m, x))(model, x)
    assert seen == [3]
    np.testing.assert_array_equal(grads.kernel.value, np.full((2, 2), 3.0))


# -- the functional style: call, cached_partial ------------------------------------------------


def test_call_on_graphdef_state_pair_inside_raw_jit():
    net = Net()
    pair = nnx.split(net)

    @jax.jit
    def forward(pair, x):
        y, pair = nnx.call(pair)(x)
        return y, pair

    y, (graphdef, new_state) = forward(pair, X)
    assert y.shape == (2, 2)
    assert isinstance(graphdef, nnx.GraphDef) and graphdef == pair[0]
    assert int(new_state["drop"]["rngs"]["dropout"]["count"].value) == 1
    assert int(new_state["calls"].value) == 1
    # the module itself was not touched: the pair is pure
    assert int(net.calls.value) == 0 and dropout_count(net) == 0
    # feeding the new state back gives the next step
    y2, (_, state2) = forward((graphdef, new_state), X)
    assert int(state2["calls"].value) == 2
    assert not np.array_equal(y, y2)  # a new dropout key

    # a submodule's method by attribute path
    out, (_, same_state) = jax.jit(lambda p, x: nnx.call(p).lin(x))(pair, X)
    np.testing.assert_allclose(out, net.lin(X), rtol=1e-6)
    assert int(same_state["calls"].value) == 0


def test_cached_partial_writes_back_like_the_function():
    model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    k0 = model.kernel.value

    @nnx.jit
    def shift(m, amount):
        m.kernel.value = m.kernel.value + amount
        return m.kernel.value.sum()

    step = nnx.cached_partial(shift, model)
    step(1.0)
    total = step(1.0)
    np.testing.assert_allclose(model.kernel.value, k0 + 2.0)
    np.testing.assert_allclose(total, (k0 + 2.0).sum(), rtol=1e-6)


# -- jit: donation, lower, trace, eval_shape ---------------------------------------------------


def test_jit_donate_argnames_donates_state_and_model_stays_usable():
    model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    old_kernel = model.kernel.value
    expected = old_kernel + 1.0

    @nnx.jit(donate_argnames=("m",))
    def step(m, x):
        m.kernel.value = m.kernel.value + 1.0
        return m(x)

    y = step(model, jnp.ones(2))
    assert old_kernel.is_deleted()
    assert not model.kernel.value.is_deleted() and not model.bias.value.is_deleted()
    np.testing.assert_allclose(model.kernel.value, expected)
    np.testing.assert_allclose(y, jnp.ones(2) @ expected + model.bias.value, rtol=1e-6)
    step(model, jnp.ones(2))  # and again, with the new buffers
    np.testing.assert_allclose(model.kernel.value, expected + 1.0)


def test_jit_lower_and_trace_show_the_computation():
    model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))

    @nnx.jit
    def f(m, x):
        return jnp.tanh(m(x))

    text = f.lower(model, jnp.ones((1, 2))).as_text()
    assert "tanh" in text
    assert "dot" in text
    assert "2x3" in text  # the kernel is an input of the lowered program
    jaxpr = str(f.trace(model, jnp.ones((1, 2))).jaxpr)
    assert "tanh" in jaxpr and "dot_general" in jaxpr


def test_jit_eval_shape_returns_shapes_and_does_not_write_state():
    net = Net()
    kernel = net.lin.kernel.value

    @nnx.jit
    def f(m, x):
        m.lin.kernel.value = m.lin.kernel.value * 2
        return m(x)

    out = f.eval_shape(net, jnp.ones((5, 3)))
    assert out == jax.ShapeDtypeStruct((5, 2), jnp.float32)
    assert net.lin.kernel.value is kernel
    assert int(net.calls.value) == 0 and dropout_count(net) == 0

    @nnx.jit
    def g(m, x):
        return m(x), m

    y, abstract = g.eval_shape(net, jnp.ones((4, 3)))
    assert y == jax.ShapeDtypeStruct((4, 2), jnp.float32)
    assert abstract.lin.kernel.value == jax.ShapeDtypeStruct((3, 2), jnp.float32)
    assert int(net.calls.value) == 0


# -- several devices: pmap, shard_map, jit shardings (one subprocess) --------------------------

MULTI_DEVICE_SCRIPT = r"""
import json
import jax, jax.numpy as jnp, numpy as np
import plait as nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

n = jax.device_count()
out = {"devices": n}

# pmap: a split_rngs constructor gives each device its own parameters
@nnx.split_rngs(splits=n)
@nnx.pmap(axis_size=n)
def create(rngs):
    return nnx.Linear(2, 2, rngs=rngs)

rngs = nnx.Rngs(0)
stack = create(rngs)
k = np.asarray(stack.kernel.value)
out["pmap_kernel_shape"] = list(k.shape)
out["pmap_distinct_kernels"] = len({k[i].tobytes() for i in range(n)})
out["pmap_kernel_type_ok"] = isinstance(stack.kernel.value, jax.Array)
out["pmap_rngs_key_shape"] = list(rngs.default.key.value.shape)

# pmap: psum over axis_name; state written back (mapped on axis 0)
class Holder(nnx.Module):
    def __init__(self, v):
        self.v = nnx.BatchStat(v)

h = Holder(jnp.zeros((n, 2)))
def bump(m, x):
    m.v.value = m.v.value + jax.lax.psum(x, "d")
    return jax.lax.psum(x, "d") * 2
y = nnx.pmap(bump, axis_name="d")(h, jnp.arange(float(n)))
out["pmap_psum"] = np.asarray(y).tolist()
out["pmap_written"] = np.asarray(h.v.value).tolist()
out["pmap_written_concrete"] = isinstance(h.v.value, jax.Array) and not isinstance(h.v.value, jax.core.Tracer)

# pmap: using the stack built above, per-device outputs
ys = nnx.pmap(lambda m, x: m(x), in_axes=(0, None))(stack, jnp.ones(2))
ref = [np.asarray(jnp.ones(2) @ stack.kernel.value[i] + stack.bias.value[i]).tolist() for i in range(n)]
out["pmap_forward_ok"] = bool(np.allclose(np.asarray(ys), ref, rtol=1e-5))

# shard_map: StateSharding for a module, local shard shapes inside, sharding kept on write
mesh = Mesh(np.array(jax.devices()), ("d",))
class M(nnx.Module):
    def __init__(self):
        self.w = nnx.Param(jnp.arange(2.0 * n).reshape(2 * n, 1))
        self.count = nnx.BatchStat(jnp.zeros(()))
m = M()
seen = {}
def local(m, x):
    seen["w"] = list(m.w.value.shape)
    seen["x"] = list(x.shape)
    seen["count"] = list(m.count.value.shape)
    m.w.value = m.w.value * 2
    m.count.value = m.count.value + 1
    return x * m.w.value[:, 0]
spec = nnx.StateSharding({nnx.Param: P("d"), ...: P()})
xs = jnp.arange(2.0 * n)
y = nnx.shard_map(local, mesh=mesh, in_specs=(spec, P("d")), out_specs=P("d"))(m, xs)
out["shard_local_shapes"] = seen
out["shard_y"] = np.asarray(y).tolist()
out["shard_w"] = np.asarray(m.w.value).ravel().tolist()
out["shard_count"] = float(m.count.value)
out["shard_w_spec"] = str(m.w.value.sharding.spec)
out["shard_count_spec"] = str(m.count.value.sharding.spec)
out["shard_w_is_named"] = isinstance(m.w.value.sharding, NamedSharding)

# jit with in_shardings (StateSharding) and out_shardings
sharded, replicated = NamedSharding(mesh, P("d")), NamedSharding(mesh, P())
m2 = M()
@nnx.jit(in_shardings=(nnx.StateSharding({nnx.Param: sharded, ...: replicated}), sharded), out_shardings=replicated)
def step(m, x):
    m.w.value = m.w.value + 1
    m.count.value = m.count.value + 1
    return x * m.w.value[:, 0]
r = step(m2, xs)
out["jit_result"] = np.asarray(r).tolist()
out["jit_result_spec"] = str(r.sharding.spec)
out["jit_w_spec"] = str(m2.w.value.sharding.spec)
out["jit_count_spec"] = str(m2.count.value.sharding.spec)
out["jit_w"] = np.asarray(m2.w.value).ravel().tolist()
r2 = step(m2, xs)  # cached call: still sharded as asked
out["jit_w_spec_2"] = str(m2.w.value.sharding.spec)
out["jit_count_2"] = float(m2.count.value)

print("RESULT=" + json.dumps(out))
"""


_start_multi_device_early, multi = multi_device_fixtures(MULTI_DEVICE_SCRIPT)


def test_multi_device_subprocess_has_four_devices(multi):
    assert multi["devices"] == 4


def test_pmap_split_rngs_constructor_gives_per_device_distinct_params(multi):
    assert multi["pmap_kernel_shape"] == [4, 2, 2]
    assert multi["pmap_distinct_kernels"] == 4
    assert multi["pmap_kernel_type_ok"]
    assert multi["pmap_rngs_key_shape"] == []  # split_rngs restored the caller's stream
    assert multi["pmap_forward_ok"]


def test_pmap_psum_with_axis_name_and_state_written_back(multi):
    total = 0.0 + 1.0 + 2.0 + 3.0
    assert multi["pmap_psum"] == [2 * total] * 4
    assert multi["pmap_written"] == [[total, total]] * 4
    assert multi["pmap_written_concrete"]


def test_shard_map_state_sharding_local_shapes_and_write_back(multi):
    # w (8, 1) split over 4 devices on axis 0; count replicated; x (8,) split
    assert multi["shard_local_shapes"] == {"w": [2, 1], "x": [2], "count": []}
    xs = np.arange(8.0)
    np.testing.assert_allclose(multi["shard_y"], xs * xs * 2)
    np.testing.assert_allclose(multi["shard_w"], xs * 2)
    assert multi["shard_count"] == 1.0
    assert multi["shard_w_is_named"]
    assert multi["shard_w_spec"] == str(jax.sharding.PartitionSpec("d"))
    assert multi["shard_count_spec"] == str(jax.sharding.PartitionSpec())


def test_jit_in_and_out_shardings_with_state_sharding(multi):
    xs = np.arange(8.0)
    np.testing.assert_allclose(multi["jit_result"], xs * (xs + 1))
    assert multi["jit_result_spec"] == str(jax.sharding.PartitionSpec())
    assert multi["jit_w_spec"] == str(jax.sharding.PartitionSpec("d"))
    assert multi["jit_count_spec"] == str(jax.sharding.PartitionSpec())
    np.testing.assert_allclose(multi["jit_w"], xs + 1)
    assert multi["jit_w_spec_2"] == str(jax.sharding.PartitionSpec("d"))
    assert multi["jit_count_2"] == 2.0


def test_custom_vjp_keyword_decorator_form_and_float_arguments():
    @nnx.custom_vjp(nondiff_argnums=(1,))
    def f(x, n):
        return x * n

    def fwd(x, n):
        return f(x, n), None

    def bwd(n, res, g):
        _, g = g
        return (g * n * 100,)

    f.defvjp(fwd, bwd)
    assert float(jax.grad(lambda x: f(x, 3))(1.0)) == 300.0  # the custom rule, with a Python float primal
    assert float(nnx.grad(lambda x: x**2)(3.0)) == 6.0  # a float argument is data, not a constant
