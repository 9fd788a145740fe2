"""EmotionClassifier's new slots: train-only transforms, an optional upstream, parameter groups, schedules."""

from __future__ import annotations

from functools import partial
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from wav2emo.errors import ConfigError
from wav2emo.feeding.batches import ResidentSplit
from wav2emo.feeding.input_strategies import ClipDataset, Collate
from wav2emo.models import EgemapsMLP
from wav2emo.training.module import EmotionClassifier
from wav2emo.training.optim import OptimSettings, lr_lambda

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


class Egemaps:
    key = "egemaps"

    def load(self, i):
        return {"egemaps": torch.randn(88, generator=torch.Generator().manual_seed(i)) + (i % 8)}

    def lengths(self):
        return None


def dataset(n: int, offset: int = 0) -> ClipDataset:
    manifest = [SimpleNamespace(label=i % 8, clip_id=f"c{offset + i}", actor=1) for i in range(n)]
    return ClipDataset(manifest, [Egemaps()])


def loader(n: int, offset: int = 0) -> DataLoader:
    return DataLoader(dataset(n, offset), batch_size=8, collate_fn=Collate(None))


class MarkingTransform:
    """A toy training transform: marks the batch and records which step seeds it got."""

    def __init__(self) -> None:
        self.seeds: list[int] = []
        self.indices: list[list[int]] = []

    def __call__(self, batch, generator):
        self.seeds.append(generator.initial_seed())
        self.indices.append(batch["index"].tolist())
        out = dict(batch)
        out["egemaps"] = batch["egemaps"] + torch.randn(batch["egemaps"].shape, generator=generator)
        out["transformed"] = torch.ones(len(batch["label"]), dtype=torch.bool)
        return out


class RecordingNet(EgemapsMLP):
    """Records whether each batch it saw was transformed, per Lightning stage."""

    def __init__(self) -> None:
        super().__init__(hidden=(8,))
        self.seen: list[tuple[str, bool]] = []
        self.stage = lambda: "?"

    def forward(self, batch):
        self.seen.append((self.stage(), "transformed" in batch))
        return super().forward(batch)


def make_module(transform=None, **kw) -> EmotionClassifier:
    net = RecordingNet()
    module = EmotionClassifier(net, optimizer=partial(torch.optim.Adam, lr=1e-3), train_transform=transform,
                               seed=7, **kw)
    net.norm.set_stats(torch.zeros(88), torch.ones(88))
    net.stage = lambda: module.trainer.state.stage.value
    return module


def trainer(epochs: int, **kw) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, max_epochs=epochs, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, **kw)


def run_all_stages(module, train, val, test):
    tr = trainer(2, num_sanity_val_steps=1)
    tr.fit(module, train, val)
    tr.test(module, test, verbose=False)
    tr.predict(module, test)


def test_transforms_run_on_training_batches_only():
    transform = MarkingTransform()
    module = make_module(transform)
    run_all_stages(module, loader(24), loader(16, 100), loader(16, 200))
    seen = module.net.seen
    assert {s for s, t in seen if t} == {"train"}  # every transformed batch was a training batch ...
    assert all(t for s, t in seen if s == "train")  # ... and every training batch was transformed
    assert {s for s, _ in seen} >= {"train", "sanity_check", "validate", "test", "predict"}
    assert len(transform.seeds) == 2 * 3 and len(set(transform.seeds)) == 6  # fresh per step and epoch
    again = MarkingTransform()
    run_all_stages(make_module(again), loader(24), loader(16, 100), loader(16, 200))
    assert again.seeds == transform.seeds  # ... and reproducible from (seed, epoch, batch_idx)


def test_transforms_apply_to_resident_batches_too():
    transform = MarkingTransform()
    module = make_module(transform)
    cpu = torch.device("cpu")
    train = ResidentSplit(dataset(24), 8, shuffle=True, device=cpu, seed=1)
    val = ResidentSplit(dataset(16, 100), 8, shuffle=False, device=cpu)
    run_all_stages(module, train, val, ResidentSplit(dataset(16, 200), 8, shuffle=False, device=cpu))
    assert {s for s, t in module.net.seen if t} == {"train"} and len(transform.seeds) == 6
    assert sorted(sum(transform.indices[:3], [])) == list(range(24))


class ToyUpstream(nn.Module):
    """An upstream as design9.md: forward(batch) -> batch, parameter_groups() with depths (0 = top)."""

    def __init__(self) -> None:
        super().__init__()
        self.lower = nn.Linear(88, 88)
        self.norm = nn.LayerNorm(88)
        self.top = nn.Linear(88, 88)
        self.frozen = nn.Linear(88, 88)
        self.frozen.requires_grad_(False)  # e.g. a frozen CNN feature encoder: never optimised

    def forward(self, batch):
        return {**batch, "egemaps": self.top(self.norm(self.lower(self.frozen(batch["egemaps"]))))}

    def parameter_groups(self):
        return [
            {"name": "top", "depth": 0, "params": list(self.top.parameters())},
            {"name": "lower", "depth": 1, "params": [*self.lower.parameters(), *self.norm.parameters()]},
        ]


def test_parameter_groups_lrs_and_weight_decay():
    optim = {"lr_backbone": 1e-4, "layer_decay": 0.5, "weight_decay": 0.01}
    module = make_module(upstream=ToyUpstream(), optim=optim)
    opt = module.configure_optimizers()
    groups = {g["name"]: g for g in opt.param_groups}
    assert set(groups) == {"head", "head/no_decay", "backbone/top", "backbone/top/no_decay",
                           "backbone/lower", "backbone/lower/no_decay"}
    assert groups["head"]["lr"] == 1e-3 and groups["backbone/top"]["lr"] == 1e-4
    assert groups["backbone/lower"]["lr"] == pytest.approx(5e-5)
    up = module.upstream
    assert groups["backbone/lower/no_decay"]["params"] == [up.lower.bias, up.norm.weight, up.norm.bias]
    assert groups["backbone/lower"]["params"] == [up.lower.weight]
    assert all(g["weight_decay"] == 0.0 for n, g in groups.items() if n.endswith("no_decay"))
    assert groups["head"]["weight_decay"] == 0.01
    optimised = {id(p) for g in opt.param_groups for p in g["params"]}
    assert not any(id(p) in optimised for p in up.frozen.parameters())
    head = {id(p) for p in module.net.parameters()}
    assert head <= optimised


def test_default_settings_are_one_plain_group():
    module = make_module()
    opt = module.configure_optimizers()
    assert isinstance(opt, torch.optim.Adam) and len(opt.param_groups) == 1
    assert opt.param_groups[0]["params"] == [p for p in module.parameters() if p.requires_grad]
    assert opt.param_groups[0]["weight_decay"] == 0 and "name" not in opt.param_groups[0]


def test_optim_settings_are_validated():
    with pytest.raises(ConfigError, match="unknown keys"):
        OptimSettings.from_config({"lr_bakbone": 1e-5})
    with pytest.raises(ConfigError, match="decay"):
        OptimSettings.from_config({"decay": "step"})
    with pytest.raises(ConfigError, match="head_only_epochs needs an upstream"):
        make_module(optim={"head_only_epochs": 1})


class StateProbe(L.Callback):
    def __init__(self) -> None:
        self.backbone_state: list[int] = []
        self.lrs: list[list[float]] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.lrs.append([g["lr"] for g in trainer.optimizers[0].param_groups])

    def on_train_epoch_end(self, trainer, module):
        opt = trainer.optimizers[0]
        self.backbone_state.append(sum(1 for p in module.upstream.parameters() if p in opt.state))


def test_head_only_epochs_keep_no_backbone_state_then_train_it():
    module = make_module(upstream=ToyUpstream(), optim={"lr_backbone": 1e-4, "head_only_epochs": 1})
    before = module.upstream.top.weight.detach().clone()
    probe = StateProbe()
    trainer(2, callbacks=[probe], limit_val_batches=0).fit(module, loader(24))
    trainable = sum(1 for p in module.upstream.parameters() if p.requires_grad)
    assert probe.backbone_state == [0, trainable] and trainable == 6
    assert not module.upstream.frozen.weight.requires_grad
    assert not torch.equal(before, module.upstream.top.weight)


def test_warmup_then_linear_decay_per_step():
    assert [lr_lambda(s, 10, 4, "linear") for s in (0, 1, 3, 4, 7, 10)] == [0.25, 0.5, 1.0, 1.0, 0.5, 0.0]
    assert lr_lambda(5, 10, 0, "cosine") == pytest.approx(0.5) and lr_lambda(9, 10, 2, "none") == 1.0
    module = make_module(upstream=ToyUpstream(), optim={"lr_backbone": 1e-4, "warmup_steps": 2, "decay": "linear"})
    probe = StateProbe()
    trainer(2, callbacks=[probe], limit_val_batches=0).fit(module, loader(24))  # 6 steps
    head = [lrs[0] for lrs in probe.lrs]
    expected = [1e-3 * m for m in (0.5, 1.0, 1.0, 0.75, 0.5, 0.25)]
    assert head == pytest.approx(expected)
    assert [lrs[1] for lrs in probe.lrs] == pytest.approx([e / 10 for e in expected])  # backbone: 1e-4 base
