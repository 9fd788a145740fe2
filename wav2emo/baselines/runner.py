"""Classic scikit-learn baselines on wav2emo's speaker folds (``python -m wav2emo.baselines``).

For each fold, with wav2emo's own fold assembly (:func:`wav2emo.data.folds.assemble_fold`):

* a ``StandardScaler`` is fitted on the training actors' clips only;
* every candidate of the model's hyper-parameter grid is fitted on the training actors and scored by UA
  (macro recall) on the dev actors; the best (the first in grid order on a tie) is chosen - test actors
  never influence any choice;
* the chosen candidate is refitted on the training actors and evaluated once on the test actors.

With ``features.normalize=speaker`` every clip's vector is first standardised with its own speaker's
statistics over all that speaker's clips (:mod:`wav2emo.features.normalize`; label-free, but it reads the
test speakers' unlabelled audio, which every fold result and the CV report declare in their protocol section).

Each fold writes what a neural fold writes (``fold_result.json``, ``predictions.csv``, ``config.yaml``,
``git.json``, ``environment.json``), so :func:`wav2emo.reports.aggregate.aggregate_folds` makes the same
cross-validation report and the two compare side by side.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from threadpoolctl import threadpool_limits

from wav2emo.baselines.inner_cv import inner_cv_scores, selection_method
from wav2emo.baselines.store import save_model
from wav2emo.data.folds import folds_to_run
from wav2emo.errors import ConfigError
from wav2emo.features.normalize import (
    normalize_by_speaker,
    normalize_mode,
    protocol_entry,
    warn_narrow_speakers,
)
from wav2emo.plain_config import to_container
from wav2emo.reports.fold_results import write_fold_result, write_predictions
from wav2emo.reports.metrics import classification_metrics
from wav2emo.reports.per_corpus import CORPUS_COLUMN, per_corpus_metrics
from wav2emo.runs.common import num_folds_of, output_dir
from wav2emo.runs.run_info import save_run_info

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

log = logging.getLogger(__name__)

MODEL_DIR = Path(__file__).resolve().parents[1] / "conf" / "baseline_model"
MONITOR = "val/ua"
# Feature kinds with one vector per clip: what the baselines take (``feature=null`` picks the one configured).
CLIP_LEVEL_KINDS = ("egemaps_functionals", "mfcc_stats")


def available_models() -> list[str]:
    return sorted(p.stem for p in MODEL_DIR.glob("*.yaml"))


def command_line_overrides(args: Sequence[str]) -> list[str]:
    """``model=svm`` on the command line picks ``conf/baseline_model/svm.yaml`` (packaged at ``model``);
    ``model=sklearn_svm``, the name ``python -m wav2emo.train`` knows it by, picks the same."""
    out = []
    for a in args:
        if a.startswith("model=") and not a.startswith("model=["):
            name = a[len("model="):]
            name = name[len("sklearn_"):] if name.startswith("sklearn_") else name
            a = "baseline_model@model=" + name
        out.append(a)
    return out


def select_feature(cfg: DictConfig) -> str:
    """The entry of the features config the baselines read: ``feature=<entry>``, or with ``feature=null`` the
    one clip-level entry (egemaps in the SSL configs, mfcc in features=mfcc)."""
    entries = {k: v for k, v in cfg.features.items() if OmegaConf.is_dict(v) or isinstance(v, Mapping)}
    feature = cfg.get("feature")
    if feature is not None:
        feature = str(feature)
        if feature not in entries:
            raise ConfigError(f"feature={feature}: not in the features config; expected one of {sorted(entries)}")
        return feature
    clip_level = [k for k, v in entries.items() if v.get("kind") in CLIP_LEVEL_KINDS]
    if len(clip_level) != 1:
        raise ConfigError(f"feature=null: the features config has {len(clip_level)} clip-level entries "
                         f"({sorted(clip_level)} of kinds {list(CLIP_LEVEL_KINDS)}) among {sorted(entries)}; "
                         f"name one with feature=<entry> (e.g. features=mfcc, or feature=egemaps)")
    return clip_level[0]


def check_model_cfg(model: Any) -> tuple[dict[str, Any], dict[str, list]]:
    """The estimator config and the grid, or a :class:`ConfigError` naming what is wrong."""
    if isinstance(model, str) or model is None:
        known = available_models()
        if model in known:
            raise ConfigError(f"model={model}: pass it to python -m wav2emo.baselines as model={model} "
                             f"(composed directly, the group override is baseline_model@model={model})")
        raise ConfigError(f"model={model}: no such baseline model; expected one of {known}")
    model = OmegaConf.to_container(model, resolve=True) if OmegaConf.is_config(model) else dict(model)
    name = model.get("name", "?")
    est = model.get("estimator")
    if not isinstance(est, Mapping) or "_target_" not in est:
        raise ConfigError(f"model={name}: model.estimator needs a _target_ (a scikit-learn estimator class)")
    grid = model.get("grid")
    if not isinstance(grid, Mapping) or not grid:
        raise ConfigError(f"model={name}: model.grid={grid!r} is empty; expected a mapping of hyper-parameter "
                         f"-> non-empty list of values, e.g. {{C: [0.1, 1, 10]}}")
    clean: dict[str, list] = {}
    for key, values in grid.items():
        values = values if isinstance(values, list) else [values]
        if not values:
            raise ConfigError(f"model={name}: model.grid.{key} is an empty list; expected at least one value")
        clean[str(key)] = values
    return dict(est), clean


def make_pipeline(estimator_cfg: Mapping[str, Any], params: Mapping[str, Any], seed: int) -> Pipeline:
    # sklearn here, not at the top: a neural run imports this module (train.py), never sklearn
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    est = instantiate(dict(estimator_cfg), _convert_="all")
    try:
        est.set_params(**params)
    except ValueError as e:
        raise ConfigError(f"model.grid: {e}") from None
    if "random_state" in est.get_params():
        est.set_params(random_state=seed)
    return Pipeline([("scaler", StandardScaler()), ("estimator", est)])


def _metrics(y: np.ndarray, p: np.ndarray, class_names: Sequence[str]) -> dict[str, float]:
    """WA, UA and macro F1 of :func:`wav2emo.reports.metrics.classification_metrics`: the numbers the neural
    models and the cross-validation report give for the same predictions."""
    m = classification_metrics(y, p, class_names)
    return {k: m[k] for k in ("wa", "ua", "f1")}


def clip_features(cache, clips) -> np.ndarray:
    """One row per clip (the cache's vector for it), in the order of ``clips``."""
    rows = cache.rows_for(clips)  # refuses features of other audio
    if len(rows) == 0:
        return np.zeros((0, int(np.prod(cache.feature_shape))), dtype=np.float64)
    return np.stack([np.asarray(cache.read(int(r)), dtype=np.float64).reshape(-1) for r in rows])


def load_fold_data(cfg: DictConfig, fold: int) -> dict[str, Any]:
    """Manifest, split and the features of the training, dev and test actors of ``fold``."""
    from wav2emo.data.corpora import load_corpus
    from wav2emo.data.folds import assemble_fold
    from wav2emo.features.combined_cache import corpus_features

    feature = select_feature(cfg)
    mode = normalize_mode(cfg)
    manifest = load_corpus(to_container(cfg.data.corpus), cache_dir=cfg.paths.cache_dir)
    assembly = assemble_fold(manifest, to_container(cfg.folds), fold)
    split = assembly.split
    cache = corpus_features(manifest, to_container(cfg.features)[feature], cfg.paths.cache_dir)
    if cache.lengths.max() > 1:
        raise ConfigError(f"feature={feature}: {cache.kind} has several frames per clip; the baselines take "
                         f"clip-level vectors (e.g. egemaps_functionals, mfcc_stats)")
    x_all, clip_row = clip_features(cache, list(manifest)), {c.clip_id: i for i, c in enumerate(manifest)}
    narrow: dict = {}
    if mode == "speaker":  # each actor's statistics over all its clips (label-free; test actors included)
        actors_all = [c.actor for c in manifest]
        x_all = normalize_by_speaker(x_all, actors_all, dtype=np.float64)
        narrow = warn_narrow_speakers(actors_all, [c.label for c in manifest], list(assembly.class_names))
    parts = {}
    for part, m in assembly.parts.items():
        clips = list(m)
        rows = np.array([clip_row[c.clip_id] for c in clips], dtype=np.int64)
        parts[part] = {
            "clips": clips,
            "x": x_all[rows] if len(rows) else np.zeros((0, x_all.shape[1])),
            "y": np.array([c.label for c in clips], dtype=np.int64),
            "actor": np.array([c.actor for c in clips], dtype=np.int64),
        }
    protocol = {**protocol_entry(mode), "feature": feature, "feature_kind": cache.kind,
                "narrow_speakers": {str(k): v for k, v in narrow.items()}}
    return {"manifest": manifest, "split": split, "cache": cache, "parts": parts, "feature": feature,
            "protocol": protocol, "class_names": [str(c) for c in assembly.class_names]}


def run_baseline_fold(cfg: DictConfig, fold: int, fold_dir: Path) -> dict[str, Any]:
    """Choose, refit and test one fold (see the module docstring); writes and returns its result."""
    # OpenMP estimators (hist_gb) spin-wait at every barrier: on a busy machine one 0.2 s fit took minutes.
    threads = cfg.get("threads", 1)
    with threadpool_limits(limits=None if threads is None else int(threads)):
        return _run_baseline_fold(cfg, fold, fold_dir)


def _run_baseline_fold(cfg: DictConfig, fold: int, fold_dir: Path) -> dict[str, Any]:
    started = time.time()
    est_cfg, grid = check_model_cfg(cfg.model)
    fold_dir = Path(fold_dir)
    fold_dir.mkdir(parents=True, exist_ok=True)
    save_run_info(cfg, fold_dir)
    data = load_fold_data(cfg, fold)
    split, parts = data["split"], data["parts"]
    tr, dev, te = parts["train"], parts["dev"], parts["test"]
    if len(tr["y"]) == 0:
        raise ConfigError(f"fold {fold}: no training clips")
    class_names = data["class_names"]  # the corpus's classes, as the neural models name them
    num_classes = len(class_names)
    seed = int(cfg.seed) + int(fold)
    from sklearn.model_selection import ParameterGrid  # not at the top: a neural run imports this module

    candidates = list(ParameterGrid(grid))
    log.info("fold %d: train actors %s, dev %s, test %s; %d candidates", fold, list(split.train),
             list(split.dev), list(split.test), len(candidates))

    dev_scores = []
    method, why = selection_method(str(cfg.model.get("selection", "dev")), tr["y"], tr["actor"], dev["y"])
    if method == "inner_cv":  # grouped by speaker over all training speakers, then refit on all of them
        tr = {k: (v + dev[k] if isinstance(v, list) else np.concatenate([v, dev[k]])) for k, v in tr.items()}
        dev = {k: v[:0] for k, v in dev.items()}
        best_i, scores, n_inner = inner_cv_scores(make_pipeline(est_cfg, {}, seed), candidates, tr["x"], tr["y"],
                                                  tr["actor"])
        dev_scores = [{"params": p, "ua": u, "inner_cv_ua": u} for p, u in zip(candidates, scores, strict=True)]
        best_score = scores[best_i]
        why += f"; {n_inner}-fold GroupKFold over {len(set(tr['actor'].tolist()))} training speakers"
    elif len(dev["y"]) == 0:
        if len(candidates) > 1:
            raise ConfigError(f"fold {fold} has no dev actors (folds.n_dev_actors=0) but model.grid has "
                             f"{len(candidates)} candidates: nothing to choose them on (test actors never are; "
                             "model.selection=inner_cv chooses by a grouped inner cross-validation)")
        best_i, best_score = 0, None
    else:
        for params in candidates:
            pipe = make_pipeline(est_cfg, params, seed).fit(tr["x"], tr["y"])
            score = _metrics(dev["y"], pipe.predict(dev["x"]), class_names)
            dev_scores.append({"params": params, **score})
            log.info("fold %d: %s dev UA %.4f", fold, params, score["ua"])
        best_i = int(np.argmax([s["ua"] for s in dev_scores]))  # first best in grid order
        best_score = dev_scores[best_i]["ua"]
    chosen = candidates[best_i]

    pipe = make_pipeline(est_cfg, chosen, seed).fit(tr["x"], tr["y"])
    # kept beside the fold's results, so the model can be tested on another corpus later (wav2emo.eval)
    estimator = save_model(fold_dir, pipe, class_names=class_names, feature=data["feature"],
                           feature_spec=to_container(cfg.features)[data["feature"]],
                           normalize=data["protocol"]["feature_normalization"], model=str(cfg.model.name))
    pred = pipe.predict(te["x"])
    scored = classification_metrics(te["y"], pred, class_names)
    test = {k: scored[k] for k in ("wa", "ua", "f1")}

    rows = pd.DataFrame({
        "clip_id": [c.clip_id for c in te["clips"]],
        "file": [c.path for c in te["clips"]],
        "actor": te["actor"],
        "label": te["y"],
        "pred": pred.astype(np.int64),
    })
    rows["true"] = [class_names[i] for i in rows["label"]]
    rows["predicted"] = [class_names[i] for i in rows["pred"]]
    if getattr(data["manifest"], "parts", None):  # several corpora (data=multi): per-corpus metrics
        rows[CORPUS_COLUMN] = [c.corpus for c in te["clips"]]
    if hasattr(pipe, "predict_proba") and len(te["y"]):
        probs = np.zeros((len(te["y"]), num_classes))
        probs[:, pipe.classes_] = pipe.predict_proba(te["x"])
        for c, name in enumerate(class_names):
            rows[f"prob_{name}"] = probs[:, c]
    write_predictions(fold_dir, rows)

    result: dict[str, Any] = {
        "fold": fold,
        "model": str(cfg.model.name),
        "split": {
            "fold": fold,
            "protocol": split.protocol,
            "train_actors": list(split.train),
            "dev_actors": list(split.dev),
            "test_actors": list(split.test),
            "clips": {k: len(v["y"]) for k, v in parts.items()},
            "caches": {data["feature"]: str(data["cache"].path)},
        },
        "protocol": {**data["protocol"], "hyperparameter_selection": f"{method} ({why})"},
        "selection": {"method": method, "why": why},
        "best_dev": {"monitor": MONITOR, "best_score": best_score, "params": chosen,
                     **({f"val/{k}": v for k, v in dev_scores[best_i].items() if k != "params"}
                        if dev_scores else {})},
        "hyperparameters": chosen,
        "dev_scores": dev_scores,
        "random_state": seed,
        "estimator": estimator,
        "test": test,
        "test_per_class": scored["per_class"],
        "test_confusion": scored["confusion"],
        "class_names": class_names,
        "test_clips": int(len(rows)),
    }
    if CORPUS_COLUMN in rows:
        result["test_per_corpus"] = per_corpus_metrics(rows[CORPUS_COLUMN], rows["label"], rows["pred"], class_names)
    result["seconds"] = round(time.time() - started, 2)
    write_fold_result(fold_dir, result)
    log.info("fold %d test: UA %.4f WA %.4f F1 %.4f with %s", fold, test["ua"], test["wa"], test["f1"], chosen)
    return result


def run_baselines(cfg: DictConfig) -> dict[str, Any]:
    """Every requested fold, then the cross-validation report when several ran."""
    from wav2emo.reports.run_report import finish_run

    check_model_cfg(cfg.model)
    folds = folds_to_run(cfg.fold, num_folds_of(cfg))
    out = output_dir(cfg)
    results = {f: run_baseline_fold(cfg, f, out / f"fold_{f}") for f in folds}
    metrics: dict[str, Any] = {f"test/{k}": v for k, v in results[folds[-1]]["test"].items()}
    metrics[MONITOR] = float(np.mean([r["best_dev"]["best_score"] or np.nan for r in results.values()]))
    metrics["val/ua_best"] = metrics[MONITOR]  # the name python -m wav2emo.train optimises by default
    summary = finish_run(out, folds, results)
    if summary is not None:
        metrics["cv"] = summary
    return metrics
