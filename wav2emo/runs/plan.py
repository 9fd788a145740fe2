"""A run resolved once from the train config, before any corpus is prepared: ``RunPlan`` (where and which folds
run, the search trial, the launch) around ``FoldPlan``, what every step of a fold's run reads.

:func:`run_plan` resolves and checks every setting of ``train(cfg)``, highest floor first: the run's folder and a
checkpoint to continue, the search trial, the launch, the fold plan, and last the folds asked for (their count
may need the corpus's manifest). :func:`fold_plan` reads the config once: it checks the combinations of model
inputs, fine-tuning, augmentation and feature normalisation (the feed rule, :mod:`wav2emo.feeding.feed`) and the
augment config itself before any data is built, and resolves every section a fold is built from into plain
values. The data module, the LightningModule, the trainer, its callbacks and loggers, and the fold's record are
built from the plan (:mod:`wav2emo.runs.build`, :mod:`wav2emo.runs.fold_runner`), never from the config again.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from wav2emo.augment.config import AugmentSpec, check_augment
from wav2emo.data.corpora import num_folds
from wav2emo.data.folds import folds_to_run
from wav2emo.errors import ConfigError, MissingFileError
from wav2emo.features.normalize import protocol_entry as normalize_protocol
from wav2emo.feeding.feed import Feed, resolve_inputs
from wav2emo.feeding.placement import parse_auto_bool
from wav2emo.hpsearch.trial import SearchTrial
from wav2emo.plain_config import to_container
from wav2emo.reports.fold_results import FOLD_RESULT
from wav2emo.reports.intervals import BootstrapSettings
from wav2emo.runs.common import output_dir
from wav2emo.training.distributed import check_launch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FoldPlan:
    """One fold's run as plain, resolved values (the same for every fold of a run; the fold index is not in it).

    The dicts are the config's sections resolved against the whole config; whoever changes one for a
    fold (the trainer's root folder, a callback's folder) works on a copy.
    """

    config: dict[str, Any]  # the whole config: the fold's config.yaml, every checkpoint's record, the loggers
    feed: Feed  # what the data module serves, the upstream stages the model runs, finetune and normalisation
    augment: dict[str, Any] | None  # conf/augment (None: no augment group)
    augment_spec: AugmentSpec | None  # conf/augment checked, its transforms found: each fold's augmenter is built from it
    model: dict[str, Any]  # conf/model: inputs, featurizer, frames, the LightningModule (model.module)
    trainer: dict[str, Any]
    callbacks: dict[str, Any]
    loggers: dict[str, Any]
    ckpt_path: str | None  # a checkpoint this run continues
    seed: int
    test: bool  # test the dev-chosen checkpoint on the test actors
    bootstrap: BootstrapSettings  # conf/report: the speaker-bootstrap settings of the test intervals
    cuda_graphs: bool | str  # True, False or "auto" (training/fast_path.py)
    cuda_graphs_max: int

    @property
    def trains(self) -> bool:
        """Made for training (``fold_plan(cfg)``); False for a checkpoint's plan (``for_training=False``): testing or
        predicting with it, whose statistics come from the checkpoint."""
        return self.augment_spec is not None

    @property
    def features(self) -> dict[str, Any]:
        return self.config["features"]

    @property
    def datamodule(self) -> dict[str, Any]:
        """conf/datamodule serving what the feed rule says: its inputs, and length buckets where the rule asks for
        them (unless the model cuts clips to fixed ``frames``)."""
        served = {**self.config["datamodule"], "inputs": list(self.feed.inputs)}
        if self.feed.bucket_by_length is not None and served.get("frames") is None:
            served["bucket_by_length"] = self.feed.bucket_by_length
        return served

    @property
    def optim(self) -> dict[str, Any] | None:
        """``model.module.optim`` with ``finetune.optim`` merged over it when fine-tuning (else unchanged)."""
        base = dict(self.model["module"].get("optim") or {})
        if self.finetune["mode"] == "none":
            return base or None
        return {**base, **dict(self.finetune.get("optim") or {})}

    @property
    def finetune(self) -> dict[str, Any]:
        """conf/finetune (mode none when the config has no finetune group)."""
        return self.feed.finetune

    @property
    def normalize(self) -> str | None:
        """features.normalize: "speaker" or None."""
        return self.feed.normalize

    @property
    def model_name(self) -> str:
        return str(self.model.get("name", "?"))

    def protocol(self) -> dict[str, Any]:
        """What a fold result says about fine-tuning, augmentation and feature normalisation (``fold_result.json``
        ``protocol``; :mod:`wav2emo.reports.aggregate` reads it)."""
        return {
            "finetune": copy.deepcopy(self.finetune),
            "augment": {"name": "none"} if self.augment is None else copy.deepcopy(self.augment),
            "inputs": list(self.feed.inputs),
            "upstream": list(self.feed.upstream),
            **normalize_protocol(self.normalize),  # per-speaker normalisation reads test speakers' audio
        }

    def tags(self) -> list[str]:
        """W&B tags naming the finetune, augment and normalisation settings, e.g. ``finetune=top_k(k=4)``,
        ``augment=standard``, ``normalize=speaker``."""
        ft = self.finetune
        ft_tag = f"finetune={ft['mode']}" + (f"(k={ft.get('k')})" if ft["mode"] == "top_k" else "")
        aug_name = "none" if self.augment is None else str(self.augment.get("name"))
        aug_tag = f"augment={aug_name}" + (f"({self.augment.get('mode')})" if aug_name != "none" else "")
        return [ft_tag, aug_tag, *([f"normalize={self.normalize}"] if self.normalize else [])]


def fold_plan(cfg: DictConfig | FoldPlan, *, for_training: bool = True) -> FoldPlan:
    """The plan of ``cfg`` (a plan is handed back as it is). Bad combinations are refused here, naming the
    settings, before any corpus, cache or model is built.

    ``for_training=False``: the plan of a checkpoint's config for testing or predicting with it (``wav2emo.eval``,
    ``wav2emo.predict``, cross-corpus testing): nothing is trained, so its augment config is not checked here and
    ``augment_spec`` is None (a checkpoint's augmentations need not be importable where it is used)."""
    if isinstance(cfg, FoldPlan):
        return cfg
    # checked now, before any data or model is built (not after a fold's training)
    cuda_graphs = parse_auto_bool(cfg.get("cuda_graphs", False), "cuda_graphs")
    bootstrap = BootstrapSettings.from_config(cfg.get("report"))
    augment_spec = check_augment(cfg.get("augment")) if for_training else None
    config = to_container(cfg)
    if config.get("datamodule") is None or config["model"].get("inputs") is None:
        raise ConfigError(
            "the config has no `datamodule` group or no `model.inputs`: it predates the data module built by "
            "hydra (conf/datamodule/default.yaml); a checkpoint of that layout cannot be rebuilt by this "
            "version - retrain it, or evaluate it with the wav2emo version that trained it"
        )
    feed = resolve_inputs(config)  # the feed rule: refuses bad finetune/augment/normalize combinations
    return FoldPlan(
        config=config,
        feed=feed,
        augment=config.get("augment"),
        augment_spec=augment_spec,
        model=config["model"],
        trainer=config.get("trainer") or {},
        callbacks=config.get("callbacks") or {},
        loggers=config.get("logger") or {},
        ckpt_path=None if config.get("ckpt_path") is None else str(config["ckpt_path"]),
        seed=int(config["seed"]),
        test=bool(config.get("test", True)),
        bootstrap=bootstrap,
        cuda_graphs=cuda_graphs,
        cuda_graphs_max=int(config.get("cuda_graphs_max", 32) or 32),
    )


@dataclass(frozen=True)
class RunPlan:
    """A training run as resolved values: every setting checked before any corpus is prepared."""

    out: Path  # the run's folder: fold_<k>/ for each fold (a continued run's own folder)
    plan: FoldPlan  # what every fold is built from (its ckpt_path cleared when a whole run folder is continued)
    trial: SearchTrial | None  # the search trial this job is (None outside a search)
    several: bool  # several processes train (trainer=ddp over devices x nodes > 1)
    folds: list[int]  # the folds of ``fold=``, in the order asked


def run_plan(cfg: DictConfig) -> RunPlan:
    """The run of ``cfg``, resolved and checked before any corpus is prepared, highest floor first: the run's
    folder and a checkpoint it continues (:func:`checkpoint_source`), the search trial (which refuses ``test=true``),
    the launch (no several-process run inside a multirun), every fold's plan (the feed rule), and last the folds
    of ``fold=`` (their count may need the corpus's manifest).

    Where the folds run, and from which ``ckpt_path``:

    * no ``ckpt_path``: this run's output directory (a re-run into the same directory skips finished
      folds and continues interrupted ones, see :func:`~wav2emo.runs.fold_runner.run_fold`);
    * ``ckpt_path=<run directory>`` (one holding ``fold_<k>`` folders): that directory, each requested fold
      skipped when finished, continued from its ``last.ckpt`` when interrupted, trained when absent;
    * ``ckpt_path=<checkpoint file>`` (one fold): an interrupted fold continues in its own directory; a
      finished one continues in this run's output directory, from a copy of its checkpoints.
    """
    out = output_dir(cfg)
    source = checkpoint_source(cfg.get("ckpt_path"))
    trial = SearchTrial.from_cfg(cfg)
    several = check_launch(cfg.trainer)
    plan = fold_plan(cfg)
    config = plan.config
    folds = folds_to_run(cfg.fold, num_folds(config["folds"], config.get("data") or {}, config["paths"]["cache_dir"]))
    ckpt = plan.ckpt_path
    if ckpt is not None and Path(ckpt).is_dir():
        log.info("continuing the run in %s: finished folds are reported, interrupted ones continued", source)
        out, plan = source, replace(plan, ckpt_path=None)
    elif ckpt is not None:
        if len(folds) != 1:
            raise ConfigError(f"ckpt_path={ckpt} continues one fold's training but fold={folds}: pass fold=<k>, or "
                              f"pass the run directory as ckpt_path to continue every unfinished fold of that run")
        if source is not None and source.name == f"fold_{folds[0]}" and not (source / FOLD_RESULT).exists():
            out = source.parent
    return RunPlan(out=out, plan=plan, trial=trial, several=several, folds=folds)


def checkpoint_source(ckpt: Any) -> Path | None:
    """The run folder that ``ckpt_path`` names, or the folder of the fold that its checkpoint file continues
    (``<run>/fold_<k>``; None without ``ckpt_path``, or for a checkpoint outside a fold's ``checkpoints``)."""
    if ckpt is None:
        return None
    path = Path(str(ckpt))
    if path.is_dir():
        if path.name.startswith("fold_") and (path / "checkpoints").is_dir():
            path = path.parent
        if not any(path.glob("fold_*")):
            raise ConfigError(f"ckpt_path={ckpt}: expected a checkpoint file or a run directory holding fold_<k> "
                              f"folders, found neither")
        return path
    if not path.is_file():
        raise MissingFileError(f"ckpt_path={ckpt}: no such checkpoint file or run directory")
    return fold_dir_of(path)


def fold_dir_of(ckpt: Path) -> Path | None:
    """``<run>/fold_<k>`` for a checkpoint at ``<run>/fold_<k>/checkpoints/<name>.ckpt``, else None."""
    parent = ckpt.resolve().parent
    return parent.parent if parent.name == "checkpoints" and parent.parent.name.startswith("fold_") else None
