"""nnx.extract: the reference's helpers, with plait's to_tree/from_tree/NodeStates/prefix."""

from __future__ import annotations

import jax.numpy as jnp
import pytest

import plait as nnx


def test_reexports_are_plaits_own():
    assert nnx.extract.to_tree is nnx.to_tree and nnx.extract.from_tree is nnx.from_tree
    assert nnx.extract.NodeStates is nnx.NodeStates and nnx.extract.prefix is nnx.prefix


@pytest.mark.parametrize("prefix_tree, full_tree", [
    ((0, 1), ([1, 2], {"a": 3})),
    ({"x": 1, "y": 2}, {"x": (7, 8, (9,)), "y": 9}),
    (3, [1, [2, 3]]),
])
def test_broadcast_prefix_matches_flax(prefix_tree, full_tree):
    fnnx = pytest.importorskip("flax.nnx")
    assert nnx.extract.broadcast_prefix(prefix_tree, full_tree) == fnnx.extract.broadcast_prefix(prefix_tree, full_tree)


def test_broadcast_prefix_with_none_and_a_module():
    layer = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    out = nnx.extract.broadcast_prefix((None, 0), (layer, jnp.ones(2)), prefix_is_leaf=lambda x: x is None)
    assert out == [None, 0]


def test_check_consistent_aliasing_across_arguments():
    layer = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    seen: dict = {}
    nnx.extract.check_consistent_aliasing(layer, 0, node_prefixes=seen)
    nnx.extract.check_consistent_aliasing({"again": layer}, 0, node_prefixes=seen)  # same spec: fine
    with pytest.raises(nnx.AxisError, match=r"(?s)Param.*kernel.*again.kernel: None"):
        nnx.extract.check_consistent_aliasing({"again": layer}, None, node_prefixes=seen)


def test_check_consistent_aliasing_with_state_axes():
    layer = nnx.BatchNorm(2, rngs=nnx.Rngs(0))
    seen: dict = {}
    axes = nnx.StateAxes({nnx.BatchStat: None, ...: 0})
    nnx.extract.check_consistent_aliasing(layer, axes, node_prefixes=seen)
    assert {tuple(v[0][0]): v[0][1] for v in seen.values()} == {
        ("scale",): 0, ("bias",): 0, ("mean",): None, ("var",): None}
