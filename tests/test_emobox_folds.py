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
    assert "EmoBox fold_1" in a.protocol and "speaker-independent" in a.protocol
    b = assemble_fold(emodb, cfg, 1)
    assert "14 clips of the corpus in neither list" in b.protocol  # speakers 03 and 08 are in no list of fold 2


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
    (lambda p: (p / "fold_1" / "emodb_test_fold1.jsonl").write_text("{}"), "test list\\(s\\); expected exactly one"),
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
