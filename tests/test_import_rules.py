"""The layout's import rules, checked on the source: no module reaches into another
package's ``_``-private module, and imports inside functions are only for optional or
heavy dependencies (never to dodge an import cycle)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted(p for d in ("waveopt", "passes", "models") for p in (ROOT / d).rglob("*.py"))
# Imported inside a function only because they are optional (torch: the `torch` extra;
# matplotlib: plotting) or slow to import for a command that does not use them (onnxsim).
LAZY_OK = ("torch", "onnxsim", "matplotlib", "waveopt.models")


def _package(path: Path) -> str:
    """The dotted package a source file belongs to (passes/ is waveopt.passes, models/ waveopt.models)."""
    parts = list(path.relative_to(ROOT).parent.parts)
    return ".".join(["waveopt", *parts] if parts[0] in ("passes", "models") else parts)


def _imported(node: ast.Import | ast.ImportFrom, package: str) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
    module = ".".join([*base, node.module] if node.module else base)
    return [module, *(f"{module}.{a.name}" for a in node.names)]


def _is_module(name: str) -> bool:
    """Whether a dotted waveopt name is a module or package of this repository."""
    parts = name.split(".")
    if parts[0] != "waveopt":
        return False
    rel = ["passes", *parts[2:]] if parts[1:2] == ["passes"] else \
        ["models", *parts[2:]] if parts[1:2] == ["models"] else parts
    base = ROOT.joinpath(*rel)
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_follow_the_layout(path):
    package = _package(path)
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        names = _imported(node, package)
        # from M import x: M, and M.x when x is a module; import M: M
        for name in names if isinstance(node, ast.Import) else [names[0], *(n for n in names[1:] if _is_module(n))]:
            parts = name.split(".")
            for i, part in enumerate(parts):
                owner = ".".join(parts[:i])
                if part.startswith("_") and not part.startswith("__") and not package.startswith(owner):
                    pytest.fail(f"{path.name}:{node.lineno} imports {name}, private to {owner}")
    for function in ast.walk(tree):
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(function):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    names = _imported(node, package)
                    assert names[0].startswith(LAZY_OK), \
                        f"{path.name}:{node.lineno}: {names[0]} imported inside {function.name}()"
