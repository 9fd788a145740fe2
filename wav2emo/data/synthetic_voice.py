"""The voice model of the synthetic corpus: one RAVDESS-shaped clip as a pure function of its fields.

A source-filter imitation of speech (see :mod:`wav2emo.data.synthetic` for why): a glottal pulse train
following an F0 contour, filtered by formants moving through the phones of the two RAVDESS statements.
Speakers differ in pitch, vocal-tract length and habits; emotions in prosody and voice quality.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_DURATION, MAX_DURATION = 2.94, 5.27  # seconds, the range of the real RAVDESS speech clips


# ------------------------------------------------------------------------------------------------
# Speakers and emotions
# ------------------------------------------------------------------------------------------------
# Emotion profiles at normal intensity.  Columns: F0 shift (semitones), accent size (st), final
# rise/fall (st), tempo (rate factor), loudness (dB), spectral tilt (extra dB/octave, + = darker),
# jitter (%), shimmer (%), breathiness (aspiration ratio), open quotient, tremor depth (st),
# formant scale, stressed-vowel lengthening.
# fmt: off
_PARAMS = ("f0", "range", "final", "tempo", "loud", "tilt", "jitter", "shimmer", "breath", "oq", "tremor",
           "formant", "stress")
_EMOTION_TABLE = np.array([
    # f0   range final tempo loud  tilt  jit  shim breath  oq   trem  form  stress
    [0.0,  2.0, -2.0, 1.00,  0.0,  0.0, 0.8, 4.0, 0.10, 0.60, 0.00, 1.00, 1.00],  # neutral
    [-0.6, 1.7, -2.3, 0.96, -1.5,  0.8, 0.7, 3.6, 0.15, 0.63, 0.00, 0.99, 1.05],  # calm
    [2.8,  3.8, -1.0, 1.01,  4.0, -1.5, 0.9, 4.5, 0.11, 0.55, 0.00, 1.04, 1.05],  # happy
    [-0.4, 1.2, -3.0, 0.93, -4.0,  2.5, 1.3, 6.0, 0.28, 0.68, 0.25, 0.97, 1.08],  # sad
    [3.0,  3.4, -4.5, 0.99,  8.0, -3.5, 1.1, 5.0, 0.05, 0.46, 0.00, 1.06, 1.20],  # angry
    [4.3,  2.6,  0.5, 1.03,  3.0, -0.6, 1.7, 6.5, 0.26, 0.58, 0.45, 1.02, 0.97],  # fearful
    [-0.9, 2.8, -3.5, 0.91,  1.0,  0.8, 1.2, 6.0, 0.17, 0.58, 0.10, 0.98, 1.20],  # disgust
    [4.0,  4.6,  3.5, 1.03,  4.5, -1.8, 0.9, 4.5, 0.19, 0.56, 0.05, 1.03, 1.08],  # surprised
])
# fmt: on
# How far each emotion moves away from neutral, as a multiple of the table above.
_CUE_GAIN = 1.8
# Per-clip spread of each parameter (one standard deviation), and the spread of a speaker's habitual
# deviation for one emotion; both are of the size of the smaller emotion differences.
_CLIP_SD = 0.6 * np.array([0.8, 0.6, 1.2, 0.05, 1.5, 0.6, 0.25, 1.0, 0.05, 0.03, 0.10, 0.012, 0.08])
_IDIOSYNCRASY_SD = 0.8 * _CLIP_SD
_STRONG = 1.7  # strong intensity multiplies the deviation from neutral
_STRONG_SLOWDOWN = 1.08


@dataclass(frozen=True)
class Speaker:
    """One actor's voice and habits."""

    f0: float  # Hz, habitual pitch
    vtl: float  # formant scale (shorter vocal tract -> higher formants)
    habits: np.ndarray  # additive offsets to the emotion parameters
    expressiveness: float  # how far this actor moves away from neutral
    range_scale: float  # habitual accent size
    emotion_bias: np.ndarray  # (8, len(_PARAMS)) idiosyncratic offsets per emotion
    noise_db: float  # recording noise floor, dBFS


def make_speaker(seed: int, actor: int) -> Speaker:
    """Odd actors male (F0 100-140 Hz), even female (180-240 Hz), as in RAVDESS."""
    rng = np.random.default_rng([seed, actor, 7919])
    male = actor % 2 == 1
    habits = np.zeros(len(_PARAMS))
    habits[_PARAMS.index("tempo")] = rng.normal(0, 0.07)
    habits[_PARAMS.index("loud")] = rng.normal(0, 2.5)
    habits[_PARAMS.index("tilt")] = rng.normal(0, 1.0)
    habits[_PARAMS.index("jitter")] = rng.normal(0, 0.2)
    habits[_PARAMS.index("shimmer")] = rng.normal(0, 0.8)
    habits[_PARAMS.index("breath")] = rng.uniform(0, 0.08) + (0.0 if male else 0.04)
    habits[_PARAMS.index("oq")] = rng.normal(0, 0.03) + (0.0 if male else 0.04)
    habits[_PARAMS.index("final")] = rng.normal(0, 0.8)
    return Speaker(
        f0=float(rng.uniform(100, 140) if male else rng.uniform(180, 240)),
        vtl=float(rng.uniform(0.93, 1.04) if male else rng.uniform(1.10, 1.21)),
        habits=habits,
        expressiveness=float(rng.uniform(0.8, 1.3)),
        range_scale=float(np.exp(rng.normal(0, 0.2))),
        emotion_bias=rng.normal(0, 1, size=(8, len(_PARAMS))) * _IDIOSYNCRASY_SD,
        noise_db=float(rng.uniform(-86, -72)),
    )


def clip_parameters(speaker: Speaker, emotion: int, intensity: int, rng: np.random.Generator) -> dict:
    """The prosody and voice-quality settings of one clip."""
    neutral = _EMOTION_TABLE[0]
    dev = (_EMOTION_TABLE[emotion - 1] - neutral) * _CUE_GAIN
    dev = dev * (_STRONG if intensity == 2 else 1.0) * speaker.expressiveness
    values = neutral + dev + speaker.habits + speaker.emotion_bias[emotion - 1]
    values = values + rng.normal(0, 1, size=len(_PARAMS)) * _CLIP_SD
    p = dict(zip(_PARAMS, values.tolist(), strict=True))
    p["range"] = max(0.3, p["range"]) * speaker.range_scale
    p["tempo"] = float(np.clip(p["tempo"], 0.55, 1.5))
    p["jitter"] = max(0.2, p["jitter"]) / 100
    p["shimmer"] = max(1.0, p["shimmer"]) / 100
    p["breath"] = float(np.clip(p["breath"], 0.01, 0.8))
    p["oq"] = float(np.clip(p["oq"], 0.35, 0.85))
    p["tremor"] = max(0.0, p["tremor"])
    p["stress"] = max(0.8, p["stress"])
    return p


# ------------------------------------------------------------------------------------------------
# Phones of the two statements
# ------------------------------------------------------------------------------------------------
# Vowel formants (Hz, adult male, F1-F3).
# fmt: off
_V = {
    "I": (400, 1900, 2550), "a": (710, 1100, 2540), "O": (590, 880, 2540), "A": (730, 1090, 2440),
    "i": (330, 2100, 2700), "@": (500, 1500, 2500), "r": (450, 1200, 1650), "N": (280, 2000, 2600),
    "z": (300, 1700, 2600), "D": (350, 1500, 2500),
}
# A phone: (kind, duration ms, formant key, stressed, noise centre Hz).  Kinds: V vowel, N nasal or
# liquid, C stop closure, B stop burst, F voiceless fricative, Z voiced fricative.
_K = ("C", 55, "@", 0, 0)
_STATEMENT_1 = [  # "Kids are talking by the door"
    _K, ("B", 20, "I", 0, 2500), ("V", 105, "I", 1, 0), ("C", 45, "I", 0, 0), ("B", 15, "I", 0, 4000),
    ("Z", 85, "z", 0, 5500), ("V", 85, "a", 0, 0), ("N", 55, "r", 0, 0),
    ("C", 50, "@", 0, 0), ("B", 25, "O", 0, 4500), ("V", 150, "O", 1, 0), _K, ("B", 20, "I", 0, 2500),
    ("V", 70, "I", 0, 0), ("N", 70, "N", 0, 0),
    ("C", 50, "@", 0, 0), ("B", 15, "A", 0, 1200), ("V", 90, "A", 1, 0), ("V", 80, "i", 1, 0),
    ("Z", 45, "D", 0, 3500), ("V", 60, "@", 0, 0),
    ("C", 50, "@", 0, 0), ("B", 15, "O", 0, 4000), ("V", 175, "O", 1, 0), ("N", 120, "r", 0, 0),
]
_STATEMENT_2 = [  # "Dogs are sitting by the door"
    ("C", 50, "@", 0, 0), ("B", 15, "O", 0, 4000), ("V", 130, "O", 1, 0), ("C", 50, "@", 0, 0),
    ("B", 15, "O", 0, 2000), ("Z", 80, "z", 0, 5500), ("V", 85, "a", 0, 0), ("N", 55, "r", 0, 0),
    ("F", 105, "I", 0, 6000), ("V", 105, "I", 1, 0), ("C", 35, "@", 0, 0), ("B", 12, "I", 0, 4500),
    ("V", 65, "I", 0, 0), ("N", 75, "N", 0, 0),
    ("C", 50, "@", 0, 0), ("B", 15, "A", 0, 1200), ("V", 90, "A", 1, 0), ("V", 80, "i", 1, 0),
    ("Z", 45, "D", 0, 3500), ("V", 60, "@", 0, 0),
    ("C", 50, "@", 0, 0), ("B", 15, "O", 0, 4000), ("V", 175, "O", 1, 0), ("N", 120, "r", 0, 0),
]
_STATEMENTS = {1: _STATEMENT_1, 2: _STATEMENT_2}
# F4.. of a neutral male tract: without them a 3-formant cascade falls ~36 dB/octave above F3 and the
# voice sounds muffled; real speech keeps energy up to 8 kHz.
_HIGHER_POLES = np.array([3400.0, 4400.0, 5500.0, 6600.0])
_BANDWIDTHS = np.array([80.0, 100.0, 140.0, 220.0, 300.0, 450.0, 600.0])
# (voiced amplitude, noise amplitude) per kind
_KIND_AMPS = {"V": (1.0, 0.0), "N": (0.35, 0.0), "C": (0.0, 0.0), "B": (0.0, 0.5), "F": (0.0, 0.28),
              "Z": (0.22, 0.16)}
# fmt: on


# ------------------------------------------------------------------------------------------------
# Synthesis
# ------------------------------------------------------------------------------------------------
def _smooth(x: np.ndarray, width: int) -> np.ndarray:
    """Moving average along axis 0 with edge padding (coarticulation, no clicks)."""
    if width <= 1:
        return x
    k = np.ones(width) / width
    pad = [(width // 2, width - 1 - width // 2)] + [(0, 0)] * (x.ndim - 1)
    xp = np.pad(x, pad, mode="edge")
    if x.ndim == 1:
        return np.convolve(xp, k, mode="valid")
    return np.stack([np.convolve(xp[:, j], k, mode="valid") for j in range(x.shape[1])], axis=1)


def _glottal(phase_frac: np.ndarray, oq: float) -> np.ndarray:
    """Rosenberg glottal flow over one period (0..1): opening, faster closing, closed phase."""
    tp, tn = 0.64 * oq, 0.36 * oq
    u = np.zeros_like(phase_frac)
    op = phase_frac < tp
    cl = (phase_frac >= tp) & (phase_frac < tp + tn)
    u[op] = 0.5 * (1 - np.cos(np.pi * phase_frac[op] / tp))
    u[cl] = np.cos(0.5 * np.pi * (phase_frac[cl] - tp) / tn)
    return u


def synthesize_clip(
    seed: int,
    actor: int,
    emotion: int,
    intensity: int,
    statement: int,
    repetition: int,
    sample_rate: int = 16000,
) -> np.ndarray:
    """One clip as float32 mono in [-1, 1]; a pure function of its arguments."""
    speaker = make_speaker(seed, actor)
    rng = np.random.default_rng([seed, actor, emotion, intensity, statement, repetition, 104729])
    p = clip_parameters(speaker, emotion, intensity, rng)
    sr = sample_rate
    win = 1 << int(np.ceil(np.log2(0.032 * sr)))
    hop = win // 4
    frame_rate = sr / hop

    # Phone timing: tempo, stress lengthening, per-phone jitter, final lengthening.
    phones = _STATEMENTS[statement]
    dur = np.array([ph[1] for ph in phones], float) / 1000.0
    stressed = np.array([ph[3] for ph in phones], bool)
    dur = dur * np.where(stressed, p["stress"], 1.0) / p["tempo"]
    if intensity == 2:  # emphatic speech is slower whatever the emotion (as in RAVDESS)
        dur *= _STRONG_SLOWDOWN
    dur *= np.exp(rng.normal(0, 0.12, size=len(dur)))
    speech = float(dur.sum())
    lead = rng.uniform(0.85, 1.1)
    total = float(np.clip(lead + speech + rng.uniform(0.7, 1.15), MIN_DURATION + 0.005, MAX_DURATION - 0.005))
    if lead + speech + 0.2 > total:  # very slow speech: shorten the silences, never the speech
        lead = max(0.3, total - speech - 0.2)
    n = int(round(total * sr))
    n_frames = int(np.ceil(n / hop)) + 1
    t = np.arange(n_frames) / frame_rate
    bounds = lead + np.concatenate([[0.0], np.cumsum(dur)])
    idx = np.clip(np.searchsorted(bounds, t, side="right") - 1, -1, len(phones))
    inside = (idx >= 0) & (idx < len(phones))
    ph_idx = np.clip(idx, 0, len(phones) - 1)

    # Frame tracks: formants (phone targets, smoothed), voiced/noise amplitudes, noise colour.
    fm = np.array([_V[ph[2]] for ph in phones], float)[ph_idx]
    fm = np.concatenate([fm, np.tile(_HIGHER_POLES, (n_frames, 1))], axis=1)
    fm = _smooth(fm, 7) * speaker.vtl * p["formant"]
    amps = np.array([_KIND_AMPS[ph[0]] for ph in phones])[ph_idx] * inside[:, None]
    stress_gain = np.where(stressed[ph_idx], 1.0, 0.7) * inside
    amps[:, 0] *= stress_gain
    amps = _smooth(amps, 3)
    noise_fc = _smooth(np.array([ph[4] for ph in phones], float)[ph_idx], 3)

    # F0 contour in semitones: emotion level, declination, accents on stressed vowels, final
    # rise/fall, tremor and slow wander.
    centres = lead + np.cumsum(dur) - dur / 2
    f0_st = np.full(n_frames, p["f0"]) - 1.5 * (t - lead) / max(speech, 0.5)
    for c in centres[stressed]:
        f0_st += p["range"] * rng.uniform(0.6, 1.3) * np.exp(-0.5 * ((t - c) / 0.09) ** 2)
    end = lead + speech
    ramp = np.clip((t - (end - 0.45)) / 0.45, 0, 1)
    f0_st += p["final"] * ramp
    f0_st += p["tremor"] * np.sin(2 * np.pi * rng.uniform(5, 7) * t + rng.uniform(0, 6.3))
    wander = _smooth(rng.normal(0, 1, n_frames), 25)
    f0_st += 0.6 * wander / (wander.std() + 1e-9)
    f0_frames = speaker.f0 * 2.0 ** (f0_st / 12)

    # Sample-rate source: glottal flow derivative with jitter and shimmer, pulsed aspiration noise.
    ts = np.arange(n) / sr
    f0 = np.interp(ts, t, f0_frames)
    cycles = np.floor(np.cumsum(f0) / sr).astype(np.int64)
    n_cycles = int(cycles[-1]) + 2
    f0 = f0 * (1 + p["jitter"] * rng.normal(0, 1, n_cycles)[cycles])
    phase = np.cumsum(f0) / sr
    cyc = np.floor(phase).astype(np.int64)
    flow = _glottal(phase - cyc, p["oq"])
    shimmer = 1 + p["shimmer"] * rng.normal(0, 1, int(cyc[-1]) + 2)[cyc]
    voiced = np.diff(flow, prepend=0.0) * shimmer * (sr / 1000.0)
    av = np.interp(ts, t, amps[:, 0])
    an = np.interp(ts, t, amps[:, 1])
    aspiration = rng.normal(0, 1, n) * (0.35 + flow) * p["breath"] * 0.25
    source = (voiced + aspiration) * av
    noise = rng.normal(0, 1, n) * an * 0.12

    # Time-varying filtering in the STFT domain: formant envelope x tilt for the voiced path,
    # a band around the fricative/burst centre for the noise path.
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)
    freqs = np.fft.rfftfreq(win, 1 / sr)

    def frames(x: np.ndarray) -> np.ndarray:
        xp = np.pad(x, (win, win + hop))
        v = np.lib.stride_tricks.sliding_window_view(xp, win)[::hop]
        return v * window

    fs_voiced = np.fft.rfft(frames(source), axis=1)
    fs_noise = np.fft.rfft(frames(noise), axis=1)
    m = fs_voiced.shape[0]
    ft = (np.arange(m) * hop - win + win / 2) / sr  # frame centre times
    fi = np.clip(np.round(ft * frame_rate).astype(int), 0, n_frames - 1)
    fmt = fm[fi]
    bw = _BANDWIDTHS * (1 + np.array([1.5, 0.5, 0, 0, 0, 0, 0]) * p["breath"])
    f = freqs[None, :, None]
    fk = fmt[:, None, :]
    env = np.prod(fk**2 / np.sqrt((fk**2 - f**2) ** 2 + (bw * f) ** 2), axis=2)
    tilt = 10 ** (-p["tilt"] * np.log2(np.maximum(freqs, 300) / 300) / 20)
    fc = noise_fc[fi][:, None]
    band = np.exp(-0.5 * (np.log2(np.maximum(freqs, 50)[None, :] / np.maximum(fc, 100)) / 0.6) ** 2)
    spec = fs_voiced * env * tilt + fs_noise * band
    y_frames = np.fft.irfft(spec, n=win, axis=1) * window
    out = np.zeros((m + 3) * hop)
    for j in range(win // hop):
        blocks = y_frames[:, j * hop : (j + 1) * hop].reshape(-1)
        out[j * hop : j * hop + blocks.size] += blocks
    y = out[win : win + n] / 1.5

    # Level: active-speech RMS at an emotion- and speaker-dependent level, plus a noise floor.
    active = av > 0.5
    rms = np.sqrt(np.mean(y[active] ** 2)) if active.any() else np.sqrt(np.mean(y**2)) + 1e-12
    level_db = -32.0 + p["loud"]
    y = y * (10 ** (level_db / 20) / max(rms, 1e-12))
    y = y + rng.normal(0, 10 ** (speaker.noise_db / 20), n)
    peak = np.max(np.abs(y))
    if peak > 0.95:  # soft limiter, as a recording engineer's gain would
        y = 0.95 * np.tanh(y / peak * 1.3) / np.tanh(1.3)
    return y.astype(np.float32)


