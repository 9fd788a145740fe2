"""wav2emo: speech emotion recognition experiments on self-supervised speech features.

The package is laid out as the data flows, each folder one job (docs/architecture.md has the map and
the rules): ``data`` (corpus recipes, audio, speaker folds) and ``backbones`` (self-supervised encoder
families) -> ``features`` (the shared feature cache: hidden states, eGeMAPS, log-mel) and ``augment`` ->
``models`` (networks and heads) -> ``feeding`` (batches of a fold) -> ``training`` (the Lightning loop) ->
``reports`` -> ``runs`` (train/eval over folds), ``baselines`` (scikit-learn), ``hpsearch``,
``crosscorpus``, ``inference``, ``external``; the entry points (``train.py``, ``eval.py``, ...) on top.
"""

__version__ = "0.1.0"
