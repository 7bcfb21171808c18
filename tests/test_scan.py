"""Tests for ``nnx.scan``: the seed 000 stack, carries, axes, state write-back, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import plait as nnx
from helpers import caught, rows_distinct
from stacks import Block, Counter, D, W, create_counters, create_linears, create_stack  # noqa: F401


class Holder(nnx.Module):
    def __init__(self, value):
        self.v = nnx.BatchStat(value)


def identity_stack(stack):
    """Identity kernels, zero biases: a layer's output on ones is its dropout mask times 2."""
    stack.linear.kernel.value = jnp.broadcast_to(jnp.eye(W), (D, W, W))
    stack.linear.bias.value = jnp.zeros((D, W))
    return stack


def by_hand(x, layers):
    for i in range(D):
        x = x @ layers.kernel.value[i] + layers.bias.value[i]
    return x


# ------------------------------------------------------------------------------------------
# Seed 000: the Linear + Dropout stack
# ------------------------------------------------------------------------------------------


def test_seed_stack_plain_scan_fails_with_actionable_axis_error():
    stack = create_stack(nnx.Rngs(0))

    @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
    def scan_over_stack(x, layer):
        return layer(x)

    msg, e = caught(nnx.AxisError, lambda: scan_over_stack(jnp.ones(W), stack))
    assert isinstance(e, nnx.PlaitError)
    assert "dropout.rngs.default.key" in msg
    assert "layer.dropout.rngs.default.key" in msg  # rooted at the function's argument name
    assert "axis 0" in msg
    assert "RngKey" in msg and "shape ()" in msg
    assert "split_rngs" in msg
    assert "Carry" in msg and "StateAxes" in msg
    # the failed call changed nothing
    assert stack.dropout.rngs.default.key.value.shape == ()
    assert stack.linear.kernel.value.shape == (D, W, W)


def test_seed_stack_fix1_split_rngs_above_scan():
    rngs = nnx.Rngs(0)
    stack = identity_stack(create_stack(rngs))

    @nnx.split_rngs(splits=D)
    @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=(nnx.Carry, 0))
    def step(x, layer):
        return x, layer(x)

    x1, y1 = step(jnp.ones(W), stack)
    count = int(rngs.default.count.value)
    _, y2 = step(jnp.ones(W), stack)
    np.testing.assert_array_equal(x1, jnp.ones(W))
    assert y1.shape == (D, W)
    assert set(np.unique(np.asarray(y1)).tolist()) <= {0.0, 2.0}
    assert rows_distinct(y1 != 0), "every layer must draw its own mask"
    assert not np.array_equal(y1, y2), "a second call must draw new masks"
    # the streams are restored unsplit; each call's split consumed one draw
    assert rngs.default.key.value.shape == ()
    assert int(rngs.default.count.value) == count + 1


def test_seed_stack_fix2_carry_rng_state():
    rngs = nnx.Rngs(0)
    stack = identity_stack(create_stack(rngs))
    state_axes = nnx.StateAxes({nnx.RngState: nnx.Carry, ...: 0})

    @nnx.scan(in_axes=(nnx.Carry, state_axes), out_axes=(nnx.Carry, 0))
    def step(x, layer):
        return x, layer(x)

    before = int(rngs.default.count.value)
    _, y1 = step(jnp.ones(W), stack)
    assert int(rngs.default.count.value) == before + D, "one draw per layer, carried out"
    _, y2 = step(jnp.ones(W), stack)
    assert int(rngs.default.count.value) == before + 2 * D
    assert y1.shape == (D, W)
    assert rows_distinct(y1 != 0), "every layer must draw its own mask"
    assert not np.array_equal(y1, y2), "a second call must draw new masks"
    assert rngs.default.key.value.shape == ()
    assert stack.linear.kernel.value.shape == (D, W, W)


def test_seed_stack_fix2_masks_match_sequential_draws():
    """Carrying the RNG state is the same as drawing from the stream once per layer, in order."""
    rngs = nnx.Rngs(0)
    stack = identity_stack(create_stack(rngs))
    state_axes = nnx.StateAxes({nnx.RngState: nnx.Carry, ...: 0})
    _, y = nnx.scan(lambda x, layer: (x, layer(x)), in_axes=(nnx.Carry, state_axes))(jnp.ones(W), stack)
    # the same stream, advanced past the draw the construction's split consumed
    twin = nnx.Rngs(0)
    twin.default()
    drop = nnx.Dropout(0.5, rngs=twin)
    expected = np.stack([np.asarray(drop(jnp.ones(W))) for _ in range(D)])
    np.testing.assert_array_equal(np.asarray(y), expected)


def test_by_hand_split_stack_scans_without_a_fix():
    keys = jax.random.split(jax.random.key(0), D)
    stack = identity_stack(nnx.vmap(lambda k: Block(nnx.Rngs(k)))(keys))
    step = nnx.scan(lambda x, layer: (x, layer(x)))
    _, y1 = step(jnp.ones(W), stack)
    np.testing.assert_array_equal(stack.dropout.rngs.default.count.value, np.full(D, 3))
    _, y2 = step(jnp.ones(W), stack)
    np.testing.assert_array_equal(stack.dropout.rngs.default.count.value, np.full(D, 4))
    assert rows_distinct(y1 != 0)
    assert not np.array_equal(y1, y2)


# ------------------------------------------------------------------------------------------
# Carries and out_axes
# ------------------------------------------------------------------------------------------


def test_scan_equals_python_loop_over_layer_slices():
    layers = create_linears(nnx.Rngs(0))
    x = jnp.arange(W, dtype=jnp.float32) / W

    @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
    def forward(h, layer):
        return layer(h)

    np.testing.assert_allclose(forward(x, layers), by_hand(x, layers), rtol=1e-5, atol=1e-5)
    # the layers are untouched
    assert layers.kernel.value.shape == (D, W, W)


def test_scan_equals_loop_with_batched_input():
    layers = create_linears(nnx.Rngs(4))
    x = jax.random.normal(jax.random.key(0), (2, W))
    y = nnx.scan(lambda h, layer: layer(h), in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)(x, layers)
    np.testing.assert_allclose(y, by_hand(x, layers), rtol=1e-5, atol=1e-5)


def test_plain_array_carry_and_default_axes():
    xs = jnp.arange(1.0, 4.0)
    carry, ys = nnx.scan(lambda c, a: (c + a, c * a))(jnp.float32(1.0), xs)
    # c: 1 -> 2 -> 4 -> 7; ys: 1*1, 2*2, 4*3
    assert float(carry) == 7.0
    np.testing.assert_allclose(ys, [1.0, 4.0, 12.0])


def test_tuple_carry():
    xs = jnp.arange(1.0, 4.0)
    (s, p), ys = nnx.scan(lambda c, a: ((c[0] + a, c[1] * a), a * 2))((jnp.float32(0), jnp.float32(1)), xs)
    assert float(s) == 6.0 and float(p) == 6.0
    np.testing.assert_allclose(ys, [2.0, 4.0, 6.0])


def test_out_axes_carry_only():
    out = nnx.scan(lambda c, a: c + a, in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)(jnp.float32(0), jnp.arange(4.0))
    assert float(out) == 6.0


def test_out_axes_carry_first_vs_carry_second():
    xs = jnp.arange(1.0, 4.0)
    f = lambda c, a: (c * a, c + a)  # noqa: E731
    c1, y1 = nnx.scan(f, out_axes=(nnx.Carry, 0))(jnp.float32(1), xs)
    # carry = c * a: 1 -> 1 -> 2 -> 6; y = c + a with the incoming c: 2, 3, 5
    assert float(c1) == 6.0
    np.testing.assert_allclose(y1, [2.0, 3.0, 5.0])
    y2, c2 = nnx.scan(f, out_axes=(0, nnx.Carry))(jnp.float32(1), xs)
    # carry = c + a: 1 -> 2 -> 4 -> 7; y = c * a with the incoming c: 1, 4, 12
    assert float(c2) == 7.0
    np.testing.assert_allclose(y2, [1.0, 4.0, 12.0])


def test_out_axes_one_stacks_on_axis_1():
    _, ys = nnx.scan(lambda c, a: (c, jnp.stack([a, -a])), out_axes=(nnx.Carry, 1))(jnp.float32(0), jnp.arange(3.0))
    assert ys.shape == (2, 3)
    np.testing.assert_allclose(ys, [[0.0, 1.0, 2.0], [0.0, -1.0, -2.0]])


def test_in_axes_one_scans_over_axis_1():
    xs = jnp.arange(6.0).reshape(2, 3)
    c, ys = nnx.scan(lambda c, a: (c + a, a), in_axes=(nnx.Carry, 1))(jnp.zeros(2), xs)
    np.testing.assert_allclose(c, xs.sum(axis=1))
    np.testing.assert_allclose(ys, xs.T)


def test_broadcast_argument_and_keyword_argument():
    xs = jnp.arange(3.0)
    f = lambda c, a, b: (c + a * b, a)  # noqa: E731
    c, _ = nnx.scan(f, in_axes=(nnx.Carry, 0, None))(jnp.float32(0), xs, jnp.float32(2))
    assert float(c) == 6.0
    c, _ = nnx.scan(lambda c, a, *, s: (c + a * s, a))(jnp.float32(0), xs, s=jnp.float32(3))
    assert float(c) == 9.0


def test_pure_map_without_carry():
    np.testing.assert_allclose(nnx.scan(lambda a: a * 2, in_axes=0, out_axes=0)(jnp.arange(3.0)), [0.0, 2.0, 4.0])


def test_reverse_runs_last_step_first():
    xs = jnp.arange(3.0)
    c, ys = nnx.scan(lambda c, a: (c + a, c), reverse=True)(jnp.float32(0), xs)
    # steps run a=2, then 1, then 0; ys stays aligned with xs
    np.testing.assert_allclose(ys, [3.0, 2.0, 0.0])
    assert float(c) == 3.0
    _, order = nnx.scan(lambda c, a: (c + 1, c), reverse=True)(jnp.int32(0), xs)
    np.testing.assert_array_equal(order, [2, 1, 0])


def test_reverse_over_layers_is_the_reversed_loop():
    layers = create_linears(nnx.Rngs(0))
    x = jnp.ones(W)
    y = nnx.scan(lambda h, layer: layer(h), in_axes=(nnx.Carry, 0), out_axes=nnx.Carry, reverse=True)(x, layers)
    expected = x
    for i in reversed(range(D)):
        expected = expected @ layers.kernel.value[i] + layers.bias.value[i]
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    assert not np.allclose(y, by_hand(x, layers))


def test_length_with_no_scanned_input():
    c, ys = nnx.scan(lambda c: (c + 1, c * 2), in_axes=(nnx.Carry,), out_axes=(nnx.Carry, 0), length=4)(jnp.float32(0))
    assert float(c) == 4.0
    np.testing.assert_allclose(ys, [0.0, 2.0, 4.0, 6.0])
    assert float(nnx.scan(lambda c: c + 1, in_axes=nnx.Carry, out_axes=nnx.Carry, length=5)(jnp.float32(0))) == 5.0


@pytest.mark.parametrize("unroll", [2, True])
def test_unroll_gives_same_result(unroll):
    layers = create_linears(nnx.Rngs(0))
    x = jnp.ones(W)
    kw = dict(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
    y1 = nnx.scan(lambda h, layer: layer(h), **kw)(x, layers)
    y2 = nnx.scan(lambda h, layer: layer(h), unroll=unroll, **kw)(x, layers)
    np.testing.assert_allclose(y1, y2, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------------------
# State written inside a step
# ------------------------------------------------------------------------------------------


def test_scanned_state_written_in_step_comes_back_stacked():
    counters = create_counters(nnx.Rngs(0))
    assert counters.count.value.shape == (D,)

    def step(i, layer):
        layer.count.value = layer.count.value + i
        return i + 1

    out = nnx.scan(step, in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)(jnp.int32(10), counters)
    assert int(out) == 10 + D
    np.testing.assert_array_equal(counters.count.value, [10, 11, 12])

    def bump(h, layer):
        layer.count.value = layer.count.value + 1
        return layer.lin(h)

    nnx.scan(bump, in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)(jnp.ones(W), counters)
    np.testing.assert_array_equal(counters.count.value, [11, 12, 13])


def test_scanned_state_written_with_reverse_stays_aligned():
    h = Holder(jnp.zeros(D))

    def step(i, m):
        m.v.value = m.v.value + i
        return i + 1

    nnx.scan(step, in_axes=(nnx.Carry, 0), out_axes=nnx.Carry, reverse=True)(jnp.float32(0), h)
    np.testing.assert_allclose(h.v.value, [2.0, 1.0, 0.0])


def test_scanned_state_on_axis_1_written_comes_back_on_axis_1():
    h = Holder(jnp.zeros((2, D)))

    def step(i, m):
        m.v.value = m.v.value + i
        return i + 1

    nnx.scan(step, in_axes=(nnx.Carry, 1), out_axes=nnx.Carry)(jnp.float32(0), h)
    assert h.v.value.shape == (2, D)
    np.testing.assert_allclose(h.v.value, [[0.0, 1.0, 2.0], [0.0, 1.0, 2.0]])


def test_carried_module_comes_back_with_final_value_and_identity():
    acc = Holder(jnp.float32(0))

    def step(a, v):
        a.v.value = a.v.value + v
        return a, a.v.value

    out, ys = nnx.scan(step)(acc, jnp.arange(1.0, 4.0))
    assert out is acc
    assert float(acc.v.value) == 6.0
    np.testing.assert_allclose(ys, [1.0, 3.0, 6.0])


def test_state_axes_carried_counter_has_final_value():
    counters = create_counters(nnx.Rngs(0))
    counters.count.value = jnp.int32(5)  # one counter for the whole stack
    axes = nnx.StateAxes({nnx.BatchStat: nnx.Carry, ...: 0})

    def step(h, layer):
        layer.count.value = layer.count.value + 1
        return layer.lin(h)

    y = nnx.scan(step, in_axes=(nnx.Carry, axes), out_axes=nnx.Carry)(jnp.ones(W), counters)
    assert counters.count.value.shape == ()
    assert int(counters.count.value) == 5 + D
    assert y.shape == (W,)


def test_scan_inside_jit():
    counters = create_counters(nnx.Rngs(0))

    def step(h, layer):
        layer.count.value = layer.count.value + 1
        return layer.lin(h)

    @nnx.jit
    def forward(model, x):
        return nnx.scan(step, in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)(x, model)

    x = jnp.ones(W)
    y1 = forward(counters, x)
    np.testing.assert_allclose(y1, by_hand(x, counters.lin), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(counters.count.value, [1, 1, 1])
    y2 = forward(counters, x)
    np.testing.assert_allclose(y1, y2)
    np.testing.assert_array_equal(counters.count.value, [2, 2, 2])


@pytest.mark.parametrize("fix", [1, 2])
def test_seed_fixes_inside_jit(fix):
    rngs = nnx.Rngs(0)
    stack = identity_stack(create_stack(rngs))

    if fix == 1:

        @nnx.jit
        def run(stack, x):
            @nnx.split_rngs(splits=D)
            @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=(nnx.Carry, 0))
            def f(x, layer):
                return x, layer(x)

            return f(x, stack)[1]

    else:

        @nnx.jit
        def run(stack, x):
            axes = nnx.StateAxes({nnx.RngState: nnx.Carry, ...: 0})

            @nnx.scan(in_axes=(nnx.Carry, axes), out_axes=(nnx.Carry, 0))
            def f(x, layer):
                return x, layer(x)

            return f(x, stack)[1]

    c0 = int(rngs.default.count.value)
    y1 = run(stack, jnp.ones(W))
    c1 = int(rngs.default.count.value)
    y2 = run(stack, jnp.ones(W))
    assert c1 == c0 + (1 if fix == 1 else D)
    assert rows_distinct(y1 != 0)
    assert not np.array_equal(y1, y2)
    assert rngs.default.key.value.shape == ()


# ------------------------------------------------------------------------------------------
# Creating modules inside scan
# ------------------------------------------------------------------------------------------


def test_scan_creates_stacked_module_from_carried_rngs():
    rngs = nnx.Rngs(0)

    def make(r):
        return r, nnx.Linear(W, W, rngs=r)

    r_out, lin = nnx.scan(make, in_axes=(nnx.Carry,), out_axes=(nnx.Carry, 0), length=D)(rngs)
    assert r_out is rngs
    assert isinstance(lin, nnx.Linear)
    assert lin.kernel.value.shape == (D, W, W) and lin.bias.value.shape == (D, W)
    k = np.asarray(lin.kernel.value)
    assert not np.allclose(k[0], k[1]) and not np.allclose(k[1], k[2])
    assert int(rngs.default.count.value) == 2 * D  # kernel and bias draw once per step
    # the stacked module scans like any other stack
    x = jnp.ones(W)
    y = nnx.scan(lambda h, layer: layer(h), in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)(x, lin)
    np.testing.assert_allclose(y, by_hand(x, lin), rtol=1e-5, atol=1e-5)


def test_scan_creates_stacked_module_from_scanned_keys():
    keys = jax.random.split(jax.random.key(0), D)
    _, lin = nnx.scan(lambda c, k: (c, nnx.Linear(W, 2, rngs=nnx.Rngs(k))))(jnp.float32(0), keys)
    assert lin.kernel.value.shape == (D, W, 2)
    for i in range(D):
        np.testing.assert_allclose(lin.kernel.value[i], nnx.Linear(W, 2, rngs=nnx.Rngs(keys[i])).kernel.value)


# ------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------


def test_carry_twice_in_in_axes():
    msg, e = caught(
        nnx.TransformError,
        lambda: nnx.scan(lambda a, b: (a, b), in_axes=(nnx.Carry, nnx.Carry))(jnp.zeros(()), jnp.zeros(())),
    )
    assert "Carry" in msg and "2 times" in msg and "in_axes" in msg
    assert isinstance(e, nnx.PlaitError)


def test_carry_twice_in_out_axes():
    msg, _ = caught(
        nnx.TransformError,
        lambda: nnx.scan(lambda a, b: (a, b), out_axes=(nnx.Carry, nnx.Carry))(jnp.zeros(()), jnp.zeros(3)),
    )
    assert "Carry" in msg and "out_axes" in msg


def test_carry_in_in_axes_but_not_out_axes():
    msg, e = caught(
        nnx.TransformError,
        lambda: nnx.scan(lambda a, b: (a, b), in_axes=(nnx.Carry, 0), out_axes=0)(jnp.zeros(()), jnp.zeros(3)),
    )
    assert "in_axes has nnx.Carry but out_axes does not" in msg
    assert isinstance(e, nnx.PlaitError)


def test_carry_in_out_axes_but_not_in_axes():
    msg, _ = caught(
        nnx.TransformError,
        lambda: nnx.scan(lambda a, b: (a, b), in_axes=(0, 0))(jnp.zeros(3), jnp.zeros(3)),
    )
    assert "out_axes has nnx.Carry but in_axes does not" in msg


def test_carry_changing_shape_names_the_carry():
    msg, e = caught(
        nnx.TransformError,
        lambda: nnx.scan(lambda h, b: (jnp.concatenate([h, h]), b))(jnp.zeros(2), jnp.zeros(3)),
    )
    assert "`h`" in msg and "(2,)" in msg and "(4,)" in msg
    assert isinstance(e, nnx.PlaitError)


def test_carry_changing_dtype_names_the_carry():
    msg, _ = caught(
        nnx.TransformError,
        lambda: nnx.scan(lambda h, b: (h.astype(jnp.int32), b))(jnp.zeros(2), jnp.zeros(3)),
    )
    assert "`h`" in msg and "float32" in msg and "int32" in msg


def test_carry_tuple_member_changing_shape_names_it():
    msg, _ = caught(
        nnx.TransformError,
        lambda: nnx.scan(lambda c, b: ((c[0], jnp.ones(3)), b))((jnp.zeros(2), jnp.zeros(2)), jnp.zeros(3)),
    )
    assert "c.1" in msg and "(2,)" in msg and "(3,)" in msg


@pytest.mark.parametrize("change", ["dtype", "shape"])
def test_carried_module_variable_changing_dtype_or_shape_names_it(change):
    def step(a, v):
        if change == "dtype":
            a.v.value = a.v.value.astype(jnp.int32)
        else:
            a.v.value = jnp.stack([a.v.value, v])
        return a, v

    msg, e = caught(nnx.PlaitError, lambda: nnx.scan(step)(Holder(jnp.float32(0)), jnp.arange(3.0)))
    assert "a.v" in msg and "BatchStat" in msg


def test_state_axes_carried_variable_changing_dtype_names_it():
    counters = create_counters(nnx.Rngs(0))
    counters.count.value = jnp.int32(0)
    axes = nnx.StateAxes({nnx.BatchStat: nnx.Carry, ...: 0})

    def step(h, layer):
        layer.count.value = layer.count.value.astype(jnp.float32)
        return layer.lin(h)

    msg, _ = caught(
        nnx.PlaitError,
        lambda: nnx.scan(step, in_axes=(nnx.Carry, axes), out_axes=nnx.Carry)(jnp.ones(W), counters),
    )
    assert "layer.count" in msg


def test_carry_changing_structure():
    msg, e = caught(
        nnx.TransformError,
        lambda: nnx.scan(lambda h, b: ((h, h), b))(jnp.zeros(2), jnp.zeros(3)),
    )
    assert "carry" in msg and "structure" in msg
    assert "an array" in msg and "tuple" in msg
    assert isinstance(e, nnx.PlaitError)


def test_tuple_carry_losing_an_element():
    msg, _ = caught(
        nnx.TransformError,
        lambda: nnx.scan(lambda c, b: ((c[0],), b))((jnp.zeros(()), jnp.zeros(())), jnp.zeros(3)),
    )
    assert "changed structure" in msg and "`c`" in msg and "tuple of 1" in msg


def test_mismatched_lengths_between_scanned_arguments_names_both():
    msg, e = caught(
        nnx.AxisError,
        lambda: nnx.scan(lambda h, a, b: (h, a + b), in_axes=(nnx.Carry, 0, 0))(
            jnp.zeros(()), jnp.zeros(3), jnp.zeros(4)
        ),
    )
    assert "`a`" in msg and "`b`" in msg and "3" in msg and "4" in msg
    assert isinstance(e, nnx.PlaitError)


def test_mismatched_length_against_length_kwarg():
    msg, _ = caught(nnx.AxisError, lambda: nnx.scan(lambda h, a: (h, a), length=5)(jnp.zeros(()), jnp.zeros(3)))
    assert "`a`" in msg and "length=5" in msg


def test_mismatched_lengths_module_and_array_names_both():
    layers = create_linears(nnx.Rngs(0))
    msg, _ = caught(
        nnx.AxisError,
        lambda: nnx.scan(lambda h, m, a: (h, a), in_axes=(nnx.Carry, 0, 0))(jnp.zeros(W), layers, jnp.zeros(D + 1)),
    )
    assert "m.bias" in msg and "`a`" in msg


def test_nothing_scanned_and_no_length():
    msg, e = caught(nnx.TransformError, lambda: nnx.scan(lambda h: (h, h), in_axes=(nnx.Carry,))(jnp.zeros(())))
    assert "length" in msg
    assert isinstance(e, nnx.PlaitError)


def test_rank_too_small_names_path_type_and_shape():
    class Scalar(nnx.Module):
        def __init__(self):
            self.scale = nnx.Param(jnp.ones(()))

    msg, _ = caught(nnx.AxisError, lambda: nnx.scan(lambda h, m: (h, m.scale.value))(jnp.zeros(()), Scalar()))
    assert "m.scale" in msg and "Param" in msg and "shape ()" in msg and "axis 0" in msg


def test_writing_broadcast_state_is_state_error_naming_variable():
    counters = create_counters(nnx.Rngs(0))
    axes = nnx.StateAxes({nnx.BatchStat: None, ...: 0})
    before = np.asarray(counters.count.value)

    def step(h, layer):
        layer.count.value = layer.count.value + 1
        return layer.lin(h)

    msg, e = caught(
        nnx.StateError,
        lambda: nnx.scan(step, in_axes=(nnx.Carry, axes), out_axes=nnx.Carry)(jnp.ones(W), counters),
    )
    assert "layer.count" in msg and "BatchStat" in msg
    assert "axis None" in msg and "Carry" in msg
    assert isinstance(e, nnx.PlaitError)
    np.testing.assert_array_equal(counters.count.value, before)


def test_writing_broadcast_argument_module_is_state_error():
    h = Holder(jnp.float32(0))

    def step(c, m, a):
        m.v.value = m.v.value + a
        return c, a

    msg, _ = caught(
        nnx.StateError,
        lambda: nnx.scan(step, in_axes=(nnx.Carry, None, 0))(jnp.float32(0), h, jnp.arange(3.0)),
    )
    assert "m.v" in msg


def test_reading_broadcast_state_is_fine():
    h = Holder(jnp.float32(2))
    c, ys = nnx.scan(lambda c, m, a: (c + a * m.v.value, a), in_axes=(nnx.Carry, None, 0))(
        jnp.float32(0), h, jnp.arange(3.0)
    )
    assert float(c) == 6.0


@pytest.mark.parametrize(
    "fn, out_axes",
    [
        (lambda h, a: h, (nnx.Carry, 0)),  # returned an array, not a tuple
        (lambda h, a: (h, a, a), (nnx.Carry, 0)),  # a 3-tuple for a 2-entry out_axes
        (lambda h, a: (h, a), (nnx.Carry, 0, 0)),  # a 2-tuple for a 3-entry out_axes
        (lambda h, a: [h, a], (nnx.Carry, 0)),  # a list, not a tuple
    ],
)
def test_out_axes_tuple_not_matching_returned_value(fn, out_axes):
    msg, e = caught(nnx.TransformError, lambda: nnx.scan(fn, out_axes=out_axes)(jnp.zeros(()), jnp.zeros(3)))
    assert "out_axes" in msg and f"tuple of {len(out_axes)}" in msg
    assert isinstance(e, nnx.PlaitError)


def test_non_carry_output_with_axis_none_is_an_error():
    msg, _ = caught(
        nnx.TransformError,
        lambda: nnx.scan(lambda h, a: (h, a), out_axes=(nnx.Carry, None))(jnp.zeros(()), jnp.zeros(3)),
    )
    assert "None" in msg and "int axis" in msg


def test_in_axes_tuple_of_wrong_length():
    msg, _ = caught(
        nnx.TransformError,
        lambda: nnx.scan(lambda h, a: (h, a), in_axes=(nnx.Carry, 0, 0))(jnp.zeros(()), jnp.zeros(3)),
    )
    assert "in_axes has 3 entries" in msg


def test_structure_change_of_input_module_inside_step():
    h = Holder(jnp.zeros(D))

    def step(c, m):
        m.extra = nnx.BatchStat(c)
        return c

    msg, _ = caught(
        nnx.TransformError, lambda: nnx.scan(step, in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)(jnp.float32(0), h)
    )
    assert "structure" in msg


@pytest.mark.parametrize("name, value", [("split_rngs", True), ("state_axes", {nnx.Param: 0})])
def test_removed_kwargs_show_new_spelling(name, value):
    with pytest.raises(TypeError) as info:
        nnx.scan(lambda c, x: (c, x), **{name: value})
    msg = str(info.value)
    assert not isinstance(info.value, nnx.PlaitError)
    if name == "split_rngs":
        assert "@nnx.split_rngs(splits=" in msg and "@nnx.scan(" in msg
    else:
        assert "nnx.StateAxes(" in msg
    with pytest.raises(TypeError):
        nnx.scan(**{name: value})


def test_scan_options_are_keyword_only_and_function_required():
    with pytest.raises(TypeError):
        nnx.scan(lambda c, x: (c, x), 3)
    msg, _ = caught(nnx.TransformError, lambda: nnx.scan("not a function"))
    assert "function" in msg
