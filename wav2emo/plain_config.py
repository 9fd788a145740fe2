"""A Hydra config as plain values: the task config without Hydra's own node, resolved into dicts and lists
(what checkpoints, run records and the feed rule carry)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

import wav2emo.precision  # noqa: F401  (registers ${wav2emo_precision:...}: resolving a run config needs it)


def without_hydra(cfg: DictConfig) -> DictConfig:
    """The task config alone: a config composed with ``return_hydra_config`` also holds Hydra's own node."""
    if "hydra" not in cfg:
        return cfg
    return OmegaConf.masked_copy(cfg, [k for k in cfg.keys() if k != "hydra"])


def to_container(cfg: DictConfig) -> dict[str, Any]:
    """A plain, resolved dict of the config (what checkpoints carry)."""
    return OmegaConf.to_container(without_hydra(cfg), resolve=True, throw_on_missing=False)  # type: ignore[return-value]
