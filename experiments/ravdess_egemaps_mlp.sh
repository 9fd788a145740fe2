#!/usr/bin/env bash
# Five-fold eGeMAPS-only baseline on real RAVDESS (no pretrained weights needed).
# Usage: bash experiments/ravdess_egemaps_mlp.sh [RAVDESS folder or Audio_Speech_Actors_01-24.zip]
set -euo pipefail
root=${1:-${WAV2EMO_DATA_DIR:-$HOME/.cache/wav2emo/data}/ravdess}
out=outputs/experiments/ravdess_egemaps_mlp
python -m wav2emo.train experiment=egemaps_mlp "data.corpus.root=$root" trainer=cpu \
  trainer.enable_progress_bar=false "hydra.run.dir=$out"
mkdir -p experiments/results/ravdess_egemaps_mlp
cp "$out"/cv_report.md "$out"/cv_report.json "$out"/*.png experiments/results/ravdess_egemaps_mlp/
