"""Corpora as released (issue 20): known release defects handled by default in each corpus's exact layout,
require_complete=false sets aside instead of stopping, and every recipe carries its usual fold protocol."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hydra import compose, initialize_config_dir

from tests.corpus_trees import crema_d_tree, emodb_tree, emovo_tree, savee_tree, tone
from wav2emo.data import crema_d, emovo, savee
from wav2emo.data.corpora import load_corpus
from wav2emo.data.errors import CorpusError
from wav2emo.data.folds import assemble_fold, build_folds, fold_count
from wav2emo.data.registry import Totals

CONF = Path(__file__).resolve().parents[1] / "conf"


def _partial(totals: Totals, n: int) -> Totals:
    return Totals(files=n, speakers=totals.speakers, classes=totals.classes)


def _silent(path: Path, seconds: float = 0.1, sr: int = 16000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.zeros(int(seconds * sr), np.float32), sr, subtype="PCM_16")
    return path


# ------------------------------------------------------------------------------------------------
# CREMA-D: 1040_ITH_SAD_X.wav (misnamed) and 1076_MTI_SAD_XX.wav (no audio), in AudioWAV/ as released
# ------------------------------------------------------------------------------------------------
def test_crema_d_release_defects_are_handled_by_default(tmp_path, monkeypatch):
    root = crema_d_tree(tmp_path / "CREMA-D", actors=(1040, 1076))
    tone(root / "AudioWAV" / "1040_ITH_SAD_X.wav", seed=7)
    _silent(root / "AudioWAV" / "1076_MTI_SAD_XX.wav")
    totals = Totals(files=14, speakers=("1040", "1076"), classes=crema_d.CREMA_D_TOTALS.classes)
    monkeypatch.setattr(crema_d, "CREMA_D_TOTALS", totals)
    m = crema_d.prepare_crema_d(root)  # no flags: the silent clip is not a stop, the misnamed file is read
    assert "1040_ITH_SAD_XX" in m.clip_ids and "1076_MTI_SAD_XX" not in m.clip_ids and len(m) == 13
    c = m[m.index_of("1040_ITH_SAD_XX")]
    assert (c.emotion, c.speaker) == ("sad", "1040") and c.path.endswith("1040_ITH_SAD_X.wav")
    applied = {Path(d["file"]).name: d["action"] for d in m.report.defects}
    assert applied == {"1040_ITH_SAD_X.wav": "read as 1040_ITH_SAD_XX",
                       "1076_MTI_SAD_XX.wav": "set aside (silent (peak -inf dBFS; expected above -60 dBFS))"}
    assert "known defect of the release" in "\n".join(m.report.lines())


def test_crema_d_known_silent_clip_with_audio_is_kept_and_an_unknown_silent_clip_still_stops(tmp_path, monkeypatch):
    root = crema_d_tree(tmp_path / "c", actors=(1076,))
    tone(root / "AudioWAV" / "1076_MTI_SAD_XX.wav", seed=3)  # a copy where the clip has its audio
    monkeypatch.setattr(crema_d, "CREMA_D_TOTALS", None)
    m = crema_d.prepare_crema_d(root)
    assert "1076_MTI_SAD_XX" in m.clip_ids and not m.report.defects
    _silent(root / "AudioWAV" / "1076_MTI_NEU_XX.wav")  # silent, and not a documented defect
    with pytest.raises(CorpusError, match="silent clips"):
        crema_d.prepare_crema_d(root)


# ------------------------------------------------------------------------------------------------
# A misnamed file in a speaker's folder: read from its folder when unambiguous, else set aside on request
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["dis_f2_b2.wav", "Dis-b2.wav", "dis-f2-b2 (1).wav"])
def test_emovo_misnamed_file_in_its_speaker_folder_is_read_from_the_folder(tmp_path, monkeypatch, name):
    root = emovo_tree(tmp_path / "EMOVO")
    tone(root / "f2" / name, seed=9)
    monkeypatch.setattr(emovo, "EMOVO_TOTALS", _partial(emovo.EMOVO_TOTALS, 43))
    m = emovo.prepare_emovo(root)
    c = m[m.index_of("dis-f2-b2")]
    assert (c.speaker, c.emotion) == ("f2", "disgust") and c.path.endswith(name)
    assert m.report.defects[0]["action"] == "read as dis-f2-b2" and "folder f2/" in m.report.defects[0]["problem"]


def test_emovo_ambiguous_name_stops_by_default_and_is_set_aside_on_request(tmp_path, monkeypatch):
    root = emovo_tree(tmp_path / "EMOVO")
    tone(root / "m1" / "dis-m2-b2.wav", seed=9)  # another speaker's name in m1/: the folder cannot decide
    tone(root / "m1" / "take 3.wav", seed=10)
    monkeypatch.setattr(emovo, "EMOVO_TOTALS", _partial(emovo.EMOVO_TOTALS, 42))
    with pytest.raises(CorpusError, match=r"file names that do not parse \(1\)[\s\S]*take 3"):
        emovo.prepare_emovo(root)
    m = emovo.prepare_emovo(root, require_complete=False)
    assert len(m) == 43 and [Path(a["what"].split(":")[0]).name for a in m.report.set_aside] == ["take 3.wav"]
    assert "dis-m2-b2" in m.clip_ids  # a well-formed name of m2 in m1's folder is read by its name


def test_savee_misspelt_name_in_a_speaker_folder_is_read_from_the_folder(tmp_path, monkeypatch):
    root = savee_tree(tmp_path / "SAVEE")
    tone(root / "AudioData" / "JK" / "Sa3.wav", seed=11)
    monkeypatch.setattr(savee, "SAVEE_TOTALS", _partial(savee.SAVEE_TOTALS, 29))
    m = savee.prepare_savee(root)
    assert m[m.index_of("JK_sa03")].emotion == "sad" and m.report.defects[0]["action"] == "read as JK_sa03"


def test_load_corpus_require_complete_false_sets_aside_a_bad_name_in_a_speaker_folder(tmp_path):
    """The issue's case: a release with a file whose name breaks the scheme - the flag sets it aside."""
    root = emodb_tree(tmp_path / "emodb")
    tone(root / "wav" / "03a01Fa_copy.wav")
    cfg = {"name": "emodb", "root": str(root), "require_complete": False}
    m = load_corpus(cfg, cache_dir=tmp_path / "cache")
    assert len(m) == 70 and "03a01Fa_copy.wav" in m.report.set_aside[0]["what"]
    again = load_corpus(cfg, cache_dir=tmp_path / "cache")  # the listing survives the manifest cache
    assert again.report.set_aside == m.report.set_aside


# ------------------------------------------------------------------------------------------------
# Each recipe carries its protocol: data=<corpus> fold=all works with no folds= typed
# ------------------------------------------------------------------------------------------------
USUAL_COUNTS = {"ravdess": 5, "synthetic": 5, "emodb": 10, "savee": 4, "emovo": 6, "tess": 2, "crema_d": 5,
                "iemocap": 5, "folder": None, "csv": None}


@pytest.mark.parametrize("corpus", sorted(USUAL_COUNTS))
def test_every_recipe_brings_its_usual_folds(corpus, tmp_path):
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose("train", overrides=[f"data={corpus}", f"paths.data_dir={tmp_path}", "data.corpus.root=/x"])
    assert cfg.folds.name == "default"
    assert fold_count(cfg.folds, cfg.data) == USUAL_COUNTS[corpus]


def test_default_folds_on_small_corpora_are_leave_one_speaker_out(tmp_path, monkeypatch):
    monkeypatch.setattr(savee, "SAVEE_TOTALS", _partial(savee.SAVEE_TOTALS, 28))
    m = load_corpus({"name": "savee", "root": str(savee_tree(tmp_path / "s"))})
    folds = build_folds({"name": "default", "n_dev_actors": 2}, m)
    assert folds.num_folds == 4 and "leave-one-speaker-out" in folds.protocol
    assert all(len(s.dev) == 2 and len(s.test) == 1 for s in folds.splits())  # dev keys carried over
    monkeypatch.setattr(emovo, "EMOVO_TOTALS", _partial(emovo.EMOVO_TOTALS, 42))
    m = load_corpus({"name": "emovo", "root": str(emovo_tree(tmp_path / "e"))})
    assert assemble_fold(m, {"name": "default"}, 5).split.test == (6,)


@pytest.mark.parametrize("n_speakers, n_folds", [(3, 3), (15, 5)])
def test_folder_corpus_folds_follow_the_speaker_count(tmp_path, n_speakers, n_folds):
    for s in range(n_speakers):
        for e in ("angry", "happy"):
            tone(tmp_path / "mine" / e / f"spk{s:02d}_take1.wav", seed=s)
    m = load_corpus({"name": "folder", "root": str(tmp_path / "mine")})
    assert build_folds({"name": "default"}, m).num_folds == n_folds


# ------------------------------------------------------------------------------------------------
# The real copies beside the project, with the plain command (skipped when absent)
# ------------------------------------------------------------------------------------------------
SHARED = [Path(__file__).resolve().parents[2] / "shared" / "data", Path("/work/shared/data")]


def _real(name: str, marker: str) -> Path:
    for base in SHARED:
        if (base / name / marker).exists():
            return base / name
    pytest.skip(f"real {name} copy not found under {[str(b) for b in SHARED]}")


@pytest.mark.parametrize("corpus, folder, marker, clips, n_folds", [
    ("emodb", "emodb", "wav", 535, 10), ("ravdess", "ravdess16k", "Actor_01", 1440, 5)])
def test_real_copies_load_with_their_usual_folds(tmp_path, corpus, folder, marker, clips, n_folds):
    root = _real(folder, marker)
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose("train", overrides=[f"data={corpus}", f"data.corpus.root={root}", f"paths.data_dir={tmp_path}"])
    m = load_corpus(cfg.data.corpus, cache_dir=tmp_path / "cache")
    folds = build_folds(cfg.folds, m)
    assert len(m) == clips and folds.num_folds == n_folds == fold_count(cfg.folds, cfg.data)
    assert not m.report.set_aside and not m.report.defects
    assert all(c.mode == "speakers" for c in folds.dev_choices)  # acted corpora: the dev rule is unchanged


@pytest.mark.slow
def test_real_emodb_plain_command_runs_every_fold(tmp_path):
    import json
    import os
    import subprocess
    import sys

    root = _real("emodb", "wav")
    env = {**os.environ, "WAV2EMO_CACHE_DIR": str(tmp_path / "cache"), "WAV2EMO_LOG_DIR": str(tmp_path / "logs"),
           "WAV2EMO_DATA_DIR": str(tmp_path / "data")}
    done = subprocess.run([sys.executable, "-m", "wav2emo.train", "model=sklearn_logreg", "data=emodb",
                           f"data.corpus.root={root}", "fold=all"], cwd=CONF.parent, env=env, capture_output=True,
                          text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(next((tmp_path / "logs").rglob("cv_report.json")).read_text())
    assert report["folds"] == list(range(10)) and report["summary"]["ua"]["mean"] > 0.45  # chance: 1/7


# ------------------------------------------------------------------------------------------------
# Copies that hold the corpus twice (Kaggle's RAVDESS and TESS uploads nest a second full copy)
# ------------------------------------------------------------------------------------------------
def test_a_copy_holding_the_corpus_twice_keeps_one_of_each_identical_file(synthetic_corpus, tmp_path):
    from wav2emo.data.ravdess import prepare_ravdess

    root = tmp_path / "ravdess-emotional-speech-audio"
    files = sorted(synthetic_corpus.rglob("*.flac"))[:16]
    for f in files:  # Actor_XX/ and audio_speech_actors_01-24/Actor_XX/, byte-identical
        for base in (root, root / "audio_speech_actors_01-24"):
            (base / f.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, base / f.parent.name / f.name)
    m = prepare_ravdess(root, require_complete=False)
    assert len(m) == 16 and all("audio_speech_actors" not in c.path for c in m)
    assert len(m.report.defects) == 16 and m.report.defects[0]["action"].startswith("one kept: Actor_")


def test_tess_nested_twice_keeps_one_copy_and_differing_duplicates_still_stop(tmp_path, monkeypatch):
    from tests.corpus_trees import tess_tree
    from wav2emo.data import tess

    root = tmp_path / "TESS"
    tess_tree(root / "TESS Toronto emotional speech set data")
    tess_tree(root / "tess toronto emotional speech set data" / "TESS Toronto emotional speech set data")
    monkeypatch.setattr(tess, "TESS_TOTALS", _partial(tess.TESS_TOTALS, 28))
    m = tess.prepare_tess(root)
    assert len(m) == 28 and len(m.report.defects) == 28
    tone(root / "other" / "OAF_back_angry.wav", seed=99)  # the same name, other audio: not a copy
    with pytest.raises(CorpusError, match="the same clip id more than once"):
        tess.prepare_tess(root)


def test_a_subset_of_ravdess_actors_gets_folds_it_can_run(tmp_path):
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose("train", overrides=["data=synthetic", "data.corpus.actors=6", f"paths.data_dir={tmp_path}"])
    assert fold_count(cfg.folds, cfg.data) == 6  # leave-one-speaker-out: the Luna-Jimenez folds need all 24
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose("train", overrides=["data=synthetic", f"paths.data_dir={tmp_path}"])
    assert fold_count(cfg.folds, cfg.data) == 5
