"""``python -m wav2emo.export``: the command (the work is in :mod:`wav2emo.export.cli`)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from wav2emo.cli import user_errors
from wav2emo.compat import require_compatible

require_compatible()


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
def main(cfg: DictConfig) -> None:
    from wav2emo.export.cli import run

    with user_errors("wav2emo.export"):
        for report in run(cfg):
            print(report["output"])


if __name__ == "__main__":
    main()
