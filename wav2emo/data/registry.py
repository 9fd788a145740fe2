"""The one way to add a corpus recipe or a fold protocol: :func:`register_recipe`, :func:`register_protocol`.

A **recipe** (:class:`Recipe`) is everything wav2emo knows about one corpus, in one place: how to prepare
its manifest (``prepare``, lhotse-style), how to fetch it (``download``), its documented speakers, classes
and file count (``totals``), its usual fold protocol (``default_folds``) and the defects of the release
users download (``known_defects``).  A **fold protocol** (:class:`FoldProtocol`) turns a folds config and
a manifest into folds.  The built-in ones register themselves in :mod:`wav2emo.data.catalog`; a recipe or
protocol of your own is one module that calls the same functions, plus one config (``conf/data/<name>.yaml``
or ``conf/folds/<name>.yaml``; ``data.corpus.module`` / ``folds.module`` name the module to import).

This module imports no recipe and no protocol: the others depend on it, never the reverse.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from wav2emo.errors import UserError
from wav2emo.registry import Registry

from .errors import CorpusError, FoldError
from .manifest import Manifest

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


@dataclass(frozen=True)
class KnownDefect:
    """One documented defect of a corpus release, handled by default and listed in the corpus report.

    ``action``: ``rename`` (the file's true name is ``becomes``: its fields say so unambiguously),
    ``set_aside`` (always left out) or ``set_aside_if_silent`` (left out when the check finds it silent or
    unreadable, whatever ``on_silent`` says; kept if this copy has the audio).
    """

    file: str  # the file's stem as released
    problem: str  # what is wrong, and who documented it
    action: str  # rename | set_aside | set_aside_if_silent
    becomes: str = ""  # rename: the stem it should have had

    def __post_init__(self) -> None:
        if self.action not in ("rename", "set_aside", "set_aside_if_silent"):
            raise ValueError(f"KnownDefect {self.file}: action {self.action!r}; expected rename, set_aside or "
                             "set_aside_if_silent")
        if (self.action == "rename") != bool(self.becomes):
            raise ValueError(f"KnownDefect {self.file}: 'becomes' goes with action rename, and only with it")


@dataclass(frozen=True)
class Totals:
    """What a complete copy holds, from the corpus's documentation."""

    files: int | None = None
    speakers: tuple[str, ...] = ()  # expected speaker names (missing ones are named)
    classes: tuple[str, ...] = ()  # expected canonical emotions


def folds_by_speaker_count(n_speakers: int) -> str:
    """The usual protocol of a corpus of your own: leave-one-speaker-out up to 12 speakers, else a
    5-fold speaker k-fold (as many folds as leave-one-out would cost more than it tells)."""
    return "loso" if n_speakers <= 12 else "speaker_kfold"


def luna_jimenez_or_by_speaker_count(n_speakers: int) -> str:
    """RAVDESS-shaped corpora: the Luna-Jimenez folds with all 24 actors, else (a subset of actors) the rule of a
    corpus of one's own."""
    return "luna_jimenez" if n_speakers == 24 else folds_by_speaker_count(n_speakers)


@dataclass(frozen=True)
class Recipe:
    """One corpus (see the module docstring).  ``load`` replaces the generic loading of
    :func:`wav2emo.data.corpora.load_corpus` for corpora that are generated or combined
    (``load(c, cache_dir, load_corpus=...)``)."""

    name: str
    prepare: Callable[..., Manifest] | None
    expects: str  # what root must be
    how_to_get: str
    download: Callable[[Path], Path] | None = None
    options: tuple[str, ...] = ()  # extra data.corpus keys handed to prepare
    label_files: tuple[str, ...] = ()  # globs (under root) of files the labels come from: part of the cache key
    require_complete_default: bool = True
    totals: Totals | None = None
    sessions: int | None = None  # recording sessions (IEMOCAP), for counting session folds without audio
    default_folds: str | Callable[[int], str] = "loso"  # a conf/folds name, or a rule on the speaker count
    known_defects: tuple[KnownDefect, ...] = ()
    load: Callable[..., Manifest] | None = None

    def usual_folds(self, n_speakers: int | None) -> str | None:
        """The name of this corpus's usual fold protocol (None: it depends on a speaker count not known yet)."""
        if isinstance(self.default_folds, str):
            return self.default_folds
        return None if n_speakers is None else self.default_folds(n_speakers)


@dataclass(frozen=True)
class FoldProtocol:
    """One fold protocol: ``build(cfg, manifest)`` gives an object with ``split(k)``, ``num_folds`` and
    ``protocol``; ``count(cfg, corpus_cfg)`` the number of folds from the configs alone (None: only the
    manifest can tell); ``by_clip`` protocols list clips and must be assembled with ``assemble_fold``."""

    name: str
    build: Callable[[Mapping, Manifest], Any]
    count: Callable[[Mapping, Mapping], int | None] = field(default=lambda cfg, corpus: None)
    by_clip: bool = False


# The two registries of the corpus layer (wav2emo.registry.Registry: the one kind every extension point uses).
RECIPES: Registry[Recipe] = Registry("corpus recipe", error=CorpusError)
PROTOCOLS: Registry[FoldProtocol] = Registry("fold protocol", error=FoldError)


def register_recipe(recipe: Recipe, *, replace: bool = False) -> Recipe:
    """Make ``data.corpus.name=<recipe.name>`` load ``recipe``; a name taken already is refused unless
    ``replace``."""
    return RECIPES.register(recipe.name, recipe, replace=replace)


def register_protocol(protocol: FoldProtocol, *, replace: bool = False) -> FoldProtocol:
    """Make ``folds.name=<protocol.name>`` build ``protocol``; a name taken already is refused unless ``replace``."""
    return PROTOCOLS.register(protocol.name, protocol, replace=replace)


def _import_module(module: Any, key: str) -> None:
    if module:
        try:
            importlib.import_module(str(module))
        except ImportError as e:
            raise UserError(f"{key}={module!r} cannot be imported ({e}); expected an importable module that "
                            "registers it") from e


def recipe_for(c: Mapping) -> Recipe:
    """The recipe ``data.corpus`` names (importing ``data.corpus.module`` first when set)."""
    _import_module(c.get("module"), "data.corpus.module")
    name = c.get("name")
    if name not in RECIPES:
        raise CorpusError(f"data.corpus.name={name!r}; expected one of {sorted(RECIPES)} (or a recipe of your own: "
                          "set data.corpus.module to the module that registers it)")
    return RECIPES[name]


def protocol_for(cfg: Mapping) -> FoldProtocol:
    """The fold protocol a folds config names (importing ``folds.module`` first when set)."""
    _import_module(cfg.get("module"), "folds.module")
    name = str(cfg.get("name", ""))
    if name in PROTOCOLS:
        return PROTOCOLS[name]
    if cfg.get("test_actors") is not None:
        return PROTOCOLS["explicit"]
    if cfg.get("k") is not None:
        return PROTOCOLS["speaker_kfold"]
    raise FoldError(f"folds config {dict(cfg)!r}: expected test_actors (explicit folds), k (speaker k-fold), or a "
                    f"protocol name from {sorted(PROTOCOLS)} (or folds.module: a module that registers yours)")


def folds_section(cfg: Mapping) -> Mapping:
    """Accept either the whole config (with a ``folds`` key) or the folds mapping itself."""
    inner = cfg.get("folds")
    return inner if isinstance(inner, Mapping) else cfg


def make_folds(cfg: Mapping, manifest: Manifest, *, clip_splits: bool = False):
    """The folds a config names, over ``manifest`` (see :func:`wav2emo.data.folds.build_folds`)."""
    cfg = folds_section(cfg)
    protocol = protocol_for(cfg)
    if protocol.by_clip and not clip_splits:
        raise FoldError(f"folds={protocol.name} lists clips, not speakers: it must be assembled with "
                        "wav2emo.data.folds.assemble_fold (cutting the manifest by actors would put clips of a "
                        "speaker in train and test)")
    return protocol.build(cfg, manifest)


def count_folds(cfg: Mapping, corpus_cfg: Mapping | None = None) -> int | None:
    """How many folds ``cfg`` gives from the configs alone; None when only the manifest can say."""
    cfg = folds_section(cfg)
    corpus = corpus_cfg.get("corpus", corpus_cfg) if isinstance(corpus_cfg, Mapping) else {}
    return protocol_for(cfg).count(cfg, corpus if isinstance(corpus, Mapping) else {})


def folds_config(name_or_cfg: Any, where: str) -> dict[str, Any]:
    """A folds config: a ``conf/folds`` name (``loso``), a registered protocol's name, or a mapping, as a dict."""
    if isinstance(name_or_cfg, Mapping):
        return dict(name_or_cfg)
    path = CONF_DIR / "folds" / f"{name_or_cfg}.yaml"
    if isinstance(name_or_cfg, str) and not path.is_file() and name_or_cfg in PROTOCOLS:
        return {"name": name_or_cfg}  # a registered protocol without a config here: its own defaults
    if not isinstance(name_or_cfg, str) or not path.is_file() or name_or_cfg in ("emobox", "default"):
        known = sorted(p.stem for p in (CONF_DIR / "folds").glob("*.yaml") if p.stem not in ("emobox", "default"))
        raise FoldError(f"{where}={name_or_cfg!r}; expected a folds config name from {known} or a mapping")
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)  # type: ignore[return-value]
