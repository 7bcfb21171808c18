"""The lifting protocol: argument patterns users write, through every transform (issue 9).

Each test is one of the ways a user's call used to crash, be silently wrong, or retrace.
"""

import collections
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import plait as nnx
from helpers import raises


def linear(seed=0):
    return nnx.Linear(2, 2, rngs=nnx.Rngs(seed))


class Pair(nnx.Module):
    def __init__(self):
        self.a = linear(0)
        self.b = linear(1)


# -- 1. containers holding arrays and modules through jit -------------------------------------


def test_jit_tuple_and_dict_of_array_and_module():
    m, x = linear(), jnp.ones((1, 2))
    expected = m(x)
    f = nnx.jit(lambda t: t[1](t[0]))
    np.testing.assert_allclose(f((x, m)), expected)
    np.testing.assert_allclose(f((x, m)), expected)  # again: the cache
    g = nnx.jit(lambda d: d["model"](d["x"]))
    np.testing.assert_allclose(g({"x": x, "model": m}), expected)


def test_jit_functional_optax_state_passed_and_returned():
    model, x = linear(), jnp.ones((4, 2))
    tx = optax.adam(1e-1)
    opt_state = tx.init(nnx.state(model, nnx.Param))

    @nnx.jit
    def step(model, opt_state, x):
        loss, grads = nnx.value_and_grad(lambda m: (m(x) ** 2).mean())(model)
        params = nnx.state(model, nnx.Param)
        updates, opt_state = tx.update(grads, opt_state, params)
        nnx.update(model, optax.apply_updates(params, updates))
        return loss, opt_state

    losses = []
    for _ in range(3):
        loss, opt_state = step(model, opt_state, x)
        losses.append(float(loss))
    assert losses[2] < losses[1] < losses[0]
    assert int(opt_state[0].count) == 3


def test_jit_state_written_inside_a_container_argument():
    m = nnx.Dropout(0.5, rngs=nnx.Rngs(0))
    nnx.jit(lambda t: t[0](t[1]))((m, jnp.ones(8)))
    assert int(m.rngs.default.count.value) == 1


# -- 2. rearranged objects come back with the identities the function left --------------------


def test_jit_swap_is_carried_back():
    p = Pair()
    a, b = p.a, p.b

    @nnx.jit
    def swap(p):
        p.a, p.b = p.b, p.a

    swap(p)
    assert p.a is b and p.b is a
    swap(p)
    assert p.a is a and p.b is b


def test_jit_moves_into_lists_and_new_containers():
    p = Pair()
    a, b = p.a, p.b

    @nnx.jit
    def move(p):
        p.layers = [p.b, p.a]
        p.pair = (p.a, {"b": p.b})
        del p.a

    move(p)
    assert not hasattr(p, "a")
    assert p.layers[0] is b and p.layers[1] is a
    assert p.pair[0] is a and p.pair[1]["b"] is b


def test_vmap_swap_of_variables_is_carried_back():
    p = Pair()
    ka, kb = p.a.kernel, p.b.kernel

    def swap(p):
        p.a.kernel, p.b.kernel = p.b.kernel, p.a.kernel

    nnx.vmap(swap, in_axes=None, axis_size=2)(p)
    assert p.a.kernel is kb and p.b.kernel is ka


# -- 3. one module reached through two arguments with different specs -----------------------


def test_vmap_shared_module_with_two_axes_is_an_error():
    inner = linear()
    outer_a, outer_b = nnx.Dict(inner=inner), nnx.Dict(inner=inner)
    f = nnx.vmap(lambda a, b: a["inner"].kernel.value.sum(), in_axes=(0, None), axis_size=2)
    raises(nnx.AxisError, lambda: f(outer_a, outer_b), "a.inner.bias", "b.inner.bias", "0", "None",
           "same spec")
    # the same spec through both is fine
    nnx.vmap(lambda a, b: a["inner"](jnp.ones(2)), in_axes=(None, None), axis_size=2)(outer_a, outer_b)


def test_scan_module_as_carry_and_scanned_is_an_error():
    stack = nnx.vmap(lambda x: nnx.Variable(x))(jnp.ones((3, 2)))
    f = nnx.scan(lambda c, s: (c, None), in_axes=(nnx.Carry, 0), out_axes=(nnx.Carry, 0))
    raises(nnx.AxisError, lambda: f((stack,), stack), "nnx.Carry", "0")


# -- 4. keyword arguments bound to their positions -------------------------------------------


def test_vmap_keyword_argument_takes_its_in_axes_entry():
    x = jnp.arange(6.0).reshape(3, 2)
    out = nnx.vmap(lambda x: x * 2, in_axes=(0,))(x=x)
    np.testing.assert_allclose(out, x * 2)
    out = nnx.vmap(lambda m, x: m(x), in_axes=(None, 0))(linear(), x=x)
    assert out.shape == (3, 2)


def test_scan_and_grad_keyword_arguments():
    xs = jnp.ones((4, 2))
    f = nnx.scan(lambda c, x: (c + x.sum(), c), in_axes=(nnx.Carry, 0))
    c, ys = f(c=jnp.zeros(()), x=xs)
    assert float(c) == 8.0 and ys.shape == (4,)
    m = linear()
    g = nnx.grad(lambda model, x: model(x).sum())(model=m, x=jnp.ones(2))
    assert g.kernel.value.shape == (2, 2)


def test_jit_keyword_arguments_write_back():
    m = nnx.Dropout(0.5, rngs=nnx.Rngs(0))
    nnx.jit(lambda model, x: model(x))(model=m, x=jnp.ones(4))
    assert int(m.rngs.default.count.value) == 1


# -- 5. while_loop with Python scalars, several modules, and a useful structure error ---------


def test_while_loop_python_int_in_the_loop_value():
    m = linear()
    out = nnx.while_loop(lambda c: c[1] < 3, lambda c: (c[0], c[1] + 1, c[2] + 1.0), (m, 0, jnp.zeros(())))
    assert out[0] is m and int(out[1]) == 3 and float(out[2]) == 3.0


def test_while_loop_same_module_twice_and_several_modules():
    a, b = linear(0), linear(1)
    ka = a.kernel.value

    def body(c):
        x, y, z, n = c
        x.kernel.value = x.kernel.value + 1
        return x, y, z, n + 1

    out = nnx.while_loop(lambda c: c[3] < 2, body, (a, a, b, 0))
    assert out[0] is a and out[1] is a and out[2] is b
    np.testing.assert_allclose(a.kernel.value, ka + 2)


def test_while_loop_structure_error_names_the_entry():
    raises(nnx.TransformError,
           lambda: nnx.while_loop(lambda c: c[0] < 3, lambda c: (c[0] + 1, (c[1], c[1])), (0, jnp.zeros(()))),
           "c[1]", "an array became a tuple of 2")


# -- 6. custom_vjp writes, remat of a Variable, StateAxes from a State -------------------------


def test_remat_of_a_bare_variable_writes_back():
    v = nnx.Variable(jnp.ones(2))

    def double(v):
        v.value = v.value * 2
        return v.value.sum()

    assert float(nnx.remat(double)(v)) == 4.0
    np.testing.assert_allclose(v.value, [2.0, 2.0])
    g = nnx.grad(lambda x: nnx.remat(lambda x: (x ** 2).sum())(x))(jnp.ones(2))
    np.testing.assert_allclose(g, [2.0, 2.0])


def test_state_axes_from_a_state_says_what_to_write():
    raises(nnx.TransformError, lambda: nnx.StateAxes(nnx.state(linear())), "PathContains", "filter")


# -- 7. eager vmap/scan compile once per structure --------------------------------------------


def test_eager_vmap_and_scan_do_not_retrace():
    traces = []

    def f(m, x):
        traces.append(1)
        return m(x)

    vf = nnx.vmap(f, in_axes=(None, 0))
    m = linear()
    y1 = vf(m, jnp.ones((3, 2)))
    vf(m, jnp.ones((3, 2)) * 2)
    assert len(traces) == 1
    np.testing.assert_allclose(y1, jax.vmap(lambda x: m(x))(jnp.ones((3, 2))), rtol=1e-6)

    steps = []

    def body(c, x):
        steps.append(1)
        return c + x, c

    sf = nnx.scan(body)
    sf(jnp.zeros(2), jnp.ones((4, 2)))
    c, _ = sf(jnp.zeros(2), jnp.ones((4, 2)))
    assert len(steps) == 1 and float(c.sum()) == 8.0


def test_eager_vmap_reads_current_values_of_closed_over_arrays():
    w = [jnp.ones(2)]
    scale = jnp.ones(2)

    def f(x):
        return x * scale * w[0]

    vf = nnx.vmap(f)
    a = vf(jnp.ones((3, 2)))
    scale = scale * 3  # noqa: F841  (rebinding the closed-over name: the next call must see it)
    b = vf(jnp.ones((3, 2)))
    assert float(a.sum()) == 6.0 and float(b.sum()) == 18.0


def test_eager_vmap_writes_state_on_every_call():
    m = nnx.Dropout(0.5, rngs=nnx.Rngs(0))
    f = nnx.split_rngs(splits=3)(nnx.vmap(lambda m, x: m(x), in_axes=(0, 0)))
    first = f(m, jnp.ones((3, 8)))
    second = f(m, jnp.ones((3, 8)))
    assert not bool(jnp.all(first == second))
    assert int(m.rngs.default.count.value) == 2


# -- 8. custom_vjp residuals that hold a module (the reference's documentation example) --------


def test_custom_vjp_module_in_residuals():
    class Foo(nnx.Module):
        def __init__(self, x, y):
            self.x = nnx.Param(x)
            self.y = nnx.Param(y)

    @nnx.custom_vjp
    def f(m: Foo):
        return jnp.sin(m.x.value) * m.y.value

    def f_fwd(m: Foo):
        return f(m), (jnp.cos(m.x.value), jnp.sin(m.x.value), m)

    def f_bwd(res, g):
        inputs_g, out_g = g
        cos_x, sin_x, m = res
        tangent_m = nnx.State(dict(x=cos_x * out_g * m.y.value, y=sin_x * out_g))
        return (tangent_m,)

    f.defvjp(f_fwd, f_bwd)
    m = Foo(x=jnp.array(1.0), y=jnp.array(2.0))
    grads = nnx.grad(f)(m)
    np.testing.assert_allclose(grads.x.value, np.cos(1.0) * 2.0, rtol=1e-6)
    np.testing.assert_allclose(grads.y.value, np.sin(1.0), rtol=1e-6)


# -- 9. import does not start JAX's backend ----------------------------------------------------


def test_import_leaves_the_device_count_settable():
    code = ("import plait, jax\n"
            "jax.config.update('jax_num_cpu_devices', 3)\n"
            "print(jax.device_count())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "3"


# -- 10. structure errors say what to write ---------------------------------------------------


def test_out_axes_structure_error_gives_the_spec_to_write():
    raises(nnx.AxisError, lambda: nnx.vmap(lambda x: x, out_axes=(0, 0))(jnp.ones((2, 3))),
           "out_axes is a tuple of 2", "an array", "out_axes=0")
    raises(nnx.AxisError, lambda: nnx.vmap(lambda x: (x, x, x), out_axes=(0, 0))(jnp.ones((2, 3))),
           "has 2 entries", "has 3", "(0, 0, 0)")


def test_namedtuple_arguments_through_transforms():
    Point = collections.namedtuple("Point", ["x", "m"])
    m = linear()
    p = Point(jnp.ones((3, 2)), m)
    out = nnx.vmap(lambda p: p.m(p.x), in_axes=(Point(0, None),))(p)
    assert out.shape == (3, 2)
    out = nnx.jit(lambda p: p.m(p.x))(p)
    assert out.shape == (3, 2)


@pytest.mark.parametrize("transform", ["jit", "grad", "vmap", "remat", "eval_shape"])
def test_mixed_container_through_every_transform(transform):
    m = nnx.Dropout(0.5, rngs=nnx.Rngs(0))
    x = jnp.ones(4)

    def f(t):
        return t[0](t[1]["x"]).sum()

    arg = (m, {"x": x})
    if transform == "jit":
        out = nnx.jit(f)(arg)
    elif transform == "grad":
        out = nnx.grad(f)(arg)
        assert out[1]["x"].shape == (4,)
    elif transform == "vmap":
        spec = (nnx.StateAxes({nnx.RngState: nnx.SameKeys, ...: None}), None)
        out = nnx.vmap(f, in_axes=(spec,), axis_size=2)(arg)
    elif transform == "remat":
        out = nnx.remat(f)(arg)
    else:
        out = nnx.eval_shape(f, arg)
    assert out is not None
    expected = 0 if transform == "eval_shape" else 1
    assert int(m.rngs.default.count.value) == expected


def test_checkify_writes_back_and_reports_the_failed_check():
    from jax.experimental import checkify

    m = nnx.Dropout(0.5, rngs=nnx.Rngs(0))

    def f(m, x):
        checkify.check(jnp.all(x > 0), "x must be positive")
        return m(x)

    err, out = nnx.checkify(f)(m, jnp.ones(4))
    assert err.get() is None and out.shape == (4,)
    assert int(m.rngs.default.count.value) == 1
    err, _ = nnx.checkify(f)(m, -jnp.ones(4))
    assert "x must be positive" in err.get()
    raises(nnx.TransformError, lambda: nnx.checkify(f, graph=False), "graph=False")
