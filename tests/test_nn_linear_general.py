"""LinearGeneral and Einsum against NumPy: maths, shapes, dtypes, initialisation, errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import plait as nnx
from plait.errors import LayerError

RS = np.random.RandomState(0)


def np_init(key, shape, dtype):
    """Random values from NumPy: the maths tests do not need JAX's initialisers (slow to compile per shape)."""
    return jnp.asarray(RS.randn(*shape), dtype)




def rand(*shape):
    return RS.randn(*shape).astype(np.float32)


apply = nnx.jit(lambda layer, x: layer(x))  # one compile per layer, not one per primitive


def close(a, b, tol=1e-5):
    np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), rtol=tol, atol=tol)


# =======================================================================================
# LinearGeneral
# =======================================================================================


def test_linear_general_contracts_several_axes_into_several():
    layer = nnx.LinearGeneral((2, 3), (4, 5), axis=(-2, -1), kernel_init=np_init, bias_init=np_init, rngs=nnx.Rngs(0))
    assert layer.kernel.value.shape == (2, 3, 4, 5)
    assert layer.bias.value.shape == (4, 5)
    x = rand(7, 2, 3)
    kernel, bias = np.asarray(layer.kernel.value), np.asarray(layer.bias.value)
    y = layer(jnp.asarray(x))
    assert y.shape == (7, 4, 5) and y.dtype == jnp.float32
    close(y, np.tensordot(x, kernel, axes=([1, 2], [0, 1])) + bias)


def test_linear_general_contracts_a_middle_axis():
    layer = nnx.LinearGeneral(3, (2, 2), axis=1, kernel_init=np_init, bias_init=np_init, rngs=nnx.Rngs(1))
    x = rand(2, 3, 4)
    y = apply(layer, jnp.asarray(x))
    assert y.shape == (2, 4, 2, 2)  # remaining axes in order, then out_features
    expected = np.einsum("aib,ioq->aboq", x, np.asarray(layer.kernel.value)) + np.asarray(layer.bias.value)
    close(y, expected)


def test_linear_general_with_ints_is_linear():
    general = nnx.LinearGeneral(3, 4, rngs=nnx.Rngs(0))
    linear = nnx.Linear(3, 4, rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(np.asarray(general.kernel.value), np.asarray(linear.kernel.value))
    x = jnp.asarray(rand(2, 3))
    close(general(x), linear(x))


def test_linear_general_initialises_the_flat_matrix():
    calls = []

    def kernel_init(key, shape, dtype):
        calls.append(shape)
        return nnx.initializers.lecun_normal()(key, shape, dtype)

    layer = nnx.LinearGeneral((2, 3), (4, 5), axis=(-2, -1), kernel_init=kernel_init, rngs=nnx.Rngs(0))
    assert calls == [(6, 20)]  # lecun_normal sees fan_in = 2 * 3
    assert layer.kernel.value.shape == (2, 3, 4, 5)


def test_linear_general_without_bias_and_dtypes():
    layer = nnx.LinearGeneral(3, (2, 2), use_bias=False, param_dtype=jnp.bfloat16, kernel_init=np_init, rngs=nnx.Rngs(0))
    assert layer.bias is None and layer.kernel.value.dtype == jnp.bfloat16
    assert apply(layer, jnp.ones((1, 3), jnp.bfloat16)).dtype == jnp.bfloat16
    assert apply(layer, jnp.ones((1, 3), jnp.float32)).dtype == jnp.float32  # promoted
    as_f32 = nnx.LinearGeneral(3, 2, param_dtype=jnp.bfloat16, dtype=jnp.float32, kernel_init=np_init, rngs=nnx.Rngs(0))
    x = rand(2, 3)
    y = apply(as_f32, jnp.asarray(x, jnp.bfloat16))
    assert y.dtype == jnp.float32
    close(y, np.asarray(jnp.asarray(x, jnp.bfloat16), np.float32) @ np.asarray(as_f32.kernel.value, np.float32), 1e-2)
    as_bf16 = nnx.LinearGeneral(3, 2, dtype=jnp.bfloat16, kernel_init=np_init, rngs=nnx.Rngs(0))
    assert apply(as_bf16, jnp.ones((2, 3))).dtype == jnp.bfloat16
    assert as_bf16.kernel.value.dtype == jnp.float32


def test_linear_general_gradients_under_jit():
    layer = nnx.LinearGeneral((2, 3), 4, axis=(-2, -1), kernel_init=np_init, rngs=nnx.Rngs(0))
    x = rand(5, 2, 3)

    @nnx.jit
    def step(model, x):
        return nnx.grad(lambda m: (m(x) ** 2).sum())(model)

    grads = step(layer, jnp.asarray(x))
    y = np.tensordot(x, np.asarray(layer.kernel.value), axes=([1, 2], [0, 1]))
    close(grads.kernel.value, np.tensordot(x, 2 * y, axes=([0], [0])), 1e-4)
    close(grads.bias.value, (2 * y).sum(0), 1e-4)


def test_linear_general_errors():
    with pytest.raises(ValueError, match=r"axis=\(-2, -1\)"):
        nnx.LinearGeneral((2, 3), 4, rngs=nnx.Rngs(0))  # two input features need two axes
    with pytest.raises(ValueError, match="repeats"):
        nnx.LinearGeneral((2, 2), 4, axis=(1, 1), rngs=nnx.Rngs(0))
    with pytest.raises(nnx.PlaitError, match="rngs=nnx.Rngs"):
        nnx.LinearGeneral(2, 4, rngs=None)
    layer = nnx.LinearGeneral((2, 3), 4, axis=(-2, -1), kernel_init=np_init, rngs=nnx.Rngs(0))
    with pytest.raises(LayerError) as info:  # a PlaitError and a ValueError
        layer(jnp.ones((5, 3, 2)))
    assert isinstance(info.value, nnx.PlaitError) and isinstance(info.value, ValueError)
    assert "(5, 3, 2)" in str(info.value) and "(3, 2)" in str(info.value) and "expected (2, 3)" in str(info.value)
    with pytest.raises(nnx.PlaitError, match="only 1 axes"):
        layer(jnp.ones(3))


# =======================================================================================
# Einsum
# =======================================================================================


def test_einsum_matches_numpy_with_bias_on_kernel_axes():
    layer = nnx.Einsum("btd,dhk->bthk", (4, 2, 3), (2, 3), kernel_init=np_init, bias_init=np_init, rngs=nnx.Rngs(0))
    assert layer.kernel.value.shape == (4, 2, 3) and layer.bias.value.shape == (2, 3)
    x = rand(2, 5, 4)
    y = layer(jnp.asarray(x))
    expected = np.einsum("btd,dhk->bthk", x, np.asarray(layer.kernel.value)) + np.asarray(layer.bias.value)
    assert y.shape == (2, 5, 2, 3)
    close(y, expected)


def test_einsum_bias_on_a_shared_axis_and_ellipsis():
    # 'h' is in the inputs and the kernel (batched heads): the bias still runs along it.
    layer = nnx.Einsum("...hd,hdk->...hk", (2, 4, 3), (2, 3), kernel_init=np_init, bias_init=np_init, rngs=nnx.Rngs(0))
    x = rand(3, 5, 2, 4)
    y = apply(layer, jnp.asarray(x))
    expected = np.einsum("abhd,hdk->abhk", x, np.asarray(layer.kernel.value)) + np.asarray(layer.bias.value)
    close(y, expected)
    # and a flat bias of the same size is reshaped onto those axes
    flat = nnx.Einsum("bd,dhk->bhk", (4, 2, 3), (6,), kernel_init=np_init, bias_init=np_init, rngs=nnx.Rngs(0))
    x2 = rand(2, 4)
    expected = np.einsum("bd,dhk->bhk", x2, np.asarray(flat.kernel.value)) + np.asarray(flat.bias.value).reshape(2, 3)
    close(apply(flat, jnp.asarray(x2)), expected)


def test_einsum_equation_per_call_and_without_bias():
    layer = nnx.Einsum("ab,bc->ac", (3, 4), kernel_init=np_init, rngs=nnx.Rngs(0))
    assert layer.bias is None
    x = rand(2, 3)
    kernel = np.asarray(layer.kernel.value)
    close(apply(layer, jnp.asarray(x)), x @ kernel)
    x3 = rand(5, 2, 3)
    close(layer(jnp.asarray(x3), "nab,bc->nac"), np.einsum("nab,bc->nac", x3, kernel))


def test_einsum_dtypes():
    layer = nnx.Einsum("ab,bc->ac", (3, 4), (4,), param_dtype=jnp.bfloat16, kernel_init=np_init, rngs=nnx.Rngs(0))
    assert layer.kernel.value.dtype == jnp.bfloat16 and layer.bias.value.dtype == jnp.bfloat16
    assert apply(layer, jnp.ones((2, 3), jnp.bfloat16)).dtype == jnp.bfloat16
    assert apply(layer, jnp.ones((2, 3), jnp.float32)).dtype == jnp.float32
    in_f32 = nnx.Einsum("ab,bc->ac", (3, 4), (4,), param_dtype=jnp.bfloat16, dtype=jnp.float32, kernel_init=np_init, rngs=nnx.Rngs(0))
    assert apply(in_f32, jnp.ones((2, 3), jnp.bfloat16)).dtype == jnp.float32


def test_einsum_errors():
    with pytest.raises(ValueError, match="'->'"):
        nnx.Einsum("ab,bc", (3, 4), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="exactly two operands"):
        nnx.Einsum("ab,bc,cd->ad", (3, 4), rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match="string"):
        nnx.Einsum(None, (3, 4), rngs=nnx.Rngs(0))
    layer = nnx.Einsum("ab,bc->ac", (3, 4), (5,), kernel_init=np_init, rngs=nnx.Rngs(0))
    with pytest.raises(nnx.PlaitError, match=r"bias_shape \(5,\).*'c'.*\(4,\)"):
        layer(jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="'->'"):
        nnx.Einsum("ab,bc->ac", (3, 4), rngs=nnx.Rngs(0))(jnp.ones((2, 3)), "ab,bc")


def test_einsum_under_jit_matches_eager():
    layer = nnx.Einsum("ab,bc->ac", (3, 4), (4,), kernel_init=np_init, bias_init=np_init, rngs=nnx.Rngs(0))
    x = jnp.asarray(rand(2, 3))
    close(nnx.jit(lambda m, x: m(x))(layer, x), layer(x), 1e-6)
    assert jax.tree.leaves(nnx.state(layer, nnx.Param))  # parameters are ordinary Params


def test_kernel_and_bias_metadata_are_stored_on_the_params():
    kernel_meta, bias_meta = {"out_sharding": ("in", "out")}, {"out_sharding": ("out",)}
    layers = [
        nnx.Linear(3, 4, kernel_metadata=kernel_meta, bias_metadata=bias_meta, rngs=nnx.Rngs(0)),
        nnx.LinearGeneral(3, 4, kernel_metadata=kernel_meta, bias_metadata=bias_meta, rngs=nnx.Rngs(0)),
        nnx.Einsum("bd,df->bf", (3, 4), (4,), kernel_metadata=kernel_meta, bias_metadata=bias_meta, rngs=nnx.Rngs(0)),
    ]
    for layer in layers:
        assert layer.kernel.get_metadata() == kernel_meta and layer.bias.get_metadata() == bias_meta
        assert layer.kernel.out_sharding == ("in", "out")
        state = nnx.state(layer)  # metadata travels with the state
        assert state["kernel"].get_metadata() == kernel_meta
        assert not hasattr(layer, "kernel_metadata")  # used once, like the initializers
    assert nnx.Linear(3, 4, rngs=nnx.Rngs(0)).kernel.get_metadata() == {}


def test_preferred_element_type_and_injected_ops_are_used():
    x = jnp.ones((2, 3), jnp.bfloat16)
    kwargs = {"param_dtype": jnp.bfloat16, "preferred_element_type": jnp.float32, "rngs": nnx.Rngs(0)}
    assert nnx.Linear(3, 4, **kwargs)(x).dtype == jnp.float32  # the dot accumulates and returns float32
    assert nnx.Linear(3, 4, param_dtype=jnp.bfloat16, rngs=nnx.Rngs(0))(x).dtype == jnp.bfloat16
    assert nnx.LinearGeneral(3, 4, **kwargs)(x).dtype == jnp.float32
    assert nnx.Einsum("bd,df->bf", (3, 4), **kwargs)(x).dtype == jnp.float32

    calls = []

    def doubled_dot(lhs, rhs, dims, precision=None):  # a custom op need not take preferred_element_type
        calls.append(dims)
        return 2 * jax.lax.dot_general(lhs, rhs, dims, precision=precision)

    xf = jnp.asarray(np.random.RandomState(0).randn(2, 3), jnp.float32)
    plain = nnx.Linear(3, 4, use_bias=False, rngs=nnx.Rngs(0))
    custom = nnx.Linear(3, 4, use_bias=False, dot_general=doubled_dot, rngs=nnx.Rngs(0))
    np.testing.assert_allclose(np.asarray(custom(xf)), 2 * np.asarray(plain(xf)), rtol=1e-6)
    general = nnx.LinearGeneral(3, 4, use_bias=False, dot_general_cls=lambda: doubled_dot, rngs=nnx.Rngs(0))
    np.testing.assert_allclose(np.asarray(general(xf)), 2 * np.asarray(plain(xf)), rtol=1e-6)
    assert len(calls) == 2

    def tripled_einsum(equation, a, b, precision=None):
        return 3 * jnp.einsum(equation, a, b, precision=precision)

    einsum = nnx.Einsum("bd,df->bf", (3, 4), einsum_op=tripled_einsum, rngs=nnx.Rngs(0))
    np.testing.assert_allclose(np.asarray(einsum(xf)), 3 * np.asarray(xf @ einsum.kernel.value), rtol=1e-5)


def to_half(args, /, *, dtype=None, inexact=True):
    """A promote_dtype in the reference's convention: one tuple in, one tuple out."""
    to_half.calls += 1
    return tuple(None if a is None else jnp.asarray(a, jnp.float16) for a in args)


to_half.calls = 0


def test_promote_dtype_is_called_as_the_reference_calls_it():
    x = jnp.ones((2, 3))
    layers = [
        nnx.Linear(3, 4, promote_dtype=to_half, rngs=nnx.Rngs(0)),
        nnx.LinearGeneral(3, 4, promote_dtype=to_half, rngs=nnx.Rngs(0)),
        nnx.Einsum("bd,df->bf", (3, 4), (4,), promote_dtype=to_half, rngs=nnx.Rngs(0)),
    ]
    before = to_half.calls
    for layer in layers:
        assert layer(x).dtype == jnp.float16
    assert to_half.calls == before + 3
    assert nnx.Linear(3, 4, rngs=nnx.Rngs(0))(x).dtype == jnp.float32  # the default promotes together


def test_batch_axis_is_refused_with_the_vmap_to_write():
    with pytest.raises(LayerError, match="(?s)batch_axis.*nnx.vmap"):
        nnx.LinearGeneral(3, 4, batch_axis={0: 2}, rngs=nnx.Rngs(0))
    assert nnx.LinearGeneral(3, 4, batch_axis={}, rngs=nnx.Rngs(0)).kernel.value.shape == (3, 4)
