"""LogMelFrontend: the batched torch log-mel computes exactly what the log-mel feature cache holds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.test_cache import make_manifest
from wav2emo.data.audio import load_audio
from wav2emo.features import get_features
from wav2emo.features.logmel import LogMel, LogMelFrontend


def padded(waves: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(w) for w in waves])
    out = torch.zeros(len(waves), int(lengths.max()))
    for i, w in enumerate(waves):
        out[i, : len(w)] = torch.from_numpy(w)
    return out, lengths


def test_frontend_equals_cached_values(tmp_path):
    samples = [16000, 7000, 12345, 401]
    m = make_manifest(tmp_path / "a", samples)
    spec = {"kind": "logmel", "name": "lm", "num_workers": 1, "durable": False}
    cache = get_features(m, spec, tmp_path / "cache", progress=False)
    frontend = LogMelFrontend(spec | {"name": "lm"})
    wave, lengths = padded([load_audio(c.path) for c in m])
    feats, mask = frontend(wave, lengths)
    assert feats.shape[0] == 4 and feats.shape[2] == 64 and mask.shape == feats.shape[:2]
    for i, clip in enumerate(m):
        ref = torch.from_numpy(np.array(cache.read(cache.index_of(clip.clip_id)), dtype=np.float32))
        n = ref.shape[0]
        assert int(mask[i].sum()) == n and bool(mask[i, :n].all())
        assert torch.allclose(feats[i, :n], ref, rtol=0, atol=1e-5)  # same ops; batched FFT may round differently
        assert torch.all(feats[i, n:] == 0)


@pytest.mark.parametrize("center", [False, True])
def test_frontend_equals_per_clip_compute(center):
    lm = LogMel({"kind": "logmel", "name": "x", "center": center, "n_mels": 40, "hop_ms": 20.0})
    rng = np.random.default_rng(0)
    waves = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (16000, 5000, 400, 9999)]
    wave, lengths = padded(waves)
    feats, mask = lm.frontend(wave, lengths)
    for i, w in enumerate(waves):
        ref = torch.from_numpy(lm.compute(w))
        assert int(mask[i].sum()) == ref.shape[0] == lm.num_frames(len(w))
        assert torch.allclose(feats[i, : ref.shape[0]], ref, rtol=0, atol=1e-5)


def test_frontend_is_a_module_that_moves_devices():
    frontend = LogMelFrontend({"kind": "logmel"})
    assert isinstance(frontend, torch.nn.Module) and not list(frontend.parameters())
    with pytest.raises(ValueError, match=r"\(B, S\)"):
        frontend(torch.zeros(400))
    if torch.cuda.is_available():
        wave = torch.randn(2, 4000)
        feats, _ = frontend.cuda()(wave.cuda())
        ref, _ = LogMelFrontend({"kind": "logmel"})(wave)
        assert feats.is_cuda and torch.allclose(feats.cpu(), ref, rtol=0, atol=1e-3)
