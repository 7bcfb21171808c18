"""Conv and ConvTranspose against loop-by-loop NumPy references of their maths."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import plait as nnx
from plait.errors import LayerError

RS = np.random.RandomState(0)


def np_init(key, shape, dtype):
    return jnp.asarray(RS.randn(*shape), dtype)


def rand(*shape):
    return RS.randn(*shape).astype(np.float32)


# One compiled call per layer and shape: eager calls compile every primitive separately, which
# would dominate this file's run time. Eager calls keep a few tests of their own.
apply = nnx.jit(lambda layer, x: layer(x))


def pullback(layer, x, g):
    """``g`` pulled back through ``layer`` at ``x``: the gradient a transposed convolution computes."""
    return jax.jit(lambda x, g: jax.vjp(layer, x)[1](g)[0])(x, g)


def close(a, b, tol=1e-4):
    np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), rtol=tol, atol=tol)


def conv_layer(*args, **kwargs):
    return nnx.Conv(*args, kernel_init=np_init, bias_init=np_init, rngs=nnx.Rngs(0), **kwargs)


# -- references -------------------------------------------------------------------------------


def np_conv(x, w, b, strides, pads, lhs_dil=None, rhs_dil=None, groups=1, wrap=False):
    """Cross-correlation of ``x (N, *S, C)`` with ``w (*K, C // groups, O)``, one output at a time.

    ``wrap=True`` reads the input circularly, centring the (dilated) kernel, instead of padding.
    """
    n = w.ndim - 2
    lhs_dil, rhs_dil = lhs_dil or (1,) * n, rhs_dil or (1,) * n
    size = [(s - 1) * d + 1 for s, d in zip(x.shape[1:-1], lhs_dil)]
    xd = np.zeros((x.shape[0], *size, x.shape[-1]), x.dtype)
    xd[(slice(None), *[slice(None, None, d) for d in lhs_dil])] = x
    kernel = w.shape[:n]
    dilated = [(k - 1) * d + 1 for k, d in zip(kernel, rhs_dil)]
    if wrap:
        out = [math.ceil(s / st) for s, st in zip(size, strides)]
        offset = [-((k - 1) // 2) for k in dilated]
        xp = xd
    else:
        xp = np.pad(xd, [(0, 0), *pads, (0, 0)])
        out = [(xp.shape[1 + i] - dilated[i]) // strides[i] + 1 for i in range(n)]
        offset = [0] * n
    c_in, c_out = w.shape[-2], w.shape[-1] // groups
    y = np.zeros((x.shape[0], *out, w.shape[-1]), np.float64)
    for pos in np.ndindex(*out):
        for t in np.ndindex(*kernel):
            idx = [p * s + k * d + o for p, s, k, d, o in zip(pos, strides, t, rhs_dil, offset)]
            if wrap:
                idx = [i % xp.shape[1 + a] for a, i in enumerate(idx)]
            patch = xp[(slice(None), *idx)]
            for g in range(groups):
                y[(slice(None), *pos, slice(g * c_out, (g + 1) * c_out))] += (
                    patch[:, g * c_in : (g + 1) * c_in] @ w[t][:, g * c_out : (g + 1) * c_out]
                )
    return y + (0 if b is None else b)


def same_pads(size, kernel, strides, lhs_dil=None, rhs_dil=None):
    """TensorFlow's SAME: output ceil(n / stride), the odd padding element on the high side."""
    n = len(kernel)
    lhs_dil, rhs_dil = lhs_dil or (1,) * n, rhs_dil or (1,) * n
    pads = []
    for s, k, st, ld, rd in zip(size, kernel, strides, lhs_dil, rhs_dil):
        s, k = (s - 1) * ld + 1, (k - 1) * rd + 1
        total = max((math.ceil(s / st) - 1) * st + k - s, 0)
        pads.append((total // 2, total - total // 2))
    return pads


def np_conv_transpose_full(x, w, strides, rhs_dil=None, transpose_kernel=False):
    """Scatter every input position into the output: ``y[i * s + t * d] += x[i] @ w[t]``.

    Without ``transpose_kernel`` the kernel is applied as stored, which scatters it flipped
    (``jax.lax.conv_transpose``'s convention); the result covers ``(n - 1) * s + K``.
    """
    n = w.ndim - 2
    rhs_dil = rhs_dil or (1,) * n
    kernel = w.shape[:n]
    dilated = [(k - 1) * d + 1 for k, d in zip(kernel, rhs_dil)]
    out = [(s - 1) * st + k for s, st, k in zip(x.shape[1:-1], strides, dilated)]
    c_out = w.shape[-2] if transpose_kernel else w.shape[-1]
    y = np.zeros((x.shape[0], *out, c_out), np.float64)
    for pos in np.ndindex(*x.shape[1:-1]):
        for t in np.ndindex(*kernel):
            if transpose_kernel:
                idx = [p * s + k * d for p, s, k, d in zip(pos, strides, t, rhs_dil)]
                y[(slice(None), *idx)] += x[(slice(None), *pos)] @ w[t].T
            else:
                idx = [p * s + K - 1 - k * d for p, s, k, d, K in zip(pos, strides, t, rhs_dil, dilated)]
                y[(slice(None), *idx)] += x[(slice(None), *pos)] @ w[t]
    return y, dilated


# -- Conv -------------------------------------------------------------------------------------


def test_conv_same_matches_numpy():
    conv = conv_layer(3, 4, (3, 3))
    assert conv.kernel.value.shape == (3, 3, 3, 4) and conv.bias.value.shape == (4,)
    x = rand(2, 5, 5, 3)
    y = conv(jnp.asarray(x))
    assert y.shape == (2, 5, 5, 4) and y.dtype == jnp.float32
    expected = np_conv(x, np.asarray(conv.kernel.value), np.asarray(conv.bias.value), (1, 1), [(1, 1), (1, 1)])
    close(y, expected)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(padding="VALID", strides=2),
        dict(padding="SAME", strides=(2, 1)),
        dict(padding="SAME", kernel_dilation=2),
        dict(padding="SAME", input_dilation=(2, 1)),
        dict(padding=1),
        dict(padding=[(1, 0), (2, 1)], strides=(1, 2)),
        dict(padding=[1, (0, 2)]),
        dict(padding="SAME", feature_group_count=2),
    ],
    ids=lambda k: ",".join(f"{a}={v}" for a, v in k.items()),
)
def test_conv_padding_strides_dilation_groups(kwargs):
    groups = kwargs.get("feature_group_count", 1)
    conv = conv_layer(4, 6, (3, 2), **kwargs)
    x = rand(2, 6, 5, 4)
    kernel, bias = np.asarray(conv.kernel.value), np.asarray(conv.bias.value)
    assert kernel.shape == (3, 2, 4 // groups, 6)
    strides = kwargs.get("strides", 1)
    strides = (strides,) * 2 if isinstance(strides, int) else strides
    lhs = kwargs.get("input_dilation", 1)
    lhs = (lhs,) * 2 if isinstance(lhs, int) else lhs
    rhs = (kwargs.get("kernel_dilation", 1),) * 2
    padding = kwargs["padding"]
    if padding == "SAME":
        pads = same_pads(x.shape[1:3], (3, 2), strides, lhs, rhs)
    elif padding == "VALID":
        pads = [(0, 0), (0, 0)]
    elif isinstance(padding, int):
        pads = [(padding, padding)] * 2
    else:
        pads = [(p, p) if isinstance(p, int) else p for p in padding]
    expected = np_conv(x, kernel, bias, strides, pads, lhs, rhs, groups)
    close(apply(conv, jnp.asarray(x)), expected)


def test_conv_circular_wraps_around():
    conv = conv_layer(2, 3, (3, 2), padding="CIRCULAR", strides=(2, 1), kernel_dilation=(1, 2))
    x = rand(2, 6, 5, 2)
    y = apply(conv, jnp.asarray(x))
    assert y.shape == (2, 3, 5, 3)
    kernel, bias = np.asarray(conv.kernel.value), np.asarray(conv.bias.value)
    close(y, np_conv(x, kernel, bias, (2, 1), None, rhs_dil=(1, 2), wrap=True))
    # a circular shift of the input shifts the output (stride 1 axis)
    np.testing.assert_allclose(
        np.asarray(apply(conv, jnp.roll(x, 1, axis=2))), np.roll(np.asarray(y), 1, axis=2), rtol=1e-4, atol=1e-4
    )


def test_conv_causal_sees_only_the_past():
    conv = conv_layer(2, 3, 3, padding="CAUSAL", kernel_dilation=2)
    assert conv.kernel_size == (3,)
    x = rand(2, 8, 2)
    y = np.asarray(conv(jnp.asarray(x)))
    assert y.shape == (2, 8, 3)
    kernel, bias = np.asarray(conv.kernel.value), np.asarray(conv.bias.value)
    close(y, np_conv(x, kernel, bias, (1,), [(4, 0)], rhs_dil=(2,)))
    changed = x.copy()
    changed[:, 5] += 1.0
    y2 = np.asarray(conv(jnp.asarray(changed)))
    np.testing.assert_array_equal(y2[:, :5], y[:, :5])
    assert not np.allclose(y2[:, 5], y[:, 5])


def test_conv_batch_axes_any_number_or_none():
    conv = conv_layer(2, 3, (3, 3))
    x = rand(2, 3, 4, 4, 2)
    y = apply(conv, jnp.asarray(x))
    assert y.shape == (2, 3, 4, 4, 3)
    close(y.reshape(6, 4, 4, 3), apply(conv, jnp.asarray(x.reshape(6, 4, 4, 2))), 1e-5)
    single = apply(conv, jnp.asarray(x[1, 2]))
    assert single.shape == (4, 4, 3)
    close(single, y[1, 2], 1e-5)


def test_conv_mask_and_no_bias():
    mask = np.ones((3, 3, 2, 2), np.float32)
    mask[2] = 0.0  # a masked (e.g. PixelCNN-style) kernel
    conv = nnx.Conv(2, 2, (3, 3), mask=jnp.asarray(mask), use_bias=False, kernel_init=np_init, rngs=nnx.Rngs(0))
    assert conv.bias is None
    x = rand(1, 4, 4, 2)
    expected = np_conv(x, np.asarray(conv.kernel.value) * mask, None, (1, 1), [(1, 1), (1, 1)])
    close(apply(conv, jnp.asarray(x)), expected)
    with pytest.raises(ValueError, match=r"mask has shape \(3, 3\).*\(3, 3, 2, 2\)"):
        nnx.Conv(2, 2, (3, 3), mask=jnp.ones((3, 3)), rngs=nnx.Rngs(0))


def test_conv_default_init_and_dtypes():
    conv = nnx.Conv(2, 3, (3, 3), rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(np.asarray(conv.bias.value), np.zeros(3))
    expected = nnx.initializers.lecun_normal()(jax.random.fold_in(jax.random.key(0), 0), (3, 3, 2, 3), jnp.float32)
    np.testing.assert_array_equal(np.asarray(conv.kernel.value), np.asarray(expected))
    x = jnp.ones((1, 4, 4, 2))
    half = nnx.Conv(2, 3, (3, 3), param_dtype=jnp.bfloat16, kernel_init=np_init, rngs=nnx.Rngs(0))
    assert half.kernel.value.dtype == jnp.bfloat16 and half.bias.value.dtype == jnp.bfloat16
    assert half(x.astype(jnp.bfloat16)).dtype == jnp.bfloat16
    assert half(x).dtype == jnp.float32  # float32 input and bfloat16 params promote
    up = nnx.Conv(2, 3, (3, 3), param_dtype=jnp.bfloat16, dtype=jnp.float32, kernel_init=np_init, rngs=nnx.Rngs(0))
    assert up(x.astype(jnp.bfloat16)).dtype == jnp.float32
    down = nnx.Conv(2, 3, (3, 3), dtype=jnp.bfloat16, kernel_init=np_init, rngs=nnx.Rngs(0))
    y = down(x)
    assert y.dtype == jnp.bfloat16 and down.kernel.value.dtype == jnp.float32
    close(y, np_conv(np.ones((1, 4, 4, 2), np.float32), np.asarray(down.kernel.value), None, (1, 1), [(1, 1)] * 2), 0.1)


def test_conv_errors():
    conv = conv_layer(3, 4, (3, 3))
    with pytest.raises(LayerError, match=r"\(2, 5, 5, 2\).*must be 3.*channels last"):
        apply(conv, jnp.ones((2, 5, 5, 2)))
    with pytest.raises(nnx.PlaitError, match=r"at least 3 axes.*\(5, 3\)"):
        apply(conv, jnp.ones((5, 3)))
    with pytest.raises(LayerError, match="unknown padding 'REFLECT'"):
        nnx.Conv(3, 4, (3, 3), padding="REFLECT", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="not a padding for 2 spatial"):
        nnx.Conv(3, 4, (3, 3), padding=[(1, 1)], rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="CAUSAL.*one spatial axis"):
        nnx.Conv(3, 4, (3, 3), padding="CAUSAL", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"strides=\(1, 2, 3\) has 3 entries.*2 spatial"):
        nnx.Conv(3, 4, (3, 3), strides=(1, 2, 3), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="feature_group_count=2 must divide.*in_features \\(3\\)"):
        nnx.Conv(3, 4, (3, 3), feature_group_count=2, rngs=nnx.Rngs(0))
    with pytest.raises(nnx.PlaitError, match="rngs=nnx.Rngs"):
        nnx.Conv(3, 4, (3, 3), rngs=None)


def test_conv_gradient_under_jit():
    conv = conv_layer(2, 2, (2, 2), padding="VALID")
    x = rand(1, 3, 3, 2)

    @nnx.jit
    def grads(model, x):
        return nnx.grad(lambda m: m(x).sum())(model)

    g = grads(conv, jnp.asarray(x))
    # d(sum y)/d kernel[t] = sum over output positions of the input patch
    expected = np.stack(
        [np.stack([x[0, i : i + 2, j : j + 2].reshape(4, 2)[k] for i in range(2) for j in range(2)]).sum(0) for k in range(4)]
    ).reshape(2, 2, 2)
    close(g.kernel.value, np.repeat(expected[..., None], 2, axis=-1))
    close(g.bias.value, [4.0, 4.0])


# -- ConvTranspose ----------------------------------------------------------------------------


def transpose_layer(*args, **kwargs):
    return nnx.ConvTranspose(*args, kernel_init=np_init, bias_init=np_init, rngs=nnx.Rngs(0), **kwargs)


@pytest.mark.parametrize("kernel,strides,dilation", [(3, 2, 1), (2, 3, 1), (3, 1, 2)])
def test_conv_transpose_valid_and_explicit_match_numpy(kernel, strides, dilation):
    layer = transpose_layer(2, 3, (kernel,), strides=strides, kernel_dilation=dilation, padding="VALID")
    assert layer.kernel.value.shape == (kernel, 2, 3)
    x = rand(2, 4, 2)
    w, b = np.asarray(layer.kernel.value), np.asarray(layer.bias.value)
    full, (dilated,) = np_conv_transpose_full(x, w, (strides,), (dilation,))
    length = 4 * strides + max(dilated - strides, 0)  # VALID: the whole scatter, zero-extended to n * s
    expected = np.zeros((2, length, 3))
    expected[:, : full.shape[1]] = full
    close(apply(layer, jnp.asarray(x)), expected + b)
    # explicit padding pads the dilated input: output index o is full index o + (K - 1 - low)
    low, high = 1, 2
    explicit = transpose_layer(2, 3, (kernel,), strides=strides, kernel_dilation=dilation, padding=[(low, high)])
    explicit.kernel.value, explicit.bias.value = layer.kernel.value, layer.bias.value
    length = (4 - 1) * strides + 1 + low + high - dilated + 1
    start = dilated - 1 - low
    padded = np.pad(full, [(0, 0), (0, length + start), (0, 0)])
    close(apply(explicit, jnp.asarray(x)), padded[:, start : start + length] + b)


def test_conv_transpose_same_upsamples_by_the_stride():
    layer = transpose_layer(2, 3, (3, 3), strides=2)
    x = rand(1, 3, 4, 2)
    y = apply(layer, jnp.asarray(x))
    assert y.shape == (1, 6, 8, 3)
    full, dilated = np_conv_transpose_full(x, np.asarray(layer.kernel.value), (2, 2))
    start = [max((k - s) // 2, 0) for k, s in zip(dilated, (2, 2))]
    expected = full[:, start[0] : start[0] + 6, start[1] : start[1] + 8] + np.asarray(layer.bias.value)
    close(y, expected)


def test_conv_transpose_with_transposed_kernel_is_the_gradient_of_conv():
    conv = nnx.Conv(2, 3, (3, 2), strides=(2, 1), padding="VALID", use_bias=False, kernel_init=np_init, rngs=nnx.Rngs(0))
    up = nnx.ConvTranspose(3, 2, (3, 2), strides=(2, 1), padding="VALID", use_bias=False, transpose_kernel=True, rngs=nnx.Rngs(1))
    assert up.kernel.value.shape == (3, 2, 2, 3)  # (*kernel_size, out_features, in_features)
    up.kernel.value = conv.kernel.value
    x = jnp.asarray(rand(2, 7, 5, 2))
    g = jnp.asarray(rand(*apply(conv, x).shape))
    close(apply(up, g), pullback(conv, x, g))
    full, _ = np_conv_transpose_full(np.asarray(g), np.asarray(up.kernel.value), (2, 1), transpose_kernel=True)
    close(apply(up, g), full)


@pytest.mark.parametrize("kernel,strides", [((3, 2), (1, 2)), ((4, 3), (2, 1))])
def test_conv_transpose_circular_is_the_adjoint_of_circular_conv(kernel, strides):
    conv = nnx.Conv(2, 3, kernel, strides=strides, padding="CIRCULAR", use_bias=False, kernel_init=np_init, rngs=nnx.Rngs(0))
    up = nnx.ConvTranspose(
        3, 2, kernel, strides=strides, padding="CIRCULAR", use_bias=False, transpose_kernel=True, rngs=nnx.Rngs(0)
    )
    up.kernel.value = conv.kernel.value
    x = jnp.asarray(rand(1, 6, 4, 2))
    g = jnp.asarray(rand(*apply(conv, x).shape))
    out = apply(up, g)
    assert out.shape == x.shape  # n * stride along every axis
    close(out, pullback(conv, x, g))


def test_conv_transpose_circular_agrees_with_same_away_from_the_edges():
    layer = transpose_layer(2, 2, (3,), strides=2, padding="CIRCULAR")
    same = transpose_layer(2, 2, (3,), strides=2, padding="SAME")
    same.kernel.value, same.bias.value = layer.kernel.value, layer.bias.value
    x = jnp.asarray(rand(1, 6, 2))
    circular, padded = np.asarray(layer(x)), np.asarray(same(x))
    assert circular.shape == padded.shape == (1, 12, 2)
    close(circular[:, 3:-3], padded[:, 3:-3])
    assert not np.allclose(circular, padded)  # the ends differ: they wrap around
    # and the output is periodic: shifting the input by one step shifts the output by the stride
    close(apply(layer, jnp.roll(x, 1, axis=1)), np.roll(circular, 2, axis=1))


def test_conv_transpose_batch_axes_dtypes_and_errors():
    layer = transpose_layer(2, 3, (2, 2), strides=2)
    x = rand(2, 2, 3, 3, 2)
    y = apply(layer, jnp.asarray(x))
    assert y.shape == (2, 2, 6, 6, 3)
    close(apply(layer, jnp.asarray(x[1, 0])), y[1, 0], 1e-5)
    half = nnx.ConvTranspose(2, 3, (2, 2), param_dtype=jnp.bfloat16, kernel_init=np_init, rngs=nnx.Rngs(0))
    assert apply(half, jnp.ones((1, 2, 2, 2), jnp.bfloat16)).dtype == jnp.bfloat16
    assert apply(half, jnp.ones((1, 2, 2, 2))).dtype == jnp.float32
    with pytest.raises(ValueError, match="CAUSAL.*Conv only"):
        nnx.ConvTranspose(2, 3, (3,), padding="CAUSAL", rngs=nnx.Rngs(0))
    with pytest.raises(nnx.PlaitError, match="must be 2"):
        apply(layer, jnp.ones((1, 3, 3, 5)))
    with pytest.raises(ValueError, match=r"mask has shape"):
        nnx.ConvTranspose(2, 3, (2, 2), mask=jnp.ones((2, 2, 3, 2)), rngs=nnx.Rngs(0))


@pytest.mark.parametrize("cls", [nnx.Conv, nnx.ConvTranspose])
def test_kernel_and_bias_metadata_are_stored_on_the_params(cls):
    layer = cls(2, 3, (3,), kernel_metadata={"tag": "k"}, bias_metadata={"out_sharding": ("out",)}, rngs=nnx.Rngs(0))
    assert layer.kernel.get_metadata() == {"tag": "k"}
    assert layer.bias.get_metadata() == {"out_sharding": ("out",)}


def test_conv_general_dilated_is_injectable_and_preferred_element_type_reaches_it():
    seen = {}

    def recording_conv(*args, **kwargs):
        seen.update(kwargs)
        return jax.lax.conv_general_dilated(*args, **kwargs)

    x = jnp.ones((1, 5, 2), jnp.bfloat16)
    conv = nnx.Conv(2, 3, (3,), param_dtype=jnp.bfloat16, conv_general_dilated=recording_conv,
                    preferred_element_type=jnp.float32, rngs=nnx.Rngs(0))
    assert conv(x).dtype == jnp.float32 and seen["preferred_element_type"] == jnp.float32
    seen.clear()
    nnx.Conv(2, 3, (3,), conv_general_dilated=recording_conv, rngs=nnx.Rngs(0))(jnp.ones((1, 5, 2)))
    assert "preferred_element_type" not in seen  # not passed when unset, as in the reference
