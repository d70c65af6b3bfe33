"""Where does the seed-to-seed spread come from? Init, data order, dropout or data split.

What it shows: each repeat draws four independent random streams: initial
weights (`init`), the order of the training samples each epoch (`shuffle`),
the dropout masks (`dropout`) and, with `data.resplit`, its own
train/validation split (`split`). `train.vary` lists the streams that differ
between repeats; the others are held at repeat 0's draw. Varying one stream
at a time, and then all four, shows which source dominates the spread of the
final validation MAE. Data: the small damped-sine forecast (20 input steps,
5 predicted) with its 200 waves resplit 50/50 per repeat (`data.resplit =
0.5`); LSTM(20) with recurrent dropout 0.2 (input dropout would drop a
sample's only feature at every step) + Dense(5); Adam lr 1e-2, MAE, batch 20,
shuffled, 100 epochs. `train.vary` is static: five groups, five compiles.

Command:

  python -m jaxlstm.sweep --experiment variance_sources --repeats 30

Compare the spreads (std), not the means: a held-fixed stream is one
particular draw (repeat 0 of that config), so each config's mean carries the
luck of its fixed draws.

Expected result (measured on a 2-core CPU, jax 0.10.2, seed 0, 30 repeats;
about 1.5 min in all): on the final val MAE every source alone gives about
the whole spread: training at lr 1e-2 is sensitive enough that any change,
even only the dropout masks or the data order, sends a run to a different
end point. The best-epoch MAE, which drops most of the end-of-training
noise, separates them: the split and the initial weights dominate, the data
order and dropout masks matter least:

  vary               final val MAE std   best val MAE std
  init               0.0040              0.0026
  shuffle            0.0060              0.0012
  dropout            0.0055              0.0013
  split              0.0064              0.0038
  all four           0.0054              0.0028

So fixing one seed source (e.g. the initial weights) does not make runs
comparable: all of them have to be repeated.

Exact values move whenever config ids do (see cells.py); the pattern should not.
"""
from . import _bases
from jaxlstm.config import STREAMS, Config


def get_config() -> Config:
  """Damped-sine base with recurrent dropout 0.2 and a per-repeat 50/50 resplit."""
  return _bases.damped_sine().override({"model.recurrent_dropout": 0.2, "data.resplit": 0.5})


def get_grid() -> dict[str, list]:
  """One stream varying at a time, then all of them."""
  return {"train.vary": [[stream] for stream in STREAMS] + [list(STREAMS)]}
