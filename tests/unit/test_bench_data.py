"""benchmarks/train_throughput.py's TERAREC_BENCH_DATA reuse: only a dataset of exactly --rows rows."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from terarec.data_pipeline.schema import DatasetSchema

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "train_throughput.py"


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("train_throughput", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("train_throughput", module)
    spec.loader.exec_module(module)
    return module


def test_bench_data_is_reused_only_with_the_asked_rows(tmp_path: Path) -> None:
    bench = _bench()
    data = bench.bench_data(tmp_path / "d", 500)
    assert sum(DatasetSchema.load(data).split_rows.values()) == 500
    assert bench.bench_data(data, 500) == data  # the same size: reused as it is
    with pytest.raises(SystemExit, match="holds 500 rows, --rows is 600"):
        bench.bench_data(data, 600)
