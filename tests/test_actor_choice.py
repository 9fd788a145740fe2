"""``data.corpus.actors``: null, a count N (the corpus's first N speakers in id order) or a list of ids, for any
corpus's speaker numbering (RAVDESS 1..24, EmoDB 3..16, CREMA-D 1001..1091)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from wav2emo.data.corpus_options import actor_list, only_actors
from wav2emo.data.errors import CorpusError
from wav2emo.data.manifest import Clip, Manifest

EMODB = Path(os.environ.get("WAV2EMO_TEST_EMODB", Path(__file__).resolve().parents[2] / "shared" / "data" / "emodb"))


def manifest_of(speakers: list[int]) -> Manifest:
    clips = [Clip(f"c{s}_{i}", f"/x/{s}_{i}.wav", "toy", s, "male", "neutral", 0, 1, 1, 1, 1.0, 16000, 1, 16000,
                  f"{s * 10 + i:040x}") for s in speakers for i in range(2)]
    return Manifest(clips)


def test_a_count_takes_the_first_speakers_of_any_numbering():
    emodb_like = manifest_of([16, 3, 8, 10, 9])
    cut = only_actors(emodb_like, actor_list(3), Path("/corpus"))
    assert sorted(cut.actors) == [3, 8, 9] and len(cut) == 6
    assert sorted(only_actors(manifest_of([1001, 1002, 1091]), actor_list(2), Path("/c")).actors) == [1001, 1002]
    assert sorted(only_actors(manifest_of(list(range(1, 25))), actor_list(4), Path("/c")).actors) == [1, 2, 3, 4]


def test_a_count_beyond_the_corpus_and_bad_values_are_refused_with_the_speakers():
    with pytest.raises(CorpusError, match=r"actors=6: /corpus has 5 speakers \(\[3, 8, 9, 10, 16\]\)"):
        only_actors(manifest_of([16, 3, 8, 10, 9]), actor_list(6), Path("/corpus"))
    for bad in (0, -2, True):
        with pytest.raises(CorpusError, match="data.corpus.actors"):
            actor_list(bad)
    with pytest.raises(CorpusError, match=r"actors \[4\] are not in /corpus"):
        only_actors(manifest_of([3, 8]), actor_list([3, 4]), Path("/corpus"))


@pytest.mark.skipif(not EMODB.is_dir(), reason=f"no EmoDB copy at {EMODB} (set WAV2EMO_TEST_EMODB)")
def test_real_emodb_first_speakers(tmp_path):
    from wav2emo.data.corpora import load_corpus

    m = load_corpus({"name": "emodb", "root": str(EMODB), "actors": 2}, tmp_path)
    assert sorted(m.actors) == [3, 8] and 0 < len(m) < 535
