"""Training, the baselines and eval write their results through reports/fold_results and score them with
reports/metrics.classification_metrics; ``logger=none`` runs; Lightning's batch-transfer warning is silenced."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import SMALL, compose_cfg
from wav2emo.reports.fold_results import read_fold_result, read_predictions
from wav2emo.reports.metrics import classification_metrics
from wav2emo.training.tracked_metrics import build_metrics

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

ROOT = Path(__file__).resolve().parents[1]
FAST = ["model=fe_vgg_egemaps", "trainer.max_epochs=1", "model.module.net.widths=[8,16,32,64]"]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> tuple[Path, Path]:
    """Corpus and feature cache shared by this module's runs (the training run and the baselines)."""
    root = tmp_path_factory.mktemp("wire_shared")
    return root / "data", root / "cache"


@pytest.fixture(scope="module")
def multirun(tmp_path_factory, dirs):
    """``python -m wav2emo.train -m ... logger=none fold=0,1``: a real 2-fold synthetic run (fast config).

    ``logger=none`` used to fail at once (LearningRateMonitor needs a logger); the sweep is also what the
    fold-result and report checks below read.
    """
    data_dir, cache_dir = dirs
    tmp = tmp_path_factory.mktemp("wire_run")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled",
           "PYTHONWARNINGS": "default"}
    cmd = [sys.executable, "-m", "wav2emo.train", "-m", *SMALL, *FAST, "debug=fast", "logger=none", "fold=0,1",
           f"paths.data_dir={data_dir}", f"paths.cache_dir={cache_dir}", f"paths.log_dir={tmp / 'logs'}",
           f"hydra.sweep.dir={tmp / 'sweep'}"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, tmp / "sweep"


def _fold_dirs(sweep: Path) -> dict[int, Path]:
    return {int(read_fold_result(p)["fold"]): p.parent for p in sweep.rglob("fold_result.json")}


def _torchmetrics(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> dict[str, float]:
    """What the LightningModule logs as test/wa, test/ua, test/f1 for these predictions."""
    m = build_metrics(num_classes, "test/")
    m.update(torch.as_tensor(preds), torch.as_tensor(labels))
    return {k.split("/", 1)[1]: float(v) for k, v in m.compute().items()}


def test_training_fold_results_pass_the_schema_and_the_report_equals_them(multirun):
    from wav2emo.reports.aggregate import aggregate_folds

    _, sweep = multirun
    fold_dirs = _fold_dirs(sweep)  # read_fold_result raises on a missing key
    assert sorted(fold_dirs) == [0, 1]
    per_fold = {}
    for fold, fold_dir in fold_dirs.items():
        result = read_fold_result(fold_dir)
        preds = read_predictions(fold_dir)
        names = result["class_names"]
        scored = classification_metrics(preds["label"], preds["pred"], names)
        for k in ("wa", "ua", "f1"):
            assert result["test"][k] == pytest.approx(scored[k], abs=1e-12), k
        assert result["test_confusion"] == scored["confusion"]
        assert result["test_per_class"] == scored["per_class"]
        assert "loss" in result["test"]  # the trainer's test loss is kept
        # The numbers equal what training logs with torchmetrics: the switch changed no fold's metrics.
        logged = _torchmetrics(preds["label"].to_numpy(), preds["pred"].to_numpy(), len(names))
        for k in ("wa", "ua", "f1"):
            assert result["test"][k] == pytest.approx(logged[k], abs=1e-6), k
        per_fold[fold] = result["test"]
    report = aggregate_folds(sweep, expected_folds=[0, 1], write=False)
    assert [row["fold"] for row in report["per_fold"]] == [0, 1]
    for row in report["per_fold"]:
        for k in ("wa", "ua", "f1"):
            assert row[k] == per_fold[row["fold"]][k]
    for k in ("wa", "ua", "f1"):
        assert report["summary"][k]["mean"] == pytest.approx(np.mean([per_fold[f][k] for f in (0, 1)]))


def test_eval_result_passes_the_fold_result_schema(multirun, dirs, tmp_path):
    from wav2emo.runs.testing import evaluate

    _, sweep = multirun
    result = read_fold_result(_fold_dirs(sweep)[1])
    ev_dir = tmp_path / "eval"
    cfg = compose_cfg([f"ckpt_path={result['best_checkpoint']}"], ev_dir, *dirs, config_name="eval")
    ev = evaluate(cfg)
    written = read_fold_result(ev_dir / "eval_result.json")
    assert written["fold"] == 1 and written["test"] == pytest.approx(ev["test"])
    for k in ("wa", "ua", "f1"):
        assert ev["test"][k] == pytest.approx(result["test"][k], abs=1e-6), k
    preds = read_predictions(ev_dir)
    # issue 21: each clip's speaker, and the eval's speaker-bootstrap intervals in JSON and Markdown
    assert sorted(preds["actor"].unique()) == sorted(written["split"]["test_actors"])
    iv = written["test_intervals"]
    assert iv["ua"]["estimate"] == pytest.approx(written["test"]["ua"]) and iv["speakers"] == preds["actor"].nunique()
    assert "intervals over test speakers" in (ev_dir / "eval_report.md").read_text()


def test_baseline_fold_results_pass_the_schema_and_equal_the_report(tmp_path, dirs):
    from tests.test_baselines import baseline_cfg
    from wav2emo.baselines.runner import run_baselines
    from wav2emo.reports.aggregate import aggregate_folds

    out = tmp_path / "run"
    cfg = baseline_cfg(out, dirs, "model=logreg", "model.grid.C=[1.0]",
                       "fold=[0,1]")
    run_baselines(cfg)
    report = aggregate_folds(out, expected_folds=[0, 1], write=False)
    assert report["intervals"]["ua"]["estimate"] == pytest.approx(report["pooled"]["ua"])  # issue 21
    for row in report["per_fold"]:
        result = read_fold_result(out / f"fold_{row['fold']}")
        preds = read_predictions(out / f"fold_{row['fold']}")
        scored = classification_metrics(preds["label"], preds["pred"], result["class_names"])
        assert result["test_confusion"] == scored["confusion"]
        assert result["test_per_class"] == scored["per_class"]
        for k in ("wa", "ua", "f1"):
            assert row[k] == result["test"][k] == scored[k], k


def test_learning_rate_monitor_is_dropped_only_without_a_logger(tmp_path):
    from lightning.pytorch.callbacks import LearningRateMonitor
    from lightning.pytorch.loggers import CSVLogger

    from wav2emo.runs.fold_runner import without_logger_callbacks

    lr, other = LearningRateMonitor(), object()
    assert without_logger_callbacks([lr, other], []) == [other]
    logger = CSVLogger(str(tmp_path))
    assert without_logger_callbacks([lr, other], [logger]) == [lr, other]


def test_logger_none_multirun_trains_without_the_batch_transfer_warning(multirun):
    """Both folds of the ``logger=none`` sweep finished, nothing was logged, and Lightning's
    on_after_batch_transfer warning (printed on every run before) is gone."""
    proc, sweep = multirun
    assert sorted(_fold_dirs(sweep)) == [0, 1], proc.stdout[-2000:]
    assert not list(sweep.rglob("metrics.csv"))  # no logger wrote anything
    assert "on_after_batch_transfer" not in proc.stdout + proc.stderr


def test_batch_transfer_filter_matches_lightnings_warning_and_nothing_else():
    """The filter silences exactly Lightning's message (so a Lightning rewording shows up here)."""
    import warnings

    import lightning as L
    from lightning.pytorch.trainer.connectors import data_connector

    from wav2emo.runs.common import quiet_batch_transfer_warning

    class Module(L.LightningModule):
        def on_after_batch_transfer(self, batch, dataloader_idx):
            return batch

    selector = data_connector._DataHookSelector(Module(), L.LightningDataModule())
    data_connector.warning_cache.clear()  # Lightning warns once per process
    with pytest.warns(UserWarning, match="on_after_batch_transfer"):
        selector.get_instance("on_after_batch_transfer")
    data_connector.warning_cache.clear()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet_batch_transfer_warning()
        selector.get_instance("on_after_batch_transfer")
        warnings.warn("another warning", UserWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["another warning"]
