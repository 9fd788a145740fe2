"""The frame-level heads (lstm, attentive, mean_linear): shapes, padding invariance, the layer mix,
Hydra composition over SSL hidden states and log-mel, and learning on the synthetic corpus."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from tests.helpers import SMALL, compose_cfg
from wav2emo.models import Attentive, LayerMix, LSTMHead, MeanLinear

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

L_, D_, M_ = 4, 32, 16
HEADS = {
    "lstm": lambda **kw: LSTMHead(proj_dim=24, lstm_hidden=16, hidden=(16,), **kw),
    "lstm_last": lambda **kw: LSTMHead(proj_dim=None, lstm_hidden=16, lstm_layers=2, pooling="last", **kw),
    "attentive": lambda **kw: Attentive(frame_dim=24, attention_dim=8, hidden=(16,), **kw),
    "attentive_noproj": lambda **kw: Attentive(frame_dim=None, attention_dim=8, hidden=(), **kw),
    "mean_linear": lambda **kw: MeanLinear(**kw),
    "mean_mlp_abs": lambda **kw: MeanLinear(hidden=(16,), mix="abs", **kw),
}


def make(kind: str, input_key: str = "ssl", num_classes: int = 5) -> torch.nn.Module:
    torch.manual_seed(0)
    if input_key == "ssl":
        net = HEADS[kind](in_channels=L_, feature_dim=D_, num_classes=num_classes)
    else:
        net = HEADS[kind](in_channels=1, feature_dim=M_, num_classes=num_classes, input_key="logmel")
    with torch.no_grad():  # a non-uniform mix, so the test also covers the weighting
        net.mix.layer_logits.copy_(torch.linspace(-1.0, 1.0, net.mix.num_layers))
    return net.eval()


def padded_batch(input_key: str, lengths: list[int], pad_value: float = 0.0, seed: int = 0) -> dict:
    """Clips of these lengths, padded to the longest with ``pad_value`` and masked."""
    g = torch.Generator().manual_seed(seed)
    t = max(lengths)
    shape = (len(lengths), L_, t, D_) if input_key == "ssl" else (len(lengths), t, M_)
    x = torch.randn(*shape, generator=g)
    mask = torch.arange(t)[None, :] < torch.tensor(lengths)[:, None]
    time_axis = 2 if input_key == "ssl" else 1
    pad = ~mask
    pad = pad[:, None, :, None] if input_key == "ssl" else pad[:, :, None]
    x = torch.where(pad.expand_as(x), torch.full_like(x, pad_value), x)
    assert x.shape[time_axis] == t
    return {input_key: x, f"{input_key}_mask": mask}


def one_clip(batch: dict, input_key: str, i: int, length: int) -> dict:
    x = batch[input_key][i : i + 1]
    x = x[:, :, :length] if input_key == "ssl" else x[:, :length]
    return {input_key: x, f"{input_key}_mask": torch.ones(1, length, dtype=torch.bool)}


@pytest.mark.parametrize("input_key", ["ssl", "logmel"])
@pytest.mark.parametrize("kind", sorted(HEADS))
def test_a_clip_alone_and_padded_in_a_batch_give_the_same_logits(kind, input_key):
    net = make(kind, input_key)
    lengths = [7, 30, 19, 30, 1]
    for pad_value in (0.0, 1e4, float("nan")):  # whatever the padding holds
        batch = padded_batch(input_key, lengths, pad_value)
        with torch.no_grad():
            together = net(batch)
            assert together.shape == (len(lengths), 5)
            assert torch.isfinite(together).all(), (kind, pad_value)
            for i, n in enumerate(lengths):
                alone = net(one_clip(batch, input_key, i, n))
                torch.testing.assert_close(together[i : i + 1], alone, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", sorted(HEADS))
def test_logits_depend_on_the_real_frames(kind):
    net = make(kind)
    batch = padded_batch("ssl", [12, 12])
    with torch.no_grad():
        before = net(batch)
        batch["ssl"][0, :, 3] += 2.0  # a real frame of clip 0
        after = net(batch)
    assert not torch.allclose(before[0], after[0])
    torch.testing.assert_close(before[1], after[1])


@pytest.mark.parametrize("kind", ["lstm", "attentive", "mean_linear"])
def test_no_mask_means_every_frame_is_real_and_empty_clips_are_refused(kind):
    net = make(kind)
    batch = padded_batch("ssl", [9, 9])
    with torch.no_grad():
        torch.testing.assert_close(net({"ssl": batch["ssl"]}), net(batch))
    batch["ssl_mask"][1] = False
    with pytest.raises(ValueError, match="no real frame for batch rows \\[1\\]"):
        net(batch)


def test_lstm_refuses_a_mask_with_padding_before_real_frames():
    net = make("lstm")
    batch = padded_batch("ssl", [9, 9])
    batch["ssl_mask"][0, 0] = False
    with pytest.raises(ValueError, match="real frames first"):
        net(batch)


@pytest.mark.parametrize("kind", ["lstm", "attentive", "mean_linear"])
def test_wrong_input_shapes_are_refused(kind):
    net = make(kind)
    with pytest.raises(ValueError, match="in_channels/feature_dim"):
        net({"ssl": torch.randn(2, L_ + 1, 9, D_)})
    with pytest.raises(KeyError, match="no 'ssl' entry"):
        net({"logmel": torch.randn(2, 9, M_)})
    with pytest.raises(ValueError, match="input_key"):
        HEADS[kind](in_channels=L_, feature_dim=D_, input_key="wave")


def test_layer_mix_starts_at_the_average_and_normalises():
    x = torch.randn(3, L_, 5, D_)
    for mode in ("softmax", "abs"):
        mix = LayerMix(L_, mode)
        torch.testing.assert_close(mix(x), x.mean(dim=1))
        with torch.no_grad():
            mix.layer_logits.copy_(torch.tensor([0.5, -2.0, 1.0, 3.0]))
        w = mix.layer_weights
        assert w.shape == (L_,) and (w >= 0).all() and w.sum().item() == pytest.approx(1.0, abs=1e-6)
        torch.testing.assert_close(mix(x), torch.einsum("l,bltd->btd", w, x))
    one = LayerMix(1)
    torch.testing.assert_close(one(x[:, :1]), x[:, 0])
    with pytest.raises(ValueError, match="mode"):
        LayerMix(L_, "max")


@pytest.mark.parametrize("kind", ["lstm", "attentive", "mean_linear"])
def test_gradient_steps_reduce_the_loss_and_train_the_layer_mix(kind):
    net = make(kind, num_classes=8).train()
    for m in net.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    batch = padded_batch("ssl", [20, 14, 20, 9, 17, 20, 11, 20], seed=1)
    labels = torch.arange(8)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        loss = F.cross_entropy(net(batch), labels)
        opt.zero_grad()
        loss.backward()
        assert net.mix.layer_logits.grad is not None and net.mix.layer_logits.grad.abs().sum() > 0
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5, losses


# Hydra and the real builders ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shared_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("heads")
    return root / "data", root / "cache"


@pytest.mark.parametrize(
    ("model", "features", "net_cls", "key"),
    [
        ("lstm", "tiny", LSTMHead, "ssl"),
        ("attentive", "tiny", Attentive, "ssl"),
        ("mean_linear", "tiny", MeanLinear, "ssl"),
        ("lstm_logmel", "logmel", LSTMHead, "logmel"),
        ("attentive_logmel", "logmel", Attentive, "logmel"),
        ("mean_linear_logmel", "logmel", MeanLinear, "logmel"),
    ],
)
def test_heads_compose_and_build_over_ssl_and_logmel(model, features, net_cls, key, tmp_path, shared_dirs):
    from wav2emo.runs.build import build_datamodule, build_module

    cfg = compose_cfg([*SMALL, f"model={model}", f"features={features}"], tmp_path, *shared_dirs)
    dm = build_datamodule(cfg, 0)
    dm.setup("fit")
    module = build_module(cfg, dm)
    net = module.net
    assert isinstance(net, net_cls) and net.inputs == (key,) and module.inputs == (key,)
    if key == "ssl":
        h, d = dm.input_shape("ssl")
        assert net.in_channels == module.featurizer.num_layers == h  # layers: all
        assert net.feature_dim == d
    else:
        assert module.featurizer is None and net.in_channels == 1 and net.feature_dim == dm.input_shape("logmel")[0]
    batch = next(iter(dm.train_dataloader()))
    module.eval()
    with torch.no_grad():
        logits = module(batch)
    assert logits.shape == (len(batch["label"]), len(dm.class_names)) and torch.isfinite(logits).all()


def test_a_single_layer_probe_reads_one_hidden_state(tmp_path, shared_dirs):
    from wav2emo.runs.build import build_datamodule, build_module

    cfg = compose_cfg([*SMALL, "model=mean_linear", "model.layers=2"], tmp_path, *shared_dirs)
    dm = build_datamodule(cfg, 0)
    module = build_module(cfg, dm)
    assert module.featurizer.layers == [2] and module.net.in_channels == 1


@pytest.mark.learning
def test_attentive_head_learns_synthetic_emotions_on_held_out_actors(tmp_path, shared_dirs):
    from tests.test_training import chance_ua_quantile
    from wav2emo.runs.fold_runner import run_fold

    cfg = compose_cfg(
        [*SMALL, "model=attentive_logmel", "features=logmel", "model.module.optimizer.lr=3e-3",
         "trainer.max_epochs=8"],
        tmp_path, *shared_dirs,
    )
    result = run_fold(cfg, 0, tmp_path / "fold_0")
    labels = pd.read_csv(tmp_path / "fold_0" / "predictions.csv")["label"]
    threshold = chance_ua_quantile(labels) + 0.1  # chance at p < 0.001, plus a clear margin
    assert result["test"]["ua"] > threshold, (result["test"], threshold)
