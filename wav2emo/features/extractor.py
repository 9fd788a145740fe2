"""The extractor: a frozen backbone run on padded batches of waveforms, every hidden state per frame.

It applies the batch-invariance patch (:mod:`wav2emo.backbones.invariance`) and an attention mask, so a
clip's hidden states do not depend on the clips it is batched with, and it keeps fp32 exact on a GPU (no
TF32).  Precision: autocast (bf16/fp16) on the GPU only.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext

import numpy as np
import torch

from wav2emo.backbones import Backbone, BatchInvariance, conv_receptive_field
from wav2emo.errors import UserError

PRECISIONS = ("fp32", "bf16", "fp16")
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


class ExtractionError(UserError, RuntimeError):
    """Extraction that would store wrong features (bad lengths, non-finite values); names the clip."""


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` = the GPU when there is one, else the CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={device!r} but CUDA is not available here; use device=auto or cpu")
    return dev


def effective_precision(precision: str, device: torch.device) -> str:
    """Autocast only on the GPU: on the CPU everything runs in float32 whatever the spec asks."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}; expected one of {PRECISIONS}")
    return precision if device.type == "cuda" else "fp32"


def normalize_wave(wave: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance over the clip (HF's ``zero_mean_unit_var_norm`` on the unpadded wave)."""
    w64 = wave.astype(np.float64)
    return ((w64 - w64.mean()) / np.sqrt(w64.var() + 1e-7)).astype(np.float32)


class HiddenStateExtractor:
    """Runs a frozen backbone on batches of waveforms and returns every hidden state per frame."""

    def __init__(self, backbone: Backbone, device: torch.device, precision: str = "fp32") -> None:
        self.backbone = backbone
        self.model = backbone.model
        self.device = device
        self.precision = effective_precision(precision, device)
        self.invariance = BatchInvariance(self.model)
        config = self.model.config
        self.num_hidden_states = int(config.num_hidden_layers) + 1
        self.hidden_size = int(config.hidden_size)
        self.hop = math.prod(int(s) for s in config.conv_stride)
        self.receptive_field = conv_receptive_field(config.conv_kernel, config.conv_stride)

    @property
    def feature_shape(self) -> tuple[int, int]:
        return (self.num_hidden_states, self.hidden_size)

    @property
    def layer_names(self) -> list[str]:
        return ["encoder_input"] + [f"layer_{i:02d}" for i in range(1, self.num_hidden_states)]

    def num_frames(self, num_samples: int) -> int:
        return self.invariance.num_frames(num_samples)

    def prepare(self, wave: np.ndarray) -> np.ndarray:
        return normalize_wave(wave) if self.backbone.do_normalize else np.ascontiguousarray(wave, dtype=np.float32)

    def _autocast(self):
        if self.precision == "fp32":
            return nullcontext()
        return torch.autocast(self.device.type, dtype=_AUTOCAST[self.precision])

    @contextmanager
    def _exact_fp32(self) -> Iterator[None]:
        """fp32 on the GPU means fp32: no TF32 in convolutions or matrix products."""
        if self.device.type != "cuda" or self.precision != "fp32":
            yield
            return
        saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        try:
            yield
        finally:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved

    def pad(self, waves: Sequence[np.ndarray], multiple: int = 1) -> tuple[torch.Tensor, list[int]]:
        """Prepared waves -> one zero-padded float32 batch (pinned when feeding a GPU).

        ``multiple`` rounds the padded length up (length buckets): a GPU pays a one-off cost for every new
        convolution shape (cuDNN picks a kernel per shape), so fewer distinct shapes make a cold run
        faster.  Padding never changes a clip's features here, so this is a speed knob only.
        """
        lengths = [len(w) for w in waves]
        width = -(-max(lengths) // max(1, multiple)) * max(1, multiple)
        x = torch.zeros(len(waves), width, dtype=torch.float32, pin_memory=self.device.type == "cuda")
        xn = x.numpy()
        for b, w in enumerate(waves):
            xn[b, : len(w)] = w
        return x, lengths

    @torch.inference_mode()
    def forward(
        self, x: torch.Tensor, lengths: Sequence[int], out_dtype: torch.dtype = torch.float16
    ) -> tuple[torch.Tensor, list[int]]:
        """Padded batch ``(B, N)`` -> hidden states ``(B, T, num_hidden_states, dim)`` and frames per clip.

        Frames past a clip's own length are padding (their values are meaningless).
        """
        frames = [self.num_frames(n) for n in lengths]
        if min(frames) < 1:
            raise ExtractionError(
                f"a clip of {min(lengths)} samples is shorter than the backbone's receptive field "
                f"({self.receptive_field} samples); expected longer audio"
            )
        x = x.to(self.device, non_blocking=True)
        n_t = torch.as_tensor(lengths, device=self.device)
        mask = (torch.arange(x.shape[1], device=self.device)[None, :] < n_t[:, None]).long()
        with self._exact_fp32(), self._autocast(), self.invariance.lengths(lengths):
            out = self.model(x, attention_mask=mask, output_hidden_states=True)
        hidden = out.hidden_states
        if len(hidden) != self.num_hidden_states:
            raise ExtractionError(f"the model returned {len(hidden)} hidden states, expected {self.num_hidden_states}")
        t = hidden[0].shape[1]
        if t != self.num_frames(x.shape[1]):
            raise ExtractionError(f"the model returned {t} frames, expected {self.num_frames(x.shape[1])} for {x.shape[1]} samples")
        res = torch.empty((len(lengths), t, self.num_hidden_states, self.hidden_size), dtype=out_dtype, device=self.device)
        for layer, h in enumerate(hidden):
            res[:, :, layer].copy_(h)
        return res, frames

    def extract(self, waves: Sequence[np.ndarray], out_dtype: torch.dtype = torch.float32) -> list[np.ndarray]:
        """Convenience: raw waves -> one ``(T_i, L, D)`` array per clip (prepared, batched, unpadded)."""
        x, lengths = self.pad([self.prepare(w) for w in waves])
        res, frames = self.forward(x, lengths, out_dtype)
        res = res.cpu()
        return [res[b, :f].numpy().copy() for b, f in enumerate(frames)]
