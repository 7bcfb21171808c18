"""nnx.bridge: Linen modules as plait modules (ToNNX) and plait modules as Linen modules
(ToLinen), compared with Flax's own bridge on the same Linen modules. Skipped without Flax."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import textwrap
import types
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

flax = pytest.importorskip("flax")
import flax.linen as nn  # noqa: E402
from flax import nnx as fnnx  # noqa: E402

import plait as nnx  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent


class Block(nn.Module):
    """Dense, BatchNorm and Dropout: params, batch_stats and a dropout stream."""

    @nn.compact
    def __call__(self, x, train: bool = True):
        x = nn.Dense(3)(x)
        x = nn.BatchNorm(use_running_average=not train)(x)
        return nn.Dropout(0.5, deterministic=not train)(x)


class Encoder(nn.Module):
    """A Linen module with a second method."""

    def setup(self):
        self.dense = nn.Dense(3)

    def __call__(self, x):
        return 2 * self.dense(x)

    def encode(self, x):
        return self.dense(x)


def _both(linen_module, x, **seeds):
    """The same Linen module wrapped by plait and by Flax, initialised with the same seeds."""
    ours = nnx.bridge.lazy_init(nnx.bridge.ToNNX(linen_module, rngs=nnx.Rngs(**seeds)), x)
    theirs = fnnx.bridge.lazy_init(fnnx.bridge.ToNNX(linen_module, rngs=fnnx.Rngs(**seeds)), x)
    return ours, theirs


def _values(module, lib) -> dict:
    flat = lib.to_flat_state(lib.state(module))
    out = {}
    for path, v in flat:
        value = [jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x
                 for x in jax.tree.leaves(v.get_value())]  # a Linen sow gives a tuple
        out[tuple(path)] = (type(v).__name__, np.asarray(value))
    return out


def _assert_same_state(ours, theirs):
    a, b = _values(ours, nnx), _values(theirs, fnnx)
    assert sorted(a) == sorted(b)
    for path in a:
        assert a[path][0] == b[path][0], path
        np.testing.assert_allclose(a[path][1], b[path][1], rtol=1e-6, err_msg=str(path))


# -- Linen -> plait ---------------------------------------------------------------------------

def test_to_nnx_has_the_reference_state_paths_types_and_values():
    x = jnp.arange(8.0).reshape(2, 4)
    ours, theirs = _both(Block(), x, params=0, dropout=1)
    _assert_same_state(ours, theirs)
    assert isinstance(ours.Dense_0["kernel"], nnx.Param)
    assert isinstance(ours.BatchNorm_0["mean"], nnx.BatchStat)
    assert ("to_nnx__rngs", "dropout", "key") in _values(ours, nnx)


def test_to_nnx_outputs_match_the_reference_call_after_call():
    x = jnp.arange(8.0).reshape(2, 4)
    ours, theirs = _both(Block(), x, params=0, dropout=1)
    for _ in range(2):  # dropout keys advance the same way
        np.testing.assert_allclose(ours(x, mutable=["batch_stats"]), theirs(x, mutable=["batch_stats"]), rtol=1e-6)
    np.testing.assert_allclose(ours(x, train=False), theirs(x, train=False), rtol=1e-6)
    _assert_same_state(ours, theirs)


def test_batch_stats_are_written_back_through_nnx_jit():
    x = jnp.arange(8.0).reshape(2, 4)
    ours, theirs = _both(Block(), x, params=0, dropout=1)
    before = ours.BatchNorm_0["mean"].get_value()
    traces = []

    def train(m, x):
        traces.append(1)
        return m(x, mutable=["batch_stats"])

    step = nnx.jit(train)
    fstep = fnnx.jit(lambda m, x: m(x, mutable=["batch_stats"]))
    for _ in range(3):
        np.testing.assert_allclose(step(ours, x), fstep(theirs, x), rtol=1e-6)
    assert not np.allclose(before, ours.BatchNorm_0["mean"].get_value())
    assert len(traces) == 1  # the write-back is by value: the structure, and the compiled step, stay
    _assert_same_state(ours, theirs)


def test_without_mutable_linen_may_not_change_a_collection():
    x = jnp.ones((2, 4))
    ours, _ = _both(Block(), x, params=0, dropout=1)
    with pytest.raises(flax.errors.ModifyScopeVariableError):
        ours(x)  # as in the reference: Linen's apply with mutable=False


def test_gradients_through_to_nnx_match_linen():
    x = jnp.arange(8.0).reshape(2, 4)
    dense = nn.Dense(3)
    model = nnx.bridge.ToNNX(dense, rngs=nnx.Rngs(0)).lazy_init(x)
    grads = nnx.grad(lambda m: jnp.sum(m(x) ** 2))(model)
    variables = {"params": {"kernel": model.kernel.get_value(), "bias": model.bias.get_value()}}
    expected = jax.grad(lambda v: jnp.sum(dense.apply(v, x) ** 2))(variables)
    np.testing.assert_allclose(grads["kernel"].get_value(), expected["params"]["kernel"], rtol=1e-6)


def test_a_wrapper_is_an_ordinary_plait_module():
    """split/merge, clone, pickle and an Optimizer step, as for any module."""
    import pickle

    optax = pytest.importorskip("optax")
    x = jnp.arange(8.0).reshape(2, 4)
    model = nnx.bridge.ToNNX(nn.Sequential([nn.Dense(3), nn.relu, nn.Dense(2)]), rngs=nnx.Rngs(0)).lazy_init(x)
    y = model(x)
    for copy in (nnx.merge(*nnx.split(model)), nnx.clone(model), pickle.loads(pickle.dumps(model))):
        np.testing.assert_allclose(copy(x), y, rtol=1e-6)
    optimizer = nnx.Optimizer(model, optax.sgd(1e-3), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer):
        loss, grads = nnx.value_and_grad(lambda m: jnp.sum(m(x) ** 2))(model)
        optimizer.update(model, grads)
        return loss

    losses = [float(step(model, optimizer)) for _ in range(3)]
    assert losses[2] < losses[0]


def test_other_collections_get_types_named_after_them():
    class Counter(nn.Module):
        @nn.compact
        def __call__(self, x):
            count = self.variable("counter", "count", lambda: jnp.zeros((), jnp.int32))
            if not self.is_initializing():
                count.value += 1
            self.sow("intermediates", "total", jnp.sum(x))
            return x

    x = jnp.ones(3)
    ours, theirs = _both(Counter(), x, params=0)
    assert type(ours.count).__name__ == type(theirs.count).__name__ == "counter"
    assert type(ours.count) is nnx.variable_type_from_name("counter")
    for _ in range(2):
        ours(x, mutable=True)
        theirs(x, mutable=True)
    assert int(ours.count.get_value()) == 2
    assert isinstance(ours.total, nnx.Intermediate)
    _assert_same_state(ours, theirs)


def test_linen_partitioning_becomes_out_sharding_and_goes_back_boxed():
    class Dot(nn.Module):
        @nn.compact
        def __call__(self, x):
            w = self.param("w", nn.with_partitioning(nn.initializers.lecun_normal(), ("in", "out")), (x.shape[-1], 2))
            return x @ w

    x = jnp.ones((1, 3))
    model = nnx.bridge.ToNNX(Dot(), rngs=nnx.Rngs(0)).lazy_init(x)
    assert model.w.out_sharding == ("in", "out")
    assert nnx.get_partition_spec(nnx.state(model))["w"].get_value() == jax.P("in", "out")
    linen_vars = nnx.bridge.variables.nnx_attrs_to_linen_vars({"w": model.w})
    assert isinstance(linen_vars["params"]["w"], nn.Partitioned)
    np.testing.assert_allclose(model(x), x @ model.w.get_value())


def test_linen_methods_are_reached_as_attributes():
    x = jnp.arange(8.0).reshape(2, 4)
    ours, theirs = _both(Encoder(), x, params=0)
    np.testing.assert_allclose(ours(x), 2 * ours.encode(x), rtol=1e-6)
    np.testing.assert_allclose(ours.encode(x), theirs.encode(x), rtol=1e-6)
    np.testing.assert_allclose(ours(x, method="encode"), theirs(x, method="encode"), rtol=1e-6)


def test_lazy_init_reaches_wrappers_inside_plait_modules_and_vmap():
    class Stacked(nnx.Module):
        def __init__(self, rngs):
            self.dense = nnx.bridge.ToNNX(nn.Dense(5, use_bias=False), rngs=rngs)

        def __call__(self, x):
            @nnx.split_rngs(splits=4)
            @nnx.vmap(in_axes=(0, 0), axis_size=4)
            def each(m, x):
                return m(x)

            return each(self.dense, x)

    x = jnp.ones((4, 3))
    model = nnx.bridge.lazy_init(Stacked(nnx.Rngs(0)), x)
    assert model.dense.kernel.shape == (4, 3, 5)
    assert model(x).shape == (4, 5)


def test_same_path_in_two_collections_is_refused():
    with pytest.raises(nnx.GraphError, match="`Dense_0.kernel`.*'params' and 'other'"):
        nnx.bridge.variables.linen_vars_to_nnx_attrs({"params": {"Dense_0": {"kernel": 1}},
                                                      "other": {"Dense_0": {"kernel": 2}}})


def test_misuse_is_refused_with_the_fix():
    with pytest.raises(nnx.GraphError, match="init_with_output/apply"):
        nnx.bridge.ToNNX(nnx.Linear(2, 3, rngs=nnx.Rngs(0)))
    with pytest.raises(nnx.RngError, match="rngs=nnx.Rngs"):
        nnx.bridge.ToNNX(nn.Dense(3), rngs=0)
    with pytest.raises(nnx.GraphError, match="lazy_init"):
        nnx.bridge.lazy_init(lambda x: x, 1)
    with pytest.raises(AttributeError, match="has no attribute 'Nothing'"):
        nnx.bridge.Nothing  # noqa: B018


# -- plait -> Linen ---------------------------------------------------------------------------

def test_to_linen_init_and_apply_match_the_reference():
    x = jnp.arange(6.0).reshape(2, 3)
    ours = nnx.bridge.to_linen(nnx.Linear, 3, 4)
    theirs = fnnx.bridge.to_linen(fnnx.Linear, 3, 4)
    ov, tv = ours.init(jax.random.key(0), x), theirs.init(jax.random.key(0), x)
    assert jax.tree.structure(ov) == jax.tree.structure(tv)
    jax.tree.map(np.testing.assert_allclose, ov, tv)
    np.testing.assert_allclose(jax.jit(ours.apply)(ov, x), theirs.apply(tv, x), rtol=1e-6)
    assert isinstance(ours, nn.Module) and isinstance(ours, nnx.bridge.ToLinen)


def test_to_linen_batch_stats_follow_linen_mutable():
    x = jnp.arange(6.0).reshape(2, 3)
    ours = nnx.bridge.to_linen(nnx.BatchNorm, 3)
    theirs = fnnx.bridge.to_linen(fnnx.BatchNorm, 3)
    ov, tv = ours.init(jax.random.key(0), x), theirs.init(jax.random.key(0), x)
    (y, o_upd), (z, t_upd) = ours.apply(ov, x, mutable=["batch_stats"]), theirs.apply(tv, x, mutable=["batch_stats"])
    np.testing.assert_allclose(y, z, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), o_upd, t_upd)
    assert not np.allclose(o_upd["batch_stats"]["mean"], ov["batch_stats"]["mean"])


def test_to_linen_as_a_linen_submodule_under_nn_vmap():
    class Outer(nn.Module):
        @nn.compact
        def __call__(self, x):
            inner = nn.vmap(nnx.bridge.ToLinen, variable_axes={"params": 0}, split_rngs={"params": True})(
                nnx.Linear, args=(x.shape[-1], 2))
            return inner(x)

    x = jnp.ones((4, 3))
    variables = Outer().init(jax.random.key(0), x)
    assert variables["params"]["VmapToLinen_0"]["kernel"].shape == (4, 3, 2)
    assert Outer().apply(variables, x).shape == (4, 2)


def test_to_linen_boxes_annotated_variables_in_nnxmeta():
    class Dot(nnx.Module):
        def __init__(self, rngs):
            init = nnx.with_partitioning(nnx.initializers.lecun_normal(), ("in", "out"))
            self.w = nnx.Param(init(rngs.params(), (3, 2)))

        def __call__(self, x):
            return x @ self.w

    variables = nnx.bridge.ToLinen(Dot).init(jax.random.key(0), jnp.ones((1, 3)))
    w = variables["params"]["w"]
    assert type(w) is nnx.bridge.NNXMeta and w.metadata["out_sharding"] == ("in", "out")
    assert nn.get_partition_spec(variables)["params"]["w"] == jax.P("in", "out")
    assert isinstance(nn.unbox(variables)["params"]["w"], jax.Array)
    # bridge.with_partitioning makes Linen's own box instead
    v = nnx.Param(nnx.bridge.with_partitioning(nnx.initializers.ones, ("a",))(jax.random.key(0), (2,)))
    assert isinstance(nnx.bridge.to_linen_var(v), nn.Partitioned)


def test_to_linen_warns_about_unknown_paths():
    model = nnx.bridge.to_linen(nnx.Linear, 3, 2)
    variables = model.init(jax.random.key(0), jnp.ones((1, 3)))
    variables = {"params": {**variables["params"], "extra": jnp.ones(2)}}
    with pytest.warns(UserWarning, match="(?s)unknown module paths.*extra"):
        model.apply(variables, jnp.ones((1, 3)))


def test_to_linen_skip_rng_and_methods():
    class AddConstant(nnx.Module):
        def __init__(self):
            self.constant = nnx.Variable(jnp.array(1.0))

        def __call__(self, x):
            return x + self.constant

        def twice(self, x):
            return x + 2 * self.constant

    model = nnx.bridge.ToLinen(AddConstant, skip_rng=True)
    y, variables = model.init_with_output(jax.random.key(0), jnp.zeros(2))
    assert list(variables) == ["Variable"] and y.tolist() == [1.0, 1.0]
    assert model.apply(variables, jnp.zeros(2), nnx_method="twice").tolist() == [2.0, 2.0]


def test_functional():
    f = nnx.bridge.functional(nnx.Linear)(2, 3)
    with pytest.raises(nnx.GraphError, match="before init"):
        f.apply({})
    state = f.init(rngs=nnx.Rngs(0))
    y, (_, new_state) = f.apply(state)(jnp.ones((1, 2)))
    assert y.shape == (1, 3) and set(new_state) == {"kernel", "bias"}


# -- without Flax -------------------------------------------------------------------------------

def test_plait_and_to_nnx_work_without_flax_and_to_linen_names_the_install():
    code = textwrap.dedent("""
        import sys
        sys.modules["flax"] = None  # `import flax` now fails, as when it is not installed
        import jax.numpy as jnp, plait as nnx

        class Scale:
            def init_with_output(self, rngs, x, method=None):
                return x, {"params": {"w": jnp.full(x.shape[-1], 2.0)}}
            def apply(self, variables, x, rngs=None, method=None, mutable=False):
                return x * variables["params"]["w"]

        model = nnx.bridge.ToNNX(Scale(), rngs=nnx.Rngs(0)).lazy_init(jnp.ones(2))
        assert model(jnp.ones(2)).tolist() == [2.0, 2.0]
        try:
            nnx.bridge.to_linen(nnx.Linear, 2, 3)
        except nnx.MissingDependencyError as e:
            assert "pip install flax" in str(e) and isinstance(e, ImportError)
            print("ok")
    """)
    env_path = str(ROOT / "src")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": env_path, "JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "ok", out.stderr[-2000:]


# -- the guide ------------------------------------------------------------------------------------

def test_the_bridge_guide_runs(monkeypatch):
    from test_docs import run_page

    # Linen's dataclasses look their module up in sys.modules; the page runs as `docs_bridge`
    monkeypatch.setitem(sys.modules, "docs_bridge", types.ModuleType("docs_bridge"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert run_page(ROOT / "docs" / "bridge.md") >= 10
