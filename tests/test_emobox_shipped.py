"""folds=emobox on EmoBox's repository tree as shipped, for every corpus EmoBox lists that has a recipe here.

Needs a copy of EmoBox's ``data/`` folder (``WAV2EMO_TEST_EMOBOX=/path/to/EmoBox/data``; skipped without it).
Each corpus is rebuilt in its release layout from EmoBox's own full list (``<corpus>.jsonl``: every clip name
and emotion), as short tones, and read by its recipe; EmoBox's fold lists must then match every clip, agree on
every emotion through its ``label_map.json``, and give the protocol sentence once.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

import pytest

from tests.corpus_trees import tone
from wav2emo.data.corpora import load_corpus
from wav2emo.data.folds import build_folds

EMOBOX = Path(os.environ.get("WAV2EMO_TEST_EMOBOX", "/nonexistent"))


def entries(corpus: str) -> list[dict]:
    path = EMOBOX / corpus / f"{corpus}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def build(corpus: str, root: Path) -> dict:
    """The release layout of ``corpus`` holding every clip EmoBox lists; returns the data.corpus config."""
    seen: dict[str, str] = {}
    for i, e in enumerate(entries(corpus)):
        stem = Path(e["wav"]).stem
        seen[stem] = e["emo"]
        if corpus == "emodb":
            path = root / "wav" / f"{stem}.wav"
        elif corpus == "cremad":
            path = root / "AudioWAV" / f"{stem}.wav"
        elif corpus == "ravdess":
            path = root / f"Actor_{stem[-2:]}" / f"{stem}.wav"
        elif corpus == "emovo":
            path = root / stem.split("-")[1] / f"{stem}.wav"
        elif corpus == "savee":
            spk, name = stem.split("_")
            path = root / "AudioData" / spk / f"{name}.wav"
        elif corpus == "iemocap":
            path = root / "/".join(Path(e["wav"]).parts[2:])
        else:  # tess: flat
            path = root / f"{stem}.wav"
        tone(path, seconds=0.07, seed=i)
    if corpus == "cremad":
        actors = sorted({s.split("_")[0] for s in seen})
        rows = [f"{a},30,{'Male' if int(a) % 2 else 'Female'},Caucasian,Not Hispanic" for a in actors]
        (root / "VideoDemographics.csv").write_text("ActorID,Age,Sex,Race,Ethnicity\n" + "\n".join(rows) + "\n")
    if corpus == "iemocap":
        by_dialog: dict[Path, list[str]] = defaultdict(list)
        for i, (stem, emo) in enumerate(sorted(seen.items())):
            session = f"Session{int(stem[4])}"
            dialog = stem.rsplit("_", 1)[0]
            by_dialog[root / session / "dialog" / "EmoEvaluation" / f"{dialog}.txt"].append(
                f"[{i}.0 - {i}.5]\t{stem}\t{emo}\t[2.5, 2.5, 2.5]\n")
        for path, lines in by_dialog.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("% header\n" + "".join(lines))
    names = {"cremad": "crema_d"}
    return {"name": names.get(corpus, corpus), "root": str(root)}


CORPORA = {"emodb": 5, "cremad": 1, "tess": 1, "savee": 4, "emovo": 6, "ravdess": 6, "iemocap": 5}


@pytest.mark.slow
@pytest.mark.parametrize("corpus", sorted(CORPORA))
def test_emobox_lists_as_shipped_match_every_recipe(corpus, tmp_path):
    if not (EMOBOX / corpus / "fold_1").is_dir():
        pytest.skip(f"EmoBox's data/{corpus} not found (set WAV2EMO_TEST_EMOBOX=/path/to/EmoBox/data)")
    cfg = build(corpus, tmp_path / corpus)
    m = load_corpus(cfg)
    assert len(m) == len(entries(corpus))
    folds = build_folds({"name": "emobox", "path": str(EMOBOX / corpus)}, m, clip_splits=True)
    assert folds.num_folds == CORPORA[corpus] and len({s.protocol for s in folds.splits()}) == 1
    tested = [c for s in folds.splits() for c in s.test_clips]
    assert len(tested) == len(set(tested))
    print(corpus, folds.protocol)
