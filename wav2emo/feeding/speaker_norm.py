"""Per-speaker normalisation of cached inputs in the neural data path (``features.normalize=speaker``).

The statistics (:class:`~wav2emo.features.normalize.SpeakerStats`) are taken per cache over every clip of
each speaker in the corpus manifest, test speakers included, from the features alone: speakers and cache
rows go in, never labels.  That is the transductive protocol of the baselines (Pepino et al.), declared in
every fold result by :func:`wav2emo.features.normalize.protocol_entry`.

:class:`SpeakerNormalized` wraps an input strategy, so each item is normalised when it is loaded: before
collate and before a resident split is placed on the device, for original clips and augmented copies
alike (a copy is normalised with its speaker's statistics of the original audio).
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Sequence

import numpy as np
import torch

from wav2emo.features.cache.reader import FeatureCache
from wav2emo.features.normalize import STD_FLOOR, SpeakerStats

# (cache path, rows, speakers) -> statistics: every fold of a run shares them, so a large SSL cache is
# read once per process, not once per fold.
_MEMO: dict[tuple[str, str], SpeakerStats] = {}


def _memo_key(cache: FeatureCache, rows: np.ndarray, speakers: Sequence[Hashable]) -> tuple[str, str]:
    h = hashlib.sha1(np.asarray(rows, dtype=np.int64).tobytes())
    h.update(repr(list(speakers)).encode())
    return str(cache.path), h.hexdigest()


def cache_speaker_stats(cache: FeatureCache, rows: np.ndarray, speakers: Sequence[Hashable]) -> SpeakerStats:
    """Per-speaker mean/std of ``cache`` over the clips at ``rows`` (``speakers[i]`` says whose row ``i`` is).

    Frames are pooled over a speaker's clips, per feature dimension (per hidden state and dimension for SSL
    stacks); streamed clip by clip, so memory stays that of one clip.  Label-free by construction.
    """
    if len(rows) != len(speakers):
        raise ValueError(f"{len(rows)} cache rows but {len(speakers)} speakers; expected one speaker per row")
    key = _memo_key(cache, rows, speakers)
    if key not in _MEMO:
        stats = SpeakerStats()
        for row, spk in zip(rows, speakers, strict=True):
            stats.add(spk, cache.read(int(row)))
        _MEMO[key] = stats
    return _MEMO[key]


class SpeakerNormalized:
    """An input strategy whose items are standardised with their own speaker's statistics.

    ``layer`` (for ``ssl_layer``) picks one hidden state of SSL statistics ``(H, D)``.  The item keeps its
    dtype (float16 SSL stays float16: standardised values fit it, and a resident split stays its size).
    """

    def __init__(self, inner, stats: SpeakerStats, speakers: Sequence[Hashable], layer: int | None = None) -> None:
        self.inner, self.key = inner, inner.key
        self.exact_lengths = getattr(inner, "exact_lengths", False)
        self.rows = getattr(inner, "rows", None)  # Concat sizes its parts by ``rows``
        if self.rows is not None and len(self.rows) != len(speakers):
            raise ValueError(f"{len(self.rows)} rows but {len(speakers)} speakers for input {self.key!r}")
        self.speakers = list(speakers)
        self._params: dict[Hashable, tuple[torch.Tensor, torch.Tensor]] = {}
        for spk in dict.fromkeys(self.speakers):
            mean, std = stats.mean_std(spk)  # KeyError naming the speaker if it has no statistics
            std = np.where(std > STD_FLOOR, std, 1.0)  # a dimension constant within the speaker becomes 0
            if layer is not None:
                mean, std = mean[layer], std[layer]
            self._params[spk] = (torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32))

    def load(self, i: int) -> dict[str, torch.Tensor]:
        out = self.inner.load(i)
        x = out[self.key]
        mean, std = self._params[self.speakers[i]]
        if self.key == "ssl":  # (H, T, D) against statistics (H, D)
            mean, std = mean[:, None, :], std[:, None, :]
        out[self.key] = ((x.float() - mean) / std).to(x.dtype)
        return out

    def lengths(self) -> np.ndarray | None:
        return self.inner.lengths()
