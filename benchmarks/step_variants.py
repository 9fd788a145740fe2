"""Exploration (not a test): which changes make a fe_vgg_egemaps training step faster on a GPU.

Sections: S times one optimiser step (forward, backward, clip, Adam) at batch 25, eager and compiled;
P profiles the host side of such steps and tries CUDA graphs; R times the reference's way (from
train_benchmark.py); L runs short Lightning folds with a torch.profiler window in epoch 1
(``STEP_VARIANTS_CPROFILE=1``: a cProfile of the host instead).  Findings: reports/step_variants_h100.md.

    python benchmarks/step_variants.py OUT_DIR [--sections S,P,R,L]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.step_profile import seconds_per_call  # noqa: E402
from wav2emo.models.fe_vgg import FeVGGEgemaps  # noqa: E402

RES: dict = {}


def note(key, value):
    RES[key] = value
    print(f"{key}: {value}", flush=True)


def make():
    net = FeVGGEgemaps(in_channels=12, feature_dim=768).cuda()
    net.egemaps_norm.set_stats(torch.zeros(88), torch.ones(88))
    return net.to(memory_format=torch.channels_last)


def batch_for(T, B=25):
    return {"ssl": torch.randn(B, 12, T, 768, device="cuda").half(),
            "ssl_mask": torch.ones(B, T, dtype=torch.bool, device="cuda"),
            "egemaps": torch.randn(B, 88, device="cuda"), "label": torch.randint(0, 8, (B,), device="cuda")}


def stepper(net, batch, amp=True):
    opt = torch.optim.Adam(net.parameters(), lr=1e-5)
    labels = batch["label"]

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            logits = net(batch)
        loss = F.cross_entropy(logits.float(), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 10)
        opt.step()

    return step


def profiled(fn, calls: int, cpu: bool = False):
    """torch.profiler key averages over ``calls`` calls of ``fn`` (after one untimed call)."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    activities = [ProfilerActivity.CUDA] + ([ProfilerActivity.CPU] if cpu else [])
    with profile(activities=activities) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    return prof.key_averages()


def gpu_ms_per_call(fn, calls: int = 5) -> float:
    """Milliseconds of GPU kernel time per call, to tell GPU-bound from CPU-bound."""
    return sum(e.self_device_time_total for e in profiled(fn, calls)) / 1000 / calls


def section_steps():
    torch.backends.cudnn.benchmark = True
    for T in (263, 190):
        b = batch_for(T)
        for name, kw in (("eager", None), ("compiled dynamic", {"dynamic": True}), ("compiled static", {"dynamic": False})):
            net = make()
            if kw is not None:
                net.compile(**kw)
            st = stepper(net, b)
            t = time.perf_counter()
            st()
            torch.cuda.synchronize()
            note(f"S T={T} {name} first step s", time.perf_counter() - t)
            note(f"S T={T} {name} wall ms", 1000 * seconds_per_call(st, 20, 5))
            note(f"S T={T} {name} gpu ms", gpu_ms_per_call(st))


def cpu_table(fn, calls: int = 5, rows: int = 22) -> str:
    """Profiler table sorted by self CPU time: what the host does per step (syncs show up as
    cudaStreamSynchronize / cudaMemcpyAsync with long CPU times)."""
    return profiled(fn, calls, cpu=True).table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=60)


def section_profile():
    torch.backends.cudnn.benchmark = False
    b = batch_for(190)
    for name, kw in (("eager", None), ("compiled", {"dynamic": True}),
                     ("compiled reduce-overhead", {"dynamic": True, "mode": "reduce-overhead"})):
        net = make()
        if kw is not None:
            net.compile(**kw)
        st = stepper(net, b)
        try:
            t = time.perf_counter()
            for _ in range(3):
                st()
            torch.cuda.synchronize()
            note(f"P {name} first 3 steps s", time.perf_counter() - t)
            note(f"P {name} wall ms", 1000 * seconds_per_call(st, 20, 5))
            note(f"P {name} gpu ms", gpu_ms_per_call(st))
            # a second length: does it re-record / recompile?
            b2 = batch_for(175)
            st2 = stepper(net, b2)
            t = time.perf_counter()
            st2()
            torch.cuda.synchronize()
            note(f"P {name} new length first step s", time.perf_counter() - t)
            note(f"P {name} new length wall ms", 1000 * seconds_per_call(st2, 10, 3))
            table = cpu_table(st)
            print(table, flush=True)
            RES[f"P {name} table"] = table
        except Exception as e:  # report, don't hide
            note(f"P {name} error", repr(e)[:800])


def section_reference():
    from benchmarks.train_benchmark import time_reference_way

    for strict in (False, True):
        r = time_reference_way(1020, 120, egemaps=True, strict_fp32=strict)
        label = "strict fp32" if strict else "pytorch defaults"
        note(f"R {label} train step", r["seconds_per_train_step"])
        note(f"R {label} eval step", r["seconds_per_eval_step"])


class TorchProfileCallback:
    """Profiles training batches [start, start + n) of epoch 1 with torch.profiler; writes the table."""

    def __new__(cls, out: str, start: int = 10, n: int = 5):
        import lightning as L
        from torch.profiler import ProfilerActivity, profile

        class _CB(L.Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                if trainer.current_epoch == 1 and batch_idx == start:
                    torch.cuda.synchronize()
                    self.prof = profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA])
                    self.prof.__enter__()
                    self.t = time.perf_counter()

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                if trainer.current_epoch == 1 and batch_idx == start + n - 1:
                    torch.cuda.synchronize()
                    wall = time.perf_counter() - self.t
                    self.prof.__exit__(None, None, None)
                    ka = self.prof.key_averages()
                    gpu = sum(e.self_device_time_total for e in ka) / 1000 / n
                    table = ka.table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=60)
                    Path(out).write_text(f"wall ms/batch {1000 * wall / n:.2f}  gpu ms/batch {gpu:.2f}\n" + table)
                    print(f"lightning {out}: wall ms/batch {1000 * wall / n:.2f} gpu ms/batch {gpu:.2f}", flush=True)

        return _CB()


def section_lightning(work: Path, out: Path):
    from omegaconf import open_dict

    from benchmarks.train_benchmark import base_overrides, compose, random_base_backbone, run
    from wav2emo.data.corpora import load_corpus
    from wav2emo.features import get_features

    backbone = random_base_backbone(work / "wav2vec2-base-random")
    cfg = compose(base_overrides(backbone, "fe_vgg_egemaps", 1, "loader.resident=true", "loader.num_workers=0"), work / "runs", work)
    manifest = load_corpus(cfg.data.corpus, cache_dir=cfg.paths.cache_dir)
    t = time.perf_counter()
    for name in ("ssl", "egemaps"):
        get_features(manifest, dict(cfg.features[name]), cfg.paths.cache_dir)
    note("L features seconds", time.perf_counter() - t)
    import benchmarks.train_benchmark as tb

    orig = tb.compose

    def compose_prof(overrides, o, w):
        c = orig(overrides, o, w)
        with open_dict(c):
            if not os.environ.get("STEP_VARIANTS_CPROFILE"):
                c.callbacks.torch_prof = {"_target_": "benchmarks.step_variants.TorchProfileCallback",
                                          "out": str(out / f"torchprof-{o.name}.txt")}
        return c

    tb.compose = compose_prof
    fast = base_overrides(backbone, "fe_vgg_egemaps", EPOCHS, "loader.resident=true", "loader.num_workers=0", "loader.bucket_by_length=true") + ["speed=gpu_fast"]
    variants = {
        "resident_buckets": base_overrides(backbone, "fe_vgg_egemaps", EPOCHS, "loader.resident=true", "loader.num_workers=0", "loader.bucket_by_length=true"),
        "gpu_fast": fast,
        "gpu_fast_warm": fast,
        "gpu_fast_nographs": fast + ["model.module.compile.mode=null"],
    }
    if os.environ.get("STEP_VARIANTS_CPROFILE"):  # where the host's time goes in the Lightning loop
        import cProfile
        import pstats

        ov = variants["resident_buckets"]
        run(ov, work / "warm", work)  # cuDNN and allocator warm-up
        prof = cProfile.Profile()
        prof.enable()
        run(ov, work / "cprofile", work)
        prof.disable()
        stats = pstats.Stats(prof).sort_stats("tottime")
        stats.print_stats(45)
        stats.sort_stats("cumulative").print_stats(60)
        return
    for name, ov in variants.items():
        t = time.perf_counter()
        r = run(ov, work / name, work)
        note(f"L {name} wall", time.perf_counter() - t)
        note(f"L {name} epoch_seconds", [round(x, 4) for x in r["epoch_seconds"]])
        note(f"L {name} test_ua", r["test"]["ua"])


EPOCHS = 8


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--work", type=Path, default=Path("/tmp/wav2emo-bench"))
    ap.add_argument("--sections", default="S,R,L")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    a.work.mkdir(parents=True, exist_ok=True)
    secs = a.sections.split(",")
    try:
        if "P" in secs:
            section_profile()
        if "S" in secs:
            section_steps()
        if "R" in secs:
            section_reference()
        if "L" in secs:
            section_lightning(a.work, a.out)
    finally:
        (a.out / "step_variants.json").write_text(json.dumps(RES, indent=2))
        for k, v in RES.items():
            if not isinstance(v, str):
                print(k, v)


if __name__ == "__main__":
    main()
