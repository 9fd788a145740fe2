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


def _garbage_in_a_cycle():
    """An object kept alive only by a reference cycle (as a Trainer with its callbacks and module), and a weak
    reference that says whether it is gone."""
    import weakref

    class Fold:
        pass

    fold = Fold()
    fold.me = fold
    return weakref.ref(fold)


def test_an_earlier_folds_garbage_is_collected_at_a_folds_start_once_cuda_has_run(monkeypatch):
    """Objects of an earlier fold kept alive only by reference cycles (a trainer and its callbacks, a data module
    and its resident split) are gone when the next fold starts, even with the garbage collector's own timing off;
    a process that has not started CUDA (a fresh one, whose start-up this would slow) skips the collection."""
    import gc

    from wav2emo.feeding.placement import collect_earlier_folds

    gc.disable()
    try:
        monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
        gone = _garbage_in_a_cycle()
        collect_earlier_folds()
        assert gone() is not None  # nothing collected: no earlier fold used the GPU here
        monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
        collect_earlier_folds()
        assert gone() is None
    finally:
        gc.enable()


def test_a_fold_collects_earlier_folds_before_it_builds_its_data(monkeypatch, tmp_path):
    from tests.helpers import compose_cfg
    from wav2emo.runs import fold_runner

    order = []

    class Stop(Exception):
        pass

    def build_datamodule(*args, **kwargs):
        order.append("data module")
        raise Stop

    monkeypatch.setattr(fold_runner, "collect_earlier_folds", lambda: order.append("collect"))
    monkeypatch.setattr(fold_runner, "build_datamodule", build_datamodule)
    cfg = compose_cfg(["data=synthetic", "features=tiny", "trainer=cpu"], tmp_path, tmp_path / "data", tmp_path / "cache")
    with pytest.raises(Stop):
        fold_runner.run_fold(cfg, 0, tmp_path / "fold_0")
    assert order == ["collect", "data module"]


def test_read_items_keeps_the_order_with_threads():
    ds = _Clips(list(range(3, 103)))
    items = read_items(ds, threads=4)
    assert [it["clip_id"] for it in items] == [f"c{i}" for i in range(100)]
    assert all(float(it["ssl"][0, 0, 0]) == i for i, it in enumerate(items))
