"""CUDA's start begun beside the imports, only for a run on the first GPU (wav2emo/cuda_warmup.py)."""

from __future__ import annotations

import pytest
import torch

from wav2emo import cuda_warmup
from wav2emo.cuda_warmup import wants_warmup, warm_cuda


@pytest.mark.parametrize(("trainer", "want"), [
    ({"accelerator": "gpu", "devices": 1}, True),
    ({"accelerator": "auto", "devices": 1}, True),
    ({"accelerator": "cuda", "devices": [0]}, True),
    ({"accelerator": "gpu", "devices": "1"}, True),
    ({"accelerator": "cpu", "devices": 1}, False),
    ({"accelerator": "gpu", "devices": 2}, False),   # several GPUs: DDP processes start their own
    ({"accelerator": "gpu", "devices": [1]}, False),  # another GPU than the first visible one
    ({"accelerator": "gpu", "devices": -1}, False),
    ({"accelerator": "mps", "devices": 1}, False),
])
def test_only_a_run_on_the_first_gpu_warms_cuda(monkeypatch, trainer, want):
    monkeypatch.delenv(cuda_warmup.ENV, raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert wants_warmup(trainer) is want


def test_switched_off_or_no_visible_gpu(monkeypatch):
    gpu_run = {"accelerator": "gpu", "devices": 1}
    monkeypatch.setenv(cuda_warmup.ENV, "0")
    assert not wants_warmup(gpu_run)
    monkeypatch.delenv(cuda_warmup.ENV)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert not wants_warmup(gpu_run)


def test_warmup_runs_once_a_process_and_never_fails_the_run(monkeypatch):
    monkeypatch.delenv(cuda_warmup.ENV, raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(cuda_warmup, "_STARTED", False)
    thread = warm_cuda({"accelerator": "gpu", "devices": 1})
    assert thread is not None
    thread.join(60)
    assert thread.result.get("ready") or thread.result.get("error")  # no driver here: an error noted, not raised
    assert warm_cuda({"accelerator": "gpu", "devices": 1}) is None  # the multirun's next job: already started
    assert warm_cuda({"accelerator": "cpu"}) is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_torch_runs_on_the_context_the_warmup_started(monkeypatch):
    monkeypatch.delenv(cuda_warmup.ENV, raising=False)
    monkeypatch.setattr(cuda_warmup, "_STARTED", False)
    thread = warm_cuda({"accelerator": "gpu", "devices": 1})
    thread.join(60)
    assert thread.result == {"ready": True}
    x = torch.arange(10.0, device="cuda")
    assert (x * 2).sum().item() == 90.0
