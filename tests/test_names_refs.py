"""Mutable arrays (JAX refs): 0.10.7's ``mutable_array``/``mutable``/``freeze`` and 0.12's
ref-backed Variables (``Variable(..., ref=True)``, ``with_vars(ref=...)``): ``jit`` passes the
refs to JAX, the other transforms carry their arrays and write back into them."""

from __future__ import annotations

import pickle

import jax
import jax.numpy as jnp
import numpy as np
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


TRANSFORM_CALLS = {
    # name: f(model, x) -> result, each also writing the model's bias (+1) where the transform allows it
    "grad": lambda m, x: nnx.grad(lambda m, x: _bump(m) + m(x).sum())(m, x),
    "value_and_grad": lambda m, x: nnx.value_and_grad(lambda m, x: _bump(m) + m(x).sum())(m, x)[0],
    "vmap": lambda m, x: nnx.vmap(lambda m, x: m(x), in_axes=(None, 0))(m, x),
    "scan": lambda m, x: nnx.scan(lambda c, xi: ((c[0], c[1] + _bump(c[0]) + c[0](xi).sum()), c[1]),
                                  in_axes=(nnx.Carry, 0), out_axes=(nnx.Carry, 0))((m, 0.0), x)[1],
    "remat": lambda m, x: nnx.remat(lambda m, x: _bump(m) + m(x).sum())(m, x),
    "cond": lambda m, x: nnx.cond(True, lambda m, x: _bump(m) + m(x).sum(), lambda m, x: m(x).sum(), m, x),
    "eval_shape": lambda m, x: nnx.eval_shape(lambda m, x: m(x), m, x).shape,
    "jit(grad)": lambda m, x: nnx.jit(lambda m, x: nnx.grad(lambda m, x: _bump(m) + m(x).sum())(m, x))(m, x),
}


def _bump(m):
    m.bias[...] += 1.0
    return 0.0


@pytest.mark.parametrize("transform", list(TRANSFORM_CALLS))
def test_every_transform_carries_refs_and_writes_back_into_them(transform):
    # A ref-backed model goes through each transform as its arrays; results and writes equal a
    # plain model's, and the Variables stay backed by the same refs.
    plain, model = nnx.Linear(2, 2, rngs=nnx.Rngs(0)), _ref_model()
    refs = [model.kernel.raw_value, model.bias.raw_value]
    x = jnp.ones((3, 2))
    got, want = TRANSFORM_CALLS[transform](model, x), TRANSFORM_CALLS[transform](plain, x)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)
    assert [model.kernel.raw_value, model.bias.raw_value] == refs or all(
        a is b for a, b in zip([model.kernel.raw_value, model.bias.raw_value], refs))
    assert nnx.is_mutable_array(model.bias.raw_value) and model.bias.raw_value is refs[1]
    np.testing.assert_allclose(model.bias[...], plain.bias.value)  # the same writes landed in the ref
    np.testing.assert_allclose(model.kernel[...], plain.kernel.value)


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


def test_var_defaults_ref_true_makes_new_variables_ref_backed_and_restores():
    with nnx.var_defaults(ref=True):
        assert nnx.var_defaults().ref is True
        layer = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
        plain = nnx.Param(jnp.ones(2), ref=False)  # an explicit ref= wins
    assert nnx.is_mutable_array(layer.kernel.raw_value) and nnx.is_mutable_array(layer.bias.raw_value)
    assert not nnx.is_mutable_array(plain.raw_value)
    assert nnx.var_defaults().ref is False and not nnx.is_mutable_array(nnx.Param(jnp.ones(2)).raw_value)

    @nnx.var_defaults(ref=True)
    def make():
        return nnx.Param(jnp.zeros(2))

    with pytest.raises(ValueError):  # restored when the block raises
        with nnx.var_defaults(ref=True):
            raise ValueError("inside")
    assert nnx.is_mutable_array(make().raw_value) and nnx.var_defaults().ref is False
    with pytest.raises(nnx.VariableError, match=r"var_defaults\(hijax=True\)"):
        nnx.var_defaults(hijax=True)


def test_var_defaults_ref_like_flax():
    fnnx = pytest.importorskip("flax.nnx")
    for nnx_ in (nnx, fnnx):
        with nnx_.var_defaults(ref=True):
            v = nnx_.Param(jnp.ones(2))
        assert nnx.is_mutable_array(v.get_raw_value()), nnx_
