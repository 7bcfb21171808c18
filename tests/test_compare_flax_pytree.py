"""Optional comparison with Flax NNX for the 0.12 API of docs/pytree.md: the same user code,
written once, run with both libraries (``nnx`` is the library under test). Skipped without Flax."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("flax")
from flax import nnx as fnnx  # noqa: E402

import plait  # noqa: E402

LIBS = pytest.mark.parametrize("nnx", [plait, fnnx], ids=["plait", "flax"])


def _block(nnx):
    class Block(nnx.Module):
        def __init__(self, rngs):
            self.linear = nnx.Linear(3, 3, rngs=rngs)
            self.dropout = nnx.Dropout(0.5, rngs=rngs)
            self.norm = nnx.BatchNorm(3, rngs=rngs)

        def __call__(self, x):
            h = self.linear(x)
            self.sow(nnx.Intermediate, "h", h)
            return self.dropout(self.norm(h))

    return Block(nnx.Rngs(0))


@LIBS
def test_view_same_behaviour(nnx):
    model = _block(nnx)
    ev = nnx.view(model, deterministic=True, use_running_average=True)
    assert (ev.dropout.deterministic, ev.norm.use_running_average) == (True, True)
    assert (model.dropout.deterministic, model.norm.use_running_average) == (False, False)
    model.linear.bias[...] = jnp.full(3, 4.0)
    np.testing.assert_array_equal(ev.linear.bias[...], 4.0)
    with pytest.raises(ValueError):
        nnx.view(model, no_such_mode=True)


@LIBS
def test_with_attributes_same_behaviour(nnx):
    model = _block(nnx)
    new = nnx.with_attributes(model, only=nnx.Dropout, deterministic=True)
    assert new.dropout.deterministic and not model.dropout.deterministic
    assert not new.norm.use_running_average


@LIBS
def test_data_and_static_same_behaviour(nnx):
    class Scale(nnx.Module):
        def __init__(self):
            self.t = nnx.data(2.0)
            self.name = nnx.static("s")

    s = Scale()
    traced = []

    @nnx.jit
    def f(s, x):
        traced.append(isinstance(s.t, jax.core.Tracer))
        return x / s.t

    np.testing.assert_allclose(f(s, jnp.ones(2)), 0.5)
    assert traced == [True]

    class Bad(nnx.Module):
        def __init__(self):
            self.w = nnx.static(jnp.ones(2))

    with pytest.raises(ValueError):
        Bad()


@LIBS
def test_capture_same_values(nnx):
    model = _block(nnx)
    x = jnp.ones((2, 3))
    model.linear.kernel[...] = jnp.eye(3)
    _, inter = nnx.capture(model, nnx.Intermediate)(x)
    np.testing.assert_allclose(inter["h"].get_value()[0], x + model.linear.bias[...])
    assert not hasattr(model, "h")


@LIBS
def test_modes_true_accepted(nnx):
    with nnx.set_graph_mode(True):
        assert nnx.set_graph_mode.current_value() is True
    assert nnx.compat.split is not None
