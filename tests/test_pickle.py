"""Pickling: modules, Variables, Rngs, State, GraphDef and Optimizer round-trip through pickle
and cloudpickle with equal values and the same sharing, and work (also under jit) afterwards."""

from __future__ import annotations

import copy
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import plait as nnx

cloudpickle = pytest.importorskip("cloudpickle")

PICKLERS = [pytest.param(pickle, id="pickle"), pytest.param(cloudpickle, id="cloudpickle")]


def roundtrip(lib, x):
    return lib.loads(lib.dumps(x))


class Tied(nnx.Module):
    """Two Linears sharing one kernel, a shared sub-module, a list and a dict of layers."""

    def __init__(self):
        rngs = nnx.Rngs(0)
        self.a = nnx.Linear(2, 2, rngs=rngs)
        self.b = nnx.Linear(2, 2, rngs=rngs)
        self.b.kernel = self.a.kernel
        self.blocks = [self.a, nnx.Linear(2, 2, rngs=rngs)]
        self.named = {"first": self.a, "scale": nnx.Param(jnp.full((2,), 3.0))}

    def __call__(self, x):
        return self.blocks[1](self.b(self.a(x))) * self.named["scale"]


class Model(nnx.Module):
    def __init__(self):
        rngs = nnx.Rngs(0, dropout=1)
        self.linear = nnx.Linear(3, 4, rngs=rngs)
        self.norm = nnx.BatchNorm(4, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)
        self.act = nnx.relu  # a JAX function the standard pickle cannot store by itself

    def __call__(self, x):
        return self.drop(self.act(self.norm(self.linear(x))))


def leaves_equal(a, b):
    la, lb = nnx.state(a).flat_state(), nnx.state(b).flat_state()
    assert [p for p, _ in la] == [p for p, _ in lb]
    for (_, x), (_, y) in zip(la, lb):
        assert type(x) is type(y)
        xv, yv = x.value, y.value
        if jnp.issubdtype(jnp.asarray(xv).dtype, jax.dtypes.prng_key):
            xv, yv = jax.random.key_data(xv), jax.random.key_data(yv)
        np.testing.assert_array_equal(xv, yv)


@pytest.mark.parametrize("lib", PICKLERS)
def test_variable_roundtrip_keeps_type_value_metadata(lib):
    v = nnx.Param(jnp.arange(3.0), note="x")
    w = roundtrip(lib, v)
    assert type(w) is nnx.Param and w.note == "x"
    np.testing.assert_array_equal(w.value, [0, 1, 2])
    w.value = jnp.zeros(3)  # usable: the trace token is this process's
    assert float(v.value.sum()) == 3.0


@pytest.mark.parametrize("lib", PICKLERS)
def test_module_roundtrip_keeps_sharing(lib):
    m = Tied()
    m2 = roundtrip(lib, m)
    assert m2.a.kernel is m2.b.kernel  # tied weights stay tied
    assert m2.blocks[0] is m2.a and m2.named["first"] is m2.a
    assert type(m2.blocks) is nnx.List and type(m2.named) is nnx.Dict
    leaves_equal(m, m2)
    x = jnp.ones((1, 2))
    np.testing.assert_array_equal(m2(x), m(x))
    m2.a.kernel.value = m2.a.kernel.value * 0
    assert float(jnp.abs(m2.b.kernel.value).sum()) == 0.0  # one Variable, written through either path


@pytest.mark.parametrize("lib", PICKLERS)
def test_model_with_dropout_batchnorm_works_after_unpickle(lib):
    m = Model()
    x = jnp.ones((4, 3))
    m(x)  # advance the dropout stream and the batch statistics
    m2 = roundtrip(lib, m)
    leaves_equal(m, m2)
    assert m2.act is nnx.relu
    # the copy continues where the original was: same draws, same statistics
    np.testing.assert_array_equal(m2(x), m(x))
    step = nnx.jit(lambda model, x: model(x))
    np.testing.assert_array_equal(step(m2, x), step(m, x))
    assert int(m2.drop.rngs.dropout.count.value) == int(m.drop.rngs.dropout.count.value) == 3
    leaves_equal(m, m2)
    m2.eval()
    assert m2.drop.deterministic and not m.drop.deterministic


@pytest.mark.parametrize("lib", PICKLERS)
def test_rngs_roundtrip_continues_the_stream(lib):
    rngs = nnx.Rngs(0, dropout=1)
    rngs.dropout()
    r2 = roundtrip(lib, rngs)
    assert np.array_equal(jax.random.key_data(r2.dropout()), jax.random.key_data(rngs.dropout()))
    assert r2.params is r2.default  # the fallback still works


@pytest.mark.parametrize("lib", PICKLERS)
def test_state_and_graphdef_roundtrip_and_merge(lib):
    m = Tied()
    graphdef, params, rest = nnx.split(m, nnx.Param, ...)
    gd2, p2, r2 = roundtrip(lib, (graphdef, params, rest))
    assert gd2 == graphdef and hash(gd2) == hash(graphdef)
    assert gd2._plan is None and p2._origin is None
    assert p2 == params and type(p2["a"]["kernel"]) is nnx.Param
    merged = nnx.merge(gd2, p2, r2)
    assert merged.a.kernel is merged.b.kernel
    np.testing.assert_array_equal(merged(jnp.ones((1, 2))), m(jnp.ones((1, 2))))
    nnx.update(m, p2)  # a State from elsewhere updates a model path by path


@pytest.mark.parametrize("lib", PICKLERS)
def test_graphdef_with_cached_plan_roundtrips_without_it(lib):
    graphdef, state = nnx.split(nnx.Linear(2, 2, rngs=nnx.Rngs(0)))
    nnx.merge(graphdef, state)  # builds and caches the plan
    assert graphdef._plan is not None
    gd2 = roundtrip(lib, graphdef)
    assert gd2._plan is None and gd2._hash is None
    assert type(nnx.merge(gd2, state)).__name__ == "Linear"


@pytest.mark.parametrize("lib", PICKLERS)
def test_optimizer_roundtrip_keeps_training(lib):
    model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(0.1), wrt=nnx.Param)
    x = jnp.ones((4, 2))

    @nnx.jit
    def step(model, optimizer):
        grads = nnx.grad(lambda m: (m(x) ** 2).mean())(model)
        optimizer.update(grads)

    step(model, optimizer)
    opt2 = roundtrip(lib, optimizer)
    assert opt2.model is not model and int(opt2.step.value) == 1
    leaves_equal(optimizer, opt2)
    step(model, optimizer)
    step(opt2.model, opt2)
    leaves_equal(optimizer, opt2)  # the same update: tx and its state came through


@pytest.mark.parametrize("lib", PICKLERS)
def test_every_layer_kind_pickles(lib):
    rngs = nnx.Rngs(0)
    layers = nnx.List([
        nnx.Conv(2, 3, 3, rngs=rngs), nnx.Embed(4, 3, rngs=rngs), nnx.LayerNorm(3, rngs=rngs),
        nnx.MultiHeadAttention(2, 4, decode=False, rngs=rngs), nnx.RNN(nnx.LSTMCell(2, 3, rngs=rngs)),
        nnx.LoRALinear(2, 3, lora_rank=1, rngs=rngs), nnx.Sequential(nnx.Linear(2, 2, rngs=rngs), nnx.gelu),
    ])
    holder = nnx.Dict(layers=layers)
    back = roundtrip(lib, holder)
    assert [type(x) for x in back["layers"]] == [type(x) for x in layers]
    x = jnp.ones((1, 5, 2))
    np.testing.assert_allclose(back["layers"][4](x), layers[4](x))


@pytest.mark.parametrize("lib", PICKLERS)
def test_variable_with_metadata_hooks_pickles(lib):
    scale = 3.0
    init = nnx.with_metadata(nnx.initializers.ones, on_get_value=lambda v, x: x * scale, out_sharding=("a",))
    v = nnx.Param(init(jax.random.key(0), (2,)))
    w = roundtrip(lib, v)
    assert w.out_sharding == ("a",)
    np.testing.assert_array_equal(w.value, [3.0, 3.0])


def test_closure_without_cloudpickle_is_a_clear_error(monkeypatch):
    import sys

    class WithClosure(nnx.Module):
        def __init__(self):
            scale = 2.0
            self.fn = lambda x: x * scale

    monkeypatch.setitem(sys.modules, "cloudpickle", None)  # as if not installed
    with pytest.raises(pickle.PicklingError, match="(?s)'fn' of a WithClosure.*plait\\[pickle\\]"):
        pickle.dumps(WithClosure())


def test_copy_and_deepcopy():
    m = Tied()
    shallow = copy.copy(m)
    assert shallow is not m and shallow.a is m.a
    deep = copy.deepcopy(m)
    assert deep.a is not m.a and deep.a.kernel is deep.b.kernel and deep.blocks[0] is deep.a
    deep.a.kernel.value = jnp.zeros((2, 2))
    assert float(jnp.abs(m.a.kernel.value).sum()) > 0
    assert nnx.jit(lambda m, x: m(x))(deep, jnp.ones((1, 2))).shape == (1, 2)
