"""Manifest.class_names, the canonical vocabulary, unlabelled clips, and old manifest CSVs."""

from __future__ import annotations

import csv

import pytest

from wav2emo.data.labels import LabelError, canonical_emotion, ordered_classes
from wav2emo.data.manifest import EMOTIONS, UNLABELLED, Clip, Manifest, UnlabelledError


def clip(i: int, label: int, emotion: str, **kw) -> Clip:
    return Clip(f"c{i}", f"/x/{i}.wav", "toy", 1 + i % 2, "male", emotion, label, 1, 1, 1, 1.0, 16000, 1, 16000,
                f"{i:040x}", **kw)


def test_canonical_vocabulary_and_synonyms():
    assert canonical_emotion("Anger") == "angry" and canonical_emotion(" pleasant surprise ") == "surprised"
    assert canonical_emotion("wut", {"Wut": "anger"}) == "angry"
    with pytest.raises(LabelError, match="'grumpy' is not in the vocabulary"):
        canonical_emotion("grumpy")
    assert ordered_classes({"boredom", "angry", "neutral"}) == ("neutral", "angry", "boredom")
    assert ordered_classes(EMOTIONS) == EMOTIONS  # RAVDESS's order is the canonical order


def test_default_class_names_keep_ravdess_hashes():
    clips = [clip(i, i % 8, EMOTIONS[i % 8]) for i in range(8)]
    a = Manifest(clips)
    b = Manifest(clips, class_names=EMOTIONS)
    assert a.class_names == EMOTIONS and a.content_hash() == b.content_hash()
    other = Manifest(clips, class_names=[*EMOTIONS[:7], "boredom"])
    assert other.content_hash() != a.content_hash()  # a different label set is different data


def test_labels_outside_the_classes_are_refused():
    with pytest.raises(ValueError, match="label 4; expected -1 .* or 0..3"):
        Manifest([clip(0, 4, "angry")], class_names=["neutral", "happy", "sad", "angry"])
    with pytest.raises(ValueError, match="distinct"):
        Manifest([], class_names=["sad", "sad"])


def test_unlabelled_clips_exist_and_training_refuses_them():
    m = Manifest([clip(0, UNLABELLED, ""), clip(1, 2, "sad")], class_names=["neutral", "happy", "sad"])
    assert not m[0].labelled and m[1].labelled and m.unlabelled == ["c0"]
    assert m.class_counts() == {"neutral": 0, "happy": 0, "sad": 1}
    with pytest.raises(UnlabelledError, match="c0"):
        m.require_labels()
    assert m.filter([2]).require_labels() is not None  # the labelled part is fine
    assert m.filter([2]).class_names == m.class_names and m.select(["c1"]).class_names == m.class_names


def test_manifest_csv_round_trip_and_old_csvs_still_read(tmp_path):
    m = Manifest([clip(0, 1, "angry", code="W", speaker="03", session=2), clip(1, UNLABELLED, "")],
                 class_names=["neutral", "angry"])
    back = Manifest.from_csv(m.to_csv(tmp_path / "m.csv"), class_names=m.class_names)
    assert list(back) == list(m) and back.content_hash() == m.content_hash()
    # a manifest CSV written before code/speaker/session existed
    old = tmp_path / "old.csv"
    cols = ["clip_id", "path", "corpus", "actor", "gender", "emotion", "label", "intensity", "statement",
            "repetition", "duration", "sample_rate", "channels", "num_frames", "sha1"]
    with open(old, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        w.writerow(["03-01-05-01-01-01-01", "/x.flac", "ravdess", 1, "male", "angry", 4, 1, 1, 1, 3.5, 16000, 1,
                    56000, "a" * 40])
    (c,) = Manifest.from_csv(old)
    assert (c.label, c.code, c.speaker, c.session) == (4, "", "", 0)
    with pytest.raises(ValueError, match="old.csv: .*label 4"):
        Manifest.from_csv(old, class_names=["neutral", "sad"])


def test_speakers_covering_few_emotions_are_found():
    clips = [clip(0, 0, "neutral"), clip(2, 1, "sad"), clip(4, 2, "angry"), clip(1, 0, "neutral"), clip(3, 0, "neutral")]
    m = Manifest(clips, class_names=["neutral", "sad", "angry"])  # actor 1: three emotions; actor 2: one
    assert m.emotions_by_speaker() == {1: ("neutral", "sad", "angry"), 2: ("neutral",)}
    assert m.narrow_speakers() == {2: ("neutral",)} and m.narrow_speakers(1) == {}
