"""Batch size 1, 2, 3 or 5 (full batch) on the five-point linear problem.

What it shows: how the batch size changes what 500 epochs buy. The five
training samples (X = 0.0 ... 0.4, y = X + 0.1; validation X = 0.5 ... 0.9) are
shuffled each epoch and cut into batches of 1, 2, 3 or 5, so an epoch is 5, 3,
2 or 1 optimizer steps. Batch 3 does not divide 5: each epoch ends with a
partial batch of 2, which is kept and weighted by its size (pad + mask, as
Keras; never dropped). LSTM(10) + Dense(1), Adam lr 1e-3, MSE, 500 epochs.
Batch size is static: four groups, four compiles.

Command:

  python -m jaxlstm.sweep --experiment batch_size --repeats 30

Expected result (measured on a 2-core CPU, jax 0.10.2, seed 0, 30 repeats;
about 40 s in all): every minibatch size ends far below full batch, but the
order among them is not "smaller is better". Batches of 1 and 2 take 5 and 3
steps per epoch, reach their validation minimum early (around epochs 260 and
355) and then overfit; batch 3 reaches it around epoch 465 and ends lowest:

  batch   final val_loss mean (std)   best val_loss mean   best epoch
  1       0.0014  (0.0011)            2.4e-05              ~260
  2       0.0014  (0.0008)            2.6e-05              ~355
  3       0.00051 (0.00061)           1.6e-04              ~465
  5       0.021   (0.016)             0.021                499 (still improving)

So compare per optimizer step, and look at best_val_loss and best_epoch in
scores.csv, before calling a batch size better from final scores alone.

Exact values move whenever config ids do (see cells.py); the pattern should not.
"""
from . import _bases
from jaxlstm.config import Config


def get_config() -> Config:
  """The five-point base with per-epoch shuffling (Keras' default)."""
  return _bases.five_point().override({"train.shuffle": True})


def get_grid() -> dict[str, list]:
  """Batches of 1, 2, 3 (a partial last batch) and 5 (the whole training set)."""
  return {"train.batch_size": [1, 2, 3, 5]}
