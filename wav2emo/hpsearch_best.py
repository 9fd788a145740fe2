"""``python -m wav2emo.hpsearch_best <search dir>``: test the best configuration of a hyper-parameter search.

A search (``python -m wav2emo.train -m hparams_search=...``) ends with this step itself unless
``hpsearch.final_test=false``; run it by hand after a search stopped early. Only the best trial on the dev
actors is ever tested (testing several and keeping the best test score would choose on the test actors).
The best complete trial's configuration is trained again on every fold it was searched on,
with ``test=true``, into ``<search dir>/best_trial_<n>/`` (its ``cv_report.md`` is the search's one test:
finished folds there are reported, not retrained), and ``hpsearch.{json,md}`` are written again.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from pathlib import Path

import yaml

from wav2emo.cli import user_errors
from wav2emo.errors import ConfigError, MissingFileError

log = logging.getLogger("wav2emo.hpsearch_best")


def search_metric(sweep_dir: Path) -> str:
    """The metric the search optimised, from the ``multirun.yaml`` Hydra saved (``val/ua_best`` without it)."""
    try:
        cfg = yaml.safe_load((sweep_dir / "multirun.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        cfg = {}
    return str(cfg.get("optimized_metric") or "val/ua_best")


def only_study(storage: str) -> str:
    import optuna

    from wav2emo.hpsearch.study import make_storage

    names = optuna.study.get_all_study_names(make_storage(storage, create=False))
    if len(names) != 1:
        raise ConfigError(f"{storage} holds the studies {names}: name one with --study")
    return names[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m wav2emo.hpsearch_best", description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", type=Path, help="the search's sweep directory (holding optuna.db and trial_<n>/)")
    ap.add_argument("--study", default=None, help="study name (default: the only study in the database)")
    ap.add_argument("--storage", default=None, help="Optuna storage: a database URL or a journal file (default: "
                    "sqlite:///<dir>/optuna.db, else <dir>/optuna.journal)")
    ap.add_argument("--summary-only", action="store_true", help="only write hpsearch.{json,md} again")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with user_errors("wav2emo.hpsearch_best"):
        return run(args)


def run(args: argparse.Namespace) -> int:
    from wav2emo.hpsearch.study import (
        best_trial,
        default_storage,
        final_dir_name,
        final_overrides,
        open_study,
    )
    from wav2emo.hpsearch.summary import write_summary

    sweep_dir = args.dir.resolve()
    if not sweep_dir.is_dir():
        raise MissingFileError(f"{args.dir}: no such search directory")
    storage = args.storage or default_storage(sweep_dir)
    study = open_study(storage, args.study or only_study(storage))
    metric = search_metric(sweep_dir)
    trial = best_trial(study)
    if trial is None:
        raise ConfigError(f"study {study.study_name!r} has no complete trial yet: nothing to test")
    if not args.summary_only:
        out = sweep_dir / final_dir_name(trial.number)
        cmd = [sys.executable, "-m", "wav2emo.train", *final_overrides(trial), f"hydra.run.dir={out}"]
        log.info("trial %d (mean dev %s %.4f), every fold with test=true:\n  %s", trial.number, metric, trial.value,
                 " ".join(cmd[1:]))
        code = subprocess.run(cmd, check=False).returncode
        if code != 0:
            log.error("the final run failed (exit status %d); its log: %s", code, out / "train.log")
            return code
    write_summary(sweep_dir, study, metric)
    print(f"Search summary: {sweep_dir / 'hpsearch.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
