"""Running transformer layers i..j of a backbone on a given hidden state (top-k fine-tuning from the cache).

What each family's hidden states are (transformers 5, ``output_hidden_states=True``): ``hidden_states[0]`` is
the input of the first transformer layer and ``hidden_states[i]`` the output of layer ``i``, recorded by
forward hooks on the layers.  So ``hidden_states[i]`` is exactly what layer ``i + 1`` consumes, and running
layers ``start+1..stop`` on ``hidden_states[start]`` reproduces ``hidden_states[start+1..stop]``:

- wav2vec2-base / HuBERT-base / WavLM-base / data2vec-audio ("post-norm"): ``hidden_states[0]`` is after the
  positional conv, the encoder's layer norm and dropout; every layer ends with its own layer norm.
- wav2vec2-large / XLSR / HuBERT-large / WavLM-large (``do_stable_layer_norm``): ``hidden_states[0]`` is after
  the positional conv and dropout, with no norm; the encoder's final layer norm is applied to
  ``last_hidden_state`` only, never to ``hidden_states[N]`` (see :func:`final_layer_norm`).
- WavLM: layer 1 alone owns the relative position embedding; the position bias it computes from the
  sequence length is handed to every later layer, so starting above layer 1 recomputes it from layer 1's
  (frozen) embedding.

The attention mask is built the way each encoder builds it (a 4-D mask for the SDPA/eager attention of
wav2vec2, HuBERT, data2vec-audio; the (B, T) mask for WavLM's own attention).
"""

from __future__ import annotations

import torch
from torch import nn

from wav2emo.backbones.source import BackboneError


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The transformer layers (``model.encoder.layers``) of a wav2vec2-style model."""
    layers = getattr(getattr(model, "encoder", None), "layers", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        raise BackboneError(
            f"{type(model).__name__}: no encoder.layers; expected a wav2vec2-style audio backbone "
            "(wav2vec2, HuBERT, WavLM, data2vec-audio)"
        )
    return layers


def num_layers(model: nn.Module) -> int:
    """N, the number of transformer layers (the backbone yields N + 1 hidden states)."""
    return len(encoder_layers(model))


def is_stable_layer_norm(model: nn.Module) -> bool:
    """True for the pre-norm layout (large, XLSR), whose encoder norms only ``last_hidden_state``."""
    return bool(getattr(model.config, "do_stable_layer_norm", False))


def final_layer_norm(model: nn.Module) -> nn.Module | None:
    """The norm that turns ``hidden_states[N]`` into ``last_hidden_state`` (pre-norm layouts), else None."""
    return model.encoder.layer_norm if is_stable_layer_norm(model) else None


def uses_position_bias(model: nn.Module) -> bool:
    """WavLM: relative position bias computed by the first layer, reused by the others."""
    return getattr(encoder_layers(model)[0].attention, "rel_attn_embed", None) is not None


def _attention_mask(model: nn.Module, hidden: torch.Tensor, mask: torch.Tensor | None):
    if mask is None:
        return None
    mask = mask.to(device=hidden.device, dtype=torch.bool)
    if mask.shape != hidden.shape[:2]:
        raise BackboneError(f"run_layers: mask of shape {tuple(mask.shape)} does not fit hidden {tuple(hidden.shape)}")
    if uses_position_bias(model):
        return mask  # WavLM's attention takes the (B, T) mask itself
    from transformers.masking_utils import create_bidirectional_mask

    return create_bidirectional_mask(config=model.config, inputs_embeds=hidden, attention_mask=mask)


def run_layers(
    model: nn.Module, hidden: torch.Tensor, mask: torch.Tensor | None, start: int, stop: int
) -> list[torch.Tensor]:
    """Run transformer layers ``start+1..stop`` (1-based) on ``hidden = hidden_states[start]`` (B, T, D).

    ``mask`` (B, T) is True on real frames (None: all real).  Returns ``[hidden_states[start+1], ...,
    hidden_states[stop]]`` as the model's own forward records them; frames where ``mask`` is False are
    padding with meaningless values.  A layer in train mode is skipped with probability ``config.layerdrop``, as Hugging Face does
    (a skipped layer passes its input on, so the list still has ``stop - start`` entries); gradient
    checkpointing follows the model's setting.
    """
    layers = encoder_layers(model)
    n = len(layers)
    if not (0 <= start < stop <= n):
        raise BackboneError(f"run_layers: layers {start + 1}..{stop} requested; expected 0 <= start < stop <= N={n}")
    if hidden.dim() != 3 or hidden.shape[-1] != model.config.hidden_size:
        raise BackboneError(
            f"run_layers: hidden of shape {tuple(hidden.shape)}; expected (B, T, {model.config.hidden_size})"
        )
    attention_mask = _attention_mask(model, hidden, mask)
    relative = uses_position_bias(model)
    position_bias = None
    if relative and start > 0:
        attn = layers[0].attention
        bsz, t = hidden.shape[:2]
        position_bias = attn.compute_bias(t, t).unsqueeze(0).repeat(bsz, 1, 1, 1).view(bsz * attn.num_heads, t, t)
    layerdrop = float(getattr(model.config, "layerdrop", 0.0) or 0.0)
    outputs: list[torch.Tensor] = []
    for i in range(start, stop):
        layer = layers[i]
        # Per layer, not model.training: top-k keeps the frozen rest of the model in eval mode.
        dropping = layerdrop > 0.0 and layer.training and not (relative and i == 0)
        skip = dropping and bool(torch.rand([]) < layerdrop)
        if not skip:
            if relative:
                kwargs = {} if is_stable_layer_norm(model) else {"index": i}
                hidden, position_bias = layer(hidden, attention_mask=attention_mask, position_bias=position_bias, **kwargs)
            else:
                hidden = layer(hidden, attention_mask=attention_mask)
            if isinstance(hidden, tuple):
                hidden = hidden[0]
        outputs.append(hidden)
    return outputs
