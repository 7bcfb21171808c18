"""One test per cell of the rule table in docs/transforms.md: a write inside a transform is
either written back (to the caller's own Variable, on the documented axis) or refused with
the documented error, whose message names the Variable and the fix.

Also: closed-over state, raw ``jax.jit``, same-seed determinism, deep nesting, keyword
arguments, bound methods. The pmap and shard_map cells run in one subprocess with 4 host
devices."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import plait as nnx
from helpers import Holder, Net, dropout_count, is_concrete, multi_device_fixtures, raises

D = 3  # lanes / steps

# -- helpers ---------------------------------------------------------------------------------


X = jnp.array([[1.0, -2.0, 0.5], [0.3, 0.2, -1.0]])


def masks_equal(rows) -> bool:
    rows = np.asarray(rows)
    return all(np.array_equal(rows[0], r) for r in rows[1:])


# ============================================================================================
# jit
# ============================================================================================


def test_jit_any_write_is_written_back():
    net = Net()
    kernel_var, bias0 = net.lin.kernel, net.lin.bias.value

    @nnx.jit
    def step(m, x):
        m.lin.bias.value = m.lin.bias.value + 1.0
        return m(x)

    step(net, X)
    step(net, X)
    assert net.lin.kernel is kernel_var
    np.testing.assert_allclose(net.lin.bias.value, bias0 + 2.0)
    assert is_concrete(net.lin.bias.value) and is_concrete(net.calls.value)
    assert int(net.calls.value) == 2
    assert dropout_count(net) == 2


def _new_submodule(m):
    m.extra = nnx.Linear(2, 2, rngs=nnx.Rngs(5))


def _new_variable(m):
    m.seen = nnx.Intermediate(m.lin.kernel.value.sum(0))


def _eval(m):
    m.eval()


@pytest.mark.parametrize("change", [_new_submodule, _new_variable, _eval], ids=["new-attribute", "new-variable", "eval"])
def test_jit_structure_change_propagates_to_callers_objects(change):
    net = Net()
    drop = net.drop
    nnx.jit(change)(net)
    assert net.drop is drop
    if change is _new_submodule:
        assert isinstance(net.extra, nnx.Linear)
        assert is_concrete(net.extra.kernel.value)
        np.testing.assert_array_equal(net.extra.kernel.value, nnx.Linear(2, 2, rngs=nnx.Rngs(5)).kernel.value)
    elif change is _new_variable:
        assert type(net.seen) is nnx.Intermediate
        assert is_concrete(net.seen.value)
        np.testing.assert_allclose(net.seen.value, net.lin.kernel.value.sum(0), rtol=1e-6)
    else:
        assert net.drop.deterministic is True
        np.testing.assert_array_equal(net(X), jnp.tanh(net.lin(X)))  # dropout is off now


# ============================================================================================
# grad, value_and_grad, vjp, jvp
# ============================================================================================


class Scaled(nnx.Module):
    def __init__(self):
        self.w = nnx.Param(jnp.array([1.0, 2.0]))
        self.stat = nnx.BatchStat(jnp.zeros(()))
        self.drop = nnx.Dropout(0.5, rngs=nnx.Rngs(dropout=0))


def loss_writing_param(m):
    out = (m.w.value ** 2).sum()
    m.w.value = m.w.value * 10  # a write to differentiated state
    return out


def loss_writing_other(m):
    m.stat.value = m.stat.value + 1.0
    return (m.drop(m.w.value) * 0.0).sum() + (m.w.value ** 2).sum()


def run_diff(transform, f, m):
    """Run ``f(m)`` under the transform; return the gradient w.r.t. m.w."""
    if transform == "grad":
        return nnx.grad(f)(m).w.value
    if transform == "value_and_grad":
        return nnx.value_and_grad(f)(m)[1].w.value
    if transform == "vjp":
        _, vjp_fn = nnx.vjp(f, m)
        return vjp_fn(jnp.float32(1.0))[0].w.value
    tangent_w = nnx.State({"w": nnx.Param(jnp.array([1.0, 0.0]))})
    _, t = nnx.jvp(f, (m,), (tangent_w,))
    return t  # directional derivative along w[0]


@pytest.mark.parametrize("transform", ["grad", "value_and_grad", "vjp", "jvp"])
def test_differentiated_state_write_is_written_back_as_the_value(transform):
    m = Scaled()
    w_var = m.w
    g = run_diff(transform, loss_writing_param, m)
    assert m.w is w_var
    np.testing.assert_array_equal(m.w.value, [10.0, 20.0])  # the written value, not the gradient
    assert is_concrete(m.w.value)
    if transform == "jvp":
        assert float(g) == 2.0
    else:
        np.testing.assert_array_equal(g, [2.0, 4.0])


@pytest.mark.parametrize("transform", ["grad", "value_and_grad", "vjp", "jvp"])
def test_other_state_write_is_written_back(transform):
    m = Scaled()
    run_diff(transform, loss_writing_other, m)
    assert float(m.stat.value) == 1.0 and is_concrete(m.stat.value)
    assert int(m.drop.rngs.dropout.count.value) == 1
    run_diff(transform, loss_writing_other, m)
    assert float(m.stat.value) == 2.0
    assert int(m.drop.rngs.dropout.count.value) == 2
    np.testing.assert_array_equal(m.w.value, [1.0, 2.0])  # Params were only read


# ============================================================================================
# remat / checkpoint
# ============================================================================================


@pytest.mark.parametrize("remat", [nnx.remat, nnx.checkpoint], ids=["remat", "checkpoint"])
def test_remat_any_write_is_written_back(remat):
    net = Net()
    bias0 = net.lin.bias.value

    def f(m, x):
        m.lin.bias.value = m.lin.bias.value - 1.0
        return m(x).sum()

    remat(f)(net, X)
    np.testing.assert_allclose(net.lin.bias.value, bias0 - 1.0)
    assert int(net.calls.value) == 1 and dropout_count(net) == 1
    nnx.grad(lambda m, x: remat(f)(m, x))(net, X)
    np.testing.assert_allclose(net.lin.bias.value, bias0 - 2.0)
    assert int(net.calls.value) == 2 and dropout_count(net) == 2


# ============================================================================================
# vmap (pmap: see the subprocess at the end)
# ============================================================================================


@pytest.mark.parametrize("axis, shape", [(0, (D, 2)), (1, (2, D)), (-1, (2, D))])
def test_vmap_mapped_state_written_back_on_the_same_axis(axis, shape):
    h = Holder(jnp.zeros(shape))

    def bump(m, i):
        m.v.value = m.v.value + i

    nnx.vmap(bump, in_axes=(axis, 0))(h, jnp.arange(float(D)))
    assert h.v.value.shape == shape
    expected = np.broadcast_to(np.arange(float(D)), (2, D))
    np.testing.assert_array_equal(h.v.value, expected if axis != 0 else expected.T)


def test_vmap_broadcast_state_written_with_one_value_is_written_back():
    h = Holder(jnp.float32(1.0))

    def f(m, x):
        m.v.value = m.v.value * 3.0  # the same in every lane
        return x + m.v.value

    y = nnx.vmap(f, in_axes=(None, 0))(h, jnp.arange(float(D)))
    assert float(h.v.value) == 3.0 and h.v.value.shape == ()
    np.testing.assert_array_equal(y, np.arange(float(D)) + 3.0)


def test_vmap_broadcast_state_written_per_lane_is_state_error():
    h = Holder(jnp.zeros(2))

    def f(m, x):
        m.v.value = m.v.value + x

    raises(nnx.StateError, lambda: nnx.vmap(f, in_axes=(None, 0))(h, jnp.ones((D, 2))),
           "vmap", "`m.v`", "BatchStat", "shape (2,)", "Map it")
    np.testing.assert_array_equal(h.v.value, [0.0, 0.0])
    assert is_concrete(h.v.value)


def test_vmap_broadcast_rng_drawn_is_rng_error():
    net = Net()
    raises(nnx.RngError, lambda: nnx.vmap(lambda m, x: m(x), in_axes=(None, 0))(net, X),
           "vmap", "`m.drop.rngs.dropout.count`", "stream 'dropout'", "every lane would get the same key",
           "@nnx.split_rngs(splits=2)", "nnx.SameKeys")
    assert dropout_count(net) == 0 and int(net.calls.value) == 0


def test_vmap_same_keys_rng_drawn_is_written_back_one_draw():
    net = Net()
    axes = nnx.StateAxes({nnx.RngState: nnx.SameKeys, ...: None})
    rows = jnp.ones((4, 3))
    y = nnx.vmap(lambda m, x: m(x), in_axes=(axes, 0))(net, rows)
    assert dropout_count(net) == 1  # one draw for all lanes
    assert int(net.calls.value) == 1
    zero = np.asarray(y) == 0.0
    assert zero.any() and not zero.all()
    assert masks_equal(zero)  # every lane drew the same mask, on purpose
    y2 = nnx.vmap(lambda m, x: m(x), in_axes=(axes, 0))(net, rows)
    assert dropout_count(net) == 2
    assert not np.array_equal(np.asarray(y2) == 0.0, zero)


def test_vmap_state_created_inside_gets_its_axis_from_out_axes():
    def f(x):
        return nnx.Linear(2, 2, rngs=nnx.Rngs(x))

    keys = jnp.arange(D)
    m1 = nnx.vmap(f, out_axes=1)(keys)
    assert m1.kernel.value.shape == (2, D, 2) and m1.bias.value.shape == (2, D)
    kernels = np.moveaxis(np.asarray(m1.kernel.value), 1, 0)
    assert len({k.tobytes() for k in kernels}) == D  # one Linear per lane, stacked on axis 1
    mn = nnx.vmap(lambda x: nnx.Linear(2, 2, rngs=nnx.Rngs(0)), out_axes=None)(keys)
    assert mn.kernel.value.shape == (2, 2)


def test_vmap_state_created_on_an_input_module_gets_its_in_axes():
    h = Holder(jnp.zeros((2, D)))

    def f(m, x):
        m.extra = nnx.BatchStat(jnp.ones(2) * x)
        return nnx.Param(jnp.ones(2) * x * 10)  # a new output: out_axes

    out = nnx.vmap(f, in_axes=(1, 0), out_axes=0)(h, jnp.arange(float(D)))
    assert h.extra.value.shape == (2, D)  # axis 1, like the module it hangs off
    np.testing.assert_array_equal(h.extra.value, np.broadcast_to(np.arange(float(D)), (2, D)))
    assert out.value.shape == (D, 2)
    np.testing.assert_array_equal(out.value[:, 0], np.arange(float(D)) * 10)


# ============================================================================================
# scan
# ============================================================================================


def test_scan_carried_state_written_back_with_final_value():
    h = Holder(jnp.float32(0.0))

    def step(m, x):
        m.v.value = m.v.value * 2 + x
        return m

    out = nnx.scan(step, in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)(h, jnp.arange(1.0, 4.0))
    assert out is h
    assert float(h.v.value) == ((0 * 2 + 1) * 2 + 2) * 2 + 3
    assert is_concrete(h.v.value)


@pytest.mark.parametrize("axis", [0, 1])
def test_scan_scanned_state_written_back_stacked_on_its_axis(axis):
    shape = (D, 2) if axis == 0 else (2, D)
    h = Holder(jnp.zeros(shape))

    def step(c, m):
        m.v.value = m.v.value + c
        return c + 1.0, None

    c, _ = nnx.scan(step, in_axes=(nnx.Carry, axis), out_axes=(nnx.Carry, 0))(jnp.float32(10.0), h)
    assert float(c) == 10.0 + D
    assert h.v.value.shape == shape
    expected = np.broadcast_to(10.0 + np.arange(float(D)), (2, D))
    np.testing.assert_array_equal(h.v.value, expected.T if axis == 0 else expected)


def test_scan_broadcast_state_written_is_state_error():
    h = Holder(jnp.zeros(2))

    def step(c, m):
        m.v.value = m.v.value + c
        return c

    raises(nnx.StateError,
           lambda: nnx.scan(step, in_axes=(nnx.Carry, None), out_axes=nnx.Carry, length=D)(jnp.ones(2), h),
           "scan", "`m.v`", "BatchStat", "shape (2,)", "nnx.Carry")
    np.testing.assert_array_equal(h.v.value, [0.0, 0.0])
    assert is_concrete(h.v.value)


def test_scan_broadcast_state_fix_carry_it_works():
    """The fix the StateError shows: carry the written state with StateAxes."""
    h = Holder(jnp.zeros(2))

    def step(c, m):
        m.v.value = m.v.value + c
        return c

    axes = nnx.StateAxes({nnx.BatchStat: nnx.Carry, ...: None})
    nnx.scan(step, in_axes=(nnx.Carry, axes), out_axes=nnx.Carry, length=D)(jnp.ones(2), h)
    np.testing.assert_array_equal(h.v.value, [3.0, 3.0])


def test_scan_broadcast_rng_drawn_is_rng_error():
    net = Net()

    def step(c, m):
        return c, m(c)

    raises(nnx.RngError,
           lambda: nnx.scan(step, in_axes=(nnx.Carry, None), out_axes=(nnx.Carry, 0), length=D)(X, net),
           "scan", "`m.drop.rngs.dropout.count`", "stream 'dropout'", "every step would get the same key",
           "split_rngs", "nnx.Carry", "nnx.SameKeys")
    assert dropout_count(net) == 0


def test_scan_same_keys_rng_drawn_is_written_back_draw_of_one_step():
    net = Net()
    axes = nnx.StateAxes({nnx.RngState: nnx.SameKeys, nnx.PathContains("calls"): nnx.Carry, ...: None})

    def step(c, m):
        y = m(jnp.ones((4, 3)))
        return c + 1, y == 0.0

    c, zeros = nnx.scan(step, in_axes=(nnx.Carry, axes), out_axes=(nnx.Carry, 0), length=D)(jnp.int32(0), net)
    assert int(c) == D and int(net.calls.value) == D
    assert dropout_count(net) == 1  # the draw of one step
    assert zeros.shape == (D, 4, 2)
    assert masks_equal(zeros)  # every step drew the same key


def test_scan_same_keys_on_non_rng_state_written_per_step_is_state_error():
    h = Holder(jnp.float32(0.0))

    def step(c, m):
        m.v.value = m.v.value + c
        return c + 1.0

    raises(nnx.StateError,
           lambda: nnx.scan(step, in_axes=(nnx.Carry, nnx.SameKeys), out_axes=nnx.Carry, length=D)(jnp.float32(1.0), h),
           "`m.v`")


def test_scan_structure_change_is_transform_error():
    h = Holder(jnp.zeros(2))

    def step(c, m):
        m.extra = nnx.BatchStat(c)
        return c

    raises(nnx.TransformError,
           lambda: nnx.scan(step, in_axes=(nnx.Carry, None), out_axes=nnx.Carry, length=D)(jnp.ones(2), h),
           "scan", "structure", "create attributes before the scan")
    assert not hasattr(h, "extra")


# ============================================================================================
# cond, switch
# ============================================================================================


def _inc(m):
    m.v.value = m.v.value + 1.0


def _dbl(m):
    m.v.value = m.v.value * 2.0


@pytest.mark.parametrize("transform, which, expected", [
    ("cond", True, 4.0), ("cond", False, 6.0), ("switch", 0, 6.0), ("switch", 1, 4.0),
])
def test_cond_switch_taken_branch_writes_are_written_back(transform, which, expected):
    h = Holder(jnp.float32(3.0))
    if transform == "cond":
        nnx.cond(which, _inc, _dbl, h)
    else:
        nnx.switch(which, [_dbl, _inc], h)
    assert float(h.v.value) == expected and is_concrete(h.v.value)


@pytest.mark.parametrize("transform", ["cond", "switch"])
def test_cond_switch_branches_leaving_different_structure_is_transform_error(transform):
    h = Holder(jnp.float32(3.0))

    def grow(m):
        m.extra = nnx.BatchStat(m.v.value)

    if transform == "cond":
        call = lambda: nnx.cond(False, grow, _inc, h)  # noqa: E731
    else:
        call = lambda: nnx.switch(1, [_inc, grow], h)  # noqa: E731
    raises(nnx.TransformError, call, transform, "same structure")
    assert not hasattr(h, "extra") and float(h.v.value) == 3.0


# ============================================================================================
# while_loop, fori_loop
# ============================================================================================


@pytest.mark.parametrize("loop", ["while_loop", "fori_loop"])
def test_loop_value_written_back_with_value_after_last_iteration(loop):
    h = Holder(jnp.float32(1.0))

    def body(m):
        m.v.value = m.v.value * 3.0
        return m

    if loop == "while_loop":
        out = nnx.while_loop(lambda m: m.v.value < 50.0, body, h)
    else:
        out = nnx.fori_loop(0, 4, lambda i, m: body(m), h)
    assert out is h
    assert float(h.v.value) == 81.0 and is_concrete(h.v.value)


def test_while_loop_cond_fun_writing_is_state_error():
    h = Holder(jnp.float32(0.0))

    def cond_fun(m):
        m.v.value = m.v.value + 1.0
        return m.v.value < 5.0

    raises(nnx.StateError, lambda: nnx.while_loop(cond_fun, lambda m: m, h), "while_loop", "cond_fun")
    assert float(h.v.value) == 0.0


def _grow(m):
    m.extra = nnx.BatchStat(m.v.value)
    return m


def _reshape(m):
    m.v.value = jnp.stack([m.v.value, m.v.value])
    return m


def _recast(m):
    m.v.value = m.v.value.astype(jnp.float16)
    return m


@pytest.mark.parametrize("loop", ["while_loop", "fori_loop"])
@pytest.mark.parametrize("body, fragment", [(_grow, "structure"), (_reshape, "(2,)"), (_recast, "float16")],
                         ids=["structure", "shape", "dtype"])
def test_loop_iteration_changing_structure_shape_or_dtype_is_transform_error(loop, body, fragment):
    h = Holder(jnp.float32(0.0))
    if loop == "while_loop":
        call = lambda: nnx.while_loop(lambda m: m.v.value < 5.0, body, h)  # noqa: E731
    else:
        call = lambda: nnx.fori_loop(0, 3, lambda i, m: body(m), h)  # noqa: E731
    raises(nnx.TransformError, call, loop, fragment)
    assert not hasattr(h, "extra")
    assert h.v.value.shape == () and h.v.value.dtype == jnp.float32


# ============================================================================================
# eval_shape, custom_vjp
# ============================================================================================


def test_eval_shape_nothing_is_written_back_and_result_is_abstract():
    net = Net()
    kernel = net.lin.kernel.value

    def f(m, x):
        m.lin.kernel.value = m.lin.kernel.value + 1.0
        return m(x), m

    y, abstract = nnx.eval_shape(f, net, X)
    assert y == jax.ShapeDtypeStruct((2, 2), jnp.float32)
    assert abstract is not net
    assert abstract.lin.kernel.value == jax.ShapeDtypeStruct((3, 2), jnp.float32)
    assert net.lin.kernel.value is kernel
    assert int(net.calls.value) == 0 and dropout_count(net) == 0


def test_custom_vjp_writes_are_written_back():
    h = Holder(jnp.float32(0.0), kind=nnx.Param)

    @nnx.custom_vjp
    def f(m, x):
        m.v.value = m.v.value + x
        return m.v.value * x

    f.defvjp(lambda m, x: (f(m, x), x), lambda x, g: (nnx.State({"v": g[1] * x}), g[1]))
    assert float(f(h, jnp.float32(2.0))) == 4.0
    assert float(h.v.value) == 2.0 and is_concrete(h.v.value)
    grads = nnx.grad(lambda m: f(m, jnp.float32(2.0)))(h)
    assert float(grads.v.value) == 2.0  # the custom rule: g * x
    assert float(h.v.value) == 4.0 and is_concrete(h.v.value)


# ============================================================================================
# closed over instead of passed in
# ============================================================================================

CLOSED_OVER = {
    "nnx.jit": lambda f: nnx.jit(f)(jnp.ones(3)),
    "nnx.vmap": lambda f: nnx.vmap(f)(jnp.ones((2, 3))),
    "nnx.scan": lambda f: nnx.scan(lambda c, x: (f(c), x))(jnp.ones(3), jnp.ones((2, 3))),
    "nnx.grad": lambda f: nnx.grad(lambda x: f(x).sum())(jnp.ones(3)),
    "nnx.remat": lambda f: nnx.remat(f)(jnp.ones(3)),
    "nnx.cond": lambda f: nnx.cond(True, f, lambda x: x, jnp.ones(3)),
    "nnx.fori_loop": lambda f: nnx.fori_loop(0, 2, lambda i, x: f(x), jnp.ones(3)),
    "nnx.eval_shape": lambda f: nnx.eval_shape(f, jnp.ones(3)),
    "jax.jit": lambda f: jax.jit(f)(jnp.ones(3)),
    "jax.vmap": lambda f: jax.vmap(f)(jnp.ones((2, 3))),
    "jax.lax.scan": lambda f: jax.lax.scan(lambda c, x: (f(c), x), jnp.ones(3), jnp.ones((2, 3))),
    "jax.grad": lambda f: jax.grad(lambda x: f(x).sum())(jnp.ones(3)),
}


@pytest.mark.parametrize("transform", list(CLOSED_OVER))
def test_closed_over_variable_written_inside_is_state_error(transform):
    h = Holder(jnp.zeros(3))
    before = h.v.value

    def f(x):
        h.v.value = h.v.value + x
        return x

    raises(nnx.StateError, lambda: CLOSED_OVER[transform](f), "BatchStat", "shape (3,)", "closed over",
           "Pass the module")
    # no leaked tracer: the caller still holds its concrete array
    assert is_concrete(h.v.value)
    assert h.v.value is before
    h.v.value = h.v.value + 1.0  # and the Variable is still usable
    np.testing.assert_array_equal(h.v.value, np.ones(3))


@pytest.mark.parametrize("transform", ["nnx.jit", "jax.jit", "jax.lax.scan"])
def test_closed_over_module_attribute_set_inside_is_state_error(transform):
    h = Holder(jnp.zeros(3))

    def f(x):
        h.extra = nnx.Param(x)
        return x

    raises(nnx.StateError, lambda: CLOSED_OVER[transform](f), "'extra'", "Holder", "closed over")
    assert not hasattr(h, "extra")


@pytest.mark.parametrize("source", ["rngs", "dropout"])
@pytest.mark.parametrize("transform", ["jax.jit", "nnx.jit", "jax.lax.scan"])
def test_drawing_from_closed_over_rng_stream_is_state_error_naming_stream(source, transform):
    rngs = nnx.Rngs(dropout=0)
    drop = nnx.Dropout(0.5, rngs=rngs)

    def f(x):
        if source == "rngs":
            return x + jax.random.normal(rngs.dropout(), x.shape)
        return drop(x)

    raises(nnx.StateError, lambda: CLOSED_OVER[transform](f), "stream 'dropout'", "closed over")
    value = rngs.dropout.count.value
    assert is_concrete(value) and int(value) == 0


def test_passing_a_module_to_raw_jax_jit_fails_loudly():
    drop = nnx.Dropout(0.5, rngs=nnx.Rngs(0))
    with pytest.raises(TypeError) as info:
        jax.jit(lambda m, x: m(x))(drop, jnp.ones(2))
    assert "Dropout" in str(info.value)


@pytest.mark.parametrize("body", [lambda m, x: m(x), lambda m, x: x @ m.kernel.value], ids=["call", "attribute"])
def test_passing_a_linear_to_raw_jax_jit_says_it_is_not_a_jax_type(body):
    model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    with pytest.raises(TypeError) as info:
        jax.jit(body)(model, jnp.ones(2))
    assert "Linear" in str(info.value)


# ============================================================================================
# randomness: same seed, same program
# ============================================================================================


@nnx.jit
def _train_step(m, x):
    def loss(m):
        return (m(x) ** 2).mean()

    value, grads = nnx.value_and_grad(loss)(m)
    params = nnx.state(m, nnx.Param)
    nnx.update(m, jax.tree.map(lambda p, g: p - 0.1 * g, params, grads))
    return value


def _train_from_scratch(seed: int):
    model = Net(seed)  # a fresh model and fresh streams, from the seed alone
    x = jnp.linspace(-1.0, 1.0, 12).reshape(4, 3)
    losses = [np.asarray(_train_step(model, x)) for _ in range(3)]
    return losses, np.asarray(model.lin.kernel.value), np.asarray(model.lin.bias.value), dropout_count(model)


def test_same_seed_same_program_bitwise_equal_across_fresh_runs():
    losses1, kernel1, bias1, n1 = _train_from_scratch(0)
    losses2, kernel2, bias2, n2 = _train_from_scratch(0)
    assert n1 == n2 == 3
    for a, b in zip(losses1, losses2):
        assert np.array_equal(a, b)
    assert np.array_equal(kernel1, kernel2) and np.array_equal(bias1, bias2)
    assert kernel1.tobytes() == kernel2.tobytes()
    assert len({a.tobytes() for a in losses1}) == 3  # the steps did differ (new masks, new params)
    losses3, kernel3, _, _ = _train_from_scratch(1)
    assert not np.array_equal(kernel1, kernel3)


# ============================================================================================
# nesting: vmap inside scan inside jit inside value_and_grad
# ============================================================================================

L, B, WIDTH = 2, 3, 2


class Deep(nnx.Module):
    def __init__(self, seed: int):
        self.layers = nnx.Linear(WIDTH, WIDTH, rngs=nnx.Rngs(seed))  # stacked by hand: L layers
        self.layers.kernel.value = jnp.linspace(-1.0, 1.0, L * WIDTH * WIDTH).reshape(L, WIDTH, WIDTH)
        self.layers.bias.value = jnp.linspace(-0.5, 0.5, L * WIDTH).reshape(L, WIDTH)
        self.layer_hits = nnx.BatchStat(jnp.zeros((L,), jnp.int32))  # scanned: one per layer
        self.steps = nnx.BatchStat(jnp.zeros((), jnp.int32))  # carried through the scan
        self.lane_hits = nnx.BatchStat(jnp.zeros((B,), jnp.int32))  # mapped by the vmap
        self.jit_calls = nnx.BatchStat(jnp.zeros((), jnp.int32))  # written in the jit
        self.calls = nnx.BatchStat(jnp.zeros((), jnp.int32))  # written in value_and_grad
        self.rngs = nnx.Rngs(dropout=seed + 1)


def _deep_forward(model, x):
    model.jit_calls.value += 1
    axes = nnx.StateAxes({nnx.PathContains("layers"): 0, nnx.PathContains("layer_hits"): 0, ...: nnx.Carry})

    @nnx.scan(in_axes=(axes, nnx.Carry), out_axes=nnx.Carry)
    def step(m, h):
        m.layer_hits.value += 1
        m.steps.value += 1

        @nnx.split_rngs(splits=B)
        @nnx.vmap(in_axes=(nnx.StateAxes({nnx.RngState: 0, nnx.PathContains("lane_hits"): 0, ...: None}), 0))
        def lane(m, h):
            m.lane_hits.value += 1
            keep = jax.random.bernoulli(m.rngs.dropout(), 0.5, h.shape)
            return jnp.where(keep, jnp.tanh(m.layers(h)), 0.0)

        return lane(m, h)

    return step(model, x)


def _deep_loss(use_jit: bool):
    inner = nnx.jit(_deep_forward) if use_jit else _deep_forward

    def loss(model, x):
        model.calls.value += 1
        return (inner(model, x) ** 2).sum()

    return nnx.value_and_grad(loss)


@jax.jit
@jax.value_and_grad
def _deep_reference(params, x, seed, first_count):
    """The same maths on raw arrays, keys drawn as the streams would draw them."""
    kernels, biases = params
    key = jax.random.key(seed + 1)
    h = x
    for layer in range(L):
        step_key = jax.random.fold_in(key, first_count + layer)  # split_rngs consumes one draw per step
        lane_keys = jax.random.split(step_key, B)
        keep = jax.vmap(lambda k: jax.random.bernoulli(jax.random.fold_in(k, 0), 0.5, (WIDTH,)))(lane_keys)
        h = jnp.where(keep, jnp.tanh(h @ kernels[layer] + biases[layer]), 0.0)
    return (h ** 2).sum()


def test_nested_vmap_scan_jit_value_and_grad_writes_state_at_every_level():
    model = Deep(0)
    x = jnp.linspace(-1.0, 1.0, B * WIDTH).reshape(B, WIDTH)
    kernels, biases = model.layers.kernel.value, model.layers.bias.value

    vg = _deep_loss(use_jit=True)
    loss1, grads1 = vg(model, x)

    ref_loss, (ref_gk, ref_gb) = _deep_reference((kernels, biases), x, 0, 0)
    np.testing.assert_allclose(loss1, ref_loss, rtol=1e-5)
    np.testing.assert_allclose(grads1.layers.kernel.value, ref_gk, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grads1.layers.bias.value, ref_gb, rtol=1e-5, atol=1e-6)
    assert sorted(p for p, _ in grads1.flat_state()) == [("layers", "bias"), ("layers", "kernel")]

    def check(m, n):
        assert int(m.calls.value) == n  # value_and_grad level
        assert int(m.jit_calls.value) == n  # jit level
        assert int(m.steps.value) == n * L  # carried through the scan
        np.testing.assert_array_equal(m.layer_hits.value, [n] * L)  # scanned, stacked again
        np.testing.assert_array_equal(m.lane_hits.value, [n * L] * B)  # mapped by the vmap
        assert int(m.rngs.dropout.count.value) == n * L  # one split per step, carried
        assert m.rngs.dropout.key.value.shape == ()  # split_rngs restored it
        for leaf in jax.tree_util.tree_leaves(nnx.state(m)):
            assert is_concrete(leaf)

    check(model, 1)
    np.testing.assert_array_equal(model.layers.kernel.value, kernels)  # Params only read

    loss2, _ = vg(model, x)
    check(model, 2)
    ref_loss2, _ = _deep_reference((kernels, biases), x, 0, L)
    np.testing.assert_allclose(loss2, ref_loss2, rtol=1e-5)
    assert float(loss2) != float(loss1)


# ============================================================================================
# keyword arguments, bound methods
# ============================================================================================


def test_vmap_keyword_arguments_mapped_on_axis_0_and_written_back():
    h = Holder(jnp.zeros((D, 2)))

    def f(x, *, m, scale):
        m.v.value = m.v.value + x * scale
        return m.v.value.sum()

    y = nnx.vmap(f)(jnp.arange(float(D)), m=h, scale=jnp.full(D, 2.0))
    np.testing.assert_array_equal(h.v.value, [[0.0, 0.0], [2.0, 2.0], [4.0, 4.0]])
    np.testing.assert_array_equal(y, [0.0, 4.0, 8.0])
    raises(nnx.AxisError, lambda: nnx.vmap(f)(jnp.arange(float(D)), m=Holder(jnp.zeros((D + 1, 2))), scale=jnp.ones(D)),
           "`m.v`", "`x`")


def test_vmap_rngs_keyword_argument_split_per_lane():
    @nnx.split_rngs(splits=D)
    @nnx.vmap(in_axes=0)
    def noisy(x, *, rngs):
        return x + jax.random.uniform(rngs.noise())

    rngs = nnx.Rngs(noise=0)
    y = noisy(jnp.zeros(D), rngs=rngs)
    assert len(set(np.asarray(y).tolist())) == D  # each lane its own key
    assert rngs.noise.key.value.shape == () and int(rngs.noise.count.value) == 1


def test_jit_of_bound_method_writes_back_and_sees_outside_changes():
    net = Net()
    forward = nnx.jit(net.__call__)
    y1 = forward(X)
    y2 = forward(X)
    assert int(net.calls.value) == 2 and dropout_count(net) == 2
    assert is_concrete(net.calls.value)
    assert not np.array_equal(y1, y2)  # a new dropout mask per call
    net.calls.value = jnp.int32(40)  # a write outside is seen by the next call
    forward(X)
    assert int(net.calls.value) == 41
    net.eval()
    np.testing.assert_allclose(forward(X), jnp.tanh(net.lin(X)), rtol=1e-6)


# ============================================================================================
# pmap and shard_map cells: one subprocess with 4 host devices
# ============================================================================================

MULTI_DEVICE_SCRIPT = r"""
import json
import jax, jax.numpy as jnp, numpy as np
import plait as nnx
from jax.sharding import Mesh, PartitionSpec as P

n = jax.device_count()
out = {"devices": n}

def record(name, fn):
    try:
        out[name] = {"ok": fn()}
    except Exception as e:
        out[name] = {"error": type(e).__name__, "plait": isinstance(e, nnx.PlaitError), "msg": str(e)}

class Holder(nnx.Module):
    def __init__(self, v):
        self.v = nnx.BatchStat(v)

class Net(nnx.Module):
    def __init__(self):
        self.lin = nnx.Linear(3, 16, rngs=nnx.Rngs(0))
        self.drop = nnx.Dropout(0.5, rngs=nnx.Rngs(dropout=1))
    def __call__(self, x):
        return self.drop(self.lin(x))

# mapped state, written back on the same axis
def mapped():
    h = Holder(jnp.zeros((2, n)))
    def bump(m, i):
        m.v.value = m.v.value + i
    nnx.pmap(bump, in_axes=(1, 0))(h, jnp.arange(float(n)))
    return {"shape": list(h.v.value.shape), "value": np.asarray(h.v.value).tolist()}
record("mapped", mapped)

# broadcast state, the same value in every device
def broadcast_same():
    h = Holder(jnp.float32(2.0))
    def f(m, x):
        m.v.value = m.v.value * 5
        return x
    nnx.pmap(f, in_axes=(None, 0))(h, jnp.arange(float(n)))
    return float(h.v.value)
record("broadcast_same", broadcast_same)

# broadcast state, a different value per device
def broadcast_per_lane():
    h = Holder(jnp.float32(0.0))
    def f(m, x):
        m.v.value = m.v.value + x
    nnx.pmap(f, in_axes=(None, 0))(h, jnp.arange(float(n)))
    return float(h.v.value)
record("broadcast_per_lane", broadcast_per_lane)

# broadcast RNG state drawn from
def broadcast_rng():
    net = Net()
    nnx.pmap(lambda m, x: m(x), in_axes=(None, 0))(net, jnp.ones((n, 3)))
    return int(net.drop.rngs.dropout.count.value)
record("broadcast_rng", broadcast_rng)

# SameKeys: one draw for all devices
def same_keys():
    net = Net()
    axes = nnx.StateAxes({nnx.RngState: nnx.SameKeys, ...: None})
    y = nnx.pmap(lambda m, x: m(x), in_axes=(axes, 0))(net, jnp.ones((n, 3)))
    zero = np.asarray(y) == 0.0
    return {"count": int(net.drop.rngs.dropout.count.value),
            "same": all(np.array_equal(zero[0], z) for z in zero)}
record("same_keys", same_keys)

# split per device: each device its own mask
def split_per_device():
    net = Net()
    @nnx.split_rngs(splits=n, only="dropout")
    @nnx.pmap(in_axes=(nnx.StateAxes({nnx.RngState: 0, ...: None}), 0))
    def f(m, x):
        return m(x)
    y = f(net, jnp.ones((n, 3)))
    zero = np.asarray(y) == 0.0
    return {"count": int(net.drop.rngs.dropout.count.value), "distinct": len({z.tobytes() for z in zero}),
            "key_shape": list(net.drop.rngs.dropout.key.value.shape)}
record("split_per_device", split_per_device)

# state created inside: out_axes
def created():
    m = nnx.pmap(lambda k: nnx.Linear(2, 2, rngs=nnx.Rngs(k)), out_axes=0)(jnp.arange(n))
    return {"shape": list(m.kernel.value.shape), "distinct": len({np.asarray(k).tobytes() for k in m.kernel.value})}
record("created", created)

# shard_map: any write is written back, with the spec it came in with
def sharded():
    mesh = Mesh(np.array(jax.devices()), ("d",))
    class M(nnx.Module):
        def __init__(self):
            self.cols = nnx.Param(jnp.ones((2, 2 * n)))
            self.rows = nnx.BatchStat(jnp.zeros((n,)))
            self.total = nnx.BatchStat(jnp.zeros(()))
    m = M()
    spec = nnx.StateSharding({nnx.Param: P(None, "d"), nnx.PathContains("rows"): P("d"), ...: P()})
    shapes = {}
    def f(m, x):
        shapes["cols"] = list(m.cols.value.shape)
        shapes["rows"] = list(m.rows.value.shape)
        m.cols.value = m.cols.value * 3
        m.rows.value = m.rows.value + jax.lax.axis_index("d")
        m.total.value = m.total.value + 1
        return x
    nnx.shard_map(f, mesh=mesh, in_specs=(spec, P("d")), out_specs=P("d"))(m, jnp.ones(n))
    return {"shapes": shapes,
            "cols": np.asarray(m.cols.value).tolist(), "cols_spec": str(m.cols.value.sharding.spec),
            "rows": np.asarray(m.rows.value).tolist(), "rows_spec": str(m.rows.value.sharding.spec),
            "total": float(m.total.value), "total_spec": str(m.total.value.sharding.spec)}
record("shard_map", sharded)

print("RESULT=" + json.dumps(out))
"""


_start_multi_device_early, multi = multi_device_fixtures(MULTI_DEVICE_SCRIPT)


def test_multi_device_subprocess_has_four_devices(multi):
    assert multi["devices"] == 4


def ok(multi, name):
    entry = multi[name]
    assert "ok" in entry, f"{name} raised {entry.get('error')}: {entry.get('msg')}"
    return entry["ok"]


def test_pmap_mapped_state_written_back_on_the_same_axis(multi):
    result = ok(multi, "mapped")
    assert result["shape"] == [2, 4]
    assert result["value"] == [[0.0, 1.0, 2.0, 3.0]] * 2


def test_pmap_broadcast_state_same_value_written_back(multi):
    assert ok(multi, "broadcast_same") == 10.0


def test_pmap_broadcast_state_written_per_lane_is_state_error(multi):
    entry = multi["broadcast_per_lane"]
    assert entry.get("error") == "StateError", entry
    assert "`m.v`" in entry["msg"] and "Map it" in entry["msg"]


def test_pmap_broadcast_rng_drawn_is_rng_error(multi):
    entry = multi["broadcast_rng"]
    assert entry.get("error") == "RngError", entry
    assert entry["plait"]
    for fragment in ["pmap", "`m.drop.rngs.dropout.count`", "stream 'dropout'", "split_rngs(splits=4)", "nnx.SameKeys"]:
        assert fragment in entry["msg"], entry["msg"]


def test_pmap_broadcast_rng_error_speaks_of_lanes(multi):
    msg = multi["broadcast_rng"].get("msg", "")
    assert "every lane would get the same key" in msg and "step" not in msg


def test_pmap_same_keys_rng_drawn_written_back_one_draw(multi):
    result = ok(multi, "same_keys")
    assert result == {"count": 1, "same": True}


def test_pmap_split_rngs_gives_each_device_its_own_mask(multi):
    result = ok(multi, "split_per_device")
    assert result["distinct"] == 4
    assert result["count"] == 1 and result["key_shape"] == []


def test_pmap_state_created_inside_gets_out_axes(multi):
    result = ok(multi, "created")
    assert result == {"shape": [4, 2, 2], "distinct": 4}


def test_shard_map_any_write_is_written_back_with_its_spec(multi):
    result = ok(multi, "shard_map")
    assert result["shapes"] == {"cols": [2, 2], "rows": [1]}  # local shards inside
    np.testing.assert_array_equal(result["cols"], np.full((2, 8), 3.0))
    assert result["cols_spec"] == str(jax.sharding.PartitionSpec(None, "d"))
    np.testing.assert_array_equal(result["rows"], [0.0, 1.0, 2.0, 3.0])
    assert result["rows_spec"] == str(jax.sharding.PartitionSpec("d"))
    assert result["total"] == 1.0
    assert result["total_spec"] == str(jax.sharding.PartitionSpec())
