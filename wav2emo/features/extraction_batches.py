"""Planning extraction batches: how many samples each clip has at the backbone's rate, and which clips share
a batch (bounded by clip count and padded seconds)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from wav2emo.data.manifest import Clip


def resampled_length(num_samples: int, orig_sr: int, target_sr: int) -> int:
    """Samples after torchaudio's resampler (``ceil(n * new / orig)`` with gcd-reduced rates)."""
    if orig_sr == target_sr:
        return int(num_samples)
    g = math.gcd(int(orig_sr), int(target_sr))
    return int(math.ceil((target_sr // g) * num_samples / (orig_sr // g)))


def expected_samples(clip: Clip, target_sr: int) -> int:
    return resampled_length(clip.num_frames, clip.sample_rate, target_sr)


def plan_batches(clips: Sequence[int], samples: Sequence[int], batch_size: int, max_batch_samples: int | None) -> list[list[int]]:
    """Cut ``clips`` (in order) into batches of at most ``batch_size`` clips and, when given, at most
    ``max_batch_samples`` samples once padded to the batch's longest clip.

    Why the second bound: every clip of a batch is padded to the longest one, and the activations (the
    attention matrices above all) grow with batch x padded length; a 60 s clip in a batch of 16 four-second
    clips made 16 x 60 s of work and memory.  A clip longer than the budget gets a batch of its own.
    """
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in clips:
        n = int(samples[i])
        grown = max(longest, n)
        if current and (len(current) >= batch_size or (max_batch_samples and grown * (len(current) + 1) > max_batch_samples)):
            batches.append(current)
            current, grown = [], n
        current.append(i)
        longest = grown
    if current:
        batches.append(current)
    return batches
