"""Data preparation: scaling, encoding, padding, series transforms, windows, splits.

Pure numpy (and scipy for Box-Cox) functions of arrays. Every transform that
has an inverse comes with it, and every fitted transform is fitted on the
training part only and then applied, unchanged, to validation data, so that no
statistic of the validation set leaks into training.

Data arrays come back as float32 (the dtype of `Dataset`); fitted statistics
are kept in float64 so that `inverse(transform(x))` loses no more than float32
rounding. Scalers are frozen dataclasses that turn into plain dicts
(`to_dict` / `scaler_from_dict`) so a results folder can store them as JSON.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
  from jaxlstm.problems import Dataset


def _as_float(x: Any, name: str = "x") -> np.ndarray:
  array = np.asarray(x, dtype=np.float64)
  if array.ndim == 0:
    raise ValueError(f"{name} must be an array of at least one dimension, got a scalar {x!r}.")
  return array


def _feature_axes(x: np.ndarray) -> tuple[int, ...]:
  # Statistics are per feature (the last axis) over everything else:
  # samples and time alike. A 1-D array is one feature.
  return tuple(range(x.ndim - 1)) if x.ndim > 1 else (0,)


def _check_fit_input(x: np.ndarray, name: str) -> None:
  if x.size == 0:
    raise ValueError(f"cannot fit {name} on an empty array (shape {x.shape}); pass the training data.")
  if not np.isfinite(x).all():
    raise ValueError(f"cannot fit {name}: the data hold NaN or Inf; clean or impute them first.")


def _check_features(params: np.ndarray, x: np.ndarray, name: str) -> None:
  if params.ndim and x.shape[-1:] != params.shape:
    raise ValueError(f"{name} was fitted on {params.shape[0]} feature(s) but x has shape {x.shape} "
                     f"(last axis = features); pass x with {params.shape[0]} features.")


# --------------------------------------------------------------------------- scalers


@dataclasses.dataclass(frozen=True, eq=False)
class MinMaxScaler:
  """Maps each feature from its training range `[data_min, data_max]` to `feature_range`.

  Attributes:
    data_min, data_max: `[features]` (or scalars, for a 1-D fit) float64.
    feature_range: `(low, high)` of the transformed data.
  """
  data_min: np.ndarray
  data_max: np.ndarray
  feature_range: tuple[float, float] = (0.0, 1.0)

  @property
  def _scale(self) -> np.ndarray:
    span = self.data_max - self.data_min
    # A constant feature maps to feature_range[0] instead of dividing by 0
    # (sklearn's handle_zeros_in_scale).
    span = np.where(span == 0, 1.0, span)
    low, high = self.feature_range
    return (high - low) / span

  def transform(self, x: Any) -> np.ndarray:
    """Scale `x` `[..., features]` into `feature_range` (values outside the training range go outside it)."""
    x = _as_float(x)
    _check_features(self.data_min, x, "MinMaxScaler")
    return ((x - self.data_min) * self._scale + self.feature_range[0]).astype(np.float32)

  def inverse(self, x: Any) -> np.ndarray:
    """Map scaled `x` `[..., features]` back to original units."""
    x = _as_float(x)
    _check_features(self.data_min, x, "MinMaxScaler")
    return ((x - self.feature_range[0]) / self._scale + self.data_min).astype(np.float32)

  def affine(self) -> tuple[np.ndarray, np.ndarray]:
    """`(s, t)` float64 with `inverse(x) = s * x + t` (per feature)."""
    return 1.0 / self._scale, self.data_min - self.feature_range[0] / self._scale

  def select(self, features: Sequence[int]) -> MinMaxScaler:
    """The same scaler restricted to (and reordered as) `features`."""
    index = np.asarray(features, dtype=int)
    return MinMaxScaler(np.atleast_1d(self.data_min)[index], np.atleast_1d(self.data_max)[index],
                        self.feature_range)

  def to_dict(self) -> dict[str, Any]:
    return {"kind": "minmax", "data_min": np.asarray(self.data_min).tolist(),
            "data_max": np.asarray(self.data_max).tolist(), "feature_range": list(self.feature_range)}


@dataclasses.dataclass(frozen=True, eq=False)
class StandardScaler:
  """Maps each feature to zero mean and unit variance of the training data.

  Attributes:
    mean, scale: `[features]` (or scalars, for a 1-D fit) float64; `scale` is
      the population standard deviation (ddof=0, as sklearn), 1 where it is 0.
  """
  mean: np.ndarray
  scale: np.ndarray

  def transform(self, x: Any) -> np.ndarray:
    """Standardise `x` `[..., features]`."""
    x = _as_float(x)
    _check_features(self.mean, x, "StandardScaler")
    return ((x - self.mean) / self.scale).astype(np.float32)

  def inverse(self, x: Any) -> np.ndarray:
    """Map standardised `x` `[..., features]` back to original units."""
    x = _as_float(x)
    _check_features(self.mean, x, "StandardScaler")
    return (x * self.scale + self.mean).astype(np.float32)

  def affine(self) -> tuple[np.ndarray, np.ndarray]:
    """`(s, t)` float64 with `inverse(x) = s * x + t` (per feature)."""
    return np.asarray(self.scale, np.float64), np.asarray(self.mean, np.float64)

  def select(self, features: Sequence[int]) -> StandardScaler:
    """The same scaler restricted to (and reordered as) `features`."""
    index = np.asarray(features, dtype=int)
    return StandardScaler(np.atleast_1d(self.mean)[index], np.atleast_1d(self.scale)[index])

  def to_dict(self) -> dict[str, Any]:
    return {"kind": "standard", "mean": np.asarray(self.mean).tolist(),
            "scale": np.asarray(self.scale).tolist()}


Scaler = MinMaxScaler | StandardScaler


def fit_minmax(train: Any, feature_range: tuple[float, float] = (0.0, 1.0)) -> MinMaxScaler:
  """Fit a min-max scaler on training data.

  Args:
    train: `[..., features]` training values; a 1-D array is one feature.
    feature_range: `(low, high)`, low < high.

  Returns:
    The fitted `MinMaxScaler`.

  Raises:
    ValueError: empty or non-finite data, or low >= high.
  """
  train = _as_float(train, "train")
  _check_fit_input(train, "a min-max scaler")
  low, high = (float(v) for v in feature_range)
  if not low < high:
    raise ValueError(f"feature_range must be (low, high) with low < high, got {feature_range!r}.")
  axes = _feature_axes(train)
  return MinMaxScaler(train.min(axis=axes), train.max(axis=axes), (low, high))


def fit_standard(train: Any) -> StandardScaler:
  """Fit a standardising scaler on training data.

  Args:
    train: `[..., features]` training values; a 1-D array is one feature.

  Returns:
    The fitted `StandardScaler`.

  Raises:
    ValueError: empty or non-finite data.
  """
  train = _as_float(train, "train")
  _check_fit_input(train, "a standard scaler")
  axes = _feature_axes(train)
  std = train.std(axis=axes)
  return StandardScaler(train.mean(axis=axes), np.where(std == 0, 1.0, std))


def scaler_from_dict(d: dict[str, Any]) -> Scaler:
  """Rebuild a scaler from its `to_dict()` (no pickle needed to store one)."""
  kind = d.get("kind")
  if kind == "minmax":
    return MinMaxScaler(np.asarray(d["data_min"], np.float64), np.asarray(d["data_max"], np.float64),
                        tuple(d["feature_range"]))
  if kind == "standard":
    return StandardScaler(np.asarray(d["mean"], np.float64), np.asarray(d["scale"], np.float64))
  raise ValueError(f"unknown scaler kind {kind!r}; expected 'minmax' or 'standard'.")


# --------------------------------------------------------------------------- encoders


@dataclasses.dataclass(frozen=True, eq=False)
class IntegerEncoder:
  """Maps labels to integer codes 0..K-1 in sorted label order.

  Attributes:
    classes: `[K]` the distinct training labels, sorted; code i is `classes[i]`.
  """
  classes: np.ndarray

  def transform(self, labels: Any) -> np.ndarray:
    """Codes `[...]` int32 of `labels` `[...]`.

    Raises:
      ValueError: a label that was not in the training labels.
    """
    labels = np.asarray(labels)
    codes = np.searchsorted(self.classes, labels)
    codes = np.clip(codes, 0, len(self.classes) - 1)
    unknown = self.classes[codes] != labels
    if np.any(unknown):
      first = labels[unknown].ravel()[0].item()  # a plain Python value reads better than np.str_('x')
      raise ValueError(f"label {first!r} was not among the {len(self.classes)} training labels "
                       f"{self.classes.tolist()[:20]}; refit the encoder on data that holds it.")
    return codes.astype(np.int32)

  def inverse(self, codes: Any) -> np.ndarray:
    """Labels `[...]` of integer codes `[...]`."""
    codes = np.asarray(codes)
    if codes.size and (codes.min() < 0 or codes.max() >= len(self.classes)):
      raise ValueError(f"codes must lie in [0, {len(self.classes) - 1}], got {codes.min()}..{codes.max()}.")
    return self.classes[codes]

  @property
  def n_classes(self) -> int:
    return len(self.classes)


def fit_integer_encoder(labels: Sequence[Hashable] | np.ndarray) -> IntegerEncoder:
  """Fit an integer encoder on training labels.

  Args:
    labels: `[...]` labels of one comparable type (ints or strings).

  Returns:
    The fitted `IntegerEncoder`.
  """
  labels = np.asarray(labels)
  if labels.size == 0:
    raise ValueError("cannot fit an integer encoder on no labels; pass the training labels.")
  return IntegerEncoder(np.unique(labels))


def one_hot(codes: Any, n_classes: int) -> np.ndarray:
  """One-hot encode integer codes.

  Args:
    codes: `[...]` integers in `[0, n_classes)`.
    n_classes: K.

  Returns:
    `[..., K]` float32.
  """
  codes = np.asarray(codes)
  if not np.issubdtype(codes.dtype, np.integer):
    raise ValueError(f"one_hot needs integer codes, got dtype {codes.dtype}; "
                     "encode labels first with fit_integer_encoder(labels).transform(labels).")
  if codes.size and (codes.min() < 0 or codes.max() >= n_classes):
    raise ValueError(f"codes must lie in [0, {n_classes - 1}] for n_classes={n_classes}, "
                     f"got {codes.min()}..{codes.max()}.")
  return np.eye(n_classes, dtype=np.float32)[codes]


def one_hot_inverse(onehot: Any) -> np.ndarray:
  """Integer codes `[...]` int32 of one-hot rows or class scores `[..., K]` (argmax)."""
  return np.asarray(onehot).argmax(axis=-1).astype(np.int32)


@dataclasses.dataclass(frozen=True, eq=False)
class OneHotEncoder:
  """Labels to one-hot rows and back (argmax), via an `IntegerEncoder`."""
  integer: IntegerEncoder

  def transform(self, labels: Any) -> np.ndarray:
    """`[..., K]` float32 one-hot rows of `labels` `[...]`."""
    return one_hot(self.integer.transform(labels), self.integer.n_classes)

  def inverse(self, onehot: Any) -> np.ndarray:
    """Labels `[...]` of one-hot rows or predicted class scores `[..., K]`."""
    return self.integer.inverse(one_hot_inverse(onehot))

  @property
  def classes(self) -> np.ndarray:
    return self.integer.classes


def fit_one_hot(labels: Sequence[Hashable] | np.ndarray) -> OneHotEncoder:
  """Fit a one-hot encoder on training labels (class order: sorted labels)."""
  return OneHotEncoder(fit_integer_encoder(labels))


# --------------------------------------------------------------------------- padding


def pad_sequences(sequences: Sequence[Any], maxlen: int | None = None, *, padding: str = "pre",
                  truncating: str = "pre", value: float = 0.0, dtype: Any = np.float32) -> np.ndarray:
  """Pad (and truncate) variable-length sequences to one length, as Keras does.

  Keras' `pad_sequences` semantics, except the default dtype: float32 here
  (the dtype of our data) where Keras defaults to int32.

  Args:
    sequences: N sequences, each `[length_i, *step_shape]` (step_shape may be empty).
    maxlen: the output length; None = the longest sequence.
    padding: "pre" pads before each sequence, "post" after it.
    truncating: "pre" drops values from the start of longer sequences, "post" from the end.
    value: the padding value.
    dtype: the output dtype.

  Returns:
    `[N, maxlen, *step_shape]`.

  Raises:
    ValueError: a bad padding/truncating mode, maxlen < 1, or steps of different shapes.
  """
  for name, mode in (("padding", padding), ("truncating", truncating)):
    if mode not in ("pre", "post"):
      raise ValueError(f'{name} must be "pre" or "post", got {mode!r}.')
  if maxlen is not None and (isinstance(maxlen, bool) or int(maxlen) != maxlen or maxlen < 1):
    raise ValueError(f"maxlen must be a positive integer or None, got {maxlen!r}.")
  arrays = [np.asarray(s, dtype=dtype) for s in sequences]
  # Like Keras, the step shape comes from the first non-empty sequence.
  step_shape = next((a.shape[1:] for a in arrays if len(a)), ())
  if maxlen is None:
    maxlen = max((len(a) for a in arrays), default=0)
  out = np.full((len(arrays), maxlen) + step_shape, value, dtype=dtype)
  for i, a in enumerate(arrays):
    if not len(a):
      continue
    if a.shape[1:] != step_shape:
      raise ValueError(f"sequence {i} has steps of shape {a.shape[1:]} but sequence steps so far have "
                       f"shape {step_shape}; every step must have the same shape.")
    kept = a[-maxlen:] if truncating == "pre" else a[:maxlen]
    if padding == "post":
      out[i, :len(kept)] = kept
    else:
      out[i, maxlen - len(kept):] = kept
  return out


def unpad_sequences(padded: Any, lengths: Sequence[int], *, padding: str = "pre") -> list[np.ndarray]:
  """Undo `pad_sequences` for sequences that were not truncated.

  Args:
    padded: `[N, maxlen, *step_shape]`.
    lengths: the N original lengths (each <= maxlen).
    padding: the mode `pad_sequences` used.

  Returns:
    N arrays `[length_i, *step_shape]`.
  """
  padded = np.asarray(padded)
  if len(lengths) != len(padded):
    raise ValueError(f"got {len(lengths)} lengths for {len(padded)} sequences.")
  if padding not in ("pre", "post"):
    raise ValueError(f'padding must be "pre" or "post", got {padding!r}.')
  maxlen = padded.shape[1] if padded.ndim > 1 else 0
  out = []
  for row, n in zip(padded, lengths):
    if not 0 <= n <= maxlen:
      raise ValueError(f"length {n} does not fit padded length {maxlen}: truncated sequences cannot be restored.")
    out.append(row[:n] if padding == "post" else row[maxlen - n:])
  return out


# --------------------------------------------------------------------------- series transforms


def difference(x: Any, lag: int = 1) -> np.ndarray:
  """Difference a series: `d[t] = x[t + lag] - x[t]`.

  Lag 1 removes a trend; a seasonal lag (e.g. 12 for monthly data) removes a
  seasonal cycle.

  Args:
    x: `[T, ...]` a series (time first).
    lag: the distance between the subtracted values, 1 <= lag < T.

  Returns:
    `[T - lag, ...]` float32; entry t is aligned with `x[t + lag]`.
  """
  x = _as_float(x)
  _check_lag(lag, len(x))
  return (x[lag:] - x[:-lag]).astype(np.float32)


def inverse_difference(history: Any, diffed: Any, lag: int = 1) -> np.ndarray:
  """Undo `difference`: rebuild the values that follow `history` from their differences.

  `inverse_difference(x[:lag], difference(x, lag), lag)` equals `x[lag:]`; with
  forecasts of differences, pass the observed series so far as `history`.

  Args:
    history: `[H, ...]` original values just before the first differenced one, H >= lag.
    diffed: `[S, ...]` differences (e.g. forecasts of them), possibly several steps.
    lag: the lag `difference` used.

  Returns:
    `[S, ...]` float32 values in original units.
  """
  history, diffed = _as_float(history, "history"), _as_float(diffed, "diffed")
  _check_lag(lag, None)
  if len(history) < lag:
    raise ValueError(f"history holds {len(history)} value(s) but lag={lag} needs the last {lag} "
                     "original values before the differenced segment.")
  # Each value adds its difference to the value one lag back, which for the
  # first `lag` steps is in the history and afterwards in the output itself.
  values = np.concatenate([history[-lag:], np.zeros_like(diffed)], axis=0)
  for t in range(len(diffed)):
    values[lag + t] = values[t] + diffed[t]
  return values[lag:].astype(np.float32)


def _check_lag(lag: int, length: int | None) -> None:
  if isinstance(lag, bool) or not isinstance(lag, (int, np.integer)) or lag < 1:
    raise ValueError(f"lag must be a positive integer, got {lag!r}.")
  if length is not None and lag >= length:
    raise ValueError(f"lag={lag} needs a series longer than {lag} steps, got {length}.")


def log_transform(x: Any, offset: float = 0.0) -> np.ndarray:
  """`log(x + offset)` as float32; offset shifts data with zeros or negatives above 0.

  Raises:
    ValueError: some `x + offset <= 0`.
  """
  x = _as_float(x)
  if np.any(x + offset <= 0):
    raise ValueError(f"log_transform needs x + offset > 0, but the smallest x is {x.min():g} and "
                     f"offset = {offset:g}; pass offset > {0.0 - x.min():g}.")
  return np.log(x + offset).astype(np.float32)


def inverse_log_transform(y: Any, offset: float = 0.0) -> np.ndarray:
  """Undo `log_transform`: `exp(y) - offset` as float32."""
  return (np.exp(_as_float(y, "y")) - offset).astype(np.float32)


def boxcox(x: Any, lmbda: float | None = None) -> tuple[np.ndarray, float]:
  """Box-Cox transform with a given lambda, or one fitted by maximum likelihood.

  Fit on the training part (`y_train, lam = boxcox(train)`) and pass the lambda
  for the rest (`boxcox(val, lam)`). lambda 0 is the log, 1 a shift.

  Args:
    x: `[...]` positive values (all axes pooled when fitting lambda).
    lmbda: lambda; None fits it on `x` (scipy.stats.boxcox).

  Returns:
    (`[...]` float32 transformed values, lambda as a float).

  Raises:
    ValueError: non-positive values, or a constant `x` when fitting.
  """
  x = _as_float(x)
  if np.any(x <= 0) or not np.isfinite(x).all():
    raise ValueError(f"Box-Cox needs finite x > 0, but min(x) = {np.nanmin(x):g}; shift the data first "
                     "(x + c) or use log_transform(x, offset=c).")
  if lmbda is None:
    if np.ptp(x) == 0:
      raise ValueError("cannot fit a Box-Cox lambda on constant data; give lmbda explicitly.")
    import scipy.stats  # lazily: 0.5 s of import that only Box-Cox needs
    _, lmbda = scipy.stats.boxcox(x.ravel())
  lmbda = float(lmbda)
  import scipy.special
  return scipy.special.boxcox(x, lmbda).astype(np.float32), lmbda


def inverse_boxcox(y: Any, lmbda: float) -> np.ndarray:
  """Undo `boxcox` with the same lambda (scipy.special.inv_boxcox), float32."""
  import scipy.special
  return scipy.special.inv_boxcox(_as_float(y, "y"), float(lmbda)).astype(np.float32)


# --------------------------------------------------------------------------- windows and splits


def sliding_windows(series: Any, n_in: int, n_out: int = 1,
                    target_columns: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Frame a series as supervised learning: `n_in` past steps predict the next `n_out`.

  Args:
    series: `[T, F]` (or `[T]`, one feature), time first.
    n_in: input steps per window, >= 1.
    n_out: predicted steps per window, >= 1.
    target_columns: the feature indices to predict; None = all F.

  Returns:
    (x `[N, n_in, F]`, y `[N, n_out * targets]`) float32 with N = T - n_in - n_out + 1.
    y is step-major: `y[:, s * targets + j]` is target j at step s after the window.

  Raises:
    ValueError: bad sizes, or a series shorter than n_in + n_out.
  """
  series = _as_float(series, "series")
  if series.ndim == 1:
    series = series[:, None]
  if series.ndim != 2:
    raise ValueError(f"series must have shape [time, features] or [time], got {series.shape}.")
  for name, value in (("n_in", n_in), ("n_out", n_out)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
      raise ValueError(f"{name} must be a positive integer, got {value!r}.")
  length, n_features = series.shape
  columns = list(range(n_features)) if target_columns is None else [int(c) for c in target_columns]
  if not columns or any(not 0 <= c < n_features for c in columns):
    raise ValueError(f"target_columns must be a non-empty list of indices in [0, {n_features - 1}], "
                     f"got {target_columns!r}.")
  n_windows = length - n_in - n_out + 1
  if n_windows < 1:
    raise ValueError(f"a series of {length} steps is too short for n_in={n_in} + n_out={n_out}: "
                     f"it needs at least {n_in + n_out} steps.")
  # Window w starts at step w: inputs are steps w..w+n_in-1, targets the n_out after.
  starts = np.arange(n_windows)[:, None]
  x = series[starts + np.arange(n_in)]
  y = series[starts + n_in + np.arange(n_out)][:, :, columns].reshape(n_windows, n_out * len(columns))
  return x.astype(np.float32), y.astype(np.float32)


def validation_split(x: Any, y: Any, fraction: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Hold out the last `fraction` of the samples, as Keras' `validation_split`.

  Keras takes the split before any shuffling, at `floor(N * (1 - fraction))`.

  Args:
    x: `[N, ...]` inputs.
    y: `[N, ...]` targets.
    fraction: in (0, 1).

  Returns:
    (x_train, y_train, x_val, y_val).

  Raises:
    ValueError: fraction outside (0, 1), mismatched N, or a split leaving either part empty.
  """
  x, y = np.asarray(x), np.asarray(y)
  if not 0 < fraction < 1:
    raise ValueError(f"fraction must be in (0, 1), got {fraction!r}.")
  if len(x) != len(y):
    raise ValueError(f"x has {len(x)} samples but y has {len(y)}.")
  split_at = int(math.floor(len(x) * (1.0 - fraction)))
  if split_at in (0, len(x)):
    raise ValueError(f"{len(x)} samples are too few to split with fraction={fraction}: one part would be "
                     "empty; use more data or another fraction.")
  return x[:split_at], y[:split_at], x[split_at:], y[split_at:]


def rolling_origin_splits(n: int, n_splits: int, min_train: int, horizon: int = 1, *,
                          step: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
  """Walk-forward (rolling origin, expanding window) splits of a series.

  The last split validates on the final `horizon` steps; each earlier split's
  origin is `step` earlier (default `horizon`: validation blocks that tile the
  end of the series, like sklearn's TimeSeriesSplit with test_size=horizon).
  Training is always everything before the origin.

  Args:
    n: the series (or sample) length.
    n_splits: how many origins.
    min_train: the least training length the first split may have.
    horizon: validation steps per split.
    step: steps between origins; use 1 for one-step walk-forward validation.

  Returns:
    n_splits pairs (train_index `[origin]`, val_index `[horizon]`), earliest first.

  Raises:
    ValueError: the series is too short for the request (says how long it must be).
  """
  for name, value in (("n_splits", n_splits), ("min_train", min_train), ("horizon", horizon)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
      raise ValueError(f"{name} must be a positive integer, got {value!r}.")
  step = horizon if step is None else step
  if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 1:
    raise ValueError(f"step must be a positive integer, got {step!r}.")
  needed = min_train + (n_splits - 1) * step + horizon
  if n < needed:
    raise ValueError(f"n={n} is too short for {n_splits} split(s) with min_train={min_train}, "
                     f"horizon={horizon}, step={step}: it needs n >= {needed}.")
  origins = [n - horizon - (n_splits - 1 - i) * step for i in range(n_splits)]
  return [(np.arange(o), np.arange(o, o + horizon)) for o in origins]


# --------------------------------------------------------------------------- datasets


def _fit(method: str, train: np.ndarray) -> Scaler:
  if method == "minmax":
    return fit_minmax(train)
  if method == "standard":
    return fit_standard(train)
  raise ValueError(f'scaling must be "minmax", "standard" or None, got {method!r}.')


def prepare(dataset: Dataset, scaling: str | None = "minmax", *, inputs: bool = True,
            targets: bool | None = None) -> Dataset:
  """Scale a dataset with statistics of its training part only.

  Inputs are scaled per feature over training samples and steps. Targets are
  scaled per output column, and the target scaler is recorded in
  `metadata["target_scaler"]` so that `to_original_units` maps predictions (and
  errors computed from them) back. When `metadata["target_features"]` says
  which input feature each output column is (forecasting problems such as
  `csv` and `damped_sine`), inputs and targets share one scaler fitted on the
  training windows' inputs and targets together, so a forecast is in the same
  units as the inputs it follows.

  Args:
    dataset: the `Dataset` to scale.
    scaling: "minmax" (to [0, 1]), "standard" (zero mean, unit variance) or None (unchanged).
    inputs: scale the inputs.
    targets: scale the targets; None = only for regression (class targets stay one-hot).

  Returns:
    A new `Dataset` with scaled arrays; metadata gains "scaling", "input_scaler"
    and "target_scaler" (scaler objects, None when not scaled).
  """
  if scaling is None:
    return dataset
  if "target_scaler" in dataset.metadata or "input_scaler" in dataset.metadata:
    # Scaling twice would leave to_original_units undoing only the second step.
    raise ValueError(f"dataset {dataset.name!r} was already prepared (scaling="
                     f"{dataset.metadata.get('scaling')!r}); prepare the unscaled dataset instead.")
  if targets is None:
    targets = dataset.task == "regression"
  target_features = dataset.metadata.get("target_features")
  x_train, y_train = dataset.x_train, dataset.y_train
  n_outputs = y_train.shape[-1]
  if target_features is not None and len(target_features) != n_outputs:
    raise ValueError(f'metadata["target_features"] names {len(target_features)} features but y has '
                     f"{n_outputs} output columns.")
  shared = target_features is not None and inputs and targets and y_train.ndim == 2
  if shared:
    # Pool each feature's input values with the target columns that are that
    # feature, so x and y are scaled identically.
    n_features = x_train.shape[-1]
    pooled = [np.concatenate([x_train[..., f].ravel(),
                              y_train[:, [j for j, t in enumerate(target_features) if t == f]].ravel()])
              for f in range(n_features)]
    fitted = [_fit(scaling, column) for column in pooled]
    input_scaler = _stack_scalers(fitted)
    target_scaler = input_scaler.select(target_features)
  else:
    input_scaler = _fit(scaling, x_train) if inputs else None
    target_scaler = _fit(scaling, y_train) if targets else None
  changes = {}
  if input_scaler is not None:
    changes.update(x_train=input_scaler.transform(dataset.x_train),
                   x_val=_transform_maybe_empty(input_scaler, dataset.x_val))
  if target_scaler is not None:
    changes.update(y_train=target_scaler.transform(dataset.y_train),
                   y_val=_transform_maybe_empty(target_scaler, dataset.y_val))
  metadata = {**dataset.metadata, "scaling": scaling, "input_scaler": input_scaler,
              "target_scaler": target_scaler}
  return dataclasses.replace(dataset, metadata=metadata, **changes)


def _stack_scalers(scalers: list[Scaler]) -> Scaler:
  first = scalers[0]
  if isinstance(first, MinMaxScaler):
    return MinMaxScaler(np.array([s.data_min for s in scalers]), np.array([s.data_max for s in scalers]),
                        first.feature_range)
  return StandardScaler(np.array([s.mean for s in scalers]), np.array([s.scale for s in scalers]))


def _transform_maybe_empty(scaler: Scaler, x: np.ndarray) -> np.ndarray:
  return scaler.transform(x) if x.size else x


def to_original_units(dataset: Dataset, y: Any) -> np.ndarray:
  """Map targets or predictions `[..., outputs]` of a `prepare`d dataset back to original units.

  Leading axes are free (e.g. `[repeats, N, outputs]` ensemble predictions);
  a dataset whose targets were not scaled returns `y` unchanged (as float32).
  """
  scaler = dataset.metadata.get("target_scaler")
  if scaler is None:
    return np.asarray(y, dtype=np.float32)
  return scaler.inverse(y)


def rolling_origin_datasets(dataset: Dataset, n_splits: int, min_train: int, horizon: int = 1, *,
                            step: int | None = None) -> list[Dataset]:
  """One Dataset per rolling origin over a dataset's samples in time order (train, then validation).

  For framed series (windows in chronological order, as `make("csv")` and
  `sliding_windows` give): fold k trains on every window before its origin and
  validates on the next `horizon` windows. Train each fold with `jaxlstm.fit`;
  folds differ in `n_train`, so each is its own compile. Scale inside a fold
  (`prepare(fold, ...)`) so that no fold sees its validation statistics.

  Returns:
    n_splits datasets, earliest origin first; metadata["fold"] = (k, origin).
  """
  x = np.concatenate([dataset.x_train, dataset.x_val])
  y = np.concatenate([dataset.y_train, dataset.y_val])
  folds = []
  for k, (train_idx, val_idx) in enumerate(rolling_origin_splits(len(x), n_splits, min_train, horizon, step=step)):
    folds.append(dataclasses.replace(
        dataset, x_train=x[train_idx], y_train=y[train_idx], x_val=x[val_idx], y_val=y[val_idx],
        metadata={**dataset.metadata, "fold": (k, int(len(train_idx)))}))
  return folds


# --------------------------------------------------------------------------- transforms of windowed series
#
# A framed series (`sliding_windows`, `make("csv")`, `damped_sine`) holds each sample's
# input window `x [N, T, F]` and the targets that follow it, `y [N, steps * targets]`
# (step-major; `metadata["target_features"]` names the input feature of each column).
# `transform_series` applies, to every target feature, a power transform (log or
# Box-Cox, lambda fitted on the training part) and then differencing at each lag, inside
# each sample: the window and its targets are one sequence, so a target's difference
# uses the level `lag` steps back, in the window or in an earlier target of the sample.
# The inverse is affine up to the power transform: z0 = M @ z + h per sample, with M
# summing the differenced columns back to levels and h the levels the window supplies,
# which are recorded per sample (`SeriesTransform.offsets`).

POWERS = ("none", "log", "boxcox")


@dataclasses.dataclass(frozen=True, eq=False)
class SeriesTransform:
  """How `transform_series` changed a dataset's targets, and what inverts it.

  Attributes:
    power: "none", "log" or "boxcox".
    lmbda: `[outputs]` float64 Box-Cox lambda of each target column (0 for log and none).
    lags: the differencing lags, in the order applied.
    features: the input feature of each distinct target (`target_layout`).
    matrix: `[outputs, outputs]` M: the levels (after the power transform) of a
      sample's target columns are `M @ z + h` for its differenced targets z.
    offsets: "train" / "val" -> `[N, outputs]` float64 h of each sample: what the
      window contributes to each level.
    originals: "train" / "val" -> `[N, outputs]` float64 targets in original units.
  """
  power: str
  lmbda: np.ndarray
  lags: tuple[int, ...]
  features: tuple[int, ...]
  matrix: np.ndarray
  offsets: dict[str, np.ndarray]
  originals: dict[str, np.ndarray]


def target_layout(dataset: Dataset) -> tuple[list[int], int]:
  """`(features, steps)` of a forecasting dataset's targets.

  Column `c` of `y [N, outputs]` is target `c % len(features)` (input feature
  `features[c % len(features)]`) at step `c // len(features)` after the window, as
  `sliding_windows` lays them out. Univariate inputs need no metadata; multivariate
  inputs need `metadata["target_features"]`.

  Raises:
    ValueError: classification, sequence targets, or targets whose input feature is unknown.
  """
  y = dataset.y_train
  if dataset.task != "regression":
    raise ValueError(f"the targets of {dataset.name!r} are classes ({dataset.task}), not a series")
  if y.ndim != 2:
    raise ValueError(f"the targets of {dataset.name!r} are sequences {y.shape[1:]}, not the next steps of a "
                     "series [samples, steps * targets]")
  outputs = y.shape[1]
  features = dataset.metadata.get("target_features")
  if features is None:
    if dataset.n_features != 1:
      raise ValueError(f"{dataset.name!r} has {dataset.n_features} input features and no "
                       "metadata['target_features'] saying which one each target is")
    features = [0] * outputs
  features = [int(f) for f in features]
  if len(features) != outputs or not all(0 <= f < dataset.n_features for f in features):
    raise ValueError(f"metadata['target_features'] = {features} does not name an input feature for each of "
                     f"the {outputs} target columns")
  for width in range(1, outputs + 1):
    head = features[:width]
    if outputs % width == 0 and features == head * (outputs // width) and len(set(head)) == width:
      return head, outputs // width
  raise ValueError(f"metadata['target_features'] = {features} is not steps x distinct targets (step-major)")


def _column_layout(features: Sequence[int], steps: int) -> tuple[np.ndarray, np.ndarray]:
  """`[outputs]` target index and step of each column."""
  columns = np.arange(len(features) * steps)
  return columns % len(features), columns // len(features)


def difference_matrix(features: Sequence[int], steps: int, lags: Sequence[int]) -> np.ndarray:
  """`[outputs, outputs]` M with levels = M @ differences + window levels (see module notes)."""
  target, step = _column_layout(features, steps)
  matrix = np.eye(len(target))
  for lag in lags:
    # Undoing one lag: level[s] = sum of differences at s, s - lag, s - 2 lag, ... (same target).
    behind = step[:, None] - step[None, :]
    matrix = matrix @ ((target[:, None] == target[None, :]) & (behind >= 0) & (behind % lag == 0))
  return matrix


def _power(values: np.ndarray, power: str, lmbda: float) -> np.ndarray:
  if power == "log":
    return np.log(values)
  if power == "boxcox":
    import scipy.special
    return scipy.special.boxcox(values, lmbda)
  return values


def invert_power(z: Any, power: str, lmbda: Any) -> np.ndarray:
  """Undo the power transform per column (`lmbda` broadcasts on the last axis), float64.

  Box-Cox values outside its range (lambda z + 1 <= 0) map to the edge of the
  original range: 0 for lambda > 0, +inf for lambda < 0 (scipy gives NaN there);
  the compiled `mae_original` does the same.
  """
  z = np.asarray(z, np.float64)
  if power == "log":
    return np.exp(z)
  if power != "boxcox":
    return z
  lmbda = np.broadcast_to(np.asarray(lmbda, np.float64), z.shape[-1:])
  safe = np.where(lmbda == 0, 1.0, lmbda)
  with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
    return np.where(lmbda == 0, np.exp(z), np.maximum(safe * z + 1.0, 0.0) ** (1.0 / safe))


def transform_series(dataset: Dataset, *, difference: Sequence[int] = (), transform: str = "none") -> Dataset:
  """Power-transform and difference the target series of a framed dataset, inside each sample.

  For each target feature, the sample's window and its targets are one sequence:
  the power transform (log, or Box-Cox with lambda fitted on the training part's
  values of that feature, windows and targets pooled) applies to all of it, then
  each lag differences it in turn, so a window of T steps keeps its last
  `T - sum(difference)` steps (every input feature loses the first ones) and a
  target becomes its change over `lag` steps. Other input features are left as
  they are. Scale afterwards (`prepare`): fitted on the transformed training part.

  Args:
    dataset: a framed series (see `target_layout`).
    difference: lags, applied in order (e.g. `[1, 12]`: a lag-1 then a seasonal difference).
    transform: "none", "log" or "boxcox".

  Returns:
    The transformed dataset; `metadata["series_transform"]` holds a `SeriesTransform`
    (what `to_original` needs).

  Raises:
    ValueError: an undefined request (see `target_layout`), lags that leave no
      input step, or non-positive values under log / Box-Cox.
  """
  if transform not in POWERS:
    raise ValueError(f"transform must be one of {', '.join(map(repr, POWERS))}, got {transform!r}.")
  lags = tuple(int(lag) for lag in difference)
  for lag in lags:
    _check_lag(lag, None)
  if "series_transform" in dataset.metadata or "target_scaler" in dataset.metadata:
    raise ValueError(f"dataset {dataset.name!r} was already transformed or scaled; transform the raw series "
                     "(transforms come before scaling).")
  features, steps = target_layout(dataset)
  time = dataset.x_train.shape[1]
  if sum(lags) >= time:
    raise ValueError(f"differencing at lags {list(lags)} needs input windows longer than {sum(lags)} steps, "
                     f"but the windows have {time}")
  target, _ = _column_layout(features, steps)
  parts = {"train": (dataset.x_train, dataset.y_train), "val": (dataset.x_val, dataset.y_val)}
  lmbda = np.zeros(len(features))
  for j, f in enumerate(features):
    if transform == "none":
      continue
    for part, (x, y) in parts.items():
      values = np.concatenate([x[..., f].ravel(), y[:, target == j].ravel()]).astype(np.float64)
      if values.size and values.min() <= 0:
        raise ValueError(f"{transform} needs positive values, but input feature {f} of the {part} part has "
                         f"min {values.min():g}")
    if transform == "boxcox":
      x, y = parts["train"]
      lmbda[j] = boxcox(np.concatenate([x[..., f].ravel(), y[:, target == j].ravel()]))[1]
  matrix = difference_matrix(features, steps, lags)
  changes, offsets, originals = {}, {}, {}
  for part, (x, y) in parts.items():
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    x_out = x64[:, sum(lags):, :].copy()
    levels, diffed = np.zeros_like(y64), np.zeros_like(y64)
    for j, f in enumerate(features):
      columns = target == j
      sequence = _power(np.concatenate([x64[:, :, f], y64[:, columns]], axis=1), transform, lmbda[j])
      levels[:, columns] = sequence[:, time:]
      for lag in lags:
        sequence = sequence[:, lag:] - sequence[:, :-lag]
      x_out[:, :, f] = sequence[:, :-steps]
      diffed[:, columns] = sequence[:, -steps:]
    offsets[part] = levels - diffed @ matrix.T  # the window's share of each level
    originals[part] = y64
    changes[f"x_{part}"], changes[f"y_{part}"] = x_out.astype(np.float32), diffed.astype(np.float32)
  record = SeriesTransform(transform, lmbda[target], lags, tuple(features), matrix, offsets, originals)
  metadata = {**dataset.metadata, "series_transform": record}
  return dataclasses.replace(dataset, metadata=metadata, **changes)


def inverse_map(dataset: Dataset, part: str = "val") -> tuple[np.ndarray, np.ndarray]:
  """`(A [outputs, outputs], c [N, outputs])`: transformed levels = predictions @ A.T + c.

  Folds the target scaler's inverse (affine) and the differencing inverse into one
  map per sample of `part` ("train", "val", or "all": train then val); the power
  transform's inverse (`invert_power`) then gives original units. Without
  `transform_series`, A is the scaler's inverse and c its shift (the same for every sample).
  """
  outputs = dataset.y_train.shape[-1]
  scaler = dataset.metadata.get("target_scaler")
  scale, shift = scaler.affine() if scaler is not None else (np.ones(outputs), np.zeros(outputs))
  scale = np.broadcast_to(np.asarray(scale, np.float64), (outputs,))
  shift = np.broadcast_to(np.asarray(shift, np.float64), (outputs,))
  record: SeriesTransform | None = dataset.metadata.get("series_transform")
  n = {"train": len(dataset.x_train), "val": len(dataset.x_val)}
  if part not in ("train", "val", "all"):
    raise ValueError(f"part must be 'train', 'val' or 'all', got {part!r}.")
  n_part = n["train"] + n["val"] if part == "all" else n[part]
  if record is None:
    return np.diag(scale), np.broadcast_to(shift, (n_part, outputs))
  offsets = (np.concatenate([record.offsets["train"], record.offsets["val"]]) if part == "all"
             else record.offsets[part])
  return record.matrix * scale[None, :], offsets + record.matrix @ shift


def originals(dataset: Dataset, part: str = "val") -> np.ndarray:
  """`[N, outputs]` float64 targets of `part` in the series' original units (before every transform)."""
  record: SeriesTransform | None = dataset.metadata.get("series_transform")
  if record is None:
    ys = {"train": dataset.y_train, "val": dataset.y_val}
    y = np.concatenate([ys["train"], ys["val"]]) if part == "all" else ys[part]
    return np.asarray(to_original_units(dataset, y), np.float64)
  if part == "all":
    return np.concatenate([record.originals["train"], record.originals["val"]])
  return record.originals[part]


def to_original(dataset: Dataset, predictions: Any, part: str = "val") -> np.ndarray:
  """Map predictions back to the series' original units, inverting every transform.

  Undoes scaling, then differencing (adding the levels each sample's window gives,
  and earlier predicted steps for multi-step targets), then log / Box-Cox. Without
  `transform_series` this is `to_original_units`.

  Args:
    dataset: the resolved dataset the model trained on (`jaxlstm.data.resolve`).
    predictions: `[..., N, outputs]` predictions for the samples of `part`, e.g.
      `Ensemble.predict(dataset.x_val)` `[repeats, N, outputs]`.
    part: whose samples they are: "val", "train" or "all" (train then val, the
      pooled order cross-validation folds index).

  Returns:
    `[..., N, outputs]` float32 in original units.

  Raises:
    ValueError: `predictions` do not have one row per sample of `part`.
  """
  matrix, offsets = inverse_map(dataset, part)
  p = np.asarray(predictions, np.float64)
  if p.ndim < 2 or p.shape[-2:] != offsets.shape:
    raise ValueError(f"predictions of shape {p.shape} do not match the {part} part's {offsets.shape[0]} "
                     f"samples x {offsets.shape[1]} outputs; pass part='train', 'val' or 'all' to match them.")
  record: SeriesTransform | None = dataset.metadata.get("series_transform")
  levels = p @ matrix.T + offsets
  if record is None:
    return levels.astype(np.float32)
  return invert_power(levels, record.power, record.lmbda).astype(np.float32)
