"""A fold's run resolved once from the train config: ``FoldPlan``, what every step of the run reads.

:func:`fold_plan` reads the config once: it checks the combinations of model inputs, fine-tuning,
augmentation and feature normalisation (the feed rule, :mod:`wav2emo.feeding.feed`) before any data is built,
and resolves every section a fold is built from into plain values. The data module, the LightningModule,
the trainer, its callbacks and loggers, and the fold's record are built from the plan
(:mod:`wav2emo.runs.build`, :mod:`wav2emo.runs.fold_runner`), never from the config again.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig

from wav2emo.errors import ConfigError
from wav2emo.features.normalize import protocol_entry as normalize_protocol
from wav2emo.feeding.feed import Feed, build_upstream_for, resolve_inputs
from wav2emo.feeding.placement import parse_auto_bool
from wav2emo.plain_config import to_container
from wav2emo.reports.intervals import BootstrapSettings


@dataclass(frozen=True)
class FoldPlan:
    """One fold's run as plain, resolved values (the same for every fold of a run; the fold index is not in it).

    The dicts are the config's sections resolved against the whole config; whoever changes one for a
    fold (the trainer's root folder, a callback's folder) works on a copy.
    """

    config: dict[str, Any]  # the whole config: the fold's config.yaml, every checkpoint's record, the loggers
    feed: Feed  # what the data module serves, the upstream stages the model runs, finetune and normalisation
    augment: dict[str, Any] | None  # conf/augment (None: no augment group)
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

    def build_upstream(self):
        """A new upstream module of the feed (None without one): the SSL stages, log-mel, fixed frames."""
        return build_upstream_for(self.feed, self.features, self.model.get("frames"))

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


def fold_plan(cfg: DictConfig | FoldPlan) -> FoldPlan:
    """The plan of ``cfg`` (a plan is handed back as it is). Bad combinations are refused here, naming the
    settings, before any corpus, cache or model is built."""
    if isinstance(cfg, FoldPlan):
        return cfg
    # checked now, before any data or model is built (not after a fold's training)
    cuda_graphs = parse_auto_bool(cfg.get("cuda_graphs", False), "cuda_graphs")
    bootstrap = BootstrapSettings.from_config(cfg.get("report"))
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
