#!/usr/bin/env bash
# Berlin EmoDB, leave-one-speaker-out (10 folds, 7 classes), models that need no pretrained weights:
#   eGeMAPS + logistic regression / SVM, with global and with per-speaker normalisation (transductive: it reads
#   the test speaker's unlabelled audio), the eGeMAPS MLP, and the attentive log-mel head.
# Usage: bash experiments/emodb_loso.sh [EmoDB folder] [OUT]   (env: TRAINER=cpu|gpu, EPOCHS for the neural models)
set -euo pipefail
root=${1:-${WAV2EMO_DATA_DIR:-$HOME/.cache/wav2emo/data}/emodb}
out=${2:-outputs/experiments/emodb_loso}
data=(data=emodb "data.corpus.root=$root" folds=loso fold=all)
for m in logreg svm; do
  python -m wav2emo.baselines "model=$m" "${data[@]}" features=egemaps "hydra.run.dir=$out/baseline_$m"
  python -m wav2emo.baselines "model=$m" "${data[@]}" features=egemaps features.normalize=speaker \
    "hydra.run.dir=$out/baseline_spknorm_$m"
done
python -m wav2emo.train model=egemaps_mlp "${data[@]}" features=egemaps "trainer=${TRAINER:-cpu}" \
  "trainer.max_epochs=${EPOCHS:-100}" trainer.enable_progress_bar=false logger=csv "hydra.run.dir=$out/egemaps_mlp"
python -m wav2emo.train model=attentive_logmel "${data[@]}" features=logmel "trainer=${TRAINER:-cpu}" \
  "trainer.max_epochs=${EPOCHS:-20}" trainer.enable_progress_bar=false logger=csv "hydra.run.dir=$out/attentive_logmel"
