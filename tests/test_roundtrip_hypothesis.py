"""Property-based round trips over random module trees.

A tree is first drawn as a *spec* (plain nested tuples), then built into modules, so the
same structure can be built twice with different values. Specs have random attribute
names, Variables of random types and tiny shapes, static ints and strings, lists and dicts
of sub-modules, and references back to already-built sub-modules and Variables (sharing).

The checks use their own walk over ``vars(obj)`` (not plait's ``iter_graph``), so that a
bug in plait's traversal cannot hide itself.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import plait as nnx
from plait.filters import to_predicate

VAR_TYPES = (nnx.Param, nnx.BatchStat, nnx.Cache, nnx.Intermediate)
MAX_DEPTH = 3
NAMES = st.text("abxyz", min_size=1, max_size=2).map(lambda s: "f_" + s)
STATICS = st.one_of(st.integers(-3, 3), st.text("ab", max_size=2))

SETTINGS = settings(
    max_examples=30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class Node(nnx.Module):
    """A module whose attributes come from a spec."""


# -- specs -------------------------------------------------------------------------------------
# ("module", ((name, spec), ...))     ("list", (spec, ...))      ("dict", ((key, spec), ...))
# ("var", type index, shape)          ("static", value)          ("array", shape): a raw jax array
# ("ref_module", k): the k-th module finished so far    ("ref_var", k): the k-th Variable made


@st.composite
def module_specs(draw, sharing: bool = True):
    counts = {"module": 0, "var": 0}

    def var_spec():
        if sharing and counts["var"] and draw(st.integers(0, 4)) == 0:
            return ("ref_var", draw(st.integers(0, counts["var"] - 1)))
        counts["var"] += 1
        shape = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
        return ("var", draw(st.integers(0, len(VAR_TYPES) - 1)), shape)

    def element(depth):  # what lists and dicts hold: sub-modules, Variables, raw arrays
        if depth <= MAX_DEPTH and draw(st.booleans()):
            return module_spec(depth)
        if draw(st.integers(0, 3)) == 0:
            return ("array", tuple(draw(st.lists(st.integers(1, 3), max_size=2))))
        return var_spec()

    def attribute(depth):
        kinds = ["var", "var", "static", "array"] + (["module", "list", "dict"] if depth < MAX_DEPTH else [])
        kind = draw(st.sampled_from(kinds))
        if kind == "var":
            return var_spec()
        if kind == "array":
            return ("array", tuple(draw(st.lists(st.integers(1, 3), max_size=2))))
        if kind == "static":
            return ("static", draw(STATICS))
        if kind == "module":
            return module_spec(depth + 1)
        if kind == "list":
            return ("list", tuple(element(depth + 1) for _ in range(draw(st.integers(0, 2)))))
        keys = draw(st.lists(NAMES, max_size=2, unique=True))
        return ("dict", tuple((k, element(depth + 1)) for k in keys))

    def module_spec(depth):
        if sharing and counts["module"] and draw(st.integers(0, 3)) == 0:
            return ("ref_module", draw(st.integers(0, counts["module"] - 1)))
        names = draw(st.lists(NAMES, max_size=3, unique=True))
        attrs = tuple((name, attribute(depth)) for name in names)
        counts["module"] += 1  # numbered when finished: a reference never points at an ancestor
        return ("module", attrs)

    return module_spec(0)


def build(spec, seed: int = 0) -> Node:
    rng = np.random.default_rng(seed)
    modules: list = []
    variables: list = []

    def make(s):
        kind = s[0]
        if kind == "var":
            value = jax.device_put(np.asarray(rng.standard_normal(s[2]), np.float32))
            v = VAR_TYPES[s[1]](value)
            variables.append(v)
            return v
        if kind == "array":
            return jax.device_put(np.asarray(rng.standard_normal(s[1]), np.float32))
        if kind == "ref_var":
            return variables[s[1]]
        if kind == "ref_module":
            return modules[s[1]]
        if kind == "static":
            return s[1]
        if kind == "list":
            return [make(x) for x in s[1]]
        if kind == "dict":
            return {k: make(x) for k, x in s[1]}
        m = Node()
        for name, child in s[1]:
            setattr(m, name, make(child))
        modules.append(m)
        return m

    return make(spec)


def static_sites(spec, loc=()) -> list[tuple]:
    kind = spec[0]
    if kind == "static":
        return [loc]
    if kind in ("module", "dict"):
        return [site for i, (_, c) in enumerate(spec[1]) for site in static_sites(c, loc + (i,))]
    if kind == "list":
        return [site for i, c in enumerate(spec[1]) for site in static_sites(c, loc + (i,))]
    return []


def replace_at(spec, loc, fn):
    if not loc:
        return fn(spec)
    items = list(spec[1])
    i = loc[0]
    if spec[0] in ("module", "dict"):
        key, child = items[i]
        items[i] = (key, replace_at(child, loc[1:], fn))
    else:
        items[i] = replace_at(items[i], loc[1:], fn)
    return (spec[0], tuple(items))


# -- independent views of a built graph ----------------------------------------------------------


def is_node(v) -> bool:
    return isinstance(v, (nnx.Object, nnx.Variable))


def _sorted(mapping) -> list:
    """Entries in the reference's order (keys sorted), which is plait's traversal order."""
    return [(k, mapping[k]) for k in sorted(mapping, key=lambda k: (type(k).__name__, k))]


def canonical(root):
    """Types, statics, values and the shape of sharing, as plain comparable data."""
    index: dict[int, int] = {}

    def c(v):
        if is_node(v):
            if id(v) in index:
                return ("ref", index[id(v)])
            index[id(v)] = len(index)
            if isinstance(v, nnx.Variable):
                value = np.asarray(v.value)
                return ("var", type(v).__name__, value.shape, str(value.dtype), value.tolist())
            return ("obj", type(v).__name__, tuple((k, c(x)) for k, x in _sorted(vars(v))))
        if isinstance(v, list):
            return ("list", tuple(c(x) for x in v))
        if isinstance(v, dict):
            return ("dict", tuple((k, c(x)) for k, x in _sorted(v)))
        if isinstance(v, jax.Array):
            value = np.asarray(v)
            return ("array", value.shape, str(value.dtype), value.tolist())
        return ("static", type(v).__name__, v)

    return c(root)


def node_paths(root) -> list[tuple[tuple, object]]:
    """Every path to every graph node (the trees are acyclic, so this terminates)."""
    out = []

    def walk(v, path):
        if is_node(v):
            out.append((path, v))
            if isinstance(v, nnx.Object):
                for k, x in _sorted(vars(v)):
                    walk(x, path + (k,))
        elif isinstance(v, list):
            for i, x in enumerate(v):
                walk(x, path + (i,))
        elif isinstance(v, dict):
            for k, x in _sorted(v):
                walk(x, path + (k,))

    walk(root, ())
    return out


def assert_same_sharing(original, copy, *, disjoint: bool) -> None:
    """Two paths reach one object in ``original`` iff they reach one object in ``copy``."""
    a, b = node_paths(original), node_paths(copy)
    assert [p for p, _ in a] == [p for p, _ in b]
    forward: dict[int, int] = {}
    backward: dict[int, int] = {}
    for (path, x), (_, y) in zip(a, b):
        assert type(x) is type(y), path
        assert forward.setdefault(id(x), id(y)) == id(y), f"{path}: shared in the original, not in the copy"
        assert backward.setdefault(id(y), id(x)) == id(x), f"{path}: shared in the copy, not in the original"
        if disjoint:
            assert x is not y, f"{path}: the copy reuses the original's object"


def raw(leaf):
    return leaf.value if isinstance(leaf, nnx.Variable) else leaf


def leaf_values(state: nnx.State) -> list:
    return [(p, type(v).__name__, np.asarray(raw(v)).tolist()) for p, v in state.flat_state()]


# -- filters for random partitions -------------------------------------------------------------


def _ndim_is(k):
    def predicate(path, value):
        return isinstance(value, nnx.Variable) and np.ndim(value.value) == k

    return predicate


FILTERS = st.one_of(
    st.sampled_from(VAR_TYPES),
    st.sampled_from(VAR_TYPES).map(nnx.Not),
    st.tuples(st.sampled_from(VAR_TYPES), st.sampled_from(VAR_TYPES)),
    NAMES.map(nnx.PathContains),
    st.integers(0, 1).map(nnx.PathContains),
    st.integers(0, 2).map(_ndim_is),
    st.sampled_from(VAR_TYPES).flatmap(lambda t: NAMES.map(lambda n: nnx.All(t, nnx.Not(nnx.PathContains(n))))),
)


# -- properties ---------------------------------------------------------------------------------


@SETTINGS
@given(module_specs())
def test_merge_of_split_is_an_equal_copy_with_the_same_sharing(spec):
    model = build(spec)
    gd, state = nnx.split(model)
    copy = nnx.merge(gd, state)
    assert canonical(copy) == canonical(model)
    assert_same_sharing(model, copy, disjoint=True)
    # Each Variable is stored once in the State.
    distinct_vars = {id(v) for _, v in node_paths(model) if isinstance(v, nnx.Variable)}
    assert sum(isinstance(v, nnx.Variable) for _, v in state.flat_state()) == len(distinct_vars)


@SETTINGS
@given(module_specs())
def test_generated_code_for_repeated_split_state_merge_builds_what_the_plan_builds(spec):
    # After COMPILE_AFTER uses, split/state/merge of one structure run generated straight-line
    # code (plait.build_code); it must build exactly what the interpreted plan builds.
    from plait.encoding import COMPILE_AFTER

    model = build(spec)

    def entries(state):
        return [(p, type(v).__name__, np.asarray(v.value if isinstance(v, nnx.Variable) else v).tolist())
                for p, v in state.flat_state()]

    first_gd, *first = nnx.split(model, nnx.Param, ...)
    first_state = nnx.state(model)
    for _ in range(COMPILE_AFTER + 1):
        gd, *states = nnx.split(model, nnx.Param, ...)
        whole = nnx.state(model)
        copy = nnx.merge(gd, *states)
    assert gd == first_gd
    assert [entries(s) for s in states] == [entries(s) for s in first]
    assert entries(whole) == entries(first_state)
    assert canonical(copy) == canonical(model)
    assert_same_sharing(model, copy, disjoint=True)
    for new, old in zip(states + [whole], first + [first_state]):  # fresh Variable copies every time
        for (_, v), (_, w) in zip(new.flat_state(), old.flat_state()):
            assert not isinstance(v, nnx.Variable) or v is not w


@SETTINGS
@given(module_specs())
def test_clone_is_an_equal_deep_copy_with_the_same_sharing(spec):
    model = build(spec)
    before = canonical(model)
    cloned = nnx.clone(model)
    assert canonical(cloned) == before
    assert_same_sharing(model, cloned, disjoint=True)
    # Writing to the clone leaves the original alone.
    for _, v in node_paths(cloned):
        if isinstance(v, nnx.Variable):
            v.value = v.value + 1.0
    assert canonical(model) == before


@SETTINGS
@given(module_specs(), st.lists(FILTERS, min_size=1, max_size=3), st.randoms(use_true_random=False))
def test_split_with_random_filters_then_merge_is_the_original(spec, filters, shuffle):
    model = build(spec)
    full = nnx.state(model).flat_state()
    gd, *states = nnx.split(model, *filters, ...)
    assert len(states) == len(filters) + 1

    # A partition: every Variable in exactly one State, the first whose filter matches.
    predicates = [to_predicate(f) for f in filters] + [to_predicate(...)]
    seen = []
    for i, state in enumerate(states):
        for path, value in state.flat_state():
            assert predicates[i](path, value), (path, filters[i] if i < len(filters) else ...)
            assert not any(p(path, value) for p in predicates[:i]), path
            seen.append(path)
    assert sorted(map(repr, seen)) == sorted(repr(p) for p, _ in full)

    # Without `...`, split raises exactly when something is left over, and names it.
    rest = states[-1].flat_state()
    if rest:
        with pytest.raises(nnx.FilterError) as info:
            nnx.split(model, *filters)
        assert ".".join(map(str, rest[0][0])) in str(info.value)
    else:
        assert len(nnx.split(model, *filters)) == len(filters) + 1

    shuffle.shuffle(states)
    copy = nnx.merge(gd, *states)
    assert canonical(copy) == canonical(model)
    assert_same_sharing(model, copy, disjoint=True)


@SETTINGS
@given(module_specs())
def test_update_then_state_reads_back_the_new_values_in_place(spec):
    model = build(spec)
    variables_before = [(p, v) for p, v in node_paths(model)]
    modified = jax.tree.map(lambda x: x * 2.0 + 1.0, nnx.state(model))
    nnx.update(model, modified)

    after = nnx.state(model)
    assert after == modified
    assert leaf_values(after) == leaf_values(modified)
    # In place: every path still reaches the very same object.
    for (path, before), (path_after, now) in zip(variables_before, node_paths(model)):
        assert path == path_after and before is now, path
    # Shared Variables show the new value through every path.
    first_path: dict[int, tuple] = {}
    for path, v in node_paths(model):
        if isinstance(v, nnx.Variable):
            first = first_path.setdefault(id(v), path)
            np.testing.assert_array_equal(v.value, _get(modified, first).value)


@SETTINGS
@given(module_specs(), st.randoms(use_true_random=False))
def test_partial_update_changes_only_the_given_paths(spec, rnd):
    model = build(spec)
    full = nnx.state(model).flat_state()
    chosen = [e for e in full if rnd.random() < 0.5]
    shifted = [(p, v.replace(v.value - 5.0) if isinstance(v, nnx.Variable) else v - 5.0) for p, v in chosen]
    nnx.update(model, nnx.State.from_flat_state(shifted))
    chosen_paths = {p for p, _ in chosen}
    after = nnx.state(model).flat_state()
    assert [p for p, _ in after] == [p for p, _ in full]
    for (path, old), (_, new) in zip(full, after):
        expected = np.asarray(raw(old)) - 5.0 if path in chosen_paths else np.asarray(raw(old))
        np.testing.assert_array_equal(np.asarray(raw(new)), expected)


@SETTINGS
@given(module_specs())
def test_graphdef_is_equal_for_identical_structure(spec):
    a, b = build(spec, seed=1), build(spec, seed=2)
    gd_a, state_a = nnx.split(a)
    gd_b, state_b = nnx.split(b)
    assert gd_a == gd_b
    assert hash(gd_a) == hash(gd_b)
    # Equal GraphDefs exchange state.
    assert canonical(nnx.merge(gd_a, state_b)) == canonical(b)


@SETTINGS
@given(module_specs(), st.data())
def test_graphdef_differs_when_a_static_attribute_differs(spec, data):
    spec = ("module", spec[1] + (("static_attr", ("static", 0)),))  # at least one static
    site = data.draw(st.sampled_from(static_sites(spec)))

    def change(static):
        value = static[1]
        return ("static", value + 1 if isinstance(value, int) else value + "!")

    other = replace_at(spec, site, change)
    a, b = build(spec), build(other)
    assert nnx.graphdef(a) != nnx.graphdef(b)
    assert nnx.graphdef(a) == nnx.graphdef(build(spec, seed=3))


@SETTINGS
@given(module_specs(sharing=False), st.data())
def test_graphdef_differs_when_sharing_differs(spec, data):
    spec = ("module", spec[1] + (("anchor", ("var", 0, (1,))),))  # at least one Variable
    tied, untied = build(spec), build(spec)
    assert nnx.graphdef(tied) == nnx.graphdef(untied)
    pairs = [(p, v) for p, v in node_paths(tied) if isinstance(v, nnx.Variable)]
    path, target = data.draw(st.sampled_from(pairs))
    # Same new attribute, same type and value: shared in one model, a separate Variable in the other.
    tied.extra = target
    untied.extra = type(target)(target.value)
    assert nnx.graphdef(tied) != nnx.graphdef(untied)
    copy = nnx.merge(*nnx.split(tied))
    assert _get_attr(copy, path) is copy.extra
    assert_same_sharing(tied, copy, disjoint=True)


def _get_attr(node, path):
    for part in path:
        node = getattr(node, part) if isinstance(node, nnx.Object) else node[part]
    return node


def _get(state, path):
    for part in path:
        state = state[part]
    return state


def test_specs_do_exercise_sharing_and_every_variable_type():
    """Guard against a strategy that silently stopped producing the interesting cases."""
    found = {"shared_module": False, "shared_var": False, "types": set(), "list": False, "dict": False}

    @settings(max_examples=150, derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(module_specs())
    def collect(spec):
        model = build(spec)
        seen: dict[int, int] = {}
        for _, v in node_paths(model):
            seen[id(v)] = seen.get(id(v), 0) + 1
            if isinstance(v, nnx.Variable):
                found["types"].add(type(v))
                found["shared_var"] |= seen[id(v)] > 1
            elif v is not model:
                found["shared_module"] |= seen[id(v)] > 1
            if isinstance(v, nnx.Object):
                found["list"] |= any(isinstance(x, nnx.List) and x for x in vars(v).values())
                found["dict"] |= any(isinstance(x, nnx.Dict) and x for x in vars(v).values())

    collect()
    assert found["shared_module"] and found["shared_var"] and found["list"] and found["dict"]
    assert found["types"] == set(VAR_TYPES)


def test_builder_is_deterministic():
    spec = (
        "module",
        (
            ("f_a", ("var", 0, (2,))),
            ("f_b", ("list", (("module", (("f_x", ("static", 1)),)), ("ref_var", 0)))),
            ("f_c", ("ref_module", 0)),
        ),
    )
    m = build(spec, seed=5)
    assert m.f_b[1] is m.f_a
    assert m.f_c is m.f_b[0]
    assert canonical(build(spec, seed=5)) == canonical(m)
    assert canonical(build(spec, seed=6)) != canonical(m)
