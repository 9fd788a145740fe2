"""Restored checkpoints as one traceable module: 16 kHz waveform (and eGeMAPS functionals) -> probabilities.

It computes, for a batch of one clip, what ``wav2emo.predict`` computes (:mod:`wav2emo.inference`):

- the frozen backbone's hidden states of the features spec (normalised wave, every hidden state, rounded to
  float16 and back as the feature cache stores them), once for every fold that shares that backbone;
- per fold: the data module's padding (``frames``: cut or zero-padded to the fixed length; ``frames_multiple``:
  zero-padded up to a multiple, with the mask), the fine-tuned upstream (``top_k``: its own top layers on
  the cached hidden state N-k; ``full``/``frozen``: its own backbone on the wave), the featurizer and the
  head, then the softmax; a fold ensemble averages the folds' probabilities.

What cannot be expressed this way is refused up front by :func:`check_exportable`, naming the part and why.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from wav2emo.errors import ConfigError
from wav2emo.inference.restore import Restored

SUPPORTED_INPUTS = ("ssl", "ssl_layer", "egemaps", "wave")
# Families whose model takes the (normalised) waveform itself: the graph can start at the 16 kHz samples.
WAVE_FAMILIES = frozenset({"wav2vec2", "hubert", "wavlm", "data2vec-audio"})


def check_exportable(r: Restored) -> None:
    """Refuse, in one line naming the part, a checkpoint this exporter cannot turn into the graph predict runs."""
    inputs = tuple(r.features.inputs)
    other = [i for i in inputs if i not in SUPPORTED_INPUTS]
    if other:
        raise ConfigError(f"{r.path}: cannot export: the model reads {other}; the log-mel front end "
                          "(features.logmel) is computed outside the model, so only SSL hidden states, the waveform "
                          "and eGeMAPS functionals can be graph inputs")
    if not any(i in inputs for i in ("ssl", "ssl_layer", "wave")):
        raise ConfigError(f"{r.path}: cannot export: the model reads only {list(inputs)} (no audio front end in the "
                          "graph); an eGeMAPS-only model is a small MLP on openSMILE's functionals, use "
                          "wav2emo.predict")
    up = getattr(r.module, "upstream", None)
    if "wave" in inputs and r.frames_multiple is not None:
        raise ConfigError(f"{r.path}: cannot export: the waveform input was padded to multiples of "
                          f"{r.frames_multiple} (loader.frames_multiple); the graph takes unpadded audio")
    if "wave" in inputs and (up is None or getattr(up, "mode", None) not in ("frozen", "full")):
        raise ConfigError(f"{r.path}: cannot export: the model reads the waveform without an SSL upstream "
                          f"({type(up).__name__ if up is not None else 'none'})")
    if "wave" in inputs and r.features.sample_rate != 16000:
        raise ConfigError(f"{r.path}: cannot export: the upstream reads audio resampled to "
                          f"{r.features.sample_rate} Hz (datamodule.sample_rate); the graph's input is 16 kHz")
    families = {getattr(b, "family", None) for b in (getattr(r.features, "extractor", None), getattr(up, "backbone", None))
                if b is not None}
    if families - WAVE_FAMILIES:
        raise ConfigError(f"{r.path}: cannot export: the backbone family {sorted(families - WAVE_FAMILIES)} computes its "
                          f"own front end (Whisper: a log-mel of its feature extractor) outside the model; the graph "
                          f"starts at the waveform for the convolutional families {sorted(WAVE_FAMILIES)}")
    if up is not None and getattr(up, "mode", None) == "top_k" and "ssl" not in inputs:
        raise ConfigError(f"{r.path}: cannot export: a top_k upstream without the cached hidden states")


def _normalize(wave: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance over the clip in float64, as extraction and fine-tuning compute it."""
    w = wave.double()
    mean = w.mean(dim=1, keepdim=True)
    var = ((w - mean) ** 2).mean(dim=1, keepdim=True)
    return ((w - mean) / torch.sqrt(var + 1e-7)).float()


def _hidden_states(model: nn.Module, wave: torch.Tensor) -> torch.Tensor:
    """Every hidden state (1, H, T, D) of a wav2vec2-style model on a batch of one (no padding, no mask)."""
    out = model(wave, output_hidden_states=True)
    return torch.stack(out.hidden_states, dim=1)


def _length(x: torch.Tensor, dim: int) -> torch.Tensor:
    """The size of ``x`` along ``dim`` as a tensor, so the traced graph reads it at run time (a Python int
    taken from a shape would be frozen into the graph as the traced clip's length)."""
    return torch._shape_as_tensor(x)[dim]


def _zero_extend(x: torch.Tensor, dim: int, extra: int) -> torch.Tensor:
    shape = list(x.shape)
    shape[dim] = extra
    return torch.cat([x, x.new_zeros(shape)], dim=dim)


def _fit_frames(x: torch.Tensor, frames: int | None, multiple: int | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``collate`` for one clip: (1, H, T, D) cut/padded to ``frames`` or padded to a multiple, with its mask."""
    if frames is None and multiple is None:
        return x, None
    n = _length(x, 2)
    if frames is not None:
        width = torch.full_like(n, int(frames))
        x = _zero_extend(x[:, :, :frames], 2, int(frames))
    else:
        width = torch.div(n + (multiple - 1), multiple, rounding_mode="floor") * multiple
        x = _zero_extend(x, 2, int(multiple))
    x = x[:, :, :width]
    mask = torch.arange(width, device=x.device)[None, :] < n
    return x, mask


def _at_least(x: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    """Zero-pad ``x`` along ``dim`` up to ``size`` (the adaptive head's padding of short clips), at run time."""
    n = _length(x, dim)
    width = torch.maximum(n, torch.full_like(n, int(size)))
    return _zero_extend(x, dim, int(size))[(slice(None),) * dim + (slice(0, width),)]


class AdaptiveAvgPool2dExport(nn.Module):
    """``nn.AdaptiveAvgPool2d`` for inputs whose size is only known at run time (the legacy ONNX exporter needs
    static sizes for it): bin ``i`` of ``out`` averages ``[floor(i n / out), ceil((i + 1) n / out))``, as PyTorch
    does, from cumulative sums."""

    def __init__(self, output_size: tuple[int, int]) -> None:
        super().__init__()
        self.output_size = tuple(int(s) for s in output_size)

    @staticmethod
    def _pool(x: torch.Tensor, dim: int, out: int) -> torch.Tensor:
        n = _length(x, dim)
        i = torch.arange(out, device=x.device)
        start = torch.div(i * n, out, rounding_mode="floor")
        end = torch.div((i + 1) * n + (out - 1), out, rounding_mode="floor")
        x64 = x.double()
        c = torch.cat([x64.narrow(dim, 0, 1) * 0, x64.cumsum(dim)], dim=dim)
        sums = c.index_select(dim, end) - c.index_select(dim, start)
        shape = [1] * x.dim()
        shape[dim] = out
        return (sums / (end - start).to(torch.float64).view(shape)).to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._pool(x, x.dim() - 1, self.output_size[1])
        return self._pool(x, x.dim() - 2, self.output_size[0])


def make_traceable(module: nn.Module) -> None:
    """Swap layers the ONNX exporter cannot take with dynamic sizes for equivalents that it can."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.AdaptiveAvgPool2d):
            size = child.output_size if isinstance(child.output_size, tuple) else (child.output_size,) * 2
            if any(s is None for s in size):
                raise ConfigError(f"cannot export: {name} is an AdaptiveAvgPool2d{size} with a free axis")
            setattr(module, name, AdaptiveAvgPool2dExport(size))
        else:
            make_traceable(child)


class FoldGraph(nn.Module):
    """One checkpoint's model after its features: ``hidden`` (the shared frozen backbone's, float16-rounded),
    the normalised wave (for upstreams that run their own backbone) and eGeMAPS -> probabilities (1, C)."""

    def __init__(self, r: Restored) -> None:
        super().__init__()
        check_exportable(r)
        # The parts, not the LightningModule: the upstream's extra state (its identity) would stop the tracer.
        self.net, self.featurizer = r.module.net, r.module.featurizer
        self.inputs = tuple(r.features.inputs)
        self.frames, self.multiple = r.frames, r.frames_multiple
        up = getattr(r.module, "upstream", None)
        self.mode = None if up is None else up.mode
        self.backbone = None if up is None else up.model
        self.top = None if up is None else (up.num_layers - up.k, up.num_layers)
        self.layer_index = r.features.ssl_layer_index
        from wav2emo.models.fe_vgg import FeVGGEncoder

        encoder = getattr(r.module.net, "encoder", None)
        # The adaptive head zero-pads clips shorter than its pooling needs, deciding with a Python int the
        # tracer would freeze: the graph pads them itself (the net then sees no clip shorter than min_size).
        self.min_frames = encoder.min_size if isinstance(encoder, FeVGGEncoder) and encoder.head == "adaptive" else None
        make_traceable(self.net)

    def forward(self, hidden: torch.Tensor | None, wave: torch.Tensor, egemaps: torch.Tensor | None) -> torch.Tensor:
        from wav2emo.backbones import run_layers

        batch: dict[str, Any] = {}
        if self.mode in ("frozen", "full"):
            batch["ssl"] = _hidden_states(self.backbone, wave)
        elif "ssl" in self.inputs:
            ssl, mask = _fit_frames(hidden, self.frames, self.multiple)
            if self.mode == "top_k":
                start, n = self.top
                tops = torch.stack(run_layers(self.backbone, ssl[:, start], mask, start, n), dim=1)
                if mask is not None:
                    tops = tops * mask[:, None, :, None].to(tops.dtype)
                ssl = torch.cat([ssl[:, : start + 1], tops], dim=1)
            batch["ssl"] = ssl
            if mask is not None:
                batch["ssl_mask"] = mask
        if "ssl_layer" in self.inputs:
            layer, mask = _fit_frames(hidden[:, self.layer_index: self.layer_index + 1], self.frames, self.multiple)
            batch["ssl_layer"] = layer[:, 0]
            if mask is not None:
                batch["ssl_mask"] = mask
        if egemaps is not None and "egemaps" in self.inputs:
            batch["egemaps"] = egemaps
        if self.min_frames is not None and "ssl" in batch:
            batch["ssl"] = _at_least(batch["ssl"], 2, self.min_frames)
            if "ssl_mask" in batch:
                batch["ssl_mask"] = _at_least(batch["ssl_mask"], 1, self.min_frames)
        if self.featurizer is not None:
            batch = self.featurizer(batch)
        return self.net(batch).float().softmax(dim=1)


class EnsembleGraph(nn.Module):
    """Every fold of an export in one graph: each distinct frozen backbone runs once, the folds' probabilities
    are averaged. ``forward(waveform (1, S)[, egemaps (1, 88)]) -> probabilities (1, C)``."""

    def __init__(self, restored: Sequence[Restored]) -> None:
        super().__init__()
        self.folds = nn.ModuleList(FoldGraph(r) for r in restored)
        feats = []  # distinct in-memory feature sets (restore shares one among folds of one backbone)
        for r in restored:
            if all(f is not r.features for f in feats):
                feats.append(r.features)
        self.backbones = nn.ModuleList(
            f.extractor.model if f.extractor is not None else nn.Identity() for f in feats)
        self.normalize = [bool(f.extractor.do_normalize) if f.extractor is not None else False for f in feats]
        self.feature_of = [next(i for i, f in enumerate(feats) if f is r.features) for r in restored]
        self.uses_backbone = [f.extractor is not None for f in feats]
        self.wave_normalize = [bool(getattr(getattr(r.module, "upstream", None), "do_normalize", False))
                               for r in restored]
        self.takes_egemaps = any("egemaps" in r.features.inputs for r in restored)

    def forward(self, waveform: torch.Tensor, egemaps: torch.Tensor | None = None) -> torch.Tensor:
        hidden = []
        for backbone, normalize, used in zip(self.backbones, self.normalize, self.uses_backbone, strict=True):
            if not used:
                hidden.append(None)
                continue
            x = _normalize(waveform) if normalize else waveform
            hidden.append(_hidden_states(backbone, x).half().float())  # the cache's float16
        total = None
        for fold, idx, normalize in zip(self.folds, self.feature_of, self.wave_normalize, strict=True):
            wave = _normalize(waveform) if normalize else waveform
            p = fold(hidden[idx], wave, egemaps)
            total = p if total is None else total + p
        return total / len(self.folds)
