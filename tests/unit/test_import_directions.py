"""docs/architecture.md's import directions, enforced on the source (AST), not on what happens to import."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "terarec"
ARCHITECTURE = PACKAGE.parent / "docs" / "architecture.md"

# subpackage -> terarec subpackages it may import (itself always allowed)
ALLOWED: dict[str, set[str]] = {
    "trainer": {"configs", "embeddings", "models", "data_pipeline", "serving"},
    "embeddings": {"data_pipeline.schema"},
    "configs": set(),
    "models": set(),
    "data_pipeline": set(),
    "launch": {"configs", "data_pipeline.schema", "data_pipeline.manifest"},  # datasets' row counts and identity
    # scored by the trainer's metric code, nothing else of it; settings shared with compare in configs
    "baselines": {"data_pipeline", "trainer.metrics", "configs.baselines"},
    # an export scored in one process: never the trainer's process groups, sharding or checkpoints
    "serving": {"models", "data_pipeline", "embeddings", "configs"},
}
# top-level leaf modules of shared contracts (they import nothing of terarec): any layer may use them
SHARED_LEAVES: set[str] = {"errors", "batch"}
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


def _file_violations(path: Path, sub: str, package: Path = PACKAGE) -> list[str]:
    """Imports of ``path`` (a file of subpackage ``sub``) that the rules above forbid."""
    found: list[str] = []
    rel = path.relative_to(package.parent)
    allowed = ALLOWED.get(sub, set()) | SHARED_LEAVES
    for name in _imports(path):
        if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN_EXTERNAL.get(sub, ())):
            found.append(f"{rel}: imports {name}")
        if not name.startswith("terarec."):
            continue
        target = name.removeprefix("terarec.")
        ok = target.split(".")[0] == sub or any(target == a or target.startswith(a + ".") for a in allowed)
        if not ok:
            found.append(f"{rel}: imports {name}")
    return found


def _violations(package: Path = PACKAGE) -> list[str]:
    found: list[str] = []
    for sub in ALLOWED:
        for path in sorted((package / sub).rglob("*.py")):
            found += _file_violations(path, sub, package)
    for leaf in sorted(SHARED_LEAVES):
        path = package / f"{leaf}.py"
        if path.is_file():  # a shared leaf imports nothing of terarec, or it would carry a cycle
            found += [
                f"{path.relative_to(package.parent)}: imports {n}" for n in _imports(path) if n.startswith("terarec")
            ]
    return found


def _documented_rules(page: Path = ARCHITECTURE) -> dict[str, set[str]]:
    """The layer table of docs/architecture.md (between its import-directions markers)."""
    text = page.read_text()
    block = text.split("<!-- import-directions: begin -->")[1].split("<!-- import-directions: end -->")[0]
    rules: dict[str, set[str]] = {}
    for line in block.strip().splitlines()[2:]:  # past the header and its separator
        layer, allowed = (cell.strip() for cell in line.strip("|").split("|"))
        rules[layer] = set() if allowed == "(nothing)" else {a.strip() for a in allowed.split(",")}
    return rules


def test_rules_are_the_documented_ones() -> None:
    assert _documented_rules() == ALLOWED


def test_import_directions_follow_design() -> None:
    bad = _violations()
    assert bad == [], "import directions broken:\n" + "\n".join(bad)


def test_checker_rejects_planted_violations(tmp_path: Path) -> None:
    """The rule itself, run on a copy of the package with violations planted in it."""
    package = tmp_path / "terarec"
    for sub in ALLOWED:
        (package / sub).mkdir(parents=True)
    (package / "models" / "bad.py").write_text("import torch.distributed as dist\nfrom terarec.trainer import main\n")
    (package / "data_pipeline" / "bad.py").write_text("from terarec.models.common import TrainWrapper\n")
    (package / "launch" / "ok.py").write_text("from terarec.configs import load_config\nfrom terarec.errors import X\n")
    (package / "errors.py").write_text("from terarec.configs import loader\n")
    assert sorted(_violations(package)) == [
        "terarec/data_pipeline/bad.py: imports terarec.models.common.TrainWrapper",
        "terarec/errors.py: imports terarec.configs.loader",
        "terarec/models/bad.py: imports terarec.trainer.main",
        "terarec/models/bad.py: imports torch.distributed",
    ]
