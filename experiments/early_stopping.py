"""Early stopping with patience 5, 50 or 500 (restoring the best weights), up to 2000 epochs.

What it shows: Keras 3 `EarlyStopping(monitor="val_loss", patience=P,
restore_best_weights=True)` on the five-point linear problem trained with
batch size 1, shuffled (five noisy steps per epoch, so val_loss wobbles from
epoch to epoch), LSTM(10) + Dense(1), Adam lr 1e-3, MSE, at most 2000 epochs.
Every seed stops on its own: its weights freeze, its later history is NaN,
scores.csv records `stopped_epoch`, and its saved weights are those of its
best epoch. Patience is static: three groups, six compiles (a start and a
resume program each: a group runs in epoch chunks and ends as soon as all
its seeds have stopped).

Command:

  python -m jaxlstm.sweep --experiment early_stopping --repeats 30

Compare best_val_loss (the score of the restored weights) and stopped_epoch
in scores.csv: the summary's final val_loss is the value at the stopping
epoch, before the best weights are restored, so it grows with patience.

Expected result (measured on a 2-core CPU, jax 0.10.2, seed 0, 30 repeats;
about 35 s in all): on this problem the validation minimum comes around epoch
250 for every seed and no later epoch beats it, so all three patience values
restore equally good weights (mean best_val_loss 3.3e-05, 2.5e-05 and
3.5e-05, overlapping ranges); a longer patience only trains longer (mean
stopping epoch 255, 311 and 755 of at most 2000). Patience buys insurance
against a later, lower minimum, and on a curve without one it only costs
epochs; the best epoch itself varies by about +-50 epochs over seeds.

Exact values move whenever config ids do (see cells.py); the pattern should not.
"""
from . import _bases
from jaxlstm.config import Config, EarlyStoppingConfig


def get_config() -> Config:
  """Five-point base, batch 1 shuffled, 2000 epochs, early stopping on val_loss restoring the best."""
  return _bases.five_point().override({
      "train.epochs": 2000, "train.batch_size": 1, "train.shuffle": True,
      "train.early_stopping": EarlyStoppingConfig(monitor="val_loss", patience=50,
                                                  restore_best_weights=True),
  })


def get_grid() -> dict[str, list]:
  """Patience 5, 50 and 500 epochs."""
  return {"train.early_stopping.patience": [5, 50, 500]}
