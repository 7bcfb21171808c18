"""``jit`` is built on the lifting protocol (``transforms/lift.py``'s ``Call``).

Its slow path flattens the call, resolves per-leaf roles (in_shardings, donation) and runs
the function through ``Call``, so the protocol's rules hold for ``jit`` as for every other
transform: a module reached through two arguments gets one spec or an error naming both
paths; keyword arguments are bound to positions first; the compiled function kept per
structure holds none of a call's arrays.
"""

import gc
import weakref

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import plait as nnx


class Holder(nnx.Module):
    def __init__(self, inner):
        self.inner = inner


def two_shardings():
    device = jax.devices()[0]
    mesh = jax.sharding.Mesh(np.array([device]), ("x",))
    return jax.sharding.SingleDeviceSharding(device), jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())


def test_shared_module_with_two_in_shardings_is_refused_naming_both_paths():
    model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    first, second = two_shardings()

    @nnx.jit(in_shardings=(first, second))
    def f(m, h):
        return m(jnp.ones((1, 2))) + h.inner(jnp.ones((1, 2)))

    with pytest.raises(nnx.AxisError) as info:
        f(model, Holder(model))
    message = str(info.value)
    assert "in_shardings" in message
    assert "`m." in message and "`h.inner." in message  # both paths to the shared Variable
    assert "same spec" in message  # and the fix


def test_shared_module_with_one_in_sharding_runs():
    model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    first, _ = two_shardings()

    @nnx.jit(in_shardings=(first, first))
    def f(m, h):
        h.inner.bias.value = h.inner.bias.value + 1.0
        return m(jnp.ones((1, 2)))

    bias = np.asarray(model.bias.value)
    f(model, Holder(model))
    np.testing.assert_allclose(model.bias.value, bias + 1.0)


def test_module_reached_through_a_donated_argument_is_donated():
    # Reached first through `m` (not donated), then through `h` (donated): it is donated,
    # and written back, so the caller's model holds live values afterwards.
    model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    kernel = np.array(model.kernel.value)  # a copy: a zero-copy view would keep the buffer from donation

    @nnx.jit(donate_argnums=1)
    def f(m, h):
        return m(jnp.ones((1, 2)))

    old = model.kernel.value
    f(model, Holder(model))
    assert old.is_deleted()
    np.testing.assert_array_equal(model.kernel.value, kernel)


def test_donate_argnames_donates_a_keyword_only_module():
    model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))

    @nnx.jit(donate_argnames="model")
    def f(x, *, model):
        model.kernel.value = model.kernel.value * 2.0
        return model(x)

    old = model.kernel.value
    expected = np.asarray(old) * 2.0
    f(jnp.ones((1, 2)), model=model)
    assert old.is_deleted()
    np.testing.assert_allclose(model.kernel.value, expected)


def test_compiled_function_keeps_no_array_of_the_call():
    # A container holding an array and a module goes through the slow path every call;
    # the compiled function kept for its structure must not keep the array alive.
    model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    f = nnx.jit(lambda t: t[1](t[0]))
    x = jnp.ones((1, 2))
    ref = weakref.ref(x)
    np.testing.assert_allclose(f((x, model)), model(x), rtol=1e-6)
    del x
    gc.collect()
    assert ref() is None


def test_lower_trace_and_eval_shape_bind_keywords_like_a_call():
    model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))

    @nnx.jit(static_argnums=2)
    def f(m, x, scale=1):
        return m(x) * scale

    x = jnp.ones((4, 2))
    assert f.eval_shape(model, x=x, scale=2).shape == (4, 3)
    assert "dot" in f.lower(m=model, x=x, scale=2).as_text()
    assert f.trace(model, x, scale=3).jaxpr is not None
    np.testing.assert_allclose(f(model, x=x, scale=2), model(x) * 2, rtol=1e-6)


def test_a_returned_module_keeps_identity_on_every_call():
    # The non-fast branch (the output holds a module) writes back through the protocol.
    model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))

    @nnx.jit
    def f(m):
        m.bias.value = m.bias.value + 1.0
        return m

    for n in range(1, 4):
        assert f(model) is model
        np.testing.assert_allclose(model.bias.value, np.full((2,), float(n)))
