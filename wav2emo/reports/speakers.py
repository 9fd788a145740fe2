"""Which speaker each test prediction belongs to, for the speaker bootstrap and the paired tests.

Every ``predictions.csv`` written since issue 21 carries the fold's speaker id of each clip in the ``actor``
column (the id the folds split on; unique across corpora under ``data=multi``). An older file without it can
still be used when its fold tested a single speaker (leave-one-speaker-out); otherwise it is refused by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from wav2emo.reports.fold_results import FoldResultError

SPEAKER_COLUMN = "actor"


def with_speakers(preds: pd.DataFrame, result: Mapping[str, Any], source: str | Path) -> pd.DataFrame:
    """``preds`` with a usable ``actor`` column; :class:`FoldResultError` naming ``source`` when there is none."""
    if SPEAKER_COLUMN in preds.columns:
        if preds[SPEAKER_COLUMN].isna().any():
            raise FoldResultError(f"{source}: column {SPEAKER_COLUMN!r} is empty for "
                                  f"{int(preds[SPEAKER_COLUMN].isna().sum())} clip(s); every test clip needs its speaker")
        return preds
    test_actors = list((result.get("split") or {}).get("test_actors") or [])
    if len(test_actors) == 1:
        return preds.assign(**{SPEAKER_COLUMN: test_actors[0]})
    raise FoldResultError(f"{source}: no {SPEAKER_COLUMN!r} column and {len(test_actors)} test speakers in the fold, "
                          "so clips cannot be assigned to speakers (written before wav2emo recorded them: re-run "
                          "python -m wav2emo.eval on the fold's checkpoint)")


def check_test_speakers(preds: pd.DataFrame, source: str | Path) -> None:
    """Refuse a fold whose predictions hold no test clip (a fold without test speakers)."""
    if len(preds) == 0:
        raise FoldResultError(f"{source}: no test clips (a fold without test speakers?): nothing to score")
