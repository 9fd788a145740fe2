"""Where a fe_vgg_egemaps training step spends its time on a GPU (not a test).

Times one optimiser step (forward, backward, clip, Adam) at the reference's batch 25 on 12 x 263 x 768
inputs under several settings, to choose the fast path for the training loop.

    python benchmarks/step_profile.py
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from wav2emo.models.fe_vgg import FeVGGEgemaps  # noqa: E402


def make(channels_last: bool):
    net = FeVGGEgemaps(in_channels=12, feature_dim=768).cuda()
    net.egemaps_norm.set_stats(torch.zeros(88), torch.ones(88))
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    return net


def time_steps(net, batch, steps=20, warmup=5, amp=True):
    opt = torch.optim.Adam(net.parameters(), lr=1e-5)
    labels = batch["label"]

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            logits = net(batch)
        loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 10)
        opt.step()

    return seconds_per_call(step, steps, warmup)


def seconds_per_call(fn, steps: int, warmup: int) -> float:
    """Mean wall time of ``fn()`` on the GPU: warm-up calls first, synchronised around the timed ones."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / steps


def main():
    B, L, T, D = 25, 12, 263, 768
    ssl16 = torch.randn(B, L, T, D, device="cuda").half()
    base = {"ssl": ssl16, "ssl_mask": torch.ones(B, T, dtype=torch.bool, device="cuda"),
            "egemaps": torch.randn(B, 88, device="cuda"), "label": torch.randint(0, 8, (B,), device="cuda")}
    res = {}
    for bench in (False, True):
        torch.backends.cudnn.benchmark = bench
        for cl in (False, True):
            net = make(cl)
            batch = dict(base)
            if cl:
                batch["ssl"] = ssl16.to(memory_format=torch.channels_last)
            key = f"bf16 benchmark={bench} channels_last={cl}"
            res[key] = time_steps(net, batch)
            print(key, f"{res[key] * 1000:.1f} ms/step", flush=True)
    torch.backends.cudnn.benchmark = True
    net = make(True)
    res["fp32 (tf32) benchmark channels_last"] = time_steps(net, dict(base), amp=False)
    print("fp32", res["fp32 (tf32) benchmark channels_last"] * 1000, flush=True)
    # Without the mask (no masked_fill pass)
    b2 = dict(base)
    b2.pop("ssl_mask")
    b2["ssl"] = ssl16.to(memory_format=torch.channels_last)
    res["bf16 benchmark channels_last no-mask"] = time_steps(make(True), b2)
    print("no mask", res["bf16 benchmark channels_last no-mask"] * 1000, flush=True)
    # torch.compile
    net = make(True)
    t = time.perf_counter()
    cnet = torch.compile(net)
    try:
        res["compiled first 5 steps s"] = time_steps(cnet, b2, steps=1, warmup=4) and (time.perf_counter() - t)
        res["bf16 compiled channels_last"] = time_steps(cnet, b2)
        print("compiled", res["bf16 compiled channels_last"] * 1000, "compile s", res["compiled first 5 steps s"], flush=True)
    except Exception as e:  # report, don't hide
        res["compile_error"] = repr(e)[:500]
        print("compile failed", e, flush=True)
    # A profile of the best eager setting
    from torch.profiler import ProfilerActivity, profile

    net = make(True)
    time_steps(net, b2, steps=2, warmup=3)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        time_steps(net, b2, steps=3, warmup=0)
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=18)
    print(table)
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".")
    (out / "step_profile.json").write_text(json.dumps(res, indent=2))
    (out / "step_profile_table.txt").write_text(table)


if __name__ == "__main__":
    main()
