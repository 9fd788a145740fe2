"""RAVDESS recipe: name parsing, corpus checks, zip input, load_corpus, and the real copy when present."""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.helpers import complete_corpus_of_links
from wav2emo.data import ravdess
from wav2emo.data.audio import load_audio
from wav2emo.data.corpora import load_corpus
from wav2emo.data.errors import CorpusError
from wav2emo.data.fetching import EXTRACT_MARKER
from wav2emo.data.manifest import EMOTIONS, Manifest, sha1_of_file
from wav2emo.data.ravdess import (
    expected_combinations,
    parse_ravdess_name,
    prepare_ravdess,
)

REAL_STEREO = [
    "Actor_01/03-01-02-01-01-02-01",
    "Actor_01/03-01-08-01-02-02-01",
    "Actor_05/03-01-02-01-02-02-05",
    "Actor_20/03-01-03-01-02-01-20",
    "Actor_20/03-01-06-01-01-02-20",
]


# ------------------------------------------------------------------------------------------------
# Names
# ------------------------------------------------------------------------------------------------
def test_parse_valid_name():
    meta = parse_ravdess_name("03-01-05-02-01-02-12")
    assert meta == {
        "modality": 3,
        "vocal_channel": 1,
        "emotion_code": 5,
        "emotion": "angry",
        "label": 4,
        "intensity": 2,
        "statement": 1,
        "repetition": 2,
        "actor": 12,
        "gender": "female",
    }
    assert parse_ravdess_name("03-01-01-01-02-01-01")["gender"] == "male"
    assert parse_ravdess_name("03-01-08-01-01-01-24")["emotion"] == "surprised"


@pytest.mark.parametrize(
    ("stem", "message"),
    [
        ("03-01-05-02-01-02", "expected MM-VV-EE-II-SS-RR-AA"),
        ("03-01-05-02-01-02-12-01", "expected MM-VV-EE-II-SS-RR-AA"),
        ("3-1-5-2-1-2-12", "expected MM-VV-EE-II-SS-RR-AA"),
        ("03-01-05-02-01-02-1a", "expected MM-VV-EE-II-SS-RR-AA"),
        ("01-01-05-02-01-02-12", r"modality 01; expected 03"),
        ("03-02-05-02-01-02-12", r"vocal channel 02; expected 01"),
        ("03-01-09-02-01-02-12", r"emotion 09; expected 01\.\.08"),
        ("03-01-00-01-01-02-12", r"emotion 00; expected 01\.\.08"),
        ("03-01-05-03-01-02-12", r"intensity 03"),
        ("03-01-01-02-01-02-12", "no strong neutral"),
        ("03-01-05-02-03-02-12", r"statement 03"),
        ("03-01-05-02-01-00-12", r"repetition 00"),
        ("03-01-05-02-01-02-25", r"actor 25; expected 01\.\.24"),
        ("03-01-05-02-01-02-00", r"actor 00"),
    ],
)
def test_parse_invalid_names(stem, message):
    with pytest.raises(CorpusError, match=message) as err:
        parse_ravdess_name(stem)
    assert stem in str(err.value)


def test_expected_combinations():
    combos = expected_combinations()
    assert len(combos) == len(set(combos)) == 60
    assert sum(c[0] == 1 for c in combos) == 4 and all(c[1] == 1 for c in combos if c[0] == 1)


# ------------------------------------------------------------------------------------------------
# prepare_ravdess on the synthetic corpus
# ------------------------------------------------------------------------------------------------
def test_prepare_fills_every_field(synthetic_manifest, synthetic_corpus):
    m = synthetic_manifest
    assert len(m) == 24 * 8 and m.actors == list(range(1, 25)) and m.name == "synthetic"
    assert [(c.actor, c.clip_id) for c in m] == sorted((c.actor, c.clip_id) for c in m)
    assert np.bincount([c.label for c in m], minlength=8).tolist() == [24] * 8
    for c in m:
        meta = parse_ravdess_name(c.clip_id)
        assert Path(c.path).is_file() and Path(c.path).stem == c.clip_id
        assert Path(c.path).parent.name == f"Actor_{c.actor:02d}"
        assert (c.corpus, c.actor, c.label, c.emotion) == (
            "synthetic",
            meta["actor"],
            meta["label"],
            EMOTIONS[c.label],
        )
        assert c.gender == ("male" if c.actor % 2 else "female")
        assert (c.intensity, c.statement, c.repetition) == (
            meta["intensity"],
            meta["statement"],
            meta["repetition"],
        )
        assert (c.sample_rate, c.channels) == (16000, 1)
        assert c.duration == pytest.approx(c.num_frames / 16000)
    first = m[0]
    assert first.sha1 == sha1_of_file(first.path)
    assert sf.info(first.path).frames == first.num_frames
    assert m.genders() == {a: ("male" if a % 2 else "female") for a in range(1, 25)}


def _copy_clips(src_root: Path, dst_root: Path, n: int | None = None) -> list[Path]:
    files = sorted(src_root.rglob("*.flac"))[:n]
    out = []
    for f in files:
        dst = dst_root / f.relative_to(src_root)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, dst)
        out.append(dst)
    return out


def test_prepare_accepts_other_extensions_and_is_recursive(synthetic_corpus, tmp_path):
    root = tmp_path / "nested" / "deeper"
    clip = sorted(synthetic_corpus.rglob("*.flac"))[0]
    y, sr = sf.read(clip)
    (root / "Actor_01").mkdir(parents=True)
    sf.write(root / "Actor_01" / (clip.stem + ".wav"), y, sr, subtype="PCM_16")
    (root / "README.txt").write_text("not audio, ignored")
    m = prepare_ravdess(tmp_path, require_complete=False)
    assert m.clip_ids == [clip.stem] and m[0].path.endswith(".wav")


def test_problems_are_collected_and_reported_together(synthetic_corpus, tmp_path):
    root = tmp_path / "broken"
    good = _copy_clips(synthetic_corpus, root, n=3)
    (root / "Actor_01" / "03-01-05-02-01-01.flac").write_bytes(good[0].read_bytes())  # bad name
    (root / "Actor_01" / "03-01-01-02-01-01-01.flac").write_bytes(good[0].read_bytes())  # strong neutral
    (root / "Actor_01" / "03-01-04-01-01-01-02.flac").write_bytes(
        good[0].read_bytes()
    )  # actor 02 in Actor_01
    (root / "elsewhere").mkdir()
    (root / "elsewhere" / good[1].name).write_bytes(good[2].read_bytes())  # the same clip id twice, other audio
    (root / "Actor_01" / "03-01-06-01-01-01-01.flac").write_text("I am text, not FLAC\n")  # unreadable
    with pytest.raises(CorpusError) as err:
        prepare_ravdess(root)
    msg = str(err.value)
    assert "bad file names (2)" in msg
    assert "03-01-05-02-01-01.flac" in msg and "no strong neutral" in msg
    assert "actor field disagrees with the Actor_XX folder (1)" in msg and "folder says 01" in msg
    assert "the same clip id more than once (1)" in msg and good[1].stem in msg
    assert "unreadable files (1)" in msg and "03-01-06-01-01-01-01.flac" in msg
    with pytest.raises(CorpusError, match=r"unreadable files \(1\)"):  # broken audio: repaired, not hidden
        prepare_ravdess(root, require_complete=False)
    (root / "Actor_01" / "03-01-06-01-01-01-01.flac").unlink()
    m = prepare_ravdess(root, require_complete=False)  # names and layout set aside and listed, the rest used
    assert sorted(m.clip_ids) == sorted(p.stem for p in good if p.stem != good[1].stem)
    kinds = sorted(a["problem"] for a in m.report.set_aside)
    assert kinds == ["actor field disagrees with the Actor_XX folder", "bad file names", "bad file names",
                     "the same clip id more than once"]


def test_many_problems_are_listed_up_to_ten(synthetic_corpus, tmp_path):
    root = tmp_path / "many"
    (root / "x").mkdir(parents=True)
    for i in range(15):
        (root / "x" / f"clip{i:02d}.flac").write_text("text")
    with pytest.raises(CorpusError, match=r"bad file names \(15\)[\s\S]*and 5 more"):
        prepare_ravdess(root)
    with pytest.raises(CorpusError, match="no usable RAVDESS clips"):
        prepare_ravdess(root, require_complete=False)


def test_empty_folder_and_missing_source(tmp_path):
    with pytest.raises(CorpusError, match="no audio files found"):
        prepare_ravdess(tmp_path, require_complete=False)
    with pytest.raises(CorpusError, match=r"does not exist.*zenodo"):
        prepare_ravdess(tmp_path / "nothing")
    (tmp_path / "plain.txt").write_text("x")
    with pytest.raises(CorpusError, match="expected a folder of audio files or a zip"):
        prepare_ravdess(tmp_path / "plain.txt")


def test_require_complete_accepts_24_by_60_and_names_what_is_missing(synthetic_corpus, tmp_path):
    clip = tmp_path / "one.flac"
    shutil.copyfile(sorted(synthetic_corpus.rglob("*.flac"))[0], clip)
    root = complete_corpus_of_links(tmp_path, clip)
    m = prepare_ravdess(root, hash_files=False)
    assert len(m) == 1440 and m.actors == list(range(1, 25)) and all(c.sha1 == "" for c in m)
    assert [len(m.filter([a])) for a in m.actors] == [60] * 24
    (root / "Actor_07" / "03-01-05-02-01-02-07.flac").unlink()
    shutil.rmtree(root / "Actor_24")
    with pytest.raises(CorpusError) as err:
        prepare_ravdess(root, hash_files=False)
    msg = str(err.value)
    assert "missing actors" in msg and "actors 24" in msg
    assert "missing clips (expected 60 per actor) (1)" in msg and "03-01-05-02-01-02-07" in msg
    assert len(prepare_ravdess(root, require_complete=False, hash_files=False)) == 1440 - 61


def test_zip_round_trip(synthetic_corpus, tmp_path):
    folder = tmp_path / "subset"
    files = _copy_clips(synthetic_corpus, folder, n=6)
    zip_path = tmp_path / "Audio_Speech_Actors_01-24.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        for f in files:
            zf.write(f, f.relative_to(folder).as_posix())
    from_folder = prepare_ravdess(folder, require_complete=False)
    from_zip = prepare_ravdess(zip_path, require_complete=False)
    extracted = tmp_path / "Audio_Speech_Actors_01-24"
    assert (extracted / EXTRACT_MARKER).is_file()
    assert all(Path(c.path).is_relative_to(extracted) for c in from_zip)
    assert from_zip.content_hash() == from_folder.content_hash() and len(from_zip) == 6
    assert [c.sha1 for c in from_zip] == [c.sha1 for c in from_folder]
    # a second call reuses the extraction; no temporary folders are left behind
    mtime = extracted.stat().st_mtime_ns
    assert prepare_ravdess(zip_path, require_complete=False).content_hash() == from_folder.content_hash()
    assert extracted.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "Audio_Speech_Actors_01-24",
        "Audio_Speech_Actors_01-24.zip",
        "subset",
    ]
    # an explicit extract_dir, and a folder that wav2emo did not extract is refused
    other = prepare_ravdess(zip_path, require_complete=False, extract_dir=tmp_path / "x" / "y")
    assert other.content_hash() == from_folder.content_hash()
    with pytest.raises(CorpusError, match="was not extracted by wav2emo"):
        prepare_ravdess(zip_path, require_complete=False, extract_dir=folder)


def test_corrupt_zip_is_refused(tmp_path):
    bad = tmp_path / "Audio_Speech_Actors_01-24.zip"
    bad.write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    with pytest.raises(CorpusError, match="expected a folder of audio files or a zip"):
        prepare_ravdess(bad)
    assert sorted(p.name for p in tmp_path.iterdir()) == [bad.name]


# ------------------------------------------------------------------------------------------------
# load_corpus
# ------------------------------------------------------------------------------------------------
def test_load_corpus_synthetic_generates_and_caches(tmp_path, monkeypatch):
    cfg = {
        "corpus": {
            "name": "synthetic",
            "root": str(tmp_path / "syn"),
            "generate": True,  # a root that does not exist is created only when asked
            "download": False,
            "seed": 3,
            "actors": 2,
            "clips_per_actor": 4,
        }
    }
    cache = tmp_path / "cache"
    m = load_corpus(cfg, cache_dir=cache)
    assert len(m) == 8 and m.actors == [1, 2] and m.name == "synthetic" and all(c.sha1 for c in m)
    assert len(list((cache / "manifests").glob("*.csv"))) == 1

    def no_prepare(*a, **k):
        raise AssertionError("the cached manifest should have been used")

    monkeypatch.setattr(ravdess, "prepare_ravdess", no_prepare)
    again = load_corpus(cfg["corpus"], cache_dir=cache)
    assert again.content_hash() == m.content_hash() and [c.path for c in again] == [c.path for c in m]
    # a changed file gives a new key (and so a fresh prepare)
    os.utime(m[0].path, ns=(1, 1))
    with pytest.raises(AssertionError, match="cached manifest"):
        load_corpus(cfg, cache_dir=cache)
    monkeypatch.undo()
    load_corpus(cfg, cache_dir=cache)
    assert len(list((cache / "manifests").glob("*.csv"))) == 2


def test_load_corpus_ravdess_missing_root_says_how_to_get_it(tmp_path):
    cfg = {"name": "ravdess", "root": str(tmp_path / "ravdess"), "download": False, "actors": None}
    with pytest.raises(
        CorpusError, match=r"RAVDESS not found[\s\S]*zenodo\.org/records/1188976[\s\S]*download=true"
    ):
        load_corpus(cfg)
    assert not (tmp_path / "ravdess").exists()
    with pytest.raises(CorpusError, match="expected one of"):
        load_corpus({"name": "mystery", "root": str(tmp_path)})


def test_load_corpus_ravdess_zip_root_and_actor_filter(synthetic_corpus, tmp_path):
    folder = tmp_path / "subset"
    files = _copy_clips(synthetic_corpus, folder, n=20)
    zip_path = tmp_path / "dl" / "Audio_Speech_Actors_01-24.zip"
    zip_path.parent.mkdir()
    with zipfile.ZipFile(zip_path, "w") as zf:
        for f in files:
            zf.write(f, f.relative_to(folder).as_posix())
    cfg = {
        "name": "ravdess",
        "root": str(zip_path),
        "download": False,
        "actors": [2],
        "require_complete": False,
    }
    m = load_corpus(cfg, cache_dir=tmp_path / "cache")
    assert m.actors == [2] and len(m) == 8 and m[0].corpus == "ravdess"
    with pytest.raises(CorpusError, match=r"actors \[9\] are not in"):
        load_corpus({**cfg, "actors": [2, 9]})


# ------------------------------------------------------------------------------------------------
# The real copy (skipped when absent)
# ------------------------------------------------------------------------------------------------
@pytest.mark.ravdess
def test_real_ravdess(ravdess_dir):
    m = prepare_ravdess(ravdess_dir)
    assert len(m) == 1440 and m.actors == list(range(1, 25))
    assert [len(m.filter([a])) for a in m.actors] == [60] * 24
    assert np.bincount([c.label for c in m]).tolist() == [96] + [192] * 7
    stereo = sorted(f"Actor_{c.actor:02d}/{c.clip_id}" for c in m if c.channels == 2)
    assert stereo == sorted(REAL_STEREO)
    for name in REAL_STEREO:
        clip = m[m.index_of(name.split("/")[1])]
        y = load_audio(clip.path)
        assert y.ndim == 1 and y.dtype == np.float32 and len(y) == clip.num_frames
    durations = np.array([c.duration for c in m])
    assert durations.min() == pytest.approx(2.94, abs=0.01) and durations.max() == pytest.approx(
        5.27, abs=0.01
    )
    assert durations.mean() == pytest.approx(3.70, abs=0.01)
    assert all(c.sample_rate == 16000 and len(c.sha1) == 40 for c in m)


@pytest.mark.ravdess
def test_real_ravdess_through_load_corpus_with_cache(ravdess_dir, tmp_path):
    cfg = {"name": "ravdess", "root": str(ravdess_dir), "download": False, "actors": [1, 2, 3]}
    m = load_corpus(cfg, cache_dir=tmp_path)
    assert m.actors == [1, 2, 3] and len(m) == 180
    full = Manifest.from_csv(next((tmp_path / "manifests").glob("ravdess-*.csv")))
    assert len(full) == 1440
