"""nnx.display: treescope's view in a notebook, plait's text repr everywhere else."""

from __future__ import annotations

import sys
import types

import pytest

import plait as nnx
from plait import visualization
from plait.display import graph_repr


def small():
    return nnx.Sequential(nnx.Linear(2, 3, rngs=nnx.Rngs(0)), nnx.Dropout(0.5, rngs=nnx.Rngs(1)))


def test_outside_a_notebook_it_prints_the_text_repr(capsys, monkeypatch):
    monkeypatch.setattr(visualization, "_in_notebook", lambda: False)
    model, state = small(), nnx.state(small(), nnx.Param)
    nnx.display(model, state, 3)
    assert capsys.readouterr().out == f"{graph_repr(model)}\n{graph_repr(state)}\n3\n"
    assert "kernel=Param(shape=(2, 3), dtype=float32)" in graph_repr(model)


def test_in_a_notebook_it_hands_each_object_to_treescope(capsys, monkeypatch):
    treescope = pytest.importorskip("treescope")
    shown = []
    monkeypatch.setattr(visualization, "_in_notebook", lambda: True)
    monkeypatch.setattr(treescope, "display", lambda obj, **kw: shown.append((obj, kw)))
    a, b = small(), nnx.Linear(1, 1, rngs=nnx.Rngs(0))
    nnx.display(a, b)
    assert [obj for obj, _ in shown] == [a, b]
    assert shown[0][1] == {"ignore_exceptions": True, "autovisualize": True}
    assert capsys.readouterr().out == ""


def test_in_a_notebook_without_treescope_it_prints(capsys, monkeypatch):
    monkeypatch.setattr(visualization, "_in_notebook", lambda: True)
    monkeypatch.setitem(sys.modules, "treescope", None)
    model = small()
    nnx.display(model)
    assert capsys.readouterr().out == graph_repr(model) + "\n"


def test_treescope_draws_plait_objects_instead_of_flattening_them():
    treescope = pytest.importorskip("treescope")
    visualization._register_treescope(treescope)
    text = treescope.render_to_text(small())
    assert "Sequential(" in text and "Linear(" in text and "kernel=Param(" in text
    assert "rate=0.5" in text and "RngKey(" in text
    assert "TypeError" not in text and "plait module" not in text  # no pytree-refusal fallback
    state_text = treescope.render_to_text(nnx.state(small(), nnx.Param))
    assert state_text.startswith("State({") and "'kernel': Param(" in state_text


def test_notebook_detection(monkeypatch):
    fake = types.ModuleType("IPython")
    monkeypatch.setitem(sys.modules, "IPython", fake)
    fake.get_ipython = lambda: None
    assert visualization._in_notebook() is False
    fake.get_ipython = lambda: types.SimpleNamespace(kernel=None)  # a terminal IPython
    assert visualization._in_notebook() is False
    fake.get_ipython = lambda: types.SimpleNamespace(kernel=object())
    assert visualization._in_notebook() is True
    monkeypatch.setitem(sys.modules, "IPython", None)
    assert visualization._in_notebook() is False


def test_the_name_stays_the_function_after_the_text_repr_module_is_used():
    repr(small())  # imports plait.display (the module) if nothing did yet
    assert callable(nnx.display) and nnx.display is visualization.display


def test_the_examples_in_docs_display_md_run(capsys):
    pytest.importorskip("rich")
    import pathlib
    import re

    text = (pathlib.Path(__file__).parent.parent / "docs" / "display.md").read_text()
    fenced = re.findall(r"```(\w*)\n(.*?)```", text, re.S)  # (language, body), in order
    blocks = [body for lang, body in fenced if lang == "python"]
    assert len(blocks) >= 4
    namespace: dict = {}
    for block in blocks:  # one namespace, in order, as a reader would run them
        exec(compile(block, "docs/display.md", "exec"), namespace)
    printed = "\n".join(line.rstrip() for line in capsys.readouterr().out.splitlines())
    shown = [body for lang, body in fenced if not lang and "Summary" in body]
    assert len(shown) == 2
    for table in shown:  # the tables shown in the page are what the code prints
        if "flops" in table:  # XLA's counts may change with its version: compare all else
            loose = "\n".join(_numbers_masked(line) for line in printed.splitlines())
            for line in table.strip().splitlines():
                assert _numbers_masked(line).strip("━─┃│┏┓└┘├┤┼┳┡┩╇┴ ") in loose
        else:
            assert table.strip() in printed


def _numbers_masked(line: str) -> str:
    """A table line with numbers replaced and runs of spaces collapsed (column widths vary)."""
    import re

    return " ".join(re.sub(r"\d[\d,]*", "N", line).split())
