"""The fitted scikit-learn baseline of a fold, kept in its fold directory so it can be tested again later
(``python -m wav2emo.eval ckpt_path=<run> data=<another corpus>``).

scikit-learn estimators only serialise through pickle, which runs code when loaded.  So a model file is
loaded only when its SHA-256 matches the one its own fold's ``fold_result.json`` recorded when the run wrote
it: a file swapped or damaged after the run is refused, naming it.  (Whoever can rewrite both files can still
plant code, as with any pickle: evaluate only run directories you trust.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import joblib

from wav2emo.errors import UserError
from wav2emo.files import file_digest
from wav2emo.reports.fold_results import read_fold_result

MODEL_FILE = "model.joblib"
FORMAT = 1


class StoredModelError(UserError, ValueError):
    """A fold's stored scikit-learn model that is missing, changed since its run, or of another format."""


def save_model(fold_dir: str | Path, pipeline: Any, **info: Any) -> dict[str, str]:
    """Write ``model.joblib`` (the fitted pipeline and ``info``: class names, feature, normalisation) and return
    the entry the fold result records (file name and SHA-256)."""
    path = Path(fold_dir) / MODEL_FILE
    tmp = path.with_name(f".{path.name}.tmp")
    joblib.dump({"format": FORMAT, "pipeline": pipeline, **info}, tmp)
    tmp.replace(path)
    return {"file": MODEL_FILE, "sha256": file_digest(path, "sha256")}


def load_model(fold_dir: str | Path) -> dict[str, Any]:
    """The stored model of a baseline fold, after checking it is the file its run wrote."""
    fold_dir = Path(fold_dir)
    result = read_fold_result(fold_dir)
    entry = result.get("estimator")
    if not isinstance(entry, dict) or "sha256" not in entry:
        raise StoredModelError(f"{fold_dir}: the fold result records no stored estimator (runs before model.joblib "
                               "was saved): rerun the baseline to evaluate it on another corpus")
    name = str(entry.get("file", MODEL_FILE))
    if "/" in name or "\\" in name or name.startswith("."):
        raise StoredModelError(f"{fold_dir}: estimator file {name!r}; expected a file name in the fold folder")
    path = fold_dir / name
    if not path.is_file():
        raise StoredModelError(f"{path}: no such file; the fold result says the run stored its estimator there")
    if file_digest(path, "sha256") != entry["sha256"]:
        raise StoredModelError(f"{path}: its SHA-256 differs from the one {fold_dir / 'fold_result.json'} recorded; "
                               "the file changed after the run, so it is not loaded (a pickle runs code)")
    stored = joblib.load(path)
    if not isinstance(stored, dict) or stored.get("format") != FORMAT or "pipeline" not in stored:
        raise StoredModelError(f"{path}: not a wav2emo baseline model of format {FORMAT}")
    return stored
