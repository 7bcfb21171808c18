"""Optional comparison with Flax NNX: the State and graph functions give the same results.

The same small model is built in plait and in Flax NNX with plait's values copied in; each
function is then run on both and the results compared: paths in the order each returns
them (where the reference's order is defined: flat states are sorted by path), Variable
types by name, and values. Skipped when Flax is not installed.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

flax = pytest.importorskip("flax")
from flax import nnx as fnnx  # noqa: E402

import plait as nnx  # noqa: E402


def _models():
    """The same model in plait and Flax NNX, with equal values."""

    class P(nnx.Module):
        def __init__(self, rngs):
            self.linear = nnx.Linear(2, 3, rngs=rngs)
            self.bn = nnx.BatchNorm(3, rngs=rngs)
            self.layers = [nnx.Linear(3, 3, rngs=rngs), nnx.Linear(3, 1, rngs=rngs)]

        def __call__(self, x):
            x = self.bn(self.linear(x))
            for layer in self.layers:
                x = layer(x)
            return x

    class F(fnnx.Module):
        def __init__(self, rngs):
            self.linear = fnnx.Linear(2, 3, rngs=rngs)
            self.bn = fnnx.BatchNorm(3, rngs=rngs)
            self.layers = fnnx.List([fnnx.Linear(3, 3, rngs=rngs), fnnx.Linear(3, 1, rngs=rngs)])

        def __call__(self, x):
            x = self.bn(self.linear(x))
            for layer in self.layers:
                x = layer(x)
            return x

    p, f = P(nnx.Rngs(0)), F(fnnx.Rngs(1))
    fstate = fnnx.state(f)
    fnnx.replace_by_pure_dict(fstate, nnx.to_pure_dict(nnx.state(p)))
    fnnx.update(f, fstate)
    return p, f


def _value(v):
    return v.get_value() if hasattr(v, "get_value") else (v.value if hasattr(v, "value") else v)


def _flat(items):
    """``[(path, type name, value)]`` of a flat state / list of pairs, keeping the order."""
    return [(tuple(path), type(v).__name__, np.asarray(_value(v))) for path, v in items]


def _assert_same_flat(mine, theirs):
    a, b = _flat(mine), _flat(theirs)
    assert [x[:2] for x in a] == [x[:2] for x in b]
    for (path, _, va), (_, _, vb) in zip(a, b):
        np.testing.assert_allclose(va, vb, rtol=1e-6, err_msg=str(path))


def _assert_same_pure(mine, theirs):
    assert isinstance(mine, dict) and isinstance(theirs, dict)
    assert sorted(map(str, mine)) == sorted(map(str, theirs))
    for k in mine:
        if isinstance(mine[k], dict):
            _assert_same_pure(mine[k], theirs[k])
        else:
            np.testing.assert_allclose(np.asarray(mine[k]), np.asarray(theirs[k]), rtol=1e-6)


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def test_to_flat_state_same_paths_order_types_values():
    p, f = _models()
    _assert_same_flat(nnx.to_flat_state(nnx.state(p)), fnnx.to_flat_state(fnnx.state(f)))
    _assert_same_flat(nnx.to_flat_state(nnx.state(p, nnx.BatchStat)), fnnx.to_flat_state(fnnx.state(f, fnnx.BatchStat)))


def test_from_flat_state_and_to_pure_dict():
    p, f = _models()
    mine = nnx.from_flat_state(nnx.to_flat_state(nnx.state(p)))
    theirs = fnnx.from_flat_state(fnnx.to_flat_state(fnnx.state(f)))
    _assert_same_flat(nnx.to_flat_state(mine), fnnx.to_flat_state(theirs))
    _assert_same_pure(nnx.to_pure_dict(nnx.state(p)), fnnx.to_pure_dict(fnnx.state(f)))


def test_replace_by_pure_dict_and_restore_int_paths():
    p, f = _models()
    saved = {"linear": {"bias": np.full(3, 2.0, np.float32)}, "layers": {"1": {"bias": np.ones(1, np.float32)}}}
    mine, theirs = nnx.state(p), fnnx.state(f)
    nnx.replace_by_pure_dict(mine, saved)
    fnnx.replace_by_pure_dict(theirs, saved)
    _assert_same_flat(nnx.to_flat_state(mine), fnnx.to_flat_state(theirs))
    assert nnx.restore_int_paths(saved).keys() == fnnx.restore_int_paths(saved).keys()
    assert list(nnx.restore_int_paths(saved)["layers"]) == list(fnnx.restore_int_paths(saved)["layers"]) == [1]


def test_split_filter_merge_map_state():
    p, f = _models()
    mine, theirs = nnx.state(p), fnnx.state(f)
    for a, b in zip(nnx.split_state(mine, nnx.Param, ...), fnnx.split_state(theirs, fnnx.Param, ...)):
        _assert_same_flat(nnx.to_flat_state(a), fnnx.to_flat_state(b))
    _assert_same_flat(nnx.to_flat_state(nnx.filter_state(mine, nnx.BatchStat)),
                      fnnx.to_flat_state(fnnx.filter_state(theirs, fnnx.BatchStat)))
    a1, a2 = nnx.split_state(mine, nnx.Param, ...)
    b1, b2 = fnnx.split_state(theirs, fnnx.Param, ...)
    _assert_same_flat(nnx.to_flat_state(nnx.merge_state(a2, a1)), fnnx.to_flat_state(fnnx.merge_state(b2, b1)))

    def double(path, v):
        return v.replace(v.value * 2) if path[-1] == "kernel" else v

    def fdouble(path, v):
        return v.replace(v.get_value() * 2) if path[-1] == "kernel" else v

    _assert_same_flat(nnx.to_flat_state(nnx.map_state(double, mine)),
                      fnnx.to_flat_state(fnnx.map_state(fdouble, theirs)))


def test_state_equals_dict_in_both():
    p, f = _models()
    mine, theirs = nnx.state(p.linear), fnnx.state(f.linear)
    assert (mine == {"kernel": mine["kernel"], "bias": mine["bias"]}) is True
    assert (theirs == {"kernel": theirs["kernel"], "bias": theirs["bias"]}) is True


def test_split_merge_of_a_list_and_a_bare_variable():
    p, f = _models()
    gd, st = nnx.split([p.linear, p.layers[0]])
    fgd, fst = fnnx.split([f.linear, f.layers[0]])
    _assert_same_flat(nnx.to_flat_state(st), fnnx.to_flat_state(fst))
    assert type(nnx.merge(gd, st)) is type(fnnx.merge(fgd, fst)) is list
    _, vst = nnx.split(p.linear.bias)
    _, fvst = fnnx.split(f.linear.bias)
    assert type(vst).__name__ == type(fvst).__name__ == "Param"
    np.testing.assert_allclose(_value(vst), _value(fvst))


def test_flatten_paths_and_leaves():
    p, f = _models()
    _, mine = nnx.flatten(p)
    _, theirs = fnnx.graph.flatten(f)
    _assert_same_flat(mine, theirs)


def test_find_duplicates_and_iter_children():
    p, f = _models()
    p.tied, f.tied = p.linear, f.linear
    p.w, f.w = p.layers[1].bias, f.layers[1].bias
    assert sorted(map(sorted, nnx.find_duplicates(p))) == sorted(map(sorted, fnnx.find_duplicates(f)))
    assert nnx.find_duplicates(p, only=nnx.Param) == [[("layers", 1, "bias"), ("w",)]]
    assert fnnx.find_duplicates(f, only=fnnx.Param) == [[("layers", 1, "bias"), ("w",)]]
    assert sorted(k for k, _ in nnx.iter_children(p)) == sorted(k for k, _ in fnnx.iter_children(f))
    # the reference's nnx.List is a Module; plait's list of layers is a plain container
    assert sorted(k for k, _ in nnx.iter_module_children(p)) == ["bn", "linear", "tied"]
    assert sorted(k for k, _ in fnnx.iter_module_children(f)) == ["bn", "layers", "linear", "tied"]


def test_recursive_map_visits_the_same_variables_and_changes_the_same_values():
    p, f = _models()
    seen, fseen = [], []

    def zero_bias(path, v, into, cls):
        if isinstance(v, cls):
            into.append(path)
            if path[-1] == "bias":
                return v.replace(jnp.zeros_like(_value(v)))
        return v

    out = nnx.recursive_map(lambda path, v: zero_bias(path, v, seen, nnx.Variable), p)
    fout = fnnx.recursive_map(lambda path, v: zero_bias(path, v, fseen, fnnx.Variable), f)
    assert sorted(seen) == sorted(fseen)
    _assert_same_flat(nnx.to_flat_state(nnx.state(out)), fnnx.to_flat_state(fnnx.state(fout)))


def test_clone_shares_or_copies_arrays_alike():
    p, f = _models()
    for arrays in (False, True):
        c, fc = nnx.clone(p, arrays=arrays), fnnx.clone(f, arrays=arrays)
        assert (c.linear.kernel.value is p.linear.kernel.value) == (fc.linear.kernel.get_value() is f.linear.kernel.get_value())
        assert c.linear.kernel is not p.linear.kernel and fc.linear.kernel is not f.linear.kernel
    c, fc = nnx.clone(p, variables=False), fnnx.clone(f, variables=False)
    assert c.linear.kernel is p.linear.kernel and fc.linear.kernel is f.linear.kernel


def test_graphdef_apply_gives_the_same_output_and_state():
    p, f = _models()
    x = jnp.arange(8.0).reshape(4, 2)
    gd, st = nnx.split(p)
    fgd, fst = fnnx.split(f)
    y, (_, st2) = gd.apply(st)(x)
    fy, (_, fst2) = fgd.apply(fst)(x)
    np.testing.assert_allclose(y, fy, rtol=1e-5, atol=1e-6)
    _assert_same_flat(nnx.to_flat_state(st2), fnnx.to_flat_state(fst2))


def test_to_tree_from_tree_keep_sharing_and_values_alike():
    p, f = _models()
    tree = nnx.to_tree({"a": p.linear, "b": p.linear, "x": 1})
    ftree = fnnx.to_tree({"a": f.linear, "b": f.linear, "x": 1})
    _assert_same_flat(nnx.to_flat_state(tree["a"].state), fnnx.to_flat_state(ftree["a"].state))
    assert len(tree["b"].state) == len(ftree["b"].state) == 0
    back, fback = nnx.from_tree(tree), fnnx.from_tree(ftree)
    assert (back["a"] is back["b"]) and (fback["a"] is fback["b"]) and back["x"] == fback["x"] == 1
    assert back["a"] is not p.linear and fback["a"] is not f.linear


# -- order: attributes and keys sorted, as the reference ------------------------------------------
def _ordered_models():
    """Attributes set in an order that is not sorted, with a dict and RNG streams."""

    class P(nnx.Module):
        def __init__(self, rngs):
            self.zeta = nnx.Linear(2, 3, rngs=rngs)
            self.alpha = nnx.BatchNorm(3, rngs=rngs)
            self.mid = {"y": nnx.Param(jnp.ones(2)), "x": nnx.Param(jnp.zeros(2))}
            self.rngs = nnx.Rngs(dropout=1, default=0)

    class F(fnnx.Module):
        def __init__(self, rngs):
            self.zeta = fnnx.Linear(2, 3, rngs=rngs)
            self.alpha = fnnx.BatchNorm(3, rngs=rngs)
            self.mid = fnnx.Dict({"y": fnnx.Param(jnp.ones(2)), "x": fnnx.Param(jnp.zeros(2))})
            self.rngs = fnnx.Rngs(dropout=1, default=0)

    return P(nnx.Rngs(0)), F(fnnx.Rngs(0))


def _paths(pairs):
    return [tuple(p) for p, _ in pairs]


def test_state_keys_and_tree_leaves_come_in_the_references_order():
    p, f = _ordered_models()
    ps, fs = nnx.state(p), fnnx.state(f)
    assert list(ps) == list(fs) == ["alpha", "mid", "rngs", "zeta"]
    assert list(ps["rngs"]) == list(fs["rngs"]) == ["default", "dropout"]
    assert list(ps["mid"]) == list(fs["mid"]) == ["x", "y"]
    mine = [jax.tree_util.keystr(k) for k, _ in jax.tree_util.tree_leaves_with_path(ps)]
    theirs = [jax.tree_util.keystr(k) for k, _ in jax.tree_util.tree_leaves_with_path(fs)]
    assert mine == theirs
    # Leaves zipped by position line up: a flat list checkpoint written by one loads in the other.
    for a, b in zip(jax.tree.leaves(nnx.state(p, nnx.Param)), jax.tree.leaves(fnnx.state(f, fnnx.Param))):
        assert np.shape(a) == np.shape(b)


def test_iter_graph_iter_modules_and_split_order_match_the_reference():
    p, f = _ordered_models()
    mine = [p_ for p_ in _paths(nnx.iter_graph(p)) if not any(str(k).startswith("_") for k in p_)]
    theirs = [p_ for p_ in _paths(fnnx.iter_graph(f)) if not any(str(k).startswith("_") for k in p_)]
    # Both list children before parents, attributes sorted; the reference also visits its
    # static attributes (plait's iter_graph yields graph nodes and data), so compare nodes' order.
    assert [x for x in mine if x in theirs] == [x for x in theirs if x in mine]
    assert len([x for x in mine if x in theirs]) >= 15
    assert _paths(nnx.iter_modules(p)) == [x for x in _paths(fnnx.iter_modules(f)) if x != ("mid",)]
    assert [k for k, _ in nnx.iter_children(p)] == [k for k, _ in fnnx.iter_children(f)]
    _, params, rest = nnx.split(p, nnx.Param, ...)
    _, fparams, frest = fnnx.split(f, fnnx.Param, ...)
    assert _paths(nnx.to_flat_state(params)) == _paths(fnnx.to_flat_state(fparams))
    assert [jax.tree_util.keystr(k) for k, _ in jax.tree_util.tree_leaves_with_path(rest)] == [
        jax.tree_util.keystr(k) for k, _ in jax.tree_util.tree_leaves_with_path(frest)]
