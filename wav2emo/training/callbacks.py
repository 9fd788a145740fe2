"""Small Lightning callbacks of wav2emo's own."""

from __future__ import annotations

import time

import lightning as L


class EpochTimer(L.Callback):
    """Wall-clock seconds of every training epoch (validation included), logged as ``time/epoch_seconds``
    and kept in ``self.epoch_seconds`` so each fold's result records its speed."""

    def __init__(self) -> None:
        self.epoch_seconds: list[float] = []
        self._start: float | None = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._close(trainer, pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # Without a dev set there is no validation epoch; with one, it ran before this hook.
        if trainer.limit_val_batches == 0 or not trainer.val_dataloaders:
            self._close(trainer, pl_module)

    def _close(self, trainer, pl_module) -> None:
        if self._start is None:
            return
        seconds = time.perf_counter() - self._start
        self._start = None
        self.epoch_seconds.append(seconds)
        pl_module.log("time/epoch_seconds", seconds, on_step=False, on_epoch=True)
