"""Tiny corpus trees in each corpus's exact layout and names, written by the tests (short tones)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf


def tone(path: Path, *, seconds: float = 0.1, sr: int = 16000, channels: int = 1, seed: int = 0,
         fmt: str | None = None) -> Path:
    """A short noisy tone (well above the silence threshold) at ``path``, in the container ``fmt``."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    x = 0.3 * np.sin(2 * np.pi * (200 + 10 * (seed % 30)) * t) + 0.02 * rng.standard_normal(n)
    data = np.stack([x] * channels, axis=1) if channels > 1 else x
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data.astype(np.float32), sr, format=fmt, subtype="PCM_16")
    return path


def emodb_tree(root: Path, speakers=("03", "08", "09", "10", "11", "12", "13", "14", "15", "16"),
               codes="WLEAFTN") -> Path:
    for i, s in enumerate(speakers):
        for j, e in enumerate(codes):
            tone(root / "wav" / f"{s}a01{e}a.wav", seed=i * 10 + j)
    return root


def crema_d_tree(root: Path, actors=(1001, 1002, 1003, 1004), demographics: bool = True) -> Path:
    for i, a in enumerate(actors):
        for j, (e, lvl) in enumerate((("ANG", "HI"), ("DIS", "XX"), ("FEA", "LO"), ("HAP", "MD"), ("NEU", "XX"),
                                      ("SAD", "XX"))):
            tone(root / "AudioWAV" / f"{a}_DFA_{e}_{lvl}.wav", seed=i * 10 + j)
    if demographics:
        rows = [f"{a},51,{'Male' if a % 2 else 'Female'},Caucasian,Not Hispanic" for a in actors]
        (root / "VideoDemographics.csv").write_text("ActorID,Age,Sex,Race,Ethnicity\n" + "\n".join(rows) + "\n")
    return root


def tess_tree(root: Path, words=("back", "bar")) -> Path:
    folders = {"angry": "angry", "disgust": "disgust", "fear": "Fear", "happy": "happy", "ps": "Pleasant_surprise",
               "sad": "Sad", "neutral": "neutral"}
    k = 0
    for spk in ("OAF", "YAF"):
        for code, folder in folders.items():
            for w in words:
                tone(root / f"{spk}_{folder}" / f"{spk}_{w}_{code}.wav", seed=k)
                k += 1
    return root


def savee_tree(root: Path, flat: bool = False) -> Path:
    k = 0
    for spk in ("DC", "JE", "JK", "KL"):
        for code in ("a", "d", "f", "h", "n", "sa", "su"):
            name = f"{code}01.wav"
            tone(root / ("ALL" if flat else "AudioData") / (f"{spk}_{name}" if flat else f"{spk}/{name}"), seed=k)
            k += 1
    return root


def emovo_tree(root: Path) -> Path:
    k = 0
    for spk in ("f1", "f2", "f3", "m1", "m2", "m3"):
        for code in ("dis", "gio", "neu", "pau", "rab", "sor", "tri"):
            tone(root / spk / f"{code}-{spk}-b1.wav", seed=k)
            k += 1
    return root


def iemocap_tree(root: Path, extra_label: str | None = None) -> Path:
    """Sessions 1..5, one improvised and one scripted dialogue each, both speakers in both."""
    k = 0
    for s in range(1, 6):
        for dialog in (f"Ses0{s}F_impro01", f"Ses0{s}M_script01_1"):
            lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n"]
            for i, (g, code) in enumerate((("F", "neu"), ("M", "hap"), ("F", "exc"), ("M", "sad"), ("F", "ang"),
                                           ("M", "fru"))):
                utt = f"{dialog}_{g}{i:03d}"
                tone(root / f"Session{s}" / "sentences" / "wav" / dialog / f"{utt}.wav", seed=k)
                k += 1
                lines.append(f"[{i}.0000 - {i}.5000]\t{utt}\t{code}\t[2.5000, 2.5000, 2.5000]\n")
            if extra_label and s == 1 and "impro" in dialog:
                lines.append(f"[9.0000 - 9.5000]\t{extra_label}\tneu\t[2.5000, 2.5000, 2.5000]\n")
            evald = root / f"Session{s}" / "dialog" / "EmoEvaluation"
            evald.mkdir(parents=True, exist_ok=True)
            (evald / f"{dialog}.txt").write_text("".join(lines))
    return root
