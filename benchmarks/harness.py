"""Timing, call counting and profiling, shared by every workload.

The machines this runs on are small and shared, so one measurement means little. Every
timing here is *interleaved*: repeat ``r`` times each case once, in an order rotated per
repeat, so that a slow spell of the machine hits all cases alike. A case's figure is the
median over repeats, and its ratio to the baseline is the median of the per-repeat ratios
(each taken against the baseline measured moments apart in the same repeat).
"""

from __future__ import annotations

import contextlib
import cProfile
import dataclasses
import gc
import os
import pstats
import re
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax


@dataclasses.dataclass
class Runner:
    """One library's version of a training workload, ready to run.

    ``step()`` runs one train step and writes the new state back to wherever that library
    keeps it (module objects, or the runner's own references for pure-function libraries);
    it returns the loss. ``masks()`` runs the same train step, built the same way, that also
    returns each layer's dropout keep-mask stacked on axis 0 (used by W4). ``n_variables``
    counts the state arrays the step reads and writes (Variables, or pytree leaves).
    """

    step: Callable[[], Any]
    masks: Callable[[], Any]
    n_variables: int
    # Diagnostics for W1 (raw JAX and plait only):
    python_only: Callable[[], Any] | None = None  # the step with its compiled call stubbed out
    stub: Callable[[], Any] = contextlib.nullcontext  # context in which python_only's stub is installed
    lowered: Callable[[], Any] | None = None  # the step's jax.stages.Lowered (W2: the program's size)


def block(x: Any) -> Any:
    return jax.block_until_ready(x)


def time_steps(step: Callable[[], Any], number: int, sync: bool = True) -> float:
    """Seconds per call of ``step``, over ``number`` back-to-back calls.

    Dispatch is asynchronous, so with ``sync`` the last result is waited for: the figure is
    the steady-state cost of a step, whichever of Python dispatch or device work is slower.
    """
    gc.disable()  # no collection inside a sample (collected once per interleaved run instead)
    try:
        t0 = time.perf_counter()
        out = None
        for _ in range(number):
            out = step()
        if sync:
            block(out)
        return (time.perf_counter() - t0) / number
    finally:
        gc.enable()


@dataclasses.dataclass
class Timing:
    samples: dict[str, list[float]]
    baseline: str

    def median(self, name: str) -> float:
        return statistics.median(self.samples[name])

    def ratio(self, name: str) -> float:
        base = self.samples[self.baseline]
        return statistics.median(t / b for t, b in zip(self.samples[name], base))

    def spread(self, name: str) -> float:
        """(max - min) / median of the per-repeat ratios: how much to trust the ratio."""
        base = self.samples[self.baseline]
        rs = [t / b for t, b in zip(self.samples[name], base)]
        return (max(rs) - min(rs)) / statistics.median(rs) if len(rs) > 1 else 0.0


def interleaved(cases: dict[str, Callable[[], Any]], *, baseline: str, repeats: int, seconds: float,
                min_number: int = 1, sync: bool = True) -> Timing:
    """Time every case ``repeats`` times, interleaved; a sample is about ``seconds`` long.

    Each case's number of calls per sample is calibrated once, from one timed call after a
    warm-up call, so fast and slow cases get samples of similar length.
    """
    names = list(cases)
    gc.collect()
    number = {}
    for name in names:
        out = cases[name]()
        if sync:
            block(out)
        t = time_steps(cases[name], 1, sync)
        number[name] = max(min_number, int(seconds / max(t, 1e-7)))
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(time_steps(cases[name], number[name], sync))
    return Timing(samples, baseline)


_OP = re.compile(r'^\s*(?:%[^=]+=\s*)?"?(?!func\.func)([a-z_]+\.[a-z_]+)')


def lowered_ops(lowered: Any) -> int:
    """Operations in a lowered (StableHLO) module: a deterministic size of the program XLA compiles."""
    return sum(1 for line in lowered.as_text().splitlines() if _OP.match(line))


class CompileClock:
    """Splits a first call's time using JAX's own compile events: tracing to a jaxpr, lowering
    to MLIR, and XLA's compilation; the rest is the library's Python and running the step."""

    EVENTS = {"/jax/core/compile/jaxpr_trace_duration": "trace",
              "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
              "/jax/core/compile/backend_compile_duration": "xla"}
    _active: dict | None = None
    _installed = False

    @classmethod
    def _listen(cls, event: str, duration: float, **_: Any) -> None:
        if cls._active is not None and event in cls.EVENTS:
            key = cls.EVENTS[event]
            cls._active[key] = cls._active.get(key, 0.0) + duration

    @classmethod
    def first_call(cls, fn: Callable[[], Any]) -> dict[str, float]:
        """``{"total", "trace", "lower", "xla", "other"}`` in seconds for one (first) call of ``fn``."""
        if not cls._installed:
            jax.monitoring.register_event_duration_secs_listener(cls._listen)
            cls._installed = True
        cls._active = parts = {"trace": 0.0, "lower": 0.0, "xla": 0.0}
        try:
            t0 = time.perf_counter()
            block(fn())
            parts["total"] = time.perf_counter() - t0
        finally:
            cls._active = None
        parts["other"] = parts["total"] - parts["trace"] - parts["lower"] - parts["xla"]
        return parts


def _profiled_calls(fn: Callable[[], Any]) -> int:
    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    return pstats.Stats(prof).total_calls  # type: ignore[attr-defined]


_BASELINE_CALLS: int | None = None


def python_calls(step: Callable[[], Any]) -> int:
    """Python (and builtin) function calls cProfile sees in one ``step()``, not counting
    ``step`` itself or the profiler's own bookkeeping. Deterministic for a warmed-up step."""
    global _BASELINE_CALLS
    if _BASELINE_CALLS is None:
        _BASELINE_CALLS = _profiled_calls(lambda: None)
    block(step())  # warm: compiled, caches filled
    return _profiled_calls(step) - _BASELINE_CALLS


def call_list(step: Callable[[], Any]) -> list[tuple[str, int]]:
    """The calls cProfile sees in one warmed-up ``step()``: ``(file:function, count)``."""
    block(step())
    prof = cProfile.Profile()
    prof.enable()
    step()
    prof.disable()
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    rows = [(f"{_short(path)}:{func}", ncalls) for (path, _line, func), (_cc, ncalls, *_rest) in stats.items()
            if "_lsprof.Profiler" not in func and not _short(path).startswith("impl_")]  # not the runner's closure
    return sorted(rows, key=lambda r: -r[1])


def profile_rows(step: Callable[[], Any], number: int, top: int = 8, sync: bool = True) -> list[tuple[str, float, float, float]]:
    """The functions a warmed-up ``step`` spends its own time in, most first.

    Rows are ``(file:function, calls per step, own microseconds per call, own microseconds per step)``.
    cProfile adds its own cost to every call, so read these as where, not exactly how much.
    """
    out = step()
    if sync:
        block(out)
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(number):
        out = step()
    if sync:
        block(out)
    prof.disable()
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    rows = []
    for (path, _line, func), (_cc, ncalls, tottime, _ct, _callers) in stats.items():
        where = f"{_short(path)}:{func}"
        rows.append((where, ncalls / number, 1e6 * tottime / max(ncalls, 1), 1e6 * tottime / number))
    rows.sort(key=lambda r: -r[3])
    return rows[:top]


def _short(path: str) -> str:
    if path == "~":
        return "builtin"
    for marker in ("site-packages" + os.sep, "src" + os.sep, "benchmarks" + os.sep):
        if marker in path:
            return path.split(marker, 1)[1]
    return os.path.basename(path)
