"""SSL hidden-state extraction: batch invariance, exact lengths, resume after a crash, backbone loading offline."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from tests.test_cache import make_manifest
from wav2emo.backbones import (
    BackboneError,
    ExtractionError,
    backbone_identity,
    build_tiny_wav2vec2,
    load_backbone,
    normalize_wave,
    resolve_source,
    tiny_wav2vec2_config,
    wrap_model,
)
from wav2emo.data.audio import load_audio
from wav2emo.features import get_features
from wav2emo.features.cache.reader import FeatureCache
from wav2emo.features.cache.writer import CacheBuilder
from wav2emo.features.extraction_batches import expected_samples, resampled_length

# RAVDESS-like durations (2.9 s .. 5.3 s at 16 kHz), deliberately mixed.
SAMPLES = [84351, 47040, 62123, 50000, 71777, 46400, 58000, 80000, 49999, 66666]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return make_manifest(tmp_path_factory.mktemp("audio"), SAMPLES)


def ssl_spec(tiny, **kw):
    return {"kind": "ssl_hidden_states", "name": "tiny", "backbone": str(tiny), "batch_size": 4, "num_workers": 2,
            "shard_mb": 0.12, "durable": False, **kw}


def waves(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(s)).astype(np.float32) for s in SAMPLES[:n]]


# Batch invariance ----------------------------------------------------------------------------------------
def _invariance_gap(model, ws) -> tuple[float, float, float]:
    """(max |batched - alone|, max |alone|, max |naive zero-padded batch - alone|) over valid frames."""
    ex = wrap_model(model, normalize=True)
    batched = ex.extract(ws)
    alone = [ex.extract([w])[0] for w in ws]
    gap = max(float(np.abs(a - b).max()) for a, b in zip(batched, alone, strict=True))
    scale = max(float(np.abs(a).max()) for a in alone)
    # The naive way: same batch zero-padded, no attention mask, unmasked GroupNorm.
    x, _ = ex.pad([ex.prepare(w) for w in ws])
    for _, norm in ex.invariance.norms:
        assert norm.lengths is None
    with torch.inference_mode():
        hs = torch.stack(model(x, output_hidden_states=True).hidden_states, dim=2)
    naive = max(float(np.abs(hs[b, : len(a)].numpy() - a).max()) for b, a in enumerate(alone))
    return gap, scale, naive


def test_batched_equals_one_by_one(tiny):
    bb = load_backbone(resolve_source(tiny))
    gap, scale, naive = _invariance_gap(bb.model, waves(6))
    assert gap < 1e-4 * max(1.0, scale), gap
    assert naive > 1e-2, naive  # the problem is real: without the fix, padding changes the features


@pytest.mark.slow
def test_batched_equals_one_by_one_base_sized():
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(0)
    model = Wav2Vec2Model(Wav2Vec2Config()).eval()  # wav2vec2-base: GroupNorm(512, 512) in conv 0, 12 layers
    gap, scale, naive = _invariance_gap(model, [w[:40000] if i % 2 else w for i, w in enumerate(waves(3))])
    assert gap < 1e-3 * max(1.0, scale), gap
    assert naive > 1e-2, naive


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_batched_equals_one_by_one_on_gpu(tiny):
    bb = load_backbone(resolve_source(tiny), device="cuda")
    ex = bb
    ws = waves(5)
    batched, alone = ex.extract(ws), [ex.extract([w])[0] for w in ws]
    assert max(float(np.abs(a - b).max()) for a, b in zip(batched, alone, strict=True)) < 1e-3


def test_layer_norm_backbones_need_only_the_mask(tmp_path):
    from transformers import Wav2Vec2Model

    torch.manual_seed(0)
    model = Wav2Vec2Model(tiny_wav2vec2_config(feat_extract_norm="layer", do_stable_layer_norm=True)).eval()
    gap, scale, _ = _invariance_gap(model, waves(4))
    assert gap < 1e-4 * max(1.0, scale)


# Through get_features ---------------------------------------------------------------------------------
def test_ssl_cache_shapes_lengths_values_and_meta(tmp_path, tiny, toy):
    cache = get_features(toy, ssl_spec(tiny), tmp_path / "cache", device="cpu", progress=False)
    assert cache.feature_shape == (4, 32) and cache.dtype == np.float16  # 3 layers + encoder input
    assert cache.frame_rate == 50.0 and cache.layer_names == ["encoder_input", "layer_01", "layer_02", "layer_03"]
    # Exact frames per clip: wav2vec2's conv stack gives (n - 400) // 320 + 1 frames, no pad, no crop.
    assert cache.lengths.tolist() == [(n - 400) // 320 + 1 for n in SAMPLES]
    assert len(cache.meta["shards"]) > 2

    bb = load_backbone(resolve_source(tiny))
    ex = bb
    direct = ex.extract([load_audio(c.path) for c in toy[:3]])
    for i in range(3):
        got = cache.read(i)
        assert isinstance(got, np.memmap) and got.shape == direct[i].shape
        np.testing.assert_allclose(got.astype(np.float32), direct[i], rtol=2e-3, atol=2e-3)

    meta = cache.meta
    assert meta["backbone"]["source"] == "folder" and len(meta["backbone"]["weights_sha256"]) == 64
    assert meta["key_fields"]["precision"] == "fp32" and meta["key_fields"]["normalize"] is True
    assert meta["manifest"]["content_hash"] == toy.content_hash() and meta["sample_rate"] == 16000
    assert {"torch", "transformers", "wav2emo"} <= set(meta["versions"]) and meta["build"]["device"] == "cpu"
    assert cache.sha1s == [c.sha1 for c in toy]


def test_batch_size_and_length_buckets_do_not_change_features_or_key(tmp_path, tiny, toy):
    a = get_features(toy, ssl_spec(tiny, batch_size=1, length_bucket_s=0), tmp_path / "a", device="cpu", progress=False)
    b = get_features(toy, ssl_spec(tiny, batch_size=5, length_bucket_s=1.0), tmp_path / "b", device="cpu",
                     progress=False)
    assert a.path.name == b.path.name
    assert len(b.meta["build"]["batch_s"]) == 2 and b.meta["build"]["length_bucket_s"] == 1.0
    for i in range(len(toy)):
        np.testing.assert_allclose(a.read(i).astype(np.float32), b.read(i).astype(np.float32), rtol=2e-3, atol=2e-3)


def test_changed_config_gets_new_cache_old_untouched(tmp_path, tiny, toy):
    first = get_features(toy, ssl_spec(tiny), tmp_path / "cache", device="cpu", progress=False)
    before = {p.name: p.stat().st_mtime_ns for p in first.path.iterdir()}
    other = get_features(toy, ssl_spec(tiny, normalize=False), tmp_path / "cache", device="cpu", progress=False)
    assert other.path != first.path and other.path.parent == first.path.parent
    assert {p.name: p.stat().st_mtime_ns for p in first.path.iterdir()} == before
    assert not np.array_equal(other.read(0), first.read(0))


def test_resume_after_a_crash_computes_only_the_missing_shards(tmp_path, tiny, toy, monkeypatch):
    spec = ssl_spec(tiny)
    reference = get_features(toy, spec, tmp_path / "ref", device="cpu", progress=False)

    original = CacheBuilder._finalize_shard
    calls = {"n": 0}

    def crash_on_second(self, sh):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("simulated crash while finishing the second shard")
        return original(self, sh)

    monkeypatch.setattr(CacheBuilder, "_finalize_shard", crash_on_second)
    with pytest.raises(OSError, match="simulated crash"):
        get_features(toy, spec, tmp_path / "cache", device="cpu", progress=False)
    monkeypatch.setattr(CacheBuilder, "_finalize_shard", original)
    folder = reference.path.name
    left = sorted(p.name for p in (tmp_path / "cache" / toy.name / folder).iterdir())
    assert "meta.json" not in left and "shard-00000.npy" in left and "shard-00001.npy.partial" in left

    resumed = get_features(toy, spec, tmp_path / "cache", device="cpu", progress=False)
    shard0 = json.loads((reference.path / "meta.json").read_text())["shards"][0]["clips"]
    assert resumed.meta["build"]["shards_reused"] == 1
    assert resumed.meta["build"]["clips_computed"] == len(toy) - shard0
    assert not list(resumed.path.glob("*.partial"))
    for i in range(len(toy)):
        np.testing.assert_allclose(resumed.read(i).astype(np.float32), reference.read(i).astype(np.float32),
                                   rtol=2e-3, atol=2e-3)


def test_decoded_length_must_match_the_manifest(tmp_path, tiny):
    m = make_manifest(tmp_path / "a", [20000, 30000])
    wrong = type(m)([m[0], type(m[1])(**{**m[1].__dict__, "num_frames": 31000})], name="toy")
    with pytest.raises(ExtractionError, match=r"clip001\.wav: decoded to 30000 samples.*implies 31000"):
        get_features(wrong, ssl_spec(tiny), tmp_path / "cache", device="cpu", progress=False)


def test_too_short_clip_is_an_error(tmp_path, tiny):
    m = make_manifest(tmp_path / "a", [20000, 399])
    with pytest.raises(ExtractionError, match=r"clip001.*receptive field \(400 samples"):
        get_features(m, ssl_spec(tiny), tmp_path / "cache", device="cpu", progress=False)


@pytest.mark.parametrize("sr,channels", [(48000, 2), (44100, 1), (22050, 1), (8000, 1)])
def test_planned_lengths_match_decoded_audio(tmp_path, sr, channels):
    m = make_manifest(tmp_path / "a", [int(sr * 3.137), int(sr * 2.9) + 1], sr=sr, channels=channels, ext="flac")
    for clip in m:
        assert expected_samples(clip, 16000) == len(load_audio(clip.path, 16000))
    assert resampled_length(48000, 48000, 16000) == 16000 and resampled_length(5, 16000, 16000) == 5


def test_normalisation_is_per_clip_on_the_unpadded_wave():
    w = np.random.default_rng(0).standard_normal(1000).astype(np.float32) * 3 + 1
    n = normalize_wave(w)
    assert abs(float(n.mean())) < 1e-5 and abs(float(n.std()) - 1) < 1e-4


# Backbones ------------------------------------------------------------------------------------------------
def test_tiny_backbone_is_deterministic_idempotent_and_loads_offline(tmp_path, tiny):
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    again = build_tiny_wav2vec2(tmp_path / "t2", seed=0)
    ident_a, ident_b = backbone_identity(resolve_source(tiny)), backbone_identity(resolve_source(again))
    assert ident_a == ident_b and ident_a["source"] == "folder"
    assert backbone_identity(resolve_source(build_tiny_wav2vec2(tmp_path / "t3", seed=1))) != ident_a
    mtime = (again / "model.safetensors").stat().st_mtime_ns
    assert build_tiny_wav2vec2(again, seed=0) == again and (again / "model.safetensors").stat().st_mtime_ns == mtime
    with pytest.raises(BackboneError, match="seed 0, not 1"):
        build_tiny_wav2vec2(again, seed=1)
    (tmp_path / "foreign").mkdir()
    with pytest.raises(BackboneError, match="not a tiny backbone made by wav2emo"):
        build_tiny_wav2vec2(tmp_path / "foreign")

    bb = load_backbone(resolve_source(tiny))  # AutoModel.from_pretrained on the folder, hub switched off
    cfg = bb.config
    assert type(bb.model).__name__ == "Wav2Vec2Model" and bb.do_normalize and bb.sampling_rate == 16000
    assert tuple(cfg.conv_stride) == (5, 2, 2, 2, 2, 2, 2) and tuple(cfg.conv_kernel) == (10, 3, 3, 3, 3, 2, 2)
    assert cfg.feat_extract_norm == "group" and not bb.model.training
    assert not any(p.requires_grad for p in bb.model.parameters())


def test_build_tiny_spec_builds_on_first_use(tmp_path, toy):
    spec = {"kind": "ssl_hidden_states", "name": "tiny", "backbone": str(tmp_path / "bb" / "tiny-seed0"),
            "build_tiny": True, "num_workers": 1, "durable": False}
    cache = get_features(toy[:2], spec, tmp_path / "cache", device="cpu", progress=False)
    assert (tmp_path / "bb" / "tiny-seed0" / "config.json").is_file() and cache.num_clips == 2


def test_unknown_hub_id_offline_says_what_to_do(tmp_path, toy):
    source = resolve_source("wav2emo-test/no-such-model", revision="main")
    assert not source.is_local
    with pytest.raises(BackboneError) as err:
        backbone_identity(source)
    msg = str(err.value)
    assert "wav2emo-test/no-such-model" in msg and "HF_HUB_OFFLINE=1" in msg
    assert "run once with internet access" in msg and "local folder" in msg
    spec = {"kind": "ssl_hidden_states", "name": "x", "backbone": "wav2emo-test/no-such-model"}
    with pytest.raises(BackboneError, match="run once with internet access"):
        get_features(toy, spec, tmp_path / "cache", device="cpu")


def test_missing_local_folder_is_not_mistaken_for_a_hub_id(tmp_path):
    with pytest.raises(BackboneError, match="no such folder"):
        resolve_source(str(tmp_path / "nowhere"))
    with pytest.raises(BackboneError, match="no such folder"):
        resolve_source("./models/mine")


def test_cache_reopens_without_loading_the_backbone(tmp_path, tiny, toy, monkeypatch):
    first = get_features(toy[:3], ssl_spec(tiny), tmp_path / "cache", device="cpu", progress=False)
    import wav2emo.features.ssl_hidden_states as extraction

    monkeypatch.setattr(extraction, "load_backbone", lambda *a, **k: pytest.fail("reloaded the backbone"))
    again = get_features(toy[:3], ssl_spec(tiny), tmp_path / "cache", device="cpu", progress=False)
    assert again.path == first.path and isinstance(FeatureCache.open(again.path), FeatureCache)


def test_cpu_job_reads_the_cache_the_same_spec_built_in_bf16(tmp_path, tiny, toy, monkeypatch):
    """A bf16 spec runs in fp32 on a CPU (another cache), but a finished bf16 cache of the same spec,
    built on a GPU, is what the spec asked for: a CPU training or eval job reads it, not re-extracts."""
    import wav2emo.features.ssl_hidden_states as extraction

    spec = ssl_spec(tiny, precision="bf16")
    real = extraction.effective_precision
    monkeypatch.setattr(extraction, "effective_precision", lambda p, d: p)  # as on a GPU: bf16 honoured
    gpu_built = get_features(toy, spec, tmp_path / "cache", device="cpu", progress=False)
    assert gpu_built.meta["key_fields"]["precision"] == "bf16"
    monkeypatch.setattr(extraction, "effective_precision", real)

    def no_build(*a, **k):
        raise AssertionError("must not extract again")

    monkeypatch.setattr(extraction.SSLHiddenStates, "build", no_build)
    on_cpu = get_features(toy, spec, tmp_path / "cache", device="cpu", progress=False)
    assert on_cpu.path == gpu_built.path
    # An fp32 spec is not satisfied by the bf16 cache: it gets its own.
    monkeypatch.undo()
    fp32 = get_features(toy, ssl_spec(tiny, precision="fp32"), tmp_path / "cache", device="cpu", progress=False)
    assert fp32.path != gpu_built.path


# Long clips -------------------------------------------------------------------------------------------------
def test_clip_over_max_clip_s_is_refused_before_the_backbone_loads(tmp_path, tiny, monkeypatch):
    import wav2emo.features.ssl_hidden_states as extraction
    from wav2emo.features.ssl_hidden_states import ClipLengthError

    m = make_manifest(tmp_path / "a", [20000, 16000 * 61, 30000])
    monkeypatch.setattr(extraction, "load_backbone", lambda *a, **k: pytest.fail("loaded the backbone"))
    monkeypatch.setattr(extraction, "load_audio", lambda *a, **k: pytest.fail("decoded audio"))
    with pytest.raises(ClipLengthError) as err:
        get_features(m, ssl_spec(tiny), tmp_path / "cache", device="cpu", progress=False)
    msg = str(err.value)
    assert "1 clip(s) longer than the 60 s limit" in msg and "clip001 (61.0 s" in msg and m[1].path in msg
    assert "features.ssl.max_clip_s" in msg and "clip000" not in msg and "clip002" not in msg
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").rglob("*.npy*"))
    extraction.SSLHiddenStates(ssl_spec(tiny, max_clip_s=None), "cpu").check_clips(m)  # no limit: accepted
    extraction.SSLHiddenStates(ssl_spec(tiny, max_clip_s=61.5), "cpu").check_clips(m)


def test_batches_are_bounded_by_padded_seconds():
    from wav2emo.features.extraction_batches import plan_batches

    sr = 16000
    samples = [60 * sr] + [4 * sr + i for i in range(20)] + [90 * sr]
    order = sorted(range(len(samples)), key=lambda i: -samples[i])  # long first, as extraction lays them out
    batches = plan_batches(order, samples, batch_size=16, max_batch_samples=200 * sr)
    assert sorted(i for b in batches for i in b) == list(range(len(samples)))
    assert [i for b in batches for i in b] == order  # layout order kept
    assert batches[0] == [21, 0]  # 90 s + 60 s = 2 x 90 s padded; a third clip would make 270 s
    assert [len(b) for b in batches[1:]] == [16, 4]  # the 4 s clips: batch_size is the bound there
    assert plan_batches(order, samples, 16, 100 * sr)[:2] == [[21], [0]]  # clips over the budget alone
    for b in batches:
        assert len(b) <= 16 and (len(b) == 1 or len(b) * max(samples[i] for i in b) <= 200 * sr)
    assert plan_batches(order, samples, 16, None) == [order[k : k + 16] for k in range(0, len(order), 16)]


def test_batch_budget_changes_batches_not_features(tmp_path, tiny):
    m = make_manifest(tmp_path / "a", [16000 * 12] + SAMPLES[:5])
    budget = get_features(m, ssl_spec(tiny, batch_size=6, max_batch_s=27.0), tmp_path / "a1", device="cpu",
                          progress=False)
    assert len(budget.meta["build"]["batch_s"]) == 2  # [12 s, 5.3 s] padded to 24 s, then four clips <= 5 s
    plain = get_features(m, ssl_spec(tiny, batch_size=6, max_batch_s=None), tmp_path / "a2", device="cpu",
                         progress=False)
    assert len(plain.meta["build"]["batch_s"]) == 1 and plain.path.name == budget.path.name
    for i in range(len(m)):
        np.testing.assert_allclose(budget.read(i).astype(np.float32), plain.read(i).astype(np.float32),
                                   rtol=2e-3, atol=2e-3)


def test_rebuild_recomputes_only_the_damaged_shard_of_hidden_states(tmp_path, tiny, toy):
    from wav2emo.features.cache.format import CacheError

    spec = ssl_spec(tiny)
    first = get_features(toy, spec, tmp_path / "cache", device="cpu", progress=False)
    shards = first.meta["shards"]
    assert len(shards) >= 3
    before = [first.read_copy(i) for i in range(len(toy))]
    target = first.path / shards[1]["file"]
    with open(target, "r+b") as f:  # one byte changed in place, same size
        f.seek(-100, os.SEEK_END)
        b = f.read(1)
        f.seek(-100, os.SEEK_END)
        f.write(bytes([b[0] ^ 1]))
    with pytest.raises(CacheError, match=rf"crc32.*{target.name}"):
        get_features(toy, spec, tmp_path / "cache", device="cpu", progress=False)
    repaired = get_features(toy, spec, tmp_path / "cache", device="cpu", progress=False, rebuild=True)
    assert repaired.meta["build"]["shards_reused"] == len(shards) - 1
    assert repaired.meta["build"]["clips_computed"] == shards[1]["clips"]
    for i, a in enumerate(before):  # recomputed in other batches: equal up to float rounding
        np.testing.assert_allclose(repaired.read_copy(i).astype(np.float32), a.astype(np.float32), rtol=2e-3, atol=2e-3)


def test_masked_group_norm_of_unpadded_clips_is_one_call_with_the_per_clip_numbers():
    """Clips of one length (prediction's windows): the whole batch in one GroupNorm call gives each clip what the
    per-clip path gives (and what the clip alone gives); a batch with padding still goes clip by clip."""
    from wav2emo.backbones.invariance import MaskedGroupNorm

    torch.manual_seed(0)
    norm = torch.nn.GroupNorm(16, 16)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    masked = MaskedGroupNorm(norm)
    x = torch.randn(5, 16, 300) * 3 + 1
    masked.lengths = [300] * 5
    batched = masked(x)
    alone = torch.cat([torch.nn.functional.group_norm(x[b : b + 1], 16, norm.weight, norm.bias, norm.eps)
                       for b in range(5)])
    torch.testing.assert_close(batched, alone, rtol=1e-6, atol=1e-6)
    masked.lengths = [300, 300, 120, 300, 300]  # one padded clip: its statistics over its 120 frames only
    mixed = masked(x)
    torch.testing.assert_close(mixed[[0, 1, 3, 4]], alone[[0, 1, 3, 4]], rtol=1e-6, atol=1e-6)
    short = torch.nn.functional.group_norm(x[2:3, :, :120], 16, norm.weight, norm.bias, norm.eps)
    torch.testing.assert_close(mixed[2:3, :, :120], short, rtol=1e-6, atol=1e-6)
    assert not mixed[2, :, 120:].any() and not torch.allclose(mixed[2:3, :, :120], alone[2:3, :, :120])
