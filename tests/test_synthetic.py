"""The synthetic corpus: RAVDESS layout, determinism, balance, safety, speech-likeness, learnability."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from wav2emo.data.manifest import sha1_of_file
from wav2emo.data.ravdess import parse_ravdess_name, prepare_ravdess
from wav2emo.data.synthetic import (
    MARKER,
    SyntheticCorpusError,
    generate_synthetic_corpus,
    select_clips,
    synthesize_clip,
)


def hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): sha1_of_file(p) for p in sorted(root.rglob("*.flac"))}


# ------------------------------------------------------------------------------------------------
# Layout and files
# ------------------------------------------------------------------------------------------------
def test_layout_naming_and_marker(synthetic_corpus, synthetic_manifest):
    assert sorted(p.name for p in synthetic_corpus.iterdir()) == [f"Actor_{a:02d}" for a in range(1, 25)] + [
        MARKER
    ]
    for folder in synthetic_corpus.glob("Actor_*"):
        for f in folder.iterdir():
            assert f.suffix == ".flac" and parse_ravdess_name(f.stem)["actor"] == int(folder.name[-2:])
    marker = json.loads((synthetic_corpus / MARKER).read_text())
    assert marker["seed"] == 0 and marker["actors"] == list(range(1, 25)) and marker["clips_per_actor"] == 8
    assert marker["clips"] == len(synthetic_manifest) == 192
    assert sorted(p.name for p in synthetic_corpus.parent.iterdir()) == ["corpus"]  # no temporary folder left


def test_files_are_mono_16k_pcm16_flac_with_realistic_durations(synthetic_manifest):
    info = sf.info(synthetic_manifest[0].path)
    assert (info.format, info.subtype, info.samplerate, info.channels) == ("FLAC", "PCM_16", 16000, 1)
    assert all(c.channels == 1 and c.sample_rate == 16000 for c in synthetic_manifest)
    d = np.array([c.duration for c in synthetic_manifest])
    assert d.min() >= 2.94 and d.max() <= 5.27
    assert d.std() > 0.15 and 3.4 < d.mean() < 4.0
    assert len(np.unique(d)) > 150


def test_actor_count_and_argument_errors(tmp_path):
    root = generate_synthetic_corpus(tmp_path / "two", actors=2, clips_per_actor=1)
    assert sorted(p.name for p in root.glob("Actor_*")) == ["Actor_01", "Actor_02"]
    for kwargs, message in [
        ({"clips_per_actor": 0}, r"clips_per_actor=0; expected 1\.\.60"),
        ({"clips_per_actor": 61}, r"clips_per_actor=61"),
        ({"actors": 25}, r"actors=25"),
        ({"actors": [3, 3]}, r"expected distinct actor ids"),
        ({"actors": [0, 1]}, r"actors=\[0, 1\]"),
        ({"actors": []}, r"actors=\[\]"),
    ]:
        with pytest.raises(SyntheticCorpusError, match=message):
            generate_synthetic_corpus(tmp_path / "bad", **kwargs)
    assert not (tmp_path / "bad").exists()


# ------------------------------------------------------------------------------------------------
# Determinism and safety
# ------------------------------------------------------------------------------------------------
def test_same_seed_same_bytes_other_seed_different(synthetic_corpus, tmp_path):
    a = generate_synthetic_corpus(tmp_path / "a", actors=[3, 4], clips_per_actor=3, workers=1)
    b = generate_synthetic_corpus(tmp_path / "b", actors=[3, 4], clips_per_actor=3, workers=2)
    c = generate_synthetic_corpus(tmp_path / "c", actors=[3, 4], clips_per_actor=3, seed=1)
    assert hashes(a) == hashes(b) and len(hashes(a)) == 6
    assert set(hashes(c)) == set(hashes(a)) and not set(hashes(c).values()) & set(hashes(a).values())
    # a clip does not depend on the subset that made it: the session corpus holds the same bytes
    session = hashes(synthetic_corpus)
    assert all(session[name] == sha for name, sha in hashes(a).items())


def test_same_parameters_return_at_once_and_nothing_is_overwritten(tmp_path):
    root = generate_synthetic_corpus(tmp_path / "c", actors=1, clips_per_actor=2)
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    assert generate_synthetic_corpus(root, actors=[1], clips_per_actor=2) == root
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before
    with pytest.raises(SyntheticCorpusError, match=r"other parameters.*'clips_per_actor': \(2, 3\)"):
        generate_synthetic_corpus(root, actors=1, clips_per_actor=3)
    with pytest.raises(SyntheticCorpusError, match=r"'seed': \(0, 5\)"):
        generate_synthetic_corpus(root, actors=1, clips_per_actor=2, seed=5)
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(SyntheticCorpusError, match=f"{foreign}: exists but holds no {MARKER}"):
        generate_synthetic_corpus(foreign, actors=1, clips_per_actor=1)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "mine"]


# ------------------------------------------------------------------------------------------------
# Subsets
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 7, 8, 13, 24, 36, 40, 59, 60])
def test_subsets_keep_emotions_balanced(n):
    total = Counter()
    for actor in range(1, 25):
        picked = select_clips(actor, n)
        assert len(picked) == len(set(picked)) == n
        counts = Counter(e for e, *_ in picked)
        c = [counts.get(e, 0) for e in range(1, 9)]
        for e, ce in enumerate(c, start=1):  # within one of the largest, unless the emotion ran out of clips
            assert ce >= max(c) - 1 or ce == (4 if e == 1 else 8)
        assert all(not (e == 1 and i == 2) for e, i, _, _ in picked)
        total.update(counts)
    totals = [total[e] for e in range(1, 9)]
    if n <= 32:  # the rotation over 24 actors balances the corpus exactly
        assert len(set(totals)) == 1
    else:
        assert totals[0] == 96 and max(totals[1:]) - min(totals[1:]) <= 3
    if n == 60:
        assert set(select_clips(5, 60)) == {
            (e, i, s, r)
            for e in range(1, 9)
            for i in ((1,) if e == 1 else (1, 2))
            for s in (1, 2)
            for r in (1, 2)
        }


def test_subsets_vary_statements_and_intensities(synthetic_manifest):
    for label in range(8):
        clips = [c for c in synthetic_manifest if c.label == label]
        assert {c.statement for c in clips} == {1, 2}
        assert {c.intensity for c in clips} == ({1} if label == 0 else {1, 2})
        assert len({c.actor % 2 for c in clips}) == 2


# ------------------------------------------------------------------------------------------------
# Speech-likeness and learnability
# ------------------------------------------------------------------------------------------------
def clip_features(y: np.ndarray, sr: int = 16000) -> np.ndarray:
    """Crude per-clip features: duration, speech span, log energy, zero-crossing rate, F0 statistics."""
    hop, win = 160, 640
    frames = np.lib.stride_tricks.sliding_window_view(y, win)[::hop]
    energy = 10 * np.log10((frames**2).mean(axis=1) + 1e-10)
    active = energy > energy.max() - 35
    zcr = (np.abs(np.diff(np.sign(frames), axis=1)) > 0).mean(axis=1)
    fa = frames[active] * np.hanning(win)
    ac = np.fft.irfft(np.abs(np.fft.rfft(fa, n=2 * win, axis=1)) ** 2, axis=1)[:, :win]
    lo, hi = sr // 400, sr // 60
    lag = lo + np.argmax(ac[:, lo:hi], axis=1)
    voiced = ac[np.arange(len(ac)), lag] / (ac[:, 0] + 1e-12) > 0.5
    lf0 = np.log(sr / lag[voiced]) if voiced.sum() > 3 else np.full(4, np.log(150.0))
    idx = np.flatnonzero(active)
    return np.array(
        [
            len(y) / sr,
            (idx[-1] - idx[0]) * hop / sr,
            energy[active].mean(),
            energy[active].std(),
            zcr[active].mean(),
            np.median(lf0),
            np.percentile(lf0, 90) - np.percentile(lf0, 10),
            lf0[-10:].mean() - np.median(lf0),
            voiced.mean(),
        ]
    )


def test_audio_is_speech_like():
    """Silence around the utterance, a clear F0 in the speaker's range, higher for women."""
    f0 = {}
    for actor in (1, 2):
        y = synthesize_clip(0, actor, 1, 1, 1, 1)
        assert np.isfinite(y).all() and y.dtype == np.float32 and np.abs(y).max() <= 1
        lead = np.sqrt(np.mean(y[:4000] ** 2))
        speech = np.sqrt(np.mean(y[18000:30000] ** 2))
        assert 20 * np.log10(speech / lead) > 30
        feats = clip_features(y)
        assert feats[8] > 0.4  # most active frames are periodic (voiced), unlike noise
        f0[actor] = float(np.exp(feats[5]))
    assert 85 < f0[1] < 180 and 160 < f0[2] < 300 and f0[2] > 1.4 * f0[1]
    noise = np.random.default_rng(0).standard_normal(48000).astype(np.float32) * 0.1
    assert clip_features(noise)[8] < 0.1


def test_emotions_are_learnable_across_speakers_but_not_trivially(tmp_path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    root = generate_synthetic_corpus(tmp_path / "c", actors=12, clips_per_actor=24)
    m = prepare_ravdess(root, require_complete=False, hash_files=False)
    x = np.array([clip_features(sf.read(c.path, dtype="float32")[0]) for c in m])
    y = np.array([c.label for c in m])
    actor = np.array([c.actor for c in m])
    predicted = np.empty_like(y)
    for k in range(4):  # speaker-independent: three actors held out at a time
        test = np.isin(actor, np.arange(1, 13)[k::4])
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x[~test], y[~test])
        predicted[test] = clf.predict(x[test])
    accuracy = float((predicted == y).mean())
    print(f"cross-speaker accuracy {accuracy:.3f}")
    assert 0.25 < accuracy < 0.95, accuracy
    per_class = [(predicted[y == k] == k).mean() for k in range(8)]
    assert sum(a > 0.125 for a in per_class) >= 6, per_class


@pytest.mark.slow
def test_full_corpus_is_complete_and_matches_ravdess_statistics(tmp_path):
    root = generate_synthetic_corpus(tmp_path / "full")
    m = prepare_ravdess(root, corpus_name="synthetic")  # require_complete: 24 x 60
    d = np.array([c.duration for c in m])
    assert len(m) == 1440 and d.min() >= 2.94 and d.max() <= 5.27
    assert 3.55 < d.mean() < 3.85 and 0.2 < d.std() < 0.5
    strong = np.mean([c.duration for c in m if c.intensity == 2])
    normal = np.mean([c.duration for c in m if c.intensity == 1 and c.label > 0])
    assert strong > normal
