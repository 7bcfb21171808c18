"""The reference's submodules reachable as attributes (``nnx.graphlib``, ``nnx.statelib``, ...):
the names users reach in them are plait's; others raise an AttributeError naming what to use."""

from __future__ import annotations

import importlib
import types

import pytest

import plait as nnx

SUBMODULES = ["graphlib", "statelib", "variablelib", "rnglib", "pytreelib", "reprlib", "traversals", "helpers",
              "training", "tracers", "wrappers", "proxy_caller", "deprecations"]


@pytest.mark.parametrize("name", SUBMODULES)
def test_submodules_are_modules_and_their_names_are_plaits(name):
    module = getattr(nnx, name)
    assert isinstance(module, types.ModuleType) and module.__name__ == f"plait.{name}"
    for public in module.__all__:
        value = getattr(module, public)
        if hasattr(nnx, public) and not isinstance(value, types.ModuleType):
            assert value is getattr(nnx, public), (name, public)


def test_common_names():
    assert nnx.graphlib.split is nnx.split and nnx.graphlib.GraphDef is nnx.GraphDef
    assert nnx.statelib.State is nnx.State and nnx.variablelib.Variable is nnx.Variable
    assert nnx.rnglib.Rngs is nnx.Rngs and nnx.pytreelib.Pytree is nnx.Pytree
    assert nnx.helpers.Sequential is nnx.Sequential and nnx.helpers.TrainState is nnx.TrainState
    assert nnx.training.metrics is nnx.metrics and nnx.training.optimizer.Optimizer is nnx.Optimizer


def test_missing_names_say_what_to_use():
    with pytest.raises(AttributeError, match=r"plait.graphlib has no attribute 'graph_pop'.*nnx.pop"):
        nnx.graphlib.graph_pop  # noqa: B018
    with pytest.raises(AttributeError, match=r"top level: nnx.Linear"):
        nnx.graphlib.Linear  # noqa: B018
    with pytest.raises(AttributeError, match=r"no plait equivalent"):
        nnx.graphlib.NodeDef  # noqa: B018
    assert not hasattr(nnx.tracers, "TraceState")


@pytest.mark.parametrize("name", SUBMODULES)
def test_flax_names_are_covered_or_explained(name):
    """Every public name of the reference's submodule that plait also has at the top level
    is reachable in plait's submodule too, or its AttributeError names the top-level name."""
    fnnx = pytest.importorskip("flax.nnx")
    theirs = getattr(fnnx, name)
    for public in (n for n in dir(theirs) if not n.startswith("_")):
        try:
            getattr(getattr(nnx, name), public)
        except AttributeError as e:
            assert f"plait.{name} has no attribute {public!r}" in str(e)


def test_traversals_same_as_flax():
    fnnx = pytest.importorskip("flax.nnx")
    xs = {"foo": 1, "bar": {"a": 2, "b": {}}, "c": {"d": {"e": 3}}}
    for kwargs in ({}, {"keep_empty_nodes": True}, {"sep": "/"}, {"is_leaf": lambda path, x: path == ("c",)}):
        ours = nnx.traversals.flatten_mapping(xs, **kwargs)
        theirs = fnnx.traversals.flatten_mapping(xs, **kwargs)
        assert {k: repr(v) if "empty" in type(v).__name__.lower() else v for k, v in ours.items()}.keys() == \
            theirs.keys()
        sep = kwargs.get("sep")
        if "keep_empty_nodes" not in kwargs:
            assert nnx.traversals.unflatten_mapping(ours, sep=sep) == fnnx.traversals.unflatten_mapping(theirs, sep=sep)
    flat = nnx.traversals.flatten_mapping(xs, keep_empty_nodes=True)
    assert nnx.traversals.unflatten_mapping(flat) == xs
    assert nnx.traversals.flatten_to_sequence(xs) == fnnx.traversals.flatten_to_sequence(xs)


def test_deprecated_helper_warns_like_the_reference():
    old = nnx.deprecations.deprecated(len)
    with pytest.warns(DeprecationWarning, match="This function is deprecated. Use len instead."):
        assert old([1, 2]) == 2


def test_nothing_in_the_core_imports_the_namespaces():
    import pathlib

    src = pathlib.Path(nnx.__file__).parent
    for path in src.rglob("*.py"):
        if path.stem in SUBMODULES or path.name == "__init__.py" and path.parent == src:
            continue
        text = path.read_text()
        up = "." if path.parent == src else ".."  # the relative prefix that reaches plait's own modules
        for name in SUBMODULES:
            assert f"from {up}{name} import" not in text and f"from {up} import {name}" not in text, (path, name)
    importlib.import_module("plait.namespaces")
