"""Train a scanned stack of Linear + Dropout blocks sharded over a device mesh, on one host
or on several.

The model names its parameter axes by meaning (``"embed"``, ``"mlp"``, ``"layers"``); a
layout is a mesh plus the rules that map those names to mesh axes. The same model trains
data-parallel (``dp``), fully sharded (``fsdp``) or tensor-parallel on a 2x4 mesh (``tp``).

One host, 8 CPU devices::

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python examples/multihost.py --layout tp

Several hosts (here two, 4 devices each; on GPUs/TPUs leave out the XLA_FLAGS and
``--cpu-collectives``)::

    # on host 0
    python examples/multihost.py --layout fsdp --coordinator host0:1234 --num-processes 2 --process-id 0
    # on host 1
    python examples/multihost.py --layout fsdp --coordinator host0:1234 --num-processes 2 --process-id 1

Each process prints ``RESULT=<json>``: the losses, the trained parameters and each
parameter's partition spec (``tests/test_sharding.py`` and ``tests/test_multiprocess.py``
run it).
"""

from __future__ import annotations

import argparse
import json

W, DEPTH, BATCH = 8, 3, 16  # layer width, number of blocks, global batch

LAYOUTS = {
    # name: (mesh shape, mesh axis names, logical axis rules)
    "single": None,
    "dp": ((8,), ("data",), [("batch", "data"), ("embed", None), ("mlp", None), ("layers", None),
                             ("activation", None)]),
    "fsdp": ((8,), ("data",), [("batch", "data"), ("embed", "data"), ("mlp", None), ("layers", None),
                               ("activation", None)]),
    "tp": ((2, 4), ("data", "model"), [("batch", "data"), ("embed", None), ("mlp", "model"), ("layers", None),
                                       ("activation", None)]),
}


def build(width: int = W, depth: int = DEPTH, lr: float = 1e-2):
    """The model and optimizer classes (imported lazily: JAX must not start before
    ``jax.distributed.initialize``). ``benchmarks/sharded.py`` builds the same model, wider."""
    import jax
    import optax

    import plait as nnx

    class Block(nnx.Module):
        def __init__(self, rngs: nnx.Rngs):
            self.linear = nnx.Linear(
                width, width, rngs=rngs,
                kernel_init=nnx.with_partitioning(nnx.initializers.lecun_normal(), ("embed", "mlp")),
                bias_init=nnx.with_partitioning(nnx.initializers.zeros, ("mlp",)),
            )
            self.dropout = nnx.Dropout(0.1, rngs=rngs)

        def __call__(self, x):
            return self.dropout(jax.nn.relu(self.linear(x)))

    class Model(nnx.Module):
        def __init__(self, rngs: nnx.Rngs):
            @nnx.split_rngs(splits=depth)
            @nnx.vmap(axis_size=depth, transform_metadata={nnx.PARTITION_NAME: "layers"})
            def stack(rngs):
                return Block(rngs)

            self.blocks = stack(rngs)
            self.head = nnx.Linear(width, 1, rngs=rngs,
                                   kernel_init=nnx.with_partitioning(nnx.initializers.lecun_normal(), ("embed", None)))

        def __call__(self, x):
            # The dropout stream is the model's one Rngs, shared by every block: carried
            # through the steps, so each step draws new keys.
            @nnx.scan(in_axes=(nnx.Carry, nnx.StateAxes({nnx.RngState: nnx.Carry, ...: 0})), out_axes=nnx.Carry,
                      transform_metadata={nnx.PARTITION_NAME: "layers"})
            def forward(x, block):
                # The carry leaves each step laid out as it came in (meshes with explicit
                # axes check that; on others it keeps XLA from choosing another layout).
                return nnx.with_sharding_constraint(block(x), ("batch", "activation"))

            return self.head(forward(x, self.blocks))

    def create() -> nnx.Optimizer:
        model = Model(nnx.Rngs(0))
        return nnx.Optimizer(model, optax.adam(lr), wrt=nnx.Param)

    def train_step(optimizer, x, y):
        def loss_fn(model):
            return ((model(x) - y) ** 2).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(optimizer.model)
        optimizer.update(optimizer.model, grads)
        return loss

    return create, train_step


def data(step: int):
    import numpy as np

    rng = np.random.default_rng(step)
    x = rng.normal(size=(BATCH, W)).astype(np.float32)
    return x, np.sin(x.sum(axis=1, keepdims=True)).astype(np.float32)


def train(layout: str, steps: int = 3, checkpoint: str | None = None, restore: bool = False) -> dict:
    """Train ``steps`` steps in ``layout``; the losses, the parameters (as nested lists) and
    each parameter's partition spec. With ``checkpoint`` (a directory every process can
    reach) the trained optimizer is saved there; with ``restore`` too, a fresh one is
    restored from it instead of training."""
    import jax
    import numpy as np
    from jax.sharding import NamedSharding, PartitionSpec

    import plait as nnx

    create, train_step = build()
    if LAYOUTS[layout] is None:
        optimizer = create()
        step = nnx.jit(train_step)
        losses = [float(step(optimizer, *data(i))) for i in range(steps)]
        return _result(optimizer, losses, lambda a: np.asarray(a))

    shape, names, rules = LAYOUTS[layout]
    mesh = jax.make_mesh(shape, names, axis_types=(jax.sharding.AxisType.Auto,) * len(shape))
    with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):
        # Initialise straight into the layout: trace the init abstractly to learn each
        # Variable's sharding, then run it jitted with those out_shardings (no host copy of
        # the full model, so this works across processes too).
        shardings = nnx.get_named_sharding(nnx.state(nnx.eval_shape(create)), mesh)
        optimizer = nnx.jit(create, out_shardings=shardings)()
        replicate = jax.jit(lambda a: a, out_shardings=NamedSharding(mesh, PartitionSpec()))
        if restore:
            with nnx.checkpoints.CheckpointManager(checkpoint) as manager:
                manager.restore(optimizer=optimizer)  # in place, onto the shardings it has
            return _result(optimizer, [], lambda a: np.asarray(replicate(a)))
        batch = NamedSharding(mesh, nnx.logical_to_mesh_axes(("batch", None)))
        step = nnx.jit(train_step, in_shardings=(shardings, batch, batch))
        losses = []
        for i in range(steps):
            x, y = (jax.make_array_from_callback(a.shape, batch, lambda idx, a=a: a[idx]) for a in data(i))
            losses.append(step(optimizer, x, y))
        losses = [float(np.asarray(replicate(loss))) for loss in losses]
        if checkpoint:
            with nnx.checkpoints.CheckpointManager(checkpoint) as manager:  # every process writes its shards
                manager.save(steps, optimizer=optimizer)
        return _result(optimizer, losses, lambda a: np.asarray(replicate(a)))


def _result(optimizer, losses: list, fetch) -> dict:
    import plait as nnx

    params = nnx.state(optimizer.model, nnx.Param)
    flat = {".".join(map(str, path)): v for path, v in params.flat_state()}
    everything = nnx.state(optimizer).flat_state()  # optimizer moments are laid out like their parameters
    return {
        "misplaced": [".".join(map(str, path)) for path, v in everything
                      if hasattr(v.get_raw_value(), "sharding") and _spec_text(v.get_raw_value()) not in
                      ("single-device", _padded(nnx.spmd.get_var_pspec(v), v.ndim))],
        "losses": losses,
        "params": {k: fetch(v.get_raw_value()).tolist() for k, v in flat.items()},
        "specs": {k: _spec_text(v.get_raw_value()) for k, v in flat.items()},
        "wanted": {k: _padded(nnx.spmd.get_var_pspec(v), v.ndim) for k, v in flat.items()},
    }


def _spec_text(array) -> str:
    spec = getattr(array.sharding, "spec", None)
    if spec is None:
        return "single-device"
    return _padded(spec, array.ndim)


def _padded(spec, ndim: int) -> str:
    # P('data', None) and P('data') lay out an array the same way: compare them padded.
    return str(tuple(list(spec) + [None] * (ndim - len(spec))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layout", choices=sorted(LAYOUTS), default="tp")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--coordinator", help="host:port of process 0 (several processes only)")
    parser.add_argument("--num-processes", type=int, default=1)
    parser.add_argument("--process-id", type=int, default=0)
    parser.add_argument("--cpu-collectives", help="e.g. gloo, for several processes on CPU")
    parser.add_argument("--checkpoint", help="directory to save the trained optimizer to (all processes)")
    parser.add_argument("--restore", action="store_true", help="restore from --checkpoint instead of training")
    args = parser.parse_args()

    import jax

    if args.cpu_collectives:
        jax.config.update("jax_cpu_collectives_implementation", args.cpu_collectives)
    if args.coordinator:
        jax.distributed.initialize(coordinator_address=args.coordinator, num_processes=args.num_processes,
                                   process_id=args.process_id)
    result = train(args.layout, args.steps, args.checkpoint, args.restore)
    result["process"] = jax.process_index()
    result["devices"] = jax.device_count()
    print("RESULT=" + json.dumps(result), flush=True)
    if args.coordinator:
        jax.distributed.shutdown()


if __name__ == "__main__":
    main()
