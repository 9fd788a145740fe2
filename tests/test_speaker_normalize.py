"""Per-speaker normalisation (features.normalize=speaker): statistics, shapes, label-freeness, warning, reports."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from wav2emo.features.normalize import (
    NarrowSpeakerWarning,
    SpeakerStats,
    check_mode,
    normalize_by_speaker,
    protocol_entry,
    warn_narrow_speakers,
)


def _speaker_clips(rng, speakers, shape, frames=(5, 40)):
    """Per-clip arrays whose speakers differ strongly in offset and scale."""
    clips, spk = [], []
    for s in speakers:
        offset, scale = rng.normal(0, 50, shape), rng.uniform(0.1, 20, shape)
        for _ in range(int(rng.integers(3, 7))):
            clips.append(offset + scale * rng.standard_normal((int(rng.integers(*frames)), *shape)))
            spk.append(s)
    return clips, spk


def test_vectors_get_zero_mean_unit_std_within_every_speaker():
    rng = np.random.default_rng(0)
    clips, spk = _speaker_clips(rng, ["a", "b", 7], (6,), frames=(1, 2))
    x = np.concatenate(clips)  # (N, 6) vectors, one row per clip
    out = normalize_by_speaker(x, spk, dtype=np.float64)
    assert isinstance(out, np.ndarray) and out.shape == x.shape
    spk = np.array(spk, dtype=object)
    for s in ("a", "b", 7):
        rows = out[spk == s]
        np.testing.assert_allclose(rows.mean(0), 0, atol=1e-9)
        np.testing.assert_allclose(rows.std(0), 1, rtol=1e-9)
        # Only that speaker's own clips matter: normalising it alone gives the same rows.
        np.testing.assert_allclose(normalize_by_speaker(x[spk == s], [s] * int((spk == s).sum()), dtype=np.float64),
                                   rows, rtol=1e-9, atol=1e-9)
    # The global scale of the input is gone: speakers' raw means differed by tens, now they agree.
    assert np.abs(x[spk == "a"].mean(0) - x[spk == "b"].mean(0)).max() > 1


@pytest.mark.parametrize("shape", [(8,), (3, 4)], ids=["logmel_TxM", "ssl_TxHxD"])
def test_frame_features_pool_frames_over_a_speakers_clips(shape):
    rng = np.random.default_rng(1)
    clips, spk = _speaker_clips(rng, [1, 2, 3], shape)
    out = normalize_by_speaker(clips, spk, dtype=np.float64)
    assert isinstance(out, list) and [o.shape for o in out] == [c.shape for c in clips]
    for s in (1, 2, 3):
        frames = np.concatenate([o for o, t in zip(out, spk, strict=True) if t == s])
        np.testing.assert_allclose(frames.mean(0), 0, atol=1e-9)  # per (layer, dim) for SSL stacks
        np.testing.assert_allclose(frames.std(0), 1, rtol=1e-9)
    # Frames are pooled (long clips weigh more): not the mean of per-clip means.
    one = [c for c, t in zip(clips, spk, strict=True) if t == 1]
    stats = SpeakerStats.fit(one, [1] * len(one))
    pooled = np.concatenate(one)
    np.testing.assert_allclose(stats.mean_std(1)[0], pooled.mean(0), rtol=1e-10)
    np.testing.assert_allclose(stats.mean_std(1)[1], pooled.std(0), rtol=1e-9)
    assert stats.frames(1) == len(pooled)


def test_streaming_stats_are_precise_for_large_offsets_and_constant_dims():
    rng = np.random.default_rng(2)
    x = 1e5 + rng.standard_normal((500, 3))  # float64 sums of squares without a shift would lose digits
    x[:, 2] = 42.0  # constant within the speaker
    stats = SpeakerStats()
    for chunk in np.array_split(x, 7):
        stats.add("s", chunk)
    mean, std = stats.mean_std("s")
    np.testing.assert_allclose(mean, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(std[:2], x[:, :2].std(0), rtol=1e-6)
    out = stats.transform("s", x[:4], dtype=np.float64)
    assert np.isfinite(out).all() and np.all(out[:, 2] == 0)
    with pytest.raises(KeyError, match="speaker 'nobody'"):
        stats.transform("nobody", x[:1])
    with pytest.raises(ValueError, match="feature shape"):
        stats.add("s", np.zeros((2, 4)))
    with pytest.raises(ValueError, match="NaN"):
        stats.add("t", np.full((2, 3), np.nan))
    with pytest.raises(ValueError, match="3 clips but 2 speakers"):
        normalize_by_speaker(np.zeros((3, 2)), ["a", "b"])


def test_modes_and_protocol_entry():
    assert check_mode(None) is None and check_mode("none") is None and check_mode("speaker") == "speaker"
    with pytest.raises(ValueError, match=r"features.normalize='global': expected 'speaker'"):
        check_mode("global")
    assert protocol_entry("speaker")["reads_test_speakers_unlabelled_audio"] is True
    assert protocol_entry(None) == {"feature_normalization": None, "reads_test_speakers_unlabelled_audio": False}


def test_warning_when_a_speakers_clips_cover_only_one_or_two_emotions():
    speakers = [1, 1, 1, 2, 2, 2, 2, 3]
    labels = [0, 1, 2, 4, 4, 5, 4, 6]
    with pytest.warns(NarrowSpeakerWarning, match=r"2 speaker\(s\).*speaker 2: \['angry', 'fearful'\].*speaker 3"):
        narrow = warn_narrow_speakers(speakers, labels, ["neutral", "calm", "happy", "sad", "angry", "fearful",
                                                         "disgust", "surprised"])
    assert narrow == {2: [4, 5], 3: [6]}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # three emotions each: no warning at all
        assert warn_narrow_speakers([1, 1, 1, 2, 2, 2], [0, 1, 2, 3, 4, 5]) == {}


# --- in the baselines -------------------------------------------------------------------------------------


@pytest.fixture
def dirs(tmp_path_factory):
    from tests.test_sklearn_train import shared_dirs

    return shared_dirs(tmp_path_factory)


def test_baseline_features_are_normalised_per_actor_and_label_free(tmp_path, dirs, monkeypatch):
    from tests.test_baselines import baseline_cfg
    from wav2emo.baselines.runner import load_fold_data

    # folds.dev=speakers: the split must not depend on the labels this test permutes (dev=auto picks dev speakers
    # that cover the training classes, which reads the training labels)
    raw = load_fold_data(baseline_cfg(tmp_path, dirs, "model=logreg", "fold=0", "folds.dev=speakers"), 0)
    normed = load_fold_data(baseline_cfg(tmp_path, dirs, "model=logreg", "fold=0", "features.normalize=speaker",
                                         "folds.dev=speakers"), 0)
    assert raw["protocol"]["feature_normalization"] is None
    assert normed["protocol"]["feature_normalization"] == "speaker"
    assert normed["protocol"]["reads_test_speakers_unlabelled_audio"] is True
    for part in ("train", "dev", "test"):
        r, n = raw["parts"][part], normed["parts"][part]
        assert [c.clip_id for c in r["clips"]] == [c.clip_id for c in n["clips"]]
        np.testing.assert_array_equal(r["y"], n["y"])
        for actor in np.unique(n["actor"]):
            rows = n["x"][n["actor"] == actor]
            varying = r["x"][r["actor"] == actor].std(0) > 1e-6
            np.testing.assert_allclose(rows.mean(0), 0, atol=1e-6)
            np.testing.assert_allclose(rows.std(0)[varying], 1, rtol=1e-5)
            # Exactly that actor's raw vectors standardised with its own statistics.
            np.testing.assert_allclose(rows, normalize_by_speaker(r["x"][r["actor"] == actor],
                                                                  [actor] * len(rows), dtype=np.float64))
    # Label-free: with every label permuted (content hash aside, same audio) the features are identical.
    import dataclasses

    import wav2emo.data.corpora as corpora
    import wav2emo.features as features
    from wav2emo.data.manifest import Manifest

    original, original_features, real = corpora.load_corpus, features.get_features, {}

    def shuffled(*a, **k):
        real["manifest"] = m = original(*a, **k)
        labels = np.random.default_rng(0).permutation([c.label for c in m])
        return Manifest([dataclasses.replace(c, label=int(y)) for c, y in zip(m, labels, strict=True)], name=m.name)

    def same_cache(manifest, *a, **k):  # labels are in the cache key; the audio, hence the features, is the same
        return original_features(real["manifest"], *a, **k)

    monkeypatch.setattr(corpora, "load_corpus", shuffled)
    monkeypatch.setattr(features, "get_features", same_cache)
    again = load_fold_data(baseline_cfg(tmp_path, dirs, "model=logreg", "fold=0", "features.normalize=speaker",
                                        "folds.dev=speakers"), 0)
    assert not np.array_equal(again["parts"]["test"]["y"], normed["parts"]["test"]["y"])
    for part in ("train", "dev", "test"):
        np.testing.assert_array_equal(again["parts"][part]["x"], normed["parts"][part]["x"])


def test_reports_declare_it(tmp_path, dirs):
    from tests.test_baselines import baseline_cfg
    from wav2emo.baselines.runner import run_baselines

    run_baselines(baseline_cfg(tmp_path, dirs, "model=logreg", "fold=[0,1]", "features.normalize=speaker"))
    for fold in (0, 1):
        r = json.loads((tmp_path / f"fold_{fold}" / "fold_result.json").read_text())
        assert r["protocol"]["feature_normalization"] == "speaker"
        assert r["protocol"]["reads_test_speakers_unlabelled_audio"] is True
    report = json.loads((tmp_path / "cv_report.json").read_text())
    assert report["protocol"]["feature_normalization"] == "speaker"
    assert report["protocol"]["reads_test_speakers_unlabelled_audio"] is True
    md = (tmp_path / "cv_report.md").read_text()
    assert "feature normalisation: speaker" in md and "reads the test speakers' unlabelled audio" in md


def test_bad_mode_is_a_config_error(tmp_path, dirs):
    from tests.test_baselines import baseline_cfg
    from wav2emo.baselines.runner import run_baselines
    from wav2emo.errors import ConfigError

    with pytest.raises(ConfigError, match="features.normalize='global'"):
        run_baselines(baseline_cfg(tmp_path, dirs, "model=logreg", "fold=0", "features.normalize=global"))


def test_a_report_rebuilt_from_the_folds_keeps_the_declaration(tmp_path, dirs):
    """`python -m wav2emo.report` rewrites cv_report from the fold results alone: the protocol section stays."""
    from tests.test_baselines import baseline_cfg
    from wav2emo.baselines.runner import run_baselines
    from wav2emo.report import main

    run_baselines(baseline_cfg(tmp_path, dirs, "model=logreg", "fold=[0,1]", "features.normalize=speaker"))
    first = (tmp_path / "cv_report.md").read_text()
    (tmp_path / "cv_report.md").unlink()
    (tmp_path / "cv_report.json").unlink()
    main([str(tmp_path)])
    report = json.loads((tmp_path / "cv_report.json").read_text())
    assert report["protocol"]["feature_normalization"] == "speaker"
    assert report["protocol"]["hyperparameter_selection"].startswith(("dev in folds", "inner_cv in folds"))
    md = (tmp_path / "cv_report.md").read_text()
    assert md.count("## Protocol (features)") == 1 and md.count("feature normalisation: speaker") == 1
    assert "reads the test speakers' unlabelled audio" in md and "hyperparameter_selection" in md
    assert first.count("## Protocol (features)") == 1
