"""nnx.compat, set_graph_mode / set_graph_updates and check_graph_mode: one semantics."""

import pytest

import plait as nnx
from plait.mode import check_graph_mode


def test_compat_is_plaits_api():
    for name in ("jit", "vmap", "scan", "grad", "value_and_grad", "remat", "cond", "switch", "while_loop",
                 "fori_loop", "eval_shape", "shard_map", "custom_vjp", "split", "state", "clone", "graphdef",
                 "iter_graph", "iter_modules", "split_rngs", "fork_rngs", "reseed", "view", "view_info"):
        assert getattr(nnx.compat, name) is getattr(nnx, name), name
    model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))

    @nnx.compat.jit
    def step(m):
        m.bias.value = m.bias.value + 1

    step(model)
    assert float(model.bias.value[0]) == 1.0  # state written back, as in the reference's compat mode


def test_compat_names_plait_lacks_say_what_to_use():
    with pytest.raises(AttributeError, match=r"'recursive_map'.*nnx.iter_graph"):
        _ = nnx.compat.recursive_map
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = nnx.compat.nothing


@pytest.mark.parametrize("switch", [nnx.set_graph_mode, nnx.set_graph_updates])
def test_switches_accept_true_as_call_context_and_decorator(switch):
    switch(True)
    assert switch.current_value() is True
    with switch(True):
        assert switch.current_value() is True

    @switch(True)
    def f(x):
        return x + 1

    assert f(1) == 2


def test_switches_refuse_false_saying_what_to_write():
    with pytest.raises(nnx.TransformError, match=r"set_graph_mode\(False\): plait has one semantics") as e:
        nnx.set_graph_mode(False)
    assert "nnx.split" in str(e.value)
    with pytest.raises(nnx.TransformError, match="nnx.clone"):
        nnx.set_graph_updates(False)
    with pytest.raises(nnx.TransformError, match="must be True"):
        nnx.set_graph_mode("yes")


def test_check_graph_mode():
    check_graph_mode("nnx.jit", None, None)
    check_graph_mode("nnx.jit", True, True)
    with pytest.raises(nnx.TransformError, match=r"nnx.scan\(graph=False\)"):
        check_graph_mode("nnx.scan", False, None)
    with pytest.raises(nnx.TransformError, match=r"nnx.vmap\(graph_updates=False\).*\n.*nnx.clone"):
        check_graph_mode("nnx.vmap", True, False)
    with pytest.raises(nnx.TransformError, match="graph must be True or None"):
        check_graph_mode("nnx.vmap", 0)


def test_views_use_the_same_check():
    with pytest.raises(nnx.TransformError, match="nnx.view_info"):
        nnx.view_info(nnx.Dropout(0.1), graph=False)
    assert nnx.view_info(nnx.Dropout(0.1), graph=None).startswith("Dropout:")


TRANSFORMS_WITH_GRAPH = ["jit", "grad", "value_and_grad", "vmap", "pmap", "scan", "remat", "checkify",
                         "custom_vjp", "make_jaxpr"]


@pytest.mark.parametrize("name", TRANSFORMS_WITH_GRAPH)
def test_every_transform_accepts_graph_true_and_refuses_false(name):
    transform = getattr(nnx, name)
    transform(lambda x: x, graph=True, graph_updates=True)  # plait's one mode: accepted
    with pytest.raises(nnx.TransformError, match="graph=False"):
        transform(lambda x: x, graph=False)
    with pytest.raises(nnx.TransformError, match="graph_updates=False"):
        transform(lambda x: x, graph_updates=False)


def test_graph_functions_and_loops_take_graph_too():
    m = nnx.Linear(1, 1, rngs=nnx.Rngs(0))
    nnx.split(m, graph=True)
    nnx.state(m, graph=True)
    nnx.cond(True, lambda m: None, lambda m: None, m, graph=True)
    with pytest.raises(nnx.TransformError, match="graph=False"):
        nnx.split(m, graph=False)
    with pytest.raises(nnx.TransformError, match="graph=False"):
        nnx.fori_loop(0, 1, lambda i, m: m, m, graph=False)
