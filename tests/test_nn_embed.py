"""Embed against NumPy: lookup, attend, dtypes, gradients, initialisation, errors."""

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


def test_lookup_is_the_table_rows():
    embed = nnx.Embed(5, 3, embedding_init=np_init, rngs=nnx.Rngs(0))
    table = np.asarray(embed.embedding.value)
    assert table.shape == (5, 3) and type(embed.embedding) is nnx.Param
    ids = np.array([[0, 4, 2], [1, 1, 3]])
    y = embed(jnp.asarray(ids))
    assert y.shape == (2, 3, 3) and y.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(y), table[ids])
    assert embed(jnp.asarray(2)).shape == (3,)  # a scalar id gives one row
    np.testing.assert_array_equal(np.asarray(embed(jnp.array([3], jnp.uint8))), table[[3]])


def test_concrete_ids_out_of_range_raise_naming_layer_range_and_ids():
    embed = nnx.Embed(5, 3, embedding_init=np_init, rngs=nnx.Rngs(0))
    message = raises(LayerError, lambda: embed(jnp.array([0, 5, 7, 5])), "Embed(5, 3)", "0 <= id < 5", "[5, 7]")
    assert "nnx.Embed(8, 3" in message  # the fix: a table that holds id 7
    message = raises(LayerError, lambda: embed(np.array([[-1, 2]])), "Embed(5, 3)", "[-1]", "Negative ids")
    assert embed(np.array([4])).shape == (1, 3)  # the last valid id is fine


def test_traced_invalid_ids_give_nan_rows_negative_too():
    embed = nnx.Embed(5, 3, embedding_init=np_init, rngs=nnx.Rngs(0))
    table = np.asarray(embed.embedding.value)
    y = np.asarray(nnx.jit(lambda m, i: m(i))(embed, jnp.array([-1, 5, 7, 4])))
    assert np.isnan(y[:3]).all()  # -1 is NaN too, not the last row: one rule for every invalid id
    np.testing.assert_array_equal(y[3], table[4])


def test_check_ids_raises_under_jit():
    embed = nnx.Embed(5, 3, embedding_init=np_init, check_ids=True, rngs=nnx.Rngs(0))
    run = nnx.jit(lambda m, i: m(i))
    np.testing.assert_array_equal(np.asarray(run(embed, jnp.array([1, 4]))), np.asarray(embed.embedding.value)[[1, 4]])
    with pytest.raises(Exception) as info:
        jax.block_until_ready(run(embed, jnp.array([1, 9])))
    assert "Embed(5, 3) got ids outside its table" in str(info.value) and "[9]" in str(info.value)


def test_attend_is_query_times_table_transposed():
    embed = nnx.Embed(5, 3, embedding_init=np_init, rngs=nnx.Rngs(0))
    query = RS.randn(2, 4, 3).astype(np.float32)
    scores = embed.attend(jnp.asarray(query))
    assert scores.shape == (2, 4, 5)
    np.testing.assert_allclose(np.asarray(scores), query @ np.asarray(embed.embedding.value).T, rtol=1e-5, atol=1e-5)


def test_dtypes():
    embed = nnx.Embed(5, 3, param_dtype=jnp.bfloat16, embedding_init=np_init, rngs=nnx.Rngs(0))
    assert embed.embedding.value.dtype == jnp.bfloat16
    assert embed(jnp.array([1, 2])).dtype == jnp.bfloat16  # a lookup keeps the table's dtype
    assert embed.attend(jnp.ones((1, 3), jnp.bfloat16)).dtype == jnp.bfloat16
    assert embed.attend(jnp.ones((1, 3), jnp.float32)).dtype == jnp.float32  # promoted
    as_f32 = nnx.Embed(5, 3, param_dtype=jnp.bfloat16, dtype=jnp.float32, embedding_init=np_init, rngs=nnx.Rngs(0))
    y = as_f32(jnp.array([1, 2]))
    assert y.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(y), np.asarray(as_f32.embedding.value, np.float32)[[1, 2]])
    assert as_f32.attend(jnp.ones((1, 3), jnp.bfloat16)).dtype == jnp.float32
    assert as_f32.embedding.value.dtype == jnp.bfloat16


def test_gradient_reaches_only_the_looked_up_rows():
    embed = nnx.Embed(5, 2, embedding_init=np_init, rngs=nnx.Rngs(0))
    ids = jnp.array([0, 3, 3])
    grads = nnx.jit(lambda m: nnx.grad(lambda m: m(ids).sum())(m))(embed)
    np.testing.assert_array_equal(np.asarray(grads.embedding.value), [[1, 1], [0, 0], [0, 0], [2, 2], [0, 0]])


def test_default_init_has_unit_fan_in_variance():
    embed = nnx.Embed(200, 16, rngs=nnx.Rngs(0))
    std = float(np.std(np.asarray(embed.embedding.value)))
    assert abs(std - 1 / np.sqrt(16)) < 0.03  # variance_scaling(1, fan_in) with fan_in = features


def test_errors():
    embed = nnx.Embed(5, 3, embedding_init=np_init, rngs=nnx.Rngs(0))
    with pytest.raises(LayerError) as info:
        embed(jnp.ones((2,), jnp.float32))
    assert isinstance(info.value, ValueError)  # what the reference raises
    message = str(info.value)
    assert "Embed(5, 3)" in message and "float32" in message and "astype(jnp.int32)" in message and "attend" in message
    with pytest.raises(nnx.PlaitError, match="last axis must be 3"):
        embed.attend(jnp.ones((2, 4)))
    with pytest.raises(nnx.PlaitError, match="rngs=nnx.Rngs"):
        nnx.Embed(5, 3, rngs=None)


def test_under_vmap_and_jit():
    embed = nnx.Embed(5, 3, embedding_init=np_init, rngs=nnx.Rngs(0))
    ids = jnp.array([[0, 1], [2, 3]])
    y = nnx.vmap(lambda m, i: m(i), in_axes=(None, 0))(embed, ids)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(embed.embedding.value)[np.asarray(ids)])
    np.testing.assert_array_equal(np.asarray(nnx.jit(lambda m, i: m(i))(embed, ids)), np.asarray(y))
    assert jax.tree.leaves(nnx.state(embed, nnx.Param))[0].shape == (5, 3)


def test_embedding_metadata_is_stored_on_the_table():
    embed = nnx.Embed(5, 3, embedding_metadata={"out_sharding": ("vocab", "embed")}, rngs=nnx.Rngs(0))
    assert embed.embedding.get_metadata() == {"out_sharding": ("vocab", "embed")}
