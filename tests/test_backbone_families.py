"""Every backbone family behind the one contract (issue 19, item 5): tiny random models of each family's real
transformers architecture, built offline, run through extraction, top_k and full fine-tuning, the cache key
and ``wav2emo.env``; Whisper's own front end against transformers'; bad input refused with one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.test_cache import make_manifest
from tests.test_upstream import assert_close_on_mask, collate, wave_batch
from wav2emo.backbones import (
    BackboneError,
    ExtractionError,
    build_tiny,
    load_backbone,
    registered_families,
    resolve_source,
)
from wav2emo.features import get_features
from wav2emo.models.upstream import build_upstream

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

# tiny family name -> the family the loaded backbone reports
FAMILIES = {"wav2vec2": "wav2vec2", "wav2vec2-stable": "wav2vec2", "hubert": "hubert", "wavlm": "wavlm",
            "data2vec-audio": "data2vec-audio", "whisper": "whisper"}
SAMPLES = [24000, 17000, 9000, 12345]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {f: build_tiny(root / f"tiny-{f}", seed=0, family=f) for f in FAMILIES}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return make_manifest(tmp_path_factory.mktemp("toy"), SAMPLES)


def spec_of(folder, **kw):
    return {"kind": "ssl_hidden_states", "name": f"t-{folder.name}", "backbone": str(folder), "precision": "fp32",
            "batch_size": 3, "num_workers": 1, "durable": False, **kw}


def waves(lengths=SAMPLES, seed=0):
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in lengths]


# Recognised, reported ------------------------------------------------------------------------------------
@pytest.mark.parametrize("tiny_family", FAMILIES)
def test_the_folder_loads_as_its_family_and_env_reports_it(folders, tiny_family):
    from wav2emo.env import backbone_offline, render

    bb = load_backbone(resolve_source(folders[tiny_family]))
    assert bb.family == FAMILIES[tiny_family] and bb.num_hidden_states == 4 and bb.hidden_size == 32
    assert bb.frame_rate == 50.0 and bb.num_frames(16000) in (49, 50)
    info = backbone_offline(str(folders[tiny_family]))
    assert info["available"] and info["family"] == FAMILIES[tiny_family]
    assert f"family {FAMILIES[tiny_family]}" in render({**_env_stub(), "backbones": [info]})


def _env_stub():
    return {"wav2emo": "x", "python": "x", "platform": "x", "cpu_count": 1, "packages": {}, "problems": [],
            "torch": {"error": "stub"}, "folders": {}, "environment": {}}


def test_every_builtin_family_is_registered():
    assert {c.family for c in registered_families().values()} >= set(FAMILIES.values())


# Extraction == the fine-tuning forward, batch invariance ---------------------------------------------------
@pytest.mark.parametrize("tiny_family", FAMILIES)
def test_extraction_equals_the_finetuning_forward_at_init(tmp_path, folders, toy, tiny_family):
    from wav2emo.data.audio import load_audio

    cache = get_features(toy, spec_of(folders[tiny_family]), tmp_path / "cache", device="cpu", progress=False)
    assert cache.meta["backbone"]["family"] == FAMILIES[tiny_family]
    up = build_upstream(str(folders[tiny_family]), mode="full").eval()
    batch = wave_batch([load_audio(c.path) for c in toy])
    with torch.no_grad():
        out = up(batch)
    cached = collate([np.asarray(cache.read(i), dtype=np.float32) for i in range(len(toy))])
    assert torch.equal(out["ssl_mask"], cached["ssl_mask"])  # the same valid frames per clip
    assert_close_on_mask(out["ssl"], cached["ssl"], cached["ssl_mask"], 4e-3)  # fp16 storage


@pytest.mark.parametrize("tiny_family", FAMILIES)
def test_a_clips_hidden_states_do_not_depend_on_its_batch(folders, tiny_family):
    bb = load_backbone(resolve_source(folders[tiny_family]))
    ws = waves()
    batched = bb.extract(ws)
    alone = [bb.extract([w])[0] for w in ws]
    scale = max(float(np.abs(a).max()) for a in alone)
    for a, b in zip(batched, alone, strict=True):
        assert a.shape == b.shape
        assert float(np.abs(a - b).max()) < 1e-4 * max(1.0, scale)


@pytest.mark.parametrize("tiny_family", FAMILIES)
def test_top_k_from_the_cache_reproduces_the_top_layers(tmp_path, folders, toy, tiny_family):
    cache = get_features(toy, spec_of(folders[tiny_family]), tmp_path / "cache", device="cpu", progress=False)
    batch = collate([np.asarray(cache.read(i)) for i in range(len(toy))])
    up = build_upstream(str(folders[tiny_family]), mode="top_k", k=2).eval()
    up.check_cache(cache.meta)
    with torch.no_grad():
        out = up(batch)
    assert torch.equal(out["ssl"][:, :2], batch["ssl"][:, :2].float())
    assert_close_on_mask(out["ssl"][:, 2:], batch["ssl"][:, 2:].float(), batch["ssl_mask"], 4e-3)


# What trains -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["top_k", "full"])
@pytest.mark.parametrize("tiny_family", FAMILIES)
def test_a_finetuning_step_changes_the_trained_part_only(folders, tiny_family, mode):
    up = build_upstream(str(folders[tiny_family]), mode=mode, k=1 if mode == "top_k" else None).train()
    bb = up.backbone
    before = {n: p.detach().clone() for n, p in up.model.named_parameters()}
    ws = waves([16000, 11000])
    if mode == "top_k":
        batch = collate(bb.extract(ws))
    else:
        batch = wave_batch(ws)
    params = [p for p in up.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.1)
    out = up(batch)
    loss = (out["ssl"][:, -1] ** 2).mean() + out["ssl"][:, 1:].mean()
    loss.backward()
    opt.step()
    trained = {n for n in before if up.is_trained(n)}
    assert trained
    changed = {n for n, p in up.model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert changed and changed <= trained, sorted(changed - trained)[:3]
    layers = bb.layers()
    if mode == "top_k":
        top = f"{bb.layer_prefix}{bb.num_layers - 1}."
        assert all(n.startswith((top, "layer_norm.")) for n in trained)
        assert layers[-1].training and not layers[0].training
    else:
        assert not any(n.startswith(bb.front_end_prefixes) for n in trained)  # the front end stays frozen
        assert layers[0].training and not bb.front_end().training


# Cache key: two families never share a cache -------------------------------------------------------------------
def test_each_family_has_its_own_cache_key_and_top_k_refuses_another_familys_cache(folders):
    from wav2emo.features import make_kind

    keys = {f: json.dumps(make_kind(spec_of(folders[f]), "cpu").key_fields()["backbone"], sort_keys=True)
            for f in FAMILIES}
    assert len(set(keys.values())) == len(FAMILIES)
    up = build_upstream(str(folders["whisper"]), mode="top_k", k=1)
    other = {"name": "w2v", "key": "0" * 64, "key_fields": make_kind(spec_of(folders["wavlm"]), "cpu").key_fields()}
    with pytest.raises(BackboneError, match="feature cache 'w2v'.*has backbone"):
        up.check_cache(other)


# Whisper's encoder -------------------------------------------------------------------------------------------------
def test_whisper_front_end_and_encoder_match_transformers_on_a_30_s_clip(folders):
    """On exactly 30 s (no shortening), the family's log-mel and forward are transformers' own."""
    from transformers import WhisperFeatureExtractor

    bb = load_backbone(resolve_source(folders["whisper"]))
    fe = WhisperFeatureExtractor.from_pretrained(folders["whisper"])
    w = waves([480000])[0]
    ref_mel = torch.from_numpy(fe(w, sampling_rate=16000, return_tensors="np")["input_features"])
    mel = bb.log_mel(torch.from_numpy(w)[None], [len(w)])
    assert mel.shape == ref_mel.shape and float((mel - ref_mel).abs().max()) < 1e-4
    with torch.no_grad():
        ref = bb.model(ref_mel, output_hidden_states=True).hidden_states
        got = bb.hidden_states(torch.from_numpy(w)[None], [len(w)])
    assert len(got) == len(ref) == 4
    for a, b in zip(got, ref, strict=True):
        assert float((a - b).abs().max()) < 1e-4 * max(1.0, float(b.abs().max()))


def test_whisper_keeps_only_the_clips_own_frames_with_its_own_log_mel(folders):
    from transformers import WhisperFeatureExtractor

    bb = load_backbone(resolve_source(folders["whisper"]))
    fe = WhisperFeatureExtractor.from_pretrained(folders["whisper"])
    w = waves([37000])[0]
    m = 37000 // 160
    ref = fe(w, sampling_rate=16000, return_tensors="np")["input_features"][0, :, :m]  # padded alone to 30 s
    mel = bb.log_mel(torch.from_numpy(np.pad(w, (0, 9000)))[None], [len(w)])[0]  # in a batch padded to 46000
    assert mel.shape[1] == 46000 // 160 and not mel[:, m:].any()  # the batch's padding: zeros
    assert float((mel[:, :m] - torch.from_numpy(ref)).abs().max()) < 1e-4
    (feats,) = bb.extract([w])
    assert feats.shape == (bb.num_frames(37000), 4, 32) and feats.shape[0] == (m + 1) // 2


def test_whisper_refuses_a_clip_over_30_s_with_one_line(tmp_path, folders):
    from wav2emo.features.ssl_hidden_states import ClipLengthError

    bb = load_backbone(resolve_source(folders["whisper"]))
    with pytest.raises(ExtractionError, match=r"30\.06 s is longer than the whisper backbone's 30 s window") as e:
        bb.extract(waves([481000]))
    assert "\n" not in str(e.value)
    up = build_upstream(str(folders["whisper"]), mode="full")
    with pytest.raises(BackboneError, match="30 s window"):
        up(wave_batch(waves([16000, 481000])))
    long = make_manifest(tmp_path / "long", [16000, 481000])
    with pytest.raises(ClipLengthError, match=r"longer than the 30 s limit of .*the whisper backbone's window") as e:
        get_features(long, spec_of(folders["whisper"]), tmp_path / "cache", device="cpu", progress=False)
    assert not any((tmp_path / "cache").rglob("*.npy"))  # nothing written


# Bad input ------------------------------------------------------------------------------------------------------
def test_a_folder_of_an_unsupported_family_is_refused_with_one_line(tmp_path):
    folder = tmp_path / "bert"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    (folder / "model.safetensors").write_bytes(b"")
    with pytest.raises(BackboneError, match=r"model_type 'bert' is not a supported backbone family; expected one "
                                            r"of .*whisper \(whisper\)") as e:
        load_backbone(resolve_source(folder), normalize=True)
    assert "\n" not in str(e.value)


def test_a_whisper_folder_without_its_feature_extractor_file_is_refused(tmp_path, folders):
    import shutil

    folder = tmp_path / "whisper-no-fe"
    shutil.copytree(folders["whisper"], folder)
    (folder / "preprocessor_config.json").unlink()
    with pytest.raises(BackboneError, match="no preprocessor_config.json, but the whisper family's front end"):
        load_backbone(resolve_source(folder), normalize=False)


def test_whisper_refuses_train_switches_it_does_not_have(folders):
    with pytest.raises(BackboneError, match="mask_time_prob=0.05 is not available for the whisper family"):
        build_upstream(str(folders["whisper"]), mode="full",
                       switches={"apply_spec_augment": True, "mask_time_prob": 0.05})
    up = build_upstream(str(folders["whisper"]), mode="full", switches={"layerdrop": 0.2})
    assert up.model.layerdrop == pytest.approx(0.2)


# Checkpoint -> eval and predict rebuild the same predictions, for every family -------------------------------------
E2E = [
    ("whisper", ["model=layer_weighted", "finetune=top_k", "finetune.k=1"]),
    ("whisper", ["model=mean_linear", "model.layers=[1,3]", "finetune=full"]),
    ("hubert", ["model=layer_weighted", "finetune=top_k", "finetune.k=2"]),
    ("wavlm", ["model=layer_weighted", "finetune=full"]),
    ("data2vec-audio", ["model=mean_linear", "model.layers=2", "finetune=top_k", "finetune.k=1"]),
    ("wav2vec2-stable", ["model=layer_weighted", "finetune=top_k", "finetune.k=1"]),
    ("whisper", ["model=layer_weighted", "features.ssl.time_pooled=true", "features.ssl.layers=[0,2,3]"]),
    ("wavlm", ["model=mean_linear", "model.layers=2", "features.ssl.layers=[0,2]"]),
]


@pytest.mark.parametrize(("tiny_family", "overrides"), E2E)
def test_checkpoint_is_rebuilt_by_eval_and_predict_with_the_same_predictions(tmp_path_factory, tiny_family, overrides):
    import pandas as pd

    from tests.helpers import compose_cfg
    from tests.test_predict import FAST, FINETUNE, _classes, _predict
    from wav2emo.runs.fold_runner import run_fold
    from wav2emo.runs.testing import evaluate

    shared = tmp_path_factory.getbasetemp() / "families_e2e"
    dirs = (shared / "data", shared / "cache")
    tmp = tmp_path_factory.mktemp(f"e2e-{tiny_family}")
    tuned = FINETUNE if any(o.startswith("finetune=") for o in overrides) else []
    cfg = compose_cfg([*FAST, *tuned, f"features.ssl.tiny_family={tiny_family}", *overrides], tmp / "run", *dirs)
    result = run_fold(cfg, 0, tmp / "run" / "fold_0")
    ckpt = result["best_checkpoint"]
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    if tuned:
        assert state["upstream._extra_state"]["identity"]["model_type"] == FAMILIES[tiny_family]
    evaluate(compose_cfg([f"ckpt_path={ckpt}"], tmp / "eval", *dirs, config_name="eval"))
    trained = pd.read_csv(tmp / "run" / "fold_0" / "predictions.csv")
    rebuilt = pd.read_csv(tmp / "eval" / "predictions.csv")
    classes = _classes(trained)
    assert list(trained["clip_id"]) == list(rebuilt["clip_id"]) and (trained["pred"] == rebuilt["pred"]).all()
    assert (trained[classes] - rebuilt[classes]).abs().to_numpy().max() < 1e-5
    status, got = _predict(ckpt, list(rebuilt["file"]), tmp / "predict", batch_size=None, window_s=30.0, hop_s=10.0)
    files = got[got["segment"] == "file"].set_index("file")
    assert status == 0 and list(files.index) == list(rebuilt["file"])
    np.testing.assert_allclose(files[classes].to_numpy(dtype=float), rebuilt[classes].to_numpy(), atol=1e-4, rtol=0)


# Caches that fit large backbones: a layer subset, the time-pooled kind, the size said and checked first -------------
def test_a_layer_subset_cache_stores_those_states_and_the_featurizer_maps_absolute_indices(tmp_path, folders, toy):
    from wav2emo.errors import ConfigError
    from wav2emo.models.featurizer import Featurizer

    folder = folders["whisper"]
    full = get_features(toy, spec_of(folder), tmp_path / "cache", device="cpu", progress=False)
    part = get_features(toy, spec_of(folder, layers=[3, 0, 2]), tmp_path / "cache", device="cpu", progress=False)
    assert part.path != full.path and part.feature_shape == (3, 32)
    assert part.meta["layer_indices"] == [0, 2, 3] and part.meta["layer_names"] == ["encoder_input", "layer_02", "layer_03"]
    for i in range(len(toy)):
        np.testing.assert_array_equal(np.asarray(part.read(i)), np.asarray(full.read(i))[:, [0, 2, 3]])
    feat = Featurizer(layers=2, num_hidden_states=3, stored_layers=[0, 2, 3])
    assert feat.layers == [1]
    assert Featurizer(layers=None, num_hidden_states=3, stored_layers=[0, 2, 3]).layers == [1, 2]
    with pytest.raises(ConfigError, match=r"hidden states \[1\] are not in the feature cache, which stores only \[0, 2, 3\]"):
        Featurizer(layers=[1, 2], num_hidden_states=3, stored_layers=[0, 2, 3])
    up = build_upstream(str(folder), mode="top_k", k=1)
    with pytest.raises(BackboneError, match=r"stores hidden states \[0, 2, 3\]; finetune top_k .* needs them all"):
        up.check_cache(part.meta)
    with pytest.raises(BackboneError, match=r"layers \[4\] out of range; this backbone has hidden states 0..3"):
        get_features(toy, spec_of(folder, layers=[0, 4]), tmp_path / "cache", device="cpu", progress=False)


def test_one_cached_layer_input_reads_its_own_row_of_a_subset_cache():
    from types import SimpleNamespace

    from wav2emo.errors import ConfigError
    from wav2emo.features.ssl_layout import ssl_layer_position

    subset = SimpleNamespace(meta={"layer_indices": [0, 2, 4]})
    assert ssl_layer_position(subset, 4) == 2 and ssl_layer_position(SimpleNamespace(meta={}), 4) == 4
    with pytest.raises(ConfigError, match=r"ssl_layer_index=3: the SSL cache stores only hidden states \[0, 2, 4\]"):
        ssl_layer_position(subset, 3)


def test_the_time_pooled_cache_holds_each_layers_mean_and_std_over_the_clips_frames(tmp_path, folders, toy):
    folder = folders["hubert"]
    full = get_features(toy, spec_of(folder), tmp_path / "cache", device="cpu", progress=False)
    pooled = get_features(toy, spec_of(folder, time_pooled=True), tmp_path / "cache", device="cpu", progress=False)
    assert pooled.path != full.path and pooled.feature_shape == (4, 64) and pooled.lengths.tolist() == [1] * len(toy)
    assert pooled.meta["key_fields"]["time_pooled"] == "mean_std" and "time_pooled" not in full.meta["key_fields"]
    for i in range(len(toy)):
        frames = np.asarray(full.read(i), dtype=np.float32)
        want = np.concatenate([frames.mean(0), frames.std(0)], axis=-1)
        np.testing.assert_allclose(np.asarray(pooled.read(i), dtype=np.float32)[0], want, atol=4e-3, rtol=4e-3)


def test_the_cache_size_is_said_first_and_a_too_small_disk_is_refused_with_the_numbers(tmp_path, folders, toy,
                                                                                     monkeypatch, caplog):
    import logging

    import wav2emo.features.ssl_hidden_states as kind

    monkeypatch.setattr(kind, "_free_bytes", lambda path: 10_000)
    with pytest.raises(ExtractionError, match=r"needs [\d,]+ frames x 4 hidden states x 32 x 2 bytes = 0\.00 GB but "
                                              r"only 0\.00 GB are free .*features\.ssl\.time_pooled=true"):
        get_features(toy, spec_of(folders["wavlm"]), tmp_path / "cache", device="cpu", progress=False)
    assert not any(p.suffix in (".npy", ".bin", ".f16") for p in (tmp_path / "cache").rglob("*") if p.is_file())
    monkeypatch.undo()
    with caplog.at_level(logging.INFO, logger="wav2emo.features.ssl_hidden_states"):
        get_features(toy, spec_of(folders["wavlm"]), tmp_path / "cache", device="cpu", progress=False)
    assert "frames x 4 hidden states x 32 x 2 bytes" in caplog.text


def test_a_frame_reading_head_on_a_time_pooled_cache_is_refused(tmp_path_factory):
    from tests.helpers import compose_cfg
    from tests.test_predict import FAST
    from wav2emo.errors import ConfigError
    from wav2emo.runs.build import build_datamodule, build_module

    shared = tmp_path_factory.getbasetemp() / "families_e2e"
    cfg = compose_cfg([*FAST, "model=fe_vgg", "features.ssl.time_pooled=true"], tmp_path_factory.mktemp("pooled"),
                      shared / "data", shared / "cache")
    dm = build_datamodule(cfg, 0)
    dm.setup("fit")
    with pytest.raises(ConfigError, match="model=fe_vgg reads frames, but the feature cache .* time-pooled"):
        build_module(cfg, dm)


# One config per hub id ----------------------------------------------------------------------------------------------
HUB_CONFIGS = {  # features=<name> -> (hub id, hidden states of the real model)
    "wav2vec2-large": ("facebook/wav2vec2-large", 25), "wav2vec2-xls-r-300m": ("facebook/wav2vec2-xls-r-300m", 25),
    "hubert-base-ls960": ("facebook/hubert-base-ls960", 13), "hubert-large-ll60k": ("facebook/hubert-large-ll60k", 25),
    "wavlm-base": ("microsoft/wavlm-base", 13), "wavlm-base-plus": ("microsoft/wavlm-base-plus", 13),
    "wavlm-large": ("microsoft/wavlm-large", 25), "data2vec-audio-base": ("facebook/data2vec-audio-base", 13),
    "data2vec-audio-large": ("facebook/data2vec-audio-large", 25), "whisper-tiny": ("openai/whisper-tiny", 5),
    "whisper-base": ("openai/whisper-base", 7), "whisper-small": ("openai/whisper-small", 13),
    "whisper-medium": ("openai/whisper-medium", 25), "whisper-large-v3": ("openai/whisper-large-v3", 33),
}


@pytest.mark.parametrize("name", HUB_CONFIGS)
def test_each_hub_id_has_its_features_config(tmp_path, name):
    from tests.helpers import compose_cfg

    cfg = compose_cfg([f"features={name}"], tmp_path, tmp_path / "data", tmp_path / "cache", config_name="extract")
    ssl = cfg.features.ssl
    hub, states = HUB_CONFIGS[name]
    assert ssl.name == name and ssl.backbone == hub and ssl.kind == "ssl_hidden_states" and "egemaps" in cfg.features
    assert ssl.layers is None or (ssl.layers[0] == 0 and ssl.layers[-1] == states - 1)  # a subset: from 0 to N
    assert (ssl.max_clip_s == 30.0) == name.startswith("whisper")


@pytest.mark.parametrize("tiny_family", FAMILIES)
def test_a_bf16_model_takes_a_float32_wave(folders, tiny_family):
    """trainer.precision=bf16-true turns the whole model to bf16 while the batch's wave stays float32."""
    bb = load_backbone(resolve_source(folders[tiny_family]))
    bb.model.to(torch.bfloat16)
    x = torch.from_numpy(np.stack([w[:9000] for w in waves()]))
    states = bb.hidden_states(bb.prepare_batch(x, torch.tensor([9000] * len(x))), [9000] * len(x))
    assert states[-1].dtype == torch.bfloat16 and torch.isfinite(states[-1].float()).all()
