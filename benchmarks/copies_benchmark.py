"""Cached augmentation's copies, stage by stage (not a test; issue 25): making the augmented audio, then its features.

On fold 0 of the 1440-clip synthetic RAVDESS-shaped corpus (about 1020 training clips), ``augment=standard
augment.mode=cached augment.copies=4`` with model fe_vgg_egemaps and a randomly initialised wav2vec2-base (the real
compute): the 4080 copies are made (``wav2emo.augment.copies.make_copies``) and their wav2vec2 and eGeMAPS
features built as the data module builds them (``get_features_many``, eGeMAPS in its worker processes beside the
backbone).  The originals' features are built first and not timed.  Each way is timed after the copies of the
way before were removed, in the same process:

  * ``--ways``: where the copies are made: ``cuda`` (the GPU, one group of clips after another), ``cpu`` (the
    CPU, one group after another in the calling thread: ``copies.THREADS = 0``), ``pool`` (the CPU, whole groups
    spread over one worker thread per core; see ``wav2emo.augment.copies``);
  * ``--threads 4,8``: the pool alone (audio, no features) with that many threads, how it scales;
  * ``--ssl-only``: the last way's copies' wav2vec2 features built again alone: what a model without eGeMAPS
    (fe_vgg) waits for;
  * ``--profile``: the first way also runs under cProfile (its 25 costliest functions go into the report) and,
    on a GPU, 10 groups under torch.profiler (the costliest operators, CPU and CUDA time).

Reports wall and CPU seconds (user + sys of this process and its finished worker processes).  Writes
<out>/copies_<machine>.json and .md.

    python benchmarks/copies_benchmark.py --work /tmp/cb --out benchmarks/reports --ways cuda,pool --profile
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import resource
import shutil
import sys
import time
from functools import partial
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.finetune_benchmark import fresh_copies  # noqa: E402
from benchmarks.report_files import machine_slug, write_report  # noqa: E402
from benchmarks.train_benchmark import compose, machine_info, random_base_backbone  # noqa: E402

TARGET_S = 30.0  # the copies of 4 x 1020 clips and their features (issue 25)


def cpu_seconds() -> float:
    """User + sys seconds of this process and of its children that have finished."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def datamodule(work: Path, out: Path, smoke: bool):
    from wav2emo.runs.build import build_datamodule

    if smoke:  # the script's own check: the tiny random backbone, 3 clips per actor
        features = ["features=tiny", "data.corpus.clips_per_actor=3"]
    else:
        features = ["features=wav2vec2-base", f"features.ssl.backbone={random_base_backbone(work / 'wav2vec2-base-random')}"]
    cfg = compose(["data=synthetic", *features, "model=fe_vgg_egemaps", "speed=gpu_fast", "augment=standard", "augment.mode=cached",
                   "augment.copies=4", "test=false"], out, work)
    dm = build_datamodule(cfg, 0)
    dm._load()  # the originals' features: built here, untimed
    return dm


def make(dm, way: str):
    import wav2emo.augment.copies as copies

    copies.THREADS = 0 if way == "cpu" else None
    return copies.make_copies(dm.parts["train"], dm.augmenter, dm.seed, dm.cache_dir, sample_rate=dm.sample_rate,
                              device="cuda" if way == "cuda" else "cpu")


def timed(fn):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t, c = time.perf_counter(), cpu_seconds()
    value = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return value, round(time.perf_counter() - t, 2), round(cpu_seconds() - c, 1)


def top_functions(profile: cProfile.Profile, n: int = 25) -> str:
    buf = io.StringIO()
    pstats.Stats(profile, stream=buf).sort_stats("tottime").print_stats(n)
    return buf.getvalue()


def torch_profile(dm, groups: int = 10) -> str:
    """The costliest operators while ``groups`` groups of clips are copied on the GPU."""
    import wav2emo.augment.copies as copies
    from wav2emo.data.manifest import Manifest

    train = dm.parts["train"]
    sub = Manifest(list(train)[: groups * copies.GROUP], name=f"{train.name}-profile", class_names=train.class_names)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                            torch.profiler.ProfilerActivity.CUDA]) as prof:
        copies.make_copies(sub, dm.augmenter, dm.seed, dm.cache_dir / "profile", sample_rate=dm.sample_rate,
                           device="cuda")
    shutil.rmtree(dm.cache_dir / "profile", ignore_errors=True)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=40)


def arguments(a: argparse.Namespace) -> str:
    """The options that chose what was measured, as the command line gives them."""
    return " ".join([f"--ways {a.ways}", *([f"--threads {a.threads}"] if a.threads else []),
                     *(["--ssl-only"] if a.ssl_only else []), *(["--profile"] if a.profile else []),
                     *(["--smoke"] if a.smoke else [])])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--ways", default="cuda,pool")
    ap.add_argument("--threads", default="", help="e.g. 4,8: the pool's audio alone with that many threads")
    ap.add_argument("--ssl-only", action="store_true",
                    help="also the last way's copies' wav2vec2 features alone (a model without eGeMAPS, fe_vgg)")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="check the script in a minute on a CPU (tiny backbone)")
    a = ap.parse_args()
    from wav2emo.features.overlap import get_features_many

    a.work.mkdir(parents=True, exist_ok=True)
    dm = datamodule(a.work, a.out, a.smoke)
    machine = machine_info() if torch.cuda.is_available() else {"gpu": None, "torch": torch.__version__}
    result = {"machine": machine, "cpu_cores": os.cpu_count(), "train_clips": len(dm.parts["train"]),
              "copies_per_clip": dm.augmenter.copies,
              "backbone": "tiny random wav2vec2 (--smoke)" if a.smoke else "wav2vec2-base (random weights)",
              "ways": {}, "profiles": {}, "arguments": arguments(a)}
    specs = {name: dm.features_cfg[name] for name in dm.caches}

    def features(manifest, specs) -> dict:
        seconds: dict[str, float] = {}
        _, wall, cpu = timed(partial(get_features_many, manifest, specs, dm.cache_dir, device=dm.extraction_device,
                                     seconds=seconds))
        return {"features_seconds": wall, "features_cpu_seconds": cpu, "seconds_per_cache": seconds}

    manifest = None
    for k, way in enumerate(a.ways.split(",")):
        fresh_copies(dm.cache_dir)
        profile = cProfile.Profile() if a.profile and k == 0 else None
        if profile is not None:
            profile.enable()
        manifest, wall, cpu = timed(partial(make, dm, way))
        if profile is not None:
            profile.disable()
            result["profiles"][f"{way}: cProfile of making the copies"] = top_functions(profile)
        row = {"audio_seconds": wall, "audio_cpu_seconds": cpu, "copies": len(manifest), **features(manifest, specs)}
        row["total_seconds"] = round(row["audio_seconds"] + row["features_seconds"], 2)
        result["ways"][way] = row
        print(way, row, flush=True)
    if a.ssl_only and manifest is not None and "ssl" in specs:
        for path in Path(dm.cache_dir).glob("*-aug-*"):  # the copies' feature caches; their audio stays
            shutil.rmtree(path, ignore_errors=True)
        row = {"audio_seconds": result["ways"][way]["audio_seconds"],
               "audio_cpu_seconds": result["ways"][way]["audio_cpu_seconds"], "copies": len(manifest),
               **features(manifest, {"ssl": specs["ssl"]})}
        row["total_seconds"] = round(row["audio_seconds"] + row["features_seconds"], 2)
        result["ways"][f"{way}, wav2vec2 features alone (fe_vgg)"] = row
        print("ssl only", row, flush=True)
    for n in filter(None, a.threads.split(",")):
        import wav2emo.augment.copies as copies

        fresh_copies(dm.cache_dir)
        copies.THREADS = int(n)
        made, wall, cpu = timed(partial(copies.make_copies, dm.parts["train"], dm.augmenter, dm.seed, dm.cache_dir,
                                        sample_rate=dm.sample_rate, device="cpu"))
        result["ways"][f"pool, {n} threads (audio alone)"] = {"audio_seconds": wall, "audio_cpu_seconds": cpu,
                                                              "copies": len(made)}
        print(n, "threads", wall, cpu, flush=True)
    if a.profile and torch.cuda.is_available():
        result["profiles"]["cuda: torch.profiler, 10 groups"] = torch_profile(dm)
    name = result["machine"].get("gpu") or "cpu"
    write_report(a.out, f"copies_{machine_slug(name)}", result, render(result))


def render(r: dict) -> str:
    m = r["machine"]
    lines = [f"# Cached augmentation's copies, stage by stage: {m.get('gpu') or 'CPU'}", "",
             f"{r['cpu_cores']} CPU cores, torch {m.get('torch')}. {r['copies_per_clip']} copies of each of the "
             f"{r['train_clips']} training clips of fold 0 (synthetic corpus, augment=standard), then their "
             f"{r['backbone']} and eGeMAPS features. Target for both stages together: <= {TARGET_S:.0f} s.",
             "", "| copies made on | audio s | audio CPU s | features s | features CPU s | per cache s | total s | met? |",
             "| --- | ---: | ---: | ---: | ---: | --- | ---: | --- |"]
    for way, v in r["ways"].items():
        if "features_seconds" not in v:
            lines.append(f"| {way} | {v['audio_seconds']:.2f} | {v['audio_cpu_seconds']:.1f} | - | - | - | - | - |")
            continue
        per = ", ".join(f"{k} {s:.1f}" for k, s in v["seconds_per_cache"].items())
        lines.append(f"| {way} | {v['audio_seconds']:.2f} | {v['audio_cpu_seconds']:.1f} | {v['features_seconds']:.2f} "
                     f"| {v['features_cpu_seconds']:.1f} | {per} | {v['total_seconds']:.2f} | "
                     f"{'yes' if v['total_seconds'] <= TARGET_S else 'no'} |")
    for title, text in r["profiles"].items():
        lines += ["", f"## {title}", "", "```", text.rstrip(), "```"]
    lines += ["", f"Command: `python benchmarks/copies_benchmark.py --work W --out OUT {r['arguments']}`."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
