"""Hyper-parameter search (hparams_search=, wav2emo/hpsearch): the configs, the objective (mean dev UA over
folds, test actors untouched), the persistent study and its resume, pruning, and the final test of the best."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
from hydra.core.utils import JobReturn, JobStatus
from optuna.trial import TrialState

from tests.helpers import compose_cfg
from wav2emo.errors import ConfigError
from wav2emo.hpsearch.space import grid_choices, parse_space
from wav2emo.hpsearch.study import (
    check_same_search,
    default_storage,
    fail_interrupted,
    final_overrides,
    make_storage,
    open_study,
    search_identity,
)
from wav2emo.hpsearch.sweeper import check_search, configure_trial, tell
from wav2emo.hpsearch.trial import SearchTrial, make_pruner
from wav2emo.reports.fold_results import read_fold_result

ROOT = Path(__file__).resolve().parents[1]
# The demo search made tiny: 2 clips per actor, one batch of one epoch per fold, the CNN without the eGeMAPS
# branch (its extraction is most of a cold start): the machinery, not learning.
TINY = ["model=fe_vgg", "data.corpus.clips_per_actor=2", "trainer.max_epochs=1", "trainer.limit_train_batches=1",
        "+trainer.limit_val_batches=1", "logger=none", "loader.batch_size=8"]


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Path:
    """Corpus and feature cache shared by this module's searches (as real runs share them)."""
    return tmp_path_factory.mktemp("hpsearch_shared")


def _search(tmp: Path, shared: Path, *overrides: str) -> subprocess.CompletedProcess:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "WANDB_MODE": "disabled", "WAV2EMO_DATA_DIR": str(shared / "data"), "WAV2EMO_CACHE_DIR": str(shared / "cache"),
           "WAV2EMO_LOG_DIR": str(tmp / "logs")}
    cmd = [sys.executable, "-m", "wav2emo.train", "-m", "hparams_search=demo", *TINY, *overrides]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    return proc


def _study(sweep: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{sweep / 'optuna.db'}")


# Configs ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("search", ["demo", "fe_vgg_egemaps"])
def test_search_config_composes_a_persistent_study_over_every_fold(tmp_path, search):
    from omegaconf import OmegaConf

    cfg = compose_cfg([f"hparams_search={search}"], tmp_path, tmp_path / "data", tmp_path / "cache")
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("Wav2emoOptunaSweeper") and sweeper.direction == "maximize"
    assert cfg.fold == "all" and cfg.test is False and cfg.optimized_metric == "val/ua_best"
    assert sweeper.study_name == cfg.hpsearch.name == search
    assert cfg.hpsearch.pruner is None and cfg.hpsearch.final_test is True
    # A stable folder (no timestamp): the same command finds the same study again.
    assert "${now" not in OmegaConf.to_yaml(cfg.hydra.sweep, resolve=False)
    assert sweeper.storage == f"sqlite:///{cfg.hydra.sweep.dir}/optuna.db"
    assert cfg.hydra.sweep.dir.endswith(f"hpsearch/{search}")
    space, fixed = parse_space([f"{k}={v}" for k, v in sweeper.params.items()])
    assert not fixed and "fold" not in space
    for key in space:  # every searched key exists in the model's config (a typo would fail every trial)
        assert OmegaConf.select(cfg, key, default="<missing>") != "<missing>", key
    lr = space["model.module.optimizer.lr"]
    assert isinstance(lr, optuna.distributions.FloatDistribution) and lr.log
    assert isinstance(space["loader.batch_size"], optuna.distributions.CategoricalDistribution)
    check_search(cfg, space, fixed)  # the sweeper's own checks pass


def test_hydra_sweep_syntax_becomes_optuna_4_distributions():
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    space, fixed = parse_space(["a=tag(log, interval(1e-5, 1e-3))", "b=interval(0.0, 0.5)", "c=choice(16, 25)",
                                "d=range(1, 5)", "e=range(0.0, 1.0, 0.25)", "f=interval(2, 8)", "model=fe_vgg",
                                "g=choice(adam, sgd)"])
    assert fixed == {"model": "fe_vgg"}
    assert space["a"] == FloatDistribution(1e-5, 1e-3, log=True)
    assert space["b"] == FloatDistribution(0.0, 0.5)
    assert space["c"] == CategoricalDistribution([16, 25]) and space["g"] == CategoricalDistribution(["adam", "sgd"])
    assert space["d"] == IntDistribution(1, 4)  # Hydra's range excludes its stop
    assert space["e"] == FloatDistribution(0.0, 0.75, step=0.25)
    assert space["f"] == FloatDistribution(2.0, 8.0)  # Hydra's intervals are floats
    assert grid_choices("d", space["d"]) == [1, 2, 3, 4]
    with pytest.raises(ConfigError, match="grid sampler"):
        grid_choices("a", space["a"])
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    over = configure_trial(trial, space, {"+x": "1"})
    values = dict(o.split("=", 1) for o in over)
    assert 1e-5 <= float(values["a"]) <= 1e-3 and values["c"] in ("16", "25") and values["+x"] == "1"
    assert 1 <= int(values["d"]) <= 4 and trial.user_attrs == {"+x": "1"}


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_study_storages_resume_across_processes_and_name_a_missing_file(tmp_path, kind):
    """The default SQLite study (RDB storage on SQLAlchemy 2) and the journal file: a trial left running by a
    dead process is failed on resume, and a later process finds the same study."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}" if kind == "sqlite" else str(tmp_path / "optuna.journal")
    study = optuna.create_study(study_name="s", storage=make_storage(storage), direction="maximize")
    study.tell(study.ask(), 0.5)
    study.ask()  # left running
    code = ("import sys; from wav2emo.hpsearch.study import open_study, fail_interrupted; "
            f"s = open_study({storage!r}, 's'); print(fail_interrupted(s)); s.tell(s.ask(), 0.75)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[1]"
    again = open_study(storage, "s")
    assert [t.state for t in again.trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert again.best_value == 0.75 and fail_interrupted(again) == []
    assert default_storage(tmp_path) == storage
    with pytest.raises(Exception, match="no study storage"):
        open_study(storage.replace("optuna", "missing"), "s")


def test_a_study_of_an_older_optuna_says_how_to_upgrade_it(tmp_path):
    import sqlite3

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.create_study(study_name="s", storage=make_storage(storage))
    with sqlite3.connect(tmp_path / "optuna.db") as db:  # the schema revision Optuna 2.10 left
        db.execute("UPDATE alembic_version SET version_num = 'v2.6.0.a'")
    with pytest.raises(ConfigError, match=r"optuna storage upgrade --storage sqlite:///"):
        open_study(storage, "s")


def test_search_fe_vgg_egemaps_searches_that_models_parameters(tmp_path):
    cfg = compose_cfg(["hparams_search=fe_vgg_egemaps"], tmp_path, tmp_path / "data", tmp_path / "cache")
    assert cfg.model.name == "fe_vgg_egemaps"
    assert set(cfg.hydra.sweeper.params) >= {"model.module.optimizer.lr", "model.module.net.dropout",
                                             "loader.batch_size", "model.module.optim.weight_decay"}


def test_sweeper_refuses_a_searched_fold_test_metrics_and_unknown_keys(tmp_path):
    cfg = compose_cfg(["hparams_search=demo"], tmp_path, tmp_path / "data", tmp_path / "cache")
    space, fixed = parse_space(["fold=0,1", "model.module.optimizer.lr=interval(1e-4,1e-3)"])
    with pytest.raises(ConfigError, match="fold is swept"):
        check_search(cfg, space, fixed)
    space, fixed = parse_space(["test=true", "model.module.optimizer.lr=interval(1e-4,1e-3)"])
    with pytest.raises(ConfigError, match="trials never test"):
        check_search(cfg, space, fixed)
    space, fixed = parse_space(["model.module.optimiser.lr=interval(1e-4,1e-3)"])
    with pytest.raises(ConfigError, match="model.module.optimiser.lr"):
        check_search(cfg, space, fixed)


def test_a_trial_refuses_test_actors_and_test_metrics(tmp_path):
    dirs = (tmp_path / "data", tmp_path / "cache")
    assert SearchTrial.from_cfg(compose_cfg(["hparams_search=demo"], tmp_path, *dirs)) is None  # not a trial
    trial = SearchTrial.from_cfg(compose_cfg(["hparams_search=demo", "hpsearch.trial=4"], tmp_path, *dirs))
    assert trial is not None and trial.number == 4 and trial.metric == "val/ua_best" and trial.pruner is None
    with pytest.raises(ConfigError, match="never tests"):
        SearchTrial.from_cfg(compose_cfg(["hparams_search=demo", "hpsearch.trial=4", "test=true"], tmp_path, *dirs))
    with pytest.raises(ConfigError, match="never a test metric"):
        SearchTrial.from_cfg(compose_cfg(["hparams_search=demo", "hpsearch.trial=4", "optimized_metric=test/ua"],
                                         tmp_path, *dirs))


# The study: outcomes, pruning, resume checks, the final run's overrides --------------------------------------

def _job(status: JobStatus, value) -> JobReturn:
    ret = JobReturn(overrides=["x=1"], status=status)
    ret._return_value = value
    return ret


def test_trial_outcomes_are_recorded_complete_pruned_or_failed():
    study = optuna.create_study(direction="maximize")
    trials = [study.ask() for _ in range(3)]
    assert tell(study, trials[0], _job(JobStatus.COMPLETED, 0.625))
    assert tell(study, trials[1], _job(JobStatus.FAILED, optuna.TrialPruned("pruned after 2 folds")))
    assert not tell(study, trials[2], _job(JobStatus.FAILED, RuntimeError("out of memory")))
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL]
    assert study.best_value == 0.625


def test_median_pruning_after_folds_stops_a_trial_below_the_median(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    for value in (0.5, 0.6, 0.7):  # three finished trials: running means 0.5-0.7 after each fold
        t = study.ask()
        for step in range(3):
            t.report(value, step)
        study.tell(t, value)
    pruner = make_pruner("median")  # n_startup_trials 3, n_warmup_steps 1: never after the first fold alone
    bad = SearchTrial(study.ask().number, "val/ua_best", pruner, storage, "s")
    bad.after_fold(0, [0.1])  # first fold: warm-up, never pruned
    with pytest.raises(optuna.TrialPruned, match="after 2 fold"):
        bad.after_fold(1, [0.1, 0.2])
    good = SearchTrial(study.ask().number, "val/ua_best", pruner, storage, "s")
    good.after_fold(0, [0.7])
    good.after_fold(1, [0.7, 0.8])
    frozen = {t.number: t for t in _study(tmp_path, "s").trials}
    assert frozen[bad.number].intermediate_values == {0: 0.1, 1: pytest.approx(0.15)}
    assert frozen[good.number].intermediate_values == {0: 0.7, 1: pytest.approx(0.75)}
    assert make_pruner(None) is None
    with pytest.raises(ConfigError, match="hpsearch.pruner=mean"):
        make_pruner("mean")


def test_resuming_with_other_overrides_is_refused(tmp_path):
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    check_same_search(study, search_identity({"data": "ravdess"}, {"lr": 1}), strict=True)
    check_same_search(study, search_identity({"data": "ravdess"}, {"lr": 1}), strict=True)  # the same: fine
    check_same_search(study, search_identity({"data": "ravdess", "hpsearch.final_test": False}, {"lr": 1}),
                      strict=True)  # how the search runs, not what it trains
    with pytest.raises(ConfigError, match="hpsearch.name"):
        check_same_search(study, search_identity({"data": "emodb"}, {"lr": 1}), strict=True)


def test_final_run_is_the_trial_with_test_true():
    study = optuna.create_study(direction="maximize")
    t = study.ask()
    t.set_user_attr("hparams_search", "demo")
    t.set_user_attr("+trainer.limit_val_batches", 1)
    t.suggest_float("model.module.optimizer.lr", 1e-4, 1e-3, log=True)
    study.tell(t, 0.5)
    over = final_overrides(study.best_trial)
    assert "hparams_search=demo" in over and "+trainer.limit_val_batches=1" in over
    assert f"model.module.optimizer.lr={study.best_trial.params['model.module.optimizer.lr']}" in over
    assert over[-2:] == ["test=true", "hpsearch.trial=null"] and "test=false" not in over


# The objective ----------------------------------------------------------------------------------------------

def test_a_trial_returns_the_mean_dev_metric_over_its_folds_and_never_tests(tmp_path, shared, capsys):
    """What the sweeper receives from a trial: train() with fold=[0,1], test=false, in this process."""
    from wav2emo.runs.experiment import train

    cfg = compose_cfg(["hparams_search=demo", "hpsearch.trial=0", "fold=[0,1]", *TINY], tmp_path,
                      shared / "data", shared / "cache")
    metrics = train(cfg)
    results = [read_fold_result(tmp_path / f"fold_{k}" / "fold_result.json") for k in (0, 1)]
    assert metrics["val/ua_best"] == pytest.approx(np.mean([r["best_dev"]["val/ua_best"] for r in results]),
                                                   abs=1e-12)
    assert not any(k.startswith("test/") for k in metrics) and all("test" not in r for r in results)
    assert not (tmp_path / "cv_report.json").exists()  # no test actors, no cross-validation report
    assert "mean over 2 folds" in capsys.readouterr().out


# A real search on the synthetic corpus ----------------------------------------------------------------------

@pytest.mark.slow  # 60-150 s on a shared 2-core machine: two searches, 20 fold trainings
def test_three_trial_search_resumes_and_tests_only_the_best(tmp_path, shared):
    """Two trials, then the same command with n_trials=3: one more trial (the study is resumed, not restarted),
    every trial's value is the mean of its five folds' dev UA, no trial touched the test actors, and only the
    best configuration is trained again with test=true, ending in its cross-validation report."""
    first = _search(tmp_path, shared, "hydra.sweeper.n_trials=2", "hpsearch.final_test=false")
    assert "0 trial(s) finished, 2 to run" in first.stdout + first.stderr
    second = _search(tmp_path, shared, "hydra.sweeper.n_trials=3")
    assert "2 trial(s) finished, 1 to run" in second.stdout + second.stderr
    sweep = tmp_path / "logs" / "train" / "hpsearch" / "demo"
    assert (sweep / "optuna.db").is_file()
    trials = _study(sweep, "demo").trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3 and [t.number for t in trials] == [0, 1, 2]
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 3  # the resumed run sampled anew
    for t in trials:
        results = [read_fold_result(p) for p in sorted((sweep / f"trial_{t.number}").glob("fold_*/fold_result.json"))]
        assert sorted(r["fold"] for r in results) == [0, 1, 2, 3, 4]
        assert t.value == pytest.approx(np.mean([r["best_dev"]["val/ua_best"] for r in results]), abs=1e-12)
        assert all("test" not in r and "test_confusion" not in r for r in results)  # never tested
        assert not list((sweep / f"trial_{t.number}").rglob("predictions.csv"))
    best = max(trials, key=lambda t: t.value)
    assert not [p for p in sweep.iterdir() if p.name.startswith("best_trial_") and p.name != f"best_trial_{best.number}"]
    report = json.loads((sweep / f"best_trial_{best.number}" / "cv_report.json").read_text())
    assert report["folds"] == [0, 1, 2, 3, 4] and report["missing_folds"] == []
    assert 0.0 <= report["summary"]["ua"]["mean"] <= 1.0 and report["pooled"]["clips"] == 24 * 2
    summary = json.loads((sweep / "hpsearch.json").read_text())
    assert summary["best"]["number"] == best.number and summary["states"] == {"COMPLETE": 3}
    assert summary["final"]["test"]["ua"]["mean"] == report["summary"]["ua"]["mean"]
    assert f"**Best: trial {best.number}**" in (sweep / "hpsearch.md").read_text()
    assert not (sweep / "cv_report.json").exists()  # the sweep's CV report is the final run's, nothing else


@pytest.mark.slow  # the pruner and the sweeper's handling of pruned jobs also have fast tests above
def test_pruned_trials_stop_after_a_fold_and_are_recorded_pruned(tmp_path, shared):
    """A pruner that stops every trial from the second fold on (ThresholdPruner above any UA): trials end
    after two of three folds, the study records them pruned with their running means, nothing is tested."""
    pruner = "hpsearch.pruner={_target_: optuna.pruners.ThresholdPruner, lower: 1.01, n_warmup_steps: 1}"
    proc = _search(tmp_path, shared, "hydra.sweeper.n_trials=2", "fold=[0,1,2]", "hpsearch.name=pruned", pruner)
    sweep = tmp_path / "logs" / "train" / "hpsearch" / "pruned"
    trials = _study(sweep, "pruned").trials
    assert [t.state for t in trials] == [TrialState.PRUNED] * 2
    for t in trials:
        assert sorted(t.intermediate_values) == [0, 1]
        assert sorted(p.parent.name for p in (sweep / f"trial_{t.number}").glob("fold_*/fold_result.json")) == \
            ["fold_0", "fold_1"]
    assert "no complete trial: nothing to test" in proc.stdout + proc.stderr
    assert "Error executing job" not in proc.stderr  # a pruned trial is not reported as a failure
    assert not list(sweep.glob("best_trial_*"))


@pytest.mark.slow  # about 75 s on a shared 2-core machine
def test_parallel_trials_through_joblib_share_a_journal_file_study(tmp_path, shared):
    """Two trials at once in joblib worker processes, pruning on (so each worker reports to the study after
    every fold): both trials complete in the journal file with their running means, and the final step by hand
    finds the journal without being told."""
    _search(tmp_path, shared, "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2", "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2", "fold=[0,1]", "hpsearch.pruner=median", "hpsearch.final_test=false",
            "hydra.sweeper.storage=${hydra.sweep.dir}/optuna.journal")
    sweep = tmp_path / "logs" / "train" / "hpsearch" / "demo"
    assert (sweep / "optuna.journal").is_file() and not (sweep / "optuna.db").exists()
    trials = open_study(str(sweep / "optuna.journal"), "demo").trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert all(sorted(t.intermediate_values) == [0, 1] for t in trials)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    proc = subprocess.run([sys.executable, "-m", "wav2emo.hpsearch_best", str(sweep), "--summary-only"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((sweep / "hpsearch.json").read_text())["states"] == {"COMPLETE": 2}
