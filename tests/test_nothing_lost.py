"""Values never silently lost, stale or mis-shaped (issue 10): containers, update, caches."""

import collections
import gc

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import plait as nnx
from helpers import raises


class Holder(nnx.Module):
    pass


# -- containers that could not report their edits ---------------------------------------------


@pytest.mark.parametrize("make", [
    lambda layer: collections.OrderedDict(a=layer),
    lambda layer: collections.defaultdict(list, a=layer),
    lambda layer: collections.deque([layer]),
], ids=["OrderedDict", "defaultdict", "deque"])
def test_mutable_containers_holding_modules_are_refused(make):
    m = Holder()
    raises(nnx.GraphError, lambda: setattr(m, "layers", make(nnx.Linear(1, 1, rngs=nnx.Rngs(0)))),
           "cannot be a module attribute", "nnx.")


def test_containers_of_plain_data_are_fine():
    m = Holder()
    m.names = collections.OrderedDict(a=1, b=2)
    m.tags = {"x", "y"}
    assert list(m.names) == ["a", "b"]


def test_edited_dict_of_layers_is_seen_by_a_cached_jit():
    m = Holder()
    m.layers = {"a": nnx.Linear(2, 2, rngs=nnx.Rngs(0))}
    f = nnx.jit(lambda m, x: sum(layer(x) for layer in m.layers.values()))
    x = jnp.ones((1, 2))
    one = f(m, x)
    m.layers["b"] = nnx.Linear(2, 2, rngs=nnx.Rngs(1))
    two = f(m, x)
    np.testing.assert_allclose(two, one + m.layers["b"](x), rtol=1e-6)


# -- update keeps the model's shapes and dtypes ------------------------------------------------


def test_update_with_another_models_shapes_is_an_error():
    small = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    kernel = small.kernel.value
    raises(nnx.GraphError, lambda: nnx.update(small, nnx.state(nnx.Linear(3, 4, rngs=nnx.Rngs(0)))),
           "`bias`", "(2,)", "(4,)", "model.bias.value = new_value")
    assert small.kernel.value is kernel  # nothing written


def test_update_with_another_dtype_is_an_error():
    m = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    as_int = jax.tree.map(lambda x: x.astype(jnp.int32), nnx.state(m))
    raises(nnx.GraphError, lambda: nnx.update(m, as_int), "float32", "int32", ".astype")
    assert m.kernel.value.dtype == jnp.float32


def test_update_by_path_checks_shapes_too():
    m = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    raises(nnx.GraphError, lambda: nnx.update(m, {"bias": nnx.Param(jnp.ones((2, 2)))}), "`bias`", "(2,)",
           "(2, 2)")


def test_update_with_an_unknown_path_says_how_to_add_it():
    m = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    raises(nnx.GraphError, lambda: nnx.update(m, {"scale": nnx.Param(jnp.ones(2))}), "`scale`",
           "model.scale = nnx.Param(value)", "kernel")


def test_model_surgery_by_setting_the_variable_still_works():
    m = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    m.kernel.value = jnp.zeros((2, 3))
    m.bias = nnx.Param(jnp.zeros(3))
    assert m(jnp.ones((1, 2))).shape == (1, 3)


# -- caches do not pin replaced arrays ---------------------------------------------------------


def test_update_frees_the_replaced_arrays():
    m = nnx.Linear(16, 16, rngs=nnx.Rngs(0))
    nnx.jit(lambda m: m(jnp.ones((1, 16))))(m)  # fill jit's and the flatten caches
    nnx.state(m)
    gc.collect()
    before = {id(a) for a in jax.live_arrays()}
    for _ in range(4):
        nnx.update(m, jax.tree.map(lambda x: x + 1, nnx.state(m)))
    gc.collect()
    alive = {id(a) for a in jax.live_arrays()} - before
    mine = {id(m.kernel.value), id(m.bias.value)}
    assert alive <= mine, f"{len(alive - mine)} replaced arrays still alive"


# -- assigning a list: the rule ----------------------------------------------------------------


def test_assigning_a_list_stores_a_tracked_copy():
    """The rule: a plain list or dict assigned to a module attribute is stored as a tracked copy
    (nnx.List / nnx.Dict, as if written nnx.List(layers)). Edit it through the module; edits to
    the original list are not the module's."""
    layers = [nnx.Linear(2, 2, rngs=nnx.Rngs(0))]
    m = Holder()
    m.layers = layers
    assert m.layers is not layers and isinstance(m.layers, nnx.List)
    assert m.layers[0] is layers[0]  # the elements are shared, only the container is new
    f = nnx.jit(lambda m, x: [layer(x) for layer in m.layers])
    assert len(f(m, jnp.ones((1, 2)))) == 1
    m.layers.append(nnx.Linear(2, 2, rngs=nnx.Rngs(1)))  # through the module: seen by the cached jit
    assert len(f(m, jnp.ones((1, 2)))) == 2


# -- donation and snapshots --------------------------------------------------------------------


def test_donation_keeps_an_earlier_state_snapshot_readable():
    m = nnx.Linear(8, 8, rngs=nnx.Rngs(0))

    def step(m):
        m.kernel.value = m.kernel.value + 1

    f = nnx.jit(step, donate_argnums=0)
    f(m)
    snapshot = nnx.state(m)
    before = np.asarray(snapshot["kernel"].value)
    f(m)
    assert not snapshot["kernel"].value.is_deleted()  # the State still reads
    np.testing.assert_array_equal(np.asarray(snapshot["kernel"].value), before)
    np.testing.assert_allclose(np.asarray(m.kernel.value), before + 1)


def test_donation_still_reuses_the_buffer_when_nothing_else_holds_it():
    m = nnx.Linear(64, 64, rngs=nnx.Rngs(0))

    def step(m):
        m.kernel.value = m.kernel.value + 1

    f = nnx.jit(step, donate_argnums=0)
    f(m)
    f(m)
    pointer = m.kernel.value.unsafe_buffer_pointer()
    f(m)
    assert m.kernel.value.unsafe_buffer_pointer() == pointer
