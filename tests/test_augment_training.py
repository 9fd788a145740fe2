"""Augmentation in the training loop: online transforms (training batches only) and cached copies of the
training clips (extracted once, one copy per clip per epoch, keyed by the augment config)."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch
from hydra.errors import InstantiationException

from tests.helpers import SMALL, compose_cfg
from wav2emo.augment import build_augment
from wav2emo.augment.copies import COPY_SEP, META, copies_dir, make_copies, source_id
from wav2emo.augment.training import training_transforms
from wav2emo.errors import ConfigError
from wav2emo.features.cache.format import CacheError
from wav2emo.models.frontends import LogMelUpstream
from wav2emo.runs.build import build_datamodule, build_module
from wav2emo.runs.plan import fold_plan

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

STANDARD = ["augment=standard", "augment.mode=cached", "augment.copies=1"]
LOGMEL = ["model=fe_vgg_logmel", "features=logmel", "model.module.net.widths=[4,4,4,4]",
          "model.module.net.hidden=8", "trainer.max_epochs=1", "loader.batch_size=32"]
# Gain copies are cheap to make on a 2-core CPU; the full standard composition runs in the slow test.
CACHED = ["augment=gain", "augment.mode=cached", "augment.copies=2", "augment.wave.gain.p=1.0"]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("augwire")
    return root / "data", root / "cache"


def cfg_of(tmp_path, dirs, *extra):
    return compose_cfg([*SMALL, *LOGMEL, *extra], tmp_path, *dirs)


def dm_of(tmp_path, dirs, *extra, fold: int = 0):
    dm = build_datamodule(cfg_of(tmp_path, dirs, *extra), fold)
    dm.setup("fit")
    return dm


def epoch_ids(loader, epoch: int) -> list[tuple[int, str]]:
    sampler = getattr(loader, "batch_sampler", None) or loader
    sampler.set_epoch(epoch)
    if hasattr(loader, "epoch"):
        loader.epoch = epoch
    return [(int(i), c) for b in loader for i, c in zip(b["index"].tolist(), b["clip_id"], strict=True)]


# Cached mode -------------------------------------------------------------------------------------------
def test_cached_copies_are_of_training_actors_only_and_built_once(tmp_path, dirs):
    dm = dm_of(tmp_path, dirs, *CACHED)
    train = dm.parts["train"]
    assert len(dm.copies) == 2 * len(train)
    held_out = set(dm.split.dev) | set(dm.split.test)
    assert all(c.actor in set(dm.split.train) and c.actor not in held_out for c in dm.copies)
    assert {source_id(c.clip_id) for c in dm.copies} == set(train.clip_ids)
    assert all(COPY_SEP in c.clip_id for c in dm.copies)
    folder = copies_dir(dm.cache_dir, train, dm.augmenter, dm.seed)
    stamp = (folder / META).stat().st_mtime_ns
    paths = {k: c.path for k, c in dm.copy_caches.items()}
    for part in ("dev", "test"):  # held-out batches never hold a copy
        assert not any(COPY_SEP in cid for b in dm._loader(part, False) for cid in b["clip_id"])
    again = dm_of(tmp_path, dirs, *CACHED)  # a second run reuses the copies and their features
    assert (folder / META).stat().st_mtime_ns == stamp
    assert {k: c.path for k, c in again.copy_caches.items()} == paths


@pytest.mark.parametrize("resident", [False, True])
def test_one_copy_per_clip_per_epoch_and_new_copies_each_epoch(tmp_path, dirs, resident):
    dm = dm_of(tmp_path, dirs, *CACHED, f"loader.resident={str(resident).lower()}")
    loader = dm.train_dataloader()
    n = len(dm.parts["train"])
    assert len(loader) == -(-n // dm.batch_size)  # batches of clips, not of clips x copies
    ids = dm.parts["train"].clip_ids
    epochs = [epoch_ids(loader, e) for e in (0, 1)]
    for rows in epochs:
        assert sorted(i for i, _ in rows) == list(range(n))  # every clip once
        assert all(source_id(cid) == ids[i] for i, cid in rows)  # index = the clip's row, whichever copy
        assert any(COPY_SEP in cid for _, cid in rows) and any(COPY_SEP not in cid for _, cid in rows)
    assert {cid for _, cid in epochs[0]} != {cid for _, cid in epochs[1]}
    assert epoch_ids(loader, 0) == epochs[0]  # reproducible (and resumable) per epoch


def test_resident_serves_the_copies_the_loader_serves(tmp_path, dirs):
    loaded = dm_of(tmp_path, dirs, *CACHED).train_dataloader()
    resident = dm_of(tmp_path, dirs, *CACHED, "loader.resident=true").train_dataloader()
    assert epoch_ids(loaded, 3) == epoch_ids(resident, 3)


@pytest.mark.slow
def test_standard_copies_pitch_speed_noise_gain_of_training_clips(tmp_path, dirs):
    """The whole standard composition (pitch, speed, noise with babble of training clips, gain) as copies."""
    dm = dm_of(tmp_path, dirs, *STANDARD)
    train = dm.parts["train"]
    assert {source_id(c.clip_id) for c in dm.copies} == set(train.clip_ids)
    assert any(c.num_frames != train[train.index_of(source_id(c.clip_id))].num_frames for c in dm.copies)  # speed
    assert len(dm.copy_caches["logmel"].clip_ids) == len(train)


def test_a_changed_augment_config_gets_its_own_copies_and_caches(tmp_path, dirs):
    a = dm_of(tmp_path, dirs, *CACHED)
    b = dm_of(tmp_path, dirs, *CACHED, "augment.wave.gain.gain_db=[-3.0,3.0]")
    c = dm_of(tmp_path, dirs, *CACHED, "seed=7")
    paths = [dm.copy_caches["logmel"].path for dm in (a, b, c)]
    assert len(set(paths)) == 3


def test_copies_of_another_config_are_refused_by_key(tmp_path, dirs):
    dm = dm_of(tmp_path, dirs, *CACHED)
    folder = copies_dir(dm.cache_dir, dm.parts["train"], dm.augmenter, dm.seed)
    meta = json.loads((folder / META).read_text())
    try:
        (folder / META).write_text(json.dumps({**meta, "key": "0" * 64}))
        with pytest.raises(CacheError, match="another augmentation config"):
            make_copies(dm.parts["train"], dm.augmenter, dm.seed, dm.cache_dir)
    finally:
        (folder / META).write_text(json.dumps(meta))


# Bad input: refused when the data module is built, before any extraction ---------------------------------
@pytest.mark.parametrize("override, match", [
    ("augment.wave.pitch.semitones=[-13.0,2.0]", "outside"),
    ("augment.wave.speed.factors=[0.0,1.0]", "speed"),
    ("augment.wave.noise.snr_db=[20.0,10.0]", "reversed"),
    ("augment.wave.noise.kinds=[folder]", "folder"),
])
def test_bad_augment_values_are_refused_before_any_cache_is_touched(tmp_path, override, match):
    cache = tmp_path / "cache"
    with pytest.raises((ConfigError, InstantiationException), match=match):
        build_datamodule(cfg_of(tmp_path, (tmp_path / "data", cache), *STANDARD, override), 0)
    assert not cache.exists()


@pytest.mark.parametrize("folder", ["missing", "empty", "unreadable"])
def test_bad_noise_folders_are_refused(tmp_path, folder):
    path = tmp_path / folder
    if folder != "missing":
        path.mkdir()
    if folder == "unreadable":
        (path / "n.wav").write_bytes(b"not audio")
    with pytest.raises(ConfigError, match="noise"):
        build_augment({"wave": {"noise": {"kinds": ["folder"], "folder": str(path)}}})


def test_inconsistent_modes_are_refused(tmp_path, dirs):
    # Online waveform transforms on a model whose only input (eGeMAPS) cannot be recomputed in the loop:
    with pytest.raises((ConfigError, InstantiationException), match="waveform transforms"):
        build_datamodule(compose_cfg([*SMALL, "model=egemaps_mlp", "features=logmel", "augment=pitch"],
                                     tmp_path, *dirs), 0)
    # ... while the log-mel model is fed audio and recomputes its log-mel from the augmented waveform:
    assert fold_plan(cfg_of(tmp_path, dirs, "augment=pitch")).feed.inputs == ("wave",)
    with pytest.raises((ConfigError, InstantiationException), match="copies would equal the originals"):
        build_datamodule(cfg_of(tmp_path, dirs, "augment=spec", "augment.mode=cached"), 0)


# Online mode ----------------------------------------------------------------------------------------
class Recorder:
    """Wraps a transform; records the clip ids of every batch it saw."""

    def __init__(self, inner) -> None:
        self.inner, self.clip_ids, self.changed = inner, [], []

    def __call__(self, batch, generator):
        out = self.inner(batch, generator)
        self.clip_ids += list(batch["clip_id"])
        key = "logmel" if "logmel" in batch else "wave"
        self.changed.append(not torch.equal(out[key], batch[key]))
        return out


def fit_and_test(module, dm, tmp_path):
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(module, datamodule=dm)
    trainer.fit_loss = trainer.callback_metrics["train/loss"]  # the test run below resets callback_metrics
    trainer.validate(module, datamodule=dm, verbose=False)
    trainer.test(module, datamodule=dm, verbose=False)
    return trainer


def test_online_specaugment_on_cached_features_touches_training_batches_only(tmp_path, dirs):
    cfg = cfg_of(tmp_path, dirs, "augment=spec")
    dm = build_datamodule(cfg, 0)
    dm.setup("fit")
    module = build_module(cfg, dm)
    assert module.train_transform is not None and module.feature_transform is None
    module.train_transform = rec = Recorder(module.train_transform)
    trainer = fit_and_test(module, dm, tmp_path)
    train = set(dm.parts["train"].clip_ids)
    assert set(rec.clip_ids) == train and len(rec.clip_ids) == 2 * len(train)  # every training clip, each epoch
    assert all(rec.changed)
    assert torch.isfinite(trainer.fit_loss)


def test_cached_mode_trains_and_never_feeds_held_out_copies(tmp_path, dirs):
    cfg = cfg_of(tmp_path, dirs, *CACHED, "loader.resident=true")
    dm = build_datamodule(cfg, 0)
    dm.setup("fit")
    module = build_module(cfg, dm)
    assert module.train_transform is None  # the copies carry the waveform part already
    seen = []
    module.train_transform = lambda batch, g: seen.extend(batch["clip_id"]) or batch
    fit_and_test(module, dm, tmp_path)
    assert {source_id(c) for c in seen} <= set(dm.parts["train"].clip_ids)
    assert any(COPY_SEP in c for c in seen)


def test_online_waveform_augmentation_from_waves_trains_end_to_end(tmp_path, dirs):
    # The config alone wires it: the log-mel model is fed `wave`, its LogMelUpstream recomputes log-mel from the
    # augmented audio, and SpecAugment masks what the upstream computed.
    cfg = cfg_of(tmp_path, dirs, "augment=standard", "augment.wave.speed.p=1.0", "+augment.features.spec={p:1.0}")
    dm = build_datamodule(cfg, 0)
    assert dm.inputs == ("wave",)
    dm.setup("fit")
    module = build_module(cfg, dm)
    assert isinstance(module.upstream, LogMelUpstream)
    module.train_transform = Recorder(module.train_transform)
    module.feature_transform = Recorder(module.feature_transform)
    trainer = fit_and_test(module, dm, tmp_path)
    train = set(dm.parts["train"].clip_ids)
    for rec in (module.train_transform, module.feature_transform):
        assert set(rec.clip_ids) == train and all(rec.changed)
    assert torch.isfinite(trainer.fit_loss)


def test_online_transform_is_deterministic_per_generator_seed(tmp_path, dirs):
    aug = build_augment({"wave": {"speed": {"p": 1.0}, "noise": {"p": 1.0}}})
    train_tf, _ = training_transforms(aug, has_upstream=True)
    batch = {"wave": torch.randn(4, 8000), "wave_lengths": torch.tensor([8000, 6000, 4000, 7000])}
    runs = [train_tf(batch, torch.Generator().manual_seed(s))["wave"] for s in (1, 1, 2)]
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


def test_nothing_to_do_gives_no_hooks():
    assert training_transforms(None, has_upstream=False) == (None, None)
    assert training_transforms({"name": "none"}, has_upstream=True) == (None, None)
