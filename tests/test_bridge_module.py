"""nnx.bridge.Module: plait modules written like Linen ones (setup, @compact, self.param,
init/apply, auto-named submodules), and nnx_in_bridge_mdl / linen_in_bridge_mdl.

The comparison tests define the same modules against plait and against the reference and
check paths, shapes, values and outputs agree."""

import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import plait as nnx


def _shapes(tree):
    return jax.tree.map(jnp.shape, dict(tree))


def _same(ours, theirs):
    ours, theirs = jax.tree.map(np.asarray, dict(ours)), jax.tree.map(np.asarray, dict(theirs))
    assert jax.tree.structure(ours) == jax.tree.structure(theirs)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def _models(lib):
    """The same Linen-style modules, written against `lib` (plait or flax.nnx)."""
    bridge = lib.bridge

    class Dense(bridge.Module):
        features: int
        use_bias: bool = True

        @bridge.compact
        def __call__(self, x):
            w = self.param("kernel", lib.initializers.lecun_normal(), (x.shape[-1], self.features))
            y = x @ w
            if self.use_bias:
                y = y + self.param("bias", lib.initializers.normal(0.1), (self.features,))
            return y

    class MLP(bridge.Module):
        hidden: int
        out: int

        @bridge.compact
        def __call__(self, x):
            x = jax.nn.relu(Dense(self.hidden)(x))
            x = Dense(self.hidden, use_bias=False)(x)
            return Dense(self.out, name="head")(x)

    class Encoder(bridge.Module):  # setup style, holding a compact submodule
        def setup(self):
            self.mlp = MLP(4, 3)
            self.scale = self.param("scale", lib.initializers.ones, (3,))
            self.count = self.variable("counts", "count", jnp.zeros, (), jnp.int32)

        def __call__(self, x):
            self.count[...] += 1
            return self.mlp(x) * self.scale

    class Noisy(bridge.Module):
        @bridge.compact
        def __call__(self, x):
            w = self.param("w", lib.initializers.uniform(), x.shape[-1:])
            mean = self.variable("batch_stats", "mean", jnp.zeros, x.shape[-1:])
            mean[...] = 0.9 * mean[...] + 0.1 * x.mean(0)
            return x * w + jax.random.uniform(self.make_rng("dropout"), x.shape)

    return Dense, MLP, Encoder, Noisy


@pytest.fixture(scope="module")
def flax_nnx():
    return pytest.importorskip("flax.nnx")


X = jnp.arange(6.0).reshape(2, 3) / 6


def test_compact_paths_values_and_outputs_match_the_reference(flax_nnx):
    (_, mlp, *_), (_, ref_mlp, *_) = _models(nnx), _models(flax_nnx)
    ours, theirs = mlp(4, 2).init(0, X), ref_mlp(4, 2).init(0, X)
    assert _shapes(ours) == _shapes(theirs) == {"params": {
        "Dense_0": {"bias": (4,), "kernel": (3, 4)}, "Dense_1": {"kernel": (4, 4)},
        "head": {"bias": (2,), "kernel": (4, 2)}}}
    _same(ours, theirs)
    np.testing.assert_allclose(mlp(4, 2).apply(ours, X), ref_mlp(4, 2).apply(theirs, X), rtol=1e-6)
    # given the same params (not the same init), the outputs agree too
    params = jax.tree.map(lambda a: a + 1.0, ours)
    np.testing.assert_allclose(mlp(4, 2).apply(params, X), ref_mlp(4, 2).apply(params, X), rtol=1e-6)


def test_setup_style_and_write_back_match_the_reference(flax_nnx):
    (*_, enc, _), (*_, ref_enc, _) = _models(nnx), _models(flax_nnx)
    ours, theirs = enc().init({"params": jax.random.key(3)}, X), ref_enc().init({"params": jax.random.key(3)}, X)
    assert _shapes(ours) == _shapes(theirs)
    assert sorted(ours["params"]) == ["mlp", "scale"] and sorted(ours["params"]["mlp"]) == ["Dense_0", "Dense_1", "head"]
    _same(ours, theirs)
    y, updates = enc().apply(ours, X, mutable="counts")
    y_ref, updates_ref = ref_enc().apply(theirs, X, mutable="counts")
    np.testing.assert_allclose(y, y_ref, rtol=1e-6)
    assert int(updates["counts"]["count"]) == int(updates_ref["counts"]["count"]) == 2
    _same(updates, updates_ref)
    # mutable=False: the output only, and the module you hold is never changed
    module = enc()
    assert module.apply(ours, X).shape == (2, 3)
    assert module.variables == {} and module.scope is None


def test_rng_streams_and_batch_stats_match_the_reference(flax_nnx):
    (*_, noisy), (*_, ref_noisy) = _models(nnx), _models(flax_nnx)
    keys = {"params": jax.random.key(1), "dropout": jax.random.key(2)}
    ours, theirs = noisy().init(keys, X), ref_noisy().init(keys, X)
    _same(ours, theirs)
    out = noisy().apply(ours, X, rngs={"dropout": jax.random.key(5)}, mutable=["batch_stats"])
    ref = ref_noisy().apply(theirs, X, rngs={"dropout": jax.random.key(5)}, mutable=["batch_stats"])
    np.testing.assert_allclose(out[0], ref[0], rtol=1e-6)
    _same(out[1], ref[1])
    assert not np.allclose(out[1]["batch_stats"]["mean"], ours["batch_stats"]["mean"])
    other = noisy().apply(ours, X, rngs={"dropout": jax.random.key(6)})
    assert not np.allclose(other, out[0])


def test_auto_names_count_per_class_and_explicit_names_win():
    class Leaf(nnx.bridge.Module):
        @nnx.bridge.compact
        def __call__(self, x):
            return x * self.param("w", nnx.initializers.ones, ())

    class Tree(nnx.bridge.Module):
        @nnx.bridge.compact
        def __call__(self, x):
            x = Leaf()(Leaf()(x))
            self.alias = Leaf(name="zzz")  # attached as `zzz` (INIT_PARENT) before `alias` in the walk
            x = self.alias(x)
            return nnx.bridge.current_module() is self, x

    (is_self, _), variables = Tree().init_with_output(0, jnp.ones(2))
    assert is_self
    assert sorted(variables["params"]) == ["Leaf_0", "Leaf_1", "zzz"]
    with pytest.raises(nnx.GraphError, match=r"`Tree.zzz`: two submodules named 'zzz'"):
        class Twice(nnx.bridge.Module):
            @nnx.bridge.compact
            def __call__(self, x):
                return Leaf(name="zzz")(Leaf(name="zzz")(x))
        Twice.__name__ = "Tree"
        Twice().init(0, jnp.ones(2))


def test_attr_priority_orders_the_graph_walk_like_the_reference(flax_nnx):
    def model(lib):
        class Leaf(lib.bridge.Module):
            @lib.bridge.compact
            def __call__(self, x):
                return x * self.param("w", lib.initializers.ones, ())

        class Top(lib.bridge.Module):
            @lib.bridge.compact
            def __call__(self, x):
                self.abc = Leaf(name="xyz")
                return self.abc(x)
        return Top

    ours, theirs = model(nnx)().init(0, jnp.ones(2)), model(flax_nnx)().init(0, jnp.ones(2))
    assert _shapes(ours) == _shapes(theirs) == {"params": {"xyz": {"w": ()}}}
    assert [p.name for p in nnx.bridge.AttrPriority] == ["HIGH", "INIT_PARENT", "DEFAULT", "LOW"]


def test_a_submodule_called_twice_in_one_call_keeps_its_variables():
    # Linen's meaning; the reference re-creates the submodule and initializes it again
    class Dense(nnx.bridge.Module):
        @nnx.bridge.compact
        def __call__(self, x):
            return x @ self.param("w", nnx.initializers.lecun_normal(), (x.shape[-1], 2))

    class Inner(nnx.bridge.Module):
        @nnx.bridge.compact
        def __call__(self, x):
            return Dense()(x)

    class Outer(nnx.bridge.Module):
        def setup(self):
            self.inner = Inner()

        def __call__(self, x):
            return self.inner(x), self.inner(x)

    variables = Outer().init(0, jnp.ones((1, 2)))
    a, b = Outer().apply(variables, jnp.ones((1, 2)))
    np.testing.assert_array_equal(a, b)
    assert _shapes(variables) == {"params": {"inner": {"Dense_0": {"w": (2, 2)}}}}


def test_training_under_jit_and_nnx_jit():
    dense, *_ = _models(nnx)
    model = dense(3)
    x, y = jnp.ones((4, 2)), jnp.zeros((4, 3))
    params = model.init(0, x)["params"]

    @jax.jit
    def step(params):
        def loss(p):
            return jnp.mean((model.apply({"params": p}, x) - y) ** 2)

        grads = jax.grad(loss)(params)
        return jax.tree.map(lambda p, g: p - 0.1 * g, params, grads), loss(params)

    new, loss0 = step(params)
    _, loss1 = step(new)
    assert float(loss1) < float(loss0)
    jitted = nnx.jit(lambda m, v, x: m.apply(v, x, mutable=True))
    out, variables = jitted(model, {"params": params}, x)
    np.testing.assert_allclose(out, model.apply({"params": params}, x), rtol=1e-6)
    assert model.scope is None and model.variables == {}


def test_plait_and_linen_submodules_match_the_reference(flax_nnx):
    nn = pytest.importorskip("flax.linen")

    def model(lib):
        class Counter(lib.Module):
            def __init__(self, rngs):
                self.linear = lib.Linear(3, 4, rngs=rngs)
                self.count = lib.BatchStat(jnp.zeros(()))

            def __call__(self, x):
                self.count[...] += 1
                return self.linear(x)

        class Compact(lib.bridge.Module):
            @lib.bridge.compact
            def __call__(self, x):
                h = lib.bridge.nnx_in_bridge_mdl(lambda r: Counter(r))(x)
                return lib.bridge.linen_in_bridge_mdl(nn.Dense(2))(h)

        class Setup(lib.bridge.Module):
            def setup(self):
                self.counter = lib.bridge.nnx_in_bridge_mdl(lambda r: Counter(r))
                self.dense = lib.bridge.linen_in_bridge_mdl(nn.Dense(2))

            def __call__(self, x):
                return self.dense(self.counter(x))
        return Compact, Setup

    for ours_cls, ref_cls in zip(model(nnx), model(flax_nnx)):
        ours, theirs = ours_cls().init(0, X), ref_cls().init(0, X)
        assert _shapes(ours) == _shapes(theirs)
        _same(ours, theirs)
        out, updates = ours_cls().apply(ours, X, mutable=True)
        ref_out, ref_updates = ref_cls().apply(theirs, X, mutable=True)
        np.testing.assert_allclose(out, ref_out, rtol=1e-6)
        _same(updates["batch_stats"], ref_updates["batch_stats"])


def test_with_partitioning_gives_linen_boxes(flax_nnx):
    nn = pytest.importorskip("flax.linen")

    class Linear(nnx.bridge.Module):
        @nnx.bridge.compact
        def __call__(self, x):
            init = nnx.bridge.with_partitioning(nnx.initializers.uniform(), ("in", "out"))
            return x @ self.param("w", init, (x.shape[-1], 5))

    variables = Linear().init(0, X)
    assert isinstance(variables["params"]["w"], nn.Partitioned)
    assert variables["params"]["w"].names == ("in", "out")
    assert Linear().apply(variables, X).shape == (2, 5)


def test_init_with_output_mutable_picks_the_collections():
    *_, noisy = _models(nnx)
    _, variables = noisy().init_with_output({"params": 0, "dropout": 1}, X, mutable="batch_stats")
    assert list(variables) == ["batch_stats"]


def test_misuse_is_refused_with_the_path_and_the_fix():
    dense, mlp, _, noisy = _models(nnx)
    with pytest.raises(nnx.GraphError, match=r"(?s)Dense.param\(.w.\): this Dense is not running.*init/apply"):
        dense(2).param("w", nnx.initializers.ones, (2,))
    with pytest.raises(nnx.GraphError, match="not running"):
        dense(2).make_rng("dropout")

    class Clash(nnx.bridge.Module):
        @nnx.bridge.compact
        def __call__(self, x):
            self.variable("batch_stats", "w", jnp.zeros, (2,))
            return self.param("w", nnx.initializers.ones, (2,))

    with pytest.raises(nnx.GraphError, match=r"(?s)`Clash.w` is a BatchStat.*another name"):
        Clash().init(0, X)
    variables = mlp(4, 2).init(0, X)
    variables["params"]["head"]["kernel"] = jnp.zeros((4, 7))
    with pytest.raises(nnx.GraphError, match=r"(?s)`MLP.head.kernel` has shape \(4, 7\).*makes shape \(4, 2\)"):
        mlp(4, 2).apply(variables, X)
    with pytest.raises(nnx.MissingStreamError, match="dropout"):
        noisy().init({"params": 0}, X)
    with pytest.raises(nnx.GraphError, match="outside a running nnx.bridge.Module"):
        nnx.bridge.nnx_in_bridge_mdl(lambda r: nnx.Linear(2, 2, rngs=r))

    class Parent(nnx.bridge.Module):
        @nnx.bridge.compact
        def __call__(self):
            return dense(2, parent=self)

    with pytest.raises(nnx.GraphError, match="parent= can only be None"):
        Parent().init(0)

    class Unattached(nnx.bridge.Module):
        @nnx.bridge.compact
        def __call__(self):
            return dense(2, parent=None).scope

    assert Unattached().apply({}) is None
    with pytest.raises(nnx.GraphError, match="not an nnx.bridge.Module"):
        nnx.bridge.compact(lambda self: None)(object())
    with pytest.raises(nnx.GraphError, match="method='nope'"):
        dense(2).apply({}, X, method="nope")


def test_module_stack_and_methods():
    seen = []

    class Foo(nnx.bridge.Module):
        def setup(self):
            seen.append(("setup", nnx.bridge.current_module() is self, nnx.bridge.current_context().in_compact))

        def __call__(self):
            seen.append(("call", nnx.bridge.current_module() is self, self.is_initializing()))

        def other(self, k):
            return k + 1

    Foo().apply({})
    assert seen == [("setup", True, False), ("call", True, False)]
    assert Foo().apply({}, 1, method="other") == Foo().apply({}, 1, method=Foo.other) == 2
    assert nnx.bridge.current_context() is None and isinstance(Foo(), nnx.Module)
    assert hash(Foo()) != hash(Foo())  # a module is its identity, though dataclass-equal


def test_bridge_module_needs_no_flax():
    code = textwrap.dedent("""
        import sys
        sys.modules["flax"] = None  # any import of flax fails
        import jax.numpy as jnp, plait as nnx
        class Dense(nnx.bridge.Module):
            features: int
            @nnx.bridge.compact
            def __call__(self, x):
                return x @ self.param("w", nnx.initializers.lecun_normal(), (x.shape[-1], self.features))
        class Net(nnx.bridge.Module):
            @nnx.bridge.compact
            def __call__(self, x):
                return nnx.bridge.nnx_in_bridge_mdl(lambda r: nnx.Linear(3, 3, rngs=r))(Dense(3)(x))
        v = Net().init(0, jnp.ones((1, 2)))
        print(sorted(v["params"]), Net().apply(v, jnp.ones((1, 2))).shape)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['Dense_0', 'Linear_0'] (1, 3)"


def test_a_missing_param_in_apply_names_its_path():
    _, mlp, *_ = _models(nnx)
    variables = mlp(4, 2).init(0, X)
    del variables["params"]["Dense_1"]
    with pytest.raises(nnx.GraphError, match=r"`MLP.Dense_1.kernel` is not in the variables passed to apply"):
        mlp(4, 2).apply(variables, X)
