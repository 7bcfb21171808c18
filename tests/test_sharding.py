"""Sharding: annotations, logical rules, transform_metadata, eager sharding, sharded jit;
and on 8 host devices, the seed's scanned Linear+Dropout stack trained data-parallel, FSDP
and tensor-parallel against one device (with docs/sharding.md run there too)."""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import plait as nnx
from helpers import raises

ROOT = pathlib.Path(__file__).resolve().parent.parent
PARTITIONED = nnx.with_partitioning(nnx.initializers.lecun_normal(), ("embed", "mlp"))


# -- annotations -----------------------------------------------------------------------------
def test_with_partitioning_through_a_layer_and_partition_specs_follow_the_rules():
    layer = nnx.Linear(2, 4, kernel_init=nnx.with_partitioning(nnx.initializers.lecun_normal(), (None, "model")),
                       rngs=nnx.Rngs(0))
    assert layer.kernel.out_sharding == (None, "model")
    specs = nnx.get_partition_spec(nnx.state(layer))
    assert specs["kernel"].value == P(None, "model") and specs["bias"].value == P()
    assert type(specs["kernel"]) is nnx.Param  # the State keeps its Variable types
    assert nnx.get_partition_spec(layer)["kernel"].value == P(None, "model")  # a module: its state's specs
    layer2 = nnx.Linear(2, 4, kernel_init=PARTITIONED, rngs=nnx.Rngs(0))
    with nnx.logical_axis_rules([("embed", None), ("mlp", "model")]):
        assert nnx.get_partition_spec(nnx.state(layer2))["kernel"].value == P(None, "model")
    assert nnx.get_partition_spec(nnx.state(layer2))["kernel"].value == P("embed", "mlp")  # rules are a context


def test_deprecated_sharding_names_are_read_as_out_sharding():
    with pytest.warns(DeprecationWarning):
        v = nnx.Param(jnp.ones((2, 2)), sharding_names=("a", None))
    assert nnx.spmd.get_var_pspec(v) == P("a", None)
    with pytest.warns(DeprecationWarning):
        v = nnx.Param(jnp.ones((2, 2)), sharding=(None, "b"))
    assert v.out_sharding == (None, "b")


def test_a_variable_own_sharding_rules_extend_the_context_and_conflicts_are_errors():
    v = nnx.Param(jnp.ones((2, 2)), out_sharding=("embed", "mlp"), sharding_rules=[("mlp", "model")])
    with nnx.logical_axis_rules([("embed", "data")]):
        assert nnx.spmd.get_var_pspec(v) == P("data", "model")
    with nnx.logical_axis_rules([("mlp", "data")]), pytest.raises(ValueError, match="'mlp'"):
        nnx.spmd.get_var_pspec(v)


def test_two_dimensions_on_one_mesh_axis_is_an_axis_error_naming_the_axis():
    with nnx.logical_axis_rules([("batch", "data"), ("embed", "data")]):
        raises(nnx.AxisError, lambda: nnx.logical_to_mesh_axes(("batch", "embed")), "'data'", "activation_embed")


def test_logical_to_mesh_axes_merges_tuple_entries_and_keeps_mesh_names():
    assert nnx.logical_to_mesh_axes((("a", "b"), "model", None), rules=[("a", "x"), ("b", "y")]) == P(
        ("x", "y"), "model", None)


def test_with_sharding_constraint_without_a_mesh_is_the_identity():
    x = jnp.arange(4.0)
    assert nnx.with_sharding_constraint(x, ("batch",)) is x


# -- transform_metadata ------------------------------------------------------------------------
def _stack(out_axes=0, calls=None):
    @nnx.split_rngs(splits=3)
    @nnx.vmap(axis_size=3, out_axes=out_axes, transform_metadata={nnx.PARTITION_NAME: "layers"})
    def stack(rngs):
        if calls is not None:
            calls.append(1)
        return nnx.Linear(2, 2, kernel_init=PARTITIONED, rngs=rngs)

    return stack


def test_vmap_names_the_stacked_axis_at_its_out_axis():
    layers = _stack()(nnx.Rngs(0))
    assert layers.kernel.out_sharding == ("layers", "embed", "mlp") and layers.kernel.value.shape == (3, 2, 2)
    assert nnx.get_partition_spec(nnx.state(layers))["kernel"].value == P("layers", "embed", "mlp")
    assert layers.bias.get_metadata().get("out_sharding") is None  # unannotated stays unannotated
    moved = _stack(out_axes=1)(nnx.Rngs(0))
    assert moved.kernel.out_sharding == ("embed", "layers", "mlp") and moved.kernel.value.shape == (2, 3, 2)


def test_vmap_over_a_stack_sees_one_layer_and_the_caller_keeps_the_name():
    layers = _stack()(nnx.Rngs(0))
    seen = []

    @nnx.vmap(in_axes=(0, None), transform_metadata={nnx.PARTITION_NAME: "layers"})
    def apply(layer, x):
        seen.append(layer.kernel.out_sharding)
        layer.kernel.value = layer.kernel.value * 2
        return layer(x)

    before = np.asarray(layers.kernel.value)
    assert apply(layers, jnp.ones(2)).shape == (3, 2)
    assert seen == [("embed", "mlp")]
    assert layers.kernel.out_sharding == ("layers", "embed", "mlp")
    np.testing.assert_allclose(layers.kernel.value, before * 2)


def test_scan_step_sees_the_layer_without_the_name_and_eager_calls_stay_cached():
    calls = []
    stack = _stack(calls=calls)
    layers = stack(nnx.Rngs(0))
    again = stack(nnx.Rngs(1))
    assert len(calls) == 1 and again.kernel.out_sharding == ("layers", "embed", "mlp")  # cached, still named
    seen = []

    @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry, transform_metadata={nnx.PARTITION_NAME: "layers"})
    def forward(x, layer):
        seen.append(layer.kernel.out_sharding)
        layer.kernel.value = layer.kernel.value + 1
        return layer(x)

    before = np.asarray(layers.kernel.value)
    y1 = forward(jnp.ones(2), layers)
    y2 = forward(jnp.ones(2), layers)
    assert seen == [("embed", "mlp")]  # traced once: the second call reused the compiled scan
    assert layers.kernel.out_sharding == ("layers", "embed", "mlp")
    np.testing.assert_allclose(layers.kernel.value, before + 2)  # both calls wrote back
    assert not np.allclose(y1, y2)


def test_axis_hooks_run_with_the_axis_and_name():
    log = []
    init = nnx.with_metadata(nnx.initializers.ones, out_sharding=("mlp",),
                             on_add_axis=lambda v, i, name: log.append(("add", i, name)),
                             on_remove_axis=lambda v, i, name: log.append(("remove", i, name)))

    @nnx.vmap(axis_size=2, transform_metadata={nnx.PARTITION_NAME: "layers"})
    def make():
        return nnx.Param(init(None, (3,), jnp.float32))

    p = make()
    assert log == [("add", 0, "layers")] and p.out_sharding == ("layers", "mlp")

    @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry, transform_metadata={nnx.PARTITION_NAME: "layers"})
    def total(c, p):
        return c + p.value.sum()

    total(jnp.zeros(()), p)
    assert log[1:] == [("remove", 0, "layers"), ("add", 0, "layers")]


def test_transform_metadata_without_a_partition_name_is_refused():
    raises(nnx.TransformError, lambda: nnx.vmap(lambda x: x, transform_metadata={"x": 1}), "nnx.PARTITION_NAME")
    raises(nnx.TransformError, lambda: nnx.scan(lambda c, x: (c, x), transform_metadata={"x": 1}),
           "nnx.PARTITION_NAME")


def test_scanning_with_a_name_the_annotation_lacks_names_the_variable_type():
    layers = _stack()(nnx.Rngs(0))
    f = nnx.scan(lambda x, layer: layer(x), in_axes=(nnx.Carry, 0), out_axes=nnx.Carry,
                 transform_metadata={nnx.PARTITION_NAME: "blocks"})
    raises(nnx.VariableError, lambda: f(jnp.ones(2), layers), "Param", "'blocks'")


# -- eager sharding and sharded jit on one device ------------------------------------------------
def test_eager_sharding_places_annotated_variables_on_the_mesh():
    mesh = jax.make_mesh((1,), ("model",))
    init = nnx.with_partitioning(nnx.initializers.lecun_normal(), (None, "model"))
    with jax.set_mesh(mesh):
        layer = nnx.Linear(2, 4, kernel_init=init, rngs=nnx.Rngs(0))
        with nnx.use_eager_sharding(False):
            lazy = nnx.Linear(2, 4, kernel_init=init, rngs=nnx.Rngs(0))
    assert layer.kernel.value.sharding == NamedSharding(mesh, P(None, "model"))
    assert lazy.kernel.value.sharding.is_fully_replicated and lazy.kernel.out_sharding == (None, "model")
    explicit = nnx.Param(jnp.ones((2, 4)), out_sharding=(None, "model"), mesh=mesh)  # mesh metadata, no context
    assert explicit.value.sharding == NamedSharding(mesh, P(None, "model"))
    assert not isinstance(nnx.Param(jnp.ones(2), out_sharding=("x",), eager_sharding=False).value.sharding,
                          NamedSharding)


def test_jit_out_shardings_reach_a_returned_module():
    mesh = jax.make_mesh((1,), ("model",))
    init = nnx.with_partitioning(nnx.initializers.lecun_normal(), (None, "model"))
    with nnx.use_eager_sharding(False):
        abstract = nnx.eval_shape(lambda: nnx.Linear(2, 4, kernel_init=init, rngs=nnx.Rngs(0)))
    shardings = nnx.get_named_sharding(nnx.state(abstract), mesh)
    with nnx.use_eager_sharding(False):
        layer = nnx.jit(lambda: nnx.Linear(2, 4, kernel_init=init, rngs=nnx.Rngs(0)), out_shardings=shardings)()
    assert layer.kernel.value.sharding == NamedSharding(mesh, P(None, "model"))
    assert layer.bias.value.sharding.is_equivalent_to(NamedSharding(mesh, P()), 1)
    graphdef, state = nnx.get_abstract_model(lambda: nnx.Linear(2, 4, kernel_init=init, rngs=nnx.Rngs(0)), mesh)
    assert state["kernel"].value.sharding == NamedSharding(mesh, P(None, "model"))
    assert isinstance(state["kernel"].value, jax.ShapeDtypeStruct)


# -- 8 host devices --------------------------------------------------------------------------
SCRIPT = """
import importlib.util, json, pathlib, re, sys
import jax, jax.numpy as jnp, numpy as np
import plait as nnx
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

root = pathlib.Path(sys.argv[1])
out = {"devices": jax.device_count()}

# docs/sharding.md: every block, in order, in one namespace
ns = {}
doc = (root / "docs" / "sharding.md").read_text()
blocks = [code for lang, code in re.findall(r"```(\\w*)\\n(.*?)```", doc, flags=re.S) if lang == "python"]
for i, code in enumerate(blocks):
    exec(compile(code, f"sharding.md block {i}", "exec"), ns)
out["doc_blocks"] = len(blocks)

# the seed's stack in three layouts against one device
spec = importlib.util.spec_from_file_location("multihost", root / "examples" / "multihost.py")
example = importlib.util.module_from_spec(spec)
spec.loader.exec_module(example)
out["runs"] = {layout: example.train(layout, steps=3) for layout in ("single", "dp", "fsdp", "tp")}

# a mesh with explicit axes (jax.make_mesh's default): eager sharding, then plain nnx.jit
create, train_step = example.build()
explicit = jax.make_mesh((2, 4), ("data", "model"))
with jax.set_mesh(explicit), nnx.logical_axis_rules(example.LAYOUTS["tp"][2]):
    opt = create()
    step = nnx.jit(train_step)
    batch = NamedSharding(explicit, P("data"))
    loss = float(step(opt, *(jax.device_put(a, batch) for a in example.data(0))))
out["explicit"] = [str(explicit.axis_types), loss, str(opt.model.blocks.linear.kernel.value.sharding.spec),
                   str(opt.opt_state[0].mu["blocks"]["linear"]["kernel"].value.sharding.spec)]

# shard_map writes state back with the spec it came in with
mesh = jax.make_mesh((2, 4), ("data", "model"), axis_types=(AxisType.Auto,) * 2)
layer = nnx.Linear(4, 8, rngs=nnx.Rngs(0))
def bump(m, x):
    m.kernel.value = m.kernel.value + 1
    return m(x)
f = nnx.shard_map(bump, mesh=mesh, in_specs=(nnx.StateSharding({nnx.PathContains("kernel"): P(None, "model"),
                  ...: P("model")}), P("data")), out_specs=P("data", "model"))
y = f(layer, jnp.ones((4, 4)))
out["shard_map"] = [str(layer.kernel.value.sharding.spec), str(y.sharding.spec), float(layer.kernel.value.mean())]
print("RESULT=" + json.dumps(out))
"""


def test_sharded_training_on_8_devices_matches_one_device():
    pytest.importorskip("optax")
    pytest.importorskip("orbax.checkpoint")
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(SCRIPT), str(ROOT)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads([line for line in proc.stdout.splitlines() if line.startswith("RESULT=")][-1][7:])
    assert result["devices"] == 8 and result["doc_blocks"] >= 7

    runs = result["runs"]
    single = runs.pop("single")
    for layout, run in runs.items():
        np.testing.assert_allclose(run["losses"], single["losses"], rtol=1e-5, err_msg=layout)
        for name, value in single["params"].items():
            np.testing.assert_allclose(run["params"][name], value, rtol=1e-5, atol=1e-6, err_msg=f"{layout} {name}")
        assert run["specs"] == run["wanted"], layout  # every parameter laid out as annotated
        assert run["misplaced"] == [], layout          # optimizer moments and RNG state too
    assert runs["tp"]["specs"]["blocks.linear.kernel"] == "(None, None, 'model')"
    assert runs["fsdp"]["specs"]["blocks.linear.kernel"] == "(None, 'data', None)"
    assert runs["dp"]["specs"]["blocks.linear.kernel"] == "(None, None, None)"

    axis_types, loss, kernel_spec, mu_spec = result["explicit"]
    assert "Explicit" in axis_types
    np.testing.assert_allclose(loss, single["losses"][0], rtol=1e-5)
    assert kernel_spec == mu_spec == "P(None, None, 'model')"

    kernel_spec, out_spec, mean = result["shard_map"]
    assert kernel_spec == "P(None, 'model')" and out_spec == "P('data', 'model')"
    assert mean != 0.0


def test_jit_out_shardings_prefix_over_plain_outputs():
    mesh = jax.make_mesh((1,), ("data",))
    s = NamedSharding(mesh, P("data"))
    layer = nnx.Linear(2, 4, rngs=nnx.Rngs(0))
    kernel, bias = nnx.jit(lambda m: (m.kernel.value, m.bias.value), out_shardings=(None, s))(layer)
    assert bias.sharding == s and getattr(kernel.sharding, "spec", P()) != P("data")  # None: unconstrained


def test_partition_specs_of_a_stack_match_the_reference():
    flax_nnx = pytest.importorskip("flax.nnx")
    rules = [("embed", None), ("mlp", "model"), ("layers", None)]

    def specs(lib):
        init = lib.with_partitioning(lib.initializers.lecun_normal(), ("embed", "mlp"))

        @lib.split_rngs(splits=2)
        @lib.vmap(axis_size=2, transform_metadata={lib.PARTITION_NAME: "layers"})
        def stack(rngs):
            return lib.Linear(2, 2, kernel_init=init, rngs=rngs)

        with lib.use_eager_sharding(False):
            layers = stack(lib.Rngs(0))
        with lib.logical_axis_rules(rules):
            found = lib.get_partition_spec(lib.state(layers))
        return layers.kernel.get_metadata()["out_sharding"], found["kernel"].get_value(), found["bias"].get_value()

    assert specs(nnx) == specs(flax_nnx)


def test_eager_sharding_splits_a_vmap_stack_over_the_mesh_axis_its_name_maps_to():
    mesh = jax.make_mesh((1, 1), ("data", "model"))
    with jax.set_mesh(mesh), nnx.logical_axis_rules([("layers", "data"), ("embed", None), ("mlp", "model")]):
        layers = _stack()(nnx.Rngs(0))
    assert layers.kernel.value.sharding == NamedSharding(mesh, P("data", None, "model"))
    with jax.set_mesh(mesh), nnx.logical_axis_rules([("layers", None), ("embed", None), ("mlp", "model")]):
        replicated = _stack()(nnx.Rngs(0))
    assert replicated.kernel.value.sharding.spec in (P(None, None, "model"), P(None, None, "model", None))


def test_pmap_names_the_mapped_axis_too():
    n = jax.local_device_count()

    @nnx.split_rngs(splits=n)
    @nnx.pmap(axis_size=n, transform_metadata={nnx.PARTITION_NAME: "devices"})
    def make(rngs):
        return nnx.Linear(2, 2, kernel_init=PARTITIONED, rngs=rngs)

    assert make(nnx.Rngs(0)).kernel.out_sharding == ("devices", "embed", "mlp")
