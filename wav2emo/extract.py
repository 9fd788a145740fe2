"""Fill the shared feature cache for a corpus: ``python -m wav2emo.extract [data=...] [features=...]``.

Training runs call the same :func:`wav2emo.features.get_features` and would extract on first use;
running this once first keeps extraction out of (parallel) training jobs and shows what was cached.
``rebuild=true`` verifies every checksum of the selected caches and computes their damaged shards again
(a damaged cache is otherwise an error, never rebuilt silently).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from wav2emo.cli import user_errors
from wav2emo.compat import require_compatible
from wav2emo.registry import import_plugins

require_compatible()  # a misfit torch/torchaudio pair is one clear line, not a traceback from deep inside

log = logging.getLogger(__name__)


def _selected(features: Mapping[str, Any], only: Any) -> list[str]:
    keys = list(features)
    if only is None:
        return keys
    wanted = [only] if isinstance(only, str) else list(only)
    unknown = [k for k in wanted if k not in features]
    if unknown:
        raise ValueError(f"only={wanted}: {unknown} not in the features config; expected some of {keys}")
    return wanted


def _size_on_disk(path) -> int:
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file())


def run(cfg: DictConfig) -> dict[str, dict[str, Any]]:
    """Extract every selected feature set; returns a summary per feature key.

    eGeMAPS (worker processes) is built in the background while the SSL backbone extracts
    (:func:`wav2emo.features.overlap.get_features_many`); ``overlap=false`` builds one after the other.
    """
    from wav2emo.data.corpora import load_corpus
    from wav2emo.features.overlap import get_features_many

    manifest = load_corpus(cfg.data.corpus, cache_dir=cfg.paths.cache_dir)
    log.info("corpus %s: %d clips", manifest.name, len(manifest))
    keys = _selected(cfg.features, cfg.get("only"))
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    caches = get_features_many(manifest, {k: cfg.features[k] for k in keys}, cfg.paths.cache_dir, seconds=seconds,
                               overlap=cfg.get("overlap", True), device=cfg.device, progress=cfg.progress,
                               rebuild=bool(cfg.get("rebuild", False)))
    log.info("%d feature set(s) ready in %.1f s", len(keys), time.perf_counter() - start)
    summary: dict[str, dict[str, Any]] = {}
    for key in keys:
        cache = caches[key]
        summary[key] = {
            "path": str(cache.path),
            "clips": cache.num_clips,
            "feature_shape": list(cache.feature_shape),
            "frames": [int(cache.lengths.min()), int(cache.lengths.max())],
            "dtype": str(cache.dtype),
            "size_mb": round(_size_on_disk(cache.path) / 2**20, 1),
            "seconds": round(seconds[key], 2),
            "built_s": cache.meta.get("build", {}).get("seconds") or cache.meta.get("build", {}).get("extract_s"),
        }
    width = max(len(k) for k in summary)
    for key, s in summary.items():
        print(
            f"{key:<{width}}  {s['clips']} clips x {s['feature_shape']} {s['dtype']}, frames {s['frames'][0]}-"
            f"{s['frames'][1]}, {s['size_mb']} MB, {s['seconds']} s  ->  {s['path']}"
        )
    return summary


@hydra.main(version_base="1.3", config_path="conf", config_name="extract")
def main(cfg: DictConfig) -> None:
    log.debug("config:\n%s", OmegaConf.to_yaml(cfg))
    with user_errors("wav2emo.extract"):  # named files and values to act on: one line, no traceback
        import_plugins(cfg.get("plugins"))  # modules of the user's that register parts of their own
        run(cfg)


if __name__ == "__main__":
    main()
