"""Names and directions of the quantities a run records per epoch (no jax).

One rule decides whether a metric is minimised or maximised: early stopping's
`mode="auto"`, the statistics' `higher_is_better` and the results tables all ask
`metric_direction`, so they can never disagree.
"""
from __future__ import annotations

from jaxlstm.config import Config

# Metric directions of the Keras 3.15.1 metric registry (`Metric._direction`),
# under the names `compile(metrics=[...])` accepts. "acc"/"accuracy" resolve to
# an accuracy metric whose direction is "up".
MAXIMIZED = frozenset({
    "accuracy", "acc", "binary_accuracy", "categorical_accuracy",
    "sparse_categorical_accuracy", "top_k_categorical_accuracy",
    "sparse_top_k_categorical_accuracy", "auc", "precision", "recall",
    "f1_score", "fbeta_score", "f_beta_score", "r2_score", "cosine_similarity",
    "pearson_correlation", "concordance_correlation", "binary_io_u",
})
# "crossentropy" and "rmse" are not Keras metric identifiers; they are added
# because histories may use them and their direction is unambiguous. jaxlstm's
# own quantities (`mae_original`, `penalty`) are errors: lower is better.
MINIMIZED = frozenset({
    "loss", "mse", "mae", "mape", "msle", "mean_squared_error", "mean_absolute_error",
    "mean_absolute_percentage_error", "mean_squared_logarithmic_error",
    "root_mean_squared_error", "rmse", "log_cosh_error", "hinge",
    "squared_hinge", "categorical_hinge", "crossentropy", "bce",
    "binary_crossentropy", "categorical_crossentropy",
    "sparse_categorical_crossentropy", "kl_divergence", "poisson",
    "mae_original", "penalty",
})


def metric_direction(name: str) -> str:
  """"min" or "max": which way `name` (a history key such as "val_accuracy") improves.

  Keras 3's rule: strip a `val_` prefix (or else a `train_` prefix); "loss" and
  known error metrics are minimised, known score metrics maximised.

  Raises:
    ValueError: the direction of `name` is unknown (pass an explicit mode).
  """
  if not isinstance(name, str) or not name:
    raise ValueError(f"a metric name must be a non-empty string, got {name!r}.")
  base = name.removeprefix("val_")
  if base == name:
    base = name.removeprefix("train_")
  if base in MINIMIZED:
    return "min"
  if base in MAXIMIZED:
    return "max"
  raise ValueError(
      f"cannot tell whether {name!r} should be minimised or maximised; pass mode='min' "
      "(lowest value is best) or mode='max' (highest value is best).")


def higher_is_better(name: str) -> bool:
  """Whether a larger value of history key `name` is better (`metric_direction` == "max")."""
  return metric_direction(name) == "max"


def history_keys(config: Config) -> list[str]:
  """The quantities a run of `config` records per epoch, in order.

  `loss` and each `train.metrics` entry, then their `val_` versions; `penalty`
  when an L1/L2 term is on; `learning_rate` with ReduceLROnPlateau.
  """
  names = ["loss", *config.train.metrics]
  keys = names + ["val_" + n for n in names]
  if config.model.uses_penalty:
    keys.append("penalty")
  if config.train.reduce_lr is not None:
    keys.append("learning_rate")
  return keys
