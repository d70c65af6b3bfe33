"""Naive forecasts a trained model has to beat (numpy only, never jax).

A config whose validation loss is no better than a forecast that needs no
training has learned nothing worth its compute, however well its curves look.
`naive_scores(dataset)` gives the loss of each naive forecast on one split, in
the units the model is scored in:

  persistence  the last input step's value of the target feature, repeated
               over the horizon (the "no change" forecast; a random walk's best)
  mean         the training targets' mean, per output entry (what a model that
               ignores its inputs can do; on the training split its MSE is the
               targets' variance, the reference of `diagnose`'s capacity rule)
  seasonal     the value one season earlier: step s ahead repeats input step
               `n_in - 1 + s - m * ceil(s / m)` for season length m (needs n_in >= m;
               m = 1 is persistence)

Losses are Keras' (and `jaxlstm.losses`'): per sample, the mean over all
non-batch entries of the squared ("mse") or absolute ("mae") error; then the
mean over samples.

Which input feature is the target. Persistence and seasonal forecasts copy an
input feature into each output entry, so they need to know which feature each
output is. In order:

  1. `target_features=` given to the call: one input feature index per output
     column of a 2-D `y [samples, outputs]`, or per output channel of a 3-D
     `y [samples, time_out, outputs]`;
  2. `dataset.metadata["target_features"]`, which `problems.make("csv")`,
     `damped_sine` and `prep.sliding_windows`-style problems record;
  3. a univariate input (one feature): feature 0 for every output.

A 2-D `y` is read step-major, as `prep.sliding_windows` writes it: with k
targets per step, column c is target `c % k` at step `c // k + 1` after the
window (k is the period of `target_features`). Otherwise (several input
features and no record of the target) persistence is undefined: asked for, it
is refused; by default it is skipped and the reason kept in `skipped`.
Classification datasets are refused: a naive class forecast (the majority
class) is a different quantity.

Scaled datasets (`prep.prepare`, or `config.data.scaling`) are handled: the
copied input values go back to original units with the input scaler and into
target units with the target scaler, so the score is in the units of the
model's `val_loss` when the dataset is the one the model trained on
(`jaxlstm.train.resolve_dataset(config)`).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # annotations only: pandas is imported where a table is built
  import pandas as pd

METHODS = ("persistence", "mean", "seasonal")
METRICS = ("mse", "mae")
SPLITS = ("train", "val")


def per_sample_loss(y_true: Any, y_pred: Any, metric: str = "mse") -> np.ndarray:
  """Per-sample loss as `jaxlstm.losses`: mean over all non-batch entries.

  Args:
    y_true: `[samples, ...]` targets.
    y_pred: predictions of the same shape.
    metric: "mse" or "mae".

  Returns:
    `[samples]` float64 losses.
  """
  if metric not in METRICS:
    raise ValueError(f"metric must be one of {METRICS}, got {metric!r}; naive forecasts are "
                     "scored with regression losses.")
  y_true, y_pred = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
  if y_true.shape != y_pred.shape or y_true.ndim < 2:
    raise ValueError(f"expected y_true and y_pred of one shape [samples, ...], got {y_true.shape} "
                     f"and {y_pred.shape}.")
  error = y_pred - y_true
  error = np.square(error) if metric == "mse" else np.abs(error)
  return error.reshape(error.shape[0], -1).mean(axis=1)


def loss(y_true: Any, y_pred: Any, metric: str = "mse") -> float:
  """Mean over samples of `per_sample_loss` (Keras' reduction), as a float."""
  return float(np.mean(per_sample_loss(y_true, y_pred, metric)))


def _check_regression(dataset) -> None:
  if dataset.task != "regression":
    raise ValueError(f"naive forecasts are defined for regression; dataset {dataset.name!r} has "
                     f"task {dataset.task!r}. Compare a classifier with the majority class instead.")


def _split(dataset, split: str) -> tuple[np.ndarray, np.ndarray]:
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
  x, y = getattr(dataset, f"x_{split}"), getattr(dataset, f"y_{split}")
  if not len(x):
    raise ValueError(f"dataset {dataset.name!r} has no {split} samples to score; pass "
                     "split='train', or a dataset with a validation part.")
  return x, y


def _period(features: Sequence[int]) -> int:
  """Smallest k with features[c] == features[c % k]: targets per step of a step-major y."""
  n = len(features)
  return next(k for k in range(1, n + 1)
              if n % k == 0 and all(features[c] == features[c % k] for c in range(n)))


def target_layout(dataset, target_features: Sequence[int] | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
  """Input feature and steps ahead of every output entry (see the module docstring).

  Args:
    dataset: a regression `Dataset`.
    target_features: input feature per output (overrides metadata).

  Returns:
    (features, steps): int arrays of `y`'s per-sample shape; `steps` counts from 1
    (the step right after the window).

  Raises:
    ValueError: for classification, a wrong-length `target_features`, an index
      outside the input features, or no way to tell the target feature.
  """
  _check_regression(dataset)
  y_shape = dataset.y_train.shape[1:]
  n_features = dataset.x_train.shape[-1]
  per = y_shape[-1]
  given = target_features if target_features is not None else dataset.metadata.get("target_features")
  if given is None:
    if n_features != 1 or (len(y_shape) == 2 and per != 1):
      raise ValueError(
          f"cannot tell which input feature is the target: x has {n_features} features, y has "
          f"per-sample shape {y_shape}, and dataset {dataset.name!r} has no "
          "metadata['target_features']. Pass target_features=[...] (one input feature index per "
          "output), or methods=('mean',).")
    given = [0] * per
  features = [int(f) for f in given]
  if len(features) != per:
    raise ValueError(f"target_features names {len(features)} features but y has {per} outputs "
                     f"(per-sample shape {y_shape}); give one input feature index per output.")
  if any(not 0 <= f < n_features for f in features):
    raise ValueError(f"target_features must be indices in [0, {n_features - 1}] (x has "
                     f"{n_features} features), got {features}.")
  if len(y_shape) == 1:
    k = _period(features)
    steps = np.arange(per) // k + 1
    return np.asarray(features), steps
  time_out = y_shape[0]
  return (np.broadcast_to(np.asarray(features), y_shape).copy(),
          np.broadcast_to(np.arange(1, time_out + 1)[:, None], y_shape).copy())


def _copy_inputs(dataset, x: np.ndarray, index: np.ndarray, features: np.ndarray) -> np.ndarray:
  """Input values at time `index` of feature `features` (per output entry), in target units."""
  scaler_in = dataset.metadata.get("input_scaler")
  scaler_out = dataset.metadata.get("target_scaler")
  if scaler_in is not None:
    x = scaler_in.inverse(x)
  values = x[:, index, features].astype(np.float64)  # [samples, *y_shape]
  if scaler_out is not None:
    values = scaler_out.transform(values).astype(np.float64)
  return values


def predict(dataset, method: str, *, split: str = "val", season: int | None = None,
            target_features: Sequence[int] | None = None) -> np.ndarray:
  """A naive forecast for every sample of one split.

  Args:
    dataset: a regression `Dataset`; x `[samples, time, features]`, y `[samples,
      outputs]` or `[samples, time_out, outputs]`.
    method: "persistence", "mean" or "seasonal".
    split: "val" or "train".
    season: season length m, for "seasonal".
    target_features: input feature per output (see the module docstring).

  Returns:
    Predictions shaped like `y_<split>`, float64.

  Raises:
    ValueError: an unknown method or split, an empty split, classification, an
      undefined target feature, or a season missing, below 1 or longer than the window.
  """
  if method not in METHODS:
    raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
  _check_regression(dataset)
  x, y = _split(dataset, split)
  if method == "mean":
    mean = dataset.y_train.astype(np.float64).mean(axis=0)
    return np.broadcast_to(mean, y.shape).copy()
  features, steps = target_layout(dataset, target_features)
  n_in = x.shape[1]
  if method == "persistence":
    index = np.full(features.shape, n_in - 1)
  else:
    if isinstance(season, bool) or not isinstance(season, (int, np.integer)) or season < 1:
      raise ValueError(f"season must be an integer >= 1 for method='seasonal', got {season!r}.")
    if season > n_in:
      raise ValueError(f"season={season} is longer than the input window ({n_in} steps): the "
                       "value one season earlier is not in the window. Use windows of at least "
                       f"{season} steps, or a shorter season.")
    index = n_in - 1 + steps - season * np.ceil(steps / season).astype(int)
  return _copy_inputs(dataset, x, index, features)


@dataclasses.dataclass(frozen=True)
class BaselineScores:
  """Losses of naive forecasts on one split.

  Attributes:
    scores: method -> loss, in `METHODS` order.
    skipped: method -> why it was left out (only when methods were not named).
    metric: "mse" or "mae".
    split: "val" or "train".
    season: season length of "seasonal", or None.
    n_samples: samples scored.
  """
  scores: Mapping[str, float]
  skipped: Mapping[str, str]
  metric: str
  split: str
  season: int | None
  n_samples: int

  def __getitem__(self, method: str) -> float:
    return self.scores[method]

  @property
  def best(self) -> str:
    """The naive forecast with the lowest loss (ties: the first in `METHODS`)."""
    return min(self.scores, key=lambda m: (self.scores[m], METHODS.index(m)))

  @property
  def best_score(self) -> float:
    return self.scores[self.best]

  def to_frame(self) -> pd.DataFrame:
    """One row per method: method, score; settings in `attrs`."""
    import pandas as pd  # lazily: the sweep computes baselines, only reports frame them
    frame = pd.DataFrame({"method": list(self.scores), "score": list(self.scores.values())})
    frame.attrs.update(metric=self.metric, split=self.split, season=self.season,
                       n_samples=self.n_samples, skipped=dict(self.skipped))
    return frame


def naive_scores(dataset, *, metric: str = "mse", split: str = "val", season: int | None = None,
                 methods: Sequence[str] | None = None,
                 target_features: Sequence[int] | None = None) -> BaselineScores:
  """Score naive forecasts of one split of a regression dataset.

  Args:
    dataset: the `Dataset` the model trains on (after splitting and scaling, so
      the units match its losses).
    metric: "mse" or "mae" (the config's loss or metric).
    split: "val" (to compare with `val_loss`) or "train" (the capacity reference
      of `diagnose`: `naive_scores(ds, split="train", methods=("mean",))["mean"]`).
    season: season length; adds "seasonal" to the default methods.
    methods: which forecasts; None: "persistence" (if the target is known) and
      "mean", plus "seasonal" when `season` is given.
    target_features: input feature per output (see the module docstring).

  Returns:
    A `BaselineScores`.

  Raises:
    ValueError: as `predict`, for a named method that is undefined here, or an
      unknown metric.
  """
  if metric not in METRICS:
    raise ValueError(f"metric must be one of {METRICS}, got {metric!r}; naive forecasts are "
                     "scored with regression losses.")
  _check_regression(dataset)
  _, y = _split(dataset, split)
  skipped = {}
  if methods is None:
    wanted = ["persistence", "mean"] + (["seasonal"] if season is not None else [])
    try:
      target_layout(dataset, target_features)
    except ValueError as error:
      skipped = {m: str(error) for m in wanted if m != "mean"}
      wanted = ["mean"]
  else:
    wanted = list(methods)
    unknown = [m for m in wanted if m not in METHODS]
    if unknown:
      raise ValueError(f"methods must be among {METHODS}, got {unknown}.")
  scores = {m: loss(y, predict(dataset, m, split=split, season=season,
                               target_features=target_features), metric)
            for m in METHODS if m in wanted}
  return BaselineScores(scores=scores, skipped=skipped, metric=metric, split=split,
                        season=season, n_samples=int(len(y)))
