"""to_tree / from_tree: graph nodes inside pytrees, through raw JAX functions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import plait as nnx


def test_round_trip_through_raw_jit_keeps_values_and_sharing():
    layer = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    bias = layer.bias
    tree = nnx.to_tree({"a": layer, "b": [layer, bias], "lr": jnp.float32(0.5)})
    assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(tree))

    @jax.jit
    def step(t):
        back = nnx.from_tree(t)
        back["a"].kernel.value = back["a"].kernel.value * back["lr"]
        return nnx.to_tree(back)

    out = nnx.from_tree(step(tree))
    assert out["a"] is out["b"][0] and out["b"][1] is out["a"].bias
    assert out["a"] is not layer
    np.testing.assert_allclose(out["a"].kernel.value, layer.kernel.value * 0.5)
    assert float(out["lr"]) == 0.5


def test_a_tree_without_nodes_is_returned_as_is_and_variables_alone_work():
    tree = {"x": jnp.ones(2)}
    assert nnx.to_tree(tree) is tree and nnx.from_tree(tree) is tree
    p = nnx.Param(jnp.ones(2))
    back = nnx.from_tree(nnx.to_tree([p]))[0]
    assert type(back) is nnx.Param and back is not p
    np.testing.assert_array_equal(back.value, p.value)


def test_node_states_accessors_and_misuse():
    tree = nnx.to_tree([nnx.Linear(1, 1, rngs=nnx.Rngs(0)), nnx.Linear(1, 1, rngs=nnx.Rngs(1))])
    assert isinstance(tree[0].graphdef, nnx.GraphDef) and sorted(tree[0].state) == ["bias", "kernel"]
    with pytest.raises(nnx.GraphError, match="one to_tree call"):
        nnx.from_tree([tree[1], tree[0]])  # reordered
    with pytest.raises(nnx.GraphError, match="no GraphDef"):
        _ = nnx.NodeStates.from_states(tree[0].state).graphdef
