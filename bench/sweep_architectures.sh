#!/usr/bin/env bash
# The architecture sweep of bench/README.md ("Architecture sweep"): hps and the cross-task
# architectures × seeds on the synthetic `standard` preset with `ew`, Δ_MTL against the
# single-task baselines of the balancer sweep (same data, same budget, same store), plus
# `pymtl info` (parameters, multiply-adds, peak training memory) for each architecture.
# Resumable: re-run the same command to finish an interrupted sweep. Runs go to
# runs/arch-sweep/ (not committed); tables and plots to bench/results/architectures/.
#
#   bash bench/sweep_architectures.sh                       # the committed budget (below)
#   ARCHS=hps,mtan SEEDS="0" bash bench/sweep_architectures.sh
#   SEEDS="0" bash bench/sweep_architectures.sh & SEEDS="1 2" bash ...   # two cores
set -euo pipefail
cd "$(dirname "$0")/.."
PYMTL=${PYMTL:-.venv/bin/pymtl}
EPOCHS=${EPOCHS:-4}
TRAIN_SIZE=${TRAIN_SIZE:-1024}
EVAL_SIZE=${EVAL_SIZE:-512}
SEEDS=${SEEDS:-"0 1 2"}
ROOT=${ROOT:-runs/arch-sweep}
OUT=${OUT:-bench/results/architectures}
ARCHS=${ARCHS:-hps,cross_stitch,nddr,mtan,padnet,papnet,mtinet}
# the balancer sweep's store: its clean-scenario baselines are for exactly this data and budget
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYMTL_HOME=${PYMTL_HOME:-runs/balancer-sweep/home}

common=(
  --set dataset.train_size="$TRAIN_SIZE" --set dataset.val_size="$EVAL_SIZE"
  --set dataset.test_size="$EVAL_SIZE" --set dataset.cache_dir=runs/balancer-sweep/cache
  --set train.epochs="$EPOCHS" --set train.batch_size=32
)
for seed in $SEEDS; do
  "$PYMTL" baselines --dataset synthetic --preset standard --arch hps "${common[@]}" \
    --seeds "$seed" --root runs/balancer-sweep/clean/baselines
  "$PYMTL" sweep --dataset synthetic --preset standard --archs "$ARCHS" --balancers ew \
    --seeds "$seed" "${common[@]}" --root "$ROOT" > /dev/null
done
mkdir -p "$OUT"
"$PYMTL" info --dataset synthetic --preset standard --archs "$ARCHS" --batch-size 32 \
  --format markdown | tee "$OUT/info.md"
"$PYMTL" compare "$ROOT"/*_ew_seed* --out "$OUT" | tee "$OUT/table.txt"
