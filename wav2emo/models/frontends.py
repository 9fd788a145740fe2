"""Upstreams other than one SSL backbone, with the same ``forward(batch) -> batch`` contract as
:class:`~wav2emo.models.upstream.SSLUpstream`:

- :class:`LogMelUpstream`: ``wave`` -> ``logmel``/``logmel_mask`` with the exact computation of the log-mel
  cache, so online waveform augmentation reaches log-mel models too.  Nothing trains.
- :class:`UpstreamChain`: upstreams run in turn, e.g. a frozen backbone from (augmented) audio followed by
  top-k fine-tuning on its hidden states.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from wav2emo.features.logmel import LogMelFrontend


class LogMelUpstream(nn.Module):
    """``wave``/``wave_lengths`` -> ``logmel`` (B, T, M) and ``logmel_mask`` (B, T), never trained."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        super().__init__()
        self.frontend = LogMelFrontend(dict(spec))
        self.frontend.requires_grad_(False)
        self.n_mels = int(self.frontend.mel.n_mels)

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        if "wave" not in batch or "wave_lengths" not in batch:
            raise ValueError(f"LogMelUpstream reads `wave` and `wave_lengths`; the batch has {sorted(batch)}")
        out = dict(batch)
        with torch.no_grad():
            out["logmel"], out["logmel_mask"] = self.frontend(batch["wave"].float(), batch["wave_lengths"])
        return out

    def parameter_groups(self) -> list[dict[str, Any]]:
        return []


class UpstreamChain(nn.Module):
    """Run ``stages`` in order; parameter groups are the stages' own (names kept, frozen stages add none)."""

    def __init__(self, stages: Sequence[nn.Module]) -> None:
        super().__init__()
        if not stages:
            raise ValueError("UpstreamChain needs at least one stage")
        self.stages = nn.ModuleList(stages)

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(batch)
        for stage in self.stages:
            out = stage(out)
        return out

    def parameter_groups(self) -> list[dict[str, Any]]:
        return [g for stage in self.stages for g in stage.parameter_groups()]

    @property
    def num_layers(self) -> int:
        return int(self.stages[-1].num_layers)


class FixFrames(nn.Module):
    """Crop or zero-pad ``ssl``/``ssl_mask`` to ``frames``: what the data path does for cached features of a
    fixed-length model (``model.frames``, e.g. the reference's 263), for hidden states an upstream computed."""

    def __init__(self, frames: int) -> None:
        super().__init__()
        self.frames = int(frames)

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(batch)
        ssl, mask = batch["ssl"][:, :, : self.frames], batch["ssl_mask"][:, : self.frames]
        pad = self.frames - ssl.shape[2]
        if pad > 0:
            ssl = nn.functional.pad(ssl, (0, 0, 0, pad))
            mask = nn.functional.pad(mask, (0, pad))
        out["ssl"], out["ssl_mask"] = ssl, mask
        return out

    def parameter_groups(self) -> list[dict[str, Any]]:
        return []
