#!/usr/bin/env bash
# Issue 25's cached augmentation copies (4 x 1020 clips, target <= 30 s): the previous way (copies, then their
# features) beside the new way (eGeMAPS of each copy computed while the next copies are made), same process, on one
# GPU; about 3 minutes on one H100 with 16 cores (setup ~30 s, then one or two previous/new pairs of ~45 + ~30 s).
# Writes into OUTDIR: copies_<gpu>.md and .json (the figures, naming the GPU) and gpu_copies.log.
#     bash benchmarks/gpu_copies.sh OUTDIR               # on the GPU machine
#     bash benchmarks/gpu_copies.sh OUTDIR --cpu-smoke   # checks the script without a GPU (tiny backbone, ~1-2 min)
set -u
OUT=${1:?usage: bash benchmarks/gpu_copies.sh OUTDIR [--cpu-smoke]}
MODE=${2:-}
W=${COPIES_WORK:-/tmp/wav2emo-copies-bench}
mkdir -p "$OUT" "$W"
LOG="$OUT/gpu_copies.log"
export WAV2EMO_DATA_DIR=$W/data WAV2EMO_CACHE_DIR=$W/cache WAV2EMO_LOG_DIR=$W/outputs
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=disabled
if [ "$MODE" = "--cpu-smoke" ]; then
  timeout 600 python benchmarks/copies_benchmark.py "$OUT" --work "$W" --cpu-smoke --pairs 1 2>&1 | tee "$LOG" \
    | grep -v "it/s\|clip/s"
  exit "${PIPESTATUS[0]}"
fi
{ nvidia-smi --query-gpu=name,memory.total --format=csv,noheader; echo "cpu cores: $(nproc)"; df -h "$W" | tail -1; } \
  | tee "$LOG"
timeout ${COPIES_TIMEOUT:-230} python benchmarks/copies_benchmark.py "$OUT" --work "$W" --budget-s ${COPIES_BUDGET_S:-100} \
  >>"$LOG" 2>&1
rc=$?
echo "copies benchmark: rc $rc" | tee -a "$LOG"
grep -v "it/s\|clip/s" "$LOG" | tail -25
rm -rf "$W/cache-previous" "$W/cache-new"
exit $rc
