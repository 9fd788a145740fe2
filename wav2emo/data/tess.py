"""TESS (Toronto Emotional Speech Set): 2800 clips, two actresses (OAF aged 64, YAF aged 26), 200 words
in the carrier phrase "Say the word ...", 7 emotions.

Files are ``<speaker>_<word>_<emotion>.wav`` (e.g. ``OAF_back_angry.wav``, ``YAF_bath_ps.wav``; ``ps`` is
pleasant surprise), in per speaker-and-emotion folders whose names vary between copies, so only the
file names are read.  With two speakers the only speaker-independent protocol is train on one, test on
the other (folds=loso gives exactly that, and says so).
"""

from __future__ import annotations

import re
from pathlib import Path

from .fetching import download_archive, extract_zip
from .labels import LabelError, canonical_emotion
from .manifest import Manifest
from .manifest_builder import Entry, audio_files, build_manifest, check_options_from, rel, resolve_source
from .problems import Problems
from .registry import Recipe, Totals

TESS_PAGE = "https://doi.org/10.5683/SP2/E8H2MF"
TESS_URL = "https://borealisdata.ca/api/access/dataset/:persistentId/?persistentId=doi:10.5683/SP2/E8H2MF"
TESS_CODES = {
    "angry": "angry", "disgust": "disgust", "fear": "fearful", "happy": "happy",
    "ps": "surprised", "sad": "sad", "neutral": "neutral",
}
TESS_TOTALS = Totals(files=2800, speakers=("OAF", "YAF"), classes=tuple(sorted(set(TESS_CODES.values()))))
_NAME = re.compile(r"^(OAF|YAF)_([A-Za-z]+)_([A-Za-z]+)$", re.IGNORECASE)
# The Kaggle upload (kaggle.com/datasets/ejlok1/toronto-emotional-speech-set-tess) names the folders OAF_Fear,
# OAF_Sad, OAF_Pleasant_surprise but YAF_fear, YAF_sad, YAF_pleasant_surprised (files say "ps"), and holds the set
# twice, nested; the labels come from the file names, a folder only has to agree (docs/corpora.md).
_FOLDER = re.compile(r"^(OAF|YAF)_(.+)$", re.IGNORECASE)


def parse_tess_name(stem: str) -> dict:
    m = _NAME.match(stem.strip())
    if not m:
        raise ValueError(f"{stem!r}: not a TESS name; expected <OAF|YAF>_<word>_<emotion>, e.g. OAF_back_angry")
    speaker, word, code = m.group(1).upper(), m.group(2).lower(), m.group(3).lower()
    if code not in TESS_CODES:
        raise ValueError(f"{stem!r}: emotion {code!r}; expected one of {sorted(TESS_CODES)}")
    return {"speaker": speaker, "word": word, "code": code, "emotion": TESS_CODES[code]}


def prepare_tess(source: str | Path, *, corpus_name: str = "tess", **options) -> Manifest:
    opts = check_options_from(options)
    root = resolve_source(source, "a TESS folder holding OAF_back_angry.wav ...")
    problems, entries = Problems(), []
    for path in audio_files(root, "TESS's <speaker>_<word>_<emotion>.wav files"):
        try:
            meta = parse_tess_name(path.stem)
        except ValueError as e:
            problems.add("file names that do not parse", f"{rel(path, root)}: {e}")
            continue
        folder = _FOLDER.match(path.parent.name)
        if folder:  # OAF_angry/, YAF_pleasant_surprised/: must agree with the file name
            try:
                said = (folder.group(1).upper(), canonical_emotion(folder.group(2)))
            except LabelError:
                said = None
            if said is not None and said != (meta["speaker"], meta["emotion"]):
                problems.add(
                    "file names that disagree with their folder",
                    f"{rel(path, root)}: the name says {meta['speaker']} {meta['emotion']}, the folder "
                    f"{said[0]} {said[1]}",
                )
                continue
        entries.append(
            Entry(path=path, clip_id=f"{meta['speaker']}_{meta['word']}_{meta['code']}", speaker=meta["speaker"],
                  gender="female", emotion=meta["emotion"], code=meta["code"])
        )
    return build_manifest(root, corpus_name, entries, problems, opts, totals=TESS_TOTALS)


def download_tess(dest: str | Path) -> Path:
    """Fetch the dataset zip from the University of Toronto's Borealis dataverse and extract it into ``dest``."""
    dest = Path(dest)
    zip_path = download_archive(
        dest.parent, url=TESS_URL, filename="TESS.zip",
        by_hand=f"download it by hand from {TESS_PAGE} and set data.corpus.root to the zip or folder",
    )
    return extract_zip(zip_path, extract_dir=dest)


RECIPE = Recipe(
    "tess", prepare_tess, "a TESS folder (OAF_back_angry.wav ...) or its zip", f"Download it from {TESS_PAGE}.",
    download_tess, totals=TESS_TOTALS, default_folds="loso",
)
