#!/usr/bin/env bash
# The task-grouping pipeline (Standley et al., ICML 2020; SPEC-methods §4) on the synthetic
# `standard` preset with four tasks: `pymtl group train --mode full` (2^4 - 1 + 4 = 19 hps
# networks, the per-run budget of bench/sweep_architectures.sh), the same list for ESA (one
# short pass each, --esa-fraction of one epoch), then `pymtl group affinity` (Tables 1-2) and
# `pymtl group select` (Table 4, Figure 5, grouping files) for budgets 1 to 4 SNT in steps of
# 0.5, on the converged losses, the early ones (esa) and the HOA predictions. Resumable: re-run
# the same command to finish an interrupted pipeline (finished networks are skipped). Runs go
# to runs/group-pipeline/ (not committed); candidate files, tables and plots to
# bench/results/grouping/.
#
#   bash bench/group_pipeline.sh                    # the committed budget (below), ~1 h
#   JOBS=2 bash bench/group_pipeline.sh             # two networks at a time (two cores)
#   TRAIN_SIZE=16 EVAL_SIZE=8 EPOCHS=1 IMAGE_SIZE=16 WIDTH=4 ROOT=/tmp/g OUT=/tmp/g/out \
#     CACHE=/tmp/g/cache bash bench/group_pipeline.sh     # a seconds-long check of the script
set -euo pipefail
cd "$(dirname "$0")/.."
PYMTL=${PYMTL:-.venv/bin/pymtl}
EPOCHS=${EPOCHS:-4}
TRAIN_SIZE=${TRAIN_SIZE:-1024}
EVAL_SIZE=${EVAL_SIZE:-512}
BATCH_SIZE=${BATCH_SIZE:-32}
IMAGE_SIZE=${IMAGE_SIZE:-64}   # the preset's
WIDTH=${WIDTH:-16}             # convnet's default width (1 SNT); reduced networks get half
TASKS=${TASKS:-semseg,depth,normals,edges}
JOBS=${JOBS:-1}
ESA_FRACTION=${ESA_FRACTION:-0.2}
BUDGETS=${BUDGETS:-1,1.5,2,2.5,3,3.5,4}
ROOT=${ROOT:-runs/group-pipeline}
OUT=${OUT:-bench/results/grouping}
# the balancer sweep's render cache: the same scenes (one folder per task subset)
CACHE=${CACHE:-runs/balancer-sweep/cache}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

common=(
  --dataset synthetic --preset standard --arch hps --tasks "$TASKS" --root "$ROOT"
  --jobs "$JOBS" --set dataset.image_size="$IMAGE_SIZE"
  --set dataset.train_size="$TRAIN_SIZE" --set dataset.val_size="$EVAL_SIZE"
  --set dataset.test_size="$EVAL_SIZE" --set dataset.cache_dir="$CACHE"
  --set train.epochs="$EPOCHS" --set train.batch_size="$BATCH_SIZE"
  --set arch.backbone.name=convnet --set arch.backbone.width="$WIDTH"
)
mkdir -p "$OUT"
"$PYMTL" group train "${common[@]}" --mode full --out "$OUT/candidates.toml"
"$PYMTL" group train "${common[@]}" --mode esa --esa-fraction "$ESA_FRACTION" \
  --out "$OUT/candidates-esa.toml"
"$PYMTL" group affinity "$OUT/candidates.toml" --split test --out "$OUT"
"$PYMTL" group select "$OUT/candidates.toml" "$OUT/candidates-esa.toml" --esa-split esa \
  --hoa --budget "$BUDGETS" --out "$OUT"
