"""Corpus recipes: each on a tiny tree in the corpus's own layout, the totals check, bad input, and
EmoDB on the real copy when it is there."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from tests.corpus_trees import crema_d_tree, emodb_tree, emovo_tree, iemocap_tree, savee_tree, tess_tree, tone
from wav2emo.data import crema_d, emodb, emovo, iemocap, savee, tess
from wav2emo.data.corpora import load_corpus
from wav2emo.data.errors import CorpusError
from wav2emo.data.labels import CANONICAL_EMOTIONS
from wav2emo.data.manifest import Manifest
from wav2emo.data.registry import Totals

EMODB_DIR = Path(os.environ.get("WAV2EMO_TEST_EMODB", Path(__file__).resolve().parents[2] / "shared" / "data" / "emodb"))
CONF = Path(__file__).resolve().parents[1] / "conf" / "data"


def _partial(totals: Totals, n: int) -> Totals:
    return Totals(files=n, speakers=totals.speakers, classes=totals.classes)


# ------------------------------------------------------------------------------------------------
# EmoDB
# ------------------------------------------------------------------------------------------------
def test_emodb_parses_names_into_the_canonical_vocabulary(tmp_path, monkeypatch):
    emodb_tree(tmp_path / "emodb")
    monkeypatch.setattr(emodb, "EMODB_TOTALS", _partial(emodb.EMODB_TOTALS, 70))
    m = emodb.prepare_emodb(tmp_path / "emodb")
    assert len(m) == 70 and m.actors == [3, 8, 9, 10, 11, 12, 13, 14, 15, 16]
    assert m.class_names == ("neutral", "happy", "sad", "angry", "fearful", "disgust", "boredom")
    c = m[m.index_of("03a01Wa")]
    assert (c.emotion, c.code, c.speaker, c.gender, m.class_names[c.label]) == ("angry", "W", "03", "male", "angry")
    assert m[m.index_of("08a01La")].gender == "female" and m[m.index_of("08a01La")].emotion == "boredom"
    assert set(m.class_names) <= set(CANONICAL_EMOTIONS)
    assert m.report.durations["min"] == pytest.approx(0.1) and "classes" in "\n".join(m.report.lines())


def test_emodb_totals_check_names_missing_speakers_and_counts(tmp_path):
    emodb_tree(tmp_path / "emodb", speakers=("03", "08", "09"))
    with pytest.raises(CorpusError) as e:
        emodb.prepare_emodb(tmp_path / "emodb")
    msg = str(e.value)
    assert "missing speakers" in msg and "10, 11, 12, 13, 14, 15, 16" in msg
    assert "expected 535" in msg and "found 21 usable files, 514 missing" in msg
    m = emodb.prepare_emodb(tmp_path / "emodb", require_complete=False)  # a partial copy on request
    assert len(m) == 21


@pytest.mark.parametrize(
    "name, expected",
    [
        ("03a01Xa.wav", "emotion code 'X'"),
        ("04a01Fa.wav", "speaker 04"),
        ("03a03Fa.wav", "text a03"),
        ("hello.wav", "not an EmoDB name"),
    ],
)
def test_emodb_unparseable_names_are_named(tmp_path, name, expected):
    """Refused by default, naming the file; require_complete=false sets it aside and lists it (issue 20)."""
    emodb_tree(tmp_path / "emodb")
    tone(tmp_path / "emodb" / "wav" / name)
    with pytest.raises(CorpusError, match=r"file names that do not parse[\s\S]*" + expected):
        emodb.prepare_emodb(tmp_path / "emodb")
    m = emodb.prepare_emodb(tmp_path / "emodb", require_complete=False)
    assert len(m) == 70 and [a["what"] for a in m.report.set_aside] == [pytest.approx(a["what"]) for a in
                                                                        m.report.set_aside]
    assert len(m.report.set_aside) == 1 and name in m.report.set_aside[0]["what"]
    assert expected in m.report.set_aside[0]["what"] and "set aside" in "\n".join(m.report.lines())


def test_any_container_and_rate_whatever_the_extension(tmp_path, monkeypatch):
    root = emodb_tree(tmp_path / "emodb", speakers=("03",))
    tone(root / "wav" / "03a01Wa.wav", sr=44100, channels=2, fmt="FLAC", seed=99)  # FLAC named .wav
    m = emodb.prepare_emodb(root, require_complete=False)
    c = m[m.index_of("03a01Wa")]
    assert (c.sample_rate, c.channels) == (44100, 2) and c.duration == pytest.approx(0.1)


def test_broken_audio_is_a_problem_naming_the_file(tmp_path):
    root = emodb_tree(tmp_path / "emodb", speakers=("03",))
    (root / "wav" / "03a01Wa.wav").write_bytes(b"not audio at all")
    with pytest.raises(CorpusError, match=r"unreadable files[\s\S]*03a01Wa\.wav"):
        emodb.prepare_emodb(root, require_complete=False)  # broken audio is repaired, never hidden


@pytest.fixture(scope="module")
def real_emodb() -> Path:
    if not (EMODB_DIR / "wav").is_dir():
        pytest.skip(f"real EmoDB copy not found at {EMODB_DIR}")
    return EMODB_DIR


def test_real_emodb_matches_the_documentation(real_emodb):
    m = emodb.prepare_emodb(real_emodb)
    assert len(m) == 535 and len(m.actors) == 10
    assert m.class_counts() == {"neutral": 79, "happy": 71, "sad": 62, "angry": 127, "fearful": 69,
                                "disgust": 46, "boredom": 81}
    assert {a: g for a, g in m.genders().items() if g == "male"} == {3: "male", 10: "male", 11: "male",
                                                                     12: "male", 15: "male"}
    assert m.report.durations["total"] / 60 == pytest.approx(24.8, abs=0.1)


def test_real_emodb_through_load_corpus_and_the_cache(real_emodb, tmp_path):
    cfg = yaml.safe_load((CONF / "emodb.yaml").read_text())["corpus"]
    cfg.update(root=str(real_emodb), default_root=None)
    m = load_corpus(cfg, cache_dir=tmp_path)
    again = load_corpus(cfg, cache_dir=tmp_path)  # from the cached CSV and report
    assert again.class_names == m.class_names and again.content_hash() == m.content_hash()
    assert [(c.code, c.speaker) for c in again] == [(c.code, c.speaker) for c in m]


# ------------------------------------------------------------------------------------------------
# CREMA-D, TESS, SAVEE, EMOVO
# ------------------------------------------------------------------------------------------------
def test_crema_d_names_and_demographics(tmp_path, monkeypatch):
    root = crema_d_tree(tmp_path / "CREMA-D")
    monkeypatch.setattr(crema_d, "CREMA_D_TOTALS", Totals(24, ("1001", "1002", "1003", "1004"),
                                                          crema_d.CREMA_D_TOTALS.classes))
    m = crema_d.prepare_crema_d(root)
    assert len(m) == 24 and m.actors == [1001, 1002, 1003, 1004]
    assert m.genders() == {1001: "male", 1002: "female", 1003: "male", 1004: "female"}
    assert m.class_names == ("neutral", "happy", "sad", "angry", "fearful", "disgust")
    c = m[m.index_of("1001_DFA_FEA_LO")]
    assert (c.emotion, c.code) == ("fearful", "FEA")


def test_crema_d_bad_input(tmp_path):
    root = crema_d_tree(tmp_path / "c", actors=(1001, 1002))
    tone(root / "AudioWAV" / "1001_DFA_XYZ_XX.wav")
    tone(root / "AudioWAV" / "1005_DFA_ANG_XX.wav")  # not in VideoDemographics.csv
    with pytest.raises(CorpusError) as e:
        crema_d.prepare_crema_d(root)
    assert "emotion code XYZ" in str(e.value) and "actor 1005" in str(e.value)
    m = crema_d.prepare_crema_d(root, require_complete=False)  # both set aside, listed
    assert len(m) == 12 and sorted(a["problem"] for a in m.report.set_aside) == [
        "actors missing from VideoDemographics.csv", "file names that do not parse"]
    with pytest.raises(CorpusError, match="missing speakers"):
        crema_d.prepare_crema_d(crema_d_tree(tmp_path / "d", actors=(1001,)))
    (root / "VideoDemographics.csv").write_text("ActorID,Age,Sex\n1001,30,Other\n")
    with pytest.raises(CorpusError, match=r"VideoDemographics\.csv line 2: Sex 'Other'"):
        crema_d.prepare_crema_d(root, require_complete=False)


def test_tess_reads_file_names_whatever_the_folders(tmp_path, monkeypatch):
    root = tess_tree(tmp_path / "TESS")
    monkeypatch.setattr(tess, "TESS_TOTALS", _partial(tess.TESS_TOTALS, 28))
    m = tess.prepare_tess(root)
    assert len(m) == 28 and sorted(c.speaker for c in m) == ["OAF"] * 14 + ["YAF"] * 14
    assert set(m.genders().values()) == {"female"}
    c = m[m.index_of("YAF_bar_ps")]
    assert (c.emotion, c.code) == ("surprised", "ps")
    tone(root / "OAF_angry" / "OAF_back_furious.wav")
    tone(root / "YAF_Sad" / "YAF_boat_happy.wav")
    with pytest.raises(CorpusError) as e:
        tess.prepare_tess(root)
    assert "emotion 'furious'" in str(e.value)
    assert "YAF_Sad/YAF_boat_happy.wav: the name says YAF happy, the folder YAF sad" in str(e.value)


def test_savee_release_and_flat_layouts(tmp_path, monkeypatch):
    monkeypatch.setattr(savee, "SAVEE_TOTALS", _partial(savee.SAVEE_TOTALS, 28))
    a = savee.prepare_savee(savee_tree(tmp_path / "a"))
    b = savee.prepare_savee(savee_tree(tmp_path / "b", flat=True))
    assert a.clip_ids == b.clip_ids and len(a) == 28 and "JK_sa01" in a.clip_ids
    assert a[a.index_of("KL_su01")].emotion == "surprised" and set(a.genders().values()) == {"male"}
    tone(tmp_path / "a" / "AudioData" / "DC" / "sa16.wav")
    with pytest.raises(CorpusError, match="sentence 16; expected 01..15"):
        savee.prepare_savee(tmp_path / "a")


def test_emovo(tmp_path, monkeypatch):
    monkeypatch.setattr(emovo, "EMOVO_TOTALS", _partial(emovo.EMOVO_TOTALS, 42))
    m = emovo.prepare_emovo(emovo_tree(tmp_path / "EMOVO"))
    assert len(m) == 42 and m.genders() == {1: "female", 2: "female", 3: "female", 4: "male", 5: "male", 6: "male"}
    c = m[m.index_of("gio-m2-b1")]
    assert (c.emotion, c.code, c.speaker) == ("happy", "gio", "m2")
    tone(tmp_path / "EMOVO" / "m1" / "dis-m7-b1.wav")
    with pytest.raises(CorpusError, match="speaker 'm7'"):
        emovo.prepare_emovo(tmp_path / "EMOVO")


# ------------------------------------------------------------------------------------------------
# IEMOCAP
# ------------------------------------------------------------------------------------------------
def test_iemocap_four_classes_sessions_and_dialogue_switch(tmp_path):
    root = iemocap_tree(tmp_path / "IEMOCAP_full_release")
    m = iemocap.prepare_iemocap(root, require_complete=False)
    assert m.class_names == ("neutral", "happy", "sad", "angry")
    assert len(m) == 50  # 5 sessions x 2 dialogues x 5 of 6 utterances (fru left out)
    exc = m[m.index_of("Ses01F_impro01_F002")]
    assert (exc.emotion, exc.code) == ("happy", "exc")
    man = m[m.index_of("Ses03F_impro01_M001")]  # the man of session 3, in a dialogue the woman leads
    assert (man.speaker, man.session, man.gender) == ("Ses03M", 3, "male")
    assert len(m.actors) == 10 and {c.session for c in m} == {1, 2, 3, 4, 5}
    assert any("fru 10" in n for n in m.report.notes)
    impro = iemocap.prepare_iemocap(root, dialogues="improvised", require_complete=False)
    assert len(impro) == 25 and all("impro" in c.clip_id for c in impro)
    with pytest.raises(CorpusError, match="dialogues='both'"):
        iemocap.prepare_iemocap(root, dialogues="both")


def test_iemocap_missing_audio_and_totals(tmp_path):
    root = iemocap_tree(tmp_path / "I", extra_label="Ses01F_impro01_F099")
    with pytest.raises(CorpusError) as e:
        iemocap.prepare_iemocap(root)
    assert "labelled utterances without audio" in str(e.value) and "Ses01F_impro01_F099" in str(e.value)
    assert "expected 5531" in str(e.value)


# ------------------------------------------------------------------------------------------------
# load_corpus and the shipped configs
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["emodb", "crema_d", "tess", "savee", "emovo", "iemocap", "folder", "csv"])
def test_every_recipe_has_a_config_that_names_it(name):
    cfg = yaml.safe_load((CONF / f"{name}.yaml").read_text())["corpus"]
    assert cfg["name"] == name and "on_silent" in cfg


def test_load_corpus_missing_root_says_how_to_get_it_and_creates_nothing(tmp_path):
    for name, hint in (("savee", "kahlan.eps.surrey.ac.uk"), ("iemocap", "licensed"),
                       ("emodb", "emodb.bilderbar.info")):
        with pytest.raises(CorpusError, match=hint):
            load_corpus({"name": name, "root": str(tmp_path / name), "download": False})
        assert not (tmp_path / name).exists()


def test_load_corpus_iemocap_switch_reaches_the_recipe_and_the_cache_key(tmp_path):
    root = iemocap_tree(tmp_path / "IEMOCAP_full_release")
    base = {"name": "iemocap", "root": str(root), "require_complete": False}
    a = load_corpus({**base, "dialogues": "all"}, cache_dir=tmp_path / "cache")
    b = load_corpus({**base, "dialogues": "scripted"}, cache_dir=tmp_path / "cache")
    assert len(a) == 50 and len(b) == 25
    # a changed label file makes a new key: the cached manifest is not reused
    f = root / "Session1" / "dialog" / "EmoEvaluation" / "Ses01F_impro01.txt"
    f.write_text(f.read_text().replace("\tneu\t", "\tsad\t"))
    c = load_corpus({**base, "dialogues": "all"}, cache_dir=tmp_path / "cache")
    assert c[c.index_of("Ses01F_impro01_F000")].emotion == "sad"
    assert isinstance(c, Manifest) and c.class_names == a.class_names


def test_load_corpus_downloads_emodb_beside_root_and_extracts_into_it(tmp_path, monkeypatch):
    from tests.test_download import Server, make_zip

    src = emodb_tree(tmp_path / "src", speakers=("03", "08"))
    files = {p.relative_to(src).as_posix(): p.read_bytes() for p in sorted(src.rglob("*.wav"))}
    files["lablaut/03a01Fa.lab"] = b"label text"
    srv = Server(make_zip(files))
    try:
        monkeypatch.setattr(emodb, "EMODB_URL", srv.url)
        root = tmp_path / "data" / "emodb"
        cfg = {"name": "emodb", "root": str(root), "download": True, "require_complete": False}
        m = load_corpus(cfg, cache_dir=tmp_path / "cache")
    finally:
        srv.close()
    assert len(m) == 14 and all(Path(c.path).is_relative_to(root) for c in m)
    assert load_corpus(cfg, cache_dir=tmp_path / "cache").content_hash() == m.content_hash()  # no server now


def test_load_corpus_takes_a_zip_root(tmp_path):
    import zipfile

    src = emodb_tree(tmp_path / "src", speakers=("03",))
    zpath = tmp_path / "download.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for p in sorted(src.rglob("*.wav")):
            zf.write(p, p.relative_to(src).as_posix())
    cfg = {"name": "emodb", "root": str(zpath), "require_complete": False}
    m = load_corpus(cfg, cache_dir=tmp_path / "cache")
    assert len(m) == 7 and all(Path(c.path).is_relative_to(tmp_path / "download") for c in m)
    assert load_corpus(cfg, cache_dir=tmp_path / "cache").clip_ids == m.clip_ids
