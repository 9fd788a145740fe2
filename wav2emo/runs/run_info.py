"""What every run records about itself: the resolved config and the code version that produced it."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from wav2emo.plain_config import without_hydra


def git_info(cwd: str | Path | None = None) -> dict[str, Any]:
    """Commit and dirty state of the wav2emo checkout (``None`` fields outside a git checkout)."""
    cwd = Path(cwd) if cwd else Path(__file__).resolve().parents[2]

    def run(*args: str) -> str | None:
        try:
            return subprocess.run(
                ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
        except Exception:
            return None

    status = run("status", "--porcelain")
    return {"commit": run("rev-parse", "HEAD"), "dirty": bool(status) if status is not None else None}


def environment_info() -> dict[str, Any]:
    """The software and hardware a result was produced with: published numbers must say what ran them."""
    import platform

    import torch

    from wav2emo.env import package_versions

    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": package_versions(),
        "torch_build": f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU only",
        "gpus": gpus,
        "cpu": platform.processor() or platform.machine(),
    }


ENVIRONMENT_FILE = "environment.json"


def save_run_info(cfg: DictConfig | Mapping[str, Any], out_dir: str | Path) -> None:
    """config.yaml (resolved), git.json (commit, dirty) and environment.json (versions, GPUs) of a fold.
    ``cfg``: the run's config, or its resolved plain values (:attr:`~wav2emo.runs.plan.FoldPlan.config`)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = without_hydra(cfg) if isinstance(cfg, DictConfig) else OmegaConf.create(dict(cfg))
    OmegaConf.save(config, out_dir / "config.yaml", resolve=True)
    (out_dir / "git.json").write_text(json.dumps(git_info(), indent=2) + "\n")
    (out_dir / ENVIRONMENT_FILE).write_text(json.dumps(environment_info(), indent=2) + "\n")
