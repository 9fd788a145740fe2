"""The Triton kernels of :mod:`wav2emo.models.fused_batchnorm` (imported only where the fused path runs: Triton is
a GPU install's package). A channels-last (N, C, H, W) tensor is read as its (N*H*W, C) matrix; a program handles
tiles of BLOCK_M rows x BLOCK_C channels (BLOCK_C a power of two >= C, the extra channels masked)."""

import triton
import triton.language as tl


@triton.jit
def tile(t, M, C, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    # the offsets and mask of tile t of the (M, C) matrix, its channels and their mask
    rows = t * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_C)
    cmask = cols < C
    return rows[:, None] * C + cols[None, :], (rows[:, None] < M) & cmask[None, :], cols, cmask


@triton.jit(do_not_specialize=["M"])  # one compilation for every batch shape
def partial_sums(x_ptr, mean_ptr, out_ptr, M, C, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr,
                 TILES: tl.constexpr, CENTRED: tl.constexpr):
    # out[pid, c] = sum over this program's rows of x (CENTRED=False) or of (x - mean)^2 (CENTRED=True)
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_C)
    cmask = cols < C
    mean = tl.load(mean_ptr + cols, mask=cmask, other=0.0)
    acc = tl.zeros((BLOCK_C,), dtype=tl.float32)
    for t in range(TILES):
        offs, mask, _, _ = tile(pid * TILES + t, M, C, BLOCK_M, BLOCK_C)
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        if CENTRED:
            d = tl.where(mask, x - mean[None, :], 0.0)
            acc += tl.sum(d * d, axis=0)
        else:
            acc += tl.sum(x, axis=0)
    tl.store(out_ptr + pid * BLOCK_C + cols, acc, mask=cmask)


@triton.jit(do_not_specialize=["M"])  # one compilation for every batch shape
def normalize(x_ptr, y_ptr, scale_ptr, shift_ptr, M, C, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr,
              RELU: tl.constexpr):
    # y = x * scale + shift (scale = weight / std, shift = bias - mean * scale), then ReLU when asked
    offs, mask, cols, cmask = tile(tl.program_id(0), M, C, BLOCK_M, BLOCK_C)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    scale = tl.load(scale_ptr + cols, mask=cmask, other=0.0)
    shift = tl.load(shift_ptr + cols, mask=cmask, other=0.0)
    y = x * scale[None, :] + shift[None, :]
    if RELU:
        y = tl.maximum(y, 0.0)
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=["M"])  # one compilation for every batch shape
def backward_sums(x_ptr, dy_ptr, mean_ptr, invstd_ptr, scale_ptr, shift_ptr, out_ptr, M, C,
                  BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr, TILES: tl.constexpr, RELU: tl.constexpr):
    # out[pid, 0, c] = sum of g, out[pid, 1, c] = sum of g * xhat; g = dy (where the ReLU let it through)
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_C)
    cmask = cols < C
    mean = tl.load(mean_ptr + cols, mask=cmask, other=0.0)
    invstd = tl.load(invstd_ptr + cols, mask=cmask, other=0.0)
    scale = tl.load(scale_ptr + cols, mask=cmask, other=0.0)
    shift = tl.load(shift_ptr + cols, mask=cmask, other=0.0)
    sum_g = tl.zeros((BLOCK_C,), dtype=tl.float32)
    sum_gx = tl.zeros((BLOCK_C,), dtype=tl.float32)
    for t in range(TILES):
        offs, mask, _, _ = tile(pid * TILES + t, M, C, BLOCK_M, BLOCK_C)
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        g = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        if RELU:
            g = tl.where(x * scale[None, :] + shift[None, :] > 0.0, g, 0.0)
        xhat = (x - mean[None, :]) * invstd[None, :]
        sum_g += tl.sum(g, axis=0)
        sum_gx += tl.sum(tl.where(mask, g * xhat, 0.0), axis=0)
    tl.store(out_ptr + pid * 2 * BLOCK_C + cols, sum_g, mask=cmask)
    tl.store(out_ptr + pid * 2 * BLOCK_C + BLOCK_C + cols, sum_gx, mask=cmask)


@triton.jit(do_not_specialize=["M"])  # one compilation for every batch shape
def backward_input(x_ptr, dy_ptr, dx_ptr, mean_ptr, invstd_ptr, scale_ptr, shift_ptr, mean_g_ptr,
                   mean_gx_ptr, M, C, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr, RELU: tl.constexpr):
    # dx = scale * (g - mean(g) - xhat * mean(g * xhat))
    offs, mask, cols, cmask = tile(tl.program_id(0), M, C, BLOCK_M, BLOCK_C)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    mean = tl.load(mean_ptr + cols, mask=cmask, other=0.0)
    invstd = tl.load(invstd_ptr + cols, mask=cmask, other=0.0)
    scale = tl.load(scale_ptr + cols, mask=cmask, other=0.0)
    shift = tl.load(shift_ptr + cols, mask=cmask, other=0.0)
    if RELU:
        g = tl.where(x * scale[None, :] + shift[None, :] > 0.0, g, 0.0)
    mean_g = tl.load(mean_g_ptr + cols, mask=cmask, other=0.0)
    mean_gx = tl.load(mean_gx_ptr + cols, mask=cmask, other=0.0)
    xhat = (x - mean[None, :]) * invstd[None, :]
    dx = scale[None, :] * (g - mean_g[None, :] - xhat * mean_gx[None, :])
    tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)
