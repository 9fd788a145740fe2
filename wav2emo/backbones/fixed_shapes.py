"""Few input shapes for a conv front end on the GPU, so cuDNN autotunes each shape once.

Why: online augmentation and full fine-tuning run wav2vec2's CNN on every training batch.  Length-bucketed
batches give it a new length almost every step, so with ``cudnn.benchmark`` off cuDNN runs a generic
algorithm (``implicit_convolve_sgemm``: about 37 of 63 ms per online step on an H200,
``benchmarks/reports/finetune_nvidia_h200.md``).  Padding the prepared waves to a multiple of
:attr:`FixedShapes.bucket_s` leaves a handful of lengths, which cuDNN then times once each.

Safe because of batch invariance (:mod:`wav2emo.backbones.invariance`): the masked group norm and the
attention mask make each clip's frames independent of the padding, so the extra zeros change nothing but
float rounding (``tests/test_fixed_shapes.py``); the caller cuts the frames back to the unpadded length.
Switch both off with ``SETTINGS.bucket_s = 0`` and ``SETTINGS.autotune = False`` (the benchmark's previous
way does).  Used by ``models/upstream.SSLUpstream`` (frozen and full modes from waveforms), not by extraction:
extraction already pads to ``length_bucket_s`` and runs many batch sizes, each of which cuDNN would time
once, while its cost in cached augmentation hides behind eGeMAPS on the CPU (measured on an H200).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class FixedShapes:
    bucket_s: float = 0.5  # pad waves to a multiple of this many seconds before the front end (0: off)
    autotune: bool = True  # cudnn.benchmark while the backbone runs on a GPU (never with deterministic cuDNN)
    async_copies: bool = True  # host_to_device without waiting for the GPU (False: torch.as_tensor, as before)


SETTINGS = FixedShapes()


def pad_to_bucket(x: torch.Tensor, sampling_rate: int, bucket_s: float | None = None) -> torch.Tensor:
    """``x`` (B, S), zero-padded on the right to a multiple of ``bucket_s`` seconds (unchanged when off)."""
    bucket_s = SETTINGS.bucket_s if bucket_s is None else bucket_s
    if not bucket_s or bucket_s <= 0:
        return x
    step = max(1, round(bucket_s * sampling_rate))
    target = math.ceil(x.shape[1] / step) * step
    return x if target == x.shape[1] else F.pad(x, (0, target - x.shape[1]))


@contextmanager
def conv_autotune(device: torch.device) -> Iterator[None]:
    """``torch.backends.cudnn.benchmark`` on within the block (GPU only, and only when cuDNN may choose freely)."""
    cudnn = torch.backends.cudnn
    if not SETTINGS.autotune or device.type != "cuda" or cudnn.deterministic or cudnn.benchmark:
        yield
        return
    cudnn.benchmark = True
    try:
        yield
    finally:
        cudnn.benchmark = False


def host_to_device(values, device: torch.device | str, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A small list of host numbers as a tensor on ``device`` without waiting for the GPU: the copy is queued
    from pinned memory (``torch.as_tensor(values, device=cuda)`` waits until the stream has run everything
    queued before it, every step)."""
    device = torch.device(device)
    if not SETTINGS.async_copies:
        return torch.as_tensor(list(values), dtype=dtype, device=device)
    t = torch.tensor(list(values), dtype=dtype)
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)
