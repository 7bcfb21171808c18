"""avg_pool, max_pool, min_pool and pool against a window-by-window NumPy reference."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import plait as nnx
from plait.errors import LayerError

RS = np.random.RandomState(0)


def np_pool(x, window, strides, pads, reduce, fill):
    """Reduce each window of the spatial axes of ``x (*batch, *spatial, C)``; padding holds ``fill``."""
    n = len(window)
    n_batch = x.ndim - n - 1
    xp = np.pad(x.astype(np.float64), [(0, 0)] * n_batch + list(pads) + [(0, 0)], constant_values=fill)
    out = [(xp.shape[n_batch + i] - window[i]) // strides[i] + 1 for i in range(n)]
    y = np.empty(x.shape[:n_batch] + tuple(out) + x.shape[-1:])
    lead = (slice(None),) * n_batch
    for pos in np.ndindex(*out):
        block = xp[lead + tuple(slice(p * s, p * s + w) for p, s, w in zip(pos, strides, window))]
        y[lead + pos] = reduce(block, axis=tuple(range(n_batch, n_batch + n)))
    return y


def same_pads(size, window, strides):
    pads = []
    for s, w, st in zip(size, window, strides):
        total = max((math.ceil(s / st) - 1) * st + w - s, 0)
        pads.append((total // 2, total - total // 2))
    return pads


def close(a, b):
    np.testing.assert_allclose(np.asarray(a, np.float64), b, rtol=1e-5, atol=1e-5)


X = RS.randn(2, 5, 6, 3).astype(np.float32)


@pytest.mark.parametrize(
    "window,strides,padding",
    [((2, 2), (2, 2), "VALID"), ((3, 2), None, "VALID"), ((3, 3), (2, 1), "SAME"), ((2, 3), (1, 2), [(1, 0), (2, 1)])],
    ids=["valid-stride", "valid-default-stride", "same", "explicit"],
)
def test_max_min_avg_match_numpy(window, strides, padding):
    st = strides or (1,) * len(window)
    if padding == "VALID":
        pads = [(0, 0)] * len(window)
    elif padding == "SAME":
        pads = same_pads(X.shape[1:3], window, st)
    else:
        pads = padding
    x = jnp.asarray(X)
    close(nnx.max_pool(x, window, strides, padding), np_pool(X, window, st, pads, np.max, -np.inf))
    close(nnx.min_pool(x, window, strides, padding), np_pool(X, window, st, pads, np.min, np.inf))
    # count_include_pad=True: the padded zeros count, the divisor is the window size
    close(nnx.avg_pool(x, window, strides, padding), np_pool(X, window, st, pads, np.sum, 0.0) / np.prod(window))


def test_avg_pool_count_include_pad_false_divides_by_real_positions():
    x = jnp.asarray(X)
    pads = same_pads(X.shape[1:3], (3, 3), (1, 1))
    sums = np_pool(X, (3, 3), (1, 1), pads, np.sum, 0.0)
    counts = np_pool(np.ones((1, 5, 6, 1)), (3, 3), (1, 1), pads, np.sum, 0.0)
    close(nnx.avg_pool(x, (3, 3), padding="SAME", count_include_pad=False), sums / counts)
    # inside the image the two agree; at the corners only 4 of 9 positions are real
    assert counts[0, 0, 0, 0] == 4 and counts[0, 2, 2, 0] == 9
    included = nnx.avg_pool(x, (3, 3), padding="SAME")
    close(included[:, 1:-1, 1:-1], (sums / counts)[:, 1:-1, 1:-1])


def test_any_number_of_batch_axes_or_none():
    x = jnp.asarray(RS.randn(2, 3, 6, 2).astype(np.float32))  # batch (2, 3), one spatial axis
    y = nnx.max_pool(x, (2,), strides=(2,))
    assert y.shape == (2, 3, 3, 2)
    close(y, np_pool(np.asarray(x), (2,), (2,), [(0, 0)], np.max, -np.inf))
    single = nnx.avg_pool(x[1, 2], (3,), padding="SAME", count_include_pad=False)  # (length, features)
    assert single.shape == (6, 2)
    close(single, np.asarray(nnx.avg_pool(x, (3,), padding="SAME", count_include_pad=False))[1, 2])


def test_integer_inputs():
    x = jnp.asarray(RS.randint(-50, 50, size=(1, 4, 4, 1)).astype(np.int32))
    y = nnx.max_pool(x, (3, 3), padding="SAME")
    assert y.dtype == jnp.int32  # padding never wins a max, even below zero
    np.testing.assert_array_equal(np.asarray(y), np_pool(np.asarray(x), (3, 3), (1, 1), [(1, 1)] * 2, np.max, -np.inf))
    assert nnx.min_pool(x, (2, 2)).dtype == jnp.int32
    mean = nnx.avg_pool(x, (2, 2), strides=(2, 2))
    assert jnp.issubdtype(mean.dtype, jnp.floating)
    close(mean, np_pool(np.asarray(x), (2, 2), (2, 2), [(0, 0)] * 2, np.mean, 0))


def test_dtypes_are_kept():
    x = jnp.asarray(X, jnp.bfloat16)
    assert nnx.max_pool(x, (2, 2)).dtype == jnp.bfloat16
    assert nnx.avg_pool(x, (2, 2), padding="SAME", count_include_pad=False).dtype == jnp.bfloat16


def test_generic_pool():
    x = jnp.arange(12.0).reshape(1, 6, 2)
    y = nnx.pool(x, 0.0, jax.lax.add, (3,), strides=(3,))
    np.testing.assert_array_equal(np.asarray(y), [[[6.0, 9.0], [24.0, 27.0]]])
    product = nnx.pool(x + 1, 1.0, jax.lax.mul, (2,), strides=(2,))
    np.testing.assert_array_equal(np.asarray(product)[0, :, 0], [3.0, 35.0, 99.0])


def test_gradients_under_jit():
    x = jnp.asarray(np.array([[1.0, 5.0, 2.0, 3.0]]).reshape(1, 4, 1))
    g_max = nnx.jit(jax.grad(lambda x: nnx.max_pool(x, (2,), strides=(2,)).sum()))(x)
    np.testing.assert_array_equal(np.asarray(g_max).ravel(), [0.0, 1.0, 0.0, 1.0])  # to the winners
    g_avg = jax.grad(lambda x: nnx.avg_pool(x, (2,), strides=(2,)).sum())(x)
    np.testing.assert_array_equal(np.asarray(g_avg).ravel(), [0.5, 0.5, 0.5, 0.5])


def test_errors():
    x = jnp.asarray(X)
    with pytest.raises(TypeError, match=r"window_shape=\(2, 2\)"):
        nnx.max_pool(x, 2)
    with pytest.raises(ValueError, match="strides .* 1 entries but window_shape .* 2"):
        nnx.avg_pool(x, (2, 2), strides=(2,))
    with pytest.raises(LayerError, match=r"at least 3 axes.*\(5, 3\)"):
        nnx.max_pool(jnp.ones((5, 3)), (2, 2))
    with pytest.raises(ValueError, match="'CIRCULAR' is not supported"):
        nnx.max_pool(x, (2, 2), padding="CIRCULAR")
    with pytest.raises(ValueError, match="unknown padding"):
        nnx.min_pool(x, (2, 2), padding="FULL")
