"""``python -m wav2emo.predict``: trained checkpoints on new audio (tiny backbone, synthetic corpus)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from tests.helpers import SMALL, compose_cfg

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
REPO = Path(__file__).resolve().parents[1]


# 24 actors x 3 clips, 2 training batches: enough for train/dev/test actors, cheap to extract and train.
FAST = [*SMALL, "data.corpus.clips_per_actor=3", "debug=fast", "trainer.max_epochs=1",
        "trainer.limit_train_batches=2", "model.module.optimizer.lr=1e-3"]
FINETUNE = ["finetune.optim.warmup_steps=0", "finetune.optim.lr_backbone=1e-3"]


def _train(root, plans, dirs):
    from wav2emo.runs.fold_runner import run_fold

    data_dir, cache_dir = dirs
    out = {}
    for run, fold, overrides in plans:
        cfg = compose_cfg([*FAST, *overrides], root / run, data_dir, cache_dir)
        out[fold] = run_fold(cfg, fold, root / run / f"fold_{fold}")
    return out


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("predict")


@pytest.fixture(scope="module")
def trained(root):
    """A run directory of two folds trained on the synthetic corpus: fold 0 an SSL model (layer_weighted), fold 1
    the eGeMAPS MLP (its scaler lives in the checkpoint)."""
    dirs = (root / "data", root / "cache")
    results = _train(root, [("run", 0, ["model=layer_weighted"]), ("run", 1, ["model=egemaps_mlp"])], dirs)
    return {"run": root / "run", "results": results, "data_dir": dirs[0], "cache_dir": dirs[1]}


@pytest.fixture(scope="module")
def finetuned(root, trained):
    """Fine-tuned upstreams: fold 2 fe_vgg with its top layer trained (finetune=top_k, fed cached hidden states;
    fe_vgg's output depends on padding), fold 3 layer_weighted with the whole backbone trained (finetune=full,
    fed audio)."""
    plans = [("ft", 2, ["model=fe_vgg", "finetune=top_k", "finetune.k=1", *FINETUNE]),
             ("ft", 3, ["model=layer_weighted", "finetune=full", *FINETUNE])]
    return {**trained, "results": _train(root, plans, (trained["data_dir"], trained["cache_dir"]))}


def _predict(ckpt, inputs, tmp_path, batch_size=4, window_rows=True, device="cpu", **window):
    from omegaconf import OmegaConf

    from wav2emo.predict import run

    out = tmp_path / "out.csv"
    cfg = OmegaConf.create({
        "ckpt_path": str(ckpt), "inputs": [str(i) for i in inputs], "output": str(out),
        "json": str(tmp_path / "out.json"), "window_rows": window_rows, "device": device, "batch_size": batch_size,
        "progress": False, "window": {"window_s": 4.0, "hop_s": 2.0, "vad": False, **window},
    })
    status = run(cfg)
    return status, pd.read_csv(out, keep_default_na=False)


def _classes(df):
    return [c for c in df.columns if c.startswith("prob_")]


@pytest.mark.parametrize("fold", [0, 1, 2, 3])
def test_predict_gives_the_probabilities_eval_gives(request, tmp_path, fold):
    from wav2emo.runs.testing import evaluate

    trained = request.getfixturevalue("trained" if fold < 2 else "finetuned")
    ckpt = trained["results"][fold]["best_checkpoint"]
    cfg = compose_cfg([f"ckpt_path={ckpt}"], tmp_path, trained["data_dir"], trained["cache_dir"], config_name="eval")
    evaluate(cfg)
    ev = pd.read_csv(tmp_path / "predictions.csv")
    # The test clips in eval's order, batched as eval batched them (batch_size null = the checkpoint's
    # eval_batch_size), each one window (window_s longer than any clip): the whole clip, as eval sees it.
    status, got = _predict(ckpt, list(ev["file"]), tmp_path, batch_size=None, window_s=30.0, hop_s=10.0)
    assert status == 0
    files = got[got["segment"] == "file"].set_index("file")
    assert len(files) == len(ev) and list(files.index) == list(ev["file"])
    classes = _classes(ev)
    assert classes == _classes(got)
    np.testing.assert_allclose(files[classes].to_numpy(dtype=float), ev[classes].to_numpy(), atol=1e-4, rtol=0)
    assert (files["label"].to_numpy() == ev["predicted"].to_numpy()).all()


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_the_hidden_states_stay_there_and_give_the_cpus_probabilities(trained, tmp_path):
    """The backbone's hidden states are collated where they were made (no round trip through the host)."""
    from wav2emo.inference.features import InMemoryFeatures
    from wav2emo.inference.restore import restore

    ckpt = trained["results"][0]["best_checkpoint"]
    feats = restore(ckpt, device="cuda").features
    assert isinstance(feats, InMemoryFeatures)
    items = feats.items([_tone(16_000, 3.0), _tone(16_000, 2.0, seed=1)])
    assert all(it["ssl"].device.type == "cuda" for it in items)
    wav = _write(tmp_path / "long.wav", _tone(16_000, 9.0, seed=2), 16_000)
    runs = {}
    for device in ("cpu", "cuda"):
        (tmp_path / device).mkdir()
        status, runs[device] = _predict(ckpt, [wav], tmp_path / device, device=device)
        assert status == 0
    classes = _classes(runs["cpu"])
    assert len(runs["cuda"]) == len(runs["cpu"]) > 2
    np.testing.assert_allclose(runs["cuda"][classes].to_numpy(dtype=float), runs["cpu"][classes].to_numpy(dtype=float),
                               atol=2e-3, rtol=0)


def _write(path, wave, sr, subtype=None):
    sf.write(str(path), wave, sr, subtype=subtype)
    return path


def _tone(sr, seconds, seed=0):
    n = int(round(sr * seconds))
    rng = np.random.default_rng(seed)
    return (0.3 * np.sin(2 * np.pi * 220 * np.arange(n) / sr) + 0.01 * rng.standard_normal(n)).astype(np.float32)


def test_any_rate_length_and_channels_and_bad_files_get_their_reason(trained, tmp_path):
    good = {
        "short": _write(tmp_path / "short.wav", _tone(16000, 0.1), 16000),
        "8k": _write(tmp_path / "n8k.flac", _tone(8000, 1.5), 8000),
        "48k": _write(tmp_path / "n48k.wav", _tone(48000, 1.5), 48000),
        "stereo": _write(tmp_path / "stereo.ogg", np.stack([_tone(16000, 1.0), _tone(16000, 1.0, 1)], 1), 16000),
        "long": _write(tmp_path / "long.wav", np.tile(_tone(16000, 1.0), 11), 16000),
    }
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage")
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "notes.txt.wav").write_text("not audio at all\n")
    _write(tmp_path / "nan.wav", np.full(16000, np.nan, dtype=np.float32), 16000, "FLOAT")
    _write(tmp_path / "tiny.wav", _tone(16000, 0.01), 16000)  # shorter than eGeMAPS / the backbone can use
    bad = {"corrupt.wav": "cannot be read", "empty.wav": "cannot be read", "notes.txt.wav": "cannot be read",
           "nan.wav": "NaN", "tiny.wav": "shorter than"}
    inputs = [good["short"], *(tmp_path / b for b in bad), *list(good.values())[1:]]  # bad ones between good ones
    status, rows = _predict(trained["run"], inputs, tmp_path)
    assert status == 1  # some files failed, and the others were still predicted
    files = rows[rows["segment"] == "file"]
    assert list(files["file"]) == [str(p) for p in inputs]  # one row per file, in the order given
    files = files.set_index("file")
    classes = _classes(rows)
    for path in good.values():
        row = files.loc[str(path)]
        assert row["error"] == "" and row["label"] in [c[5:] for c in classes], path
        assert float(row[classes].astype(float).sum()) == pytest.approx(1.0, abs=1e-5)
    for name, why in bad.items():
        row = files.loc[str(tmp_path / name)]
        assert why in row["error"] and row["label"] == "" and (row[classes] == "").all(), (name, row["error"])
    long_windows = rows[(rows["file"] == str(good["long"])) & (rows["segment"] == "window")]
    assert list(long_windows["start"]) == [0.0, 2.0, 4.0, 6.0, 7.0]  # 11 s: 4 s windows every 2 s, last at the end
    assert list(long_windows["end"]) == [4.0, 6.0, 8.0, 10.0, 11.0]
    np.testing.assert_allclose(files.loc[str(good["long"]), classes].astype(float).to_numpy(),
                               long_windows[classes].astype(float).mean().to_numpy(), atol=1e-9)
    assert files.loc[str(good["48k"]), "end"] == pytest.approx(1.5)
    doc = json.loads((tmp_path / "out.json").read_text())
    assert [f["file"] for f in doc["files"]] == [str(p) for p in inputs]
    assert sum(f["error"] is not None for f in doc["files"]) == len(bad)
    assert len(next(f for f in doc["files"] if f["file"] == str(good["long"]))["windows"]) == 5


def test_long_file_is_streamed_in_windows(trained, tmp_path, monkeypatch):
    """A 10-minute 8 kHz file: predicted window by window, never decoded whole (load_audio is never called)."""
    import wav2emo.data.audio

    def whole_file(*args, **kwargs):
        raise AssertionError("predict decoded a whole file")

    monkeypatch.setattr(wav2emo.data.audio, "load_audio", whole_file)
    sr = 8000
    wave = (0.1 * np.random.default_rng(1).standard_normal(sr * 600)).astype(np.float32)
    path = _write(tmp_path / "ten_min.flac", wave, sr)
    ckpt = trained["results"][0]["best_checkpoint"]
    status, rows = _predict(ckpt, [path], tmp_path, batch_size=8, window_s=20.0, hop_s=20.0)
    assert status == 0
    windows = rows[rows["segment"] == "window"]
    assert len(windows) == 30 and windows["end"].max() == pytest.approx(600.0)
    assert rows[rows["segment"] == "file"]["end"].item() == pytest.approx(600.0)


def test_vad_keeps_only_windows_with_sound(trained, tmp_path):
    sr = 16000
    loud = (0.3 * np.random.default_rng(2).standard_normal(sr * 4)).astype(np.float32)
    wave = np.concatenate([loud, np.zeros(sr * 8, dtype=np.float32), loud])
    path = _write(tmp_path / "gaps.wav", wave, sr)
    silent = _write(tmp_path / "silent.wav", np.zeros(sr * 2, dtype=np.float32), sr)
    ckpt = trained["results"][0]["best_checkpoint"]
    _, all_rows = _predict(ckpt, [path], tmp_path, window_s=4.0, hop_s=4.0)
    status, vad_rows = _predict(ckpt, [path, silent], tmp_path, window_s=4.0, hop_s=4.0, vad=True)
    assert list(all_rows[all_rows["segment"] == "window"]["start"]) == [0.0, 4.0, 8.0, 12.0]
    assert list(vad_rows[vad_rows["segment"] == "window"]["start"]) == [0.0, 12.0]
    assert status == 1 and "no window with sound" in vad_rows.set_index("file").loc[str(silent), "error"]


def test_run_directory_is_the_mean_of_its_fold_checkpoints(trained, tmp_path):
    results = trained["results"]
    clips = pd.read_csv(trained["run"] / "fold_0" / "predictions.csv")["file"].iloc[:3].tolist()
    per_fold = [_predict(results[f]["best_checkpoint"], clips, tmp_path, window_rows=False)[1] for f in (0, 1)]
    status, ens = _predict(trained["run"], clips, tmp_path, window_rows=False)
    assert status == 0 and (ens["segment"] == "file").all()
    classes = _classes(ens)
    a, b = (df[classes].astype(float).to_numpy() for df in per_fold)
    assert np.abs(a - b).max() > 1e-4  # two different models, so the test can tell a mean from either
    np.testing.assert_allclose(ens[classes].astype(float).to_numpy(), (a + b) / 2, atol=1e-6)
    meta = json.loads((tmp_path / "out.json").read_text())
    assert len(meta["checkpoints"]) == 2 and "windows" not in meta["files"][0]


def _cli(*args, cwd):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "wav2emo.predict", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd, env=env)


def test_cli_csv_on_stdout_and_exit_status_1_when_a_file_fails(trained, tmp_path):
    good = _write(tmp_path / "a.wav", _tone(16000, 1.0), 16000)
    (tmp_path / "bad.wav").write_bytes(b"")
    listing = tmp_path / "list.txt"
    listing.write_text("a.wav\n# a comment\nbad.wav\n")
    ckpt = trained["results"][1]["best_checkpoint"]
    proc = _cli(f"ckpt_path={ckpt}", f"inputs=[{listing}]", f"paths.log_dir={tmp_path}", "device=cpu", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    from io import StringIO

    rows = pd.read_csv(StringIO(proc.stdout), keep_default_na=False)
    assert list(rows.columns[:5]) == ["file", "segment", "start", "end", "label"] and rows.columns[-1] == "error"
    files = rows[rows["segment"] == "file"].set_index("file")
    assert files.loc[str(good), "error"] == "" and files.loc[str(tmp_path / "bad.wav"), "error"] != ""
    assert "bad.wav" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_user_errors_exit_2(tmp_path):
    wav = _write(tmp_path / "a.wav", np.zeros(16000, dtype=np.float32), 16000)
    proc = _cli(f"ckpt_path={tmp_path / 'nope.ckpt'}", f"inputs=[{wav}]", f"paths.log_dir={tmp_path}", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "nope.ckpt" in proc.stderr and "Traceback" not in proc.stderr
    proc = _cli("--help", cwd=tmp_path)
    assert proc.returncode == 0 and "python -m wav2emo.predict ckpt_path=" in proc.stdout
    assert "${" not in proc.stdout and len(proc.stdout.splitlines()) < 60


def test_a_model_that_fails_to_load_stops_the_early_reader_and_the_egemaps_workers(trained, tmp_path, monkeypatch):
    """The windows are read and their eGeMAPS queued while the models load; when a model then cannot be built,
    the user gets the error in one line, and neither the reader's thread nor a worker process is left behind."""
    import threading

    import torch
    from omegaconf import OmegaConf

    from wav2emo.errors import ConfigError
    from wav2emo.features.smile_waves import SmileWavePool
    from wav2emo.predict import run

    ckpt = torch.load(trained["results"][1]["best_checkpoint"], map_location="cpu", weights_only=False)  # egemaps_mlp
    ckpt["state_dict"].pop(sorted(ckpt["state_dict"])[-1])
    broken = tmp_path / "broken.ckpt"
    torch.save(ckpt, broken)
    pools: list[SmileWavePool] = []
    start = SmileWavePool.__init__

    def recorded(self, *args, **kwargs):
        start(self, *args, **kwargs)
        pools.append(self)

    monkeypatch.setattr(SmileWavePool, "__init__", recorded)
    wav = _write(tmp_path / "a.wav", _tone(16000, 30.0), 16000)
    cfg = OmegaConf.create({"ckpt_path": str(broken), "inputs": [str(wav)], "output": str(tmp_path / "o.csv"),
                            "device": "cpu", "batch_size": 2, "progress": False, "egemaps_workers": 1,
                            "window": {"window_s": 4.0, "hop_s": 2.0}})
    with pytest.raises(ConfigError, match="broken.ckpt: its weights do not fit"):
        run(cfg)
    assert len(pools) == 1 and pools[0]._closed
    assert all(p.poll() is not None for p in pools[0].procs)
    assert not any(t.name == "wav2emo-window-reader" and t.is_alive() for t in threading.enumerate())


def test_user_errors_before_any_model_is_loaded(trained, tmp_path):
    from omegaconf import OmegaConf

    from wav2emo.errors import ConfigError, MissingFileError
    from wav2emo.predict import run

    wav = _write(tmp_path / "a.wav", _tone(16000, 1.0), 16000)
    base = {"ckpt_path": str(trained["run"]), "inputs": [str(wav)], "output": str(tmp_path / "o.csv"),
            "device": "cpu", "batch_size": None, "progress": False, "window": {"window_s": 4.0, "hop_s": 2.0}}
    cases = [
        ({"inputs": [str(tmp_path / "missing.wav")]}, MissingFileError, "missing.wav"),
        ({"inputs": []}, ConfigError, "inputs="),
        ({"window": {"window_s": 4.0, "hop_s": 5.0}}, ConfigError, "hop_s=5.0"),
        ({"window": {"window_s": 0.01, "hop_s": 0.01}}, ConfigError, "window_s=0.01"),  # shorter than eGeMAPS needs
        ({"window": {"window_s": 4.0, "hop_s": 2.0, "bogus": 1}}, ConfigError, "window.bogus"),
        ({"batch_size": 0}, ConfigError, "batch_size=0"),
        ({"device": "tpu"}, ConfigError, "device=tpu"),
        ({"ckpt_path": str(tmp_path)}, MissingFileError, "fold_result.json"),
    ]
    for change, error, text in cases:
        with pytest.raises(error, match=text):
            run(OmegaConf.create({**base, **change}))


def test_torch_threads_auto_halves_the_cores_only_beside_egemaps_workers_on_the_cpu(monkeypatch):
    from wav2emo import predict
    from wav2emo.errors import ConfigError
    from wav2emo.predict import _torch_threads

    monkeypatch.setattr(predict, "usable_cores", lambda: 2)
    assert _torch_threads("auto", "cpu", 2) == 1
    assert _torch_threads("auto", "cpu", 0) is None  # eGeMAPS in this process, or no eGeMAPS: torch's default
    assert _torch_threads("auto", "cuda:0", 2) is None
    monkeypatch.setattr(predict, "usable_cores", lambda: 16)
    assert _torch_threads(None, "cpu", 16) == 8
    assert _torch_threads(3, "cpu", 16) == 3
    for bad in (0, -1, True, "two"):
        with pytest.raises(ConfigError, match="torch_threads="):
            _torch_threads(bad, "cpu", 2)


def test_egemaps_nice_takes_a_nice_value_and_refuses_anything_else():
    from wav2emo.errors import ConfigError
    from wav2emo.predict import _egemaps_nice

    assert [_egemaps_nice(v) for v in (0, 10, 19)] == [0, 10, 19]
    for bad in (-1, 20, True, "high", 2.5):
        with pytest.raises(ConfigError, match="egemaps_nice="):
            _egemaps_nice(bad)


def test_torch_threads_change_no_prediction_and_are_restored_after_the_run(trained, tmp_path):
    """The eGeMAPS model with its workers (auto): one network thread or torch's default give the same
    probabilities within float tolerance, and run() leaves the process's thread count as it found it."""
    import torch
    from omegaconf import OmegaConf

    from wav2emo.predict import run

    wav = _write(tmp_path / "a.wav", _tone(16000, 9.0), 16000)
    before = torch.get_num_threads()
    frames = {}
    for threads in (1, "auto", before + 1):
        out = tmp_path / f"out_{threads}.csv"
        cfg = OmegaConf.create({"ckpt_path": str(trained["run"] / "fold_1"), "inputs": [str(wav)], "output": str(out),
                                "device": "cpu", "batch_size": 2, "progress": False, "egemaps_workers": 1,
                                "torch_threads": threads, "window": {"window_s": 4.0, "hop_s": 2.0, "vad": False}})
        assert run(cfg) == 0
        assert torch.get_num_threads() == before
        frames[threads] = pd.read_csv(out, keep_default_na=False)
    probs = [f[_classes(f)].to_numpy(dtype=float) for f in frames.values()]
    assert len(probs[0]) == 5  # 4 windows (the last ends at the end) and the file's mean
    for p in probs[1:]:
        np.testing.assert_allclose(p, probs[0], rtol=0, atol=1e-6)
