"""Property-based tests of the lifting protocol: every transform over random argument structures.

A call's arguments are first drawn as a *recipe* (plain nested tuples) and then built, so every
example gets its own fresh objects and the same arguments can be built twice: once for the
transform and once for the untransformed reference call. Arguments nest tuples, lists, dicts,
namedtuples and ``None`` (depth <= 3) around small float32 arrays, Python floats and ints,
``Linear`` modules, a ``Counter`` module whose ``BatchStat`` each call bumps, bare Variables,
``State``s and ``Rngs``, with references back to objects built earlier (one object reached
through two arguments or two paths).

The function under test, :func:`f`, reads everything and writes state: each distinct counter
Variable is bumped once per call and each distinct ``Rngs`` draws once. Its value is linear in
every array and Param (coefficient 1 per occurrence, 2 for ``Counter.scale``), so the expected
gradient of every leaf is known without asking plait.

The checks walk the arguments with their own code (:func:`snapshot`), not plait's traversal.
"""

from __future__ import annotations

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import plait as nnx

SETTINGS = settings(
    max_examples=20,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
MAX_DEPTH = 3
BATCH = 2  # vmap lanes, scan steps and loop trips

NT1 = collections.namedtuple("NT1", ["a"])
NT2 = collections.namedtuple("NT2", ["a", "b"])
NT3 = collections.namedtuple("NT3", ["a", "b", "c"])
NAMEDTUPLES = {1: NT1, 2: NT2, 3: NT3}


class Counter(nnx.Module):
    """A Param read by every call and a BatchStat counter every call bumps."""

    def __init__(self, seed: int):
        self.scale = nnx.Param(jnp.asarray(0.5 + seed, jnp.float32))
        self.count = nnx.BatchStat(jnp.zeros((), jnp.float32))


GRAPH_TYPES = (nnx.Module, nnx.Variable, nnx.Rngs, nnx.State)


def is_graph_leaf(x) -> bool:
    return isinstance(x, GRAPH_TYPES)


# -- recipes --------------------------------------------------------------------------------------
# ("array", size, seed)  ("float", v)  ("int", v)  ("none",)
# ("linear", seed)  ("counter", seed)  ("param", size, seed)  ("batchstat", seed)
# ("state", seed): nnx.state of a fresh Linear       ("rngs", seed)
# ("ref", k): the k-th object built so far (a module, Variable, State or Rngs)
# ("count_of", k): the counter Variable of the k-th built Counter (shared with that module)
# ("tuple" | "list" | "nt", children)   ("dict", ((key, child), ...))

OBJECT_KINDS = ("linear", "counter", "param", "batchstat", "state", "rngs")


@st.composite
def recipes(draw, *, rngs: bool = True, ints: bool = True, min_args: int = 1):
    """A tuple of argument recipes."""
    built: list[str] = []  # kinds of the objects built so far, in build order

    def seed():
        return draw(st.integers(0, 5))

    def leaf():
        if built and draw(st.integers(0, 2)) == 0:  # share an object built earlier
            kind = draw(st.sampled_from(["ref", "count_of"] if "counter" in built else ["ref"]))
        else:
            kinds = ["array", "array", "float", "none", "linear", "counter", "counter", "param", "batchstat", "state"]
            kinds += ["int"] if ints else []
            kinds += ["rngs"] if rngs else []
            kind = draw(st.sampled_from(kinds))
        if kind == "array":
            return ("array", draw(st.sampled_from((2, 3))), seed())
        if kind == "float":
            return ("float", draw(st.sampled_from((0.5, -1.25, 2.0))))
        if kind == "int":
            return ("int", draw(st.integers(-2, 3)))
        if kind == "none":
            return ("none",)
        if kind == "ref":
            return ("ref", draw(st.integers(0, len(built) - 1)))
        if kind == "count_of":
            counters = [i for i, k in enumerate(built) if k == "counter"]
            return ("count_of", draw(st.sampled_from(counters)))
        built.append(kind)
        if kind == "param":
            return ("param", draw(st.sampled_from((2, 3))), seed())
        return (kind, seed())

    def node(depth):
        if depth >= MAX_DEPTH or draw(st.integers(0, 2)) > 0:
            return leaf()
        kind = draw(st.sampled_from(("tuple", "list", "nt", "dict")))
        if kind == "nt":
            return ("nt", tuple(node(depth + 1) for _ in range(draw(st.integers(1, 3)))))
        n = draw(st.integers(0, 2))
        if kind == "dict":
            keys = draw(st.lists(st.sampled_from("xyz"), min_size=n, max_size=n, unique=True))
            return ("dict", tuple((k, node(depth + 1)) for k in keys))
        return (kind, tuple(node(depth + 1) for _ in range(n)))

    n_args = draw(st.integers(min_args, 3))
    return tuple(node(1) for _ in range(n_args))


def build(recipe: tuple) -> tuple:
    """Fresh arguments from a recipe; the same recipe always builds equal arguments."""
    objects: list = []

    def make(r):
        kind = r[0]
        if kind == "array":
            return jnp.arange(r[1], dtype=jnp.float32) * 0.25 + r[2]
        if kind == "float":
            return r[1]
        if kind == "int":
            return r[1]
        if kind == "none":
            return None
        if kind == "ref":
            return objects[r[1]]
        if kind == "count_of":
            return objects[r[1]].count
        if kind in ("tuple", "list"):
            children = [make(c) for c in r[1]]
            return tuple(children) if kind == "tuple" else children
        if kind == "nt":
            return NAMEDTUPLES[len(r[1])](*[make(c) for c in r[1]])
        if kind == "dict":
            return {k: make(c) for k, c in r[1]}
        if kind == "linear":
            obj = nnx.Linear(2, 2, rngs=nnx.Rngs(r[1]))
        elif kind == "counter":
            obj = Counter(r[1])
        elif kind == "param":
            obj = nnx.Param(jnp.arange(r[1], dtype=jnp.float32) - r[2])
        elif kind == "batchstat":
            obj = nnx.BatchStat(jnp.full((), float(r[1]), jnp.float32))
        elif kind == "state":
            obj = nnx.state(nnx.Linear(2, 2, rngs=nnx.Rngs(r[1] + 10)))
        else:
            obj = nnx.Rngs(r[1] + 20)
        objects.append(obj)
        return obj

    return tuple(make(r) for r in recipe)


# -- the function under test ----------------------------------------------------------------------

TRACES: list[int] = []  # one entry per Python execution of f (traces and eager calls)


def f(*args):
    """Reads every array, Param and module; bumps each distinct counter once; draws each Rngs once."""
    TRACES.append(1)
    total = jnp.zeros((), jnp.float32)
    counters: dict[int, nnx.Variable] = {}
    draws: dict[int, jax.Array] = {}
    for x in jax.tree_util.tree_leaves(args, is_leaf=is_graph_leaf):
        if isinstance(x, Counter):
            total = total + 2.0 * x.scale.value + x.count.value
            counters[id(x.count)] = x.count
        elif isinstance(x, nnx.Linear):
            total = total + x(jnp.ones(2, jnp.float32)).sum()
        elif isinstance(x, nnx.Rngs):
            if id(x) not in draws:
                draws[id(x)] = jax.random.uniform(x(), ())
            total = total + draws[id(x)]
        elif isinstance(x, nnx.State):
            for leaf in jax.tree_util.tree_leaves(x):
                total = total + jnp.sum(leaf)
        elif isinstance(x, nnx.Variable):
            total = total + jnp.sum(x.value)
            if isinstance(x, nnx.BatchStat):
                counters[id(x)] = x
        else:  # arrays and Python scalars
            total = total + jnp.sum(x)
    for v in counters.values():
        v.value = v.value + 1.0
    return total


# -- an independent view of the arguments --------------------------------------------------------


def _value(v):
    v = v.value if isinstance(v, nnx.Variable) else v
    if isinstance(v, jax.Array) and jnp.issubdtype(v.dtype, jax.dtypes.prng_key):
        v = jax.random.key_data(v)
    return np.asarray(v).tolist()


def snapshot(args) -> list[tuple]:
    """(path, id, type, value) of every graph object and Variable reachable from ``args``."""
    out: list[tuple] = []
    seen: set[int] = set()

    def walk(x, path):
        if isinstance(x, nnx.Variable):
            out.append((path, id(x), type(x).__name__, _value(x)))
        elif isinstance(x, nnx.State):
            out.append((path, id(x), "State", None))
            for p, v in x.flat_state():
                walk(v, path + tuple(p))
        elif isinstance(x, nnx.Object):
            out.append((path, id(x), type(x).__name__, None))
            if id(x) in seen:
                return
            seen.add(id(x))
            for k, v in vars(x).items():
                walk(v, path + (k,))
        elif isinstance(x, dict):  # in key order: JAX returns dicts with sorted keys, as jax.jit does
            for k in sorted(x):
                walk(x[k], path + (k,))
        elif isinstance(x, (list, tuple)):
            for i, v in enumerate(x):
                walk(v, path + (i,))
        elif isinstance(x, (jax.Array, np.ndarray, float, int)):
            out.append((path, None, "leaf", _value(x)))

    walk(args, ())
    return out


def identities(args, states: bool = True) -> list[tuple]:
    """(path, id) of every object; ``states=False`` leaves out State containers (a State is a
    pytree, so a returned one is a new container of the caller's Variables)."""
    return [(p, i) for p, i, t, _ in snapshot(args) if i is not None and (states or t != "State")]


def values(args) -> list[tuple]:
    return [(p, t, v) for p, _, t, v in snapshot(args)]


def assert_values_close(got, want) -> None:
    assert [e[:2] for e in got] == [e[:2] for e in want]
    for (path, _, a), (_, _, b) in zip(got, want):
        np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=1e-5, atol=1e-5,
                                   err_msg=str(path))


def counter_variables(args) -> list:
    found = {}
    for x in jax.tree_util.tree_leaves(args, is_leaf=is_graph_leaf):
        if isinstance(x, Counter):
            found[id(x.count)] = x.count
        elif isinstance(x, nnx.BatchStat):
            found[id(x)] = x
    return list(found.values())


def fresh_reference(recipe: tuple, calls: int = 1) -> tuple[list, tuple]:
    """The untransformed function, called ``calls`` times on a fresh build: (outputs, arguments)."""
    ref = build(recipe)
    return [f(*ref) for _ in range(calls)], ref


def assert_close(a, b) -> None:
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


def assert_written_back(args, before_ids, ref) -> None:
    """Every object is still where it was, holding what the untransformed calls left in ``ref``."""
    assert identities(args) == before_ids
    assert_values_close(values(args), values(ref))


# -- jit ------------------------------------------------------------------------------------------


@SETTINGS
@given(recipes())
def test_jit_matches_the_plain_call_writes_back_and_does_not_retrace(recipe):
    args = build(recipe)
    before = identities(args)
    jf = nnx.jit(f)

    n = len(TRACES)
    out = jf(*args)
    assert len(TRACES) - n == 1
    (want,), ref = fresh_reference(recipe)
    assert_close(out, want)
    assert_written_back(args, before, ref)

    n = len(TRACES)
    out = jf(*args)
    assert len(TRACES) == n, "the second call with the same structure retraced"
    assert_close(out, f(*ref))  # the counters and RNG counts moved on, in both
    assert_written_back(args, before, ref)

    # Other objects of the same structure hit the same cache entry.
    other = build(recipe)
    n = len(TRACES)
    out = jf(*other)
    assert len(TRACES) == n, "a fresh build of the same structure retraced"
    assert_close(out, fresh_reference(recipe)[0][0])


# -- grad and value_and_grad ----------------------------------------------------------------------


def coefficients(args) -> dict[int, float]:
    """d f / d leaf, per Variable id: f is linear with coefficient 1 per occurrence (2 for scale)."""
    coef: dict[int, float] = collections.defaultdict(float)
    for x in jax.tree_util.tree_leaves(args, is_leaf=is_graph_leaf):
        if isinstance(x, Counter):
            coef[id(x.scale)] += 2.0
        elif isinstance(x, nnx.Linear):
            coef[id(x.kernel)] += 1.0
            coef[id(x.bias)] += 1.0
        elif isinstance(x, nnx.State):
            for _, v in x.flat_state():
                coef[id(v)] += 1.0
        elif isinstance(x, nnx.Param):
            coef[id(x)] += 1.0
    return coef


def params_of(obj, path=()) -> dict[tuple, nnx.Variable]:
    found = {}
    for k, v in vars(obj).items():
        if isinstance(v, nnx.Param):
            found[path + (k,)] = v
        elif isinstance(v, nnx.Object):
            found.update(params_of(v, path + (k,)))
    return found


def assert_gradient(g, x, coef, where: str, top: bool = False, scale: float = 1.0) -> None:
    """``g`` is ``scale`` times the gradient of f with respect to the argument ``x`` (by default its
    Params and plain arrays)."""
    if isinstance(x, (nnx.Module, nnx.Rngs, nnx.State)):
        assert isinstance(g, nnx.State), (where, g)
        expected = dict(x.flat_state()) if isinstance(x, nnx.State) else params_of(x)
        expected = {tuple(p): v for p, v in expected.items()}
        got = {tuple(p): v for p, v in g.flat_state()}
        assert got.keys() == expected.keys(), where
        for p, v in expected.items():
            assert_close(got[p].value, scale * coef[id(v)] * np.ones(np.shape(v.value)))
    elif isinstance(x, nnx.Param):
        assert isinstance(g, nnx.Variable), (where, g)
        assert_close(g.value, scale * coef[id(x)] * np.ones(np.shape(x.value)))
    elif isinstance(x, nnx.Variable) and top:
        # A bare non-Param Variable as the whole argument: nothing to differentiate, an empty State.
        assert isinstance(g, nnx.State) and not g.flat_state(), (where, g)
    elif isinstance(x, nnx.Variable) or x is None:
        assert g is None, (where, g)
    elif isinstance(x, (jax.Array, float)):
        assert_close(g, scale * np.ones(np.shape(x)))
    elif isinstance(x, dict):
        assert type(g) is type(x) and g.keys() == x.keys(), where
        for k in x:
            assert_gradient(g[k], x[k], coef, f"{where}[{k!r}]", scale=scale)
    else:
        assert type(g) is type(x) and len(g) == len(x), (where, g)
        for i, (gi, xi) in enumerate(zip(g, x)):
            assert_gradient(gi, xi, coef, f"{where}[{i}]", scale=scale)


def graph_ids(x) -> set[int]:
    return {i for _, i in identities(x)}


def grad_argnum(args, drawn: int) -> int:
    """``drawn``, unless its objects are also reached through an earlier argument (refused: see
    test_grad_of_a_module_also_passed_as_an_earlier_argument); then 0."""
    i = drawn % len(args)
    return i if not graph_ids(args[:i]) & graph_ids(args[i]) else 0


@SETTINGS
@given(recipes(ints=False), st.integers(0, 2), st.booleans())  # ints: refused, see the test below
def test_grad_and_value_and_grad_are_exact_and_write_back(recipe, drawn, with_value):
    args = build(recipe)
    before = identities(args)
    argnum = grad_argnum(args, drawn)
    coef = coefficients(args)
    if with_value:
        value, g = nnx.value_and_grad(f, argnums=argnum)(*args)
    else:
        g = nnx.grad(f, argnums=argnum)(*args)
    (want,), ref = fresh_reference(recipe)
    if with_value:
        assert_close(value, want)
    assert_gradient(g, args[argnum], coef, f"args[{argnum}]", top=True)
    assert_written_back(args, before, ref)


# -- vmap -----------------------------------------------------------------------------------------


def lane(args, i: int):
    """Lane ``i`` of :func:`batched` arguments: the array values, the same objects."""
    return jax.tree_util.tree_map(lambda v: v * (i + 1) + i if isinstance(v, jax.Array) else v, args,
                                  is_leaf=is_graph_leaf)


def batched(args):
    """Every raw array stacked as ``BATCH`` lanes (lane ``i`` is ``lane(args, i)``)."""
    return jax.tree_util.tree_map(
        lambda v: jnp.stack([v * (i + 1) + i for i in range(BATCH)]) if isinstance(v, jax.Array) else v, args,
        is_leaf=is_graph_leaf)


SAME_KEYS = nnx.StateAxes({nnx.RngState: nnx.SameKeys, ...: None})


def vmap_axes(x, rngs=None):
    """0 for raw arrays, ``rngs`` for Rngs, ``None`` for everything else, as a prefix spec of the
    same structure."""
    if isinstance(x, jax.Array):
        return 0
    if isinstance(x, nnx.Rngs):
        return rngs
    if is_graph_leaf(x) or x is None or isinstance(x, (int, float)):
        return None
    if isinstance(x, dict):
        return {k: vmap_axes(v, rngs) for k, v in x.items()}
    if isinstance(x, tuple) and hasattr(x, "_fields"):
        return type(x)(*[vmap_axes(v, rngs) for v in x])
    if isinstance(x, list):
        return [vmap_axes(v, rngs) for v in x]
    return tuple(vmap_axes(v, rngs) for v in x)


@SETTINGS
@given(recipes())
def test_vmap_matches_the_per_lane_loop_and_writes_broadcast_state_back(recipe):
    """Rngs are broadcast with ``nnx.SameKeys``: every lane draws the key the plain call draws."""
    args = batched(build(recipe))
    before = identities(args)
    vf = nnx.vmap(f, in_axes=vmap_axes(args, rngs=SAME_KEYS), axis_size=BATCH)
    out = vf(*args)
    assert np.shape(out) == (BATCH,)
    for i in range(BATCH):
        ref = build(recipe)
        assert_close(out[i], f(*lane(ref, i)))
    # The broadcast counters were bumped once (the same value in every lane).
    assert_written_back(args, before, batched(ref))
    # Eager vmap compiles once per structure: a second call does not run f again, and writes back.
    n = len(TRACES)
    out = vf(*args)
    assert len(TRACES) == n
    assert_close(out[BATCH - 1], f(*lane(ref, BATCH - 1)))
    assert_written_back(args, before, batched(ref))


@SETTINGS
@given(recipes(rngs=False), st.integers(0, 5))
def test_vmap_refuses_a_broadcast_rng_draw_and_writes_nothing(recipe, seed):
    args = batched(build(recipe + (("rngs", seed),)))
    before, untouched = identities(args), values(args)
    with pytest.raises(nnx.RngError, match="broadcast"):
        nnx.vmap(f, in_axes=vmap_axes(args), axis_size=BATCH)(*args)
    assert identities(args) == before
    assert_values_close(values(args), untouched)


# -- scan -----------------------------------------------------------------------------------------


@SETTINGS
@given(recipes())
def test_scan_with_the_arguments_as_carry_matches_the_loop(recipe):
    args = build(recipe)
    before = identities(args)
    xs = jnp.arange(BATCH * 3, dtype=jnp.float32).reshape(BATCH, 3)

    def body(carry, x):
        return carry, f(*carry) + x.sum()

    scanned = nnx.scan(body)
    carry, ys = scanned(args, xs)
    outs, ref = fresh_reference(recipe, calls=BATCH)
    assert_close(ys, np.asarray(outs) + np.asarray(xs.sum(axis=1)))
    assert_written_back(args, before, ref)
    # The carry that comes back is the caller's objects, after the last step.
    assert identities(carry, states=False) == identities(args, states=False)
    assert_values_close(values(carry), values(ref))
    # Eager scan compiles once per structure: a second call does not run f again.
    n = len(TRACES)
    _, ys = scanned(args, xs)
    assert len(TRACES) == n
    assert_close(ys, np.asarray([f(*ref) for _ in range(BATCH)]) + np.asarray(xs.sum(axis=1)))
    assert_written_back(args, before, ref)


# -- remat, cond, switch --------------------------------------------------------------------------


def negated(*args):
    return -f(*args)


def doubled(*args):
    return 2.0 * f(*args)


@SETTINGS
@given(recipes(), st.sampled_from(["remat", "cond", "switch"]), st.integers(0, 3))
def test_remat_cond_switch_run_the_taken_branch_once_and_write_back(recipe, transform, index):
    args = build(recipe)
    before = identities(args)
    branches = [f, negated, doubled]
    if transform == "remat":
        out, chosen = nnx.remat(f)(*args), f
    elif transform == "cond":
        out = nnx.cond(index % 2 == 0, f, negated, *args)
        chosen = f if index % 2 == 0 else negated
    else:
        out, chosen = nnx.switch(index, branches, *args), branches[min(index, 2)]  # clamped, as lax.switch
    ref = build(recipe)
    assert_close(out, chosen(*ref))
    assert_written_back(args, before, ref)


# -- while_loop and fori_loop ---------------------------------------------------------------------


def step(args):
    f(*args)
    return args


@SETTINGS
@given(recipes(), st.booleans())
def test_loops_over_the_arguments_write_back_every_iteration(recipe, use_while):
    args = build(recipe)
    before = identities(args)
    if use_while:
        out, trips = nnx.while_loop(lambda c: c[1] < BATCH, lambda c: (step(c[0]), c[1] + 1), (args, 0))
        assert int(trips) == BATCH
    else:
        out = nnx.fori_loop(0, BATCH, lambda i, a: step(a), args)
    _, ref = fresh_reference(recipe, calls=BATCH)
    assert_written_back(args, before, ref)
    assert identities(out, states=False) == identities(args, states=False)
    assert_values_close(values(out), values(ref))


# -- eval_shape and custom_vjp --------------------------------------------------------------------


@SETTINGS
@given(recipes())
def test_eval_shape_is_abstract_and_writes_nothing(recipe):
    args = build(recipe)
    before, untouched = identities(args), values(args)
    out = nnx.eval_shape(f, *args)
    assert isinstance(out, jax.ShapeDtypeStruct) and out.shape == () and out.dtype == jnp.float32
    assert identities(args) == before
    assert_values_close(values(args), untouched)


@SETTINGS
@given(recipes())
def test_custom_vjp_forward_matches_and_writes_back(recipe):
    cf = nnx.custom_vjp(f)
    cf.defvjp(lambda *a: (f(*a), None), lambda res, g: None)  # never differentiated here
    args = build(recipe)
    before = identities(args)
    out = cf(*args)
    (want,), ref = fresh_reference(recipe)
    assert_close(out, want)
    assert_written_back(args, before, ref)


# -- outputs that are inputs ----------------------------------------------------------------------


@SETTINGS
@given(recipes(rngs=False), st.sampled_from(["jit", "vmap", "remat", "cond"]))
def test_arguments_returned_are_the_callers_objects(recipe, transform):
    args = build(recipe)
    if transform == "vmap":
        args = batched(args)

    def g(*a):
        return f(*a), a

    if transform == "jit":
        value, out = nnx.jit(g)(*args)
    elif transform == "vmap":
        axes = vmap_axes(args)
        value, out = nnx.vmap(g, in_axes=axes, out_axes=(0, axes), axis_size=BATCH)(*args)
    elif transform == "remat":
        value, out = nnx.remat(g)(*args)
    else:
        value, out = nnx.cond(True, g, g, *args)
    assert identities(out, states=False) == identities(args, states=False)
    assert_values_close(values(out), values(args))
    assert np.shape(value) == ((BATCH,) if transform == "vmap" else ())



# -- closing over instead of passing --------------------------------------------------------------

CLOSING_TRANSFORMS = {
    "jit": lambda g: nnx.jit(g)(),
    "remat": lambda g: nnx.remat(g)(),
    "vmap": lambda g: nnx.vmap(lambda x: g() + x, in_axes=0)(jnp.zeros(BATCH))[0],
    "scan": lambda g: nnx.scan(lambda c, x: (c, g() + x))(0.0, jnp.zeros(BATCH))[1][-1],
    "cond": lambda g: nnx.cond(True, g, g),
    "raw jax.jit": lambda g: jax.jit(g)(),
}


@SETTINGS
@given(recipes(), st.sampled_from(sorted(CLOSING_TRANSFORMS)))
def test_closed_over_arguments_may_be_read_but_a_write_is_refused_and_undone(recipe, transform):
    args = build(recipe)
    before, untouched = identities(args), values(args)
    writes = bool(counter_variables(args)) or any(
        isinstance(x, nnx.Rngs) for x in jax.tree_util.tree_leaves(args, is_leaf=is_graph_leaf))
    run = CLOSING_TRANSFORMS[transform]
    if writes:
        with pytest.raises(nnx.StateError, match="closed over"):
            run(lambda: f(*args))
    else:
        assert_close(run(lambda: f(*args)), f(*build(recipe)))
    # Refused or read-only: the caller's objects hold their old, concrete values.
    assert identities(args) == before
    assert_values_close(values(args), untouched)
    for v in counter_variables(args):
        assert not isinstance(v.value, jax.core.Tracer)


# -- the strategy does produce the interesting cases ----------------------------------------------


def test_recipes_exercise_sharing_nesting_and_every_kind():
    found: dict[str, bool] = collections.defaultdict(bool)

    @settings(max_examples=150, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(recipes())
    def collect(recipe):
        def visit(r, depth):
            found[r[0]] = True
            found[f"depth{depth}"] = True
            if r[0] in ("tuple", "list", "nt"):
                for c in r[1]:
                    visit(c, depth + 1)
            elif r[0] == "dict":
                for _, c in r[1]:
                    visit(c, depth + 1)

        for r in recipe:
            visit(r, 1)
        args = build(recipe)
        per_arg = [graph_ids(a) for a in args]
        found["shared_across_arguments"] |= any(per_arg[i] & per_arg[j] for i in range(len(args))
                                                for j in range(i))
        found["several_arguments"] |= len(args) > 1

    collect()
    wanted = ["array", "float", "int", "none", "ref", "count_of", "tuple", "list", "nt", "dict", "depth3",
              "shared_across_arguments", "several_arguments", *OBJECT_KINDS]
    assert [k for k in wanted if not found[k]] == []


# -- bugs found by the properties above (minimal cases) -------------------------------------------


def test_grad_of_a_module_also_passed_as_an_earlier_argument():
    """Found by the properties: the module's gradient used to belong silently to whichever argument
    came first. Now argnums that disagree about a shared Variable are refused, naming both paths."""
    m = nnx.Linear(2, 2, rngs=nnx.Rngs(0))

    def loss(a, b):
        return a(jnp.ones(2)).sum() + b(jnp.ones(2)).sum()

    with pytest.raises(nnx.TransformError, match=r"`b\.bias`.*`a\.bias`"):
        nnx.grad(loss, argnums=1)(m, m)
    both = nnx.grad(loss, argnums=(0, 1))(m, m)  # the same spec through both arguments is fine
    np.testing.assert_allclose(both[0].kernel.value, 2 * np.ones((2, 2)))


def test_grad_with_a_python_int_in_the_argument():
    with pytest.raises(nnx.TransformError, match="allow_int"):
        nnx.grad(lambda t: t[0] * t[1])((1.5, 2))


def test_grad_with_respect_to_a_bare_param():
    p = nnx.Param(jnp.arange(2.0))
    assert isinstance(nnx.grad(lambda t: t[0].value.sum())((p,))[0], nnx.Param)  # in a tuple: fine
    g = nnx.grad(lambda p: p.value.sum())(p)
    assert isinstance(g, nnx.Param)
    np.testing.assert_allclose(g.value, [1.0, 1.0])


# -- custom_vjp under grad ------------------------------------------------------------------------


@st.composite
def flat_recipes(draw):
    """Top-level modules and arrays only (cotangents of those are States and arrays)."""
    out, n_objects = [], 0
    for _ in range(draw(st.integers(1, 3))):
        if n_objects and draw(st.integers(0, 2)) == 0:
            out.append(("ref", draw(st.integers(0, n_objects - 1))))
            continue
        kind = draw(st.sampled_from(["linear", "counter", "array"]))
        if kind == "array":
            out.append(("array", draw(st.sampled_from((2, 3))), draw(st.integers(0, 5))))
        else:
            out.append((kind, draw(st.integers(0, 5))))
            n_objects += 1
    return tuple(out)


@SETTINGS
@given(flat_recipes(), st.integers(0, 2))
def test_custom_vjp_gradient_is_bwds_and_state_is_written_back(recipe, drawn):
    args = build(recipe)
    before = identities(args)
    coef = coefficients(args)
    # bwd returns 3 times the exact gradient of f: the result tells bwd's answer from autodiff's
    templates = [{p: (coef[id(v)], np.shape(v.value)) for p, v in params_of(a).items()}
                 if isinstance(a, nnx.Module) else None for a in args]

    def bwd(res, g):
        input_updates_g, out_g = g
        assert len(input_updates_g) == len(args)
        cts = []
        for a, t in zip(res, templates):
            if t is None:
                cts.append(3.0 * out_g * jnp.ones_like(a))
            else:
                cts.append(nnx.State.from_flat_state([(p, 3.0 * c * out_g * jnp.ones(s)) for p, (c, s) in t.items()]))
        return tuple(cts)

    cf = nnx.custom_vjp(f)
    cf.defvjp(lambda *a: (f(*a), a), bwd)
    argnum = grad_argnum(args, drawn)
    value, g = nnx.value_and_grad(cf, argnums=argnum)(*args)
    (want,), ref = fresh_reference(recipe)
    assert_close(value, want)
    assert_gradient(g, args[argnum], coef, f"args[{argnum}]", top=True, scale=3.0)
    assert_written_back(args, before, ref)


# -- pmap on 4 host devices (a subprocess) --------------------------------------------------------

PMAP_SCRIPT = """
import json, sys
sys.path.insert(0, {tests!r})
import numpy as np
from hypothesis import HealthCheck, given, settings
import plait as nnx
import test_lifting_hypothesis as t

@settings(max_examples=8, derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(t.recipes(rngs=False))
def check(recipe):
    recipe = recipe + (("array", 2, 0),)  # pmap needs one mapped argument (see the xfail test)
    args = t.batched(t.build(recipe))
    before = t.identities(args)
    out = nnx.pmap(t.f, in_axes=t.vmap_axes(args), axis_size=t.BATCH)(*args)
    for i in range(t.BATCH):
        ref = t.build(recipe)
        t.assert_close(out[i], t.f(*t.lane(ref, i)))
    t.assert_written_back(args, before, t.batched(ref))

check()
print("RESULT=" + json.dumps({{"devices": __import__("jax").device_count()}}))
"""


def test_pmap_matches_the_per_lane_loop_on_four_devices():
    import os

    from helpers import finish_multi_device, start_multi_device

    script = PMAP_SCRIPT.format(tests=os.path.dirname(os.path.abspath(__file__)))
    assert finish_multi_device(start_multi_device(script)) == {"devices": 4}


def test_pmap_without_a_mapped_argument_is_a_plait_error():
    from plait.errors import PlaitError

    m = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    with pytest.raises(PlaitError):
        nnx.pmap(lambda m: m.kernel.value.sum(), in_axes=None, axis_size=1)(m)
