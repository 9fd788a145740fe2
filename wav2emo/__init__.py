"""wav2emo: speech emotion recognition on frozen self-supervised speech features.

The package is laid out as the pipeline runs: ``data`` (corpora, audio, speaker folds) ->
``features`` (backbones, eGeMAPS, the shared feature cache) -> ``models`` (classifier heads) ->
``training`` (data module, Lightning module, metrics, the train/eval loops) -> ``reports``
(cross-validation aggregates and figures).
"""

__version__ = "0.1.0"
