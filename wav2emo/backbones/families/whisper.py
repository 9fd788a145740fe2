"""Whisper's encoder (tiny .. large-v3): log-mel front end of its own feature extractor, two convs, fixed
sinusoidal positions, a pre-norm transformer and a final layer norm.

Whisper is trained on 30 s windows (1500 frames).  Two ways to run a shorter clip: pad each clip alone to
30 s (what transcription does) or shorten the positional embeddings to the clip's own frames.  wav2emo
shortens them, because:

- top-k fine-tuning continues the cached hidden state N-k.  With 30 s padding, the frames after the clip
  (silence) are attended to in every layer, so layer N-k+1 would need their hidden states too: 1500 frames a
  clip (3.8 MB per layer per clip in fp16 for large-v3) instead of the clip's own ~190 (RAVDESS).  With
  shortened positions, the clip's own frames are all the encoder sees, so top_k from the cache reproduces the
  forward exactly, as for every other family;
- cost grows with the clip, not with 30 s: 8x less compute for RAVDESS's 3.7 s clips, in extraction and fine-tuning;
- the positions are sinusoidal and fixed: frame t gets exactly the embedding it gets in a 30 s window;
- batch invariance then works like the other families: each clip's log-mel is computed as Whisper's feature
  extractor computes it for the clip padded to 30 s (same per-clip maximum, zeros after the clip), the
  padded frames are zeroed before each conv (as the conv's own zero padding does for the clip alone) and
  masked in attention.

The price: the encoder never attended over fewer than 1500 positions in pretraining, so features of a short
clip differ from those of the same clip padded to 30 s (published Whisper SER numbers, e.g. EmoBox's, may use
padding).  Clips over 30 s are refused (the positions end there).  Hidden state N is the final layer norm's
output, as transformers' ``output_hidden_states`` gives it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from wav2emo.backbones.family import Backbone, frame_mask
from wav2emo.backbones.registry import register_family
from wav2emo.backbones.source import BackboneError


@register_family
class WhisperEncoderBackbone(Backbone):
    family = "whisper"
    model_types = ("whisper",)
    needs_preprocessor = True  # the log-mel (n_mels, n_fft, hop) is defined by preprocessor_config.json
    max_clip_s = 30.0
    # SpecAugment of Whisper lives in WhisperModel.forward (the decoder side), which the encoder never runs.
    switch_attrs = {"layerdrop": "encoder_layerdrop"}
    layer_prefix = "layers."
    front_end_prefixes = ("conv1.", "conv2.")
    cache_advice = "large-v3 keeps 33 states of width 1280: store a layer subset or the time-pooled kind"

    def setup(self) -> None:
        from transformers import WhisperFeatureExtractor

        p = self.preprocessor
        fields = {k: p[k] for k in ("feature_size", "sampling_rate", "hop_length", "chunk_length", "n_fft") if k in p}
        fe = WhisperFeatureExtractor(**fields)
        n_mels = int(getattr(self.config, "num_mel_bins", fe.feature_size))
        if fe.feature_size != n_mels:
            raise BackboneError(
                f"{self.source.describe()}: preprocessor_config.json has feature_size={fe.feature_size} mel bins but "
                f"the model's num_mel_bins={n_mels}; expected the feature extractor of this checkpoint"
            )
        self.n_fft, self.mel_hop, self.window_samples = int(fe.n_fft), int(fe.hop_length), int(fe.n_samples)
        self.mel_filters = torch.from_numpy(fe.mel_filters).float()  # (n_freq, n_mels)
        self.window = torch.hann_window(self.n_fft)
        self.model.layerdrop = float(getattr(self.config, "encoder_layerdrop", 0.0) or 0.0)
        self._front_end = nn.ModuleList([self.model.conv1, self.model.conv2])  # a view: the model owns the convs

    # Loading: only the encoder is kept --------------------------------------------------------------
    @classmethod
    def load_model(cls, where: str, config: Any, **common: Any) -> nn.Module:
        from transformers import WhisperModel

        return WhisperModel.from_pretrained(where, config=config, dtype=torch.float32, **common,
                                            trust_remote_code=False).get_encoder()

    @classmethod
    def model_from_config(cls, config: Any) -> nn.Module:
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        return WhisperEncoder(config)

    @classmethod
    def tiny_config(cls, stable: bool = False, **overrides: Any) -> Any:
        from transformers import WhisperConfig

        kw = dict(d_model=32, encoder_layers=3, encoder_attention_heads=2, encoder_ffn_dim=64, decoder_layers=1,
                  decoder_attention_heads=2, decoder_ffn_dim=64, num_mel_bins=80, max_source_positions=1500,
                  vocab_size=51865)
        return WhisperConfig(**{**kw, **overrides})

    def set_switches(self, switches: Any) -> None:
        super().set_switches(switches)
        self.model.layerdrop = float(self.config.encoder_layerdrop)  # WhisperEncoder reads it at build time

    # Facts -------------------------------------------------------------------------------------------
    @property
    def hidden_size(self) -> int:
        return int(self.config.d_model)

    @property
    def hop(self) -> int:
        return 2 * self.mel_hop  # conv2 has stride 2: 50 frames a second

    @property
    def receptive_field(self) -> int:
        return self.n_fft

    def mel_frames(self, num_samples: int) -> int:
        return int(num_samples) // self.mel_hop if num_samples >= self.n_fft else 0

    def num_frames(self, num_samples: int) -> int:
        return (self.mel_frames(num_samples) + 1) // 2

    def layers(self) -> nn.ModuleList:
        return self.model.layers

    def front_end(self) -> nn.Module:
        return self._front_end

    def full_prefixes(self, masking: bool) -> tuple[str, ...]:
        return ("layers.", "layer_norm.")

    def trained_prefixes(self, mode: str, k: int, freeze_front_end: bool, masking: bool) -> tuple[str, ...]:
        prefixes = super().trained_prefixes(mode, k, freeze_front_end, masking)
        # hidden state N is layer N's output after the final norm: top_k trains that norm with layer N
        return prefixes + ("layer_norm.",) if mode == "top_k" else prefixes

    # Running -----------------------------------------------------------------------------------------
    def log_mel(self, x: torch.Tensor, lengths: Sequence[int]) -> torch.Tensor:
        """(B, S) zero-padded waves -> (B, n_mels, M) log-mel, each clip's frames as WhisperFeatureExtractor gives
        them for the clip padded alone to 30 s; frames past a clip's own are 0."""
        width = x.shape[1]
        # Zeros after every clip, as in its 30 s window: up to n_fft of them, or to the window's end, where the
        # feature extractor's STFT reflects (exactly what it gives a clip of up to 30 s).
        x = F.pad(x.float(), (0, max(0, min(width + self.n_fft, self.window_samples) - width)))
        window = self.window.to(x.device)
        stft = torch.stft(x, self.n_fft, self.mel_hop, window=window, return_complex=True)
        power = (stft[..., :-1].abs() ** 2).contiguous()
        mel = self.mel_filters.to(x.device).T @ power
        log_spec = torch.clamp(mel, min=1e-10).log10()
        peak = log_spec.amax(dim=(1, 2), keepdim=True)
        log_spec = (torch.maximum(log_spec, peak - 8.0) + 4.0) / 4.0
        m = max(self.mel_frames(width), 1)
        mels = [self.mel_frames(int(n)) for n in lengths]
        return log_spec[..., :m] * frame_mask(mels, m, x.device)[:, None, :].to(log_spec.dtype)

    def hidden_states(self, x: torch.Tensor, lengths: Sequence[int]) -> list[torch.Tensor]:
        enc = self.model
        mels = [self.mel_frames(int(n)) for n in lengths]
        with torch.autocast(x.device.type, enabled=False):  # the log-mel in float32, as the feature extractor
            feats = self.log_mel(x, lengths)
        feats = feats.to(enc.conv1.weight.dtype)
        m = feats.shape[-1]
        h = F.gelu(enc.conv1(feats)) * frame_mask(mels, m, x.device)[:, None, :]  # conv2's zero padding, per clip
        h = F.gelu(enc.conv2(h)).permute(0, 2, 1)
        t = h.shape[1]
        if t > enc.embed_positions.num_embeddings:
            raise BackboneError(f"{t} frames exceed Whisper's {enc.embed_positions.num_embeddings} positions (30 s)")
        h = h + enc.embed_positions.weight[:t]
        h = F.dropout(h, p=enc.dropout, training=enc.training)
        frames = [self.num_frames(int(n)) for n in lengths]
        return [h, *self.run_layers(h, frame_mask(frames, t, x.device), 0, self.num_layers)]

    def run_layers(self, hidden: torch.Tensor, mask: torch.Tensor | None, start: int, stop: int) -> list[torch.Tensor]:
        layers = self.layers()
        n = len(layers)
        if not (0 <= start < stop <= n):
            raise BackboneError(f"run_layers: layers {start + 1}..{stop} requested; expected 0 <= start < stop <= N={n}")
        attention_mask = None
        if mask is not None:
            from transformers.masking_utils import create_bidirectional_mask

            mask = mask.to(device=hidden.device, dtype=torch.bool)
            attention_mask = create_bidirectional_mask(config=self.config, inputs_embeds=hidden, attention_mask=mask)
        layerdrop = float(getattr(self.model, "layerdrop", 0.0) or 0.0)
        outputs: list[torch.Tensor] = []
        for i in range(start, stop):
            layer = layers[i]
            if not (layerdrop > 0.0 and layer.training and bool(torch.rand([]) < layerdrop)):
                hidden = layer(hidden, attention_mask)
                if isinstance(hidden, tuple):
                    hidden = hidden[0]
            outputs.append(hidden)
        if stop == n:
            outputs[-1] = self.model.layer_norm(outputs[-1])
        return outputs
