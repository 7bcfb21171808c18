"""Normalization layers against NumPy references, in float32 and bfloat16, and through transforms."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import plait as nnx
from helpers import raises
from plait.errors import LayerError

RS = np.random.RandomState(0)


def np_init(key, shape, dtype):
    return jnp.asarray(RS.randn(*shape), dtype)


def rand(*shape, offset=0.0):
    return (RS.randn(*shape) + offset).astype(np.float32)


# One compiled call per layer: eager calls compile every primitive separately per shape,
# which would dominate this file's run time. Eager behaviour has its own tests below.
apply = nnx.jit(lambda layer, x: layer(x))
apply_masked = nnx.jit(lambda layer, x, mask: layer(x, mask=mask))


def close(a, b, tol=1e-4):
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=tol, atol=tol)


def np_normalize(x, axes, scale=None, bias=None, feature_axes=(-1,), eps=1e-6, rms=False):
    """``(x - mean) / sqrt(var + eps) * scale + bias`` in float64, statistics over ``axes``."""
    x = np.asarray(x, np.float64)
    if rms:
        y = x / np.sqrt((x * x).mean(axes, keepdims=True) + eps)
    else:
        y = (x - x.mean(axes, keepdims=True)) / np.sqrt(x.var(axes, keepdims=True) + eps)
    feature_axes = [a % x.ndim for a in feature_axes]
    shape = [d if i in feature_axes else 1 for i, d in enumerate(x.shape)]
    if scale is not None:
        y = y * np.asarray(scale, np.float64).reshape(shape)
    if bias is not None:
        y = y + np.asarray(bias, np.float64).reshape(shape)
    return y


def params(layer):
    scale = None if layer.scale is None else np.asarray(layer.scale.value)
    bias = None if getattr(layer, "bias", None) is None else np.asarray(layer.bias.value)
    return scale, bias


# =======================================================================================
# LayerNorm and RMSNorm
# =======================================================================================


def test_layer_norm_matches_numpy():
    ln = nnx.LayerNorm(4, scale_init=np_init, bias_init=np_init, rngs=nnx.Rngs(0))
    assert ln.scale.value.shape == (4,) and ln.bias.value.shape == (4,)
    x = rand(2, 3, 4, offset=2.0)
    y = ln(jnp.asarray(x))
    assert y.shape == x.shape and y.dtype == jnp.float32
    close(y, np_normalize(x, -1, *params(ln)))


def test_layer_norm_defaults_and_no_parameters():
    ln = nnx.LayerNorm(4, rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(np.asarray(ln.scale.value), np.ones(4))
    np.testing.assert_array_equal(np.asarray(ln.bias.value), np.zeros(4))
    assert ln.epsilon == 1e-6
    bare = nnx.LayerNorm(4, use_scale=False, use_bias=False, rngs=nnx.Rngs(0))
    assert bare.scale is None and bare.bias is None and not jax.tree.leaves(nnx.state(bare))
    x = rand(3, 4)
    close(apply(bare, jnp.asarray(x)), np_normalize(x, -1))


def test_layer_norm_over_several_axes():
    ln = nnx.LayerNorm(4, reduction_axes=(1, 2), feature_axes=-1, scale_init=np_init, bias_init=np_init, rngs=nnx.Rngs(0))
    x = rand(2, 3, 4, offset=-1.0)
    close(apply(ln, jnp.asarray(x)), np_normalize(x, (1, 2), *params(ln)))
    # features on two axes: the parameters are flat, num_features = 3 * 4
    wide = nnx.LayerNorm(12, reduction_axes=(-2, -1), feature_axes=(-2, -1), scale_init=np_init, rngs=nnx.Rngs(0))
    close(apply(wide, jnp.asarray(x)), np_normalize(x, (1, 2), np.asarray(wide.scale.value).reshape(3, 4), None, (1, 2)))


def test_fast_and_centred_variance_agree():
    x = rand(4, 8, offset=3.0)
    fast = nnx.LayerNorm(8, rngs=nnx.Rngs(0))
    centred = nnx.LayerNorm(8, use_fast_variance=False, rngs=nnx.Rngs(0))
    close(apply(fast, jnp.asarray(x)), np_normalize(x, -1), 1e-3)
    close(apply(centred, jnp.asarray(x)), np_normalize(x, -1), 1e-4)


def reduced_operands(layer, x):
    """For each reduction in ``layer(x)``'s jaxpr: the primitives between the input and the reduction."""
    graph, state = nnx.split(layer)  # a fresh copy inside the trace, so BatchNorm may write its statistics
    jaxpr = jax.make_jaxpr(lambda x: nnx.merge(graph, state)(x))(x).jaxpr
    made_by = {id(v): e for e in jaxpr.eqns for v in e.outvars}

    def chain(var):
        e = made_by.get(id(var))
        return [] if e is None else [e.primitive.name, *chain(e.invars[0])]

    return [chain(e.invars[0]) for e in jaxpr.eqns if e.primitive.name == "reduce_sum"]


def test_fast_variance_squares_before_the_mean():
    # The compile-time-friendly form: mean(x) and mean(x * x), both straight from x; the
    # centred form reduces (x - mean(x)) ** 2, a second reduction that waits on the first.
    x = jnp.ones((2, 8))
    fast = nnx.LayerNorm(8, use_scale=False, use_bias=False, rngs=nnx.Rngs(0))
    assert sorted(reduced_operands(fast, x)) == [[], ["square"]]
    centred = nnx.LayerNorm(8, use_scale=False, use_bias=False, use_fast_variance=False, rngs=nnx.Rngs(0))
    assert ["square", "sub"] in reduced_operands(centred, x)
    bn = nnx.BatchNorm(8, use_scale=False, use_bias=False, rngs=nnx.Rngs(0))
    assert sorted(reduced_operands(bn, x)) == [[], ["square"]]


def test_layer_norm_dtypes():
    x = rand(2, 8, offset=1.0)
    ln = nnx.LayerNorm(8, scale_init=np_init, bias_init=np_init, rngs=nnx.Rngs(0))
    x16 = jnp.asarray(x, jnp.bfloat16)
    y = apply(ln, x16)
    assert y.dtype == jnp.float32  # bfloat16 input meets float32 parameters
    close(y, np_normalize(np.asarray(x16, np.float32), -1, *params(ln)), 1e-3)
    half = nnx.LayerNorm(8, param_dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    assert half.scale.value.dtype == jnp.bfloat16
    y16 = apply(half, x16)
    assert y16.dtype == jnp.bfloat16
    # statistics are taken in float32: only the final cast rounds
    close(y16, np_normalize(np.asarray(x16, np.float32), -1), 2e-2)
    assert apply(nnx.LayerNorm(8, dtype=jnp.bfloat16, rngs=nnx.Rngs(0)), jnp.asarray(x)).dtype == jnp.bfloat16


def test_layer_norm_mask():
    ln = nnx.LayerNorm(6, use_scale=False, use_bias=False, rngs=nnx.Rngs(0))
    x = rand(2, 6)
    mask = np.array([[True] * 4 + [False] * 2, [True] * 6])
    y = np.asarray(apply_masked(ln, jnp.asarray(x), jnp.asarray(mask)))
    first = x[0, :4]
    close(y[0], (x[0] - first.mean()) / np.sqrt(first.var() + 1e-6))
    close(y[1], np_normalize(x[1:], -1)[0])


def test_rms_norm_matches_numpy():
    norm = nnx.RMSNorm(4, scale_init=np_init, rngs=nnx.Rngs(0))
    assert norm.bias is None
    assert list(nnx.state(norm, nnx.Param)) == ["scale"]
    x = rand(3, 4, offset=1.5)
    y = apply(norm, jnp.asarray(x))
    close(y, np_normalize(x, -1, np.asarray(norm.scale.value), rms=True))
    assert not isinstance(norm, nnx.LayerNorm)
    bare = nnx.RMSNorm(4, use_scale=False, rngs=nnx.Rngs(0))
    close(apply(bare, jnp.asarray(x)), np_normalize(x, -1, rms=True))
    assert apply(nnx.RMSNorm(4, param_dtype=jnp.bfloat16, rngs=nnx.Rngs(0)), jnp.asarray(x, jnp.bfloat16)).dtype == jnp.bfloat16


def test_layer_norm_errors():
    ln = nnx.LayerNorm(4, rngs=nnx.Rngs(0))
    with pytest.raises(nnx.PlaitError) as info:
        ln(jnp.ones((2, 5)))
    assert "LayerNorm(4)" in str(info.value) and "(2, 5)" in str(info.value) and "expected 4" in str(info.value)
    with pytest.raises(nnx.PlaitError, match=r"reduction_axes=3 does not fit .* \(2, 4\)"):
        nnx.LayerNorm(4, reduction_axes=3, rngs=nnx.Rngs(0))(jnp.ones((2, 4)))
    with pytest.raises(nnx.PlaitError, match="rngs=nnx.Rngs"):
        nnx.LayerNorm(4, rngs=None)


# =======================================================================================
# BatchNorm
# =======================================================================================


def test_batch_norm_training_normalises_with_batch_statistics_and_updates_running_ones():
    bn = nnx.BatchNorm(3, momentum=0.9, scale_init=np_init, bias_init=np_init, rngs=nnx.Rngs(0))
    assert type(bn.mean) is nnx.BatchStat and type(bn.var) is nnx.BatchStat
    assert bn.mean.value.dtype == jnp.float32 and (bn.epsilon, bn.momentum) == (1e-5, 0.9)
    x = rand(6, 3, offset=2.0)
    y = bn(jnp.asarray(x))
    close(y, np_normalize(x, 0, *params(bn), eps=1e-5))
    close(bn.mean.value, 0.1 * x.mean(0))
    close(bn.var.value, 0.9 + 0.1 * x.var(0))  # the biased (population) variance
    x2 = rand(6, 3, offset=-1.0)
    bn(jnp.asarray(x2))
    close(bn.mean.value, 0.9 * 0.1 * x.mean(0) + 0.1 * x2.mean(0))


def test_batch_norm_eval_uses_running_statistics():
    bn = nnx.BatchNorm(3, momentum=0.5, scale_init=np_init, bias_init=np_init, rngs=nnx.Rngs(0))
    x = rand(5, 3, offset=1.0)
    bn(jnp.asarray(x))
    mean, var = np.asarray(bn.mean.value), np.asarray(bn.var.value)
    scale, bias = params(bn)
    expected = (x - mean) / np.sqrt(var + 1e-5) * scale + bias
    bn.eval()
    assert bn.use_running_average is True
    close(bn(jnp.asarray(x)), expected)
    np.testing.assert_array_equal(np.asarray(bn.mean.value), mean)  # nothing updated
    np.testing.assert_array_equal(np.asarray(bn.var.value), var)
    bn.train()
    close(bn(jnp.asarray(x), use_running_average=True), expected)  # the call argument wins
    np.testing.assert_array_equal(np.asarray(bn.mean.value), mean)
    bn(jnp.asarray(x))
    assert not np.array_equal(np.asarray(bn.mean.value), mean)


def test_batch_norm_feature_axis_and_spatial_inputs():
    bn = nnx.BatchNorm(3, axis=1, scale_init=np_init, bias_init=np_init, rngs=nnx.Rngs(0))
    x = rand(2, 3, 5, offset=1.0)  # (N, C, L)
    close(apply(bn, jnp.asarray(x)), np_normalize(x, (0, 2), *params(bn), feature_axes=(1,), eps=1e-5))
    close(bn.mean.value, 0.01 * x.mean((0, 2)))
    images = nnx.BatchNorm(2, use_fast_variance=False, rngs=nnx.Rngs(0))
    x4 = rand(2, 3, 3, 2)  # (N, H, W, C): statistics over N, H and W
    close(apply(images, jnp.asarray(x4)), np_normalize(x4, (0, 1, 2), eps=1e-5))
    close(images.var.value, 0.99 + 0.01 * x4.var((0, 1, 2)))


def test_batch_norm_dtypes_keep_float32_statistics():
    bn = nnx.BatchNorm(3, rngs=nnx.Rngs(0))
    x16 = jnp.asarray(rand(4, 3, offset=1.0), jnp.bfloat16)
    assert apply(bn, x16).dtype == jnp.float32
    assert bn.mean.value.dtype == jnp.float32 and bn.var.value.dtype == jnp.float32
    # The float32 running statistics join the dtype promotion, as in the reference: half
    # parameters and a half input still give a float32 output unless `dtype` says otherwise.
    half = nnx.BatchNorm(3, param_dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    y = apply(half, x16)
    assert y.dtype == jnp.float32 and half.mean.value.dtype == jnp.float32
    close(y, np_normalize(np.asarray(x16, np.float32), 0, eps=1e-5), 1e-4)
    assert apply(nnx.BatchNorm(3, dtype=jnp.bfloat16, rngs=nnx.Rngs(0)), jnp.ones((4, 3))).dtype == jnp.bfloat16


# A float64 NumPy reference for every activation normalizer in half precision: statistics
# in float32 leave only the final rounding to the half dtype (a few ulps of the output).
HALF_CASES = {
    "LayerNorm": (lambda **kw: nnx.LayerNorm(4, **kw, rngs=nnx.Rngs(0)), lambda x: np_normalize(x, -1)),
    "RMSNorm": (lambda **kw: nnx.RMSNorm(4, **kw, rngs=nnx.Rngs(0)), lambda x: np_normalize(x, -1, rms=True)),
    "BatchNorm": (lambda **kw: nnx.BatchNorm(4, **kw, rngs=nnx.Rngs(0)), lambda x: np_normalize(x, (0, 1), eps=1e-5)),
    "GroupNorm": (lambda **kw: nnx.GroupNorm(4, num_groups=2, **kw, rngs=nnx.Rngs(0)), lambda x: np_group_norm(x, 2)),
    "InstanceNorm": (lambda **kw: nnx.InstanceNorm(4, **kw, rngs=nnx.Rngs(0)), lambda x: np_normalize(x, 1)),
}


@pytest.mark.parametrize("half", [jnp.float16, jnp.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("name", sorted(HALF_CASES))
def test_half_precision_statistics_in_float32_match_float64_numpy(name, half):
    build, reference = HALF_CASES[name]
    # An offset: mean(x * x) near 900 keeps 3 (float16) or 2 (bfloat16) significant digits in
    # half precision, too few for a variance near 4, but float32's 7 are plenty.
    x = jnp.asarray(rand(3, 5, 4) * 2 + 30, half)
    expected = reference(np.asarray(x, np.float64))
    ulp = float(jnp.finfo(half).eps)
    for kwargs, out_dtype in (({}, jnp.float32), ({"dtype": half, "param_dtype": half}, half)):
        y = apply(build(**kwargs), x)
        assert y.dtype == out_dtype, (kwargs, y.dtype)
        # float32 output: float32-accurate; half output: the final cast's rounding only
        tol = 2e-3 if out_dtype == jnp.float32 else 4 * ulp
        close(y, expected, tol)


def test_batch_norm_mask():
    bn = nnx.BatchNorm(2, use_scale=False, use_bias=False, rngs=nnx.Rngs(0))
    x = rand(5, 2)
    mask = np.array([True, True, True, False, False])[:, None].repeat(2, 1)
    apply_masked(bn, jnp.asarray(x), jnp.asarray(mask))
    close(bn.mean.value, 0.01 * x[:3].mean(0))


def test_batch_norm_in_vmap_with_axis_name_uses_the_whole_batch():
    bn = nnx.BatchNorm(2, momentum=0.8, axis_name="batch", scale_init=np_init, bias_init=np_init, rngs=nnx.Rngs(0))
    full = nnx.BatchNorm(2, momentum=0.8, rngs=nnx.Rngs(0))
    full.scale.value, full.bias.value = bn.scale.value, bn.bias.value
    x = rand(4, 3, 2, offset=1.0)  # 4 lanes of 3 examples
    y = nnx.jit(nnx.vmap(lambda m, x: m(x), in_axes=(None, 0), axis_name="batch"))(bn, jnp.asarray(x))
    expected = apply(full, jnp.asarray(x.reshape(12, 2)))
    close(y.reshape(12, 2), expected)
    close(bn.mean.value, full.mean.value)  # statistics of all 12 examples, not of one lane
    close(bn.var.value, full.var.value)
    close(bn.mean.value, 0.2 * x.reshape(12, 2).mean(0))


def test_batch_norm_without_axis_name_in_vmap_keeps_lanes_apart():
    bn = nnx.BatchNorm(2, use_scale=False, use_bias=False, rngs=nnx.Rngs(0))
    x = rand(3, 4, 2)
    y = nnx.jit(nnx.vmap(lambda m, x: m(x, use_running_average=False), in_axes=(0, 0)))(
        nnx.vmap(lambda _: nnx.BatchNorm(2, use_scale=False, use_bias=False, rngs=nnx.Rngs(0)), axis_size=3)(
            jnp.zeros(3)
        ),
        jnp.asarray(x),
    )
    close(y, np.stack([np_normalize(x[i], 0, eps=1e-5) for i in range(3)]))
    assert bn.mean.value.shape == (2,)


class Block(nnx.Module):
    def __init__(self, rngs):
        self.linear = nnx.Linear(2, 2, bias_init=nnx.initializers.normal(1.0), rngs=rngs)
        self.norm = nnx.BatchNorm(2, momentum=0.5, bias_init=nnx.initializers.normal(1.0), rngs=rngs)

    def __call__(self, x):
        return self.norm(self.linear(x))


def test_batch_norm_inside_scan_over_a_stack():
    @nnx.jit
    @nnx.split_rngs(splits=3)
    @nnx.vmap(axis_size=3)
    def make(rngs):
        return Block(rngs)

    stack = make(nnx.Rngs(0))
    assert stack.norm.mean.value.shape == (3, 2)
    graph, state = nnx.split(stack)
    layers = [nnx.merge(graph, jax.tree.map(lambda a, i=i: a[i], state)) for i in range(3)]
    x = jnp.asarray(rand(5, 2, offset=1.0))

    @nnx.jit
    @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
    def forward(h, layer):
        return layer(h)

    y = forward(x, stack)
    h = x
    for layer in layers:  # the same model, unrolled by hand
        h = apply(layer, h)
    close(y, h)
    close(stack.norm.mean.value, np.stack([np.asarray(layer.norm.mean.value) for layer in layers]))
    close(stack.norm.var.value, np.stack([np.asarray(layer.norm.var.value) for layer in layers]))
    assert not np.allclose(np.asarray(stack.norm.mean.value), 0.0)


def test_batch_norm_writes_statistics_back_through_jit_and_grad():
    eager = nnx.BatchNorm(3, rngs=nnx.Rngs(0))
    jitted = nnx.BatchNorm(3, rngs=nnx.Rngs(0))
    for offset in (1.0, -2.0):  # the second call is a cached one
        x = jnp.asarray(rand(6, 3, offset=offset))
        close(apply(jitted, x), eager(x))
        close(jitted.mean.value, eager.mean.value, 1e-6)
        close(jitted.var.value, eager.var.value, 1e-6)
    before = np.asarray(jitted.mean.value)
    x = jnp.asarray(rand(6, 3, offset=3.0))
    grads = nnx.jit(lambda m, x: nnx.grad(lambda m: (m(x) ** 3).sum())(m))(jitted, x)
    assert set(grads) == {"scale", "bias"}
    close(jitted.mean.value, 0.99 * before + 0.01 * np.asarray(x).mean(0))
    apply(jitted.eval(), x)
    close(jitted.mean.value, 0.99 * before + 0.01 * np.asarray(x).mean(0))  # eval under jit: unchanged


def test_batch_norm_errors():
    bn = nnx.BatchNorm(3, rngs=nnx.Rngs(0))
    with pytest.raises(LayerError) as info:
        bn(jnp.ones((4, 2)))
    assert "BatchNorm(3)" in str(info.value) and "(4, 2)" in str(info.value) and "axis=-1" in str(info.value)
    with pytest.raises(nnx.PlaitError, match="axis=2"):
        nnx.BatchNorm(3, axis=2, rngs=nnx.Rngs(0))(jnp.ones((4, 3)))
    with pytest.raises(nnx.PlaitError, match="rngs=nnx.Rngs"):
        nnx.BatchNorm(3, rngs=None)


def test_batch_norm_training_on_a_batch_of_one_is_refused_even_under_jit():
    bn = nnx.BatchNorm(3, rngs=nnx.Rngs(0))
    x = jnp.asarray(rand(1, 3, offset=2.0))
    for call in (lambda: bn(x), lambda: apply(bn, x)):  # a static shape check: works traced too
        message = raises(LayerError, call, "BatchNorm(3)", "(1, 3)", "single value", "use_running_average=True")
        assert "batch of more than one" in message
    assert np.asarray(bn.mean.value).tolist() == [0.0, 0.0, 0.0]  # nothing was written
    close(apply(bn.eval(), x), np.asarray(x) / np.sqrt(1 + 1e-5))  # running mean 0, var 1
    spatial = nnx.BatchNorm(3, rngs=nnx.Rngs(0))
    assert apply(spatial, jnp.asarray(rand(1, 2, 3))).shape == (1, 2, 3)  # one image, two positions: fine


# =======================================================================================
# GroupNorm and InstanceNorm
# =======================================================================================


def np_group_norm(x, groups, scale=None, bias=None, eps=1e-6, batch_axes=1):
    shape = x.shape
    grouped = np.asarray(x, np.float64).reshape(shape[:-1] + (groups, shape[-1] // groups))
    axes = tuple(range(batch_axes, len(shape) - 1)) + (len(shape),)
    y = ((grouped - grouped.mean(axes, keepdims=True)) / np.sqrt(grouped.var(axes, keepdims=True) + eps)).reshape(shape)
    return y * (1 if scale is None else scale) + (0 if bias is None else bias)


def test_group_norm_matches_numpy():
    gn = nnx.GroupNorm(6, num_groups=3, scale_init=np_init, bias_init=np_init, rngs=nnx.Rngs(0))
    assert (gn.num_groups, gn.group_size) == (3, 2)
    x = rand(2, 4, 6, offset=1.0)
    y = apply(gn, jnp.asarray(x))
    assert y.shape == x.shape
    close(y, np_group_norm(x, 3, *params(gn)))
    by_size = nnx.GroupNorm(6, num_groups=None, group_size=2, rngs=nnx.Rngs(0))
    by_size.scale.value, by_size.bias.value = gn.scale.value, gn.bias.value
    close(apply(by_size, jnp.asarray(x)), y, 1e-6)


def test_group_norm_special_cases_and_reduction_axes():
    x = rand(2, 3, 4, offset=2.0)
    one_group = nnx.GroupNorm(4, num_groups=1, rngs=nnx.Rngs(0))
    close(apply(one_group, jnp.asarray(x)), np_normalize(x, (1, 2)))  # LayerNorm over all non-batch axes
    per_channel = nnx.GroupNorm(4, num_groups=None, group_size=1, rngs=nnx.Rngs(0))
    close(apply(per_channel, jnp.asarray(x)), apply(nnx.InstanceNorm(4, rngs=nnx.Rngs(0)), jnp.asarray(x)))
    # two leading batch axes: name the reduction axes
    x4 = rand(2, 3, 5, 4)
    gn = nnx.GroupNorm(4, num_groups=2, reduction_axes=(2, 3), rngs=nnx.Rngs(0))
    close(apply(gn, jnp.asarray(x4)), np_group_norm(x4, 2, batch_axes=2))


def test_group_norm_dtypes_and_errors():
    x16 = jnp.asarray(rand(2, 3, 4), jnp.bfloat16)
    assert apply(nnx.GroupNorm(4, num_groups=2, rngs=nnx.Rngs(0)), x16).dtype == jnp.float32
    half = nnx.GroupNorm(4, num_groups=2, param_dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    y = apply(half, x16)
    assert y.dtype == jnp.bfloat16
    close(y, np_group_norm(np.asarray(x16, np.float32), 2), 3e-2)
    with pytest.raises(LayerError, match="num_groups=None"):
        nnx.GroupNorm(4, group_size=2, rngs=nnx.Rngs(0))  # num_groups still 32
    with pytest.raises(ValueError, match="num_groups=3 does not divide the 4 features"):
        nnx.GroupNorm(4, num_groups=3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="group_size=3 does not divide"):
        nnx.GroupNorm(4, num_groups=None, group_size=3, rngs=nnx.Rngs(0))
    with pytest.raises(nnx.PlaitError, match=r"\(2, 6\).*must be 4"):
        nnx.GroupNorm(4, num_groups=2, rngs=nnx.Rngs(0))(jnp.ones((2, 6)))


def test_instance_norm_matches_numpy():
    norm = nnx.InstanceNorm(3, scale_init=np_init, bias_init=np_init, rngs=nnx.Rngs(0))
    x = rand(2, 4, 4, 3, offset=-1.0)
    close(apply(norm, jnp.asarray(x)), np_normalize(x, (1, 2), *params(norm)))
    channels_first = nnx.InstanceNorm(3, feature_axes=1, rngs=nnx.Rngs(0))
    xc = np.moveaxis(x, -1, 1)
    close(apply(channels_first, jnp.asarray(xc)), np_normalize(xc, (2, 3), feature_axes=(1,)))
    assert apply(nnx.InstanceNorm(3, param_dtype=jnp.bfloat16, rngs=nnx.Rngs(0)), jnp.asarray(x, jnp.bfloat16)).dtype == jnp.bfloat16
    with pytest.raises(nnx.PlaitError, match="axis 0 is the batch"):
        nnx.InstanceNorm(2, feature_axes=0, rngs=nnx.Rngs(0))(jnp.ones((2, 3)))
    with pytest.raises(nnx.PlaitError, match="expected 3"):
        norm(jnp.ones((2, 4, 5)))


# =======================================================================================
# WeightNorm and SpectralNorm
# =======================================================================================


def test_weight_norm_reparametrises_the_kernel():
    linear = nnx.Linear(3, 2, kernel_init=np_init, bias_init=np_init, rngs=nnx.Rngs(0))
    layer = nnx.WeightNorm(linear, scale_init=np_init, rngs=nnx.Rngs(1))
    v, b = np.asarray(linear.kernel.value), np.asarray(linear.bias.value)
    g = np.asarray(layer.scales["kernel"].value)
    assert g.shape == (2,)  # one scale per output feature (feature_axes=-1)
    assert "bias" not in layer.scales  # variable_filter: only the kernel
    w = g * v / np.linalg.norm(v, axis=0)
    x = rand(4, 3)
    close(apply(layer, jnp.asarray(x)), x @ w + b)
    np.testing.assert_array_equal(np.asarray(linear.kernel.value), v)  # the Param itself is untouched
    close(np.linalg.norm(np.asarray(layer.normalized(("kernel",))), axis=0), np.abs(g))


def test_weight_norm_gradients_flow_to_direction_and_scale():
    linear = nnx.Linear(3, 2, kernel_init=np_init, rngs=nnx.Rngs(0))
    layer = nnx.WeightNorm(linear, scale_init=np_init, rngs=nnx.Rngs(1))
    x = jnp.asarray(rand(4, 3))

    def manual(v, g, b):
        w = g * v / jnp.sqrt(jnp.sum(v * v, axis=0) + 1e-12)
        return ((x @ w + b) ** 2).sum()

    want = jax.jit(jax.grad(manual, argnums=(0, 1, 2)))(linear.kernel.value, layer.scales["kernel"].value, linear.bias.value)
    grads = nnx.jit(lambda m: nnx.grad(lambda m: (m(x) ** 2).sum())(m))(layer)
    close(grads["layer_instance"]["kernel"].value, want[0])
    close(grads["scales"]["kernel"].value, want[1])
    close(grads["layer_instance"]["bias"].value, want[2])
    assert layer.layer_instance.kernel.value is linear.kernel.value  # read, not written, by the transform


def test_weight_wrappers_stay_read_only_for_plain_jax_transforms():
    # The wrappers lend the normalised weight to the layer for one call; closing over them
    # in jax.jit is as legal as for the bare layer, and leaves no tracer behind.
    x = jnp.asarray(rand(4, 3))
    for wrapper in (nnx.WeightNorm, nnx.SpectralNorm):
        layer = wrapper(nnx.Linear(3, 2, kernel_init=np_init, rngs=nnx.Rngs(0)), rngs=nnx.Rngs(1)).eval()
        kernel = layer.layer_instance.kernel.value
        close(jax.jit(lambda x, layer=layer: layer(x))(x), apply(layer, x))
        assert layer.layer_instance.kernel.value is kernel
    training = nnx.SpectralNorm(nnx.Linear(3, 2, kernel_init=np_init, rngs=nnx.Rngs(0)), rngs=nnx.Rngs(1))
    with pytest.raises(nnx.StateError, match="BatchStat"):  # updating u is a real write: pass the module in
        jax.jit(lambda x: training(x))(x)


def test_weight_norm_feature_axes_none_and_conv():
    conv = nnx.Conv(2, 4, (3, 3), kernel_init=np_init, use_bias=False, rngs=nnx.Rngs(0))
    layer = nnx.WeightNorm(conv, rngs=nnx.Rngs(1))
    assert layer.scales["kernel"].value.shape == (4,)
    w = np.asarray(layer.normalized(("kernel",)))
    close(np.linalg.norm(w.reshape(-1, 4), axis=0), np.ones(4))  # unit norm per output channel
    whole = nnx.WeightNorm(
        nnx.Linear(3, 2, kernel_init=np_init, rngs=nnx.Rngs(0)), feature_axes=None, use_scale=False, rngs=nnx.Rngs(1)
    )
    assert not whole.scales
    close(np.linalg.norm(np.asarray(whole.normalized(("kernel",)))), 1.0)
    assert apply(layer, jnp.ones((1, 4, 4, 2))).shape == (1, 4, 4, 4)
    with pytest.raises(nnx.PlaitError, match=r"variable_filter=\('weight',\).*bias, kernel"):
        nnx.WeightNorm(nnx.Linear(3, 2, kernel_init=np_init, rngs=nnx.Rngs(0)), variable_filter=("weight",), rngs=nnx.Rngs(1))


def np_power_iteration(w, u, steps, eps=1e-12):
    w = np.asarray(w, np.float64).reshape(-1, w.shape[-1])
    u = np.asarray(u, np.float64)
    for _ in range(steps):
        v = u @ w.T
        v = v / np.sqrt((v * v).sum() + eps)
        u = v @ w
        u = u / np.sqrt((u * u).sum() + eps)
    return u, float((v @ w @ u.T)[0, 0])


def test_spectral_norm_divides_by_the_power_iteration_estimate():
    linear = nnx.Linear(3, 4, kernel_init=np_init, bias_init=np_init, rngs=nnx.Rngs(0))
    layer = nnx.SpectralNorm(linear, n_steps=2, rngs=nnx.Rngs(1))
    stats = layer.batch_stats["kernel"]
    assert type(stats["u"]) is nnx.BatchStat and stats["u"].value.shape == (1, 4)
    w, b = np.asarray(linear.kernel.value), np.asarray(linear.bias.value)
    u, sigma = np_power_iteration(w, stats["u"].value, 2)
    x = rand(5, 3)
    close(apply(layer, jnp.asarray(x)), x @ (w / sigma) + b)
    close(stats["u"].value, u)
    close(stats["sigma"].value, sigma)
    np.testing.assert_array_equal(np.asarray(linear.kernel.value), w)  # the raw weight stays
    for _ in range(30):  # the estimate converges to the largest singular value
        apply(layer, jnp.asarray(x))
    close(stats["sigma"].value, np.linalg.svd(w, compute_uv=False)[0], 1e-4)


def test_spectral_norm_eval_leaves_the_estimate_alone():
    layer = nnx.SpectralNorm(nnx.Linear(3, 2, kernel_init=np_init, rngs=nnx.Rngs(0)), rngs=nnx.Rngs(1))
    u0 = np.asarray(layer.batch_stats["kernel"]["u"].value)
    x = jnp.ones((1, 3))
    nnx.jit(lambda m, x: m(x, update_stats=False))(layer, x)
    np.testing.assert_array_equal(np.asarray(layer.batch_stats["kernel"]["u"].value), u0)
    layer.eval()
    assert layer.use_running_average
    apply(layer, x)
    np.testing.assert_array_equal(np.asarray(layer.batch_stats["kernel"]["u"].value), u0)
    layer.train()
    apply(layer, x)
    assert not np.array_equal(np.asarray(layer.batch_stats["kernel"]["u"].value), u0)
    frozen = nnx.SpectralNorm(nnx.Linear(3, 2, kernel_init=np_init, rngs=nnx.Rngs(0)), update_stats=False, rngs=nnx.Rngs(1))
    assert frozen.use_running_average


def test_spectral_norm_under_jit_and_grad():
    eager = nnx.SpectralNorm(nnx.Linear(3, 2, kernel_init=np_init, rngs=nnx.Rngs(0)), rngs=nnx.Rngs(1))
    jitted = nnx.clone(eager)
    x = jnp.asarray(rand(4, 3))
    step = nnx.jit(lambda m, x: m(x))
    for _ in range(2):
        close(step(jitted, x), eager(x))
        close(jitted.batch_stats["kernel"]["u"].value, eager.batch_stats["kernel"]["u"].value, 1e-6)
    u = jitted.batch_stats["kernel"]["u"].value
    w, b = jitted.layer_instance.kernel.value, jitted.layer_instance.bias.value

    def manual(w, b):  # u and v carry no gradient
        v = jax.lax.stop_gradient(u @ w.T)
        v = v / jnp.sqrt((v * v).sum() + 1e-12)
        u2 = jax.lax.stop_gradient(v @ w)
        u2 = u2 / jnp.sqrt((u2 * u2).sum() + 1e-12)
        sigma = (v @ w @ u2.T)[0, 0]
        return ((x @ (w / sigma) + b) ** 2).sum()

    want = jax.jit(jax.grad(manual, argnums=(0, 1)))(w, b)
    grads = nnx.jit(lambda m: nnx.grad(lambda m: (m(x) ** 2).sum())(m))(jitted)
    close(grads["layer_instance"]["kernel"].value, want[0])
    close(grads["layer_instance"]["bias"].value, want[1])


def test_spectral_norm_conv_kernels_and_errors():
    conv = nnx.Conv(2, 3, (2, 2), kernel_init=np_init, rngs=nnx.Rngs(0))
    layer = nnx.SpectralNorm(conv, n_steps=50, rngs=nnx.Rngs(1))
    assert layer.batch_stats["kernel"]["u"].value.shape == (1, 3)
    assert list(layer.batch_stats) == ["kernel"]  # the bias (one axis) is left alone
    assert apply(layer, jnp.ones((1, 4, 4, 2))).shape == (1, 4, 4, 3)
    matrix = np.asarray(conv.kernel.value).reshape(-1, 3)
    close(layer.batch_stats["kernel"]["sigma"].value, np.linalg.svd(matrix, compute_uv=False)[0], 1e-4)
    with pytest.raises(nnx.PlaitError, match=r"`kernel` has shape \(2, 2, 2, 3\).*error_on_non_matrix"):
        nnx.SpectralNorm(conv, error_on_non_matrix=True, rngs=nnx.Rngs(1))
    with pytest.raises(ValueError, match="n_steps=0"):
        nnx.SpectralNorm(conv, n_steps=0, rngs=nnx.Rngs(1))
    with pytest.raises(nnx.PlaitError, match="no Param with two or more axes"):
        nnx.SpectralNorm(nnx.LayerNorm(3, rngs=nnx.Rngs(0)), rngs=nnx.Rngs(1))
    with pytest.raises(nnx.PlaitError, match="wraps a layer"):
        nnx.SpectralNorm(jnp.ones((2, 2)), rngs=nnx.Rngs(1))


@pytest.mark.parametrize("cls", [nnx.BatchNorm, nnx.LayerNorm, nnx.RMSNorm, nnx.GroupNorm, nnx.InstanceNorm])
def test_scale_and_bias_metadata_are_stored_on_the_params(cls):
    kwargs = {"num_groups": 2} if cls is nnx.GroupNorm else {}
    if cls is not nnx.RMSNorm:  # RMSNorm has no bias, and no bias_metadata (as in the reference)
        kwargs["bias_metadata"] = {"out_sharding": ("b",)}
    layer = cls(4, scale_metadata={"out_sharding": ("s",)}, rngs=nnx.Rngs(0), **kwargs)
    assert layer.scale.get_metadata() == {"out_sharding": ("s",)}
    if cls is not nnx.RMSNorm:
        assert layer.bias.get_metadata() == {"out_sharding": ("b",)}
    else:
        with pytest.raises(TypeError, match="bias_metadata"):
            cls(4, bias_metadata={"a": 1}, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("cls", [nnx.BatchNorm, nnx.LayerNorm, nnx.RMSNorm, nnx.GroupNorm, nnx.InstanceNorm])
def test_promote_dtype_is_called_as_the_reference_calls_it(cls):
    seen = []

    def to_bfloat16(args, /, *, dtype=None, inexact=True):
        seen.append(len(args))
        return tuple(None if a is None else jnp.asarray(a, jnp.bfloat16) for a in args)

    kwargs = {"num_groups": 2} if cls is nnx.GroupNorm else {}
    layer = cls(4, promote_dtype=to_bfloat16, rngs=nnx.Rngs(0), **kwargs)
    assert layer(jnp.asarray(rand(3, 2, 4))).dtype == jnp.bfloat16
    assert seen == [5 if cls is nnx.BatchNorm else 2 if cls is nnx.RMSNorm else 3]  # BatchNorm: x, mean, var, scale, bias
