"""Filters: every kind in plait.filters, applied to a real model."""

from __future__ import annotations

import jax.numpy as jnp
import pytest

import plait as nnx
from plait.filters import to_predicate


class Net(nnx.Module):
    def __init__(self):
        rngs = nnx.Rngs(0, dropout=1)
        self.linear = nnx.Linear(2, 3, rngs=rngs)
        self.dropout = nnx.Dropout(0.5, rngs=rngs)
        self.stats = nnx.BatchStat(jnp.zeros(3))
        self.blocks = [nnx.Linear(3, 3, rngs=rngs)]


KERNEL = ("linear", "kernel")
BIAS = ("linear", "bias")
DEF_KEY = ("dropout", "rngs", "default", "key")
DEF_COUNT = ("dropout", "rngs", "default", "count")
DROP_KEY = ("dropout", "rngs", "dropout", "key")
DROP_COUNT = ("dropout", "rngs", "dropout", "count")
STATS = ("stats",)
B_KERNEL = ("blocks", 0, "kernel")
B_BIAS = ("blocks", 0, "bias")

# The reference's order: paths sorted (attributes by name).
ALL = sorted([KERNEL, BIAS, DEF_KEY, DEF_COUNT, DROP_KEY, DROP_COUNT, STATS, B_KERNEL, B_BIAS])
PARAMS = sorted([KERNEL, BIAS, B_KERNEL, B_BIAS])
RNG = sorted([DEF_KEY, DEF_COUNT, DROP_KEY, DROP_COUNT])


def not_in(selected):
    return sorted(p for p in ALL if p not in selected)


CASES = [
    # types
    ("Param", nnx.Param, PARAMS),
    ("BatchStat", nnx.BatchStat, [STATS]),
    ("RngState", nnx.RngState, RNG),
    ("RngKey", nnx.RngKey, [DEF_KEY, DROP_KEY]),
    ("RngCount", nnx.RngCount, [DEF_COUNT, DROP_COUNT]),
    ("Variable", nnx.Variable, ALL),
    ("Cache (absent)", nnx.Cache, []),
    # stream tags
    ("tag dropout", "dropout", [DROP_KEY, DROP_COUNT]),
    ("tag default", "default", [DEF_KEY, DEF_COUNT]),
    ("tag absent", "params", []),
    # everything / nothing
    ("ellipsis", ..., ALL),
    ("True", True, ALL),
    ("None", None, []),
    ("False", False, []),
    # combinators
    ("Not Param", nnx.Not(nnx.Param), not_in(PARAMS)),
    ("Not ...", nnx.Not(...), []),
    ("Not None", nnx.Not(None), ALL),
    ("All RngKey dropout", nnx.All(nnx.RngKey, "dropout"), [DROP_KEY]),
    ("All Param blocks", nnx.All(nnx.Param, nnx.PathContains("blocks")), [B_KERNEL, B_BIAS]),
    ("All empty", nnx.All(), ALL),
    ("Any BatchStat dropout", nnx.Any(nnx.BatchStat, "dropout"), [DROP_KEY, DROP_COUNT, STATS]),
    ("Any empty", nnx.Any(), []),
    ("Not All", nnx.Not(nnx.All(nnx.RngState, "default")), not_in([DEF_KEY, DEF_COUNT])),
    # paths
    ("PathContains linear", nnx.PathContains("linear"), [KERNEL, BIAS]),
    ("PathContains int index", nnx.PathContains(0), [B_KERNEL, B_BIAS]),
    ("PathContains rngs", nnx.PathContains("rngs"), RNG),
    ("PathContains kernel", nnx.PathContains("kernel"), [KERNEL, B_KERNEL]),
    ("PathContains partial name", nnx.PathContains("kern"), []),
    # collections
    ("tuple", (nnx.BatchStat, "dropout"), [DROP_KEY, DROP_COUNT, STATS]),
    ("list", [nnx.RngCount, nnx.PathContains("linear")], [KERNEL, BIAS, DEF_COUNT, DROP_COUNT]),
    ("nested tuple", (nnx.Not(nnx.Variable), (nnx.BatchStat,)), [STATS]),
    ("empty tuple", (), []),
    # predicates
    ("predicate ndim", lambda path, v: v.value.ndim == 2, [KERNEL, B_KERNEL]),
    ("predicate path", lambda path, v: path[-1] == "bias", [BIAS, B_BIAS]),
]


@pytest.fixture(scope="module")
def model():
    return Net()


def selected(state: nnx.State) -> list[tuple]:
    return [p for p, _ in state.flat_state()]


@pytest.mark.parametrize("filter_, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_filter_selects_expected_paths(model, filter_, expected):
    # nnx.state, State.filter and split(..., f, ...) agree, in the reference's order (sorted).
    expected = sorted(expected)
    assert selected(nnx.state(model, filter_)) == expected
    assert selected(nnx.state(model).filter(filter_)) == expected
    _, chosen, rest = nnx.split(model, filter_, ...)
    assert selected(chosen) == expected
    assert selected(rest) == not_in(expected)


def test_filtered_values_are_the_models_values(model):
    params = nnx.state(model, nnx.Param)
    assert params.linear.kernel.value is model.linear.kernel.value
    assert isinstance(params.blocks[0].bias, nnx.Param)


def test_predicate_receives_path_and_variable(model):
    seen = []

    def spy(path, value):
        seen.append((path, type(value)))
        return False

    nnx.state(model, spy)
    assert (KERNEL, nnx.Param) in seen
    assert (DROP_KEY, nnx.RngKey) in seen
    assert (STATS, nnx.BatchStat) in seen
    assert len(seen) == len(ALL)


def test_first_matching_filter_wins(model):
    rng, dropout_tag, rest = nnx.state(model, nnx.RngState, "dropout", ...)
    assert selected(rng) == RNG
    assert selected(dropout_tag) == []
    assert selected(rest) == sorted([KERNEL, BIAS, STATS, B_KERNEL, B_BIAS])

    dropout_tag, rng = nnx.state(model, "dropout", nnx.RngState)
    assert selected(dropout_tag) == [DROP_COUNT, DROP_KEY]
    assert selected(rng) == [DEF_COUNT, DEF_KEY]


def test_split_with_filters_that_leave_a_remainder(model):
    with pytest.raises(nnx.FilterError) as info:
        nnx.split(model, nnx.Param, "dropout")
    msg = str(info.value)
    assert "dropout.rngs.default.key" in msg and "stats" in msg
    assert "dropout.rngs.dropout.key" not in msg
    assert "..." in msg


@pytest.mark.parametrize("bad", [3, 2.5, object(), b"Param"], ids=["int", "float", "object", "bytes"])
def test_non_filter_raises_filter_error_explaining_filters(model, bad):
    with pytest.raises(nnx.FilterError) as info:
        to_predicate(bad)
    msg = str(info.value)
    assert "is not a filter" in msg
    assert type(bad).__name__ in msg
    # Explains what a filter is and shows an example.
    assert "Variable type" in msg
    assert "nnx.Param" in msg
    assert "..." in msg
    assert "(path, value) -> bool" in msg

    for use in (
        lambda: nnx.state(model, bad),
        lambda: nnx.split(model, bad, ...),
        lambda: nnx.state(model).filter(bad),
        lambda: nnx.Not(bad),
        lambda: nnx.All(nnx.Param, bad),
        lambda: nnx.state(model, (nnx.Param, bad)),
    ):
        with pytest.raises(nnx.FilterError, match="is not a filter"):
            use()


def test_filter_error_is_a_type_error():
    with pytest.raises(TypeError):
        to_predicate(3)


def test_named_filters_compare_by_what_they_match():
    assert nnx.Not(nnx.Param) == nnx.Not(nnx.Param)
    assert hash(nnx.Not(nnx.Param)) == hash(nnx.Not(nnx.Param))
    assert nnx.Not(nnx.Param) != nnx.Not(nnx.BatchStat)
    assert nnx.PathContains("a") == nnx.PathContains("a") != nnx.PathContains("b")
    assert nnx.All(nnx.Param, "x") == nnx.All(nnx.Param, "x")
    assert nnx.Any(nnx.Param, "x") != nnx.All(nnx.Param, "x")
    assert to_predicate(nnx.Param) == to_predicate(nnx.Param)
    assert to_predicate(...) == to_predicate(True)
    assert to_predicate(None) == to_predicate(False)
    assert to_predicate((nnx.Param, "x")) == nnx.Any(nnx.Param, "x")


# -- the reference's named filters and filterlib ---------------------------------------------
def test_named_filters_are_exported_and_match_like_their_shorthands(model):
    assert selected(nnx.state(model, nnx.OfType(nnx.Param))) == PARAMS
    assert selected(nnx.state(model, nnx.WithTag("dropout"))) == [DROP_COUNT, DROP_KEY]
    assert selected(nnx.state(model, nnx.Everything())) == ALL
    assert selected(nnx.state(model, nnx.Nothing())) == []
    assert to_predicate(nnx.Param) == nnx.OfType(nnx.Param)
    assert nnx.OfType(nnx.Param).type is nnx.Param
    assert to_predicate(...) == nnx.Everything() and to_predicate(None) == nnx.Nothing()


def test_filterlib_is_the_filters_module_under_the_reference_name():
    from plait.filterlib import PathContains

    assert nnx.filterlib.OfType is nnx.OfType
    assert nnx.filterlib.to_predicate is to_predicate
    assert PathContains is nnx.PathContains


def test_path_contains_inexact_matches_part_of_an_element(model):
    assert selected(nnx.state(model, nnx.PathContains("kern", exact=False))) == [B_KERNEL, KERNEL]
    assert selected(nnx.state(model, nnx.PathContains("kern"))) == []
    assert nnx.PathContains("a", exact=False) != nnx.PathContains("a")
    assert repr(nnx.PathContains("a", exact=False)) == "PathContains('a', exact=False)"


def test_path_in_selects_exact_paths(model):
    chosen = nnx.state(model, nnx.filters.PathIn(KERNEL, STATS, ("nowhere",)))
    assert selected(chosen) == [KERNEL, STATS]


def test_with_tag_matches_a_stream_itself():
    rngs = nnx.Rngs(0, dropout=1)
    assert nnx.WithTag("dropout")((), rngs.dropout)
    assert not nnx.WithTag("dropout")((), rngs.default)


@pytest.mark.parametrize("filters", [(..., nnx.Param), (True, nnx.Param, ...), (nnx.Everything(), "dropout")],
                         ids=["ellipsis", "True", "Everything"])
def test_catch_all_before_another_filter_is_a_filter_error(model, filters):
    for use in (
        lambda: nnx.state(model, *filters),
        lambda: nnx.split(model, *filters),
        lambda: nnx.state(model).filter(*filters),
        lambda: nnx.state(model).split(*filters),
    ):
        with pytest.raises(nnx.FilterError, match="matches everything") as info:
            use()
        assert "would never match" in str(info.value) and "put `...` last" in str(info.value)


def test_catch_alls_may_repeat_at_the_end(model):
    params, rest, empty = nnx.state(model, nnx.Param, ..., True)
    assert selected(params) == PARAMS and selected(empty) == []
    assert selected(rest) == not_in(PARAMS)
