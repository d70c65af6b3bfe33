"""Under-, good and over-fit: 100, 800 and 1200 epochs on the five-point problem.

What it shows: the three learning-curve cases of the methodology on one model
(LSTM(10) + Dense(1), Adam lr 1e-3, MSE, full batch, unshuffled; the default
study's model) trained for 100, 800 or 1200 epochs, with a verdict per seed
from `jaxlstm.diagnose` rather than one curve per setting. Epochs are static:
three groups, three compiles.

Command:

  python -m jaxlstm.sweep --experiment fit_diagnosis --repeats 30

Expected result (tests/test_fit_diagnosis.py checks these majorities on
the same configs, 30 repeats, seed 0): at 100 epochs both losses are still
falling steeply (underfit_improving); at 800 the validation loss has flattened near its
minimum (good fit); at 1200 it has passed its minimum and is rising again while
the training loss keeps falling (overfit). At least 80% of the seeds get
the majority verdict in each case (diagnosis.csv; plots/curves.png and
plots/diagnosis.png show the shapes). Measured through this command (2-core
CPU, jax 0.10.2, about 20 s in all): 30/30 underfit (now underfit_improving) at 100 epochs, 28/30
good fit at 800, 29/30 overfit at 1200. Final val_loss means are 0.277,
0.00104 and 0.00178: 800 and 1200 epochs are not significantly different
on the final score alone (comparisons.csv: p = 0.07), while the curves tell
them apart on nearly every seed.

Exact values move whenever config ids do (see cells.py); the pattern should not.
"""
from . import _bases
from jaxlstm.config import Config


def get_config() -> Config:
  """The five-point base (LSTM(10), Adam, MSE, full batch, unshuffled)."""
  return _bases.five_point()


def get_grid() -> dict[str, list]:
  """100, 800 and 1200 epochs."""
  return {"train.epochs": [100, 800, 1200]}
