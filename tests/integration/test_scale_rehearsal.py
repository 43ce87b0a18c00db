"""benchmarks/scale_rehearsal.py at toy sizes: every stage measured at every size, the kill + resume
continued the step count, the projection is there, and the scratch directory is gone afterwards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "scale_rehearsal.py"
SIZES = [20000, 40000]


@pytest.mark.slow
def test_scale_rehearsal_at_toy_sizes(tmp_path: Path) -> None:
    args = ["--sizes", ",".join(map(str, SIZES)), "--workers", "1", "--eval-rows", "2000"]
    args += ["--train-steps", "8", "--train-batch", "128", "--project-cores", "48", "--project-gpus", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--scratch-parent", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["sizes"] == SIZES and result["day_rows"] == 20000  # the smallest size over one worker: 2 files
    assert set(result["stages"]) == {"synth", "prepare", "stream", "train"}
    for stage, by_size in result["stages"].items():
        assert set(by_size) == {str(s) for s in SIZES}, stage
        for figures in by_size.values():
            assert all(figures[k] > 0 for k in ("rows", "rows_per_s", "cpu_us_per_row", "peak_rss_mb")), stage
    assert [result["stages"]["synth"][str(s)]["rows"] for s in SIZES] == [20000, 20000]  # the increments
    assert [result["stages"]["prepare"][str(s)]["rows"] for s in SIZES] == [22000, 42000]  # + the eval day
    assert [result["stages"]["stream"][str(s)]["rows"] for s in SIZES] == SIZES  # one full epoch each
    for stage in ("synth", "prepare", "stream"):  # and their CPU without the processes' start-up
        figures = result["stages"][stage].values()
        assert all(0 <= f["work_cpu_us_per_row"] <= f["cpu_us_per_row"] for f in figures), stage
        assert "work_cpu_us_per_row" in result["flatness"][stage]
    for size in SIZES:
        resume = result["resume"][str(size)]
        assert resume["killed_after_checkpoint"] == 4 and resume["resumed_from_step"] == 4
        assert (resume["final_step"], resume["samples"]) == (8, 8 * 128)  # continued, every sample once
    assert set(result["flatness"]) == set(result["stages"])
    assert all(r >= 1.0 for ratios in result["flatness"].values() for r in ratios.values())
    projection = result["projection"]
    assert (projection["cores"], projection["gpus"]) == (48, 0)
    assert projection["prepare_hours"] > 0 and projection["train_epoch_hours"] > 0
    assert not Path(result["scratch"]).exists() and list(tmp_path.iterdir()) == []  # cleaned up


def test_refuses_sizes_the_disk_cannot_hold(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--sizes", "10000,10000000000000", "--train-steps", "2", "--train-batch", "64"]
        + ["--scratch-parent", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("scale_rehearsal: error: sizes up to 10,000,000,000,000 rows")
    assert list(tmp_path.iterdir()) == []  # the pilot's scratch is gone too


def test_sigterm_mid_run_kills_the_stage_and_removes_the_scratch(tmp_path: Path) -> None:
    cmd = [sys.executable, str(SCRIPT), "--sizes", "20000,40000", "--workers", "1", "--train-steps", "8"]
    cmd += ["--train-batch", "128", "--scratch-parent", str(tmp_path)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob("*/logs/synth_*.log")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the rehearsal ended before it could be stopped"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    time.sleep(1)  # a stage that outlived it would write into the scratch again
    assert list(tmp_path.iterdir()) == []
