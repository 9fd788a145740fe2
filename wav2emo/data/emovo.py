"""EMOVO: Italian emotional speech, 6 actors (f1 f2 f3, m1 m2 m3), 14 sentences, 7 emotions: 588 clips.

Files are ``<emotion>-<speaker>-<sentence>.wav`` (e.g. ``dis-f1-b1.wav``) in per-speaker folders; the
emotion codes are Italian (dis disgusto, gio gioia, neu neutrale, pau paura, rab rabbia, sor sorpresa,
tri tristezza).  Published by Fondazione Ugo Bordoni (Costantini et al., LREC 2014):
http://voice.fub.it/activities/corpora/emovo/index.html (no automatic download).
"""

from __future__ import annotations

import re
from pathlib import Path

from .manifest import Manifest
from .manifest_builder import Entry, audio_files, build_manifest, check_options_from, rel, resolve_source
from .problems import Defects, Problems
from .registry import Recipe, Totals

EMOVO_PAGE = "http://voice.fub.it/activities/corpora/emovo/index.html"
EMOVO_CODES = {
    "dis": "disgust", "gio": "happy", "neu": "neutral", "pau": "fearful", "rab": "angry", "sor": "surprised",
    "tri": "sad",
}
EMOVO_SPEAKERS = ("f1", "f2", "f3", "m1", "m2", "m3")
EMOVO_SENTENCES = {"b1", "b2", "b3", "d1", "d2", "l1", "l2", "l3", "l4", "n1", "n2", "n3", "n4", "n5"}
EMOVO_TOTALS = Totals(files=588, speakers=EMOVO_SPEAKERS, classes=tuple(sorted(set(EMOVO_CODES.values()))))
_NAME = re.compile(r"^([a-z]{3})-([a-z]\d)-([a-z]\d)$", re.IGNORECASE)


def parse_emovo_name(stem: str) -> dict:
    m = _NAME.match(stem)
    if not m:
        raise ValueError(f"{stem!r}: not an EMOVO name; expected <emotion>-<speaker>-<sentence>, e.g. dis-f1-b1")
    code, speaker, sentence = (g.lower() for g in m.groups())
    if code not in EMOVO_CODES:
        raise ValueError(f"{stem!r}: emotion code {code!r}; expected one of {sorted(EMOVO_CODES)}")
    if speaker not in EMOVO_SPEAKERS:
        raise ValueError(f"{stem!r}: speaker {speaker!r}; expected one of {EMOVO_SPEAKERS}")
    if sentence not in EMOVO_SENTENCES:
        raise ValueError(f"{stem!r}: sentence {sentence!r}; expected one of {sorted(EMOVO_SENTENCES)}")
    return {"code": code, "speaker": speaker, "sentence": sentence, "emotion": EMOVO_CODES[code]}


def salvage_emovo_name(stem: str, folder: str | None) -> dict | None:
    """The clip a misnamed file in speaker folder ``folder`` is, when its name holds exactly one emotion code
    and one sentence code (and no speaker but the folder's): ``dis_f1_b1``, ``Dis-b1``, ``dis-f1-b1 (1)``; else None."""
    if folder not in EMOVO_SPEAKERS:
        return None
    tokens = [t for t in re.split(r"[^a-z0-9]+", stem.lower()) if t]
    codes = [t for t in tokens if t in EMOVO_CODES]
    sentences = [t for t in tokens if t in EMOVO_SENTENCES]
    speakers = {t for t in tokens if re.fullmatch(r"[fm]\d", t)}
    if len(codes) != 1 or len(sentences) != 1 or speakers - {folder}:
        return None
    return {"code": codes[0], "speaker": folder, "sentence": sentences[0], "emotion": EMOVO_CODES[codes[0]]}


def prepare_emovo(source: str | Path, *, corpus_name: str = "emovo", **options) -> Manifest:
    opts = check_options_from(options)
    root = resolve_source(source, f"an EMOVO folder (f1/dis-f1-b1.wav ...; from {EMOVO_PAGE})")
    problems, entries, defects = Problems(), [], Defects()
    for path in audio_files(root, "EMOVO's <emotion>-<speaker>-<sentence>.wav files"):
        try:
            meta = parse_emovo_name(path.stem)
        except ValueError as e:
            folder = path.parent.name.lower()
            meta = salvage_emovo_name(path.stem, folder)
            if meta is None:
                problems.add("file names that do not parse", f"{rel(path, root)}: {e}")
                continue
            defects.read_by_folder(path, f"{meta['code']}-{meta['speaker']}-{meta['sentence']}", folder)
        entries.append(
            Entry(path=path, clip_id=f"{meta['code']}-{meta['speaker']}-{meta['sentence']}", speaker=meta["speaker"],
                  gender="female" if meta["speaker"][0] == "f" else "male", emotion=meta["emotion"],
                  code=meta["code"])
        )
    return build_manifest(root, corpus_name, entries, problems, opts, totals=EMOVO_TOTALS, defects=defects)


RECIPE = Recipe(
    "emovo", prepare_emovo, "an EMOVO folder (f1/dis-f1-b1.wav ...)", f"Download it from {EMOVO_PAGE}.",
    totals=EMOVO_TOTALS, default_folds="loso",
)
