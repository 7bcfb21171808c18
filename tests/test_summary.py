"""nnx.tabulate: one row per module call, shapes, state sizes equal to the model's, no side effects."""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import pytest

import plait as nnx
from plait import summary

pytest.importorskip("rich")

PLAIN = {"force_terminal": False, "width": 250}


class Block(nnx.Module):
    def __init__(self, din, dout, rngs):
        self.linear = nnx.Linear(din, dout, rngs=rngs)
        self.bn = nnx.BatchNorm(dout, rngs=rngs)
        self.dropout = nnx.Dropout(0.5, rngs=rngs)

    def __call__(self, x):
        return nnx.relu(self.dropout(self.bn(self.linear(x))))


class MLP(nnx.Module):
    def __init__(self, rngs):
        self.block1 = Block(3, 8, rngs)
        self.block2 = Block(8, 2, rngs)

    def __call__(self, x):
        return self.block2(self.block1(x))

    def encode(self, x):
        return self.block1(x)


def rows_of(model, *args, **kwargs):
    """The CallInfo rows tabulate made (seen through row_filter), and the rendered table."""
    rows = []

    def keep(row):
        rows.append(row)
        return True

    table = nnx.tabulate(model, *args, row_filter=keep, console_kwargs=PLAIN, **kwargs)
    return rows, table


def sizes(state):
    leaves = jax.tree.leaves(state)
    return sum(x.size for x in leaves), sum(x.size * x.dtype.itemsize for x in leaves)


def footer(table):
    return next(line for line in table.splitlines() if "Total │" in line)


def test_rows_shapes_and_types_of_an_mlp_with_dropout_and_batchnorm():
    rows, _ = rows_of(MLP(nnx.Rngs(0)), jnp.ones((5, 3)))
    got = [("/".join(map(str, r.path)), r.type.__name__, r.inputs_repr, summary._describe(r.outputs)) for r in rows]
    assert got == [
        ("", "MLP", "float32[5,3]", "float32[5,2]"),
        ("block1", "Block", "float32[5,3]", "float32[5,8]"),
        ("block1/linear", "Linear", "float32[5,3]", "float32[5,8]"),
        ("block1/bn", "BatchNorm", "float32[5,8]", "float32[5,8]"),
        ("block1/dropout", "Dropout", "float32[5,8]", "float32[5,8]"),
        ("block2", "Block", "float32[5,8]", "float32[5,2]"),
        ("block2/linear", "Linear", "float32[5,8]", "float32[5,2]"),
        ("block2/bn", "BatchNorm", "float32[5,2]", "float32[5,2]"),
        ("block2/dropout", "Dropout", "float32[5,2]", "float32[5,2]"),
    ]
    assert [r.call_order for r in rows] == list(range(9))


def test_totals_equal_the_models_state_per_variable_type():
    model = MLP(nnx.Rngs(0))
    _, table = rows_of(model, jnp.ones((5, 3)))
    cells = [c.strip() for c in footer(table).split("│")[1:-1]]
    header = [c.strip() for c in next(line for line in table.splitlines() if "┃ path" in line).split("┃")[1:-1]]
    by_column = dict(zip(header, cells))
    n, nbytes = sizes(nnx.state(model, nnx.Param))
    assert n == 3 * 8 + 8 + 2 * 8 + 8 * 2 + 2 + 2 * 2  # kernel+bias, scale+bias per block
    assert by_column["Param"] == summary._size_text(n, nbytes)
    assert by_column["BatchStat"] == summary._size_text(*sizes(nnx.state(model, nnx.BatchStat)))
    # One Rngs shared by both Dropouts: its key (8 bytes) and count (4 bytes) counted once.
    assert by_column["RngState"] == "2 (12 B)" == summary._size_text(*sizes(nnx.state(model, nnx.RngState)))
    total_n, total_bytes = sizes(nnx.state(model))
    assert f"Total Parameters: {summary._size_text(total_n, total_bytes)}" in table


def test_row_cells_list_own_variables_and_subtree_sizes():
    _, table = rows_of(MLP(nnx.Rngs(0)), jnp.ones((5, 3)))
    block1 = table[table.index("│ block1 "):]
    assert "48 (192 B)" in block1.splitlines()[0]  # Linear 3*8 + 8, BatchNorm scale 8 + bias 8
    linear = table[table.index("│ block1/linear"):].splitlines()
    assert "bias: float32[8]" in linear[0] and "kernel: float32[3,8]" in linear[1]  # by name
    assert "32 (128 B)" in linear[3]
    bn = table[table.index("│ block1/bn"):].splitlines()
    assert "mean: float32[8]" in bn[0] and "bias: float32[8]" in bn[0]


def test_a_module_called_twice_has_two_rows():
    class Twice(nnx.Module):
        def __init__(self):
            self.linear = nnx.Linear(3, 3, rngs=nnx.Rngs(0))

        def __call__(self, x):
            return self.linear(self.linear(x)[:2])

    rows, table = rows_of(Twice(), jnp.ones((4, 3)))
    assert [(r.path, r.inputs_repr) for r in rows] == [
        ((), "float32[4,3]"), (("linear",), "float32[4,3]"), (("linear",), "float32[2,3]")
    ]
    assert footer(table).count("12 (48 B)") == 1  # the parameters are still counted once


def test_shared_module_is_counted_once_at_its_first_path():
    class Tied(nnx.Module):
        def __init__(self):
            shared = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
            self.a = shared
            self.b = shared

        def __call__(self, x):
            return self.b(self.a(x))

    model = Tied()
    rows, table = rows_of(model, jnp.ones((1, 2)))
    assert [r.path for r in rows] == [(), ("a",), ("a",)]  # both calls reach the module at its first path
    assert summary._size_text(*sizes(nnx.state(model, nnx.Param))) in footer(table)


def test_keyword_inputs_and_several_outputs_are_described():
    class Pair(nnx.Module):
        def __call__(self, x, *, scale):
            return x * scale, {"sum": x.sum()}

    rows, _ = rows_of(Pair(), jnp.ones((2, 3), jnp.int32), scale=2)
    assert rows[0].inputs_repr == "- int32[2,3]\nscale: 2"
    assert summary._describe(rows[0].outputs) == "- int32[2,3]\n- sum: int32[]"


def test_a_vmap_built_stack_called_through_scan():
    class Layer(nnx.Module):
        def __init__(self, rngs):
            self.linear = nnx.Linear(4, 4, rngs=rngs)

        def __call__(self, x):
            return nnx.relu(self.linear(x))

    class Stack(nnx.Module):
        def __init__(self, rngs):
            @nnx.split_rngs(splits=3)
            @nnx.vmap(axis_size=3)
            def create(rngs):
                return Layer(rngs)

            self.layers = create(rngs)

        def __call__(self, x):
            @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
            def step(x, layer):
                return layer(x)

            return step(x, self.layers)

    model = Stack(nnx.Rngs(0))
    rows, table = rows_of(model, jnp.ones((2, 4)))
    # The scan body is traced once: one row per module, with one layer's shapes.
    assert [(r.path, r.type.__name__, r.inputs_repr) for r in rows] == [
        ((), "Stack", "float32[2,4]"),
        (("layers",), "Layer", "float32[2,4]"),
        (("layers", "linear"), "Linear", "float32[2,4]"),
    ]
    assert "kernel: float32[3,4,4]" in table
    n, nbytes = sizes(nnx.state(model, nnx.Param))
    assert n == 3 * (16 + 4)
    assert summary._size_text(n, nbytes) in footer(table)


def test_tabulate_leaves_the_model_and_its_classes_as_they_were():
    model = MLP(nnx.Rngs(0))
    before = jax.tree.map(lambda x: x, nnx.state(model))
    methods = (Block.__dict__["__call__"], nnx.Linear.__dict__["__call__"], nnx.Dropout.__dict__["__call__"])
    count = int(model.block1.dropout.rngs.default.count.value)
    nnx.tabulate(model, jnp.ones((5, 3)))
    after = nnx.state(model)
    assert jax.tree.structure(before) == jax.tree.structure(after)
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)):
        assert a is b  # not even re-written with equal values
    assert int(model.block1.dropout.rngs.default.count.value) == count
    assert not any(hasattr(m, summary._TAG) for _, m in model.iter_modules())
    assert (Block.__dict__["__call__"], nnx.Linear.__dict__["__call__"], nnx.Dropout.__dict__["__call__"]) == methods
    assert "__call__" not in MLP.__dict__ or MLP.__dict__["__call__"] is MLP.__call__
    # The model still runs, and its state moves as usual.
    model(jnp.ones((5, 3)))
    assert int(model.block1.dropout.rngs.default.count.value) == count + 2  # both Dropouts draw


def test_methods_are_restored_when_the_call_raises():
    class Broken(nnx.Module):
        def __init__(self):
            self.linear = nnx.Linear(3, 3, rngs=nnx.Rngs(0))

        def __call__(self, x):
            return self.linear(x) @ jnp.ones((5, 5))

    original = nnx.Linear.__dict__["__call__"]
    with pytest.raises(TypeError) as info:
        nnx.tabulate(Broken(), jnp.ones((1, 3)))
    assert any("nnx.tabulate traced Broken.__call__" in note for note in info.value.__notes__)
    assert nnx.Linear.__dict__["__call__"] is original
    assert "__call__" in Broken.__dict__ and Broken.__dict__["__call__"].__name__ == "__call__"
    assert not hasattr(Broken.__dict__["__call__"], "__wrapped__")


def test_flops_from_xla_cost_analysis():
    model = nnx.Linear(3, 4, rngs=nnx.Rngs(0))
    rows, table = rows_of(model, jnp.ones((2, 3)), compute_flops=True, compute_vjp_flops=True)
    (row,) = rows
    assert row.flops == 2 * 2 * 3 * 4 + 2 * 4  # matmul multiply-adds, then the bias
    assert row.vjp_flops > row.flops
    assert "flops" in table and "vjp_flops" in table
    plain, _ = rows_of(model, jnp.ones((2, 3)))
    assert plain[0].flops is None and plain[0].vjp_flops is None


def test_flops_of_a_parent_include_its_children():
    model = MLP(nnx.Rngs(0))
    before = jax.tree.leaves(nnx.state(model))
    rows, _ = rows_of(model, jnp.ones((5, 3)), compute_flops=True)
    assert all(a is b for a, b in zip(before, jax.tree.leaves(nnx.state(model))))  # lowering ran on copies
    flops = {"/".join(map(str, r.path)): r.flops for r in rows}
    assert flops["block1/linear"] == 2 * 5 * 3 * 8 + 5 * 8
    assert flops["block1"] >= flops["block1/linear"] + flops["block1/bn"]
    assert flops[""] >= flops["block1"] + flops["block2"]


def test_depth_and_row_filter():
    model = MLP(nnx.Rngs(0))
    table = nnx.tabulate(model, jnp.ones((5, 3)), depth=1, console_kwargs=PLAIN)
    assert "│ block1 " in table and "block1/linear" not in table
    table = nnx.tabulate(model, jnp.ones((5, 3)), row_filter=lambda r: r.type is not nnx.Dropout,
                         console_kwargs=PLAIN)
    assert "Dropout" not in table and "block2/bn" in table


def test_other_method_and_its_path():
    rows, _ = rows_of(MLP(nnx.Rngs(0)), jnp.ones((5, 3)), method="encode")
    assert [r.path for r in rows][:2] == [("encode",), ("block1",)]


def test_default_output_has_colour_codes_and_a_title():
    table = nnx.tabulate(nnx.Linear(2, 2, rngs=nnx.Rngs(0)), jnp.ones((1, 2)))
    assert "\x1b[" in table and "Linear Summary" in table


def test_errors():
    model = MLP(nnx.Rngs(0))
    with pytest.raises(nnx.TransformError, match="MLP has no method 'decode' to call; its own methods are __call__, encode\\."):
        nnx.tabulate(model, jnp.ones((5, 3)), method="decode")
    with pytest.raises(nnx.TransformError, match=r"got a function.\nPass the model"):
        nnx.tabulate(lambda x: x, jnp.ones(3))
    with pytest.raises(ValueError, match="depth"):
        nnx.tabulate(model, jnp.ones((5, 3)), depth=-1)


def test_missing_rich_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "rich", None)
    monkeypatch.setitem(sys.modules, "rich.console", None)
    with pytest.raises(ImportError, match=r'pip install "plait\[display\]"'):
        nnx.tabulate(nnx.Linear(2, 2, rngs=nnx.Rngs(0)), jnp.ones((1, 2)))


def test_summary_namespace_mirrors_the_reference():
    assert nnx.summary.tabulate is nnx.tabulate
    assert nnx.summary.filter_rng_streams(summary.CallInfo(0, nnx.RngStream, (), "", None)) is False


def test_totals_match_flax_for_the_same_architecture():
    flax_nnx = pytest.importorskip("flax.nnx")

    class FlaxBlock(flax_nnx.Module):
        def __init__(self, din, dout, rngs):
            self.linear = flax_nnx.Linear(din, dout, rngs=rngs)
            self.bn = flax_nnx.BatchNorm(dout, rngs=rngs)

        def __call__(self, x):
            return self.bn(self.linear(x))

    class PlaitBlock(nnx.Module):
        def __init__(self, din, dout, rngs):
            self.linear = nnx.Linear(din, dout, rngs=rngs)
            self.bn = nnx.BatchNorm(dout, rngs=rngs)

        def __call__(self, x):
            return self.bn(self.linear(x))

    FlaxBlock.__name__ = PlaitBlock.__name__ = "Block"
    x = jnp.ones((2, 3))
    ours_model, their_model = PlaitBlock(3, 4, nnx.Rngs(0)), FlaxBlock(3, 4, flax_nnx.Rngs(0))
    for kwargs in ({}, {"depth": 0}, {"compute_vjp_flops": True}):
        ours = nnx.tabulate(ours_model, x, console_kwargs=PLAIN, **kwargs)
        theirs = flax_nnx.tabulate(their_model, x, console_kwargs=PLAIN, **kwargs)
        assert ours == theirs  # the same table, character for character

    # Forward FLOPs: plait also counts BatchNorm's running-statistics update in training
    # (Flax lowers the call without its state writes, so XLA drops the update as dead code).
    def flops(table, path):
        return int(next(line for line in table.splitlines() if line.startswith(f"│ {path} ")).split("│")[5])

    ours = nnx.tabulate(ours_model, x, compute_flops=True, console_kwargs=PLAIN)
    theirs = flax_nnx.tabulate(their_model, x, compute_flops=True, console_kwargs=PLAIN)
    assert flops(ours, "linear") == flops(theirs, "linear")
    assert flops(ours, "bn") > flops(theirs, "bn")
    ours_model.eval()
    their_model.eval()
    assert nnx.tabulate(ours_model, x, compute_flops=True, console_kwargs=PLAIN) == flax_nnx.tabulate(
        their_model, x, compute_flops=True, console_kwargs=PLAIN
    )


def test_super_call_is_one_row():
    class Scaled(nnx.Linear):
        def __call__(self, x):
            return 2 * super().__call__(x)

    rows, _ = rows_of(Scaled(2, 3, rngs=nnx.Rngs(0)), jnp.ones((1, 2)))
    assert [(r.path, r.type.__name__) for r in rows] == [((), "Scaled")]


def test_calls_inside_a_jitted_method_are_seen_every_time():
    forward = nnx.jit(lambda m, x: m(x))  # one jit, so its trace cache is shared by the calls

    class Outer(nnx.Module):
        def __init__(self):
            self.linear = nnx.Linear(2, 2, rngs=nnx.Rngs(0))

        def __call__(self, x):
            return forward(self.linear, x)

    model = Outer()
    for _ in range(2):  # a cached inner trace would hide the second time's rows
        rows, _ = rows_of(model, jnp.ones((1, 2)))
        assert [r.path for r in rows] == [(), ("linear",)]


def test_sown_intermediates_are_counted_and_listed():
    class Probe(nnx.Module):
        def __init__(self):
            self.seen = nnx.Intermediate((jnp.ones(3), jnp.ones((2, 2))))

        def __call__(self, x):
            return x

    _, table = rows_of(Probe(), jnp.ones(3))
    assert "7 (28 B)" in footer(table)
    lines = table[table.index("seen:"):].splitlines()
    assert "- float32[3]" in lines[1] and "- float32[2,2]" in lines[2]


def test_an_abstract_model_with_abstract_inputs_allocates_nothing():
    abstract = nnx.eval_shape(lambda: MLP(nnx.Rngs(0)))
    assert isinstance(abstract.block1.linear.kernel.value, jax.ShapeDtypeStruct)
    x = jax.ShapeDtypeStruct((5, 3), jnp.float32)
    rows, table = rows_of(abstract, x, compute_flops=True)
    concrete_rows, concrete_table = rows_of(MLP(nnx.Rngs(0)), jnp.ones((5, 3)), compute_flops=True)
    assert [(r.path, r.inputs_repr, r.flops) for r in rows] == [(r.path, r.inputs_repr, r.flops) for r in concrete_rows]
    assert footer(table) == footer(concrete_table)


def test_modules_built_during_the_call_and_methods_used_as_functions_pass_through():
    class Odd(nnx.Module):
        def double(x):  # no self: called on the class, as a function
            return 2 * x

        def __call__(self, x):
            inner = nnx.Linear(3, 3, rngs=nnx.Rngs(1))  # not part of the model: no row
            return Odd.double(inner(x))

    rows, _ = rows_of(Odd(), jnp.ones((1, 3)))
    assert [(r.path, r.type.__name__) for r in rows] == [((), "Odd")]


def test_a_loop_body_is_one_row_and_counted_once():
    # What the docs say: XLA's cost analysis counts a scan body once, not once per step.
    model = nnx.RNN(nnx.SimpleCell(2, 3, rngs=nnx.Rngs(0)))
    rows, _ = rows_of(model, jnp.ones((1, 5, 2)), compute_flops=True)
    by_path = {r.path: r for r in rows}
    assert [r.path for r in rows].count(("cell",)) == 1
    assert by_path[("cell",)].inputs_repr.endswith("float32[1,2]")  # one step's input
    assert by_path[()].flops < 2 * by_path[("cell",)].flops


def test_a_call_using_an_enclosing_axis_name_has_no_flops_and_says_why():
    class Centered(nnx.Module):
        def __init__(self):
            self.linear = nnx.Linear(2, 2, rngs=nnx.Rngs(0))

        def __call__(self, x):
            y = self.linear(x)
            return y - jax.lax.pmean(y, "batch")

    class Top(nnx.Module):
        def __init__(self):
            self.centered = Centered()

        def __call__(self, x):
            return nnx.vmap(lambda m, x: m(x), in_axes=(None, 0), axis_name="batch")(self.centered, x)

    rows, table = rows_of(Top(), jnp.ones((4, 2)), compute_flops=True)
    flops = {r.path: r.flops for r in rows}
    assert flops[("centered",)] is None and flops[("centered", "linear")] == 2 * 2 * 2 + 2
    assert flops[()] > 0
    assert "n/a: the call uses the axis name of a transform around it" in table


def test_public_methods_of_sub_modules_get_rows_with_the_method_in_the_path():
    class TiedLM(nnx.Module):
        def __init__(self):
            self.embed = nnx.Embed(10, 4, rngs=nnx.Rngs(0))

        def __call__(self, tokens):
            return self.embed.attend(self.embed(tokens))

    rows, _ = rows_of(TiedLM(), jnp.arange(3))
    assert [(r.path, r.inputs_repr, summary._describe(r.outputs)) for r in rows] == [
        ((), "int32[3]", "float32[3,10]"),
        (("embed",), "int32[3]", "float32[3,4]"),
        (("embed", "attend"), "float32[3,4]", "float32[3,10]"),
    ]
