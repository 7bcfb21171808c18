"""A catalogue of misuse: each case gets plait's error class, and a message that names the
culprit (the Variable's path in the model, its type and shape) and shows the fix."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

import plait as nnx
from helpers import Holder, raises

N = 3  # layers / lanes


class Block(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.linear = nnx.Linear(2, 2, rngs=rngs)
        self.dropout = nnx.Dropout(0.5, rngs=rngs)

    def __call__(self, x):
        return self.dropout(self.linear(x))


class Model(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.block = Block(rngs)


@pytest.fixture(scope="module")
def stack():
    """The seed's stack: Params with a leading axis of N, Dropout's RNG state unsplit (as split_rngs + vmap leave it)."""
    block = Block(nnx.Rngs(0))
    block.linear.kernel.value = jnp.ones((N, 2, 2))
    block.linear.bias.value = jnp.zeros((N, 2))
    return block


def first_line(msg: str) -> str:
    return msg.splitlines()[0]


# -- axes: sizes and ranks ------------------------------------------------------------------


def test_vmap_mismatched_axis_sizes_between_arguments(stack):
    msg = raises(nnx.AxisError, lambda: nnx.vmap(lambda m, x: m.linear(x), in_axes=(nnx.StateAxes({nnx.Param: 0, ...: None}), 0))(
        stack, jnp.ones((N + 1, 2))),
        "mapped axes have different sizes", "`x`", "shape (4, 2)", "has 4", "Param", "has 3", "None")
    assert "`m.linear." in msg  # the module state that set the size, by path


def test_vmap_axis_size_against_argument(stack):
    raises(nnx.AxisError, lambda: nnx.vmap(lambda m, x: m.linear(x), in_axes=(nnx.StateAxes({nnx.Param: 0, ...: None}), None),
                                           axis_size=N + 1)(stack, jnp.ones(2)),
           "`m.linear.bias`", "Param", "shape (3, 2)", "axis_size=4")


def test_scan_mismatched_lengths_between_arguments():
    raises(nnx.AxisError, lambda: nnx.scan(lambda c, a, b: (c, a + b), in_axes=(nnx.Carry, 0, 0))(
        jnp.zeros(()), jnp.ones((N, 2)), jnp.ones((N + 2, 2))),
        "different lengths", "`a`", "`b`", "has 5", "has 3")


def test_scan_length_against_argument():
    raises(nnx.AxisError, lambda: nnx.scan(lambda c, x: (c, x), length=7)(jnp.zeros(()), jnp.ones((N, 2))),
           "`x`", "length=7", "has 3")


def test_vmap_rank_too_small_for_module_variable():
    lin = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    raises(nnx.AxisError, lambda: nnx.vmap(lambda m, x: m(x), in_axes=(1, None))(lin, jnp.ones(2)),
           "axis 1", "`m.bias`", "Param", "shape (2,)", "rank 1", "nnx.StateAxes({Type: None, ...: 0})")


def test_scan_rank_too_small_for_array():
    raises(nnx.AxisError, lambda: nnx.scan(lambda c, x: (c, x), in_axes=(nnx.Carry, 2))(jnp.zeros(()), jnp.ones((3, 2))),
           "axis 2", "`x`", "shape (3, 2)", "rank 2", "None in in_axes")


def test_seed_stack_scanned_without_splitting_rngs_names_path_and_both_fixes(stack):
    msg = raises(nnx.AxisError, lambda: nnx.scan(lambda x, b: b(x), in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)(jnp.ones(2), stack),
                 "`b.dropout.rngs.default.key`", "RngKey", "shape ()", "axis 0",
                 "@nnx.split_rngs(splits=3) above @nnx.scan(...)",
                 "nnx.StateAxes({nnx.RngState: nnx.Carry, ...: 0})")
    assert "axis 0" in first_line(msg) and "`b.dropout.rngs.default.key`" in first_line(msg)


def test_vmap_over_unsplit_rng_stream_names_path_and_split_rngs(stack):
    raises(nnx.AxisError, lambda: nnx.vmap(lambda m, x: m(x), in_axes=(0, None))(stack, jnp.ones(2)),
           "`m.dropout.rngs.default.key`", "RngKey", "not split", "@nnx.split_rngs(splits=3) above @nnx.vmap(...)")


# -- scan's carry ---------------------------------------------------------------------------


def test_carry_missing_from_out_axes():
    raises(nnx.TransformError, lambda: nnx.scan(lambda c, x: (c, x), in_axes=(nnx.Carry, 0), out_axes=(0, 0))(
        jnp.zeros(2), jnp.ones((N, 2))),
        "in_axes has nnx.Carry but out_axes does not", "out_axes=(nnx.Carry, 0)", "out_axes=nnx.Carry")


def test_carry_given_twice_in_in_axes():
    raises(nnx.TransformError, lambda: nnx.scan(lambda a, b: (a, b), in_axes=(nnx.Carry, nnx.Carry), out_axes=(nnx.Carry, 0))(
        jnp.zeros(2), jnp.ones(2)),
        "nnx.Carry appears 2 times in in_axes", "f((a, b), x)")


def test_carry_given_twice_in_out_axes():
    raises(nnx.TransformError, lambda: nnx.scan(lambda c, x: (c, c), in_axes=(nnx.Carry, 0), out_axes=(nnx.Carry, nnx.Carry))(
        jnp.zeros(2), jnp.ones((N, 2))),
        "nnx.Carry appears 2 times in out_axes")


def test_carry_structure_changing_between_steps():
    raises(nnx.TransformError, lambda: nnx.scan(lambda c, x: ((c, c), x))(jnp.zeros(2), jnp.ones((N, 2))),
           "the carry `c` changed structure", "an array", "a tuple of 2", "same structure")


def test_carry_dtype_changing_between_steps():
    raises(nnx.TransformError, lambda: nnx.scan(lambda c, x: (c.astype(jnp.int32), x))(jnp.zeros(2), jnp.ones((N, 2))),
           "the carry `c`", "float32", "int32", "cast or reshape inside the step")


def test_carried_module_variable_changing_shape():
    h = Holder(jnp.zeros(2))

    def step(m, x):
        m.v.value = jnp.concatenate([m.v.value, x])
        return m

    raises(nnx.TransformError, lambda: nnx.scan(step, out_axes=nnx.Carry)(h, jnp.ones((N, 1))),
           "`m.v`", "shape (2,)", "shape (3,)")
    assert h.v.value.shape == (2,)


# -- filters --------------------------------------------------------------------------------


def test_split_with_non_exhaustive_filters_lists_the_unclaimed():
    model = Model(nnx.Rngs(0))
    raises(nnx.FilterError, lambda: nnx.split(model, nnx.Param),
           "leaves 2 Variable(s) unclaimed", "`block.dropout.rngs.default.key`", "RngKey",
           "`block.dropout.rngs.default.count`", "nnx.split(model, nnx.Param, ...)")


@pytest.mark.parametrize("not_a_filter", [3, 2.5, object()], ids=["int", "float", "object"])
def test_state_with_something_that_is_not_a_filter(not_a_filter):
    model = Model(nnx.Rngs(0))
    raises(nnx.FilterError, lambda: nnx.state(model, not_a_filter),
           "is not a filter", type(not_a_filter).__name__, "nnx.state(model, nnx.Param)")


def test_diff_state_with_something_that_is_not_a_filter():
    model = Model(nnx.Rngs(0))
    raises(nnx.FilterError, lambda: nnx.grad(lambda m: 0.0, argnums=nnx.DiffState(0, 3))(model), "3 (a int) is not a filter")


# -- StateAxes ------------------------------------------------------------------------------


@pytest.mark.parametrize("transform", ["vmap", "scan"])
def test_state_axes_on_something_that_is_not_a_module(transform):
    axes = nnx.StateAxes({...: 0})
    if transform == "vmap":
        call = lambda: nnx.vmap(lambda a, b: a, in_axes=(axes, 0))(jnp.ones(N), jnp.ones(N))  # noqa: E731
    else:
        call = lambda: nnx.scan(lambda c, x: (c, x), in_axes=(nnx.Carry, axes))(jnp.ones(2), jnp.ones((N, 2)))  # noqa: E731
    raises(nnx.TransformError, call, transform, "StateAxes({...: 0})", "not a module", "use an int or None")


@pytest.mark.parametrize("transform", ["vmap", "scan"])
def test_state_axes_not_covering_every_variable(stack, transform):
    axes = nnx.StateAxes({nnx.Param: 0})
    if transform == "vmap":
        call = lambda: nnx.vmap(lambda b, x: b(x), in_axes=(axes, None))(stack, jnp.ones(2))  # noqa: E731
    else:
        call = lambda: nnx.scan(lambda x, b: (b(x), None), in_axes=(nnx.Carry, axes))(jnp.ones(2), stack)  # noqa: E731
    raises(nnx.AxisError, call, "no StateAxes filter matches", "`b.dropout.rngs.default.", "stream 'default'",
           "StateAxes({nnx.Param: 0})", "...: 0")


def test_state_axes_with_an_axis_that_is_not_one():
    raises(nnx.TransformError, lambda: nnx.StateAxes({nnx.Param: "batch"}),
           "int, None, nnx.Carry or nnx.SameKeys", "'batch'")


def test_carry_in_vmap():
    raises(nnx.TransformError, lambda: nnx.vmap(lambda a: a, in_axes=nnx.Carry)(jnp.ones(N)), "nnx.Carry is for scan",
           "use an int or None")


# -- grad -----------------------------------------------------------------------------------


class IntStat(nnx.Module):
    def __init__(self):
        self.w = nnx.Param(jnp.ones(2))
        self.steps = nnx.BatchStat(jnp.zeros((), jnp.int32))

    def __call__(self, x):
        return (self.w.value * x).sum() + self.steps.value


def test_grad_with_respect_to_integer_state_names_the_variable():
    m = IntStat()
    raises(nnx.TransformError, lambda: nnx.grad(lambda m, x: m(x), argnums=nnx.DiffState(0, nnx.BatchStat))(m, jnp.ones(2)),
           "`m.steps`", "BatchStat", "shape ()", "int32", "nnx.DiffState(0, nnx.Param)", "allow_int=True")


def test_grad_argnums_out_of_range():
    raises(nnx.TransformError, lambda: nnx.grad(lambda a: a.sum(), argnums=2)(jnp.ones(2)),
           "argnums refers to argument 2", "1 positional argument")


def test_grad_has_aux_without_a_pair():
    raises(nnx.TransformError, lambda: nnx.grad(lambda a: a.sum(), has_aux=True)(jnp.ones(2)), "(loss, aux)")


def test_jvp_with_a_tangent_missing():
    raises(nnx.TransformError, lambda: nnx.jvp(lambda a, b: a * b, (jnp.ones(2), jnp.ones(2)), (jnp.ones(2),)),
           "2 primals but 1 tangents", "one tangent per primal")


def test_custom_vjp_called_before_defvjp():
    def scale(m, x):
        return x

    raises(nnx.TransformError, lambda: nnx.custom_vjp(scale)(Holder(jnp.ones(())), jnp.ones(())),
           "scale.defvjp(fwd, bwd)")


# -- RNG streams ----------------------------------------------------------------------------


def test_dropout_without_rng():
    raises(nnx.RngError, lambda: nnx.Dropout(0.5)(jnp.ones(2)),
           "Dropout has no RNG", "nnx.Dropout(rate, rngs=rngs)", "dropout(x, rngs=rngs)", "deterministic=True")


def test_stream_that_does_not_exist_with_no_default():
    msg = raises(nnx.MissingStreamError, lambda: nnx.Rngs(params=0).dropout(),
                 "no RNG stream 'dropout'", "no 'default'", "streams: params", "nnx.Rngs(dropout=0)", "nnx.Rngs(0)")
    assert "Did you mean" not in msg
    assert not hasattr(nnx.Rngs(params=0), "dropout")  # an AttributeError too, so hasattr works


def test_typo_in_stream_name_suggests_the_close_match():
    raises(nnx.MissingStreamError, lambda: nnx.Rngs(params=0, dropout=1).dropuot(),
           "no RNG stream 'dropuot'", "Did you mean 'dropout'?")


def test_typo_in_dropout_rng_collection_suggests_the_close_match():
    drop = nnx.Dropout(0.5, rng_collection="dropuot", rngs=nnx.Rngs(dropout=1))
    raises(nnx.MissingStreamError, lambda: drop(jnp.ones(2)), "'dropuot'", "Did you mean 'dropout'?")


def test_split_rngs_on_an_already_split_stream_names_its_path():
    model = Model(nnx.Rngs(0))
    with nnx.split_rngs(model, splits=2):
        raises(nnx.RngError, lambda: nnx.split_rngs(model, splits=2),
               "already split", "`block.dropout.rngs.default`", "key shape (2,)", "inside the vmap/scan")
        assert model.block.dropout.rngs.default.key.value.shape == (2,)  # the failed split changed nothing
    assert model.block.dropout.rngs.default.key.value.shape == ()


def test_drawing_from_a_split_stream_outside_a_transform():
    rngs = nnx.Rngs(dropout=0)
    with nnx.split_rngs(rngs, splits=N):
        raises(nnx.RngError, lambda: rngs.dropout(), "stream 'dropout' is split", "key has shape (3,)",
               "inside the vmap/scan")


def test_split_rngs_squeeze_with_more_than_one_split():
    raises(nnx.RngError, lambda: nnx.split_rngs(nnx.Rngs(0), splits=2, squeeze=True), "squeeze=True", "splits=1")


def test_rngs_with_a_seed_that_is_not_one():
    raises(nnx.RngError, lambda: nnx.Rngs(dropout="zero"), "stream 'dropout'", "got str", "nnx.Rngs(dropout=0)")


def test_broadcast_rng_drawn_in_vmap(stack):
    block = Block(nnx.Rngs(0))
    raises(nnx.RngError, lambda: nnx.vmap(lambda b, x: b(x), in_axes=(None, 0))(block, jnp.ones((N, 2))),
           "`b.dropout.rngs.default.count`", "RngCount", "every lane would get the same key",
           "@nnx.split_rngs(splits=3)", "nnx.StateAxes({nnx.RngState: nnx.SameKeys, ...: None})")
    assert int(block.dropout.rngs.default.count.value) == 2  # only the two init draws


def test_broadcast_rng_drawn_in_scan():
    block = Block(nnx.Rngs(0))
    raises(nnx.RngError, lambda: nnx.scan(lambda x, b: (b(x), None), in_axes=(nnx.Carry, None), length=N)(jnp.ones(2), block),
           "`b.dropout.rngs.default.count`", "every step would get the same key", "@nnx.split_rngs(splits=3)",
           "nnx.StateAxes({nnx.RngState: nnx.Carry, ...: None})", "nnx.SameKeys")


# -- writes that cannot be carried back -----------------------------------------------------


def test_broadcast_state_written_in_a_scan_step():
    h = Holder(jnp.zeros(2))

    def step(c, m):
        m.v.value = m.v.value + c
        return c

    raises(nnx.StateError, lambda: nnx.scan(step, in_axes=(nnx.Carry, None), out_axes=nnx.Carry, length=N)(jnp.ones(2), h),
           "`m.v`", "BatchStat", "shape (2,)", "broadcast", "nnx.Carry")


def test_per_lane_write_to_broadcast_state_in_vmap():
    model = Model(nnx.Rngs(0))

    def f(m, x):
        m.block.linear.bias.value = m.block.linear.bias.value + x

    raises(nnx.StateError, lambda: nnx.vmap(f, in_axes=(None, 0))(model, jnp.ones((N, 2))),
           "`m.block.linear.bias`", "Param", "shape (2,)", "differ per lane", "Map it")


def test_closed_over_write_in_raw_jit_names_type_and_shape():
    h = Holder(jnp.zeros((2, 3)), kind=nnx.Param)

    def f(x):
        h.v.value = x
        return x

    raises(nnx.StateError, lambda: jax.jit(f)(jnp.ones((2, 3))), "wrote a Param (shape (2, 3))", "closed over",
           "nnx.jit(f)(model, x)")


# -- graph functions ------------------------------------------------------------------------


def test_merge_with_missing_state():
    model = Model(nnx.Rngs(0))
    graphdef, params, _ = nnx.split(model, nnx.Param, ...)
    raises(nnx.GraphError, lambda: nnx.merge(graphdef, params),
           "no value for 2 path(s)", "`block.dropout.rngs.default.key`", "nnx.merge(graphdef, params, rest)")


def test_update_with_an_unknown_path_suggests_neighbours():
    model = Model(nnx.Rngs(0))
    raises(nnx.GraphError, lambda: nnx.update(model, {"block": {"linear": {"kernal": jnp.ones((2, 2))}}}),
           "`block.linear.kernal`", "not a Variable", "block.linear.kernel")


def test_state_of_a_variable_root_is_a_copy_of_it():
    # As the reference's split: a bare Variable's state is the Variable (here a copy).
    p = nnx.Param(jnp.ones(2))
    assert type(nnx.state(p)) is nnx.Param and nnx.state(p) is not p


def test_state_of_something_that_is_not_a_graph():
    raises(nnx.GraphError, lambda: nnx.state(3), "got a int", "nnx.state(model)")


def test_merge_without_a_graphdef():
    model = Model(nnx.Rngs(0))
    raises(nnx.GraphError, lambda: nnx.merge(model, nnx.state(model)), "expects a GraphDef first", "got a Model")


def test_pop_without_filters():
    raises(nnx.GraphError, lambda: nnx.pop(Model(nnx.Rngs(0))), "at least one filter", "nnx.pop(model, nnx.Intermediate)")


# -- removed keyword arguments (pre-0.9 spelling) -------------------------------------------


@pytest.mark.parametrize("transform", ["vmap", "scan"])
@pytest.mark.parametrize("decorator", [True, False], ids=["decorator", "direct"])
def test_old_split_rngs_keyword(transform, decorator):
    t = getattr(nnx, transform)
    with pytest.raises(TypeError) as info:
        t(split_rngs=True) if decorator else t(lambda c, x: (c, x), split_rngs=True)
    msg = str(info.value)
    assert f"{transform}() no longer takes split_rngs=" in msg
    assert "@nnx.split_rngs(splits=3)" in msg and f"@nnx.{transform}(...)" in msg


@pytest.mark.parametrize("transform", ["vmap", "scan"])
def test_old_state_axes_keyword(transform):
    t = getattr(nnx, transform)
    with pytest.raises(TypeError) as info:
        t(lambda c, x: (c, x), state_axes={nnx.Param: 0})
    msg = str(info.value)
    assert f"{transform}() no longer takes state_axes=" in msg
    assert "nnx.StateAxes({nnx.Param: 0, ...: None})" in msg and "in_axes" in msg


# -- spec structure -------------------------------------------------------------------------


@pytest.mark.parametrize("transform", ["vmap", "scan"])
def test_in_axes_tuple_of_the_wrong_length(transform):
    if transform == "vmap":
        call = lambda: nnx.vmap(lambda a, b: a + b, in_axes=(0,))(jnp.ones(N), jnp.ones(N))  # noqa: E731
    else:
        call = lambda: nnx.scan(lambda c, x: (c, x), in_axes=(nnx.Carry, 0, 0))(jnp.ones(2), jnp.ones((N, 2)))  # noqa: E731
    raises(nnx.TransformError, call, "in_axes has", "entries but the function was called with 2 positional",
           "one entry per argument")


def test_vmap_out_axes_tuple_longer_than_the_output():
    raises(nnx.AxisError, lambda: nnx.vmap(lambda x: (x, x), out_axes=(0, 0, 0))(jnp.ones(N)),
           "out_axes has 3 entries", "has 2", "a tuple of 2", "one entry per element")


def test_scan_out_axes_tuple_longer_than_the_output():
    raises(nnx.TransformError, lambda: nnx.scan(lambda c, x: (c, x), out_axes=(nnx.Carry, 0, 0))(jnp.ones(2), jnp.ones((N, 2))),
           "out_axes=(nnx.Carry, 0, 0)", "a tuple of 3", "Return (carry, y)")


def test_scan_output_with_axis_none():
    raises(nnx.TransformError, lambda: nnx.scan(lambda c, x: (c, x), out_axes=(nnx.Carry, None))(jnp.ones(2), jnp.ones((N, 2))),
           "output `<output>.1`", "out axis None", "int axis")


def test_axis_spec_that_is_not_one():
    raises(nnx.AxisError, lambda: nnx.scan(lambda c, x: (c, x), in_axes=(nnx.Carry, "x"))(jnp.ones(2), jnp.ones((N, 2))),
           "'x' is not an axis spec", "nnx.StateAxes")


def test_shard_map_in_specs_of_the_wrong_length():
    mesh = Mesh(jax.devices()[:1], ("d",))
    raises(nnx.TransformError, lambda: nnx.shard_map(lambda a, b: a, mesh=mesh, in_specs=(P(), P(), P()), out_specs=P())(
        jnp.ones(2), jnp.ones(2)),
        "one spec per positional argument (2)")


# -- nothing to map / scan ------------------------------------------------------------------


def test_scan_over_nothing_without_length():
    raises(nnx.TransformError, lambda: nnx.scan(lambda c, x: (c, x), in_axes=(nnx.Carry, None))(jnp.ones(2), jnp.ones(2)),
           "nothing is scanned over", "pass length=N")


def test_vmap_with_nothing_mapped_and_no_axis_size():
    raises(nnx.TransformError, lambda: nnx.vmap(lambda x: x, in_axes=None)(jnp.ones(2)),
           "nothing is mapped", "pass axis_size=N")


# -- calling things wrongly -----------------------------------------------------------------


def test_jit_static_argnums_out_of_range():
    def f(a, b):
        return a

    raises(nnx.TransformError, lambda: nnx.jit(f, static_argnums=5), "static_argnums has 5", "f takes 2 positional")


@pytest.mark.parametrize("name", ["jit", "vmap", "scan", "grad", "value_and_grad", "remat", "pmap", "eval_shape"])
def test_transform_of_a_non_callable(name):
    transform = getattr(nnx, name)
    raises(nnx.TransformError, lambda: transform(42), f"{name} expects a function, got a int")


@pytest.mark.parametrize("name", ["jit", "vmap", "scan"])
def test_transform_of_a_non_callable_shows_the_decorator_fix(name):
    raises(nnx.TransformError, lambda: getattr(nnx, name)(42), f"@nnx.{name}(...)", f"nnx.{name}(f, ...)")


@pytest.mark.parametrize("call", [
    lambda: nnx.eval_shape(42),
    lambda: nnx.while_loop(42, lambda v: v, jnp.zeros(())),
    lambda: nnx.cached_partial(42),
], ids=["eval_shape", "while_loop", "cached_partial"])
def test_non_decorator_transform_of_a_non_callable_does_not_suggest_a_decorator(call):
    msg = raises(nnx.TransformError, call, "expects a function")
    assert "@nnx." not in msg


def test_linear_with_the_wrong_input_width():
    lin = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    raises(nnx.PlaitError, lambda: lin(jnp.ones((5, 4))), "Linear(3, 2)", "shape (5, 4)", "last axis must be 3")


def test_linear_with_the_wrong_input_width_is_a_builtin_error_too():
    lin = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    with pytest.raises((ValueError, TypeError)):
        lin(jnp.ones((5, 4)))


def test_linear_without_rngs():
    raises(nnx.PlaitError, lambda: nnx.Linear(2, 2, rngs=None), "got NoneType", "rngs=nnx.Rngs(0)")


def test_call_on_something_that_is_not_a_split_pair():
    with pytest.raises(TypeError) as info:
        nnx.call((Model(nnx.Rngs(0)), {}))
    assert "(graphdef, state)" in str(info.value) and "nnx.split" in str(info.value)


def test_vmap_created_state_with_too_few_axes_for_its_axis_names_it():
    h = Holder(jnp.zeros((2, N)))

    def f(m, x):
        m.extra = nnx.BatchStat(x)  # a scalar per lane, but the module is mapped on axis 1

    raises(nnx.AxisError, lambda: nnx.vmap(f, in_axes=(1, 0))(h, jnp.arange(float(N))), "`m.extra`", "axis 1")


class _Block(nnx.Module):
    def __init__(self, rngs):
        self.linear = nnx.Linear(3, 3, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)


class _Net(nnx.Module):
    def __init__(self, rngs):
        self.blocks = [_Block(rngs), _Block(rngs)]
        self.pair = (nnx.Param(jnp.ones(2)), nnx.Param(jnp.ones(2)))
        self.named = {"a": nnx.BatchStat(jnp.zeros(2))}


@pytest.mark.parametrize("transform", ["jax.jit", "nnx.jit", "nnx.vmap"])
def test_closed_over_errors_name_the_path_in_the_model(transform):
    net = _Net(nnx.Rngs(0))
    run = {"jax.jit": lambda f: jax.jit(f)(jnp.ones(3)), "nnx.jit": lambda f: nnx.jit(f)(jnp.ones(3)),
           "nnx.vmap": lambda f: nnx.vmap(f)(jnp.ones((2, 3)))}[transform]

    def write_bias(x):
        net.blocks[1].linear.bias.value = x
        return x

    raises(nnx.StateError, lambda: run(write_bias), "wrote a Param (shape (3,)) at `_Net.blocks[1].linear.bias`")

    def write_tuple_entry(x):
        net.pair[1].value = x[:2]
        return x

    raises(nnx.StateError, lambda: run(write_tuple_entry), "at `_Net.pair[1]`")

    def write_dict_entry(x):
        net.named["a"].value = x[:2]
        return x

    raises(nnx.StateError, lambda: run(write_dict_entry), "BatchStat (shape (2,)) at `_Net.named['a']`")

    def set_attribute(x):
        net.blocks[1].extra = 1
        return x

    raises(nnx.StateError, lambda: run(set_attribute), "'extra' of a _Block at `_Net.blocks[1]`")

    def draw(x):
        return net.blocks[0].drop(x, deterministic=False)

    msg = raises(nnx.StateError, lambda: run(draw), "stream 'default' at `_Net.blocks[")
    assert ".drop.rngs.default.count`" in msg  # the Rngs is shared by both blocks: either path is right


def test_closed_over_error_without_an_owner_names_no_path():
    v = nnx.Param(jnp.zeros(3))  # held by no module

    def f(x):
        v.value = x
        return x

    with pytest.raises(nnx.StateError) as info:
        jax.jit(f)(jnp.ones(3))
    assert "wrote a Param (shape (3,)) inside a transform" in str(info.value)
