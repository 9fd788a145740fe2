"""features.normalize=speaker in the neural data path: per-speaker statistics of every cached input, label-free,
applied before collate and resident placement, declared in the fold result; the eGeMAPS Standardizer on top."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from tests.helpers import SMALL, compose_cfg
from wav2emo.errors import ConfigError

# (model, features, cached input): every cached feature kind, one vector per clip or frames of any length.
CASES = [("egemaps_mlp", "tiny", "egemaps"), ("mean_linear_logmel", "logmel", "logmel"),
         ("mean_linear", "tiny", "ssl")]


@pytest.fixture(scope="module")
def shared_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("speaker_norm_neural")
    return root / "data", root / "cache"


def _dm(tmp_path, dirs, model, features, *extra, normalize=True):
    from wav2emo.runs.build import build_datamodule

    cfg = compose_cfg([*SMALL, f"model={model}", f"features={features}",
                       *(["features.normalize=speaker"] if normalize else []), *extra], tmp_path, *dirs)
    dm = build_datamodule(cfg, 0)
    dm.setup("fit")
    return cfg, dm


def _frames(item: dict, key: str) -> np.ndarray:
    """An item's input as (frames, *dims) float64: ssl (H, T, D) -> (T, H, D)."""
    x = item[key].double().numpy()
    return x.transpose(1, 0, 2) if key == "ssl" else (x[None] if key == "egemaps" else x)


@pytest.mark.parametrize("model,features,key", CASES, ids=[c[2] for c in CASES])
def test_every_speakers_frames_get_zero_mean_and_unit_std(tmp_path, shared_dirs, model, features, key):
    _, raw_dm = _dm(tmp_path, shared_dirs, model, features, normalize=False)
    _, dm = _dm(tmp_path, shared_dirs, model, features)
    assert dm.describe()["normalize"] == "speaker" and raw_dm.describe()["normalize"] is None
    tol = 2e-2 if key == "ssl" else 1e-4  # the SSL cache (and so its normalised items) is float16
    for part in ("train", "dev", "test"):
        ds, raw = dm.dataset(part), raw_dm.dataset(part)
        by_actor: dict[int, list] = {}
        raw_by_actor: dict[int, list] = {}
        for i in range(len(ds)):
            item = ds[i]
            assert item[key].dtype == raw[i][key].dtype and item[key].shape == raw[i][key].shape
            by_actor.setdefault(item["actor"], []).append(_frames(item, key))
            raw_by_actor.setdefault(item["actor"], []).append(_frames(raw[i], key))
        assert set(by_actor) == set(getattr(dm.split, part))  # every speaker, the test speakers included
        for actor, clips in by_actor.items():
            x, r = np.concatenate(clips), np.concatenate(raw_by_actor[actor])
            varying = r.std(0) > 1e-8  # STD_FLOOR: below it a dimension is constant within the speaker
            np.testing.assert_allclose(x.mean(0), 0, atol=tol)
            np.testing.assert_allclose(x.std(0)[varying], 1, rtol=tol)
            assert np.abs(x[:, ~varying]).max(initial=0) < tol  # constant within the speaker: 0, never NaN
    # The resident path collates the same normalised items onto the device.
    cfg, res = _dm(tmp_path, shared_dirs, model, features, "loader.resident=true")
    resident = res.test_dataloader()
    from wav2emo.feeding.input_strategies import collate

    batch = collate([dm.dataset("test")[i] for i in range(len(dm.dataset("test")))])
    torch.testing.assert_close(resident.tensors[key].cpu(), batch[key])


def test_statistics_never_read_the_labels(tmp_path, shared_dirs, monkeypatch):
    """Permuting every label (test speakers' included) changes nothing the model is fed."""
    import wav2emo.features as features
    import wav2emo.feeding.datamodule as datamodule
    from wav2emo.data.manifest import Manifest
    from wav2emo.feeding import speaker_norm

    # Dev speakers by the fold's own rule, not chosen to cover the classes (folds.dev=auto reads training labels,
    # so permuted labels would move clips between train and dev: a change of split, not of normalisation).
    pinned = ("model.frames=null", "folds.dev=speakers")
    _, dm = _dm(tmp_path, shared_dirs, "fe_vgg_egemaps", "tiny", *pinned)
    before = {part: [dm.dataset(part)[i] for i in range(len(dm.parts[part]))] for part in ("train", "dev", "test")}
    original_corpus, original_features, real = datamodule.load_corpus, features.get_features, {}

    def shuffled(*a, **k):
        real["manifest"] = m = original_corpus(*a, **k)
        labels = np.random.default_rng(1).permutation([c.label for c in m])
        return Manifest([dataclasses.replace(c, label=int(y)) for c, y in zip(m, labels, strict=True)], name=m.name,
                        class_names=m.class_names)

    def same_cache(manifest, *a, **k):  # labels are in the cache key; the audio, hence the features, is the same
        return original_features(real["manifest"], *a, **k)

    monkeypatch.setattr(datamodule, "load_corpus", shuffled)
    monkeypatch.setattr(features, "get_features", same_cache)  # what get_features_many calls
    speaker_norm._MEMO.clear()  # computed again, from the relabelled manifest
    _, again = _dm(tmp_path, shared_dirs, "fe_vgg_egemaps", "tiny", *pinned)
    test_labels = [c.label for c in again.parts["test"]]
    assert test_labels != [it["label"] for it in before["test"]]
    for part, items in before.items():
        for i, item in enumerate(items):
            other = again.dataset(part)[i]
            assert other["clip_id"] == item["clip_id"]
            for key in ("ssl", "egemaps"):
                torch.testing.assert_close(other[key], item[key], rtol=0, atol=0)


@pytest.mark.learning
def test_trains_end_to_end_and_declares_it(tmp_path, shared_dirs):
    """egemaps_mlp: its own Standardizer (training actors only) sits on top of the per-speaker normalisation."""
    from wav2emo.runs.build import build_module
    from wav2emo.runs.experiment import train

    cfg, dm = _dm(tmp_path, shared_dirs, "egemaps_mlp", "tiny")
    mean, std = dm.egemaps_stats()  # of the normalised training features: each speaker 0/1, so all of them too
    varying = std > 1e-3
    np.testing.assert_allclose(mean, 0, atol=1e-5)
    np.testing.assert_allclose(std[varying], 1, rtol=1e-5)
    module = build_module(cfg, dm)
    (standardizer,) = [m for m in module.net.modules() if type(m).__name__ == "Standardizer"]
    assert standardizer.is_fitted
    np.testing.assert_allclose(standardizer.mean.numpy(), mean, atol=1e-6)

    cfg = compose_cfg([*SMALL, "model=egemaps_mlp", "features=tiny", "features.normalize=speaker", "fold=[0,1]",
                       "trainer.max_epochs=2", "logger=none"], tmp_path, *shared_dirs)
    metrics = train(cfg)
    assert np.isfinite(metrics["test/ua"])
    for fold in (0, 1):
        r = json.loads((tmp_path / f"fold_{fold}" / "fold_result.json").read_text())
        assert r["protocol"]["feature_normalization"] == "speaker"
        assert r["protocol"]["reads_test_speakers_unlabelled_audio"] is True
        assert r["split"]["normalize"] == "speaker" and r["test_clips"] > 0
    report = json.loads((tmp_path / "cv_report.json").read_text())
    assert report["protocol"]["normalize"] == "speaker"
    assert report["protocol"]["reads_test_speakers_unlabelled_audio"] is True
    assert "reads the test speakers' unlabelled audio" in (tmp_path / "cv_report.md").read_text()
    # The checkpoint carries the setting: python -m wav2emo.eval rebuilds the same normalised test inputs.
    from wav2emo.runs.testing import evaluate

    r = json.loads((tmp_path / "fold_0" / "fold_result.json").read_text())
    out = tmp_path / "eval"
    ev = evaluate(compose_cfg([f"ckpt_path={r['best_checkpoint']}", "accelerator=cpu"], out, *shared_dirs,
                              config_name="eval"))
    assert ev["split"]["normalize"] == "speaker"
    assert ev["test"]["ua"] == pytest.approx(r["test"]["ua"]) and ev["test"]["wa"] == pytest.approx(r["test"]["wa"])


def test_refused_where_the_model_computes_its_own_features_and_bad_modes(tmp_path, shared_dirs):
    from wav2emo.runs.build import build_datamodule
    from wav2emo.runs.plan import fold_plan

    speaker = "features.normalize=speaker"
    for extra, match in ((["model=layer_weighted", "finetune=top_k", "finetune.k=1", speaker], "finetune=top_k"),
                         (["model=mean_linear", "augment=pitch", speaker], "upstream"),
                         (["model=egemaps_mlp", "features.normalize=global"], "features.normalize='global'")):
        cfg = compose_cfg([*SMALL, *extra], tmp_path, *shared_dirs)
        with pytest.raises(ConfigError, match=match):
            build_datamodule(cfg, 0)
    cfg = compose_cfg([*SMALL, "model=egemaps_mlp", "features.normalize=speaker"], tmp_path, *shared_dirs)
    assert "normalize=speaker" in fold_plan(cfg).tags()
