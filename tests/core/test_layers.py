"""The package's layers import only downward (GUIDE section 1): checked on the source, by AST."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "medssl"

#: sub-package -> sub-packages of medssl it must never import (at module level or inside functions)
FORBIDDEN = {
    "core": {"data", "transforms", "nets", "losses", "methods", "engines", "inference", "medmnist", "eval", "config", "cli"},
    "data": {"nets", "losses", "methods", "engines", "inference", "medmnist", "eval", "cli"},
    "transforms": {"nets", "losses", "methods", "engines", "inference", "medmnist", "eval", "cli"},
    "nets": {"data", "losses", "methods", "engines", "inference", "medmnist", "eval", "config", "cli"},
    "losses": {"data", "methods", "engines", "inference", "medmnist", "eval", "config", "cli"},
    "inference": {"engines", "medmnist", "cli"},
    "methods": {"engines", "medmnist", "cli"},
    "eval": {"engines", "methods", "inference", "medmnist", "cli"},
    "engines": {"cli"},
    "medmnist": {"cli"},
}
#: modules that sit below the layer of their package: (module, forbidden medssl sub-packages)
MODULE_RULES = [
    # the predictor is what a method's validation calls: it may not reach back up to methods
    ("inference/predictor.py", {"methods", "engines", "inference", "medmnist", "cli", "config"}),
]
#: what methods may import from inference (the predictor only)
METHODS_MAY_IMPORT = {"medssl.inference.predictor"}
NO_LIGHTNING = {"core", "data", "transforms", "nets", "losses", "inference"}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _modules(sub: str) -> list[Path]:
    return sorted((PKG / sub).rglob("*.py")) if (PKG / sub).is_dir() else []


@pytest.mark.parametrize("sub", sorted(FORBIDDEN))
def test_layer_imports_only_downward(sub):
    bad = []
    for path in _modules(sub):
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] == "medssl" and len(parts) > 1 and parts[1] in FORBIDDEN[sub]:
                bad.append(f"{path.relative_to(PKG)} imports {name}")
            if sub == "methods" and name.startswith("medssl.inference") and name not in METHODS_MAY_IMPORT:
                bad.append(f"{path.relative_to(PKG)} imports {name} (methods may use only the predictor)")
            if sub in NO_LIGHTNING and parts[0] in ("pytorch_lightning", "lightning"):
                bad.append(f"{path.relative_to(PKG)} imports {name} (Lightning stays in engines/ and methods/)")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("module,forbidden", MODULE_RULES)
def test_module_below_its_package(module, forbidden):
    bad = [n for n in _imports(PKG / module) if n.split(".")[0] == "medssl" and len(n.split(".")) > 1
           and n.split(".")[1] in forbidden]
    assert not bad, f"{module} imports {bad}"
