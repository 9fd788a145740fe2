"""Bad input on the corpus side (issue 8, parts 5 and 7): each kind gets a clear error or listed handling.

Duplicate zip members, silent and cancelling clips, dangling symlinks, NaN and undecodable audio, a clip
in two folders, roots that do not exist, long clips, and clip ids that could name files outside a folder.
"""

from __future__ import annotations

import logging
import os
import shutil
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from omegaconf import OmegaConf

from tests.helpers import complete_corpus_of_links, compose_cfg
from wav2emo.data import ravdess
from wav2emo.data.checks import CorpusReport, scan_audio, silence_reason
from wav2emo.data.corpora import load_corpus
from wav2emo.data.errors import CorpusError
from wav2emo.data.files import find_audio_files
from wav2emo.data.folds import build_folds
from wav2emo.data.manifest import Clip, Manifest, check_clip_id
from wav2emo.data.ravdess import prepare_ravdess


def _copy(src_root: Path, dst_root: Path, n: int | None = None) -> list[Path]:
    out = []
    for f in sorted(src_root.rglob("*.flac"))[:n]:
        dst = dst_root / f.relative_to(src_root)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, dst)
        out.append(dst)
    return out


def _rewrite(path: Path, make) -> None:
    """Replace the audio in ``path`` by ``make(y)`` (y: the original mono samples), same format."""
    y, sr = sf.read(path, dtype="float32")
    sf.write(path, make(y), sr, format="FLAC", subtype="PCM_16")


# ------------------------------------------------------------------------------------------------
# A duplicate member inside the corpus zip
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("second_name", ["same", "dot"])
def test_zip_with_a_member_twice_is_refused_before_extracting(synthetic_corpus, tmp_path, second_name):
    files = sorted(synthetic_corpus.rglob("*.flac"))[:3]
    zip_path = tmp_path / "Audio_Speech_Actors_01-24.zip"
    member = files[0].relative_to(synthetic_corpus).as_posix()
    other = member if second_name == "same" else "./" + member
    with zipfile.ZipFile(zip_path, "w") as zf, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns "Duplicate name"; that is the point
        for f in files:
            zf.write(f, f.relative_to(synthetic_corpus).as_posix())
        zf.writestr(other, files[2].read_bytes())  # another recording under the first clip's name
    with pytest.raises(CorpusError) as err:
        prepare_ravdess(zip_path, require_complete=False)
    msg = str(err.value)
    assert str(zip_path) in msg and member in msg and "more than once" in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == [zip_path.name]  # nothing extracted, no temp left


# ------------------------------------------------------------------------------------------------
# Silent clips and stereo clips whose channels cancel
# ------------------------------------------------------------------------------------------------
@pytest.fixture
def silent_corpus(synthetic_corpus, tmp_path) -> tuple[Path, Path, Path]:
    """The session corpus (24 actors x 8) with one all-zero clip and one stereo clip that cancels."""
    root = tmp_path / "corpus"
    files = _copy(synthetic_corpus, root)
    zero, cancel = files[5], files[40]
    _rewrite(zero, np.zeros_like)
    y, sr = sf.read(cancel, dtype="float32")
    sf.write(cancel, np.stack([y, -y], axis=1), sr, format="FLAC", subtype="PCM_16")
    return root, zero, cancel


def test_silent_and_cancelling_clips_are_refused_by_default(silent_corpus):
    root, zero, cancel = silent_corpus
    with pytest.raises(CorpusError) as err:
        prepare_ravdess(root, require_complete=False)
    msg = str(err.value)
    assert "silent clips" in msg and "on_silent=skip" in msg
    assert f"{zero}: silent (peak -inf dBFS; expected above -60 dBFS)" in msg
    assert str(cancel) in msg and "channels cancel when mixed to mono" in msg


def test_warn_keeps_silent_clips_and_lists_them(silent_corpus):
    root, zero, cancel = silent_corpus
    m = prepare_ravdess(root, require_complete=False, on_silent="warn")
    assert len(m) == 192 and zero.stem in m.clip_ids and cancel.stem in m.clip_ids
    assert {w["clip_id"] for w in m.report.warnings} == {zero.stem, cancel.stem}
    assert not m.report.skipped
    assert any("channels cancel" in line for line in m.report.lines())


def test_skip_leaves_silent_clips_out_and_folds_stay_coherent(silent_corpus):
    root, zero, cancel = silent_corpus
    m = prepare_ravdess(root, require_complete=False, on_silent="skip")
    assert len(m) == 190 and zero.stem not in m.clip_ids and cancel.stem not in m.clip_ids
    reasons = {s["clip_id"]: s["reason"] for s in m.report.skipped}
    assert set(reasons) == {zero.stem, cancel.stem} and "cancel" in reasons[cancel.stem]
    assert m.report.clips == 190 and any("skipped (not in the manifest)" in x for x in m.report.lines())
    # the protocol is unchanged: every actor is still in exactly one fold, the clips are simply absent
    folds = build_folds({"name": "luna_jimenez", "n_dev_actors": 2}, m)
    for split in folds:
        ids = [c.clip_id for part in (split.train, split.dev, split.test) for c in m.filter(part)]
        assert len(ids) == 190 and zero.stem not in ids


def test_a_skipped_clip_counts_as_present_for_require_complete(synthetic_corpus, tmp_path):
    clip = tmp_path / "one.flac"
    shutil.copyfile(sorted(synthetic_corpus.rglob("*.flac"))[0], clip)
    root = complete_corpus_of_links(tmp_path, clip)
    silent = root / "Actor_03" / "03-01-05-02-01-02-03.flac"
    silent.unlink()
    shutil.copyfile(clip, silent)
    _rewrite(silent, np.zeros_like)
    m = prepare_ravdess(root, hash_files=False, on_silent="skip")  # require_complete: 24 x 60
    assert len(m) == 1439 and [s["clip_id"] for s in m.report.skipped] == [silent.stem]


def test_silence_threshold_is_a_setting(synthetic_corpus, tmp_path):
    root = tmp_path / "quiet"
    (clip,) = _copy(synthetic_corpus, root, n=1)
    _rewrite(clip, lambda y: y / np.abs(y).max() * 10 ** (-50 / 20))  # peaks at -50 dBFS
    assert silence_reason(scan_audio(clip), -60) is None
    assert "peak -50.0 dBFS" in silence_reason(scan_audio(clip), -40)
    assert len(prepare_ravdess(root, require_complete=False)) == 1
    with pytest.raises(CorpusError, match="expected above -40 dBFS"):
        prepare_ravdess(root, require_complete=False, silence_dbfs=-40)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (
            "on_silent",
            "maybe",
            r"data\.corpus\.on_silent='maybe'; expected one of \['error', 'warn', 'skip'\]",
        ),
        ("silence_dbfs", 6, r"data\.corpus\.silence_dbfs=6; expected a level in dBFS <= 0"),
        ("max_duration_s", 0, r"data\.corpus\.max_duration_s=0; expected seconds > 0"),
    ],
)
def test_bad_check_options_are_named(synthetic_corpus, key, value, message):
    with pytest.raises(CorpusError, match=message):
        prepare_ravdess(synthetic_corpus, require_complete=False, **{key: value})
    with pytest.raises(CorpusError, match=message):
        load_corpus({"name": "ravdess", "root": str(synthetic_corpus), key: value})


def test_load_corpus_keeps_the_report_beside_the_cached_manifest_and_logs_it(silent_corpus, tmp_path, caplog):
    root, zero, cancel = silent_corpus
    cfg = {"name": "ravdess", "root": str(root), "require_complete": False, "on_silent": "skip"}
    cache = tmp_path / "cache"
    with caplog.at_level(logging.WARNING, logger="wav2emo.data.checks"):
        m = load_corpus(cfg, cache_dir=cache)
    assert len(m) == 190 and str(zero) in caplog.text and "skipped" in caplog.text
    (report_file,) = (cache / "manifests").glob("*.report.json")
    assert {s["clip_id"] for s in CorpusReport.from_json(report_file.read_text()).skipped} == {
        zero.stem,
        cancel.stem,
    }
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="wav2emo.data.checks"):
        again = load_corpus(cfg, cache_dir=cache)  # from the cache: the report is logged again
    assert again.clip_ids == m.clip_ids and str(cancel) in caplog.text
    assert {s["clip_id"] for s in again.report.skipped} == {zero.stem, cancel.stem}
    # another policy is another cache entry, never the skipped manifest reused
    assert len(load_corpus({**cfg, "on_silent": "warn"}, cache_dir=cache)) == 192


# ------------------------------------------------------------------------------------------------
# NaN and undecodable audio are found by the corpus check, not at extraction
# ------------------------------------------------------------------------------------------------
def test_nan_and_truncated_audio_are_found_by_the_corpus_check(synthetic_corpus, tmp_path):
    root = tmp_path / "corpus"
    files = _copy(synthetic_corpus, root, n=4)
    y, sr = sf.read(files[0], dtype="float32")
    y[100:110] = np.nan
    nan_wav = files[0].with_suffix(".wav")
    files[0].unlink()
    sf.write(nan_wav, y, sr, subtype="FLOAT")
    data = files[1].read_bytes()
    files[1].write_bytes(data[: len(data) // 2])  # the header still reads; decoding fails half way
    with pytest.raises(CorpusError) as err:
        prepare_ravdess(root, require_complete=False)
    msg = str(err.value)
    assert "audio that does not decode or is not finite (2)" in msg
    assert f"{nan_wav}: 10 samples are NaN or infinite" in msg
    assert f"{files[1]}: cannot be decoded" in msg


# ------------------------------------------------------------------------------------------------
# Dangling symlinks; linked folders are followed once
# ------------------------------------------------------------------------------------------------
def test_dangling_symlink_is_named_with_its_target(synthetic_corpus, tmp_path):
    root = tmp_path / "corpus"
    files = _copy(synthetic_corpus, root, n=3)
    gone = tmp_path / "elsewhere" / "gone.flac"
    link = files[0].parent / "03-01-08-02-02-02-01.flac"
    link.symlink_to(gone)
    for call in (
        lambda: prepare_ravdess(root, require_complete=False),
        lambda: load_corpus(
            {"name": "ravdess", "root": str(root), "require_complete": False}, cache_dir=tmp_path
        ),
    ):
        with pytest.raises(CorpusError) as err:
            call()
        assert f"{link} -> {gone}" in str(err.value) and "dangling symlink" in str(err.value)
    link.unlink()
    (root / "Actor_05").symlink_to(tmp_path / "no-such-folder")  # a linked actor folder that is gone
    with pytest.raises(CorpusError, match="no-such-folder"):
        prepare_ravdess(root, require_complete=False)
    linked_root = tmp_path / "ravdess-link"  # the corpus root itself is a dangling link
    linked_root.symlink_to(tmp_path / "unmounted" / "ravdess")
    for corpus in ("ravdess", "synthetic"):
        with pytest.raises(CorpusError, match=r"ravdess-link is a dangling symlink to .*unmounted/ravdess"):
            load_corpus({"name": corpus, "root": str(linked_root), "download": True, "generate": True})
    assert not (tmp_path / "unmounted").exists()


def test_linked_folders_are_followed_and_loops_end(synthetic_corpus, tmp_path):
    real = tmp_path / "real"
    _copy(synthetic_corpus, real, n=8)
    root = tmp_path / "corpus"
    root.mkdir()
    (root / "Actor_01").symlink_to(real / "Actor_01", target_is_directory=True)
    (real / "Actor_01" / "loop").symlink_to(root, target_is_directory=True)  # a cycle back to the top
    found = find_audio_files(root)
    assert sorted(p.name for p in found) == sorted(p.name for p in (real / "Actor_01").glob("*.flac"))
    assert len(prepare_ravdess(root, require_complete=False)) == 8


# ------------------------------------------------------------------------------------------------
# A clip in two folders: one problem, not also "missing"
# ------------------------------------------------------------------------------------------------
def test_clip_in_two_folders_is_reported_once_as_duplicate(synthetic_corpus, tmp_path):
    clip = tmp_path / "one.flac"
    shutil.copyfile(sorted(synthetic_corpus.rglob("*.flac"))[0], clip)
    root = complete_corpus_of_links(tmp_path, clip)
    (root / "copies").mkdir()
    other = sorted(synthetic_corpus.rglob("*.flac"))[1]  # other audio: a byte-identical copy is kept once instead
    shutil.copyfile(other, root / "copies" / "03-01-05-02-01-02-07.flac")
    with pytest.raises(CorpusError) as err:
        prepare_ravdess(root, hash_files=False)
    msg = str(err.value)
    assert "problems (1 in all)" in msg and "the same clip id more than once (1)" in msg
    assert "03-01-05-02-01-02-07: Actor_07/03-01-05-02-01-02-07.flac, copies/03-01-05-02-01-02-07.flac" in msg
    assert "missing" not in msg
    # a clip filed under the wrong actor folder is one problem too
    os.unlink(root / "copies" / "03-01-05-02-01-02-07.flac")
    os.rename(
        root / "Actor_07" / "03-01-05-02-01-02-07.flac", root / "Actor_08" / "03-01-05-02-01-02-07.flac"
    )
    with pytest.raises(CorpusError) as err:
        prepare_ravdess(root, hash_files=False)
    assert "problems (1 in all)" in str(err.value) and "missing" not in str(err.value)


# ------------------------------------------------------------------------------------------------
# A root that does not exist is created only where that was asked for
# ------------------------------------------------------------------------------------------------
def _demo_corpus(tmp_path: Path, *overrides: str) -> dict:
    cfg = compose_cfg(
        ["experiment=demo", "data.corpus.clips_per_actor=8", "data.corpus.actors=2", *overrides],
        tmp_path,
        tmp_path / "data",
        tmp_path / "cache",
    )
    return OmegaConf.to_container(cfg.data.corpus, resolve=True)


def test_demo_with_a_root_that_does_not_exist_is_an_error_and_creates_nothing(tmp_path):
    missing = tmp_path / "typo" / "synthetic"
    corpus = _demo_corpus(tmp_path, f"data.corpus.root={missing}")
    with pytest.raises(CorpusError) as err:
        load_corpus(corpus, cache_dir=tmp_path / "cache")
    msg = str(err.value)
    assert f"data.corpus.root={missing} does not exist" in msg and "data.corpus.generate=true" in msg
    assert str(tmp_path / "data") in msg  # says where the default place is
    assert not (tmp_path / "typo").exists() and not (tmp_path / "cache").exists()
    # asked for: generate=true creates it
    corpus = _demo_corpus(tmp_path, f"data.corpus.root={missing}", "data.corpus.generate=true")
    assert len(load_corpus(corpus)) == 16 and (missing / "synthetic.json").is_file()


def test_demo_default_root_and_an_empty_folder_are_generated(tmp_path):
    corpus = _demo_corpus(tmp_path)
    assert corpus["root"] == corpus["default_root"] and not Path(corpus["root"]).exists()
    assert len(load_corpus(corpus)) == 16 and Path(corpus["root"], "synthetic.json").is_file()
    empty = tmp_path / "mine"
    empty.mkdir()
    assert len(load_corpus(_demo_corpus(tmp_path, f"data.corpus.root={empty}"))) == 16
    assert (empty / "synthetic.json").is_file()
    with pytest.raises(CorpusError, match="generate=false"):
        (tmp_path / "empty2").mkdir()
        load_corpus(
            _demo_corpus(tmp_path, f"data.corpus.root={tmp_path / 'empty2'}", "data.corpus.generate=false")
        )
    assert (tmp_path / "empty2").is_dir() and not any((tmp_path / "empty2").iterdir())


def test_ravdess_root_typed_by_hand_is_not_downloaded_into(tmp_path, monkeypatch):
    def no_download(*a, **k):
        raise AssertionError("must not download into a root the user typed")

    monkeypatch.setattr(ravdess, "download_ravdess", no_download)
    cfg = compose_cfg(
        ["data=ravdess", f"data.corpus.root={tmp_path / 'nope' / 'ravdess'}"],
        tmp_path,
        tmp_path / "data",
        tmp_path / "cache",
    )
    corpus = OmegaConf.to_container(cfg.data.corpus, resolve=True)
    assert corpus["download"] == "auto" and corpus["require_complete"] is True
    with pytest.raises(CorpusError, match=r"RAVDESS not found[\s\S]*download=true"):
        load_corpus(corpus)
    assert not (tmp_path / "nope").exists()
    with pytest.raises(AssertionError, match="must not download"):  # the default place may download
        load_corpus({**corpus, "root": corpus["default_root"]})
    with pytest.raises(
        CorpusError, match=r"data\.corpus\.download='sometimes'; expected true, false or auto"
    ):
        load_corpus({**corpus, "download": "sometimes"})


def test_conf_data_declares_the_corpus_check_settings(tmp_path):
    for data in ("ravdess", "synthetic"):
        cfg = compose_cfg(
            [
                f"data={data}",
                "data.corpus.require_complete=false",
                "data.corpus.on_silent=skip",
                "data.corpus.max_duration_s=30",
            ],
            tmp_path,
            tmp_path / "d",
            tmp_path / "c",
        )
        c = cfg.data.corpus
        assert (c.require_complete, c.on_silent, c.silence_dbfs, c.max_duration_s) == (False, "skip", -60, 30)


# ------------------------------------------------------------------------------------------------
# Long clips are listed (the feature extractors decide what to do with them)
# ------------------------------------------------------------------------------------------------
def test_clips_longer_than_max_duration_are_listed_not_refused(synthetic_corpus, tmp_path):
    root = tmp_path / "corpus"
    files = _copy(synthetic_corpus, root, n=3)
    y, sr = sf.read(files[0], dtype="float32")
    sf.write(files[0], np.tile(y, 4), sr, format="FLAC", subtype="PCM_16")
    limit = 1.5 * len(y) / sr
    m = prepare_ravdess(root, require_complete=False, max_duration_s=limit)
    assert len(m) == 3 and [c["clip_id"] for c in m.report.long_clips] == [files[0].stem]
    assert m[m.index_of(files[0].stem)].duration == pytest.approx(4 * len(y) / sr)
    assert f"data.corpus.max_duration_s={limit:g}" in m.report.long_clips[0]["reason"]
    unlimited = prepare_ravdess(root, require_complete=False, max_duration_s=None).report
    assert not unlimited.long_clips and "no duration limit" in unlimited.lines()[0]


# ------------------------------------------------------------------------------------------------
# Part 7: clip ids and manifest paths never name a file outside its folder
# ------------------------------------------------------------------------------------------------
def _clip(clip_id: str) -> Clip:
    return Clip(clip_id, "/x.flac", "c", 1, "male", "neutral", 0, 1, 1, 1, 1.0, 16000, 1, 16000, "")


@pytest.mark.parametrize(
    "bad",
    [
        "../x",
        "../../etc/passwd",
        "/abs/path",
        "a/b",
        "a\\b",
        "..",
        ".",
        ".hidden",
        "",
        " pad",
        "~root",
        "a\nb",
        "x" * 201,
    ],
)
def test_unsafe_clip_ids_are_refused(bad):
    with pytest.raises(ValueError, match="is not a safe name"):
        Manifest([_clip(bad)], name="m")
    with pytest.raises(ValueError, match="is not a safe name"):
        check_clip_id(bad)


def test_manifest_csv_with_a_traversing_clip_id_is_refused_naming_file_and_line(tmp_path):
    path = Manifest([_clip("03-01-01-01-01-01-01"), _clip("03-01-01-01-01-02-01")], name="m").to_csv(
        tmp_path / "m.csv"
    )
    text = path.read_text().replace("03-01-01-01-01-02-01", "../../outside")
    path.write_text(text)
    with pytest.raises(
        ValueError, match=rf"{tmp_path / 'm.csv'} line 3: clip_id '../../outside' is not a safe"
    ):
        Manifest.from_csv(path)
    path.write_text(text.replace("../../outside", "03-01-01-01-01-02-01").replace(",16000,", ",lots,", 1))
    with pytest.raises(ValueError, match=r"m\.csv line 2: invalid literal"):
        Manifest.from_csv(path)


def test_tampered_cached_manifest_is_named_not_used(synthetic_corpus, tmp_path):
    root = tmp_path / "corpus"
    _copy(synthetic_corpus, root, n=3)
    cfg = {"name": "ravdess", "root": str(root), "require_complete": False}
    m = load_corpus(cfg, cache_dir=tmp_path / "cache")
    (cached,) = (tmp_path / "cache" / "manifests").glob("*.csv")
    cached.write_text(cached.read_text().replace(m[0].clip_id + ",", "/etc/evil,", 1))
    with pytest.raises(CorpusError, match=rf"{cached}: the cached manifest[\s\S]*remove both files"):
        load_corpus(cfg, cache_dir=tmp_path / "cache")


def test_zip_member_climbing_out_is_refused(synthetic_corpus, tmp_path):
    clip = sorted(synthetic_corpus.rglob("*.flac"))[0]
    zip_path = tmp_path / "in" / "Audio_Speech_Actors_01-24.zip"
    zip_path.parent.mkdir()
    with zipfile.ZipFile(zip_path, "w") as zf:
        zf.write(clip, "Actor_01/" + clip.name)
        zf.writestr("../../escaped.flac", clip.read_bytes())
    with pytest.raises(CorpusError, match=r"member '\.\./\.\./escaped\.flac' points outside the archive"):
        prepare_ravdess(zip_path, require_complete=False)
    assert not (tmp_path / "escaped.flac").exists() and sorted(p.name for p in zip_path.parent.iterdir()) == [
        zip_path.name
    ]


# ------------------------------------------------------------------------------------------------
# The real copy: the default threshold flags nothing, and the check stays cheap
# ------------------------------------------------------------------------------------------------
@pytest.mark.ravdess
def test_real_ravdess_passes_the_audio_check(ravdess_dir):
    m = prepare_ravdess(ravdess_dir, hash_files=False)
    assert len(m) == 1440 and m.report.clean
    quietest = min(scan_audio(c.path).mono_peak for c in m.filter([9, 20]))  # the quietest actors
    assert -60 + 10 < 20 * np.log10(quietest) < -40  # a margin of over 10 dB below the real clips
