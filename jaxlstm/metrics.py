"""Names and directions of the quantities a run records per epoch (no jax).

One rule decides whether a metric is minimised or maximised: early stopping's
`mode="auto"`, the statistics' `higher_is_better` and the results tables all ask
`metric_direction`, so they can never disagree.
"""
from __future__ import annotations

import numpy as np

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


def score_prediction(name: str, prediction: np.ndarray, targets: np.ndarray, config: Config,
                     unit_scale: np.ndarray | None = None) -> float:
  """A history metric of one prediction (after the output activation), as the loop computes it.

  What an ensemble of the repeats scores: their averaged prediction. `val_loss` is
  the config's loss without any L1/L2 penalty (a prediction has no weights).

  Args:
    name: a `val_*` (or bare) history key: loss, mse, mae, accuracy or mae_original.
    prediction: `[samples, ...]` predicted values or probabilities.
    targets: `[samples, ...]` targets.
    config: the config (its loss and output activation).
    unit_scale: `[outputs]` original units per scaled unit (`mae_original`).

  Raises:
    ValueError: a history key that is not a prediction metric (penalty, learning_rate).
  """
  base = name.removeprefix("val_")
  if base == "loss":
    base = config.train.loss
  p = np.asarray(prediction, np.float64)
  y = np.asarray(targets, np.float64)
  per_sample = lambda v: v.reshape(v.shape[0], -1).mean(axis=1)
  eps = 1e-12
  if base == "mse":
    values = per_sample(np.square(p - y))
  elif base in ("mae", "mae_original"):
    error = np.abs(p - y)
    if base == "mae_original" and unit_scale is not None:
      error = error * np.asarray(unit_scale, np.float64).reshape((1,) * (error.ndim - 1) + (-1,))
    values = per_sample(error)
  elif base == "binary_crossentropy":
    p = np.clip(p, eps, 1 - eps)
    values = per_sample(-(y * np.log(p) + (1 - y) * np.log(1 - p)))
  elif base == "categorical_crossentropy":
    step = -np.sum(y * np.log(np.clip(p, eps, 1.0)), axis=-1)
    values = step.reshape(step.shape[0], -1).mean(axis=1)
  elif base == "accuracy":
    if config.model.output_activation == "softmax":
      hits = np.argmax(p, -1) == np.argmax(y, -1)
      values = hits.reshape(hits.shape[0], -1).mean(axis=1)
    else:
      values = per_sample(((p > 0.5) == (y > 0.5)).astype(np.float64))
  else:
    raise ValueError(f"{name!r} is not a metric of a prediction.")
  return float(np.mean(values))
