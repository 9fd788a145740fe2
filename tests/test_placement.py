"""Where a fold lives (wav2emo/feeding/placement.py): resident on a GPU when it fits, else memory-mapped."""

from __future__ import annotations

import pytest
import torch

from wav2emo.errors import ConfigError
from wav2emo.feeding.placement import GiB, decide, parse_auto_bool, read_items, split_bytes


class _Clips:
    """(H, T, D) float16 features of varying T, an eGeMAPS vector, and a label, like a ClipDataset."""

    def __init__(self, lengths: list[int], h: int = 3, d: int = 4) -> None:
        self._lengths, self.h, self.d = lengths, h, d

    def __len__(self) -> int:
        return len(self._lengths)

    def __getitem__(self, i: int) -> dict:
        t = self._lengths[i]
        return {"ssl": torch.full((self.h, t, self.d), float(i), dtype=torch.float16),
                "egemaps": torch.zeros(88), "label": i % 8, "clip_id": f"c{i}"}

    def lengths(self):
        import numpy as np

        return np.asarray(self._lengths)


def test_split_bytes_counts_every_clip_padded_to_the_longest():
    ds = _Clips([5, 9, 7])
    assert split_bytes(ds) == 3 * (3 * 9 * 4 * 2) + 3 * 88 * 4
    assert split_bytes(_Clips([])) == 0


def test_parse_auto_bool():
    key = "loader.resident"
    assert parse_auto_bool("auto", key) == "auto" and parse_auto_bool("True", key) is True
    assert parse_auto_bool(False, key) is False
    with pytest.raises(ConfigError, match="expected auto, true or false"):
        parse_auto_bool("sometimes", key)


def test_auto_is_memory_mapped_on_a_cpu_and_explicit_settings_win():
    ds = _Clips([5, 9])
    assert not decide("auto", torch.device("cpu"), [ds]).resident
    assert decide(True, torch.device("cpu"), [ds]).resident
    assert not decide(False, torch.device("cuda", 0), [ds]).resident


def test_auto_on_a_gpu_checks_the_free_memory(monkeypatch):
    """A fold that fits (with the headroom) is resident; one that does not falls back, saying why."""
    ds = _Clips([5, 9])
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (10 * GiB, 80 * GiB))
    assert decide("auto", torch.device("cuda", 0), [ds], headroom_gib=8).resident
    placed = decide("auto", torch.device("cuda", 0), [ds], headroom_gib=9.9999999)
    assert not placed.resident
    assert "only 10.0 GiB of 80.0 GiB are free" in placed.reason and "memory-mapped" in placed.reason


def test_auto_counts_the_allocators_unused_memory_as_free(monkeypatch):
    """Memory torch's caching allocator holds but no tensor uses (an earlier fold's, freed) is the fold's to take."""
    ds = _Clips([5, 9])
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (6 * GiB, 80 * GiB))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 20 * GiB)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 16 * GiB)
    placed = decide("auto", torch.device("cuda", 0), [ds], headroom_gib=8)
    assert placed.resident and "10.0 GiB free" in placed.reason
    assert not decide("auto", torch.device("cuda", 0), [ds], headroom_gib=9.9999999).resident


def test_an_earlier_folds_garbage_is_collected_before_the_free_memory_is_measured(monkeypatch):
    """Objects of an earlier fold kept alive only by reference cycles (a trainer and its callbacks, a data module
    and its resident split) are gone before the decision, even with the garbage collector's own timing off."""
    import gc
    import weakref

    class Fold:
        pass

    fold = Fold()
    fold.me = fold  # a reference cycle, as a Trainer's with its callbacks and module
    gone = weakref.ref(fold)
    del fold
    measured = []

    def mem_get_info(device=None):
        measured.append(gone() is None)
        return 80 * GiB, 80 * GiB

    monkeypatch.setattr(torch.cuda, "mem_get_info", mem_get_info)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 0)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 1)  # CUDA already used here
    gc.disable()
    try:
        assert gone() is not None  # only the cycle holds it, and nothing collected it yet
        assert decide("auto", torch.device("cuda", 0), [_Clips([5])]).resident
    finally:
        gc.enable()
    assert measured == [True]


def test_read_items_keeps_the_order_with_threads():
    ds = _Clips(list(range(3, 103)))
    items = read_items(ds, threads=4)
    assert [it["clip_id"] for it in items] == [f"c{i}" for i in range(100)]
    assert all(float(it["ssl"][0, 0, 0]) == i for i, it in enumerate(items))
