"""The per-epoch callbacks of the recipe's phases (hemalite.train.phases): the rate, the
backup a killed run resumes from, the weights' moving average and early stopping, in the
order they must run."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hemalite.train.fit import TrainConfig


def epoch_callbacks(cfg: TrainConfig, backup_dir: Path | None, ema: bool = False):
    """The per-epoch callbacks, in the order they must run at an epoch's end: the rate cut,
    then the backup a killed run resumes from (so it holds the cut rate and, with `ema`, the
    raw weights with their average beside them), then the swap of the average into the
    model, then early stopping, which keeps the best epoch's weights (the average's) and
    restores them after Keras's own end-of-fit step has written the raw ones back."""
    import keras

    cbs = []
    if cfg.lr_schedule == "plateau":  # a cosine schedule sets the rate itself
        cbs.append(keras.callbacks.ReduceLROnPlateau(
            "val_loss", factor=0.3, patience=max(1, cfg.patience // 2), min_lr=1e-6))
    else:
        cbs.append(log_rate())
    if backup_dir is not None:  # resume a killed run where it stopped
        cbs.append(keras.callbacks.BackupAndRestore(str(backup_dir)))
    if ema:  # validation, the best epoch and the saved model: the average
        cbs.append(keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
    cbs.append(keras.callbacks.EarlyStopping("val_loss", patience=cfg.patience,
                                             restore_best_weights=True))
    return cbs


def log_rate():
    """A callback: the rate at each epoch's end into the history, as ReduceLROnPlateau logs it."""
    import keras

    class LogRate(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            rate = keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
            logs["learning_rate"] = float(rate)
    return LogRate()
