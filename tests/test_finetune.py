"""finetune=none|top_k|full in the training loop: what the model is fed, the trained and frozen parts, the
optimizer's groups, dev-chosen checkpoints rebuilt exactly by wav2emo.eval, and bad input refused up front."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from tests.helpers import SMALL, compose_cfg
from wav2emo.errors import ConfigError
from wav2emo.feeding.feed import build_upstream_for

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

# 24 actors x 3 clips: enough for train/dev/test actors, cheap to extract eGeMAPS and run the tiny backbone on.
FAST = [*SMALL, "data.corpus.clips_per_actor=3", "debug=fast", "trainer.max_epochs=1",
        "trainer.limit_train_batches=2"]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ft_shared")
    return root / "data", root / "cache"


def cfg_of(tmp: Path, dirs, *extra: str, config_name: str = "train"):
    data, cache = dirs
    base = FAST if config_name == "train" else []
    return compose_cfg([*base, *extra], tmp, data, cache, config_name=config_name)


# What the model is fed -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "inputs", "upstream"),
    [
        (["model=fe_vgg_egemaps"], ("ssl", "egemaps"), ()),
        (["model=fe_vgg_egemaps", "finetune=top_k"], ("ssl", "egemaps"), ("top_k",)),
        (["model=fe_vgg_egemaps", "finetune=full"], ("wave", "egemaps"), ("full",)),
        (["model=layer_weighted", "augment=standard"], ("wave",), ("frozen",)),
        (["model=layer_weighted", "augment=standard", "finetune=top_k"], ("wave",), ("frozen", "top_k")),
        (["model=layer_weighted", "augment=spec"], ("ssl",), ()),  # features-only online: on the cache
        (["model=fe_vgg_logmel", "features=logmel", "augment=pitch"], ("wave",), ("logmel",)),
        (["model=fe_vgg", "augment=standard", "augment.mode=cached"], ("ssl",), ()),
    ],
)
def test_one_rule_decides_inputs_and_upstream(tmp_path, dirs, overrides, inputs, upstream):
    from wav2emo.runs.build import build_datamodule
    from wav2emo.runs.plan import fold_plan

    cfg = cfg_of(tmp_path, dirs, *overrides)
    feed = fold_plan(cfg).feed
    assert (feed.inputs, feed.upstream) == (inputs, upstream)
    dm = build_datamodule(cfg, 0)  # the data module is configured by the same rule (nothing built yet)
    assert dm.inputs == inputs
    assert dm.bucket_by_length == ("full" in upstream)


def test_old_config_without_finetune_or_augment_is_fed_the_caches(tmp_path, dirs):
    from omegaconf import open_dict

    from wav2emo.runs.plan import fold_plan

    cfg = cfg_of(tmp_path, dirs, "model=fe_vgg_egemaps")
    with open_dict(cfg):
        del cfg["finetune"]
        del cfg["augment"]
    feed = fold_plan(cfg).feed
    assert feed.inputs == ("ssl", "egemaps") and feed.upstream == ()


@pytest.mark.parametrize(
    ("overrides", "key", "atol"),
    [
        (["model=layer_weighted", "augment=standard"], "ssl", 2e-2),  # the cache stores float16
        (["model=fe_vgg_logmel", "features=logmel", "augment=pitch"], "logmel", 1e-4),
    ],
)
def test_upstream_from_audio_feeds_what_the_cache_holds(tmp_path, dirs, overrides, key, atol):
    """Online augmentation swaps a cache for audio + an upstream: without a transform, the model must see the
    same features as from the cache (frozen backbone: extraction's batch invariance; log-mel: the same STFT)."""
    from omegaconf import open_dict

    from wav2emo.feeding.input_strategies import collate
    from wav2emo.runs.build import build_datamodule
    from wav2emo.runs.plan import fold_plan

    cfg = cfg_of(tmp_path, dirs, *overrides)
    up = build_upstream_for(fold_plan(cfg).feed)
    wave_dm = build_datamodule(cfg, 0)
    cached_cfg = cfg.copy()
    with open_dict(cached_cfg):
        cached_cfg.augment = None  # an old config: the caches
    cache_dm = build_datamodule(cached_cfg, 0)
    for dm in (wave_dm, cache_dm):
        dm.setup("test")
    rows = range(min(6, len(wave_dm.dataset("test"))))
    from_audio = up(collate([wave_dm.dataset("test")[i] for i in rows]))
    cached = collate([cache_dm.dataset("test")[i] for i in rows])
    mask = cached[f"{key}_mask"]
    assert torch.equal(from_audio[f"{key}_mask"][:, : mask.shape[1]], mask)
    a, b = from_audio[key].float(), cached[key].float()
    if key == "ssl":
        a = a[:, :, : b.shape[2]]
    else:
        a = a[:, : b.shape[1]]
    assert (a - b).abs().max() < atol * max(1.0, float(b.abs().max()))


# Bad input ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["egemaps_mlp", "fe_vgg_logmel"])
@pytest.mark.parametrize("mode", ["top_k", "full"])
def test_finetuning_a_model_without_ssl_input_is_refused(tmp_path, dirs, model, mode):
    from wav2emo.runs.build import build_datamodule

    cfg = cfg_of(tmp_path, dirs, f"model={model}", f"finetune={mode}")
    with pytest.raises(ConfigError, match=rf"finetune={mode} with model={model}.*no SSL hidden states"):
        build_datamodule(cfg, 0)


def test_finetuning_a_sklearn_model_is_refused(tmp_path, dirs):
    from wav2emo.feeding.feed import refuse_finetune

    cfg = cfg_of(tmp_path, dirs, "model=sklearn_logreg", "features=egemaps", "finetune=top_k")
    with pytest.raises(ConfigError, match="no backbone to fine-tune"):
        refuse_finetune(cfg)
    refuse_finetune(cfg_of(tmp_path, dirs, "model=sklearn_logreg", "features=egemaps"))  # none is fine


@pytest.mark.parametrize("k", [0, -1])
def test_k_below_one_is_refused_before_any_data(tmp_path, dirs, k):
    from wav2emo.runs.build import build_datamodule

    cfg = cfg_of(tmp_path, dirs, "model=layer_weighted", "finetune=top_k", f"finetune.k={k}")
    with pytest.raises(ConfigError, match=rf"finetune.k={k}: expected an integer >= 1"):
        build_datamodule(cfg, 0)


def test_k_above_the_layer_count_is_refused_before_training(tmp_path, dirs):
    from wav2emo.runs.plan import fold_plan

    cfg = cfg_of(tmp_path, dirs, "model=layer_weighted", "finetune=top_k", "finetune.k=4")  # tiny: 3 layers
    with pytest.raises(ConfigError, match=r"finetune.k=4.*1..N, N=3"):
        build_upstream_for(fold_plan(cfg).feed)


def test_online_wave_augmentation_of_offline_only_inputs_is_refused(tmp_path, dirs):
    from wav2emo.runs.plan import fold_plan

    cfg = cfg_of(tmp_path, dirs, "model=egemaps_mlp", "features=egemaps", "augment=standard")
    with pytest.raises(ConfigError, match="use augment.mode=cached"):
        fold_plan(cfg)


# The trained and the frozen part, the optimizer's groups ------------------------------------------------
@pytest.mark.parametrize("mode", ["top_k", "full"])
def test_frozen_part_gets_no_grad_no_optimizer_state_and_lr_groups_follow_the_config(tmp_path, dirs, mode):
    import lightning as L

    from wav2emo.runs.build import build_datamodule, build_module

    cfg = cfg_of(tmp_path, dirs, "model=layer_weighted", f"finetune={mode}", "finetune.k=1",
                 "finetune.optim.lr_backbone=2e-5", "finetune.optim.layer_decay=0.5", "finetune.optim.warmup_steps=0",
                 "finetune.optim.decay=none", "model.module.optimizer.lr=1e-3")
    dm = build_datamodule(cfg, 0)
    dm.setup("fit")
    model = build_module(cfg, dm)
    up = model.upstream
    before = {n: p.detach().clone() for n, p in up.model.named_parameters()}
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, limit_train_batches=2, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, datamodule=dm)
    opt = trainer.optimizers[0]
    state_ids = {id(p) for p in opt.state}
    trained = {n for n, _ in up.model.named_parameters() if up.is_trained(n)}
    assert trained, "nothing of the backbone trains"
    for n, p in up.model.named_parameters():
        if n in trained:
            assert id(p) in state_ids, n
        else:  # frozen: never a gradient, never optimizer state, never changed
            assert not p.requires_grad and p.grad is None and id(p) not in state_ids, n
            assert torch.equal(p.detach(), before[n]), n
    n_layers = up.num_layers
    if mode == "top_k":
        assert trained == {n for n in before if n.startswith(f"encoder.layers.{n_layers - 1}.")}
    else:
        assert not any(n.startswith("feature_extractor.") for n in trained)  # the CNN stays frozen by default
        assert any(n.startswith("encoder.layers.0.") for n in trained)
    groups = {g["name"]: g for g in opt.param_groups}
    assert groups["head"]["lr"] == pytest.approx(1e-3)
    top = f"backbone/backbone.layer_{n_layers:02d}"
    assert groups[top]["lr"] == pytest.approx(2e-5)  # depth 0: lr_backbone
    if mode == "full":
        assert groups["backbone/backbone.layer_01"]["lr"] == pytest.approx(2e-5 * 0.5 ** (n_layers - 1))
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == sum(
        p.numel() for p in model.parameters() if p.requires_grad)


def test_finetune_optimisation_defaults_apply_only_when_finetuning(tmp_path, dirs):
    from wav2emo.runs.plan import fold_plan

    plain = fold_plan(cfg_of(tmp_path, dirs, "model=fe_vgg")).optim
    assert plain["lr_backbone"] is None and plain["decay"] == "none"
    tuned = fold_plan(cfg_of(tmp_path, dirs, "model=fe_vgg", "finetune=top_k")).optim
    assert tuned["lr_backbone"] == pytest.approx(1e-5) and tuned["decay"] == "linear"


# End to end: train -> dev-chosen checkpoint -> test -> eval rebuild --------------------------------------
@pytest.mark.parametrize(
    ("model", "finetune"),
    [
        ("fe_vgg_egemaps", ["finetune=top_k", "finetune.k=1"]),
        ("layer_weighted", ["finetune=top_k", "finetune.k=2"]),
        pytest.param("fe_vgg_egemaps", ["finetune=full"], marks=pytest.mark.slow),
        ("layer_weighted", ["finetune=full"]),
        pytest.param("fe_vgg_egemaps", ["finetune=top_k", "finetune.k=2"], marks=pytest.mark.slow),
        pytest.param("layer_weighted", ["finetune=top_k", "finetune.k=1"], marks=pytest.mark.slow),
    ],
)
def test_finetuned_fold_is_rebuilt_exactly_by_eval(tmp_path, dirs, model, finetune):
    from wav2emo.runs.common import CKPT_KEY
    from wav2emo.runs.fold_runner import run_fold
    from wav2emo.runs.testing import evaluate

    run = tmp_path / "run"
    cfg = cfg_of(run, dirs, f"model={model}", *finetune, "trainer.max_epochs=2")
    result = run_fold(cfg, 0, run / "fold_0")
    assert result["protocol"]["finetune"]["mode"] == cfg.finetune.mode
    assert result["protocol"]["augment"]["name"] == "none"
    assert result["best_dev"]["monitor"] == "val/ua"  # still chosen on the dev actors
    ckpt = torch.load(result["best_checkpoint"], map_location="cpu", weights_only=False)
    state = ckpt["state_dict"]
    identity = state["upstream._extra_state"]["identity"]
    assert identity["mode"] == cfg.finetune.mode and identity["backbone"]
    n = identity["num_layers"]
    backbone_keys = [k for k in state if k.startswith("upstream.model.")]
    if cfg.finetune.mode == "top_k":  # only the top k layers travel
        k = int(cfg.finetune.k)
        assert backbone_keys and all(
            any(key.startswith(f"upstream.model.encoder.layers.{i}.") for i in range(n - k, n)) for key in backbone_keys)
    assert not any(k.startswith("upstream.model.feature_extractor.") for k in backbone_keys)
    assert ckpt[CKPT_KEY]["config"]["finetune"]["mode"] == cfg.finetune.mode

    out = tmp_path / "eval"
    ev = evaluate(cfg_of(out, dirs, f"ckpt_path={result['best_checkpoint']}", config_name="eval"))
    trained = pd.read_csv(run / "fold_0" / "predictions.csv")
    rebuilt = pd.read_csv(out / "predictions.csv")
    assert list(trained["clip_id"]) == list(rebuilt["clip_id"])
    assert (trained["pred"] == rebuilt["pred"]).all()
    probs = [c for c in trained.columns if c.startswith("prob_")]
    assert (trained[probs] - rebuilt[probs]).abs().to_numpy().max() < 1e-5
    assert ev["test"]["ua"] == pytest.approx(result["test"]["ua"], abs=1e-6)


def test_eval_refuses_a_checkpoint_whose_backbone_changed(tmp_path, dirs):
    from wav2emo.backbones import BackboneError
    from wav2emo.runs.plan import fold_plan
    from wav2emo.runs.testing import rebuild_checkpoint_upstream

    cfg = cfg_of(tmp_path, dirs, "model=layer_weighted", "finetune=top_k", "finetune.k=1")
    up = build_upstream_for(fold_plan(cfg).feed)
    state = {f"upstream.{k}": v for k, v in up.state_dict().items()}
    state["upstream._extra_state"]["identity"]["backbone"] = {"weights_sha256": "0" * 64}
    with pytest.raises(BackboneError, match="not the one this upstream was trained on"):
        rebuild_checkpoint_upstream(cfg, state)


# Sweeps and records -------------------------------------------------------------------------------------
def test_sweep_over_folds_finetune_and_augment_composes(tmp_path, dirs):
    """`-m model=fe_vgg_egemaps fold=0,1 finetune=none,top_k augment=none,standard`: every job composes, is fed
    by the rule, and records its settings (fold_result protocol, W&B tags and group)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from wav2emo.runs.plan import fold_plan

    parser = OverridesParser.create()
    sweep = parser.parse_overrides(["model=fe_vgg_egemaps", "fold=0,1", "finetune=none,top_k", "augment=none,standard"])
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    jobs = BasicSweeper.split_arguments(sweep, None)[0]
    assert len(jobs) == 8
    seen = set()
    for job in jobs:
        cfg = cfg_of(tmp_path, dirs, *job)
        plan = fold_plan(cfg)
        ft, aug = cfg.finetune.mode, cfg.augment.name
        assert ("top_k" in plan.feed.upstream) == (ft == "top_k")
        assert ("wave" in plan.feed.inputs) == (aug == "standard")  # online waveform augmentation reads audio
        protocol = plan.protocol()
        assert protocol["finetune"]["mode"] == ft and protocol["augment"]["name"] == aug
        tags = plan.tags()
        assert tags[0].startswith(f"finetune={ft}") and tags[1].startswith(f"augment={aug}")
        seen.add((int(cfg.fold), ft, aug))
    assert len(seen) == 8


def test_wandb_group_and_tags_name_finetune_and_augment(tmp_path, dirs):
    from omegaconf import OmegaConf

    from wav2emo.runs.build import _prepare_wandb
    from wav2emo.runs.plan import fold_plan

    cfg = cfg_of(tmp_path, dirs, "model=fe_vgg_egemaps", "finetune=top_k", "finetune.k=2", "augment=standard",
                 "logger=wandb")
    lg = OmegaConf.create({"group": None, "name": None, "tags": ["mine"]})
    _prepare_wandb(lg, fold_plan(cfg), 0)
    assert list(lg.tags) == ["mine", "finetune=top_k(k=2)", "augment=standard(online)"]
    assert "finetune_top_k(k_2)" in lg.group and "augment_standard(online)" in lg.group
