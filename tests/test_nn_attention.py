"""Tests for attention: the functions, the mask helpers and MultiHeadAttention."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import plait as nnx
from helpers import raises

B, L, F = 2, 4, 8  # batch, length, features: one shape throughout keeps compilation short
RNG = np.random.RandomState(0)


def _randn(*shape):
    return RNG.randn(*shape).astype(np.float32)


# =======================================================================================
# NumPy references
# =======================================================================================


def np_softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_weights(q, k, bias=None, mask=None):
    logits = np.einsum("...qhd,...khd->...hqk", q, k) / np.sqrt(q.shape[-1])
    if bias is not None:
        logits = logits + bias
    if mask is not None:
        logits = np.where(mask, logits, np.finfo(np.float32).min)
    return np_softmax(logits)


def np_attention(q, k, v, bias=None, mask=None):
    return np.einsum("...hqk,...khd->...qhd", np_weights(q, k, bias, mask), v)


def np_mha(mha, xq, xkv=None, mask=None):
    """MultiHeadAttention by hand, from the module's parameters."""
    xkv = xq if xkv is None else xkv

    def project(p, x):
        y = np.einsum("...i,ihd->...hd", x, np.asarray(p.kernel.value))
        return y + np.asarray(p.bias.value) if p.bias is not None else y

    q, k, v = project(mha.query, xq), project(mha.key, xkv), project(mha.value, xkv)
    groups = mha.num_heads // mha.num_kv_heads
    k, v = np.repeat(k, groups, axis=-2), np.repeat(v, groups, axis=-2)
    o = np_attention(q, k, v, mask=mask)
    y = np.einsum("...hd,hdo->...o", o, np.asarray(mha.out.kernel.value))
    return y + np.asarray(mha.out.bias.value) if mha.out.bias is not None else y


def np_init(key, shape, dtype=jnp.float32):
    """Random weights from NumPy: no JAX random compile per shape, which keeps the tests fast."""
    return jnp.asarray(0.5 * RNG.randn(*shape), dtype)


def _mha(**kwargs):
    kwargs.setdefault("kernel_init", np_init)
    kwargs.setdefault("bias_init", np_init)
    return nnx.MultiHeadAttention(kwargs.pop("num_heads", 2), kwargs.pop("in_features", F), rngs=nnx.Rngs(0), **kwargs)


# =======================================================================================
# The functions
# =======================================================================================


def test_dot_product_attention_weights_match_numpy():
    q, k = _randn(B, L, 2, 4), _randn(B, L + 1, 2, 4)
    bias = _randn(B, 2, L, L + 1)
    mask = RNG.rand(B, 1, L, L + 1) > 0.3
    mask[..., 0] = True  # every query sees at least one key
    w = nnx.dot_product_attention_weights(jnp.asarray(q), jnp.asarray(k), jnp.asarray(bias), jnp.asarray(mask))
    assert w.shape == (B, 2, L, L + 1) and w.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(w), np_weights(q, k, bias, mask), rtol=1e-5, atol=1e-6)
    assert np.all(np.asarray(w)[~np.broadcast_to(mask, w.shape)] == 0)


def test_dot_product_attention_matches_numpy_with_and_without_batch_axes():
    q, k, v = _randn(B, 3, L, 2, 4), _randn(B, 3, L, 2, 4), _randn(B, 3, L, 2, 4)
    y = nnx.dot_product_attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v))
    assert y.shape == (B, 3, L, 2, 4)
    np.testing.assert_allclose(np.asarray(y), np_attention(q, k, v), rtol=1e-5, atol=1e-5)
    y = nnx.dot_product_attention(jnp.asarray(q[0, 0]), jnp.asarray(k[0, 0]), jnp.asarray(v[0, 0]))
    np.testing.assert_allclose(np.asarray(y), np_attention(q[0, 0], k[0, 0], v[0, 0]), rtol=1e-5, atol=1e-5)


def test_dot_product_attention_dtypes():
    q = jnp.ones((B, L, 2, 4), jnp.bfloat16)
    assert nnx.dot_product_attention(q, q, q).dtype == jnp.bfloat16
    assert nnx.dot_product_attention(q, q, q.astype(jnp.float32)).dtype == jnp.float32  # promoted
    assert nnx.dot_product_attention(q, q, q, dtype=jnp.float32).dtype == jnp.float32


def test_attention_dropout_scales_kept_weights_and_broadcasts():
    q, k = jnp.asarray(_randn(B, L, 2, 4)), jnp.asarray(_randn(B, L, 2, 4))
    clean = np.asarray(nnx.dot_product_attention_weights(q, k))
    key = jax.random.key(1)
    w = np.asarray(nnx.dot_product_attention_weights(q, k, dropout_rng=key, dropout_rate=0.5))
    kept = w != 0
    assert 0 < kept.mean() < 1
    np.testing.assert_allclose(w[kept], clean[kept] * 2, rtol=1e-5)
    # broadcast_dropout (the default): one mask for every batch element and head
    assert (kept == kept[:1, :1]).all()
    w = np.asarray(nnx.dot_product_attention_weights(q, k, dropout_rng=key, dropout_rate=0.5, broadcast_dropout=False))
    assert not (w[0, 0] != 0).tolist() == (w[1, 1] != 0).tolist()
    # deterministic, or a zero rate, turns it off
    np.testing.assert_array_equal(
        np.asarray(nnx.dot_product_attention_weights(q, k, dropout_rng=key, dropout_rate=0.5, deterministic=True)), clean
    )
    with pytest.raises(nnx.RngError, match="dropout_rng"):
        nnx.dot_product_attention_weights(q, k, dropout_rate=0.5)


def test_shape_errors_name_the_expected_layout():
    with pytest.raises(nnx.PlaitError, match=r"\[batch..., q_length, heads, depth\]"):
        nnx.dot_product_attention(jnp.ones((L, 2, 3)), jnp.ones((L, 3, 3)), jnp.ones((L, 3, 3)))
    with pytest.raises(nnx.PlaitError, match="only the last axis"):
        nnx.dot_product_attention(jnp.ones((L, 2, 3)), jnp.ones((L, 2, 3)), jnp.ones((L + 1, 2, 3)))

    with pytest.raises(nnx.PlaitError, match=r"mask has shape \(3, 3\).*\(2, 4, 4\)"):
        nnx.dot_product_attention(jnp.ones((L, 2, 3)), jnp.ones((L, 2, 3)), jnp.ones((L, 2, 3)), mask=jnp.ones((3, 3)))


def test_mha_mask_of_the_wrong_shape_names_the_layer_and_the_shape_it_needs():
    mha = _mha()
    x = jnp.ones((B, L, F))
    raises(nnx.LayerError, lambda: mha(x, mask=jnp.ones((B, L))), "MultiHeadAttention(num_heads=2)", "(2, 4)",
           "(2, 2, 4, 4)", "(2, 1, 4, 4)", "make_attention_mask")
    raises(nnx.LayerError, lambda: mha(x, jnp.ones((B, 3, F)), mask=jnp.ones((B, 1, L, L))), "(2, 2, 4, 3)")
    causal = nnx.make_causal_mask(jnp.ones((B, L)))
    np.testing.assert_allclose(np.asarray(mha(x, mask=causal)), np.asarray(mha(x, mask=causal[0])), rtol=1e-6)
    mha.init_cache((B, L, F))  # a decoding step attends to the whole cache of L positions
    raises(nnx.LayerError, lambda: mha(x[:, :1], mask=jnp.ones((B, 1, 1, 1)).repeat(2, -1), decode=True),
           "cache of 4 positions", "(2, 2, 1, 4)")
    assert mha(x[:, :1], mask=jnp.ones((B, 1, 1, L)), decode=True).shape == (B, 1, F)


def test_mha_rank_one_input_names_the_users_input():
    message = raises(nnx.LayerError, lambda: _mha()(jnp.ones(F)), "inputs_q of shape (8,)", "[batch..., length, 8]")
    assert "inputs_q[None, :]" in message and "query" not in message.replace("inputs_q", "")


# =======================================================================================
# Masks
# =======================================================================================


def test_make_attention_mask_matches_numpy():
    q, k = np.array([[1, 1, 0], [1, 0, 0]]), np.array([[1, 0, 1, 1], [1, 1, 1, 0]])
    mask = nnx.make_attention_mask(jnp.asarray(q), jnp.asarray(k))
    assert mask.shape == (2, 1, 3, 4) and mask.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(mask), (q[:, None, :, None] * k[:, None, None, :]).astype(np.float32))
    mask = nnx.make_attention_mask(jnp.asarray(q), jnp.asarray(k), jnp.greater, extra_batch_dims=2, dtype=jnp.bool_)
    assert mask.shape == (1, 1, 2, 1, 3, 4) and mask.dtype == jnp.bool_
    np.testing.assert_array_equal(np.asarray(mask)[0, 0], q[:, None, :, None] > k[:, None, None, :])


def test_make_causal_mask_matches_numpy():
    mask = nnx.make_causal_mask(jnp.ones((B, L)))
    assert mask.shape == (B, 1, L, L)
    np.testing.assert_array_equal(np.asarray(mask), np.broadcast_to(np.tril(np.ones((L, L))), (B, 1, L, L)))
    assert nnx.make_causal_mask(jnp.ones(L), extra_batch_dims=1).shape == (1, 1, L, L)


def test_combine_masks():
    a = np.array([[1, 1, 0, 1]])
    b = np.array([[0, 1, 1, 1]])
    np.testing.assert_array_equal(np.asarray(nnx.combine_masks(jnp.asarray(a), None, jnp.asarray(b))), a * b)
    assert nnx.combine_masks(None, None) is None
    assert nnx.combine_masks(jnp.asarray(a), dtype=jnp.bool_).dtype == jnp.bool_
    with pytest.raises(nnx.PlaitError, match="same rank"):
        nnx.combine_masks(jnp.ones((2, 2)), jnp.ones(2))


# =======================================================================================
# MultiHeadAttention
# =======================================================================================


def test_mha_default_initialisation():
    mha = nnx.MultiHeadAttention(2, F, rngs=nnx.Rngs(0))
    assert np.std(np.asarray(mha.query.kernel.value)) > 0
    np.testing.assert_array_equal(np.asarray(mha.out.bias.value), np.zeros(F))
    assert not np.allclose(np.asarray(mha.query.kernel.value), np.asarray(mha.key.kernel.value))


def test_mha_parameters_follow_the_reference_layout():
    mha = nnx.MultiHeadAttention(2, F, qkv_features=6, out_features=5, in_kv_features=3, kernel_init=np_init,
                                 rngs=nnx.Rngs(0))
    assert all(isinstance(getattr(mha, n), nnx.LinearGeneral) for n in ("query", "key", "value", "out"))
    assert mha.query.kernel.value.shape == (F, 2, 3) and mha.query.bias.value.shape == (2, 3)
    assert mha.key.kernel.value.shape == (3, 2, 3) and mha.value.kernel.value.shape == (3, 2, 3)
    assert mha.out.kernel.value.shape == (2, 3, 5) and mha.out.bias.value.shape == (5,)
    assert mha.rngs is None  # no dropout, no RNG state to split or carry
    assert len(jax.tree.leaves(nnx.state(mha, nnx.RngState))) == 0
    no_bias = nnx.MultiHeadAttention(2, F, use_bias=False, kernel_init=np_init, rngs=nnx.Rngs(0))
    assert no_bias.query.bias is None and no_bias.out.bias is None


def test_mha_self_attention_matches_numpy():
    mha = _mha()
    x = _randn(B, L, F)
    y = mha(jnp.asarray(x))
    assert y.shape == (B, L, F) and y.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(y), np_mha(mha, x), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(mha(jnp.asarray(x), jnp.asarray(x), jnp.asarray(x))), np.asarray(y))


def test_mha_cross_attention_matches_numpy():
    mha = _mha(in_kv_features=3, out_features=5)
    xq, xkv = _randn(B, L, F), _randn(B, L + 2, 3)
    y = mha(jnp.asarray(xq), jnp.asarray(xkv))
    assert y.shape == (B, L, 5)
    np.testing.assert_allclose(np.asarray(y), np_mha(mha, xq, xkv), rtol=1e-4, atol=1e-5)
    with pytest.raises(nnx.PlaitError, match=r"in_kv_features=3\) got inputs_k of shape \(2, 4, 8\)"):
        mha(jnp.asarray(xq), jnp.asarray(xq))
    with pytest.raises(nnx.PlaitError, match="inputs_v was given without inputs_k"):
        mha(jnp.asarray(xq), None, jnp.asarray(xkv))


def test_mha_causal_mask_matches_numpy_and_hides_the_future():
    mha = _mha()
    x = _randn(B, L, F)
    mask = nnx.make_causal_mask(jnp.ones((B, L)))
    y = np.asarray(mha(jnp.asarray(x), mask=mask))
    np.testing.assert_allclose(y, np_mha(mha, x, mask=np.asarray(mask) > 0), rtol=1e-4, atol=1e-5)
    changed = x.copy()
    changed[:, -1] += 10.0  # the last token changes: no earlier output may move
    y2 = np.asarray(mha(jnp.asarray(changed), mask=mask))
    np.testing.assert_allclose(y2[:, :-1], y[:, :-1], rtol=1e-5, atol=1e-6)
    assert not np.allclose(y2[:, -1], y[:, -1])


def test_mha_grouped_kv_heads_match_numpy():
    mha = _mha(num_heads=4, num_kv_heads=2)
    assert mha.query.kernel.value.shape == (F, 4, 2)
    assert mha.key.kernel.value.shape == (F, 2, 2) and mha.value.kernel.value.shape == (F, 2, 2)
    x = _randn(B, L, F)
    mask = nnx.make_causal_mask(jnp.ones((B, L)))
    np.testing.assert_allclose(
        np.asarray(mha(jnp.asarray(x), mask=mask)), np_mha(mha, x, mask=np.asarray(mask) > 0), rtol=1e-4, atol=1e-5
    )
    # one key/value head for all (multi-query attention)
    mqa = _mha(num_heads=4, num_kv_heads=1)
    np.testing.assert_allclose(np.asarray(mqa(jnp.asarray(x))), np_mha(mqa, x), rtol=1e-4, atol=1e-5)


def test_mha_normalize_qk_matches_numpy():
    mha = _mha(normalize_qk=True)
    assert isinstance(mha.query_ln, nnx.LayerNorm) and mha.query_ln.bias is None
    assert mha.query_ln.scale.value.shape == (F // 2,)
    mha.query_ln.scale.value = jnp.asarray(_randn(F // 2))
    x = _randn(B, L, F)

    def ln(y, scale):
        mean, var = y.mean(-1, keepdims=True), y.var(-1, keepdims=True)
        return (y - mean) / np.sqrt(var + 1e-6) * scale

    q = np.einsum("...i,ihd->...hd", x, np.asarray(mha.query.kernel.value)) + np.asarray(mha.query.bias.value)
    k = np.einsum("...i,ihd->...hd", x, np.asarray(mha.key.kernel.value)) + np.asarray(mha.key.bias.value)
    v = np.einsum("...i,ihd->...hd", x, np.asarray(mha.value.kernel.value)) + np.asarray(mha.value.bias.value)
    o = np_attention(ln(q, np.asarray(mha.query_ln.scale.value)), ln(k, np.asarray(mha.key_ln.scale.value)), v)
    expected = np.einsum("...hd,hdo->...o", o, np.asarray(mha.out.kernel.value)) + np.asarray(mha.out.bias.value)
    np.testing.assert_allclose(np.asarray(mha(jnp.asarray(x))), expected, rtol=1e-4, atol=1e-5)


def test_mha_dtypes():
    mha = _mha(param_dtype=jnp.bfloat16, dtype=jnp.float32)
    assert mha.query.kernel.value.dtype == jnp.bfloat16
    assert mha(jnp.ones((B, L, F), jnp.bfloat16)).dtype == jnp.float32
    mha = _mha(param_dtype=jnp.bfloat16)
    assert mha(jnp.ones((B, L, F), jnp.bfloat16)).dtype == jnp.bfloat16
    assert mha(jnp.ones((B, L, F), jnp.float32)).dtype == jnp.float32  # promoted with the input


def test_mha_sow_weights_keeps_the_attention_weights():
    mha = _mha()
    x = jnp.asarray(_randn(B, L, F))
    mha(x, sow_weights=True)
    w = mha.attention_weights
    assert type(w) is nnx.Intermediate and len(w.value) == 1 and w.value[0].shape == (B, 2, L, L)
    np.testing.assert_allclose(np.asarray(w.value[0].sum(-1)), np.ones((B, 2, L)), rtol=1e-5)
    mha(2 * x, sow_weights=True)  # sown again: appended, as Flax NNX does
    assert len(mha.attention_weights.value) == 2
    assert not np.allclose(np.asarray(mha.attention_weights.value[0]), np.asarray(mha.attention_weights.value[1]))
    popped = nnx.pop(mha, nnx.Intermediate)
    assert len(popped["attention_weights"].value) == 2 and not hasattr(mha, "attention_weights")


def test_mha_dropout_draws_a_new_mask_each_call_and_is_off_when_deterministic():
    rngs = nnx.Rngs(0)
    mha = nnx.MultiHeadAttention(2, F, dropout_rate=0.5, deterministic=False, kernel_init=np_init, rngs=rngs)
    assert mha.rngs is rngs  # a reference, as Dropout keeps
    x = jnp.asarray(_randn(B, L, F))
    count = int(rngs.default.count.value)
    y1, y2 = np.asarray(mha(x)), np.asarray(mha(x))
    assert int(rngs.default.count.value) == count + 2
    assert not np.allclose(y1, y2)
    clean = np_mha(mha, np.asarray(x))
    assert not np.allclose(y1, clean, atol=1e-4)
    np.testing.assert_allclose(np.asarray(mha(x, deterministic=True)), clean, rtol=1e-4, atol=1e-5)
    mha.eval()
    np.testing.assert_allclose(np.asarray(mha(x)), clean, rtol=1e-4, atol=1e-5)
    assert int(rngs.default.count.value) == count + 2  # no draws while deterministic
    mha.train()
    assert not np.allclose(np.asarray(mha(x)), clean, atol=1e-4)
    # under jit the count is carried back out, so masks still change from call to call
    f = nnx.jit(lambda m, x: m(x))
    assert not np.allclose(np.asarray(f(mha, x)), np.asarray(f(mha, x)))
    # a 'dropout' stream in the call's rngs takes precedence
    a = np.asarray(mha(x, rngs=nnx.Rngs(dropout=7)))
    np.testing.assert_array_equal(a, np.asarray(mha(x, rngs=nnx.Rngs(dropout=7))))


def test_mha_dropout_needs_to_know_whether_it_is_training():
    mha = nnx.MultiHeadAttention(2, F, dropout_rate=0.1, kernel_init=np_init, rngs=nnx.Rngs(0))
    with pytest.raises(nnx.PlaitError, match="deterministic is None"):
        mha(jnp.ones((B, L, F)))
    assert mha(jnp.ones((B, L, F)), deterministic=True).shape == (B, L, F)
    no_rngs = nnx.MultiHeadAttention(2, F, kernel_init=np_init, rngs=nnx.Rngs(0))  # built without dropout: holds no rngs
    no_rngs.dropout_rate = 0.5
    with pytest.raises(nnx.RngError, match="no RNG for dropout"):
        no_rngs(jnp.ones((B, L, F)), deterministic=False)


def test_mha_constructor_errors():
    with pytest.raises(nnx.PlaitError, match="qkv_features=7 must be divisible by num_heads=2"):
        nnx.MultiHeadAttention(2, F, qkv_features=7, rngs=nnx.Rngs(0))
    with pytest.raises(nnx.PlaitError, match="multiple of num_kv_heads=3"):
        nnx.MultiHeadAttention(4, F, num_kv_heads=3, rngs=nnx.Rngs(0))
    with pytest.raises(nnx.PlaitError, match="rngs=nnx.Rngs"):
        nnx.MultiHeadAttention(2, F, rngs=None)
    with pytest.raises(nnx.PlaitError, match=r"last axis\s+must be 8"):
        _mha()(jnp.ones((B, L, 3)))


# =======================================================================================
# Autoregressive decoding
# =======================================================================================


@pytest.mark.parametrize("num_kv_heads", [None, 1])
def test_decoding_token_by_token_matches_the_causal_forward(num_kv_heads):
    mha = _mha(num_heads=2, num_kv_heads=num_kv_heads)
    x = jnp.asarray(_randn(B, L, F))
    full = np.asarray(mha(x, mask=nnx.make_causal_mask(jnp.ones((B, L)))))

    mha.init_cache(x.shape)
    kv_heads = num_kv_heads or 2
    assert type(mha.cached_key) is nnx.Cache and mha.cached_key.value.shape == (B, L, kv_heads, F // 2)
    assert type(mha.cache_index) is nnx.Cache and int(mha.cache_index.value) == 0
    steps = [np.asarray(mha(x[:, t : t + 1], decode=True)) for t in range(L)]
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, rtol=1e-4, atol=1e-5)
    assert int(mha.cache_index.value) == L
    with pytest.raises(nnx.PlaitError, match="cache is full"):
        mha(x[:, :1], decode=True)


def test_decoding_under_jit_with_decode_set_in_the_constructor():
    mha = _mha(decode=True)
    x = jnp.asarray(_randn(B, L, F))
    full = np.asarray(mha(x, mask=nnx.make_causal_mask(jnp.ones((B, L))), decode=False))
    mha.init_cache(x.shape)
    step = nnx.jit(lambda m, token: m(token))
    steps = [np.asarray(step(mha, x[:, t : t + 1])) for t in range(L)]
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, rtol=1e-4, atol=1e-5)
    assert int(mha.cache_index.value) == L
    # a new cache starts a new sequence
    mha.init_cache(x.shape)
    np.testing.assert_allclose(np.asarray(step(mha, x[:, :1])), full[:, :1], rtol=1e-4, atol=1e-5)


def test_decoding_errors_say_what_to_do():
    mha = _mha()
    with pytest.raises(nnx.PlaitError, match="init_cache"):
        mha(jnp.ones((B, 1, F)), decode=True)
    mha.init_cache((B, L, F))
    with pytest.raises(nnx.PlaitError, match="one token at a time"):
        mha(jnp.ones((B, 2, F)), decode=True)


# =======================================================================================
# A Transformer-like stack: built with split_rngs + vmap, run with scan
# =======================================================================================

DEPTH = 3


def _same_for_every_layer(key, shape, dtype=jnp.float32):
    """Ignores the key: every layer of the stack gets the same weights."""
    return jnp.asarray(0.5 * np.random.RandomState(42).randn(*shape), dtype)


class Block(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.attention = nnx.MultiHeadAttention(
            2, F, dropout_rate=0.5, deterministic=False, broadcast_dropout=False,
            kernel_init=_same_for_every_layer, rngs=rngs,
        )
        self.linear = nnx.Linear(F, F, kernel_init=_same_for_every_layer, rngs=rngs)

    def __call__(self, x):
        return x + self.linear(nnx.relu(self.attention(x)))


@nnx.jit  # one compilation instead of one per operation
@nnx.split_rngs(splits=DEPTH)
@nnx.vmap(axis_size=DEPTH)
def create_stack(rngs: nnx.Rngs):
    return Block(rngs)


def _distinct(ys):
    return len({np.asarray(y).round(5).tobytes() for y in ys}) == len(ys)


def test_transformer_stack_has_a_layer_axis_but_unsplit_rng_state():
    stack = create_stack(nnx.Rngs(0))
    assert stack.attention.query.kernel.value.shape == (DEPTH, F, 2, F // 2)
    assert stack.linear.kernel.value.shape == (DEPTH, F, F)
    assert all(jnp.shape(leaf) == () for leaf in jax.tree.leaves(nnx.state(stack, nnx.RngState)))
    # scanning the unsplit RNG state over the layer axis fails, with the fixes in the message
    with pytest.raises(nnx.AxisError, match="split_rngs"):
        nnx.scan(lambda x, block: block(x), in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)(jnp.ones((B, L, F)), stack)


def test_transformer_stack_split_at_call_time_gives_each_layer_its_own_mask():
    rngs = nnx.Rngs(0)
    stack = create_stack(rngs)
    x = jnp.asarray(_randn(B, L, F))

    @nnx.jit
    @nnx.split_rngs(splits=DEPTH)
    @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=(nnx.Carry, 0))
    def each_layer_on_x(x, block):
        return x, block(x)  # the carry stays x: identical layers see identical inputs

    count = int(rngs.default.count.value)
    _, ys = each_layer_on_x(x, stack)
    assert ys.shape == (DEPTH, B, L, F)
    assert _distinct(ys), "every layer must draw its own dropout mask"
    assert int(rngs.default.count.value) == count + 1  # the split consumed one draw
    _, again = each_layer_on_x(x, stack)
    assert not np.allclose(np.asarray(again), np.asarray(ys)), "a new call draws new masks"


def test_transformer_stack_carrying_the_rng_state_gives_each_layer_its_own_mask():
    rngs = nnx.Rngs(0)
    stack = create_stack(rngs)
    x = jnp.asarray(_randn(B, L, F))
    count = int(rngs.default.count.value)
    state_axes = nnx.StateAxes({nnx.RngState: nnx.Carry, ...: 0})

    @nnx.scan(in_axes=(nnx.Carry, state_axes), out_axes=(nnx.Carry, 0))
    def forward(carry, block):
        h, x = carry
        # the model proper (each layer on the previous output), and each layer on the same x
        return (block(h), x), block(x)

    (out, _), ys = forward((x, x), stack)
    assert out.shape == (B, L, F) and bool(jnp.isfinite(out).all())
    assert int(rngs.default.count.value) == count + 2 * DEPTH  # two draws a layer, carried back out
    assert _distinct(ys), "every layer must draw its own dropout mask"


def test_transformer_stack_with_remat_matches_without_and_keeps_per_layer_masks():
    """remat inside the scanned layer: same loss and gradients as without it (same keys),
    the RNG count still comes back out, and layers still draw their own masks."""
    x = jnp.asarray(_randn(B, L, F))
    state_axes = nnx.StateAxes({nnx.RngState: nnx.Carry, ...: 0})

    def make_loss(use_remat):
        def loss(stack):
            @nnx.scan(in_axes=(nnx.Carry, state_axes), out_axes=(nnx.Carry, 0))
            def forward(h, block):
                step = nnx.remat(lambda b, h: b(h)) if use_remat else (lambda b, h: b(h))
                out = step(block, h)
                return out, out

            out, ys = forward(x, stack)
            return (out ** 2).mean(), ys

        return nnx.jit(nnx.value_and_grad(loss, has_aux=True))

    results = {}
    for use_remat in (False, True):
        rngs = nnx.Rngs(0)
        stack = create_stack(rngs)
        count = int(rngs.default.count.value)
        (value, ys), grads = make_loss(use_remat)(stack)
        assert int(rngs.default.count.value) == count + DEPTH  # one draw a layer, carried back out
        results[use_remat] = (value, grads, ys)
    (v0, g0, ys0), (v1, g1, ys1) = results[False], results[True]
    np.testing.assert_allclose(ys1, ys0, rtol=1e-5, atol=1e-6)  # same keys: same masks
    np.testing.assert_allclose(v1, v0, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    assert _distinct(list(ys1)) and bool(jnp.isfinite(ys1).all())


def test_mha_metadata_reaches_every_projection_as_in_the_reference():
    meta = {
        "kernel_metadata": {"role": "qkv_kernel"}, "bias_metadata": {"role": "qkv_bias"},
        "out_kernel_metadata": {"role": "out_kernel"},
        "query_ln_scale_metadata": {"role": "q_ln"}, "key_ln_scale_metadata": {"role": "k_ln"},
    }
    mha = nnx.MultiHeadAttention(2, F, normalize_qk=True, rngs=nnx.Rngs(0), **meta)
    for name in ("query", "key", "value"):
        assert getattr(mha, name).kernel.get_metadata() == {"role": "qkv_kernel"}
        assert getattr(mha, name).bias.get_metadata() == {"role": "qkv_bias"}
    assert mha.out.kernel.get_metadata() == {"role": "out_kernel"}
    assert mha.out.bias.get_metadata() == {"role": "qkv_bias"}  # no out_bias_metadata: the shared one
    assert mha.query_ln.scale.get_metadata() == {"role": "q_ln"}
    assert mha.key_ln.scale.get_metadata() == {"role": "k_ln"}


def test_is_causal_is_a_causal_mask():
    q, k, v = (jnp.asarray(RNG.randn(B, L, 2, 4), jnp.float32) for _ in range(3))
    causal = nnx.make_causal_mask(jnp.ones((B, L)))
    expected = nnx.dot_product_attention(q, k, v, mask=causal)
    np.testing.assert_allclose(np.asarray(nnx.dot_product_attention(q, k, v, is_causal=True)), np.asarray(expected),
                               rtol=1e-6)
    padding = nnx.make_attention_mask(jnp.ones((B, L)), jnp.array([[1, 1, 1, 0], [1, 1, 1, 1]]))
    both = nnx.dot_product_attention(q, k, v, mask=nnx.combine_masks(padding, causal))
    np.testing.assert_allclose(np.asarray(nnx.dot_product_attention(q, k, v, mask=padding, is_causal=True)),
                               np.asarray(both), rtol=1e-6)
    weights = nnx.dot_product_attention_weights(q, k, is_causal=True)
    assert float(np.abs(np.triu(np.asarray(weights), 1)).max()) == 0.0
    mha = _mha()
    x = jnp.asarray(RNG.randn(B, L, F), jnp.float32)
    np.testing.assert_allclose(np.asarray(mha(x, is_causal=True)), np.asarray(mha(x, mask=causal)), rtol=1e-6)


def test_mha_keep_rngs_false_holds_no_stream_and_takes_rngs_per_call():
    mha = nnx.MultiHeadAttention(2, F, dropout_rate=0.5, deterministic=False, keep_rngs=False, rngs=nnx.Rngs(0))
    assert mha.rngs is None and mha.keep_rngs is False
    assert not nnx.state(mha, nnx.RngState)
    x = jnp.ones((B, L, F))
    with pytest.raises(nnx.RngError, match="keep_rngs=False"):
        mha(x)
    rngs = nnx.Rngs(dropout=1)
    a, b = mha(x, rngs=rngs), mha(x, rngs=rngs)
    assert not np.array_equal(np.asarray(a), np.asarray(b)) and int(rngs.dropout.count.value) == 2
    kept = nnx.MultiHeadAttention(2, F, dropout_rate=0.5, deterministic=False, rngs=nnx.Rngs(0))
    assert isinstance(kept.rngs, nnx.Rngs)  # keep_rngs=True, the default


def test_mha_promote_dtype_and_dot_general_reach_the_projections():
    def dot(lhs, rhs, dims, precision=None):
        return jax.lax.dot_general(lhs, rhs, dims, precision=precision)

    def promote(args, /, *, dtype=None, inexact=True):
        return tuple(args)

    mha = nnx.MultiHeadAttention(
        2, F, normalize_qk=True, qkv_promote_dtype=promote, out_promote_dtype=promote, ln_promote_dtype=promote,
        qkv_dot_general=dot, out_dot_general_cls=lambda: dot, rngs=nnx.Rngs(0),
    )
    assert all(getattr(mha, n).promote_dtype is promote and getattr(mha, n).dot_general is dot
               for n in ("query", "key", "value"))
    assert mha.out.promote_dtype is promote and mha.out.dot_general_cls() is dot
    assert mha.query_ln.promote_dtype is promote and mha.key_ln.promote_dtype is promote
    assert mha(jnp.ones((B, L, F))).shape == (B, L, F)
