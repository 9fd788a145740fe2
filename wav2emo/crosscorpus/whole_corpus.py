"""Every clip of a corpus as the test set of a model trained on another corpus (cross-corpus evaluation).

The data module of a checkpoint's own config, fed the other corpus: the same inputs, features spec, frames
and batching, but no folds (nothing of this corpus was trained on) and the *model's* class names, so the
network is rebuilt with the outputs it was trained with.  It has no training actors, so it gives no statistics:
the model's eGeMAPS standardisation and class weights come from the checkpoint's state dict.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from wav2emo.data.folds import Split
from wav2emo.data.manifest import Manifest
from wav2emo.feeding.datamodule import EmotionDataModule

PROTOCOL = "cross-corpus: every clip of the test corpus (none of its speakers or clips was trained on)"


class WholeCorpusDataModule(EmotionDataModule):
    """All clips of ``corpus`` in the test split; ``model_class_names`` are the trained model's classes."""

    def __init__(self, *args: Any, model_class_names: Sequence[str], **kwargs: Any) -> None:
        kwargs.setdefault("folds", {})
        kwargs.setdefault("fold", 0)
        kwargs["augment"] = None  # nothing is trained here
        super().__init__(*args, **kwargs)
        self.model_class_names = tuple(str(c) for c in model_class_names)

    def _assemble(self, manifest: Manifest) -> tuple[Split, dict[str, Manifest]]:
        manifest.require_labels("cross-corpus evaluation")
        empty = manifest.select([])
        split = Split(fold=0, train=(), dev=(), test=tuple(manifest.actors), protocol=PROTOCOL)
        return split, {"train": empty, "dev": empty, "test": manifest}

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.model_class_names

    @property
    def test_class_names(self) -> tuple[str, ...]:
        """The test corpus's own classes (its clips' labels index these)."""
        self._load()
        return tuple(self.manifest.class_names)
