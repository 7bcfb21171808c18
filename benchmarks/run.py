"""plait against raw JAX, Flax NNX and Equinox: run every workload and write RESULTS.md.

    python benchmarks/run.py            # the full run (about 10 minutes on 2 CPU cores)
    python benchmarks/run.py --smoke    # tiny sizes and repeats: every workload, every library,
                                        # the W4 assertions; no timing goals (CI runs this)

Workloads (sizes in ``maths.py``):

- W1 dispatch: a train step of an MLP (Linear, Dropout, ReLU; 8 and 32 layers, width 32,
  batch 4) with value-and-grad and optax Adam, state written back. Microseconds per step,
  and the Python calls cProfile counts in one step next to the number of Variables.
- W2 scanned Transformer: a pre-LayerNorm Transformer LM whose layer stack is built with
  ``split_rngs`` + ``vmap`` (or the library's equivalent) and applied with ``scan``: time per
  train step, and the first call's time (trace and compile) for scan vs a Python loop over
  layers at several depths.
- W3 graph operations: ``split``/``merge``/``state``/``update`` of a 24-layer W2 model
  (stacked, and as a list of layers) against ``jax.tree.flatten``/``unflatten`` of the same
  parameters as a dict.
- W4 correctness: every layer's dropout mask differs from every other layer's within a
  step, and each layer's mask changes from one step to the next, for every library.

Timings are medians of interleaved repeats, with ratios to raw JAX from the same run (see
``harness.py``). The libraries' code is in ``impl_*.py`` and ``models_nnx.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.metadata
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
if "--smoke" in sys.argv[1:]:
    # The smoke run checks code paths and correctness, not speed: let XLA skip its slow
    # optimisations (compiling is most of the smoke run's time). Set before JAX starts.
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

import harness  # noqa: E402
import impl_plait  # noqa: E402
import impl_raw  # noqa: E402
import jax  # noqa: E402
import maths  # noqa: E402
import numpy as np  # noqa: E402
from harness import CompileClock, Runner, Timing, interleaved, python_calls  # noqa: E402

try:
    import impl_flax
except ImportError as e:  # pragma: no cover - the bench extra is not installed
    impl_flax, FLAX_MISSING = None, str(e)
try:
    import impl_equinox
except ImportError as e:  # pragma: no cover
    impl_equinox, EQX_MISSING = None, str(e)

RAW, PLAIT = "raw JAX (jax.jit)", "plait (nnx.jit)"
FLAX, EQX = "Flax NNX (nnx.jit)", "Equinox (eqx.filter_jit)"


def flax_label(variant: str) -> str:
    return {"jit": FLAX, "jit(graph=False)": "Flax NNX (nnx.jit graph=False)",
            "cached_partial": "Flax NNX (nnx.cached_partial)"}[variant]


@dataclasses.dataclass(frozen=True)
class Settings:
    smoke: bool
    w1_depths: tuple = (8, 32)
    w1_repeats: int = 31
    w1_seconds: float = 0.03
    lm: maths.LMConfig = maths.LMConfig()
    w2_repeats: int = 7
    w2_seconds: float = 0.25
    compile_depths: tuple = (6, 12, 24)
    loop_all_libs_up_to: int = 12
    w3_depth: int = 24
    w3_repeats: int = 15
    w3_seconds: float = 0.01
    w3_profile_calls: int = 200
    profile_steps: int = 300


FULL = Settings(smoke=False)
_TINY_LM = maths.LMConfig(depth=2, d_model=32, heads=2, d_mlp=64, seq=16, batch=2, vocab=64)
SMOKE = Settings(
    smoke=True, w1_depths=(4,), w1_repeats=2, w1_seconds=0.002, lm=_TINY_LM, w2_repeats=2, w2_seconds=0.002,
    compile_depths=(2,), loop_all_libs_up_to=2, w3_depth=2, w3_repeats=2, w3_seconds=0.001, w3_profile_calls=3, profile_steps=3,
)


# -- the libraries ------------------------------------------------------------------------------


def factories(kind: str, cfg: Any, stacked: bool = True, all_variants: bool = True) -> dict[str, Callable[[], Runner]]:
    """``label -> () -> Runner`` for every library (and every Flax jit variant if asked)."""

    def make(mod, **kw):
        if kind == "mlp":
            return lambda: mod.mlp(cfg, **kw)
        return lambda: mod.lm(cfg, stacked, **kw)

    out = {RAW: make(impl_raw), PLAIT: make(impl_plait)}
    if impl_flax is not None:
        for v in impl_flax.VARIANTS if all_variants else ["jit"]:
            out[flax_label(v)] = make(impl_flax, variant=v)
    if impl_equinox is not None:
        out[EQX] = make(impl_equinox)
    return out


# -- W4: dropout masks ----------------------------------------------------------------------------


def check_masks(runner: Runner, rate: float) -> dict[str, bool]:
    """Two train steps' per-layer keep-masks: all layers differ, every layer changes, rate is right."""
    m1, m2 = np.asarray(runner.masks()), np.asarray(runner.masks())
    n = m1.shape[0]
    within = all(not np.array_equal(m1[i], m1[j]) for i in range(n) for j in range(i))
    between = all(not np.array_equal(m1[i], m2[i]) for i in range(n))
    kept = float(np.concatenate([m1.ravel(), m2.ravel()]).mean())
    return {"layers differ": within, "steps differ": between, "rate": abs(kept - (1 - rate)) < 0.06, "kept": kept}


# -- the report -----------------------------------------------------------------------------------


class Report:
    def __init__(self, settings: Settings):
        self.s = settings
        self.parts: list[str] = []
        self.goals: list[tuple[str, str, bool | None]] = []
        self.failures: list[str] = []
        self.findings: list[str] = []
        self.data: dict[str, Any] = {}

    def add(self, text: str) -> None:
        self.parts.append(text.rstrip() + "\n")
        print(text.rstrip() + "\n", flush=True)

    def goal(self, name: str, measured: str, met: bool) -> None:
        self.goals.append((name, measured, None if self.s.smoke else met))


def table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def us(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f}"


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f}"


def ratio(x: float) -> str:
    return f"{x:.2f}x"


def ratio_to(t: Timing, name: str, base: str) -> float:
    return statistics.median(a / b for a, b in zip(t.samples[name], t.samples[base]))


# -- W1 -----------------------------------------------------------------------------------------


def w1(rep: Report) -> dict:
    s = rep.s
    out = {}
    for depth in s.w1_depths:
        cfg = maths.MLPConfig(depth=depth)
        runners = {label: make() for label, make in factories("mlp", cfg).items()}
        for r in runners.values():
            harness.block(r.step())
        timing = interleaved({label: r.step for label, r in runners.items()}, baseline=RAW,
                             repeats=s.w1_repeats, seconds=s.w1_seconds, min_number=3)
        calls = {label: python_calls(r.step) for label, r in runners.items()}
        out[depth] = {"runners": runners, "timing": timing, "calls": calls,
                      "profile": harness.profile_rows(runners[PLAIT].step, s.profile_steps),
                      "latency": w1_latency(rep, runners)}
        rows = []
        for label, r in runners.items():
            rows.append([label, us(timing.median(label)), ratio(timing.ratio(label)), f"{timing.spread(label):.2f}",
                         calls[label], r.n_variables])
        rep.add(f"### {depth} layers\n\n" + table(
            ["library", "µs / step", "vs raw JAX", "ratio spread", "Python calls / step", "Variables (arrays)"], rows))
    return out


INNER = "plait's jax.jit call alone"


def w1_latency(rep: Report, runners: dict[str, Runner]) -> Timing | None:
    """Each step waited for before the next, so Python and device work add up instead of
    overlapping: plait's step minus the very ``jax.jit`` call it makes is plait's own cost."""
    inner = runners[PLAIT].inner
    try:
        harness.block(inner())
    except Exception as e:  # plait's internals moved: skip the decomposition, and say so
        rep.findings.append(f"(W1 decomposition unavailable: {type(e).__name__}: {e})")
        return None
    cases = {RAW: runners[RAW].step, PLAIT: runners[PLAIT].step, INNER: inner}
    synced = {k: (lambda f=f: harness.block(f())) for k, f in cases.items()}
    return interleaved(synced, baseline=RAW, repeats=rep.s.w1_repeats, seconds=rep.s.w1_seconds, min_number=3)


# -- W2 -----------------------------------------------------------------------------------------


def w2(rep: Report) -> dict:
    s = rep.s
    cfg = s.lm
    if not s.smoke:  # warm JAX's one-off paths (first scan, first attention lowering) outside any measurement
        for stacked in (True, False):
            harness.block(impl_raw.lm(cfg.at_depth(1), stacked).step())

    runners, first = {}, {}
    for label, make in factories("lm", cfg, stacked=True).items():
        runners[label] = make()
        first[label] = CompileClock.first_call(runners[label].step)
    timing = interleaved({k: r.step for k, r in runners.items()}, baseline=RAW, repeats=s.w2_repeats,
                         seconds=s.w2_seconds, min_number=2)
    rows = [[label, ms(timing.median(label)), ratio(timing.ratio(label)), f"{timing.spread(label):.2f}",
             f"{first[label]['total']:.1f}", ratio(first[label]["total"] / first[RAW]["total"]),
             " / ".join(f"{first[label][k]:.2f}" for k in ("trace", "lower", "xla", "other")),
             runners[label].n_variables]
            for label in runners]
    rep.add(f"### Train step, {cfg.depth} layers, scanned\n\n"
            f"Step times: medians of {s.w2_repeats} interleaved repeats. First call: one sample each, split with "
            "JAX's compile events into tracing to a jaxpr, lowering to MLIR, XLA's compilation, and the rest "
            "(the library's own Python, and running the step).\n\n" + table(
                ["library", "ms / step", "vs raw JAX", "ratio spread", "first call (s)", "vs raw JAX",
                 "trace / lower / XLA / rest (s)", "Variables (arrays)"], rows))

    # Compile sweep: scan vs loop at several depths, interleaved across libraries; each sample is
    # a new model and a new jitted function. The scanned model at the W2 depth was compiled
    # just above in the same way, and those samples are reused.
    sweep: dict[tuple[str, int], dict[str, dict]] = {}
    base_labels = list(factories("lm", cfg, all_variants=False))
    for mode in ("scan", "loop"):
        for depth in s.compile_depths:
            if mode == "scan" and depth == cfg.depth:
                sweep[mode, depth] = {label: first[label] for label in base_labels}
                continue
            fs = factories("lm", cfg.at_depth(depth), stacked=mode == "scan", all_variants=False)
            if mode == "loop" and depth > s.loop_all_libs_up_to:
                fs = {k: v for k, v in fs.items() if k in (RAW, PLAIT)}
            order = list(fs)
            shift = len(sweep) % len(order)
            got = {}
            for label in order[shift:] + order[:shift]:
                got[label] = CompileClock.first_call(fs[label]().step)
            sweep[mode, depth] = got
            print(f"  first call {mode} {depth}: " + ", ".join(f"{k} {v['total']:.1f}s" for k, v in got.items()), flush=True)

    cols = [(m, d) for m in ("scan", "loop") for d in s.compile_depths]
    lo, hi = s.compile_depths[0], s.compile_depths[-1]

    def cell(label: str, col: tuple, key: str = "total") -> str:
        got = sweep[col].get(label)
        return f"{got[key]:.1f}" if got else "-"

    rows = []
    for label in base_labels:
        rows.append([label, *[cell(label, c) for c in cols],
                     ratio(sweep["scan", hi][label]["total"] / sweep["scan", lo][label]["total"])])
    rows.append(["plait / raw JAX", *[ratio(sweep[c][PLAIT]["total"] / sweep[c][RAW]["total"]) for c in cols], ""])
    rows.append(["plait / raw JAX, trace + lower only",
                 *[ratio((sweep[c][PLAIT]["trace"] + sweep[c][PLAIT]["lower"]) / (sweep[c][RAW]["trace"] + sweep[c][RAW]["lower"]))
                   for c in cols], ""])
    skipped = [k for k in base_labels if k not in (RAW, PLAIT)]
    note = (f" The loop deeper than {s.loop_all_libs_up_to} layers is compiled for raw JAX and plait only "
            f"(XLA's compile time dominates it and grows with depth whatever the library; "
            f"`--full-sweep` adds {', '.join(skipped)})." if skipped and hi > s.loop_all_libs_up_to else "")
    rep.add("### First call (trace + compile + one step) by depth, seconds\n\n"
            "One sample per cell, libraries interleaved." + note + "\n\n"
            + table(["library", *[f"{m} {d}" for m, d in cols], f"scan {hi} / scan {lo}"], rows))
    return {"timing": timing, "first": first, "sweep": sweep, "runners": runners}


# -- W3 -----------------------------------------------------------------------------------------


def w3(rep: Report) -> dict:
    s = rep.s
    cfg = s.lm.at_depth(s.w3_depth)
    out = {}
    for stacked in (True, False):
        layout = "stacked" if stacked else "list of layers"
        raw_ops = impl_raw.graph_ops(impl_raw.lm_params(cfg, stacked))
        libs = {"plait": impl_plait}
        if impl_flax is not None:
            libs["Flax NNX"] = impl_flax
        if impl_equinox is not None:
            libs["Equinox"] = impl_equinox
        cases = {f"raw JAX {k}": v for k, v in raw_ops.items()}
        n_leaves = {}
        for name, mod in libs.items():
            model = mod.lm_model(cfg, stacked)
            for op, fn in mod.graph_ops(model).items():
                cases[f"{name} {op}"] = fn
            n_leaves[name] = len(jax.tree.leaves(mod.graph_ops(model)["state"]()))
        timing = interleaved(cases, baseline="raw JAX flatten", repeats=s.w3_repeats, seconds=s.w3_seconds,
                             min_number=3, sync=False)
        base_of = {"split": "flatten", "state": "flatten", "merge": "unflatten", "update": "unflatten"}
        rows = []
        for op, base in base_of.items():
            row = [op, f"{base}: {us(timing.median('raw JAX ' + base))}"]
            for name in libs:
                key = f"{name} {op}"
                row.append(f"{us(timing.median(key))} ({ratio(ratio_to(timing, key, 'raw JAX ' + base))})"
                           if key in timing.samples else "n/a")
            rows.append(row)
        n_raw = len(jax.tree.leaves(impl_raw.lm_params(cfg, stacked)))
        rep.add(f"### {cfg.depth} layers, {layout}\n\n"
                f"Arrays: raw JAX {n_raw}, " + ", ".join(f"{k} {v}" for k, v in n_leaves.items()) + ".\n\n"
                + table(["operation", "raw JAX µs", *[f"{k} µs (vs raw)" for k in libs]], rows))
        out[layout] = {op: ratio_to(timing, f"plait {op}", "raw JAX " + base) for op, base in base_of.items()}
        out[layout + " profile"] = {op: harness.profile_rows(cases[f"plait {op}"], s.w3_profile_calls, top=4, sync=False)
                                    for op in base_of}
        out[layout + " timing"] = timing
    return out


# -- W4 -----------------------------------------------------------------------------------------


def w4(rep: Report, w1_out: dict, w2_out: dict) -> dict:
    """Runs the W4 variant of the W1 and W2 runners' train steps (same models, same state)."""
    s = rep.s
    results: dict[str, dict[str, dict]] = {}
    depth = s.w1_depths[0]
    for label, r in w1_out[depth]["runners"].items():
        results.setdefault(label, {})[f"W1 MLP, {depth} layers (Python loop)"] = check_masks(r, maths.MLPConfig().rate)
    for label, r in w2_out["runners"].items():
        results.setdefault(label, {})[f"W2 LM, {s.lm.depth} layers (scan)"] = check_masks(r, s.lm.rate)
    columns = list(next(iter(results.values())))
    rows = []
    for label, by in results.items():
        row = [label]
        for c in columns:
            r = by[c]
            ok = r["layers differ"] and r["steps differ"] and r["rate"]
            row.append(("pass" if ok else "FAIL") + f" (kept {r['kept']:.3f})")
            for check in ("layers differ", "steps differ", "rate"):
                if not r[check]:
                    rep.failures.append(f"W4 {label}, {c}: {check} failed")
        rows.append(row)
    rep.add("Each cell: two consecutive train steps, each returning every layer's dropout keep-mask. "
            "Pass = the masks of all layers differ pairwise within a step, every layer's mask changes "
            "between the steps, and the kept fraction is 1 - rate.\n\n" + table(["library", *columns], rows))
    return results


# -- goals and findings ---------------------------------------------------------------------------


def goals(rep: Report, w1_out: dict, w2_out: dict, w3_out: dict) -> None:
    s = rep.s
    for depth in s.w1_depths:
        t = w1_out[depth]["timing"]
        rep.goal(f"W1 plait / raw JAX <= 1.10 at {depth} layers", ratio(t.ratio(PLAIT)), t.ratio(PLAIT) <= 1.10)
    for depth in s.w1_depths:
        calls = w1_out[depth]["calls"][PLAIT]
        n_vars = w1_out[depth]["runners"][PLAIT].n_variables
        rep.goal(f"Python calls per W1 step <= Variables, {depth} layers", f"{calls} calls, {n_vars} Variables",
                 calls <= n_vars)
    for layout in ("stacked", "list of layers"):
        worst = max(w3_out[layout].items(), key=lambda kv: kv[1])
        text = ", ".join(f"{op} {ratio(v)}" for op, v in w3_out[layout].items())
        rep.goal(f"W3 split/merge/state/update <= 5x raw flatten/unflatten ({layout})", text, worst[1] <= 5.0)
    t2 = w2_out["timing"]
    rep.goal("W2 train step plait / raw JAX <= 1.05", ratio(t2.ratio(PLAIT)), t2.ratio(PLAIT) <= 1.05)
    sweep = w2_out["sweep"]
    compile_ratios = {d: sweep["scan", d][PLAIT]["total"] / sweep["scan", d][RAW]["total"] for d in s.compile_depths}
    rep.goal("W2 compile (first call) plait / raw JAX <= 1.05 (scan, each depth)",
             ", ".join(f"depth {d}: {ratio(v)}" for d, v in compile_ratios.items()),
             max(compile_ratios.values()) <= 1.05)
    lo, hi = s.compile_depths[0], s.compile_depths[-1]
    growth = sweep["scan", hi][PLAIT]["total"] / sweep["scan", lo][PLAIT]["total"]
    raw_growth = sweep["scan", hi][RAW]["total"] / sweep["scan", lo][RAW]["total"]
    loop_growth = sweep["loop", hi][PLAIT]["total"] / sweep["loop", lo][PLAIT]["total"]
    rep.goal(f"W2 scan compile flat in depth: plait depth {hi} / depth {lo} <= 1.25",
             f"{ratio(growth)} (raw JAX {ratio(raw_growth)}; plait's loop {ratio(loop_growth)})", growth <= 1.25)


def w1_findings(w1_out: dict) -> str:
    """Where plait's W1 step time goes: its Python around the call, and the call itself."""
    lines = []
    for depth, d in w1_out.items():
        lat: Timing | None = d["latency"]
        if lat is not None:
            p, i, r = lat.median(PLAIT), lat.median(INNER), lat.median(RAW)
            lines.append(
                f"- **{depth} layers**, each step waited for (so nothing overlaps): plait {us(p)} µs; the same "
                f"`jax.jit` call made directly on plait's leaves {us(i)} µs; raw JAX {us(r)} µs. plait's own "
                f"Python per step: {us(p - i)} µs ({ratio(ratio_to(lat, PLAIT, INNER))} its call alone), "
                f"{d['calls'][PLAIT]} calls for {d['runners'][PLAIT].n_variables} Variables. Its compiled call "
                f"against raw JAX's: {ratio(ratio_to(lat, INNER, RAW))}.")
        rows = [[where, f"{n:g}", f"{own:.2f}", f"{per_step:.2f}"] for where, n, own, per_step in d["profile"]]
        lines.append(f"\n  cProfile of the plait step at {depth} layers, own time (cProfile adds to every call, "
                     "so this says where, not exactly how much):\n\n"
                     + "\n".join("  " + x for x in table(["function", "calls / step", "µs / call", "µs / step"], rows).splitlines())
                     + "\n")
    return "\n".join(lines)


def w3_findings(w3_out: dict) -> str:
    lines = []
    for layout in ("stacked", "list of layers"):
        for op, rows in w3_out[layout + " profile"].items():
            top = "; ".join(f"`{where}` {n:g}x, {own:.1f} µs each" for where, n, own, _ in rows[:4])
            lines.append(f"- {layout}, `{op}` ({ratio(w3_out[layout][op])} raw): {top}")
    return "\n".join(lines)


def environment() -> str:
    def version(pkg: str) -> str:
        try:
            return importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    pkgs = ", ".join(f"{p} {version(p)}" for p in ("jax", "jaxlib", "flax", "equinox", "optax", "plait"))
    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}; {pkgs}; "
            f"backend {jax.default_backend()}.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes and repeats (CI): checks, no timing goals")
    parser.add_argument("--full-sweep", action="store_true",
                        help="compile the deepest Python-loop models for every library, not only raw JAX and plait")
    parser.add_argument("--out", default=None, help="where to write the report (default: RESULTS.md for a full run, "
                                                    "none for --smoke)")
    args = parser.parse_args(argv)
    s = SMOKE if args.smoke else FULL
    if args.full_sweep:
        s = dataclasses.replace(s, loop_all_libs_up_to=max(s.compile_depths))
    out_path = args.out or (None if args.smoke else os.path.join(HERE, "RESULTS.md"))
    rep = Report(s)
    t_start, load_start = time.time(), os.getloadavg()
    missing = [m for m, mod in (("flax", impl_flax), ("equinox", impl_equinox)) if mod is None]
    if missing:
        print(f"warning: {', '.join(missing)} not installed (pip install -e '.[bench]'); running without them", flush=True)

    sections = []
    rep.add("## W1 dispatch: MLP train step")
    w1_out = w1(rep)
    sections.append(time.time())
    rep.add("## W2 scanned Transformer LM")
    w2_out = w2(rep)
    sections.append(time.time())
    rep.add("## W3 graph operations")
    w3_out = w3(rep)
    sections.append(time.time())
    rep.add("## W4 correctness: dropout masks")
    w4(rep, w1_out, w2_out)
    sections.append(time.time())
    goals(rep, w1_out, w2_out, w3_out)

    elapsed = time.time() - t_start
    load_end = os.getloadavg()
    goals_table = table(["goal", "measured", "met"],
                        [[g, m, "n/a (smoke)" if ok is None else ("met" if ok else "**not met**")] for g, m, ok in rep.goals])
    head = [
        "# plait benchmarks" + (" (smoke run: tiny sizes, not results)" if s.smoke else ""),
        "",
        f"Generated by `python benchmarks/run.py{' --smoke' if s.smoke else ''}` on "
        f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} in {elapsed / 60:.1f} minutes. {environment()}",
        "",
        f"Load average (1 min) at start {load_start[0]:.1f}, at end {load_end[0]:.1f}: the machine is shared, so "
        "read ratios (measured against raw JAX moments apart) rather than absolute times. Every timing is the "
        "median of interleaved repeats; a ratio is the median of per-repeat ratios, and its *spread* "
        "((max - min) / median of those ratios) says how much the repeats disagreed.",
        "",
        "## Goals",
        "",
        goals_table,
        "",
        "## Where plait's time goes",
        "",
        "### W1 (per step)",
        "",
        w1_findings(w1_out),
        *rep.findings,
        "",
        "### W3 (per operation; cProfile own time of the top functions, inflated by cProfile)",
        "",
        w3_findings(w3_out),
        "",
    ]
    text = "\n".join(head) + "\n" + "\n".join(rep.parts)
    if out_path:
        with open(out_path, "w") as f:
            f.write(text)
        print(f"wrote {out_path}")
    print(goals_table)
    names = ["W1", "W2", "W3", "W4"]
    prev = t_start
    print("section times: " + ", ".join(f"{n} {t - p:.0f}s" for n, t, p in zip(names, sections, [prev, *sections])))
    if rep.failures:
        print("FAILED:\n" + "\n".join(rep.failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
