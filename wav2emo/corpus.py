"""Check a corpus before any extraction: ``python -m wav2emo.corpus data=<name> data.corpus.root=<path> [--json]``.

Loads the corpus exactly as training would (its recipe, the corpus check, known release defects, the prepared
manifest cached under ``paths.cache_dir``) and prints what it found: clips, speakers, classes, the speaker x
emotion table (with a warning where speakers carry one or two emotions), durations, sample rates, channels,
defects handled, files set aside, and the usual folds.  ``--json`` (or ``json=true``) prints one JSON object
on stdout instead, for scripts.
"""

from __future__ import annotations

import json
import logging
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from wav2emo.cli import user_errors

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict:
    """The survey of the corpus ``cfg.data`` names (see :mod:`wav2emo.data.survey`), printed."""
    from wav2emo.data.corpora import load_corpus
    from wav2emo.data.folds import build_folds
    from wav2emo.data.survey import survey, survey_lines

    manifest = load_corpus(cfg.data.corpus, cache_dir=cfg.paths.cache_dir)
    folds = None
    if cfg.get("folds") is not None and not manifest.unlabelled:
        folds = build_folds(OmegaConf.to_container(cfg.folds, resolve=True), manifest, clip_splits=True)
    result = survey(manifest, folds)
    if cfg.get("json"):
        print(json.dumps(result, indent=1, default=str))
    else:
        print("\n".join(survey_lines(result)))
    return result


@hydra.main(version_base="1.3", config_path="conf", config_name="corpus")
def _main(cfg: DictConfig) -> None:
    try:
        with user_errors("wav2emo.corpus"):
            run(cfg)
    finally:
        _remove_empty_run_dir()


def _remove_empty_run_dir() -> None:
    """Hydra makes a run folder (and an empty log file) for every job; a check writes nothing there, so leave
    none behind."""
    from pathlib import Path

    from hydra.core.hydra_config import HydraConfig

    try:
        out = Path(HydraConfig.get().runtime.output_dir)
    except ValueError:  # not under Hydra (run() called directly)
        return
    for log_file in out.glob("*.log"):  # Hydra's file handler opens one; the check logs to stderr only
        if log_file.stat().st_size == 0:
            log_file.unlink()
    for d in (out, out.parent, out.parent.parent):  # .../corpus/runs/<time>, then runs/ and corpus/ if empty
        try:
            d.rmdir()
        except OSError:  # not empty (another run's, or a user's file), or gone: leave it
            return


def main() -> None:
    if "--json" in sys.argv[1:]:  # a flag scripts expect; Hydra takes key=value only
        sys.argv = [a for a in sys.argv if a != "--json"] + ["json=true"]
    _main()


if __name__ == "__main__":
    main()
