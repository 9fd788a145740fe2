"""Batch-invariant extraction of every hidden state of a wav2vec2-style backbone into the feature cache.

Why batch invariance needs work: wav2vec2-base normalises its first conv layer with GroupNorm(512 groups,
512 channels), i.e. per channel over the *whole time axis*.  Zero-padding a clip to the longest clip
of its batch therefore changes its statistics, and every frame of every clip then depends on which
clips shared the batch.  Here the first layer's GroupNorm is replaced by :class:`MaskedGroupNorm`,
which takes the statistics over each clip's valid frames only, and the model gets an attention mask
(HF zeroes padded frames before the positional conv and masks them in attention).  "Layer"-norm
backbones (large, XLSR) normalise per frame, so the attention mask alone suffices for them.  A clip's
features are then the same, up to float rounding, whatever batch it is in, at full batching speed.

The pipeline keeps the GPU busy: a thread pool decodes and resamples audio ahead of it, a copy stream
brings float16 results back into pinned memory while the next batch runs, and writer threads put
each clip's exact frames (no padding, no crop) into the cache shards.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wav2emo.data.audio import load_audio
from wav2emo.data.manifest import Clip, Manifest
from wav2emo.errors import UserError
from wav2emo.features.backbone import (
    DEFAULT_BACKBONE,
    Backbone,
    BackboneError,
    backbone_identity,
    load_backbone,
    preprocessor_settings,
    resolve_source,
)
from wav2emo.features.cache import DEFAULT_SHARD_BYTES, CacheBuilder
from wav2emo.features.limits import ClipDurationError, check_durations

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "fp16")
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


class ExtractionError(UserError, RuntimeError):
    """Extraction that would store wrong features (bad lengths, non-finite values); names the clip."""


class ClipLengthError(ExtractionError, ClipDurationError):
    """Clips too short or too long for the backbone, found from the manifest before extraction starts."""


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` = the GPU when there is one, else the CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={device!r} but CUDA is not available here; use device=auto or cpu")
    return dev


def effective_precision(precision: str, device: torch.device) -> str:
    """Autocast only on the GPU: on the CPU everything runs in float32 whatever the spec asks."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}; expected one of {PRECISIONS}")
    return precision if device.type == "cuda" else "fp32"


def resampled_length(num_samples: int, orig_sr: int, target_sr: int) -> int:
    """Samples after torchaudio's resampler (``ceil(n * new / orig)`` with gcd-reduced rates)."""
    if orig_sr == target_sr:
        return int(num_samples)
    g = math.gcd(int(orig_sr), int(target_sr))
    return int(math.ceil((target_sr // g) * num_samples / (orig_sr // g)))


def expected_samples(clip: Clip, target_sr: int) -> int:
    return resampled_length(clip.num_frames, clip.sample_rate, target_sr)


# Batch invariance ----------------------------------------------------------------------------------------
class MaskedGroupNorm(nn.Module):
    """GroupNorm whose statistics cover each clip's first ``lengths[b]`` frames only.

    With ``lengths`` unset it is exactly ``nn.GroupNorm``.  Each clip is normalised by the same fused
    kernel a batch of one would use; padded frames are set to zero.  It shares the wrapped layer's
    parameters, so state dicts and weights are unchanged.
    """

    def __init__(self, norm: nn.GroupNorm) -> None:
        super().__init__()
        self.num_groups, self.num_channels, self.eps = norm.num_groups, norm.num_channels, norm.eps
        self.weight, self.bias = norm.weight, norm.bias
        self.lengths: list[int] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.lengths is None:
            return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        if len(self.lengths) != x.shape[0] or max(self.lengths) > x.shape[-1]:
            raise RuntimeError(f"MaskedGroupNorm: lengths {self.lengths} do not fit input {tuple(x.shape)}")
        out: torch.Tensor | None = None
        for b, n in enumerate(self.lengths):
            y = F.group_norm(x[b : b + 1, :, :n], self.num_groups, self.weight, self.bias, self.eps)
            if out is None:
                out = x.new_zeros(x.shape, dtype=y.dtype)
            out[b : b + 1, :, :n] = y
        assert out is not None
        return out


def conv_output_length(num_samples: int, kernels: Sequence[int], strides: Sequence[int]) -> int:
    n = int(num_samples)
    for k, s in zip(kernels, strides, strict=True):
        n = (n - int(k)) // int(s) + 1 if n >= k else 0
    return max(n, 0)


class BatchInvariance:
    """Patches a wav2vec2-style model so that padding a batch does not change any clip's features."""

    def __init__(self, model: nn.Module) -> None:
        config = model.config
        conv_layers = getattr(getattr(model, "feature_extractor", None), "conv_layers", None)
        if conv_layers is None or not hasattr(config, "conv_kernel"):
            raise BackboneError(
                f"{type(model).__name__}: not a wav2vec2-style model (expected feature_extractor.conv_layers, "
                "as in wav2vec2, HuBERT, WavLM, data2vec-audio)"
            )
        self.kernels, self.strides = list(config.conv_kernel), list(config.conv_stride)
        self.norms: list[tuple[int, MaskedGroupNorm]] = []
        for i, layer in enumerate(conv_layers):
            norm = getattr(layer, "layer_norm", None)
            if isinstance(norm, nn.GroupNorm):
                masked = MaskedGroupNorm(norm)
                layer.layer_norm = masked
                self.norms.append((i, masked))
            elif isinstance(norm, MaskedGroupNorm):
                self.norms.append((i, norm))
        others = [name for name, m in model.named_modules() if isinstance(m, nn.GroupNorm)]
        if others:
            raise BackboneError(
                f"{type(model).__name__}: GroupNorm layers {others[:3]} normalise over time outside the conv "
                "front end; batched extraction would not be batch-invariant"
            )

    def num_frames(self, num_samples: int) -> int:
        return conv_output_length(num_samples, self.kernels, self.strides)

    @contextmanager
    def lengths(self, num_samples: Sequence[int]) -> Iterator[None]:
        """Within the block, the masked norms use these per-clip sample counts."""
        for i, norm in self.norms:
            norm.lengths = [conv_output_length(n, self.kernels[: i + 1], self.strides[: i + 1]) for n in num_samples]
        try:
            yield
        finally:
            for _, norm in self.norms:
                norm.lengths = None


def normalize_wave(wave: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance over the clip (HF's ``zero_mean_unit_var_norm`` on the unpadded wave)."""
    w64 = wave.astype(np.float64)
    return ((w64 - w64.mean()) / np.sqrt(w64.var() + 1e-7)).astype(np.float32)


class HiddenStateExtractor:
    """Runs a frozen backbone on batches of waveforms and returns every hidden state per frame."""

    def __init__(self, backbone: Backbone, device: torch.device, precision: str = "fp32") -> None:
        self.backbone = backbone
        self.model = backbone.model
        self.device = device
        self.precision = effective_precision(precision, device)
        self.invariance = BatchInvariance(self.model)
        config = self.model.config
        self.num_hidden_states = int(config.num_hidden_layers) + 1
        self.hidden_size = int(config.hidden_size)
        self.hop = math.prod(int(s) for s in config.conv_stride)
        self.receptive_field = conv_receptive_field(config.conv_kernel, config.conv_stride)

    @property
    def feature_shape(self) -> tuple[int, int]:
        return (self.num_hidden_states, self.hidden_size)

    @property
    def layer_names(self) -> list[str]:
        return ["encoder_input"] + [f"layer_{i:02d}" for i in range(1, self.num_hidden_states)]

    def num_frames(self, num_samples: int) -> int:
        return self.invariance.num_frames(num_samples)

    def prepare(self, wave: np.ndarray) -> np.ndarray:
        return normalize_wave(wave) if self.backbone.do_normalize else np.ascontiguousarray(wave, dtype=np.float32)

    def _autocast(self):
        if self.precision == "fp32":
            return nullcontext()
        return torch.autocast(self.device.type, dtype=_AUTOCAST[self.precision])

    @contextmanager
    def _exact_fp32(self) -> Iterator[None]:
        """fp32 on the GPU means fp32: no TF32 in convolutions or matrix products."""
        if self.device.type != "cuda" or self.precision != "fp32":
            yield
            return
        saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        try:
            yield
        finally:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved

    def pad(self, waves: Sequence[np.ndarray], multiple: int = 1) -> tuple[torch.Tensor, list[int]]:
        """Prepared waves -> one zero-padded float32 batch (pinned when feeding a GPU).

        ``multiple`` rounds the padded length up (length buckets): a GPU pays a one-off cost for every new
        convolution shape (cuDNN picks a kernel per shape), so fewer distinct shapes make a cold run
        faster.  Padding never changes a clip's features here, so this is a speed knob only.
        """
        lengths = [len(w) for w in waves]
        width = -(-max(lengths) // max(1, multiple)) * max(1, multiple)
        x = torch.zeros(len(waves), width, dtype=torch.float32, pin_memory=self.device.type == "cuda")
        xn = x.numpy()
        for b, w in enumerate(waves):
            xn[b, : len(w)] = w
        return x, lengths

    @torch.inference_mode()
    def forward(
        self, x: torch.Tensor, lengths: Sequence[int], out_dtype: torch.dtype = torch.float16
    ) -> tuple[torch.Tensor, list[int]]:
        """Padded batch ``(B, N)`` -> hidden states ``(B, T, num_hidden_states, dim)`` and frames per clip.

        Frames past a clip's own length are padding (their values are meaningless).
        """
        frames = [self.num_frames(n) for n in lengths]
        if min(frames) < 1:
            raise ExtractionError(
                f"a clip of {min(lengths)} samples is shorter than the backbone's receptive field "
                f"({self.receptive_field} samples); expected longer audio"
            )
        x = x.to(self.device, non_blocking=True)
        n_t = torch.as_tensor(lengths, device=self.device)
        mask = (torch.arange(x.shape[1], device=self.device)[None, :] < n_t[:, None]).long()
        with self._exact_fp32(), self._autocast(), self.invariance.lengths(lengths):
            out = self.model(x, attention_mask=mask, output_hidden_states=True)
        hidden = out.hidden_states
        if len(hidden) != self.num_hidden_states:
            raise ExtractionError(f"the model returned {len(hidden)} hidden states, expected {self.num_hidden_states}")
        t = hidden[0].shape[1]
        if t != self.num_frames(x.shape[1]):
            raise ExtractionError(f"the model returned {t} frames, expected {self.num_frames(x.shape[1])} for {x.shape[1]} samples")
        res = torch.empty((len(lengths), t, self.num_hidden_states, self.hidden_size), dtype=out_dtype, device=self.device)
        for layer, h in enumerate(hidden):
            res[:, :, layer].copy_(h)
        return res, frames

    def extract(self, waves: Sequence[np.ndarray], out_dtype: torch.dtype = torch.float32) -> list[np.ndarray]:
        """Convenience: raw waves -> one ``(T_i, L, D)`` array per clip (prepared, batched, unpadded)."""
        x, lengths = self.pad([self.prepare(w) for w in waves])
        res, frames = self.forward(x, lengths, out_dtype)
        res = res.cpu()
        return [res[b, :f].numpy().copy() for b, f in enumerate(frames)]


def conv_receptive_field(kernels: Sequence[int], strides: Sequence[int]) -> int:
    rf, jump = 1, 1
    for k, s in zip(kernels, strides, strict=True):
        rf += (int(k) - 1) * jump
        jump *= int(s)
    return rf


# The pipeline --------------------------------------------------------------------------------------------
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


def _in_background(items: Iterator[Any], maxsize: int, stop: threading.Event) -> Iterator[Any]:
    """Run an iterator in a thread, ``maxsize`` items ahead; its exceptions surface in the consumer."""
    q: queue.Queue = queue.Queue(maxsize=maxsize)
    done = object()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            q.put(e)

    thread = threading.Thread(target=produce, name="wav2emo-batches", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=10)


class _HostBuffers:
    """A few pinned host buffers, each big enough for the largest batch, reused for every batch.

    Why not ``torch.empty(..., pin_memory=True)`` per batch: torch's caching host allocator rounds
    requests up to a power of two (a 337 MB batch would pin 512 MB) and keeps one block per size, and
    pinning costs ~0.1 s per GB; a fixed pool pins the minimum once.  ``get`` blocks while every
    buffer is still being written out, which is the back-pressure that keeps host memory bounded.
    """

    def __init__(self, count: int, numel: int, dtype: torch.dtype) -> None:
        self.count, self.numel, self.dtype = count, numel, dtype
        self.free: queue.Queue[torch.Tensor] = queue.Queue()
        self.pin_s = 0.0
        self.pin_error: BaseException | None = None
        # Pin in the background while the first batches run on the GPU (~0.2 s per GB of pinning).
        self._thread = threading.Thread(target=self._pin_all, name="wav2emo-pin", daemon=True)
        self._thread.start()

    def _pin_all(self) -> None:
        start = time.perf_counter()
        try:
            for _ in range(self.count):
                self.free.put(torch.empty(self.numel, dtype=self.dtype, pin_memory=True))
        except BaseException as e:  # noqa: BLE001 - reported by get()
            self.pin_error = e
        self.pin_s = time.perf_counter() - start

    def get(self, numel: int, error: Callable[[], BaseException | None]) -> torch.Tensor:
        if numel > self.numel:
            raise RuntimeError(f"batch of {numel} values exceeds the host buffer of {self.numel}")
        while True:
            err = error() or self.pin_error
            if err is not None:
                raise err
            try:
                return self.free.get(timeout=0.05)
            except queue.Empty:
                continue

    def put(self, buf: torch.Tensor) -> None:
        self.free.put(buf)


class _Writers:
    """Writer threads: wait for a batch's copy to land in host memory, then write its clips' frames."""

    def __init__(self, builder: CacheBuilder, n_threads: int, release: Callable[[Any], None], depth: int) -> None:
        self.builder, self.release = builder, release
        self.q: queue.Queue = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.seconds_busy = 0.0
        self._lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._run, name=f"wav2emo-writer-{k}", daemon=True) for k in range(max(1, n_threads))
        ]
        for t in self.threads:
            t.start()

    def _run(self) -> None:
        while True:
            item = self.q.get()
            if item is None:
                return
            try:
                if self.error is None:
                    self._write(*item[:-1])
            except BaseException as e:  # noqa: BLE001 - re-raised in the main thread
                self.error = e
            finally:
                self.release(item[-1])

    def _write(self, event, host: torch.Tensor, flag: torch.Tensor, clips: list[int], frames: list[int]) -> None:
        if event is not None:
            event.synchronize()
        start = time.perf_counter()
        if bool(flag.item()):  # some value is NaN/inf: find out whether it is in a clip's real frames
            arr = host.float().numpy()
            bad = [
                self.builder.clip_ids[c]
                for b, (c, f) in enumerate(zip(clips, frames, strict=True))
                if not np.isfinite(arr[b, :f]).all()
            ]
            if bad:
                raise ExtractionError(
                    f"non-finite hidden states (NaN/inf, or beyond the float16 range) for clips {bad[:5]}; "
                    "nothing was stored for them. Check the audio, or try precision=fp32"
                )
        arr = host.numpy()
        for b, (c, f) in enumerate(zip(clips, frames, strict=True)):
            self.builder.write(c, arr[b, :f])
        with self._lock:
            self.seconds_busy += time.perf_counter() - start

    def put(self, item: tuple) -> float:
        """Queue a batch; returns the seconds spent waiting for room (the writers were behind)."""
        start = time.perf_counter()
        while True:
            if self.error is not None:
                raise self.error
            try:
                self.q.put(item, timeout=0.1)
                return time.perf_counter() - start
            except queue.Full:
                continue

    def close(self) -> None:
        for _ in self.threads:
            self.q.put(None)
        for t in self.threads:
            t.join()
        if self.error is not None:
            raise self.error


def extract_to_builder(
    extractor: HiddenStateExtractor,
    builder: CacheBuilder,
    paths: Sequence[str],
    samples: Sequence[int],
    *,
    batch_size: int = 32,
    num_workers: int = 4,
    writer_threads: int = 3,
    length_bucket_s: float = 0.0,
    max_batch_s: float | None = None,
    progress: bool = True,
    load: Callable[[str, int], np.ndarray] = load_audio,
) -> dict[str, Any]:
    """Compute ``builder.pending`` clips in batches of ``batch_size`` (in layout order) and write them.

    ``paths[i]`` / ``samples[i]`` are clip ``i``'s audio file and its expected sample count at the
    backbone's rate; a file that decodes to another length is an error (the plan would not fit).
    Batches are padded to a multiple of ``length_bucket_s`` seconds (see :meth:`HiddenStateExtractor.pad`)
    and hold at most ``max_batch_s`` seconds of padded audio (see :func:`plan_batches`).
    Returns timings: ``wait_input_s`` (GPU starved of audio), ``wait_writer_s`` / ``wait_buffer_s``
    (writers behind, or host buffers still being pinned), ``pin_s`` (background pinning),
    ``batch_s`` (wall time of each batch in the main loop).
    """
    from tqdm.auto import tqdm

    pending = builder.pending
    sr = extractor.backbone.sampling_rate
    budget = int(max_batch_s * sr) if max_batch_s else None
    batches = plan_batches(pending, samples, max(1, batch_size), budget)
    stop = threading.Event()
    cuda = extractor.device.type == "cuda"
    row = extractor.num_hidden_states * extractor.hidden_size
    multiple = max(1, round(length_bucket_s * sr))
    largest = max(
        (len(b) * extractor.num_frames(-(-max(samples[i] for i in b) // multiple) * multiple) * row for b in batches),
        default=0,
    )

    def load_one(i: int) -> np.ndarray:
        wave = load(paths[i], sr)
        if len(wave) != samples[i]:
            raise ExtractionError(
                f"{paths[i]}: decoded to {len(wave)} samples at {sr} Hz, but the manifest implies {samples[i]}; "
                "the manifest does not describe this file (prepare the corpus again)"
            )
        return extractor.prepare(wave)

    def assemble(pool: ThreadPoolExecutor) -> Iterator[tuple[list[int], torch.Tensor, list[int]]]:
        ahead: deque[list[Future]] = deque()
        submitted = 0
        prefetch = max(2, -(-2 * num_workers // max(1, batch_size)) + 1)  # batches decoded ahead
        for k, batch in enumerate(batches):
            while submitted < len(batches) and submitted <= k + prefetch:
                ahead.append([pool.submit(load_one, i) for i in batches[submitted]])
                submitted += 1
            waves = [f.result() for f in ahead.popleft()]
            x, lengths = extractor.pad(waves, multiple)
            yield batch, x, lengths

    buffers = _HostBuffers(writer_threads + 1, largest, torch.float16) if cuda else None
    writers = _Writers(
        builder, writer_threads, release=buffers.put if buffers else (lambda _: None), depth=writer_threads + 2
    )
    copy_stream = torch.cuda.Stream(extractor.device) if cuda else None
    timings: dict[str, Any] = {"wait_input_s": 0.0, "wait_writer_s": 0.0, "wait_buffer_s": 0.0, "batch_s": []}
    bar = tqdm(total=len(pending), unit="clip", desc="hidden states", disable=not progress, leave=False)
    start = time.perf_counter()
    try:
        with ThreadPoolExecutor(max(1, num_workers), thread_name_prefix="wav2emo-audio") as pool:
            stream = _in_background(assemble(pool), maxsize=2, stop=stop)
            while True:
                t0 = t_batch = time.perf_counter()
                try:
                    clips, x, lengths = next(stream)
                except StopIteration:
                    break
                timings["wait_input_s"] += time.perf_counter() - t0
                res, frames = extractor.forward(x, lengths, torch.float16)
                bad = ~torch.isfinite(res).all()
                if cuda:
                    assert buffers is not None and copy_stream is not None
                    t0 = time.perf_counter()
                    buf = buffers.get(res.numel(), lambda: writers.error)
                    timings["wait_buffer_s"] += time.perf_counter() - t0
                    host = buf[: res.numel()].view(res.shape)
                    flag = torch.empty((), dtype=torch.bool, pin_memory=True)
                    copy_stream.wait_stream(torch.cuda.current_stream(extractor.device))
                    with torch.cuda.stream(copy_stream):
                        host.copy_(res, non_blocking=True)
                        flag.copy_(bad, non_blocking=True)
                        event = torch.cuda.Event()
                        event.record(copy_stream)
                    res.record_stream(copy_stream)
                    bad.record_stream(copy_stream)
                    timings["wait_writer_s"] += writers.put((event, host, flag, clips, frames, buf))
                else:
                    timings["wait_writer_s"] += writers.put((None, res, bad, clips, frames, None))
                bar.update(len(clips))
                timings["batch_s"].append(round(time.perf_counter() - t_batch, 3))
            stop.set()
        writers.close()
    except BaseException:
        stop.set()
        try:
            writers.close()
        except BaseException:  # noqa: BLE001 - the first error is the one to report
            pass
        builder.close()
        raise
    finally:
        bar.close()
    timings["extract_s"] = time.perf_counter() - start
    timings["write_busy_s"] = writers.seconds_busy
    timings["pin_s"] = buffers.pin_s if buffers is not None else 0.0
    timings["clips_computed"] = float(len(pending))
    return timings


# The feature kind -------------------------------------------------------------------------------------------
SSL_DEFAULTS: dict[str, Any] = {
    "kind": "ssl_hidden_states",
    "name": None,
    "backbone": DEFAULT_BACKBONE,
    "revision": "main",
    "build_tiny": False,
    "tiny_seed": 0,
    "normalize": None,  # None = the backbone's preprocessor_config.json decides
    "precision": "bf16",
    "batch_size": 32,
    "num_workers": 4,
    "writer_threads": 3,
    "length_bucket_s": 0.5,  # pad batches to multiples of this (fewer GPU shapes); never changes features
    "max_batch_s": 200.0,  # padded audio per batch (batch_size x longest clip); bounds memory, never changes features
    "max_clip_s": 60.0,  # longer clips are refused up front: attention memory grows with the square of the length
    "shard_mb": DEFAULT_SHARD_BYTES // 2**20,
    "durable": True,
}


class SSLHiddenStates:
    """Feature kind ``ssl_hidden_states``: all hidden states of a frozen SSL backbone, float16, per frame."""

    storage_dtype = "float16"

    def __init__(self, spec: Mapping[str, Any], device: str | torch.device = "auto") -> None:
        unknown = sorted(set(spec) - set(SSL_DEFAULTS))
        if unknown:
            raise ValueError(f"feature spec {spec.get('name')!r}: unknown fields {unknown}; expected {sorted(SSL_DEFAULTS)}")
        self.spec = {**SSL_DEFAULTS, **spec}
        self.device = resolve_device(device)
        self.precision = effective_precision(str(self.spec["precision"]), self.device)
        self.source = resolve_source(
            self.spec["backbone"],
            revision=self.spec["revision"],
            build_tiny=bool(self.spec["build_tiny"]),
            tiny_seed=int(self.spec["tiny_seed"]),
        )

    def check_clips(self, manifest: Manifest) -> None:
        """Refuse, before the backbone is even loaded, clips shorter than wav2vec2's 400-sample receptive
        field or longer than ``max_clip_s`` (the build checks the exact receptive field of the model too)."""
        max_s = self.spec["max_clip_s"]
        check_durations(
            manifest, what=f"the hidden states of feature spec {self.spec['name']!r}", min_s=400 / 16000,
            min_reason="the receptive field (400 samples at 16 kHz) of wav2vec2's convolutional front end",
            error=ClipLengthError,
            max_s=None if max_s is None else float(max_s), max_key="features.ssl.max_clip_s",
        )

    def _normalize(self) -> bool:
        if self.spec["normalize"] is not None:
            return bool(self.spec["normalize"])
        identity = backbone_identity(self.source)
        settings = preprocessor_settings(self.source, commit=identity.get("commit"))
        if settings is None:
            raise BackboneError(
                f"{self.source.describe()}: no preprocessor_config.json; set `normalize: true|false` in the spec"
            )
        return bool(settings["do_normalize"])

    def key_fields(self) -> dict[str, Any]:
        """What changes the numbers: the weights, normalisation and compute precision (not batch size)."""
        return {
            "backbone": backbone_identity(self.source),
            "normalize": self._normalize(),
            "precision": self.precision,
            "storage_dtype": self.storage_dtype,
            "hidden_states": "all",
        }

    def accepted_key_fields(self) -> list[dict[str, Any]]:
        """Key fields of existing caches that also satisfy this spec, besides :meth:`key_fields`.

        A spec asking for bf16 runs in fp32 on a CPU (no fast bf16 there), which is another cache; but
        a finished cache that the same spec built in bf16 on a GPU is exactly what the spec asked for,
        so a CPU job (training, eval) reads it instead of extracting everything again in fp32.
        """
        requested = str(self.spec["precision"])
        if requested == self.precision:
            return []
        return [{**self.key_fields(), "precision": requested}]

    def build(self, manifest: Manifest, path: Path, base_meta: Mapping[str, Any], *, progress: bool = True) -> dict:
        self.check_clips(manifest)
        t0 = time.perf_counter()
        import transformers.modeling_utils  # noqa: F401 - timed apart: importing it dominates a cold load

        import_s = time.perf_counter() - t0
        backbone = load_backbone(self.source, device=self.device, normalize=self._normalize())
        extractor = HiddenStateExtractor(backbone, self.device, self.precision)
        load_s = time.perf_counter() - t0
        sr = backbone.sampling_rate
        samples = [expected_samples(c, sr) for c in manifest]
        frames = [extractor.num_frames(n) for n in samples]
        short = [manifest[i].clip_id for i, f in enumerate(frames) if f < 1]
        if short:
            raise ExtractionError(
                f"clips {short[:5]} are shorter than the backbone's receptive field ({extractor.receptive_field} "
                f"samples at {sr} Hz); expected longer audio"
            )
        order = sorted(range(len(manifest)), key=lambda i: (-samples[i], i))  # long first: least padding
        builder = CacheBuilder(
            path,
            clip_ids=manifest.clip_ids,
            sha1s=[c.sha1 for c in manifest],
            lengths=frames,
            feature_shape=extractor.feature_shape,
            dtype=self.storage_dtype,
            order=order,
            shard_bytes=int(float(self.spec["shard_mb"]) * 2**20),
            durable=bool(self.spec["durable"]),
        )
        builder.check_free_space()
        timings = extract_to_builder(
            extractor,
            builder,
            [c.path for c in manifest],
            samples,
            batch_size=int(self.spec["batch_size"]),
            num_workers=int(self.spec["num_workers"]),
            writer_threads=int(self.spec["writer_threads"]),
            length_bucket_s=float(self.spec["length_bucket_s"] or 0.0),
            max_batch_s=None if self.spec["max_batch_s"] is None else float(self.spec["max_batch_s"]),
            progress=progress,
        )
        config = backbone.config
        meta = {
            **base_meta,
            "frame_rate": sr / extractor.hop,
            "frame_shift_s": extractor.hop / sr,
            "receptive_field_samples": extractor.receptive_field,
            "sample_rate": sr,
            "layer_names": extractor.layer_names,
            "backbone": {
                **backbone.info,
                "normalize": backbone.do_normalize,
                "hidden_size": extractor.hidden_size,
                "num_hidden_states": extractor.num_hidden_states,
                "feat_extract_norm": getattr(config, "feat_extract_norm", None),
                "batch_invariant_norms": [i for i, _ in extractor.invariance.norms],
            },
        }
        meta["build"] = {
            **base_meta.get("build", {}),
            "device": _device_name(self.device),
            "precision": self.precision,
            "batch_size": int(self.spec["batch_size"]),
            "num_workers": int(self.spec["num_workers"]),
            "model_load_s": round(load_s, 3),
            "transformers_import_s": round(import_s, 3),
            "seconds": round(time.perf_counter() - t0, 3),
            "shards_reused": builder.shards_reused,
            "length_bucket_s": float(self.spec["length_bucket_s"] or 0.0),
            **{k: (v if isinstance(v, list) else round(v, 3) if k.endswith("_s") else int(v)) for k, v in timings.items()},
        }
        builder.finish(meta)
        return meta


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)
