"""split_context / merge_context / update_context: a lifted transform written by hand around
raw JAX keeps the caller's objects (identity, values, structure); and unpack."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

import plait as nnx
from plait.contexts import ContextGraphDef


class Foo(nnx.Module):
    pass


def _lifted_jit(nnx_mod, tag="example"):
    """The reference's update_context example, against either library."""

    @jax.jit
    def f(graphdef, state):
        with nnx_mod.merge_context(tag, inner=True) as ctx:
            m2 = ctx.merge(graphdef, state)
        m2.a = 1
        m2.ref = m2  # a reference cycle
        with nnx_mod.split_context(tag) as ctx:
            return ctx.split(m2)

    def g(m1):
        with nnx_mod.update_context(tag):
            with nnx_mod.split_context(tag) as ctx:
                graphdef, state = ctx.split(m1)
            graphdef_out, state_out = f(graphdef, state)
            with nnx_mod.merge_context(tag, inner=False) as ctx:
                return ctx.merge(graphdef_out, state_out)

    return g


def test_reference_example_identity_static_attribute_and_cycle():
    m1 = Foo()
    m3 = _lifted_jit(nnx)(m1)
    assert m3 is m1
    assert m1.a == 1
    assert m1.ref is m1


def test_reference_example_same_answers_as_flax():
    fnnx = pytest.importorskip("flax.nnx")

    class FFoo(fnnx.Module):
        pass

    f1 = FFoo()
    f3 = _lifted_jit(fnnx)(f1)
    p1 = Foo()
    p3 = _lifted_jit(nnx)(p1)
    assert (f3 is f1, f1.a, f1.ref is f1) == (p3 is p1, p1.a, p1.ref is p1) == (True, 1, True)


def test_decorator_form():
    @jax.jit
    def f(graphdef, state):
        with nnx.merge_context("example", inner=True) as ctx:
            m2 = ctx.merge(graphdef, state)
        m2.a = 1
        with nnx.split_context("example") as ctx:
            return ctx.split(m2)

    @nnx.update_context("example")
    def g(m1):
        with nnx.split_context("example") as ctx:
            graphdef, state = ctx.split(m1)
        graphdef_out, state_out = f(graphdef, state)
        with nnx.merge_context("example", inner=False) as ctx:
            return ctx.merge(graphdef_out, state_out)

    m1 = Foo()
    assert g(m1) is m1 and m1.a == 1


def _train_step():
    """A hand-written lifted jit: the model's values are written inside, structure kept."""

    @jax.jit
    def inner(graphdef, state, x):
        with nnx.merge_context("step", inner=True) as ctx:
            model = ctx.merge(graphdef, state)
        y = model(x)
        model.kernel.value = model.kernel.value + 1.0
        with nnx.split_context("step") as ctx:
            return ctx.split(model), y

    def step(model, x):
        with nnx.update_context("step"):
            with nnx.split_context("step") as ctx:
                graphdef, state = ctx.split(model)
            (graphdef, state), y = inner(graphdef, state, x)
            with nnx.merge_context("step", inner=False) as ctx:
                return ctx.merge(graphdef, state), y

    return step


def test_values_written_back_in_place_on_every_call():
    step = _train_step()
    model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    kernel = model.kernel
    before = model.kernel.value
    x = jnp.ones((1, 2))
    for n in (1, 2, 3):  # the 2nd and 3rd calls hit jax.jit's cache: the inner split does not run
        out, y = step(model, x)
        assert out is model and model.kernel is kernel
        assert jnp.allclose(model.kernel.value, before + n)
    assert y.shape == (1, 3)


def test_shared_submodule_gets_the_new_attribute_everywhere():
    # The reference's test_update_static_state_submodules, eagerly (no JAX transform).
    class Bar(nnx.Module):
        def __init__(self):
            self.x = 1

        def add_field(self):
            self.y = 2

    class Outer(nnx.Module):
        def __init__(self):
            self.a = Bar()
            self.b = self.a

    m1 = Outer()
    with nnx.update_context("test"):
        with nnx.split_context("test") as ctx:
            graphdef, state = ctx.split(m1)
        with nnx.merge_context("test", inner=True) as ctx:
            m2 = ctx.merge(graphdef, state)
        assert m2 is not m1
        m2.a.add_field()
        with nnx.split_context("test") as ctx:
            new_graphdef, state = ctx.split(m2)
        with nnx.merge_context("test", inner=False) as ctx:
            m3 = ctx.merge(new_graphdef, state)
    assert m3 is m1 and m1.a is m1.b
    assert (m1.a.x, m1.a.y, m1.b.y) == (1, 2, 2)


def test_new_submodule_created_inside_is_new_outside_and_old_ones_are_kept():
    class Model(nnx.Module):
        def __init__(self):
            self.first = nnx.Linear(2, 2, rngs=nnx.Rngs(0))

    model = Model()
    first = model.first

    @jax.jit
    def f(graphdef, state):
        with nnx.merge_context("grow", inner=True) as ctx:
            m = ctx.merge(graphdef, state)
        m.second = nnx.Linear(2, 2, rngs=nnx.Rngs(1))
        with nnx.split_context("grow") as ctx:
            return ctx.split(m)

    with nnx.update_context("grow"):
        with nnx.split_context("grow") as ctx:
            gd, st = ctx.split(model)
        gd, st = f(gd, st)
        with nnx.merge_context("grow", inner=False) as ctx:
            out = ctx.merge(gd, st)
    assert out is model and model.first is first
    assert isinstance(model.second, nnx.Linear) and model.second.kernel.value.shape == (2, 2)
    # the new structure is seen by plait's own transforms (the flatten cache was invalidated)
    assert sorted(nnx.state(model)) == ["first", "second"]


def test_raw_vmap_over_a_stack():
    class Stack(nnx.Module):
        def __init__(self):
            self.w = nnx.Param(jnp.zeros((4, 3)))

    model = Stack()
    w = model.w

    def inner(graphdef, state, x):
        with nnx.merge_context("vmap", inner=True) as ctx:
            m = ctx.merge(graphdef, state)
        m.w.value = m.w.value + x
        with nnx.split_context("vmap") as ctx:
            return ctx.split(m)

    with nnx.update_context("vmap"):
        with nnx.split_context("vmap") as ctx:
            gd, st = ctx.split(model)
        gd, st = jax.vmap(inner, in_axes=(None, 0, 0), out_axes=(None, 0))(gd, st, jnp.arange(4.0))
        with nnx.merge_context("vmap", inner=False) as ctx:
            out = ctx.merge(gd, st)
    assert out is model and model.w is w
    assert jnp.allclose(model.w.value, jnp.arange(4.0)[:, None] * jnp.ones((4, 3)))


def test_older_spelling_update_context_split_and_merge():
    # 0.10's UpdateContext.split / .merge and current_update_context inside the traced function.
    @jax.jit
    def f(graphdef, state):
        ctx = nnx.current_update_context("example")
        m2 = ctx.merge(graphdef, state)
        m2.a = 1
        m2.ref = m2
        return ctx.split(m2)

    @nnx.update_context("example")
    def g(m1):
        ctx = nnx.current_update_context("example")
        graphdef, state = ctx.split(m1)
        graphdef_out, state_out = f(graphdef, state)
        return ctx.merge(graphdef_out, state_out)

    m1 = Foo()
    m3 = g(m1)
    assert m3 is m1 and m1.a == 1 and m1.ref is m1

    m1 = Foo()
    with nnx.update_context("example") as ctx:
        graphdef, state = ctx.split(m1)
        graphdef_out, state_out = jax.jit(lambda gd, st: _inner_with(ctx, gd, st))(graphdef, state)
        m3 = ctx.merge(graphdef_out, state_out)
    assert m3 is m1 and m1.a == 1


def _inner_with(ctx, graphdef, state):
    m2 = ctx.merge(graphdef, state)
    m2.a = 1
    return ctx.split(m2)


def test_one_split_context_numbers_objects_across_calls():
    layer = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    with nnx.split_context() as ctx:
        gd1, s1 = ctx.split([layer])
        gd2, s2 = ctx.split(layer)
    assert isinstance(gd1, ContextGraphDef) and gd2.indices == gd1.indices
    with nnx.merge_context() as ctx:
        a = ctx.merge(gd1, s1)
        b = ctx.merge(gd2, s2)
    assert b is a[0] and b is not layer
    # a context's GraphDef is still a GraphDef for nnx.merge
    assert isinstance(nnx.merge(gd2, s2), nnx.Linear)


def test_flatten_and_unflatten_in_contexts():
    layer = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    with nnx.split_context() as ctx:
        gd, flat = ctx.flatten(layer)
        gd_leaves, leaves = ctx.flatten(layer, with_paths=False)
    assert flat.paths == (("bias",), ("kernel",))
    assert len(leaves) == 2
    with nnx.merge_context() as ctx:
        a = ctx.unflatten(gd, flat)
        b = ctx.unflatten(gd_leaves, leaves)
    assert a is b and isinstance(a, nnx.Linear)


def test_errors_name_the_fix():
    with pytest.raises(nnx.GraphError, match=r"(?s)no update context with tag 'nope'.*nnx.update_context\('nope'\)"):
        nnx.current_update_context("nope")
    with nnx.update_context("t"):
        with pytest.raises(nnx.GraphError, match="needs inner="):
            with nnx.merge_context("t"):
                pass
    with pytest.raises(nnx.GraphError, match="no update context"):
        with nnx.split_context("t"):
            pass


def test_contexts_are_static_for_jax():
    with nnx.update_context("s") as ctx:
        assert jax.tree.leaves(ctx) == [] and ctx == nnx.current_update_context("s")


# -- unpack ------------------------------------------------------------------------------------


class _Foo(nnx.Module):
    def __init__(self, rngs):
        self.batch_norm = nnx.BatchNorm(2, rngs=rngs)
        self.linear = nnx.Linear(2, 3, rngs=rngs)


def test_unpack_one_state_and_merge():
    node = _Foo(nnx.Rngs(0))
    state = nnx.unpack(node)
    assert isinstance(state, nnx.State)
    new = nnx.merge(state)
    assert isinstance(new, _Foo) and new is not node
    assert jnp.allclose(new.linear.kernel.value, node.linear.kernel.value)


def test_unpack_with_filters_matches_flax():
    fnnx = pytest.importorskip("flax.nnx")

    class FFoo(fnnx.Module):
        def __init__(self, rngs):
            self.batch_norm = fnnx.BatchNorm(2, rngs=rngs)
            self.linear = fnnx.Linear(2, 3, rngs=rngs)

    f_params, f_stats = fnnx.unpack(FFoo(fnnx.Rngs(0)), fnnx.Param, fnnx.BatchStat)
    p_params, p_stats = nnx.unpack(_Foo(nnx.Rngs(0)), nnx.Param, nnx.BatchStat)
    assert sorted(fnnx.to_flat_state(f_params._state).paths) == sorted(nnx.to_flat_state(p_params).paths)
    assert sorted(fnnx.to_flat_state(f_stats._state).paths) == sorted(nnx.to_flat_state(p_stats).paths)
    assert isinstance(nnx.merge(p_params, p_stats), _Foo)
    one = nnx.unpack(_Foo(nnx.Rngs(0)), ...)
    assert sorted(one) == ["batch_norm", "linear"]


def test_unpacked_state_goes_through_jax_and_keeps_its_graphdef():
    params, stats = nnx.unpack(_Foo(nnx.Rngs(0)), nnx.Param, nnx.BatchStat)
    doubled = jax.jit(lambda s: jax.tree.map(lambda x: 2 * x, s))(params)
    assert doubled.graphdef == params.graphdef
    model = nnx.merge(doubled, stats)
    assert jnp.allclose(model.linear.kernel.value, 2 * params["linear"]["kernel"].value)


def test_unpack_errors():
    params = nnx.unpack(nnx.Linear(2, 3, rngs=nnx.Rngs(0)))
    _, plain = nnx.split(nnx.Linear(2, 3, rngs=nnx.Rngs(0)))
    with pytest.raises(nnx.GraphError, match="same nnx.unpack"):
        nnx.merge(params, plain)
    with pytest.raises(nnx.GraphError, match="bare Param"):
        nnx.unpack(nnx.Param(jnp.ones(2)))
    with pytest.raises(nnx.GraphError, match="no State given"):
        nnx.merge(nnx.graphdef(nnx.Linear(2, 3, rngs=nnx.Rngs(0))))
