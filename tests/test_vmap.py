"""Tests for ``nnx.vmap``: decorator and direct forms, axes, state write-back, errors."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import plait as nnx
from helpers import caught, rows_distinct
from stacks import Block, Counter, D, W, create_counters, create_linears, create_stack  # noqa: F401


class Holder(nnx.Module):
    def __init__(self, value, kind=nnx.BatchStat):
        self.v = kind(value)


def shapes(tree):
    return {jax.tree_util.keystr(p): jnp.shape(x) for p, x in jax.tree_util.tree_leaves_with_path(tree)}


# ------------------------------------------------------------------------------------------
# Construction: split_rngs + vmap(axis_size=N)
# ------------------------------------------------------------------------------------------


def test_split_rngs_vmap_constructor_params_have_leading_axis_and_distinct_init():
    rngs = nnx.Rngs(0)
    stack = create_stack(rngs)
    assert stack.linear.kernel.value.shape == (D, W, W)
    assert stack.linear.bias.value.shape == (D, W)
    for leaf in jax.tree_util.tree_leaves(nnx.state(stack, nnx.Param)):
        assert jnp.shape(leaf)[:1] == (D,)
    k = np.asarray(stack.linear.kernel.value)
    for i in range(D):
        for j in range(i + 1, D):
            assert not np.allclose(k[i], k[j]), f"layers {i} and {j} got the same init"


def test_split_rngs_vmap_dropout_rng_state_stays_unsplit_and_caller_rngs_restored():
    rngs = nnx.Rngs(0)
    key_before = jax.random.key_data(rngs.default.key.value)
    stack = create_stack(rngs)
    # Dropout keeps a reference to the caller's Rngs, whose streams are restored unsplit.
    assert stack.dropout.rngs is rngs
    rng_leaves = jax.tree_util.tree_leaves(nnx.state(stack, nnx.RngState))
    assert rng_leaves, "the stack must hold RNG state (through Dropout)"
    assert all(jnp.shape(x) == () for x in rng_leaves), shapes(nnx.state(stack, nnx.RngState))
    assert rngs.default.key.value.shape == ()
    np.testing.assert_array_equal(jax.random.key_data(rngs.default.key.value), key_before)
    # the split consumed exactly one draw, so the next construction gives new parameters
    assert int(rngs.default.count.value) == 1
    again = create_stack(rngs)
    assert int(rngs.default.count.value) == 2
    assert not np.allclose(again.linear.kernel.value, stack.linear.kernel.value)


def test_same_seed_same_stack():
    a = create_stack(nnx.Rngs(3))
    b = create_stack(nnx.Rngs(3))
    np.testing.assert_array_equal(a.linear.kernel.value, b.linear.kernel.value)


def test_by_hand_split_keys_give_every_variable_the_leading_axis():
    keys = jax.random.split(jax.random.key(0), D)
    stack = nnx.vmap(lambda k: Block(nnx.Rngs(k)), in_axes=0)(keys)
    leaves = shapes(nnx.state(stack))
    rng_paths = [p for p in leaves if "rngs" in p]
    assert rng_paths, leaves
    for path, shape in leaves.items():
        assert shape[:1] == (D,), (path, shape)
    assert stack.dropout.rngs.default.key.value.shape == (D,)
    assert stack.dropout.rngs.default.count.value.shape == (D,)
    k = np.asarray(stack.linear.kernel.value)
    assert not np.allclose(k[0], k[1]) and not np.allclose(k[1], k[2])


def test_by_hand_stack_gives_per_lane_dropout_masks():
    keys = jax.random.split(jax.random.key(1), D)
    stack = nnx.vmap(lambda k: Block(nnx.Rngs(k)))(keys)
    stack.linear.kernel.value = jnp.broadcast_to(jnp.eye(W), (D, W, W))
    stack.linear.bias.value = jnp.zeros((D, W))
    y = nnx.vmap(lambda b, x: b(x), in_axes=(0, None))(stack, jnp.ones(W))
    assert y.shape == (D, W)
    assert set(np.unique(np.asarray(y)).tolist()) <= {0.0, 2.0}
    assert rows_distinct(y != 0)
    # each lane's counter advanced and came back with its axis
    np.testing.assert_array_equal(stack.dropout.rngs.default.count.value, np.full(D, 3))


# ------------------------------------------------------------------------------------------
# Decorator and direct forms
# ------------------------------------------------------------------------------------------


def test_decorator_and_direct_call_agree():
    x = jnp.arange(D * W, dtype=jnp.float32).reshape(D, W)

    @nnx.vmap(in_axes=0)
    def deco(row):
        return jnp.sum(row**2)

    direct = nnx.vmap(lambda row: jnp.sum(row**2), in_axes=0)
    np.testing.assert_allclose(deco(x), jnp.sum(x**2, axis=1))
    np.testing.assert_allclose(direct(x), deco(x))


def test_vmap_options_are_keyword_only():
    with pytest.raises(TypeError):
        nnx.vmap(lambda x: x, 0)  # in_axes given positionally


def test_vmap_rejects_non_callable():
    msg, e = caught(nnx.TransformError, lambda: nnx.vmap(3))
    assert "function" in msg and "int" in msg
    assert isinstance(e, nnx.PlaitError)


def test_decorated_function_keeps_name():
    @nnx.vmap(in_axes=0)
    def my_function(x):
        return x

    assert my_function.__name__ == "my_function"


# ------------------------------------------------------------------------------------------
# in_axes
# ------------------------------------------------------------------------------------------


def test_in_axes_int_and_none():
    layers = create_linears(nnx.Rngs(0))
    x = jnp.arange(2 * W, dtype=jnp.float32).reshape(2, W)
    y = nnx.vmap(lambda m, x: m(x), in_axes=(0, None))(layers, x)
    assert y.shape == (D, 2, W)
    for i in range(D):
        np.testing.assert_allclose(y[i], x @ layers.kernel.value[i] + layers.bias.value[i], rtol=1e-5, atol=1e-5)


def test_in_axes_single_int_applies_to_every_argument():
    a = jnp.arange(6.0).reshape(3, 2)
    b = jnp.arange(3.0)
    y = nnx.vmap(lambda a, b: a * b, in_axes=0)(a, b)
    np.testing.assert_allclose(y, a * b[:, None])


def test_in_axes_axis_1_and_negative():
    a = jnp.arange(12.0).reshape(3, 4)
    expected = a.sum(axis=0)
    np.testing.assert_allclose(nnx.vmap(lambda c: c.sum(), in_axes=1)(a), expected)
    np.testing.assert_allclose(nnx.vmap(lambda c: c.sum(), in_axes=-1)(a), expected)
    np.testing.assert_allclose(nnx.vmap(lambda r: r.sum(), in_axes=-2)(a), a.sum(axis=1))


def test_in_axes_tuple_inside_an_argument():
    p = jnp.arange(6.0).reshape(3, 2)
    q = jnp.arange(6.0).reshape(2, 3) * 10
    y = nnx.vmap(lambda t: t[0] + t[1], in_axes=((0, 1),))((p, q))
    np.testing.assert_allclose(y, p + q.T)


def test_in_axes_list_and_dict_specs():
    a = jnp.ones((3, 2))
    b = jnp.arange(2.0)
    assert nnx.vmap(lambda a, b: a + b, in_axes=[0, None])(a, b).shape == (3, 2)
    d = {"a": jnp.arange(6.0).reshape(3, 2), "b": jnp.arange(2.0)}
    y = nnx.vmap(lambda d: d["a"] * d["b"], in_axes=({"a": 0, "b": None},))(d)
    np.testing.assert_allclose(y, d["a"] * d["b"])


def test_state_axes_on_module_argument():
    layers = create_linears(nnx.Rngs(0))
    holder = Holder(jnp.float32(5.0))  # unbatched BatchStat

    class Both(nnx.Module):
        def __init__(self):
            self.layers = layers
            self.offset = holder

    model = Both()
    x = jnp.ones(W)
    axes = nnx.StateAxes({nnx.Param: 0, ...: None})
    y = nnx.vmap(lambda m, x: m.layers(x) + m.offset.v.value, in_axes=(axes, None))(model, x)
    assert y.shape == (D, W)
    for i in range(D):
        np.testing.assert_allclose(y[i], x @ layers.kernel.value[i] + layers.bias.value[i] + 5.0, rtol=1e-5)
    assert holder.v.value.shape == ()


def test_drawing_broadcast_rng_state_is_an_error_naming_the_stream():
    stack = create_stack(nnx.Rngs(0))
    axes = nnx.StateAxes({nnx.RngState: None, ...: 0})
    count = int(stack.dropout.rngs.default.count.value)
    with pytest.raises(nnx.RngError) as info:
        nnx.vmap(lambda b, x: b(x), in_axes=(axes, None))(stack, jnp.ones(W))
    msg = str(info.value)
    assert "`b.dropout.rngs.default.count`" in msg and "every lane would get the same key" in msg
    assert "split_rngs(splits=3)" in msg and "nnx.SameKeys" in msg
    assert int(stack.dropout.rngs.default.count.value) == count  # nothing was written


def test_same_keys_gives_same_mask_per_lane_on_purpose():
    stack = create_stack(nnx.Rngs(0))
    stack.linear.kernel.value = jnp.broadcast_to(jnp.eye(W), (D, W, W))
    stack.linear.bias.value = jnp.zeros((D, W))
    axes = nnx.StateAxes({nnx.RngState: nnx.SameKeys, ...: 0})
    count = int(stack.dropout.rngs.default.count.value)
    y = nnx.vmap(lambda b, x: b(x), in_axes=(axes, None))(stack, jnp.ones(W))
    assert y.shape == (D, W)
    # one key for all lanes: every lane draws the same mask, and the count advances once
    assert np.array_equal(y[0], y[1]) and np.array_equal(y[1], y[2])
    assert int(stack.dropout.rngs.default.count.value) == count + 1


def test_split_at_call_time_gives_per_lane_masks():
    rngs = nnx.Rngs(0)
    stack = create_stack(rngs)
    stack.linear.kernel.value = jnp.broadcast_to(jnp.eye(W), (D, W, W))
    stack.linear.bias.value = jnp.zeros((D, W))

    @nnx.split_rngs(splits=D)
    @nnx.vmap(in_axes=(0, None))
    def forward(block, x):
        return block(x)

    y1 = forward(stack, jnp.ones(W))
    y2 = forward(stack, jnp.ones(W))
    assert rows_distinct(y1 != 0)
    assert not np.array_equal(y1, y2)
    assert rngs.default.key.value.shape == ()


# ------------------------------------------------------------------------------------------
# out_axes
# ------------------------------------------------------------------------------------------


def test_out_axes_zero_and_one():
    layers = create_linears(nnx.Rngs(0))
    x = jnp.ones((2, W))
    y0 = nnx.vmap(lambda m, x: m(x), in_axes=(0, None), out_axes=0)(layers, x)
    y1 = nnx.vmap(lambda m, x: m(x), in_axes=(0, None), out_axes=1)(layers, x)
    assert y0.shape == (D, 2, W)
    assert y1.shape == (2, D, W)
    np.testing.assert_allclose(jnp.moveaxis(y1, 1, 0), y0)


def test_out_axes_none_for_unbatched_output():
    layers = create_linears(nnx.Rngs(0))
    x = jnp.arange(W, dtype=jnp.float32)
    y = nnx.vmap(lambda m, x: x * 2, in_axes=(0, None), out_axes=None)(layers, x)
    assert y.shape == (W,)
    np.testing.assert_allclose(y, x * 2)


def test_out_axes_tuple_per_output():
    a = jnp.arange(3.0)
    b = jnp.arange(2.0)
    y, z = nnx.vmap(lambda a, b: (a * b, b + 1), in_axes=(0, None), out_axes=(1, None))(a, b)
    assert y.shape == (2, 3) and z.shape == (2,)
    np.testing.assert_allclose(y, jnp.outer(b, a))
    np.testing.assert_allclose(z, b + 1)


def test_module_created_inside_takes_out_axes():
    keys = jax.random.split(jax.random.key(0), D)
    m = nnx.vmap(lambda k: nnx.Linear(W, 2, rngs=nnx.Rngs(k)), out_axes=1)(keys)
    assert m.kernel.value.shape == (W, D, 2)
    assert m.bias.value.shape == (2, D)


def test_module_created_inside_with_out_axes_none():
    m = nnx.vmap(lambda x: nnx.Linear(2, 2, rngs=nnx.Rngs(0)), in_axes=0, out_axes=None)(jnp.ones(D))
    assert m.kernel.value.shape == (2, 2)
    np.testing.assert_allclose(m.kernel.value, nnx.Linear(2, 2, rngs=nnx.Rngs(0)).kernel.value)


def test_out_axes_tuple_longer_than_output_is_an_error():
    with pytest.raises(nnx.PlaitError):
        nnx.vmap(lambda x: (x, x), out_axes=(0, 0, 0))(jnp.ones(3))


# ------------------------------------------------------------------------------------------
# State written inside
# ------------------------------------------------------------------------------------------


def test_written_mapped_state_comes_back_with_its_axis():
    counters = create_counters(nnx.Rngs(0))
    assert counters.count.value.shape == (D,)

    def bump(m, i):
        m.count.value = m.count.value + i

    nnx.vmap(bump, in_axes=(0, 0))(counters, jnp.arange(D, dtype=jnp.int32))
    np.testing.assert_array_equal(counters.count.value, [0, 1, 2])
    y = nnx.vmap(lambda m, x: m(x), in_axes=(0, None))(counters, jnp.ones(W))
    assert y.shape == (D, W)
    np.testing.assert_array_equal(counters.count.value, [1, 2, 3])


@pytest.mark.parametrize("axis", [1, -1])
def test_written_state_on_axis_1_comes_back_on_axis_1(axis):
    h = Holder(jnp.zeros((2, D)))

    def bump(m, i):
        m.v.value = m.v.value + i

    nnx.vmap(bump, in_axes=(axis, 0))(h, jnp.arange(D, dtype=jnp.float32))
    assert h.v.value.shape == (2, D)
    np.testing.assert_allclose(h.v.value, [[0.0, 1.0, 2.0], [0.0, 1.0, 2.0]])


def test_state_axes_out_axes_do_not_move_input_state():
    h = Holder(jnp.zeros((D, 2)))

    def f(m, i):
        m.v.value = m.v.value + i
        return m.v.value * 10

    y = nnx.vmap(f, in_axes=(0, 0), out_axes=1)(h, jnp.arange(D, dtype=jnp.float32))
    assert h.v.value.shape == (D, 2)
    np.testing.assert_allclose(h.v.value[:, 0], [0.0, 1.0, 2.0])
    assert y.shape == (2, D)


def test_broadcast_state_written_with_same_value_is_kept():
    h = Holder(jnp.float32(1.0))

    def f(m, x):
        m.v.value = m.v.value + 1.0
        return x * m.v.value

    y = nnx.vmap(f, in_axes=(None, 0))(h, jnp.ones(D))
    np.testing.assert_allclose(y, jnp.full(D, 2.0))
    assert h.v.value.shape == ()
    assert float(h.v.value) == 2.0


def test_broadcast_state_written_per_lane_is_state_error():
    h = Holder(jnp.float32(0.0))

    def f(m, i):
        m.v.value = m.v.value + i

    msg, e = caught(nnx.StateError, lambda: nnx.vmap(f, in_axes=(None, 0))(h, jnp.arange(3.0)))
    assert "m.v" in msg and "BatchStat" in msg
    assert isinstance(e, nnx.PlaitError)
    assert float(h.v.value) == 0.0


def test_new_variable_added_inside_gets_the_argument_axis():
    h = Holder(jnp.zeros((D, 2)))

    def f(m, x):
        m.extra = nnx.BatchStat(x * 2)

    nnx.vmap(f)(h, jnp.arange(float(D)))
    np.testing.assert_allclose(h.extra.value, [0.0, 2.0, 4.0])


def test_returned_input_module_is_the_same_object():
    counters = create_counters(nnx.Rngs(0))

    def f(m, x):
        m(x)
        return m

    out = nnx.vmap(f, in_axes=(0, None))(counters, jnp.ones(W))
    assert out is counters
    np.testing.assert_array_equal(counters.count.value, [1, 1, 1])


def test_returned_input_and_new_module():
    h = Holder(jnp.float32(0.0))
    keys = jax.random.split(jax.random.key(0), D)

    def f(m, k):
        return m, nnx.Linear(2, 2, rngs=nnx.Rngs(k))

    same, lin = nnx.vmap(f, in_axes=(None, 0))(h, keys)
    assert same is h
    assert lin.kernel.value.shape == (D, 2, 2)


# ------------------------------------------------------------------------------------------
# Keyword arguments and axis_name
# ------------------------------------------------------------------------------------------


def test_keyword_arguments_are_mapped_on_axis_0():
    a = jnp.ones(D)
    b = jnp.arange(float(D))
    y = nnx.vmap(lambda a, *, b: a + b, in_axes=0)(a, b=b)
    np.testing.assert_allclose(y, a + b)
    msg, _ = caught(nnx.AxisError, lambda: nnx.vmap(lambda a, *, b: a + b)(a, b=jnp.ones(D + 1)))
    assert "`b`" in msg and "`a`" in msg


def test_rngs_as_keyword_argument():
    @nnx.split_rngs(splits=D)
    @nnx.vmap(axis_size=D)
    def make(*, rngs):
        return nnx.Linear(W, W, rngs=rngs)

    rngs = nnx.Rngs(0)
    m = make(rngs=rngs)
    assert m.kernel.value.shape == (D, W, W)
    assert rngs.default.key.value.shape == ()


def test_axis_name_with_psum():
    x = jnp.arange(float(D))
    y = nnx.vmap(lambda a: jax.lax.psum(a, "i"), axis_name="i")(x)
    np.testing.assert_allclose(y, jnp.full(D, x.sum()))
    y2 = nnx.vmap(lambda a: a / jax.lax.psum(a, "batch"), axis_name="batch")(x + 1)
    np.testing.assert_allclose(y2, (x + 1) / (x + 1).sum(), rtol=1e-6)


def test_axis_name_with_module_and_psum():
    layers = create_linears(nnx.Rngs(0))
    x = jnp.ones(W)
    axes = nnx.StateAxes({nnx.Param: 0, ...: None})
    y = nnx.vmap(lambda m, x: jax.lax.psum(m(x), "l"), in_axes=(axes, None), axis_name="l", out_axes=None)(layers, x)
    expected = sum(x @ layers.kernel.value[i] + layers.bias.value[i] for i in range(D))
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_axis_size_without_mapped_inputs():
    y = nnx.vmap(lambda a: a * 2, in_axes=None, axis_size=D)(jnp.ones(2))
    assert y.shape == (D, 2)


# ------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------


def test_unsplit_rng_stream_error_names_path_axis_and_split_rngs():
    @nnx.vmap(axis_size=D)
    def make(rngs):
        return nnx.Linear(W, W, rngs=rngs)

    rngs = nnx.Rngs(0)
    msg, e = caught(nnx.AxisError, lambda: make(rngs))
    assert "rngs.default.key" in msg
    assert "axis 0" in msg
    assert "split_rngs" in msg
    assert "RngKey" in msg
    assert isinstance(e, nnx.PlaitError) and isinstance(e, ValueError)
    # nothing was consumed or changed
    assert rngs.default.key.value.shape == ()
    assert int(rngs.default.count.value) == 0


def test_old_style_partial_vmap_fails_pointing_to_split_rngs():
    @partial(nnx.vmap, axis_size=D)
    def make(rngs):
        return nnx.Linear(W, W, rngs=rngs)

    msg, _ = caught(nnx.AxisError, lambda: make(nnx.Rngs(0)))
    assert "split_rngs" in msg


def test_unsplit_rng_inside_module_names_nested_path():
    stack = create_stack(nnx.Rngs(0))
    msg, _ = caught(nnx.AxisError, lambda: nnx.vmap(lambda b, x: b(x), in_axes=(0, None))(stack, jnp.ones(W)))
    assert "b.dropout.rngs.default.key" in msg
    assert "axis 0" in msg and "split_rngs" in msg


def test_rank_too_small_names_path_type_and_shape():
    class Scalar(nnx.Module):
        def __init__(self):
            self.scale = nnx.Param(jnp.ones(()))

    msg, e = caught(nnx.AxisError, lambda: nnx.vmap(lambda m, x: m.scale.value * x)(Scalar(), jnp.ones(D)))
    assert "m.scale" in msg and "Param" in msg and "shape ()" in msg
    assert "axis 0" in msg


@pytest.mark.parametrize("axis", [2, -3])
def test_rank_too_small_for_array_argument(axis):
    msg, _ = caught(nnx.AxisError, lambda: nnx.vmap(lambda a: a, in_axes=axis)(jnp.ones((3, 2))))
    assert "`a`" in msg and "(3, 2)" in msg and f"axis {axis}" in msg


def test_mismatched_sizes_between_arguments_names_both():
    msg, e = caught(nnx.AxisError, lambda: nnx.vmap(lambda a, b: a + b)(jnp.ones((3, 2)), jnp.ones((4, 2))))
    assert "`a`" in msg and "`b`" in msg
    assert "3" in msg and "4" in msg
    assert isinstance(e, nnx.PlaitError)


def test_mismatched_sizes_against_axis_size_names_both():
    msg, _ = caught(nnx.AxisError, lambda: nnx.vmap(lambda a: a, axis_size=5)(jnp.ones((3, 2))))
    assert "`a`" in msg and "axis_size=5" in msg


def test_split_count_against_axis_size_names_both_and_restores_rngs():
    make = nnx.split_rngs(splits=D)(nnx.vmap(lambda rngs: nnx.Linear(2, 2, rngs=rngs), axis_size=D + 1))
    rngs = nnx.Rngs(0)
    msg, _ = caught(nnx.AxisError, lambda: make(rngs))
    assert "rngs.default.key" in msg and f"axis_size={D + 1}" in msg
    assert rngs.default.key.value.shape == ()


def test_module_state_size_mismatch_names_both():
    layers = create_linears(nnx.Rngs(0))
    msg, _ = caught(nnx.AxisError, lambda: nnx.vmap(lambda m, x: m(x))(layers, jnp.ones((D + 1, W))))
    assert "m.bias" in msg and "`x`" in msg


def test_in_axes_tuple_of_wrong_length():
    msg, e = caught(nnx.TransformError, lambda: nnx.vmap(lambda a: a, in_axes=(0, 0))(jnp.ones(3)))
    assert "in_axes" in msg and "2" in msg and "1" in msg
    assert isinstance(e, nnx.PlaitError)


def test_in_axes_spec_deeper_than_value():
    msg, _ = caught(nnx.AxisError, lambda: nnx.vmap(lambda a: a, in_axes=((0, 0),))(jnp.ones((3, 2))))
    assert "`a`" in msg


def test_state_axes_for_non_module_argument():
    msg, e = caught(nnx.TransformError, lambda: nnx.vmap(lambda a: a, in_axes=(nnx.StateAxes({...: 0}),))(jnp.ones(3)))
    assert "StateAxes" in msg and "not a module" in msg and "in_axes[0]" in msg
    assert isinstance(e, nnx.PlaitError)


def test_state_axes_not_covering_every_variable_names_it():
    counters = create_counters(nnx.Rngs(0))
    axes = nnx.StateAxes({nnx.Param: 0})
    msg, e = caught(nnx.AxisError, lambda: nnx.vmap(lambda m, x: m.lin(x), in_axes=(axes, None))(counters, jnp.ones(W)))
    assert "m.count" in msg and "BatchStat" in msg
    assert isinstance(e, nnx.PlaitError)


def test_nothing_mapped_and_no_axis_size():
    msg, e = caught(nnx.TransformError, lambda: nnx.vmap(lambda a: a, in_axes=None)(jnp.ones(3)))
    assert "axis_size" in msg
    assert isinstance(e, nnx.PlaitError)


def test_carry_is_rejected_in_vmap():
    msg, e = caught(nnx.TransformError, lambda: nnx.vmap(lambda a: a, in_axes=nnx.Carry)(jnp.ones(3)))
    assert "scan" in msg


@pytest.mark.parametrize("direct", [True, False])
def test_removed_split_rngs_kwarg_shows_new_spelling(direct):
    def f(rngs):
        return nnx.Linear(4, 4, rngs=rngs)

    with pytest.raises(TypeError) as info:
        if direct:
            nnx.vmap(f, axis_size=3, split_rngs=True)
        else:
            nnx.vmap(axis_size=3, split_rngs=True)
    msg = str(info.value)
    assert not isinstance(info.value, nnx.PlaitError)
    assert "@nnx.split_rngs(splits=" in msg and "@nnx.vmap(" in msg


@pytest.mark.parametrize("direct", [True, False])
def test_removed_state_axes_kwarg_shows_new_spelling(direct):
    with pytest.raises(TypeError) as info:
        if direct:
            nnx.vmap(lambda m: m, state_axes={nnx.Param: 0})
        else:
            nnx.vmap(state_axes={nnx.Param: 0})
    msg = str(info.value)
    assert "nnx.StateAxes(" in msg and "in_axes" in msg


def test_unknown_kwarg_is_type_error():
    with pytest.raises(TypeError, match="bogus"):
        nnx.vmap(lambda x: x, bogus=1)
