"""W7 sharded training: a scanned stack of Linear + Dropout blocks (examples/multihost.py's
model, wider) trained with Adam on 8 host CPU devices, FSDP (mesh (8,)) and tensor-parallel
(mesh 2x4), plait against raw ``jax.jit`` with ``NamedSharding`` in/out shardings on a
pytree of arrays (the floor: the same math, no modules) and against Flax NNX (the same model
written with ``flax.nnx`` the way Flax's guides do, ``nnx.jit`` train step; skipped with a
note when Flax is not installed).

    python benchmarks/sharded.py            # width 256, 4 blocks, batch 64
    python benchmarks/sharded.py --smoke    # tiny, 2 repeats: checks the code paths

Per step: medians of interleaved repeats (``harness.interleaved``), the ratio is the median
of per-repeat ratios. First call: a new jitted function traced, compiled and run once
(median of 3; 1 in the smoke run). Every case's loss is checked to be finite and lower after
the timing than at its first step. The script sets ``XLA_FLAGS`` itself before JAX starts.

Measured (2-core shared CPU box, 2026-12-02, load average about 6 from other jobs; ratios
within the spread of 1 are noise):

    layout   case     step ms   ratio  spread  first call s
    fsdp     raw       10.472    1.00    0.00          2.25
    fsdp     plait      9.925    0.98    0.42          1.84
    fsdp     flax      10.424    1.02    0.76          1.40
    tp 2x4   raw       10.230    1.00    0.00          1.67
    tp 2x4   plait      8.233    0.87    0.75          1.75
    tp 2x4   flax       9.834    0.97    0.60          1.56

At this size a step is XLA's work on 8 simulated devices and the libraries' Python hardly
shows. The smoke size (width 16), where it does, measured 0.83-0.93x raw for plait and
1.25-1.74x raw for Flax NNX's ``nnx.jit`` (graph traversal on every call).
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import harness  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import AxisType, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import plait as nnx  # noqa: E402

try:  # Flax is a benchmark-only dependency (the bench extra): without it the Flax rows are skipped
    from flax import nnx as fnnx
    from flax.core.spmd import from_sharding_rules
except ImportError as e:
    fnnx, FLAX_MISSING = None, str(e)

LAYOUTS = {
    "fsdp": ((8,), ("data",), [("batch", "data"), ("embed", "data"), ("mlp", None), ("layers", None),
                               ("activation", None)]),
    "tp 2x4": ((2, 4), ("data", "model"), [("batch", "data"), ("embed", None), ("mlp", "model"), ("layers", None),
                                           ("activation", None)]),
}


def plait_model(width: int, depth: int):
    """examples/multihost.py's model (the seed's scanned Linear+Dropout stack), at this size."""
    sys.path.insert(0, os.path.join(HERE, "..", "examples"))
    import multihost

    return multihost.build(width, depth, lr=1e-3)


def flax_model(width: int, depth: int, rules: list):
    """The plait model written with ``flax.nnx`` the way Flax's guides do: a stack built by
    ``split_rngs`` + ``vmap``, applied by ``scan`` with every layer's state (Dropout's RNG
    stream included) on axis 0, and the activation constraint as a mesh ``PartitionSpec``."""
    activation = P(*from_sharding_rules(("batch", "activation"), rules))

    class Block(fnnx.Module):
        def __init__(self, rngs):
            self.linear = fnnx.Linear(width, width, rngs=rngs,
                                      kernel_init=fnnx.with_partitioning(fnnx.initializers.lecun_normal(),
                                                                         ("embed", "mlp")),
                                      bias_init=fnnx.with_partitioning(fnnx.initializers.zeros, ("mlp",)))
            self.dropout = fnnx.Dropout(0.1, rngs=rngs)

        def __call__(self, x):
            return self.dropout(jax.nn.relu(self.linear(x)))

    class Model(fnnx.Module):
        def __init__(self, rngs):
            @fnnx.split_rngs(splits=depth)
            @fnnx.vmap(axis_size=depth, transform_metadata={fnnx.PARTITION_NAME: "layers"})
            def stack(rngs):
                return Block(rngs)

            self.blocks = stack(rngs)
            self.head = fnnx.Linear(width, 1, rngs=rngs,
                                    kernel_init=fnnx.with_partitioning(fnnx.initializers.lecun_normal(), ("embed", None)))

        def __call__(self, x):
            @fnnx.scan(in_axes=(fnnx.Carry, 0), out_axes=fnnx.Carry, transform_metadata={fnnx.PARTITION_NAME: "layers"})
            def forward(x, block):
                return jax.lax.with_sharding_constraint(block(x), activation)

            return self.head(forward(x, self.blocks))

    @fnnx.jit
    def create():
        # Flax's "scale up" guide: build inside jit, constrain the state to its partition specs.
        model = Model(fnnx.Rngs(0))
        optimizer = fnnx.Optimizer(model, optax.adam(1e-3), wrt=fnnx.Param)
        for node in (model, optimizer):
            state = fnnx.state(node)
            fnnx.update(node, jax.lax.with_sharding_constraint(state, fnnx.get_partition_spec(state)))
        return model, optimizer

    def train_step(model, optimizer, x, y):
        def loss_fn(model):
            return ((model(x) - y) ** 2).mean()

        loss, grads = fnnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    return create, train_step


def raw_model(width: int, depth: int, mesh, rules):
    tx = optax.adam(1e-3)

    def spec(*names):
        return NamedSharding(mesh, nnx.logical_to_mesh_axes(names, rules))

    param_shardings = {"kernel": spec("layers", "embed", "mlp"), "bias": spec("layers", "mlp"),
                       "head_kernel": spec("embed", None), "head_bias": spec(None)}

    def init(key):
        k1, k2 = jax.random.split(key)
        params = {
            "kernel": jax.vmap(lambda k: jax.nn.initializers.lecun_normal()(k, (width, width)))(jax.random.split(k1, depth)),
            "bias": jnp.zeros((depth, width)),
            "head_kernel": jax.nn.initializers.lecun_normal()(k2, (width, 1)),
            "head_bias": jnp.zeros((1,)),
        }
        return params, tx.init(params)

    def loss_fn(params, x, y, key):
        def body(h, layer):
            kernel, bias, k = layer
            h = jax.nn.relu(h @ kernel + bias)
            keep = jax.random.bernoulli(k, 0.9, h.shape)
            return jax.lax.with_sharding_constraint(jnp.where(keep, h / 0.9, 0.0), spec("batch", "activation")), None

        h, _ = jax.lax.scan(body, x, (params["kernel"], params["bias"], jax.random.split(key, depth)))
        return (((h @ params["head_kernel"] + params["head_bias"]) - y) ** 2).mean()

    def train_step(params, opt_state, x, y, key, n):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y, jax.random.fold_in(key, n))
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    abstract = jax.eval_shape(init, jax.random.key(0))
    opt_shardings = jax.tree.map(lambda _: NamedSharding(mesh, P()), abstract[1])
    opt_shardings = (opt_shardings[0]._replace(mu=param_shardings, nu=param_shardings), opt_shardings[1])
    return init, train_step, param_shardings, opt_shardings


def measure(width: int, depth: int, batch: int, repeats: int, seconds: float, first_repeats: int) -> None:
    rng = np.random.default_rng(0)
    x_np = rng.normal(size=(batch, width)).astype(np.float32)
    y_np = np.sin(x_np.sum(axis=1, keepdims=True)).astype(np.float32)
    print(f"W7 sharded training, width {width}, {depth} blocks, batch {batch}, {jax.device_count()} CPU devices")
    if fnnx is None:
        print(f"Flax NNX rows skipped: {FLAX_MISSING}")
    print(f"{'layout':8} {'case':6} {'step ms':>9} {'ratio':>7} {'spread':>7} {'first call s':>13}")
    for layout, (shape, names, rules) in LAYOUTS.items():
        measure_layout(layout, shape, names, rules, width, depth, x_np, y_np, repeats, seconds, first_repeats)


def measure_layout(layout: str, shape: tuple, names: tuple, rules: list, width: int, depth: int, x_np, y_np,
                   repeats: int, seconds: float, first_repeats: int) -> None:
    mesh = jax.make_mesh(shape, names, axis_types=(AxisType.Auto,) * len(shape))
    with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):
        batch_sharding = NamedSharding(mesh, nnx.logical_to_mesh_axes(("batch", None)))
        x, y = jax.device_put(x_np, batch_sharding), jax.device_put(y_np, batch_sharding)

        create, plait_step = plait_model(width, depth)
        shardings = nnx.get_named_sharding(nnx.state(nnx.eval_shape(create)), mesh)
        optimizer = nnx.jit(create, out_shardings=shardings)()

        def plait_jitted():
            return nnx.jit(plait_step, in_shardings=(shardings, batch_sharding, batch_sharding))

        init, raw_step, p_sh, o_sh = raw_model(width, depth, mesh, rules)
        params, opt_state = jax.jit(init, out_shardings=(p_sh, o_sh))(jax.random.key(0))
        key_sharding = NamedSharding(mesh, P())

        def raw_jitted():
            return jax.jit(raw_step,
                           in_shardings=(p_sh, o_sh, batch_sharding, batch_sharding, key_sharding, key_sharding),
                           out_shardings=(p_sh, o_sh, NamedSharding(mesh, P())))

        raw_state = {"params": params, "opt": opt_state, "key": jax.device_put(jax.random.key(1), key_sharding),
                     "n": 0}

        def raw_call(fn):
            raw_state["n"] += 1
            p, o, loss = fn(raw_state["params"], raw_state["opt"], x, y, raw_state["key"], raw_state["n"])
            raw_state["params"], raw_state["opt"] = p, o
            return loss

        def first_call(make, run):
            times, losses = [], []
            for _ in range(first_repeats):
                jax.clear_caches()
                t0 = time.perf_counter()
                losses.append(harness.block(run(make())))
                times.append(time.perf_counter() - t0)
            return statistics.median(times), float(losses[0])

        cases = {"raw": (raw_jitted, raw_call), "plait": (plait_jitted, lambda fn: fn(optimizer, x, y))}
        if fnnx is not None:
            with fnnx.logical_axis_rules(rules):
                flax_create, flax_step = flax_model(width, depth, rules)
                flax_net, flax_opt = flax_create()
            flax_kernel = flax_net.blocks.linear.kernel[...]
            assert flax_kernel.sharding.is_equivalent_to(p_sh["kernel"], flax_kernel.ndim), flax_kernel.sharding
            cases["flax"] = (lambda: fnnx.jit(flax_step), lambda fn: fn(flax_net, flax_opt, x, y))

        first, first_loss = {}, {}
        for case, (make, run) in cases.items():
            first[case], first_loss[case] = first_call(make, run)
        fns = {case: make() for case, (make, _) in cases.items()}
        timing = harness.interleaved({case: functools.partial(run, fns[case]) for case, (_, run) in cases.items()},
                                     baseline="raw", repeats=repeats, seconds=seconds)
        # Training kept every Variable laid out as asked (XLA may drop trailing Nones from a spec).
        for path, v in nnx.to_flat_state(nnx.state(optimizer)):
            want = shardings
            for key in path:
                want = want[key]
            assert v.value.sharding.is_equivalent_to(want.value, v.value.ndim), (path, v.value.sharding, want.value)
        for case, (_, run) in cases.items():
            # Every case trained the whole time: its loss must be finite and lower than at its first step.
            last = float(run(fns[case]))
            assert np.isfinite(last) and last < first_loss[case], (layout, case, first_loss[case], last)
            print(f"{layout:8} {case:6} {timing.median(case) * 1e3:9.3f} {timing.ratio(case):7.2f} "
                  f"{timing.spread(case):7.2f} {first[case]:13.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        measure(width=16, depth=2, batch=16, repeats=2, seconds=0.05, first_repeats=1)
    else:
        measure(width=256, depth=4, batch=64, repeats=7, seconds=0.5, first_repeats=3)


if __name__ == "__main__":
    main()
