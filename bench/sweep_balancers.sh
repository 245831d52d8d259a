#!/usr/bin/env bash
# The balancer sweep of bench/README.md ("Balancer sweep"): every built-in balancer × seeds on
# the synthetic `standard` preset, in the clean scenario and with the depth loss × 100, with
# single-task baselines for Δ_MTL. Resumable: re-run the same command to finish an interrupted
# sweep. Runs go to runs/balancer-sweep/ (not committed); the compare tables and plots go to
# bench/results/balancers/<scenario>/.
#
#   bash bench/sweep_balancers.sh                 # the committed budget (below)
#   EPOCHS=12 TRAIN_SIZE=4096 bash bench/sweep_balancers.sh   # the preset's full budget
#
# One torch thread per run, so a 2-core machine can keep working meanwhile.
set -euo pipefail
cd "$(dirname "$0")/.."
PYMTL=${PYMTL:-.venv/bin/pymtl}
EPOCHS=${EPOCHS:-4}
TRAIN_SIZE=${TRAIN_SIZE:-1024}
EVAL_SIZE=${EVAL_SIZE:-512}
SEEDS=${SEEDS:-"0 1 2"}
SCENARIOS=${SCENARIOS:-"clean imbalanced"}   # run one scenario per process to use two cores
ROOT=${ROOT:-runs/balancer-sweep}
OUT=${OUT:-bench/results/balancers}
# `fixed` with its default weights is `ew`, so it is left out
BALANCERS=${BALANCERS:-ew,uw,gradnorm,dwa,dtp,rlw,mgda,mgda_ub,pcgrad,gradvac,cagrad,graddrop,imtl,imtl_g,imtl_l,nash_mtl,aligned_mtl,upgrad,famo,db_mtl}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYMTL_HOME=${PYMTL_HOME:-$ROOT/home}

common=(
  --set dataset.train_size="$TRAIN_SIZE" --set dataset.val_size="$EVAL_SIZE"
  --set dataset.test_size="$EVAL_SIZE" --set dataset.cache_dir="$ROOT/cache"
  --set train.epochs="$EPOCHS" --set train.batch_size=32
)
declare -A scenario=([clean]="" [imbalanced]="--set dataset.loss_scale.depth=100")

for seed in $SEEDS; do
  for name in $SCENARIOS; do
    # shellcheck disable=SC2206
    extra=(${scenario[$name]})
    "$PYMTL" baselines --dataset synthetic --preset standard --arch hps "${common[@]}" \
      "${extra[@]}" --seeds "$seed" --root "$ROOT/$name/baselines"
    "$PYMTL" sweep --dataset synthetic --preset standard --archs hps --balancers "$BALANCERS" \
      --seeds "$seed" "${common[@]}" "${extra[@]}" --root "$ROOT/$name" > /dev/null
  done
done
for name in $SCENARIOS; do
  mkdir -p "$OUT/$name"
  "$PYMTL" compare "$ROOT/$name"/hps_* --out "$OUT/$name" | tee "$OUT/$name/table.txt"
done
