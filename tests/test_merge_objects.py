"""Objects that ``merge`` builds behave as constructed ones: outside every transform it leaves
their bookkeeping (the trace they belong to, whether a cached flattening saw them) for the
first write to fill in, so these tests run each check on objects from the first builds (the
plan) and from the generated builder (after several merges of one GraphDef)."""

from __future__ import annotations

import copy
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import plait as nnx
from plait.encoding import COMPILE_AFTER


class Block(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.linear = nnx.Linear(2, 2, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)
        self.rngs = rngs


class Pair(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.a = Block(rngs)
        self.b = nnx.Linear(2, 2, rngs=rngs)


@pytest.fixture(params=[0, COMPILE_AFTER + 1], ids=["planned", "generated"])
def merged(request: pytest.FixtureRequest) -> Pair:
    gd, state = nnx.split(Pair(nnx.Rngs(0)))
    for _ in range(request.param):
        nnx.merge(gd, state)
    assert (gd._builder is not None) == (request.param > COMPILE_AFTER)
    return nnx.merge(gd, state)


def test_attributes_set_and_deleted_outside_transforms(merged: Pair) -> None:
    merged.extra = 3
    merged.a.tag = "x"
    del merged.a.tag
    merged.eval()
    assert merged.extra == 3 and not hasattr(merged.a, "tag")
    assert merged.a.drop.deterministic is True
    assert nnx.state(merged, nnx.Param)["b"]["kernel"].value.shape == (2, 2)


def test_rngs_built_by_merge_draw_and_take_attributes(merged: Pair) -> None:
    rngs = merged.a.rngs
    k1, k2 = rngs.params(), rngs.params()
    assert not np.array_equal(jax.random.key_data(k1), jax.random.key_data(k2))
    rngs.note = 1  # an ordinary attribute: never taken for a stream by Rngs.__getattr__
    assert rngs.note == 1


def test_closed_over_merged_object_refuses_writes_inside_jit(merged: Pair) -> None:
    @nnx.jit
    def f(x: jax.Array) -> jax.Array:
        merged.a.extra = x
        return x

    with pytest.raises(nnx.StateError, match=r"closed over.*\n.*Pass the module"):
        f(jnp.ones(2))
    assert "extra" not in vars(merged.a)


def test_structural_change_after_a_cached_jit_call_is_seen(merged: Pair) -> None:
    @nnx.jit
    def f(m: Pair, x: jax.Array) -> jax.Array:
        return m.b(x)

    x = jnp.ones((1, 2))
    old_b = merged.b
    y1 = f(merged, x)
    f(merged, x)  # cached: the flattening has seen every object
    merged.b = nnx.Linear(2, 2, rngs=nnx.Rngs(7))
    y2 = f(merged, x)
    assert not np.allclose(y1, y2)
    np.testing.assert_allclose(y2, merged.b(x), rtol=1e-6)
    assert merged.b is not old_b


def test_merge_inside_a_transform_gives_objects_of_that_trace(merged: Pair) -> None:
    gd, state = nnx.split(merged)
    for _ in range(COMPILE_AFTER + 1):
        nnx.merge(gd, state)

    @nnx.jit
    def f(state: nnx.State) -> jax.Array:
        m = nnx.merge(gd, state)
        m.b.scale = jnp.float32(2.0)  # its own trace: a write is allowed
        m.a.linear.kernel.value = m.a.linear.kernel.value * m.b.scale
        return nnx.state(m, nnx.Param)["a"]["linear"]["kernel"].value

    kernel = f(state)
    np.testing.assert_allclose(kernel, 2 * merged.a.linear.kernel.value, rtol=1e-6)


def test_copy_pickle_and_clone_of_merged_objects(merged: Pair) -> None:
    for other in (copy.copy(merged), copy.deepcopy(merged), pickle.loads(pickle.dumps(merged)), nnx.clone(merged)):
        other.extra = 1
        assert other.extra == 1 and "extra" not in vars(merged)
        np.testing.assert_array_equal(other.b.kernel.value, merged.b.kernel.value)


class Answering(nnx.Module):
    """A module whose ``__getattr__`` answers every name: merge must not rely on unset slots."""

    def __init__(self) -> None:
        self.w = nnx.Param(jnp.ones(2))

    def __getattr__(self, name: str) -> int:
        return 42


@pytest.mark.parametrize("builds", [0, COMPILE_AFTER + 1])
def test_module_with_catch_all_getattr_keeps_its_checks_after_merge(builds: int) -> None:
    gd, state = nnx.split(Answering())
    for _ in range(builds):
        nnx.merge(gd, state)
    m = nnx.merge(gd, state)
    m.extra = 1
    assert m.extra == 1 and m.missing == 42

    @nnx.jit
    def f(x: jax.Array) -> jax.Array:
        m.other = x
        return x

    with pytest.raises(nnx.StateError, match="closed over"):
        f(jnp.ones(2))
