"""The core reads floor by floor: no import cycles (lazy imports included), no file over 800
lines, internals not in the public namespace."""

import ast
import pathlib

import plait

SRC = pathlib.Path(plait.__file__).parent


def _module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: pathlib.Path) -> set[str]:
    """Every plait module this file imports, at top level or inside functions."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("plait"):
                continue
            for alias in node.names:  # `from . import x` imports the submodule x
                candidate = f"{target}.{alias.name}"
                found.add(candidate if _exists(candidate) else target)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("plait"))
    return {m for m in found if m != name}


def _exists(module: str) -> bool:
    rel = pathlib.Path(*module.split(".")[1:])
    return (SRC / rel).with_suffix(".py").exists() or (SRC / rel / "__init__.py").exists()


def _graph() -> dict[str, set[str]]:
    files = [p for p in SRC.rglob("*.py")]
    return {_module_name(p): _imports(p) for p in files}


def test_no_import_cycles():
    graph = _graph()
    # a package's __init__ re-exports its modules; a cycle through an __init__ that only
    # re-exports is not a floor violation, so edges into packages are left out
    packages = {m for m in graph if (SRC / pathlib.Path(*m.split(".")[1:]) / "__init__.py").exists() or m == "plait"}
    edges = {m: {t for t in targets if t in graph and t not in packages} for m, targets in graph.items()}
    cycles = []

    def visit(node, stack, on_stack, done):
        on_stack.add(node)
        stack.append(node)
        for nxt in sorted(edges[node]):
            if nxt in on_stack:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in done:
                visit(nxt, stack, on_stack, done)
        stack.pop()
        on_stack.discard(node)
        done.add(node)

    done: set = set()
    for m in sorted(edges):
        if m not in done:
            visit(m, [], set(), done)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_file_over_800_lines():
    long = {str(p.relative_to(SRC)): n for p in SRC.rglob("*.py") if (n := len(p.read_text().splitlines())) > 800}
    assert not long, long


def test_internals_are_not_public():
    for name in ("flatten_cached", "Flat", "encode", "decode"):
        assert not hasattr(plait, name), name
    # nnx.flatten/unflatten are the reference's public functions ((graphdef, flat_state)), not the encoding's
    assert plait.flatten is plait.graph.flatten and plait.unflatten is plait.graph.unflatten
