"""``python -m wav2emo.export`` and ``wav2emo.predict backend=onnx``: tiny models trained on the synthetic corpus,
exported as one ONNX graph each, predicting real RAVDESS clips as ``wav2emo.predict`` does (to 1e-3)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.helpers import SMALL, compose_cfg

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
REPO = Path(__file__).resolve().parents[1]

FAST = [*SMALL, "data.corpus.clips_per_actor=3", "debug=fast", "trainer.max_epochs=1",
        "trainer.limit_train_batches=2", "model.module.optimizer.lr=1e-3"]
FINETUNE = ["finetune.optim.warmup_steps=0", "finetune.optim.lr_backbone=1e-3"]
MODELS = {
    "fe_vgg": (0, ["model=fe_vgg"]),
    "fe_vgg_egemaps": (1, ["model=fe_vgg_egemaps"]),
    "layer_weighted": (2, ["model=layer_weighted"]),
    "fe_vgg_top_k": (3, ["model=fe_vgg", "finetune=top_k", "finetune.k=1", *FINETUNE]),
    "layer_weighted_full": (4, ["model=layer_weighted", "finetune=full", *FINETUNE]),  # the backbone on the wave
}
PARITY = 1e-3


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("export")


@pytest.fixture(scope="module")
def trained(root):
    """One fold of each model, trained for two batches on the synthetic corpus with the tiny backbone."""
    from wav2emo.runs.fold_runner import run_fold

    data_dir, cache_dir = root / "data", root / "cache"
    out = {}
    for name, (fold, overrides) in MODELS.items():
        cfg = compose_cfg([*FAST, *overrides], root / name, data_dir, cache_dir)
        out[name] = Path(run_fold(cfg, fold, root / name / f"fold_{fold}")["best_checkpoint"])
    return out


def _export(ckpt, output, **settings):
    from omegaconf import OmegaConf

    from wav2emo.export.cli import run

    return run(OmegaConf.create({"ckpt_path": str(ckpt), "output": str(output), "per_fold": False,
                                 "overwrite": False, "opset": 17, "check": True, **settings}))


def _predict(ckpt, inputs, out, backend="torch", batch_size=1):
    from omegaconf import OmegaConf

    from wav2emo.predict import run

    cfg = OmegaConf.create({
        "ckpt_path": str(ckpt), "backend": backend, "inputs": [str(i) for i in inputs], "output": str(out),
        "json": None, "window_rows": True, "device": "cpu", "batch_size": batch_size, "progress": False,
        "window": {"window_s": 4.0, "hop_s": 2.0, "vad": False},
    })
    status = run(cfg)
    return status, pd.read_csv(out, keep_default_na=False)


def _probs(df):
    return df[[c for c in df.columns if c.startswith("prob_")]].to_numpy(dtype=float)


def _ravdess_clips(ravdess_dir, n=6):
    clips = sorted(ravdess_dir.glob("Actor_*/*.*"))
    return [clips[i] for i in np.linspace(0, len(clips) - 1, n).astype(int)]


@pytest.mark.ravdess
@pytest.mark.parametrize("name", list(MODELS))
def test_onnx_gives_predicts_probabilities_on_real_clips(trained, ravdess_dir, tmp_path, name):
    """Each model exported alone, then both backends on six RAVDESS clips (windows of a longer clip included):
    the same rows, probabilities within 1e-3, the same labels."""
    (report,) = _export(trained[name], tmp_path / f"{name}.onnx")
    meta = report["metadata"]
    assert json.loads(meta["wav2emo.inputs"]) == (["waveform", "egemaps"] if "egemaps" in name else ["waveform"])
    assert report["max_abs_diff"] <= 1e-4
    clips = _ravdess_clips(ravdess_dir)
    status_t, torch_rows = _predict(trained[name], clips, tmp_path / "torch.csv")
    status_o, onnx_rows = _predict(tmp_path / f"{name}.onnx", clips, tmp_path / "onnx.csv", backend="onnx")
    assert status_t == status_o == 0
    assert list(torch_rows["file"]) == list(onnx_rows["file"]) and list(torch_rows["start"]) == list(onnx_rows["start"])
    gap = np.abs(_probs(torch_rows) - _probs(onnx_rows)).max()
    assert gap <= PARITY, f"{name}: ONNX and PyTorch probabilities differ by {gap:.2e}"
    assert _probs(onnx_rows).std(axis=0).max() > 1e-6  # the clips are told apart (not a constant output)


def test_metadata_names_the_classes_and_the_checkpoint_and_the_length_axis_is_dynamic(trained, tmp_path):
    import onnx

    from wav2emo.inference.onnx_model import OnnxPredictor, load_onnx

    _export(trained["fe_vgg_egemaps"], tmp_path / "m.onnx")
    proto = onnx.load(str(tmp_path / "m.onnx"))
    meta = {p.key: p.value for p in proto.metadata_props}
    (entry,) = json.loads(meta["wav2emo.models"])
    assert entry["model"] == "fe_vgg_egemaps" and entry["fold"] == 1
    assert entry["checkpoint"] == str(trained["fe_vgg_egemaps"].resolve()) and len(entry["sha256"]) == 64
    assert meta["wav2emo.egemaps_feature_set"] == "eGeMAPSv02" and meta["wav2emo.format"] == "wav2emo-onnx/1"
    wave_input = proto.graph.input[0]
    assert wave_input.name == "waveform" and wave_input.type.tensor_type.shape.dim[1].dim_param == "samples"
    assert [i.name for i in proto.graph.input] == ["waveform", "egemaps"]
    assert proto.graph.input[1].type.tensor_type.shape.dim[1].dim_value == 88
    model = load_onnx(tmp_path / "m.onnx")
    predictor = OnnxPredictor([model])
    rng = np.random.default_rng(0)
    for n in (9000, 23456, 64000):  # any length runs
        p = predictor.probabilities([0.1 * rng.standard_normal(n).astype(np.float32)])
        assert p.shape == (1, len(model.class_names)) and abs(p.sum() - 1) < 1e-5


def test_a_run_directory_is_one_file_averaging_its_folds_or_one_file_per_fold(trained, tmp_path):
    """fe_vgg and its top_k sibling as a run of two folds (they share the frozen backbone): one file predicts the
    mean of the two single-fold files; per_fold=true writes both files."""
    import shutil

    from wav2emo.inference.onnx_model import OnnxPredictor, load_onnx

    run = tmp_path / "run"
    for name in ("fe_vgg", "fe_vgg_top_k"):
        fold_dir = trained[name].parent.parent
        shutil.copytree(fold_dir, run / fold_dir.name)
        result = json.loads((run / fold_dir.name / "fold_result.json").read_text())
        result["best_checkpoint"] = str(run / fold_dir.name / "checkpoints" / trained[name].name)
        (run / fold_dir.name / "fold_result.json").write_text(json.dumps(result))
    (report,) = _export(run, tmp_path / "ens.onnx")
    assert len(json.loads(report["metadata"]["wav2emo.models"])) == 2
    singles = _export(run, tmp_path / "per.onnx", per_fold=True)
    assert sorted(Path(r["output"]).name for r in singles) == ["per.fold0.onnx", "per.fold3.onnx"]
    rng = np.random.default_rng(1)
    waves = [0.1 * rng.standard_normal(n).astype(np.float32) for n in (20000, 41000)]
    ens = OnnxPredictor([load_onnx(tmp_path / "ens.onnx")]).probabilities(waves)
    per = OnnxPredictor([load_onnx(Path(r["output"])) for r in singles]).probabilities(waves)
    np.testing.assert_allclose(ens, per, atol=1e-5)


# Bad input: one line each ----------------------------------------------------------------------------------

def _cli(module, *args, env_extra=None):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)


def test_an_existing_output_is_refused_unless_overwrite(trained, tmp_path):
    from wav2emo.errors import ConfigError

    out = tmp_path / "m.onnx"
    out.write_bytes(b"not mine")
    with pytest.raises(ConfigError, match=r"m.onnx: the file exists; pass overwrite=true"):
        _export(trained["layer_weighted"], out)
    assert out.read_bytes() == b"not mine"
    _export(trained["layer_weighted"], out, overwrite=True)
    assert out.stat().st_size > 1000
    proc = _cli("wav2emo.export", f"ckpt_path={trained['layer_weighted']}", f"output={out}",
                f"hydra.run.dir={tmp_path / 'h'}")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("wav2emo.export: error: output=") \
        and "overwrite=true" in proc.stderr


def test_a_checkpoint_that_cannot_be_exported_says_which_part_and_why(tmp_path, root, trained):
    from wav2emo.errors import ConfigError
    from wav2emo.runs.fold_runner import run_fold

    cfg = compose_cfg([*FAST, "model=egemaps_mlp"], root / "mlp", root / "data", root / "cache")
    ckpt = run_fold(cfg, 0, root / "mlp" / "fold_0")["best_checkpoint"]
    with pytest.raises(ConfigError, match=r"cannot export: the model reads only \['egemaps'\]"):
        _export(ckpt, tmp_path / "mlp.onnx")
    assert not (tmp_path / "mlp.onnx").exists()


def test_predict_refuses_an_onnx_file_that_is_not_wav2emos(trained, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("Identity", ["waveform"], ["probabilities"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("waveform", TensorProto.FLOAT, [1, None])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [1, None])])
    foreign = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(foreign))
    wav = tmp_path / "a.wav"
    import soundfile as sf

    sf.write(str(wav), np.zeros(16000, dtype=np.float32), 16000)
    proc = _cli("wav2emo.predict", "backend=onnx", f"ckpt_path={foreign}", f"inputs=[{wav}]",
                f"hydra.run.dir={tmp_path / 'h'}")
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"wav2emo.predict: error: {foreign}: not a wav2emo export (wav2emo.format: no wav2emo.format")
    from wav2emo.errors import ConfigError

    with pytest.raises(ConfigError, match="backend=onnx runs exported files"):
        _predict(trained["fe_vgg"], [wav], tmp_path / "x.csv", backend="onnx")
    with pytest.raises(ConfigError, match="run it with backend=onnx"):
        _predict(foreign, [wav], tmp_path / "x.csv", backend="torch")


# The graph's pieces that replace what the tracer would freeze ---------------------------------------------

def test_adaptive_pool_replacement_matches_pytorch_at_any_size():
    import torch

    from wav2emo.export.graph import AdaptiveAvgPool2dExport

    torch.manual_seed(0)
    for t, d in [(3, 9), (7, 10), (81, 81), (100, 13), (263, 40)]:
        x = torch.randn(1, 4, t, d)
        np.testing.assert_allclose(AdaptiveAvgPool2dExport((3, 9))(x).numpy(),
                                   torch.nn.AdaptiveAvgPool2d((3, 9))(x).numpy(), atol=1e-5)


@pytest.mark.parametrize(("frames", "multiple"), [(263, None), (None, 8), (None, None)])
def test_collate_padding_inside_the_graph_follows_the_clip_length_at_run_time(tmp_path, frames, multiple):
    """``_fit_frames`` exported once (traced on 120 frames) gives collate's padding and mask at other lengths."""
    import onnxruntime as ort
    import torch

    from wav2emo.export.graph import _at_least, _fit_frames
    from wav2emo.feeding.input_strategies import collate

    class Fit(torch.nn.Module):
        def forward(self, x):
            y, mask = _fit_frames(x, frames, multiple)
            mask = torch.ones_like(y[:, 0, :, 0]) > 0 if mask is None else mask
            return _at_least(y, 2, 81), _at_least(mask, 1, 81).float()

    torch.onnx.export(Fit(), (torch.randn(1, 2, 120, 3),), str(tmp_path / "fit.onnx"), dynamo=False,
                      input_names=["x"], output_names=["y", "mask"], dynamic_axes={"x": {2: "t"}}, opset_version=17)
    session = ort.InferenceSession(str(tmp_path / "fit.onnx"), providers=["CPUExecutionProvider"])
    for t in (5, 50, 121, 300):
        x = torch.randn(2, t, 3)  # (H, T, D), as a cache item holds it
        ref = collate([{"ssl": x, "label": 0, "actor": 0, "clip_id": "c"}], frames, multiple)
        y, mask = session.run(None, {"x": x[None].numpy()})
        want, want_mask = ref["ssl"], ref["ssl_mask"].float()
        pad = max(0, 81 - want.shape[2])  # the adaptive head's own zero padding of short clips
        want = torch.nn.functional.pad(want, (0, 0, 0, pad))
        want_mask = torch.nn.functional.pad(want_mask, (0, pad))
        np.testing.assert_array_equal(y, want.numpy())
        np.testing.assert_array_equal(mask, want_mask.numpy())


def test_a_whisper_backbone_is_refused_with_the_reason():
    """Whisper's encoder reads the log-mel of its feature extractor, computed outside the model: no waveform graph."""
    from types import SimpleNamespace

    from wav2emo.errors import ConfigError
    from wav2emo.export.graph import check_exportable

    r = SimpleNamespace(path="whisper.ckpt", frames_multiple=None, module=SimpleNamespace(upstream=None),
                        features=SimpleNamespace(inputs=("ssl",), extractor=SimpleNamespace(family="whisper"),
                                                 sample_rate=16000))
    with pytest.raises(ConfigError, match=r"whisper.ckpt: cannot export: the backbone family \['whisper'\]"):
        check_exportable(r)
