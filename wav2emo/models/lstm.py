"""A bidirectional LSTM over the frames of a learned layer mix, with packed sequences.

Packing hands the LSTM each clip's real frames only (the backward direction starts at the clip's own
last frame, not at the batch's padding), so a clip gives the same output alone or padded in a batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from wav2emo.models.pooling import FrameHead, masked_mean, mlp

POOLINGS = ("mean", "last")


class LSTMHead(FrameHead):
    """Layer mix -> optional Linear+ReLU projection (``proj_dim``) -> BiLSTM (packed) -> masked mean of the
    outputs, or the last hidden state of each direction -> MLP."""

    inputs: tuple[str, ...] = ("ssl",)

    def __init__(
        self,
        in_channels: int = 13,
        feature_dim: int = 768,
        num_classes: int = 8,
        proj_dim: int | None = 256,
        lstm_hidden: int = 128,
        lstm_layers: int = 1,
        bidirectional: bool = True,
        pooling: str = "mean",
        hidden: Sequence[int] = (128,),
        dropout: float = 0.1,
        mix: str = "softmax",
        input_key: str = "ssl",
    ) -> None:
        super().__init__(in_channels, feature_dim, input_key, mix)
        if pooling not in POOLINGS:
            raise ValueError(f"LSTMHead pooling must be one of {POOLINGS}, got {pooling!r}")
        self.pooling = pooling
        if proj_dim is None:
            self.proj: nn.Module = nn.Identity()
            width = self.feature_dim
        else:
            self.proj = nn.Sequential(nn.Linear(self.feature_dim, int(proj_dim)), nn.ReLU(), nn.Dropout(dropout))
            width = int(proj_dim)
        self.lstm = nn.LSTM(
            width, int(lstm_hidden), num_layers=int(lstm_layers), batch_first=True, bidirectional=bool(bidirectional),
            dropout=dropout if int(lstm_layers) > 1 else 0.0,
        )
        out = int(lstm_hidden) * (2 if bidirectional else 1)
        self.classifier = mlp(out, hidden, num_classes, dropout)

    def forward(self, batch: Mapping[str, Any]) -> torch.Tensor:
        x, mask = self.mixed_frames(batch)
        lengths = mask.sum(dim=1)
        # Packing keeps the first `length` frames of each row: real frames must come first.
        prefix = torch.arange(mask.shape[1], device=mask.device)[None, :] < lengths[:, None]
        if not torch.equal(prefix, mask):
            raise ValueError("the frame mask must mark each clip's real frames first, then padding")
        h = self.proj(x.masked_fill(~mask.unsqueeze(-1), 0))
        packed = pack_padded_sequence(h, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, (h_n, _) = self.lstm(packed)
        if self.pooling == "last":
            dirs = 2 if self.lstm.bidirectional else 1
            pooled = h_n[-dirs:].transpose(0, 1).reshape(h.shape[0], -1)  # the top layer, every direction
        else:
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=h.shape[1])
            pooled = masked_mean(out, mask)
        return self.classifier(pooled)
