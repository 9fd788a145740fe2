"""One feeding path: input strategies, one collate for every input, the resident split, waveform bucketing."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
from torch.utils.data import DataLoader

from tests.helpers import SMALL, compose_cfg
from wav2emo.feeding.batches import LengthBucketBatchSampler, ResidentSplit
from wav2emo.feeding.input_strategies import ClipDataset, Collate, collate


class ToyStrategy:
    """Deterministic items of every input kind, of varying length (stands in for caches and audio)."""

    def __init__(self, key: str, n: int) -> None:
        self.key, self.n = key, n
        self.t = [3 + (7 * i) % 11 for i in range(n)]

    def load(self, i: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(i)
        t = self.t[i]
        shape = {"ssl": (4, t, 6), "ssl_layer": (t, 6), "logmel": (t, 5), "wave": (160 * t,), "egemaps": (88,)}
        return {self.key: torch.randn(*shape[self.key], generator=g)}

    def lengths(self):
        if self.key == "egemaps":
            return None
        return np.asarray([160 * t if self.key == "wave" else t for t in self.t])


def toy_dataset(keys, n=23) -> ClipDataset:
    manifest = [SimpleNamespace(label=i % 8, clip_id=f"c{i:03d}", actor=1 + i % 4) for i in range(n)]
    return ClipDataset(manifest, [ToyStrategy(k, n) for k in keys])


def test_one_collate_pads_every_input_and_marks_real_frames():
    ds = toy_dataset(["ssl", "ssl_layer", "logmel", "wave", "egemaps"])
    items = [ds[i] for i in (0, 1, 2)]
    t = [ds.strategies[0].t[i] for i in (0, 1, 2)]
    b = collate(items)
    assert b["index"].tolist() == [0, 1, 2] and b["label"].dtype == torch.long
    assert b["ssl"].shape == (3, 4, max(t), 6) and b["ssl_layer"].shape == (3, max(t), 6)
    assert b["logmel"].shape == (3, max(t), 5) and b["egemaps"].shape == (3, 88)
    assert b["ssl_mask"].sum(1).tolist() == t and b["logmel_mask"].sum(1).tolist() == t
    assert b["wave"].shape == (3, 160 * max(t)) and b["wave_lengths"].tolist() == [160 * x for x in t]
    for k, (i, item) in enumerate(enumerate(items)):
        assert torch.equal(b["wave"][k, : 160 * t[i]], item["wave"]) and not b["wave"][k, 160 * t[i]:].any()
        assert torch.equal(b["logmel"][k, : t[i]], item["logmel"]) and not b["logmel"][k, t[i]:].any()
    rounded = collate(items, frames_multiple=8)
    assert rounded["logmel"].shape[1] % 8 == 0 and rounded["logmel_mask"].sum(1).tolist() == t
    fixed = collate(items, frames=4)  # a fixed length applies to SSL frames only
    assert fixed["ssl"].shape[2] == 4 and fixed["logmel"].shape[1] == max(t)


def test_resident_split_serves_what_the_loader_serves_for_every_input():
    ds = toy_dataset(["ssl", "logmel", "wave", "egemaps"])
    loader = list(DataLoader(ds, batch_size=5, shuffle=False, collate_fn=Collate(None)))
    resident = list(ResidentSplit(ds, batch_size=5, shuffle=False, device=torch.device("cpu")))
    assert len(loader) == len(resident) == 5
    for bl, br in zip(loader, resident, strict=True):
        assert set(bl) == set(br) and bl["clip_id"] == br["clip_id"]
        for k, v in bl.items():
            if isinstance(v, torch.Tensor):
                assert torch.equal(v, br[k]), k  # cropped to the batch's own longest clip, as the loader pads
    bucketed = ResidentSplit(ds, 5, shuffle=True, device=torch.device("cpu"),
                             batch_sampler=LengthBucketBatchSampler(ds.lengths(), 5, seed=0))
    seen = sorted(i for b in bucketed for i in b["index"].tolist())
    assert seen == list(range(len(ds)))


def test_waveforms_are_read_from_the_manifest_and_bucketed_by_length(tmp_path):
    from wav2emo.runs.build import build_datamodule

    cfg = compose_cfg([*SMALL, "loader.bucket_by_length=true", "model.inputs=[wave]"], tmp_path,
                      tmp_path / "data", tmp_path / "cache")
    dm = build_datamodule(cfg, 0)
    dm.setup("fit")
    assert dm.caches == {}  # audio only: no feature cache is built
    ds = dm.dataset("train")
    lengths = ds.lengths()
    item = ds[3]
    assert item["wave"].dtype == torch.float32 and abs(len(item["wave"]) - lengths[3]) <= 1
    loader = dm.train_dataloader()
    assert isinstance(loader.batch_sampler, LengthBucketBatchSampler)
    batch = next(iter(loader))
    assert batch["wave"].shape == (len(batch["index"]), int(batch["wave_lengths"].max()))
    expected = torch.as_tensor(lengths[batch["index"].numpy()])
    assert (batch["wave_lengths"] - expected).abs().max() <= 1
    assert dm.class_names[:2] == ("neutral", "calm") and len(dm.class_names) == 8


def test_a_config_of_the_previous_layout_is_refused_clearly(tmp_path):
    import pytest
    from omegaconf import open_dict

    from wav2emo.errors import ConfigError
    from wav2emo.runs.build import build_datamodule

    cfg = compose_cfg(list(SMALL), tmp_path, tmp_path / "data", tmp_path / "cache")
    with open_dict(cfg):
        del cfg["datamodule"]
        del cfg.model["inputs"]
    with pytest.raises(ConfigError, match="predates the data module"):
        build_datamodule(cfg, 0)
