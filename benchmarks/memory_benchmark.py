"""Host memory of training from a memory-mapped cache, as the cache grows (not a test).

Builds hidden-state caches of several sizes (random float16 in the real layout: T x 13 x 768 per clip),
then, in a fresh process per size, reads every clip once through the training data path
(``ClipDataset`` of ``CachedFeatures`` -> ``collate`` in a DataLoader with workers), and records the peak resident
memory of the main process and of the largest worker. Separately it measures one fe_vgg training step
on the CPU at the reference's batch size, whose activations are the other large consumer.

    python benchmarks/memory_benchmark.py --sizes-gb 1 4 --out benchmarks/reports
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.report_files import write_report  # noqa: E402

FRAMES, LAYERS, DIM = 185, 13, 768  # a mean RAVDESS clip at 50 frames/s, wav2vec2-base


def build_cache(path: Path, size_gb: float) -> int:
    from wav2emo.features.cache.writer import CacheBuilder

    clip_bytes = FRAMES * LAYERS * DIM * 2
    n = max(1, int(size_gb * 2**30 / clip_bytes))
    if (path / "meta.json").exists():
        return n
    rng = np.random.default_rng(0)
    block = rng.standard_normal((FRAMES, LAYERS, DIM)).astype(np.float16)
    b = CacheBuilder(path, clip_ids=[f"c{i:06d}" for i in range(n)], sha1s=["0" * 40] * n, lengths=[FRAMES] * n,
                     feature_shape=(LAYERS, DIM), dtype="float16", durable=False)
    for i in b.pending:
        b.write(i, block)
    b.finish({"key": "m" * 64, "kind": "ssl_hidden_states"})
    return n


CHILD = r"""
import json, resource, sys
import numpy as np, torch
sys.path.insert(0, {repo!r})
from torch.utils.data import DataLoader
from wav2emo.data.manifest import Clip, Manifest
from wav2emo.features.cache.reader import FeatureCache
from wav2emo.feeding.input_strategies import CachedFeatures, ClipDataset, Collate
cache = FeatureCache.open({path!r})
clips = [Clip(c, "", "x", 1, "male", "neutral", i % 8, 1, 1, 1, 3.7, 16000, 1, 59200, "0" * 40)
         for i, c in enumerate(cache.clip_ids)]
ds = ClipDataset(Manifest(clips), [CachedFeatures("ssl", cache, np.arange(len(clips)))])
dl = DataLoader(ds, batch_size=25, num_workers=2, collate_fn=Collate(None))
total = 0
for batch in dl:
    total += batch["ssl"].shape[0]
print(json.dumps({{"clips_read": total,
    "peak_rss_main_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    "peak_rss_largest_worker_gb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20}}))
"""

STEP = r"""
import json, resource, sys, torch
sys.path.insert(0, {repo!r})
from wav2emo.models.fe_vgg import FeVGG
torch.manual_seed(0)
net = FeVGG(in_channels=12, feature_dim=768)
opt = torch.optim.Adam(net.parameters(), 1e-5)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
x = torch.randn({batch}, 12, 263, 768)
loss = torch.nn.functional.cross_entropy(net({{"ssl": x}}), torch.zeros({batch}, dtype=torch.long))
loss.backward(); opt.step()
print(json.dumps({{"batch": {batch}, "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                   "before_step_gb": before}}))
"""


def run_child(code: str) -> dict:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=1800)
    if p.returncode != 0:
        return {"error": p.stderr[-1500:]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes-gb", type=float, nargs="+", default=[1.0, 4.0])
    ap.add_argument("--batches", type=int, nargs="+", default=[8, 25])
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "wav2emo-memory-bench")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "reports")
    args = ap.parse_args()
    rows = []
    for size in args.sizes_gb:
        path = args.work / f"cache-{size:g}gb"
        n = build_cache(path, size)
        r = run_child(CHILD.format(repo=str(REPO), path=str(path)))
        r.update({"cache_gb": round(sum(f.stat().st_size for f in path.glob("*.npy")) / 2**30, 2), "clips": n})
        rows.append(r)
        print(r, flush=True)
    steps = [run_child(STEP.format(repo=str(REPO), batch=b)) for b in args.batches]
    for s in steps:
        print(s, flush=True)
    report = {"machine": {"cpu_cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
              "data_path": rows, "fe_vgg_cpu_step": steps}
    lines = ["# Host memory when training on the CPU from the memory-mapped cache", "",
             f"Machine: {os.cpu_count()} CPU cores, {platform.platform()}, Python {platform.python_version()}. "
             "Regenerate: `python benchmarks/memory_benchmark.py`.", "",
             "Reading every clip once through the training data path (all 13 hidden states, as the data path hands them since the featurizer moved into the model; batch 25, 2 workers):", "",
             "| cache size GB | clips | peak RSS main GB | peak RSS largest worker GB |", "| --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['cache_gb']} | {r['clips']} | {r.get('peak_rss_main_gb', float('nan')):.2f} | "
                     f"{r.get('peak_rss_largest_worker_gb', float('nan')):.2f} |")
    lines += ["", "One fe_vgg training step on the CPU (12 x 263 x 768 fp32 inputs; activations kept for backward):", "",
              "| batch | peak RSS GB |", "| --- | --- |"]
    for s in steps:
        lines.append(f"| {s.get('batch')} | {s.get('peak_rss_gb', float('nan')):.2f} |")
    write_report(args.out, "memory_cpu", report, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
