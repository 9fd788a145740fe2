"""The test pass of one fold: the trainer tests a checkpoint (or the model as it is) on the fold's test actors,
and the predictions it makes become the fold's predictions file, its test metrics and their speaker-bootstrap
intervals (:func:`test_checkpoint`). After training (:mod:`wav2emo.runs.fold_runner`) and from a saved checkpoint
alone (:func:`wav2emo.runs.testing.evaluate`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L

from wav2emo.data.manifest import EMOTIONS
from wav2emo.reports.fold_results import write_predictions
from wav2emo.reports.intervals import BootstrapSettings, speaker_intervals
from wav2emo.reports.metrics import classification_metrics
from wav2emo.reports.per_corpus import CORPUS_COLUMN, per_corpus_metrics
from wav2emo.training.distributed import is_rank_zero


def test_checkpoint(
    trainer: L.Trainer, model, dm: L.LightningDataModule, ckpt_path: str | None, out_dir: Path,
    bootstrap: BootstrapSettings | None = None,
) -> dict[str, Any]:
    """Evaluate ``ckpt_path`` (or the model as it is) on the test actors and write the predictions.

    The test metrics (WA, UA, F1, per class, confusion) are computed from the written predictions by
    :func:`wav2emo.reports.metrics.classification_metrics`, the one definition every report uses; the
    trainer's own test numbers (torchmetrics) agree with them, and only its loss is kept. ``test_intervals``:
    the speaker-bootstrap intervals of these predictions (``bootstrap``: the config's ``report`` settings; None:
    the defaults).
    """
    import pandas as pd  # here: a training run's start-up does not need pandas (issue 25)

    metrics = trainer.test(model, datamodule=dm, ckpt_path=ckpt_path, verbose=False, weights_only=True)[0]
    preds = pd.DataFrame(model.test_predictions)  # every process's clips, under DDP too (the module gathers them)
    paths = {c.clip_id: c.path for c in dm.manifest}
    preds.insert(1, "file", [paths[c] for c in preds["clip_id"]])
    actor_of = {c.clip_id: c.actor for c in dm.manifest}  # each clip's speaker, for the speaker bootstrap
    preds["actor"] = [actor_of[c] for c in preds["clip_id"]]
    class_names = list(getattr(model, "class_names", EMOTIONS))
    preds["true"] = [class_names[i] for i in preds["label"]]
    preds["predicted"] = [class_names[i] for i in preds["pred"]]
    if getattr(dm.manifest, "parts", None):  # several corpora: each clip's corpus, for per-corpus metrics
        corpus_of = {c.clip_id: c.corpus for c in dm.manifest}
        preds[CORPUS_COLUMN] = [corpus_of[c] for c in preds["clip_id"]]
    if is_rank_zero():  # several processes: one writes
        write_predictions(out_dir, preds)
    scored = classification_metrics(preds["label"].to_numpy(), preds["pred"].to_numpy(), class_names)
    test = {k.split("/", 1)[1]: float(v) for k, v in metrics.items() if k.count("/") == 1}
    test.update({k: scored[k] for k in ("wa", "ua", "f1")})
    out = {
        "test": test,
        "test_per_class": scored["per_class"],
        "test_confusion": scored["confusion"],
        "class_names": class_names,
        "test_clips": int(len(preds)),
        "evaluated_checkpoint": ckpt_path,
    }
    if len(preds):
        out["test_intervals"] = speaker_intervals(preds["actor"], preds["label"], preds["pred"], class_names, bootstrap)
    if CORPUS_COLUMN in preds:
        out["test_per_corpus"] = per_corpus_metrics(preds[CORPUS_COLUMN], preds["label"], preds["pred"], class_names)
    return out
