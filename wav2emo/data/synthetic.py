"""A synthetic, RAVDESS-shaped corpus: speech-like audio made offline and deterministically.

Why: demos, tests and CI need a corpus with RAVDESS's layout, names and statistics, without the
download or the licence.  The audio is a source-filter imitation of speech, not noise: a glottal pulse
train following an F0 contour, filtered by formants moving through the phones of the two RAVDESS
statements, with syllable-rate loudness, stop bursts, fricatives and breath noise.  Speakers differ in
pitch, vocal-tract length and habits; emotions differ in prosody and voice quality (pitch level, range
and contour, tempo, loudness, spectral tilt, jitter/shimmer, breathiness), exaggerated at strong
intensity.  Per-clip randomness and per-speaker idiosyncrasies stay of the size of the smaller emotion
differences (neutral/calm, happy/surprised), so the classes are learnable across speakers but not
trivially separable; the cues are strong enough that a small model shows clear learning on a
few hundred clips (version 2: a cross-speaker logistic regression on crude prosodic features reaches
UA ~0.7 on the five Luna-Jimenez folds, against ~0.44 in version 1).

Every clip is drawn from its own seed (corpus seed, actor, file-name fields), so a clip is the same
whatever subset or worker count generated it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import soundfile as sf

from wav2emo.errors import UserError

from . import ravdess
from .corpus_options import actor_list, bool_option, check_options_of, corpus_root, may_create
from .errors import CorpusError
from .manifest import Manifest
from .manifest_cache import cached_manifest
from .registry import Recipe, luna_jimenez_or_by_speaker_count
from .synthetic_voice import synthesize_clip

GENERATOR_VERSION = 2  # 2: stronger emotion cues (_CUE_GAIN, smaller spreads), so the demo learns clearly
MARKER = "synthetic.json"
NUM_ACTORS = 24


class SyntheticCorpusError(UserError, ValueError):
    """A synthetic-corpus request that cannot be honoured without overwriting or guessing."""


# ------------------------------------------------------------------------------------------------
# Which clips
# ------------------------------------------------------------------------------------------------
def _combos_of(emotion: int) -> list[tuple[int, int, int]]:
    """(intensity, statement, repetition) of one emotion; any 4 consecutive entries (also after a rotation)
    cover every (intensity, statement) pair, so small subsets keep both statements and intensities."""
    if emotion == 1:
        return [(1, 1, 1), (1, 2, 1), (1, 1, 2), (1, 2, 2)]
    return [(1, 1, 1), (2, 2, 1), (2, 1, 1), (1, 2, 1), (1, 1, 2), (2, 2, 2), (2, 1, 2), (1, 2, 2)]


def select_clips(actor: int, clips_per_actor: int) -> list[tuple[int, int, int, int]]:
    """The (emotion, intensity, statement, repetition) combinations kept for one actor.

    Emotions take turns (neutral runs out after 4), so the classes stay as balanced as possible; the
    starting emotion and each emotion's starting combination rotate with the actor, so a subset keeps
    both statements and intensities across actors.
    """
    if not 1 <= clips_per_actor <= 60:
        raise SyntheticCorpusError(f"clips_per_actor={clips_per_actor}; expected 1..60")
    order = [((actor - 1 + k) % 8) + 1 for k in range(8)]
    lists = {}
    for e in order:
        combos = _combos_of(e)
        shift = (actor - 1 + 3 * (e - 1)) % len(combos)
        lists[e] = combos[shift:] + combos[:shift]
    picked: list[tuple[int, int, int, int]] = []
    for rnd in range(8):
        for e in order:
            if rnd < len(lists[e]) and len(picked) < clips_per_actor:
                picked.append((e, *lists[e][rnd]))
    return sorted(picked)


def _stem(e: int, i: int, s: int, r: int, actor: int) -> str:
    return f"03-01-{e:02d}-{i:02d}-{s:02d}-{r:02d}-{actor:02d}"


# ------------------------------------------------------------------------------------------------
# The corpus on disk
# ------------------------------------------------------------------------------------------------
def _write_actor(args: tuple[str, int, int, int, int]) -> int:
    tmp, seed, actor, clips_per_actor, sample_rate = args
    folder = Path(tmp) / f"Actor_{actor:02d}"
    folder.mkdir()
    combos = select_clips(actor, clips_per_actor)
    for e, i, s, r in combos:
        y = synthesize_clip(seed, actor, e, i, s, r, sample_rate)
        sf.write(folder / f"{_stem(e, i, s, r, actor)}.flac", y, sample_rate, subtype="PCM_16", format="FLAC")
    return len(combos)


def _normalise_actors(actors: int | Iterable[int]) -> list[int]:
    if isinstance(actors, (int, np.integer)):
        if not 1 <= int(actors) <= NUM_ACTORS:
            raise SyntheticCorpusError(
                f"actors={actors}; expected a count 1..24 or a list of actor ids 1..24"
            )
        return list(range(1, int(actors) + 1))
    ids = [int(a) for a in actors]
    bad = [a for a in ids if not 1 <= a <= NUM_ACTORS]
    if bad or not ids or len(set(ids)) != len(ids):
        raise SyntheticCorpusError(f"actors={ids}; expected distinct actor ids 1..24 (at least one)")
    return sorted(ids)


def generate_synthetic_corpus(
    root: str | Path,
    *,
    seed: int = 0,
    actors: int | Iterable[int] = range(1, 25),
    clips_per_actor: int = 60,
    sample_rate: int = 16000,
    workers: int | None = None,
) -> Path:
    """Write ``root/Actor_XX/03-01-EE-II-SS-RR-AA.flac`` (16-bit FLAC) and ``root/synthetic.json``.

    The corpus is built in a temporary sibling folder and renamed into place when complete.  If
    ``root`` already holds a corpus made with the same parameters it is returned at once; any other
    existing ``root`` is refused, never overwritten.  ``actors`` is a count N (actors 1..N) or ids.
    """
    root = Path(root)
    params = {
        "generator": "wav2emo.data.synthetic",
        "version": GENERATOR_VERSION,
        "seed": int(seed),
        "actors": _normalise_actors(actors),
        "clips_per_actor": int(clips_per_actor),
        "sample_rate": int(sample_rate),
    }
    select_clips(1, params["clips_per_actor"])  # validates clips_per_actor
    if not 8000 <= params["sample_rate"] <= 96000:
        raise SyntheticCorpusError(f"sample_rate={sample_rate}; expected 8000..96000 Hz")
    if root.exists():
        return _existing(root, params)

    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        jobs = [
            (str(tmp), params["seed"], a, params["clips_per_actor"], params["sample_rate"])
            for a in params["actors"]
        ]
        if workers is None:  # small corpora: starting processes costs more than it saves
            small = len(jobs) * params["clips_per_actor"] < 48
            n_workers = 1 if small else min(2, os.cpu_count() or 1, len(jobs))
        else:
            n_workers = max(1, min(int(workers), len(jobs)))
        if n_workers > 1:
            n_clips = _run_workers(tmp, params, n_workers)
        else:
            n_clips = sum(map(_write_actor, jobs))
        (tmp / MARKER).write_text(json.dumps({**params, "clips": n_clips}, indent=2) + "\n")
        try:
            tmp.rename(root)
        except OSError:
            if root.exists():  # someone else finished first
                shutil.rmtree(tmp, ignore_errors=True)
                return _existing(root, params)
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def _run_workers(tmp: Path, params: dict, n_workers: int) -> int:
    """Generate in fresh interpreters (``python -m wav2emo.data.synthetic``), one per share of actors.

    Fresh processes rather than multiprocessing: fork is unsafe once torch's threads exist in the
    parent, and spawn re-imports the caller's ``__main__`` (a Hydra script, stdin, a notebook).
    """
    shares = [params["actors"][k::n_workers] for k in range(n_workers)]
    package_parent = str(Path(__file__).resolve().parents[2])  # importable even when not installed
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")])),
    }
    procs = []
    for share in shares:
        cmd = [
            sys.executable,
            "-m",
            "wav2emo.data.synthetic",
            str(tmp),
            str(params["seed"]),
            str(params["clips_per_actor"]),
            str(params["sample_rate"]),
            *map(str, share),
        ]
        procs.append(
            subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        )
    errors = []
    try:
        for proc in procs:
            _, err = proc.communicate()
            if proc.returncode != 0:
                errors.append(
                    f"actors {' '.join(proc.args[8:])}: exit {proc.returncode}: {err.strip()[-2000:]}"
                )
    finally:  # interrupted: stop the workers before the caller removes their folder
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if errors:
        raise RuntimeError("synthetic corpus worker failed:\n" + "\n".join(errors))
    return sum(len(select_clips(a, params["clips_per_actor"])) for a in params["actors"])


def _existing(root: Path, params: dict) -> Path:
    marker = root / MARKER
    if not marker.is_file():
        raise SyntheticCorpusError(
            f"{root}: exists but holds no {MARKER}, so it is not a synthetic corpus made by wav2emo; "
            "choose another root (nothing is overwritten)"
        )
    try:
        found = json.loads(marker.read_text())
    except json.JSONDecodeError as e:
        raise SyntheticCorpusError(f"{marker}: unreadable ({e}); remove {root} to generate again") from e
    found_params = {k: found.get(k) for k in params}
    if found_params != params:
        diff = {k: (found_params[k], params[k]) for k in params if found_params[k] != params[k]}
        raise SyntheticCorpusError(
            f"{root}: holds a synthetic corpus made with other parameters (found, requested): {diff}; "
            "choose another root or remove it (nothing is overwritten)"
        )
    return root


# ------------------------------------------------------------------------------------------------
# Loading (data=synthetic): generated at its default place, or into an empty folder the user made
# ------------------------------------------------------------------------------------------------
def load_synthetic(c: Mapping, cache_dir: str | Path | None = None, **_) -> Manifest:
    """The synthetic corpus ``data.corpus`` describes, generated where that was asked for, then checked."""
    root = corpus_root(c, "synthetic")
    actors = actor_list(c.get("actors"))
    options = check_options_of(c)
    if isinstance(actors, int):  # a count: the generated corpus's actors are 1..N
        actors = list(range(1, actors + 1))
    n_actors = actors if actors is not None else list(range(1, NUM_ACTORS + 1))
    per_actor = int(c.get("clips_per_actor") or 60)
    root = _synthetic_root(root, c, seed=int(c.get("seed") or 0), actors=n_actors, clips_per_actor=per_actor)
    full = len(n_actors) == NUM_ACTORS and per_actor == 60
    wanted = c.get("require_complete", "auto")
    complete = full if wanted in (None, "auto") else bool(wanted)
    return cached_manifest(root, "synthetic", complete, cache_dir, options,
                           prepare=lambda *a, **k: ravdess.prepare_ravdess(*a, **k))  # looked up at call time


def _synthetic_root(root: Path, c: Mapping, **params) -> Path:
    """The synthetic corpus at ``root``: reused if there, generated only where that was asked for.

    Generated when ``root`` is the config's default place, an empty folder the user made for it, or
    anywhere with ``generate=true``; a missing path typed by hand is refused and nothing is created.
    """
    if root.is_dir() and not any(root.iterdir()):  # an empty folder the user pointed to: fill it
        if bool_option(c, "generate", "auto") is False:
            raise CorpusError(f"data.corpus.root={root} is an empty folder and data.corpus.generate=false")
        root.rmdir()  # generate_synthetic_corpus builds beside it and renames into place
        try:
            return generate_synthetic_corpus(root, **params)
        finally:
            if not root.exists():  # generation failed: give the user their empty folder back
                root.mkdir()
    if not root.exists() and not may_create(root, c, "generate", "auto"):
        default = c.get("default_root")
        raise CorpusError(
            f"data.corpus.root={root} does not exist; expected a synthetic corpus made by wav2emo there. "
            "Nothing was created: a corpus is generated on its own only at its default place"
            + (f" ({default})" if default else "")
            + " or into an empty folder you made; set data.corpus.generate=true to create it at this path"
        )
    return generate_synthetic_corpus(root, **params)




RECIPE = Recipe("synthetic", ravdess.prepare_ravdess, "a synthetic corpus made by wav2emo (or an empty folder)",
                "It is generated offline at its default place.", default_folds=luna_jimenez_or_by_speaker_count,
                load=load_synthetic)


if __name__ == "__main__":  # worker entry: python -m wav2emo.data.synthetic TMP SEED CLIPS SR ACTOR...
    _tmp, _seed, _cpa, _sr, *_actors = sys.argv[1:]
    for _a in _actors:
        _write_actor((_tmp, int(_seed), int(_a), int(_cpa), int(_sr)))
