"""Several processes (trainer=ddp): every sampler shards each epoch by rank, evaluation blocks cover dev and test
once, only rank zero writes, and a real two-process run on the CPU (gloo) reports over exactly the test clips."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from tests.helpers import CONF_DIR, SMALL, compose_cfg
from tests.test_feeding import toy_dataset
from wav2emo.errors import ConfigError
from wav2emo.feeding.batches import (
    ClassBalancedBatchSampler,
    CopyBatchSampler,
    EpochShuffleSampler,
    LengthBucketBatchSampler,
    ResidentSplit,
    eval_shard,
)
from wav2emo.training import distributed

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

DDP_CPU = [o for o in SMALL if not o.startswith("trainer=")] + ["trainer=ddp", "trainer.accelerator=cpu",
                                                                 "trainer.devices=2"]
N = 23  # not a multiple of any world size below, nor of the batch size
LENGTHS = [3 + (7 * i) % 11 for i in range(N)]


def one_epoch(make, world: int, epoch: int = 0) -> list[list[list[int]]]:
    """Every rank's batches of epoch ``epoch`` (each rank's sampler built as that rank would build it)."""
    out = []
    for rank in range(world):
        sampler = make(rank, world)
        sampler.set_epoch(epoch)
        batches = [list(b) for b in sampler]
        assert len(batches) == len(sampler)  # what Lightning counts is what the rank serves
        out.append(batches)
    return out


def flat(batches) -> list[int]:
    return [i for b in batches for i in b]


BATCH_SAMPLERS = {
    "length_buckets": lambda r, w: LengthBucketBatchSampler(LENGTHS, 4, seed=5, pool_batches=2, rank=r, world_size=w),
    "class_balanced": lambda r, w: ClassBalancedBatchSampler([i % 3 for i in range(N)], 4, seed=5, rank=r, world_size=w),
    "copies": lambda r, w: CopyBatchSampler(N, 2, 4, seed=5, rank=r, world_size=w),
    "copies_buckets": lambda r, w: CopyBatchSampler(N, 2, 4, seed=5, lengths=LENGTHS * 3, pool_batches=2, rank=r,
                                                    world_size=w),
    "copies_balanced": lambda r, w: CopyBatchSampler(N, 2, 4, seed=5, labels=[i % 3 for i in range(N)], rank=r,
                                                     world_size=w),
}


@pytest.mark.parametrize("world", [2, 3, 4])
@pytest.mark.parametrize("name", sorted(BATCH_SAMPLERS))
def test_every_batch_sampler_shards_the_epoch_one_process_would_draw(name, world):
    make = BATCH_SAMPLERS[name]
    single = flat(one_epoch(make, 1)[0])
    ranks = one_epoch(make, world)
    assert len({len(r) for r in ranks}) == 1  # the same number of batches on every rank: nobody waits for ever
    per_rank = -(-len(single) // world)
    assert all(len(flat(r)) == per_rank for r in ranks)
    # Together the ranks serve the single process's epoch plus at most world-1 wrapped-around items.
    extra = Counter(flat(i for r in ranks for i in r)) - Counter(single)
    assert sum(extra.values()) == per_rank * world - len(single) < world
    assert not Counter(single) - Counter(flat(i for r in ranks for i in r))
    if "buckets" not in name:  # plain batches: rank r holds every world-th item of the same (padded) draw
        padded = single + single[: per_rank * world - len(single)]
        assert [flat(r) for r in ranks] == [padded[r::world] for r in range(world)]
    else:  # each step's batches are of one length bucket: the same size on every rank
        assert all(len({len(r[step]) for r in ranks}) == 1 for step in range(len(ranks[0])))
    assert ranks != one_epoch(make, world, epoch=1)  # a new draw every epoch, the same on every rank


@pytest.mark.parametrize("world", [2, 3])
def test_shuffle_sampler_shards_are_disjoint_and_cover_the_epoch(world):
    ranks = [list(s) for s in (EpochShuffleSampler(N, seed=1, rank=r, world_size=world) for r in range(world))]
    single = list(EpochShuffleSampler(N, seed=1))
    assert all(len(r) == len(EpochShuffleSampler(N, rank=0, world_size=world)) == -(-N // world) for r in ranks)
    padded = single + single[: -(-N // world) * world - N]
    assert ranks == [padded[r::world] for r in range(world)]
    assert set(flat(ranks)) == set(range(N))
    with pytest.raises(ValueError, match="rank=2, world_size=2"):
        EpochShuffleSampler(N, rank=2, world_size=2)


@pytest.mark.parametrize("n,world", [(23, 2), (23, 3), (40, 4), (3, 3)])
def test_eval_blocks_score_every_clip_once_in_order(n, world):
    blocks = [eval_shard(n, r, world) for r in range(world)]
    assert [i for b in blocks for i in b] == list(range(n))
    assert max(map(len, blocks)) - min(map(len, blocks)) <= 1


@pytest.mark.parametrize("world", [2, 3])
def test_resident_split_serves_each_rank_its_share(world):
    ds = toy_dataset(["logmel", "egemaps"], n=N)
    cpu = torch.device("cpu")

    def ids(split):
        batches = [b["index"].tolist() for b in split]
        assert len(batches) == len(split)
        return batches

    train = [ids(ResidentSplit(ds, 4, shuffle=True, device=cpu, seed=3, rank=r, world_size=world)) for r in range(world)]
    assert len({len(b) for b in train}) == 1
    single = flat(ids(ResidentSplit(ds, 4, shuffle=True, device=cpu, seed=3)))
    padded = single + single[: -(-N // world) * world - N]
    assert [flat(b) for b in train] == [padded[r::world] for r in range(world)]
    evals = [ids(ResidentSplit(ds, 4, shuffle=False, device=cpu, rank=r, world_size=world)) for r in range(world)]
    assert flat(flat(evals)) == list(range(N))  # every clip once, blocks in rank order
    bucketed = [ids(ResidentSplit(ds, 4, shuffle=True, device=cpu, rank=r, world_size=world,
                                  batch_sampler=LengthBucketBatchSampler(ds.lengths(), 4, rank=r, world_size=world)))
                for r in range(world)]
    assert len({len(b) for b in bucketed}) == 1 and set(flat(flat(bucketed))) == set(range(N))
    with pytest.raises(ValueError, match="shards for rank 0 of 1"):
        ResidentSplit(ds, 4, shuffle=True, device=cpu, rank=1, world_size=2,
                      batch_sampler=LengthBucketBatchSampler(ds.lengths(), 4))


def fake_trainer(rank: int, world: int, use_distributed_sampler: bool = False):
    return SimpleNamespace(global_rank=rank, world_size=world, strategy=SimpleNamespace(root_device=torch.device("cpu")),
                           _accelerator_connector=SimpleNamespace(use_distributed_sampler=use_distributed_sampler))


@pytest.fixture(scope="module")
def shared_dirs(tmp_path_factory):
    """Corpus and feature caches shared by this file's tests."""
    root = tmp_path_factory.mktemp("ddp_shared")
    return root / "data", root / "cache"


@pytest.mark.parametrize("loader", ["loader.num_workers=0", "loader.resident=true"])
def test_the_data_module_shards_train_and_blocks_dev_and_test_by_rank(tmp_path, loader, shared_dirs):
    from wav2emo.runs.build import build_datamodule

    cfg = compose_cfg([*SMALL, "model=mean_linear_logmel", "features=logmel", loader], tmp_path, *shared_dirs)
    world, modules = 2, []
    for rank in range(world):
        dm = build_datamodule(cfg, 0)
        dm.setup("fit")
        dm.trainer = fake_trainer(rank, world)
        modules.append(dm)
    for part, loader_of in (("train", "train_dataloader"), ("dev", "val_dataloader"), ("test", "test_dataloader")):
        clips = [c.clip_id for c in modules[0].parts[part]]
        served = [[cid for b in getattr(dm, loader_of)() for cid in b["clip_id"]] for dm in modules]
        if part == "train":
            assert len(served[0]) == len(served[1]) == -(-len(clips) // world)
            assert set(served[0] + served[1]) == set(clips) and len(set(served[0]) & set(served[1])) <= world - 1
        else:
            assert served[0] + served[1] == clips  # each clip scored once, in the split's order
    dm = modules[0]
    dm._resident.clear()
    dm.trainer = fake_trainer(0, 2, use_distributed_sampler=True)
    with pytest.raises(ConfigError, match="use_distributed_sampler=false"):
        dm.train_dataloader()
    dm.trainer = fake_trainer(0, len(dm.parts["test"]) + 1)
    with pytest.raises(ConfigError, match="fewer than the"):
        dm.test_dataloader()


def test_devices_and_multirun_are_read_from_the_config(tmp_path):
    from hydra.core.hydra_config import HydraConfig

    assert distributed.several_processes({"devices": 2, "accelerator": "cpu", "strategy": "ddp"})
    assert distributed.several_processes({"devices": [0, 1]}) and distributed.several_processes({"devices": "0,1"})
    assert not distributed.several_processes({"devices": 1, "strategy": "ddp"})
    assert not distributed.several_processes({"devices": "auto", "accelerator": "cpu"})
    assert distributed.several_processes({"devices": 1, "num_nodes": 2})
    cfg = compose_cfg(DDP_CPU, tmp_path, tmp_path / "data", tmp_path / "cache")
    assert cfg.trainer.strategy == "ddp" and cfg.trainer.use_distributed_sampler is False
    distributed.check_launch(cfg.trainer)  # a single run: fine
    cfg = cfg.copy()
    OmegaConf.set_readonly(cfg.hydra, False)
    cfg.hydra.mode = "MULTIRUN"
    HydraConfig.instance().set_config(cfg)
    with pytest.raises(ConfigError, match="multirun"):
        distributed.check_launch(cfg.trainer)


def test_plain_ddp_looks_for_unused_parameters_while_the_backbone_is_frozen():
    ddp2 = {"strategy": "ddp", "devices": 2, "accelerator": "cpu"}
    assert distributed.ddp_strategy_for(ddp2, head_only_epochs=2) == "ddp_find_unused_parameters_true"
    assert distributed.ddp_strategy_for(ddp2, head_only_epochs=0) is None
    assert distributed.ddp_strategy_for({**ddp2, "devices": 1}, head_only_epochs=2) is None
    assert distributed.ddp_strategy_for({**ddp2, "strategy": "ddp_spawn"}, head_only_epochs=2) is None


@pytest.fixture
def as_rank_one(monkeypatch):
    """This process believes it is DDP rank 1 (no process group: the rank the launcher's environment gives)."""
    monkeypatch.setattr(distributed, "rank", lambda: 1)
    level = logging.getLogger("wav2emo").level
    yield
    logging.getLogger("wav2emo").setLevel(level)


def test_a_process_other_than_rank_zero_writes_no_result(tmp_path, as_rank_one, capsys, shared_dirs):
    from wav2emo.runs.experiment import train

    cfg = compose_cfg([*SMALL, "model=mean_linear_logmel", "features=logmel", "trainer.max_epochs=1", "fold=[0,1]"],
                      tmp_path / "run", *shared_dirs)
    metrics = train(cfg)
    assert "test/ua" in metrics and "cv" not in metrics  # it trained and tested, and reported nothing
    ours = ("fold_result.json", "predictions.csv", "config.yaml", "git.json", "environment.json", "cv_report.json")
    written = [p.name for p in (tmp_path / "run").rglob("*") if p.is_file()]
    assert not set(ours) & set(written), written
    assert "Cross-validation report" not in capsys.readouterr().out


def test_two_processes_on_the_cpu_train_and_report_every_test_clip_once(tmp_path, shared_dirs):
    """What a user runs: python -m wav2emo.train ... trainer=ddp trainer.accelerator=cpu trainer.devices=2 (gloo),
    two folds one after the other in the same two processes, the GPU-resident loader with length buckets."""
    run = tmp_path / "run"
    clips_per_actor = 8
    cmd = [
        sys.executable, "-m", "wav2emo.train", *DDP_CPU, f"data.corpus.clips_per_actor={clips_per_actor}",
        "model=fe_vgg", "model.module.net.widths=[8,16,32,64]", "trainer.precision=32-true", "trainer.max_epochs=2",
        "fold=[0,1]",
        "loader.resident=true", "loader.bucket_by_length=true", f"hydra.run.dir={run}",
    ]
    data_dir, cache_dir = shared_dirs
    env = dict(os.environ, WAV2EMO_DATA_DIR=str(data_dir), WAV2EMO_CACHE_DIR=str(cache_dir),
               WAV2EMO_LOG_DIR=str(tmp_path / "logs"))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=CONF_DIR.parent, env=env)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert "Starting with 2 processes" in output and "distributed_backend=gloo" in output
    assert output.count("Cross-validation report") == 1  # printed by rank zero alone
    for fold in (0, 1):
        result = json.loads((run / f"fold_{fold}" / "fold_result.json").read_text())
        test_actors = result["split"]["test_actors"]
        expected = len(test_actors) * clips_per_actor
        assert result["test_clips"] == expected == result["split"]["clips"]["test"]
        assert np.asarray(result["test_confusion"]).sum() == expected  # every test clip of both ranks, once
        preds = pd.read_csv(run / f"fold_{fold}" / "predictions.csv")
        assert len(preds) == preds["clip_id"].nunique() == expected
        assert set(preds["actor"]) == set(test_actors)
        # torchmetrics' own (all-reduced) test UA agrees with the UA of the gathered predictions
        logged = pd.read_csv(next((run / f"fold_{fold}" / "csv").rglob("metrics.csv")))
        assert logged["test/ua"].dropna().iloc[-1] == pytest.approx(result["test"]["ua"], abs=1e-6)
        assert sorted(p.name for p in (run / f"fold_{fold}" / "checkpoints").iterdir())[-1] == "last.ckpt"
    report = json.loads((run / "cv_report.json").read_text())
    assert report["folds"] == [0, 1] and report["pooled"]["clips"] == 2 * 5 * clips_per_actor
    # Rank one kept its own log, warnings only from wav2emo; rank zero's log tells the story.
    assert (run / "train_ddp_process_1.log").exists()
    assert not re.search(r"\[wav2emo[.\w]*\]\[INFO\]", (run / "train_ddp_process_1.log").read_text())
    assert "fold 1: epoch 2/2" in (run / "train.log").read_text()
