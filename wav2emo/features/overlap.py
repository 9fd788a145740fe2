"""Several feature caches at once: kinds that compute in their own worker processes (eGeMAPS) build in a
background thread while the others (SSL hidden states on the GPU or the CPU) build in the calling thread.

Why: eGeMAPS is CPU work in a process pool and SSL extraction on a GPU is GPU work plus model loading (one
core), so running them one after the other leaves the cores idle while the GPU works; on a CPU, SSL extraction
leaves gaps too (model loading, Python between batches).  The background build starts first (its worker
processes start while the backbone loads), and its workers run at a lower priority (``nice``), so the process
feeding the GPU keeps its cores.  Results are exactly what sequential builds give: each cache is built by the
same :func:`~wav2emo.features.get_features`, under its own lock.  Measured on 2 otherwise idle cores (tiny
backbone on the CPU, 240 clips): 16.2-17.2 s overlapped vs 18.4-19.7 s one after the other.  On a machine
shared with other busy processes the niced workers yield to them, and overlapping can take longer than
sequential builds (``overlap=False``).

Stopping: an error or Ctrl-C in the calling thread sets a stop flag that the background build checks every
0.1 s (:func:`stop_requested`); its worker processes are killed and its finished shards kept, as when it
runs alone.  An error in the background build is raised once the calling thread's builds are done (their
caches are complete and kept).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class FeatureBuildStopped(RuntimeError):
    """A background feature build was stopped because the build beside it failed or was interrupted."""


@dataclass
class Background:
    """What a build running in a background thread is told: when to stop, and how nice its workers are."""

    stop: threading.Event = field(default_factory=threading.Event)
    nice: int = 10


_CURRENT: ContextVar[Background | None] = ContextVar("wav2emo_feature_background", default=None)


def current_background() -> Background | None:
    """The :class:`Background` of the build running in this thread, or None in an ordinary call."""
    return _CURRENT.get()


def stop_requested() -> bool:
    bg = _CURRENT.get()
    return bg is not None and bg.stop.is_set()


def check_stop() -> None:
    """Raise :class:`FeatureBuildStopped` if this thread's background build was asked to stop."""
    if stop_requested():
        raise FeatureBuildStopped("stopped: the feature build running beside this one failed or was interrupted")


def runs_in_processes(spec: Mapping[str, Any]) -> bool:
    """Whether a spec's kind computes in its own worker processes (so it can overlap with another build)."""
    from wav2emo.features import FEATURE_KINDS, _plain

    return bool(getattr(FEATURE_KINDS.require(_plain(spec)["kind"]), "runs_in_processes", False))


def get_features_many(
    manifest: Any,
    specs: Mapping[str, Any],
    cache_dir: str | Path,
    *,
    seconds: dict[str, float] | None = None,
    overlap: bool = True,
    **kwargs: Any,
) -> dict[str, Any]:
    """:func:`~wav2emo.features.get_features` for every ``{key: spec}``; process-pool kinds in the background.

    ``overlap=False`` builds one after the other; ``seconds`` (if given) receives each key's wall time.  Other
    keyword arguments go to every ``get_features`` call.
    """
    from wav2emo.errors import ConfigError
    from wav2emo.features import get_features

    if not isinstance(overlap, bool):
        raise ConfigError(f"overlap={overlap!r}; expected true or false")

    def one(key: str) -> Any:
        start = time.perf_counter()
        cache = get_features(manifest, specs[key], cache_dir, **kwargs)
        if seconds is not None:
            seconds[key] = time.perf_counter() - start
        return cache

    background = [k for k in specs if runs_in_processes(specs[k])] if overlap else []
    foreground = [k for k in specs if k not in background]
    if not background or not foreground:
        return {k: one(k) for k in specs}

    results: dict[str, Any] = {}
    error: list[BaseException] = []
    bg = Background()

    def run_background() -> None:
        _CURRENT.set(bg)
        try:
            for k in background:
                results[k] = one(k)
        except BaseException as e:  # noqa: BLE001 - raised in the calling thread
            error.append(e)

    thread = threading.Thread(target=run_background, name="wav2emo-features-background", daemon=True)
    thread.start()
    try:
        for k in foreground:
            results[k] = one(k)
        while thread.is_alive():  # short joins keep Ctrl-C responsive
            thread.join(timeout=0.1)
    except BaseException:
        bg.stop.set()
        thread.join(timeout=15)
        if error and not isinstance(error[0], FeatureBuildStopped):
            log.error("the background feature build failed too: %s", error[0])
        raise
    if error:
        raise error[0]
    return {k: results[k] for k in specs}
