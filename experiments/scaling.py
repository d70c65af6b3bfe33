"""Data scaling: none, min-max or standardisation of a forecast in raw units (around 100).

What it shows: why LSTM inputs and targets are scaled. The damped-sine
forecast (20 input steps, 5 predicted, 100 training and 100 validation waves)
is shifted and stretched to raw units, `100 + 50 * sin(...) * exp(...)` (values
50 ... 150), then trained unscaled, min-max scaled to [0, 1] or standardised
(`data.scaling`; the scaler is fitted on the training waves only, inputs and
targets together, and applied unchanged to the validation waves). LSTM(20) +
Dense(5), Adam lr 1e-2, MAE, batch 20, shuffled, 100 epochs. Each scaling is
a different dataset: three groups, three compiles.

Losses are in each config's own (scaled) units, so the study scores
`val_mae_original` (`METRIC` below: the validation MAE of the predictions
mapped back to raw units), not `val_loss`.

Command:

  python -m jaxlstm.sweep --experiment scaling --repeats 30

Expected result (measured by giving
`jaxlstm.fit` the same waves mapped to raw units by hand and scoring
`prep.to_original_units` of the predictions; 2-core CPU, jax 0.10.2, seed 0,
30 repeats; about 45 s in all): unscaled, the LSTM's outputs are bounded by
its tanh and the Dense head's weights move by about the learning rate per
Adam step, so 500 steps cannot reach the data's level of 100 and the
raw-unit MAE stays at tens of units; both scalings learn the waves, and
standardisation ends about twice as accurate as min-max, with a tighter
spread:

  scaling    raw-unit val MAE mean (std)   min     max
  none       39    (12.8)                  16.4    60
  minmax     1.14  (0.35)                  0.62    2.14
  standard   0.60  (0.14)                  0.41    0.99

Exact values differ through the CLI (other config ids, other keys); the pattern should not.

"""
from . import _bases
from jaxlstm.config import Config

METRIC = "val_mae_original"  # each config's val_loss is in its own scaled units


def get_config() -> Config:
  """Damped-sine base in raw units (offset 100, amplitude 50), recording MAE in raw units."""
  base = _bases.damped_sine()
  options = {**base.data.options, "offset": 100.0, "amplitude": 50.0}
  return base.override({"data.options": options, "train.metrics": ["mae_original"]})


def get_grid() -> dict[str, list]:
  """No scaling, min-max to [0, 1], and zero mean / unit variance."""
  return {"data.scaling": ["none", "minmax", "standard"]}
