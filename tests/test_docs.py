"""The documentation: its code runs, and the site builds.

Every ```python block of README.md and of each page under docs/ runs, page by page, in order,
in one namespace per page, as a reader would run it. Pages another test already runs are
left to that test (one whose source holds the page's file name as a string literal, e.g.
"training.md" in test_docs_training.py).

What a page shows is checked: a ```text (or unlabelled) block right after a python block is
what that block prints, or, if it starts with an exception's name (``plait.errors.AxisError:
...``), the error the block must raise. ``...`` in it matches anything (doctest's ELLIPSIS;
whitespace is normalized). A python block that raises without such a block fails the test. A
block preceded by the line ``<!-- docs-test: skip -->`` is not run (a fragment, not a program).
"""

from __future__ import annotations

import contextlib
import dataclasses
import doctest
import importlib.util
import io
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SKIP_MARK = "<!-- docs-test: skip -->"
_FENCE = re.compile(r"^```(\w*)[ \t]*$")
_ERROR_LINE = re.compile(r"^(?:[\w.]+\.)?(\w+(?:Error|Exception))\b")


@dataclasses.dataclass
class Block:
    lang: str
    code: str
    line: int  # 1-based line of the opening fence
    skip: bool


def blocks(text: str) -> list[Block]:
    """The fenced blocks of a Markdown text, in order (top-level fences only)."""
    lines = text.splitlines()
    found, i = [], 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        start = i
        end = next((j for j in range(i + 1, len(lines)) if lines[j].rstrip() == "```"), None)
        assert end is not None, f"line {start + 1}: a code block is never closed"
        previous = next((lines[j].strip() for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        found.append(Block(match.group(1), "\n".join(lines[start + 1 : end]) + "\n", start + 1, previous == SKIP_MARK))
        i = end + 1
    return found


def _tested_elsewhere(page: pathlib.Path) -> bool:
    for test in (ROOT / "tests").glob("test_*.py"):
        text = test.read_text()  # a test that opens the page names it in a string literal
        if test.name != pathlib.Path(__file__).name and (f'"{page.name}"' in text or f"'{page.name}'" in text):
            return True
    return False


def pages() -> list[pathlib.Path]:
    found = [ROOT / "README.md"]
    for page in sorted(DOCS.rglob("*.md")):
        if any(b.lang == "python" for b in blocks(page.read_text())) and not _tested_elsewhere(page):
            found.append(page)
    return found


_CHECKER = doctest.OutputChecker()
_FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _matches(expected: str, got: str) -> bool:
    return _CHECKER.check_output(expected.strip() + "\n", got.strip() + "\n", _FLAGS)


def run_page(path: pathlib.Path) -> int:
    """Run the page's python blocks; return how many ran."""
    found = blocks(path.read_text())
    namespace: dict = {"__name__": f"docs_{path.stem.replace('-', '_')}"}
    ran = 0
    for i, block in enumerate(found):
        if block.lang != "python" or block.skip:
            continue
        shown = found[i + 1] if i + 1 < len(found) and found[i + 1].lang in ("", "text") else None
        where = f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name}:{block.line}"
        out = io.StringIO()
        error: BaseException | None = None
        with contextlib.redirect_stdout(out):
            try:
                exec(compile(block.code, where, "exec"), namespace)
            except Exception as e:  # noqa: BLE001 - compared with the page below
                error = e
        ran += 1
        expects_error = shown is not None and _ERROR_LINE.match(shown.code.lstrip())
        if error is not None:
            if not expects_error:
                raise AssertionError(f"{where}: the block raised, and the page does not show it") from error
            name = type(error).__qualname__
            expected = shown.code.strip()
            qualified = f"{type(error).__module__}.{name}" if expected.startswith(type(error).__module__) else name
            got = f"{qualified}: {error}"
            assert _matches(expected, got), f"{where}: the page shows\n{expected}\nbut the block raised\n{got}"
        elif expects_error:
            raise AssertionError(f"{where}: the page shows an error, but the block ran without one:\n{shown.code}")
        elif shown is not None:
            assert _matches(shown.code, out.getvalue()), (
                f"{where}: the page shows\n{shown.code}\nbut the block printed\n{out.getvalue()}"
            )
    return ran


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_python_blocks_of_the_page_run_and_show_what_they_print(page):
    if page.name == "README.md":
        pytest.importorskip("optax")
    assert run_page(page) >= 1


def test_the_guides_are_run_here_or_by_another_test():
    ours = {p.name for p in pages()}
    for guide in ("getting-started.md", "randomness.md", "transforms.md", "migrate.md"):
        assert guide in ours
    for page in ("training.md", "checkpoints.md", "display.md"):
        assert page not in ours and _tested_elsewhere(DOCS / page)


def test_the_checker_fails_a_page_whose_output_or_error_is_wrong(tmp_path):
    """The harness itself: a wrong output, a wrong error, a missing error are failures."""
    cases = {
        "print(1 + 1)\n": "```text\n3\n```",
        "raise ValueError('a')\n": "```text\nTypeError: a\n```",
        "x = 1\n": "```text\nValueError: ...\n```",
        "raise KeyError('k')\n": "",
    }
    for code, shown in cases.items():
        page = tmp_path / "page.md"
        page.write_text(f"```python\n{code}```\n{shown}\n")
        with pytest.raises(AssertionError):
            run_page(page)
    good = tmp_path / "good.md"
    good.write_text(
        "```python\nprint('a b')\n```\n```text\na ...\n```\n"
        "```python\nraise ValueError('bad value 3')\n```\n```\nValueError: bad value ...\n```\n"
        f"{SKIP_MARK}\n```python\nundefined_name\n```\n"
    )
    assert run_page(good) == 2


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None, reason="mkdocs is not installed (the docs extra)")
def test_the_site_builds_with_strict(tmp_path):
    """`mkdocs build --strict`, as CI runs it: a broken link or an unresolved reference in a
    page or a docstring fails. One test, one build."""
    pytest.importorskip("mkdocstrings_handlers.python")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    reference = (tmp_path / "site" / "api" / "randomness" / "index.html").read_text()
    assert 'id="plait.split_rngs"' in reference  # the docstrings were found and rendered...
    assert "&gt;&gt;&gt;" in reference and "doc-section-title" in reference  # ...examples as code


def test_the_api_reference_covers_every_public_name():
    """Each name of ``plait.__all__`` has a ``::: plait.X`` entry, lives in a module that has
    one (``::: plait.nn.linear``), or, for JAX's re-exported functions and constants, is named
    on a reference page."""
    import types

    import plait

    pages_text = "\n".join(p.read_text() for p in (DOCS / "api").glob("*.md"))
    targets = set(re.findall(r"^::: ([\w.]+)", pages_text, flags=re.M))
    missing = []
    for name in plait.__all__:
        obj = getattr(plait, name)
        module = obj.__name__ if isinstance(obj, types.ModuleType) else getattr(obj, "__module__", None)
        named = f"`{name}`" in pages_text or f"`plait.{name}`" in pages_text
        if f"plait.{name}" in targets or module in targets or named:
            continue
        missing.append(name)
    assert not missing, f"not in docs/api/*.md: {missing}"
