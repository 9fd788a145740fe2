#!/usr/bin/env bash
# Issue 25's scale, augmentation and memory measurements on one GPU in one go (< 8 min on an H100, 16 cores):
#   1. benchmarks/scale_benchmark.py --device cuda: 7442- and 20 000-clip corpora, extraction throughput and
#      cache size per feature kind, memory-mapped training throughput and host memory  -> scale_cuda.{md,json}
#   2. benchmarks/finetune_benchmark.py: the online augmentation epoch and the cached copies, each the previous
#      way and the new way in the same process; full fine-tuning (fold resident) and its backbone + head memory
#      apart from the fold, with and without gradient checkpointing, bf16-mixed and bf16-true
#      -> finetune_<gpu>.{md,json}
#   plus this script's own log (gpu_scale_aug.log): at most 5 files, all in OUTDIR itself.
#     bash benchmarks/gpu_scale_aug.sh OUTDIR               # on the GPU machine
#     bash benchmarks/gpu_scale_aug.sh OUTDIR --cpu-smoke   # checks the script without a GPU (a few minutes)
set -u
OUT=${1:?usage: bash benchmarks/gpu_scale_aug.sh OUTDIR [--cpu-smoke]}
MODE=${2:-}
W=${SCALE_AUG_WORK:-/tmp/wav2emo-scale-aug}
mkdir -p "$OUT" "$W"
LOG="$OUT/gpu_scale_aug.log"
export WAV2EMO_DATA_DIR=$W/data WAV2EMO_CACHE_DIR=$W/cache WAV2EMO_LOG_DIR=$W/outputs
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=disabled
t0=$(date +%s)
stamp() { echo "== $1 ($(( $(date +%s) - t0 )) s)" | tee -a "$LOG"; }
FT_ONLY=(online cached memory "finetune=full (waveforms)")
if [ "$MODE" = "--cpu-smoke" ]; then
  stamp "cpu smoke: scale"
  python benchmarks/scale_benchmark.py --device cpu --smoke --work "$W/scale" --out "$OUT" >>"$LOG" 2>&1
  echo "scale: rc $?" | tee -a "$LOG"
  stamp "cpu smoke: finetune configurations compose"
  python benchmarks/finetune_benchmark.py --compose-only --work "$W/ft" --epochs 3 --only "${FT_ONLY[@]}" 2>&1 \
    | tee -a "$LOG" | grep -c composes
  stamp "done"
  exit 0
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee -a "$LOG"
echo "cpu cores: $(nproc)" | tee -a "$LOG"
stamp "finetune and augmentation (items 2, 3)"
timeout ${FT_TIMEOUT:-240} python benchmarks/finetune_benchmark.py --work "$W/ft" --out "$OUT" --epochs 3 \
  --only "${FT_ONLY[@]}" >>"$LOG" 2>&1
echo "finetune: rc $?" | tee -a "$LOG"
stamp "scale (item 1)"
left=$(( ${TOTAL_S:-465} - ($(date +%s) - t0) ))  # whatever the fine-tuning part left of the 8 minutes
timeout $(( left > 150 ? left : 150 )) python benchmarks/scale_benchmark.py --device cuda --work "$W/scale" --out "$OUT" \
  >>"$LOG" 2>&1
echo "scale: rc $?" | tee -a "$LOG"
grep -E "^\[|Error|error" "$LOG" | grep -v Warning | tail -40
stamp "done"
