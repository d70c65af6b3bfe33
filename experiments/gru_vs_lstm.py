"""GRU vs LSTM cells on the echo (memory) task.

What it shows: the two gated cells on a task that needs memory (recall the
3rd of 5 random one-hot symbols; 200 training, 100 validation sequences) with
the same width, optimizer and budget: 25 units + softmax, Adam lr 1e-2,
cross-entropy with accuracy, batch 20, shuffled, 100 epochs. The GRU follows
Keras 3 (`reset_after=True`, two bias vectors) and has about 3/4 of the LSTM's
recurrent parameters. The cell is static: two groups, two compiles.

Command:

  python -m jaxlstm.sweep --experiment gru_vs_lstm --repeats 30

Expected result (measured on a 2-core CPU, jax 0.10.2, seed 0, 30 repeats;
about 30 s in all): both cells fit the training set (accuracy 1.0) and
overfit it (val_loss minimum around epoch 60); their means are the same
but the GRU spreads about twice as wide, with both the best and the worst
seeds:

  cell   final val_loss mean (std)   min     max    final val_accuracy mean (std)
  lstm   1.03 (0.27)                 0.50    1.53   0.743 (0.050)
  gru    1.02 (0.52)                 0.11    1.81   0.756 (0.097)

One run of each could have "shown" either cell far ahead.

Exact values move whenever config ids do (see cells.py); the pattern should not.
"""
from . import _bases
from jaxlstm.config import Config


def get_config() -> Config:
  """The echo base: 25 units + softmax, Adam lr 1e-2, batch 20, 100 epochs."""
  return _bases.echo()


def get_grid() -> dict[str, list]:
  """LSTM and GRU cells."""
  return {"model.cell": ["lstm", "gru"]}
