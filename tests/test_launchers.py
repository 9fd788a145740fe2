"""Launchers for folds in parallel or on a cluster: hydra/launcher=joblib runs fold jobs concurrently on one
machine (the feature cache's lock makes one of them extract), hydra/launcher=slurm (hydra-submitit-launcher)
submits one fold per SLURM job; its config is checked here, a cluster being out of reach."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.utils import instantiate

from tests.helpers import compose_cfg

ROOT = Path(__file__).resolve().parents[1]
FOLDS = ["data=synthetic", "data.corpus.clips_per_actor=2", "features=tiny", "trainer=cpu", "model=fe_vgg_egemaps",
         "model.module.net.widths=[8,16,32,64]", "trainer.max_epochs=1", "logger=none", "loader.num_workers=0",
         "loader.batch_size=8"]


def _multirun(tmp: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "WANDB_MODE": "disabled"}
    cmd = [sys.executable, "-m", "wav2emo.train", "-m", "fold=0,1", *FOLDS, f"paths.data_dir={tmp / 'data'}",
           f"paths.cache_dir={tmp / 'cache'}", f"hydra.sweep.dir={tmp / 'sweep'}", *overrides]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    return proc


def _report_and_builds(tmp: Path) -> tuple[dict, list[str]]:
    sweep = tmp / "sweep"
    report = json.loads((sweep / "cv_report.json").read_text())
    logs = [(sweep / str(job) / "train.log").read_text() for job in (0, 1)]
    builds = [line for text in logs for line in text.splitlines() if "] - building " in line]
    return report, builds


def test_joblib_launcher_runs_two_folds_at_once_and_extracts_the_features_once(tmp_path):
    """Two fold jobs started together on a fresh cache: each feature set (tiny SSL, eGeMAPS) is built by
    one of them while the other waits on the cache's lock, and the sweep ends with the CV report."""
    proc = _multirun(tmp_path, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    assert "Joblib.Parallel(n_jobs=2" in proc.stdout + proc.stderr
    report, builds = _report_and_builds(tmp_path)
    assert report["folds"] == [0, 1] and report["missing_folds"] == []
    assert len(builds) == 2, builds  # one build per cache, over both jobs
    assert sum("egemaps" in b for b in builds) == 1 and sum("tiny-wav2vec2" in b for b in builds) == 1
    caches = [p for p in (tmp_path / "cache" / "synthetic").iterdir() if p.is_dir()]
    assert len(caches) == 2


@pytest.mark.slow  # two more processes through submitit's local executor, about a minute
def test_submitit_local_launcher_runs_fold_jobs(tmp_path):
    """hydra-submitit-launcher's local executor: the same pickled-job path a SLURM job takes, on this machine."""
    _multirun(tmp_path, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=15")
    report, builds = _report_and_builds(tmp_path)
    assert report["folds"] == [0, 1] and len(builds) == 2
    assert list((tmp_path / "sweep" / ".submitit").rglob("*_result.pkl"))


@pytest.mark.parametrize("launcher", ["slurm", "submitit_slurm"])
def test_slurm_launcher_config_one_gpu_job_per_fold(tmp_path, launcher):
    """conf/hydra/launcher/slurm.yaml (wav2emo's preset over the plugin's submitit_slurm) and the plugin's own
    config compose, build the launcher, and pass SLURM keys that submitit's sbatch writer accepts."""
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from omegaconf import OmegaConf
    from submitit.slurm.slurm import SlurmExecutor

    over = [f"hydra/launcher={launcher}", "hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=1",
            "fold=0", "trainer=gpu"]
    cfg = compose_cfg(over, tmp_path, tmp_path / "data", tmp_path / "cache")
    lc = cfg.hydra.launcher
    assert lc._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert lc.partition == "gpu" and lc.gpus_per_node == 1 and lc.tasks_per_node == 1 and lc.nodes == 1
    assert lc.timeout_min >= 60
    assert lc.submitit_folder.startswith(str(cfg.hydra.sweep.dir))
    if launcher == "slurm":  # the preset: one GPU job per fold, the five folds at once
        assert lc.array_parallelism == 5 and lc.cpus_per_task == 8 and lc.mem_gb == 64 and lc.timeout_min == 120
        assert lc.max_num_timeout == 0
    launcher_obj = instantiate(lc)  # the plugin takes every key (it is built like this by Hydra, before a sweep)
    assert launcher_obj.params["partition"] == "gpu"
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    slurm_only = {k for k in launcher_obj.params if k not in base | {"max_num_timeout"}}
    assert slurm_only <= SlurmExecutor._valid_parameters(), slurm_only - SlurmExecutor._valid_parameters()
