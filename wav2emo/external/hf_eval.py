"""``python -m wav2emo.eval_hf``: a published audio classifier on wav2emo's folds, with wav2emo's reports.

For each requested fold the classifier predicts the test actors' clips (:func:`wav2emo.data.folds.assemble_fold`;
nothing is trained, so the training and dev actors are unused), its labels mapped onto the corpus's emotions
(:mod:`wav2emo.external.model_labels`).  Each fold writes what a trained fold writes (``fold_result.json``,
``predictions.csv``, ``config.yaml``, ``git.json``, ``environment.json``) plus ``unscored.csv`` (the clips of
emotions the model cannot predict, with its own top label), and several folds end in the same
cross-validation report (:func:`wav2emo.reports.run_report.finish_run`).  Every report warns that such
checkpoints are usually trained on all of RAVDESS, so the test actors may have been seen.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig

from wav2emo.data.folds import folds_to_run
from wav2emo.errors import ConfigError
from wav2emo.external.hf_classifier import HFClassifier, load_hf_classifier
from wav2emo.external.hf_predict import predict_logits
from wav2emo.external.model_labels import LabelMapping, build_label_mapping
from wav2emo.plain_config import to_container
from wav2emo.reports.fold_results import jsonable, write_fold_result, write_predictions
from wav2emo.reports.metrics import classification_metrics
from wav2emo.runs.common import num_folds_of, output_dir
from wav2emo.runs.run_info import save_run_info

log = logging.getLogger(__name__)

UNSCORED = "unscored.csv"
SEEN_WARNING = (
    "this checkpoint was trained outside wav2emo: published emotion classifiers are usually trained on ALL "
    "RAVDESS actors (or on data we cannot check), so the test actors of these folds may have been seen in "
    "training and the numbers may be optimistic; they are not comparable with speaker-independent results "
    "unless the checkpoint's training speakers are known to exclude them"
)


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


def evaluate_fold(cfg: DictConfig, clf: HFClassifier, mapping: LabelMapping, manifest, fold: int,
                  fold_dir: Path) -> dict[str, Any]:
    """Predict one fold's test actors and write its files; returns the fold result."""
    from wav2emo.data.folds import assemble_fold

    started = time.time()
    fold_dir = Path(fold_dir)
    save_run_info(cfg, fold_dir)
    assembly = assemble_fold(manifest, to_container(cfg.folds), fold)
    split, clips = assembly.split, list(assembly.parts["test"])
    logits = predict_logits(clf, clips, batch_size=int(cfg.batch_size), max_batch_s=float(cfg.max_batch_s),
                            device=resolve_device(str(cfg.device)), progress=bool(cfg.get("progress", True)))
    probs = mapping.class_probabilities(logits)
    pred = probs.argmax(1)
    top = logits.argmax(1)  # the model's own top label, mapped or not
    names = list(mapping.class_names)
    scored = [mapping.scored_label(c.label) for c in clips]
    keep = np.array([s is not None for s in scored], dtype=bool)
    rows = pd.DataFrame({
        "clip_id": [c.clip_id for c in clips], "file": [c.path for c in clips], "actor": [c.actor for c in clips],
        "label": [-1 if s is None else s for s in scored], "pred": pred.astype(np.int64),
        "true": [c.emotion for c in clips], "predicted": [names[p] for p in pred],
        "model_label": [mapping.model_labels[t] for t in top],
    })
    for c, name in enumerate(names):
        rows[f"prob_{name}"] = probs[:, c]
    write_predictions(fold_dir, rows[keep].reset_index(drop=True))
    unscored = rows[~keep][["clip_id", "file", "actor", "true", "model_label", "predicted"]]
    unscored.to_csv(fold_dir / UNSCORED, index=False)
    m = classification_metrics(rows["label"][keep].to_numpy(), rows["pred"][keep].to_numpy(), names)
    unmapped_top = [mapping.to_class[t] is None for t in top]
    result: dict[str, Any] = {
        "fold": fold,
        "model": f"hf:{clf.info['ref']}",
        "checkpoint": clf.info,
        "split": {"fold": fold, "train_actors": list(split.train), "dev_actors": list(split.dev),
                  "test_actors": list(split.test), "clips": {"test": len(clips), "scored": int(keep.sum())},
                  "note": "nothing trained here: the training and dev actors are unused"},
        "protocol": {"external_checkpoint": True, "warning": SEEN_WARNING, "label_mapping": mapping.describe(),
                     "sampling_rate": clf.sampling_rate, "folds": split.protocol},
        "test": {k: m[k] for k in ("wa", "ua", "f1")},
        "test_per_class": m["per_class"],
        "test_confusion": m["confusion"],
        "class_names": names,
        "test_clips": int(keep.sum()),
        "unmapped": {
            "clips": int((~keep).sum()),
            "by_emotion": {e: int(n) for e, n in pd.Series([c.emotion for c, k in zip(clips, keep, strict=True)
                                                            if not k], dtype=object).value_counts().items()},
            "top_label_unmapped_clips": int(np.sum(unmapped_top)),
            "file": UNSCORED,
        },
    }
    result["seconds"] = round(time.time() - started, 2)
    write_fold_result(fold_dir, result)
    log.info("fold %d: %d test clips, %d scored (UA %.4f), %d of unmapped emotions", fold, len(clips),
             int(keep.sum()), m["ua"], int((~keep).sum()))
    return result


def evaluate_hf(cfg: DictConfig) -> dict[str, Any]:
    """Every requested fold, then the cross-validation report when several ran (``python -m wav2emo.eval_hf``)."""
    from wav2emo.data.corpora import load_corpus
    from wav2emo.reports.run_report import finish_run

    if cfg.get("hf_model") in (None, "", "???"):
        raise ConfigError("hf_model is not set; pass hf_model=<hub id or save_pretrained folder>")
    folds = folds_to_run(cfg.fold, num_folds_of(cfg))
    clf = load_hf_classifier(str(cfg.hf_model), cfg.get("revision"), device=resolve_device(str(cfg.device)))
    manifest = load_corpus(to_container(cfg.data.corpus), cache_dir=cfg.paths.cache_dir)
    label_map = to_container(cfg.label_map) if cfg.get("label_map") is not None else {}
    mapping = build_label_mapping(clf.id2label, manifest.class_names, label_map, str(cfg.unmapped_emotions))
    log.info("label mapping: %s", mapping.describe())
    out = output_dir(cfg)
    results = {f: evaluate_fold(cfg, clf, mapping, manifest, f, out / f"fold_{f}") for f in folds}
    totals = unmapped_totals(results)
    summary = finish_run(out, folds, results)
    if summary is not None:
        declare_external(out, results[folds[0]], totals)
    print(f"Warning: {SEEN_WARNING}.", flush=True)
    if totals["clips"]:
        print(f"{totals['clips']} test clips of emotions the model cannot predict were not scored "
              f"({totals['by_emotion']}); listed in each fold's {UNSCORED}", flush=True)
    last = results[folds[-1]]
    metrics: dict[str, Any] = {f"test/{k}": v for k, v in last["test"].items()}
    if summary is not None:
        metrics["cv"] = summary
    metrics["unmapped"] = totals
    return metrics


def unmapped_totals(results: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """Unscored clips summed over folds (per emotion), and how often the top label was an unmapped one."""
    by_emotion: dict[str, int] = {}
    for r in results.values():
        for e, n in r["unmapped"]["by_emotion"].items():
            by_emotion[e] = by_emotion.get(e, 0) + int(n)
    return {"clips": sum(int(r["unmapped"]["clips"]) for r in results.values()), "by_emotion": by_emotion,
            "top_label_unmapped_clips": sum(int(r["unmapped"]["top_label_unmapped_clips"]) for r in results.values())}


def declare_external(out: Path, first: Mapping[str, Any], totals: Mapping[str, Any]) -> None:
    """Put the checkpoint, the label mapping, the unscored clips and the warning into the CV report."""
    path = out / "cv_report.json"
    if not path.is_file():
        return
    report = json.loads(path.read_text())
    mapping = first["protocol"]["label_mapping"]
    report["external_checkpoint"] = {"checkpoint": first["checkpoint"], "warning": SEEN_WARNING,
                                     "label_mapping": mapping, "unmapped": dict(totals)}
    path.write_text(json.dumps(jsonable(report), indent=2) + "\n")
    md = out / "cv_report.md"
    if md.is_file():
        lines = md.read_text().split("\n")
        shown = ", ".join(f"{m} -> {t or 'unmapped'}" for m, t in mapping["model_labels"].items())
        section = [
            "", f"**Warning: {SEEN_WARNING}.**", "",
            f"Checkpoint: `{first['checkpoint']['ref']}` ({first['checkpoint'].get('model_class')}); "
            f"labels: {shown}.",
            f"Scored classes: {', '.join(mapping['scored_classes'])}. Emotions the model cannot predict: "
            f"{', '.join(mapping['unmapped_emotions']) or 'none'} ({mapping['unmapped_emotions_scoring']}d: "
            f"{totals['clips']} test clips not scored {totals['by_emotion'] or ''}, listed in {UNSCORED}). "
            f"Clips whose top model label was unmapped: {totals['top_label_unmapped_clips']}.",
        ]
        md.write_text("\n".join([lines[0], *section, *lines[1:]]))
