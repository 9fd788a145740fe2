"""A backbone family added from OUTSIDE the package (issue 24: one way to extend): a toy family defined and
registered in this file, without editing wav2emo, then extracted into a feature cache and fine-tuned (top_k)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from tests.test_cache import make_manifest
from tests.test_upstream import collate
from wav2emo.backbones import Backbone, BackboneError, register_family
from wav2emo.backbones.family import frame_mask
from wav2emo.features import get_features
from wav2emo.models.upstream import build_upstream

HOP, WINDOW, WIDTH, LAYERS = 320, 400, 8, 2


class ToyFramesModel(nn.Module):
    """400-sample windows every 320 samples, a linear projection, then LAYERS per-frame layers."""

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config
        self.project = nn.Linear(WINDOW, config.hidden_size)
        self.layers = nn.ModuleList(nn.Linear(config.hidden_size, config.hidden_size) for _ in range(LAYERS))


@register_family
class ToyFramesBackbone(Backbone):
    family = "toy-frames"
    model_types = ("toy-frames",)
    switch_attrs = {}
    layer_prefix = "layers."
    front_end_prefixes = ("project.",)

    @classmethod
    def load_config(cls, where: str, **common: Any) -> Any:
        raw = json.loads((__import__("pathlib").Path(where) / "config.json").read_text())
        return SimpleNamespace(**raw)

    @classmethod
    def load_model(cls, where: str, config: Any, **common: Any) -> nn.Module:
        from safetensors.torch import load_file

        model = ToyFramesModel(config)
        model.load_state_dict(load_file(f"{where}/model.safetensors"))
        return model

    @property
    def hop(self) -> int:
        return HOP

    @property
    def receptive_field(self) -> int:
        return WINDOW

    def num_frames(self, num_samples: int) -> int:
        return max(0, (int(num_samples) - WINDOW) // HOP + 1)

    def layers(self) -> nn.ModuleList:
        return self.model.layers

    def front_end(self) -> nn.Module:
        return self.model.project

    def hidden_states(self, x: torch.Tensor, lengths: Sequence[int]) -> list[torch.Tensor]:
        frames = x.unfold(1, WINDOW, HOP)  # (B, T, WINDOW): each frame sees only its own window
        h = self.model.project(frames)
        return [h, *self.run_layers(h, None, 0, LAYERS)]

    def run_layers(self, hidden, mask, start, stop):
        out = []
        for layer in self.layers()[start:stop]:
            hidden = torch.tanh(layer(hidden))
            out.append(hidden)
        return out


@pytest.fixture(scope="module")
def toy_folder(tmp_path_factory):
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("toy-frames-backbone")
    torch.manual_seed(0)
    model = ToyFramesModel(SimpleNamespace(model_type="toy-frames", hidden_size=WIDTH))
    save_file(model.state_dict(), str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"model_type": "toy-frames", "hidden_size": WIDTH}))
    return folder


def test_a_family_registered_outside_the_package_extracts_and_fine_tunes(tmp_path, toy_folder):
    toy = make_manifest(tmp_path / "toy", [16000, 9000, 4000])
    spec = {"kind": "ssl_hidden_states", "name": "toy-frames", "backbone": str(toy_folder), "normalize": True,
            "precision": "fp32", "batch_size": 2, "num_workers": 1, "durable": False}
    cache = get_features(toy, spec, tmp_path / "cache", device="cpu", progress=False)
    assert cache.feature_shape == (LAYERS + 1, WIDTH) and cache.meta["backbone"]["family"] == "toy-frames"
    assert cache.lengths.tolist() == [(n - WINDOW) // HOP + 1 for n in (16000, 9000, 4000)]
    assert cache.frame_rate == 50.0

    batch = collate([np.asarray(cache.read(i), dtype=np.float32) for i in range(3)])
    up = build_upstream(str(toy_folder), mode="top_k", k=1, normalize=True).eval()
    up.check_cache(cache.meta)
    with torch.no_grad():
        out = up(batch)
    m = batch["ssl_mask"]
    gap = (out["ssl"] - batch["ssl"]).abs()[m[:, None, :, None].expand_as(out["ssl"])].max()
    assert float(gap) < 4e-3  # fp16 cache
    assert {n for n, _ in up.model.named_parameters() if up.is_trained(n)} == {"layers.1.weight", "layers.1.bias"}
    assert frame_mask([2], 3).tolist() == [[True, True, False]]


def test_a_model_type_claimed_twice_is_refused():
    class Other(ToyFramesBackbone):
        family = "other"

    with pytest.raises(BackboneError, match="model_type 'toy-frames' is already served by family 'toy-frames'"):
        register_family(Other)
