"""The module graph: split / merge / update / state / graphdef / clone / pop / iter_graph.

What matters here is identity: an object reachable by two paths is stored once and comes
back as one object, Variables are written in place, clones are deep, and structural edits
(list append, new attribute) are seen by the next ``nnx.state``/``nnx.graphdef``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import plait as nnx

# -- helpers ---------------------------------------------------------------------------------


def paths(state: nnx.State) -> list[tuple]:
    return [p for p, _ in state.flat_state()]


def assert_same_values(a, b) -> None:
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


class Block(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.linear = nnx.Linear(2, 3, rngs=rngs)
        self.dropout = nnx.Dropout(0.5, rngs=rngs)
        self.stats = nnx.BatchStat(jnp.zeros(3))

    def __call__(self, x):
        return self.dropout(self.linear(x))


class Pair(nnx.Module):
    """Two attributes that can point at one sub-module."""

    def __init__(self, a, b):
        self.a = a
        self.b = b


class Parent(nnx.Module):
    def __init__(self, rngs):
        self.child = Child(self, rngs)
        self.scale = nnx.Param(jnp.array([2.0]))


class Child(nnx.Module):
    def __init__(self, parent, rngs):
        self.parent = parent
        self.linear = nnx.Linear(2, 2, rngs=rngs)


class Tied(nnx.Module):
    """An encoder and a decoder that share one kernel Variable (tied weights)."""

    def __init__(self, rngs):
        self.encoder = nnx.Linear(3, 3, rngs=rngs)
        self.decoder = nnx.Linear(3, 3, rngs=rngs)
        self.decoder.kernel = self.encoder.kernel


class Bag(nnx.Module):
    """A module whose attributes are set by the test."""


# -- split / merge: sharing ----------------------------------------------------------------


def test_shared_submodule_is_stored_once_and_shared_again_after_merge():
    sub = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    model = Pair(sub, sub)
    gd, state = nnx.split(model)

    # Stored once, at its first path (attributes in sorted order).
    assert paths(state) == [("a", "bias"), ("a", "kernel")]

    copy = nnx.merge(gd, state)
    assert copy.a is copy.b
    assert copy.a is not sub
    assert copy.a.kernel is copy.b.kernel
    assert_same_values(copy.b.kernel.value, sub.kernel.value)

    # Writing through one path is seen through the other.
    copy.a.kernel.value = jnp.zeros((2, 2))
    assert float(jnp.abs(copy.b.kernel.value).sum()) == 0.0
    # ...and not in the original.
    assert float(jnp.abs(sub.kernel.value).sum()) > 0.0


def test_shared_submodule_in_list_and_attribute():
    rngs = nnx.Rngs(0)
    first, second = nnx.Linear(1, 1, rngs=rngs), nnx.Linear(1, 1, rngs=rngs)
    model = Bag()
    model.layers = [first, second]
    model.head = first
    gd, state = nnx.split(model)
    assert ("head", "kernel") in paths(state)  # `head` sorts before `layers`
    assert ("layers", 0, "kernel") not in paths(state)

    copy = nnx.merge(gd, state)
    assert copy.head is copy.layers[0]
    assert copy.layers[0] is not copy.layers[1]


def test_tied_weights_stored_once_and_tied_after_merge_update_and_clone():
    model = Tied(nnx.Rngs(0))
    assert model.encoder.kernel is model.decoder.kernel
    gd, state = nnx.split(model)
    assert ("decoder", "kernel") in paths(state)  # `decoder` sorts before `encoder`
    assert ("encoder", "kernel") not in paths(state)
    assert ("encoder", "bias") in paths(state)

    copy = nnx.merge(gd, state)
    assert copy.encoder.kernel is copy.decoder.kernel
    assert copy.encoder.bias is not copy.decoder.bias

    # update through the single stored path reaches both users of the Variable.
    nnx.update(model, {"decoder": {"kernel": jnp.full((3, 3), 4.0)}})
    assert_same_values(model.encoder.kernel.value, np.full((3, 3), 4.0))

    cloned = nnx.clone(model)
    assert cloned.encoder.kernel is cloned.decoder.kernel
    assert cloned.encoder.kernel is not model.encoder.kernel


def test_cycle_survives_split_merge_and_clone():
    model = Parent(nnx.Rngs(0))
    assert model.child.parent is model
    gd, state = nnx.split(model)
    assert sorted(paths(state)) == [
        ("child", "linear", "bias"),
        ("child", "linear", "kernel"),
        ("scale",),
    ]

    copy = nnx.merge(gd, state)
    assert isinstance(copy, Parent)
    assert copy.child.parent is copy
    assert copy is not model
    assert_same_values(copy.child.linear.kernel.value, model.child.linear.kernel.value)

    cloned = nnx.clone(model)
    assert cloned.child.parent is cloned
    assert cloned.child is not model.child

    # update walks the cycle without looping and writes in place.
    nnx.update(model, {"scale": jnp.array([5.0])})
    assert_same_values(model.child.parent.scale.value, [5.0])


def test_split_merge_round_trip_keeps_types_values_and_statics():
    model = Block(nnx.Rngs(0))
    gd, state = nnx.split(model)
    copy = nnx.merge(gd, state)
    assert type(copy) is Block
    assert type(copy.linear) is nnx.Linear
    assert type(copy.linear.kernel) is nnx.Param
    assert type(copy.stats) is nnx.BatchStat
    assert type(copy.dropout.rngs) is nnx.Rngs
    assert copy.dropout.rate == 0.5
    assert copy.linear.in_features == 2 and copy.linear.out_features == 3
    assert copy.dropout.rngs.default.key.tag == "default"
    assert_same_values(copy.linear.kernel.value, model.linear.kernel.value)
    # The copy is independent: its Variables are new objects.
    assert copy.linear.kernel is not model.linear.kernel
    # The copy computes the same function.
    x = jnp.ones((1, 2))
    assert_same_values(copy.linear(x), model.linear(x))


# -- split with filters ------------------------------------------------------------------------


def test_split_with_remainder_raises_filter_error_naming_paths_and_suggesting_ellipsis():
    model = Block(nnx.Rngs(0))
    with pytest.raises(nnx.FilterError) as info:
        nnx.split(model, nnx.Param)
    msg = str(info.value)
    assert "dropout.rngs.default.key" in msg
    assert "dropout.rngs.default.count" in msg
    assert "stats" in msg
    assert "..." in msg
    # Claimed Variables are not listed as unclaimed.
    assert "linear.kernel" not in msg
    # FilterError is also a TypeError, so generic handlers still catch it.
    assert isinstance(info.value, TypeError)


def test_split_with_two_filters_still_leaving_a_remainder_raises():
    model = Block(nnx.Rngs(0))
    with pytest.raises(nnx.FilterError, match=r"stats"):
        nnx.split(model, nnx.Param, nnx.RngState)


def test_split_with_ellipsis_last_partitions_everything_and_merges_back():
    model = Block(nnx.Rngs(0))
    gd, params, rest = nnx.split(model, nnx.Param, ...)
    assert sorted(paths(params)) == [("linear", "bias"), ("linear", "kernel")]
    assert sorted(paths(rest)) == [
        ("dropout", "rngs", "default", "count"),
        ("dropout", "rngs", "default", "key"),
        ("stats",),
    ]
    assert all(isinstance(v, nnx.Param) for _, v in params.flat_state())
    assert not any(isinstance(v, nnx.Param) for _, v in rest.flat_state())

    # The order of the states given to merge does not matter.
    for states in [(params, rest), (rest, params)]:
        copy = nnx.merge(gd, *states)
        assert_same_values(copy.linear.kernel.value, model.linear.kernel.value)
        assert_same_values(copy.stats.value, model.stats.value)


def test_split_first_matching_filter_wins():
    model = Block(nnx.Rngs(0))
    _, rng, everything_else = nnx.split(model, nnx.RngState, nnx.Variable)
    assert sorted(paths(rng)) == [("dropout", "rngs", "default", "count"), ("dropout", "rngs", "default", "key")]
    assert ("dropout", "rngs", "default", "key") not in paths(everything_else)
    assert len(paths(everything_else)) == 3


def test_split_without_filters_returns_one_state():
    model = Block(nnx.Rngs(0))
    out = nnx.split(model)
    assert len(out) == 2
    gd, state = out
    assert isinstance(gd, nnx.GraphDef)
    assert len(paths(state)) == 5


def test_graph_functions_reject_non_nodes_with_graph_error():
    for bad in (3, jnp.ones(2), "text"):
        for fn in (nnx.state, nnx.split, nnx.graphdef, nnx.clone, nnx.find_duplicates):
            with pytest.raises(nnx.GraphError, match="module"):
                fn(bad)


def test_a_state_is_taken_as_a_node_the_way_the_reference_takes_it():
    """Gradients come back as a State; filtering them with nnx.state, or splitting and merging
    one, works as in Flax NNX."""
    model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    model.count = nnx.BatchStat(jnp.zeros(()))
    grads = nnx.grad(lambda m: jnp.sum(m(jnp.ones(2))))(model)
    params = nnx.state(grads, nnx.Param)
    assert type(params) is nnx.State and set(params) == {"bias", "kernel"}
    np.testing.assert_array_equal(params["bias"].value, jnp.ones(3))
    assert params["kernel"] is not grads["kernel"]  # a copy, as for a module
    assert set(grads) == {"bias", "kernel"}  # grad's default: Params only
    gd, state = nnx.split(nnx.state(model))
    again = nnx.merge(gd, state)
    assert type(again) is nnx.State and set(again) == {"bias", "count", "kernel"}
    np.testing.assert_array_equal(again["kernel"].value, model.kernel.value)


# -- merge errors ---------------------------------------------------------------------------------


def test_merge_with_missing_state_raises_graph_error_naming_the_path():
    model = Block(nnx.Rngs(0))
    gd, params, rest = nnx.split(model, nnx.Param, ...)
    with pytest.raises(nnx.GraphError) as info:
        nnx.merge(gd, params)
    msg = str(info.value)
    assert "dropout.rngs.default.key" in msg
    assert "stats" in msg
    assert "linear.kernel" not in msg


def test_merge_with_one_path_deleted_names_that_path():
    model = Block(nnx.Rngs(0))
    gd, state = nnx.split(model)
    del state["linear"]["bias"]
    with pytest.raises(nnx.GraphError, match=r"linear\.bias"):
        nnx.merge(gd, state)


def test_merge_with_extra_path_raises_graph_error_naming_it():
    model = Block(nnx.Rngs(0))
    gd, state = nnx.split(model)
    state["linear"]["extra"] = nnx.Param(jnp.ones(1))
    with pytest.raises(nnx.GraphError, match=r"linear\.extra"):
        nnx.merge(gd, state)


def test_merge_rejects_a_non_graphdef():
    model = Block(nnx.Rngs(0))
    _, state = nnx.split(model)
    with pytest.raises(nnx.GraphError, match="GraphDef"):
        nnx.merge(state, state)


# -- update --------------------------------------------------------------------------------------


def test_update_writes_values_in_place_keeping_variable_identity():
    model = Block(nnx.Rngs(0))
    kernel, bias, stats = model.linear.kernel, model.linear.bias, model.stats
    linear = model.linear
    new = jax.tree.map(lambda x: x + 1.0, nnx.state(model, nnx.Param))
    nnx.update(model, new)
    assert model.linear is linear
    assert model.linear.kernel is kernel
    assert model.linear.bias is bias
    assert_same_values(model.linear.bias.value, np.ones(3))
    assert_same_values(model.linear.kernel.value, new.linear.kernel.value)
    # Not named by the State: untouched.
    assert model.stats is stats
    assert_same_values(model.stats.value, np.zeros(3))


def test_update_does_not_alias_the_state_variables():
    model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    state = nnx.state(model)
    nnx.update(model, state)
    # The module's Variable is not replaced by the State's Variable object.
    assert model.kernel is not state.kernel
    state.kernel.value = jnp.zeros((2, 2))
    assert float(jnp.abs(model.kernel.value).sum()) > 0


def test_update_with_several_states_and_with_a_plain_dict():
    model = Block(nnx.Rngs(0))
    _, params, rest = nnx.split(model, nnx.Param, ...)
    params = jax.tree.map(jnp.zeros_like, params)
    rest["stats"] = nnx.BatchStat(jnp.full(3, 7.0))
    nnx.update(model, params, rest)
    assert_same_values(model.linear.kernel.value, np.zeros((2, 3)))
    assert_same_values(model.stats.value, np.full(3, 7.0))

    nnx.update(model, {"linear": {"bias": jnp.array([1.0, 2.0, 3.0])}})
    assert_same_values(model.linear.bias.value, [1.0, 2.0, 3.0])


def test_update_with_unknown_path_raises_graph_error_naming_it():
    model = Block(nnx.Rngs(0))
    with pytest.raises(nnx.GraphError) as info:
        nnx.update(model, {"linear": {"kernal": jnp.ones((2, 3))}})
    msg = str(info.value)
    assert "linear.kernal" in msg
    # Suggests the real neighbours.
    assert "linear.kernel" in msg
    # Nothing was written.
    assert model.linear.kernel.value.shape == (2, 3)


def test_update_rejects_the_second_path_of_a_shared_variable():
    # The State names a shared Variable by its first path (sorted) only.
    model = Tied(nnx.Rngs(0))
    with pytest.raises(nnx.GraphError, match=r"encoder\.kernel"):
        nnx.update(model, {"encoder": {"kernel": jnp.ones((3, 3))}})


def test_update_then_state_reads_back_the_update():
    model = Block(nnx.Rngs(0))
    before = nnx.state(model)  # fills the structure cache
    new = jax.tree.map(lambda x: x * 3.0 + 1.0, nnx.state(model, (nnx.Param, nnx.BatchStat)))
    nnx.update(model, new)
    after = nnx.state(model, (nnx.Param, nnx.BatchStat))
    assert after == new
    assert not (after == before.filter((nnx.Param, nnx.BatchStat)))


# -- raw arrays ------------------------------------------------------------------------------


def test_raw_arrays_as_attributes_appear_in_state_and_can_be_updated():
    model = Bag()
    model.weights = jnp.arange(3.0)
    model.table = np.ones((2, 2), np.float32)
    model.arrays = [jnp.zeros(2), jnp.ones(2)]
    model.param = nnx.Param(jnp.ones(1))
    state = nnx.state(model)
    assert sorted(map(str, paths(state))) == sorted(
        map(str, [("weights",), ("table",), ("arrays", 0), ("arrays", 1), ("param",)])
    )
    assert_same_values(state["weights"], [0.0, 1.0, 2.0])
    assert not isinstance(state["weights"], nnx.Variable)

    nnx.update(model, {"weights": jnp.full(3, 9.0), "arrays": {1: jnp.full(2, 5.0)}})
    assert_same_values(model.weights, np.full(3, 9.0))
    assert_same_values(model.arrays[1], np.full(2, 5.0))
    assert_same_values(model.arrays[0], np.zeros(2))
    # A later state() sees the written values.
    assert_same_values(nnx.state(model)["weights"], np.full(3, 9.0))

    gd, state = nnx.split(model)
    copy = nnx.merge(gd, state)
    assert_same_values(copy.weights, np.full(3, 9.0))
    assert_same_values(copy.table, np.ones((2, 2)))


def test_raw_arrays_are_selected_by_array_type_filter():
    model = Bag()
    model.weights = jnp.arange(3.0)
    model.param = nnx.Param(jnp.ones(1))
    arrays = nnx.state(model, jax.Array)
    assert paths(arrays) == [("weights",)]


# -- pop ---------------------------------------------------------------------------------------


def test_pop_removes_intermediates_and_returns_them():
    model = Bag()
    model.linear = nnx.Linear(1, 1, rngs=nnx.Rngs(0))
    model.seen = nnx.Intermediate(jnp.arange(2.0))
    model.linear.activation = nnx.Intermediate(jnp.ones(3))
    nnx.state(model)  # populate the structure cache first

    popped = nnx.pop(model, nnx.Intermediate)
    assert sorted(map(str, paths(popped))) == sorted(map(str, [("seen",), ("linear", "activation")]))
    assert isinstance(popped.seen, nnx.Intermediate)
    assert_same_values(popped.seen.value, [0.0, 1.0])
    assert_same_values(popped.linear.activation.value, np.ones(3))

    assert not hasattr(model, "seen")
    assert not hasattr(model.linear, "activation")
    remaining = nnx.state(model)
    assert not any(isinstance(v, nnx.Intermediate) for _, v in remaining.flat_state())
    assert sorted(paths(remaining)) == [("linear", "bias"), ("linear", "kernel")]
    # A second pop finds nothing.
    assert paths(nnx.pop(model, nnx.Intermediate)) == []


def test_pop_from_a_dict_attribute():
    model = Bag()
    model.records = {"a": nnx.Intermediate(jnp.ones(1)), "b": nnx.Param(jnp.ones(1))}
    popped = nnx.pop(model, nnx.Intermediate)
    assert paths(popped) == [("records", "a")]
    assert list(model.records) == ["b"]
    assert paths(nnx.state(model)) == [("records", "b")]


def test_pop_needs_a_filter():
    with pytest.raises(nnx.GraphError, match="filter"):
        nnx.pop(Bag())


def test_pop_removes_a_shared_intermediate_from_every_path():
    model = Bag()
    seen = nnx.Intermediate(jnp.ones(2))
    model.a = seen
    model.b = seen
    nnx.pop(model, nnx.Intermediate)
    assert not any(isinstance(v, nnx.Intermediate) for _, v in nnx.state(model).flat_state())
    assert not hasattr(model, "b")


# -- clone -------------------------------------------------------------------------------------


def test_clone_is_deep():
    model = Block(nnx.Rngs(0))
    model.layers = [nnx.Linear(1, 1, rngs=nnx.Rngs(1))]
    original_kernel = np.asarray(model.linear.kernel.value).copy()
    cloned = nnx.clone(model)
    assert cloned is not model
    assert cloned.linear is not model.linear
    assert cloned.linear.kernel is not model.linear.kernel
    assert cloned.dropout.rngs is not model.dropout.rngs
    assert cloned.layers is not model.layers
    assert_same_values(cloned.linear.kernel.value, original_kernel)

    cloned.linear.kernel.value = jnp.zeros((2, 3))
    cloned.stats.value += 1
    cloned.layers.append(nnx.Linear(1, 1, rngs=nnx.Rngs(2)))
    cloned.dropout.rate = 0.1
    assert_same_values(model.linear.kernel.value, original_kernel)
    assert_same_values(model.stats.value, np.zeros(3))
    assert len(model.layers) == 1
    assert model.dropout.rate == 0.5

    # Drawing from the clone's RNG stream does not advance the original's.
    count = int(model.dropout.rngs.default.count.value)
    cloned.dropout.rngs.default()
    assert int(model.dropout.rngs.default.count.value) == count
    assert int(cloned.dropout.rngs.default.count.value) == count + 1


def test_clone_preserves_internal_sharing():
    sub = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    model = Pair(sub, [sub, sub.kernel])
    cloned = nnx.clone(model)
    assert cloned.a is cloned.b[0]
    assert cloned.b[1] is cloned.a.kernel
    assert cloned.a is not sub


def test_clone_of_a_variable_root():
    v = nnx.Param(jnp.arange(2.0), note="w")
    c = nnx.clone(v)
    assert type(c) is nnx.Param and c is not v
    assert_same_values(c.value, [0.0, 1.0])
    assert c.note == "w"


# -- lists and dicts of modules; structure cache invalidation -------------------------------------


def test_plain_lists_and_dicts_become_nnx_list_and_dict():
    rngs = nnx.Rngs(0)
    model = Bag()
    model.layers = [nnx.Linear(1, 1, rngs=rngs), nnx.Linear(1, 2, rngs=rngs)]
    model.heads = {"cls": nnx.Linear(2, 2, rngs=rngs), "more": [nnx.Linear(2, 1, rngs=rngs)]}
    assert type(model.layers) is nnx.List
    assert type(model.heads) is nnx.Dict
    assert type(model.heads["more"]) is nnx.List
    state = nnx.state(model)
    assert state["layers"][1]["kernel"].value.shape == (1, 2)
    assert state["heads"]["cls"]["kernel"].value.shape == (2, 2)
    assert state["heads"]["more"][0]["kernel"].value.shape == (2, 1)

    gd, state = nnx.split(model)
    copy = nnx.merge(gd, state)
    assert type(copy.layers) is nnx.List and len(copy.layers) == 2
    assert type(copy.heads) is nnx.Dict and list(copy.heads) == ["cls", "more"]
    assert copy.heads["more"][0].kernel.value.shape == (2, 1)


def test_list_append_is_reflected_by_state_and_graphdef():
    rngs = nnx.Rngs(0)
    model = Bag()
    model.layers = [nnx.Linear(1, 1, rngs=rngs)]
    gd_before = nnx.graphdef(model)
    assert len(paths(nnx.state(model))) == 2

    model.layers.append(nnx.Linear(1, 3, rngs=rngs))
    state = nnx.state(model)
    assert ("layers", 1, "kernel") in paths(state)
    assert state["layers"][1]["kernel"].value.shape == (1, 3)
    gd_after = nnx.graphdef(model)
    assert gd_after != gd_before
    copy = nnx.merge(gd_after, state)
    assert len(copy.layers) == 2
    assert copy.layers[1].out_features == 3


def test_other_structural_edits_are_reflected():
    rngs = nnx.Rngs(0)
    model = Bag()
    model.layers = [nnx.Linear(1, 1, rngs=rngs), nnx.Linear(1, 1, rngs=rngs)]
    model.heads = {"a": nnx.Linear(1, 1, rngs=rngs)}
    model.extra = nnx.Param(jnp.ones(1))
    nnx.state(model)

    model.layers[0] = nnx.Linear(1, 2, rngs=rngs)  # item assignment
    assert nnx.state(model)["layers"][0]["kernel"].value.shape == (1, 2)

    del model.layers[1]  # item deletion
    assert ("layers", 1, "kernel") not in paths(nnx.state(model))

    model.layers.insert(0, nnx.Linear(1, 3, rngs=rngs))
    assert nnx.state(model)["layers"][0]["kernel"].value.shape == (1, 3)

    model.heads["b"] = nnx.Linear(2, 2, rngs=rngs)  # dict assignment
    assert nnx.state(model)["heads"]["b"]["kernel"].value.shape == (2, 2)

    del model.extra  # attribute deletion
    assert ("extra",) not in paths(nnx.state(model))

    model.layers[0].new_stat = nnx.BatchStat(jnp.zeros(2))  # attribute on a nested module
    assert ("layers", 0, "new_stat") in paths(nnx.state(model))

    model.layers[0].new_stat.set_metadata("note", "x")  # metadata is structure
    copy = nnx.merge(*nnx.split(model))
    assert copy.layers[0].new_stat.note == "x"


def test_dict_deletions_are_reflected():
    rngs = nnx.Rngs(0)
    model = Bag()
    model.heads = {"a": nnx.Linear(1, 1, rngs=rngs), "b": nnx.Linear(1, 1, rngs=rngs), "c": nnx.Linear(1, 1, rngs=rngs)}
    nnx.state(model)
    del model.heads["a"]
    assert [p[1] for p in paths(nnx.state(model))] == ["b", "b", "c", "c"]
    model.heads.pop("b")
    assert [p[1] for p in paths(nnx.state(model))] == ["c", "c"]
    model.heads.clear()
    assert paths(nnx.state(model)) == []


def test_nested_list_append_is_reflected():
    model = Bag()
    model.grid = [[nnx.Param(jnp.ones(1))]]
    assert type(model.grid[0]) is nnx.List
    nnx.state(model)
    model.grid[0].append(nnx.Param(jnp.zeros(1)))
    assert paths(nnx.state(model)) == [("grid", 0, 0), ("grid", 0, 1)]


def test_setting_a_static_attribute_changes_graphdef():
    model = nnx.Dropout(0.5)
    gd = nnx.graphdef(model)
    model.rate = 0.25
    assert nnx.graphdef(model) != gd
    assert nnx.merge(nnx.graphdef(model), nnx.state(model)).rate == 0.25


# -- graphdef --------------------------------------------------------------------------------------


def test_graphdef_equal_for_same_structure_and_hashable():
    a = Block(nnx.Rngs(0))
    b = Block(nnx.Rngs(1))
    assert nnx.graphdef(a) == nnx.graphdef(b)
    assert hash(nnx.graphdef(a)) == hash(nnx.graphdef(b))
    assert len({nnx.graphdef(a), nnx.graphdef(b)}) == 1
    # ...and can exchange state.
    copy = nnx.merge(nnx.graphdef(a), nnx.state(b))
    assert_same_values(copy.linear.kernel.value, b.linear.kernel.value)


def test_graphdef_differs_when_structure_differs():
    rngs = nnx.Rngs(0)
    base = nnx.graphdef(nnx.Linear(2, 2, rngs=rngs))
    assert base != nnx.graphdef(nnx.Linear(2, 3, rngs=rngs))  # static attribute
    assert base != nnx.graphdef(nnx.Linear(2, 2, use_bias=False, rngs=rngs))

    untied, tied = Tied(rngs), Tied(rngs)
    untied.decoder.kernel = nnx.Param(untied.encoder.kernel.value)
    assert nnx.graphdef(untied) != nnx.graphdef(tied)  # sharing is structure

    p, b = Bag(), Bag()
    p.v = nnx.Param(jnp.ones(1))
    b.v = nnx.BatchStat(jnp.ones(1))
    assert nnx.graphdef(p) != nnx.graphdef(b)  # Variable type is structure


def test_graphdef_distinguishes_static_values_of_different_types():
    a, b, c = Bag(), Bag(), Bag()
    a.scale, b.scale, c.scale = 1, 1.0, True
    assert nnx.graphdef(a) != nnx.graphdef(b)
    assert nnx.graphdef(a) != nnx.graphdef(c)


# -- train / eval ----------------------------------------------------------------------------------


def test_train_and_eval_set_deterministic_on_every_dropout():
    rngs = nnx.Rngs(0)
    model = Bag()
    model.block = Block(rngs)
    model.drops = [nnx.Dropout(0.1, rngs=rngs), nnx.Dropout(0.2)]
    model.named = {"x": nnx.Dropout(0.3)}
    model.pair = (nnx.Dropout(0.4), nnx.Linear(1, 1, rngs=rngs))
    dropouts = [model.block.dropout, *model.drops, model.named["x"], model.pair[0]]

    assert model.eval() is model
    assert all(d.deterministic is True for d in dropouts)
    assert model.train() is model
    assert all(d.deterministic is False for d in dropouts)
    # Layers without the attribute do not get it.
    assert not hasattr(model.block.linear, "deterministic")
    assert not hasattr(model.pair[1], "deterministic")

    x = jnp.ones((1, 2))
    model.eval()
    y = model.block.linear(x)
    assert_same_values(model.block(x), y)  # dropout is a no-op in eval mode


def test_eval_is_seen_by_graphdef():
    model = Block(nnx.Rngs(0))
    gd_train = nnx.graphdef(model.train())
    gd_eval = nnx.graphdef(model.eval())
    assert gd_train != gd_eval
    assert nnx.merge(gd_eval, nnx.state(model)).dropout.deterministic is True


class DropPair(NamedTuple):
    dropout: nnx.Dropout
    weight: nnx.Param


def test_iter_graph_and_eval_reach_into_namedtuples_like_state_does():
    model = Bag()
    model.pair = DropPair(nnx.Dropout(0.5), nnx.Param(jnp.ones(2)))
    assert ("pair", "weight") in paths(nnx.state(model))  # flatten sees it
    assert ("pair", "weight") in [p for p, _ in nnx.iter_graph(model)]
    model.eval()
    assert model.pair.dropout.deterministic is True


# -- iter_graph / iter_modules ---------------------------------------------------------------------


def _descendant_ids(node, acc=None) -> set:
    """ids of every graph node reachable from ``node`` (excluding itself), by a direct walk."""
    acc = set() if acc is None else acc

    def visit(v):
        if isinstance(v, (nnx.Object, nnx.Variable)):
            if id(v) in acc:
                return
            acc.add(id(v))
            if isinstance(v, nnx.Object):
                for attr in vars(v).values():
                    visit(attr)
        elif isinstance(v, (list, tuple)):
            for x in v:
                visit(x)
        elif isinstance(v, dict):
            for x in v.values():
                visit(x)

    for attr in vars(node).values():
        visit(attr)
    return acc


def test_iter_graph_is_children_first_and_visits_shared_objects_once():
    rngs = nnx.Rngs(0)
    shared = nnx.Linear(1, 1, rngs=rngs)
    model = Bag()
    model.first = shared
    model.blocks = [Block(rngs), shared]
    model.again = {"s": shared}
    model.raw = jnp.ones(2)

    visited = list(nnx.iter_graph(model))
    nodes = [v for _, v in visited if isinstance(v, (nnx.Object, nnx.Variable))]
    # Each graph node once.
    assert len({id(v) for v in nodes}) == len(nodes)
    assert sum(v is shared for v in nodes) == 1
    # Shared object at its first path, attributes in sorted order.
    assert [p for p, v in visited if v is shared] == [("again", "s")]
    # Root last; every node after all of its descendants.
    assert visited[-1] == ((), model)
    position = {id(v): i for i, (_, v) in enumerate(visited) if isinstance(v, (nnx.Object, nnx.Variable))}
    for _, v in visited:
        if isinstance(v, nnx.Object):
            for d in _descendant_ids(v):
                assert position[d] < position[id(v)]
    # Everything reachable is visited, including Variables and raw arrays.
    assert _descendant_ids(model) == {id(v) for v in nodes if v is not model}
    assert ("raw",) in [p for p, _ in visited]
    assert ("blocks", 0, "linear", "kernel") in [p for p, _ in visited]


def test_iter_graph_handles_cycles():
    model = Parent(nnx.Rngs(0))
    visited = list(nnx.iter_graph(model))
    assert sum(v is model for _, v in visited) == 1
    assert visited[-1][1] is model
    assert ("child", "linear", "kernel") in [p for p, _ in visited]


def test_iter_modules_yields_only_modules_children_first():
    rngs = nnx.Rngs(0)
    model = Bag()
    model.block = Block(rngs)
    model.layers = [nnx.Linear(1, 1, rngs=rngs)]
    found = list(nnx.iter_modules(model))
    assert [p for p, _ in found] == [("block", "dropout"), ("block", "linear"), ("block",), ("layers", 0), ()]
    assert all(isinstance(m, nnx.Module) for _, m in found)  # Rngs and RngStreams are not modules
    assert list(model.iter_modules()) == found
    assert [name for name, _ in model.block.iter_children()] == ["dropout", "linear"]


# -- repr ------------------------------------------------------------------------------------


def test_repr_shows_variable_types_and_shapes():
    model = Block(nnx.Rngs(0))
    text = repr(model)
    assert text.startswith("Block(")
    assert "kernel=Param(shape=(2, 3), dtype=float32)" in text
    assert "bias=Param(shape=(3,), dtype=float32)" in text
    assert "stats=BatchStat(shape=(3,), dtype=float32)" in text
    assert "RngKey(shape=()" in text
    assert "RngCount(shape=(), dtype=uint32" in text


def test_repr_shows_a_shared_submodule_once_and_handles_cycles():
    sub = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    text = repr(Pair(sub, sub))
    assert text.count("Param(shape=(2, 2)") == 1
    assert "same object as `a`" in text

    cyc = repr(Parent(nnx.Rngs(0)))
    assert "same object as `<root>`" in cyc
    assert cyc.count("Param(shape=(1,)") == 1


def test_repr_shows_a_shared_variable_once():
    text = repr(Tied(nnx.Rngs(0)))
    assert text.count("Param(shape=(3, 3)") == 1
    assert "same object as `encoder.kernel`" in text


def test_graphdef_repr_names_object_types():
    assert "Linear" in repr(nnx.graphdef(Block(nnx.Rngs(0))))


# -- lists, tuples, dicts and bare Variables (as the reference accepts them) --------------------
def _lin(seed: int, din: int = 1, dout: int = 2) -> nnx.Linear:
    return nnx.Linear(din, dout, rngs=nnx.Rngs(seed))


def test_split_merge_a_list_of_modules_keeps_sharing():
    m1, m2 = _lin(0), _lin(1, 2, 1)
    gd, st = nnx.split([m1, m2, m1])
    assert sorted(st) == [0, 1] and sorted(st[0]) == ["bias", "kernel"]
    back = nnx.merge(gd, st)
    assert type(back) is list and len(back) == 3 and back[0] is back[2] and back[0] is not m1
    np.testing.assert_array_equal(back[1].kernel.value, m2.kernel.value)
    assert nnx.graphdef([m1, m2, m1]) == gd


def test_state_of_tuple_and_dict_and_update_writes_into_the_modules():
    m1, m2 = _lin(0), _lin(1)
    st = nnx.state({"a": m1, "b": (m2,)}, nnx.Param)
    assert ("b", 0, "kernel") in dict(st.flat_state())
    zeros = jax.tree.map(jnp.zeros_like, st)
    nnx.update({"a": m1, "b": (m2,)}, zeros)
    assert float(jnp.abs(m1.kernel.value).sum()) == 0.0 and float(jnp.abs(m2.bias.value).sum()) == 0.0
    gd, st2 = nnx.split((m1, m2))
    assert type(nnx.merge(gd, st2)) is tuple


def test_a_plain_list_edit_is_seen_by_the_next_split():
    layers = [_lin(0)]
    nnx.split(layers)
    layers.append(_lin(1))  # a plain list reports no edits: it must not be served from a cache
    gd, st = nnx.split(layers)
    assert sorted(st) == [0, 1] and len(nnx.merge(gd, st)) == 2


def test_bare_variable_split_state_merge_update_clone():
    p = nnx.Param(jnp.ones(2))
    gd, st = nnx.split(p)
    assert type(st) is nnx.Param and st is not p
    np.testing.assert_array_equal(st.value, p.value)
    assert type(nnx.state(p)) is nnx.Param
    back = nnx.merge(gd, st)
    assert type(back) is nnx.Param and back is not p
    nnx.update(p, nnx.Param(jnp.full(2, 3.0)))
    np.testing.assert_array_equal(p.value, [3.0, 3.0])
    c = nnx.clone(p)
    assert type(c) is nnx.Param and c is not p
    _, params, rest = nnx.split(p, nnx.BatchStat, ...)
    assert params == {} and type(rest) is nnx.Param
    with pytest.raises(nnx.FilterError, match="no filter selects"):
        nnx.split(p, nnx.BatchStat)
    with pytest.raises(nnx.GraphError, match="shape"):
        nnx.update(p, nnx.Param(jnp.ones(3)))


def test_a_list_holding_a_variable_and_a_module():
    m, p = _lin(0), nnx.Param(jnp.ones(2))
    st = nnx.state({"m": m, "p": p})
    assert type(st["p"]) is nnx.Param and sorted(st["m"]) == ["bias", "kernel"]
    c = nnx.clone([m, p])
    assert type(c) is list and c[0] is not m and c[1] is not p


# -- clone ----------------------------------------------------------------------------------------
def test_clone_shares_arrays_unless_asked_and_can_share_variables():
    m = Block(nnx.Rngs(0))
    c = nnx.clone(m)
    assert c.linear.kernel is not m.linear.kernel and c.linear.kernel.value is m.linear.kernel.value
    deep = nnx.clone(m, arrays=True)
    assert deep.linear.kernel.value is not m.linear.kernel.value
    np.testing.assert_array_equal(deep.linear.kernel.value, m.linear.kernel.value)
    shallow = nnx.clone(m, variables=False)
    assert shallow is not m and shallow.linear is not m.linear and shallow.linear.kernel is m.linear.kernel
    with pytest.raises(nnx.GraphError, match="arrays=True"):
        nnx.clone(m, False, arrays=True)


# -- flatten / unflatten --------------------------------------------------------------------------
def test_flatten_gives_sorted_flat_state_and_unflatten_inverts_it():
    m = Block(nnx.Rngs(0))
    gd, flat = nnx.flatten(m)
    assert isinstance(flat, nnx.FlatState)
    assert list(flat.paths) == sorted(flat.paths, key=lambda p: tuple((type(k).__name__, k) for k in p))
    assert all(isinstance(v, nnx.Variable) for v in flat.leaves)
    back = nnx.unflatten(gd, flat)
    assert type(back) is Block and back is not m
    assert nnx.state(back) == nnx.state(m)
    gd2, leaves = nnx.flatten(m, with_paths=False)
    assert gd2 == gd and all(isinstance(x, jax.Array) for x in leaves)
    assert nnx.state(nnx.unflatten(gd2, leaves)) == nnx.state(m)
    with pytest.raises(nnx.GraphError, match="leaves"):
        nnx.unflatten(gd2, leaves[:-1])


# -- iter_children / iter_module_children / recursive_map / find_duplicates -----------------------
def test_iter_children_yields_direct_nodes_only():
    m = Block(nnx.Rngs(0))
    kids = dict(nnx.iter_children(m))
    assert kids["linear"] is m.linear and kids["stats"] is m.stats
    assert "kernel" not in kids  # not recursive
    assert dict(nnx.iter_module_children(m)) == {"linear": m.linear, "dropout": m.dropout} | (
        {k: v for k, v in kids.items() if isinstance(v, nnx.Module) and k not in ("linear", "dropout")})
    assert all(isinstance(v, nnx.Module) for _, v in m.iter_children())


def test_recursive_map_maps_children_first_and_leaves_the_input_alone():
    m = Block(nnx.Rngs(0))
    seen = []

    def f(path, v):
        seen.append(path)
        if isinstance(v, nnx.Param):
            return nnx.Param(v.value * 0)
        return v

    out = nnx.recursive_map(f, m)
    assert seen[-1] == () and seen.index(("linear", "kernel")) < seen.index(("linear",))
    assert float(jnp.abs(out.linear.kernel.value).sum()) == 0.0
    assert float(jnp.abs(m.linear.kernel.value).sum()) > 0.0 and out is not m
    assert out.stats is m.stats  # Variables not replaced are shared, as in the reference


def test_recursive_map_maps_a_shared_module_once():
    shared = _lin(0)
    calls = []
    out = nnx.recursive_map(lambda p, v: calls.append(p) or v if isinstance(v, nnx.Linear) else v, [shared, shared])
    assert len(calls) == 1 and out[0] is out[1]


def test_find_duplicates_lists_shared_modules_and_variables():
    class Shared(nnx.Module):
        def __init__(self):
            self.a = _lin(0)
            self.b = self.a
            self.w = nnx.Param(jnp.ones(1))
            self.v = self.w

    m = Shared()
    dups = nnx.find_duplicates(m)
    assert sorted(map(sorted, dups)) == [[("a",), ("b",)], [("v",), ("w",)]]
    assert nnx.find_duplicates(m, only=nnx.Param) == [[("v",), ("w",)]]
    assert nnx.find_duplicates(_lin(0)) == []


# -- GraphDef.apply ---------------------------------------------------------------------------------
def test_graphdef_apply_returns_output_and_new_state_without_touching_inputs():
    bn = nnx.BatchNorm(2, rngs=nnx.Rngs(0))
    gd, st = nnx.split(bn)
    before = st["mean"].value
    y, (gd2, st2) = gd.apply(st)(jnp.arange(4.0).reshape(2, 2) + 1)
    assert y.shape == (2, 2) and gd2 == gd
    assert st["mean"].value is before and float(jnp.abs(st2["mean"].value).sum()) > 0.0

    class Two(nnx.Module):
        def __init__(self):
            self.layers = [_lin(0), _lin(1)]

    gd, st = nnx.split(Two())
    y, _ = gd.apply(st).layers[1](jnp.ones((1, 1)))
    assert y.shape == (1, 2)


@pytest.mark.parametrize("depth", [3, 150, 400])
def test_repeated_merge_of_deeply_nested_containers_keeps_building_them(depth):
    # After a few merges of one structure plait builds it with generated code; a container
    # nested deeper than Python can write as one expression stays on the interpreted plan.
    from plait.encoding import COMPILE_AFTER

    model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    deep = jnp.arange(2.0)
    for _ in range(depth):
        deep = (deep,)
    model.deep = deep
    gd, state = nnx.split(model)
    for _ in range(COMPILE_AFTER + 2):
        copy = nnx.merge(gd, state)
    inner = copy.deep
    for _ in range(depth):
        assert type(inner) is tuple and len(inner) == 1
        inner = inner[0]
    assert_same_values(inner, np.arange(2.0))
    assert copy.kernel is not model.kernel
    if depth == 3:
        assert gd._builder is not None  # generated
    if depth == 400:
        assert gd._builder is None  # too deep to generate: the plan builds it
