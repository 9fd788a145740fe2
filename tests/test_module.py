"""EmotionClassifier: training with a Lightning Trainer, metric semantics, test reports, hparams."""

from __future__ import annotations

import pickle
import warnings
from functools import partial

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from wav2emo.data.manifest import EMOTIONS
from wav2emo.models import EgemapsMLP, LayerWeighted
from wav2emo.training.module import EmotionClassifier
from wav2emo.training.tracked_metrics import build_metrics, build_per_class_metrics, per_class_table

N_LAYERS, DIM = 2, 16

warnings.filterwarnings("ignore", message=".*does not have many workers.*")
warnings.filterwarnings("ignore", message=".*(GPU available|TPU available|LOCAL_RANK).*")


def make_clips(n_per_class: int, seed: int, prototypes: torch.Tensor, start_id: int = 0) -> list[dict]:
    """Separable clips of varying length: each class has its own mean feature vector."""
    g = torch.Generator().manual_seed(seed)
    clips = []
    for i in range(n_per_class * len(prototypes)):
        label = i % len(prototypes)
        t = int(torch.randint(8, 21, (1,), generator=g))
        ssl = prototypes[label] + 0.8 * torch.randn(N_LAYERS, t, DIM, generator=g)
        clips.append(
            {"ssl": ssl.half(), "label": label, "clip_id": f"clip{start_id + i:04d}", "actor": i % 5 + 1}
        )
    return clips


def collate(items: list[dict]) -> dict:
    """Pad ``ssl`` with zeros to the longest clip and build the batch dict of the contract."""
    t_max = max(it["ssl"].shape[1] for it in items)
    ssl = torch.zeros(len(items), N_LAYERS, t_max, DIM, dtype=items[0]["ssl"].dtype)
    mask = torch.zeros(len(items), t_max, dtype=torch.bool)
    for i, it in enumerate(items):
        t = it["ssl"].shape[1]
        ssl[i, :, :t], mask[i, :t] = it["ssl"], True
    batch = {
        "ssl": ssl,
        "ssl_mask": mask,
        "label": torch.tensor([it["label"] for it in items]),
        "clip_id": [it["clip_id"] for it in items],
        "actor": torch.tensor([it["actor"] for it in items]),
    }
    for key in ("pred", "egemaps"):
        if key in items[0]:
            batch[key] = torch.stack([torch.as_tensor(it[key]) for it in items])
    return batch


def loader(clips: list[dict], batch_size: int = 16, shuffle: bool = False) -> DataLoader:
    return DataLoader(clips, batch_size=batch_size, shuffle=shuffle, collate_fn=collate)


def trainer(max_epochs: int, **kw) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=max_epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kw,
    )


@pytest.fixture(scope="module")
def data() -> dict[str, list[dict]]:
    protos = torch.randn(len(EMOTIONS), N_LAYERS, 1, DIM, generator=torch.Generator().manual_seed(123))
    return {
        "train": make_clips(16, 1, protos),
        "val": make_clips(6, 2, protos, start_id=1000),
        "test": make_clips(5, 3, protos, start_id=2000),
    }


def test_trains_above_chance_and_reports_test_results(data):
    torch.manual_seed(0)
    net = LayerWeighted(in_channels=N_LAYERS, feature_dim=DIM, hidden=32)
    module = EmotionClassifier(
        net,
        optimizer=partial(torch.optim.Adam, lr=1e-2),
        scheduler=partial(torch.optim.lr_scheduler.ReduceLROnPlateau, patience=2),
    )
    tr = trainer(4)
    tr.fit(module, loader(data["train"], shuffle=True), loader(data["val"]))
    metrics = tr.callback_metrics
    assert float(metrics["val/ua"]) > 0.6  # chance is 1/8
    assert float(metrics["val/ua_best"]) >= float(metrics["val/ua"])
    assert float(metrics["val/loss_best"]) <= float(metrics["val/loss"]) + 1e-6
    for key in ("train/loss", "train/wa", "train/ua", "train/f1", "val/loss", "val/wa", "val/f1"):
        assert key in metrics and torch.isfinite(metrics[key])
    assert module.net.layer_weights.sum().item() == pytest.approx(1.0, abs=1e-6)

    n_test = len(data["test"])
    results = tr.test(module, loader(data["test"], batch_size=7), verbose=False)[0]
    assert results["test/wa"] > 0.6
    assert {f"test/{m}/{c}" for m in ("precision", "recall", "f1") for c in EMOTIONS} <= set(results)

    preds = module.test_predictions
    assert len(preds) == n_test and len({p["clip_id"] for p in preds}) == n_test
    probs = np.array([[p[f"prob_{c}"] for c in EMOTIONS] for p in preds])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert [p["pred"] for p in preds] == probs.argmax(axis=1).tolist()
    assert [p["label"] for p in preds] == [c["label"] for c in data["test"]]
    assert [p["actor"] for p in preds] == [c["actor"] for c in data["test"]]

    cm = module.test_confusion
    assert cm.dtype.kind == "i" and cm.shape == (8, 8) and cm.sum() == n_test
    assert cm.sum(axis=1).tolist() == [5] * 8  # rows = true class
    assert np.trace(cm) / n_test == pytest.approx(results["test/wa"])
    assert [r["support"] for r in module.test_per_class] == [5] * 8

    out = tr.predict(module, loader(data["test"], batch_size=7))
    assert sum(len(o["clip_id"]) for o in out) == n_test
    assert all(torch.allclose(o["probs"].sum(dim=1), torch.ones(len(o["clip_id"]))) for o in out)

    # a second test run starts from scratch
    tr.test(module, loader(data["test"][:8]), verbose=False)
    assert len(module.test_predictions) == 8 and module.test_confusion.sum() == 8


class OracleNet(nn.Module):
    """Predicts the class given in batch['pred']: lets a test choose the predictions exactly."""

    inputs = ("ssl",)

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.scale = nn.Parameter(torch.tensor(10.0))

    def forward(self, batch: dict) -> torch.Tensor:
        return F.one_hot(batch["pred"], self.num_classes).float() * self.scale


# An imbalanced example where WA and UA differ: everything predicted as class 0.
LABELS = [0, 0, 0, 0, 0, 0, 1, 2]
PREDS = [0, 0, 0, 0, 0, 0, 0, 0]
WA, UA = 6 / 8, (1 + 0 + 0) / 3
F1_0 = 2 * 0.75 * 1.0 / 1.75


def test_metric_semantics_wa_is_micro_ua_is_macro_recall():
    m = build_metrics(3, "val")
    m.update(torch.tensor(PREDS), torch.tensor(LABELS))
    res = {k: float(v) for k, v in m.compute().items()}
    assert res == pytest.approx({"val/wa": WA, "val/ua": UA, "val/f1": F1_0 / 3})

    pc = build_per_class_metrics(3)
    pc.update(torch.tensor(PREDS), torch.tensor(LABELS))
    out = pc.compute()
    assert out["confusion"].tolist() == [[6, 0, 0], [1, 0, 0], [1, 0, 0]]
    table = per_class_table(out["precision"], out["recall"], out["f1"], out["confusion"].sum(1), "abc")
    assert [r["class"] for r in table] == ["a", "b", "c"]
    assert table[0] == pytest.approx(
        {"class": "a", "precision": 0.75, "recall": 1.0, "f1": F1_0, "support": 6}
    )
    assert [r["recall"] for r in table[1:]] == [0.0, 0.0]
    with pytest.raises(ValueError, match="support has 2 values, expected 3"):
        per_class_table([1, 1, 1], [1, 1, 1], [1, 1, 1], [1, 2], "abc")


def test_module_aggregates_metrics_over_uneven_batches():
    clips = [
        {"ssl": torch.zeros(N_LAYERS, 4, DIM), "label": y, "pred": p, "clip_id": f"c{i}", "actor": 1}
        for i, (y, p) in enumerate(zip(LABELS, PREDS, strict=True))
    ]
    module = EmotionClassifier(
        OracleNet(3), optimizer=partial(torch.optim.SGD, lr=0.1), num_classes=3, class_names=("a", "b", "c")
    )
    # batches of 3: per-batch accuracies 1, 1, 1/2 would average to 0.83, not the clip-level 0.75
    res = trainer(1).test(module, loader(clips, batch_size=3), verbose=False)[0]
    assert res["test/wa"] == pytest.approx(WA)
    assert res["test/ua"] == pytest.approx(UA)
    assert res["test/f1"] == pytest.approx(F1_0 / 3)
    assert res["test/precision/a"] == pytest.approx(0.75) and res["test/recall/b"] == 0.0
    assert module.test_confusion.tolist() == [[6, 0, 0], [1, 0, 0], [1, 0, 0]]


class RecordingClassifier(EmotionClassifier):
    """Records (sanity_checking, val loss) at every validation epoch end, the sanity check included."""

    def on_validation_epoch_end(self) -> None:
        _, _, losses, sizes = self._epoch_outputs["val"].collect()
        self.history.append((self.trainer.sanity_checking, float((losses * sizes).sum() / sizes.sum())))
        super().on_validation_epoch_end()


def test_sanity_check_does_not_enter_the_best_values(data):
    torch.manual_seed(0)
    net = LayerWeighted(in_channels=N_LAYERS, feature_dim=DIM, hidden=32)
    # Gradient ascent makes the loss rise every epoch, so the sanity check's loss would be the best one.
    module = RecordingClassifier(net, optimizer=partial(torch.optim.SGD, lr=0.05, maximize=True))
    module.history = []
    tr = trainer(3, num_sanity_val_steps=-1)
    tr.fit(module, loader(data["train"]), loader(data["val"]))
    sanity = [loss for checking, loss in module.history if checking]
    epochs = [loss for checking, loss in module.history if not checking]
    assert len(sanity) == 1 and len(epochs) == 3
    assert sanity[0] < min(epochs)  # the premise: the sanity value would have won
    assert float(tr.callback_metrics["val/loss_best"]) == pytest.approx(min(epochs))
    assert float(module.val_loss_best.compute()) == pytest.approx(min(epochs))


def test_bf16_mixed_on_cpu(data):
    torch.manual_seed(0)
    module = EmotionClassifier(
        LayerWeighted(in_channels=N_LAYERS, feature_dim=DIM, hidden=32),
        optimizer=partial(torch.optim.Adam, lr=1e-2),
    )
    tr = trainer(
        1, precision="bf16-mixed", limit_train_batches=3, limit_val_batches=2, num_sanity_val_steps=0
    )
    tr.fit(module, loader(data["train"]), loader(data["val"]))
    assert torch.isfinite(tr.callback_metrics["train/loss"])
    tr.test(module, loader(data["test"]), verbose=False)
    probs = np.array([[p[f"prob_{c}"] for c in EMOTIONS] for p in module.test_predictions])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_hparams_are_plain_and_picklable():
    module = EmotionClassifier(
        EgemapsMLP(), optimizer=partial(torch.optim.Adam, lr=1e-3), label_smoothing=0.1
    )
    hp = dict(module.hparams)
    assert set(hp) == {"num_classes", "class_names", "label_smoothing", "compile", "optim", "seed", "class_weights"}
    assert not any(isinstance(v, nn.Module) or callable(v) for v in hp.values())
    assert pickle.loads(pickle.dumps(hp)) == hp
    assert hp["label_smoothing"] == 0.1 and tuple(hp["class_names"]) == EMOTIONS


def test_feature_stats_and_optimizer_params():
    module = EmotionClassifier(EgemapsMLP(), optimizer=partial(torch.optim.Adam, lr=1e-3))
    assert module.inputs == ("egemaps",) and module.standardized_inputs == ("egemaps",)
    with pytest.raises(ValueError, match="no Standardizer for input 'ssl'"):
        module.set_feature_stats("ssl", torch.zeros(88), torch.ones(88))
    module.set_feature_stats("egemaps", np.full(88, 2.0), np.full(88, 4.0))
    restored = EmotionClassifier(EgemapsMLP(), optimizer=partial(torch.optim.Adam, lr=1e-3))
    restored.load_state_dict(module.state_dict())  # the statistics travel with the checkpoint
    assert restored.net.norm.is_fitted and torch.all(restored.net.norm.std == 4.0)

    module.net.mlp[0].requires_grad_(False)
    opt = module.configure_optimizers()
    n_opt = sum(p.numel() for group in opt.param_groups for p in group["params"])
    assert (
        n_opt
        == sum(p.numel() for p in module.parameters() if p.requires_grad)
        < sum(p.numel() for p in module.parameters())
    )


def test_constructor_checks():
    with pytest.raises(ValueError, match="class_names has 3 names"):
        EmotionClassifier(EgemapsMLP(), optimizer=torch.optim.Adam, class_names=("a", "b", "c"))
    with pytest.raises(TypeError, match="inputs"):
        EmotionClassifier(nn.Linear(2, 2), optimizer=torch.optim.Adam)


def test_training_and_validation_steps_never_read_device_values(monkeypatch):
    """On a GPU, a value read back inside a step makes the CPU wait for the device every batch (it
    halved the training speed); metrics are fed once per epoch instead.  Any such read raises here."""
    from wav2emo.models import FeVGGEgemaps

    torch.manual_seed(0)
    net = FeVGGEgemaps(in_channels=N_LAYERS, feature_dim=DIM, widths=(4, 4, 4, 4), convs_per_block=(1, 1, 1, 1))
    module = EmotionClassifier(net, optimizer=partial(torch.optim.Adam, lr=1e-3))
    module.set_feature_stats("egemaps", torch.zeros(88), torch.ones(88))
    items = make_clips(2, 0, torch.randn(8, N_LAYERS, 1, DIM))
    for it in items:
        it["egemaps"] = torch.randn(88)
    batch = collate(items)

    def host_read(self, *args, **kwargs):
        raise AssertionError("a step read a tensor value back to the host")

    with monkeypatch.context() as m:
        for name in ("item", "tolist", "__bool__", "cpu", "numpy"):
            m.setattr(torch.Tensor, name, host_read)
        loss = module.training_step(batch, 0)
        loss.backward()
        module.validation_step(batch, 0)
    assert torch.isfinite(loss)
    preds, labels, losses, sizes = module._epoch_outputs["val"].collect()
    assert len(preds) == len(labels) == len(items) and sizes.tolist() == [len(items)]


@pytest.mark.parametrize("backend", ["eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_compiled_net_trains_and_keeps_plain_checkpoint_names(data, backend):
    """compile compiles the net in place: same results as eager, and checkpoints load into a plain net.

    Without dropout: compiled code draws dropout masks from its own random stream.
    """
    results = {}
    for compile_opts in (False, {"backend": backend, "dynamic": True}):
        torch.manual_seed(0)
        module = EmotionClassifier(
            LayerWeighted(in_channels=N_LAYERS, feature_dim=DIM, hidden=32, dropout=0.0),
            optimizer=partial(torch.optim.Adam, lr=1e-2),
            compile=compile_opts,
        )
        tr = trainer(2, num_sanity_val_steps=0, deterministic=True)
        tr.fit(module, loader(data["train"]), loader(data["val"]))
        results[bool(compile_opts)] = (module, {k: float(v) for k, v in tr.callback_metrics.items()})
    compiled, plain = results[True][0], results[False][0]
    assert compiled._compiled and not plain._compiled
    assert set(compiled.state_dict()) == set(plain.state_dict())
    fresh = EmotionClassifier(
        LayerWeighted(in_channels=N_LAYERS, feature_dim=DIM, hidden=32), optimizer=partial(torch.optim.Adam)
    )
    fresh.load_state_dict(compiled.state_dict())
    for key in ("train/loss", "val/loss", "val/ua"):
        assert results[True][1][key] == pytest.approx(results[False][1][key], abs=1e-4), key
    with pytest.raises(TypeError, match="compile must be"):
        EmotionClassifier(EgemapsMLP(), optimizer=partial(torch.optim.Adam), compile="yes")


def test_compile_targets_named_by_a_part_of_the_net_are_compiled_alone():
    """FeVGG's encoder names its conv stack: that is compiled, not the length-dependent head."""
    from wav2emo.models import FeVGG

    net = FeVGG(in_channels=N_LAYERS, feature_dim=DIM, widths=(4, 4, 4, 4), convs_per_block=(1, 1, 1, 1))
    module = EmotionClassifier(net, optimizer=partial(torch.optim.Adam), compile={"backend": "eager"})
    module.setup("fit")
    assert net.encoder.blocks._compiled_call_impl is not None
    assert net._compiled_call_impl is None and net.encoder._compiled_call_impl is None
