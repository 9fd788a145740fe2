"""Time of each augmentation transform on one batch of the reference's shape (not a test).

    python benchmarks/augment_benchmark.py [--device cpu|cuda] [--out benchmarks/reports] [--ta-steps 2 0.5]

Batch: 25 clips x 5.27 s at 16 kHz (84,320 samples; RAVDESS's longest clip, the reference's padding), harmonic
tones with noise (the cost does not depend on the content). For every transform of ``wav2emo.augment`` it
times the call with p = 1 (every example transformed) after one warm-up call (kernels built, caches filled),
as the median of ``--repeats`` calls; plus the standard composition with its own probabilities, the log-mel
frontend, and ``torchaudio.functional.pitch_shift`` for each requested step (one call each, no warm-up: it
rebuilds its kernel on every call anyway, and a call can take tens of seconds on a CPU). ``--out`` writes
``augment_<device>.json`` and ``.md`` there.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report_files import write_report  # noqa: E402
from wav2emo.augment import AddNoise, Gain, PitchShift, SpecAugment, Speed, build_augment  # noqa: E402
from wav2emo.features.logmel import LogMelFrontend  # noqa: E402

SR, BATCH, SECONDS = 16000, 25, 5.27


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int, warmup: int = 1) -> dict:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return {"median_ms": 1000 * statistics.median(times), "min_ms": 1000 * min(times), "calls": repeats}


def make_batch(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    n = round(SECONDS * SR)
    t = torch.arange(n) / SR
    f0 = 100 + 150 * torch.rand(BATCH, 1, generator=g)
    wave = sum(torch.sin(2 * math.pi * k * f0 * t) / k for k in range(1, 6)) * 0.2
    wave = wave + 0.01 * torch.randn(BATCH, n, generator=g)
    return wave.float().to(device), torch.full((BATCH,), n, device=device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--ta-steps", type=float, nargs="*", default=[-2, -1.5, -1, -0.5, 0.5, 1, 1.5, 2],
                    help="n_steps for torchaudio.functional.pitch_shift (one call each)")
    ap.add_argument("--out", type=Path, default=None, help="write augment_<device>.json/.md into this folder")
    args = ap.parse_args()
    device = torch.device(args.device)
    load_before = os.getloadavg()[0]
    wave, lengths = make_batch(device)
    gen = torch.Generator(device=device).manual_seed(0)
    rows: list[dict] = []

    def add(name: str, fn, note: str = "", repeats: int | None = None, warmup: int = 1) -> None:
        r = timed(fn, device, repeats or args.repeats, warmup)
        rows.append({"transform": name, **r, "note": note})
        print(f"{name:44s} {r['median_ms']:10.1f} ms  {note}", flush=True)

    def each(transform):
        return lambda: transform(wave, lengths, gen)

    grid = PitchShift()
    add("pitch: grid, random step per example", each(grid), "9 steps of 0.5 st in [-2, 2]; p=1")
    for s in (2.0, 0.5):
        one = PitchShift(semitones=(s, s))
        add(f"pitch: grid, all examples {s:+} st", each(one), f"ratio {one.ratios[0]}")
    add("speed: 0.9/1.0/1.1 per example", each(Speed()))
    for kind in ("white", "pink", "babble"):
        add(f"noise: {kind}", each(AddNoise(kinds=[kind])), "SNR 10-20 dB")
    add("gain", each(Gain()))
    frontend = LogMelFrontend({"kind": "logmel"}).to(device)
    feats, mask = frontend(wave, lengths)
    add("log-mel frontend (64 mels)", lambda: frontend(wave, lengths), f"-> {tuple(feats.shape)}")
    spec = SpecAugment()
    add("spec augment on log-mel", lambda: spec(feats, mask, gen), "2 time + 2 freq masks")
    standard = build_augment({"name": "standard", "wave": {
        "pitch": {"p": 0.5}, "speed": {"p": 0.5}, "noise": {"p": 0.5}, "gain": {"p": 0.5}}})
    batch = {"wave": wave, "wave_lengths": lengths}
    add("standard composition (p=0.5 each)", lambda: standard(batch, gen), "conf/augment/standard.yaml",
        repeats=max(args.repeats, 10))

    import torchaudio.functional as F

    for s in args.ta_steps:
        rate = 2.0 ** (-s / 12)
        orig = int(SR / rate)
        note = f"resample {orig} -> {SR} Hz (gcd {math.gcd(orig, SR)})"
        try:
            add(f"torchaudio pitch_shift n_steps={s:+}", lambda s=s: F.pitch_shift(wave, SR, s), note,
                repeats=1, warmup=0)
        except RuntimeError as e:  # out of memory for some steps (pytorch/audio 2414)
            rows.append({"transform": f"torchaudio pitch_shift n_steps={s:+}", "median_ms": None, "min_ms": None,
                         "calls": 1, "note": f"{note}; failed: {str(e).splitlines()[0][:120]}"})
            print(rows[-1], flush=True)

    env = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
           "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
           "python": platform.python_version(), "batch": f"{BATCH} x {SECONDS} s at {SR} Hz",
           "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "load_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)]}
    if args.out:
        _, md = write_report(args.out, f"augment_{device.type}", {"env": env, "rows": rows},
                             render(device.type, rows, env))
        print(f"wrote {md}")


def render(tag: str, rows: list[dict], env: dict) -> str:
    ta = [r for r in rows if r["transform"].startswith("torchaudio") and r["median_ms"] is not None]
    ours = next(r for r in rows if r["transform"].startswith("pitch: grid, random"))
    lines = [f"# Augmentation transforms: time per batch on {env['device']} ({tag})", "",
             f"Batch {env['batch']}; torch {env['torch']}, {env['torch_threads']} threads, {env['cpu_cores']} cores; "
             f"{env['when']}; 1-minute load average before/after: {env['load_1min_before_after']} (other jobs "
             "share the machine: above the core count, times are inflated). Median of repeated calls after one warm-up, every example transformed (p = 1) "
             "unless noted; torchaudio's pitch_shift: one call per step, no warm-up (its kernel is rebuilt on "
             "every call). Command: `python benchmarks/augment_benchmark.py --device "
             f"{tag} --out benchmarks/reports`.", "",
             "| transform | median ms | min ms | note |", "| --- | ---: | ---: | --- |"]
    for r in rows:
        med = "failed" if r["median_ms"] is None else f"{r['median_ms']:.1f}"
        mn = "" if r["min_ms"] is None else f"{r['min_ms']:.1f}"
        lines.append(f"| {r['transform']} | {med} | {mn} | {r['note']} |")
    if ta:
        worst = max(ta, key=lambda r: r["median_ms"])
        best = min(ta, key=lambda r: r["median_ms"])
        lines += ["", "## Pitch shift: which implementation",
                  f"torchaudio.functional.pitch_shift took {best['median_ms']:.0f} to {worst['median_ms']:.0f} ms per "
                  f"batch depending on the step ({worst['transform'].split('=')[1]} slowest: {worst['note']}); the grid "
                  f"shift with cached kernels, a random step per example, took {ours['median_ms']:.0f} ms. "
                  "Chosen: the grid (wav2emo.augment.PitchShift), same method as torchaudio (phase vocoder + "
                  "resampling), ratios as fractions with denominators <= 100 (<= 0.01 semitone off), so its cost "
                  "does not depend on the step and no step can fail to allocate."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
