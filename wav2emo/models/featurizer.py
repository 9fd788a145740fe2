"""Layer selection inside the model (s3prl's upstream -> featurizer -> downstream).

The data path (or an upstream backbone) hands over every hidden state, ``ssl`` (B, H, T, D); the
featurizer picks the L the net reads, so the same cache serves every layer choice and a fine-tuned
upstream can feed the same net.  It has no parameters: checkpoints hold only the net's weights.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from wav2emo.errors import ConfigError

LayerSpec = None | str | int | Sequence[int]


def resolve_layers(layers: LayerSpec, num_hidden_states: int) -> list[int]:
    """Which hidden states to stack: ``None``/"transformer" = every transformer layer (1..N, as the
    reference), ``"all"`` = every hidden state including the CNN projection (0..N), or explicit indices."""
    if layers is None or layers == "transformer":
        return list(range(1, num_hidden_states))
    if layers == "all":
        return list(range(num_hidden_states))
    if isinstance(layers, str):
        raise ConfigError(f"layers={layers!r}: expected null, 'transformer', 'all', an index or a list of indices")
    if isinstance(layers, int):
        layers = [layers]
    out = [int(i) for i in layers]
    bad = [i for i in out if not -num_hidden_states <= i < num_hidden_states]
    if bad or not out:
        raise ConfigError(
            f"layers={list(layers)} is invalid for a backbone with {num_hidden_states} hidden states "
            f"(expected indices in 0..{num_hidden_states - 1}, null, or 'all')"
        )
    return [i % num_hidden_states for i in out]


def resolve_stored_layers(layers: LayerSpec, stored: Sequence[int]) -> list[int]:
    """:func:`resolve_layers` on a cache that stores only the hidden states ``stored`` (absolute indices):
    null/"transformer" = the stored ones above 0, "all" = every stored one, indices must be stored ones.
    Returns positions in the cache."""
    stored = [int(i) for i in stored]
    if layers is None or layers == "transformer":
        wanted = [i for i in stored if i > 0] or stored
    elif layers == "all":
        wanted = stored
    else:
        wanted = [int(i) for i in ([layers] if isinstance(layers, int) else layers)]
        missing = [i for i in wanted if i not in stored]
        if missing or not wanted:
            raise ConfigError(
                f"layers={list(wanted)}: hidden states {missing} are not in the feature cache, which stores only "
                f"{stored} (features.ssl.layers); choose among those, or extract with features.ssl.layers=null"
            )
    return [stored.index(i) for i in wanted]


class Featurizer(nn.Module):
    """``batch['ssl']`` (B, H, T, D) -> a new batch whose ``ssl`` is (B, L, T, D), the chosen layers.

    ``num_hidden_states`` (H) comes from the cache (or the upstream); the module builder passes it.
    """

    def __init__(self, layers: LayerSpec = None, num_hidden_states: int | None = None, key: str = "ssl",
                 stored_layers: Sequence[int] | None = None) -> None:
        super().__init__()
        if num_hidden_states is None or int(num_hidden_states) < 1:
            raise ConfigError(
                f"Featurizer(layers={layers!r}) needs num_hidden_states (the cache's hidden-state count), "
                f"got {num_hidden_states!r}"
            )
        self.layers_spec = layers
        self.num_hidden_states = int(num_hidden_states)
        if stored_layers is not None and len(stored_layers) != self.num_hidden_states:
            raise ConfigError(f"Featurizer: stored_layers {list(stored_layers)} but {self.num_hidden_states} hidden states")
        self.stored_layers = None if stored_layers is None else [int(i) for i in stored_layers]
        if self.stored_layers is None:
            self.layers = resolve_layers(layers, self.num_hidden_states)
        else:
            self.layers = resolve_stored_layers(layers, self.stored_layers)
        self.key = key
        self._all = self.layers == list(range(self.num_hidden_states))
        self._index: torch.Tensor | None = None  # built on the batch's device on first use

    @property
    def num_layers(self) -> int:
        """L, the number of hidden states the net receives (its ``in_channels``)."""
        return len(self.layers)

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(batch)
        if self.key not in batch:
            raise KeyError(f"Featurizer needs batch[{self.key!r}] (keys: {sorted(batch)})")
        x = batch[self.key]
        if x.dim() != 4 or x.shape[1] != self.num_hidden_states:
            raise ValueError(
                f"{self.key} must have shape (B, H={self.num_hidden_states}, T, D) with every hidden state, "
                f"got {tuple(x.shape)}; the cache or upstream holds a different number of hidden states"
            )
        if not self._all:
            if self._index is None or self._index.device != x.device:
                self._index = torch.tensor(self.layers, dtype=torch.long, device=x.device)
            x = x.index_select(1, self._index)
        out[self.key] = x
        return out

    def extra_repr(self) -> str:
        return f"layers={self.layers}, num_hidden_states={self.num_hidden_states}"


def featurizer_for(model: Mapping[str, Any], ssl_shape: tuple[int, int] | None,
                   cache_meta: Mapping[str, Any] | None = None) -> Featurizer | None:
    """The featurizer of ``model`` (a run's conf/model as plain values: ``model.featurizer``; None without one),
    sized by ``ssl_shape`` (hidden states H, width D of the ``ssl`` it reads: the cache's, or the SSL upstream's
    when hidden states come from audio). ``cache_meta``: the SSL cache's record when ``ssl`` is read from a cache
    (a time-pooled cache is refused for a frame model; a cache of a layer subset maps the layer indices)."""
    feat_cfg = model.get("featurizer")
    if feat_cfg is None:
        return None
    if "ssl" not in (model.get("inputs") or ()):
        raise ConfigError(f"model.featurizer is set but the model's inputs {list(model['inputs'])} have no 'ssl'")
    meta = cache_meta or {}
    if meta.get("time_pooled") and not model.get("reads_time_pooled", False):
        raise ConfigError(
            f"model={model.get('name')} reads frames, but the feature cache {meta.get('name')!r} holds time-pooled "
            "statistics (features.ssl.time_pooled=true): use a pooling head (model=mean_linear or layer_weighted) or "
            "features.ssl.time_pooled=false"
        )
    if ssl_shape is None:
        raise ConfigError(f"model={model.get('name')} reads 'ssl' but neither a feature cache nor an SSL upstream "
                          "provides it")
    from hydra.utils import instantiate
    from omegaconf import OmegaConf, open_dict

    feat_cfg = OmegaConf.create(feat_cfg)
    with open_dict(feat_cfg):
        feat_cfg.num_hidden_states = int(ssl_shape[0])
        stored = meta.get("layer_indices")
        if stored is not None and list(stored) != list(range(len(stored))):  # a layer subset: map the indices
            feat_cfg.stored_layers = list(stored)
    return instantiate(feat_cfg, _convert_="all")
