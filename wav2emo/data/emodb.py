"""EmoDB (Berlin Database of Emotional Speech): 535 German utterances, 10 actors, 7 emotions.

Layout as the authors ship it: ``wav/`` holding ``SSTTTEV.wav`` - speaker (2 digits), text (a01 a02 a04
a05 a07 b01 b02 b03 b09 b10), emotion (German initial), version letter, e.g. ``03a01Fa.wav``.  Speakers 03 10 11 12 15
are male, 08 09 13 14 16 female (the corpus documentation).  The usual protocol is leave-one-speaker-out.
"""

from __future__ import annotations

import re
from pathlib import Path

from .emodb_release import EMODB_RELEASE_STEMS
from .fetching import download_archive, extract_zip
from .manifest import Manifest
from .manifest_builder import Entry, audio_files, build_manifest, check_options_from, rel, resolve_source
from .problems import Defects, Problems
from .registry import Recipe, Totals

EMODB_PAGE = "http://emodb.bilderbar.info/docu/"
EMODB_URL = "http://emodb.bilderbar.info/download/download.zip"
# German initials: Wut, Langeweile, Ekel, Angst, Freude, Trauer, Neutral
EMODB_CODES = {
    "W": "angry",
    "L": "boredom",
    "E": "disgust",
    "A": "fearful",
    "F": "happy",
    "T": "sad",
    "N": "neutral",
}
EMODB_GENDERS = {
    "03": "male", "10": "male", "11": "male", "12": "male", "15": "male",
    "08": "female", "09": "female", "13": "female", "14": "female", "16": "female",
}
# the ten texts of the release (the documentation numbers them with gaps)
EMODB_TEXTS = {"a01", "a02", "a04", "a05", "a07", "b01", "b02", "b03", "b09", "b10"}
EMODB_TOTALS = Totals(files=535, speakers=tuple(sorted(EMODB_GENDERS)), classes=tuple(sorted(set(EMODB_CODES.values()))))
_NAME = re.compile(r"^(\d{2})([ab]\d{2})([A-Za-z])([a-z])$")
# Layouts of the releases users download (docs/corpora.md).  audEERING's emodb 2.0.0 (audb.load("emodb")) holds
# wav/ with 816 utterances - the authors' 535 and 281 that fewer than 80 % of the listeners recognised - and
# laryngo/ with a laryngogram (electroglottograph signal) under each utterance's name:
# github.com/audeering/emodb 2.0.0/README.md and 2.0.0/update.py.
LARYNGOGRAM_FOLDER = "laryngo"
LARYNGOGRAMS = ("laryngograms (electroglottograph signals, not speech) in the laryngo/ folder of audEERING's "
                "emodb 2.0.0 (github.com/audeering/emodb, 2.0.0/README.md)")
NOT_IN_RELEASE = ("not one of the authors' 535 utterances: audEERING's emodb 2.0.0 adds 281 that fewer than 80 % "
                  "of the listeners recognised (github.com/audeering/emodb, 2.0.0/README.md); results on EmoDB "
                  "are reported on the 535")


def parse_emodb_name(stem: str) -> dict:
    """Speaker, text, emotion and version of an EmoDB file stem; ValueError naming what is wrong."""
    m = _NAME.match(stem)
    if not m:
        raise ValueError(f"{stem!r}: not an EmoDB name; expected speaker+text+emotion+version, e.g. 03a01Fa")
    speaker, text, code, version = m.groups()
    if speaker not in EMODB_GENDERS:
        raise ValueError(f"{stem!r}: speaker {speaker}; expected one of {sorted(EMODB_GENDERS)}")
    if text not in EMODB_TEXTS:
        raise ValueError(f"{stem!r}: text {text}; expected one of {sorted(EMODB_TEXTS)}")
    if code not in EMODB_CODES:
        raise ValueError(f"{stem!r}: emotion code {code!r}; expected one of {sorted(EMODB_CODES)} (German initials)")
    return {"speaker": speaker, "text": text, "code": code, "emotion": EMODB_CODES[code], "version": version}


def prepare_emodb(source: str | Path, *, corpus_name: str = "emodb", **options) -> Manifest:
    """The manifest of an EmoDB copy (its folder, the folder's ``wav/``, or the download zip).

    A copy in audEERING's emodb 2.0.0 layout (a ``laryngo/`` folder, or more EmoDB names than the authors'
    535) is read as the authors' release: the laryngograms and the 281 added utterances are set aside and
    listed in the corpus report."""
    opts = check_options_from(options)
    root = resolve_source(source, "an EmoDB folder holding wav/03a01Fa.wav ...")
    files = audio_files(root, "EmoDB's wav/*.wav files (e.g. wav/03a01Fa.wav)")
    problems, entries, defects = Problems(), [], Defects()
    laryngograms = [p for p in files if LARYNGOGRAM_FOLDER in (s.lower() for s in p.relative_to(root).parts[:-1])]
    for path in sorted(set(files) - set(laryngograms)):
        try:
            meta = parse_emodb_name(path.stem)
        except ValueError as e:
            problems.add("file names that do not parse", f"{rel(path, root)}: {e}")
            continue
        entries.append(
            Entry(
                path=path, clip_id=path.stem, speaker=meta["speaker"], gender=EMODB_GENDERS[meta["speaker"]],
                emotion=meta["emotion"], code=meta["code"], actor=int(meta["speaker"]),
            )
        )
    defects.set_aside_files(laryngograms, root, LARYNGOGRAMS)
    if laryngograms or len({e.clip_id for e in entries}) > len(EMODB_RELEASE_STEMS):  # audEERING's 2.0.0
        added = [e for e in entries if e.clip_id not in EMODB_RELEASE_STEMS]
        defects.set_aside_files([e.path for e in added], root, NOT_IN_RELEASE)
        entries = [e for e in entries if e.clip_id in EMODB_RELEASE_STEMS]
    return build_manifest(root, corpus_name, entries, problems, opts, totals=EMODB_TOTALS, defects=defects)


def download_emodb(dest: str | Path) -> Path:
    """Fetch the authors' zip (``download.zip``) beside ``dest`` and extract it into ``dest``."""
    dest = Path(dest)
    zip_path = download_archive(
        dest.parent, url=EMODB_URL,
        by_hand=f"download it by hand from {EMODB_PAGE} ({EMODB_URL}) and set data.corpus.root to the zip or folder",
    )
    return extract_zip(zip_path, extract_dir=dest)


RECIPE = Recipe(
    "emodb", prepare_emodb, "an EmoDB folder (wav/03a01Fa.wav ...) or download.zip",
    f"Download it from {EMODB_PAGE} ({EMODB_URL}).", download_emodb, totals=EMODB_TOTALS, default_folds="loso",
)
