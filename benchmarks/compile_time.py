"""Compile time of an unrolled Transformer LM: plait layers against Flax NNX layers.

The model is the same code for both libraries (written against whichever ``nnx``
namespace it is given): a pre-LayerNorm Transformer LM from ``Embed``, ``LayerNorm``,
``MultiHeadAttention`` (causal mask), ``Linear`` and ``Dropout(0.1)``; d_model 128, 4
heads, MLP 512, sequence 64, batch 8, vocabulary 256. The blocks are a Python list and the
forward pass is a Python loop over them, so the program XLA compiles is unrolled and grows
with the depth.

What is timed is the first call of the jitted forward+backward of the loss (each library's
own ``jit`` and ``value_and_grad``): tracing, lowering, XLA compilation and one execution.
The second call (the steady-state step) is reported too, to show how little of the first
call is execution. Every measurement runs in a fresh subprocess, so no in-process cache
(jit caches, graph caches, the persistent compilation cache is also switched off) helps.
Cases are interleaved: each repeat runs every case once, in an order rotated per repeat.

Usage:
    python benchmarks/compile_time.py            # depths 6 and 24, 3 repeats; writes COMPILE_TIME.md
    python benchmarks/compile_time.py --smoke    # depth 2, 1 repeat; prints only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
LIBS = ("plait", "Flax NNX")
D_MODEL, HEADS, MLP, SEQ, BATCH, VOCAB, RATE = 128, 4, 512, 64, 8, 256, 0.1


# =======================================================================================
# The worker: one library, one depth, one fresh process
# =======================================================================================
def build_model(nnx, depth: int):
    import jax

    class Block(nnx.Module):
        def __init__(self, rngs):
            self.ln1 = nnx.LayerNorm(D_MODEL, rngs=rngs)
            self.attn = nnx.MultiHeadAttention(HEADS, D_MODEL, decode=False, rngs=rngs)
            self.ln2 = nnx.LayerNorm(D_MODEL, rngs=rngs)
            self.fc1 = nnx.Linear(D_MODEL, MLP, rngs=rngs)
            self.fc2 = nnx.Linear(MLP, D_MODEL, rngs=rngs)
            self.drop = nnx.Dropout(RATE, rngs=rngs)

        def __call__(self, x, mask):
            x = x + self.drop(self.attn(self.ln1(x), mask=mask))
            return x + self.drop(self.fc2(jax.nn.gelu(self.fc1(self.ln2(x)))))

    class LM(nnx.Module):
        def __init__(self, rngs):
            self.embed = nnx.Embed(VOCAB, D_MODEL, rngs=rngs)
            blocks = [Block(rngs) for _ in range(depth)]
            # a Python list of blocks, wrapped in nnx.List: Flax NNX 0.12 rejects a plain list of modules
            # as a Module attribute (plait takes either)
            self.blocks = nnx.List(blocks) if hasattr(nnx, "List") else blocks
            self.ln_f = nnx.LayerNorm(D_MODEL, rngs=rngs)
            self.head = nnx.Linear(D_MODEL, VOCAB, rngs=rngs)

        def __call__(self, tokens):
            mask = nnx.make_causal_mask(tokens)
            x = self.embed(tokens)
            for block in self.blocks:  # unrolled: a Python loop
                x = block(x, mask)
            return self.head(self.ln_f(x))

    return LM(nnx.Rngs(0, dropout=1))


def worker(lib: str, depth: int) -> dict:
    import jax

    jax.config.update("jax_enable_compilation_cache", False)
    import jax.numpy as jnp
    import numpy as np

    if lib == "plait":
        import plait as nnx
    else:
        from flax import nnx

    t0 = time.perf_counter()
    model = build_model(nnx, depth)
    rng = np.random.RandomState(0)
    tokens = jnp.asarray(rng.randint(0, VOCAB, (BATCH, SEQ)), jnp.int32)
    targets = jnp.asarray(rng.randint(0, VOCAB, (BATCH, SEQ)), jnp.int32)
    jax.block_until_ready(nnx.state(model))
    build_s = time.perf_counter() - t0

    def loss_fn(model, tokens, targets):
        logits = model(tokens)
        logp = jax.nn.log_softmax(logits)
        return -jnp.mean(jnp.take_along_axis(logp, targets[..., None], axis=-1))

    @nnx.jit
    def step(model, tokens, targets):
        return nnx.value_and_grad(loss_fn)(model, tokens, targets)

    t0 = time.perf_counter()
    jax.block_until_ready(step(model, tokens, targets))
    first_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    loss, _ = jax.block_until_ready(step(model, tokens, targets))
    second_s = time.perf_counter() - t0
    n_params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    return {"lib": lib, "depth": depth, "first_s": first_s, "second_s": second_s, "build_s": build_s,
            "n_params": int(n_params), "loss": float(loss)}


# =======================================================================================
# The driver: fresh subprocesses, interleaved repeats, a table
# =======================================================================================
def run_one(lib: str, depth: int) -> dict:
    env = dict(os.environ, JAX_ENABLE_COMPILATION_CACHE="false")
    proc = subprocess.run([sys.executable, __file__, "--worker", lib, str(depth)], capture_output=True, text=True,
                          env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {lib} depth {depth} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def versions() -> dict:
    code = ("import jax, flax, plait, json; "
            "print(json.dumps({'jax': jax.__version__, 'flax': flax.__version__, 'plait': plait.__version__}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def table(results: dict, depths: list[int], repeats: int) -> str:
    lines = [
        "| depth | library | first call, median (s) | all repeats (s) | plait / Flax (median of per-repeat ratios) "
        "| steady step (ms) | params |",
        "|---:|---|---:|---|---:|---:|---:|",
    ]
    for depth in depths:
        flax_runs = results[("Flax NNX", depth)]
        for lib in LIBS:
            runs = results[(lib, depth)]
            firsts = [r["first_s"] for r in runs]
            if lib == "plait":
                ratios = [p["first_s"] / f["first_s"] for p, f in zip(runs, flax_runs)]
                ratio = f"{statistics.median(ratios):.2f}"
            else:
                ratio = "1.00 (baseline)"
            lines.append(
                f"| {depth} | {lib} | {statistics.median(firsts):.2f} | {', '.join(f'{x:.2f}' for x in firsts)} "
                f"| {ratio} | {1e3 * statistics.median(r['second_s'] for r in runs):.1f} | {runs[0]['n_params']:,} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="depth 2, 1 repeat, print only")
    parser.add_argument("--depths", type=int, nargs="+", default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="markdown file (default COMPILE_TIME.md; none with --smoke)")
    parser.add_argument("--worker", nargs=2, metavar=("LIB", "DEPTH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]))))
        return 0

    depths = args.depths or ([2] if args.smoke else [6, 24])
    repeats = args.repeats or (1 if args.smoke else 3)
    out = args.out or (None if args.smoke else HERE / "COMPILE_TIME.md")
    cases = [(lib, d) for d in depths for lib in LIBS]
    results: dict = {c: [] for c in cases}
    wall = time.perf_counter()
    for r in range(repeats):
        k = r % len(cases)
        for lib, depth in cases[k:] + cases[:k]:  # rotated per repeat
            res = run_one(lib, depth)
            results[(lib, depth)].append(res)
            print(f"repeat {r + 1}/{repeats}  {lib:9s} depth {depth:3d}: first call {res['first_s']:7.2f} s, "
                  f"second {1e3 * res['second_s']:7.1f} ms, build {res['build_s']:.2f} s", flush=True)
    text = table(results, depths, repeats)
    print()
    print(text)

    if out is not None:
        v = versions()
        doc = f"""# Compile time: unrolled Transformer LM, plait vs Flax NNX

Generated by `python benchmarks/compile_time.py` (total wall time {time.perf_counter() - wall:.0f} s).

Model (the same code for both libraries, see `build_model`): pre-LayerNorm Transformer LM built
from `nnx.Embed`, `nnx.LayerNorm`, `nnx.MultiHeadAttention` (causal mask), `nnx.Linear`,
`nnx.Dropout({RATE})`; d_model {D_MODEL}, {HEADS} heads, MLP {MLP}, sequence {SEQ}, batch {BATCH},
vocabulary {VOCAB}. The blocks are a Python list and the forward pass a Python loop (unrolled).

Measured: wall time of the **first call** of `nnx.jit(value_and_grad(loss))` in train mode (dropout
on): tracing + lowering + XLA compilation + one execution. Each measurement is a fresh subprocess
(persistent compilation cache off); {repeats} repeats, cases interleaved with a rotated order.
The ratio is the median over repeats of plait/Flax first-call times from the same repeat.
"Steady step" is the second call (median), for scale.

{text}

Environment: Python {platform.python_version()}, jax {v['jax']}, flax {v['flax']}, plait {v['plait']},
{os.cpu_count()} CPUs ({platform.machine()}), backend CPU. Shared machine: absolute times are noisy;
compare within a repeat.
"""
        out.write_text(doc)
        print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
