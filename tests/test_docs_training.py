"""docs/training.md: every Python block runs, in order, in one namespace, and a block's
printed output is the output block that follows it."""

import contextlib
import io
import pathlib
import re

import pytest

pytest.importorskip("optax")

DOC = pathlib.Path(__file__).resolve().parent.parent / "docs" / "training.md"


def _blocks() -> list[tuple[str, str]]:
    return re.findall(r"```(\w*)\n(.*?)```", DOC.read_text(), flags=re.S)


def test_every_block_runs_and_prints_what_the_page_shows():
    namespace: dict = {}
    blocks = _blocks()
    assert sum(lang == "python" for lang, _ in blocks) >= 8
    for i, (lang, code) in enumerate(blocks):
        if lang != "python":
            continue
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, f"{DOC.name} block {i}", "exec"), namespace)
        following = blocks[i + 1] if i + 1 < len(blocks) else None
        if following is not None and following[0] == "":
            assert out.getvalue().strip() == following[1].strip()
