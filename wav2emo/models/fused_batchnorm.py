"""Training-mode batch norm (optionally with the ReLU after it) as a few Triton kernels over channels-last tensors.

On an H100 the reference CNN's training step spent about 3.4 of its 10.6 ms in PyTorch's channels-last batch-norm
kernels (statistics, transform, backward reduce and elementwise), most of it in the first block, whose activations
are 25 x 24 x 208 x 768 (benchmarks/step_batchnorm.py). With only 24 channels those kernels run far below the
memory bandwidth. Here a channels-last (N, C, H, W) tensor is read as an (N*H*W, C) matrix: the statistics are
two reductions (mean, then the variance around it) whose per-tile partial sums are added by torch in a fixed
order (no atomics: the same input gives the same bits), the normalisation (and ReLU) is one elementwise pass,
and the backward is one reduction and one elementwise pass, the ReLU's mask recomputed from the input.

:class:`FusedBatchNorm2d` is an ``nn.BatchNorm2d`` (same parameters, buffers and state_dict keys, so checkpoints
are interchangeable) whose training forward on a CUDA channels-last tensor takes this path; everything else
(evaluation, CPU, other layouts, ``fused=False``) is ``nn.BatchNorm2d``'s own forward.
"""

from __future__ import annotations

import torch
from torch import nn

# Tile sizes (elements of one rows x channels tile a Triton program holds at once) and warps per program. The
# reductions hold more values per element (the backward: input, gradient, normalised input) and take smaller tiles
# so that they stay in registers; benchmarks/step_batchnorm.py measures the choices.
TILE_ELEMENTS = 8192  # the elementwise passes (normalise, the input's gradient)
REDUCE_TILE_ELEMENTS = 2048  # the reductions (statistics, the backward's sums)
TILES_PER_PROGRAM = 16  # tiles one reducing program sums before it writes its partial sums
NUM_WARPS = 4


def _kernels():
    """The Triton kernels (:mod:`wav2emo.models.fused_batchnorm_kernels`): imported where the fused path first runs."""
    from wav2emo.models import fused_batchnorm_kernels

    return fused_batchnorm_kernels


def _rows(x: torch.Tensor) -> torch.Tensor:
    """A channels-last (N, C, H, W) tensor as its (N*H*W, C) matrix (a view: no copy)."""
    n, c, h, w = x.shape
    return x.permute(0, 2, 3, 1).reshape(n * h * w, c)


def _tiling(m: int, c: int, tile_elements: int) -> tuple[int, int, int, int]:
    """(rows a tile, channels a tile (a power of two >= c), tiles, programs of TILES_PER_PROGRAM tiles)."""
    block_c = max(16, 1 << (c - 1).bit_length())
    block_m = max(16, tile_elements // block_c)
    tiles = -(-m // block_m)
    return block_m, block_c, tiles, -(-tiles // TILES_PER_PROGRAM)


def _sums(x2: torch.Tensor, centre: torch.Tensor | None) -> torch.Tensor:
    m, c = x2.shape
    block_m, block_c, _, programs = _tiling(m, c, REDUCE_TILE_ELEMENTS)
    out = torch.empty(programs, block_c, dtype=torch.float32, device=x2.device)
    mean = centre if centre is not None else torch.zeros(c, dtype=torch.float32, device=x2.device)
    _kernels().partial_sums[(programs,)](x2, mean, out, m, c, BLOCK_M=block_m, BLOCK_C=block_c,
                                            TILES=TILES_PER_PROGRAM, CENTRED=centre is not None, num_warps=NUM_WARPS)
    return out.sum(0)[:c]


class _BatchNormTrain(torch.autograd.Function):
    """(x, weight, bias) -> (y, batch mean, biased batch variance); x channels-last contiguous."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float, relu: bool):
        x2 = _rows(x)
        m, c = x2.shape
        mean = _sums(x2, None) / m
        var = _sums(x2, mean) / m
        invstd = torch.rsqrt(var + eps)
        scale = weight.float() * invstd
        shift = bias.float() - mean * scale
        y = torch.empty_like(x, memory_format=torch.channels_last)
        block_m, block_c, tiles, _ = _tiling(m, c, TILE_ELEMENTS)
        _kernels().normalize[(tiles,)](x2, _rows(y), scale, shift, m, c, BLOCK_M=block_m, BLOCK_C=block_c,
                                          RELU=relu, num_warps=NUM_WARPS)
        ctx.save_for_backward(x, mean, invstd, scale, shift)
        ctx.relu, ctx.param_dtype = relu, weight.dtype
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    @staticmethod
    def backward(ctx, dy: torch.Tensor, _dmean, _dvar):
        x, mean, invstd, scale, shift = ctx.saved_tensors
        dy = dy.contiguous(memory_format=torch.channels_last)
        x2, dy2 = _rows(x), _rows(dy)
        m, c = x2.shape
        block_m, block_c, _, programs = _tiling(m, c, REDUCE_TILE_ELEMENTS)
        k = _kernels()
        partial = torch.empty(programs, 2, block_c, dtype=torch.float32, device=x.device)
        k.backward_sums[(programs,)](x2, dy2, mean, invstd, scale, shift, partial, m, c, BLOCK_M=block_m,
                                        BLOCK_C=block_c, TILES=TILES_PER_PROGRAM, RELU=ctx.relu, num_warps=NUM_WARPS)
        sums = partial.sum(0)[:, :c]
        sum_g, sum_gx = sums[0], sums[1]
        dx = torch.empty_like(x, memory_format=torch.channels_last)
        block_m, block_c, tiles, _ = _tiling(m, c, TILE_ELEMENTS)
        k.backward_input[(tiles,)](x2, dy2, _rows(dx), mean, invstd, scale, shift, sum_g / m, sum_gx / m, m, c,
                                      BLOCK_M=block_m, BLOCK_C=block_c, RELU=ctx.relu, num_warps=NUM_WARPS)
        return dx, sum_gx.to(ctx.param_dtype), sum_g.to(ctx.param_dtype), None, None


def fused_batch_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float, relu: bool = False
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training-mode batch norm of a channels-last contiguous (N, C, H, W) ``x`` with its batch statistics, then
    ReLU when ``relu``: (output, batch mean, biased batch variance), the statistics in float32."""
    if x.dim() != 4 or not x.is_contiguous(memory_format=torch.channels_last):
        raise ValueError(f"fused_batch_norm needs a channels-last contiguous (N, C, H, W) tensor, got shape "
                         f"{tuple(x.shape)} strides {x.stride()}")
    return _BatchNormTrain.apply(x, weight, bias, float(eps), bool(relu))


class FusedBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` whose training forward on a CUDA channels-last tensor runs :func:`fused_batch_norm`
    (ReLU included through :meth:`forward_relu`); the running statistics are updated exactly as
    ``nn.BatchNorm2d`` updates them (momentum, the unbiased batch variance). ``fused=False``: always the plain
    forward."""

    def __init__(self, num_features: int, *args, fused: bool = True, **kwargs) -> None:
        super().__init__(num_features, *args, **kwargs)
        self.fused = fused

    def _takes_fused_path(self, x: torch.Tensor) -> bool:
        return (self.fused and self.training and x.is_cuda and self.affine and x.dim() == 4 and x.numel() > 0
                and x.is_contiguous(memory_format=torch.channels_last) and x.shape[0] * x.shape[2] * x.shape[3] > 1
                and x.numel() < 2**31)  # the kernels' offsets are 32-bit

    def forward_relu(self, x: torch.Tensor) -> torch.Tensor:
        """ReLU(batch norm(x)), in one pass where the fused path runs."""
        if not self._takes_fused_path(x):
            return torch.relu_(super().forward(x))  # as nn.ReLU(inplace=True) after nn.BatchNorm2d
        return self._fused(x, relu=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._takes_fused_path(x):
            return super().forward(x)
        return self._fused(x, relu=False)

    def _fused(self, x: torch.Tensor, relu: bool) -> torch.Tensor:
        y, mean, var = fused_batch_norm(x, self.weight, self.bias, self.eps, relu)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = (1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum)
                n = x.numel() // x.shape[1]
                self.running_mean.mul_(1 - factor).add_(mean.to(self.running_mean.dtype), alpha=factor)
                self.running_var.mul_(1 - factor).add_((var * (n / (n - 1))).to(self.running_var.dtype), alpha=factor)
        return y
