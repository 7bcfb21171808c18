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
- W5 eval step with metrics: plait's ``MultiMetric`` in ``nnx.jit`` against the same running
  sums in raw JAX (``metrics_eval.py``, also runnable on its own).
- W6 checkpoints: save and restore of the W3 model through ``nnx.checkpoints`` against orbax
  called directly on the same arrays (``checkpoint.py``; skipped without orbax).

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
import metrics_eval  # noqa: E402
import numpy as np  # noqa: E402
from harness import CompileClock, Runner, Timing, interleaved, python_calls  # noqa: E402

FLAX_MISSING = EQX_MISSING = ""
try:
    import impl_flax
except ImportError as e:  # the bench extra is not installed: run the rest
    impl_flax, FLAX_MISSING = None, str(e)
try:
    import impl_equinox
except ImportError as e:
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
    w2_repeats: int = 21
    w2_seconds: float = 0.25
    scan_depths: tuple = (6, 12, 24)
    scan_rounds: int = 3
    loop_depths: tuple = (6, 12)
    w3_depth: int = 24
    w3_repeats: int = 15
    w3_seconds: float = 0.01
    w3_profile_calls: int = 200


FULL = Settings(smoke=False)
_TINY_LM = maths.LMConfig(depth=2, d_model=32, heads=2, d_mlp=64, seq=16, batch=2, vocab=64)
SMOKE = Settings(
    smoke=True, w1_depths=(4,), w1_repeats=2, w1_seconds=0.002, lm=_TINY_LM, w2_repeats=2, w2_seconds=0.002,
    scan_depths=(2,), scan_rounds=1, loop_depths=(2,), w3_depth=2, w3_repeats=2, w3_seconds=0.001, w3_profile_calls=3,
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
                      "call_list": harness.call_list(runners[PLAIT].step),
                      "python": w1_python_only(rep, runners)}
        rows = []
        for label, r in runners.items():
            rows.append([label, us(timing.median(label)), ratio(timing.ratio(label)), f"{timing.spread(label):.2f}",
                         calls[label], r.n_variables])
        rep.add(f"### {depth} layers\n\n" + table(
            ["library", "µs / step", "vs raw JAX", "ratio spread", "Python calls / step", "Variables (arrays)"], rows))
    return out


def w1_python_only(rep: Report, runners: dict[str, Runner]) -> Timing | None:
    """The Python a step costs with its compiled call replaced by a stub that returns a saved
    result at once: plait's own work per step (read Variables, write them back), exactly."""
    cases = {RAW: runners[RAW].python_only, PLAIT: runners[PLAIT].python_only}
    try:
        with runners[PLAIT].stub():
            return interleaved(cases, baseline=RAW, repeats=rep.s.w1_repeats, seconds=rep.s.w1_seconds / 3,
                               min_number=3, sync=False)
    except Exception as e:  # plait's internals moved: skip, and say so
        rep.findings.append(f"(W1 Python-only measurement unavailable: {type(e).__name__}: {e})")
        return None


# -- W2 -----------------------------------------------------------------------------------------


def w2(rep: Report) -> dict:
    s = rep.s
    cfg = s.lm
    if not s.smoke:  # warm JAX's one-off paths (first scan, first attention lowering) outside any measurement
        harness.block(impl_raw.lm(cfg.at_depth(1), True).step())

    runners, first = {}, {}
    for label, make in factories("lm", cfg, stacked=True).items():
        runners[label] = make()
        first[label] = CompileClock.first_call(runners[label].step)
    timing = interleaved({k: r.step for k, r in runners.items()}, baseline=RAW, repeats=s.w2_repeats,
                         seconds=s.w2_seconds, min_number=2)
    ops = {label: (harness.lowered_ops(r.lowered()) if r.lowered is not None else None) for label, r in runners.items()}
    rows = [[label, ms(timing.median(label)), ratio(timing.ratio(label)), f"{timing.spread(label):.2f}",
             f"{first[label]['total']:.1f}", ratio(first[label]["total"] / first[RAW]["total"]),
             " / ".join(f"{first[label][k]:.2f}" for k in ("trace", "lower", "xla", "other")),
             ops[label] if ops[label] is not None else "n/a", runners[label].n_variables]
            for label in runners]
    rep.add(f"### Train step, {cfg.depth} layers, scanned\n\n"
            f"Step times: medians of {s.w2_repeats} interleaved repeats. First call: one sample each, split with "
            "JAX's compile events into tracing to a jaxpr, lowering to MLIR, XLA's compilation, and the rest "
            "(the library's own Python, and running the step). StableHLO ops: operations in the lowered "
            "train step, the size of the program XLA compiles (deterministic).\n\n" + table(
                ["library", "ms / step", "vs raw JAX", "ratio spread", "first call (s)", "vs raw JAX",
                 "trace / lower / XLA / rest (s)", "StableHLO ops", "Variables (arrays)"], rows))

    # Compile sweep: scan vs loop at several depths, libraries interleaved; each sample is a
    # new model and a new jitted function. The scanned model at the W2 depth was compiled just
    # above in the same way, and those samples count as its first round.
    sweep: dict[tuple[str, int], dict[str, list[dict]]] = {}
    sweep_ops: dict[tuple[str, int, str], int] = {}
    base_labels = list(factories("lm", cfg, all_variants=False))
    cols = [("scan", d) for d in s.scan_depths] + [("loop", d) for d in s.loop_depths]
    for mode, depth in cols:
        got: dict[str, list[dict]] = {label: [] for label in base_labels}
        rounds = s.scan_rounds if mode == "scan" else 1
        if mode == "scan" and depth == cfg.depth:
            for label in base_labels:
                got[label].append(first[label])
            rounds -= 1
        fs = factories("lm", cfg.at_depth(depth), stacked=mode == "scan", all_variants=False)
        for r in range(rounds):
            shift = (len(sweep) + r) % len(base_labels)
            for label in base_labels[shift:] + base_labels[:shift]:
                runner = fs[label]()
                got[label].append(CompileClock.first_call(runner.step))
                if (mode, depth, label) not in sweep_ops and runner.lowered is not None:
                    sweep_ops[mode, depth, label] = harness.lowered_ops(runner.lowered())
        for label in (RAW, PLAIT):  # the W2 depth's scan was not rebuilt above if it had one round
            if (mode, depth, label) not in sweep_ops:
                sweep_ops[mode, depth, label] = ops[label] if (mode, depth) == ("scan", cfg.depth) else 0
        sweep[mode, depth] = got
        print(f"  first call {mode} {depth}: " + ", ".join(
            f"{k} " + "/".join(f"{p['total']:.1f}" for p in v) + "s" for k, v in got.items()), flush=True)

    lo, hi = s.scan_depths[0], s.scan_depths[-1]

    def med(label: str, col: tuple, key: str = "total") -> float:
        return statistics.median(p[key] for p in sweep[col][label])

    def paired(col: tuple, key: Callable[[dict], float] = lambda p: p["total"]) -> list[float]:
        return [key(p) / key(r) for p, r in zip(sweep[col][PLAIT], sweep[col][RAW])]

    rows = [[label, *[f"{med(label, c):.1f}" for c in cols], ratio(med(label, ("scan", hi)) / med(label, ("scan", lo)))]
            for label in base_labels]
    rows.append(["plait / raw JAX", *[ratio(statistics.median(paired(c))) for c in cols], ""])
    rows.append(["plait / raw JAX, trace + lower only",
                 *[ratio(statistics.median(paired(c, lambda p: p["trace"] + p["lower"]))) for c in cols], ""])
    rows.append(["StableHLO ops, raw JAX / plait",
                 *[f"{sweep_ops[c + (RAW,)]} / {sweep_ops[c + (PLAIT,)]}" for c in cols], ""])
    rep.add("### First call (trace + compile + one step) by depth, seconds\n\n"
            f"Medians of {s.scan_rounds} interleaved rounds for scan, one for the loop (it costs far more to "
            "compile; `--full-sweep` adds the loop at 24 layers). Ratios are medians of the per-round ratios. "
            "XLA's compilation is almost all of every figure here, and varies from one compile to the next "
            "with the machine's load; tracing and lowering are what a library adds.\n\n"
            + table(["library", *[f"{m} {d}" for m, d in cols], f"scan {hi} / scan {lo}"], rows))
    return {"timing": timing, "first": first, "sweep": sweep, "runners": runners, "ops": ops, "depth": cfg.depth,
            "sweep_ops": sweep_ops}


# -- W3 -----------------------------------------------------------------------------------------

FLOOR = "Python object floor"


def w3(rep: Report) -> dict:
    s = rep.s
    cfg = s.lm.at_depth(s.w3_depth)
    out = {}
    for stacked in (True, False):
        layout = "stacked" if stacked else "list of layers"
        raw_params = impl_raw.lm_params(cfg, stacked)
        raw_ops = impl_raw.graph_ops(raw_params)
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
            if mod is impl_plait:
                cases[FLOOR], n_objects = impl_plait.object_floor(model)
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
        floor = ratio_to(timing, FLOOR, "raw JAX unflatten")
        rows.append([f"floor: one `SimpleNamespace` per plait graph node ({n_objects})",
                     f"unflatten: {us(timing.median('raw JAX unflatten'))}",
                     f"{us(timing.median(FLOOR))} ({ratio(floor)})", *["" for _ in list(libs)[1:]]])
        n_raw = len(jax.tree.leaves(raw_params))
        rep.add(f"### {cfg.depth} layers, {layout}\n\n"
                f"Arrays: raw JAX {n_raw}, " + ", ".join(f"{k} {v}" for k, v in n_leaves.items()) + ". "
                "The floor row creates one `types.SimpleNamespace` (built in C) per object and Variable of "
                "plait's graph with as many attributes, and nothing else: what building that many Python "
                "objects costs, against `jax.tree.unflatten` building dicts in C++.\n\n"
                + table(["operation", "raw JAX µs", *[f"{k} µs (vs raw)" for k in libs]], rows))
        out[layout] = {op: ratio_to(timing, f"plait {op}", "raw JAX " + base) for op, base in base_of.items()}
        out[layout + " floor"] = floor
        out[layout + " profile"] = {op: harness.profile_rows(cases[f"plait {op}"], s.w3_profile_calls, top=4, sync=False)
                                    for op in base_of}
        out[layout + " timing"] = timing
    return out


# -- W6 -----------------------------------------------------------------------------------------


def w6(rep: Report) -> list:
    try:
        import checkpoint
        import orbax.checkpoint  # noqa: F401
    except ImportError as e:  # orbax is in the test extra; run the rest without it
        rep.add(f"Skipped: {e}")
        return []
    text, w6_goals = checkpoint.section(rep.s.smoke)
    rep.add(text)
    return w6_goals


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
        rep.goal(f"W1 plait / raw JAX <= 1.05 at {depth} layers", ratio(t.ratio(PLAIT)), t.ratio(PLAIT) <= 1.05)
    for depth in s.w1_depths:
        calls = w1_out[depth]["calls"][PLAIT]
        n_vars = w1_out[depth]["runners"][PLAIT].n_variables
        rep.goal(f"Python calls per W1 step <= Variables, {depth} layers", f"{calls} calls, {n_vars} Variables",
                 calls <= n_vars)
    for layout in ("stacked", "list of layers"):
        worst = max(w3_out[layout].items(), key=lambda kv: kv[1])
        text = ", ".join(f"{op} {ratio(v)}" for op, v in w3_out[layout].items())
        text += f" (floor for rebuilding the objects: {ratio(w3_out[layout + ' floor'])})"
        rep.goal(f"W3 split/merge/state/update <= 5x raw flatten/unflatten ({layout})", text, worst[1] <= 5.0)
        rest = {op: v for op, v in w3_out[layout].items() if op != "merge"}
        rep.goal(f"W3 split/state/update <= 3x raw flatten/unflatten ({layout})",
                 ", ".join(f"{op} {ratio(v)}" for op, v in rest.items()), max(rest.values()) <= 3.0)
        merge_floor = w3_out[layout]["merge"] / w3_out[layout + " floor"]
        rep.goal(f"W3 merge <= 2x the object-creation floor ({layout})", ratio(merge_floor), merge_floor <= 2.0)
    t2 = w2_out["timing"]
    rep.goal("W2 train step plait / raw JAX <= 1.05", ratio(t2.ratio(PLAIT)), t2.ratio(PLAIT) <= 1.05)
    sweep = w2_out["sweep"]
    # A scan's compile time does not depend on depth, so every scanned round at every depth is
    # a repeat of one measurement: the goal takes the median of all the paired ratios.
    pairs = [p["total"] / r["total"] for d in s.scan_depths for p, r in zip(sweep["scan", d][PLAIT], sweep["scan", d][RAW])]
    median_ratio = statistics.median(pairs)
    rep.goal("W2 compile (first call) plait / raw JAX <= 1.05 (scan; median of all rounds and depths)",
             f"{ratio(median_ratio)} over {len(pairs)} pairs (range {min(pairs):.2f}-{max(pairs):.2f})",
             median_ratio <= 1.05)
    lo, hi = s.scan_depths[0], s.scan_depths[-1]

    def med(label: str, col: tuple) -> float:
        return statistics.median(p["total"] for p in sweep[col][label])

    growth = med(PLAIT, ("scan", hi)) / med(PLAIT, ("scan", lo))
    raw_growth = med(RAW, ("scan", hi)) / med(RAW, ("scan", lo))
    llo, lhi = s.loop_depths[0], s.loop_depths[-1]
    loop_growth = med(PLAIT, ("loop", lhi)) / med(PLAIT, ("loop", llo))
    sops = w2_out["sweep_ops"]
    rep.goal(f"W2 scan compile flat in depth: plait depth {hi} / depth {lo} <= 1.25",
             f"{ratio(growth)} (raw JAX {ratio(raw_growth)}; plait's loop {lhi} / {llo}: {ratio(loop_growth)}); "
             f"StableHLO ops {sops['scan', lo, PLAIT]} at {lo} layers, {sops['scan', hi, PLAIT]} at {hi}",
             growth <= 1.25)


def w1_findings(w1_out: dict) -> str:
    """Where plait's W1 step time goes: its own Python, against the step it dispatches."""
    lines = []
    for depth, d in w1_out.items():
        n_vars = d["runners"][PLAIT].n_variables
        py: Timing | None = d["python"]
        if py is None:
            continue
        step = d["timing"].median(PLAIT)
        lines.append(
            f"- **{depth} layers**: with the compiled call replaced by a stub that returns a saved result, a plait "
            f"step costs {us(py.median(PLAIT))} µs of Python (raw JAX's: {us(py.median(RAW))} µs), "
            f"{100 * py.median(PLAIT) / step:.0f}% of the {us(step)} µs step, and it overlaps XLA's execution of "
            f"the previous step (dispatch is asynchronous). It is all of plait's work per step: read "
            f"{n_vars} Variables, call, write the changed ones back, in {d['calls'][PLAIT]} Python calls: "
            + ", ".join(f"`{where}`" + (f" x{n}" if n > 1 else "") for where, n in d["call_list"]) + ".")
    measured = [(d["runners"][PLAIT].n_variables, d["python"].median(PLAIT)) for d in w1_out.values() if d["python"]]
    if len(measured) >= 2:
        (n0, t0), (n1, t1) = measured[0], measured[-1]
        lines.append(
            "- So on this machine a W1 step is mostly XLA's execution of the step, and plait's ratio to raw JAX "
            "is that of two equivalent programs, plus noise. plait's own cost grows with the number of "
            "Variables only through two list comprehensions over slots (reading values in `jit.py:_inputs`, "
            f"writing them back in `jit.py:_run`): {us((t1 - t0) / (n1 - n0))} µs a Variable here. The "
            "`prngkeyarray_flatten` call is JAX flattening the typed RNG key that plait passes as a leaf.")
    return "\n".join(lines)


def w3_findings(w3_out: dict) -> str:
    lines = []
    for layout in ("stacked", "list of layers"):
        for op, rows in w3_out[layout + " profile"].items():
            top = "; ".join(f"`{where}` {n:g}x, {own:.1f} µs each" for where, n, own, _ in rows[:4])
            lines.append(f"- {layout}, `{op}` ({ratio(w3_out[layout][op])} raw): {top}")
    for layout in ("stacked", "list of layers"):
        floor, merge = w3_out[layout + " floor"], w3_out[layout]["merge"]
        lines.append(f"- {layout}: the object floor is {ratio(floor)} raw unflatten; plait's `merge` is "
                     f"{ratio(merge / floor)} the floor.")
    return "\n".join(lines)


# Where W3's remaining cost is, and what could remove it: an analysis of plait's graph.py and
# state.py as they are when this was written (the figures it sits beside are measured each run).
W3_REMEDIES = """\
- `split`, `state`: the flattening, which leaf goes to which State (for structural filters), and
  the nesting of each State are worked out once per structure and cached with the flattening
  (`graph.py:_states`, `state.py:skeleton`). A call copies each Variable (`object.__new__` and
  four slots; the metadata dict is shared, copy-on-write) and builds one dict and one `State` per
  level (`state.py:build`): Python work per Variable and per level, where `jax.tree.flatten`
  works in C++.
- `update`: a State that `split`/`state` made, and that was not edited since, remembers its
  leaves' positions (`state.py:Origin`), so `update` writes the values in one pass over the
  cached slots, with no path lookups.
- `merge`: the leaves are taken by position the same way; what remains is building the graph.
  The first builds of a GraphDef follow a plan cached with it (`encoding.py:_build_new`); from
  the third on, straight-line code generated for that GraphDef (`build_code.py`) runs instead:
  every object a local, no loops, branches or plan lookups. Per Variable that is
  `object.__new__` and four slot stores; per module, `object.__new__` and its attribute dict
  filled from one shared constant dict plus the references to other nodes. A module's two
  bookkeeping slots (the trace it belongs to, whether a cached flattening saw it) are left
  unset outside transforms: `Object.__setattr__` tracks attributes, so they can only be set
  through the slot descriptors, which cost as much as creating the object; unset reads as
  "made outside any transform, not seen" and is filled in at the first write
  (`object.py:_settle`). What is left over the floor rows is materialising and filling each
  module's attribute dict in Python, where `SimpleNamespace(**kw)` does it in C. Flax NNX's
  `merge` instead puts the State's own Variable objects into the new graph, which saves one
  object per Variable but makes the merged graph and the State share Variables; plait's
  `merge` gives a graph of its own.
"""


def w2_findings(w2_out: dict) -> str:
    first, ops, t = w2_out["first"], w2_out["ops"], w2_out["timing"]
    p, r = first[PLAIT], first[RAW]
    size = ops[PLAIT] / ops[RAW]
    lines = [
        f"- Program size: plait's lowered train step has {ops[PLAIT]} StableHLO operations, raw JAX's "
        f"{ops[RAW]} ({ratio(size)}): " + ("XLA has no more to compile for plait. " if size <= 1.02 else
                                            "plait's program is larger. ")
        + "The programs differ in the RNG: plait's Dropout draws `fold_in(key, count)` and the count is "
        "carried through the scan; the raw step splits one key per layer and folds in one per dropout.",
    ]
    added = (p["trace"] + p["lower"] + p["other"]) - (r["trace"] + r["lower"] + r["other"])
    lines.append(
        f"- First call at {w2_out['depth']} layers: tracing + lowering {p['trace'] + p['lower']:.2f} s for "
        f"plait, {r['trace'] + r['lower']:.2f} s for raw JAX; XLA's compilation {p['xla']:.1f} s and "
        f"{r['xla']:.1f} s ({100 * r['xla'] / r['total']:.0f}% of raw JAX's first call). Outside XLA, plait "
        f"{'adds' if added >= 0 else 'saves'} {abs(added):.2f} s"
        + (". XLA's time for one program varies by tens of percent from one compile to the next on this "
           "shared machine, and that is what moves the first-call ratios above." if abs(added) < 0.05 * r["total"]
           else "."))
    lines.append(
        f"- Train step: {ratio(t.ratio(PLAIT))} raw JAX with a ratio spread of {t.spread(PLAIT):.2f}; a step is "
        f"{ms(t.median(RAW))} ms of XLA's work and plait's Python is microseconds of it (W1).")
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
                        help="also compile the Python-loop models at the deepest depth (several minutes more)")
    parser.add_argument("--out", default=None, help="where to write the report (default: RESULTS.md for a full run, "
                                                    "none for --smoke)")
    args = parser.parse_args(argv)
    s = SMOKE if args.smoke else FULL
    if args.full_sweep:
        s = dataclasses.replace(s, loop_depths=s.scan_depths)
    out_path = args.out or (None if args.smoke else os.path.join(HERE, "RESULTS.md"))
    rep = Report(s)
    t_start, load_start = time.time(), os.getloadavg()
    missing = [why for why, mod in ((FLAX_MISSING, impl_flax), (EQX_MISSING, impl_equinox)) if mod is None]
    if missing:
        print(f"warning: running without {'; '.join(missing)} (install them: pip install -e '.[bench]')", flush=True)

    sections = []
    rep.add("## W1 dispatch: MLP train step\n\n"
            "µs / step: the steady-state time of back-to-back steps (dispatch is asynchronous, so this is the "
            "larger of the Python side and XLA's execution of the step). Python calls: every Python and "
            "builtin call cProfile sees in one step. Variables: the state arrays a step reads and writes "
            "(parameters, Adam's moments and count, RNG state).")
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
    rep.add("## W5 eval step with metrics")
    w5_out = metrics_eval.run(metrics_eval.SMOKE if s.smoke else metrics_eval.FULL)
    rep.add(metrics_eval.report(w5_out))
    rep.failures.extend(f"W5 {o['cfg'].name}: plait's metrics and the raw JAX sums disagree" for o in w5_out if not o["agree"])
    sections.append(time.time())
    rep.add("## W6 checkpoints")
    w6_goals = w6(rep)
    sections.append(time.time())
    goals(rep, w1_out, w2_out, w3_out)
    rep.goals.extend(w6_goals)
    w5_ratio = w5_out[0]["timing"].ratio(metrics_eval.PLAIT)
    rep.goal("W5 eval step with MultiMetric plait / raw JAX <= 1.05 (MNIST-sized)", ratio(w5_ratio), w5_ratio <= 1.05)

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
        "### W2",
        "",
        w2_findings(w2_out),
        "",
        "### W3 (per operation; cProfile own time of the top functions, inflated by cProfile)",
        "",
        w3_findings(w3_out),
        "",
        "What would remove the rest:",
        "",
        W3_REMEDIES,
    ]
    text = "\n".join(head) + "\n" + "\n".join(rep.parts)
    if out_path:
        with open(out_path, "w") as f:
            f.write(text)
        print(f"wrote {out_path}")
    print(goals_table)
    names = ["W1", "W2", "W3", "W4", "W5", "W6"]
    prev = t_start
    print("section times: " + ", ".join(f"{n} {t - p:.0f}s" for n, t, p in zip(names, sections, [prev, *sections])))
    if rep.failures:
        print("FAILED:\n" + "\n".join(rep.failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
