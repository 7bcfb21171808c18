"""The reference's remaining attribute-marking and metadata names: ``nnx.Data``/``nnx.Static``
annotations, 0.10.7's ``nnx.field``, ``nnx.pure`` and ``nnx.set_metadata``.

Tests marked "same as flax" run the same user code with ``flax.nnx`` (skipped without it).
"""

from __future__ import annotations

import dataclasses
import importlib
import warnings

import jax
import jax.numpy as jnp
import pytest

import plait


def _libs():
    libs = [pytest.param(plait, id="plait")]
    try:
        libs.append(pytest.param(importlib.import_module("flax.nnx"), id="flax"))
    except ImportError:  # pragma: no cover - flax is optional
        pass
    return libs


LIBS = pytest.mark.parametrize("nnx", _libs())


def _annotated(nnx):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")

        class Scaler(nnx.Module):
            scale: nnx.Data[float]
            name: nnx.Static[str]

            def __init__(self):
                self.scale = 2.0
                self.name = "s"

    return Scaler(), caught


# -- Data / Static ------------------------------------------------------------------------------
@LIBS
def test_data_annotation_makes_the_attribute_traced_same_as_flax(nnx):
    obj, caught = _annotated(nnx)
    assert sum(issubclass(w.category, DeprecationWarning) for w in caught) == 2  # both deprecated, as in flax
    seen = {}

    @nnx.jit
    def f(m, x):
        seen["scale"] = isinstance(m.scale, jax.core.Tracer)
        seen["name"] = m.name
        return x * m.scale

    assert float(f(obj, jnp.array(3.0))) == 6.0
    assert seen == {"scale": True, "name": "s"}


def test_static_annotation_refuses_data_and_names_the_attribute():
    obj, _ = _annotated(plait)
    with pytest.raises(plait.GraphError, match=r"`Scaler\.name`.*marked static"):
        obj.name = jnp.ones(2)
    assert plait.is_data(obj.scale) and not plait.is_data(obj.name)


def test_annotations_under_future_import_and_in_dataclasses():
    namespace: dict = {}
    code = (
        "from __future__ import annotations\n"
        "import plait as nnx\n"
        "@nnx.dataclass\n"
        "class Cell(nnx.Pytree):\n"
        "    count: nnx.Data[int]\n"
        "    label: nnx.Static[str] = 'c'\n"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        exec(compile(code, "<cell>", "exec"), namespace)
    cell = namespace["Cell"](3)
    assert isinstance(cell.count, jax.Array) and int(cell.count) == 3
    assert cell.label == "c"
    assert namespace["Cell"]._plait_class_marks == {"count": False, "label": True}


def test_the_warning_points_at_the_class_statement():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")

        class Marked(plait.Pytree):
            x: plait.Static[int]

    assert caught and caught[0].filename == __file__
    assert "x: SomeType = nnx.static()" in str(caught[0].message)


def test_a_conflicting_annotation_and_field_are_refused():
    with pytest.raises(plait.GraphError, match=r"`Bad\.x` is annotated nnx\.Static"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)

            class Bad(plait.Pytree):
                x: plait.Static[int] = plait.data(default=1)


def test_data_and_static_are_annotated_aliases():
    import typing

    args = typing.get_args(plait.Data[int])
    assert args[0] is int and "__data__" in args[1:]
    assert "__static__" in typing.get_args(plait.Static[int])[1:]


# -- field (0.10.7) ---------------------------------------------------------------------------
def test_field_static_and_data():
    @plait.dataclass
    class Cfg(plait.Module):
        w: jax.Array = plait.field()
        depth: int = plait.field(static=True, default=2)
        rate: float = plait.field(default=0.5, metadata={"doc": "dropout"})

    cfg = Cfg(jnp.ones(2))
    assert cfg.depth == 2 and not plait.is_data(cfg.depth)
    assert isinstance(cfg.rate, jax.Array)  # a data field: the number is traced
    fields = {f.name: f for f in dataclasses.fields(Cfg)}
    assert fields["depth"].metadata["static"] is True and fields["rate"].metadata["doc"] == "dropout"
    with pytest.raises(plait.GraphError, match="Cfg.depth"):
        cfg.depth = jnp.ones(1)


def test_field_refuses_disagreeing_static_metadata():
    with pytest.raises(ValueError, match="disagree"):
        plait.field(static=True, metadata={"static": False})


def test_a_dataclasses_field_with_static_metadata_marks_the_class():
    class WithMeta(plait.Pytree):
        n: int = dataclasses.field(default=1, metadata={"static": True})

    assert WithMeta._plait_class_marks == {"n": True}


# -- pure ------------------------------------------------------------------------------------
@LIBS
def test_pure_is_deprecated_as_pure_same_as_flax(nnx):
    state = nnx.state(nnx.Linear(2, 3, rngs=nnx.Rngs(0)))
    with pytest.warns(DeprecationWarning):
        pure = nnx.pure(state)
    shapes = jax.tree.map(jnp.shape, pure)
    assert dict(shapes) == {"kernel": (2, 3), "bias": (3,)}


# -- set_metadata ----------------------------------------------------------------------------
@LIBS
def test_set_metadata_same_as_flax(nnx):
    class Foo(nnx.Module):
        def __init__(self):
            self.param = nnx.Param(jnp.zeros(2))
            self.stat = nnx.BatchStat(jnp.zeros(2))
            self.shared = self.param

    foo = Foo()
    nnx.set_metadata(foo, only=nnx.Param, differentiable=False)
    assert foo.param.get_metadata("differentiable") is False
    assert "differentiable" not in foo.stat.get_metadata()
    nnx.set_metadata(foo, note="all")
    assert foo.param.get_metadata("note") == "all" and foo.stat.get_metadata("note") == "all"


def test_set_metadata_takes_path_filters_and_resets_caches():
    model = plait.Sequential(plait.Linear(2, 2, rngs=plait.Rngs(0)), plait.Linear(2, 2, rngs=plait.Rngs(1)))
    before = plait.graphdef(model)
    plait.set_metadata(model, only=plait.PathContains(0), tag="first")
    assert model.layers[0].kernel.get_metadata("tag") == "first"
    assert model.layers[1].kernel.get_metadata("tag", None) is None
    assert plait.graphdef(model) != before  # metadata is structure
