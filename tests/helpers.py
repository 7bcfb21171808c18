"""Helpers shared by the transform and misuse tests (``pythonpath = tests``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import plait as nnx


class Holder(nnx.Module):
    """One Variable (a BatchStat unless ``kind`` says otherwise) at ``.v``."""

    def __init__(self, value, kind=nnx.BatchStat):
        self.v = kind(value)


class Net(nnx.Module):
    """A Linear, a counter each call bumps, and a Dropout with its own 'dropout' stream."""

    def __init__(self, seed: int = 0, rate: float = 0.5):
        self.lin = nnx.Linear(3, 2, rngs=nnx.Rngs(seed))
        self.drop = nnx.Dropout(rate, rngs=nnx.Rngs(dropout=seed + 1))
        self.calls = nnx.BatchStat(jnp.zeros((), jnp.int32))

    def __call__(self, x):
        self.calls.value = self.calls.value + 1
        return self.drop(jnp.tanh(self.lin(x)))


def is_concrete(value) -> bool:
    """A real array, not a tracer leaked out of a trace."""
    return isinstance(value, jax.Array) and not isinstance(value, jax.core.Tracer)


def dropout_count(net: Net) -> int:
    """How many keys ``net``'s dropout stream has drawn (and that the count is concrete)."""
    value = net.drop.rngs.dropout.count.value
    assert is_concrete(value), value
    return int(value)


def raises(exc, fn, *fragments) -> str:
    """``fn()`` raises ``exc`` and every fragment is in the message; returns the message."""
    with pytest.raises(exc) as info:
        fn()
    msg = str(info.value)
    for fragment in fragments:
        assert fragment in msg, f"{fragment!r} not in message:\n{msg}"
    return msg


def caught(exc, fn) -> tuple[str, BaseException]:
    """``fn()`` raises ``exc``; returns its message and the exception."""
    with pytest.raises(exc) as info:
        fn()
    return str(info.value), info.value


def rows_distinct(a) -> bool:
    a = np.asarray(a)
    return len({row.tobytes() for row in a}) == len(a)


def start_multi_device(script: str) -> subprocess.Popen:
    """Run ``script`` in a subprocess that sees 4 CPU devices (it prints ``RESULT=<json>``)."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()
    env["JAX_PLATFORMS"] = "cpu"
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish_multi_device(proc: subprocess.Popen) -> dict:
    """Wait for :func:`start_multi_device`'s subprocess; its ``RESULT``."""
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-4000:]
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT=")]
    assert lines, stdout[-2000:] + stderr[-2000:]
    return json.loads(lines[-1][len("RESULT="):])


def multi_device_fixtures(script: str) -> tuple:
    """The two fixtures a test module uses to run ``script`` on 4 devices: one that starts the
    (slow) subprocess with the module's first test, so it runs while the others do, and
    ``multi``, its result."""
    started: dict = {}

    @pytest.fixture(scope="module", autouse=True)
    def start_early(request):
        if any("multi" in getattr(item, "fixturenames", ()) for item in request.session.items
               if getattr(item, "module", None) is request.module):
            started["proc"] = start_multi_device(script)
        yield
        proc = started.pop("proc", None)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.communicate()

    @pytest.fixture(scope="module")
    def multi():
        return finish_multi_device(started.pop("proc", None) or start_multi_device(script))

    return start_early, multi
