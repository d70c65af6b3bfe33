"""Learning rate 1e-4 ... 1 for Adam on the five-point linear problem (one compile).

What it shows: the learning-rate response of the default study's model
(LSTM(10) + Dense(1), Adam, MSE, full batch, 500 epochs), five decades apart.
The learning rate is a traced hyper-parameter: all 5 x repeats members train
in one compiled call. Diverged seeds (NaN/Inf loss) are counted per config and
left out of the statistics.

Command:

  python -m jaxlstm.sweep --experiment learning_rate --repeats 30

Expected result (measured on a 2-core CPU, jax 0.10.2, seed 0, 30 repeats;
about 15 s in all, one compile): a U shape with no diverged seeds. 1e-4
barely leaves the initial weights in 500 full-batch steps, 1e-3 is still
improving at the end (it is the cells study's 10-cell config), 1e-2 is best
by two orders of magnitude, 1e-1 is good and the tightest, and at 1.0 most
seeds stall at the same poor value (median 0.27, a collapsed fit) while a
few land lower:

  lr      mean      std       min       50%       max
  1e-4    0.445     0.078     0.320     0.427     0.617
  1e-3    0.0221    0.0162    0.00504   0.0184    0.0757
  1e-2    0.00038   0.00047   1.8e-05   0.00019   0.0018
  1e-1    0.0046    0.0013    0.0031    0.0043    0.0088
  1.0     0.237     0.088     0.0148    0.271     0.271

Exact values move whenever config ids do (see cells.py); the pattern should not.
"""
from . import _bases
from jaxlstm.config import Config


def get_config() -> Config:
  """The five-point base (LSTM(10), Adam, MSE, full batch, 500 epochs)."""
  return _bases.five_point()


def get_grid() -> dict[str, list]:
  """Learning rates 1e-4, 1e-3, 1e-2, 1e-1 and 1."""
  return {"optim.learning_rate": [1e-4, 1e-3, 1e-2, 1e-1, 1.0]}
