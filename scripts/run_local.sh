#!/usr/bin/env bash
# torchrun wrapper in the style of torchtitan's run_train.sh: terarec train on this node.
#   NGPU=2 scripts/run_local.sh --config dcnv2_synth data.path=runs/data/synth
#   NNODES=2 RDZV_ENDPOINT=host0:29500 NGPU=8 scripts/run_local.sh --config dcnv2_mlperf ...  (on every node)
# NGPU: processes on this node (one per GPU; on CPU hosts, gloo processes; default 1).
# NNODES, RDZV_ENDPOINT (default localhost:29500 when NNODES > 1), MAX_RESTARTS (default 0;
# use with resume=auto). Arguments are those of `terarec train`.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -eq 0 ]; then
  echo "usage: [NGPU=N] [NNODES=N] scripts/run_local.sh --config RECIPE [key=value ...]" >&2
  exit 2
fi
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || make setup
exec "$PY" -m terarec.cli launch -- train "$@"
