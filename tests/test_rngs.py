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


# ---------------------------------------------------------------------------------------
# samplers, initializers and the names Rngs answers to
# ---------------------------------------------------------------------------------------


def _fold(seed, count):
    return jax.random.fold_in(jax.random.key(seed), count)


@pytest.mark.parametrize("name, args", [
    ("normal", ((2, 3),)), ("bernoulli", (0.3, (5,))), ("randint", ((3,), 0, 10)),
    ("categorical", (jnp.zeros(4), -1, (2,))),
])
def test_samplers_draw_from_the_default_stream_like_jax_random(name, args):
    rngs = nnx.Rngs(0)
    out = getattr(rngs, name)(*args)
    np.testing.assert_array_equal(out, getattr(jax.random, name)(_fold(0, 0), *args))
    assert int(rngs.default.count.value) == 1
    # and on a stream, from that stream
    rngs = nnx.Rngs(0, dropout=7)
    out = getattr(rngs.dropout, name)(*args)
    np.testing.assert_array_equal(out, getattr(jax.random, name)(_fold(7, 0), *args))
    assert int(rngs.dropout.count.value) == 1 and int(rngs.default.count.value) == 0


def test_every_reference_sampler_and_initializer_exists_with_jax_signature():
    import inspect

    from plait.rngs import INITIALIZERS, SAMPLERS

    rngs = nnx.Rngs(0)
    for name in SAMPLERS:
        if hasattr(jax.random, name):
            method = getattr(rngs, name)
            jax_params = list(inspect.signature(getattr(jax.random, name)).parameters)[1:]
            assert list(inspect.signature(method).parameters) == jax_params, name
    for name in INITIALIZERS:
        assert callable(getattr(rngs.params, name))


def test_samplers_keyword_arguments_and_inside_jit():
    rngs = nnx.Rngs(0)
    out = rngs.uniform((3,), minval=2.0, maxval=3.0, dtype=jnp.float16)
    assert out.dtype == jnp.float16 and bool(((out >= 2) & (out <= 3)).all())

    @nnx.jit
    def draw(rngs):
        return rngs.normal((2,))

    a, b = draw(rngs), draw(rngs)
    np.testing.assert_array_equal(a, jax.random.normal(_fold(0, 1), (2,)))
    np.testing.assert_array_equal(b, jax.random.normal(_fold(0, 2), (2,)))
    assert int(rngs.default.count.value) == 3


def test_keyless_initializers_draw_a_key_per_call():
    rngs = nnx.Rngs(params=0)
    init = rngs.params.lecun_normal()
    a, b = init((3, 4)), init((3, 4), jnp.float32)
    expected = jax.nn.initializers.lecun_normal()(_fold(0, 0), (3, 4))
    np.testing.assert_array_equal(a, expected)
    assert a.shape == (3, 4) and not np.array_equal(a, b)
    assert int(rngs.params.count.value) == 2
    assert rngs.glorot_uniform(in_axis=0, out_axis=1) is not None  # Rngs without default: fails on use only


def test_a_stream_named_like_a_sampler_is_the_stream():
    rngs = nnx.Rngs(0, normal=1)
    assert isinstance(rngs.normal, nnx.RngStream)
    assert rngs.uniform((2,)).shape == (2,)


def test_stream_names_still_fall_back_to_default():
    rngs = nnx.Rngs(0)
    assert rngs.params is rngs.default and rngs.anything_else is rngs.default
    assert rngs["dropout"] is rngs.default


@pytest.mark.parametrize("name", ["shape", "dtype", "value", "key", "count", "tag", "_private"])
def test_probe_and_private_names_are_not_streams(name):
    rngs = nnx.Rngs(0)
    assert not hasattr(rngs, name)
    with pytest.raises(nnx.MissingStreamError, match=f"no attribute '{name}'") as info:
        getattr(rngs, name)
    assert "rngs.STREAM.key" in str(info.value) and "streams: default" in str(info.value)
    assert getattr(nnx.Rngs(0, **{name: 1}), name).tag == name  # a real stream of that name is fine


def test_rngs_mapping_protocol():
    rngs = nnx.Rngs({"params": 0}, dropout=1)
    assert list(rngs) == ["params", "dropout"] and len(rngs) == 2
    assert dict(rngs.items()) == rngs.streams()
    assert "params" in rngs and "default" not in rngs


# ---------------------------------------------------------------------------------------
# split, broadcast, fork forms
# ---------------------------------------------------------------------------------------


def test_rngs_split_all_and_by_filter():
    rngs = nnx.Rngs(params=1, dropout=2, noise=3)
    new = rngs.split(5)
    assert all(new[n].key.value.shape == (5,) and new[n].count.value.shape == (5,) for n in ("params", "dropout"))
    assert same_key(new.params.key.value, jax.random.split(_fold(1, 0), 5))
    new = rngs.split({"params": 5, "dropout": None, ...: (2, 5)})
    assert new.params.key.value.shape == (5,) and new.noise.key.value.shape == (2, 5)
    assert new.dropout is rngs.dropout  # unsplit streams are shared, so no key is drawn twice
    with pytest.raises(nnx.RngError, match="mapping"):
        rngs.split("params")


def test_stream_split_and_broadcast():
    stream = nnx.RngStream(0, tag="x")
    s = stream.split(3)
    assert same_key(s.key.value, jax.random.split(_fold(0, 0), 3)) and s.tag == "x"
    b = nnx.Rngs(0).broadcast(4)
    keys = kd(b.default.key.value)
    assert keys.shape[0] == 4 and (keys == keys[0]).all()
    b = nnx.Rngs(params=0, dropout=1).broadcast({"params": 2})
    assert b.params.key.value.shape == (2,) and b.dropout.key.value.shape == ()


def test_fork_split_mapping():
    child = nnx.Rngs(params=0, dropout=1).fork(split={"params": 2, ...: None})
    assert child.params.key.value.shape == (2,) and child.dropout.key.value.shape == ()
    assert same_key(child.dropout.key.value, _fold(1, 0))


# ---------------------------------------------------------------------------------------
# with_rngs and fork_rngs
# ---------------------------------------------------------------------------------------


class _Pair(nnx.Module):
    def __init__(self):
        self.rngs = nnx.Rngs(params=0, dropout=1)
        self.again = self.rngs  # shared
        self.w = nnx.Param(jnp.ones(2))


def test_with_rngs_on_a_module_copies_modules_shares_variables():
    m = _Pair()
    new = nnx.with_rngs(m, split={"params": 4}, fork="dropout")
    assert new is not m and new.rngs is new.again and new.rngs is not m.rngs
    assert new.w is m.w  # Variables other than the new streams' are shared, as in the reference
    assert new.rngs.params.key.value.shape == (4,)
    assert same_key(new.rngs.params.key.value, jax.random.split(_fold(0, 0), 4))
    assert same_key(new.rngs.dropout.key.value, _fold(1, 0))
    assert int(m.rngs.params.count.value) == 1 and int(m.rngs.dropout.count.value) == 1
    assert m.rngs.params.key.value.shape == ()


def test_with_rngs_untouched_streams_share_their_state():
    rngs = nnx.Rngs(params=0, dropout=1)
    new = nnx.with_rngs(rngs, split={"params": 2})
    assert new.dropout.key is rngs.dropout.key and new.dropout.count is rngs.dropout.count
    a, b = new.dropout(), rngs.dropout()
    assert not same_key(a, b)  # one counter: no repeated keys


def test_with_rngs_only_and_broadcast_and_catch_all():
    rngs = nnx.Rngs(params=0, dropout=1)
    new = nnx.with_rngs(rngs, broadcast=3, only="params")
    assert new.params.key.value.shape == (3,) and new.dropout.key.value.shape == ()
    new = nnx.with_rngs(rngs, split={"params": 2}, fork=...)  # the catch-all fork yields to split
    assert new.params.key.value.shape == (2,) and int(new.dropout.count.value) == 0


def test_with_rngs_conflicting_rules_name_the_stream():
    with pytest.raises(nnx.RngError, match="'params'.*several rules"):
        nnx.with_rngs(nnx.Rngs(params=0), split={"params": 2}, fork="params")


def test_with_rngs_decorator_and_modes():
    @nnx.with_rngs(split=3)
    def shapes(rngs):
        return rngs.default.key.value.shape

    rngs = nnx.Rngs(0)
    assert shapes(rngs) == (3,) and rngs.default.key.value.shape == ()
    assert nnx.with_rngs(rngs, split=2, graph=False).default.key.value.shape == (2,)
    with pytest.raises(nnx.RngError, match="graph_updates"):
        nnx.with_rngs(rngs, split=2, graph_updates=True)


def test_fork_rngs_in_place_restores_and_keeps_the_draw():
    m = _Pair()
    with nnx.fork_rngs(m, split={"params": 2, ...: None}):
        assert m.rngs.params.key.value.shape == (2,)
        assert same_key(m.rngs.dropout.key.value, _fold(1, 0))
        assert int(m.rngs.dropout.count.value) == 0
    assert m.rngs.params.key.value.shape == () and same_key(m.rngs.dropout.key.value, jax.random.key(1))
    assert int(m.rngs.dropout.count.value) == 1  # the fork consumed a draw: the next fork differs


def test_fork_rngs_decorator_and_copy():
    @nnx.fork_rngs()
    def key_of(rngs):
        return rngs.default.key.value

    rngs = nnx.Rngs(0)
    assert same_key(key_of(rngs), _fold(0, 0)) and same_key(key_of(rngs), _fold(0, 1))
    assert same_key(rngs.default.key.value, jax.random.key(0))
    copy = nnx.fork_rngs(rngs, graph_updates=False)
    assert copy is not rngs and same_key(copy.default.key.value, _fold(0, 2))


def test_reseed_policies():
    rngs = nnx.Rngs(0)
    with nnx.split_rngs(rngs, splits=3):
        with pytest.raises(nnx.RngError, match="match_shape"):
            nnx.reseed(rngs, default=1)
        nnx.reseed(rngs, default=1, policy="match_shape")
        assert same_key(rngs.default.key.value, jax.random.split(jax.random.key(1), 3))
    with pytest.raises(nnx.RngError, match="policy"):
        nnx.reseed(rngs, default=1, policy="sometimes")


def test_split_rngs_graph_updates_false_returns_a_split_copy():
    rngs = nnx.Rngs(params=0, dropout=1)
    new = nnx.split_rngs(rngs, splits=5, only="params", graph_updates=False)
    assert new.params.key.value.shape == (5,) and new.dropout.key.value.shape == ()
    assert same_key(new.params.key.value, jax.random.split(_fold(0, 0), 5))
    assert rngs.params.key.value.shape == () and int(rngs.params.count.value) == 1

    @nnx.split_rngs(splits=2, graph_updates=False)
    def shape_of(rngs):
        return rngs.default.key.value.shape

    rngs = nnx.Rngs(0)
    assert shape_of(rngs) == (2,) and rngs.default.key.value.shape == ()
    assert nnx.split_rngs(rngs, splits=1, squeeze=True, graph_updates=False).default.key.value.shape == ()
