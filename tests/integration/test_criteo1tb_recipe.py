"""The README's Criteo-1TB recipe, every command read from README.md and run at toy size: two tiny day files
(``synth --format tsv``), ``prepare criteo``, ``prepare multihot``, ``dcnv2_mlperf`` under ``terarec launch``
(torchrun) with overrides that shrink it but keep its model, optimizer and tables, then ``eval``."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from terarec.data_pipeline.manifest import DatasetManifest

REPO = Path(__file__).resolve().parents[2]
# toy values of the README's documented placeholders
TOY_ROWS, TOY_DAYS = 3000, 2
TOY_TRAIN = (
    "train.batch_size=64 train.eval_batch_size=256 train.max_steps=4 data.shuffle_buffer=1024 "
    "data.num_workers=0 logging.progress=false logging.tensorboard=false"
)


def readme_block(marker: str) -> str:
    """The fenced bash block just after ``<!-- marker -->`` in README.md."""
    found = re.search(rf"<!-- {marker} -->\n```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    assert found, f"README.md has no block <!-- {marker} -->"
    return found.group(1)


def test_every_placeholder_is_documented_in_the_settings() -> None:
    settings = set(re.findall(r"^([A-Z_]+)=", readme_block("criteo1tb-settings"), re.M))
    used = set(re.findall(r"\$([A-Z_]+)", readme_block("criteo1tb-commands")))
    assert used - {"NPROC_PER_NODE"} <= settings, used - settings
    assert set(re.findall(r"\$([A-Z_]+)", readme_block("criteo1tb-rehearsal"))) == {"ROWS", "DAYS", "RAW"}
    real = readme_block("criteo1tb-settings") + 'echo "$TRAIN_DAYS|$EVAL_DAY|$NPROC"'
    days, eval_day, nproc = subprocess.run(["bash", "-c", real], capture_output=True, text=True).stdout.split("|")
    assert [Path(d).name for d in days.split()] == [f"day_{i}.gz" for i in range(23)]
    assert Path(eval_day).name == "day_23.gz" and nproc.strip() == "8"


def test_readme_names_the_recipe_numbers() -> None:
    """The MLPerf numbers live in the recipe; the README's recipe section names the same ones."""
    recipe = yaml.safe_load((REPO / "terarec/configs/recipes/dcnv2_mlperf.yaml").read_text())
    text = (REPO / "README.md").read_text().split("## Criteo 1TB, from download to the MLPerf target")[1]
    text = text.split("\n## ")[0]
    assert recipe["train"]["batch_size"] * 8 == 65536 and "65536" in text
    for number in (recipe["train"]["batch_size"], recipe["optim"]["lr"], recipe["train"]["eval_every"]):
        assert str(number) in text
    assert "0.80275" in text and "40M" in text and recipe["embeddings"]["max_rows"] == 40_000_000


@pytest.mark.slow
@pytest.mark.distributed
def test_readme_recipe_runs_at_toy_size(tmp_path: Path) -> None:
    raw, data, run = tmp_path / "raw", tmp_path / "data", tmp_path / "run"
    toy = {
        "ROWS": str(TOY_ROWS),
        "DAYS": str(TOY_DAYS),
        "RAW": str(raw),
        "TRAIN_DAYS": str(raw / "day_0.gz"),
        "EVAL_DAY": str(raw / "day_1.gz"),
        "DATA": str(data),
        "WORKERS": "2",
        "NPROC": "1",
        "RUN": str(run),
        "MULTIHOT_OPTS": "--max-embeddings 1000",
        "TRAIN_OPTS": TOY_TRAIN,
    }
    script = "set -euo pipefail\n" + readme_block("criteo1tb-rehearsal") + readme_block("criteo1tb-commands")
    env = {
        **os.environ,
        **toy,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": "1",
        "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1",
    }
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    rows = [f["rows"] for f in json.loads((raw / "synth_tsv.json").read_text())["files"]]
    assert rows == [1500, 1500]
    one_hot, multi_hot = DatasetManifest.load(data / "criteo1tb"), DatasetManifest.load(data / "criteo1tb_multihot")
    assert one_hot is not None and multi_hot is not None
    assert one_hot.rows() == multi_hot.rows() == {"train": 1500, "eval": 1500}
    assert multi_hot.options["--input-fingerprint"] == one_hot.fingerprint()
    result = json.loads((run / "eval.json").read_text())
    assert result["count"] == 1500 and result["step"] == 4 and 0.0 < result["auc"] < 1.0
    assert math.isfinite(result["logloss"]) and 0.0 < result["logloss"] < 10.0  # a trained model, not NaN
