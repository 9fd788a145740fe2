"""folds=emobox: EmoBox's fold lists, read strictly from a tiny fixture in EmoBox's layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.corpus_trees import emodb_tree

CODES = {"W": "anger", "L": "boredem", "E": "disgust", "A": "fear", "F": "happy", "T": "sad", "N": "Neutral"}


@pytest.fixture(scope="module")
def emodb(tmp_path_factory):
    from wav2emo.data.corpora import load_corpus

    root = emodb_tree(tmp_path_factory.mktemp("emobox") / "emodb")
    return load_corpus({"name": "emodb", "root": str(root), "require_complete": False})


def write_lists(base: Path, folds: list[tuple[list[str], list[str]]], ext: str = ".wav") -> Path:
    """EmoBox's data/emodb layout: fold_<k>/emodb_{train,test}_fold_<k>.jsonl, one JSON object per line."""
    for k, (train, test) in enumerate(folds, start=1):
        for part, stems in (("train", train), ("test", test)):
            lines = [json.dumps({"key": f"emodb-{s}", "dataset": "emodb", "wav": f"downloads/emodb/wav/{s}{ext}",
                                 "emo": CODES[s[5]], "channel": 1}) for s in stems]
            path = base / f"fold_{k}" / f"emodb_{part}_fold_{k}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("\n".join(lines) + "\n")
    return base


def stems(m, speakers) -> list[str]:
    return [c.clip_id for c in m if c.speaker in speakers]


def by_speaker(m) -> list[tuple[list[str], list[str]]]:
    """Two speaker-independent folds: speakers 03,08 tested in fold 1 (the others trained), 09,10 in fold 2 (03 and
    08 then in neither list)."""
    everyone = ("03", "08", "09", "10", "11", "12", "13", "14", "15", "16")
    return [(stems(m, [s for s in everyone if s not in ("03", "08")]), stems(m, ["03", "08"])),
            (stems(m, [s for s in everyone if s not in ("03", "08", "09", "10")]), stems(m, ["09", "10"]))]


def test_speaker_independent_emobox_folds(emodb, tmp_path):
    from wav2emo.data.folds import assemble_fold, fold_count

    path = write_lists(tmp_path / "emodb", by_speaker(emodb), ext=".flac")  # any container matches
    cfg = {"name": "emobox", "path": str(path), "n_dev_actors": 2}
    assert fold_count(cfg, {"name": "emodb"}) is None
    a = assemble_fold(emodb, cfg, 0)
    assert sorted(a.parts["test"].clip_ids) == sorted(stems(emodb, ["03", "08"]))
    assert len({c.actor for c in a.parts["dev"]}) == 2 and not a.split.speaker_dependent
    assert not {c.actor for c in a.parts["dev"]} & {c.actor for c in a.parts["train"]}
    assert len(a.parts["train"]) + len(a.parts["dev"]) == 8 * 7
    assert "EmoBox fold_" in a.protocol and "speaker-independent: no test speaker" in a.protocol
    b = assemble_fold(emodb, cfg, 1)
    assert "in neither list of a fold (not used there): [0, 14]" in b.protocol  # 03, 08 are in no list of fold 2
    assert a.protocol == b.protocol  # one sentence for all folds: the report states it once


def test_speaker_dependent_emobox_folds_say_so(emodb, tmp_path):
    from wav2emo.data.folds import assemble_fold

    ids = emodb.clip_ids
    folds = [([i for j, i in enumerate(ids) if j % 2 != k], [i for j, i in enumerate(ids) if j % 2 == k])
             for k in (0, 1)]
    path = write_lists(tmp_path / "emodb", folds)
    cfg = {"name": "emobox", "path": str(path), "dev_fraction": 0.2}
    a = assemble_fold(emodb, cfg, 1)
    assert a.split.speaker_dependent and "speaker-dependent" in a.protocol
    assert len(a.parts["dev"]) == 7 and len(a.parts["train"]) == 28 and len(a.parts["test"]) == 35


@pytest.mark.parametrize("damage, message", [
    (lambda p: (p / "fold_2").rename(p / "fold_3"), "expected fold_1..fold_K"),
    (lambda p: (p / "fold_1" / "emodb_test_fold_1.jsonl").unlink(), "no test list"),
    (lambda p: (p / "fold_1" / "x_test_fold_1.jsonl").write_text("{}"), "2 test lists of one kind"),
    (lambda p: _append(p, "not json"), "line 15: not JSON"),
    (lambda p: _append(p, json.dumps({"key": "x", "wav": "a/99a01Wa.wav", "emo": "anger"})), "not in the corpus"),
    (lambda p: _append(p, json.dumps({"key": "x", "wav": "wav/03a01Wa.wav", "emo": "sad"})),
     "EmoBox says 'sad' \\(sad\\), the corpus's label is 'angry'"),
    (lambda p: _append(p, json.dumps({"key": "x", "wav": "wav/09a01Wa.wav"})), "string fields key, wav and emo"),
    (lambda p: _append(p, json.dumps({"key": "x", "wav": "wav/03a01La.wav", "emo": "boredem"})),
     "listed more than once"),
])
def test_damaged_fold_lists_are_named(emodb, tmp_path, damage, message):
    from wav2emo.data.errors import FoldError
    from wav2emo.data.folds import build_folds

    path = write_lists(tmp_path / "emodb", by_speaker(emodb))
    damage(path)
    with pytest.raises(FoldError, match=message):
        build_folds({"name": "emobox", "path": str(path)}, emodb, clip_splits=True)


def _append(base: Path, line: str) -> None:
    p = base / "fold_1" / "emodb_test_fold_1.jsonl"
    p.write_text(p.read_text() + line + "\n")


def test_a_clip_in_train_and_test_or_in_two_test_folds_is_refused(emodb, tmp_path):
    from wav2emo.data.errors import FoldError
    from wav2emo.data.folds import build_folds

    folds = by_speaker(emodb)
    overlap = write_lists(tmp_path / "a", [(folds[0][0] + folds[0][1][:1], folds[0][1])])
    with pytest.raises(FoldError, match="1 clips in both train and test"):
        build_folds({"name": "emobox", "path": str(overlap)}, emodb, clip_splits=True)
    twice = write_lists(tmp_path / "b", [folds[0], (folds[1][0], folds[1][1] + folds[0][1][:1])])
    with pytest.raises(FoldError, match="test lists of fold_1 and fold_2"):
        build_folds({"name": "emobox", "path": str(twice)}, emodb, clip_splits=True)
    with pytest.raises(FoldError, match="needs folds.path"):
        build_folds({"name": "emobox"}, emodb, clip_splits=True)


def _older_lists(base: Path, folds, garbage: bool = False) -> None:
    """EmoBox's second set in data/emodb: emodb_{train,test}_fold<k>.jsonl with fields audio and label."""
    for k, (train, test) in enumerate(folds, start=1):
        for part, stems in (("train", train), ("test", test)):
            lines = [json.dumps({"key": f"emodb-{s}", "dataset": "emodb", "audio": f"downloads/emodb/wav/{s}.wav",
                                 "label": CODES[s[5]]}) for s in stems]
            (base / f"fold_{k}" / f"emodb_{part}_fold{k}.jsonl").write_text(
                "not what EmoBox documents\n" if garbage else "\n".join(lines) + "\n")


def test_emobox_tree_as_shipped_reads_the_documented_lists_and_says_so(emodb, tmp_path):
    """EmoBox's data/emodb holds both name variants in every fold: the documented one is read."""
    from wav2emo.data.folds import build_folds

    ids = emodb.clip_ids
    folds = [([i for j, i in enumerate(ids) if j % 2 != k], [i for j, i in enumerate(ids) if j % 2 == k])
             for k in (0, 1)]
    path = write_lists(tmp_path / "emodb", folds)
    _older_lists(path, folds, garbage=True)  # would fail to parse if it were read
    (path / "label_map.json").write_text(json.dumps({"anger": "Angry", "boredem": "Boredom", "Neutral": "Neutral"}))
    f = build_folds({"name": "emobox", "path": str(path)}, emodb, clip_splits=True)
    assert "documented lists <corpus>_{train,test}_fold_<k>.jsonl" in f.protocol
    assert "speaker-dependent: in 2 of 2 folds" in f.protocol and "100% of those folds' test clips" in f.protocol
    assert len({s.protocol for s in f.splits()}) == 1 and f.overlap() == [(10, 1.0), (10, 1.0)]


def test_emobox_older_lists_alone_are_read_with_their_fields(emodb, tmp_path):
    from wav2emo.data.folds import build_folds

    folds = by_speaker(emodb)
    base = tmp_path / "emodb"
    for k in (1, 2):
        (base / f"fold_{k}").mkdir(parents=True)
    _older_lists(base, folds)
    f = build_folds({"name": "emobox", "path": str(base)}, emodb, clip_splits=True)
    assert "older lists" in f.protocol and sorted(f.split(0).test_clips) == sorted(folds[0][1])


def test_emobox_savee_lists_match_the_release_layout_through_clip_ids(tmp_path, monkeypatch):
    """EmoBox lists SAVEE flat (downloads/savee/JE_n01.wav, emo 'n'); the release is AudioData/JE/n01.wav."""
    from tests.corpus_trees import savee_tree
    from wav2emo.data import savee
    from wav2emo.data.folds import build_folds
    from wav2emo.data.registry import Totals

    monkeypatch.setattr(savee, "SAVEE_TOTALS", Totals(files=28, speakers=savee.SAVEE_SPEAKERS))
    m = savee.prepare_savee(savee_tree(tmp_path / "SAVEE"))
    base = tmp_path / "EmoBox" / "data" / "savee"
    for k, spk in enumerate(savee.SAVEE_SPEAKERS, start=1):
        for part, chosen in (("train", [s for s in savee.SAVEE_SPEAKERS if s != spk]), ("test", [spk])):
            lines = [json.dumps({"key": f"savee-{c.clip_id}", "wav": f"downloads/savee/{c.clip_id}.wav",
                                 "emo": c.code}) for c in m if c.speaker in chosen]
            (base / f"fold_{k}").mkdir(parents=True, exist_ok=True)
            (base / f"fold_{k}" / f"savee_{part}_fold_{k}.jsonl").write_text("\n".join(lines) + "\n")
    (base / "label_map.json").write_text(json.dumps({"a": "Angry", "d": "Disgust", "f": "Fear", "h": "Happy",
                                                     "n": "Neutral", "sa": "Sad", "su": "Surprise"}))
    f = build_folds({"name": "emobox", "path": str(base)}, m, clip_splits=True)
    assert f.num_folds == 4 and "speaker-independent: no test speaker" in f.protocol


def test_listed_clips_the_corpus_check_set_aside_are_counted_not_refused(tmp_path, monkeypatch):
    """EmoBox lists CREMA-D's 1076_MTI_SAD_XX; where the copy's clip is silent, it was set aside."""
    import numpy as np
    import soundfile as sf

    from tests.corpus_trees import crema_d_tree
    from wav2emo.data import crema_d
    from wav2emo.data.folds import build_folds

    root = crema_d_tree(tmp_path / "CREMA-D", actors=(1076, 1077))
    sf.write(str(root / "AudioWAV" / "1076_MTI_SAD_XX.wav"), np.zeros(1600, np.float32), 16000)
    monkeypatch.setattr(crema_d, "CREMA_D_TOTALS", None)
    m = crema_d.prepare_crema_d(root)
    base = tmp_path / "cremad"
    (base / "fold_1").mkdir(parents=True)
    for part, actor in (("train", "1077"), ("test", "1076")):
        stems = [c.clip_id for c in m if c.speaker == actor] + (["1076_MTI_SAD_XX"] if actor == "1076" else [])
        lines = [json.dumps({"key": s, "wav": f"downloads/cremad/AudioWAV/{s}.wav", "emo": s.split("_")[2]})
                 for s in stems]
        (base / "fold_1" / f"cremad_{part}_fold_1.jsonl").write_text("\n".join(lines) + "\n")
    (base / "label_map.json").write_text(json.dumps({"ANG": "Angry", "DIS": "Disgust", "FEA": "Fear", "HAP": "Happy",
                                                     "NEU": "Neutral", "SAD": "Sad"}))
    f = build_folds({"name": "emobox", "path": str(base)}, m, clip_splits=True)
    assert "1 listed clips the corpus check set aside (not used): 1076_MTI_SAD_XX" in f.protocol
    assert len(f.split(0).test_clips) == 6
