"""One writer and one reader for a fold's result files (``fold_result.json``, ``predictions.csv``).

Training, the classic baselines, eval and the reports all go through these functions, so the file names
are written in one place and a damaged or foreign file is named with the key it lacks instead of
surfacing later as a ``KeyError`` deep inside a report.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from wav2emo.errors import UserError
from wav2emo.files import atomic_write_text

if TYPE_CHECKING:  # pandas is imported where predictions are read: a training run's start-up does not need it
    import pandas as pd

FOLD_RESULT = "fold_result.json"
PREDICTIONS = "predictions.csv"

# What every fold result holds; a tested fold (``"test"`` present) holds the test keys as well.
REQUIRED_KEYS = ("fold", "model", "split")
REQUIRED_SPLIT_KEYS = ("test_actors",)
REQUIRED_TEST_KEYS = ("class_names",)
REQUIRED_TEST_METRICS = ("wa", "ua", "f1")
PREDICTION_COLUMNS = ("clip_id", "label", "pred")


class FoldResultError(UserError, ValueError):
    """A fold result or predictions file that is unreadable or lacks what the reports need."""


def jsonable(x: Any) -> Any:
    """Plain JSON values: numpy and torch scalars/arrays to Python, NaN to null (JSON has no NaN)."""
    if isinstance(x, Mapping):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, (np.floating, float)):
        return None if math.isnan(float(x)) else float(x)
    if hasattr(x, "tolist") and type(x).__module__.startswith("torch"):
        return jsonable(x.tolist())
    return x


def check_fold_result(result: Mapping[str, Any], source: str | Path = "fold result") -> None:
    """Raise :class:`FoldResultError` naming ``source`` and the first missing key."""
    if not isinstance(result, Mapping):
        raise FoldResultError(f"{source}: expected a JSON object, got {type(result).__name__}")
    for key in REQUIRED_KEYS:
        if key not in result:
            raise FoldResultError(f"{source}: missing key {key!r} (a fold result holds {', '.join(REQUIRED_KEYS)})")
    try:
        int(result["fold"])
    except (TypeError, ValueError):
        raise FoldResultError(f"{source}: 'fold' is {result['fold']!r}, expected a fold index") from None
    split = result["split"]
    if not isinstance(split, Mapping):
        raise FoldResultError(f"{source}: 'split' is {type(split).__name__}, expected an object")
    for key in REQUIRED_SPLIT_KEYS:
        if key not in split:
            raise FoldResultError(f"{source}: missing key 'split.{key}'")
    if "test" not in result:
        return  # trained with test=false: a valid result with nothing to report on the test actors
    test = result["test"]
    if not isinstance(test, Mapping):
        raise FoldResultError(f"{source}: 'test' is {type(test).__name__}, expected an object of metrics")
    for key in REQUIRED_TEST_METRICS:
        if key not in test:
            raise FoldResultError(f"{source}: missing key 'test.{key}' (a tested fold holds "
                                  f"{', '.join('test.' + k for k in REQUIRED_TEST_METRICS)})")
    for key in REQUIRED_TEST_KEYS:
        if key not in result:
            raise FoldResultError(f"{source}: missing key {key!r} (a tested fold names its classes)")


def write_fold_result(fold_dir: str | Path, result: Mapping[str, Any], filename: str = FOLD_RESULT) -> Path:
    """Check and write ``<fold_dir>/fold_result.json`` (or ``filename``, e.g. eval's ``eval_result.json``,
    which has the same schema); returns its path."""
    data = jsonable(result)
    path = Path(fold_dir) / filename
    check_fold_result(data, path)
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
    return path


def read_fold_result(path: str | Path, filename: str = FOLD_RESULT) -> dict[str, Any]:
    """The checked fold result at ``path`` (a fold directory holding ``filename``, or the JSON file itself)."""
    path = Path(path)
    if path.is_dir():
        path = path / filename
    if not path.is_file():
        raise FoldResultError(f"{path}: no such fold result file")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FoldResultError(f"{path}: not readable as JSON ({e})") from None
    check_fold_result(data, path)
    return data


def write_predictions(fold_dir: str | Path, predictions: pd.DataFrame) -> Path:
    """Check and write ``<fold_dir>/predictions.csv`` (one row per test clip); returns its path."""
    path = Path(fold_dir) / PREDICTIONS
    _check_prediction_columns(predictions, path)
    atomic_write_text(path, predictions.to_csv(index=False))
    return path


def _check_prediction_columns(df: pd.DataFrame, source: Path) -> None:
    for col in PREDICTION_COLUMNS:
        if col not in df.columns:
            raise FoldResultError(f"{source}: missing column {col!r} (predictions hold "
                                  f"{', '.join(PREDICTION_COLUMNS)}); found {list(df.columns)}")


def read_predictions(path: str | Path) -> pd.DataFrame:
    """The checked predictions at ``path`` (a fold directory or the CSV file itself)."""
    path = Path(path)
    if path.is_dir():
        path = path / PREDICTIONS
    if not path.is_file():
        raise FoldResultError(f"{path}: no such predictions file")
    import pandas as pd

    try:
        df = pd.read_csv(path)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise FoldResultError(f"{path}: not readable as CSV ({e})") from None
    _check_prediction_columns(df, path)
    for col in ("label", "pred"):
        if len(df) and not pd.api.types.is_integer_dtype(df[col]):
            raise FoldResultError(f"{path}: column {col!r} holds {df[col].dtype} values such as "
                                  f"{df[col].iloc[0]!r}, expected class indices")
    return df
