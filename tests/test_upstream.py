"""SSLUpstream: top-k from the cache reproduces the cached layers, the frozen part never trains, full/frozen
modes compute what extraction stores, checkpoints carry only the trained part and rebuild the exact model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.test_backbones import FAMILIES, random_model
from tests.test_cache import make_manifest
from wav2emo.backbones import (
    Backbone,
    BackboneError,
    normalize_wave,
    normalize_waves,
    wrap_model,
)
from wav2emo.features import get_features
from wav2emo.models.upstream import SSLUpstream, build_upstream, rebuild_upstream

SAMPLES = [20000, 12345, 16000, 9000]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return make_manifest(tmp_path_factory.mktemp("audio"), SAMPLES)


def collate(arrays: list[np.ndarray]) -> dict[str, torch.Tensor]:
    """(T_i, H, D) per clip -> ssl (B, H, T, D) zero padded + ssl_mask, as the data path hands them over."""
    t = max(a.shape[0] for a in arrays)
    ssl = torch.zeros(len(arrays), arrays[0].shape[1], t, arrays[0].shape[2], dtype=torch.from_numpy(arrays[0]).dtype)
    mask = torch.zeros(len(arrays), t, dtype=torch.bool)
    for b, a in enumerate(arrays):
        ssl[b, :, : a.shape[0]] = torch.from_numpy(a).transpose(0, 1)
        mask[b, : a.shape[0]] = True
    return {"ssl": ssl, "ssl_mask": mask}


def waves(lengths=SAMPLES, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in lengths]


def wave_batch(ws: list[np.ndarray]) -> dict[str, torch.Tensor]:
    x = torch.zeros(len(ws), max(len(w) for w in ws))
    for b, w in enumerate(ws):
        x[b, : len(w)] = torch.from_numpy(w)
    return {"wave": x, "wave_lengths": torch.tensor([len(w) for w in ws])}


def in_memory(model, normalize: bool = True) -> Backbone:
    return wrap_model(model, normalize=normalize, identity={"source": "test"})


def assert_close_on_mask(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor, tol: float) -> None:
    """(B, L, T, D) tensors agree on real frames within ``tol`` relative to their scale."""
    m = mask[:, None, :, None].expand_as(a)
    gap, scale = float((a - b)[m].abs().max()), float(b[m].abs().max())
    assert gap <= tol * max(1.0, scale), (gap, scale)


# top_k reproduces the cache ------------------------------------------------------------------------------
def test_top_k_on_the_fp16_cache_reproduces_the_cached_top_layers(tmp_path, tiny, toy):
    spec = {"kind": "ssl_hidden_states", "name": "tiny", "backbone": str(tiny), "precision": "fp32",
            "batch_size": 3, "num_workers": 1, "durable": False}
    cache = get_features(toy, spec, tmp_path / "cache", device="cpu", progress=False)
    batch = collate([cache.read(i) for i in range(len(toy))])
    assert batch["ssl"].dtype == torch.float16
    cached = batch["ssl"].float()
    for k in (1, 2, 3):
        up = build_upstream(str(tiny), mode="top_k", k=k).eval()
        with torch.no_grad():
            out = up(batch)
        assert out["ssl"].shape == cached.shape and out["ssl"].dtype == torch.float32
        assert torch.equal(out["ssl"][:, : 4 - k], cached[:, : 4 - k])  # the lower layers: the cache itself
        # fp16 storage of the input and the reference: a few fp16 ulps of the values' scale.
        assert_close_on_mask(out["ssl"][:, 4 - k :], cached[:, 4 - k :], batch["ssl_mask"], 4e-3)
        assert not out["ssl"][~batch["ssl_mask"][:, None, :, None].expand_as(out["ssl"])].any()  # padding stays 0
    up.check_cache(cache.meta)  # the cache of this very backbone is accepted; another one is not
    with pytest.raises(BackboneError, match="feature cache 'tiny'.*has normalize False"):
        up.check_cache({**cache.meta, "key_fields": {**cache.meta["key_fields"], "normalize": False}})


def test_top_k_of_a_real_size_wav2vec2_base_reproduces_layers_9_to_12():
    """Randomly initialised wav2vec2-base (12 x 768, post-norm, group-norm CNN): exact in fp32, within the
    fp16 cache's tolerance when fed fp16 hidden states."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(0)
    model = Wav2Vec2Model(Wav2Vec2Config()).eval()  # the base architecture
    assert (model.config.num_hidden_layers, model.config.hidden_size) == (12, 768)
    ex = in_memory(model)
    ws = waves([8000, 6000])
    x, lengths = ex.pad([ex.prepare(w) for w in ws])
    res, frames = ex.extract_batch(x, lengths, torch.float32)  # the extractor's batch: (B, T, H, D)
    fp32 = collate([res[b, :f].numpy() for b, f in enumerate(frames)])
    up = SSLUpstream(in_memory(model), mode="top_k", k=4).eval()
    with torch.no_grad():
        exact = up(fp32)["ssl"]
        from_fp16 = up({**fp32, "ssl": fp32["ssl"].half()})["ssl"]
    mask = fp32["ssl_mask"]
    m = mask[:, None, :, None].expand(-1, 4, -1, 768)
    assert torch.equal(exact[:, 9:][m], fp32["ssl"][:, 9:][m])
    assert_close_on_mask(from_fp16[:, 9:], fp32["ssl"][:, 9:], mask, 4e-3)


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "wav2vec2"])
def test_top_k_reproduces_the_top_layers_of_every_family(family):
    model = random_model(family)
    ex = in_memory(model, normalize=False)
    x, lengths = ex.pad(waves([16000, 10000]))
    res, frames = ex.extract_batch(x, lengths, torch.float32)
    fp32 = collate([res[b, :f].numpy() for b, f in enumerate(frames)])
    up = SSLUpstream(in_memory(model, normalize=False), mode="top_k", k=2).eval()
    with torch.no_grad():
        exact = up(fp32)["ssl"]
        from_fp16 = up({**fp32, "ssl": fp32["ssl"].half()})["ssl"]
    assert_close_on_mask(exact, fp32["ssl"], fp32["ssl_mask"], 1e-6)
    assert_close_on_mask(from_fp16[:, 2:], fp32["ssl"][:, 2:], fp32["ssl_mask"], 4e-3)


# What trains ------------------------------------------------------------------------------------------------
def test_top_k_trains_only_the_top_k_layers(tiny):
    up = build_upstream(str(tiny), mode="top_k", k=2).train()
    model = up.model
    assert not model.feature_extractor.training and not model.encoder.layers[0].training
    assert model.encoder.layers[1].training and model.encoder.layers[2].training
    batch = collate([np.random.default_rng(0).standard_normal((7, 4, 32)).astype(np.float16)] * 2)
    up(batch)["ssl"].pow(2).sum().backward()
    trained = {n for n, p in model.named_parameters() if p.grad is not None}
    assert trained and all(n.startswith(("encoder.layers.1.", "encoder.layers.2.")) for n in trained)
    assert not any(p.requires_grad for n, p in model.named_parameters() if not n.startswith("encoder.layers."))
    groups = up.parameter_groups()
    assert [(g["name"], g["depth"]) for g in groups] == [("backbone.layer_03", 0), ("backbone.layer_02", 1)]
    in_groups = {id(p) for g in groups for p in g["params"]}
    assert in_groups == {id(p) for p in model.parameters() if p.requires_grad}
    opt = torch.optim.AdamW([{"params": g["params"]} for g in groups], lr=1e-3)
    opt.step()
    assert all(p.requires_grad for p in opt.state) and len(opt.state) == len(in_groups)


def test_full_mode_trains_the_transformer_not_the_frozen_cnn(tiny):
    up = build_upstream(str(tiny), mode="full").train()
    out = up(wave_batch(waves()))
    out["ssl"][:, -1].pow(2).sum().backward()
    grads = {n for n, p in up.model.named_parameters() if p.grad is not None}
    assert any(n.startswith("encoder.layers.0.") for n in grads) and any(n.startswith("feature_projection") for n in grads)
    assert not any(n.startswith("feature_extractor.") for n in grads)
    depths = {g["name"]: g["depth"] for g in up.parameter_groups()}
    assert depths == {"backbone.layer_03": 0, "backbone.layer_02": 1, "backbone.layer_01": 2, "backbone.embeddings": 3}
    unfrozen = build_upstream(str(tiny), mode="full", freeze_feature_encoder=False)
    assert {g["name"]: g["depth"] for g in unfrozen.parameter_groups()}["backbone.feature_encoder"] == 4


# Full and frozen modes compute what extraction stores ---------------------------------------------------------
@pytest.mark.parametrize("mode", ["full", "frozen"])
def test_wave_modes_give_extractions_hidden_states_for_a_padded_batch(tiny, mode):
    ws = waves()
    bb = build_upstream(str(tiny), mode="frozen")
    ex = wrap_model(bb.model, normalize=True)
    alone = collate([ex.extract([w])[0] for w in ws])  # each clip by itself: the batch-invariance reference
    up = build_upstream(str(tiny), mode=mode).eval()
    out = up(wave_batch(ws))
    assert out["ssl"].requires_grad == (mode == "full")
    assert torch.equal(out["ssl_mask"], alone["ssl_mask"])
    assert_close_on_mask(out["ssl"].detach(), alone["ssl"], alone["ssl_mask"], 1e-4)


def test_wave_normalisation_is_extractions_per_clip_normalisation():
    ws = [w + 0.3 for w in waves()]  # an offset, so the mean matters
    batch = wave_batch(ws)
    got = normalize_waves(batch["wave"], batch["wave_lengths"])
    for b, w in enumerate(ws):
        np.testing.assert_allclose(got[b, : len(w)].numpy(), normalize_wave(w), rtol=1e-6, atol=1e-6)
        assert not got[b, len(w) :].any()


def test_gradient_checkpointing_gives_the_same_gradients(tiny):
    grads = []
    for ckpt in (False, True):
        up = build_upstream(str(tiny), mode="full", gradient_checkpointing=ckpt).train()
        up(wave_batch(waves()[:2]))["ssl"][:, -1].sum().backward()
        grads.append(up.model.encoder.layers[0].feed_forward.output_dense.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


# Bad input ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [0, 4, -1, "2", True, None])
def test_k_out_of_range_is_refused_naming_k_and_n(tiny, k):
    with pytest.raises(BackboneError, match=rf"finetune.k={k!r}: expected an integer in 1..N, N=3"):
        build_upstream(str(tiny), mode="top_k", k=k)


def test_other_bad_settings_are_refused(tiny):
    with pytest.raises(BackboneError, match="finetune mode 'partial'"):
        build_upstream(str(tiny), mode="partial")
    with pytest.raises(BackboneError, match="top_k never computes"):
        build_upstream(str(tiny), mode="top_k", k=1, switches={"apply_spec_augment": True, "mask_time_prob": 0.05})
    up = build_upstream(str(tiny), mode="top_k", k=1)
    with pytest.raises(BackboneError, match=r"expected \(B, 4, T, 32\)"):
        up({"ssl": torch.zeros(1, 3, 5, 32), "ssl_mask": torch.ones(1, 5, dtype=torch.bool)})
    with pytest.raises(BackboneError, match="reads the cached `ssl`"):
        up({"wave": torch.zeros(1, 800)})


# Checkpoints ---------------------------------------------------------------------------------------------------
def _perturb(up: SSLUpstream) -> None:
    with torch.no_grad():
        for g in up.parameter_groups():
            for p in g["params"]:
                p.add_(0.01 * torch.randn_like(p))


def test_checkpoint_holds_the_top_k_layers_only_and_loads_strictly(tmp_path, tiny):
    torch.manual_seed(0)
    up = build_upstream(str(tiny), mode="top_k", k=1)
    _perturb(up)
    state = up.state_dict()
    keys = {k for k in state if k != "_extra_state"}
    assert keys and all(k.startswith("model.encoder.layers.2.") for k in keys)
    assert state["_extra_state"]["identity"]["k"] == 1
    path = tmp_path / "upstream.pt"
    torch.save(state, path)
    state = torch.load(path, weights_only=True)  # as Lightning may load it: plain tensors and dicts only
    fresh = build_upstream(str(tiny), mode="top_k", k=1)
    fresh.load_state_dict(state)  # strict: the frozen part is filled from the backbone
    for name, t in up.model.state_dict().items():
        assert torch.equal(fresh.model.state_dict()[name], t), name
    other = build_upstream(str(tiny), mode="top_k", k=2)
    with pytest.raises(BackboneError, match="k: checkpoint 1, here 2"):
        other.load_state_dict(state, strict=False)


def test_rebuild_from_identity_and_trained_state_gives_the_exact_model(tiny):
    torch.manual_seed(1)
    up = build_upstream(str(tiny), mode="top_k", k=2, switches={"layerdrop": 0.05}).eval()
    _perturb(up)
    identity, trained = up.identity(), up.trained_state_dict()
    assert set(trained) == {n for n in up.model.state_dict() if n.startswith(("encoder.layers.1.", "encoder.layers.2."))}
    assert identity["backbone"]["source"] == "folder" and identity["switches"]["layerdrop"] == 0.05
    again = rebuild_upstream(identity, trained).eval()
    batch = collate([np.random.default_rng(2).standard_normal((9, 4, 32)).astype(np.float16)])
    with torch.no_grad():
        assert torch.equal(again(batch)["ssl"], up(batch)["ssl"])
    with pytest.raises(BackboneError, match="trained state does not fit"):
        rebuild_upstream(identity, {k: v for k, v in trained.items() if "layers.2." in k})
    changed = {**identity, "backbone": {**identity["backbone"], "weights_sha256": "0" * 64}}
    with pytest.raises(BackboneError, match="is not the one this upstream was trained on"):
        rebuild_upstream(changed, trained)
