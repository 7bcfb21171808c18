"""Mutable arrays (JAX refs): 0.10.7's ``mutable_array``/``mutable``/``freeze`` and 0.12's
ref-backed Variables (``Variable(..., ref=True)``, ``with_vars(ref=...)``), through ``jit``;
the other transforms refuse them by path."""

from __future__ import annotations

import pickle

import jax
import jax.numpy as jnp
import pytest

import plait as nnx


def test_mutable_array_names():
    ref = nnx.mutable_array(jnp.arange(3.0))
    assert nnx.is_mutable_array(ref) and isinstance(ref, nnx.MutableArray)
    assert not nnx.is_mutable_array(jnp.ones(2)) and not nnx.is_mutable_array(1.0)
    ref[1] = 5.0
    assert ref[...].tolist() == [0.0, 5.0, 2.0]


def test_mutable_and_freeze_round_trip_with_filters():
    tree = {"w": nnx.Param(jnp.ones(2), note="x"), "b": jnp.zeros(2)}
    refs = nnx.mutable(tree)
    assert nnx.is_mutable_array(refs["b"]) and nnx.is_mutable_array(refs["w"].raw_value)
    assert refs["w"].get_metadata() == {"note": "x", "ref": True} and type(refs["w"]) is nnx.Param
    frozen = nnx.freeze(refs, only=lambda path, x: path == ("b",))
    assert isinstance(frozen["b"], jax.Array) and nnx.is_mutable_array(frozen["w"].raw_value)
    frozen = nnx.freeze(refs)
    assert not nnx.is_mutable_array(frozen["w"].raw_value) and frozen["w"].get_metadata() == {"note": "x"}


def test_duplicates_are_refused_by_path():
    shared = nnx.mutable_array(jnp.array(1.0))
    with pytest.raises(nnx.GraphError, match=r"duplicate MutableArray at path \[1\] and \[0\]"):
        nnx.freeze([shared, shared])
    a = jnp.ones(())
    with pytest.raises(nnx.GraphError, match=r"duplicate Array"):
        nnx.mutable([a, a])


def test_freeze_of_a_module_says_what_to_use():
    with pytest.raises(nnx.GraphError, match=r"nnx.with_vars\(model, ref=False\)"):
        nnx.freeze(nnx.Linear(2, 2, rngs=nnx.Rngs(0)))


def test_ref_backed_variable_reads_and_writes_the_ref():
    v = nnx.Param(jnp.ones(2), ref=True)
    ref = v.raw_value
    assert nnx.is_mutable_array(ref) and v.get_metadata() == {"ref": True}
    assert isinstance(v.value, jax.Array) and v[...].tolist() == [1.0, 1.0]
    v[...] = jnp.zeros(2)
    v.value = 3.0  # broadcast into the ref's shape
    v[0] = 7.0
    v += 1
    assert v.raw_value is ref and ref[...].tolist() == [8.0, 4.0]
    with pytest.raises(nnx.VariableError, match="keeps its shape"):
        v.value = jnp.ones(3)


def test_ref_false_and_hijax():
    assert not nnx.is_mutable_array(nnx.Param(nnx.mutable_array(1.0), ref=False).raw_value)
    with pytest.raises(nnx.VariableError, match="hijax"):
        nnx.Param(1.0, hijax=True)


def _ref_model():
    return nnx.with_vars(nnx.Linear(2, 2, rngs=nnx.Rngs(0)), ref=True)


def test_jit_writes_refs_in_place_and_matches_plain():
    plain = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    model = _ref_model()
    bias_ref = model.bias.raw_value

    @nnx.jit
    def step(m, x):
        m.bias[...] += 1.0
        return m(x)

    x = jnp.ones((1, 2))
    for _ in range(3):  # the second and third calls take jit's cached path
        out_ref, out_plain = step(model, x), step(plain, x)
        assert jnp.allclose(out_ref, out_plain)
    assert model.bias.raw_value is bias_ref and model.bias[...].tolist() == [3.0, 3.0]
    assert jnp.allclose(model.bias[...], plain.bias[...])


def test_a_ref_cannot_leave_jit():
    class Box(nnx.Module):
        pass

    @nnx.jit
    def make(box):
        box.v = nnx.Param(jnp.ones(2), ref=True)

    with pytest.raises(nnx.TransformError, match=r"`box.v` is a Variable backed by a JAX ref"):
        make(Box())


@pytest.mark.parametrize("transform", ["grad", "vmap", "scan", "remat", "eval_shape"])
def test_other_transforms_refuse_refs_by_path(transform):
    model = _ref_model()
    x = jnp.ones((3, 2))

    def loss(m, x):
        return m(x).sum()

    calls = {
        "grad": lambda: nnx.grad(loss)(model, x),
        "vmap": lambda: nnx.vmap(loss, in_axes=(None, 0))(model, x),
        "scan": lambda: nnx.scan(lambda m, c: (c, None), in_axes=(None, nnx.Carry))(model, 0.0),
        "remat": lambda: nnx.remat(loss)(model, x),
        "eval_shape": lambda: nnx.eval_shape(loss, model, x),
    }
    with pytest.raises(nnx.TransformError, match=rf"{transform}: `m\.(kernel|bias)` .* backed by a JAX ref"):
        calls[transform]()


def test_with_vars_converts_both_ways_and_shares_the_rest():
    model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    refs = nnx.with_vars(model, ref=True, only=nnx.PathContains("bias"))
    assert nnx.is_mutable_array(refs.bias.raw_value) and refs.kernel is model.kernel
    back = nnx.with_vars(refs, ref=False)
    assert not nnx.is_mutable_array(back.bias.raw_value) and back.bias.get_metadata() == {}
    assert back.kernel is model.kernel


def test_clone_pickle_and_as_pure_do_not_alias_or_leak_refs():
    model = _ref_model()
    copy = nnx.clone(model)
    copy.bias[...] = jnp.full(2, 9.0)
    assert model.bias[...].tolist() == [0.0, 0.0]  # the clone has its own buffer
    again = pickle.loads(pickle.dumps(model))
    assert nnx.is_mutable_array(again.bias.raw_value) and again.bias[...].tolist() == [0.0, 0.0]
    pure = nnx.as_pure(nnx.state(model))
    assert isinstance(pure["bias"], jax.Array) and not nnx.is_mutable_array(pure["bias"])


def test_same_as_flax_ref_variable():
    fnnx = pytest.importorskip("flax.nnx")
    for nnx_ in (nnx, fnnx):
        v = nnx_.Param(jnp.ones(2), ref=True)
        v[...] = jnp.zeros(2)
        assert nnx.is_mutable_array(v.get_raw_value()) and v.get_metadata()["ref"] is True
        model = nnx_.with_vars(nnx_.Linear(2, 2, rngs=nnx_.Rngs(0)), ref=True)

        @nnx_.jit
        def step(m):
            m.bias[...] += 1.0

        step(model)
        step(model)
        assert model.bias[...].tolist() == [2.0, 2.0]


def test_var_defaults_ref_true_is_refused_not_ignored():
    with pytest.raises(nnx.VariableError, match=r"var_defaults\(ref=True\)"):
        nnx.var_defaults(ref=True)
