"""Class imbalance: balanced class weights from the training actors' labels, and the class-balanced sampler."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.helpers import SMALL, compose_cfg
from wav2emo.errors import ConfigError
from wav2emo.feeding.batches import ClassBalancedBatchSampler

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


class TinyNet(torch.nn.Module):
    inputs = ("egemaps",)

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, num_classes)

    def forward(self, batch):
        return self.lin(batch["egemaps"])


def module(class_weights, num_classes: int = 3):
    from wav2emo.training.module import EmotionClassifier

    torch.manual_seed(0)
    return EmotionClassifier(
        TinyNet(num_classes), functools.partial(torch.optim.Adam, lr=1e-3), num_classes=num_classes,
        class_names=[f"c{i}" for i in range(num_classes)], class_weights=class_weights,
    )


def batch(n: int = 12, num_classes: int = 3):
    g = torch.Generator().manual_seed(0)
    return {"egemaps": torch.randn(n, 4, generator=g), "label": torch.arange(n) % num_classes}


def test_balanced_weights_follow_the_counts_and_enter_the_loss():
    m = module("balanced")
    m.set_class_weights([10, 5, 0 + 5])
    torch.testing.assert_close(m.class_weight, torch.tensor([20 / 30, 20 / 15, 20 / 15]))
    b = batch()
    loss, logits = m._shared_step(b, "train")
    want = F.cross_entropy(logits, b["label"], weight=m.class_weight)
    torch.testing.assert_close(loss, want)
    assert not torch.allclose(loss, F.cross_entropy(logits, b["label"]))
    assert "class_weight" in m.state_dict()  # a checkpoint carries the weights it was trained with


def test_a_class_absent_from_training_gets_weight_zero_and_plain_loss_is_unchanged():
    m = module("balanced")
    m.set_class_weights(np.array([4, 0, 12]))
    torch.testing.assert_close(m.class_weight, torch.tensor([2.0, 0.0, 16 / 24]))
    plain = module(None)
    assert "class_weight" not in plain.state_dict()
    b = batch()
    loss, logits = plain._shared_step(b, "train")
    torch.testing.assert_close(loss, F.cross_entropy(logits, b["label"]))


def test_given_weights_and_bad_values():
    m = module([1.0, 2.0, 0.5])
    b = batch()
    loss, logits = m._shared_step(b, "train")
    torch.testing.assert_close(loss, F.cross_entropy(logits, b["label"], weight=torch.tensor([1.0, 2.0, 0.5])))
    with pytest.raises(ValueError, match="not 'balanced'"):
        m.set_class_weights([1, 1, 1])
    for bad in ([1.0, 2.0], [1.0, -1.0, 1.0], [0.0, 0.0, 0.0], "inverse"):
        with pytest.raises(ConfigError, match="class_weights"):
            module(bad)
    unset = module("balanced")
    with pytest.raises(RuntimeError, match="never set"):
        unset._shared_step(b, "train")
    with pytest.raises(ValueError, match="expected 3"):
        unset.set_class_weights([1, 2])


def test_balanced_sampler_draws_classes_uniformly_and_reproducibly():
    labels = np.array([0] * 300 + [1] * 60 + [2] * 30 + [3] * 10 + [-1] * 5)  # 30:1 imbalance, 5 unlabelled
    s = ClassBalancedBatchSampler(labels, batch_size=32, seed=7)
    assert len(s) == (len(labels) + 31) // 32
    draws = []
    for epoch in range(10):
        s.set_epoch(epoch)
        batches = list(s)
        assert all(len(b) <= 32 for b in batches) and sum(map(len, batches)) == len(labels)
        draws.append(np.concatenate(batches))
    drawn = labels[np.concatenate(draws)]
    assert (drawn >= 0).all()  # unlabelled clips are never drawn
    share = np.bincount(drawn, minlength=4) / len(drawn)
    np.testing.assert_allclose(share, 0.25, atol=0.04)  # 4050 draws: sd of a share ~0.007
    assert len(np.unique(draws[0][labels[draws[0]] == 3])) <= 10  # with replacement: the rare clips recur
    again = ClassBalancedBatchSampler(labels, batch_size=32, seed=7)
    again.set_epoch(3)  # a resumed run draws what epoch 3 drew
    np.testing.assert_array_equal(np.concatenate(list(again)), draws[3])
    assert not np.array_equal(draws[3], draws[4])
    other_seed = ClassBalancedBatchSampler(labels, batch_size=32, seed=8)
    other_seed.set_epoch(3)
    assert not np.array_equal(np.concatenate(list(other_seed)), draws[3])
    assert s.sampler is s  # where Lightning looks for set_epoch on a batch sampler
    with pytest.raises(ValueError, match="labelled"):
        ClassBalancedBatchSampler([-1, -1], batch_size=2)


@pytest.fixture(scope="module")
def shared_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("balance")
    return root / "data", root / "cache"


def test_builder_sets_weights_from_training_labels_only(tmp_path, shared_dirs):
    from wav2emo.runs.build import build_datamodule, build_module

    cfg = compose_cfg(
        [*SMALL, "model=mean_linear_logmel", "features=logmel", "model.module.class_weights=balanced"],
        tmp_path, *shared_dirs,
    )
    dm = build_datamodule(cfg, 0)
    dm.setup("fit")
    # The synthetic corpus is balanced: drop half the training actors' clips of class 0 so the weights differ.
    from wav2emo.data.manifest import Manifest

    train = dm.parts["train"]
    kept = [c for c in train if not (c.label == 0 and c.actor % 2)]
    dm.parts["train"] = Manifest(kept, name=train.name, class_names=train.class_names)
    train_actors = set(dm.split.train)
    want = np.bincount([c.label for c in kept], minlength=8)
    np.testing.assert_array_equal(dm.class_counts("train"), want)
    everyone = np.bincount([c.label for c in dm.manifest], minlength=8)  # dev and test clips included
    assert want[0] < want[1] and everyone[0] == everyone[1]
    assert {c.actor for c in kept} <= train_actors
    asked = []
    original = dm.class_counts
    dm.class_counts = lambda part="train": asked.append(part) or original(part)
    module = build_module(cfg, dm)
    assert asked == ["train"]
    present = want > 0
    expected = np.zeros(8)
    expected[present] = want.sum() / (present.sum() * want[present])
    np.testing.assert_allclose(module.class_weight.numpy(), expected, rtol=1e-6)
    assert module.class_weight[0] > module.class_weight[1]


def test_loader_sampler_balanced_feeds_the_training_loader_only(tmp_path, shared_dirs):
    from wav2emo.runs.build import build_datamodule

    cfg = compose_cfg([*SMALL, "model=mean_linear_logmel", "features=logmel", "loader.sampler=balanced"],
                      tmp_path, *shared_dirs)
    dm = build_datamodule(cfg, 0)
    dm.setup("fit")
    train = dm.train_dataloader()
    assert isinstance(train.batch_sampler, ClassBalancedBatchSampler)
    assert not isinstance(dm.val_dataloader().batch_sampler, ClassBalancedBatchSampler)
    train.batch_sampler.set_epoch(0)
    first = [b["clip_id"] for b in train]
    train.batch_sampler.set_epoch(0)
    assert [b["clip_id"] for b in train] == first
    cfg = compose_cfg([*SMALL, "model=mean_linear_logmel", "features=logmel", "loader.sampler=balanced",
                       "loader.resident=true"], tmp_path, *shared_dirs)
    dm = build_datamodule(cfg, 0)
    dm.setup("fit")
    resident = dm.train_dataloader()
    assert isinstance(resident.batch_sampler, ClassBalancedBatchSampler)
    resident.set_epoch(0)
    assert [b["clip_id"] for b in resident] == first  # the same draws on the resident path
    for bad, match in ((["loader.sampler=random"], "loader.sampler"),
                       (["loader.sampler=balanced", "loader.bucket_by_length=true"], "cannot be combined")):
        cfg = compose_cfg([*SMALL, "model=mean_linear_logmel", "features=logmel", *bad], tmp_path, *shared_dirs)
        with pytest.raises(ConfigError, match=match):
            build_datamodule(cfg, 0)


def test_balanced_draws_over_cached_augmentation_copies():
    from wav2emo.feeding.batches import CopyBatchSampler

    labels = [0] * 90 + [1] * 10
    sampler = CopyBatchSampler(100, 2, 10, seed=0, labels=labels)
    rows = []
    for epoch in range(20):
        sampler.set_epoch(epoch)
        epoch_rows = [r for b in sampler for r in b]
        assert len(epoch_rows) == 100 and max(epoch_rows) < 300  # an epoch keeps its length; rows of 3 versions
        rows += epoch_rows
    minority = sum(labels[r % 100] for r in rows) / len(rows)
    assert 0.4 < minority < 0.6  # 0.1 without balancing
    assert {r // 100 for r in rows} == {0, 1, 2}  # originals and both copies are drawn
