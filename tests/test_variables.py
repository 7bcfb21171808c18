"""Tests for Variable and its subclasses: value access, metadata, arithmetic, pytree behaviour."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import plait as nnx

ALL_TYPES = [
    nnx.Variable,
    nnx.Param,
    nnx.BatchStat,
    nnx.Cache,
    nnx.Intermediate,
    nnx.RngState,
    nnx.RngKey,
    nnx.RngCount,
    nnx.OptState,
]


def arr(*values, dtype=jnp.float32):
    return jnp.asarray(values, dtype)


# ---------------------------------------------------------------------------------------
# type hierarchy
# ---------------------------------------------------------------------------------------


def test_subclass_hierarchy():
    for cls in ALL_TYPES:
        assert issubclass(cls, nnx.Variable)
    assert issubclass(nnx.RngKey, nnx.RngState)
    assert issubclass(nnx.RngCount, nnx.RngState)
    assert not issubclass(nnx.Param, nnx.BatchStat)
    assert not issubclass(nnx.OptState, nnx.Param)


# ---------------------------------------------------------------------------------------
# value access
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", ALL_TYPES)
def test_value_get_and_set(cls):
    v = cls(jnp.ones((2, 3)))
    assert v.value.shape == (2, 3)
    np.testing.assert_array_equal(v.value, np.ones((2, 3)))
    v.value = jnp.zeros(4)
    assert v.value.shape == (4,)
    np.testing.assert_array_equal(v.value, np.zeros(4))
    assert v.get_value() is v.value
    new = jnp.arange(3)
    v.set_value(new)
    assert v.value is new


def test_ellipsis_get_and_set():
    x = jnp.arange(6.0).reshape(2, 3)
    v = nnx.Param(x)
    assert v[...] is x
    y = jnp.full((5,), 7.0)
    v[...] = y
    assert v.value is y


def test_index_get_and_set():
    v = nnx.Param(jnp.zeros((2, 3)))
    v[0] = jnp.array([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(v.value, [[1, 2, 3], [0, 0, 0]])
    v[1, 2] = 9.0
    np.testing.assert_array_equal(v.value, [[1, 2, 3], [0, 0, 9]])
    v[:, 0] = -1.0
    np.testing.assert_array_equal(v.value, [[-1, 2, 3], [-1, 0, 9]])
    np.testing.assert_array_equal(v[1], [-1, 0, 9])
    np.testing.assert_array_equal(v[:, 1], [2, 0])
    assert float(v[1, 2]) == 9.0
    assert v.value.dtype == jnp.float32


def test_index_set_on_numpy_value():
    v = nnx.Param(np.zeros(3, np.float32))
    v[1] = 5.0
    np.testing.assert_array_equal(np.asarray(v.value), [0, 5, 0])


def test_variable_wrapping_variable_takes_its_value():
    inner = nnx.Param(jnp.ones(2))
    outer = nnx.BatchStat(inner)
    assert outer.value is inner.value
    assert type(outer) is nnx.BatchStat


# ---------------------------------------------------------------------------------------
# metadata
# ---------------------------------------------------------------------------------------


def test_metadata_as_attributes():
    v = nnx.Param(jnp.ones(2), note="init", out_sharding=("data", None))
    assert v.note == "init"
    assert v.out_sharding == ("data", None)
    assert v.get_metadata() == {"note": "init", "out_sharding": ("data", None)}


@pytest.mark.parametrize("old", ["sharding", "sharding_names"])
def test_old_sharding_names_become_out_sharding(old):
    # As in the reference: the old keywords are renamed (with a warning), and `v.sharding`
    # is then the array's own sharding, not the metadata.
    with pytest.warns(DeprecationWarning, match="out_sharding"):
        v = nnx.Param(jnp.ones(2), **{old: ("data",)})
    assert v.get_metadata() == {"out_sharding": ("data",)}
    assert v.sharding == v.value.sharding
    with pytest.warns(DeprecationWarning):
        assert v.sharding_names == ("data",)


def test_get_metadata_returns_a_copy():
    v = nnx.Param(1, a=1)
    meta = v.get_metadata()
    meta["a"] = 2
    meta["b"] = 3
    assert v.get_metadata() == {"a": 1}


def test_set_metadata():
    v = nnx.Param(jnp.ones(2), a=1)
    v.set_metadata("a", 5)
    v.set_metadata("b", "x")
    assert v.a == 5
    assert v.b == "x"
    assert v.get_metadata() == {"a": 5, "b": "x"}


def test_unknown_attribute_names_metadata_keys():
    v = nnx.Param(jnp.ones(2), alpha=1, beta=2)
    with pytest.raises(AttributeError) as info:
        _ = v.gamma
    msg = str(info.value)
    assert "'gamma'" in msg
    assert "alpha" in msg and "beta" in msg
    assert "Param" in msg
    assert not hasattr(v, "gamma")
    assert getattr(v, "gamma", "missing") == "missing"


def test_unknown_attribute_without_metadata():
    v = nnx.BatchStat(jnp.ones(2))
    with pytest.raises(AttributeError, match="'nope'"):
        _ = v.nope


def test_dunder_lookup_raises_attribute_error():
    v = nnx.Param(1, a=1)
    with pytest.raises(AttributeError):
        _ = v.__something_missing__


# ---------------------------------------------------------------------------------------
# arithmetic
# ---------------------------------------------------------------------------------------

X = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
Y = np.array([[0.5, -1.0], [2.0, 3.0]], np.float32)


@pytest.mark.parametrize(
    "op",
    [
        pytest.param(lambda a, b: a + b, id="add"),
        pytest.param(lambda a, b: a - b, id="sub"),
        pytest.param(lambda a, b: a * b, id="mul"),
        pytest.param(lambda a, b: a / b, id="truediv"),
        pytest.param(lambda a, b: a // b, id="floordiv"),
        pytest.param(lambda a, b: a % b, id="mod"),
        pytest.param(lambda a, b: a @ b, id="matmul"),
        pytest.param(lambda a, b: a**b, id="pow"),
        pytest.param(lambda a, b: a < b, id="lt"),
        pytest.param(lambda a, b: a <= b, id="le"),
        pytest.param(lambda a, b: a > b, id="gt"),
        pytest.param(lambda a, b: a >= b, id="ge"),
        pytest.param(lambda a, b: a == b, id="eq"),
        pytest.param(lambda a, b: a != b, id="ne"),
    ],
)
def test_binary_ops_behave_like_value(op):
    x, y = jnp.asarray(X), jnp.asarray(Y)
    expected = np.asarray(op(x, y))
    v, w = nnx.Param(x), nnx.Param(y)
    for result in (op(v, y), op(x, w), op(v, w)):
        assert not isinstance(result, nnx.Variable)
        assert result.shape == expected.shape
        assert result.dtype == expected.dtype
        np.testing.assert_allclose(np.asarray(result), expected, rtol=1e-6)


def test_scalar_and_reflected_ops():
    v = nnx.Param(jnp.asarray([1.0, 2.0, 4.0]))
    np.testing.assert_allclose(v + 1, [2, 3, 5])
    np.testing.assert_allclose(1 + v, [2, 3, 5])
    np.testing.assert_allclose(v * 2, [2, 4, 8])
    np.testing.assert_allclose(2 * v, [2, 4, 8])
    np.testing.assert_allclose(10 - v, [9, 8, 6])
    np.testing.assert_allclose(v - 10, [-9, -8, -6])
    np.testing.assert_allclose(8 / v, [8, 4, 2])
    np.testing.assert_allclose(v / 2, [0.5, 1, 2])
    np.testing.assert_allclose(2**v, [2, 4, 16])
    np.testing.assert_allclose(v**2, [1, 4, 16])
    np.testing.assert_array_equal(2 < v, [False, False, True])
    np.testing.assert_array_equal(2 >= v, [True, True, False])
    np.testing.assert_array_equal(v == 2, [False, True, False])


def test_reflected_matmul_with_jax_array_on_the_left():
    x = jnp.asarray(X)
    v = nnx.Param(jnp.asarray(Y))
    out = x @ v
    assert isinstance(out, jax.Array)
    np.testing.assert_allclose(np.asarray(out), X @ Y, rtol=1e-6)
    out_np = X @ v
    np.testing.assert_allclose(np.asarray(out_np), X @ Y, rtol=1e-6)


def test_unary_ops():
    v = nnx.Param(jnp.asarray([-1.5, 2.0]))
    np.testing.assert_array_equal(-v, [1.5, -2.0])
    np.testing.assert_array_equal(+v, [-1.5, 2.0])
    np.testing.assert_array_equal(abs(v), [1.5, 2.0])
    b = nnx.Variable(jnp.asarray([True, False]))
    np.testing.assert_array_equal(~b, [False, True])


def test_bitwise_ops():
    v = nnx.Variable(jnp.asarray([0b1100, 0b1010], jnp.int32))
    np.testing.assert_array_equal(v & 0b1000, [8, 8])
    np.testing.assert_array_equal(v | 1, [13, 11])
    np.testing.assert_array_equal(v ^ 0b1111, [3, 5])
    np.testing.assert_array_equal(v << 1, [24, 20])
    np.testing.assert_array_equal(v >> 2, [3, 2])


def test_scalar_conversions():
    assert float(nnx.Param(jnp.asarray(2.5))) == 2.5
    assert int(nnx.Param(jnp.asarray(3))) == 3
    assert bool(nnx.Param(jnp.asarray(1))) is True
    assert bool(nnx.Param(jnp.asarray(0))) is False
    assert [10, 20, 30][nnx.Variable(jnp.asarray(2))] == 30


def test_python_int_value_with_int_arithmetic():
    v = nnx.Variable(3)
    assert v + 2 == 5
    assert 2 * v == 6
    assert v - 1 == 2


def test_python_int_value_with_float_arithmetic():
    v = nnx.Variable(3)
    assert v + 2.5 == 5.5
    assert 2.5 + v == 5.5
    assert v * 0.5 == 1.5


def test_inplace_op_on_python_int_value_with_float():
    v = nnx.Variable(3)
    v += 2.5
    assert v.value == 5.5


# ---------------------------------------------------------------------------------------
# in-place operators
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "op, expected",
    [
        pytest.param(lambda v: v.__iadd__(1.0), [3.0, 5.0], id="iadd"),
        pytest.param(lambda v: v.__isub__(1.0), [1.0, 3.0], id="isub"),
        pytest.param(lambda v: v.__imul__(3.0), [6.0, 12.0], id="imul"),
        pytest.param(lambda v: v.__itruediv__(2.0), [1.0, 2.0], id="itruediv"),
        pytest.param(lambda v: v.__ifloordiv__(3.0), [0.0, 1.0], id="ifloordiv"),
        pytest.param(lambda v: v.__imod__(3.0), [2.0, 1.0], id="imod"),
        pytest.param(lambda v: v.__ipow__(2.0), [4.0, 16.0], id="ipow"),
    ],
)
def test_inplace_ops_keep_the_variable(op, expected):
    v = nnx.Param(jnp.asarray([2.0, 4.0]), tag="t")
    result = op(v)
    assert result is v
    np.testing.assert_allclose(np.asarray(v.value), expected)
    assert v.tag == "t"


def test_augmented_assignment_statement():
    v = nnx.Param(jnp.ones(3))
    alias = v
    v += 1
    assert v is alias
    np.testing.assert_array_equal(alias.value, [2, 2, 2])
    v *= jnp.asarray([1.0, 2.0, 3.0])
    assert v is alias
    np.testing.assert_array_equal(alias.value, [2, 4, 6])
    v -= nnx.Param(jnp.ones(3))  # a Variable on the right is unwrapped
    assert v is alias
    np.testing.assert_array_equal(alias.value, [1, 3, 5])
    assert isinstance(alias.value, jax.Array)


def test_inplace_matmul():
    v = nnx.Param(jnp.asarray(X))
    alias = v
    v @= jnp.asarray(Y)
    assert v is alias
    np.testing.assert_allclose(np.asarray(v.value), X @ Y, rtol=1e-6)


def test_inplace_op_on_module_attribute_keeps_the_variable():
    model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    bias = model.bias
    model.bias += 1.0
    assert model.bias is bias
    np.testing.assert_array_equal(np.asarray(bias.value), [1.0, 1.0])


# ---------------------------------------------------------------------------------------
# array protocol
# ---------------------------------------------------------------------------------------


def test_jnp_asarray_and_jnp_functions():
    x = jnp.arange(6.0).reshape(2, 3)
    v = nnx.Param(x)
    a = jnp.asarray(v)
    assert isinstance(a, jax.Array)
    np.testing.assert_array_equal(a, x)
    assert float(jnp.sum(v)) == 15.0
    np.testing.assert_array_equal(jnp.tanh(v), jnp.tanh(x))
    assert jnp.dot(v, jnp.ones(3)).shape == (2,)


def test_np_asarray():
    v = nnx.Param(jnp.arange(4.0))
    a = np.asarray(v)
    assert isinstance(a, np.ndarray)
    assert a.dtype == np.float32
    np.testing.assert_array_equal(a, [0, 1, 2, 3])
    b = np.asarray(v, dtype=np.float64)
    assert b.dtype == np.float64


def test_len_iter_shape_dtype_ndim():
    v = nnx.Param(jnp.arange(12, dtype=jnp.int32).reshape(4, 3))
    assert len(v) == 4
    rows = list(v)
    assert len(rows) == 4
    np.testing.assert_array_equal(rows[2], [6, 7, 8])
    assert v.shape == (4, 3)
    assert v.dtype == jnp.int32
    assert v.ndim == 2
    assert v.size == 12
    assert v.T.shape == (3, 4)


def test_shape_of_python_scalar_value():
    v = nnx.Variable(3.0)
    assert v.shape == ()
    assert v.ndim == 0
    assert v.dtype is None


def test_jit_accepts_variable_via_jax_array():
    v = nnx.Param(jnp.arange(3.0))
    out = jax.jit(lambda a: a * 2)(jnp.asarray(v))
    np.testing.assert_array_equal(out, [0, 2, 4])


# ---------------------------------------------------------------------------------------
# pytree behaviour
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", ALL_TYPES)
def test_variable_is_pytree_with_value_leaf(cls):
    x = jnp.arange(3.0)
    v = cls(x, tag="t", n=2)
    leaves = jax.tree.leaves(v)
    assert len(leaves) == 1
    assert leaves[0] is x


@pytest.mark.parametrize("cls", ALL_TYPES)
def test_tree_map_keeps_type_and_metadata(cls):
    v = cls(jnp.arange(3.0), tag="t", n=2)
    out = jax.tree.map(lambda a: a * 10, v)
    assert type(out) is cls
    assert out is not v
    assert out.get_metadata() == {"tag": "t", "n": 2}
    np.testing.assert_array_equal(out.value, [0, 10, 20])
    np.testing.assert_array_equal(v.value, [0, 1, 2])  # the original is untouched


def test_tree_map_over_container_of_variables():
    tree = {"w": nnx.Param(jnp.ones(2)), "s": nnx.BatchStat(jnp.zeros(2), momentum=0.9)}
    out = jax.tree.map(lambda a: a + 1, tree)
    assert type(out["w"]) is nnx.Param and type(out["s"]) is nnx.BatchStat
    assert out["s"].momentum == 0.9
    np.testing.assert_array_equal(out["s"].value, [1, 1])


def test_tree_flatten_with_path_names_value():
    v = nnx.Param(jnp.ones(2))
    ((path, leaf),) = jax.tree_util.tree_flatten_with_path(v)[0]
    assert jax.tree_util.keystr(path) == ".value"
    assert leaf is v.value


def test_variable_through_jax_jit_and_grad():
    v = nnx.Param(jnp.asarray([1.0, 2.0]), note="w")
    out = jax.jit(lambda p: jax.tree.map(lambda a: a + 1, p))(v)
    assert type(out) is nnx.Param and out.note == "w"
    np.testing.assert_array_equal(out.value, [2, 3])
    g = jax.grad(lambda p: jnp.sum(p.value**2))(v)
    assert type(g) is nnx.Param and g.note == "w"
    np.testing.assert_array_equal(g.value, [2, 4])


def test_structure_depends_on_type_and_metadata():
    x = jnp.ones(2)
    s = jax.tree.structure
    assert s(nnx.Param(x, a=1)) == s(nnx.Param(jnp.zeros(2), a=1))
    assert s(nnx.Param(x, a=1)) != s(nnx.Param(x, a=2))
    assert s(nnx.Param(x)) != s(nnx.BatchStat(x))


def test_user_subclass_is_pytree():
    class MyState(nnx.Variable):
        pass

    v = MyState(jnp.ones(2), kind="mine")
    out = jax.tree.map(lambda a: a * 3, v)
    assert type(out) is MyState
    assert out.kind == "mine"
    np.testing.assert_array_equal(out.value, [3, 3])


# ---------------------------------------------------------------------------------------
# replace, copy, identity, repr
# ---------------------------------------------------------------------------------------


def test_replace():
    v = nnx.BatchStat(jnp.ones(2), a=1, b=2)
    r = v.replace(jnp.zeros(3), b=5, c=6)
    assert type(r) is nnx.BatchStat
    assert r is not v
    np.testing.assert_array_equal(r.value, [0, 0, 0])
    assert r.get_metadata() == {"a": 1, "b": 5, "c": 6}
    # the original is unchanged
    assert v.get_metadata() == {"a": 1, "b": 2}
    np.testing.assert_array_equal(v.value, [1, 1])


def test_replace_metadata_only_keeps_value():
    v = nnx.Param(jnp.ones(2), a=1)
    r = v.replace(a=2)
    assert r.value is v.value
    assert r.a == 2 and v.a == 1


def test_copy_is_independent():
    v = nnx.RngKey(jax.random.key(0), tag="params")
    c = v.copy()
    assert type(c) is nnx.RngKey
    assert c is not v
    assert c.tag == "params"
    c.set_metadata("tag", "other")
    c.value = jax.random.key(1)
    assert v.tag == "params"
    np.testing.assert_array_equal(jax.random.key_data(v.value), jax.random.key_data(jax.random.key(0)))


def test_equality_is_elementwise_hash_is_identity():
    a = nnx.Param(jnp.asarray([1, 2]))
    b = nnx.Param(jnp.asarray([1, 3]))
    np.testing.assert_array_equal(a == b, [True, False])
    assert hash(a) == object.__hash__(a)
    twin = nnx.Param(jnp.asarray([1, 2]))
    assert len({a, b, a, twin}) == 3  # set membership by identity, not by value


@pytest.mark.parametrize("cls", ALL_TYPES)
def test_repr_shows_type_shape_dtype(cls):
    v = cls(jnp.zeros((2, 3), jnp.float32), tag="t")
    text = repr(v)
    assert text.startswith(cls.__name__ + "(")
    assert "(2, 3)" in text
    assert "float32" in text
    assert "tag='t'" in text


def test_repr_of_non_array_value():
    assert repr(nnx.Param(3)) == "Param(3)"
    assert repr(nnx.Cache(None, a=1)) == "Cache(None, a=1)"


# ---------------------------------------------------------------------------------------
# the reference's Variable API: annotations, metadata forms, hooks, names
# ---------------------------------------------------------------------------------------


def test_generic_subscript_for_annotations_and_subclassing():
    import typing

    alias = nnx.Param[jax.Array]
    assert typing.get_origin(alias) is nnx.Param and typing.get_args(alias) == (jax.Array,)

    class Mine(nnx.Variable[jax.Array]):
        pass

    assert issubclass(Mine, nnx.Variable)
    leaves = jax.tree.leaves(Mine(jnp.ones(2)))
    assert len(leaves) == 1 and leaves[0].shape == (2,)


def test_get_metadata_by_name_and_default():
    v = nnx.Param(0, note="a")
    assert v.get_metadata("note") == "a"
    assert v.get_metadata("other", 7) == 7
    with pytest.raises(KeyError, match="note"):
        v.get_metadata("other")
    assert v.get_metadata(exclude_required=True) == {"note": "a"}


def test_set_metadata_forms_and_delete():
    v = nnx.Param(0, a=1)
    v.set_metadata(b=2, c=3)
    assert v.get_metadata() == {"a": 1, "b": 2, "c": 3}
    v.set_metadata({"z": 9})
    assert v.get_metadata() == {"z": 9}
    assert v.has_metadata("z") and not v.has_metadata("a")
    v.del_metadata("z")
    assert v.get_metadata() == {}
    with pytest.raises(TypeError):
        v.set_metadata("a", 1, b=2)


def test_set_metadata_does_not_touch_a_copy_sharing_the_dict():
    v = nnx.Param(0, a=1)
    c = v.copy()
    v.set_metadata(a=2)
    v.del_metadata("a")
    assert c.a == 1


def test_attributes_of_the_value_are_reachable():
    v = nnx.Param(jnp.arange(4.0))
    assert float(v.sum()) == 6.0
    assert v.astype(jnp.int32).dtype == jnp.int32
    assert v.reshape(2, 2).shape == (2, 2)


def test_raw_value_skips_hooks():
    class Scaled(nnx.Variable):
        def on_get_value(self, value):
            return value * 10

        def on_set_value(self, value):
            return value + 1

    v = Scaled(jnp.ones(2))
    np.testing.assert_array_equal(v.raw_value, [1, 1])
    np.testing.assert_array_equal(v.value, [10, 10])
    np.testing.assert_array_equal(v[...], [10, 10])
    np.testing.assert_array_equal(v + 0, [10, 10])  # arithmetic reads through the hook
    v.value = jnp.zeros(2)
    np.testing.assert_array_equal(v.raw_value, [1, 1])
    v.raw_value = jnp.zeros(2)
    np.testing.assert_array_equal(v.get_raw_value(), [0, 0])
    v.set_raw_value(jnp.full(2, 3.0))
    np.testing.assert_array_equal(v.value, [30, 30])


def test_create_value_hook_and_override():
    class Halved(nnx.Variable):
        def on_create_value(self, value):
            return value / 2

    class AsArray(nnx.Variable):
        def create_value(self, value):
            return jnp.asarray(value, jnp.float32)

    np.testing.assert_array_equal(Halved(jnp.full(2, 4.0)).raw_value, [2, 2])
    made = AsArray([1, 2])
    assert isinstance(made.raw_value, jax.Array) and made.dtype == jnp.float32


def test_get_value_override_is_what_value_reads():
    class Clipped(nnx.Variable):
        def get_value(self, *, index=None):
            return jnp.clip(self.raw_value, 0, 1)

    v = Clipped(jnp.asarray([-2.0, 0.5, 3.0]))
    np.testing.assert_array_equal(v.value, [0, 0.5, 1])
    np.testing.assert_array_equal(jnp.asarray(v), [0, 0.5, 1])


def test_hooks_under_jit_see_and_write_the_raw_value():
    class Doubled(nnx.Variable):
        def on_get_value(self, value):
            return 2 * value

    class M(nnx.Module):
        def __init__(self):
            self.w = Doubled(jnp.ones(2))

    m = M()

    @nnx.jit
    def step(m):
        out = m.w.value  # 2 * raw
        m.w.value = out  # raw becomes 2, read gives 4
        return out

    np.testing.assert_array_equal(step(m), [2, 2])
    np.testing.assert_array_equal(m.w.raw_value, [2, 2])
    np.testing.assert_array_equal(m.w.value, [4, 4])


def test_with_metadata_gives_the_layer_variable_metadata_and_hooks():
    seen = []
    init = nnx.with_metadata(
        nnx.initializers.ones, out_sharding=("in", "out"), on_get_value=lambda v, x: x * 3,
        on_add_axis=lambda v, i, name: seen.append((i, name)),
    )
    layer = nnx.Linear(2, 3, kernel_init=init, rngs=nnx.Rngs(0))
    assert layer.kernel.out_sharding == ("in", "out")
    np.testing.assert_array_equal(layer.kernel.raw_value, np.ones((2, 3)))
    np.testing.assert_array_equal(layer.kernel.value, np.full((2, 3), 3.0))
    assert init.__name__ == nnx.initializers.ones.__name__
    from plait.variable_axes import add_axis

    add_axis(nnx.state(layer, nnx.Param), 0, "layers")
    assert seen == [(0, "layers")]


def test_add_and_remove_axis_call_hooks_with_the_reference_signature():
    from plait.variable_axes import add_axis, remove_axis

    calls = []

    class Tracked(nnx.Variable):
        def on_add_axis(self, axis_index, axis_name):
            calls.append(("add", axis_index, axis_name))

        def on_remove_axis(self, axis_index, axis_name):
            calls.append(("remove", axis_index, axis_name))

    v = Tracked(jnp.ones((2, 3)), out_sharding=("a", "b"))
    add_axis({"x": v, "y": jnp.ones(2)}, 1, "batch")
    assert v.out_sharding == ("a", "batch", "b")
    remove_axis([v], 1, "batch")
    assert v.out_sharding == ("a", "b")
    assert calls == [("add", 1, "batch"), ("remove", 1, "batch")]
    with pytest.raises(nnx.VariableError, match="no 'batch' at axis 0"):
        remove_axis([v], 0, "batch")


def test_axis_helpers_take_the_reference_transform_metadata():
    from plait.variable_axes import add_axis, remove_axis

    v = nnx.Param(jnp.ones((2, 2)), out_sharding=("a", "b"), logical=("x", "y"), other=3)
    meta = {nnx.PARTITION_NAME: "layers", "logical": "stack"}
    add_axis([v], 0, meta)
    assert v.out_sharding == ("layers", "a", "b") and v.logical == ("stack", "x", "y") and v.other == 3
    remove_axis([v], 0, meta)
    assert v.out_sharding == ("a", "b") and v.logical == ("x", "y")
    with pytest.raises(nnx.VariableError, match="PARTITION_NAME"):
        add_axis([v], 0, {"logical": "stack"})


def test_add_axis_pads_a_short_out_sharding():
    from plait.variable_axes import add_axis

    v = nnx.Param(jnp.ones((2, 2, 2)), out_sharding=("a",))
    add_axis([v], 2, "b")
    assert v.out_sharding == ("a", None, "b")


def test_variable_names_registry():
    assert nnx.variable_type_from_name("params") is nnx.Param
    assert nnx.variable_name_from_type(nnx.BatchStat) == "batch_stats"
    with pytest.raises(nnx.VariableError, match="register_variable_name"):
        nnx.variable_type_from_name("not_registered_name")
    made = nnx.variable_type_from_name("my_fresh_collection", allow_register=True)
    assert issubclass(made, nnx.Variable) and nnx.variable_name_from_type(made) == "my_fresh_collection"

    class Unnamed(nnx.Variable):
        pass

    with pytest.raises(nnx.VariableError, match="no registered collection name"):
        nnx.variable_name_from_type(Unnamed)
    assert nnx.variable_name_from_type(Unnamed, allow_register=True) == "Unnamed"
    with pytest.raises(nnx.VariableError, match="overwrite=True"):
        nnx.register_variable_name("params", Unnamed)


def test_variable_holding_a_function_is_callable():
    act = nnx.Variable(jnp.tanh)
    np.testing.assert_allclose(act(jnp.ones(2)), np.tanh(np.ones(2)), rtol=1e-6)
    with pytest.raises(nnx.VariableError, match="not callable"):
        nnx.Param(jnp.ones(2))(1)


class _Holder(nnx.Module):
    def __init__(self):
        self.linear = nnx.Linear(2, 3, rngs=nnx.Rngs(0))


def test_truth_of_multi_element_variable_names_it():
    m = _Holder()
    with pytest.raises(nnx.VariableError) as info:
        if m.linear.kernel:
            pass
    msg = str(info.value)
    assert "Param" in msg and "shape=(2, 3)" in msg and "_Holder.linear.kernel" in msg
    assert "ambiguous" in msg and ".any()" in msg
    assert isinstance(info.value, ValueError)  # numpy's ambiguity error was a ValueError
    assert bool(nnx.Param(jnp.ones(1))) and not bool(nnx.Variable(0))


def test_truth_of_traced_variable_names_it():
    m = _Holder()
    m.flag = nnx.Variable(jnp.asarray(True))
    assert bool(m.flag)

    @nnx.jit
    def f(m):
        return 1 if m.flag else 0

    with pytest.raises(nnx.VariableError, match="traced") as info:
        f(m)
    assert "Variable" in str(info.value) and "flag" in str(info.value) and "jnp.where" in str(info.value)


def test_variable_state_is_variable_with_type():
    v = nnx.Param(jnp.ones(2))
    assert nnx.VariableState is nnx.Variable
    assert v.type is nnx.Param
    s = v.to_state()
    assert type(s) is nnx.Param and s is not v and s.raw_value is v.raw_value


@pytest.mark.parametrize("mode", ["hijax"])  # eager_sharding: tests/test_sharding.py; ref: tests/test_names_refs.py
def test_reference_modes_are_refused_not_ignored(mode):
    assert nnx.Param(1, **{mode: False}).get_metadata() == {}
    with pytest.raises(nnx.VariableError, match=f"{mode}=True"):
        nnx.Param(1, **{mode: True})


def test_copy_with_value_and_metadata_and_from_metadata():
    v = nnx.Param(jnp.ones(2), a=1)
    c = v.copy(jnp.zeros(2), a=2)
    assert c.a == 2 and v.a == 1 and float(c.sum()) == 0
    made = nnx.BatchStat.from_metadata(jnp.ones(3), {"x": 1})
    assert type(made) is nnx.BatchStat and made.x == 1


def test_copy_from_and_update_from_state():
    a, b = nnx.Param(jnp.ones(2), k=1), nnx.Param(jnp.zeros(2), k=2)
    a.copy_from(b)
    assert a.k == 2 and a.raw_value is b.raw_value
    with pytest.raises(nnx.VariableError, match="expected a Param"):
        a.copy_from(nnx.BatchStat(0))
    a.update_from_state(nnx.Param(jnp.full(2, 5.0), k=3))
    assert a.k == 3 and float(a.sum()) == 10
