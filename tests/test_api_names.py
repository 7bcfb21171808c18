"""Every public name of the installed ``flax.nnx`` is in plait or named in docs/differences.md.

Skipped when Flax is not installed. A name is "named" when it appears in backticks on that
page (``nnx.graph.Key`` counts for ``graph`` and ``Key``), so a new Flax release that adds a
name fails here until plait provides it or the page says why not.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

flax = pytest.importorskip("flax")
from flax import nnx as fnnx  # noqa: E402

import plait  # noqa: E402

DIFFERENCES = Path(__file__).resolve().parent.parent / "docs" / "differences.md"


def _named_in_differences() -> set[str]:
    text = DIFFERENCES.read_text()
    names: set[str] = set()
    for span in re.findall(r"`([^`]+)`", text):
        names.update(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", span))
    return names


def _public(module) -> list[str]:
    return sorted(n for n in dir(module) if not n.startswith("_"))


def test_every_flax_nnx_name_is_in_plait_or_in_differences():
    named = _named_in_differences()
    missing = [n for n in _public(fnnx) if not hasattr(plait, n) and n not in named]
    assert not missing, (
        f"flax.nnx {flax.__version__} names neither in plait nor in docs/differences.md: {missing}.\n"
        "Provide them, or add them to docs/differences.md (under 'Not yet in plait' if they are a gap)."
    )


def test_the_page_does_not_call_a_provided_name_a_gap():
    gaps = DIFFERENCES.read_text().split("## Not yet in plait", 1)[1]
    # Prose words and the submodule list's "plait has ..." sentence aside, a gap that plait now has is stale.
    listed = {n for span in re.findall(r"`([^`]+)`", gaps) for n in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", span)}
    allowed = {"graph", "filterlib", "filters", "nn", "metrics", "summary", "transforms", "State", "Variable", "Rngs",
               "to_flat_state", "Key", "GraphState", "PureState", "flatten", "nnx", "PARTITION_NAME", "lift",
               "py", "ToNNX", "ToLinen"}
    stale = sorted(n for n in listed - allowed if hasattr(plait, n))
    assert not stale, f"docs/differences.md lists these as not yet in plait, but plait has them: {stale}"


def test_nnx_graph_namespace_names():
    for name in ("Key", "GraphState", "PureState", "GraphDef", "flatten", "unflatten", "split", "merge", "state",
                 "update", "graphdef", "clone", "iter_graph", "iter_children", "recursive_map", "find_duplicates"):
        assert hasattr(fnnx.graph, name), name  # the reference has it there ...
        assert hasattr(plait.graph, name), name  # ... and so does plait
