"""What an SSL cache stores of the hidden states: a subset of them (``features.ssl.layers``) or per clip their time
statistics (``features.ssl.time_pooled``: per layer the mean and std over the clip's own frames).  Used by the
feature kind (:mod:`wav2emo.features.ssl_hidden_states`) and by prediction, which must compute what the cache holds.
"""

from __future__ import annotations

from typing import Any

import torch

from wav2emo.backbones import BackboneError
from wav2emo.errors import ConfigError


def pool_time(res: torch.Tensor, frames: list[int]) -> tuple[torch.Tensor, list[int]]:
    """(B, T, L, D) hidden states -> (B, 1, L, 2D): per clip and layer [mean, std] over its own frames (float32
    statistics, stored in ``res``'s dtype)."""
    mask = torch.arange(res.shape[1], device=res.device)[None, :] < torch.as_tensor(frames, device=res.device)[:, None]
    m = mask[:, :, None, None].float()
    n = m.sum(1)
    x = res.float() * m
    mean = x.sum(1) / n
    std = ((((res.float() - mean[:, None]) * m) ** 2).sum(1) / n).sqrt()
    return torch.cat([mean, std], dim=-1)[:, None].to(res.dtype), [1] * len(frames)


def check_layers(layers: Any, num_hidden_states: int, where: str) -> list[int] | None:
    """A spec's ``layers`` as sorted absolute indices (None = all), refused with one line when out of range."""
    if layers is None or layers == "all":
        return None
    values = [layers] if isinstance(layers, int) else list(layers) if isinstance(layers, (list, tuple)) else None
    if not values or any(isinstance(v, bool) or not isinstance(v, int) for v in values) or len(set(values)) != len(values):
        raise BackboneError(f"{where}: layers={layers!r}; expected null (all) or distinct hidden-state indices")
    bad = [v for v in values if not 0 <= v < num_hidden_states]
    if bad:
        raise BackboneError(f"{where}: layers {bad} out of range; this backbone has hidden states 0..{num_hidden_states - 1}")
    return sorted(values)


def ssl_layer_position(cache: Any, layer: int) -> int:
    """Where hidden state ``layer`` (absolute index) sits in an SSL cache that may store a subset of them
    (``features.ssl.layers``); a layer the cache does not hold is refused, never read from another row."""
    stored = (getattr(cache, "meta", None) or {}).get("layer_indices")
    if stored is None:
        return layer
    if layer not in stored:
        raise ConfigError(f"datamodule.ssl_layer_index={layer}: the SSL cache stores only hidden states {list(stored)} "
                          "(features.ssl.layers); choose one of those or extract with features.ssl.layers=null")
    return list(stored).index(layer)
