"""``python -m wav2emo.eval ckpt_path=<checkpoint or run> data=<another corpus>``: cross-corpus evaluation.

Each fold model of the run is tested on **every clip** of the other corpus (none of it was trained on), after
both label sets are mapped onto their shared emotions (:mod:`wav2emo.data.shared_labels`; ``label_map`` in the
config renames or drops classes).  In order:

1. the test corpus is loaded and checked, and the shared classes computed: a pair sharing fewer than two
   emotions stops here, before any feature is extracted;
2. each model scores every clip; its argmax is restricted to the shared classes;
3. each fold model writes ``fold_<k>/eval_result.json`` and ``predictions.csv`` (the fold result schema), and
   the run ``cross_corpus.{json,md}`` and ``confusion_matrix.png``: both label sets, the clips counted but not
   scored (emotions outside the shared set, per class), per-class recall, WA/UA/F1 per fold model and their
   mean and spread.

A sweep over seeds (``seed=0,1,2``) is several repeats of the same fold models: each seed's models are tested
and reported as above under ``seed=<s>/``, and ``cross_corpus.{json,md}`` beside them gives the spread over
seeds (:mod:`wav2emo.crosscorpus.seed_reports`, as a training sweep's report does).
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from wav2emo.crosscorpus.pair_report import write_pair_report
from wav2emo.crosscorpus.seed_reports import write_seeds_pair_report
from wav2emo.crosscorpus.trained_models import (
    Repeats,
    TrainedModel,
    find_model_sets,
    neural_scores,
    sklearn_scores,
)
from wav2emo.data.shared_labels import SharedLabels, restricted_argmax, shared_labels
from wav2emo.errors import ConfigError
from wav2emo.reports.fold_results import write_fold_result, write_predictions
from wav2emo.reports.metrics import classification_metrics
from wav2emo.reports.seeds import SEED_DIR
from wav2emo.runs.common import output_dir, quiet_duplicate_log_handlers
from wav2emo.runs.testing import EVAL_RESULT

log = logging.getLogger(__name__)


def corpus_label(corpus_cfg: dict[str, Any]) -> str:
    """``emodb``, or ``multi(ravdess+emodb)`` for several corpora."""
    name = str(corpus_cfg.get("name"))
    return f"multi({'+'.join(map(str, corpus_cfg.get('corpora') or []))})" if name == "multi" else name


def plan(cfg: DictConfig, repeats: Repeats | None = None) -> tuple[dict[str, list[TrainedModel]], Any, SharedLabels, str]:
    """Models (per seed), the test manifest and the shared labels: everything checked before any extraction."""
    from wav2emo.data.corpora import load_corpus

    model_sets = find_model_sets(cfg.ckpt_path, repeats)
    models = [m for seed_models in model_sets.values() for m in seed_models]
    corpus_cfg = OmegaConf.to_container(cfg.data.corpus, resolve=True)
    manifest = load_corpus(corpus_cfg, cache_dir=cfg.paths.cache_dir)
    manifest.require_labels("cross-corpus evaluation")
    train_corpus = corpus_label(models[0].train_config.get("data", {}).get("corpus", {}) or {"name": "?"})
    differing = sorted({m.class_names for m in models})
    if len(differing) > 1:
        raise ConfigError(f"ckpt_path={cfg.ckpt_path}: its fold models have different classes {differing}")
    mapping = OmegaConf.to_container(cfg.label_map, resolve=True) if cfg.get("label_map") else None
    labels = shared_labels(models[0].class_names, manifest.class_names, mapping,
                           model_corpus=train_corpus, test_corpus=corpus_label(corpus_cfg))
    return model_sets, manifest, labels, train_corpus


def cross_evaluate(cfg: DictConfig, out: Path | None = None, repeats: Repeats | None = None) -> dict[str, Any]:
    """Test every fold model of ``cfg.ckpt_path`` (of every seed of a seed sweep) on all clips of ``cfg.data``'s
    corpus; write the reports to ``out`` (default: the run's output directory) and return the summary report.
    ``repeats`` (seed -> fold -> directory) names the fold directories instead of ``cfg.ckpt_path``."""
    quiet_duplicate_log_handlers()
    model_sets, manifest, labels, train_corpus = plan(cfg, repeats)
    corpus_cfg = OmegaConf.to_container(cfg.data.corpus, resolve=True)
    test_corpus = corpus_label(corpus_cfg)
    out = Path(out) if out is not None else output_dir(cfg)
    scored = [c for c in manifest if labels.test_index(manifest.class_names[c.label]) is not None]
    unscored = Counter(manifest.class_names[c.label] for c in manifest
                       if labels.test_index(manifest.class_names[c.label]) is None)
    log.info("cross-corpus %s -> %s: %d of %d clips scored on %s; not scored: %s", train_corpus, test_corpus,
             len(scored), len(manifest), list(labels.shared), dict(unscored) or "none")
    y = np.array([labels.test_index(manifest.class_names[c.label]) for c in scored], dtype=np.int64)
    pair = {"labels": labels, "train_corpus": train_corpus, "test_corpus": test_corpus, "total_clips": len(manifest),
            "unscored": dict(unscored), "ckpt_path": str(cfg.ckpt_path), "bootstrap": _bootstrap_settings(cfg)}

    def test_into(where: Path, models: list[TrainedModel]) -> dict[str, Any]:
        results = _test(models, where, cfg, manifest, corpus_cfg, scored, y, labels, unscored=unscored,
                        train_corpus=train_corpus, test_corpus=test_corpus)
        return write_pair_report(where, results, **pair)

    if len(model_sets) == 1:  # one set of fold models: fold_<k>/ and the pair report in out
        return test_into(out, next(iter(model_sets.values())))
    per_seed = {seed: test_into(out / SEED_DIR.format(seed), models) for seed, models in model_sets.items()}
    dirs = {seed: {m.fold: out / SEED_DIR.format(seed) / f"fold_{m.fold}" for m in models}
            for seed, models in model_sets.items()}
    return write_seeds_pair_report(out, per_seed, dirs, pair["bootstrap"])


def _test(models: list[TrainedModel], out: Path, cfg: DictConfig, manifest, corpus_cfg, scored, y,
          labels: SharedLabels, *, unscored, train_corpus: str, test_corpus: str) -> list[dict[str, Any]]:
    """Each model's scores on the scored clips, written to ``out/fold_<k>``; their fold results."""
    results = []
    for model in models:
        extra: dict[str, Any] = {}
        if model.kind == "sklearn":
            scores, probabilities, extra = sklearn_scores(model, manifest, cfg.paths.cache_dir)
            order = list(manifest.clip_ids)
        else:
            scores, order = neural_scores(model, corpus_cfg, cfg)
            probabilities = True
        row_of = {cid: i for i, cid in enumerate(order)}
        s = scores[[row_of[c.clip_id] for c in scored]]
        pred = restricted_argmax(s, labels, probabilities=probabilities)
        own = np.argmax(np.where(np.isfinite(s), s, -np.inf), axis=1)
        results.append(_write_fold(out / f"fold_{model.fold}", model, scored, y, pred, own, labels, unscored,
                                   train_corpus, test_corpus, extra))
    return results


def _bootstrap_settings(cfg: DictConfig):
    from wav2emo.reports.intervals import BootstrapSettings

    section = cfg.get("report")
    return BootstrapSettings.from_config(OmegaConf.to_container(section, resolve=True) if section is not None else None)


def _write_fold(fold_dir: Path, model: TrainedModel, clips, y, pred, own, labels: SharedLabels, unscored,
                train_corpus: str, test_corpus: str, extra: dict[str, Any]) -> dict[str, Any]:
    shared = list(labels.shared)
    m = classification_metrics(y, pred, shared)
    rows = pd.DataFrame({
        "clip_id": [c.clip_id for c in clips], "file": [c.path for c in clips], "actor": [c.actor for c in clips],
        "label": y, "pred": pred,
    })
    rows["true"] = [shared[i] for i in rows["label"]]
    rows["predicted"] = [shared[i] for i in rows["pred"]]
    rows["model_argmax"] = [labels.model_classes[i] for i in own]  # over all the model's classes, unrestricted
    fold_dir.mkdir(parents=True, exist_ok=True)
    write_predictions(fold_dir, rows)
    outside = int(sum(labels.model_to_shared[c] is None for c in rows["model_argmax"]))
    result = {
        "fold": model.fold,
        "model": model.name,
        "checkpoint": str(model.path),
        "split": {"protocol": f"cross-corpus: trained on {train_corpus} (fold {model.fold}'s training speakers), "
                              f"tested on every clip of {test_corpus}",
                  "test_actors": sorted({c.actor for c in clips}), "clips": {"test": len(clips)}},
        "test": {k: m[k] for k in ("wa", "ua", "f1")},
        "test_per_class": m["per_class"],
        "test_confusion": m["confusion"],
        "class_names": shared,
        "test_clips": len(clips),
        "cross_corpus": {**labels.describe(), "train_corpus": train_corpus, "test_corpus": test_corpus,
                         "unscored_clips": dict(unscored), "unrestricted_argmax_outside_shared": outside, **extra},
    }
    write_fold_result(fold_dir, result, filename=EVAL_RESULT)
    log.info("fold %d model on %s: UA %.4f WA %.4f (%d clips)", model.fold, test_corpus, m["ua"], m["wa"], len(clips))
    return result
