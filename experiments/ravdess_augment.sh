#!/usr/bin/env bash
# Does augmentation help a model trained from scratch on real RAVDESS? (issue 9, no pretrained weights needed)
#   fe_vgg over 64-band log-mel (fe_vgg_logmel): augment=none | standard (online, on the device) | standard_cached
#   the eGeMAPS MLP (egemaps_mlp):                augment=none | standard_cached
#     (online augmentation cannot reach eGeMAPS: openSMILE runs offline, so wav2emo refuses that pairing)
# Five speaker folds each; every configuration is its own Hydra multirun, run side by side (PARALLEL=1 runs them
# one after another), then one comparison across all of them. Test actors are never augmented (any mode).
# Usage: bash experiments/ravdess_augment.sh [RAVDESS folder or zip] [OUT]
#   env: EPOCHS (default 40), FOLDS (default 0,1,2,3,4), PARALLEL (default 5), SPEED (default gpu_fast;
#        set SPEED= for a CPU run), TAG (suffix of the sweep folders: run fold subsets side by side into the same
#        OUT, e.g. FOLDS=0,1 TAG=_a and FOLDS=2,3,4 TAG=_b; the final report groups every run under OUT)
set -euo pipefail
root=${1:-${WAV2EMO_DATA_DIR:-$HOME/.cache/wav2emo/data}/ravdess}
out=${2:-outputs/experiments/ravdess_augment}
epochs=${EPOCHS:-40}
tag=${TAG:-}
folds=${FOLDS:-0,1,2,3,4}
parallel=${PARALLEL:-5}
speed=${SPEED-gpu_fast}
common=(data=ravdess "data.corpus.root=$root" features=logmel "trainer.max_epochs=$epochs"
        trainer.enable_progress_bar=false logger=csv "fold=$folds" ${speed:+speed=$speed})
configs=(
  "fe_vgg_logmel none"
  "fe_vgg_logmel standard"
  "fe_vgg_logmel standard_cached"
  "egemaps_mlp none"
  "egemaps_mlp standard_cached"
)
mkdir -p "$out/logs"
# Extract the corpus's log-mel and eGeMAPS caches once, before the parallel jobs (they would wait on its lock).
python -m wav2emo.extract data=ravdess "data.corpus.root=$root" features=logmel
pids=()
for c in "${configs[@]}"; do
  set -- $c
  python -m wav2emo.train -m "${common[@]}" "model=$1" "augment=$2" "hydra.sweep.dir=$out/${1}_augment_$2$tag" \
    > "$out/logs/${1}_augment_$2$tag.log" 2>&1 &
  pids+=($!)
  while (( $(jobs -rp | wc -l) >= parallel )); do sleep 5; done
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=1; done
(( status == 0 )) || { echo "some configurations failed: see $out/logs" >&2; tail -n 15 "$out"/logs/*.log >&2; }
python -m wav2emo.report "$out" --folds ${REPORT_FOLDS:-${folds//,/ }}
exit $status
