"""How far the whole fe_vgg_egemaps network's gradients move when only its batch norm's rounding changes (CPU,
float32; not a test): the fused batch norm's Triton kernels (run by Triton's interpreter), and PyTorch's own
batch norm computed in float64, each against PyTorch's float32 batch norm, from the same weights and batch.

On the H100 in bf16 the fused batch norm's whole-network gradients differed from PyTorch's by 21 % (relative L2;
``step_batchnorm_retiled_*.md``) while each layer matched PyTorch's in the GPU tests. If a batch norm that is
merely rounded differently (float64) moves the gradients as much as the fused kernels do, the difference is the
network's sensitivity to rounding (ReLU and max-pool decisions that flip), not a wrong kernel.

    TRITON_INTERPRET=1 python benchmarks/fused_batchnorm_network_cpu.py OUT_DIR
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.report_files import write_report  # noqa: E402
from wav2emo.models import fused_batchnorm as fb  # noqa: E402
from wav2emo.models.fe_vgg import FeVGGEgemaps  # noqa: E402


def make_net(fused: bool, state: dict | None = None) -> nn.Module:
    net = FeVGGEgemaps(in_channels=12, feature_dim=64, fused_batchnorm=fused)
    net.egemaps_norm.set_stats(torch.zeros(88), torch.ones(88))
    if state is not None:
        net.load_state_dict(state)
    for m in net.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    return net.to(memory_format=torch.channels_last).train()


class Float64BatchNorm(fb.FusedBatchNorm2d):
    """PyTorch's batch norm computed in float64 (statistics, normalisation and its backward), cast back."""

    def _takes_fused_path(self, x: torch.Tensor) -> bool:
        return False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.batch_norm(x.double(), None, None, self.weight.double(), self.bias.double(), True, 0.0, self.eps)
        return y.to(x.dtype)

    def forward_relu(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.forward(x))


def gradients(net: nn.Module, batch: dict) -> tuple[float, torch.Tensor]:
    net.zero_grad(set_to_none=True)
    loss = F.cross_entropy(net(batch), batch["label"])
    loss.backward()
    return float(loss.detach()), torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    a = ap.parse_args()
    if os.environ.get("TRITON_INTERPRET") != "1":
        raise SystemExit("run with TRITON_INTERPRET=1 (the fused kernels run in Triton's interpreter on the CPU)")
    torch.manual_seed(0)
    reference = make_net(False)
    state = reference.state_dict()
    fused = make_net(True, state)
    # On the CPU the fused path is normally skipped (it runs on CUDA tensors): let the interpreter run it.
    fb.FusedBatchNorm2d._takes_fused_path = lambda self, x: (
        self.fused and self.training and x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last))
    float64 = make_net(False, state)
    for block in float64.modules():
        for name, child in list(block.named_children()):
            if isinstance(child, nn.BatchNorm2d):
                replacement = Float64BatchNorm(child.num_features, fused=False)
                replacement.load_state_dict(child.state_dict())
                setattr(block, name, replacement)
    g = torch.Generator().manual_seed(1)
    batch = {"ssl": torch.randn(4, 12, 48, 64, generator=g), "ssl_mask": torch.ones(4, 48, dtype=torch.bool),
             "egemaps": torch.randn(4, 88, generator=g), "label": torch.randint(0, 8, (4,), generator=g)}
    ref_loss, ref_grad = gradients(reference, batch)
    result = {"machine": "cpu", "dtype": "float32", "batch": "4 x 12 x 48 x 64", "variants": {}}
    for name, net in (("fused kernels (Triton interpreter)", fused), ("PyTorch batch norm in float64", float64)):
        loss, grad = gradients(net, batch)
        result["variants"][name] = {"loss_rel_diff": abs(loss - ref_loss) / abs(ref_loss),
                                    "grad_rel_l2": float((grad - ref_grad).norm() / ref_grad.norm())}
    lines = ["# The whole network's gradients when only the batch norm's rounding changes (CPU, float32)", "",
             "fe_vgg_egemaps (12 layers, feature_dim 64), batch 4 x 48 frames, dropout off, the same weights and "
             "batch; each row against PyTorch's float32 batch norm. Regenerate: "
             "`TRITON_INTERPRET=1 python benchmarks/fused_batchnorm_network_cpu.py OUT`.", "",
             "| batch norm | loss rel. diff | gradient rel. L2 diff |", "| --- | ---: | ---: |"]
    lines += [f"| {k} | {v['loss_rel_diff']:.1e} | {v['grad_rel_l2']:.2e} |" for k, v in result["variants"].items()]
    write_report(a.out, "fused_batchnorm_network_cpu", result, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
