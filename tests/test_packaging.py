"""The Hydra configs travel inside the package, so an installed wav2emo (not a checkout) finds them."""

from __future__ import annotations

import ast
import fnmatch
import importlib.util
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "wav2emo"


def _config_paths() -> list[tuple[Path, str]]:
    """(module, config_path) of every ``@hydra.main`` entry point in the package."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "main":
                for kw in node.keywords:
                    if kw.arg == "config_path" and isinstance(kw.value, ast.Constant):
                        found.append((path, kw.value.value))
    return found


def test_every_entry_point_reads_its_configs_from_inside_the_package():
    paths = _config_paths()
    assert len(paths) >= 8  # train, eval, extract, predict, corpus, eval_hf, baselines, export
    for module, config_path in paths:
        target = Path(os.path.normpath(module.parent / config_path))  # lexically: the checkout's conf/ is a link
        assert target == PACKAGE / "conf", f"{module}: config_path={config_path!r} -> {target}, outside the package"
        assert (target / "train.yaml").is_file()


def test_the_wheel_declares_every_config_file():
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["wav2emo"]
    files = [p.relative_to(PACKAGE).as_posix() for p in (PACKAGE / "conf").rglob("*") if p.is_file()]
    assert files
    missing = [f for f in files if not any(fnmatch.fnmatch(f, pat) or fnmatch.fnmatch(f, pat.replace("**/", ""))
                                           for pat in patterns)]
    assert not missing, f"files under wav2emo/conf that the wheel would leave out: {missing}"


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("setuptools") is None, reason="needs setuptools to build a wheel")
def test_an_installed_wheel_runs_the_demo_outside_the_checkout(tmp_path):
    src = tmp_path / "src"  # setuptools builds in the source tree (build/): never in the checkout itself
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for name in ("wav2emo", "hydra_plugins"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(src),
                    "-w", str(tmp_path / "wheel")], check=True, timeout=600)
    wheel = next((tmp_path / "wheel").glob("wav2emo-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "wav2emo/conf/train.yaml" in names and "wav2emo/conf/data/ravdess.yaml" in names
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(tmp_path / "site"),
                    str(wheel)], check=True, timeout=600)
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled",
           "WAV2EMO_DATA_DIR": str(tmp_path / "data"), "WAV2EMO_CACHE_DIR": str(tmp_path / "cache"),
           "WAV2EMO_LOG_DIR": str(tmp_path / "out")}
    where = subprocess.run([sys.executable, "-c", "import wav2emo; print(wav2emo.__file__)"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, check=True)
    assert where.stdout.strip().startswith(str(tmp_path / "site"))
    done = subprocess.run([sys.executable, "-m", "wav2emo.train", "experiment=demo", "fold=0", "trainer.max_epochs=1",
                           "data.corpus.clips_per_actor=4"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "test UA" in done.stdout
