"""W5 eval step with metrics: plait's ``MultiMetric`` in ``nnx.jit`` against the same sums in raw JAX.

    python benchmarks/metrics_eval.py            # the full measurement, prints a Markdown section
    python benchmarks/metrics_eval.py --smoke    # tiny repeats: checks the two agree (CI, via run.py)
    python benchmarks/metrics_eval.py --repeats 201    # more repeats, for a busy machine

The step: an MLP (Linear, ReLU, Linear) on a batch, its softmax cross-entropy, and the
running loss average and accuracy, at two sizes: an MNIST-sized eval step (784 -> 256 -> 10,
batch 256; the goal is judged here) and a tiny one (32 -> 64 -> 10, batch 32) whose compute
is a few microseconds, so it shows plait's fixed cost per call at its worst. plait keeps them in
``MultiMetric(loss=Average('loss'), accuracy=Accuracy())`` and ``nnx.jit`` writes its
``MetricState`` back; raw JAX carries four scalars (loss total and count, correct count and
count) in and out of ``jax.jit`` by hand. Both are timed interleaved (``harness.py``), and
both must compute the same loss and accuracy.
"""

from __future__ import annotations

import dataclasses
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import harness  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import plait as nnx  # noqa: E402

RAW, PLAIT = "raw JAX (jax.jit)", "plait (nnx.jit, MultiMetric)"


@dataclasses.dataclass(frozen=True)
class Config:
    name: str = "MNIST-sized"
    d_in: int = 784
    hidden: int = 256
    classes: int = 10
    batch: int = 256
    repeats: int = 61
    seconds: float = 0.02


FULL = (Config(), Config(name="tiny", d_in=32, hidden=64, batch=32))
SMOKE = (Config(name="MNIST-sized (smoke: smaller)", d_in=64, hidden=32, batch=16, repeats=2, seconds=0.002),
         Config(name="tiny", d_in=32, hidden=64, batch=32, repeats=2, seconds=0.002))


def _cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    logp = jax.nn.log_softmax(logits)
    return -jnp.take_along_axis(logp, labels[:, None], axis=-1)[:, 0]


class MLP(nnx.Module):
    def __init__(self, cfg: Config, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(cfg.d_in, cfg.hidden, rngs=rngs)
        self.out = nnx.Linear(cfg.hidden, cfg.classes, rngs=rngs)

    def __call__(self, x):
        return self.out(jax.nn.relu(self.hidden(x)))


def plait_case(cfg: Config, data: tuple):
    model = MLP(cfg, nnx.Rngs(0))
    metrics = nnx.MultiMetric(loss=nnx.metrics.Average("loss"), accuracy=nnx.metrics.Accuracy())

    @nnx.jit
    def eval_step(model, metrics, x, y):
        logits = model(x)
        metrics.update(loss=_cross_entropy(logits, y), logits=logits, labels=y)

    def step():
        eval_step(model, metrics, *data)
        return metrics.loss.count.value

    def python_only() -> float | None:
        """Seconds of plait's own Python per call: the compiled call replaced by a stub that
        returns a saved result (this reaches into plait's jit cache, so it may be unavailable)."""
        try:
            entry = eval_step._last.entry
            leaves = [v._value for v in eval_step._last.flat.slots]
            jitted, result = entry.jitted, entry.jitted(*leaves, *data, {}, ((), ()))
        except Exception:
            return None
        entry.jitted = lambda *_: result
        try:
            t = harness.interleaved({"stub": step}, baseline="stub", repeats=cfg.repeats, seconds=cfg.seconds / 3,
                                    min_number=3, sync=False)
            return t.median("stub")
        finally:
            entry.jitted = jitted

    def check(batches: list) -> dict:
        metrics.reset()
        for batch in batches:
            eval_step(model, metrics, *batch)
        return {k: float(v) for k, v in metrics.compute().items()}

    return model, metrics, step, python_only, lambda: eval_step.lower(model, metrics, *data), check


def raw_case(model: MLP, data: tuple):
    params = {name: {"kernel": layer.kernel.value, "bias": layer.bias.value}
              for name, layer in (("hidden", model.hidden), ("out", model.out))}
    sums = {"loss_total": jnp.zeros((), jnp.float32), "loss_count": jnp.zeros((), jnp.int32),
            "correct": jnp.zeros((), jnp.float32), "count": jnp.zeros((), jnp.int32)}

    @jax.jit
    def eval_step(params, sums, x, y):
        h = jax.nn.relu(x @ params["hidden"]["kernel"] + params["hidden"]["bias"])
        logits = h @ params["out"]["kernel"] + params["out"]["bias"]
        loss = _cross_entropy(logits, y)
        return {"loss_total": sums["loss_total"] + loss.sum(), "loss_count": sums["loss_count"] + loss.size,
                "correct": sums["correct"] + (logits.argmax(-1) == y).sum(), "count": sums["count"] + y.size}

    state = {"sums": sums}

    def step():
        state["sums"] = eval_step(params, state["sums"], *data)
        return state["sums"]["count"]

    def check(batches: list) -> dict:
        acc = jax.tree.map(jnp.zeros_like, sums)
        for batch in batches:
            acc = eval_step(params, acc, *batch)
        return {"loss": float(acc["loss_total"] / acc["loss_count"]), "accuracy": float(acc["correct"] / acc["count"])}

    return state, step, lambda: eval_step.lower(params, state["sums"], *data), check


def _batch(cfg: Config, seed: int) -> tuple:
    rs = np.random.RandomState(seed)
    return (jnp.asarray(rs.randn(cfg.batch, cfg.d_in).astype(np.float32)),
            jnp.asarray(rs.randint(0, cfg.classes, cfg.batch).astype(np.int32)))


def measure(cfg: Config) -> dict:
    data = _batch(cfg, 0)
    model, metrics, plait_step, python_only, plait_lowered, plait_check = plait_case(cfg, data)
    raw_state, raw_step, raw_lowered, raw_check = raw_case(model, data)
    timing = harness.interleaved({RAW: raw_step, PLAIT: plait_step}, baseline=RAW, repeats=cfg.repeats,
                                 seconds=cfg.seconds, min_number=3)
    # The timed calls ran different numbers of steps (calibrated per case), so the check is a
    # separate run of both from zero over the same three batches.
    batches = [_batch(cfg, seed) for seed in (1, 2, 3)]
    mine, ref = plait_check(batches), raw_check(batches)
    agree = (abs(mine["loss"] - ref["loss"]) <= 1e-5 * max(1.0, abs(ref["loss"]))
             and abs(mine["accuracy"] - ref["accuracy"]) <= 1e-6)
    return {"cfg": cfg, "timing": timing, "agree": agree, "loss": ref["loss"], "accuracy": ref["accuracy"],
            "calls": harness.python_calls(plait_step), "python": python_only(),
            "ops": (harness.lowered_ops(raw_lowered()), harness.lowered_ops(plait_lowered()))}


def run(configs: tuple = FULL) -> list[dict]:
    return [measure(cfg) for cfg in configs]


def report(results: list[dict]) -> str:
    """A Markdown section: one row per size, and whether the two computed the same metrics."""
    rows = []
    for out in results:
        cfg, t = out["cfg"], out["timing"]
        python = f"{1e6 * out['python']:.1f}" if out["python"] is not None else "n/a"
        rows.append(f"| {cfg.name}: {cfg.d_in} -> {cfg.hidden} -> {cfg.classes}, batch {cfg.batch} | "
                    f"{1e6 * t.median(RAW):.1f} | {1e6 * t.median(PLAIT):.1f} | {t.ratio(PLAIT):.2f}x | "
                    f"{t.spread(PLAIT):.2f} | {min(t.samples[PLAIT]) / min(t.samples[RAW]):.2f}x | {python} | {out['calls']} | {out['ops'][0]} / {out['ops'][1]} | "
                    f"{'yes' if out['agree'] else '**NO**'} |")
    return "\n".join([
        "Forward pass, softmax cross-entropy, running loss average and accuracy, state written back: plait's "
        "`MultiMetric(loss=Average('loss'), accuracy=Accuracy())` in `nnx.jit` against four running sums "
        "carried through `jax.jit` by hand. Goal: plait / raw JAX <= 1.05 on the MNIST-sized step. plait's "
        "Python is its whole work per call (read the Variables, call, write back), measured with the compiled "
        "call stubbed out; it is the same at every size. The StableHLO operation counts of the two lowered "
        "steps say whether XLA has the same program to run. *fastest / fastest* is the ratio of the two "
        "cases' fastest samples: on a busy machine, load only ever adds time, so it is the least disturbed "
        "comparison.",
        "",
        "| eval step | raw JAX µs | plait µs | plait / raw | ratio spread | fastest / fastest | plait's Python µs | "
        "Python calls | StableHLO ops raw / plait | same loss and accuracy |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *rows,
    ])


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    configs = SMOKE if "--smoke" in args else FULL
    if "--repeats" in args:  # more repeats: a steadier median on a busy machine
        n = int(args[args.index("--repeats") + 1])
        configs = tuple(dataclasses.replace(c, repeats=n) for c in configs)
    results = run(configs)
    print(report(results))
    if not all(out["agree"] for out in results):
        print("FAILED: plait's metrics and the raw JAX sums disagree", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
