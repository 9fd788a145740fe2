"""One stage's epoch of predictions, kept on the device until the epoch ends (no per-step host reads)."""

from __future__ import annotations

from typing import NamedTuple

import torch


class EpochOutputs:
    """One stage's predictions, labels and batch losses over an epoch, kept where they were computed.

    Appending device tensors never waits for the device; :meth:`collect` concatenates them once.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.preds: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []
        self.losses: list[torch.Tensor] = []

    def add(self, preds: torch.Tensor, labels: torch.Tensor, loss: torch.Tensor) -> None:
        self.preds.append(preds)
        self.labels.append(labels)
        self.losses.append(loss.float().reshape(1))

    def collect(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """(preds, labels, per-batch mean losses, batch sizes), or None when no batch was seen."""
        if not self.preds:
            return None
        sizes = torch.tensor([len(p) for p in self.preds], dtype=torch.float32, device=self.losses[0].device)
        return torch.cat(self.preds), torch.cat(self.labels), torch.cat(self.losses), sizes


class EpochResult(NamedTuple):
    """What one stage's epoch produced: its predictions and labels, mean loss, and metric values."""

    preds: torch.Tensor
    labels: torch.Tensor
    loss: torch.Tensor
    metrics: dict[str, torch.Tensor]
