"""Stacked LSTM depth: 1, 2 or 3 layers on a small damped-sine forecast.

What it shows: whether stacking recurrent layers pays on a sequence problem,
as a distribution of final validation MAE over repeated seeds. Data: damped sine
waves (random period 10-20 and decay 0.01-0.1), 20 input steps, predict the next
5; 100 training and 100 validation waves. Model: `layers` LSTM(20) layers (all
but the last return sequences, as Keras' stacked LSTM) + Dense(5); Adam lr 1e-2,
MAE, batch 20, shuffled, 100 epochs. Depth is static: three groups, three
compiles; a 3-layer step costs about three 1-layer steps.

Command:

  python -m jaxlstm.sweep --experiment layers --repeats 30

Expected result (measured on a 2-core CPU, jax 0.10.2, seed 0, 30 repeats;
about 1.5 min in all): depth buys nothing measurable here. The final
validation MAE is the same for 1, 2 and 3 layers within a fraction of its
spread over seeds; the best-epoch MAE creeps down with depth, by less than
one standard deviation; a 3-layer epoch costs about 3.5 times a 1-layer one
(training 10 s, 21 s and 36 s):

  layers   final val MAE mean (std)   min      max      best val MAE mean (std)
  1        0.0132 (0.0040)            0.0077   0.0246   0.0099 (0.0016)
  2        0.0134 (0.0035)            0.0075   0.0222   0.0089 (0.0014)
  3        0.0129 (0.0037)            0.0081   0.0239   0.0087 (0.0011)

The final scores spread more than the best ones: with Adam at lr 1e-2 the
last epochs are noisy, which hides a small effect of depth. A bigger
problem (`--set data.options.n_train=1000`) is where stacking may pay.

Exact values move whenever config ids do (see cells.py); the pattern should not.
"""
from . import _bases
from jaxlstm.config import Config


def get_config() -> Config:
  """The damped-sine base: LSTM(20), Adam, MAE, batch 20, 100 epochs."""
  return _bases.damped_sine()


def get_grid() -> dict[str, list]:
  """1, 2 and 3 stacked LSTM layers."""
  return {"model.layers": [1, 2, 3]}
