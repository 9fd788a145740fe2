"""Safe loading: checkpoints load with weights_only=True, crafted pickles are refused, bad files are named."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from wav2emo.training.checkpoints import CheckpointError, load_checkpoint

REPO = Path(__file__).resolve().parents[1]


class _Payload:
    """Unpickling this runs os.mkdir(marker): the shape of a malicious checkpoint's code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def crafted_checkpoint(path: Path, marker: Path) -> Path:
    torch.save({"state_dict": {"w": torch.zeros(2)}, "wav2emo": {"fold": 0, "x": _Payload(marker)}}, path)
    return path


def test_plain_checkpoint_loads_with_weights_only(tmp_path):
    ckpt = {"state_dict": {"w": torch.arange(3.0)}, "epoch": 2, "wav2emo": {"fold": 1, "config": {"a": [1, "b"]}}}
    torch.save(ckpt, tmp_path / "ok.ckpt")
    got = load_checkpoint(tmp_path / "ok.ckpt")
    assert got["wav2emo"] == ckpt["wav2emo"] and torch.equal(got["state_dict"]["w"], ckpt["state_dict"]["w"])


def test_crafted_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "payload-ran"
    path = crafted_checkpoint(tmp_path / "evil.ckpt", marker)
    with pytest.raises(CheckpointError, match=r"evil\.ckpt: refused to load.*outside the allow-list") as err:
        load_checkpoint(path)
    assert "mkdir" in str(err.value) and "\n" not in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize("content,expected", [
    (b"", "the file is empty"),
    (os.urandom(3000), "not a zip archive"),
    (b"PK\x03\x04" + b"\0" * 100, "not a zip archive"),
])
def test_empty_and_garbage_files_are_named(tmp_path, content, expected):
    path = tmp_path / "model.ckpt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=re.escape(str(path)) + ".*" + expected):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(tmp_path / "missing.ckpt")


def test_a_folder_is_refused_naming_the_checkpoints_it_holds(tmp_path):
    ckpts = tmp_path / "run" / "fold_0" / "checkpoints"
    ckpts.mkdir(parents=True)
    (ckpts / "last.ckpt").write_bytes(b"x")
    (ckpts / "epoch003-val_ua0.5000.ckpt").write_bytes(b"x")
    with pytest.raises(CheckpointError, match=r"run: a folder, not a checkpoint file; .*it holds 1, e\.g\. .*"
                                              r"fold_0/checkpoints/epoch003-val_ua0\.5000\.ckpt"):
        load_checkpoint(tmp_path / "run")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="a folder, not a checkpoint file; .*it holds none"):
        load_checkpoint(tmp_path / "empty")


def test_truncated_checkpoint_is_named(tmp_path):
    path = tmp_path / "t.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(10000)}}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=re.escape(str(path))):
        load_checkpoint(path)


def test_eval_cli_gives_one_line_error_naming_the_file(tmp_path):
    """`python -m wav2emo.eval ckpt_path=<garbage>`: exit status 1 and one line naming the file, no traceback;
    a crafted checkpoint is refused the same way and its payload never runs."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    marker = tmp_path / "payload-ran"
    cases = {"garbage.ckpt": os.urandom(2000)}  # empty and truncated files: the load_checkpoint tests above
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    crafted_checkpoint(tmp_path / "evil.ckpt", marker)
    for name in [*cases, "evil.ckpt"]:
        proc = subprocess.run(
            [sys.executable, "-m", "wav2emo.eval", f"ckpt_path={tmp_path / name}", f"paths.log_dir={tmp_path / 'logs'}"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180,
        )
        assert proc.returncode == 2, proc.stderr
        lines = [line for line in proc.stderr.splitlines() if line.strip() and "Warning" not in line]
        assert lines[-1].startswith("wav2emo.eval: ") and str(tmp_path / name) in lines[-1], proc.stderr
        assert "Traceback" not in proc.stderr, proc.stderr
    assert not marker.exists()


def test_trust_remote_code_is_never_enabled():
    """transformers must never run a backbone repo's own Python: every from_pretrained says so explicitly."""
    sources = [p for p in (REPO / "wav2emo").rglob("*.py")]
    text = {p: p.read_text() for p in sources}
    assert not [p for p, t in text.items() if re.search(r"trust_remote_code\s*=\s*True", t)]
    calls = [(p, m.start()) for p, t in text.items() for m in re.finditer(r"\.from_pretrained\(", t)]
    assert calls, "expected the backbone loader to call from_pretrained"
    for p, start in calls:
        call = text[p][start : text[p].index(")\n", start)]
        assert "trust_remote_code=False" in call, f"{p}: from_pretrained without trust_remote_code=False"


def test_lightning_resume_loads_weights_only(tmp_path, monkeypatch):
    """trainer.fit(ckpt_path=...) (how `wav2emo.train ckpt_path=...` resumes) refuses a crafted checkpoint
    before running its payload: Lightning 2.6 passes weights_only=None and torch 2.11 treats that as True."""
    import lightning as L
    from lightning.pytorch.demos.boring_classes import BoringModel

    monkeypatch.delenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", raising=False)
    marker = tmp_path / "payload-ran"
    trainer = L.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        accelerator="cpu", default_root_dir=tmp_path)
    model = BoringModel()
    trainer.fit(model)
    good = tmp_path / "good.ckpt"
    trainer.save_checkpoint(good)
    assert "callbacks" in load_checkpoint(good)  # a real Lightning checkpoint (full state) passes the allow-list

    evil = torch.load(good, map_location="cpu", weights_only=True)
    evil["callbacks"] = {"x": _Payload(marker)}
    torch.save(evil, tmp_path / "evil.ckpt")
    resume = L.Trainer(max_epochs=2, limit_train_batches=2, limit_val_batches=1, logger=False,
                       enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                       accelerator="cpu", default_root_dir=tmp_path)
    with pytest.raises(Exception, match="Weights only load failed|weights_only"):
        resume.fit(BoringModel(), ckpt_path=tmp_path / "evil.ckpt")
    assert not marker.exists()
