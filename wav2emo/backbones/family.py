"""The backbone-family contract: one class per family tells the rest of wav2emo everything it needs to know.

A *family* (wav2vec2, HuBERT, WavLM, data2vec-audio, Whisper's encoder, ...) is a subclass of
:class:`Backbone` in its own module under :mod:`wav2emo.backbones.families`, registered with
:func:`wav2emo.backbones.registry.register_family` for the ``model_type`` values of its transformers configs.  An instance is one
loaded backbone, and it is the ONE object that extraction (the feature cache), fine-tuning
(:class:`wav2emo.models.upstream.SSLUpstream`), evaluation and prediction run; so all of them compute the
same hidden states the same way.

What a family states (class attributes) and does (methods):

- loading: :meth:`load_config`, :meth:`load_model` (hub id or folder, offline, ``trust_remote_code`` off),
  :attr:`needs_preprocessor` (whether the checkpoint's preprocessor_config.json is required),
  :attr:`switch_attrs` (our train-mode switches -> its config attributes);
- front end: :meth:`prepare` / :meth:`prepare_batch` (raw wave, normalised per clip or not);
  :meth:`hidden_states` then turns that into whatever the model eats (Whisper: its own log-mel);
- time: sample rate, :attr:`hop` (samples per frame), :meth:`num_frames` (valid frames of a clip of n
  samples), :attr:`receptive_field` (fewest samples giving one frame), :attr:`max_clip_s`;
- hidden states: :attr:`num_layers` (N), :attr:`hidden_size`; :meth:`hidden_states` gives N + 1 of them;
  its batch-invariance rule makes a clip's frames independent of the batch it is padded into;
- training: :meth:`layers` and :meth:`run_layers` (layers start+1..stop on hidden state ``start``, what
  top-k fine-tuning runs from the cache), :meth:`trained_prefixes` (which parameters train in each mode),
  :meth:`front_end` (kept in eval mode while frozen).

Adding a family: one module under ``wav2emo/backbones/families/`` (or anywhere, for a plugin) defining the
subclass and registering it (:func:`wav2emo.backbones.registry.register_family`), and one ``conf/features/<hub-id-name>.yaml`` (docs/architecture.md, how-to table).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from wav2emo.backbones.fixed_shapes import host_to_device
from wav2emo.backbones.running import (
    ExtractionError,
    autocast,
    exact_fp32,
    normalize_wave,
    normalize_waves,
    pad_waves,
)
from wav2emo.backbones.source import BackboneError, BackboneSource
from wav2emo.backbones.switches import TRAIN_SWITCH_DEFAULTS


class Backbone:
    """One loaded backbone of one family (see the module docstring).  Subclass per family; load with
    :func:`wav2emo.backbones.loading.load_backbone`."""

    family: ClassVar[str] = ""
    model_types: ClassVar[tuple[str, ...]] = ()
    needs_preprocessor: ClassVar[bool] = False
    max_clip_s: ClassVar[float | None] = None
    # our switch name -> the config attribute that holds it; a switch missing here must stay at its default
    switch_attrs: ClassVar[Mapping[str, str]] = {name: name for name in TRAIN_SWITCH_DEFAULTS}
    layer_prefix: ClassVar[str] = "encoder.layers."  # parameter names of transformer layer i: f"{prefix}{i}."
    front_end_prefixes: ClassVar[tuple[str, ...]] = ()
    # What conf/features/<name>.yaml should set for this family's caches (item 3 of issue 19; informative).
    cache_advice: ClassVar[str] = ""

    def __init__(
        self,
        model: nn.Module,
        source: BackboneSource,
        identity: Mapping[str, Any],
        do_normalize: bool,
        sampling_rate: int = 16000,
        info: Mapping[str, Any] | None = None,
        preprocessor: Mapping[str, Any] | None = None,
        *,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
    ) -> None:
        self.model = model
        self.source = source
        self.identity = dict(identity)
        self.do_normalize = bool(do_normalize)
        self.sampling_rate = int(sampling_rate)
        self.info = {"family": self.family, **dict(info or {})}
        self.preprocessor = dict(preprocessor or {})
        self.device = torch.device(device)
        self.precision = precision
        self.setup()

    def setup(self) -> None:
        """Family-specific preparation after loading (e.g. wav2vec2's batch-invariance patch)."""

    @property
    def config(self) -> Any:
        return self.model.config

    # Loading (class level: no model yet) -------------------------------------------------------------
    @classmethod
    def load_config(cls, where: str, **common: Any) -> Any:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(where, **common, trust_remote_code=False)

    @classmethod
    def configure(cls, config: Any, switches: Mapping[str, Any], where: str = "") -> None:
        """Write our train-mode switches into ``config`` (before the model is built from it)."""
        for name, value in switches.items():
            attr = cls.switch_attrs.get(name)
            if attr is None:
                if value != TRAIN_SWITCH_DEFAULTS[name]:
                    raise BackboneError(
                        f"{where or cls.family}: finetune.{name}={value!r} is not available for the {cls.family} "
                        f"family (it has only {sorted(cls.switch_attrs)}); leave it at {TRAIN_SWITCH_DEFAULTS[name]!r}"
                    )
                continue
            setattr(config, attr, value)

    @classmethod
    def load_model(cls, where: str, config: Any, **common: Any) -> nn.Module:
        from transformers import AutoModel

        return AutoModel.from_pretrained(where, config=config, dtype=torch.float32, **common, trust_remote_code=False)

    @classmethod
    def model_from_config(cls, config: Any) -> nn.Module:
        """A randomly initialised model of this family (tiny test models, benchmarks of real sizes)."""
        from transformers import AutoModel

        return AutoModel.from_config(config)

    # Facts -----------------------------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        return len(self.layers())

    @property
    def num_hidden_states(self) -> int:
        return self.num_layers + 1

    @property
    def hidden_size(self) -> int:
        return int(self.config.hidden_size)

    @property
    def hop(self) -> int:
        """Samples per output frame."""
        raise NotImplementedError

    @property
    def receptive_field(self) -> int:
        """The fewest samples that give one frame."""
        raise NotImplementedError

    @property
    def frame_rate(self) -> float:
        return self.sampling_rate / self.hop

    @property
    def max_samples(self) -> int | None:
        return None if self.max_clip_s is None else round(self.max_clip_s * self.sampling_rate)

    def num_frames(self, num_samples: int) -> int:
        """Valid frames of a clip of ``num_samples`` samples (0 if shorter than the receptive field)."""
        raise NotImplementedError

    @property
    def layer_names(self) -> list[str]:
        return ["encoder_input"] + [f"layer_{i:02d}" for i in range(1, self.num_hidden_states)]

    @property
    def feature_shape(self) -> tuple[int, int]:
        return (self.num_hidden_states, self.hidden_size)

    def describe(self) -> dict[str, Any]:
        """The facts a cache's meta.json and ``wav2emo.env`` report."""
        return {"family": self.family, "num_layers": self.num_layers, "hidden_size": self.hidden_size,
                "sample_rate": self.sampling_rate, "hop": self.hop, "frame_rate": self.frame_rate,
                "receptive_field_samples": self.receptive_field, "max_clip_s": self.max_clip_s}

    # Running -----------------------------------------------------------------------------------------
    def prepare(self, wave: np.ndarray) -> np.ndarray:
        """One clip's wave (CPU, before batching) as the model's front end expects it."""
        return normalize_wave(wave) if self.do_normalize else np.ascontiguousarray(wave, dtype=np.float32)

    def prepare_batch(self, wave: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """:meth:`prepare` on a zero-padded batch on any device (online augmentation, fine-tuning)."""
        valid = torch.arange(wave.shape[1], device=wave.device)[None, :] < lengths[:, None]
        return normalize_waves(wave, lengths) if self.do_normalize else wave.float() * valid

    def check_lengths(self, lengths: Sequence[int]) -> list[int]:
        """Frames per clip; one line naming the clip length when a clip is too short or too long."""
        frames = [self.num_frames(int(n)) for n in lengths]
        if min(frames) < 1:
            raise ExtractionError(
                f"a clip of {min(lengths)} samples is shorter than the {self.family} backbone's receptive field "
                f"({self.receptive_field} samples at {self.sampling_rate} Hz); expected longer audio"
            )
        limit = self.max_samples
        if limit is not None and max(lengths) > limit:
            raise ExtractionError(
                f"a clip of {max(lengths) / self.sampling_rate:.2f} s is longer than the {self.family} backbone's "
                f"{self.max_clip_s:g} s window; expected clips of at most {self.max_clip_s:g} s (cut them first)"
            )
        return frames

    def hidden_states(self, x: torch.Tensor, lengths: Sequence[int]) -> list[torch.Tensor]:
        """Prepared, zero-padded batch ``(B, S)`` -> N + 1 hidden states, each ``(B, T, D)`` with
        ``T = num_frames(S)``; frames past a clip's own :meth:`num_frames` are padding (meaningless).
        Gradients follow the caller (no_grad for extraction, enabled for fine-tuning)."""
        raise NotImplementedError

    def layers(self) -> nn.ModuleList:
        """The transformer layers, in order (layer i + 1 consumes hidden state i)."""
        raise NotImplementedError

    def run_layers(self, hidden: torch.Tensor, mask: torch.Tensor | None, start: int, stop: int) -> list[torch.Tensor]:
        """Layers ``start+1..stop`` on ``hidden = hidden_states[start]`` (B, T, D) with ``mask`` (B, T) True on
        real frames: ``[hidden_states[start+1], ..., hidden_states[stop]]`` as :meth:`hidden_states` gives them."""
        raise NotImplementedError

    # Training ----------------------------------------------------------------------------------------
    def front_end(self) -> nn.Module | None:
        """The part before the transformer (kept frozen and in eval mode unless asked otherwise)."""
        return None

    def trained_prefixes(self, mode: str, k: int, freeze_front_end: bool, masking: bool) -> tuple[str, ...]:
        """Parameter-name prefixes (relative to :attr:`model`) that train in ``mode`` (frozen, top_k, full)."""
        n = self.num_layers
        if mode == "frozen":
            return ()
        if mode == "top_k":
            return tuple(f"{self.layer_prefix}{i}." for i in range(n - k, n))
        prefixes = list(self.full_prefixes(masking))
        if not freeze_front_end:
            prefixes += list(self.front_end_prefixes)
        return tuple(prefixes)

    def full_prefixes(self, masking: bool) -> tuple[str, ...]:
        """What full fine-tuning trains besides the front end."""
        return (self.layer_prefix,)

    def depth(self, name: str) -> tuple[int, str]:
        """(depth below the top layer, group name) of parameter ``name``, for layer-wise learning rates."""
        n = self.num_layers
        if name.startswith(self.layer_prefix):
            i = int(name[len(self.layer_prefix):].split(".")[0])
            return n - 1 - i, f"backbone.layer_{i + 1:02d}"
        if name.startswith(self.front_end_prefixes):
            return n + 1, "backbone.feature_encoder"
        return n, "backbone.embeddings"

    def set_switches(self, switches: Mapping[str, Any]) -> None:
        """Apply train-mode switches to the loaded model (its config, and attributes read at build time)."""
        self.configure(self.config, switches, self.source.describe())

    # Extraction ----------------------------------------------------------------------------------------
    def pad(self, waves: Sequence[np.ndarray], multiple: int = 1) -> tuple[torch.Tensor, list[int]]:
        return pad_waves(waves, multiple, pin=self.device.type == "cuda")

    @torch.inference_mode()
    def extract_batch(
        self, x: torch.Tensor, lengths: Sequence[int], out_dtype: torch.dtype = torch.float16,
        layers: Sequence[int] | None = None,
    ) -> tuple[torch.Tensor, list[int]]:
        """Padded prepared batch ``(B, S)`` -> hidden states ``(B, T, L, D)`` (``layers``: which of the N + 1,
        default all) and valid frames per clip, frozen, at :attr:`precision`."""
        frames = self.check_lengths(lengths)
        x = x.to(self.device, non_blocking=True)
        with exact_fp32(self.device, self.precision), autocast(self.device, self.precision):
            hidden = self.hidden_states(x, lengths)
        if len(hidden) != self.num_hidden_states:
            raise ExtractionError(f"the model returned {len(hidden)} hidden states, expected {self.num_hidden_states}")
        t = hidden[0].shape[1]
        if t != self.num_frames(x.shape[1]):
            raise ExtractionError(f"the model returned {t} frames, expected {self.num_frames(x.shape[1])} for {x.shape[1]} samples")
        chosen = list(range(self.num_hidden_states)) if layers is None else list(layers)
        res = torch.empty((len(lengths), t, len(chosen), self.hidden_size), dtype=out_dtype, device=self.device)
        for j, layer in enumerate(chosen):
            res[:, :, j].copy_(hidden[layer])
        return res, frames

    def extract(self, waves: Sequence[np.ndarray], out_dtype: torch.dtype = torch.float32) -> list[np.ndarray]:
        """Convenience: raw waves -> one ``(T_i, N + 1, D)`` array per clip (prepared, batched, unpadded)."""
        x, lengths = self.pad([self.prepare(w) for w in waves])
        res, frames = self.extract_batch(x, lengths, out_dtype)
        res = res.cpu()
        return [res[b, :f].numpy().copy() for b, f in enumerate(frames)]


def frame_mask(frames: Sequence[int], t: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(B, t) True on each clip's first ``frames[b]`` frames."""
    return torch.arange(t, device=device)[None, :] < host_to_device(frames, device)[:, None]


def hop_of(strides: Sequence[int]) -> int:
    return math.prod(int(s) for s in strides)
