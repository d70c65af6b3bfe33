"""One-hot vs integer encoding of the inputs of the echo (memory) task.

What it shows: how the input encoding changes what an LSTM can learn. The
echo task (5 random symbols out of 10, target = the 3rd symbol, 200 training
and 100 validation sequences) is given either one-hot (10 input features) or
as one feature holding the symbol's code scaled to [0, 1] (`data.encoding =
"integer"`: 0, 1/9, ..., 1). The target stays one-hot in both. LSTM(25) +
softmax, Adam lr 1e-2, cross-entropy with accuracy, batch 20, shuffled,
100 epochs. The number of features is static: two groups, two compiles.

Command:

  python -m jaxlstm.sweep --experiment encoding --repeats 30

Expected result (measured on a 2-core CPU, jax 0.10.2, seed 0, 30 repeats;
about 35 s in all): on this small training set the integer codes win
clearly, against the usual advice. Both encodings fit the training set
(accuracy 1.0), but the one-hot model has ten times the input weights and
memorises the 200 sequences through every position (training loss 0.0015,
its val_loss minimum comes around epoch 60 and then rises), while the one-
feature model generalises:

  encoding   final val_loss mean (std)   final val_accuracy mean (std)
  onehot     1.03 (0.27)                 0.743 (0.050)
  integer    0.235 (0.092)               0.947 (0.026)

With more training data (`--set data.options.n_train=2000`; not measured
here) the one-hot model should overfit less; the point is that the best
encoding can depend on how much data there is.

Exact values move whenever config ids do (see cells.py); the pattern should not.
"""
from . import _bases
from jaxlstm.config import Config


def get_config() -> Config:
  """The echo base: LSTM(25) + softmax, Adam lr 1e-2, batch 20, 100 epochs."""
  return _bases.echo()


def get_grid() -> dict[str, list]:
  """One-hot (10 features) and integer codes scaled to [0, 1] (one feature)."""
  return {"data.encoding": ["onehot", "integer"]}
