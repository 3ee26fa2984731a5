#!/usr/bin/env bash
# An imatrix over a large calibration text, split across a Slurm job array, then merged.
#
# An imatrix is additive: each array task collects its own slice of the chunks with
# `--chunk K --chunks N` (skip K chunks, then take N), writes a shard, and one dependent job
# merges the shards with `--in-file` (sums and token counts are added per matrix and expert).
#
#   sbatch --array=0-7 examples/slurm-imatrix.sh           # 8 shards
#   sbatch --dependency=afterok:<ARRAY_JOB_ID> --export=ALL,MERGE=1 examples/slurm-imatrix.sh
#
# Set MODEL, TEXT and OUT (a directory on storage every node sees) in the environment or here.
#SBATCH --job-name=wquant-imatrix
#SBATCH --gpus=1
#SBATCH --cpus-per-task=8
#SBATCH --time=02:00:00
#SBATCH --output=%x-%A_%a.log
set -euo pipefail

MODEL=${MODEL:-/shared/models/model-f16.gguf}
TEXT=${TEXT:-/shared/calib/calib.txt}
OUT=${OUT:-/shared/imatrix/run1}
CTX=${CTX:-512}
CHUNKS_PER_SHARD=${CHUNKS_PER_SHARD:-100}
WQUANT=${WQUANT:-wquant}
mkdir -p "$OUT"

if [ "${MERGE:-0}" = 1 ]; then
  # The merge needs no model and no GPU; shards are combined in index order.
  args=()
  for f in $(ls "$OUT"/shard-*.gguf | sort -V); do args+=(--in-file "$f"); done
  exec "$WQUANT" imatrix "${args[@]}" -c "$CTX" -o "$OUT/imatrix.gguf"
fi

i=${SLURM_ARRAY_TASK_ID:?run as a job array (sbatch --array=0-N)}
# Each shard is written as shard-I.gguf.tmp and renamed when complete, so a failed or
# preempted task leaves no partial shard; rerun it with `scontrol requeue`.
exec "$WQUANT" imatrix -m "$MODEL" -f "$TEXT" -c "$CTX" \
  --chunk $((i * CHUNKS_PER_SHARD)) --chunks "$CHUNKS_PER_SHARD" \
  -o "$OUT/shard-$i.gguf"
