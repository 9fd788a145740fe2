"""Models trained outside wav2emo, evaluated on its folds with its reports (``python -m wav2emo.eval_hf``).

One job per module: :mod:`.hf_classifier` (loading an ``AutoModelForAudioClassification`` and its feature
extractor), :mod:`.label_map` (its label names onto the corpus's emotions), :mod:`.hf_predict` (batched
logits, each clip as if alone), :mod:`.hf_eval` (folds, result files and the cross-validation report).

May import: data, backbones, reports, runs (run folders, the folds to run) and the package root's errors and
plain_config. Nothing imports it but the ``wav2emo.eval_hf`` command.
"""
