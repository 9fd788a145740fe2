"""Featurizer: layer selection inside the model, and the same logits as selecting layers in the data path."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from wav2emo.errors import ConfigError
from wav2emo.models import FeVGG, LayerWeighted
from wav2emo.models.featurizer import Featurizer, resolve_layers
from wav2emo.training.module import EmotionClassifier


def test_layer_choices():
    assert resolve_layers(None, 13) == list(range(1, 13))  # the reference: transformer layers 1..N
    assert resolve_layers("transformer", 5) == [1, 2, 3, 4]
    assert resolve_layers("all", 5) == [0, 1, 2, 3, 4]
    assert resolve_layers([-1, 2], 5) == [4, 2] and resolve_layers(3, 5) == [3]
    for bad in ([5], [], "top"):
        with pytest.raises(ConfigError):
            resolve_layers(bad, 5)


def test_featurizer_picks_layers_and_checks_the_stack():
    x = torch.randn(2, 5, 7, 3)
    batch = {"ssl": x, "ssl_mask": torch.ones(2, 7, dtype=torch.bool), "label": torch.tensor([0, 1])}
    f = Featurizer(None, num_hidden_states=5)
    out = f(batch)
    assert f.num_layers == 4 and torch.equal(out["ssl"], x[:, 1:])
    assert out["ssl_mask"] is batch["ssl_mask"] and batch["ssl"] is x  # the input batch is left as it was
    assert torch.equal(Featurizer([4, 0], num_hidden_states=5)(batch)["ssl"], x[:, [4, 0]])
    assert Featurizer("all", num_hidden_states=5)(batch)["ssl"] is x
    assert list(Featurizer("all", num_hidden_states=5).state_dict()) == []  # checkpoints hold the net only
    with pytest.raises(ValueError, match="H=6"):
        Featurizer(None, num_hidden_states=6)(batch)
    with pytest.raises(ConfigError, match="num_hidden_states"):
        Featurizer(None)


@pytest.mark.parametrize("layers", [None, "all", [2, 4]])
def test_module_with_featurizer_equals_selection_in_the_data(layers):
    """What the old data path did (select layers, then the net) is what featurizer -> net does now."""
    x = torch.randn(3, 5, 20, 16).half()
    mask = torch.arange(20)[None] < torch.tensor([20, 12, 9])[:, None]
    feat = Featurizer(layers, num_hidden_states=5)
    idx = resolve_layers(layers, 5)
    for net_cls in (FeVGG, LayerWeighted):
        kw = {"widths": (4, 4, 4, 4), "convs_per_block": (1, 1, 1, 1)} if net_cls is FeVGG else {}
        torch.manual_seed(0)
        net = net_cls(in_channels=feat.num_layers, feature_dim=16, **kw).eval()
        module = EmotionClassifier(net, optimizer=partial(torch.optim.Adam, lr=1e-3), featurizer=feat).eval()
        with torch.no_grad():
            new = module({"ssl": x, "ssl_mask": mask})
            old = net({"ssl": x[:, idx].contiguous(), "ssl_mask": mask})
        assert torch.equal(new, old), net_cls
