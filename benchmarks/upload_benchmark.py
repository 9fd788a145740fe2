"""A resident fold's upload to the device, each way in one process on the same splits (issue 25; not a test).

Builds fold 0's data module as a training run does (the train benchmark's 1440-clip synthetic corpus and a
random wav2vec2-base with ``--gpu``; the demo, small, on the CPU otherwise), then uploads its train and dev
splits ``--repeats`` times each way, interleaved, and checks every way's tensors against the first's
(``torch.equal`` on every key):

  * ``stored bytes``: feeding/streamed_upload.py as it is: runs of the cache files' bytes copied into pinned
    chunks by reader threads, sent to the device while the next are read, each frame put into its padded row by
    one indexed copy per chunk on the device;
  * ``rows``: the way before: each clip read through its strategy and padded into its row of a pinned chunk
    (``STORED_BYTES = False``);
  * ``whole``: the way before the streamed upload: every clip read (threads), then padded on the device clip by
    clip (``placement.read_items`` + ``collate``).

The first upload of a run pays for the page cache and the pinned allocator; the report gives every repeat.
Writes <out>/upload_<machine>.json and .md, naming the machine.

    python benchmarks/upload_benchmark.py OUT_DIR [--gpu] [--repeats 3] [--threads 8,16] [--work /tmp/wav2emo-phases]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.report_files import machine_slug, write_report  # noqa: E402
from benchmarks.startup_benchmark import machine_name  # noqa: E402
from benchmarks.startup_phases import train_args  # noqa: E402
from benchmarks.train_benchmark import compose  # noqa: E402

WAYS = ("stored bytes", "rows", "whole")


def upload(way: str, dataset, device, frames_multiple: int | None, threads: int | None):
    import torch

    from wav2emo.feeding import streamed_upload
    from wav2emo.feeding.input_strategies import collate
    from wav2emo.feeding.placement import read_items

    if way == "whole":
        return collate(read_items(dataset), dataset.frames, frames_multiple, padded_device=device)
    streamed_upload.STORED_BYTES = way == "stored bytes"
    try:
        out = streamed_upload.stream_to_device(dataset, device, frames_multiple, threads=threads)
    finally:
        streamed_upload.STORED_BYTES = True
    if out is None:
        raise RuntimeError(f"{way}: this split's inputs do not stream")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out


def same(a: dict, b: dict) -> bool:
    import torch

    return set(a) == set(b) and a["clip_id"] == b["clip_id"] and all(
        torch.equal(v, b[k].to(v.device)) for k, v in a.items() if isinstance(v, torch.Tensor))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--gpu", action="store_true", help="the train benchmark's corpus and wav2vec2-base, on the GPU")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", default="", help="reader threads to compare for the streamed ways, e.g. 8,16 "
                                                  "(default: placement.reading_threads())")
    ap.add_argument("--work", type=Path, default=Path("/tmp/wav2emo-phases"),
                    help="the corpus and caches (startup_phases.py's work folder is reused when it has them)")
    a = ap.parse_args()
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", WANDB_MODE="disabled")
    import torch

    from wav2emo.feeding.placement import reading_threads
    from wav2emo.runs.build import build_datamodule

    device = torch.device("cuda" if a.gpu else "cpu")
    args = [x for x in train_args(a.work, a.gpu) if not x.startswith(("fold=", "trainer.limit"))]
    cfg = compose(args, a.work / "upload-benchmark", a.work)
    dm = build_datamodule(cfg, 0)
    dm.prepare_data()
    dm.setup("fit")
    threads = [int(t) for t in a.threads.split(",") if t] or [reading_threads()]
    ways = [(w, t) for w in WAYS for t in (threads if w != "whole" else [None])]
    result: dict = {"machine": machine_name(), "cpus": os.cpu_count(), "device": str(device),
                    "command": "compose " + " ".join(args), "reading_threads_default": reading_threads(), "splits": {}}
    for part in ("train", "dev"):
        ds = dm.dataset(part)
        times: dict[str, list[float]] = {}
        identical, gb = True, None
        for _ in range(a.repeats):
            reference = None
            for way, t in ways:
                name = way if t is None else f"{way}, {t} threads"
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                out = upload(way, ds, device, dm.frames_multiple, t)
                times.setdefault(name, []).append(round(time.perf_counter() - t0, 3))
                if reference is None:
                    reference = {k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in out.items()}
                    gb = round(sum(v.numel() * v.element_size() for v in out.values() if isinstance(v, torch.Tensor))
                               / 1e9, 2)
                else:
                    identical &= same(reference, out)
                del out
        result["splits"][part] = {"clips": len(ds), "gb_on_device": gb, "identical": identical,
                                  "seconds": times, "median_s": {k: statistics.median(v) for k, v in times.items()}}
    write_report(a.out, f"upload_{machine_slug(result['machine'])}", result, render(result))
    print(render(result))


def render(r: dict) -> str:
    lines = [f"# A resident fold's upload, each way in one process: {r['machine']}, {r['cpus']} CPUs", "",
             f"Fold 0 of `{r['command']}` on `{r['device']}`; each way uploads the split again, interleaved, and every "
             "way's tensors are compared with the first's (`torch.equal`). `stored bytes`: the cache files' bytes "
             "copied into pinned chunks and put into padded rows on the device (streamed_upload.py); `rows`: each clip "
             "read through its strategy and padded into a pinned chunk (the way before); `whole`: every clip read, "
             "then padded on the device clip by clip (the way before the streamed upload). Regenerate: "
             "`python benchmarks/upload_benchmark.py OUT" + (" --gpu" if r["device"].startswith("cuda") else "") + "`.",
             "", "| split | clips | GB on the device | way | median (s) | each upload (s) | identical |",
             "| --- | ---: | ---: | --- | ---: | --- | --- |"]
    for part, s in r["splits"].items():
        for way, times in s["seconds"].items():
            lines.append(f"| {part} | {s['clips']} | {s['gb_on_device']} | {way} | {s['median_s'][way]:.3f} | "
                         f"{', '.join(f'{t:.3f}' for t in times)} | {'yes' if s['identical'] else '**no**'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
