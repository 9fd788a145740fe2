"""An MLP over the 88 eGeMAPS functionals: the hand-crafted-feature baseline on the same folds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from wav2emo.models.blocks import module_dtype
from wav2emo.models.standardizer import Standardizer


class EgemapsMLP(nn.Module):
    """Standardizer -> (Linear -> ReLU -> Dropout) per hidden size -> Linear(num_classes)."""

    inputs: tuple[str, ...] = ("egemaps",)

    def __init__(
        self,
        egemaps_dim: int = 88,
        num_classes: int = 8,
        hidden: Sequence[int] = (128, 64),
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.norm = Standardizer(egemaps_dim, input_name="egemaps")
        layers: list[nn.Module] = []
        width = egemaps_dim
        for h in hidden:
            layers += [nn.Linear(width, int(h)), nn.ReLU(), nn.Dropout(dropout)]
            width = int(h)
        layers.append(nn.Linear(width, num_classes))
        self.mlp = nn.Sequential(*layers)

    def forward(self, batch: Mapping[str, Any]) -> torch.Tensor:
        if "egemaps" not in batch:
            raise KeyError(f"EgemapsMLP needs batch['egemaps'] (keys: {sorted(batch)})")
        return self.mlp(self.norm(batch["egemaps"]).to(module_dtype(self)))
