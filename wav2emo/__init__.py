"""wav2emo: speech emotion recognition on frozen self-supervised speech features.

The package is laid out as the pipeline runs: ``data`` (corpora, audio, speaker folds) ->
``features`` (backbones, eGeMAPS, the shared feature cache) -> ``models`` (classifier heads) ->
``training`` (data module, Lightning module, metrics, the train/eval loops) -> ``reports``
(cross-validation aggregates and figures).
"""

__version__ = "0.1.0"


def _register_resolvers() -> None:
    """Config resolvers wav2emo's YAML uses (``conf/trainer/default.yaml``), registered when wav2emo is imported."""
    try:
        from omegaconf import OmegaConf
    except ImportError:  # a bare `import wav2emo` (e.g. the version check) works without the stack
        return

    def auto_precision(accelerator: str = "auto") -> str:
        # bf16 mixed precision where the trainer lands on a GPU with bf16 (the fast path), float32 elsewhere.
        from wav2emo.training.fast_path import auto_precision as resolve

        return resolve(str(accelerator))

    if not OmegaConf.has_resolver("wav2emo_precision"):
        OmegaConf.register_new_resolver("wav2emo_precision", auto_precision)


_register_resolvers()
