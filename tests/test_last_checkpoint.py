"""last.ckpt off the hot path: written every n epochs and after the final epoch (also an early-stopped one)."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from wav2emo.training.callbacks import LastCheckpoint


class _Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self.lin(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class _Recording(LastCheckpoint):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.saved_epochs: list[int] = []

    def _save_checkpoint(self, trainer, filepath) -> None:
        self.saved_epochs.append(trainer.current_epoch)
        super()._save_checkpoint(trainer, filepath)


class _StopAfter(L.Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            trainer.should_stop = True


def _fit(tmp_path, every: int, max_epochs: int, *extra: L.Callback) -> _Recording:
    data = DataLoader(TensorDataset(torch.randn(8, 2), torch.randn(8, 1)), batch_size=4)
    cb = _Recording(tmp_path / "checkpoints", every_n_epochs=every)
    trainer = L.Trainer(max_epochs=max_epochs, callbacks=[*extra, cb], logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=True, default_root_dir=tmp_path)
    trainer.fit(_Tiny(), data)
    return cb


@pytest.mark.parametrize(("every", "max_epochs", "expected"), [
    (1, 3, [0, 1, 2]),
    (3, 7, [2, 5, 6]),          # every third epoch, and the final one
    (0, 4, [3]),                # the final epoch only
    (10, 4, [3]),
])
def test_last_checkpoint_every_n_epochs_and_the_final_one(tmp_path, every, max_epochs, expected):
    cb = _fit(tmp_path, every, max_epochs)
    assert cb.saved_epochs == expected
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["epoch"] == max_epochs - 1


def test_last_checkpoint_is_written_when_training_stops_early(tmp_path):
    cb = _fit(tmp_path, 10, 20, _StopAfter(4))
    assert cb.saved_epochs == [4]
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["epoch"] == 4


def test_negative_interval_is_refused(tmp_path):
    with pytest.raises(ValueError, match="every_n_epochs must be >= 0"):
        LastCheckpoint(tmp_path, every_n_epochs=-1)
