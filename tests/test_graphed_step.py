"""The manual training step of the fast path (wav2emo/training/graphed_step.py) trains exactly as Lightning's.

On a CPU the runner's step runs eagerly: it must give the parameters Lightning's automatic optimisation gives
(same loss, gradient clipping, Adam).  On a GPU the same step replayed from CUDA graphs must match the eager
step up to float tolerance, and the warm-up steps of a capture must leave no trace.
"""

from __future__ import annotations

import warnings
from functools import partial

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf

from tests.test_module import DIM, N_LAYERS, collate, loader, make_clips
from wav2emo.errors import ConfigError
from wav2emo.feeding.placement import parse_auto_bool
from wav2emo.models import FeVGGEgemaps
from wav2emo.training.fast_path import configure_trainer, resolve_precision
from wav2emo.training.module import EmotionClassifier

warnings.filterwarnings("ignore", message=".*does not have many workers.*")


def _module(seed: int = 0, lr: float = 3e-3, **kw) -> EmotionClassifier:
    torch.manual_seed(seed)
    net = FeVGGEgemaps(in_channels=N_LAYERS, feature_dim=DIM, widths=(4, 6, 6, 8), convs_per_block=(1, 1, 1, 1),
                       dropout=0.0, hidden=16, egemaps_hidden=8, fusion_hidden=16)
    module = EmotionClassifier(net, optimizer=partial(torch.optim.Adam, lr=lr), **kw)
    module.set_feature_stats("egemaps", torch.zeros(88), torch.ones(88))
    return module


def _clips() -> list[dict]:
    clips = make_clips(6, 0, torch.randn(8, N_LAYERS, 1, DIM, generator=torch.Generator().manual_seed(5)))
    g = torch.Generator().manual_seed(9)
    for c in clips:
        c["egemaps"] = torch.randn(88, generator=g)
    return clips


def _fit(module: EmotionClassifier, clip: float | None, epochs: int = 2) -> dict[str, torch.Tensor]:
    tr = L.Trainer(accelerator="cpu", devices=1, max_epochs=epochs, logger=False, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False,
                   gradient_clip_val=None if not module.automatic_optimization else clip)
    tr.fit(module, loader(_clips(), batch_size=10))
    assert tr.global_step == epochs * 5  # the manual step counts optimizer steps as the automatic one does
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("clip", [None, 0.05])
def test_manual_step_trains_exactly_as_lightnings_automatic_step(clip):
    """Same seed, data and order: the runner's step (used for CUDA graphs) ends at Lightning's parameters,
    batch-norm statistics included; a small clip value makes the gradient clipping do something."""
    auto = _fit(_module(), clip)
    manual_module = _module()
    manual_module.use_step_runner(clip, "norm", cuda_graphs=True)
    manual = _fit(manual_module, clip)
    assert manual_module.step_runner.eager_steps == 10 and not manual_module.step_runner.graphs  # CPU: eager
    assert auto.keys() == manual.keys()
    for k in auto:
        torch.testing.assert_close(manual[k], auto[k], rtol=1e-5, atol=1e-6, msg=k)
    start = {k: v for k, v in _module().state_dict().items()}
    assert any(not torch.equal(start[k], auto[k]) for k in auto)  # it trained


def test_clipping_changes_the_result():
    """Control for the test above: the clip value reaches the manual step (else both would ignore it)."""
    a, b = _module(), _module()
    a.use_step_runner(None, cuda_graphs=True)
    b.use_step_runner(0.05, cuda_graphs=True)
    sa, sb = _fit(a, None), _fit(b, 0.05)
    assert any(not torch.allclose(sa[k], sb[k]) for k in sa if sa[k].is_floating_point())


def _cfg(**over) -> dict:
    return {"cuda_graphs": "auto", **over}


def test_configure_trainer_on_cpu_keeps_lightnings_step_and_float32():
    module = _module()
    trainer_cfg = OmegaConf.create({"accelerator": "cpu", "precision": "auto", "gradient_clip_val": 10})
    decided = configure_trainer(module, trainer_cfg, **_cfg())
    assert decided == {"precision": "32-true", "cuda_graphs": False}
    assert module.automatic_optimization and trainer_cfg.gradient_clip_val == 10
    assert resolve_precision(OmegaConf.create({"precision": "16-mixed"})) == "16-mixed"


def test_cuda_graphs_true_moves_clipping_into_the_step_and_refuses_what_cannot_be_captured():
    module = _module()
    trainer_cfg = OmegaConf.create({"accelerator": "cpu", "precision": "32-true", "gradient_clip_val": 10,
                                    "gradient_clip_algorithm": "norm"})
    configure_trainer(module, trainer_cfg, **_cfg(cuda_graphs=True))
    assert not module.automatic_optimization and module.step_runner.clip_val == 10
    assert trainer_cfg.gradient_clip_val is None

    scheduled = _module(scheduler=partial(torch.optim.lr_scheduler.StepLR, step_size=1))
    with pytest.raises(ConfigError, match="learning-rate schedule"):
        configure_trainer(scheduled, OmegaConf.create({"accelerator": "cpu"}), **_cfg(cuda_graphs=True))
    sgd = EmotionClassifier(_module().net, optimizer=partial(torch.optim.SGD, lr=0.1))
    with pytest.raises(ConfigError, match="Adam and AdamW"):
        configure_trainer(sgd, OmegaConf.create({"accelerator": "cpu"}), **_cfg(cuda_graphs=True))
    with pytest.raises(ConfigError, match="expected True, False or 'auto'"):
        configure_trainer(_module(), OmegaConf.create({"accelerator": "cpu"}), **_cfg(cuda_graphs="yes"))
    with pytest.raises(ConfigError, match="expected auto, true or false"):
        parse_auto_bool("yes", "cuda_graphs")  # what the run's plan reads the setting with


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_graph_replay_matches_the_eager_step_on_a_gpu():
    """Steps replayed from CUDA graphs (two batch shapes, interleaved) equal the same steps run eagerly."""
    clips = _clips()
    batches = [collate(clips[i:i + 10]) for i in range(0, 40, 10)] + [collate(clips[40:48])]
    results = {}
    for graphs in (False, True):
        module = _module().cuda()
        module.use_step_runner(0.5, cuda_graphs=graphs)
        opt = torch.optim.Adam(module.parameters(), lr=3e-3)
        module.step_runner._prepare(opt)  # the same fused, capturable Adam in both runs
        losses = []
        for _ in range(3):
            for b in batches:
                b = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in b.items()}
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    loss, _ = module.step_runner.step(opt, b)
                losses.append(loss)
        results[graphs] = ([float(x) for x in losses], {k: v.float().cpu() for k, v in module.state_dict().items()})
        if graphs:
            assert len(module.step_runner.graphs) >= 2 and module.step_runner.eager_steps == 0
    torch.testing.assert_close(results[True][0], results[False][0], rtol=2e-3, atol=2e-3)
    for k, v in results[False][1].items():
        torch.testing.assert_close(results[True][1][k], v, rtol=2e-3, atol=2e-3, msg=k)
