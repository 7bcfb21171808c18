"""plait.migrate: old (Flax NNX 0.8) transform code in, explicit code out, or a marked refusal.

Each convertible pattern is checked twice: as text (before -> after), and by running the
migrated code under plait next to a hand-written explicit version and comparing what it
builds (state shapes, per-layer RNG key shapes) or computes.
"""

from __future__ import annotations

import functools
import os
import runpy
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("libcst")

import plait as nnx  # noqa: E402
from plait.migrate import Diagnostic, main, migrate_source  # noqa: E402

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")

BLOCK = '''
class Block(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.linear = nnx.Linear(4, 4, rngs=rngs)
        self.dropout = nnx.Dropout(0.5, rngs=rngs)

    def __call__(self, x):
        return self.dropout(self.linear(x))
'''


def migrate(code: str, **kw) -> str:
    result = migrate_source(textwrap.dedent(code), **kw)
    assert result.diagnostics == (), [str(d) for d in result.diagnostics]
    return result.code


def run(code: str) -> dict:
    """Execute migrated code under plait (``nnx`` is plait); returns its namespace."""
    ns = {"nnx": nnx, "jax": jax, "jnp": jnp, "partial": functools.partial, "functools": functools}
    exec(compile(BLOCK + textwrap.dedent(code), "<migrated>", "exec"), ns)
    return ns


def shapes(tree) -> dict:
    return jax.tree.map(jnp.shape, nnx.state(tree)).to_pure_dict()


# -- the seed's stack: before/after text, then what the migrated code builds ---------------------

SEED_OLD = '''
@partial(nnx.vmap, axis_size=3)
def create_stack(rngs: nnx.Rngs):
    return Block(rngs)
'''
SEED_NEW = '''
@nnx.split_rngs(splits=3)
@nnx.vmap(axis_size=3)
def create_stack(rngs: nnx.Rngs):
    return Block(rngs)
'''


def test_seed_partial_vmap_becomes_split_rngs_above_vmap():
    assert migrate(BLOCK + SEED_OLD) == BLOCK + SEED_NEW


def test_seed_migrated_stack_matches_hand_written():
    migrated = run(migrate(SEED_OLD))["create_stack"](nnx.Rngs(0))
    hand = run(SEED_NEW)["create_stack"](nnx.Rngs(0))
    assert shapes(migrated) == shapes(hand)
    assert shapes(migrated)["linear"]["kernel"] == (3, 4, 4)
    assert shapes(migrated)["dropout"]["rngs"]["default"]["key"] == ()  # restored after the split
    # three different layers, as the old implicit split gave
    k = np.asarray(migrated.linear.kernel.value)
    assert not np.allclose(k[0], k[1]) and not np.allclose(k[1], k[2])


PAIRS = {
    "decorator with split_rngs=...": (
        '''
        @nnx.vmap(axis_size=3, split_rngs=...)
        def create_stack(rngs: nnx.Rngs):
            return Block(rngs)
        ''',
        '''
        @nnx.split_rngs(splits=3)
        @nnx.vmap(axis_size=3)
        def create_stack(rngs: nnx.Rngs):
            return Block(rngs)
        ''',
    ),
    "split only the params stream": (
        '''
        @nnx.vmap(axis_size=3, split_rngs='params')
        def create_stack(rngs: nnx.Rngs):
            return Block(rngs)
        ''',
        '''
        @nnx.split_rngs(splits=3, only='params')
        @nnx.vmap(axis_size=3, in_axes=nnx.StateAxes({'params': 0, nnx.RngState: None, ...: 0}))
        def create_stack(rngs: nnx.Rngs):
            return Block(rngs)
        ''',
    ),
    "split_rngs as a dict of streams": (
        '''
        @functools.partial(nnx.vmap, axis_size=3, split_rngs={"params": True, "dropout": False})
        def create_stack(rngs: nnx.Rngs):
            return Block(rngs)
        ''',
        '''
        @nnx.split_rngs(splits=3, only="params")
        @nnx.vmap(axis_size=3, in_axes=nnx.StateAxes({"params": 0, nnx.RngState: None, ...: 0}))
        def create_stack(rngs: nnx.Rngs):
            return Block(rngs)
        ''',
    ),
    "called, not decorated": (
        '''
        stack = nnx.vmap(lambda rngs: Block(rngs), axis_size=3, split_rngs=...)(nnx.Rngs(0))
        ''',
        '''
        stack = nnx.split_rngs(splits=3)(nnx.vmap(lambda rngs: Block(rngs), axis_size=3))(nnx.Rngs(0))
        ''',
    ),
    "partial applied in an expression": (
        '''
        def make(rngs):
            return Block(rngs)
        stack = partial(nnx.vmap, axis_size=3)(make)(nnx.Rngs(0))
        ''',
        '''
        def make(rngs):
            return Block(rngs)
        stack = nnx.split_rngs(splits=3)(nnx.vmap(make, axis_size=3))(nnx.Rngs(0))
        ''',
    ),
}


@pytest.mark.parametrize("name", list(PAIRS))
def test_pairs_text(name):
    old, new = PAIRS[name]
    assert migrate(old) == textwrap.dedent(new)


@pytest.mark.parametrize("name", list(PAIRS))
def test_pairs_build_the_same_state_as_hand_written(name):
    old, new = PAIRS[name]

    def build(code):
        ns = run(code)
        rngs = nnx.Rngs(params=0, dropout=1)
        return ns["stack"] if "stack" in ns else ns["create_stack"](rngs)

    migrated, hand = build(migrate(old)), build(new)
    assert shapes(migrated) == shapes(hand)
    assert shapes(migrated)["linear"]["kernel"] == (3, 4, 4)


def test_state_axes_on_a_module_argument_becomes_state_axes_in_in_axes():
    old = '''
    def apply(model: Block, x: jax.Array) -> jax.Array:
        return model.linear(x)

    def forward(stack, xs):
        return nnx.vmap(apply, in_axes=(None, 0), state_axes={nnx.Param: 0}, split_rngs=None)(stack, xs)
    '''
    new = '''
    def apply(model: Block, x: jax.Array) -> jax.Array:
        return model.linear(x)

    def forward(stack, xs):
        return nnx.vmap(apply, in_axes=(nnx.StateAxes({nnx.RngState: None, nnx.Param: 0, ...: None}), 0))(stack, xs)
    '''
    assert migrate(BLOCK + textwrap.dedent(old)) == BLOCK + textwrap.dedent(new)
    # the old meaning: layer i's parameters apply to row i of xs; the RNG state is broadcast
    stack = run(SEED_NEW)["create_stack"](nnx.Rngs(0))
    xs = jnp.arange(12.0).reshape(3, 4)
    want = jnp.stack([xs[i] @ stack.linear.kernel.value[i] + stack.linear.bias.value[i] for i in range(3)])
    np.testing.assert_allclose(run(migrate(BLOCK + textwrap.dedent(old)))["forward"](stack, xs), want, rtol=1e-6)


def test_old_scan_carried_the_rng_state_like_fix_2():
    old = '''
    @partial(nnx.scan, scan_output=False)
    def forward(x, layer: Block):
        return layer(x)
    '''
    new = '''
    @nnx.scan(in_axes=(nnx.Carry, nnx.StateAxes({nnx.RngState: nnx.Carry, ...: 0})), out_axes=nnx.Carry)
    def forward(x, layer: Block):
        return layer(x)
    '''
    assert migrate(BLOCK + textwrap.dedent(old)) == BLOCK + textwrap.dedent(new)
    hand = '''
    state_axes = nnx.StateAxes({nnx.RngState: nnx.Carry, ...: 0})

    @nnx.scan(in_axes=(nnx.Carry, state_axes), out_axes=nnx.Carry)
    def forward(x, layer):
        return layer(x)
    '''
    results = []
    for code in (migrate(BLOCK + textwrap.dedent(old)), hand):
        stack = run(SEED_NEW)["create_stack"](nnx.Rngs(0))
        forward = run(code)["forward"]
        ys = [forward(jnp.ones(4), stack) for _ in range(2)]
        assert not np.array_equal(ys[0], ys[1])  # the carried stream advanced: new masks each call
        results.append((ys, shapes(stack)))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    assert results[0][1] == results[1][1]


def test_scan_with_split_rngs_filter_and_state_axes():
    old = '''
    @partial(nnx.scan, split_rngs="dropout", state_axes={nnx.Param: 0})
    def forward(x, layer: Block, y: jax.Array) -> jax.Array:
        return layer(x) + y, y
    '''
    new = '''
    @nnx.scan(in_axes=(nnx.Carry, nnx.StateAxes({"dropout": nnx.Carry, nnx.RngState: None, nnx.Param: 0, ...: nnx.Carry}), 0))
    def forward(x, layer: Block, y: jax.Array) -> jax.Array:
        return layer(x) + y, y
    '''
    assert migrate(BLOCK + textwrap.dedent(old)) == BLOCK + textwrap.dedent(new)


def test_partial_jit_becomes_a_keyword_decorator_and_the_import_goes():
    old = '''
    from functools import partial

    @partial(nnx.jit, static_argnums=1)  # compiled once per n
    def step(x, n):
        return x * n
    '''
    new = '''
    @nnx.jit(static_argnums=1)  # compiled once per n
    def step(x, n):
        return x * n
    '''
    assert migrate(old) == textwrap.dedent(new)
    assert float(run(new)["step"](jnp.ones(()), 3)) == 3.0


def test_multiline_partial_keeps_its_comments():
    old = '''
    @partial(
        nnx.vmap,
        in_axes=(0, None),  # one model per row
        axis_size=3,
    )
    def apply(model: Block, x: jax.Array):
        return model(x)
    '''
    new = '''
    @nnx.split_rngs(splits=3)
    @nnx.vmap(
        in_axes=(0, None),  # one model per row
        axis_size=3,
    )
    def apply(model: Block, x: jax.Array):
        return model(x)
    '''
    assert migrate(BLOCK + textwrap.dedent(old)) == BLOCK + textwrap.dedent(new)


def test_pmap_and_a_method_of_a_module_class():
    old = '''
    class Net(nnx.Module):
        @partial(nnx.pmap, in_axes=(0, None), axis_size=1, state_axes={nnx.Param: 0})
        def apply(self, x: jax.Array) -> jax.Array:
            return x
    '''
    new = '''
    class Net(nnx.Module):
        @nnx.split_rngs(splits=1)
        @nnx.pmap(in_axes=(nnx.StateAxes({nnx.RngState: 0, nnx.Param: 0, ...: None}), None), axis_size=1)
        def apply(self, x: jax.Array) -> jax.Array:
            return x
    '''
    assert migrate(old) == textwrap.dedent(new)


def test_partial_value_of_a_non_splitting_transform():
    assert migrate("j = partial(nnx.jit, static_argnums=0)\n") == "j = nnx.jit(static_argnums=0)\n"


def test_imports_flag():
    old = "from flax import nnx\nfrom flax import nnx as fnnx, linen\nimport flax.nnx as nn2\nfrom flax.nnx import Linear\n"
    new = "import plait as nnx\nfrom flax import linen\nimport plait as fnnx\nimport plait as nn2\nfrom plait import Linear\n"
    assert migrate(old, imports=True) == new
    assert migrate(old) == old


def test_already_explicit_code_is_left_alone():
    code = BLOCK + SEED_NEW + (
        "\n@nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)\ndef f(x, layer):\n    return layer(x)\n"
        "\n\n@nnx.custom_decorator('x')\n@nnx.jit(static_argnums=0)\ndef g(n, partial):\n    return nnx.Linear(n, n, rngs=partial)\n"
    )
    assert migrate(code) == code


# -- refusals: unchanged code, a comment above it, a report entry -------------------------------

REFUSALS = {
    "split_rngs given as a variable": (
        "f = nnx.vmap(make, axis_size=3, split_rngs=which)\n",
        "the streams to split are given by an expression",
    ),
    "state_axes given as a variable": (
        "@nnx.vmap(axis_size=3, state_axes=axes)\ndef f(m: nnx.Module):\n    return m\n",
        "the state axes are given by an expression",
    ),
    "axis size only known at run time": (
        "@partial(nnx.vmap, in_axes=0)\ndef f(model, x):\n    return model(x)\n",
        "whose size is only known at run time",
    ),
    "cannot tell which argument is a module": (
        "@nnx.vmap(in_axes=(None, 0), axis_size=2, state_axes={nnx.Param: 0})\ndef f(model, x) -> jax.Array:\n    return model(x)\n",
        "cannot tell whether argument `model` is a module",
    ),
    "function not visible": (
        "g = nnx.vmap(fns[0], in_axes=(None, 0), axis_size=2, split_rngs='params')\n",
        "the function's arguments are not visible here",
    ),
    "another decorator below may change the signature": (
        "@partial(nnx.vmap, in_axes=(0, None), axis_size=3, split_rngs='params')\n@cache\n"
        "def f(m: nnx.Module, x: jax.Array):\n    return x\n",
        "the function's arguments are not visible here",
    ),
    "a name bound twice": (
        "from lib import g\n\n\ndef g(m: nnx.Module):\n    return m\n\n\n"
        "h = nnx.vmap(g, axis_size=2, split_rngs='params')\n",
        "the function's arguments are not visible here",
    ),
    "no function to decorate": (
        "vm = nnx.vmap(axis_size=3, split_rngs=...)\n",
        "there is no place for a split_rngs decorator",
    ),
    "partial(nnx.vmap) not applied to a function": (
        "vm = partial(nnx.vmap, axis_size=3)\n",
        "there is no place for the split_rngs decorator it needs",
    ),
    "a lifted module class": (
        "layers = nnx.Scan.constructor(Block, length=3)(rngs)\n",
        "nnx.Scan (a lifted module class) was removed",
    ),
    "split_rngs on a transform that never took it": (
        "@nnx.jit(split_rngs=...)\ndef f(x):\n    return x\n",
        "jit() took split_rngs= in Flax NNX 0.8",
    ),
    "old scan carry_argnum": (
        "@nnx.scan(length=3, carry_argnum=1, split_rngs=...)\ndef f(x, c):\n    return c, x\n",
        "only the 0.8 default (0) is converted",
    ),
    "old scan over an argument that may be a module": (
        "@partial(nnx.scan, length=3)\ndef f(x, layer):\n    return layer(x), None\n",
        "cannot tell whether argument `layer` is a module",
    ),
    "state_axes and a function that may build modules": (
        "@partial(nnx.vmap, axis_size=3, state_axes={nnx.Param: 0})\ndef f(rngs: nnx.Rngs):\n    return Block(rngs)\n",
        "gave state created inside the function the axes of state_axes",
    ),
    "out_axes other than 0 and a function that may build modules": (
        "@partial(nnx.vmap, axis_size=3, out_axes=1)\ndef f(rngs: nnx.Rngs):\n    return Block(rngs)\n",
        "vmap(out_axes=1): the old vmap gave state created inside",
    ),
    "old pmap with a positional axis name": (
        "g = nnx.pmap(f, 'i', axis_size=1, split_rngs=...)\n",
        "positional arguments after the function",
    ),
}


@pytest.mark.parametrize("name", list(REFUSALS))
def test_refusal_leaves_code_marks_it_and_reports(name):
    code, reason = REFUSALS[name]
    result = migrate_source(code, path="m.py")
    assert len(result.diagnostics) == 1
    d = result.diagnostics[0]
    assert isinstance(d, Diagnostic) and d.path == "m.py" and reason in d.reason
    lines = result.code.splitlines(keepends=True)
    marks = [i for i, line in enumerate(lines) if line.startswith("# plait.migrate:")]
    assert len(marks) == 1 and "convert by hand:" in lines[marks[0]]
    assert marks[0] == d.line - 1  # right above the reported line (which it pushed down by one)
    assert "".join(line for i, line in enumerate(lines) if i not in marks) == code
    again = migrate_source(result.code)  # a second run adds no second comment
    assert again.code == result.code and len(again.diagnostics) == 1


# -- the command line --------------------------------------------------------------------------


def test_cli_prints_a_diff_and_writes_with_write(tmp_path, capsys):
    f = tmp_path / "model.py"
    f.write_text(SEED_OLD)
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"--- a/{f}" in out and "-@partial(nnx.vmap, axis_size=3)" in out and "+@nnx.split_rngs(splits=3)" in out
    assert f.read_text() == SEED_OLD  # a diff only
    assert main(["--write", str(f)]) == 0
    assert f.read_text() == SEED_NEW
    assert main([str(f)]) == 0 and capsys.readouterr().out == ""


def test_cli_exit_code_one_and_report_when_something_is_refused(tmp_path):
    f = tmp_path / "model.py"
    code, _ = REFUSALS["axis size only known at run time"]
    f.write_text(code)
    env = {**os.environ, "PYTHONPATH": SRC}
    p = subprocess.run([sys.executable, "-m", "plait.migrate", "--write", str(f)], capture_output=True, text=True, env=env)
    assert p.returncode == 1
    assert f"{f}:1: vmap() split RNG streams" in p.stderr and "convert by hand:" in p.stderr
    assert f.read_text().startswith("# plait.migrate: ")


def test_cli_exit_code_two_for_a_file_that_does_not_parse(tmp_path, capsys):
    (tmp_path / "bad.py").write_text("f = partial(nnx.vmap, axis_size=3\n")
    assert main([str(tmp_path)]) == 2
    assert "bad.py: cannot migrate:" in capsys.readouterr().err


def test_cli_without_libcst_names_the_extra(tmp_path):
    script = ("import runpy, sys; sys.modules['libcst'] = None; sys.argv = ['plait.migrate', *sys.argv[1:]]; "
              "runpy.run_module('plait.migrate', run_name='__main__')")
    env = {**os.environ, "PYTHONPATH": SRC}
    p = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, env=env)
    assert p.returncode == 2 and 'pip install "plait[migrate]"' in p.stderr


def test_a_whole_0_8_file_migrates_and_runs_under_plait(tmp_path):
    f = tmp_path / "old_model.py"
    f.write_text(textwrap.dedent('''\
        from functools import partial

        import jax
        import jax.numpy as jnp
        from flax import nnx
        ''') + BLOCK + textwrap.dedent('''

        @partial(nnx.vmap, axis_size=3)  # one block per layer
        def create_hidden_layers(rngs: nnx.Rngs):
            return Block(rngs)


        @partial(nnx.scan, scan_output=False)
        def forward(x: jax.Array, layer: Block):
            return layer(x)


        @partial(nnx.jit, static_argnums=2)
        def run(x, layers, n):
            for _ in range(n):
                x = forward(x, layers)
            return x


        layers = create_hidden_layers(nnx.Rngs(0))
        y = run(jnp.ones(4), layers, 2)
        '''))
    assert main(["--imports", "--write", str(f)]) == 0
    text = f.read_text()
    assert "import plait as nnx" in text and "partial" not in text and "flax" not in text
    ns = runpy.run_path(str(f))
    assert shapes(ns["layers"])["linear"]["kernel"] == (3, 4, 4)
    assert shapes(ns["layers"])["dropout"]["rngs"]["default"]["key"] == ()
    assert ns["y"].shape == (4,)
