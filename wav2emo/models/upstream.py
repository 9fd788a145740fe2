"""The SSL upstream of a model: a frozen, top-k fine-tuned or fully fine-tuned backbone (s3prl's upstream).

``forward(batch) -> batch`` puts every hidden state, ``ssl`` (B, N+1, T, D) with ``ssl_mask`` (B, T), into a
new batch dict, so the featurizer and the head downstream read the same thing whether it came from the
cache or from the waveform:

- ``frozen``: from ``wave``/``wave_lengths``, eval mode, no gradients (online augmentation with a frozen backbone).
- ``top_k``: from the cached ``ssl``; reruns the top k transformer layers on hidden state N-k with trainable
  weights and replaces hidden states N-k+1..N.  The lower layers and the CNN are never run, no audio is read.
- ``full``: from ``wave``; every transformer layer trains, the front end (wav2vec2's CNN, Whisper's convs)
  stays frozen unless ``freeze_feature_encoder=False``.  Batch invariance as in extraction: the family's own
  rule (:meth:`wav2emo.backbones.family.Backbone.hidden_states`), so any padding gives each clip the hidden
  states extraction stores (no length buckets needed).

Every family runs through its :class:`~wav2emo.backbones.family.Backbone` (the object extraction uses too):
what trains, the layer ranges of top_k and the front end all come from it.

Checkpoints: the module's ``state_dict`` holds only the trained part (top_k: the top k layers) and the
backbone's identity (``_extra_state``); loading checks that identity against the backbone it was built from,
so a checkpoint never silently meets other frozen weights.  :func:`rebuild_upstream` builds the exact model
from :meth:`SSLUpstream.identity` and :meth:`SSLUpstream.trained_state_dict`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from wav2emo.backbones import (
    DEFAULT_BACKBONE,
    Backbone,
    BackboneError,
    ExtractionError,
    load_backbone,
    source_of,
    train_switches,
)
from wav2emo.backbones.family import frame_mask
from wav2emo.backbones.fixed_shapes import conv_autotune, pad_to_bucket
from wav2emo.backbones.switches import masking as asks_masking

MODES = ("frozen", "top_k", "full")


def _check_k(mode: str, k: int | None, n: int, what: str) -> int:
    if mode == "frozen":
        return 0
    if mode == "full":
        if k not in (None, n):
            raise BackboneError(f"finetune.k={k} with mode full: full fine-tuning trains all N={n} layers; leave k unset")
        return n
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
        raise BackboneError(f"finetune.k={k!r}: expected an integer in 1..N, N={n} transformer layers of {what}")
    return k


class SSLUpstream(nn.Module):
    """A backbone in one of :data:`MODES`; see the module docstring.  Build with :func:`build_upstream`."""

    def __init__(
        self,
        backbone: Backbone,
        *,
        mode: str = "top_k",
        k: int | None = None,
        freeze_feature_encoder: bool = True,
        gradient_checkpointing: bool = False,
        switches: Mapping[str, Any] | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise BackboneError(f"finetune mode {mode!r}: expected one of {MODES}")
        self.model = backbone.model
        self.backbone = backbone
        self.num_layers = backbone.num_layers
        self.mode = mode
        self.k = _check_k(mode, k, self.num_layers, backbone.source.describe())
        self.do_normalize = backbone.do_normalize
        self.switches = train_switches(switches)
        masking = asks_masking(self.switches)
        if mode == "top_k" and masking:
            raise BackboneError(
                "finetune top_k with apply_spec_augment and mask_time_prob/mask_feature_prob > 0: Hugging Face masks "
                "the CNN features, which top_k never computes (it starts from a cached hidden state); use augment=spec "
                "or finetune=full"
            )
        backbone.set_switches(self.switches)
        self.freeze_feature_encoder = bool(freeze_feature_encoder)
        self.gradient_checkpointing = bool(gradient_checkpointing)
        self._identity = {
            "backbone": dict(backbone.identity),
            **dict(settings or {}),
            "normalize": self.do_normalize,
            "model_type": getattr(self.model.config, "model_type", None),
            "num_layers": self.num_layers,
            "hidden_size": backbone.hidden_size,
            "mode": mode,
            "k": self.k,
            "freeze_feature_encoder": self.freeze_feature_encoder,
            "switches": dict(self.switches),
        }
        self._prefixes = backbone.trained_prefixes(mode, self.k, self.freeze_feature_encoder, masking)
        self.model.requires_grad_(False)
        for name, p in self.model.named_parameters():
            p.requires_grad_(self.is_trained(name))
        if self.gradient_checkpointing and mode != "frozen":
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            # A checkpointed layer runs twice (forward, then again in backward). On a GPU scaled-dot-product
            # attention chose another kernel the second time for wav2vec2, HuBERT, data2vec-audio and Whisper
            # (other saved tensors: torch refused the backward, measured on an H100); eager attention computes
            # the same way both times. WavLM has its own attention either way.
            if getattr(self.model.config, "_attn_implementation", "eager") != "eager":
                self.model.set_attn_implementation("eager")
        self.register_state_dict_post_hook(_drop_untrained)
        self.register_load_state_dict_pre_hook(_fill_untrained)
        self.train(self.training)

    # What trains --------------------------------------------------------------------------------------
    @property
    def hidden_states_shape(self) -> tuple[int, int]:
        """(hidden states H, width D) of the ``ssl`` this stage hands on: every layer and the CNN's projection."""
        return self.num_layers + 1, int(self.backbone.hidden_size)

    def is_trained(self, name: str) -> bool:
        """Whether backbone parameter ``name`` (relative to the HF model) is trained in this mode."""
        return name.startswith(self._prefixes) if self._prefixes else False

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Trained parameters by depth (0 = top layer) for layer-wise lr decay; frozen ones never appear."""
        groups: dict[int, dict[str, Any]] = {}
        for name, p in self.model.named_parameters():
            if not self.is_trained(name):
                continue
            depth, group = self.backbone.depth(name)
            g = groups.setdefault(depth, {"name": group, "depth": depth, "params": [], "param_names": []})
            g["params"].append(p)
            g["param_names"].append(name)
        return [groups[d] for d in sorted(groups)]

    def train(self, mode: bool = True) -> SSLUpstream:
        """Frozen parts stay in eval mode whatever the trainer asks (no dropout, no layerdrop there)."""
        super().train(mode)
        if self.mode == "top_k":
            self.model.eval()
            layers = self.backbone.layers()
            for i in range(self.num_layers - self.k, self.num_layers):
                layers[i].train(mode)
        elif self.mode == "frozen":
            self.model.eval()
        elif self.freeze_feature_encoder and self.backbone.front_end() is not None:
            self.backbone.front_end().eval()
        return self

    # Checkpoints ------------------------------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        """What rebuilds this model: backbone identity and source, normalisation, mode, k, switches."""
        return {key: (dict(v) if isinstance(v, dict) else v) for key, v in self._identity.items()}

    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        """Only the trained part (top_k: the top k layers), keys relative to the HF model, on the CPU."""
        return {
            name: t.detach().cpu().clone() for name, t in self.model.state_dict().items() if self.is_trained(name)
        }

    def get_extra_state(self) -> dict[str, Any]:
        return {"identity": self.identity()}

    def set_extra_state(self, state: Any) -> None:
        saved = dict(state.get("identity", {})) if isinstance(state, Mapping) else {}
        mine = self.identity()
        keys = ("backbone", "normalize", "model_type", "num_layers", "mode", "k", "freeze_feature_encoder")
        diff = {key: (saved.get(key), mine.get(key)) for key in keys if saved.get(key) != mine.get(key)}
        if diff:
            raise BackboneError(
                "this checkpoint's SSL upstream was trained on another backbone or setting: "
                + "; ".join(f"{key}: checkpoint {a!r}, here {b!r}" for key, (a, b) in diff.items())
                + ". Rebuild it with wav2emo.models.upstream.rebuild_upstream from the checkpoint's identity"
            )

    def check_cache(self, meta: Mapping[str, Any]) -> None:
        """Refuse a feature cache (its meta.json) made by another backbone or normalisation than this upstream:
        top_k would run these layers on hidden states they were never trained to follow."""
        fields = meta.get("key_fields", {})
        mine = self.identity()
        if fields.get("hidden_states", "all") != "all" or fields.get("time_pooled"):
            raise BackboneError(
                f"feature cache {meta.get('name')!r} stores {'time statistics' if fields.get('time_pooled') else 'hidden states ' + str(fields.get('hidden_states'))}"
                f"; finetune top_k continues hidden state N-k frame by frame and needs them all: extract with "
                "features.ssl.layers=null features.ssl.time_pooled=false"
            )
        for key in ("backbone", "normalize"):
            if key in fields and fields[key] != mine[key]:
                raise BackboneError(
                    f"feature cache {meta.get('name')!r} ({meta.get('key', '')[:16]}...) has {key} {fields[key]!r}, "
                    f"but the SSL upstream has {mine[key]!r}; use the features spec of the same backbone"
                )

    # Forward ----------------------------------------------------------------------------------------
    def forward(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        with attention_backends(next(iter(self.model.parameters())).device):
            return self._forward(batch)

    def _forward(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(batch)
        if self.mode == "top_k":
            out["ssl"], out["ssl_mask"] = self._top_k(batch)
        elif self.mode == "frozen":
            with torch.no_grad():
                out["ssl"], out["ssl_mask"] = self._from_wave(batch)
        else:
            out["ssl"], out["ssl_mask"] = self._from_wave(batch)
        return out

    def _top_k(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        if "ssl" not in batch or "ssl_mask" not in batch:
            raise BackboneError(f"finetune top_k reads the cached `ssl` and `ssl_mask`; the batch has {sorted(batch)}")
        ssl, mask = batch["ssl"], batch["ssl_mask"].bool()
        n = self.num_layers
        width = self.backbone.hidden_size
        if ssl.dim() != 4 or ssl.shape[1] != n + 1 or ssl.shape[-1] != width:
            raise BackboneError(
                f"finetune top_k: cached ssl of shape {tuple(ssl.shape)}; expected (B, {n + 1}, T, "
                f"{width}): every hidden state of this backbone (is the cache from another one?)"
            )
        start = n - self.k
        dtype = next(self.backbone.layers()[start].parameters()).dtype
        tops = self.backbone.run_layers(ssl[:, start].to(dtype), mask, start, n)
        top = torch.stack(tops, dim=1) * mask[:, None, :, None].to(dtype)
        return torch.cat([ssl[:, : start + 1].to(dtype), top], dim=1), mask

    def _from_wave(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        if "wave" not in batch or "wave_lengths" not in batch:
            raise BackboneError(f"finetune {self.mode} reads `wave` and `wave_lengths`; the batch has {sorted(batch)}")
        wave, lengths = batch["wave"], batch["wave_lengths"].to(batch["wave"].device)
        samples = lengths.tolist()  # read back from the device once per step
        if wave.dim() != 2 or lengths.shape != wave.shape[:1] or max(samples) > wave.shape[1]:
            raise BackboneError(f"wave {tuple(wave.shape)} with lengths {tuple(lengths.shape)}: expected (B, S) and (B,)")
        x = self.backbone.prepare_batch(wave, lengths)
        try:
            frames = self.backbone.check_lengths(samples)
        except ExtractionError as e:  # the same one line, as a backbone error here
            raise BackboneError(str(e)) from None
        t = None
        if getattr(self.backbone, "invariance", None) is not None:  # padding cannot change a clip's frames
            t = self.backbone.num_frames(x.shape[1])  # frames of the unpadded batch, cut back to after the model
            x = pad_to_bucket(x, self.backbone.sampling_rate)
        with conv_autotune(x.device):
            states = self.backbone.hidden_states(x, samples)
        hidden = torch.stack([h[:, :t] for h in states], dim=1)
        mask = frame_mask(frames, hidden.shape[2], wave.device)
        return hidden * mask[:, None, :, None].to(hidden.dtype), mask


def last_ssl_stage(upstream: nn.Module | None) -> SSLUpstream | None:
    """The last :class:`SSLUpstream` of an upstream (one stage, or an ``UpstreamChain``'s ``stages``); None
    without one."""
    stages = list(getattr(upstream, "stages", [upstream])) if upstream is not None else []
    return next((s for s in reversed(stages) if isinstance(s, SSLUpstream)), None)


def attention_backends(device: torch.device):
    """On a GPU, scaled-dot-product attention without PyTorch's cuDNN backend.

    With a padding mask in bf16, PyTorch picks cuDNN attention, whose every call costs ~2.4 ms of host time
    (a wav2vec2-base step with 12 layers spent more host time there than in any other operator:
    benchmarks/profile_finetune.py). The memory-efficient kernel takes the same masks and inputs; values
    agree to the kernels' rounding. Elsewhere (CPU) the default choice stands.
    """
    from contextlib import nullcontext

    if device.type != "cuda":
        return nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


def _drop_untrained(module: SSLUpstream, state: dict, prefix: str, local_metadata: Any) -> None:
    """Checkpoints carry only what trained: the frozen rest comes from the backbone named by the identity."""
    head = prefix + "model."
    for key in [k for k in state if k.startswith(head)]:
        if not module.is_trained(key[len(head):]):
            del state[key]


def _fill_untrained(module: SSLUpstream, state: dict, prefix: str, *args: Any) -> None:
    """Loading such a checkpoint strictly: the frozen part, absent on purpose, keeps the backbone's weights."""
    head = prefix + "model."
    for name, t in module.model.state_dict().items():
        if not module.is_trained(name) and head + name not in state:
            state[head + name] = t


def build_upstream(
    backbone: str = DEFAULT_BACKBONE,
    *,
    mode: str = "top_k",
    k: int | None = None,
    revision: str | None = "main",
    build_tiny: bool = False,
    tiny_seed: int = 0,
    tiny_family: str = "wav2vec2",
    normalize: bool | None = None,
    freeze_feature_encoder: bool = True,
    gradient_checkpointing: bool = False,
    switches: Mapping[str, Any] | None = None,
    device: str | torch.device = "cpu",
) -> SSLUpstream:
    """Load the backbone (hub id or folder, as in a ``conf/features`` ssl spec) and wrap it in ``mode``."""
    source = source_of(backbone, revision=revision, build_tiny_model=build_tiny, tiny_seed=tiny_seed,
                       tiny_family=tiny_family)
    loaded = load_backbone(source, device=device, normalize=normalize, trainable=mode != "frozen", switches=switches)
    settings = {"ref": source.ref, "revision": revision, "build_tiny": bool(build_tiny), "tiny_seed": int(tiny_seed)}
    if tiny_family != "wav2vec2":  # only then: identities of checkpoints written before stay as they were
        settings["tiny_family"] = tiny_family
    return SSLUpstream(
        loaded, mode=mode, k=k, freeze_feature_encoder=freeze_feature_encoder,
        gradient_checkpointing=gradient_checkpointing, switches=switches, settings=settings,
    )


def rebuild_upstream(
    identity: Mapping[str, Any], trained_state: Mapping[str, torch.Tensor], *, device: str | torch.device = "cpu",
    gradient_checkpointing: bool = False,
) -> SSLUpstream:
    """The exact upstream a checkpoint was trained with, from its identity and trained state.

    A hub backbone is loaded at the recorded commit; a folder must still hash to the recorded weights (a
    retrained or replaced folder is an error, not a silently different model).
    """
    if "ref" not in identity:
        raise BackboneError(f"upstream identity {dict(identity)}: no backbone `ref`; it was not built by build_upstream")
    recorded = dict(identity["backbone"])
    revision = recorded.get("commit") or identity.get("revision")
    up = build_upstream(
        identity["ref"], mode=identity["mode"], k=identity["k"], revision=revision,
        build_tiny=bool(identity.get("build_tiny")), tiny_seed=int(identity.get("tiny_seed", 0)),
        tiny_family=str(identity.get("tiny_family", "wav2vec2")),
        normalize=identity["normalize"], freeze_feature_encoder=identity["freeze_feature_encoder"],
        gradient_checkpointing=gradient_checkpointing, switches=identity.get("switches"), device=device,
    )
    found = up.identity()["backbone"]
    if found != recorded:
        raise BackboneError(
            f"backbone {identity['ref']!r} is not the one this upstream was trained on: recorded {recorded}, "
            f"found {found}; restore those weights (or the hub commit) to rebuild it"
        )
    expected = {name for name, _ in up.model.state_dict().items() if up.is_trained(name)}
    if set(trained_state) != expected:
        missing, extra = sorted(expected - set(trained_state)), sorted(set(trained_state) - expected)
        raise BackboneError(
            f"trained state does not fit mode {identity['mode']} k={identity['k']}: missing {missing[:3]}, "
            f"unexpected {extra[:3]}"
        )
    up.model.load_state_dict(dict(trained_state), strict=False)
    return up
