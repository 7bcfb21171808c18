"""Helpers shared by the transform and misuse tests (``pythonpath = tests``)."""

from __future__ import annotations

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
