"""The fe_vgg_egemaps training step, eager vs fused (not a test; issue 25): milliseconds per step on a GPU.

One optimiser step (bf16 autocast forward, cross-entropy, backward, clip 10, fused Adam) of the reference CNN at
batch 25 on 12 x T x 768 inputs, channels-last, for each variant side by side in one process:

  * ``reference order``: every ConvBlock's layers in their listed order (conv-BN-ReLU ... ReLU-pool): the step as
    it was before issue 25;
  * ``eager``: as shipped (each block's last ReLU after its pooling; exactly the same numbers);
  * ``compiled``: the conv stack through ``torch.compile`` (Inductor fuses batch norm, ReLU and pooling around
    cuDNN's convolutions), ``dynamic`` as given; the compile time of the first steps is reported, and
    ``--warm-process`` times it again in a fresh process that finds Inductor's on-disk caches.

Each variant is timed twice: ``wall`` (launched from Python, synchronised) and ``graph`` (the whole step replayed
from one CUDA graph, as wav2emo's ``cuda_graphs`` fast path runs it: the GPU's time alone).  The largest output
difference of each variant against the reference order (same weights, same batch) is reported.
Writes <out>/step_fused_<gpu>.json and .md.

    python benchmarks/step_fused.py --out benchmarks/reports
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.report_files import machine_slug, write_report  # noqa: E402
from wav2emo.models.blocks import ConvBlock  # noqa: E402
from wav2emo.models.fe_vgg import FeVGGEgemaps  # noqa: E402

B, L, D = 25, 12, 768


def make(listed_order: bool, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = FeVGGEgemaps(in_channels=L, feature_dim=D)
    net.egemaps_norm.set_stats(torch.zeros(88), torch.ones(88))
    if listed_order:
        for b in net.modules():
            if isinstance(b, ConvBlock):
                b.forward = (lambda blk: (lambda t: nn.Sequential.forward(blk, t)))(b)
    return net.cuda().to(memory_format=torch.channels_last)


def batch_of(T: int) -> dict:
    g = torch.Generator(device="cuda").manual_seed(T)
    ssl = torch.randn(B, L, T, D, device="cuda", generator=g).half().to(memory_format=torch.channels_last)
    return {"ssl": ssl, "ssl_mask": torch.ones(B, T, dtype=torch.bool, device="cuda"),
            "egemaps": torch.randn(B, 88, device="cuda", generator=g),
            "label": torch.randint(0, 8, (B,), device="cuda", generator=g)}


def stepper(net: nn.Module, batch: dict):
    opt = torch.optim.Adam(net.parameters(), lr=1e-5, fused=True, capturable=True)
    params = [p for p in net.parameters()]

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):
            logits = net(batch)
        loss = nn.functional.cross_entropy(logits.float(), batch["label"])
        opt.zero_grad(set_to_none=False)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        opt.step()
        return loss

    return step


def timed(fn, steps: int) -> float:
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / steps * 1000


def measure(variant: str, T: int, dynamic: bool, mode: str | None, steps: int = 30) -> dict:
    net = make(listed_order=variant == "reference order")
    batch = batch_of(T)
    out: dict = {}
    if variant == "compiled":
        net.encoder.blocks.compile(dynamic=dynamic, **({"mode": mode} if mode else {}))
    step = stepper(net, batch)
    t0 = time.perf_counter()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):  # warm-up (and compilation) on a side stream, as a CUDA-graph capture needs
            step()
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    out["first_3_steps_s"] = round(time.perf_counter() - t0, 2)
    out["wall_ms"] = round(timed(step, steps), 2)
    try:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            step()
        out["graph_ms"] = round(timed(graph.replay, steps), 2)
    except Exception as e:  # noqa: BLE001 - reported, not hidden
        out["graph_error"] = f"{type(e).__name__}: {str(e)[:300]}"
    return out


def max_difference(T: int, dynamic: bool) -> dict:
    """Forward (train mode) of each variant from the same weights and batch, against the reference order."""
    batch = batch_of(T)
    outs = {}
    for variant in ("reference order", "eager", "compiled"):
        net = make(listed_order=variant == "reference order")
        if variant == "compiled":
            net.encoder.blocks.compile(dynamic=dynamic)
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            torch.manual_seed(1)  # dropout draws alike
            outs[variant] = net(batch).float()
    ref = outs["reference order"]
    return {v: float((o - ref).abs().max()) for v, o in outs.items() if v != "reference order"} | {
        "reference_abs_max": float(ref.abs().max())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "reports")
    ap.add_argument("--frames", type=int, nargs="+", default=[208, 263])
    ap.add_argument("--dynamic", action="store_true", help="compile with dynamic shapes")
    ap.add_argument("--mode", default=None, help="torch.compile mode, e.g. max-autotune-no-cudagraphs")
    ap.add_argument("--warm-process", action="store_true", help="time the compile again in a fresh process")
    ap.add_argument("--only-compiled", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    torch.backends.cudnn.benchmark = True
    res: dict = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "batch": B, "channels": L,
                 "dims": D, "dynamic": a.dynamic, "mode": a.mode,
                 "inductor_cache_dir": os.environ.get("TORCHINDUCTOR_CACHE_DIR", "(default, /tmp/torchinductor_<user>)"),
                 "steps": {}}
    variants = ["compiled"] if a.only_compiled else ["reference order", "eager", "compiled"]
    for T in a.frames:
        for v in variants:
            key = f"T={T} {v}"
            try:
                res["steps"][key] = measure(v, T, a.dynamic, a.mode)
            except Exception as e:  # noqa: BLE001 - one failing variant does not lose the others
                res["steps"][key] = {"error": f"{type(e).__name__}: {str(e)[:500]}"}
            print(key, res["steps"][key], flush=True)
    if a.only_compiled:
        print("RESULT=" + json.dumps(res))
        return
    try:
        res["max_abs_difference_vs_reference_order"] = max_difference(a.frames[0], a.dynamic)
    except Exception as e:  # noqa: BLE001
        res["max_abs_difference_vs_reference_order"] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
    if a.warm_process:
        cmd = [sys.executable, __file__, "--only-compiled", "--frames", *map(str, a.frames)]
        cmd += ["--dynamic"] if a.dynamic else []
        cmd += ["--mode", a.mode] if a.mode else []
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT=")), None)
        res["warm_process"] = json.loads(line[7:])["steps"] if line else {"error": proc.stderr[-1500:]}
    write_report(a.out, f"step_fused_{machine_slug(res['gpu'])}", res, render(res))
    print(render(res))


def render(r: dict) -> str:
    lines = [f"# The fe_vgg_egemaps training step, eager vs fused: {r['gpu']} (torch {r['torch']})", "",
             f"Batch {r['batch']} of {r['channels']} x T x {r['dims']}, bf16 autocast, channels-last, cross-entropy, "
             "clip 10, fused Adam. `wall`: launched from Python; `graph`: the whole step replayed from a CUDA graph "
             "(wav2emo's cuda_graphs fast path; the GPU's time). `reference order`: each block's layers in listed "
             "order (the step before issue 25). Compiled: the conv stack, "
             f"dynamic={r['dynamic']}, mode={r['mode'] or 'default'}. Regenerate: `python benchmarks/step_fused.py"
             " --warm-process`.", "",
             "| T, variant | wall ms | graph ms | first 3 steps (s) |", "| --- | --- | --- | --- |"]
    for k, v in r["steps"].items():
        lines.append(f"| {k} | {v.get('wall_ms', v.get('error', ''))} | {v.get('graph_ms', v.get('graph_error', ''))} "
                     f"| {v.get('first_3_steps_s', '')} |")
    if r.get("warm_process"):
        lines += ["", "The compiled variant in a fresh process (Inductor's on-disk caches warm):", ""]
        for k, v in r["warm_process"].items():
            lines.append(f"- {k}: first 3 steps {v.get('first_3_steps_s', v.get('error', ''))} s, "
                         f"wall {v.get('wall_ms')} ms, graph {v.get('graph_ms', v.get('graph_error'))} ms")
    if r.get("max_abs_difference_vs_reference_order"):
        lines += ["", f"Largest |logit| difference against the reference order, same weights and batch (bf16): "
                      f"{r['max_abs_difference_vs_reference_order']}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
