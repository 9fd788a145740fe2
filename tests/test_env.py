"""The installed environment: a misfit torch/torchaudio pair is one clear line; `python -m wav2emo.env` reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from wav2emo import compat

REPO = Path(__file__).resolve().parents[1]


def test_torch_pair_fits_only_the_same_release():
    assert compat.torch_pair_problem("2.11.0+cu130", "2.11.0") is None
    assert compat.torch_pair_problem("2.11.0", "2.11.0+cpu") is None
    problem = compat.torch_pair_problem("2.11.0+cu130", "2.11.1")
    assert problem is not None
    assert "torchaudio 2.11.1" in problem and "torch 2.11.0+cu130" in problem
    assert "pip install 'torchaudio==2.11.0'" in problem and "\n" not in problem
    assert compat.torch_pair_problem(None, "2.11.1") is None  # nothing to pair with: another check reports it


def test_requirement_problems_name_package_version_and_fix():
    problems = compat.requirement_problems(["transformers>=999", "no-such-package-wav2emo>=1", "numpy>=1"])
    assert len(problems) == 2
    assert problems[0].startswith("transformers ") and "transformers>=999" in problems[0]
    assert "no-such-package-wav2emo is not installed" in problems[1]
    assert compat.requirement_problems(['numpy>=999 ; python_version < "3.0"']) == []  # marker not for us


def test_this_environment_fits():
    assert compat.environment_problems() == []
    assert compat.import_problem("torchaudio") is None


def test_require_compatible_exits_with_one_line_per_problem(monkeypatch, capsys):
    versions = {"torch": "2.11.0+cu130", "torchaudio": "2.11.1"}
    monkeypatch.setattr(compat, "installed_version", lambda name: versions.get(name, "1.0"))
    monkeypatch.setattr(compat, "_requirements", lambda dist="wav2emo": [])
    with pytest.raises(SystemExit) as exc:
        compat.require_compatible()
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("wav2emo: torchaudio 2.11.1 does not fit torch 2.11.0+cu130")


def _fake_torchaudio_dist(folder: Path, version: str) -> Path:
    """A dist-info that makes package metadata report another torchaudio release, as pip would leave it."""
    info = folder / f"torchaudio-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: torchaudio\nVersion: {version}\n")
    return folder


def test_entry_point_says_what_to_run_instead_of_a_traceback(tmp_path):
    fake = _fake_torchaudio_dist(tmp_path / "site", "2.11.1")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake), str(REPO)])}
    for module in ("wav2emo.train", "wav2emo.extract", "wav2emo.eval"):
        proc = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, env=env,
                              cwd=REPO, timeout=120)
        assert proc.returncode == 2, (module, proc.stdout[-500:], proc.stderr[-2000:])
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert "torchaudio 2.11.1 does not fit torch" in lines[0] and "Traceback" not in proc.stderr


def test_env_command_reports_versions_folders_and_backbones(tmp_path):
    from wav2emo.backbones import build_tiny_wav2vec2

    tiny = build_tiny_wav2vec2(tmp_path / "tiny")
    env = {**os.environ, "WAV2EMO_CACHE_DIR": str(tmp_path), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "wav2emo.env", "--json", "--backbone", str(tiny), "--backbone", "nobody/no-such-model"],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = json.loads(proc.stdout)
    for name in ("torch", "torchaudio", "transformers", "lightning", "hydra-core", "opensmile"):
        assert info["packages"][name], name
    assert info["problems"] == []
    assert "cuda_available" in info["torch"] and isinstance(info["torch"]["gpus"], list)
    assert info["folders"]["cache_dir"] == {"path": str(tmp_path), "exists": True,
                                            "size_mb": info["folders"]["cache_dir"]["size_mb"]}
    assert info["folders"]["cache_dir"]["size_mb"] > 0  # the tiny backbone's weights are in it
    local, hub = info["backbones"]
    assert local["available"] is True and local["kind"] == "folder"
    assert hub["available"] is False and "internet" in hub["how"]
    text = subprocess.run([sys.executable, "-m", "wav2emo.env"], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=120)
    assert text.returncode == 0 and "Problems:\n  none found" in text.stdout


def test_bytecode_check_tells_when_every_process_compiles_the_stack(tmp_path):
    """An empty bytecode folder with writing off (a container image built without __pycache__ and run with
    PYTHONDONTWRITEBYTECODE) is reported with the command that fixes it; writing on is not a problem."""
    base = dict(os.environ, PYTHONPATH=str(REPO), PYTHONPYCACHEPREFIX=str(tmp_path / "pyc"))
    code = ("import json, wav2emo.env as e; c = e.bytecode_cache(); "
            "print(json.dumps({'cache': c, 'hint': e.bytecode_hint(c)}))")
    off = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120,
                         env=dict(base, PYTHONDONTWRITEBYTECODE="1"))
    report = json.loads(off.stdout)
    assert report["cache"]["compiles_every_process"] is True
    assert "torch" in report["cache"]["not_compiled"]
    assert "compileall" in report["hint"] and report["cache"]["site_packages"] in report["hint"]
    base.pop("PYTHONDONTWRITEBYTECODE", None)
    on = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120, env=base)
    report = json.loads(on.stdout)
    assert report["cache"]["writes_bytecode"] is True and report["cache"]["compiles_every_process"] is False
    assert report["hint"] is None
