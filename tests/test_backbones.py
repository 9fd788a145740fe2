"""wav2emo.backbones: the layer-range encoder against Hugging Face's own forward, for every backbone family,
and loading with explicit train-mode switches."""

from __future__ import annotations

import pytest
import torch

from wav2emo.backbones import (
    BackboneError,
    conv_output_length,
    final_layer_norm,
    load_backbone,
    resolve_source,
    run_layers,
    tiny_config,
    train_switches,
)

FAMILIES = ["wav2vec2", "wav2vec2-stable", "hubert", "hubert-stable", "wavlm", "wavlm-stable", "data2vec-audio"]
LENGTHS = [16000, 11000, 6400]


def random_model(family: str, seed: int = 0, **overrides):
    from transformers import AutoModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoModel.from_config(tiny_config(family, **overrides)).eval()


def padded_batch(lengths=LENGTHS, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = 0.1 * torch.randn(len(lengths), max(lengths), generator=g)
    valid = torch.arange(x.shape[1])[None, :] < torch.tensor(lengths)[:, None]
    return x * valid, valid.long()


def frame_mask(model, lengths, t: int) -> torch.Tensor:
    cfg = model.config
    frames = torch.tensor([conv_output_length(n, cfg.conv_kernel, cfg.conv_stride) for n in lengths])
    return torch.arange(t)[None, :] < frames[:, None]


@pytest.mark.parametrize("family", FAMILIES)
def test_layers_i_to_j_reproduce_the_models_own_hidden_states_exactly(family):
    model = random_model(family)
    x, am = padded_batch()
    with torch.no_grad():
        out = model(x, attention_mask=am, output_hidden_states=True)
        hs = out.hidden_states
        n = len(hs) - 1
        mask = frame_mask(model, LENGTHS, hs[0].shape[1])
        assert n == model.config.num_hidden_layers and int(mask[1].sum()) < hs[0].shape[1]  # really padded
        for start in range(n):
            for stop in range(start + 1, n + 1):
                got = run_layers(model, hs[start].clone(), mask, start, stop)
                assert len(got) == stop - start
                for i, g in enumerate(got, start=start + 1):
                    assert torch.equal(g[mask], hs[i][mask]), (family, start, stop, i)
        # Where the final norm is: pre-norm layouts norm last_hidden_state only, never hidden_states[N].
        norm = final_layer_norm(model)
        if family.endswith("-stable"):
            assert not torch.allclose(out.last_hidden_state[mask], hs[n][mask])
            assert torch.equal(norm(hs[n])[mask], out.last_hidden_state[mask])
        else:
            assert norm is None and torch.equal(out.last_hidden_state[mask], hs[n][mask])


def test_wavlm_from_a_middle_layer_needs_the_position_bias():
    """Starting above layer 1 must recompute the relative position bias; without it the result differs."""
    model = random_model("wavlm")
    x, am = padded_batch()
    with torch.no_grad():
        hs = model(x, attention_mask=am, output_hidden_states=True).hidden_states
        mask = frame_mask(model, LENGTHS, hs[0].shape[1])
        layer, heads, t = model.encoder.layers[1], model.config.num_attention_heads, hs[1].shape[1]
        no_bias, _ = layer(hs[1], attention_mask=mask, position_bias=torch.zeros(len(LENGTHS) * heads, t, t), index=1)
        with_bias = run_layers(model, hs[1], mask, 1, 2)[0]
    assert torch.equal(with_bias[mask], hs[2][mask])
    assert not torch.allclose(no_bias[mask], hs[2][mask], atol=1e-4)


def test_run_layers_refuses_bad_ranges_and_shapes():
    model = random_model("wav2vec2")
    h = torch.zeros(1, 5, model.config.hidden_size)
    for start, stop in [(-1, 2), (2, 2), (0, 4), (3, 4)]:
        with pytest.raises(BackboneError, match="expected 0 <= start < stop <= N=3"):
            run_layers(model, h, None, start, stop)
    with pytest.raises(BackboneError, match=r"expected \(B, T, 32\)"):
        run_layers(model, torch.zeros(1, 5, 7), None, 0, 1)
    with pytest.raises(BackboneError, match="does not fit"):
        run_layers(model, h, torch.ones(1, 4, dtype=torch.bool), 0, 1)


def test_layerdrop_applies_per_layer_in_train_mode_only():
    model = random_model("wav2vec2", layerdrop=0.999)
    h = torch.randn(1, 6, model.config.hidden_size)
    with torch.no_grad():
        model.eval()
        assert not torch.equal(run_layers(model, h, None, 0, 3)[-1], h)
        model.encoder.layers[2].train()  # top-k: only the trained layer is in train mode
        torch.manual_seed(0)
        out = run_layers(model, h, None, 0, 3)
        assert torch.equal(out[2], out[1])  # layer 3 skipped (p = 0.999), layers 1 and 2 ran
        assert not torch.equal(out[1], out[0])


def _save(tmp_path, family: str, **overrides):
    model = random_model(family, **overrides)
    model.save_pretrained(tmp_path / family)
    return resolve_source(tmp_path / family)


def test_train_mode_switches_are_off_unless_our_config_sets_them(tmp_path):
    # A pretraining config as on the hub: layerdrop 0.1, SpecAugment on.
    source = _save(tmp_path, "wav2vec2", layerdrop=0.1, mask_time_prob=0.05, mask_feature_prob=0.02,
                   apply_spec_augment=True)
    cfg = load_backbone(source, normalize=True, trainable=True).config
    assert (cfg.layerdrop, cfg.mask_time_prob, cfg.mask_feature_prob, cfg.apply_spec_augment) == (0.0, 0.0, 0.0, False)
    cfg = load_backbone(source, normalize=True, trainable=True, switches={"layerdrop": 0.05, "apply_spec_augment": True,
                                                                          "mask_time_prob": 0.1}).config
    assert (cfg.layerdrop, cfg.mask_time_prob, cfg.mask_feature_prob, cfg.apply_spec_augment) == (0.05, 0.1, 0.0, True)


def test_trainable_switch_keeps_gradients_and_frozen_removes_them(tmp_path):
    source = _save(tmp_path, "hubert")
    frozen = load_backbone(source, normalize=False)
    assert not frozen.model.training and not any(p.requires_grad for p in frozen.model.parameters())
    trainable = load_backbone(source, normalize=False, trainable=True)
    assert all(p.requires_grad for p in trainable.model.parameters())
    assert frozen.info["model_type"] == "hubert" and frozen.identity["source"] == "folder"


@pytest.mark.parametrize(
    ("bad", "match"),
    [({"layerdrop": 1.0}, "layerdrop=1.0: expected a probability"), ({"mask_time_prob": -0.1}, "mask_time_prob"),
     ({"apply_spec_augment": "yes"}, "apply_spec_augment='yes'"), ({"dropout": 0.1}, r"\['dropout'\]: unknown")],
)
def test_bad_train_switches_are_named(bad, match):
    with pytest.raises(BackboneError, match=match):
        train_switches(bad)
