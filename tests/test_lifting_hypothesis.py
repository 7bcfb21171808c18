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
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

import plait as nnx

SETTINGS = settings(
    max_examples=15,
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
        kinds = ["array", "array", "float", "none", "linear", "counter", "param", "batchstat", "state"]
        kinds += ["int"] if ints else []
        kinds += ["rngs"] if rngs else []
        if built:
            kinds += ["ref", "ref"]
        if "counter" in built:
            kinds += ["count_of"]
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
        elif isinstance(x, dict):
            for k, v in x.items():
                walk(v, path + (k,))
        elif isinstance(x, (list, tuple)):
            for i, v in enumerate(x):
                walk(v, path + (i,))
        elif isinstance(x, (jax.Array, np.ndarray, float, int)):
            out.append((path, None, "leaf", _value(x)))

    walk(args, ())
    return out


def identities(args) -> list[tuple]:
    return [(p, i) for p, i, t, _ in snapshot(args) if i is not None]


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
