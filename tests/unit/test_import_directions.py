"""DESIGN.md's import directions, enforced on the source (AST), not on what happens to import."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "terarec"

# subpackage -> terarec subpackages it may import (itself always allowed)
ALLOWED: dict[str, set[str]] = {
    "trainer": {"configs", "embeddings", "models", "data_pipeline"},
    "embeddings": {"data_pipeline.schema"},
    "configs": set(),
    "models": set(),
    "data_pipeline": set(),
    "launch": {"configs"},
    "baselines": {"data_pipeline", "trainer.metrics"},  # scored by the trainer's metric code, nothing else of it
}
# prefixes of external modules a subpackage must never import
FORBIDDEN_EXTERNAL: dict[str, tuple[str, ...]] = {
    "models": ("torch.distributed", "torchrec.distributed"),
}


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from terarec.data_pipeline import schema` -> terarec.data_pipeline.schema
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def _violations() -> list[str]:
    found: list[str] = []
    for sub, allowed in ALLOWED.items():
        for path in sorted((PACKAGE / sub).rglob("*.py")):
            for name in _imports(path):
                rel = path.relative_to(PACKAGE.parent)
                if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN_EXTERNAL.get(sub, ())):
                    found.append(f"{rel}: imports {name}")
                if not name.startswith("terarec."):
                    continue
                target = name.removeprefix("terarec.")
                ok = target.split(".")[0] == sub or any(target == a or target.startswith(a + ".") for a in allowed)
                if not ok:
                    found.append(f"{rel}: imports {name}")
    return found


def test_import_directions_follow_design() -> None:
    bad = _violations()
    assert bad == [], "import directions broken:\n" + "\n".join(bad)


def test_checker_catches_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import torch.distributed as dist\nfrom terarec.trainer import main\n")
    assert "torch.distributed" in _imports(bad) and "terarec.trainer.main" in _imports(bad)
