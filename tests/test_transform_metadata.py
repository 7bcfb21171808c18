"""nnx.transform_metadata: the partition name leaves input Variables' metadata for the call and
comes back after; new Variables get it at their out axis. And ForkStates (0.10's functional fork)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

import plait as nnx


def _run(lib, make_param):
    class M(lib.Module):
        def __init__(self):
            self.w = make_param(jnp.ones((3, 4)), ("layers", "b"))

    m = M()
    seen = {}

    @lib.transform_metadata(in_axes=0, out_axes=0, partition="layers")
    def f(m):
        seen["inside"] = tuple(m.w.get_metadata()["out_sharding"])
        m.w[...] = m.w[...] * 2
        return make_param(jnp.zeros((3, 5)), ("y",))

    out = f(m)
    return seen["inside"], tuple(m.w.get_metadata()["out_sharding"]), float(m.w[...][0, 0]), \
        tuple(out.get_metadata()["out_sharding"])


def test_same_metadata_as_flax():
    fnnx = pytest.importorskip("flax.nnx")
    ours = _run(nnx, lambda v, names: nnx.Param(v, out_sharding=names))
    theirs = _run(fnnx, lambda v, names: fnnx.Param(v, out_sharding=names, eager_sharding=False))
    assert ours == theirs == (("b",), ("layers", "b"), 2.0, ("layers", "y"))


def test_none_axis_leaves_an_argument_alone_and_metadata_is_restored_on_error():
    w = nnx.Param(jnp.ones((3, 4)), out_sharding=("layers", "b"))
    v = nnx.Param(jnp.ones((3, 4)), out_sharding=("layers", "b"))

    @nnx.transform_metadata(in_axes=(0, None), out_axes=None, partition="layers")
    def f(w, v):
        assert w.out_sharding == ("b",) and v.out_sharding == ("layers", "b")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        f(w, v)
    assert w.out_sharding == ("layers", "b") and v.out_sharding == ("layers", "b")


def test_new_variable_added_to_an_argument_gets_its_axis():
    class M(nnx.Module):
        pass

    m = M()

    @nnx.transform_metadata(in_axes=1, out_axes=0, partition="layers")
    def f(m):
        m.c = nnx.Param(jnp.zeros((2, 3)), out_sharding=("a",))

    f(m)
    assert m.c.out_sharding == ("a", "layers")


def test_with_raw_vmap_and_update_context():
    class Stack(nnx.Module):
        def __init__(self):
            self.w = nnx.Param(jnp.ones((4, 3)), out_sharding=("layers", "model"))

    model = Stack()
    inside = []

    # plait's merge takes metadata from the GraphDef, so the metadata transform wraps the
    # function of the module (after the merge), not the function of (graphdef, state).
    @nnx.transform_metadata(in_axes=0, out_axes=0, partition="layers")
    def layer_fn(m):
        inside.append(m.w.out_sharding)
        m.w.value = m.w.value * 3

    def body(graphdef, state):
        with nnx.merge_context("tm", inner=True) as ctx:
            m = ctx.merge(graphdef, state)
        layer_fn(m)
        with nnx.split_context("tm") as ctx:
            return ctx.split(m)

    with nnx.update_context("tm"):
        with nnx.split_context("tm") as ctx:
            gd, st = ctx.split(model)
        gd, st = jax.vmap(body, in_axes=(None, 0), out_axes=(None, 0))(gd, st)
        with nnx.merge_context("tm", inner=False) as ctx:
            out = ctx.merge(gd, st)
    assert out is model and inside == [("model",)]
    assert model.w.out_sharding == ("layers", "model") and jnp.allclose(model.w.value, 3.0)


def test_graph_false_is_refused_and_f_must_be_callable():
    with pytest.raises(Exception, match="graph"):
        nnx.transform_metadata(lambda x: x, partition="p", graph=False)
    with pytest.raises(nnx.TransformError, match="expects a function"):
        nnx.transform_metadata(3, partition="p")


# -- ForkStates ---------------------------------------------------------------------------------


def test_fork_of_a_state_returns_fork_states():
    _, rng_state = nnx.split(nnx.Rngs(params=0, dropout=1), nnx.RngState)
    forked = nnx.fork(rng_state, "params", (2, None))
    assert isinstance(forked, nnx.ForkStates) and isinstance(forked, tuple)
    assert forked.split_keys["params"]["key"].value.shape == (2, 1)
    assert forked.split_counts["params"]["count"].value == 0
    assert sorted(forked.broadcast_keys) == sorted(forked.broadcast_counts) == ["dropout"]
    same = jax.random.key_data(forked.broadcast_keys["dropout"]["key"].value)
    assert jnp.array_equal(same, jax.random.key_data(rng_state["dropout"]["key"].value))


def test_fork_of_rngs_is_unchanged_and_bad_calls_name_the_fix():
    assert isinstance(nnx.fork(nnx.Rngs(0), split=2), nnx.Rngs)
    _, rng_state = nnx.split(nnx.Rngs(0), nnx.RngState)
    with pytest.raises(nnx.RngError, match="split pattern"):
        nnx.fork(rng_state, "default")
