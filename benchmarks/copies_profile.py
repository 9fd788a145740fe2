"""Where the cached copies' time goes, on the CPU at a small size (issue 25): the copies' stage split into decoding,
augmenting, writing and hashing (busy seconds of the threads that do each), the top of cProfile's cumulative list of
the augmenting thread, then the feature caches (tiny wav2vec2 hidden states and eGeMAPS, one after the other and
each timed).  Prints only; figures of a run are in benchmarks/reports/copies_cpu.md.

    python benchmarks/copies_profile.py [CLIPS_PER_ACTOR] [--work DIR]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import shutil
import sys
import threading
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.train_benchmark import compose  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("clips_per_actor", type=int, nargs="?", default=12)
    ap.add_argument("--work", type=Path, default=Path("/tmp/wav2emo-copies-profile"))
    args = ap.parse_args()
    import wav2emo.augment.copies as copies
    from wav2emo.augment import build_augment
    from wav2emo.data.corpora import load_corpus
    from wav2emo.data.folds import assemble_fold
    from wav2emo.features import get_features

    cfg = compose(["data=synthetic", f"data.corpus.clips_per_actor={args.clips_per_actor}", "features=tiny",
                   "augment=standard", "augment.mode=cached", "augment.copies=2"], args.work / "out", args.work)
    train = assemble_fold(load_corpus(cfg.data.corpus, cache_dir=cfg.paths.cache_dir), cfg.folds, 0).parts["train"]
    for path in [*Path(cfg.paths.cache_dir).glob("*/augment-*"), *Path(cfg.paths.cache_dir).glob("*-aug-*")]:
        shutil.rmtree(path)
    busy = {"decode": 0.0, "write": 0.0, "hash": 0.0}
    lock = threading.Lock()

    def timed(name, fn):
        def run(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                with lock:
                    busy[name] += time.perf_counter() - t
        return run

    copies.load_audio = timed("decode", copies.load_audio)
    copies._write_wav = timed("write", copies._write_wav)
    copies.sha1_of_file = timed("hash", copies.sha1_of_file)
    print(f"{len(train)} training clips x 2 copies, torch threads {torch.get_num_threads()}, "
          f"copy threads {copies.THREADS}", flush=True)
    profile = cProfile.Profile()
    t0 = time.perf_counter()
    profile.enable()
    m = copies.make_copies(train, build_augment(cfg.augment), 0, cfg.paths.cache_dir)
    profile.disable()
    audio_s = time.perf_counter() - t0
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(14)
    print(out.getvalue())
    print(f"copies: {audio_s:.2f} s for {len(m)} copies; busy seconds of the threads: "
          + ", ".join(f"{k} {v:.2f} s" for k, v in busy.items()), flush=True)
    for name in ("ssl", "egemaps"):  # one after the other, each timed
        t0 = time.perf_counter()
        get_features(m, cfg.features[name], cfg.paths.cache_dir, device="cpu", progress=False)
        print(f"features {name}: {time.perf_counter() - t0:.2f} s", flush=True)


if __name__ == "__main__":
    main()
