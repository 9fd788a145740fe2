"""Where and how exactly a backbone runs: the device, the compute precision, padded and normalised batches of waves.

Used by :class:`wav2emo.backbones.family.Backbone` for extraction and inference; fine-tuning runs under
Lightning's own precision instead.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext

import numpy as np
import torch

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


def autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=_AUTOCAST[precision])


@contextmanager
def exact_fp32(device: torch.device, precision: str) -> Iterator[None]:
    """fp32 on the GPU means fp32: no TF32 in convolutions or matrix products."""
    if device.type != "cuda" or precision != "fp32":
        yield
        return
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def pad_waves(waves: Sequence[np.ndarray], multiple: int = 1, pin: bool = False) -> tuple[torch.Tensor, list[int]]:
    """Prepared waves -> one zero-padded float32 batch (pinned when feeding a GPU) and the clips' lengths.

    ``multiple`` rounds the padded length up (length buckets): a GPU pays a one-off cost for every new
    convolution shape (cuDNN picks a kernel per shape), so fewer distinct shapes make a cold run
    faster.  Padding never changes a clip's features (every family's batch-invariance rule), so this is a
    speed knob only.
    """
    lengths = [len(w) for w in waves]
    width = -(-max(lengths) // max(1, multiple)) * max(1, multiple)
    x = torch.zeros(len(waves), width, dtype=torch.float32, pin_memory=pin)
    xn = x.numpy()
    for b, w in enumerate(waves):
        xn[b, : len(w)] = w
    return x, lengths


def normalize_wave(wave: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance over the clip (HF's ``zero_mean_unit_var_norm`` on the unpadded wave)."""
    w64 = wave.astype(np.float64)
    return ((w64 - w64.mean()) / np.sqrt(w64.var() + 1e-7)).astype(np.float32)


def normalize_waves(wave: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance per clip over its own samples (padding stays 0), in float64 as
    :func:`normalize_wave` computes it on the unpadded clip."""
    valid = torch.arange(wave.shape[1], device=wave.device)[None, :] < lengths[:, None]
    w64, n = wave.double() * valid, lengths[:, None].double()
    mean = w64.sum(1, keepdim=True) / n
    var = (((w64 - mean) * valid) ** 2).sum(1, keepdim=True) / n
    return (((w64 - mean) / torch.sqrt(var + 1e-7)) * valid).float()
