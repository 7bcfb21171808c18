"""Tests for plait's explicit RNG streams: Rngs, RngStream, split_rngs, fork, reseed."""

from __future__ import annotations

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import plait as nnx


def kd(key) -> np.ndarray:
    """Raw key data of a typed key (or array of keys), as numpy, for exact comparison."""
    return np.asarray(jax.random.key_data(key))


def same_key(a, b) -> bool:
    return np.array_equal(kd(a), kd(b))


# ---------------------------------------------------------------------------------------
# construction
# ---------------------------------------------------------------------------------------


def test_rngs_seed_creates_default_stream():
    rngs = nnx.Rngs(0)
    assert set(rngs.streams()) == {"default"}
    assert "default" in rngs
    assert same_key(rngs.default.key.value, jax.random.key(0))
    assert rngs.default.key.value.shape == ()
    assert rngs.default.count.value.dtype == jnp.uint32
    assert int(rngs.default.count.value) == 0


def test_rngs_named_streams():
    rngs = nnx.Rngs(params=0, dropout=1)
    assert set(rngs.streams()) == {"params", "dropout"}
    assert "default" not in rngs
    assert same_key(rngs.params.key.value, jax.random.key(0))
    assert same_key(rngs.dropout.key.value, jax.random.key(1))


def test_rngs_seed_and_named_streams():
    rngs = nnx.Rngs(3, dropout=1)
    assert set(rngs.streams()) == {"default", "dropout"}
    assert same_key(rngs.default.key.value, jax.random.key(3))
    assert same_key(rngs.dropout.key.value, jax.random.key(1))


def test_stream_state_is_rng_variables_with_tag():
    rngs = nnx.Rngs(params=0)
    assert isinstance(rngs.params, nnx.RngStream)
    assert type(rngs.params.key) is nnx.RngKey
    assert type(rngs.params.count) is nnx.RngCount
    assert isinstance(rngs.params.key, nnx.RngState)
    assert rngs.params.key.tag == "params"
    assert rngs.params.count.tag == "params"


@pytest.mark.parametrize(
    "seed",
    [
        pytest.param(7, id="int"),
        pytest.param(np.int64(7), id="numpy-int"),
        pytest.param(jax.random.key(7), id="typed-key"),
        pytest.param(jax.random.PRNGKey(7), id="raw-uint32-key-data"),
        pytest.param(np.asarray(jax.random.PRNGKey(7)), id="numpy-uint32-key-data"),
    ],
)
def test_seed_forms_give_the_same_stream(seed):
    rngs = nnx.Rngs(seed, dropout=seed)
    expected = jax.random.key(7)
    for stream in (rngs.default, rngs.dropout):
        key = stream.key.value
        assert jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
        assert key.shape == ()
        assert same_key(key, expected)
    # and the draws agree with a stream seeded by the plain int
    assert same_key(rngs.dropout(), nnx.Rngs(dropout=7).dropout())


@pytest.mark.parametrize("bad", ["zero", 1.5, object()])
def test_bad_seed_raises_rng_error(bad):
    with pytest.raises(nnx.RngError, match="expected an int seed or a JAX key"):
        nnx.Rngs(params=bad)


# ---------------------------------------------------------------------------------------
# drawing
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "draw",
    [
        pytest.param(lambda r: r.params(), id="attribute"),
        pytest.param(lambda r: r["params"](), id="item"),
    ],
)
def test_draw_is_fold_in_of_key_and_count(draw):
    rngs = nnx.Rngs(params=5)
    stream = rngs.params
    base = stream.key.value
    for expected_count in range(4):
        assert int(stream.count.value) == expected_count
        key = draw(rngs)
        assert key.shape == ()
        assert same_key(key, jax.random.fold_in(base, expected_count))
        assert int(stream.count.value) == expected_count + 1
    # drawing does not change the stream's key
    assert same_key(stream.key.value, base)


def test_call_draws_from_default():
    rngs = nnx.Rngs(2, params=9)
    key = rngs()
    assert same_key(key, jax.random.fold_in(jax.random.key(2), 0))
    assert int(rngs.default.count.value) == 1
    assert int(rngs.params.count.value) == 0


def test_attribute_and_item_access_share_the_stream():
    rngs = nnx.Rngs(dropout=1)
    assert rngs["dropout"] is rngs.dropout
    a = rngs.dropout()
    b = rngs["dropout"]()
    assert not same_key(a, b)
    assert int(rngs.dropout.count.value) == 2


def test_two_draws_differ():
    rngs = nnx.Rngs(0)
    k1, k2 = rngs.params(), rngs.params()
    assert not same_key(k1, k2)
    u1 = jax.random.uniform(k1, (8,))
    u2 = jax.random.uniform(k2, (8,))
    assert not np.array_equal(np.asarray(u1), np.asarray(u2))


def test_missing_stream_falls_back_to_default():
    rngs = nnx.Rngs(0, dropout=1)
    key = rngs.params()
    assert same_key(key, jax.random.fold_in(jax.random.key(0), 0))
    assert int(rngs.default.count.value) == 1
    assert int(rngs.dropout.count.value) == 0
    assert rngs["anything"] is rngs.default
    assert "params" not in rngs


def test_missing_stream_without_default_raises():
    rngs = nnx.Rngs(params=0, other=1)
    with pytest.raises(nnx.RngError) as info:
        rngs.dropout()
    msg = str(info.value)
    assert "'dropout'" in msg
    assert "params" in msg and "other" in msg  # the available streams
    assert "nnx.Rngs(dropout=0)" in msg  # how to fix it
    assert "Did you mean" not in msg  # nothing close to suggest
    # item access and rngs() fail the same way
    with pytest.raises(nnx.RngError, match="'dropout'"):
        rngs["dropout"]()
    with pytest.raises(nnx.RngError, match="'default'"):
        rngs()
    # nothing was drawn
    assert int(rngs.params.count.value) == 0


def test_missing_stream_error_is_a_value_error():
    with pytest.raises(ValueError):
        nnx.Rngs(params=0).dropout()


def test_typo_suggests_close_stream():
    rngs = nnx.Rngs(params=0, dropout=1)
    with pytest.raises(nnx.RngError) as info:
        rngs.dropuot()
    msg = str(info.value)
    assert "'dropuot'" in msg
    assert "Did you mean 'dropout'?" in msg


def test_empty_rngs_lists_no_streams():
    with pytest.raises(nnx.RngError, match=r"streams: none"):
        nnx.Rngs().params()


def test_rng_stream_standalone():
    stream = nnx.RngStream(3, tag="noise")
    k = stream()
    assert same_key(k, jax.random.fold_in(jax.random.key(3), 0))
    assert int(stream.count.value) == 1
    assert stream.tag == "noise"


def test_draw_inside_jit_matches_eager_and_advances_count():
    eager = nnx.Rngs(0)
    jitted = nnx.Rngs(0)
    draw = nnx.jit(lambda r: r.params())
    for i in range(3):
        k_jit = draw(jitted)
        k_eager = eager.params()
        assert same_key(k_jit, k_eager)
        assert int(jitted.default.count.value) == i + 1


# ---------------------------------------------------------------------------------------
# split_rngs
# ---------------------------------------------------------------------------------------


def test_split_rngs_context_manager():
    rngs = nnx.Rngs(0, dropout=1)
    key0 = rngs.dropout.key.value
    with nnx.split_rngs(rngs, splits=4) as backups:
        assert isinstance(backups, nnx.SplitBackups)
        for stream in (rngs.default, rngs.dropout):
            assert stream.key.value.shape == (4,)
            assert stream.count.value.shape == (4,)
            assert np.all(np.asarray(stream.count.value) == 0)
        # the split keys come from one draw of the stream (count 0), split 4 ways
        expected = jax.random.split(jax.random.fold_in(key0, 0), 4)
        assert same_key(rngs.dropout.key.value, expected)
        # the four keys are distinct
        assert len({tuple(row) for row in kd(rngs.dropout.key.value).tolist()}) == 4
    for stream, seed in ((rngs.default, 0), (rngs.dropout, 1)):
        assert stream.key.value.shape == ()
        assert same_key(stream.key.value, jax.random.key(seed))
        assert stream.count.value.shape == ()
        assert int(stream.count.value) == 1  # the split consumed exactly one draw


def test_split_rngs_plain_call_and_restore_rngs():
    rngs = nnx.Rngs(params=3)
    rngs.params()  # count 1 before the split
    backups = nnx.split_rngs(rngs, splits=2)
    assert rngs.params.key.value.shape == (2,)
    assert rngs.params.count.value.shape == (2,)
    nnx.restore_rngs(backups)
    assert rngs.params.key.value.shape == ()
    assert same_key(rngs.params.key.value, jax.random.key(3))
    assert int(rngs.params.count.value) == 2


def test_successive_splits_give_different_keys():
    rngs = nnx.Rngs(0)
    with nnx.split_rngs(rngs, splits=3):
        first = kd(rngs.default.key.value)
    with nnx.split_rngs(rngs, splits=3):
        second = kd(rngs.default.key.value)
    assert first.shape == second.shape == (3, 2)
    assert not np.array_equal(first, second)
    assert int(rngs.default.count.value) == 2
    # the draw after the splits is the third draw of the stream
    assert same_key(rngs.default(), jax.random.fold_in(jax.random.key(0), 2))


def test_split_rngs_decorator_splits_and_restores():
    seen = {}

    @nnx.split_rngs(splits=5)
    def f(rngs, x):
        seen["key_shape"] = rngs.default.key.value.shape
        seen["count_shape"] = rngs.default.count.value.shape
        return x + 1

    rngs = nnx.Rngs(0)
    assert f(rngs, 1) == 2
    assert seen == {"key_shape": (5,), "count_shape": (5,)}
    assert rngs.default.key.value.shape == ()
    assert same_key(rngs.default.key.value, jax.random.key(0))
    assert int(rngs.default.count.value) == 1


def test_split_rngs_decorator_keeps_function_metadata():
    @nnx.split_rngs(splits=2)
    def my_function(rngs):
        """Docstring."""

    assert my_function.__name__ == "my_function"
    assert my_function.__doc__ == "Docstring."


class _Holder(nnx.Module):
    def __init__(self, rngs):
        self.inner = nnx.Dropout(0.5, rngs=rngs)


def test_split_rngs_decorator_reaches_nested_streams():
    module_rngs = nnx.Rngs(dropout=1)
    model = _Holder(module_rngs)
    in_tuple, in_dict, in_kwarg, in_list = nnx.Rngs(2), nnx.Rngs(3), nnx.Rngs(4), nnx.Rngs(5)
    seen = {}

    @nnx.split_rngs(splits=3)
    def f(model, tup, dct, lst, *, kw):
        seen["module"] = model.inner.rngs.dropout.key.value.shape
        seen["tuple"] = tup[1].default.key.value.shape
        seen["dict"] = dct["r"].default.key.value.shape
        seen["list"] = lst[0][0].default.key.value.shape
        seen["kwarg"] = kw.default.key.value.shape

    f(model, (1, in_tuple), {"r": in_dict}, [(in_list,)], kw=in_kwarg)
    assert seen == {k: (3,) for k in ("module", "tuple", "dict", "list", "kwarg")}
    for stream in (module_rngs.dropout, in_tuple.default, in_dict.default, in_list.default, in_kwarg.default):
        assert stream.key.value.shape == ()
        assert int(stream.count.value) == 1


def test_split_rngs_decorator_splits_shared_stream_once():
    rngs = nnx.Rngs(0)
    model = _Holder(rngs)

    @nnx.split_rngs(splits=2)
    def f(model, rngs):
        return rngs.default.key.value.shape

    assert f(model, rngs) == (2,)  # not "already split"
    assert int(rngs.default.count.value) == 1


def test_split_rngs_decorator_reaches_streams_in_namedtuple():
    Pair = collections.namedtuple("Pair", "rngs other")
    seen = {}

    @nnx.split_rngs(splits=3)
    def f(pair):
        seen["shape"] = pair.rngs.default.key.value.shape

    f(Pair(nnx.Rngs(0), 1))
    assert seen["shape"] == (3,)


def test_split_rngs_decorator_restores_on_exception():
    rngs = nnx.Rngs(0)

    @nnx.split_rngs(splits=4)
    def boom(rngs):
        assert rngs.default.key.value.shape == (4,)
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        boom(rngs)
    assert rngs.default.key.value.shape == ()
    assert same_key(rngs.default.key.value, jax.random.key(0))
    assert rngs.default.count.value.shape == ()
    assert int(rngs.default.count.value) == 1


def test_split_rngs_context_manager_restores_on_exception():
    rngs = nnx.Rngs(0)
    with pytest.raises(RuntimeError):
        with nnx.split_rngs(rngs, splits=4):
            raise RuntimeError
    assert rngs.default.key.value.shape == ()
    assert same_key(rngs.default.key.value, jax.random.key(0))


def test_split_rngs_only_one_stream():
    rngs = nnx.Rngs(0, params=1, dropout=2)
    with nnx.split_rngs(rngs, splits=3, only="dropout"):
        assert rngs.dropout.key.value.shape == (3,)
        assert rngs.params.key.value.shape == ()
        assert rngs.default.key.value.shape == ()
    assert int(rngs.dropout.count.value) == 1
    assert int(rngs.params.count.value) == 0
    assert int(rngs.default.count.value) == 0


def test_split_rngs_only_in_decorator():
    seen = {}

    @nnx.split_rngs(splits=2, only="params")
    def f(rngs):
        seen["params"] = rngs.params.key.value.shape
        seen["dropout"] = rngs.dropout.key.value.shape

    f(nnx.Rngs(params=0, dropout=1))
    assert seen == {"params": (2,), "dropout": ()}


def test_split_rngs_tuple_splits():
    rngs = nnx.Rngs(0)
    with nnx.split_rngs(rngs, splits=(2, 3)):
        assert rngs.default.key.value.shape == (2, 3)
        assert rngs.default.count.value.shape == (2, 3)
        data = kd(rngs.default.key.value).reshape(6, 2)
        assert len({tuple(r) for r in data.tolist()}) == 6
    assert rngs.default.key.value.shape == ()


def test_split_rngs_squeeze():
    rngs = nnx.Rngs(0)
    with nnx.split_rngs(rngs, splits=1, squeeze=True):
        assert rngs.default.key.value.shape == ()
        assert rngs.default.count.value.shape == ()
        # a new key: one draw of the original stream
        assert same_key(rngs.default.key.value, jax.random.fold_in(jax.random.key(0), 0))
    assert same_key(rngs.default.key.value, jax.random.key(0))
    assert int(rngs.default.count.value) == 1
    # without squeeze, splits=1 adds an axis of 1
    with nnx.split_rngs(rngs, splits=1):
        assert rngs.default.key.value.shape == (1,)


def test_split_rngs_squeeze_needs_one_split():
    rngs = nnx.Rngs(0)
    with pytest.raises(nnx.RngError, match="squeeze"):
        nnx.split_rngs(rngs, splits=2, squeeze=True)
    assert rngs.default.key.value.shape == ()


def test_splitting_a_split_stream_raises():
    rngs = nnx.Rngs(dropout=0)
    with nnx.split_rngs(rngs, splits=2):
        with pytest.raises(nnx.RngError) as info:
            nnx.split_rngs(rngs, splits=3)
        msg = str(info.value)
        assert "'dropout'" in msg and "already split" in msg and "(2,)" in msg
        # the failed split left the outer split alone
        assert rngs.dropout.key.value.shape == (2,)
    assert rngs.dropout.key.value.shape == ()
    assert same_key(rngs.dropout.key.value, jax.random.key(0))


def test_nested_split_decorators_raise():
    @nnx.split_rngs(splits=2)
    @nnx.split_rngs(splits=3)
    def f(rngs):
        pass

    rngs = nnx.Rngs(0)
    with pytest.raises(nnx.RngError, match="already split"):
        f(rngs)
    assert rngs.default.key.value.shape == ()
    assert same_key(rngs.default.key.value, jax.random.key(0))


def test_drawing_from_split_stream_outside_transform_raises():
    rngs = nnx.Rngs(dropout=0)
    with nnx.split_rngs(rngs, splits=4):
        with pytest.raises(nnx.RngError) as info:
            rngs.dropout()
        msg = str(info.value)
        assert "'dropout'" in msg and "split" in msg and "(4,)" in msg
        assert np.all(np.asarray(rngs.dropout.count.value) == 0)


def test_split_rngs_rejects_function_as_node():
    with pytest.raises(TypeError, match="@nnx.split_rngs"):
        nnx.split_rngs(lambda rngs: None, splits=2)


def test_split_rngs_with_vmap_gives_each_lane_its_own_key():
    @nnx.split_rngs(splits=3)
    @nnx.vmap(axis_size=3)
    def create(rngs):
        return nnx.Linear(2, 2, rngs=rngs)

    rngs = nnx.Rngs(0)
    model = create(rngs)
    kernels = np.asarray(model.kernel.value)
    assert kernels.shape == (3, 2, 2)
    assert not np.array_equal(kernels[0], kernels[1])
    assert not np.array_equal(kernels[1], kernels[2])
    assert rngs.default.key.value.shape == ()
    assert int(rngs.default.count.value) == 1


# ---------------------------------------------------------------------------------------
# fork and reseed
# ---------------------------------------------------------------------------------------


def test_fork_gives_independent_streams():
    parent = nnx.Rngs(0, dropout=1)
    child = parent.fork()
    assert set(child.streams()) == {"default", "dropout"}
    assert child.default is not parent.default
    # each child stream is seeded by one draw of the parent's stream
    assert same_key(child.default.key.value, jax.random.fold_in(jax.random.key(0), 0))
    assert same_key(child.dropout.key.value, jax.random.fold_in(jax.random.key(1), 0))
    assert int(parent.default.count.value) == 1
    assert int(child.default.count.value) == 0
    # drawing from the child does not advance the parent, and the keys differ
    c = child.dropout()
    assert int(parent.dropout.count.value) == 1
    p = parent.dropout()
    assert not same_key(c, p)


def test_fork_function_with_split():
    parent = nnx.Rngs(0, dropout=1)
    child = nnx.fork(parent, split=3)
    for name in ("default", "dropout"):
        stream = child[name]
        assert stream.key.value.shape == (3,)
        assert stream.count.value.shape == (3,)
        assert len({tuple(r) for r in kd(stream.key.value).tolist()}) == 3
    expected = jax.random.split(jax.random.fold_in(jax.random.key(1), 0), 3)
    assert same_key(child.dropout.key.value, expected)
    # the parent stays unsplit
    assert parent.dropout.key.value.shape == ()
    assert int(parent.dropout.count.value) == 1


def test_two_forks_differ():
    parent = nnx.Rngs(0)
    a, b = parent.fork(), parent.fork()
    assert not same_key(a.default.key.value, b.default.key.value)
    assert not same_key(a(), b())


def test_reseed_resets_key_and_count():
    rngs = nnx.Rngs(0, dropout=1)
    rngs.dropout()
    rngs.dropout()
    rngs()
    nnx.reseed(rngs, dropout=7)
    assert same_key(rngs.dropout.key.value, jax.random.key(7))
    assert int(rngs.dropout.count.value) == 0
    # other streams untouched
    assert same_key(rngs.default.key.value, jax.random.key(0))
    assert int(rngs.default.count.value) == 1
    # draws now follow a fresh stream seeded with 7
    assert same_key(rngs.dropout(), nnx.Rngs(dropout=7).dropout())


def test_reseed_reaches_streams_in_modules():
    rngs = nnx.Rngs(dropout=0)
    model = _Holder(rngs)
    x = jnp.ones(64)
    first = np.asarray(model.inner(x))
    second = np.asarray(model.inner(x))
    assert not np.array_equal(first, second)
    nnx.reseed(model, dropout=0)
    assert int(rngs.dropout.count.value) == 0
    np.testing.assert_array_equal(np.asarray(model.inner(x)), first)


def test_reseed_accepts_key():
    rngs = nnx.Rngs(params=0)
    nnx.reseed(rngs, params=jax.random.key(11))
    assert same_key(rngs.params.key.value, jax.random.key(11))


# ---------------------------------------------------------------------------------------
# determinism
# ---------------------------------------------------------------------------------------


def _program(seed):
    rngs = nnx.Rngs(seed, dropout=seed + 1)
    keys = [rngs.params(), rngs.dropout(), rngs()]
    with nnx.split_rngs(rngs, splits=2):
        keys.append(rngs.dropout.key.value)
    child = rngs.fork(split=2)
    keys.append(child.default.key.value)
    layer = nnx.Linear(3, 4, rngs=rngs)
    drop = nnx.Dropout(0.5, rngs=rngs)
    out = drop(layer(jnp.ones((2, 3))))
    return [kd(k) for k in keys], np.asarray(layer.kernel.value), np.asarray(out)


def test_same_seed_same_program_bitwise_identical():
    keys1, kernel1, out1 = _program(0)
    keys2, kernel2, out2 = _program(0)
    for a, b in zip(keys1, keys2):
        np.testing.assert_array_equal(a, b)
    assert kernel1.tobytes() == kernel2.tobytes()
    assert out1.tobytes() == out2.tobytes()


def test_different_seed_different_draws():
    keys1, kernel1, _ = _program(0)
    keys2, kernel2, _ = _program(10)
    assert not np.array_equal(keys1[0], keys2[0])
    assert not np.array_equal(kernel1, kernel2)
