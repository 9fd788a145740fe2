"""The cheaper step computes the reference's numbers: same layers, same values and gradients (issue 25)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from wav2emo.models.blocks import ConvBlock
from wav2emo.models.fe_vgg import FeVGGEgemaps


def _listed_order(block: ConvBlock, x: torch.Tensor) -> torch.Tensor:
    """The block's layers one after another, in the order they are listed (the reference's order)."""
    return nn.Sequential.forward(block, x)


@pytest.mark.parametrize("n_convs", [1, 2, 3])
def test_conv_block_equals_its_layers_in_listed_order_values_and_gradients(n_convs):
    torch.manual_seed(n_convs)
    reference = ConvBlock(5, 7, n_convs)
    x = torch.randn(3, 5, 20, 31)
    x[0, :, :6, :6] = -1.0  # constant patches: windows whose maximum is <= 0, and ties
    results = []
    for listed in (False, True):
        block = ConvBlock(5, 7, n_convs)
        block.load_state_dict(reference.state_dict())
        xi = x.clone().requires_grad_(True)
        y = _listed_order(block, xi) if listed else block(xi)
        (y * torch.linspace(-1, 1, y.numel()).reshape(y.shape)).sum().backward()
        results.append((y.detach(), xi.grad, *(p.grad for p in block.parameters()), *block.buffers()))
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)
    y = results[0][0]
    assert (y == 0).any() and (y > 0).any()  # the ReLU did cut something: the comparison can fail


def test_the_reference_net_has_its_layers_and_parameter_count():
    net = FeVGGEgemaps(in_channels=12, feature_dim=768)
    first = net.encoder.blocks[0]
    kinds = [type(m).__name__ for m in first]
    # FusedBatchNorm2d is an nn.BatchNorm2d (its parameters, buffers and state_dict; fused kernels on a GPU only)
    assert kinds == ["ChannelPaddedConv2d", "FusedBatchNorm2d", "ReLU", "ChannelPaddedConv2d", "FusedBatchNorm2d",
                     "ReLU", "MaxPool2d"]
    assert all(isinstance(first[i], torch.nn.BatchNorm2d) for i in (1, 4))
    # the numbers of the reference at 12 x 768 inputs (parameters and state_dict entries, as before issue 25)
    assert sum(p.numel() for p in net.parameters()) == 1424008 and len(net.state_dict()) == 71
    assert [type(m).__name__ for m in net.encoder.blocks[3]][-4:] == ["ChannelPaddedConv2d", "FusedBatchNorm2d",
                                                                       "ReLU", "MaxPool2d"]


def test_the_whole_net_equals_its_layers_in_listed_order():
    """FeVGGEgemaps forward and backward with the blocks in the reference's order vs as they run now."""
    torch.manual_seed(0)
    net = FeVGGEgemaps(in_channels=4, feature_dim=96, widths=(8, 8, 8, 8))
    net.egemaps_norm.set_stats(torch.zeros(88), torch.ones(88))
    batch = {"ssl": torch.randn(3, 4, 90, 96), "ssl_mask": torch.ones(3, 90, dtype=torch.bool),
             "egemaps": torch.randn(3, 88)}
    batch["ssl_mask"][1, 70:] = False

    def run(listed: bool):
        torch.manual_seed(1)
        m = FeVGGEgemaps(in_channels=4, feature_dim=96, widths=(8, 8, 8, 8))
        m.load_state_dict(net.state_dict())
        m.train()
        blocks = [b for b in m.modules() if isinstance(b, ConvBlock)]
        if listed:
            for b in blocks:
                b.forward = (lambda blk: (lambda t: _listed_order(blk, t)))(b)
        out = m(batch)
        out.float().pow(2).sum().backward()
        return out.detach(), [p.grad.clone() for p in m.parameters() if p.grad is not None]

    (o1, g1), (o2, g2) = run(False), run(True)
    assert torch.equal(o1, o2)
    assert len(g1) == len(g2) > 0 and all(torch.equal(a, b) for a, b in zip(g1, g2, strict=True))
