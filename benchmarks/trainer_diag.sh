#!/bin/bash
# Why ptexp's full fine-tuning and HF Trainer differ on the cross-task benchmark's rows (README, Results, "Across
# GLUE tasks"): ptexp with and without the selection split, MLflow and length grouping; Trainer at ptexp's lr 2e-4
# with both samplers. SST-2's 1,000-row subset, seed 1, 3 epochs. Usage: benchmarks/trainer_diag.sh [GLUE_ROOT [OUT]]
# (GLUE_ROOT holds SST-2/ and STS-B/; default /work/glue_data, OUT default outputs/trainer-diag).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${1:-/work/glue_data}
OUT=${2:-outputs/trainer-diag}
PY=${PY:-.venv/bin/python}
common="data=sst2 data.data_dir=$ROOT/SST-2 data.max_train_samples=1000 trainer.epochs=3 trainer.progress=false
  optimizer.lr=2e-4 seed=1 output_root=$OUT"
for name in "as_benchmark:data.selection_rows=300 trainer.select_best=true" "no_selection:" \
  "no_selection_no_tracking:tracking.enabled=false" "no_selection_plain_shuffle:trainer.group_by_length=false"; do
  label=${name%%:*}
  echo "== $label"
  # shellcheck disable=SC2086
  $PY -m ptexp $common ${name#*:} tracking.experiment=diag-$label 2>&1 | grep "done:"
done
for task in sst2:SST-2:accuracy stsb:STS-B:pearson; do
  IFS=: read -r t f m <<< "$task"
  for method in hf_trainer hf_trainer_grouped; do
    echo "== $method lr 2e-4 $t"
    $PY benchmarks/hf_peer.py --task "$t" --data-dir "$ROOT/$f" --metric "$m" --method "$method" --seed 1 --lr 2e-4 \
      --epochs 3 --train-rows 1000 --selection-rows 300 --output-root "$OUT" --experiment "diag-peer-$t" | grep hf_peer
  done
done
