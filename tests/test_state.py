"""State: a nested mapping of a graph's Variables that is also a JAX pytree."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import plait as nnx


class Net(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.linear = nnx.Linear(2, 3, rngs=rngs)
        self.blocks = [nnx.Linear(3, 1, rngs=rngs)]
        self.dropout = nnx.Dropout(0.5, rngs=rngs)
        self.stats = nnx.BatchStat(jnp.zeros(3))

    def __call__(self, x):
        return self.blocks[0](self.dropout(self.linear(x)))


@pytest.fixture
def model() -> Net:
    return Net(nnx.Rngs(0))


def paths(state: nnx.State) -> list[tuple]:
    return [p for p, _ in state.flat_state()]


# The reference's order: attributes sorted by name at every level.
ALL_PATHS = [
    ("blocks", 0, "bias"),
    ("blocks", 0, "kernel"),
    ("dropout", "rngs", "default", "count"),
    ("dropout", "rngs", "default", "key"),
    ("linear", "bias"),
    ("linear", "kernel"),
    ("stats",),
]
PARAM_PATHS = [p for p in ALL_PATHS if p[0] in ("blocks", "linear")]
RNG_PATHS = [p for p in ALL_PATHS if p[0] == "dropout"]


# -- mapping ---------------------------------------------------------------------------------


def test_attribute_and_item_access(model):
    state = nnx.state(model)
    assert paths(state) == ALL_PATHS
    assert state.linear.kernel is state["linear"]["kernel"]
    assert isinstance(state.linear, nnx.State)
    assert isinstance(state.linear.kernel, nnx.Param)
    assert state.linear.kernel.value.shape == (2, 3)
    np.testing.assert_array_equal(state.linear.kernel.value, model.linear.kernel.value)
    # List indices stay ints.
    assert state["blocks"][0]["kernel"].value.shape == (3, 1)
    assert state.dropout.rngs.default.key.tag == "default"


def test_missing_entry_errors_name_the_keys(model):
    state = nnx.state(model)
    with pytest.raises(AttributeError, match="kernel"):
        _ = state.linear.kernal
    with pytest.raises(KeyError):
        _ = state["nope"]


def test_mapping_protocol(model):
    state = nnx.state(model)
    assert list(state) == ["blocks", "dropout", "linear", "stats"]
    assert len(state) == 4
    assert "stats" in state and "nope" not in state
    assert dict(state.linear.items()).keys() == {"kernel", "bias"}

    state["extra"] = {"nested": nnx.Param(jnp.ones(1))}  # a plain dict becomes a State
    assert isinstance(state["extra"], nnx.State)
    assert state.extra.nested.value.shape == (1,)
    del state["extra"]
    assert "extra" not in state
    assert paths(state) == ALL_PATHS


def test_state_holds_copies_of_the_variables(model):
    state = nnx.state(model)
    assert state.linear.kernel is not model.linear.kernel
    assert type(state.linear.kernel) is type(model.linear.kernel)
    before = np.asarray(model.linear.kernel.value).copy()
    state.linear.kernel.value = jnp.zeros((2, 3))
    np.testing.assert_array_equal(model.linear.kernel.value, before)


def test_constructor_from_nested_dicts():
    state = nnx.State({"a": {"b": nnx.Param(jnp.ones(2))}, "c": jnp.zeros(1)})
    assert isinstance(state["a"], nnx.State)
    assert paths(state) == [("a", "b"), ("c",)]


# -- equality ---------------------------------------------------------------------------------


def test_equality_compares_paths_types_and_values(model):
    a, b = nnx.state(model), nnx.state(model)
    assert a == b
    assert not (a == jax.tree.map(lambda x: x, nnx.state(model, nnx.Param)))  # different paths
    changed = nnx.state(model)
    changed["stats"] = nnx.BatchStat(jnp.ones(3))
    assert not (a == changed)  # different value
    retyped = nnx.state(model)
    retyped["stats"] = nnx.Param(jnp.zeros(3))
    assert not (a == retyped)  # different Variable type


def test_equality_ignores_key_order():
    a = nnx.State({"x": nnx.Param(jnp.ones(1)), "y": nnx.BatchStat(jnp.zeros(1))})
    b = nnx.State({"y": nnx.BatchStat(jnp.zeros(1)), "x": nnx.Param(jnp.ones(1))})
    assert a == b


# -- pytree ---------------------------------------------------------------------------------


def test_tree_map_returns_a_state_with_the_same_variable_types(model):
    params = nnx.state(model, (nnx.Param, nnx.BatchStat))
    doubled = jax.tree.map(lambda x: 2 * x, params)
    assert isinstance(doubled, nnx.State)
    assert paths(doubled) == paths(params)
    for (_, before), (_, after) in zip(params.flat_state(), doubled.flat_state()):
        assert type(after) is type(before)
        np.testing.assert_allclose(after.value, 2 * before.value)


def test_tree_map_keeps_metadata(model):
    rng = nnx.state(model, nnx.RngState)
    same = jax.tree.map(lambda x: x, rng)
    assert type(same.dropout.rngs.default.key) is nnx.RngKey
    assert type(same.dropout.rngs.default.count) is nnx.RngCount
    assert same.dropout.rngs.default.key.tag == "default"


def test_tree_leaves_are_the_arrays(model):
    state = nnx.state(model)
    leaves = jax.tree.leaves(state)
    assert len(leaves) == len(ALL_PATHS)
    assert not any(isinstance(x, nnx.Variable) for x in leaves)
    assert leaves[0] is model.blocks[0].bias.value


def test_tree_leaves_with_path(model):
    state = nnx.state(model, nnx.Param)
    with_path = jax.tree_util.tree_leaves_with_path(state)
    assert len(with_path) == 4
    keys, leaf = with_path[0]
    assert keys[:3] == (jax.tree_util.DictKey("blocks"), jax.tree_util.DictKey(0), jax.tree_util.DictKey("bias"))
    assert leaf.shape == (1,)
    # Each key path names the State path, then the Variable's value.
    names = [tuple(getattr(k, "key", getattr(k, "name", None)) for k in kp) for kp, _ in with_path]
    assert names == [p + ("value",) for p in paths(state)]
    assert jax.tree_util.keystr(with_path[3][0]) == "['linear']['kernel'].value"


def test_jit_and_grad_accept_and_return_states(model):
    model.eval()  # dropout off, so the loss is a plain function of the params
    gd, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(p, x):
        return jnp.sum(nnx.merge(gd, p, rest)(x) ** 2)

    x = jnp.ones((4, 2))
    grads = jax.jit(jax.grad(loss))(params, x)
    assert isinstance(grads, nnx.State)
    assert paths(grads) == paths(params)
    assert isinstance(grads.linear.kernel, nnx.Param)
    # Matches a gradient taken through the raw arrays.
    raw = params.to_pure_dict()

    def raw_loss(p, x):
        h = x @ p["linear"]["kernel"] + p["linear"]["bias"]
        return jnp.sum((h @ p["blocks"][0]["kernel"] + p["blocks"][0]["bias"]) ** 2)

    expected = jax.grad(raw_loss)(raw, x)
    np.testing.assert_allclose(grads.linear.kernel.value, expected["linear"]["kernel"], rtol=1e-5)
    np.testing.assert_allclose(grads.blocks[0].bias.value, expected["blocks"][0]["bias"], rtol=1e-5)


def test_optax_sgd_on_a_state_then_update(model):
    params = nnx.state(model, nnx.Param)
    before = jax.tree.map(lambda x: np.asarray(x).copy(), params)
    tx = optax.sgd(0.1)
    opt_state = tx.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    updates, opt_state = tx.update(grads, opt_state, params)
    assert isinstance(updates, nnx.State)
    new_params = optax.apply_updates(params, updates)
    assert isinstance(new_params, nnx.State)
    assert type(new_params.linear.kernel) is nnx.Param

    kernel = model.linear.kernel
    nnx.update(model, new_params)
    assert model.linear.kernel is kernel
    np.testing.assert_allclose(model.linear.kernel.value, before.linear.kernel.value - 0.1, rtol=1e-6)
    np.testing.assert_allclose(model.blocks[0].bias.value, before.blocks[0].bias.value - 0.1, rtol=1e-6)
    # Non-parameters untouched.
    np.testing.assert_array_equal(model.stats.value, np.zeros(3))


def test_optax_adam_state_mirrors_the_params_state(model):
    params = nnx.state(model, nnx.Param)
    tx = optax.adam(1e-2)
    opt_state = tx.init(params)
    mu = opt_state[0].mu
    assert isinstance(mu, nnx.State)
    assert paths(mu) == paths(params)
    assert type(mu.linear.kernel) is nnx.Param
    grads = jax.tree.map(jnp.ones_like, params)
    updates, opt_state = jax.jit(tx.update)(grads, opt_state, params)
    new = optax.apply_updates(params, updates)
    # Adam's first step moves each parameter by about the learning rate.
    np.testing.assert_allclose(new.linear.kernel.value, params.linear.kernel.value - 1e-2, rtol=1e-4, atol=1e-6)


# -- flat views -------------------------------------------------------------------------------


def test_flat_state_round_trip(model):
    state = nnx.state(model)
    flat = state.flat_state()
    assert [p for p, _ in flat] == ALL_PATHS
    again = nnx.State.from_flat_state(flat)
    assert paths(again) == ALL_PATHS
    assert again == state
    assert again.linear.kernel is state.linear.kernel
    # Also from a {path: leaf} dict.
    assert nnx.State.from_flat_state(dict(flat)) == state


def test_from_flat_state_rejects_bad_paths():
    with pytest.raises(ValueError, match="non-empty"):
        nnx.State.from_flat_state([((), 1)])
    with pytest.raises(ValueError, match="through a leaf"):
        nnx.State.from_flat_state([(("a",), 1), (("a", "b", "c"), 2)])


def test_to_pure_dict(model):
    pure = nnx.state(model).to_pure_dict()
    assert type(pure) is dict and type(pure["linear"]) is dict and type(pure["blocks"]) is dict
    assert list(pure["blocks"]) == [0]
    assert not any(isinstance(x, nnx.Variable) for x in jax.tree.leaves(pure))
    assert pure["linear"]["kernel"] is model.linear.kernel.value
    assert pure["dropout"]["rngs"]["default"]["count"].dtype == jnp.uint32


def test_replace_by_pure_dict_round_trip(model):
    state = nnx.state(model)
    pure = jax.tree.map(lambda x: x, state.to_pure_dict())
    pure["linear"]["kernel"] = jnp.full((2, 3), 5.0)
    pure["stats"] = jnp.ones(3)
    state.replace_by_pure_dict(pure)
    assert type(state.linear.kernel) is nnx.Param
    assert type(state.stats) is nnx.BatchStat
    assert type(state.dropout.rngs.default.key) is nnx.RngKey
    assert state.dropout.rngs.default.key.tag == "default"
    np.testing.assert_array_equal(state.linear.kernel.value, np.full((2, 3), 5.0))

    nnx.update(model, state)
    np.testing.assert_array_equal(model.linear.kernel.value, np.full((2, 3), 5.0))
    np.testing.assert_array_equal(model.stats.value, np.ones(3))


def test_replace_by_pure_dict_partial_and_replace_fn(model):
    state = nnx.state(model, nnx.Param)
    old_kernel = state.linear.kernel.value
    state.replace_by_pure_dict({"linear": {"bias": jnp.ones(3)}}, replace_fn=lambda var, v: var.replace(v * 3))  # returns the leaf, as in the reference
    np.testing.assert_array_equal(state.linear.bias.value, np.full(3, 3.0))
    assert state.linear.kernel.value is old_kernel
    with pytest.raises(KeyError, match="bias"):
        state.replace_by_pure_dict({"linear": {"bais": jnp.ones(3)}})


# -- filter / split / merge -----------------------------------------------------------------


def test_filter_returns_one_state_per_filter(model):
    state = nnx.state(model)
    params = state.filter(nnx.Param)
    assert isinstance(params, nnx.State)
    assert paths(params) == PARAM_PATHS
    params, rng = state.filter(nnx.Param, nnx.RngState)
    assert paths(rng) == RNG_PATHS
    # filter silently drops what no filter selects.
    assert ("stats",) not in paths(params) + paths(rng)


def test_split_remainder_error_names_the_paths(model):
    state = nnx.state(model)
    with pytest.raises(nnx.FilterError) as info:
        state.split(nnx.Param)
    msg = str(info.value)
    assert "dropout.rngs.default.key" in msg
    assert "stats" in msg
    assert "..." in msg
    assert "linear.kernel" not in msg


def test_split_with_ellipsis_and_merge_back(model):
    state = nnx.state(model)
    params, rest = state.split(nnx.Param, ...)
    assert paths(params) == PARAM_PATHS
    assert paths(rest) == [p for p in ALL_PATHS if p not in PARAM_PATHS]
    merged = nnx.State.merge(params, rest)
    assert sorted(map(str, paths(merged))) == sorted(map(str, ALL_PATHS))
    assert (params | rest).linear.kernel is state.linear.kernel
    # merge does not modify its inputs.
    assert paths(params) == PARAM_PATHS


def test_merge_and_or_later_wins_and_nested_combine():
    a = nnx.State({"x": {"y": jnp.array(1)}, "z": jnp.array(2)})
    b = nnx.State({"x": {"w": jnp.array(3)}, "z": jnp.array(4)})
    merged = a | b
    assert isinstance(merged, nnx.State)
    assert sorted(map(str, paths(merged))) == sorted(map(str, [("x", "y"), ("x", "w"), ("z",)]))
    assert int(merged.z) == 4
    assert int(nnx.State.merge(b, a).z) == 2
    assert int(merged.x.y) == 1 and int(merged.x.w) == 3
    # Plain dicts are accepted on the right.
    assert int((a | {"z": jnp.array(9)}).z) == 9


# -- repr -------------------------------------------------------------------------------------


def test_repr_shows_each_variable_type_and_shape(model):
    text = repr(nnx.state(model))
    assert text.startswith("State({")
    assert "'kernel': Param(shape=(2, 3), dtype=float32)" in text
    assert "'kernel': Param(shape=(3, 1), dtype=float32)" in text
    assert "'stats': BatchStat(shape=(3,), dtype=float32)" in text
    assert "RngKey(shape=()" in text and "tag='default'" in text
    assert "0: {" in text  # list index key


def test_repr_of_raw_arrays():
    text = repr(nnx.State({"w": jnp.zeros((2, 1))}))
    assert "Array(shape=(2, 1), dtype=float32)" in text


# -- the reference's State functions ---------------------------------------------------------
def test_state_equals_a_dict_with_the_same_content():
    s = nnx.state(nnx.Linear(2, 3, rngs=nnx.Rngs(0)))
    assert s == {"kernel": s["kernel"], "bias": s["bias"]}
    assert s != {"kernel": s["kernel"]}
    assert s != {"kernel": s["kernel"], "bias": nnx.Param(jnp.ones(3))}
    assert (s == 3) is False


def test_to_flat_state_is_sorted_and_round_trips():
    model = Net(nnx.Rngs(0))
    flat = nnx.to_flat_state(nnx.state(model))
    assert list(flat.paths) == sorted(flat.paths, key=lambda p: tuple((type(k).__name__, k) for k in p))
    assert ("blocks", 0, "kernel") in flat.paths and len(flat) == len(flat.leaves)
    back = nnx.from_flat_state(flat)
    assert back == nnx.state(model)
    assert nnx.from_flat_state(dict(flat)) == back
    assert isinstance(flat[0:2], nnx.FlatState) and len(flat[0:2]) == 2
    doubled = jax.tree.map(lambda x: x * 2, nnx.to_flat_state(nnx.state(model, nnx.Param)))
    assert isinstance(doubled, nnx.FlatState)
    np.testing.assert_allclose(dict(doubled)[("linear", "kernel")].value, 2 * model.linear.kernel.value)


def test_flat_state_split_filter_merge():
    flat = nnx.to_flat_state(nnx.state(Net(nnx.Rngs(0))))
    params, rest = flat.split(nnx.Param, ...)
    assert all(isinstance(v, nnx.Param) for v in params.leaves) and len(params) + len(rest) == len(flat)
    assert nnx.FlatState.merge(params, rest) == flat
    assert len(flat.filter(nnx.BatchStat)) == 1
    with pytest.raises(nnx.FilterError, match="unselected"):
        flat.split(nnx.Param)


def test_pure_dict_round_trip_and_string_keys():
    model = Net(nnx.Rngs(0))
    state = nnx.state(model, nnx.Param)
    pure = nnx.to_pure_dict(state)
    assert isinstance(pure["blocks"][0]["kernel"], jax.Array)
    zeros = jax.tree.map(jnp.zeros_like, pure)
    as_saved = {"linear": zeros["linear"], "blocks": {"0": zeros["blocks"][0]}}  # a checkpoint's string index
    nnx.replace_by_pure_dict(state, as_saved)
    assert type(state["blocks"][0]["kernel"]) is nnx.Param
    assert float(jnp.abs(state["blocks"][0]["kernel"].value).sum()) == 0.0
    assert nnx.restore_int_paths({"blocks": {"0": 1, "x": 2}}) == {"blocks": {0: 1, "x": 2}}
    with pytest.raises(KeyError, match="nope"):
        nnx.replace_by_pure_dict(state, {"nope": 1})


def test_replace_fn_returns_the_new_leaf_and_extract_fn_reads_it():
    state = nnx.state(nnx.Linear(2, 3, rngs=nnx.Rngs(0)))
    nnx.replace_by_pure_dict(state, {"bias": jnp.ones(3)}, lambda leaf, v: nnx.BatchStat(v))
    assert type(state["bias"]) is nnx.BatchStat
    assert nnx.to_pure_dict(state, lambda leaf: type(leaf).__name__) == {"kernel": "Param", "bias": "BatchStat"}


def test_split_filter_merge_map_state():
    model = Net(nnx.Rngs(0))
    state = nnx.state(model)
    params, stats, rest = nnx.split_state(state, nnx.Param, nnx.BatchStat, ...)
    assert sorted(stats) == ["stats"] and "dropout" in rest
    with pytest.raises(nnx.FilterError):
        nnx.split_state(state, nnx.Param)
    assert sorted(nnx.filter_state(state, nnx.BatchStat)) == ["stats"]
    merged = nnx.merge_state(params, stats, rest)
    assert merged == state
    assert nnx.merge_state(state) is state
    nnx.update(model, merged)
    mapped = nnx.map_state(lambda path, v: v.replace(v.value * 0) if path[-1] == "kernel" else v, params)
    assert float(jnp.abs(mapped["linear"]["kernel"].value).sum()) == 0.0
    assert float(jnp.abs(mapped["linear"]["bias"].value - params["linear"]["bias"].value).sum()) == 0.0
