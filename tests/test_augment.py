"""Augmentation transforms: shapes and lengths, what each transform does to a signal, determinism, bad config."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf
import torch

from wav2emo.augment import AddNoise, Gain, PitchShift, SpecAugment, Speed, build_augment
from wav2emo.augment.noise import pink
from wav2emo.errors import ConfigError

SR = 16000


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def batch(lengths=(16000, 9000, 12345), seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-padded harmonic tones with noise, one per length."""
    g = gen(seed)
    lengths = torch.tensor(lengths)
    t = torch.arange(int(lengths.max())) / SR
    wave = torch.stack([0.3 * torch.sin(2 * math.pi * (150 + 50 * i) * t) + 0.02 * torch.randn(len(t), generator=g)
                        for i in range(len(lengths))])
    return wave * (torch.arange(wave.shape[1]) < lengths[:, None]), lengths


def sine(freq: float, seconds: float = 2.0) -> torch.Tensor:
    return 0.5 * torch.sin(2 * math.pi * freq * torch.arange(int(seconds * SR)) / SR)


def peak_hz(x: torch.Tensor) -> float:
    """Frequency of the spectral peak of the middle of ``x`` (8x zero-padded FFT: 0.25 Hz bins for 0.5 s)."""
    mid = x[len(x) // 4: 3 * len(x) // 4]
    spec = torch.fft.rfft(mid * torch.hann_window(len(mid)), n=8 * len(mid)).abs()
    return float(spec.argmax()) * SR / (8 * len(mid))


def snr_db(clean: torch.Tensor, noisy: torch.Tensor, n: int) -> float:
    noise = noisy[:n] - clean[:n]
    return 10 * math.log10(float(clean[:n].square().sum() / noise.square().sum()))


def cfg(**wave) -> dict:
    return {"name": "t", "wave": wave}


ALL_WAVE = {"pitch": PitchShift(), "speed": Speed(), "noise": AddNoise(), "gain": Gain()}


# Shapes, lengths, padding ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(ALL_WAVE))
def test_shapes_lengths_and_zero_padding(name):
    wave, lengths = batch()
    out, out_len = ALL_WAVE[name](wave, lengths, gen())
    assert out.dim() == 2 and out.shape[0] == 3 and out.dtype == wave.dtype and out_len.shape == (3,)
    assert out.shape[1] == int(out_len.max())
    pad = torch.arange(out.shape[1]) >= out_len[:, None]
    assert torch.all(out[pad] == 0) and torch.isfinite(out).all()
    if name != "speed":
        assert torch.equal(out_len, lengths) and out.shape == wave.shape


def test_input_batch_not_modified():
    wave, lengths = batch()
    before = wave.clone()
    aug = build_augment({"wave": {"pitch": {"p": 1.0}, "noise": {"p": 1.0}, "gain": {"p": 1.0}}})
    aug({"wave": wave, "wave_lengths": lengths}, gen())
    assert torch.equal(wave, before)


# What each transform does -------------------------------------------------------------------------------------
@pytest.mark.parametrize("semitones", [2.0, -1.5, 0.5])
def test_pitch_shift_moves_a_sine_by_the_ratio(semitones):
    shift = PitchShift(semitones=(semitones, semitones))
    x = sine(300.0)[None]
    out, lengths = shift(x, torch.tensor([x.shape[1]]), gen())
    assert out.shape == x.shape and lengths.item() == x.shape[1]
    assert peak_hz(out[0]) == pytest.approx(300.0 * 2 ** (semitones / 12), rel=0.004)  # 0.004 ~ 7 cents
    # duration kept: the shifted tone fills the clip (its end as loud as its middle), not a shorter part of it
    assert float(out[0, -4000:-1000].square().mean()) > 0.5 * float(out[0, 14000:17000].square().mean())


@pytest.mark.parametrize("semitones", [12.0, -12.0])
def test_pitch_shift_matches_torchaudio(semitones):
    import torchaudio.functional as F

    # +/-12: one of the few shifts whose torchaudio kernel is small (16000 -> 32000 or 8000 Hz); a shift
    # of 1 semitone resamples 16951 -> 16000 Hz (gcd 1) and takes ~30 s on a CPU (pytorch/audio 3447)
    wave, lengths = batch((16000, 16000))
    ours, _ = PitchShift(semitones=(semitones, semitones))(wave, lengths, gen())
    ref = F.pitch_shift(wave, SR, semitones)  # same method and here the same exact ratio (2 or 1/2)
    err = (ours - ref)[:, 500:-500].square().mean() / ref[:, 500:-500].square().mean()
    assert float(err) < 1e-3


def test_pitch_refuses_a_batch_shorter_than_its_window():
    with pytest.raises(ValueError, match="too short"):
        PitchShift()(torch.zeros(2, 200), torch.tensor([200, 100]), gen())


def test_pitch_grid_and_effective_shifts():
    shift = PitchShift(semitones=(-2, 2), step=0.5)
    assert shift.grid == [-2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0]
    assert max(abs(a - b) for a, b in zip(shift.effective_semitones(), shift.grid, strict=True)) < 0.01
    assert all(r.denominator <= 100 for r in shift.ratios)


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_changes_duration_and_frequency(factor):
    x = sine(400.0)[None]
    out, lengths = Speed(factors=[factor])(x, torch.tensor([x.shape[1]]), gen())
    assert lengths.item() == math.ceil(x.shape[1] / factor) == out.shape[1]
    assert peak_hz(out[0]) == pytest.approx(400.0 * factor, rel=0.003)


def test_speed_one_is_identity():
    wave, lengths = batch()
    out, out_len = Speed(factors=[1.0])(wave, lengths, gen())
    assert torch.equal(out, wave) and torch.equal(out_len, lengths)


@pytest.mark.parametrize("kind", ["white", "pink", "babble"])
def test_noise_reaches_the_drawn_snr(kind):
    wave, lengths = batch((16000, 9000, 12345, 14000))
    out, _ = AddNoise(snr_db=(12.0, 12.0), kinds=[kind])(wave, lengths, gen())
    for b, n in enumerate(lengths.tolist()):
        assert snr_db(wave[b], out[b], n) == pytest.approx(12.0, abs=0.05)


def test_noise_snr_within_range_and_varies():
    wave, lengths = batch((16000,) * 8)
    out, _ = AddNoise(snr_db=(5.0, 25.0), kinds=["white"])(wave, lengths, gen())
    got = [snr_db(wave[b], out[b], 16000) for b in range(8)]
    assert all(5.0 - 0.05 <= s <= 25.0 + 0.05 for s in got) and max(got) - min(got) > 1.0


def test_babble_comes_from_other_clips_and_silence_stays_silent():
    wave, lengths = batch((16000, 16000))
    wave[1] = 0.0  # a silent clip: SNR undefined, no noise added
    out, _ = AddNoise(snr_db=(0.0, 0.0), kinds=["babble"], babble_speakers=1)(wave, lengths, gen())
    assert torch.equal(out[1], wave[1])
    single, _ = AddNoise(kinds=["babble"])(wave[:1], lengths[:1], gen())  # nobody else to babble
    assert torch.equal(single, wave[:1])


def test_pink_noise_has_one_over_f_power():
    x = pink((4, 64000), gen(), torch.device("cpu"))
    psd = torch.fft.rfft(x, dim=-1).abs().square().mean(0)
    hz = torch.fft.rfftfreq(64000, 1 / SR)
    low = psd[(hz >= 100) & (hz < 200)].mean()
    high = psd[(hz >= 1000) & (hz < 2000)].mean()
    assert 5 < float(low / high) < 20  # 1/f: 10x the frequency, 1/10 the power density


def test_gain_scales_in_db():
    wave, lengths = batch()
    out, _ = Gain(gain_db=(6.0, 6.0))(wave, lengths, gen())
    assert torch.allclose(out, wave * 10 ** (6 / 20))


# Noise folder -------------------------------------------------------------------------------------------------
def write_noise(path, seconds=0.5, seed=0, silent=False):
    rng = np.random.default_rng(seed)
    x = np.zeros(int(seconds * SR)) if silent else 0.1 * rng.standard_normal(int(seconds * SR))
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x, SR)
    return path


def test_noise_folder_used_and_snr_reached(tmp_path):
    write_noise(tmp_path / "noise" / "a.wav", 0.3, seed=1)
    write_noise(tmp_path / "noise" / "sub" / "b.flac", 0.2, seed=2)
    noise = AddNoise(snr_db=(8.0, 8.0), kinds=["folder"], folder=tmp_path / "noise")
    assert len(noise.bank.files) == 2
    wave, lengths = batch()  # clips longer than the noise files: the noise is looped
    out, _ = noise(wave, lengths, gen())
    for b, n in enumerate(lengths.tolist()):
        assert snr_db(wave[b], out[b], n) == pytest.approx(8.0, abs=0.05)


def test_noise_folder_errors_name_the_problem(tmp_path):
    def build(folder):
        return build_augment(cfg(noise={"kinds": ["folder"], "folder": str(folder)}))

    with pytest.raises(ConfigError, match="no such folder"):
        build(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not audio")
    with pytest.raises(ConfigError, match="holds no audio files"):
        build(tmp_path / "empty")
    write_noise(tmp_path / "bad" / "good.wav")
    (tmp_path / "bad" / "broken.wav").write_bytes(b"RIFF not really a wav file")
    with pytest.raises(ConfigError, match="broken.wav"):
        build(tmp_path / "bad")
    write_noise(tmp_path / "quiet" / "zero.wav", silent=True)
    with pytest.raises(ConfigError, match="zero.wav.*silent"):
        build(tmp_path / "quiet")
    with pytest.raises(ConfigError, match="folder"):
        build_augment(cfg(noise={"kinds": ["white"], "folder": str(tmp_path / "bad")}))


# Determinism and probability ------------------------------------------------------------------------------------
STANDARD = {"pitch": {"p": 0.5}, "speed": {"p": 0.5}, "noise": {"p": 0.5}, "gain": {"p": 0.5}}


def test_same_seed_same_result_other_seed_differs():
    aug = build_augment(cfg(**STANDARD))
    wave, lengths = batch((16000, 9000, 12345, 8000, 15000, 11000))
    inp = {"wave": wave, "wave_lengths": lengths}
    a, b, c = aug(inp, gen(3)), aug(inp, gen(3)), aug(inp, gen(4))
    assert torch.equal(a["wave"], b["wave"]) and torch.equal(a["wave_lengths"], b["wave_lengths"])
    assert a["wave"].shape != c["wave"].shape or not torch.equal(a["wave"], c["wave"])


def test_probability_zero_is_identity_and_one_changes_every_example():
    wave, lengths = batch()
    off = build_augment(cfg(**{k: {"p": 0.0} for k in STANDARD}))
    out = off({"wave": wave, "wave_lengths": lengths}, gen())
    assert torch.equal(out["wave"], wave) and torch.equal(out["wave_lengths"], lengths)
    on = build_augment(cfg(noise={"p": 1.0}))
    out = on({"wave": wave, "wave_lengths": lengths}, gen())
    assert all(not torch.equal(out["wave"][b], wave[b]) for b in range(3))


def test_compose_applies_to_a_subset_and_keeps_others():
    wave, lengths = batch((16000,) * 40)
    aug = build_augment(cfg(speed={"p": 0.5, "factors": [1.1]}))
    out = aug({"wave": wave, "wave_lengths": lengths}, gen())
    short = out["wave_lengths"] == math.ceil(16000 / 1.1)
    kept = out["wave_lengths"] == 16000
    assert bool((short | kept).all()) and 5 < int(short.sum()) < 35
    assert torch.equal(out["wave"][kept], wave[kept])


def test_none_config_is_identity():
    import yaml

    from tests.conftest import REPO_ROOT

    aug = build_augment(yaml.safe_load((REPO_ROOT / "conf" / "augment" / "none.yaml").read_text()))
    assert aug.is_identity and aug.mode == "online"


@pytest.mark.parametrize("name", ["none", "pitch", "speed", "noise", "gain", "spec", "standard"])
def test_every_shipped_config_builds(name):
    import yaml

    from tests.conftest import REPO_ROOT

    raw = yaml.safe_load((REPO_ROOT / "conf" / "augment" / f"{name}.yaml").read_text())
    aug = build_augment(raw)
    assert aug.config["name"] == name and aug.identity()["name"] == name


def test_build_accepts_omegaconf():
    from omegaconf import OmegaConf

    aug = build_augment(OmegaConf.create({"mode": "cached", "copies": 2, "wave": {"gain": {"p": 1.0}}}))
    assert aug.mode == "cached" and aug.copies == 2


# Bad config ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("config", "match"), [
    (cfg(pitch={"semitones": [-13, 2]}), r"pitch.semitones.*outside"),
    (cfg(pitch={"semitones": [2, -2]}), r"pitch.semitones.*reversed"),
    (cfg(pitch={"step": 0}), r"pitch.step"),
    (cfg(speed={"factors": [0.9, 0]}), r"speed.factors.*> 0"),
    (cfg(speed={"factors": [-1.1]}), r"speed.factors"),
    (cfg(speed={"factors": []}), r"speed.factors"),
    (cfg(noise={"snr_db": [20, 10]}), r"noise.snr_db.*reversed"),
    (cfg(noise={"kinds": ["brown"]}), r"noise.kinds"),
    (cfg(gain={"gain_db": [6, -6]}), r"gain.gain_db.*reversed"),
    (cfg(gain={"p": 1.5}), r"gain.p"),
    (cfg(gain={"gain": 3}), r"unknown settings \['gain'\]"),
    (cfg(reverb={}), r"wave.reverb: unknown transform"),
    ({"mode": "offline"}, r"augment.mode"),
    ({"mode": "cached", "copies": 0}, r"augment.copies"),
    ({"waves": {}}, r"unknown keys \['waves'\]"),
    ({"features": {"spec": {"fill": "nan"}}}, r"spec.fill"),
    ({"features": {"spec": {"time_masks": -1}}}, r"spec.time_masks"),
    ({"features": {"spec": {"time_max_frac": 2}}}, r"spec.time_max_frac"),
    ({"feature_keys": ["mfcc"]}, r"feature_keys"),
])
def test_bad_values_raise_config_error(config, match):
    with pytest.raises(ConfigError, match=match):
        build_augment(config)


def test_batch_without_waveforms_is_refused():
    aug = build_augment(cfg(gain={}))
    with pytest.raises(ValueError, match="no 'wave'"):
        aug({"logmel": torch.zeros(1, 3, 4)}, gen())


# SpecAugment --------------------------------------------------------------------------------------------------
def test_spec_augment_respects_mask_and_lengths():
    feats = torch.randn(5, 200, 64)
    lengths = torch.tensor([200, 120, 30, 1, 0])
    mask = torch.arange(200)[None, :] < lengths[:, None]
    spec = SpecAugment(time_masks=2, time_width=40, time_max_frac=0.2, freq_masks=2, freq_width=8)
    out = spec(feats, mask, gen())
    changed = out != feats
    assert not changed[~mask].any()  # padding untouched
    assert not changed[4].any() and not changed[3, 1:].any()  # no real frames / one real frame
    assert not changed[3].all(dim=1).any()  # one frame: too short for a time mask (20 % of 1 frame = 0 frames)
    assert changed[:3].any(dim=(1, 2)).all()
    for b in range(3):
        full_rows = changed[b, : lengths[b]].all(dim=1)  # frames masked across every band = time masks
        assert int(full_rows.sum()) <= 2 * min(40, int(0.2 * lengths[b]))
        full_cols = changed[b, : lengths[b]].all(dim=0)
        assert int(full_cols.sum()) <= 2 * 8
        mean = feats[b, : lengths[b]].mean()
        assert torch.allclose(out[b][changed[b]], mean.expand(int(changed[b].sum())))


def test_spec_augment_on_hidden_states_masks_all_layers_alike():
    feats = torch.randn(2, 3, 50, 16)
    mask = torch.ones(2, 50, dtype=torch.bool)
    out = SpecAugment(fill="zero", time_width=10, freq_width=4)(feats, mask, gen())
    changed = out != feats
    assert changed.any() and torch.equal(changed[:, 0], changed[:, 1]) and torch.equal(changed[:, 0], changed[:, 2])
    assert torch.all(out[changed] == 0)


def test_spec_config_masks_logmel_only_in_batch():
    aug = build_augment({"features": {"spec": {"p": 1.0}}, "feature_keys": ["logmel"]})
    feats = torch.randn(2, 100, 64)
    mask = torch.ones(2, 100, dtype=torch.bool)
    b = {"logmel": feats, "logmel_mask": mask, "label": torch.tensor([1, 2])}
    out = aug(b, gen())
    assert not torch.equal(out["logmel"], feats) and out["label"] is b["label"] and b["logmel"] is feats


# Devices --------------------------------------------------------------------------------------------------------
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_batch_with_cpu_or_cuda_generator():
    aug = build_augment(cfg(**{k: {"p": 1.0} for k in STANDARD}))
    wave, lengths = batch()
    for g in (gen(), torch.Generator(device="cuda").manual_seed(0)):
        out = aug({"wave": wave.cuda(), "wave_lengths": lengths.cuda()}, g)
        assert out["wave"].is_cuda and torch.isfinite(out["wave"]).all()


def test_hydra_group_composes_and_overrides_are_checked():
    from hydra import compose, initialize_config_dir

    from tests.conftest import REPO_ROOT

    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["augment=standard", "augment.wave.pitch.p=0.3", "augment.mode=cached"])
        aug = build_augment(cfg.augment)
        assert aug.mode == "cached" and aug.identity()["wave"][0]["p"] == 0.3
        bad = compose(config_name="train", overrides=["augment=noise", "augment.wave.noise.snr_db=[20,10]"])
    with pytest.raises(ConfigError, match=r"snr_db: range \[20.0, 10.0\] is reversed"):
        build_augment(bad.augment)
