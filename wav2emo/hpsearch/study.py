"""The persistent Optuna study of a search: where it lives, its trials, and the overrides that rebuild a trial.

Shared by the sweeper (the process running the search), the trials (pruning, in the training jobs) and
``python -m wav2emo.hpsearch_best`` (the final run of a search, afterwards).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wav2emo.errors import ConfigError, MissingFileError

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)
logging.getLogger("alembic").setLevel(logging.WARNING)  # its migration plugins log each set-up at INFO, every open

STUDY_DB = "optuna.db"            # conf/hydra/sweeper/wav2emo_optuna.yaml: sqlite:///<sweep dir>/optuna.db
STUDY_JOURNAL = "optuna.journal"  # hydra.sweeper.storage=<sweep dir>/optuna.journal: the journal file storage
SEARCH_ATTR = "wav2emo_search"    # study user attribute: the overrides and search space the study was made with
TRIAL_KEY = "hpsearch.trial"      # the override that tells a job which trial it is
TEST_KEY = "test"


def trial_dir_name(number: int) -> str:
    """A trial's job directory under the sweep directory (``hydra.sweep.subdir`` in conf/hparams_search)."""
    return f"trial_{number}"


def final_dir_name(number: int) -> str:
    """Where the best trial's configuration is trained again with ``test=true`` (its own folder per trial:
    a later, better trial never reuses an earlier best's finished folds)."""
    return f"best_trial_{number}"


def sqlite_file(storage: str | None) -> Path | None:
    """The database file of a ``sqlite:///...`` storage URL (None for other storages or in-memory)."""
    if not storage or not str(storage).startswith("sqlite:///"):
        return None
    return Path(str(storage)[len("sqlite:///"):])


def journal_file(storage: str | None) -> Path | None:
    """The file of a journal storage: a storage given as a plain path, not a URL (None otherwise)."""
    if not storage or "://" in str(storage):
        return None
    return Path(str(storage))


def make_storage(storage: str | None, *, create: bool = True) -> Any:
    """The Optuna storage of ``hydra.sweeper.storage``, safe for several processes at once:

    - a database URL (``sqlite:///<dir>/optuna.db``, the default; ``postgresql://...``, ``mysql://...``):
      Optuna's RDB storage on SQLAlchemy 2. SQLite writers wait up to 60 s for each other's locks instead of
      failing with "database is locked" (trials of a parallel search report to the study when pruning);
    - a plain file path (``<dir>/optuna.journal``): Optuna's journal file storage, an append-only log with a
      file lock, recommended for parallel trials through the joblib launcher or on a shared file system.

    ``create=False`` refuses a missing file instead of creating an empty study database.
    """
    import optuna

    if not storage:
        return None
    path = sqlite_file(storage) or journal_file(storage)
    if path is not None and not create and not path.is_file():
        raise MissingFileError(f"{path}: no study storage (expected the {STUDY_DB} or {STUDY_JOURNAL} a search "
                               "writes into its sweep directory)")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    if journal_file(storage) is not None:
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    kwargs = {"connect_args": {"timeout": 60}} if sqlite_file(storage) is not None else None
    try:
        return optuna.storages.RDBStorage(str(storage), engine_kwargs=kwargs)
    except RuntimeError as e:  # a study database of an older Optuna (wav2emo used 2.10 before)
        if "optuna storage upgrade" not in str(e):
            raise
        raise ConfigError(f"{storage}: written by an older Optuna than {optuna.__version__}; upgrade it once "
                          f"(keeps every trial): optuna storage upgrade --storage {storage}") from None


def default_storage(sweep_dir: Path) -> str:
    """The storage a search wrote into its sweep directory: ``optuna.db`` (SQLite), else ``optuna.journal``."""
    journal = sweep_dir / STUDY_JOURNAL
    if not (sweep_dir / STUDY_DB).is_file() and journal.is_file():
        return str(journal)
    return f"sqlite:///{sweep_dir / STUDY_DB}"


def open_study(storage: str | None, study_name: str | None, pruner: Any = None) -> optuna.Study:
    """An existing study, e.g. from a trial's job or after the search; a missing one is named in one line."""
    import optuna

    if not storage:
        raise ConfigError("the search has no storage (hydra.sweeper.storage=null): trials cannot open the study; "
                          "keep the default sqlite:///<sweep dir>/optuna.db")
    backend = make_storage(storage, create=False)
    try:
        return optuna.load_study(study_name=study_name, storage=backend, pruner=pruner)
    except KeyError:
        names = optuna.study.get_all_study_names(backend)
        raise ConfigError(f"no study named {study_name!r} in {storage}; it holds {names}") from None


def finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Trials that count towards ``n_trials``: complete or pruned (failed and interrupted ones are replaced)."""
    from optuna.trial import TrialState

    return [t for t in study.get_trials(deepcopy=False) if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


def fail_interrupted(study: optuna.Study) -> list[int]:
    """Mark trials left RUNNING by an interrupted search as failed (their folds are not trained further: a
    new trial takes their place). One sweeper per study: another live sweeper's trials would be failed too."""
    from optuna.trial import TrialState

    numbers = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        numbers.append(t.number)
    if numbers:
        log.warning("trials %s of study %r were left running by an interrupted search: marked failed, new trials "
                    "replace them", numbers, study.study_name)
    return numbers


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The complete trial with the best value; None while no trial has completed."""
    from optuna.trial import TrialState

    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    return study.best_trial


def override(name: str, value: Any) -> str:
    """``name=value``, a trial's override (so a trial is rebuilt exactly)."""
    return f"{name}={value}"


def trial_overrides(trial: optuna.trial.FrozenTrial) -> list[str]:
    """The overrides a trial ran with: the command line's fixed ones (the sweeper keeps them as the trial's
    user attributes) and the sampled values."""
    fixed = [override(k, v) for k, v in trial.user_attrs.items()]
    return fixed + [override(k, v) for k, v in trial.params.items()]


def final_overrides(trial: optuna.trial.FrozenTrial) -> list[str]:
    """The best trial's configuration on every fold it was searched on, now tested on the test actors."""
    keep = [o for o in trial_overrides(trial) if o.split("=", 1)[0].lstrip("+") not in (TEST_KEY, TRIAL_KEY)]
    return [*keep, f"{TEST_KEY}=true", f"{TRIAL_KEY}=null"]


def search_identity(fixed: Mapping[str, Any], space: Mapping[str, Any]) -> dict[str, Any]:
    """What makes two runs of a search the same search: the fixed overrides (less ``hpsearch.*``, how the
    search runs rather than what a trial trains) and the search space."""
    return {"fixed": sorted(override(k, v) for k, v in fixed.items() if not k.lstrip("+").startswith("hpsearch.")),
            "space": {k: repr(v) for k, v in sorted(space.items())}}


def check_same_search(study: optuna.Study, identity: dict[str, Any], *, strict: bool) -> None:
    """A study resumed by another command would mix two experiments: refuse other fixed overrides (``strict``)
    and warn about another search space; a new study records what it was started with."""
    stored = study.user_attrs.get(SEARCH_ATTR)
    if stored is None:
        study.set_user_attr(SEARCH_ATTR, identity)
        return
    if stored["fixed"] != identity["fixed"]:
        msg = (f"study {study.study_name!r} was started with the overrides {stored['fixed']}, this command has "
               f"{identity['fixed']}: resuming would mix two experiments in one study. Pass hpsearch.name=<new "
               f"name> for a new search (or hpsearch.resume_check=false to resume anyway)")
        if strict:
            raise ConfigError(msg)
        log.warning(msg)
    if stored["space"] != identity["space"]:
        log.warning("study %r: the search space changed since it was started (was %s, now %s); earlier trials "
                    "stay in the study", study.study_name, json.dumps(stored["space"]),
                    json.dumps(identity["space"]))
        study.set_user_attr(SEARCH_ATTR, {**stored, "space": identity["space"]})


def states(trials: Iterable[optuna.trial.FrozenTrial]) -> dict[str, int]:
    """How many trials are in each state, e.g. ``{"COMPLETE": 3, "PRUNED": 1}``."""
    out: dict[str, int] = {}
    for t in trials:
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out
