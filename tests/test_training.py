"""End-to-end training on the synthetic corpus with the tiny backbone: protocol, leakage, resume, eval."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import open_dict

from tests.helpers import CONF_DIR, SMALL, compose_cfg

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="session")
def shared_dirs(tmp_path_factory):
    """Corpus and feature cache shared by every training test (built once, like real runs share them)."""
    root = tmp_path_factory.mktemp("shared")
    return root / "data", root / "cache"


def small_cfg(tmp_path, shared_dirs, *extra: str):
    data_dir, cache_dir = shared_dirs
    return compose_cfg([*SMALL, *extra], tmp_path, data_dir, cache_dir)


@pytest.fixture(scope="session")
def trained_fold(tmp_path_factory, shared_dirs):
    """fe_vgg_egemaps trained on fold 0 for a few epochs; reused by several tests."""
    from wav2emo.runs.fold_runner import run_fold

    out = tmp_path_factory.mktemp("run")
    cfg = small_cfg(out, shared_dirs, "model=fe_vgg_egemaps", "model.module.optimizer.lr=1e-3", "trainer.max_epochs=12")
    result = run_fold(cfg, 0, out / "fold_0")
    return cfg, result, out / "fold_0"


def test_every_config_group_composes_and_instantiates(tmp_path, shared_dirs):
    from hydra.utils import instantiate

    for model in sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml")):
        cfg = small_cfg(tmp_path, shared_dirs, f"model={model}")
        if model.startswith("sklearn_"):  # scikit-learn baselines (routed to wav2emo.baselines.runner)
            from sklearn.base import BaseEstimator

            assert isinstance(instantiate(cfg.model.estimator, _convert_="all"), BaseEstimator), model
            continue
        with open_dict(cfg):
            net = cfg.model.module.net
            if "in_channels" in net.keys():
                net.in_channels = 13 if cfg.model.get("layers") == "all" else 12
            if "feature_dim" in net.keys():
                net.feature_dim = 768
        module = instantiate(cfg.model.module, _convert_="partial")
        assert isinstance(module, torch.nn.Module), model
    for group in (
        "trainer", "logger", "callbacks", "features", "folds", "data", "experiment", "debug", "loader", "speed",
        "datamodule",
    ):
        for option in sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml")):
            cfg = small_cfg(tmp_path, shared_dirs, f"{group}={option}")
            if group in ("experiment", "debug", "speed"):  # global overrides: they must change something
                base = small_cfg(tmp_path, shared_dirs)
                assert cfg != base, f"{group}={option} changes nothing"
            else:
                assert cfg[group] is not None
    cfg = small_cfg(tmp_path, shared_dirs, "trainer=cpu", "logger=tensorboard")
    trainer = instantiate(cfg.trainer, logger=[instantiate(v) for v in cfg.logger.values()])
    assert trainer.max_epochs == 100 and trainer.gradient_clip_val == 10


def chance_ua_quantile(labels, q: float = 0.999, draws: int = 20000, num_classes: int = 8) -> float:
    """The ``q`` quantile of the UA that guessing (uniformly random predictions) reaches on these labels.

    A threshold derived from the test set's size and class balance, not from what one machine's float
    trajectory happened to reach: a model above it beats chance at p < 1 - q.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(0)
    preds = rng.integers(0, num_classes, size=(draws, len(labels)))
    present = np.unique(labels)
    recalls = np.stack([(preds[:, labels == c] == c).mean(1) for c in present], axis=1)
    return float(np.quantile(recalls.mean(1), q))


@pytest.mark.learning
def test_demo_learns_synthetic_emotions_on_held_out_actors(trained_fold):
    _, result, fold_dir = trained_fold
    # The test actors were never seen in training or selection; 40 test clips, 5 per emotion.
    assert result["test_clips"] == 5 * 8
    labels = pd.read_csv(fold_dir / "predictions.csv")["label"]
    threshold = chance_ua_quantile(labels) + 0.1  # chance at p < 0.001, plus a clear margin
    assert result["test"]["ua"] > threshold, (result["test"], threshold)


def test_no_test_actor_in_train_or_dev(trained_fold):
    _, result, fold_dir = trained_fold
    split = result["split"]
    train, dev, test = set(split["train_actors"]), set(split["dev_actors"]), set(split["test_actors"])
    assert test == {2, 5, 14, 15, 16}
    assert not (train & test) and not (dev & test) and not (train & dev)
    assert len(dev) == 2
    preds = pd.read_csv(fold_dir / "predictions.csv")
    assert set(preds["actor"]) == test
    assert all(Path(f).name.startswith(c) for f, c in zip(preds["file"], preds["clip_id"], strict=True))
    assert {"true", "predicted", "label", "pred"} <= set(preds.columns)
    probs = preds[[c for c in preds.columns if c.startswith("prob_")]].to_numpy()
    assert probs.shape == (40, 8) and np.allclose(probs.sum(1), 1, atol=1e-4)


def test_egemaps_scaler_is_fitted_on_training_actors_only(trained_fold):
    from wav2emo.runs.build import build_datamodule

    cfg, result, _ = trained_fold
    dm = build_datamodule(cfg, 0)
    dm.setup("fit")
    cache = dm.caches["egemaps"]
    train_ids = [c.clip_id for c in dm.manifest if c.actor in set(result["split"]["train_actors"])]
    all_ids = [c.clip_id for c in dm.manifest]
    x_train = np.stack([cache.read(cache.index_of(i))[0] for i in train_ids]).astype(np.float64)
    x_all = np.stack([cache.read(cache.index_of(i))[0] for i in all_ids]).astype(np.float64)
    mean, std = dm.egemaps_stats()
    np.testing.assert_allclose(mean, x_train.mean(0), rtol=1e-6)
    np.testing.assert_allclose(std, x_train.std(0), rtol=1e-6)
    assert not np.allclose(mean, x_all.mean(0), rtol=1e-3)
    # ...and the statistics travel with the checkpoint.
    ckpt = torch.load(result["best_checkpoint"], map_location="cpu", weights_only=False)
    saved = [v for k, v in ckpt["state_dict"].items() if k.endswith("mean") and v.numel() == 88]
    assert saved and np.allclose(saved[0].double().numpy(), mean, rtol=1e-5)


def test_a_checkpoints_plan_takes_its_statistics_from_the_checkpoint(trained_fold):
    """A module rebuilt from a checkpoint's plan (eval, predict, cross-corpus) gets no statistics from the data
    module: it refuses to standardise until the checkpoint's state dict brings the training actors' own."""
    from wav2emo.runs.build import build_datamodule, build_module
    from wav2emo.runs.plan import fold_plan

    cfg, result, _ = trained_fold
    dm = build_datamodule(cfg, 0)
    dm.setup("fit")
    trained = build_module(cfg, dm)
    assert trained.net.egemaps_norm.is_fitted
    plan = fold_plan(cfg, for_training=False)
    assert not plan.trains and fold_plan(cfg).trains
    module = build_module(plan, dm)
    assert not module.net.egemaps_norm.is_fitted
    batch = next(iter(dm.val_dataloader()))
    with pytest.raises(RuntimeError, match="not fitted"):
        module.eval()(batch)
    ckpt = torch.load(result["best_checkpoint"], map_location="cpu", weights_only=False)
    module.load_state_dict(ckpt["state_dict"])
    assert module.net.egemaps_norm.is_fitted
    np.testing.assert_allclose(module.net.egemaps_norm.mean.double().numpy(), dm.egemaps_stats()[0], rtol=1e-5)


def test_checkpoint_is_chosen_by_dev_ua(trained_fold):
    _, result, fold_dir = trained_fold
    metrics = pd.read_csv(next(fold_dir.glob("csv/version_*/metrics.csv")))
    val = metrics.dropna(subset=["val/ua"]).groupby("epoch")["val/ua"].first()
    best_epoch = int(val.idxmax())  # first epoch reaching the best dev UA
    assert result["best_dev"]["monitor"] == "val/ua"
    assert result["best_dev"]["best_score"] == pytest.approx(val.max(), abs=1e-6)
    assert f"epoch{best_epoch:03d}-" in Path(result["best_checkpoint"]).name
    assert result["evaluated_checkpoint"] == result["best_checkpoint"]
    assert "test/ua" not in " ".join(metrics.columns[metrics.columns.str.startswith("val")])


def test_eval_of_saved_checkpoint_reproduces_test_metrics(trained_fold, tmp_path, shared_dirs):
    from wav2emo.runs.testing import evaluate

    _, result, _ = trained_fold
    data_dir, cache_dir = shared_dirs
    cfg = compose_cfg([f"ckpt_path={result['best_checkpoint']}"], tmp_path, data_dir, cache_dir, config_name="eval")
    ev = evaluate(cfg)
    for k in ("wa", "ua", "f1", "loss"):
        assert ev["test"][k] == pytest.approx(result["test"][k], abs=1e-5), k
    assert (tmp_path / "predictions.csv").exists()
    bad = compose_cfg([f"ckpt_path={result['best_checkpoint']}", "fold=1"], tmp_path, data_dir, cache_dir, "eval")
    with pytest.raises(ValueError, match="trained for fold 0"):
        evaluate(bad)


def _epoch_metrics(fold_dir: Path) -> dict[int, tuple[float, float, float]]:
    """(train loss, val UA, val loss) per epoch, over every CSV version a fold directory holds."""
    frames = [pd.read_csv(p) for p in sorted(fold_dir.glob("csv/version_*/metrics.csv"))]
    m = pd.concat(frames)
    train = m.dropna(subset=["train/loss"]).groupby("epoch")["train/loss"].first()
    val = m.dropna(subset=["val/ua"]).groupby("epoch")[["val/ua", "val/loss"]].first()
    return {int(e): (float(train[e]), float(val.loc[e, "val/ua"]), float(val.loc[e, "val/loss"])) for e in val.index}


RESUME = ["model=fe_vgg_egemaps", "model.module.optimizer.lr=1e-3", "model.module.net.widths=[8,16,32,64]",
          "callbacks.early_stopping=null", "seed=3"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, shared_dirs):
    from wav2emo.runs.fold_runner import run_fold

    out = tmp_path_factory.mktemp("uninterrupted")
    result = run_fold(small_cfg(out, shared_dirs, *RESUME, "trainer.max_epochs=4"), 0, out / "fold_0")
    return result, out / "fold_0"


@pytest.fixture(scope="module")
def first_half(tmp_path_factory, shared_dirs):
    from wav2emo.runs.fold_runner import run_fold

    out = tmp_path_factory.mktemp("first_half")
    result = run_fold(small_cfg(out, shared_dirs, *RESUME, "trainer.max_epochs=2"), 0, out / "fold_0")
    return result, out / "fold_0"


def _assert_same_run(resumed: dict, resumed_dir: Path, full: dict, full_dir: Path) -> None:
    after = torch.load(resumed_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert after["epoch"] == 3 and resumed["epochs_trained"] == 4  # last.ckpt holds the last epoch
    assert len(resumed["epoch_seconds"]) == 2  # only the two new epochs ran
    got, want = _epoch_metrics(resumed_dir), _epoch_metrics(full_dir)
    assert sorted(want) == [0, 1, 2, 3] and {2, 3} <= set(got)
    for epoch in got:  # the same trajectory: weights, optimizer, RNG and sampler order were restored
        assert got[epoch] == pytest.approx(want[epoch], abs=1e-5), epoch
    for k in ("wa", "ua", "f1", "loss"):
        assert resumed["test"][k] == pytest.approx(full["test"][k], abs=1e-5), k
    assert resumed["best_dev"]["best_score"] == pytest.approx(full["best_dev"]["best_score"], abs=1e-6)
    assert Path(resumed["best_checkpoint"]).name == Path(full["best_checkpoint"]).name


@pytest.mark.learning
def test_last_checkpoint_is_the_last_epoch_whatever_dev_ua_did(first_half):
    """last.ckpt is written after every epoch (Lightning 2.6 refreshed it only when dev UA improved)."""
    result, fold_dir = first_half
    last = torch.load(fold_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["epoch"] == 1 and result["epochs_trained"] == 2
    assert "wav2emo_rng_states" in last and "wav2emo_val_best" in last


@pytest.mark.learning
def test_resume_from_checkpoint_reproduces_the_uninterrupted_run(uninterrupted, first_half, tmp_path, shared_dirs):
    """A finished 2-epoch fold continued to 4 epochs (ckpt_path=) equals the 4-epoch run, in a new directory."""
    from wav2emo.runs.fold_runner import run_fold

    full, full_dir = uninterrupted
    _, half_dir = first_half
    last = half_dir / "checkpoints" / "last.ckpt"
    before = sorted(p.name for p in (half_dir / "checkpoints").iterdir())
    cfg = small_cfg(tmp_path, shared_dirs, *RESUME, "trainer.max_epochs=4", f"ckpt_path={last}")
    resumed = run_fold(cfg, 0, tmp_path / "fold_0")
    assert resumed["resumed_from"] == str(tmp_path / "fold_0" / "checkpoints" / "last.ckpt")
    _assert_same_run(resumed, tmp_path / "fold_0", full, full_dir)
    assert sorted(p.name for p in (half_dir / "checkpoints").iterdir()) == before  # the old run is untouched


@pytest.mark.learning
def test_interrupted_fold_continues_in_place(uninterrupted, first_half, tmp_path, shared_dirs):
    """A fold directory with checkpoints but no fold_result.json was interrupted: running it again continues it."""
    import shutil

    from wav2emo.reports.fold_results import FOLD_RESULT
    from wav2emo.runs.fold_runner import run_fold

    full, full_dir = uninterrupted
    fold_dir = tmp_path / "fold_0"
    shutil.copytree(first_half[1], fold_dir)
    (fold_dir / FOLD_RESULT).unlink()  # as if killed after epoch 2
    ckpts = fold_dir / "checkpoints"
    for f in ckpts.glob("*.ckpt"):  # the copy's checkpoint state must name the copy's folder
        ck = torch.load(f, map_location="cpu", weights_only=False)
        for state in ck["callbacks"].values():
            for key in ("dirpath", "best_model_path", "kth_best_model_path", "last_model_path"):
                if isinstance(state.get(key), str):
                    state[key] = state[key].replace(str(first_half[1]), str(fold_dir))
            if "best_k_models" in state:
                state["best_k_models"] = {
                    k.replace(str(first_half[1]), str(fold_dir)): v for k, v in state["best_k_models"].items()
                }
        torch.save(ck, f)
    resumed = run_fold(small_cfg(tmp_path, shared_dirs, *RESUME, "trainer.max_epochs=4"), 0, fold_dir)
    assert resumed["resumed_from"] == str(ckpts / "last.ckpt")
    _assert_same_run(resumed, fold_dir, full, full_dir)


def test_finished_fold_is_reported_not_retrained(trained_fold, shared_dirs, caplog, capsys):
    """Re-running into a directory whose fold has fold_result.json reports it (and prints its summary)."""
    import logging

    from wav2emo.runs.experiment import train

    cfg, result, fold_dir = trained_fold
    mtime = (fold_dir / "fold_result.json").stat().st_mtime_ns
    again = small_cfg(fold_dir.parent, shared_dirs, "model=fe_vgg_egemaps", "model.module.optimizer.lr=1e-3",
                      "trainer.max_epochs=12", f"ckpt_path={fold_dir.parent}")
    with caplog.at_level(logging.INFO, logger="wav2emo"):
        metrics = train(again)
    assert metrics["test/ua"] == result["test"]["ua"]
    assert (fold_dir / "fold_result.json").stat().st_mtime_ns == mtime
    assert "fold 0 is finished" in caplog.text
    out = capsys.readouterr().out
    assert "Fold 0 (fe_vgg_egemaps)" in out and f"test UA {result['test']['ua']:.4f}" in out


def test_ckpt_path_of_another_fold_or_for_several_folds_is_refused(trained_fold, tmp_path, shared_dirs):
    from wav2emo.runs.experiment import train
    from wav2emo.runs.fold_runner import run_fold

    _, result, fold_dir = trained_fold
    last = fold_dir / "checkpoints" / "last.ckpt"
    with pytest.raises(ValueError, match="trained for fold 0, not fold 3"):
        run_fold(small_cfg(tmp_path, shared_dirs, "model=fe_vgg_egemaps", f"ckpt_path={last}"), 3, tmp_path / "f")
    with pytest.raises(ValueError, match="continues one fold's training"):
        train(small_cfg(tmp_path, shared_dirs, "model=fe_vgg_egemaps", f"ckpt_path={last}", "fold=all"))
    with pytest.raises(FileNotFoundError, match="no such checkpoint file or run directory"):
        train(small_cfg(tmp_path, shared_dirs, f"ckpt_path={tmp_path / 'nope.ckpt'}"))


@pytest.mark.parametrize(
    ("fold", "message"),
    [
        ("abc", "'abc' is not a fold index; expected a fold index 0..4"),
        ([0, 0], "fold 0 is listed more than once"),
        (7, "fold 7 does not exist \\(5 folds\\)"),
        (True, "True is not a fold index"),
        ([], "the list is empty"),
        (1.5, "1.5 is not a fold index"),
    ],
)
def test_bad_fold_values_are_refused_with_a_clear_message(fold, message):
    from wav2emo.data.folds import folds_to_run

    with pytest.raises(ValueError, match=message):
        folds_to_run(fold, 5)


def test_good_fold_values():
    from omegaconf import OmegaConf

    from wav2emo.data.folds import folds_to_run

    assert folds_to_run("all", 5) == folds_to_run(None, 5) == [0, 1, 2, 3, 4]
    assert folds_to_run(3, 5) == folds_to_run("3", 5) == [3]
    assert folds_to_run(OmegaConf.create([4, 1]), 5) == [4, 1]


def test_eval_of_a_fold_that_does_not_exist_says_so(trained_fold, tmp_path, shared_dirs):
    from wav2emo.runs.testing import evaluate

    _, result, _ = trained_fold
    data_dir, cache_dir = shared_dirs
    cfg = compose_cfg([f"ckpt_path={result['best_checkpoint']}", "fold=7"], tmp_path, data_dir, cache_dir, "eval")
    with pytest.raises(ValueError, match="fold 7 does not exist"):
        evaluate(cfg)


@pytest.mark.learning
def test_same_seed_same_metrics_with_a_fresh_and_a_warm_cache(tmp_path, shared_dirs):
    """The first run of a config (building the tiny backbone and the cache) and a later one give the same numbers.

    Building the tiny backbone reseeds the global RNG; the fold used to be seeded before that, so a
    fresh-cache run initialised its model from other random numbers than a warm-cache run.
    """
    from wav2emo.runs.fold_runner import run_fold

    data_dir, _ = shared_dirs
    fresh_cache = tmp_path / "cache"
    runs = []
    for name in ("fresh", "warm"):
        cfg = compose_cfg([*SMALL, "model=fe_vgg", "model.module.optimizer.lr=1e-3", "trainer.max_epochs=2",
                           "model.module.net.widths=[8,16,32,64]", "seed=7"], tmp_path / name, data_dir, fresh_cache)
        runs.append(run_fold(cfg, 1, tmp_path / name / "fold_1"))
    assert runs[0]["test"] == runs[1]["test"]
    assert runs[0]["best_dev"]["best_score"] == runs[1]["best_dev"]["best_score"]
    a, b = (torch.load(r["best_checkpoint"], map_location="cpu", weights_only=False)["state_dict"] for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_two_fold_multirun_writes_the_aggregate(tmp_path, shared_dirs):
    data_dir, cache_dir = shared_dirs
    sweep = tmp_path / "sweep"
    cmd = [
        sys.executable, "-m", "wav2emo.train", "-m", "fold=0,3", *SMALL, "model=egemaps_mlp", "trainer.max_epochs=3",
        f"paths.data_dir={data_dir}", f"paths.cache_dir={cache_dir}", f"hydra.sweep.dir={sweep}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=CONF_DIR.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((sweep / "cv_report.json").read_text())
    assert report["folds"] == [0, 3] and report["missing_folds"] == []
    output = proc.stdout + proc.stderr
    assert output.count("Seed set to") == 2, output[-3000:]  # each log record printed once (one per fold job)
    assert output.count("fold 3: epoch 3/3, train loss") == 1  # one line per epoch without a progress bar
    assert report["pooled"]["clips"] == 2 * 5 * 8
    assert np.array(report["pooled"]["confusion_matrix"]).sum() == 80
    for name in ("cv_report.md", "confusion_matrix.png", "learning_curves.png"):
        assert (sweep / name).stat().st_size > 0, name
    # A sweep where one fold is missing still aggregates and says what is missing.
    from wav2emo.reports.aggregate import aggregate_folds

    partial = aggregate_folds(sweep, expected_folds=[0, 1, 3])
    assert partial["missing_folds"] == [1] and partial["folds"] == [0, 3]
    assert "Missing folds: [1]" in (sweep / "cv_report.md").read_text()


def test_wandb_offline_one_closed_run_per_fold(tmp_path, shared_dirs, monkeypatch):
    """logger=wandb: without an API key the run is offline, named per fold, grouped, and closed at the end."""
    import wandb

    from wav2emo.runs.fold_runner import run_fold

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = small_cfg(tmp_path, shared_dirs, "model=egemaps_mlp", "trainer.max_epochs=2", "logger=wandb")
    result = run_fold(cfg, 2, tmp_path / "fold_2")
    assert wandb.run is None  # closed before the next fold could start
    runs = list(tmp_path.rglob("offline-run-*"))
    assert len(runs) == 1, runs
    # The offline run's record file holds what was logged (protobuf, keys and names in plain bytes).
    record = next(runs[0].glob("run-*.wandb")).read_bytes()
    for needle in (b"test/confusion_matrix", b"test/per_class", b"test/ua", b"egemaps_mlp-fold2", b"val/ua"):
        assert needle in record, needle
    tables = list((runs[0] / "files" / "media" / "table").rglob("*.table.json"))
    assert len(tables) == 2  # confusion matrix and per-class table
    cm = next(json.loads(t.read_text()) for t in tables if "confusion" in t.name)
    assert sum(sum(row[1:]) for row in cm["data"]) == result["test_clips"]
    assert (tmp_path / "fold_2" / "csv").is_dir()  # CSV logging stays on beside W&B


@pytest.mark.slow
def test_readme_demo_end_to_end(tmp_path):
    """The README's demo command, as a user runs it (a few minutes on 2 cores)."""
    import os

    env = dict(os.environ, WAV2EMO_DATA_DIR=str(tmp_path / "data"), WAV2EMO_CACHE_DIR=str(tmp_path / "cache"),
               WAV2EMO_LOG_DIR=str(tmp_path / "outputs"))
    proc = subprocess.run([sys.executable, "-m", "wav2emo.train", "experiment=demo"], capture_output=True,
                          text=True, timeout=1500, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Cross-validation report" in proc.stdout
    report = json.loads(next((tmp_path / "outputs").rglob("cv_report.json")).read_text())
    assert report["folds"] == [0, 1, 2, 3, 4] and report["pooled"]["clips"] == 24 * 16
    assert report["summary"]["ua"]["mean"] >= 0.5  # chance is 0.125; the demo's promise is 0.5


def test_resident_split_serves_the_same_batches_as_the_loader(trained_fold):
    """The GPU-resident fast path (here on the CPU) feeds exactly what the memory-mapped loader feeds."""
    from wav2emo.feeding.batches import ResidentSplit
    from wav2emo.runs.build import build_datamodule

    cfg, _, _ = trained_fold
    dm = build_datamodule(cfg, 0)
    dm.setup("fit")
    ds = dm.dataset("test")
    dm.eval_batch_size = 16  # several batches, each padded to its own longest clip
    resident = list(ResidentSplit(ds, batch_size=16, shuffle=False, device=torch.device("cpu")))
    loader = list(dm.test_dataloader())
    assert len(resident) == len(loader) == 3
    r = {k: torch.cat([b[k] for b in resident]) for k in ("label", "egemaps")}
    lo = {k: torch.cat([b[k] for b in loader]) for k in ("label", "egemaps")}
    for k in r:
        assert torch.equal(r[k], lo[k]), k
    for br, bl in zip(resident, loader, strict=True):
        assert br["clip_id"] == bl["clip_id"]
        t = int(bl["ssl_mask"].sum(1).max())
        assert torch.equal(br["ssl_mask"][:, :t], bl["ssl_mask"]) and torch.equal(br["ssl"][:, :, :t], bl["ssl"])
    shuffled = [b["clip_id"] for b in ResidentSplit(ds, 16, shuffle=True, device=torch.device("cpu"), seed=1)]
    assert sorted(sum(shuffled, [])) == sorted(sum((b["clip_id"] for b in loader), []))
    # frames_multiple: every batch padded up to a multiple of 16 frames, the mask still marks real frames.
    rounded = list(ResidentSplit(ds, batch_size=16, shuffle=False, device=torch.device("cpu"), frames_multiple=16))
    for br, bl in zip(rounded, loader, strict=True):
        t = bl["ssl"].shape[2]
        assert br["ssl"].shape[2] == -(-t // 16) * 16
        assert torch.equal(br["ssl"][:, :, :t], bl["ssl"]) and not br["ssl"][:, :, t:].any()
        assert torch.equal(br["ssl_mask"].sum(1), bl["ssl_mask"].sum(1))


@pytest.mark.parametrize("device", ["meta", "cuda"])
def test_collate_makes_only_the_padded_tensors_on_the_device_with_the_host_values(device):
    """A resident split is padded on its device, clip by clip: the padded inputs there (the values the host
    collate gives), labels, lengths and masks on the host (batches are cropped without a device read)."""
    from wav2emo.feeding.input_strategies import collate

    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a GPU")
    g = torch.Generator().manual_seed(0)
    items = [{"label": i % 3, "actor": i, "clip_id": f"c{i}", "ssl": torch.randn(3, n, 4, generator=g).half(),
              "egemaps": torch.randn(88, generator=g)} for i, n in enumerate((5, 9, 7))]
    host = collate(items, None, 4)
    there = collate(items, None, 4, padded_device=device)
    assert there["ssl"].device.type == device and there["ssl"].shape == host["ssl"].shape == (3, 3, 12, 4)
    for key, value in there.items():
        if key != "ssl":
            assert not isinstance(value, torch.Tensor) or value.device.type == "cpu", key
            assert value == host[key] if isinstance(value, list) else torch.equal(value, host[key]), key
    if device == "cuda":
        assert torch.equal(there["ssl"].cpu(), host["ssl"])


def test_collate_pads_frames_up_to_a_multiple():
    from wav2emo.feeding.input_strategies import collate, padded_frames

    assert [padded_frames(n, 16) for n in (1, 16, 17, 263)] == [16, 16, 32, 272]
    assert padded_frames(263, None) == padded_frames(263, 1) == 263
    items = [{"ssl": torch.ones(2, t, 3), "label": 0, "actor": 1, "clip_id": f"c{t}"} for t in (5, 18)]
    batch = collate(items, frames_multiple=8)
    assert batch["ssl"].shape == (2, 2, 24, 3)
    assert batch["ssl_mask"].sum(1).tolist() == [5, 18] and batch["ssl"][:, :, 18:].abs().sum() == 0
    assert collate(items, frames=10, frames_multiple=8)["ssl"].shape[2] == 10  # a fixed length wins


def test_without_dev_actors_the_last_epoch_is_tested(tmp_path, shared_dirs):
    """folds.n_dev_actors=0: nothing to choose on, so the last epoch is kept; the test actors choose nothing."""
    from wav2emo.runs.fold_runner import run_fold

    cfg = small_cfg(tmp_path, shared_dirs, "model=egemaps_mlp", "trainer.max_epochs=3", "folds.n_dev_actors=0")
    result = run_fold(cfg, 1, tmp_path / "fold_1")
    assert result["split"]["dev_actors"] == [] and len(result["split"]["train_actors"]) == 19
    assert Path(result["evaluated_checkpoint"]).name == "epoch002.ckpt"
    assert len(result["epoch_seconds"]) == 3 and result["test_clips"] == 40


def test_length_buckets_cover_every_clip_once_with_less_padding():
    from wav2emo.feeding.batches import LengthBucketBatchSampler

    rng = np.random.default_rng(0)
    lengths = rng.integers(140, 264, size=1020)
    sampler = LengthBucketBatchSampler(lengths, 25, seed=3)
    first, second = list(sampler), list(sampler)
    for epoch in (first, second):
        flat = sorted(i for b in epoch for i in b)
        assert flat == list(range(1020)) and len(epoch) == len(sampler) == 41
    assert first != second  # a new order every epoch
    assert first == list(LengthBucketBatchSampler(lengths, 25, seed=3))  # ...and reproducible

    def padded(batches):
        return sum(len(b) * lengths[b].max() for b in batches)

    random_batches = [list(range(i, min(i + 25, 1020))) for i in range(0, 1020, 25)]
    assert padded(first) < 0.85 * padded(random_batches)


def test_bucketed_resident_training_runs(tmp_path, shared_dirs):
    from wav2emo.runs.fold_runner import run_fold

    cfg = small_cfg(tmp_path, shared_dirs, "model=fe_vgg", "trainer.max_epochs=2", "loader.resident=true",
                    "loader.bucket_by_length=true", "model.module.net.widths=[8,16,32,64]")
    result = run_fold(cfg, 0, tmp_path / "fold_0")
    assert len(result["epoch_seconds"]) == 2 and result["test_clips"] == 40


def test_ckpt_path_decides_where_a_fold_continues(tmp_path, shared_dirs):
    """An interrupted fold continues in its own directory; a finished one in the new run's; a run directory
    continues every requested fold there."""
    from wav2emo.reports.fold_results import FOLD_RESULT
    from wav2emo.runs.plan import run_plan

    run = tmp_path / "old_run"
    (run / "fold_2" / "checkpoints").mkdir(parents=True)
    last = run / "fold_2" / "checkpoints" / "last.ckpt"
    last.write_bytes(b"")
    new = tmp_path / "new_run"
    planned = run_plan(small_cfg(new, shared_dirs, f"ckpt_path={last}", "fold=2"))
    assert planned.out == run.resolve() and planned.plan.ckpt_path == str(last)  # interrupted: continued in place
    with pytest.raises(ValueError, match="continues one fold's training"):
        run_plan(small_cfg(new, shared_dirs, f"ckpt_path={last}", "fold=[1,2]"))
    (run / "fold_2" / FOLD_RESULT).write_text("{}")
    planned = run_plan(small_cfg(new, shared_dirs, f"ckpt_path={last}", "fold=2"))
    assert planned.out == new  # finished: its old directory is left alone
    planned = run_plan(small_cfg(new, shared_dirs, f"ckpt_path={run}", "fold=[0,1,2]"))
    assert planned.out == run and planned.plan.ckpt_path is None  # run directory: skip / continue / train each fold
    assert planned.folds == [0, 1, 2] and planned.trial is None and not planned.several
    new.mkdir()
    with pytest.raises(ValueError, match="expected a checkpoint file or a run directory"):
        run_plan(small_cfg(new, shared_dirs, f"ckpt_path={new}", "fold=0"))


@pytest.mark.parametrize("model", ["fe_vgg_logmel", "egemaps_mlp"])
def test_logmel_features_train_a_spectrogram_cnn_and_the_egemaps_mlp(tmp_path, shared_dirs, model):
    """features=logmel: the CNN reads log-mel as a 1-channel image; the eGeMAPS MLP reads only egemaps."""
    from wav2emo.runs.build import build_datamodule, build_module
    from wav2emo.runs.fold_runner import run_fold

    cfg = small_cfg(tmp_path, shared_dirs, "features=logmel", f"model={model}", "trainer.max_epochs=1",
                    "model.module.net.widths=[4,4,4,4]" if model == "fe_vgg_logmel" else "model.module.net.hidden=[8]")
    dm = build_datamodule(cfg, 0)
    dm.setup("fit")
    assert set(dm.caches) == ({"logmel"} if model == "fe_vgg_logmel" else {"egemaps"})
    module = build_module(cfg, dm)
    if model == "fe_vgg_logmel":
        assert module.featurizer is None and module.net.encoder.in_channels == 1
        assert module.net.encoder.feature_dim == dm.input_shape("logmel")[0] == 64
    result = run_fold(cfg, 0, tmp_path / "fold_0")
    assert result["test_clips"] == 40 and 0 <= result["test"]["ua"] <= 1
