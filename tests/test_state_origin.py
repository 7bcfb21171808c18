"""States that split/state made remember where their leaves sit in the graph, so merge and
update take them by position. Whatever route is taken, the result must be the one the
path-by-path route gives, and an edited State must not be trusted."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import plait as nnx
from plait import graph


class Net(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.linear = nnx.Linear(2, 3, rngs=rngs)
        self.blocks = [nnx.Linear(3, 1, rngs=rngs), nnx.Linear(1, 1, rngs=rngs)]
        self.tied = self.blocks[1]  # a shared module: its Variables have one path each
        self.dropout = nnx.Dropout(0.5, rngs=rngs)
        self.stats = nnx.BatchStat(jnp.zeros(3))


@pytest.fixture
def model() -> Net:
    return Net(nnx.Rngs(0))


def values(node) -> dict:
    return {p: np.asarray(jax.random.key_data(v.value) if jnp.issubdtype(v.value.dtype, jax.dtypes.prng_key) else v.value)
            for p, v in nnx.iter_graph(node) if isinstance(v, nnx.Variable)}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def by_path(state: nnx.State) -> nnx.State:
    """The same entries in a State that remembers no origin (the path-by-path route)."""
    rebuilt = nnx.State.from_flat_state(state.flat_state())
    assert rebuilt._origin is None
    return rebuilt


def test_split_states_remember_their_origin(model):
    gd, params, rest = nnx.split(model, nnx.Param, ...)
    for s in (params, rest):
        assert s._origin is not None and s._origin.of(s) and s._origin.graphdef is gd
    assert not params._origin.of(params["linear"])  # a sub-State is not the root
    assert sorted(params._origin.indices + rest._origin.indices) == list(range(gd.num_leaves))


def test_merge_by_position_equals_merge_by_path(model):
    gd, params, rest = nnx.split(model, nnx.Param, ...)
    fast = nnx.merge(gd, params, rest)
    slow = nnx.merge(gd, by_path(params), by_path(rest))
    assert same(values(fast), values(model)) and same(values(slow), values(model))
    assert nnx.graphdef(fast) == gd == nnx.graphdef(slow)
    assert fast.tied is fast.blocks[1]  # sharing rebuilt
    assert fast.linear.kernel is not params["linear"]["kernel"] is not model.linear.kernel


def test_merge_reads_values_written_into_the_state_in_place(model):
    gd, state = nnx.split(model)
    state["linear"]["kernel"].value = jnp.full((2, 3), 7.0)  # a Variable written, no State edit
    assert state._origin.of(state)
    merged = nnx.merge(gd, state)
    assert float(merged.linear.kernel.value.sum()) == 42.0


@pytest.mark.parametrize("edit", ["set", "delete", "pure_dict"])
def test_an_edited_state_is_read_by_path(model, edit):
    gd, state = nnx.split(model)
    if edit == "set":
        state["linear"]["kernel"] = nnx.Param(jnp.full((2, 3), 5.0))
    elif edit == "delete":
        del state["stats"]
    else:
        state.replace_by_pure_dict({"linear": {"kernel": jnp.full((2, 3), 5.0)}})
    assert not state._origin.of(state)
    if edit == "delete":
        with pytest.raises(nnx.GraphError, match="stats"):
            nnx.merge(gd, state)
        return
    merged = nnx.merge(gd, state)
    assert float(merged.linear.kernel.value.sum()) == 30.0
    nnx.update(model, state)
    assert float(model.linear.kernel.value.sum()) == 30.0


def test_merge_with_a_state_given_twice_still_reports_the_missing_paths(model):
    gd, params, rest = nnx.split(model, nnx.Param, ...)
    with pytest.raises(nnx.GraphError, match="no value for"):
        nnx.merge(gd, params, params)


def test_state_of_another_structure_is_not_taken_by_position(model):
    gd, state = nnx.split(model)
    other = Net(nnx.Rngs(1))
    other.extra = nnx.Param(jnp.ones(2))  # a different GraphDef, with all of state's paths
    nnx.update(other, state)
    assert same({k: v for k, v in values(other).items() if k != ("extra",)}, values(model))
    assert float(other.extra.value.sum()) == 2.0


def test_update_by_position_writes_every_leaf_and_partial_states(model):
    target = Net(nnx.Rngs(5))
    params, rest = nnx.state(model, nnx.Param, ...)
    nnx.update(target, params)  # a partial State: only the Params
    assert np.array_equal(target.linear.kernel.value, model.linear.kernel.value)
    assert not np.array_equal(
        jax.random.key_data(target.dropout.rngs.default.key.value), jax.random.key_data(model.dropout.rngs.default.key.value)
    )
    nnx.update(target, rest)
    assert same(values(target), values(model))


def test_a_state_split_from_one_model_updates_an_equal_structure(model):
    twin = Net(nnx.Rngs(3))
    state = nnx.state(model)
    assert state._origin.graphdef is not nnx.graphdef(twin) and state._origin.graphdef == nnx.graphdef(twin)
    nnx.update(twin, state)
    assert same(values(twin), values(model))


def test_state_copies_share_metadata_until_one_is_set(model):
    state = nnx.state(model)
    copy = state["linear"]["kernel"]
    copy.set_metadata("out_sharding", ("a", None))
    assert copy.out_sharding == ("a", None)
    assert "out_sharding" not in model.linear.kernel.get_metadata()


def test_structural_filters_are_planned_once_and_value_filters_each_time(model):
    flat = graph.flatten_cached((model,))
    nnx.state(model, nnx.Param, ...)
    assert (nnx.Param, ...) in flat.plans

    def nonzero(path, v):  # depends on values: must be evaluated on every call
        return isinstance(v, nnx.Param) and bool(jnp.any(v.value != 0))

    assert ("linear", "bias") not in [p for p, _ in nnx.state(model, nonzero).flat_state()]
    model.linear.bias.value = jnp.ones(3)
    assert ("linear", "bias") in [p for p, _ in nnx.state(model, nonzero).flat_state()]
    assert not any(nonzero in key for key in flat.plans)


def test_unhashable_metadata_survives_merge():
    m = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    m.kernel.set_metadata("axes", ["in", "out"])  # a list: not hashable
    gd, state = nnx.split(m)
    merged = nnx.merge(gd, state)
    assert merged.kernel.axes == ["in", "out"] and type(merged.kernel.axes) is list
    assert nnx.graphdef(merged) == gd


def test_tree_mapped_states_are_read_by_path_with_the_same_result(model):
    gd, state = nnx.split(model)
    doubled = jax.tree.map(lambda x: x, state)
    assert doubled._origin is None
    assert same(values(nnx.merge(gd, doubled)), values(model))


def test_a_bad_filter_is_refused_even_after_an_equal_valid_one(model):
    nnx.state(model, True)  # everything; must not be the cached answer for the invalid filter 1
    with pytest.raises(nnx.FilterError, match="is not a filter"):
        nnx.state(model, 1)


def test_split_checks_every_variable_is_claimed_even_after_state_with_the_same_filters(model):
    params = nnx.state(model, nnx.Param)  # not strict: the rest is simply left out
    assert ("stats",) not in [p for p, _ in params.flat_state()]
    with pytest.raises(nnx.FilterError, match=r"(?s)unclaimed.*stats"):
        nnx.split(model, nnx.Param)
    with pytest.raises(nnx.FilterError, match="unclaimed"):
        nnx.split(model, nnx.Param)  # and again, from the cached plan
