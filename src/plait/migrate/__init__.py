"""``python -m plait.migrate``: rewrite Flax NNX 0.8 transform code into the explicit 0.9 form.

Until Flax NNX 0.9, ``vmap``, ``pmap`` and ``scan`` split RNG streams themselves: every
stream reachable from the arguments (or those chosen by ``split_rngs=``) was split over the
mapped axis, and ``state_axes={filter: axis}`` gave the axes of *every* module argument's
state, whatever ``in_axes`` said. ``functools.partial(nnx.vmap, ...)`` was the decorator
idiom. Since 0.9, and in plait, transforms never split: ``@nnx.split_rngs(splits=N)`` above
the transform says where, ``nnx.StateAxes`` at a module's position in ``in_axes`` gives its
per-Variable axes, and transforms are decorators with keyword arguments only.

This tool makes those rewrites on source text with libcst, so formatting and comments stay.
It rewrites only what it can show means the same (:mod:`plait.migrate.plan` has the rules);
anything else is left as it was, marked with a ``# plait.migrate: ...`` comment that says
what to write, and reported. ``docs/migrate.md`` lists the patterns. It needs the
``migrate`` extra: ``pip install "plait[migrate]"``.

Exit codes of the command: 0 when everything found was converted (or there was nothing to
do), 1 when some patterns were left for hand conversion (listed on stderr), 2 on an error
(libcst missing, a file that cannot be read or parsed).
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from collections.abc import Sequence

from .report import Diagnostic, Result

__all__ = ["Diagnostic", "Result", "migrate_source", "migrate_file", "main"]

# Every site the rewrite knows contains one of these words.
_TRIGGERS = ("split_rngs", "state_axes", "partial", "Vmap", "Scan", "Pmap", "Jit", "Grad", "Remat")
_EXTRA_HINT = 'plait.migrate needs libcst, which is not installed: pip install "plait[migrate]"'


def _require_libcst() -> None:
    try:
        import libcst  # noqa: F401
    except ImportError as e:
        raise ImportError(_EXTRA_HINT) from e


def migrate_source(code: str, *, imports: bool = False, path: str = "<string>") -> Result:
    """Rewrite the Flax NNX 0.8 transforms in ``code`` into the explicit form.

    ``imports=True`` also turns ``from flax import nnx`` into ``import plait as nnx``.
    Patterns that cannot be converted safely are left unchanged, marked with a
    ``# plait.migrate:`` comment, and listed in ``Result.diagnostics`` (``path`` names the
    file in them).

    Example:
        >>> from plait.migrate import migrate_source
        >>> old = '''
        ... @partial(nnx.vmap, axis_size=3)
        ... def create_stack(rngs):
        ...     return Block(rngs)
        ... '''
        >>> print(migrate_source(old).code)
        <BLANKLINE>
        @nnx.split_rngs(splits=3)
        @nnx.vmap(axis_size=3)
        def create_stack(rngs):
            return Block(rngs)
        <BLANKLINE>
    """
    _require_libcst()
    if not any(word in code for word in _TRIGGERS) and not (imports and "nnx" in code):
        return Result(code, ())  # no site can be in it: skip the (slow) parse
    import libcst as cst
    from libcst.metadata import MetadataWrapper

    from .plan import Facts
    from .rewrite import ImportRewriter, Migrator, drop_unused_partial

    wrapper = MetadataWrapper(cst.parse_module(code))
    facts = Facts.collect(wrapper.module)
    migrator = Migrator(facts, path, code)
    new = wrapper.visit(migrator)
    if migrator.changed_partial:
        new = drop_unused_partial(new, facts)
    if imports:
        new = new.visit(ImportRewriter())
    return Result(new.code, tuple(sorted(migrator.diagnostics, key=lambda d: d.line)))


def migrate_file(path: str, *, imports: bool = False, write: bool = False) -> tuple[str, Result]:
    """Migrate one file: ``(old code, result)``; with ``write=True`` the file is rewritten.

    Example:
        >>> import pathlib, tempfile
        >>> from plait.migrate import migrate_file
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "m.py"
        >>> _ = p.write_text("f = nnx.vmap(g, axis_size=2, split_rngs=...)\\n")
        >>> _ = migrate_file(str(p), write=True)
        >>> print(p.read_text(), end="")
        f = nnx.split_rngs(splits=2)(nnx.vmap(g, axis_size=2))
    """
    with open(path, encoding="utf-8") as fh:
        old = fh.read()
    result = migrate_source(old, imports=imports, path=path)
    if write and result.code != old:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(result.code)
    return old, result


def _python_files(paths: Sequence[str]) -> list[str]:
    files = []
    for p in paths:
        if os.path.isdir(p):
            for root, dirs, names in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__")
                files += [os.path.join(root, n) for n in sorted(names) if n.endswith(".py")]
        else:
            files.append(p)
    return files


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: returns the exit code (0 all converted, 1 refusals left, 2 error).

    Example:
        >>> import pathlib, tempfile
        >>> from plait.migrate import main
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (d / "m.py").write_text("import jax\\n")
        >>> main([str(d)])
        0
    """
    parser = argparse.ArgumentParser(
        prog="python -m plait.migrate",
        description="Rewrite Flax NNX 0.8 transforms (split_rngs=, state_axes=, partial(nnx.vmap, ...)) into the "
        "explicit form. Prints a unified diff unless --write. Exit code: 0 everything converted, 1 some patterns "
        "left for hand conversion (listed on stderr and marked '# plait.migrate:' in the code), 2 error.",
    )
    parser.add_argument("paths", nargs="+", help="Python files or directories (searched for *.py)")
    parser.add_argument("--write", action="store_true", help="rewrite the files in place instead of printing a diff")
    parser.add_argument("--imports", action="store_true", help="also turn `from flax import nnx` into `import plait as nnx`")
    args = parser.parse_args(argv)
    try:
        _require_libcst()
    except ImportError as e:
        print(e, file=sys.stderr)
        return 2
    import libcst as cst

    status = 0
    for path in _python_files(args.paths):
        try:
            old, result = migrate_file(path, imports=args.imports, write=args.write)
        except (OSError, UnicodeDecodeError, cst.ParserSyntaxError) as e:
            print(f"{path}: cannot migrate: {e}", file=sys.stderr)
            status = 2
            continue
        if result.code != old:
            if args.write:
                print(f"migrated {path}", file=sys.stderr)
            else:
                sys.stdout.writelines(difflib.unified_diff(
                    old.splitlines(keepends=True), result.code.splitlines(keepends=True), f"a/{path}", f"b/{path}"))
        for d in result.diagnostics:
            print(d, file=sys.stderr)
        if result.diagnostics and status == 0:
            status = 1
    return status
