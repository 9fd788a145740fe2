#!/usr/bin/env bash
# Issue 25's GPU measurements in one go (each beside the previous way, same process or same machine):
#   the step (eager vs reference order vs compiled), prediction of a 30-minute recording (eGeMAPS serial vs
#   worker pool), start-up of a cached run (torchmetrics back-ends in vs out), and a short gpu_fast fold with
#   the conv stack compiled vs eager.  Reports go to $1 (default benchmarks/reports).
#     bash benchmarks/gpu_issue25.sh /tmp/reports /tmp/w
set -u
OUT=${1:-benchmarks/reports}
W=${2:-/tmp/wav2emo-issue25}
mkdir -p "$OUT" "$W"
export WAV2EMO_DATA_DIR=$W/data WAV2EMO_CACHE_DIR=$W/cache WAV2EMO_LOG_DIR=$W/outputs HF_HUB_OFFLINE=1 WANDB_MODE=disabled
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
t0=$(date +%s)
echo "== step"; timeout ${STEP_TIMEOUT:-80} python benchmarks/step_fused.py --out "$OUT" --frames 208 ${STEP_ARGS:-} 2>&1 | tail -12
echo "== predict ($(( $(date +%s) - t0 )) s)"
timeout 230 python benchmarks/predict_benchmark.py --work "$W" --backbone base --out "$OUT" 2>&1 | tail -14
echo "== start-up ($(( $(date +%s) - t0 )) s)"
timeout 100 python benchmarks/startup_benchmark.py --work "$W" --gpu --runs 2 --out "$OUT" 2>&1 | tail -14
[ -n "${SKIP_FOLD:-}" ] && exit 0
echo "== compiled fold ($(( $(date +%s) - t0 )) s)"
BB=$W/wav2vec2-base-random
for c in false "{dynamic:true}"; do
  timeout 70 python -m wav2emo.train data=synthetic features=wav2vec2-base features.ssl.backbone=$BB model=fe_vgg_egemaps \
    trainer=gpu speed=gpu_fast trainer.max_epochs=6 test=false trainer.enable_progress_bar=false logger=none \
    "model.module.compile=$c" 2>&1 | grep -E "first training step|epoch [0-9]+/|Error|error" | sed "s/^/[compile=$c] /" \
    | tee -a "$OUT/compiled_fold.log"
done
echo "== done ($(( $(date +%s) - t0 )) s)"
