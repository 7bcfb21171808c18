"""Tests for LoRA, LoRALinear and LoRAParam."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import plait as nnx

IN, RANK, OUT = 3, 2, 4
B_INIT = nnx.initializers.normal(1.0)  # a non-zero lora_b, so the adapter shows in the output


def _x(seed=0, batch=5):
    return np.random.RandomState(seed).randn(batch, IN).astype(np.float32)


def test_lora_param_is_a_param():
    assert issubclass(nnx.LoRAParam, nnx.Param)
    layer = nnx.LoRA(IN, RANK, OUT, rngs=nnx.Rngs(0))
    assert type(layer.lora_a) is nnx.LoRAParam and type(layer.lora_b) is nnx.LoRAParam
    assert layer.lora_a.value.shape == (IN, RANK) and layer.lora_b.value.shape == (RANK, OUT)
    np.testing.assert_array_equal(np.asarray(layer.lora_b.value), np.zeros((RANK, OUT)))  # default: zeros
    assert np.std(np.asarray(layer.lora_a.value)) > 0


def test_lora_output_is_x_a_b():
    layer = nnx.LoRA(IN, RANK, OUT, b_initializer=B_INIT, rngs=nnx.Rngs(0))
    a, b = np.asarray(layer.lora_a.value), np.asarray(layer.lora_b.value)
    x = _x()
    y = layer(jnp.asarray(x))
    assert y.shape == (5, OUT) and y.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(y), x @ a @ b, rtol=1e-5, atol=1e-5)


def test_lora_with_base_module_adds_the_base_output():
    rngs = nnx.Rngs(0)
    base = nnx.Linear(IN, OUT, bias_init=nnx.initializers.ones, rngs=rngs)
    layer = nnx.LoRA(IN, RANK, OUT, base_module=base, b_initializer=B_INIT, rngs=rngs)
    assert layer.base_module is base
    w, bias = np.asarray(base.kernel.value), np.asarray(base.bias.value)
    a, b = np.asarray(layer.lora_a.value), np.asarray(layer.lora_b.value)
    x = _x(1)
    np.testing.assert_allclose(np.asarray(layer(jnp.asarray(x))), x @ w + bias + x @ a @ b, rtol=1e-5, atol=1e-5)


def test_lora_linear_is_a_linear_plus_adapter():
    layer = nnx.LoRALinear(IN, OUT, lora_rank=RANK, b_initializer=B_INIT, bias_init=nnx.initializers.ones,
                           rngs=nnx.Rngs(0))
    assert isinstance(layer, nnx.Linear)
    assert type(layer.kernel) is nnx.Param and layer.kernel.value.shape == (IN, OUT)
    w, bias = np.asarray(layer.kernel.value), np.asarray(layer.bias.value)
    a, b = np.asarray(layer.lora.lora_a.value), np.asarray(layer.lora.lora_b.value)
    x = _x(2)
    np.testing.assert_allclose(np.asarray(layer(jnp.asarray(x))), x @ w + bias + x @ a @ b, rtol=1e-5, atol=1e-5)
    # the state of a Linear with the same arguments, plus the adapter
    plain = nnx.state(layer, nnx.Not(nnx.LoRAParam))
    assert sorted(plain.keys()) == ["bias", "kernel"]
    # a fresh adapter leaves the Linear's output unchanged
    fresh = nnx.LoRALinear(IN, OUT, lora_rank=RANK, rngs=nnx.Rngs(0))
    linear = nnx.Linear(IN, OUT, rngs=nnx.Rngs(0))
    np.testing.assert_allclose(np.asarray(fresh(jnp.asarray(x))), np.asarray(linear(jnp.asarray(x))), rtol=1e-6)


def test_diffstate_lora_param_trains_only_the_adapters():
    layer = nnx.LoRALinear(IN, OUT, lora_rank=RANK, b_initializer=B_INIT, rngs=nnx.Rngs(0))
    x = jnp.asarray(_x(3))

    def loss(model, x):
        return (model(x) ** 2).sum()

    grads = nnx.grad(loss, argnums=nnx.DiffState(0, nnx.LoRAParam))(layer, x)
    assert sorted(grads.keys()) == ["lora"]
    assert sorted(grads["lora"].keys()) == ["lora_a", "lora_b"]

    # the same gradient, by hand: y = x W + b + x A B
    w, bias = layer.kernel.value, layer.bias.value

    def raw(a, b):
        return ((x @ w + bias + x @ a @ b) ** 2).sum()

    ga, gb = jax.grad(raw, argnums=(0, 1))(layer.lora.lora_a.value, layer.lora.lora_b.value)
    np.testing.assert_allclose(np.asarray(grads["lora"]["lora_a"].value), np.asarray(ga), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(grads["lora"]["lora_b"].value), np.asarray(gb), rtol=1e-5, atol=1e-5)

    # by default (nnx.Param) the adapters are trained with the rest: LoRAParam is a Param
    everything = nnx.grad(loss)(layer, x)
    assert sorted(everything.keys()) == ["bias", "kernel", "lora"]


def test_training_the_adapters_leaves_the_base_frozen():
    optax = pytest.importorskip("optax")
    layer = nnx.LoRALinear(IN, OUT, lora_rank=RANK, rngs=nnx.Rngs(0))
    kernel_before = np.asarray(layer.kernel.value)
    optimizer = nnx.Optimizer(layer, optax.sgd(0.1), wrt=nnx.LoRAParam)
    x, target = jnp.asarray(_x(4)), jnp.ones((5, OUT))

    @nnx.jit
    def step(model, optimizer):
        loss, grads = nnx.value_and_grad(lambda m: ((m(x) - target) ** 2).mean(),
                                         argnums=nnx.DiffState(0, nnx.LoRAParam))(model)
        optimizer.update(grads)
        return loss

    losses = [float(step(layer, optimizer)) for _ in range(3)]
    assert losses[-1] < losses[0]
    np.testing.assert_array_equal(np.asarray(layer.kernel.value), kernel_before)
    assert np.any(np.asarray(layer.lora.lora_b.value) != 0)


def test_custom_lora_param_type_and_dtypes():
    class Adapter(nnx.Param):
        __slots__ = ()

    layer = nnx.LoRA(IN, RANK, OUT, lora_param_type=Adapter, param_dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    assert type(layer.lora_a) is Adapter and layer.lora_a.value.dtype == jnp.bfloat16
    assert layer(jnp.ones((1, IN), jnp.float32)).dtype == jnp.float32  # promoted with the input
    assert layer(jnp.ones((1, IN), jnp.bfloat16)).dtype == jnp.bfloat16
    layer = nnx.LoRA(IN, RANK, OUT, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    assert layer.lora_a.value.dtype == jnp.float32
    assert layer(jnp.ones((1, IN))).dtype == jnp.bfloat16


def test_lora_errors_name_what_was_expected():
    layer = nnx.LoRA(IN, RANK, OUT, rngs=nnx.Rngs(0))
    with pytest.raises(nnx.PlaitError, match="last axis must be 3"):
        layer(jnp.ones((2, 5)))
    with pytest.raises(nnx.PlaitError, match="rngs=nnx.Rngs"):
        nnx.LoRA(IN, RANK, OUT, rngs=None)
    with pytest.raises(nnx.PlaitError, match="callable"):
        nnx.LoRA(IN, RANK, OUT, base_module=3, rngs=nnx.Rngs(0))


def test_lora_a_and_b_metadata_are_stored_on_the_adapter():
    lora = nnx.LoRA(3, 2, 4, a_metadata={"role": "a"}, b_metadata={"role": "b"}, rngs=nnx.Rngs(0))
    assert lora.lora_a.get_metadata() == {"role": "a"} and lora.lora_b.get_metadata() == {"role": "b"}
    layer = nnx.LoRALinear(3, 4, lora_rank=2, a_metadata={"role": "a"}, kernel_metadata={"role": "w"},
                           rngs=nnx.Rngs(0))
    assert layer.lora.lora_a.get_metadata() == {"role": "a"} and layer.kernel.get_metadata() == {"role": "w"}
