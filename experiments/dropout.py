"""Input dropout 0.0, 0.2 or 0.4 on a small echo (memory) task that overfits.

What it shows: whether dropout on the LSTM's inputs (Keras' `dropout`: one
mask per sequence, reused at every step) holds back overfitting. Data: 5
random symbols out of 10, one-hot; the target is the 3rd symbol; 200 training
and 100 validation sequences, few enough that the network memorises the
training set. Model: LSTM(25) + softmax, Adam lr 1e-2, cross-entropy with
accuracy, batch 20, shuffled, 100 epochs. The rate is traced, but whether
dropout is used at all is static: 0.0 is one group and 0.2 / 0.4 share a
second (two compiles).

Command:

  python -m jaxlstm.sweep --experiment dropout --repeats 30

Expected result (measured on a 2-core CPU, jax 0.10.2, seed 0, 30 repeats;
about 50 s in all): without dropout the training loss falls to 0.0015 while
val_loss bottoms out around epoch 60 and rises (an overfit curve;
plots/curves.png). Dropout keeps the training loss high (0.27 at 0.2, 0.65
at 0.4), lowers the validation loss and narrows the spread over seeds, and
raises the best validation accuracy; the final accuracy does not improve,
as the dropout runs overfit too by epoch 100:

  dropout   final val_loss mean (std)   best val_loss   final / best val_accuracy
  0.0       1.03 (0.27)                 0.98            0.743 / 0.745
  0.2       0.91 (0.20)                 0.72            0.737 / 0.802
  0.4       0.99 (0.12)                 0.82            0.713 / 0.787

Pair dropout with early stopping (or fewer epochs) to keep its gain.

Exact values move whenever config ids do (see cells.py); the pattern should not.
"""
from . import _bases
from jaxlstm.config import Config


def get_config() -> Config:
  """The echo base: LSTM(25) + softmax, Adam lr 1e-2, batch 20, 100 epochs."""
  return _bases.echo()


def get_grid() -> dict[str, list]:
  """Input dropout rates 0.0, 0.2 and 0.4."""
  return {"model.dropout": [0.0, 0.2, 0.4]}
