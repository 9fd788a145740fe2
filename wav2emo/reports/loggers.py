"""What a fold hands its loggers at its end: the test results as W&B tables (:func:`log_test_to_wandb`), then
every logger closed (:func:`close_loggers`; one W&B run per fold). The loggers themselves are built from the
plan by :func:`wav2emo.runs.build.build_loggers`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


def log_test_to_wandb(loggers: list, result: Mapping[str, Any]) -> None:
    """A tested fold's confusion matrix and per-class table, and its test metrics as the run's summary, into each
    W&B logger among ``loggers`` (the others get nothing here)."""
    from lightning.pytorch.loggers import WandbLogger

    for lg in loggers:
        if isinstance(lg, WandbLogger) and "test_confusion" in result:
            import pandas as pd
            import wandb

            names = result["class_names"]
            cm = np.asarray(result["test_confusion"])
            lg.experiment.log({
                "test/confusion_matrix": wandb.Table(
                    columns=["true", *names], data=[[names[i], *map(int, row)] for i, row in enumerate(cm)]
                ),
                "test/per_class": wandb.Table(dataframe=pd.DataFrame(result["test_per_class"])),
            })
            lg.experiment.summary.update({f"test/{k}": v for k, v in result["test"].items()})


def close_loggers(loggers: list, finish_wandb: bool) -> None:
    """Finalise every logger of a fold; ``finish_wandb`` (rank zero of several processes, or the only one): also
    finish the W&B run, so that the next fold starts its own."""
    from lightning.pytorch.loggers import WandbLogger

    for lg in loggers:
        lg.finalize("success")
        if isinstance(lg, WandbLogger) and finish_wandb:
            import wandb

            wandb.finish()  # one W&B run per fold: close it before the next fold starts
            # wandb 0.31's finish() can return before its service has written the run's last records
            # (an offline run file was seen holding only its header); teardown waits for the flush.
            wandb.teardown()
