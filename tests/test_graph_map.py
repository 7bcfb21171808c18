"""nnx.map / as_pure / as_abstract / prefix, with_vars / vars_as / var_defaults, and the Variable
API plait keeps (get_value, set_value, v[...], in-place updates)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import plait as nnx


class Tied(nnx.Module):
    def __init__(self, rngs):
        self.a = nnx.Linear(2, 2, rngs=rngs)
        self.b = self.a
        self.stat = nnx.BatchStat(jnp.ones(2))


def test_map_copies_keeps_sharing_type_and_metadata():
    model = Tied(nnx.Rngs(0))
    seen = []

    def f(path, v):
        seen.append(path)
        return v.replace(jnp.zeros_like(v.value), note="zeroed") if isinstance(v, nnx.Param) else v

    out = nnx.map(f, model)
    assert sorted(seen) == [("a", "bias"), ("a", "kernel"), ("stat",)]  # the shared Linear once
    assert out.b is out.a and out.a is not model.a
    np.testing.assert_array_equal(out.a.kernel.value, 0)
    assert out.a.kernel.note == "zeroed" and isinstance(out.a.kernel, nnx.Param)
    assert float(jnp.abs(model.a.kernel.value).sum()) > 0  # original unchanged
    assert out.stat is not model.stat  # recreated by default
    shared = nnx.map(lambda p, v: v, model, recreate_variables=False)
    assert shared.stat is model.stat
    raw = nnx.map(lambda p, v: jnp.full_like(v.value, 2.0), model)
    assert isinstance(raw.stat, nnx.BatchStat) and float(raw.stat.value[0]) == 2.0
    with pytest.raises(nnx.TransformError, match="graph=False"):
        nnx.map(f, model, graph=False)


def test_as_pure():
    state = nnx.state(Tied(nnx.Rngs(0)))
    pure = nnx.as_pure(state)
    leaves = jax.tree.leaves(pure)
    assert len(leaves) == 3 and all(isinstance(x, jax.Array) for x in leaves)
    with pytest.raises(nnx.GraphError, match=r"nnx.as_pure\(nnx.state\(model\)\)"):
        nnx.as_pure(Tied(nnx.Rngs(0)))


def test_as_abstract_adds_sharding_only_where_asked():
    class M(nnx.Module):
        def __init__(self):
            self.w = nnx.Param(jnp.ones((2, 4)), out_sharding=("a", None))
            self.b = nnx.Param(jnp.ones(4))

    mesh = jax.make_mesh((1,), ("a",), axis_types=(jax.sharding.AxisType.Auto,))
    with jax.set_mesh(mesh):
        abstract = nnx.as_abstract(nnx.eval_shape(M))
    assert abstract.w.value.sharding.spec == jax.sharding.PartitionSpec("a", None)
    assert getattr(abstract.b.value, "sharding", None) is None


def test_prefix_for_module_and_dict():
    @nnx.split_rngs(splits=3)
    @nnx.vmap(axis_size=3)
    def create(rngs):
        return nnx.Linear(2, 2, rngs=rngs)

    model = create(nnx.Rngs(0))
    axes = nnx.prefix(model, {nnx.Param: 0})
    assert isinstance(axes, nnx.StateAxes)
    y = nnx.vmap(lambda m, x: m(x), in_axes=(axes, None))(model, jnp.ones(2))
    assert y.shape == (3, 2)
    by_fn = nnx.prefix(model, lambda path, v: 0)
    np.testing.assert_allclose(nnx.vmap(lambda m, x: m(x), in_axes=(by_fn, None))(model, jnp.ones(2)), y)
    d = {"a": nnx.Param(jnp.array(2.0)), "b": [nnx.BatchStat(jnp.arange(3.0))]}
    assert nnx.prefix(d, {nnx.Param: None, nnx.BatchStat: 0}) == {"a": None, "b": [0]}
    pair = nnx.prefix((model, model), {...: 0})
    assert isinstance(pair, tuple) and len(pair) == 2
    with pytest.raises(nnx.TransformError, match=r"no filter matches the BatchStat at `b.0`"):
        nnx.prefix(d, {nnx.Param: None})


def test_with_vars_and_var_defaults():
    model = Tied(nnx.Rngs(0))
    copy = nnx.with_vars(model, hijax=False, ref=False, mutable=True)
    assert copy is not model and copy.a.kernel is model.a.kernel and copy.b is copy.a
    for kw in ({"hijax": True}, {"mutable": False}):  # ref=True: tests/test_names_refs.py
        with pytest.raises(nnx.VariableError, match=f"{next(iter(kw))}=.*no"):
            nnx.with_vars(model, **kw)
    with pytest.warns(DeprecationWarning, match="with_vars"):
        nnx.vars_as(model, ref=False)
    assert nnx.var_defaults() == nnx.VarDefaults(hijax=False, ref=False)
    with nnx.var_defaults(hijax=False, ref=False):
        pass

    @nnx.var_defaults(ref=False)
    def make():
        return nnx.Param(1.0)

    assert make().value == 1.0
    with pytest.raises(nnx.VariableError, match=r"var_defaults\(hijax=True\)"):
        nnx.var_defaults(hijax=True)


def test_variable_value_api_plait_keeps():
    v = nnx.Param(jnp.zeros(3))
    v.set_value(jnp.ones(3))
    np.testing.assert_array_equal(v.get_value(), 1)
    v[...] = jnp.full(3, 2.0)
    np.testing.assert_array_equal(v[...], 2)
    v[1] = 5.0
    assert v.get_value(index=1) == 5.0
    v.set_value(7.0, index=0)
    v += 1
    assert isinstance(v, nnx.Param)  # in place: still the Variable
    np.testing.assert_array_equal(v.value, [8.0, 6.0, 3.0])
    v[...] += 1
    np.testing.assert_array_equal(v.value, [9.0, 7.0, 4.0])

    class Counter(nnx.Module):
        def __init__(self):
            self.n = nnx.Variable(jnp.array(0))

    c = Counter()

    @nnx.jit
    def bump(c):
        c.n[...] += 1
        c.n += 1

    bump(c)
    assert int(c.n.value) == 2  # in-place updates inside a transform are written back


def test_hijax_variables_refused():  # ref=True works: tests/test_names_refs.py
    for kw in ({"hijax": True},):
        with pytest.raises(nnx.VariableError, match="Leave"):
            nnx.Variable(jnp.ones(1), **kw)
    assert nnx.Variable(jnp.ones(1), hijax=False).value.shape == (1,)
