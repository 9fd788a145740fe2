"""Composing the real Hydra configs inside tests, with every path pointed into a temporary folder."""

from __future__ import annotations

import os
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from wav2emo.precision import register_precision_resolver

register_precision_resolver()  # the real configs' ${wav2emo_precision:...}

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"

# A small, fast set-up shared by the training tests: 24 synthetic actors x 8 clips, tiny backbone.
SMALL = [
    "data=synthetic",
    "data.corpus.clips_per_actor=8",
    "features=tiny",
    "trainer=cpu",
    "trainer.enable_progress_bar=false",
    "loader.num_workers=0",
    "loader.batch_size=16",
]


def compose_cfg(overrides: list[str], tmp: Path, data_dir: Path, cache_dir: Path, config_name: str = "train") -> DictConfig:
    """The config a command line with these overrides would run, with a Hydra context set."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.data_dir = str(data_dir)
        cfg.paths.cache_dir = str(cache_dir)
        cfg.paths.log_dir = str(tmp)
        cfg.paths.output_dir = str(tmp)
        cfg.hydra.runtime.output_dir = str(tmp)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    return cfg


def complete_corpus_of_links(tmp_path: Path, clip: Path) -> Path:
    """24 x 60 correctly named RAVDESS files that are hard links to one clip: a complete corpus, cheaply."""
    from wav2emo.data.ravdess import expected_combinations, ravdess_stem

    root = tmp_path / "complete"
    for actor in range(1, 25):
        folder = root / f"Actor_{actor:02d}"
        folder.mkdir(parents=True)
        for combo in expected_combinations():
            os.link(clip, folder / f"{ravdess_stem(*combo, actor)}.flac")
    return root
