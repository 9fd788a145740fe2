"""Small Lightning callbacks of wav2emo's own: epoch timing and summary lines, and what an exact resume needs."""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from wav2emo.process_clock import process_age_seconds

log = logging.getLogger(__name__)

RNG_KEY = "wav2emo_rng_states"


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
        pl_module.log("time/epoch_seconds", seconds, on_step=False, on_epoch=True, sync_dist=True)


class EpochSummary(L.Callback):
    """One log line per epoch (epoch, train loss, dev UA, seconds) for runs without a progress bar.

    Runs before the module's own ``on_train_epoch_end`` (Lightning calls plain callbacks first), so it
    asks the module for the epoch's training loss rather than reading a logged value.  Under DDP only rank
    zero prints (the other ranks log warnings only), and its train loss is over its own shard of the epoch
    (the logged ``train/loss`` is over all of it).
    """

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self._start: float | None = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        seconds = time.perf_counter() - self._start if self._start is not None else float("nan")
        loss_fn = getattr(pl_module, "epoch_loss", None)
        train_loss = loss_fn("train") if callable(loss_fn) else None
        parts = [f"{self.prefix}epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"]
        parts.append(f"train loss {train_loss:.4f}" if train_loss is not None else "train loss -")
        val_ua = trainer.callback_metrics.get("val/ua")
        if val_ua is not None:
            parts.append(f"val UA {float(val_ua):.4f}")
        parts.append(f"{seconds:.1f} s")
        log.info(", ".join(parts))


class RngStateCheckpoint(L.Callback):
    """Stores the global RNG states (torch, numpy, Python) in every checkpoint and restores them on resume.

    Lightning restores weights, optimizer, scheduler and loop counters but not the random streams
    (dropout masks, worker seeds): without them a resumed run draws other numbers than the run it
    continues, and its metrics drift away from an uninterrupted run's.
    """

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        checkpoint[RNG_KEY] = rng_states()

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        states = checkpoint.get(RNG_KEY)
        if states is None:
            log.warning("the checkpoint holds no RNG states (older wav2emo): the resumed run will not repeat "
                        "an uninterrupted run's random draws exactly")
            return
        set_rng_states(states)


def rng_states() -> dict[str, Any]:
    """The global random states as tensors, lists and numbers only, so ``torch.load(weights_only=True)``
    (Lightning's default when it resumes) can read them back."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [str(kind), torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss),
                  float(gauss)],
        "python": [int(version), list(py_state), py_gauss],
    }


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if states.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, py_state, py_gauss = states["python"]
    random.setstate((version, tuple(py_state), py_gauss))


class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt`` written every ``every_n_epochs`` epochs and after the final one, whatever the dev metric did.

    Lightning 2.6's ``save_last=True`` only refreshes ``last.ckpt`` when a top-k checkpoint is saved,
    i.e. when the dev metric improves: ``last.ckpt`` then holds the best epoch, not the last one, and a
    run resumed from it repeats epochs (and ends at another epoch on another machine, where the dev
    metric peaks elsewhere).  This callback has no monitor; it is always a single file that it replaces.

    Writing it costs tens of milliseconds (optimizer state included), a tenth of a fast GPU epoch, so it is
    off the hot path by default: every ``every_n_epochs`` epochs (``1`` = every epoch, ``0`` = only the
    final one) and always after the last epoch, also when early stopping ends the fold.  An interrupted
    fold then continues from at most ``every_n_epochs - 1`` epochs back, and still ends exactly as the
    uninterrupted run (the resume restores the epoch-seeded order and random states).
    """

    def __init__(self, dirpath: str | Path, every_n_epochs: int = 1) -> None:
        if int(every_n_epochs) < 0:
            raise ValueError(f"last.ckpt every_n_epochs must be >= 0 (0 = after the final epoch only), "
                             f"got {every_n_epochs}")
        super().__init__(dirpath=str(dirpath), filename="last", monitor=None, save_top_k=1, save_last=False,
                         enable_version_counter=False, every_n_epochs=1)
        self.last_every_n_epochs = int(every_n_epochs)

    def _should_skip_saving_checkpoint(self, trainer) -> bool:
        if super()._should_skip_saving_checkpoint(trainer):
            return True
        done = trainer.current_epoch + 1
        final = bool(trainer.should_stop) or (trainer.max_epochs not in (None, -1) and done >= trainer.max_epochs)
        periodic = self.last_every_n_epochs > 0 and done % self.last_every_n_epochs == 0
        return not (final or periodic)


class RelocateCheckpointState(L.Callback):
    """Points the restored checkpoint-callback state at this run's checkpoint folder.

    A fold continued in a new run directory starts from a copy of the old fold's checkpoints; the state
    in the checkpoint still names the old folder, and Lightning would then forget the best dev score
    (and choose the best checkpoint among the new epochs only).  Rewriting the paths keeps the dev
    choice over all epochs and never touches the old run's files.
    """

    def __init__(self, new_dir: str | Path) -> None:
        self.new_dir = str(Path(new_dir))

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        for key, state in (checkpoint.get("callbacks") or {}).items():
            if "Checkpoint" not in key or not isinstance(state, dict) or not state.get("dirpath"):
                continue
            old = str(Path(state["dirpath"]))
            if old == self.new_dir:
                continue

            state["dirpath"] = self.new_dir
            for name in ("best_model_path", "kth_best_model_path", "last_model_path"):
                if name in state:
                    state[name] = self._move(state[name], old)
            if isinstance(state.get("best_k_models"), dict):
                state["best_k_models"] = {self._move(k, old): v for k, v in state["best_k_models"].items()}

    def _move(self, p: Any, old: str) -> Any:
        return self.new_dir + p[len(old):] if isinstance(p, str) and p.startswith(old) else p


class StartupTimer(L.Callback):
    """Logs once per process how long it took from the process start to the first training step.

    A fold whose features are cached should start training within seconds (no backbone load, no import of
    transformers' model code); this line makes a slow start visible (``benchmarks/cv_benchmark.py`` reads it).
    Resolution: ``/proc``'s clock ticks (10 ms).
    """

    reported = False  # once per process: the folds after the first in one process start warm

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if StartupTimer.reported:
            return
        StartupTimer.reported = True
        seconds = process_age_seconds()
        if seconds is not None and trainer.is_global_zero:
            log.info("first training step %.2f s after the process started", seconds)
