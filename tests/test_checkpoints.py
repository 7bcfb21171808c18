"""Checkpoints: the Flax NNX orbax recipe on plait objects, and ``nnx.checkpoints.CheckpointManager``."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import plait as nnx
from helpers import multi_device_fixtures, raises

ocp = pytest.importorskip("orbax.checkpoint")
optax = pytest.importorskip("optax")

DEPTH = 3


class Block(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.linear = nnx.Linear(4, 4, rngs=rngs)
        self.dropout = nnx.Dropout(0.5, rngs=rngs)

    def __call__(self, x):
        return self.dropout(jax.nn.relu(self.linear(x)))


class Model(nnx.Module):
    """A scanned stack (vmapped parameters, one RNG key per layer) and a head."""

    def __init__(self, rngs: nnx.Rngs):
        @nnx.split_rngs(splits=DEPTH)
        @nnx.vmap(axis_size=DEPTH)
        def create(rngs: nnx.Rngs):
            return Block(rngs)

        self.stack = create(rngs)
        self.head = nnx.Linear(4, 2, rngs=rngs)
        self.rngs = rngs  # the stream the dropouts draw from: a typed key and a count that advances

    def __call__(self, x):
        @nnx.split_rngs(splits=DEPTH)
        @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
        def forward(x, block):
            return block(x)

        return self.head(forward(x, self.stack))


X = jnp.linspace(-1.0, 1.0, 8 * 4).reshape(8, 4)
Y = jnp.sin(X[:, :2])


@nnx.jit
def train_step(model, optimizer):
    loss, grads = nnx.value_and_grad(lambda m: ((m(X) - Y) ** 2).mean())(model)
    optimizer.update(grads)
    return loss


def fresh(seed: int = 0):
    model = Model(nnx.Rngs(seed))
    return model, nnx.Optimizer(model, optax.adam(1e-2))


def leaves(node) -> list[np.ndarray]:
    """Every array of ``node``'s state as NumPy (typed keys as their key data), in graph order."""
    out = []
    for x in jax.tree.leaves(nnx.state(node)):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        out.append(np.asarray(x))
    return out


def assert_bitwise(a, b) -> None:
    la, lb = leaves(a), leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x, y)


def trained(steps: int = 2):
    model, optimizer = fresh()
    for _ in range(steps):
        train_step(model, optimizer)
    return model, optimizer


# -- the reference's recipe, written as a Flax NNX user writes it --------------------------------


def test_recipe_save_state_restore_abstract_then_update_and_merge(tmp_path):
    model, _ = trained()
    _, state = nnx.split(model)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "state", state)
    checkpointer.wait_until_finished()

    abstract_model = nnx.eval_shape(lambda: Model(rngs=nnx.Rngs(0)))
    graphdef, abstract_state = nnx.split(abstract_model)
    restored = checkpointer.restore(tmp_path / "state", abstract_state)

    merged = nnx.merge(graphdef, restored)
    assert_bitwise(merged, model)
    other = Model(nnx.Rngs(7))
    nnx.update(other, restored)
    assert_bitwise(other, model)
    # The typed key came back typed (not as raw uint32 data).
    assert jax.dtypes.issubdtype(other.stack.dropout.rngs.default.key.value.dtype, jax.dtypes.prng_key)
    assert int(other.rngs.default.count.value) == int(model.rngs.default.count.value) > 0
    model.eval(), other.eval(), merged.eval()
    np.testing.assert_array_equal(other(X), model(X))
    np.testing.assert_array_equal(merged(X), model(X))


def test_recipe_optimizer_state(tmp_path):
    model, optimizer = trained()
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "optimizer", nnx.state(optimizer))
    checkpointer.wait_until_finished()

    abstract = nnx.eval_shape(lambda: nnx.Optimizer(Model(rngs=nnx.Rngs(0)), optax.adam(1e-2)))
    _, abstract_state = nnx.split(abstract)
    restored = checkpointer.restore(tmp_path / "optimizer", abstract_state)
    model2, optimizer2 = fresh(seed=5)
    nnx.update(optimizer2, restored)
    assert_bitwise(optimizer2, optimizer)  # the model (held by the optimizer), Adam's moments, step
    assert int(optimizer2.step.value) == 2
    np.testing.assert_array_equal(model2.head.kernel.value, model.head.kernel.value)


def test_recipe_pure_dict(tmp_path):
    model, _ = trained()
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "pure", nnx.state(model).to_pure_dict())
    checkpointer.wait_until_finished()

    restored = checkpointer.restore(tmp_path / "pure")  # no target: a nested dict of arrays
    abstract_model = nnx.eval_shape(lambda: Model(rngs=nnx.Rngs(0)))
    graphdef, abstract_state = nnx.split(abstract_model)
    abstract_state.replace_by_pure_dict(restored)
    assert_bitwise(nnx.merge(graphdef, abstract_state), model)


def test_recipe_key_data_conversion(tmp_path):
    """The conversion docs/checkpoints.md shows for orbax versions that cannot save typed keys."""
    model, _ = trained()
    is_key = lambda x: jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)  # noqa: E731
    state = jax.tree.map(lambda x: jax.random.key_data(x) if is_key(x) else x, nnx.state(model))
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "state", state)
    checkpointer.wait_until_finished()

    graphdef, abstract_state = nnx.split(nnx.eval_shape(lambda: Model(rngs=nnx.Rngs(0))))
    data_state = jax.tree.map(lambda x: jax.eval_shape(jax.random.key_data, x) if is_key(x) else x, abstract_state)
    restored = checkpointer.restore(tmp_path / "state", data_state)
    restored = jax.tree.map(lambda x, a: jax.random.wrap_key_data(x) if is_key(a) else x, restored, abstract_state)
    assert_bitwise(nnx.merge(graphdef, restored), model)


# -- CheckpointManager -----------------------------------------------------------------------------


def test_save_every_n_keep_last_k(tmp_path):
    model, _ = fresh()
    with nnx.checkpoints.CheckpointManager(tmp_path, save_every=3, keep=2) as manager:
        saved = [step for step in range(10) if manager.save(step, model=model)]
        assert saved == [0, 3, 6, 9]
        assert manager.save(10, model=model, force=True)
        manager.wait()
        assert manager.all_steps() == [9, 10]
        assert manager.latest_step() == 10
    assert sorted(int(p) for p in os.listdir(tmp_path) if p.isdigit()) == [9, 10]


def test_restore_in_place_is_bitwise(tmp_path):
    model, optimizer = trained()
    with nnx.checkpoints.CheckpointManager(tmp_path) as manager:
        manager.save(2, model=model, optimizer=optimizer)
        model2, optimizer2 = fresh(seed=3)
        kernel = model2.head.kernel
        assert manager.restore(model=model2, optimizer=optimizer2) == 2
    assert_bitwise(model2, model)
    assert_bitwise(optimizer2, optimizer)
    assert model2.head.kernel is kernel  # in place: the same Variable objects, new values
    assert optimizer2.model is model2


def test_training_continues_identically(tmp_path):
    model, optimizer = trained(3)
    with nnx.checkpoints.CheckpointManager(tmp_path) as manager:
        manager.save(3, model=model, optimizer=optimizer)
        losses = [float(train_step(model, optimizer)) for _ in range(3)]

        model2, optimizer2 = fresh(seed=11)
        manager.restore(model=model2, optimizer=optimizer2)
    losses2 = [float(train_step(model2, optimizer2)) for _ in range(3)]
    assert losses2 == losses
    assert_bitwise(model2, model)
    assert_bitwise(optimizer2, optimizer)
    assert int(model2.rngs.default.count.value) == int(model.rngs.default.count.value)


def test_restore_model_alone_and_into_an_abstract_model(tmp_path):
    model, optimizer = trained()
    with nnx.checkpoints.CheckpointManager(tmp_path) as manager:
        manager.save(2, model=model, optimizer=optimizer)
        abstract = nnx.eval_shape(lambda: Model(nnx.Rngs(0)))
        manager.restore(model=abstract)  # the optimizer's item is left alone
    assert_bitwise(abstract, model)


def test_restore_a_given_step(tmp_path):
    model, optimizer = fresh()
    with nnx.checkpoints.CheckpointManager(tmp_path) as manager:
        manager.save(0, model=model)
        first = leaves(model)
        train_step(model, optimizer)
        manager.save(1, model=model)
        assert manager.restore(0, model=model) == 0
    for a, b in zip(leaves(model), first):
        np.testing.assert_array_equal(a, b)


def test_restore_onto_a_one_device_mesh(tmp_path):
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("x",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("x"))
    model, optimizer = trained()
    with nnx.checkpoints.CheckpointManager(tmp_path) as manager:
        manager.save(2, model=model, optimizer=optimizer)
        target, target_opt = fresh(seed=4)
        state = nnx.state(target)
        nnx.update(target, jax.tree.map(lambda x: jax.device_put(x, sharding) if x.ndim else x, state))
        manager.restore(model=target, optimizer=target_opt)
    assert target.stack.linear.kernel.value.sharding == sharding
    assert target.head.bias.value.sharding == sharding
    assert_bitwise(target, model)


# orbax leaves the reads of a refused restore to be collected after its event loop closed.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_errors(tmp_path, monkeypatch):
    model, optimizer = fresh()
    manager = nnx.checkpoints.CheckpointManager(tmp_path / "a")
    raises(nnx.CheckpointError, lambda: manager.restore(model=model), "no checkpoint in", "latest_step()")
    raises(nnx.CheckpointError, lambda: manager.save(0), "nothing to save", "model=model")
    manager.save(0, model=model)
    raises(nnx.CheckpointError, lambda: manager.restore(5, model=model), "no checkpoint for step 5", "[0]")
    raises(nnx.CheckpointError, lambda: manager.restore(net=model), "has no item 'net'", "['model']")
    wide = nnx.Linear(4, 3, rngs=nnx.Rngs(0))
    raises(nnx.CheckpointError, lambda: manager.restore(model=wide), "'model'", "not in the checkpoint: bias, kernel",
           "only in the checkpoint: head/bias")

    class Other(Model):
        def __init__(self, rngs):
            super().__init__(rngs)
            self.head = nnx.Linear(4, 5, rngs=rngs)

    raises(nnx.CheckpointError, lambda: manager.restore(model=Other(nnx.Rngs(0))), "`model/head/bias`",
           "shape (2,) in the checkpoint", "but (5,)")
    manager.close()
    raises(nnx.CheckpointError, lambda: nnx.checkpoints.CheckpointManager(tmp_path, save_every=0), "save_every")

    monkeypatch.setitem(sys.modules, "orbax.checkpoint", None)
    raises(ImportError, lambda: nnx.checkpoints.CheckpointManager(tmp_path), 'pip install "plait[checkpoint]"')
    gc.collect()  # collect orbax's leftovers here, under this test's warning filter


# -- a process killed in the middle of a save -----------------------------------------------------

WRITER = """
import sys, jax.numpy as jnp, plait as nnx

class Big(nnx.Module):
    def __init__(self):
        self.w = [nnx.Param(jnp.zeros((1024, 1024))) for _ in range(8)]  # 32 MB a checkpoint

big = Big()
manager = nnx.checkpoints.CheckpointManager(sys.argv[1], keep=2, async_save=False)
for step in range(1_000_000):
    for p in big.w:
        p.value = jnp.full(p.value.shape, float(step))
    manager.save(step, big=big)
    print(step, flush=True)
"""


def test_killed_mid_save_leaves_the_previous_checkpoint(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(WRITER), str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        assert proc.stdout.readline().strip() == "0", proc.stderr.read()  # one complete checkpoint
        deadline = time.time() + 120
        while time.time() < deadline:  # wait until the next save is under way, then kill it
            if any("tmp" in name for name in os.listdir(tmp_path)):
                break
            time.sleep(0.001)
        else:
            pytest.fail("no save in progress seen")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL

    class Big(nnx.Module):
        def __init__(self):
            self.w = [nnx.Param(jnp.ones((1024, 1024))) for _ in range(8)]

    big = Big()
    with nnx.checkpoints.CheckpointManager(tmp_path, keep=2) as manager:
        step = manager.restore(big=big)
    assert step >= 0
    for p in big.w:  # every array from the same, complete save
        np.testing.assert_array_equal(p.value, np.full((1024, 1024), float(step), np.float32))


# -- sharded over 4 devices -----------------------------------------------------------------------

SHARDED = """
import json, tempfile, jax, numpy as np, plait as nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

mesh = Mesh(np.array(jax.devices()), ("x",))
columns = NamedSharding(mesh, P(None, "x"))

def build(seed, sharding):
    model = nnx.Linear(8, 16, rngs=nnx.Rngs(seed))
    state = nnx.state(model)
    nnx.update(model, jax.tree.map(lambda x: jax.device_put(x, sharding if x.ndim == 2 else NamedSharding(mesh, P())), state))
    return model

model = build(0, columns)
out = {}
with tempfile.TemporaryDirectory() as d, nnx.checkpoints.CheckpointManager(d) as manager:
    manager.save(1, model=model)
    same = build(1, columns)
    manager.restore(model=same)
    rows = build(2, NamedSharding(mesh, P("x", None)))  # restored onto another layout
    manager.restore(model=rows)
    abstract = nnx.eval_shape(lambda: nnx.Linear(8, 16, rngs=nnx.Rngs(0)))
    abstract.kernel.value = jax.ShapeDtypeStruct((8, 16), np.float32, sharding=columns)
    abstract.bias.value = jax.ShapeDtypeStruct((16,), np.float32, sharding=NamedSharding(mesh, P("x")))
    manager.restore(model=abstract)
want = np.asarray(model.kernel.value)
for name, m in (("same", same), ("rows", rows), ("abstract", abstract)):
    out[name] = {"equal": bool((np.asarray(m.kernel.value) == want).all()),
                 "spec": str(m.kernel.value.sharding.spec), "devices": len(m.kernel.value.sharding.device_set),
                 "bias_spec": str(m.bias.value.sharding.spec)}
print("RESULT=" + json.dumps(out))
"""

start_early, multi = multi_device_fixtures(SHARDED)


def test_restore_onto_four_devices(multi):
    assert multi["same"] == {"equal": True, "spec": "P(None, 'x')", "devices": 4, "bias_spec": "P()"}
    assert multi["rows"]["equal"] and multi["rows"]["spec"] == "P('x', None)"
    assert multi["abstract"] == {"equal": True, "spec": "P(None, 'x')", "devices": 4, "bias_spec": "P('x',)"}


# -- docs/checkpoints.md --------------------------------------------------------------------------


def test_docs_code_runs(tmp_path, monkeypatch):
    """Every ```python block of docs/checkpoints.md, in order, in one namespace."""
    path = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "checkpoints.md")
    with open(path) as f:
        text = f.read()
    blocks = [block.split("```", 1)[0] for block in text.split("```python\n")[1:]]
    assert len(blocks) >= 8
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "docs_checkpoints"}
    for block in blocks:
        exec(compile(block, path, "exec"), namespace)
    assert namespace["start"] == 50
