#!/usr/bin/env bash
# The main job, end to end on 2 CPU processes: synthetic Criteo-1TB-shaped data -> DCNv2 trained
# under torchrun (sharded embeddings over gloo) -> final eval. Usage: scripts/demo.sh [RUN_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_DIR=${1:-runs/demo}
DATA_DIR=runs/data/synth_demo
PY=.venv/bin/python
# restart-safe rendezvous (pytorch#135712), one thread per rank on a shared CPU. Python warnings are
# not hidden: the harmless third-party ones are filtered in terarec/trainer/quiet.py, the rest matter
export TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 OMP_NUM_THREADS=1
if [ ! -f "$DATA_DIR/schema.json" ]; then
  .venv/bin/terarec synth --preset criteo-1tb --rows 400000 --eval-fraction 0.1 --seed 0 --output "$DATA_DIR"
fi
$PY -m torch.distributed.run --standalone --nproc_per_node 2 -m terarec.trainer.main \
  --config dcnv2_synth data.path="$DATA_DIR" run.dir="$RUN_DIR" train.epochs=1 train.eval_every=200
$PY - "$RUN_DIR" <<'PY'
import json, sys
m = json.load(open(f"{sys.argv[1]}/metrics.json"))
print(f"\nfinal eval AUC {m['auc']:.4f}  NE {m['ne']:.4f}  logloss {m['logloss']:.4f}  "
      f"({m['steps']} steps, {m['samples_per_s']:,.0f} samples/s on {m['world_size']} processes)")
print(f"TensorBoard logs: {sys.argv[1]}/tb   (tensorboard --logdir {sys.argv[1]}/tb)")
PY
