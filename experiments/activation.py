"""Cell activation: tanh, sigmoid, relu, softsign or hard_sigmoid on the five-point problem.

What it shows: the activation of the cell input and output (Keras'
`activation`; the gates keep `recurrent_activation` = sigmoid) on the
five-point linear problem (LSTM(10) + Dense(1), Adam lr 1e-3, MSE, full batch,
500 epochs). The targets 0.6 ... 1.0 of the validation set lie beyond the
training range, so the activation's shape beyond the training inputs matters:
relu is unbounded, tanh and softsign are bounded in (-1, 1), sigmoid and
hard_sigmoid in (0, 1). The activation is static: five groups, five compiles.

Command:

  python -m jaxlstm.sweep --experiment activation --repeats 30

Expected result (measured on a 2-core CPU, jax 0.10.2, seed 0, 30 repeats;
about 30 s in all): tanh, the Keras default, is clearly best; softsign and
relu come next, relu with the widest spread (its best seeds match tanh's,
its worst are the worst of the study); sigmoid and hard_sigmoid, which are
non-negative and centred at 0.5, end highest:

  activation     mean     std      min      max
  tanh           0.0221   0.0162   0.0050   0.0757
  sigmoid        0.165    0.056    0.0183   0.285
  relu           0.0808   0.0710   0.0130   0.310
  softsign       0.0688   0.0247   0.0282   0.124
  hard_sigmoid   0.174    0.050    0.0609   0.252

Exact values move whenever config ids do (see cells.py); the pattern should not.
"""
from . import _bases
from jaxlstm.config import Config


def get_config() -> Config:
  """The five-point base (LSTM(10), Adam, MSE, full batch, 500 epochs)."""
  return _bases.five_point()


def get_grid() -> dict[str, list]:
  """Five activations for model.activation."""
  return {"model.activation": ["tanh", "sigmoid", "relu", "softsign", "hard_sigmoid"]}
