"""eGeMAPS of in-memory windows in worker processes (prediction): the same values as in this process."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("opensmile")

SR = 16_000


def _waves() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    t = np.arange(SR * 2) / SR
    voiced = (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    noise = (0.05 * rng.standard_normal(SR * 3)).astype(np.float32)
    chirp = (0.2 * np.sin(2 * np.pi * (100 + 60 * t) * t)).astype(np.float32)
    return [voiced, noise, chirp, voiced[: SR // 2]]


def test_the_pool_gives_process_signals_values_in_order():
    import opensmile

    from wav2emo.features.smile_waves import SmileWavePool

    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                            feature_level=opensmile.FeatureLevel.Functionals)
    waves = _waves() * 3  # more requests than workers: each worker serves several, results stay in order
    with SmileWavePool(2) as pool:
        assert pool.feature_names() == list(smile.feature_names)
        got = pool.map(waves, SR)
        again = pool.map(waves[:2], SR)  # the pool serves batch after batch
    for w, g in zip(waves, got, strict=True):
        want = smile.process_signal(w, SR).to_numpy(dtype=np.float32)
        assert g.shape == want.shape == (1, 88)
        np.testing.assert_array_equal(g, want)
    np.testing.assert_array_equal(np.stack(again), np.stack(got[:2]))


def test_in_memory_features_with_workers_equal_the_serial_way():
    from wav2emo.inference.features import InMemoryFeatures

    spec = {"egemaps": {"kind": "egemaps_functionals", "feature_set": "eGeMAPSv02", "min_clip_s": 0.06}}
    serial = InMemoryFeatures(spec, ["egemaps"], device="cpu", egemaps_workers=0)
    pooled = InMemoryFeatures(spec, ["egemaps"], device="cpu", egemaps_workers=2)
    try:
        waves = _waves()
        assert pooled.input_shape("egemaps") == serial.input_shape("egemaps") == (88,)
        early = [pooled.submit_egemaps(w) for w in waves]  # queued as the runner does, when a window is read
        for got in (pooled.items(waves, egemaps=early), pooled.items(waves)):
            for a, b in zip(got, serial.items(waves), strict=True):
                assert np.array_equal(a["egemaps"].numpy(), b["egemaps"].numpy())
    finally:
        pooled.close()
    assert all(p.poll() is not None for p in pooled.smile_pool.procs)  # closed: no process left behind


def test_egemaps_nice_lowers_the_workers_priority_and_keeps_their_values():
    import os

    from wav2emo.inference.features import InMemoryFeatures

    spec = {"egemaps": {"kind": "egemaps_functionals", "feature_set": "eGeMAPSv02", "min_clip_s": 0.06}}
    same = InMemoryFeatures(spec, ["egemaps"], device="cpu", egemaps_workers=1)
    niced = InMemoryFeatures(spec, ["egemaps"], device="cpu", egemaps_workers=1, egemaps_nice=7)
    try:
        waves = _waves()
        assert [np.asarray(x["egemaps"]).tolist() for x in niced.items(waves)] == \
            [np.asarray(x["egemaps"]).tolist() for x in same.items(waves)]
        own = os.getpriority(os.PRIO_PROCESS, 0)
        assert os.getpriority(os.PRIO_PROCESS, same.smile_pool.procs[0].pid) == own
        assert os.getpriority(os.PRIO_PROCESS, niced.smile_pool.procs[0].pid) == min(19, own + 7)
    finally:
        same.close()
        niced.close()


def test_a_window_openSMILE_cannot_use_is_an_error_not_a_number():
    from wav2emo.inference.features import InMemoryFeatures

    spec = {"egemaps": {"kind": "egemaps_functionals", "feature_set": "eGeMAPSv02"}}
    pooled = InMemoryFeatures(spec, ["egemaps"], device="cpu", egemaps_workers=1)
    try:
        with pytest.raises(ValueError, match="NaN/inf eGeMAPS"):
            pooled.items([np.zeros(400, dtype=np.float32)])  # below openSMILE's 960 samples: NaN functionals
        ok = pooled.items(_waves()[:1])  # the worker goes on after it
        assert np.isfinite(ok[0]["egemaps"].numpy()).all()
    finally:
        pooled.close()
