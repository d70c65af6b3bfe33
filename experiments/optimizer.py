"""Optimizers at their Keras defaults: Adam, RMSprop, Adagrad, SGD with momentum 0.9.

What it shows: the choice of optimizer on the five-point linear problem
(LSTM(10) + Dense(1), MSE, full batch, 500 epochs), each optimizer as Keras
ships it: Adam lr 1e-3; RMSprop lr 1e-3 (rho 0.9, no momentum); Adagrad lr 1e-3
(initial accumulator 0.1); SGD lr 1e-2 with momentum 0.9. An optimizer and its
momentum must be paired, which a Cartesian grid cannot do (a momentum axis would
also give RMSprop momentum and give Adam/Adagrad an unused one), so the study
lists its four configs in `get_configs()`. Each optimizer is its own static
group: four compiles.

Command:

  python -m jaxlstm.sweep --experiment optimizer --repeats 30

Expected result (measured with the sweep's engine, `ensemble.run_group`,
on a 2-core CPU, jax 0.10.2, seed 0, 30 repeats; about 20 s in all): the
optimizers differ by orders of magnitude at their defaults. RMSprop is best
by far; Adam is the cells study's 10-cell result; SGD with momentum is
slower still, and Adagrad, whose steps shrink as its accumulator (started
at 0.1) grows, barely leaves the initial weights in 500 full-batch steps:

  optimizer        mean      std       min       max
  adam             0.0221    0.0162    0.0050    0.0757
  rmsprop          0.00060   0.0025    6.5e-06   0.0136
  adagrad          0.543     0.085     0.377     0.750
  sgd + momentum   0.151     0.040     0.063     0.248

Defaults are not an equal footing: rerun with one learning rate for all
(`--set optim.learning_rate=1e-2`) to separate the update rule from the
default step size.

Exact values move whenever config ids do (see cells.py); the pattern should not.
"""
from . import _bases
from jaxlstm.config import Config


def get_config() -> Config:
  """The five-point base with Adam (the first of the four configs)."""
  return _bases.five_point()


def get_configs() -> list[Config]:
  """Adam, RMSprop, Adagrad and SGD + momentum 0.9, each at Keras' default learning rate."""
  base = get_config()
  return [
      base.override({"optim.name": "adam", "optim.learning_rate": 1e-3}),
      base.override({"optim.name": "rmsprop", "optim.learning_rate": 1e-3}),
      base.override({"optim.name": "adagrad", "optim.learning_rate": 1e-3}),
      base.override({"optim.name": "sgd", "optim.learning_rate": 1e-2, "optim.momentum": 0.9}),
  ]
