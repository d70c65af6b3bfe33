"""L1 / L2 weight penalties on the input and recurrent kernels (a 2x2x2x2 grid).

What it shows: Keras-style weight regularisation (`kernel_regularizer`,
`recurrent_regularizer` = L1L2(l1, l2)) on the small damped-sine forecast
(LSTM(20) + Dense(5), 20 input steps, 5 predicted, 100 training waves; Adam
lr 1e-2, MAE, batch 20, 100 epochs). Each of kernel_l1, kernel_l2,
recurrent_l1 and recurrent_l2 is 0 or 1e-4: 16 configs. Penalty strengths
are traced, but today the planner gives each zero / non-zero pattern its own
program: 16 compiles (two once programs are keyed on whether any penalty is
used, which is all the compiled program depends on).

As in Keras, `loss` and `val_loss` include the penalty, so they are not
comparable across configs: this study scores `val_mae` (the MAE of the
predictions alone; `METRIC` below), so the summary table, plots and the
report's comparisons use it.

Command:

  python -m jaxlstm.sweep --experiment regularization --repeats 30

Expected result (measured on a 2-core CPU, jax 0.10.2, seed 0, 30 repeats;
about 5.5 min in all, most of it 16 compiles): the unregularised model has
the lowest validation MAE (0.0118, std 0.0030) and no penalty helps: the
model does not overfit 100 waves in 100 epochs. Input-kernel penalties
cost little (0.0123 to 0.0136, within the seed spread); recurrent-kernel
penalties cost clearly, L1 more than L2 (recurrent L2 0.0143, L1 0.0177,
both 0.0204; Welch's t-test on final val_mae against no penalty: p = 0.002,
1.5e-05 and 3e-07), since the recurrent kernel carries the wave's phase
from step to step.

Exact values move whenever config ids do (see cells.py); the pattern should not.
"""
from . import _bases
from jaxlstm.config import Config

METRIC = "val_mae"  # val_loss includes the penalty being varied


def get_config() -> Config:
  """The damped-sine base, also recording the penalty-free `mae` metric."""
  return _bases.damped_sine().override({"train.metrics": ["mae"]})


def get_grid() -> dict[str, list]:
  """Every combination of L1 and L2 = 0 or 1e-4 on the input and recurrent kernels."""
  values = [0.0, 1e-4]
  return {"model.kernel_l1": values, "model.kernel_l2": values,
          "model.recurrent_l1": values, "model.recurrent_l2": values}
