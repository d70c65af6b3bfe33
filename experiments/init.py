"""Input-kernel initialisation: glorot_uniform, random_uniform, random_normal, he_normal.

What it shows: how much the initial weights of the input kernel matter on the
five-point linear problem (LSTM(10) + Dense(1), Adam lr 1e-3, MSE, full batch,
500 epochs; recurrent kernel orthogonal, bias zero with forget bias 1, as
Keras). Schemes as Keras defines them: glorot_uniform (Keras' LSTM default,
U(+-sqrt(6 / (fan_in + fan_out)))), random_uniform (U(-0.05, 0.05)),
random_normal (N(0, 0.05)), he_normal (truncated normal, std sqrt(2 / fan_in)).
The initialiser is static: four groups, four compiles.

Command:

  python -m jaxlstm.sweep --experiment init --repeats 30

Expected result (measured on a 2-core CPU, jax 0.10.2, seed 0, 30 repeats;
about 25 s in all): the scale of the initial input weights matters more than
their distribution. With one input feature the fan-in is 1, so he_normal
draws the largest weights (std 1.4) and glorot_uniform the next largest; the
two small schemes (+-0.05) end lowest and tightest, he_normal worst and
widest (its training loss is lowest: larger weights fit the five points
faster and extrapolate worse):

  kernel_init      mean     std      min      max
  glorot_uniform   0.0221   0.0162   0.0050   0.0757
  random_uniform   0.0129   0.0033   0.0077   0.0196
  random_normal    0.0141   0.0052   0.0054   0.0251
  he_normal        0.0685   0.0543   0.0029   0.230

Exact values move whenever config ids do (see cells.py); the pattern should not.
"""
from . import _bases
from jaxlstm.config import Config


def get_config() -> Config:
  """The five-point base (LSTM(10), Adam, MSE, full batch, 500 epochs)."""
  return _bases.five_point()


def get_grid() -> dict[str, list]:
  """Four schemes for model.kernel_init."""
  return {"model.kernel_init": ["glorot_uniform", "random_uniform", "random_normal", "he_normal"]}
