"""Features of new audio computed in memory by the code that fills the caches (never writing a cache).

SSL hidden states come from :class:`~wav2emo.backbones.family.Backbone` (the extraction path:
same backbone, normalisation, precision and batch-invariance patch, stored as float16 like the cache), log-mel
from the ``logmel`` kind's ``compute`` (its LogMelFrontend), eGeMAPS functionals from openSMILE through
:class:`~wav2emo.features.smile_api.SmileEngine` (openSMILE's C API, the values of ``opensmile.Smile.process_signal``,
as the cache's eGeMAPS) in this process, or with ``egemaps_workers`` >= 1 in worker processes
(:class:`~wav2emo.features.smile_waves.SmileWavePool`, same values) that compute a window's functionals while the
backbone runs (:meth:`InMemoryFeatures.submit_egemaps` queues them as soon as the window is read).
``wave`` is the audio itself, as ``Waveforms`` serves it.
Each item is what :class:`~wav2emo.feeding.input_strategies.ClipDataset` would give for a clip of that audio,
except that the hidden states stay where the backbone made them (views of its output, on the GPU when it runs
there): collate them with ``padded_device`` set to that device and they never travel to the host and back.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np
import torch

from wav2emo.backbones.running import resolve_device
from wav2emo.data.audio import TARGET_SAMPLE_RATE, resample
from wav2emo.errors import ConfigError
from wav2emo.features import make_kind

CACHED = ("ssl", "egemaps", "logmel")


def plain(x: Any) -> Any:
    """An OmegaConf node as plain Python (resolved); anything else unchanged."""
    if hasattr(x, "_metadata"):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(x, resolve=True)
    return x


def feature_key(features: Mapping[str, Any], inputs: Sequence[str], extra: Mapping[str, Any]) -> str:
    """What decides the numbers a model is fed: models with the same key share one computation (one backbone)."""
    needed = sorted({"ssl" if i == "ssl_layer" else i for i in inputs} & set(CACHED))
    return json.dumps({"inputs": sorted(inputs), "specs": {n: plain(features[n]) for n in needed}, **extra},
                      sort_keys=True, default=str)


class InMemoryFeatures:
    """Turns mono 16 kHz waveforms into the batch-dict items (``ssl``, ``ssl_layer``, ``egemaps``, ``logmel``,
    ``wave``) that a model's data module would serve from its caches (or its audio)."""

    def __init__(self, features: Mapping[str, Any], inputs: Sequence[str], *, device: str | torch.device = "auto",
                 ssl_layer_index: int | None = None, sample_rate: int = TARGET_SAMPLE_RATE,
                 egemaps_workers: int = 0, egemaps_nice: int = 0, load_backbone: bool = True) -> None:
        """``load_backbone=False`` starts eGeMAPS (its worker processes take windows at once) and leaves the
        backbone and log-mel front end to :meth:`load_backbone`, so that windows can be queued while they load.
        ``egemaps_nice``: the worker processes' priority below this one (``nice``; 0 = the same)."""
        self.inputs = tuple(inputs)
        self.device = resolve_device(device)
        self.ssl_layer_index = ssl_layer_index
        self.sample_rate = int(sample_rate)
        self._specs = {k: plain(v) for k, v in plain(features).items()}
        for name in self.inputs:
            spec_name = "ssl" if name == "ssl_layer" else name
            if spec_name in CACHED and not isinstance(self._specs.get(spec_name), Mapping):
                raise ConfigError(f"the model reads {name!r} but its config's features define only {sorted(self._specs)}")
        self.extractor = self.logmel = self.smile = self.smile_pool = None
        self.egemaps_workers, self.egemaps_nice = int(egemaps_workers), int(egemaps_nice)
        self.ssl_meta: dict[str, Any] = {}
        self.max_samples: int | None = None
        self._smile_min = 1
        self._loaded = False
        if "egemaps" in self.inputs:
            self._load_smile(self._specs["egemaps"])
        if load_backbone:
            self.load_backbone()

    def load_backbone(self) -> None:
        """Load the SSL backbone and the log-mel front end the inputs need (once)."""
        if self._loaded:
            return
        if "ssl" in self.inputs or "ssl_layer" in self.inputs:
            self._load_ssl(self._specs["ssl"])
        if "logmel" in self.inputs:
            self.logmel = make_kind(self._specs["logmel"])
        self._loaded = True

    def _load_ssl(self, spec: Mapping[str, Any]) -> None:
        kind = make_kind(spec, self.device)  # resolves the backbone (builds the tiny one; says how to get others)
        self.extractor = kind.load()  # the frozen Backbone extraction runs
        self.ssl_layers = kind._layers() or list(range(self.extractor.num_hidden_states))
        self.ssl_pooled = bool(kind.spec.get("time_pooled"))
        # What the cache's meta.json would say (top_k upstreams check that they continue this backbone).
        self.ssl_meta = {"name": kind.spec["name"], "key": "", "key_fields": kind.key_fields(),
                         "layer_indices": self.ssl_layers, "time_pooled": "mean_std" if self.ssl_pooled else None}
        limits = [round(float(kind.spec["max_clip_s"]) * TARGET_SAMPLE_RATE)] if kind.spec.get("max_clip_s") else []
        if self.extractor.max_clip_s is not None:  # the family's own window (Whisper: 30 s)
            limits.append(round(self.extractor.max_clip_s * TARGET_SAMPLE_RATE))
        self.max_samples = min(limits) if limits else None

    def _load_smile(self, spec: Mapping[str, Any]) -> None:
        from wav2emo.features.egemaps import MIN_CLIP_S, EgemapsError
        from wav2emo.features.smile_api import SmileApiError, SmileEngine

        if spec.get("kind") != "egemaps_functionals":
            raise ConfigError(f"predict computes eGeMAPS functionals only; the checkpoint's egemaps spec is {spec}")
        if self.egemaps_workers >= 1:  # started now: the workers load openSMILE while the backbone loads
            from wav2emo.features.smile_waves import SmileWavePool

            self.smile_pool = SmileWavePool(self.egemaps_workers, spec.get("feature_set", "eGeMAPSv02"), "functionals",
                                            nice=self.egemaps_nice)
        else:
            try:
                self.smile = SmileEngine(spec.get("feature_set", "eGeMAPSv02"), "functionals")
            except SmileApiError as e:
                raise EgemapsError(str(e)) from e
        self._smile_min = round(float(spec.get("min_clip_s", MIN_CLIP_S)) * TARGET_SAMPLE_RATE)

    def input_shape(self, name: str) -> tuple[int, ...]:
        """Per-frame shape, as :meth:`EmotionDataModule.input_shape` gives it for a cache."""
        if name == "ssl" and self.extractor is not None:
            return (len(self.ssl_layers), self.extractor.hidden_size * (2 if self.ssl_pooled else 1))
        if name == "logmel" and self.logmel is not None:
            return (int(self.logmel.spec["n_mels"]),)
        if name == "egemaps" and self.smile is not None:
            return (len(self.smile.feature_names),)
        if name == "egemaps" and self.smile_pool is not None:
            return (len(self.smile_pool.feature_names()),)
        raise ConfigError(f"no {name!r} features for inputs {list(self.inputs)}")

    def min_length(self) -> int:
        """The fewest 16 kHz samples every feature of this model can be computed from."""
        n = self._smile_min
        if self.extractor is not None:
            n = max(n, self.extractor.receptive_field)
        if self.logmel is not None and not self.logmel.spec["center"]:
            n = max(n, round(self.logmel.n_fft * TARGET_SAMPLE_RATE / int(self.logmel.spec["sample_rate"])))
        return n

    def submit_egemaps(self, wave: np.ndarray) -> Future | None:
        """Queue one waveform's eGeMAPS on the worker pool (None without a pool); pass it on to :meth:`items`."""
        if self.smile_pool is None:
            return None
        return self.smile_pool.submit(wave, TARGET_SAMPLE_RATE)

    def close(self) -> None:
        """Stop the eGeMAPS workers, if any."""
        if self.smile_pool is not None:
            self.smile_pool.close()

    def items(self, waves: Sequence[np.ndarray], egemaps: Sequence[Future | None] | None = None) -> list[dict[str, Any]]:
        """One batch-dict item per waveform (mono float32 at 16 kHz): what ``ClipDataset`` would give, the hidden
        states left on the backbone's device (collate with ``padded_device``).

        ``egemaps``: the futures :meth:`submit_egemaps` gave for these waves (else they are queued here, before
        the backbone runs, and collected after it)."""
        self.load_backbone()
        items: list[dict[str, Any]] = [{} for _ in waves]
        if self.smile_pool is not None and (egemaps is None or any(f is None for f in egemaps)):
            egemaps = [self.submit_egemaps(w) for w in waves]
        if self.extractor is not None:
            x, lengths = self.extractor.pad([self.extractor.prepare(w) for w in waves])
            res, frames = self.extractor.extract_batch(x, lengths, torch.float16, layers=self.ssl_layers)  # as cached
            if self.ssl_pooled:
                from wav2emo.features.ssl_layout import pool_time

                res, frames = pool_time(res, frames)
            if not torch.isfinite(res).all():
                raise ValueError("the backbone gave NaN/inf hidden states")
            for b, (it, f) in enumerate(zip(items, frames, strict=True)):
                h = res[b, :f]  # (T, H, D), as the cache holds it; a view on the backbone's device
                if "ssl" in self.inputs:
                    it["ssl"] = h.transpose(0, 1)  # (H, T, D): the featurizer picks layers
                if "ssl_layer" in self.inputs:
                    it["ssl_layer"] = h[:, self.ssl_layers.index(int(self.ssl_layer_index))]
            del res
        for it, w in zip(items, waves, strict=True):
            if self.logmel is not None:
                sr = int(self.logmel.spec["sample_rate"])
                it["logmel"] = torch.from_numpy(self.logmel.compute(resample(w, TARGET_SAMPLE_RATE, sr)))
            if self.smile is not None:
                values = self.smile.process(w, TARGET_SAMPLE_RATE)[0]
                it["egemaps"] = finite_egemaps(values)
            if "wave" in self.inputs:
                wave = w if self.sample_rate == TARGET_SAMPLE_RATE else resample(w, TARGET_SAMPLE_RATE, self.sample_rate)
                it["wave"] = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
        if self.smile_pool is not None:
            for it, future in zip(items, egemaps, strict=True):
                it["egemaps"] = finite_egemaps(future.result()[0])
        return items


def finite_egemaps(values: np.ndarray) -> torch.Tensor:
    if not np.isfinite(values).all():
        raise ValueError("openSMILE gave NaN/inf eGeMAPS functionals (too short or unusual audio?)")
    return torch.from_numpy(np.array(values, dtype=np.float32))  # a copy: the pool's arrays are read-only
