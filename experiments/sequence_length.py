"""Input sequence length 5, 10, 20 or 40 steps for a damped-sine forecast.

What it shows: how much history the LSTM needs. Each sample is a damped sine
(random period 10-20 steps, decay 0.01-0.1) from its start; the input is its
first `length` values (`data.options.length`) and the target the next 5.
LSTM(20) + Dense(5), Adam lr 1e-2, MAE, batch 20, shuffled, 100 epochs, 100
training and 100 validation waves. Sequence length is static: four groups,
four compiles, and a step costs in proportion to the length.

Command:

  python -m jaxlstm.sweep --experiment sequence_length --repeats 30

Expected result (measured on a 2-core CPU, jax 0.10.2, seed 0, 30 repeats;
about 1 min in all): a U shape. 5 steps (under half the shortest period)
cannot pin down a wave's period and decay and is worst; 10 and 20 steps are
much better; 40 steps is worse again than 20 at this budget (longer
sequences are slower to train through, and the targets lie later on a more
decayed wave, so the task also changes with the length):

  length   final val MAE mean (std)   best val MAE mean (std)
  5        0.0382 (0.0109)            0.0310 (0.0022)
  10       0.0182 (0.0051)            0.0135 (0.0022)
  20       0.0132 (0.0040)            0.0099 (0.0016)
  40       0.0204 (0.0043)            0.0174 (0.0025)

Exact values move whenever config ids do (see cells.py); the pattern should not.
"""
from . import _bases
from jaxlstm.config import Config


def get_config() -> Config:
  """The damped-sine base (20 input steps, 5 predicted)."""
  return _bases.damped_sine()


def get_grid() -> dict[str, list]:
  """Input lengths 5, 10, 20 and 40 steps."""
  return {"data.options.length": [5, 10, 20, 40]}
