"""Aggregate the folds of a cross-validation run into one report.

Reads every ``fold_result.json`` and ``predictions.csv`` under a run or sweep directory (folds may have
run in one process, as Hydra multirun jobs, or in parallel on several machines), and writes
``cv_report.json``, ``cv_report.md``, ``confusion_matrix.png`` and ``learning_curves.png`` beside them.
A missing or failed fold is reported as missing; what exists is still aggregated.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from wav2emo.features.normalize import protocol_markdown
from wav2emo.reports.fold_results import (
    FOLD_RESULT,
    FoldResultError,
    jsonable,
    read_fold_result,
    read_predictions,
)
from wav2emo.reports.formatting import fmt, interval_lines
from wav2emo.reports.intervals import BootstrapSettings, speaker_intervals
from wav2emo.reports.metrics import classification_metrics
from wav2emo.reports.per_corpus import (
    CORPUS_COLUMN,
    per_corpus_intervals,
    per_corpus_metrics,
    render_per_corpus,
)
from wav2emo.reports.speakers import SPEAKER_COLUMN, with_speakers

log = logging.getLogger(__name__)

SUMMARY_METRICS = ("wa", "ua", "f1")
KEY_PACKAGES = ("torch", "torchaudio", "transformers", "lightning", "torchmetrics", "opensmile", "numpy")
# Protocol settings read from each fold's config.yaml (dotted key -> report name); absent means "none".
PROTOCOL_KEYS = {"finetune": "finetune", "augment": "augment", "features.normalize": "normalize"}


def find_fold_results(root: str | Path) -> dict[int, Path]:
    """fold -> directory holding its ``fold_result.json`` (the newest if a fold ran twice)."""
    found: dict[int, Path] = {}
    for p in sorted(Path(root).rglob(FOLD_RESULT), key=lambda p: p.stat().st_mtime):
        try:
            fold = int(read_fold_result(p)["fold"])
        except FoldResultError as e:  # a half-written or foreign file: say so, do not guess
            log.warning("ignoring unusable fold result: %s", e)
            continue
        found[fold] = p.parent
    return found


def aggregate_folds(
    root: str | Path, expected_folds: Iterable[int] | None = None, *, write: bool = True
) -> dict[str, Any]:
    """The cross-validation report of the folds under ``root``; ``write=False`` only reads (e.g. a notebook)."""
    root = Path(root)
    return aggregate_fold_dirs(root, find_fold_results(root), expected_folds, write=write)


def aggregate_fold_dirs(
    root: str | Path, dirs: dict[int, Path], expected_folds: Iterable[int] | None = None, *, write: bool = True,
    configuration: dict[str, Any] | None = None, bootstrap: BootstrapSettings | None = None,
) -> dict[str, Any]:
    """The cross-validation report of the given fold directories (fold -> directory), written to ``root``.

    ``configuration`` (a sweep's overrides for these folds) is recorded in the report as it is. ``bootstrap``:
    the speaker-bootstrap settings (default: the folds' ``report`` config section, else the defaults).
    """
    root = Path(root)
    results = {f: read_fold_result(d) for f, d in sorted(dirs.items())}
    tested = {f: r for f, r in results.items() if "test" in r}
    expected = sorted(set(expected_folds)) if expected_folds is not None else None
    missing = sorted(set(expected) - set(tested)) if expected is not None else []
    report: dict[str, Any] = {"root": str(root), "folds": sorted(tested), "missing_folds": missing,
                              "protocol": protocol_of({f: dirs[f] for f in results})}
    split_protocols = sorted({str(r["split"]["protocol"]) for r in results.values() if r["split"].get("protocol")})
    if split_protocols:  # the folds' own sentence: speaker-independent or "speaker-dependent", and how
        report["protocol"] = {"folds": "; ".join(split_protocols), **report["protocol"]}
    declared = declared_protocol(results)
    if declared:  # the folds' own declaration (features, normalisation, selection): its own section
        report["protocol"].update(declared)
        report["declared_by_folds"] = list(declared)
    if configuration is not None:
        report["configuration"] = configuration
    if not tested:
        report["summary"] = {}
        if write:
            _write(root, report, None, None)
        log.warning("no finished folds under %s", root)
        return report

    per_fold = []
    for f, r in tested.items():
        row = {"fold": f, "test_actors": r["split"]["test_actors"], "test_clips": r.get("test_clips")}
        row.update({m: r["test"].get(m) for m in SUMMARY_METRICS})
        row["dev_" + str(r.get("best_dev", {}).get("monitor", "score")).replace("/", "_")] = r.get(
            "best_dev", {}
        ).get("best_score")
        row["dev_ua"] = dev_ua(r)
        row["model"] = r.get("model")
        per_fold.append(row)
    summary = {}
    for m in SUMMARY_METRICS:
        vals = np.array([row[m] for row in per_fold if row[m] is not None], dtype=float)
        summary[m] = _mean_std(vals)
    report["per_fold"] = per_fold
    report["summary"] = summary
    dev = np.array([row["dev_ua"] for row in per_fold if row["dev_ua"] is not None], dtype=float)
    report["dev_summary"] = {"ua": _mean_std(dev)} if len(dev) else {}

    class_names = tested[next(iter(tested))]["class_names"]
    for f, r in tested.items():
        if list(r["class_names"]) != list(class_names):
            raise FoldResultError(
                f"{dirs[f] / FOLD_RESULT}: class_names {r['class_names']} differ from fold {next(iter(tested))}'s "
                f"{class_names}: folds of one report must score the same classes in the same order")
    preds = _pooled_predictions(dirs, tested)
    pooled = None
    if preds is not None:
        m = classification_metrics(preds["label"].to_numpy(), preds["pred"].to_numpy(), class_names)
        pooled = {"clips": m["clips"], "wa": m["wa"], "ua": m["ua"], "f1": m["f1"],
                  "confusion_matrix": m["confusion"], "per_class": m["per_class"],
                  "folds": sorted(int(f) for f in preds["fold"].unique())}
        report["pooled"] = pooled
        settings = bootstrap or bootstrap_settings_of(dirs)
        report["intervals"] = _intervals(preds, class_names, settings)
        if CORPUS_COLUMN in preds:  # several corpora in one model (data=multi): each corpus pooled over folds
            report["per_corpus"] = per_corpus_metrics(preds[CORPUS_COLUMN], preds["label"], preds["pred"],
                                                      class_names)
            if SPEAKER_COLUMN in preds:
                report["per_corpus_intervals"] = per_corpus_intervals(
                    preds[CORPUS_COLUMN], preds[SPEAKER_COLUMN], preds["label"], preds["pred"], class_names, settings)
    report["class_names"] = class_names
    report["environment"] = _environments(dirs, tested)
    if write:
        _write(root, report, class_names, dirs)
    return report


def declared_protocol(results: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """What the folds declare about their features and hyper-parameter choice (``fold_result.json``'s
    ``protocol`` and ``selection``), so a report rebuilt from the folds alone keeps it.

    Empty when no fold normalised its features and none chose hyper-parameters (nothing to declare).
    The selection method is given per fold set when folds differ (``inner_cv in folds [0, 2] / dev in folds [1]``).
    """
    protocols = [r.get("protocol") or {} for r in results.values()]
    normalised = [p for p in protocols if p.get("feature_normalization")]
    selections = {f: (r.get("selection") or {}).get("method") for f, r in results.items()}
    selections = {f: m for f, m in selections.items() if m}
    if not normalised and not selections:
        return {}
    first = normalised[0] if normalised else protocols[0]
    if selections:  # a baseline's fold declares its features whole (feature, kind, normalisation)
        declared = {k: v for k, v in first.items() if k != "hyperparameter_selection"}
    else:  # a network's fold protocol also holds finetune/augment, which the report's Protocol already gives
        keys = ("feature_normalization", "reads_test_speakers_unlabelled_audio", "note", "narrow_speakers")
        declared = {k: first[k] for k in keys if k in first}
    declared.setdefault("feature_normalization", None)
    declared.setdefault("reads_test_speakers_unlabelled_audio", False)
    if selections:
        methods = sorted(set(selections.values()))
        declared["hyperparameter_selection"] = " / ".join(
            f"{m} in folds {[f for f, v in selections.items() if v == m]}" for m in methods)
    return declared


def _mean_std(vals: np.ndarray) -> dict[str, Any]:
    return {
        "mean": float(vals.mean()) if len(vals) else float("nan"),
        "std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0,  # sample std over folds
        "per_fold": vals.tolist(),
    }


def dev_ua(result: dict[str, Any]) -> float | None:
    """The dev actors' UA of the chosen checkpoint (the monitored score when the monitor is UA)."""
    dev = result.get("best_dev") or {}
    if dev.get("monitor") == "val/ua" and dev.get("best_score") is not None:
        return float(dev["best_score"])
    value = dev.get("val/ua")
    return float(value) if isinstance(value, (int, float)) else None


def _config_value(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(cfg, dict) or part not in cfg:
            return None
        cfg = cfg[part]
    return cfg


def protocol_of(dirs: dict[int, Path]) -> dict[str, Any]:
    """Finetune, augment and normalisation settings from the folds' ``config.yaml`` (absent = "none").

    One value per setting when all folds agree, else ``{"per_fold": {fold: value}}``: a report never
    claims one protocol for folds that ran with different ones.
    """
    per_fold: dict[int, dict[str, Any]] = {}
    for f, d in sorted(dirs.items()):
        path = Path(d) / "config.yaml"
        cfg: Any = {}
        if path.is_file():
            try:
                cfg = yaml.safe_load(path.read_text()) or {}
            except yaml.YAMLError as e:
                log.warning("fold %d: unreadable %s (%s); its protocol is reported as unknown", f, path, e)
                cfg = None
        else:
            log.warning("fold %d: no config.yaml in %s; its protocol is reported as unknown", f, d)
            cfg = None
        per_fold[f] = {
            name: ("unknown" if cfg is None else (lambda v: "none" if v is None else v)(_config_value(cfg, key)))
            for key, name in PROTOCOL_KEYS.items()
        }
    out: dict[str, Any] = {}
    for name in PROTOCOL_KEYS.values():
        values = {f: p[name] for f, p in per_fold.items()}
        distinct = {json.dumps(v, sort_keys=True, default=str) for v in values.values()}
        out[name] = next(iter(values.values())) if len(distinct) == 1 else {"per_fold": values}
    return out


def describe_setting(value: Any) -> str:
    """A one-line form of a protocol setting: ``none``, ``top_k (k=4, lr_backbone=1e-05)``."""
    if isinstance(value, dict) and "per_fold" in value:
        return "differs between folds: " + "; ".join(
            f"fold {f}: {describe_setting(v)}" for f, v in value["per_fold"].items())
    if isinstance(value, dict):
        name = value.get("name")
        rest = ", ".join(f"{k}={v}" for k, v in value.items() if k != "name" and not isinstance(v, (dict, list)))
        if name is not None:
            return f"{name} ({rest})" if rest else str(name)
        return rest or "set (see cv_report.json)"
    return str(value)


def _environments(dirs: dict[int, Path], tested: dict[int, Any]) -> dict[str, Any] | None:
    """What the folds ran with (versions, GPUs): one entry when all folds agree, else per fold."""
    envs = {}
    for f in tested:
        p = dirs[f] / "environment.json"
        if p.exists():
            envs[f] = json.loads(p.read_text())
    if not envs:
        return None
    first = next(iter(envs.values()))
    if all(e == first for e in envs.values()):
        return first
    return {"per_fold": {str(f): e for f, e in envs.items()}}


def _pooled_predictions(dirs: dict[int, Path], tested: dict[int, Any]) -> pd.DataFrame | None:
    """Every tested fold's predictions with a ``fold`` column; the ``actor`` (speaker) column only when every
    fold has one (else the intervals say which fold lacks it)."""
    frames, no_speakers = [], []
    for f in tested:
        try:
            df = read_predictions(dirs[f])
        except FoldResultError as e:
            log.warning("fold %d: no usable predictions, left out of the pooled metrics: %s", f, e)
            continue
        if not len(df):
            log.warning("fold %d: %s holds no test clips (a fold without test speakers?): nothing of it is pooled",
                        f, dirs[f] / "predictions.csv")
            continue
        try:
            df = with_speakers(df, tested[f], dirs[f] / "predictions.csv")
        except FoldResultError as e:
            no_speakers.append(str(e))
        df["fold"] = f
        frames.append(df)
    if not frames:
        return None
    out = pd.concat(frames, ignore_index=True)
    if no_speakers:
        out = out.drop(columns=[SPEAKER_COLUMN], errors="ignore")
        out.attrs["no_speakers"] = no_speakers[0]
    return out


def bootstrap_settings_of(dirs: dict[int, Path]) -> BootstrapSettings:
    """The ``report`` section of the first fold's saved ``config.yaml``; the defaults when there is none."""
    cfg = _saved_config(dirs)
    section = cfg.get("report") if isinstance(cfg, dict) else None
    return BootstrapSettings.from_config(section if isinstance(section, dict) else None)


def _saved_config(dirs: dict[int, Path]) -> dict[str, Any]:
    for d in dirs.values():
        try:
            cfg = yaml.safe_load((Path(d) / "config.yaml").read_text())
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(cfg, dict):
            return cfg
    return {}


def _intervals(preds: pd.DataFrame, class_names: list[str], settings: BootstrapSettings) -> dict[str, Any]:
    """Speaker-bootstrap intervals of the pooled predictions, or why there are none."""
    if SPEAKER_COLUMN not in preds:
        return {"unavailable": preds.attrs.get("no_speakers", "predictions carry no speaker ids")}
    return speaker_intervals(preds[SPEAKER_COLUMN].astype(str), preds["label"], preds["pred"], class_names, settings)


def _write(root: Path, report: dict[str, Any], class_names, dirs) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "cv_report.json").write_text(json.dumps(jsonable(report), indent=2) + "\n")
    (root / "cv_report.md").write_text(render_markdown(report) + "\n")
    if class_names and "pooled" in report:
        from wav2emo.reports.plots import plot_confusion_matrix, plot_learning_curves

        plot_confusion_matrix(
            np.asarray(report["pooled"]["confusion_matrix"]), class_names, root / "confusion_matrix.png",
            title=f"Pooled test confusion over folds {report['folds']}",
        )
        if dirs:
            plot_learning_curves({f: d for f, d in dirs.items() if f in report["folds"]}, root / "learning_curves.png")


def render_markdown(report: dict[str, Any]) -> str:
    lines = [f"# Cross-validation report\n\nFolds: {report['folds']}"]
    conf = report.get("configuration")
    if conf and conf.get("overrides"):
        lines.append("\nConfiguration: `" + " ".join(f"{k}={v}" for k, v in conf["overrides"].items()) + "`")
    if report["missing_folds"]:
        lines.append(f"\n**Missing folds: {report['missing_folds']}** (failed, still running or not run).")
    declared = report.get("declared_by_folds") or []
    settings = {k: v for k, v in (report.get("protocol") or {}).items() if k not in declared}
    if settings:
        lines += ["\n## Protocol\n"]
        lines += [f"- {name}: {describe_setting(v)}" for name, v in settings.items()]
    if not report.get("summary"):
        return "\n".join(lines + ["\nNo finished folds."])
    s = report["summary"]
    lines += [
        "\n## Summary (test actors; checkpoint chosen on dev actors)\n",
        "| metric | mean | std (over folds) |",
        "| --- | --- | --- |",
    ]
    for m, name in (("wa", "WA (accuracy)"), ("ua", "UA (macro recall)"), ("f1", "macro F1")):
        lines.append(f"| {name} | {fmt(s[m]['mean'])} | {fmt(s[m]['std'])} |")
    lines += ["\n## Per fold\n", "| fold | test actors | clips | WA | UA | macro F1 |", "| --- | --- | --- | --- | --- | --- |"]
    for r in report["per_fold"]:
        lines.append(
            f"| {r['fold']} | {', '.join(map(str, r['test_actors']))} | {r['test_clips']} | "
            f"{fmt(r['wa'])} | {fmt(r['ua'])} | {fmt(r['f1'])} |"
        )
    if "pooled" in report:
        p = report["pooled"]
        lines += [
            f"\n## Pooled over all {p['clips']} test clips\n",
            *([f"**Only folds {p['folds']} have usable predictions.csv files; the others are left out here.**\n"]
              if p.get("folds") is not None and p["folds"] != report["folds"] else []),
            f"WA {p['wa']:.4f} · UA {p['ua']:.4f} · macro F1 {p['f1']:.4f}\n",
            "| class | precision | recall | F1 | support |",
            "| --- | --- | --- | --- | --- |",
        ]
        for r in p["per_class"]:
            lines.append(f"| {r['class']} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | {r['support']} |")
        names = report["class_names"]
        lines += ["\nConfusion matrix (rows = true, columns = predicted):\n",
                  "| | " + " | ".join(n[:4] for n in names) + " |",
                  "| --- " * (len(names) + 1) + "|"]
        for n, row in zip(names, p["confusion_matrix"], strict=True):
            lines.append(f"| {n} | " + " | ".join(map(str, row)) + " |")
    lines += interval_lines(report.get("intervals"), "intervals over test speakers (pooled predictions)")
    if report.get("per_corpus"):
        lines += render_per_corpus(report["per_corpus"], "Per corpus (pooled over folds)",
                                   report.get("per_corpus_intervals"))
    if declared:
        lines += ["", protocol_markdown({k: report["protocol"][k] for k in declared})]
    env = report.get("environment")
    if env and "packages" in env:
        pk = env["packages"]
        stack = ", ".join(f"{k} {v}" for k, v in pk.items() if v and k in KEY_PACKAGES)
        lines += [f"\n## Environment\n\nPython {env['python']}, {stack}; torch build {env['torch_build']}; "
                  f"{', '.join(env['gpus']) if env['gpus'] else 'no GPU'}."]
    elif env:
        lines += ["\n## Environment\n\nThe folds ran with different environments: see cv_report.json."]
    return "\n".join(lines)
