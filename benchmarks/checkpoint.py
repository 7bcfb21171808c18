"""W6 checkpoints: save and restore the W3 model (a 24-layer W2 Transformer LM) through
``nnx.checkpoints.CheckpointManager`` against orbax's ``CheckpointManager`` called directly
on the same arrays as a nested dict (the floor: the bytes written and read are the same).

    python benchmarks/checkpoint.py            # 24 layers, stacked and as a list of layers
    python benchmarks/checkpoint.py --smoke    # 2 layers, 2 repeats: checks the code paths

Both sides save synchronously (the time includes writing the files and orbax's commit) and
keep the last 2 checkpoints; restores read the latest with a target of the same shapes,
dtypes and shardings. Timings are medians of interleaved repeats (``harness.interleaved``),
and a ratio is the median of per-repeat ratios. ``run.py`` runs the same as its W6 section.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import statistics
import sys
import tempfile
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import harness  # noqa: E402
import impl_plait  # noqa: E402
import jax  # noqa: E402
import maths  # noqa: E402

import plait as nnx  # noqa: E402

GOAL = 1.10


def _cases(model: Any, root: str) -> tuple[dict, Any]:
    """The four timed operations, and a close-everything callable."""
    import orbax.checkpoint as ocp

    plait_manager = nnx.checkpoints.CheckpointManager(os.path.join(root, "plait"), keep=2, async_save=False)
    # The same arrays, as orbax is given them without plait: a nested dict, keys as key data.
    pure = jax.tree.map(lambda x: jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x,
                        nnx.state(model).to_pure_dict())
    targets = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), pure)
    options = ocp.CheckpointManagerOptions(max_to_keep=2, create=True, enable_async_checkpointing=False)
    orbax_manager = ocp.CheckpointManager(os.path.join(root, "orbax"), options=options)
    steps = {"plait": itertools.count(), "orbax": itertools.count()}

    def orbax_save():
        orbax_manager.save(next(steps["orbax"]), args=ocp.args.Composite(model=ocp.args.StandardSave(pure)))

    def orbax_restore():
        step = orbax_manager.latest_step()
        return orbax_manager.restore(step, args=ocp.args.Composite(model=ocp.args.StandardRestore(targets)))

    cases = {
        "orbax save": orbax_save,
        "plait save": lambda: plait_manager.save(next(steps["plait"]), model=model),
        "orbax restore": orbax_restore,
        "plait restore": lambda: plait_manager.restore(model=model),
    }
    orbax_save(), cases["plait save"]()  # a checkpoint to restore from before any timing

    def own_work() -> dict:
        """Seconds of plait's own work per save and restore: the same calls with orbax's
        save and restore replaced by stubs (one real restore's result, replayed)."""
        inner = plait_manager._manager
        result = inner.restore(inner.latest_step(), args=ocp.args.Composite(
            model=ocp.args.StandardRestore(jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), pure))))
        save, restore = inner.save, inner.restore
        inner.save, inner.restore = (lambda *a, **k: True), (lambda *a, **k: result)
        try:
            return {op: harness.time_steps(cases[f"plait {op}"], 50, sync=False) for op in ("save", "restore")}
        finally:
            inner.save, inner.restore = save, restore

    def close():
        plait_manager.close()
        orbax_manager.close()

    return cases, own_work, close


def measure(depth: int, stacked: bool, repeats: int, seconds: float) -> dict:
    """Median times and plait/orbax ratios for save and restore of the W3 model at ``depth``."""
    cfg = maths.LMConfig().at_depth(depth)
    model = impl_plait.lm_model(cfg, stacked)
    n_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(nnx.state(model))
                  if not jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key))
    root = tempfile.mkdtemp(prefix="plait-bench-ckpt-")
    try:
        cases, own_work, close = _cases(model, root)
        timing = harness.interleaved(cases, baseline="orbax save", repeats=repeats, seconds=seconds, sync=False)
        own = own_work()
        close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    out = {"bytes": n_bytes, "arrays": len(jax.tree.leaves(nnx.state(model)))}
    for op in ("save", "restore"):
        a, b = timing.samples[f"plait {op}"], timing.samples[f"orbax {op}"]
        out[op] = {"plait": statistics.median(a), "orbax": statistics.median(b),
                   "ratio": statistics.median(x / y for x, y in zip(a, b)), "own": own[op]}
    return out


def section(smoke: bool) -> tuple[str, list[tuple[str, str, bool | None]]]:
    """The W6 section of RESULTS.md and its goals (``None`` for met in a smoke run)."""
    depth, repeats, seconds = (2, 2, 0.001) if smoke else (24, 15, 0.5)
    rows, goals = [], []
    for stacked in (True, False):
        layout = "stacked" if stacked else "list of layers"
        r = measure(depth, stacked, repeats, seconds)
        for op in ("save", "restore"):
            m = r[op]
            rows.append([layout, op, f"{r['arrays']} arrays, {r['bytes'] / 2**20:.1f} MiB",
                         f"{m['orbax'] * 1e3:,.1f}", f"{m['plait'] * 1e3:,.1f}", f"{m['ratio']:.2f}x",
                         f"{m['own'] * 1e3:,.2f} ({m['own'] / m['orbax']:.1%})"])
            # The goal is judged on what plait adds (its own work, measured with orbax stubbed out):
            # on a shared machine the end-to-end ratio of two disk-bound runs is mostly noise.
            added = 1.0 + m["own"] / m["orbax"]
            goals.append((f"W6 checkpoint {op}: (orbax + plait's own work) / orbax <= {GOAL:.2f} ({layout})",
                          f"{added:.3f}x (end to end, interleaved: {m['ratio']:.2f}x)",
                          None if smoke else added <= GOAL))
    header = ["layout", "operation", "state", "orbax directly ms", "plait ms", "plait / orbax",
              "plait's own work ms (of orbax's time)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    text = (f"{depth}-layer W3 model, synchronous saves keeping the last 2, restores of the latest with a target "
            "of the same shapes, dtypes and shardings. plait's side is `nnx.checkpoints.CheckpointManager`"
            "`.save(step, model=model)` / `.restore(model=model)` (reading the model's state, converting RNG keys, "
            "checking the checkpoint's metadata, writing back in place); orbax's side is its `CheckpointManager` "
            "on the same arrays as a nested dict. *plait's own work* is the time of plait's calls with orbax's "
            "save and restore replaced by stubs: what plait adds, without the disk's noise.\n\n" + "\n".join(lines))
    return text, goals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="2 layers, 2 repeats (CI): checks, no timing goals")
    args = parser.parse_args(argv)
    text, goals = section(args.smoke)
    print(text)
    for name, measured, met in goals:
        print(f"{name}: {measured}" + ("" if met is None else (" (met)" if met else " (NOT MET)")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
