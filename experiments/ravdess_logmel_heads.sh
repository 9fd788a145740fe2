#!/usr/bin/env bash
# The frame-level heads over 64-band log-mel on real RAVDESS, trained from scratch (no pretrained weights):
#   mean_linear_logmel (mean pooling + linear, the SUPERB/EmoBox probing head), attentive_logmel (attentive
#   statistics pooling + MLP), lstm_logmel (bidirectional LSTM over packed frames + MLP).
# Five Luna-Jimenez folds each, one Hydra multirun ending with a report per head and comparison.{json,md,png}.
# Usage: bash experiments/ravdess_logmel_heads.sh [RAVDESS folder or zip] [OUT]
#   env: EPOCHS (default 30), FOLDS (default 0,1,2,3,4), TRAINER (default cpu; gpu on a GPU machine)
set -euo pipefail
root=${1:-${WAV2EMO_DATA_DIR:-$HOME/.cache/wav2emo/data}/ravdess}
out=${2:-outputs/experiments/ravdess_logmel_heads}
python -m wav2emo.train -m data=ravdess "data.corpus.root=$root" features=logmel \
  model=mean_linear_logmel,attentive_logmel,lstm_logmel "fold=${FOLDS:-0,1,2,3,4}" \
  "trainer=${TRAINER:-cpu}" "trainer.max_epochs=${EPOCHS:-30}" trainer.enable_progress_bar=false logger=csv \
  "hydra.sweep.dir=$out"
