"""Bring your own corpus: data=folder and data=csv, with the same checks as the named recipes."""

from __future__ import annotations

import pytest

from tests.corpus_trees import tone
from wav2emo.data.byo import prepare_csv, prepare_folder
from wav2emo.data.corpora import load_corpus
from wav2emo.data.errors import CorpusError
from wav2emo.data.manifest import UNLABELLED, UnlabelledError


def folder_tree(root, emotions=("anger", "happiness", "neutral"), speakers=("spk1", "spk2", "spk3")):
    k = 0
    for e in emotions:
        for s in speakers:
            tone(root / e / f"{s}_take{k}.wav", seed=k)
            k += 1
    return root


def test_folder_corpus_emotions_from_folders_speakers_from_the_regex(tmp_path):
    m = prepare_folder(folder_tree(tmp_path / "mine"))
    assert len(m) == 9 and m.class_names == ("neutral", "happy", "angry")
    assert sorted({c.speaker for c in m}) == ["spk1", "spk2", "spk3"] and m.actors == [1, 2, 3]
    c = m[m.index_of("anger__spk2_take1")]
    assert (c.emotion, c.code, c.speaker) == ("angry", "anger", "spk2")
    nested = tmp_path / "nested"
    tone(nested / "sad" / "f_03" / "rec.flac")
    tone(nested / "fear" / "m_07" / "rec.flac", seed=1)
    m = prepare_folder(nested, speaker_regex=r"^[^/]+/(?P<gender>[mf])_(?P<speaker>\d+)/")
    assert {c.speaker: c.gender for c in m} == {"03": "female", "07": "male"}


def test_folder_corpus_bad_input_is_named(tmp_path):
    root = folder_tree(tmp_path / "mine")
    tone(root / "wut" / "spk1_x.wav")  # not an emotion
    tone(root / "loose.wav")  # not in an emotion folder
    tone(root / "sad" / "nounderscore.wav")  # no speaker
    with pytest.raises(CorpusError) as e:
        prepare_folder(root)
    msg = str(e.value)
    assert "unknown emotion folders" in msg and "wut/spk1_x.wav" in msg
    assert "files outside an emotion folder" in msg and "loose.wav" in msg
    assert "finds no speaker" in msg and "sad/nounderscore.wav" in msg
    (root / "loose.wav").unlink()
    (root / "sad" / "nounderscore.wav").unlink()
    m = prepare_folder(root, emotion_map={"wut": "angry"})  # your own names, mapped
    assert m[m.index_of("wut__spk1_x")].emotion == "angry"
    with pytest.raises(CorpusError, match="not a regular expression"):
        prepare_folder(root, speaker_regex="(")


def _csv(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_csv_corpus_relative_paths_optional_gender(tmp_path):
    d = tmp_path / "c"
    for i in range(4):
        tone(d / "audio" / f"{i}.wav", seed=i)
    csv = _csv(d / "list.csv", "path,emotion,speaker,gender\naudio/0.wav,Anger,A,f\naudio/1.wav,sad,A,f\n"
                               "audio/2.wav,angry,B,m\naudio/3.wav,sadness,B,\n")
    m = prepare_csv(csv)
    assert len(m) == 4 and m.class_names == ("sad", "angry")
    assert [c.gender for c in m] == ["female", "female", "male", "unknown"]
    assert m[m.index_of("audio__0")].code == "Anger"


@pytest.mark.parametrize(
    "rows, expected",
    [
        ("path,emotion\naudio/0.wav,sad\n", r"missing columns \['speaker'\]"),
        ("path,emotion,speaker\naudio/0.wav,sad,A\n,,\n", r"empty rows[\s\S]*row 3"),
        ("path,emotion,speaker\naudio/0.wav,sad,A\n./audio/../audio/0.wav,sad,A\n",
         r"duplicate paths[\s\S]*row 3.*already row 2"),
        ("path,emotion,speaker\n../outside.wav,sad,A\n", r"outside the CSV's folder[\s\S]*row 2"),
        ("path,emotion,speaker\naudio/9.wav,sad,A\n", r"missing files[\s\S]*row 2"),
        ("path,emotion,speaker\naudio/0.wav,grumpy,A\n", r"unknown emotions[\s\S]*row 2: emotion 'grumpy'"),
        ("path,emotion,speaker\naudio/0.wav,,A\n", r"rows without an emotion[\s\S]*row 2"),
        ("path,emotion,speaker\naudio/0.wav,sad,\n", r"rows with empty cells[\s\S]*row 2"),
    ],
)
def test_csv_corpus_refuses_bad_rows_naming_them(tmp_path, rows, expected):
    d = tmp_path / "c"
    tone(d / "audio" / "0.wav")
    tone(tmp_path / "outside.wav")
    with pytest.raises(CorpusError, match=expected):
        prepare_csv(_csv(d / "list.csv", rows))


def test_csv_absolute_path_outside_is_refused(tmp_path):
    d = tmp_path / "c"
    outside = tone(tmp_path / "x.wav")
    with pytest.raises(CorpusError, match="outside the CSV's folder"):
        prepare_csv(_csv(d / "list.csv", f"path,emotion,speaker\n{outside},sad,A\n"))


def test_csv_unlabelled_rows_for_prediction_only(tmp_path):
    d = tmp_path / "c"
    tone(d / "a.wav")
    tone(d / "b.wav", seed=1)
    m = prepare_csv(_csv(d / "list.csv", "path,emotion,speaker\na.wav,,A\nb.wav,happy,A\n"), require_labels=False)
    assert [c.label for c in m] == [UNLABELLED, 0] and m.unlabelled == ["a"]
    with pytest.raises(UnlabelledError, match="1 of 2 clips have no emotion label"):
        m.require_labels()


def test_load_corpus_csv_is_cached_and_follows_the_table(tmp_path):
    d = tmp_path / "c"
    tone(d / "a.wav")
    tone(d / "b.wav", seed=1)
    csv = _csv(d / "list.csv", "path,emotion,speaker\na.wav,sad,A\nb.wav,happy,B\n")
    cfg = {"name": "csv", "root": str(csv), "emotion_map": None, "require_labels": True}
    m = load_corpus(cfg, cache_dir=tmp_path / "cache")
    assert load_corpus(cfg, cache_dir=tmp_path / "cache").class_names == m.class_names == ("happy", "sad")
    csv.write_text("path,emotion,speaker\na.wav,angry,A\nb.wav,happy,B\n")  # the table changed: a new key
    again = load_corpus(cfg, cache_dir=tmp_path / "cache")
    assert again[again.index_of("a")].emotion == "angry"
