#!/usr/bin/env bash
# On a CUDA host: terarec vs torchrec DLRM_DCN throughput for the MLPerf DLRMv2 (dcnv2 `mlperf`)
# model, plus the GPU smoke tests. Prints the same JSON line as benchmarks/train_throughput.py.
#
#   NGPU=8 benchmarks/gpu/run_gpu_bench.sh
#
# Environment: NGPU (processes, one per GPU; default: all visible GPUs), MAX_ROWS (rows per table;
# default 2,000,000: the full 40M-row MLPerf tables need ~104 GB, i.e. several GPUs), BATCH (per
# GPU, default 8192, MLPerf's 65536 global over 8), STEPS (default 100), ROWS (synthetic rows, default
# 2,000,000), PYTHON (an interpreter with torch + fbgemm-gpu + torchrec + terarec; default: .venv,
# created by `TERAREC_CUDA=1 make setup`, which installs the CUDA fbgemm-gpu).
# Hosts without network access: see benchmarks/gpu/README.md for carrying the wheels.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ -z "${PYTHON:-}" ]; then
  [ -x .venv/bin/python ] || TERAREC_CUDA=1 make setup
  PYTHON=.venv/bin/python
fi
"$PYTHON" - <<'PY'
import sys, torch
if not torch.cuda.is_available():
    sys.exit("run_gpu_bench.sh: no CUDA device visible (torch.cuda.is_available() is False)")
import fbgemm_gpu, torchrec  # noqa: F401  the CUDA build must import with this torch
print(f"torch {torch.__version__}, {torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}, torchrec {torchrec.__version__}")
PY
NGPU=${NGPU:-$("$PYTHON" -c "import torch; print(torch.cuda.device_count())")}
"$PYTHON" -m pytest -q tests/gpu
export TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 PYTHONWARNINGS=ignore
"$PYTHON" -m torch.distributed.run --standalone --nproc_per_node "$NGPU" benchmarks/train_throughput.py \
  --flavor mlperf --max-rows "${MAX_ROWS:-2000000}" --batch-size "${BATCH:-8192}" --steps "${STEPS:-100}" \
  --rows "${ROWS:-2000000}" --repeats 2
