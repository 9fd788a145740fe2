"""The corpus recipes ``load_corpus`` knows besides RAVDESS and the synthetic corpus.

One :class:`Recipe` per ``data.corpus.name``: how to prepare it, how to fetch it (where it has a public
address), what a user must do to get it otherwise, and the extra ``data.corpus`` keys it reads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .byo import prepare_csv, prepare_folder
from .crema_d import CREMA_D_REPO, download_crema_d, prepare_crema_d
from .emodb import EMODB_PAGE, EMODB_URL, download_emodb, prepare_emodb
from .emovo import EMOVO_PAGE, prepare_emovo
from .iemocap import IEMOCAP_PAGE, prepare_iemocap
from .manifest import Manifest
from .savee import SAVEE_PAGE, prepare_savee
from .tess import TESS_PAGE, download_tess, prepare_tess


@dataclass(frozen=True)
class Recipe:
    name: str
    prepare: Callable[..., Manifest]
    expects: str  # what root must be
    how_to_get: str
    download: Callable[[Path], Path] | None = None
    options: tuple[str, ...] = ()  # extra data.corpus keys handed to prepare
    label_files: tuple[str, ...] = ()  # globs (under root) of files the labels come from: part of the cache key
    require_complete_default: bool = True


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe("emodb", prepare_emodb, "an EmoDB folder (wav/03a01Fa.wav ...) or download.zip",
               f"Download it from {EMODB_PAGE} ({EMODB_URL}).", download_emodb),
        Recipe("crema_d", prepare_crema_d, "a CREMA-D clone (AudioWAV/*.wav, VideoDemographics.csv)",
               f"Clone {CREMA_D_REPO} and run `git lfs pull` in it.", download_crema_d,
               label_files=("**/VideoDemographics.csv",)),
        Recipe("tess", prepare_tess, "a TESS folder (OAF_back_angry.wav ...) or its zip",
               f"Download it from {TESS_PAGE}.", download_tess),
        Recipe("savee", prepare_savee, "a SAVEE folder (AudioData/DC/a01.wav ...)",
               f"Register and download it at {SAVEE_PAGE}."),
        Recipe("emovo", prepare_emovo, "an EMOVO folder (f1/dis-f1-b1.wav ...)",
               f"Download it from {EMOVO_PAGE}."),
        Recipe("iemocap", prepare_iemocap, "IEMOCAP_full_release (Session1..Session5)",
               f"IEMOCAP is licensed: request it at {IEMOCAP_PAGE} and point root at your copy.",
               options=("dialogues",), label_files=("Session*/dialog/EmoEvaluation/*.txt",)),
        Recipe("folder", prepare_folder, "a folder with one sub-folder per emotion",
               "Point root at your own folder.", options=("speaker_regex", "emotion_map"),
               require_complete_default=False),
        Recipe("csv", prepare_csv, "a CSV with columns path, emotion, speaker[, gender]",
               "Point root at your own CSV.", options=("emotion_map", "require_labels"),
               require_complete_default=False),
    )
}
