"""How many repeats? One config (the default study's LSTM(10)) trained over many seeds.

What it shows: how the estimate of the mean final val_loss settles as repeats
are added: the mean of the first n seeds, its standard error and a bootstrap
band against n (the report's repeats-convergence plot, or
`jaxlstm.stats.repeats_curve` / `required_repeats` on scores.csv). The config
is the default study's 10-cell model (five-point problem, Adam lr 1e-3, MSE,
full batch, 500 epochs); one group, one compile, so 100 repeats cost about
as much as 30 (repeat i is the same run whatever the total, so a longer
run only adds seeds).

Command:

  python -m jaxlstm.sweep --experiment repeats --repeats 100

Expected result (measured on a 2-core CPU, jax 0.10.2, seed 0, 100
repeats; about 10 s in all): the final val_loss has a coefficient of
variation of about 0.66 (mean 0.0237, std 0.0156). The running mean moves by
up to 20% over the first ten seeds (0.0282 after 5, 0.0235 after 10) and stays
within 10% of the 100-seed mean from 15 seeds on; the standard error falls
as 1/sqrt(n) (0.0030 at 30 seeds, 0.0016 at 100). `required_repeats` on these
scores: 45 repeats for a 95% confidence interval of +-20% of the mean, 169
for +-10%. So 30 repeats separate configs whose means differ by a factor
of two or so (as in the cells study), not by 10%.

Exact values move whenever config ids do (see cells.py); the pattern should not.
"""
from . import _bases
from jaxlstm.config import Config


def get_config() -> Config:
  """The default study's 10-cell config on the five-point problem."""
  return _bases.five_point()


def get_grid() -> dict[str, list]:
  """No grid: one config, as many repeats as asked for."""
  return {}
