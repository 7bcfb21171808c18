"""nnx.data / nnx.static / nnx.dataclass / nnx.Pytree: marks decide state vs structure."""

import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import plait as nnx


class Scaled(nnx.Module):
    def __init__(self):
        self.temperature = nnx.data(2.0)
        self.name = nnx.static("scaled")
        self.shape = nnx.static((2, 3))

    def __call__(self, x):
        return x / self.temperature


def test_data_scalar_is_a_traced_leaf_and_written_back():
    m = Scaled()
    assert isinstance(m.temperature, jax.Array) and float(m.temperature) == 2.0
    seen = []

    @nnx.jit
    def step(m, x):
        seen.append(isinstance(m.temperature, jax.core.Tracer))
        m.temperature = m.temperature * 3
        return m(x)

    y = step(m, jnp.ones(2))
    assert seen == [True]
    assert float(m.temperature) == 6.0
    np.testing.assert_allclose(y, 1 / 6, rtol=1e-6)


def test_data_mark_keeps_later_numbers_data():
    m = Scaled()
    m.temperature = 5.0  # unmarked assignment to a data attribute: still data
    assert isinstance(m.temperature, jax.Array)
    g = jax.grad(lambda t: nnx.merge(*_split_with(m, t))(jnp.ones(1)).sum())(jnp.asarray(5.0))
    np.testing.assert_allclose(g, -1 / 25)


def _split_with(m, t):
    gd, st = nnx.split(m)
    st["temperature"] = t
    return gd, st


def test_static_is_structure():
    a, b = Scaled(), Scaled()
    assert nnx.graphdef(a) == nnx.graphdef(b)
    b.shape = (4, 5)  # still static: a different structure, no leaf
    assert nnx.graphdef(a) != nnx.graphdef(b)
    assert len(jax.tree.leaves(nnx.state(b))) == 1


def test_static_refuses_arrays_now_and_later():
    class Bad(nnx.Module):
        def __init__(self):
            self.table = nnx.static([jnp.ones(2)])

    with pytest.raises(nnx.GraphError, match=r"`Bad.table`.*nnx.static") as e:
        Bad()
    assert "nnx.data(...)" in str(e.value)
    m = Scaled()
    with pytest.raises(nnx.GraphError, match=r"`Scaled.shape`: a ArrayImpl was assigned"):
        m.shape = jnp.zeros(2)
    with pytest.raises(nnx.GraphError, match="Variable|Param"):
        m.name = {"w": nnx.Param(jnp.ones(1))}
    assert m.shape == (2, 3)


def test_explicit_data_overrides_static_mark():
    m = Scaled()
    m.shape = nnx.data(jnp.ones(2))
    assert len(jax.tree.leaves(nnx.state(m))) == 2
    m.shape = jnp.zeros(3)  # now data: accepted
    del m.shape
    m.shape = jnp.zeros(1)  # mark forgotten with the attribute: unmarked arrays are state
    assert len(jax.tree.leaves(nnx.state(m))) == 2


def test_data_list_of_numbers_and_arrays():
    class Cell(nnx.Module):
        def __init__(self):
            self.items = nnx.data([1.0, jnp.ones(2), "tag"])

    c = Cell()
    assert isinstance(c.items, nnx.List)
    assert isinstance(c.items[0], jax.Array) and c.items[2] == "tag"
    assert len(jax.tree.leaves(nnx.state(c))) == 2


def test_marks_survive_merge_clone_and_pickle():
    m = Scaled()
    for copy in (nnx.merge(*nnx.split(m)), nnx.clone(m), pickle.loads(pickle.dumps(m))):
        with pytest.raises(nnx.GraphError, match="Scaled.shape"):
            copy.shape = jnp.ones(1)
        copy.temperature = 1.0
        assert isinstance(copy.temperature, jax.Array)


def test_dataclass_module_with_typed_fields():
    @nnx.dataclass
    class Affine(nnx.Module):
        w: nnx.Param
        b: jax.Array = nnx.data()
        scale: float = nnx.data(default=1.0)
        features: int = nnx.static(default=3)

        def __call__(self, x):
            return (x @ self.w + self.b) * self.scale

    m = Affine(nnx.Param(jnp.ones((2, 3))), jnp.zeros(3))
    assert m.features == 3 and isinstance(m.scale, jax.Array)
    y = nnx.jit(lambda m, x: m(x))(m, jnp.ones((1, 2)))
    np.testing.assert_allclose(y, 2.0)
    assert len(jax.tree.leaves(nnx.state(m))) == 3
    with pytest.raises(nnx.GraphError, match="Affine.features"):
        Affine(nnx.Param(jnp.ones((2, 3))), jnp.zeros(3), features=jnp.ones(3))


def test_dataclass_refusals():
    with pytest.raises(TypeError, match="slots"):
        @nnx.dataclass(slots=True)
        class A(nnx.Module):
            x: int = 1
    with pytest.raises(TypeError, match="plait objects"):
        @nnx.dataclass
        class B:
            x: int = 1
    with pytest.raises(TypeError, match="not both"):
        nnx.data(1, default=2)


def test_field_marker_without_value_is_refused():
    class M(nnx.Module):
        def __init__(self):
            self.x = nnx.data()

    with pytest.raises(nnx.GraphError, match=r"`M.x`.*without a value"):
        M()


def test_pytree_is_the_object_base_and_not_a_jax_pytree():
    assert nnx.Pytree is nnx.Object
    assert isinstance(nnx.Linear(1, 1, rngs=nnx.Rngs(0)), nnx.Pytree)
    assert isinstance(nnx.Rngs(0), nnx.Pytree)

    class Box(nnx.Pytree, pytree=False):
        def __init__(self):
            self.v = nnx.data(1.0)

    with pytest.raises(TypeError, match="nnx.jit"):
        jax.tree.leaves(Box())
    with pytest.raises(nnx.GraphError, match="pytree=True"):
        class Tree(nnx.Pytree, pytree=True):
            pass


def test_is_data_has_data_register_check():
    assert nnx.is_data(jnp.ones(1)) and nnx.is_data(np.ones(1)) and nnx.is_data(nnx.Param(1))
    assert nnx.is_data(nnx.Rngs(0)) and not nnx.is_data(1.0) and not nnx.is_data("a")
    assert not nnx.is_data([jnp.ones(1)])
    assert [x.shape for x in nnx.has_data(([jnp.ones(2)], {"k": np.ones(3)}, 4))] == [(2,), (3,)]

    class Opaque:
        pass

    assert not nnx.is_data(Opaque())
    nnx.register_data_type(Opaque)
    assert nnx.is_data(Opaque())

    class M(nnx.Module):
        def __init__(self):
            self.o = nnx.static(None)

    m = M()
    with pytest.raises(nnx.GraphError, match="Opaque"):
        m.o = Opaque()
    object.__setattr__(m, "o", jnp.ones(1))  # bypassing the check: check_pytree finds it
    with pytest.raises(nnx.GraphError, match=r"`M.o` is marked static"):
        nnx.check_pytree(m)
    with pytest.raises(TypeError, match="plait object"):
        nnx.check_pytree({"a": 1})
