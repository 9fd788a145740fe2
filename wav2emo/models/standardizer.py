"""Feature standardisation whose statistics live in the model, so they travel with the checkpoint.

The reference system fitted its eGeMAPS scaler on the test features; here the statistics are fitted on
the training actors only (by the training code) and stored as buffers, so a saved model standardises
new clips exactly as it did during training.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

ArrayLike = torch.Tensor | np.ndarray | list[float]


def _as_float64(x: ArrayLike) -> torch.Tensor:
    if torch.is_tensor(x):
        return x.detach().cpu().double()
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


class Standardizer(nn.Module):
    """``(x - mean) / std`` with buffers ``mean``, ``std`` and ``fitted`` saved in the state_dict.

    ``input_name`` names the batch key it standardises ("egemaps"), so
    ``EmotionClassifier.set_feature_stats(name, ...)`` can find it without knowing the net's layout.
    """

    def __init__(self, dim: int, input_name: str | None = None) -> None:
        super().__init__()
        if dim <= 0:
            raise ValueError(f"Standardizer dim must be positive, got {dim}")
        self.dim = dim
        self.input_name = input_name
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.register_buffer("fitted", torch.tensor(False))
        # A host-side copy of ``fitted``: reading the buffer in every forward would make the CPU wait for
        # the GPU once per training step.  Kept in step by set_stats and by loading a state_dict.
        self._fitted_host = False
        self.register_load_state_dict_post_hook(Standardizer._sync_fitted_flag)

    @staticmethod
    def _sync_fitted_flag(module: Standardizer, incompatible_keys) -> None:
        module._fitted_host = bool(module.fitted.item())

    @property
    def is_fitted(self) -> bool:
        return self._fitted_host

    @torch.no_grad()
    def set_stats(self, mean: ArrayLike, std: ArrayLike) -> None:
        """Store statistics fitted on the training actors; validates shape and finiteness."""
        mean_t, std_t = _as_float64(mean), _as_float64(std)
        for name, t in (("mean", mean_t), ("std", std_t)):
            if t.shape != (self.dim,):
                raise ValueError(f"Standardizer {name} must have shape ({self.dim},), got {tuple(t.shape)}")
            if not torch.isfinite(t).all():
                bad = torch.nonzero(~torch.isfinite(t)).flatten().tolist()
                raise ValueError(f"Standardizer {name} has non-finite values at indices {bad[:10]}")
        if (std_t < 0).any():
            bad = torch.nonzero(std_t < 0).flatten().tolist()
            raise ValueError(f"Standardizer std must be >= 0, got negative values at indices {bad[:10]}")
        # A feature that is constant over the training actors has std 0; dividing by 1 instead keeps it
        # centred (zero for every training clip) rather than producing inf/NaN for every clip.
        std_t = torch.where(std_t == 0, torch.ones_like(std_t), std_t)
        self.mean.copy_(mean_t.to(self.mean.dtype))
        self.std.copy_(std_t.to(self.std.dtype))
        self.fitted.fill_(True)
        self._fitted_host = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.is_fitted:
            raise RuntimeError(
                f"Standardizer({self.dim}, input={self.input_name!r}) is not fitted: call set_stats(mean, std) "
                "with statistics of the training actors (or load a checkpoint) before the forward pass"
            )
        if x.dim() != 2 or x.shape[-1] != self.dim:
            raise ValueError(
                f"Standardizer input {self.input_name!r} must have shape (B, {self.dim}), got {tuple(x.shape)}"
            )
        return (x.to(self.mean.dtype) - self.mean) / self.std
