"""The cores a process may use and torch's thread count for a block (wav2emo/cores.py)."""

from __future__ import annotations

import os

import pytest
import torch

from wav2emo.cores import torch_threads, usable_cores


def test_usable_cores_follow_the_affinity_mask():
    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no affinity mask on this platform")
    assert usable_cores() == len(os.sched_getaffinity(0)) >= 1


def test_torch_threads_are_set_inside_the_block_and_put_back_after_it_even_on_error():
    before = torch.get_num_threads()
    want = 1 if before != 1 else 2
    with torch_threads(want):
        assert torch.get_num_threads() == want
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError, match="boom"), torch_threads(want):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before
    with torch_threads(None):  # left alone
        assert torch.get_num_threads() == before
