#!/usr/bin/env bash
# The distillation sweep of bench/README.md ("Distillation sweep"): hps with ew on the synthetic
# `standard` preset, without distillation and with kd4mtl, kdam and bam, × seeds, on the
# balancer sweep's data and budget. kd4mtl and bam are taught by the single-task baselines of
# the balancer sweep's store (same data, same budget, the run's own seed); kdam by one hps
# run with a twice-as-wide convnet trained on the same budget (seed 0). The runs without
# distillation are the architecture sweep's hps runs (the same configuration).
# Resumable: re-run the same command to finish an interrupted sweep. Runs go to
# runs/distill-sweep/ (not committed); the table and plots to bench/results/distillation/.
#
#   bash bench/sweep_distillation.sh
#   SEEDS="0" bash bench/sweep_distillation.sh & SEEDS="1 2" bash ...   # two cores
set -euo pipefail
cd "$(dirname "$0")/.."
PYMTL=${PYMTL:-.venv/bin/pymtl}
SEEDS=${SEEDS:-"0 1 2"}
ROOT=${ROOT:-runs/distill-sweep}
OUT=${OUT:-bench/results/distillation}
LOSSES=${LOSSES:-"kd4mtl kdam bam"}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYMTL_HOME=${PYMTL_HOME:-runs/balancer-sweep/home}

common=(
  --dataset synthetic --preset standard --arch hps --balancer ew
  --set dataset.train_size="${TRAIN_SIZE:-1024}" --set dataset.val_size="${EVAL_SIZE:-512}"
  --set dataset.test_size="${EVAL_SIZE:-512}" --set dataset.cache_dir=runs/balancer-sweep/cache
  --set train.epochs="${EPOCHS:-4}" --set train.batch_size=32
)

# train into $1 with the remaining arguments: skip a finished run, resume an interrupted one
run() {
  local out=$1
  shift
  if [[ -f $out/metrics.json ]]; then return; fi
  if [[ -f $out/checkpoints/last.pt ]]; then
    "$PYMTL" train --out "$out" --resume > /dev/null
  else
    "$PYMTL" train "${common[@]}" "$@" --out "$out" > /dev/null
  fi
}

teacher=$ROOT/teacher_hps_w32_seed0
run "$teacher" --seed 0 --set arch.backbone.name=convnet --set arch.backbone.width=32
for seed in $SEEDS; do
  "$PYMTL" baselines "${common[@]}" --seeds "$seed" --root runs/balancer-sweep/clean/baselines
  for loss in $LOSSES; do
    extra=()
    if [[ $loss == kdam ]]; then extra=(--teacher "$teacher"); fi
    run "$ROOT/hps_ew_${loss}_seed$seed" --seed "$seed" --distill "$loss" "${extra[@]}"
  done
done
mkdir -p "$OUT"
"$PYMTL" compare runs/arch-sweep/hps_ew_seed* "$ROOT"/hps_ew_*_seed* --out "$OUT" | tee "$OUT/table.txt"
