"""The library never imports a framework: fedhar/ is torch/numpy/scipy/sklearn only."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

FEDHAR = Path(__file__).resolve().parents[1] / "fedhar"
# Frameworks and the adapters around fedhar: imports go clients/strategies/simulations -> fedhar only.
FORBIDDEN = ("flwr", "hydra", "omegaconf", "ray", "clients", "strategies", "simulations")


def _imported_roots(tree: ast.AST) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None))
              in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant)):
            roots.add(str(node.args[0].value).split(".")[0])
    return roots


@pytest.mark.parametrize("path", sorted(FEDHAR.rglob("*.py")), ids=lambda p: str(p.relative_to(FEDHAR)))
def test_fedhar_module__imports_no_framework(path: Path) -> None:
    bad = _imported_roots(ast.parse(path.read_text(encoding="utf-8"), str(path))) & set(FORBIDDEN)
    assert not bad, f"{path} imports {sorted(bad)}; fedhar/ must stay framework-free (move it to an adapter)"


def test_walker__catches_a_forbidden_import() -> None:
    assert "flwr" in _imported_roots(ast.parse("from flwr.app import Message"))
    assert "ray" in _imported_roots(ast.parse("import importlib\nimportlib.import_module('ray.util')"))
