"""The feature kind ``ssl_hidden_states``: the hidden states of a frozen backbone of any registered family, float16,
per frame.

It checks the clips, names the cache (backbone identity, normalisation, precision), and builds it with
:func:`wav2emo.features.pipeline.extract_to_builder` around the loaded
:class:`wav2emo.backbones.family.Backbone` (the same object fine-tuning runs).  Batch planning lives in
:mod:`wav2emo.features.extraction_batches`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from wav2emo.backbones import (
    DEFAULT_BACKBONE,
    Backbone,
    BackboneError,
    ExtractionError,
    backbone_identity,
    effective_precision,
    load_backbone,
    preprocessor_settings,
    resolve_device,
    source_of,
)
from wav2emo.data.audio import load_audio
from wav2emo.data.manifest import Manifest
from wav2emo.features.cache.format import DEFAULT_SHARD_BYTES
from wav2emo.features.cache.writer import CacheBuilder
from wav2emo.features.extraction_batches import expected_samples
from wav2emo.features.limits import ClipDurationError, check_durations
from wav2emo.features.pipeline import extract_to_builder
from wav2emo.features.ssl_layout import check_layers, pool_time

__all__ = ["SSL_DEFAULTS", "ClipLengthError", "SSLHiddenStates", "check_layers", "expected_samples", "pool_time"]
log = logging.getLogger(__name__)


class ClipLengthError(ExtractionError, ClipDurationError):
    """Clips too short or too long for the backbone, found from the manifest before extraction starts."""


# The feature kind -------------------------------------------------------------------------------------------
SSL_DEFAULTS: dict[str, Any] = {
    "kind": "ssl_hidden_states",
    "name": None,
    "backbone": DEFAULT_BACKBONE,
    "revision": "main",
    "build_tiny": False,
    "tiny_seed": 0,
    "tiny_family": "wav2vec2",  # the family of the tiny random model build_tiny writes
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
    "layers": None,  # None = every hidden state 0..N; a list = only these (absolute indices) are stored
    "time_pooled": False,  # true: per clip and layer the mean and std over its frames (1 row of 2 x width)
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
        self.source = source_of(
            self.spec["backbone"],
            revision=self.spec["revision"],
            build_tiny_model=bool(self.spec["build_tiny"]),
            tiny_seed=int(self.spec["tiny_seed"]),
            tiny_family=str(self.spec["tiny_family"]),
        )

    def check_clips(self, manifest: Manifest, backbone: Backbone | None = None) -> None:
        """Refuse clips shorter than the receptive field or longer than ``max_clip_s`` (and than the family's
        own window, Whisper's 30 s, once the ``backbone`` is known), before anything is computed."""
        max_s = self.spec["max_clip_s"]
        key = "features.ssl.max_clip_s"
        what = f"the hidden states of feature spec {self.spec['name']!r}"
        if backbone is not None and backbone.max_clip_s is not None and (max_s is None or max_s > backbone.max_clip_s):
            max_s, key = backbone.max_clip_s, None
            what += f" (the {backbone.family} backbone's window)"
        field = 400 if backbone is None else backbone.receptive_field
        sr = 16000 if backbone is None else backbone.sampling_rate
        front = "the backbone's front end" if backbone is None else f"the {backbone.family} backbone"
        check_durations(
            manifest, what=what, min_s=field / sr,
            min_reason=f"the receptive field ({field} samples at {sr} Hz) of {front}",
            error=ClipLengthError,
            max_s=None if max_s is None else float(max_s), max_key=key,
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

    def _layers(self) -> list[int] | None:
        layers = self.spec["layers"]
        if layers is None or layers == "all":
            return None
        return sorted([layers] if isinstance(layers, int) else [int(v) for v in layers])

    def key_fields(self) -> dict[str, Any]:
        """What changes the numbers: the weights, normalisation, compute precision, the stored layers and the
        pooling (not batch size)."""
        layers = self._layers()
        fields = {
            "backbone": backbone_identity(self.source),
            "normalize": self._normalize(),
            "precision": self.precision,
            "storage_dtype": self.storage_dtype,
            "hidden_states": "all" if layers is None else layers,
        }
        if self.spec["time_pooled"]:  # absent otherwise: keys of caches written before stay as they were
            fields["time_pooled"] = "mean_std"
        return fields

    def estimate_bytes(self, backbone: Backbone, frames: list[int]) -> tuple[int, str]:
        """The cache's size and how it adds up, before anything is extracted."""
        n_states = len(self._layers() or range(backbone.num_hidden_states))
        width = backbone.hidden_size * (2 if self.spec["time_pooled"] else 1)
        rows = len(frames) if self.spec["time_pooled"] else int(sum(frames))
        need = rows * n_states * width * 2
        what = "clips (time-pooled)" if self.spec["time_pooled"] else "frames"
        return need, f"{rows:,} {what} x {n_states} hidden states x {width} x 2 bytes = {need / 1e9:.2f} GB"

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

    def check_disk(self, path: Path, need: int, sizes: str) -> None:
        """Say the cache's size before extracting; refuse with the numbers when the disk cannot hold it."""
        free = _free_bytes(path)
        log.info("feature cache %r: %s (%.2f GB free at %s)", self.spec["name"], sizes, free / 1e9, path)
        if need > free:
            raise ExtractionError(
                f"feature cache {self.spec['name']!r} needs {sizes} but only {free / 1e9:.2f} GB are free at {path}; "
                "store fewer hidden states (features.ssl.layers=[...]), their time statistics "
                "(features.ssl.time_pooled=true), or point paths.cache_dir at a larger disk. Nothing was written"
            )

    def load(self) -> Backbone:
        """The frozen backbone this spec extracts with (also what predict runs)."""
        return load_backbone(self.source, device=self.device, normalize=self._normalize(), precision=self.precision)

    def build(self, manifest: Manifest, path: Path, base_meta: Mapping[str, Any], *, progress: bool = True) -> dict:
        self.check_clips(manifest)
        t0 = time.perf_counter()
        import transformers.modeling_utils  # noqa: F401 - timed apart: importing it dominates a cold load

        import_s = time.perf_counter() - t0
        backbone = self.load()
        self.check_clips(manifest, backbone)
        load_s = time.perf_counter() - t0
        sr = backbone.sampling_rate
        samples = [expected_samples(c, sr) for c in manifest]
        frames = [backbone.num_frames(n) for n in samples]
        short = [manifest[i].clip_id for i, f in enumerate(frames) if f < 1]
        if short:
            raise ExtractionError(
                f"clips {short[:5]} are shorter than the backbone's receptive field ({backbone.receptive_field} "
                f"samples at {sr} Hz); expected longer audio"
            )
        layers = check_layers(self.spec["layers"], backbone.num_hidden_states, f"feature spec {self.spec['name']!r}")
        need, sizes = self.estimate_bytes(backbone, frames)
        self.check_disk(path, need, sizes)
        chosen = layers or list(range(backbone.num_hidden_states))
        pooled = bool(self.spec["time_pooled"])
        order = sorted(range(len(manifest)), key=lambda i: (-samples[i], i))  # long first: least padding
        builder = CacheBuilder(
            path,
            clip_ids=manifest.clip_ids,
            sha1s=[c.sha1 for c in manifest],
            lengths=[1] * len(frames) if pooled else frames,
            feature_shape=(len(chosen), backbone.hidden_size * (2 if pooled else 1)),
            dtype=self.storage_dtype,
            order=order,
            shard_bytes=int(float(self.spec["shard_mb"]) * 2**20),
            durable=bool(self.spec["durable"]),
        )
        builder.check_free_space()
        timings = extract_to_builder(
            backbone,
            builder,
            [c.path for c in manifest],
            samples,
            batch_size=int(self.spec["batch_size"]),
            num_workers=int(self.spec["num_workers"]),
            writer_threads=int(self.spec["writer_threads"]),
            length_bucket_s=float(self.spec["length_bucket_s"] or 0.0),
            max_batch_s=None if self.spec["max_batch_s"] is None else float(self.spec["max_batch_s"]),
            progress=progress,
            load=load_audio,
            layers=layers,
            reduce=pool_time if pooled else None,
        )
        meta = {
            **base_meta,
            "frame_rate": backbone.frame_rate,
            "frame_shift_s": backbone.hop / sr,
            "receptive_field_samples": backbone.receptive_field,
            "sample_rate": sr,
            "layer_names": [backbone.layer_names[i] for i in chosen],
            "layer_indices": chosen,
            "time_pooled": "mean_std" if pooled else None,
            "estimated_bytes": need,
            "backbone": {
                **backbone.info,
                **backbone.describe(),
                "normalize": backbone.do_normalize,
                "hidden_size": backbone.hidden_size,
                "num_hidden_states": backbone.num_hidden_states,
                "feat_extract_norm": getattr(backbone.config, "feat_extract_norm", None),
                "batch_invariant_norms": [i for i, _ in getattr(getattr(backbone, "invariance", None), "norms", [])],
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


def _free_bytes(path: Path) -> int:
    import shutil

    existing = Path(path)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return shutil.disk_usage(existing).free


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)
