"""Parameter groups and per-step learning-rate schedules for the head and an optional trainable backbone.

Modelled on SpeechBrain's IEMOCAP emotion recipe (``recipes/IEMOCAP/emotion_recognition/hparams/
train_with_wav2vec2.yaml``: ``lr: 0.0001`` for the head, ``lr_wav2vec2: 0.00001`` for wav2vec2, its own
optimizer and a frozen CNN feature encoder) and s3prl's fine-tuning (a separate upstream learning rate,
warm-up then linear decay).  The defaults (:class:`OptimSettings` ()) give one group of every trainable
parameter with the optimizer factory's own learning rate and weight decay, which is exactly the
optimisation before groups existed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from wav2emo.errors import ConfigError

DECAYS = ("none", "linear", "cosine")


@dataclass(frozen=True)
class OptimSettings:
    """``model.module.optim``: what changes the optimisation beyond the optimizer factory's lr.

    lr_backbone: learning rate of the upstream's groups (null: the head's lr; SpeechBrain uses 1e-5
        for wav2vec2 against 1e-4 for the head).
    layer_decay: layer-wise lr decay, lr_backbone * layer_decay**depth (depth 0 = top layer; 1.0 = off).
    weight_decay: null = the optimizer factory's own value on every parameter (today's behaviour);
        a number = that decay on weights and none on biases and normalisation parameters.
    warmup_steps: linear warm-up from 0 over this many optimizer steps (0 = none).
    decay: after the warm-up, "none" (constant), "linear" or "cosine" to 0 at the last step, per step.
    head_only_epochs: the backbone is frozen (requires_grad False, so no optimizer state) for the first
        n epochs; the head trains alone, then everything trains.
    """

    lr_backbone: float | None = None
    layer_decay: float = 1.0
    weight_decay: float | None = None
    warmup_steps: int = 0
    decay: str = "none"
    head_only_epochs: int = 0

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> OptimSettings:
        cfg = dict(cfg or {})
        unknown = set(cfg) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"model.module.optim: unknown keys {sorted(unknown)}; "
                              f"expected {sorted(cls.__dataclass_fields__)}")
        s = cls(**cfg)
        if s.decay not in DECAYS:
            raise ConfigError(f"model.module.optim.decay={s.decay!r}: expected one of {DECAYS}")
        if not 0 < s.layer_decay <= 1:
            raise ConfigError(f"model.module.optim.layer_decay={s.layer_decay}: expected 0 < layer_decay <= 1")
        if s.warmup_steps < 0 or s.head_only_epochs < 0:
            raise ConfigError("model.module.optim.warmup_steps and head_only_epochs must be >= 0")
        if s.lr_backbone is not None and s.lr_backbone < 0 or s.weight_decay is not None and s.weight_decay < 0:
            raise ConfigError("model.module.optim.lr_backbone and weight_decay must be >= 0")
        return s

    @property
    def scheduled(self) -> bool:
        return self.warmup_steps > 0 or self.decay != "none"


def is_no_decay(name: str, param: nn.Parameter, module_of: Mapping[str, nn.Module]) -> bool:
    """Biases, 1-d parameters and everything inside a normalisation layer get no weight decay."""
    owner = module_of.get(name.rsplit(".", 1)[0]) if "." in name else None
    norm = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)
    return name.endswith("bias") or param.dim() <= 1 or isinstance(owner, norm)


def _split_decay(
    group: dict[str, Any], names: Mapping[int, str], module_of: Mapping[str, nn.Module], weight_decay: float
) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for p in group["params"]:
        (no_decay if is_no_decay(names[id(p)], p, module_of) else decay).append(p)
    base = {k: v for k, v in group.items() if k != "params"}
    out = []
    if decay:
        out.append({**base, "params": decay, "weight_decay": weight_decay})
    if no_decay:
        out.append({**base, "name": f"{base['name']}/no_decay", "params": no_decay, "weight_decay": 0.0})
    return out


def parameter_groups(
    root: nn.Module, upstream: nn.Module | None, settings: OptimSettings, head_lr: float | None
) -> list[dict[str, Any]]:
    """Optimizer groups: the head (every trainable parameter outside ``upstream``) and the upstream's own
    ``parameter_groups()`` (each ``{name, depth, params}``) at ``lr_backbone * layer_decay**depth``.

    Only parameters with ``requires_grad`` enter; a trainable upstream parameter in no group is refused.
    """
    up_ids = {id(p) for p in upstream.parameters()} if upstream is not None else set()
    head = [p for p in root.parameters() if p.requires_grad and id(p) not in up_ids]
    groups: list[dict[str, Any]] = [{"name": "head", "params": head}] if head else []
    if upstream is not None:
        seen: set[int] = set()
        lr_b = settings.lr_backbone if settings.lr_backbone is not None else head_lr
        for g in upstream.parameter_groups():
            params = [p for p in g["params"] if p.requires_grad and id(p) not in seen]
            seen |= {id(p) for p in params}
            if params:
                group = {"name": f"backbone/{g['name']}", "params": params, "depth": int(g.get("depth", 0))}
                if lr_b is not None:
                    group["lr"] = float(lr_b) * settings.layer_decay ** group["depth"]
                groups.append(group)
        missed = [n for n, p in upstream.named_parameters() if p.requires_grad and id(p) not in seen]
        if missed:
            raise ValueError(f"{type(upstream).__name__}.parameter_groups() leaves trainable parameters out: "
                             f"{missed[:5]} ({len(missed)} in all)")
    if settings.weight_decay is not None:
        names = {id(p): n for n, p in root.named_parameters()}
        module_of = dict(root.named_modules())
        groups = [s for g in groups for s in _split_decay(g, names, module_of, settings.weight_decay)]
    return groups


def lr_lambda(step: int, total_steps: int, warmup_steps: int, decay: str) -> float:
    """The lr multiplier at optimizer step ``step``: linear warm-up, then constant / linear / cosine to 0."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if decay == "none":
        return 1.0
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, max(0.0, (step - warmup_steps) / span))
    if decay == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupDecay:
    """A picklable lr multiplier for ``LambdaLR`` (checkpoints store the scheduler's state)."""

    def __init__(self, total_steps: int, warmup_steps: int, decay: str) -> None:
        self.total_steps, self.warmup_steps, self.decay = int(total_steps), int(warmup_steps), decay

    def __call__(self, step: int) -> float:
        return lr_lambda(step, self.total_steps, self.warmup_steps, self.decay)


def warmup_decay_scheduler(optimizer: Optimizer, total_steps: int, settings: OptimSettings) -> LambdaLR:
    """The per-step schedule factory: every group's lr times the same warm-up/decay multiplier."""
    return LambdaLR(optimizer, WarmupDecay(total_steps, settings.warmup_steps, settings.decay))


def set_trainable(params: list[torch.nn.Parameter], trainable: bool) -> None:
    """Freeze or unfreeze: frozen parameters get no gradient, so the optimizer keeps no state for them."""
    for p in params:
        p.requires_grad_(trainable)
