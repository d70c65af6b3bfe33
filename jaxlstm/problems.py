"""Sequence problems of the LSTM methodology, generated deterministically.

`make(name, **kw)` returns a `Dataset` of numpy arrays shaped
`[samples, time, features]` (inputs) and `[samples, outputs]` or
`[samples, time, outputs]` (targets). The problems (`PROBLEMS`):

  linear         the five-point problem of the default study (regression)
  echo           recall the value at one position of a random sequence (categorical)
  damped_sine    forecast the next steps of a damped sine wave (multi-step regression)
  addition       "10+6+5" -> "21" as one-hot characters (sequence to sequence, categorical)
  moving_square  the direction a dot moves across video frames (binary)
  csv            any series from a CSV file, as sliding windows (regression)

Generated problems take a `seed` and are deterministic in it: the same seed
gives the same arrays on every machine (numpy's default_rng), and training and
validation samples come from separate streams. metadata carries the problem's
parameters and the suggested head, loss and metrics ("output_activation",
"loss", "metrics", named as in `jaxlstm.config`).
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from jaxlstm import prep


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
  """Training and validation arrays plus what describes them.

  Attributes:
    x_train: `[n_train, time, features]` float32.
    y_train: `[n_train, outputs]` or `[n_train, time_out, outputs]` float32.
    x_val, y_val: the same for validation.
    name: the problem's name.
    task: "regression", "binary" or "categorical".
    metadata: problem parameters and anything needed to map predictions back
      to original units (e.g. fitted scalers).
  """
  x_train: np.ndarray
  y_train: np.ndarray
  x_val: np.ndarray
  y_val: np.ndarray
  name: str = "custom"
  task: str = "regression"
  metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    for field in ("x_train", "y_train", "x_val", "y_val"):
      value = np.asarray(getattr(self, field), dtype=np.float32)
      object.__setattr__(self, field, value)
    check_dataset(self)

  @property
  def n_features(self) -> int:
    return int(self.x_train.shape[-1])

  @property
  def n_outputs(self) -> int:
    return int(self.y_train.shape[-1])

  @property
  def fingerprint(self) -> str:
    """Hash of the arrays: tells whether two runs saw the same data."""
    import hashlib
    digest = hashlib.sha256()
    for array in (self.x_train, self.y_train, self.x_val, self.y_val):
      digest.update(str(array.shape).encode())
      digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def check_dataset(ds: Dataset) -> None:
  """Raise ValueError naming the array and the fix when shapes or values are unusable."""
  for prefix in ("train", "val"):
    x, y = getattr(ds, f"x_{prefix}"), getattr(ds, f"y_{prefix}")
    if x.ndim != 3:
      raise ValueError(f"x_{prefix} must have shape [samples, time, features], got {x.shape}; "
                       "reshape a 2-D array with x[:, :, None] (one feature) or x[:, None, :] (one step).")
    if y.ndim not in (2, 3):
      raise ValueError(f"y_{prefix} must have shape [samples, outputs] or [samples, time, outputs], "
                       f"got {y.shape}; reshape a 1-D target with y[:, None].")
    if x.shape[0] != y.shape[0]:
      raise ValueError(f"x_{prefix} has {x.shape[0]} samples but y_{prefix} has {y.shape[0]}.")
    if x.shape[0] == 0 and prefix == "train":
      raise ValueError("x_train is empty: the training set needs at least one sample.")
    for name, array in ((f"x_{prefix}", x), (f"y_{prefix}", y)):
      bad = ~np.isfinite(array)
      if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{name} holds {int(bad.sum())} non-finite value(s) (first at index {where}); "
                         "clean or impute the data before training.")
  if ds.x_val.shape[0] and ds.x_val.shape[1:] != ds.x_train.shape[1:]:
    raise ValueError(f"x_val has per-sample shape {ds.x_val.shape[1:]} but x_train has {ds.x_train.shape[1:]}.")
  if ds.y_val.shape[0] and ds.y_val.shape[1:] != ds.y_train.shape[1:]:
    raise ValueError(f"y_val has per-sample shape {ds.y_val.shape[1:]} but y_train has {ds.y_train.shape[1:]}.")


# The head, loss and metrics each kind of task suggests, in metadata so a
# script can configure a model from the data (names as in jaxlstm.config).
_REGRESSION = {"output_activation": "linear", "loss": "mse", "metrics": ["mae"]}
_BINARY = {"output_activation": "sigmoid", "loss": "binary_crossentropy", "metrics": ["accuracy"]}
_CATEGORICAL = {"output_activation": "softmax", "loss": "categorical_crossentropy", "metrics": ["accuracy"]}


def linear() -> Dataset:
  """The five-point problem of the default study (Brownlee's "how many memory cells").

  Train: X = 0.0, 0.1, ..., 0.4 and y = X + 0.1; validation: X = 0.5 ... 0.9,
  y = X + 0.1. Inputs are one time step of one feature: `[5, 1, 1]`; targets `[5, 1]`.
  """
  x_train = np.round(np.arange(0.0, 0.5, 0.1), 1)
  x_val = np.round(np.arange(0.5, 1.0, 0.1), 1)
  return Dataset(
      x_train=x_train.reshape(5, 1, 1), y_train=(x_train + 0.1).reshape(5, 1),
      x_val=x_val.reshape(5, 1, 1), y_val=(x_val + 0.1).reshape(5, 1),
      name="linear", task="regression", metadata={"problem": "linear", **_REGRESSION})


class OptionError(ValueError):
  """A problem option holds a value that is not allowed.

  Attributes:
    option: the option's name (its `data.options.<name>` in a config); the
      message starts with it.
  """

  def __init__(self, option: str, message: str):
    super().__init__(message)
    self.option = option


# Largest array a generator builds, in values (1 GiB of float32): a typo such as
# n_train=10**9 is refused with one line instead of exhausting memory.
MAX_VALUES = 2**28


def _check_int(name: str, value: Any, minimum: int, maximum: int | None = None) -> int:
  if (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum
      or (maximum is not None and value > maximum)):
    allowed = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
    raise OptionError(name, f"{name} must be an integer {allowed}, got {value!r}.")
  return int(value)


def _check_number(name: str, value: Any, *, low: float = -math.inf, high: float = math.inf) -> float:
  if (isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating))
      or not math.isfinite(value) or not low <= value <= high):
    if math.isinf(low) and math.isinf(high):
      allowed = "a finite number"
    elif math.isinf(high):
      allowed = f"a finite number >= {low:g}"
    else:
      allowed = f"a finite number in [{low:g}, {high:g}]"
    raise OptionError(name, f"{name} must be {allowed}, got {value!r}.")
  return float(value)


def _check_pair(name: str, value: Any) -> tuple[Any, Any]:
  if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
    raise OptionError(name, f"{name} must be a pair [low, high], got {value!r}.")
  return value[0], value[1]


def _check_values(shape: tuple[int, ...], what: str, options: str) -> None:
  """Refuse an array of more than MAX_VALUES values before building it."""
  values = math.prod(shape)
  if values > MAX_VALUES:
    raise ValueError(f"{options} would make {what} of shape {shape}, {values:,} values "
                     f"({values * 4 / 2**30:.1f} GiB); lower them (at most {MAX_VALUES:,} values per array).")


def _split_rngs(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
  """Independent generators for the training and the validation samples."""
  seed = _check_int("seed", seed, 0)
  # Two child streams rather than one: the validation set then stays the same
  # when only n_train changes (a "how much data" study compares like with like).
  train_seq, val_seq = np.random.SeedSequence(seed).spawn(2)
  return np.random.default_rng(train_seq), np.random.default_rng(val_seq)


def echo(n_train: int = 1000, n_val: int = 100, length: int = 5, n_features: int = 10,
         index: int = 2, seed: int = 0) -> Dataset:
  """Echo sequence prediction: remember the value at one position of a random sequence.

  Brownlee's vanilla-LSTM problem: each sample is `length` random integers in
  `[0, n_features)`, one-hot encoded; the target is the one-hot value at
  position `index` (2 in Brownlee's chapter; negative counts from the end), so
  the network must carry it through the later steps. Categorical: softmax
  head, categorical cross-entropy, accuracy.

  Args:
    n_train, n_val: samples per split.
    length: steps per sequence.
    n_features: distinct values (= one-hot width).
    index: the echoed position, in `[-length, length)`.
    seed: generator seed (same seed, same arrays).

  Returns:
    Dataset with x `[n, length, n_features]` and y `[n, n_features]`, both one-hot float32.
  """
  n_train, n_val = _check_int("n_train", n_train, 1), _check_int("n_val", n_val, 0)
  length, n_features = _check_int("length", length, 1), _check_int("n_features", n_features, 2)
  if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not -length <= index < length:
    raise OptionError("index", f"index must be an integer in [{-length}, {length - 1}] for length={length}, "
                      f"got {index!r}.")
  index = int(index) % length
  train_rng, val_rng = _split_rngs(seed)
  _check_values((max(n_train, n_val), length, n_features), "x",
                f"n_train={n_train}, n_val={n_val}, length={length}, n_features={n_features}")

  def split(rng, n):
    x = prep.one_hot(rng.integers(0, n_features, size=(n, length)), n_features)
    return x, x[:, index]

  (x_train, y_train), (x_val, y_val) = split(train_rng, n_train), split(val_rng, n_val)
  metadata = {"problem": "echo", "n_train": n_train, "n_val": n_val, "length": length,
              "n_features": n_features, "index": index, "seed": seed, **_CATEGORICAL}
  return Dataset(x_train, y_train, x_val, y_val, name="echo", task="categorical", metadata=metadata)


def damped_sine(n_train: int = 1000, n_val: int = 200, length: int = 50, horizon: int = 5,
                period: tuple[int, int] = (10, 20), decay: tuple[float, float] = (0.01, 0.1),
                offset: float = 0.5, amplitude: float = 0.5,
                seed: int = 0) -> Dataset:
  """Damped sine waves: forecast the next `horizon` values of a decaying oscillation.

  Brownlee's stacked-LSTM problem. Sample k is
  `s_k[i] = 0.5 + 0.5 * sin(2 * pi * i / p_k) * exp(-d_k * i)` for
  `i = 0 .. length + horizon - 1` (always starting at i = 0, as Brownlee), with
  its own period `p_k`, an integer drawn uniformly from `period` (both ends
  included), and decay `d_k`, a float drawn uniformly from `[decay[0], decay[1])`.
  The first `length` values are the input and the last `horizon` the target.
  Values lie in [0, 1]. Multi-step regression (Brownlee trains it with MAE).

  Args:
    n_train, n_val: samples per split.
    length: input steps.
    horizon: predicted steps.
    period: (low, high) integer periods, 1 <= low <= high.
    offset, amplitude: the wave is `offset + amplitude * sin(...) * exp(...)`
      (0.5 and 0.5 by default; larger values give data in raw units, for scaling studies).
    decay: (low, high) decay rates, 0 <= low <= high.
    seed: generator seed.

  Returns:
    Dataset with x `[n, length, 1]` and y `[n, horizon]` float32; metadata holds
    each sample's period and decay ("period_train", "decay_train", ...).
  """
  n_train, n_val = _check_int("n_train", n_train, 1), _check_int("n_val", n_val, 0)
  length, horizon = _check_int("length", length, 1), _check_int("horizon", horizon, 1)
  p_low, p_high = (_check_int("period", p, 1, 10**9) for p in _check_pair("period", period))
  d_low, d_high = (_check_number("decay", d, low=0.0) for d in _check_pair("decay", decay))
  if p_low > p_high:
    raise OptionError("period", f"period must be (low, high) with low <= high, got {period!r}.")
  if not 0 <= d_low <= d_high:
    raise OptionError("decay", f"decay must be (low, high) with 0 <= low <= high, got {decay!r}.")
  # The wave is float32: keep |offset| + |amplitude| far from its range.
  offset = _check_number("offset", offset, low=-1e30, high=1e30)
  amplitude = _check_number("amplitude", amplitude, low=-1e30, high=1e30)
  train_rng, val_rng = _split_rngs(seed)
  _check_values((max(n_train, n_val), length + horizon), "the waves",
                f"n_train={n_train}, n_val={n_val}, length={length}, horizon={horizon}")
  steps = np.arange(length + horizon)

  def split(rng, n):
    periods = rng.integers(p_low, p_high + 1, size=n)
    decays = rng.uniform(d_low, d_high, size=n)
    waves = offset + amplitude * np.sin(2 * np.pi * steps / periods[:, None]) * np.exp(-decays[:, None] * steps)
    return waves[:, :length, None], waves[:, length:], periods, decays

  x_train, y_train, p_train, d_train = split(train_rng, n_train)
  x_val, y_val, p_val, d_val = split(val_rng, n_val)
  metadata = {"problem": "damped_sine", "n_train": n_train, "n_val": n_val, "length": length,
              "horizon": horizon, "period": [p_low, p_high], "decay": [d_low, d_high], "seed": seed,
              "target_features": [0] * horizon, **_REGRESSION, "loss": "mae",
              "period_train": p_train.tolist(), "decay_train": d_train.tolist(),
              "period_val": p_val.tolist(), "decay_val": d_val.tolist()}
  return Dataset(x_train, y_train, x_val, y_val, name="damped_sine", task="regression", metadata=metadata)


ADDITION_ALPHABET = "0123456789+ "


def addition(n_train: int = 1000, n_val: int = 100, n_terms: int = 3, largest: int = 10,
             seed: int = 0) -> Dataset:
  """Addition as characters: read "10+6+5", write "21" (sequence to sequence).

  Brownlee's encoder-decoder problem. Each sample adds `n_terms` integers
  drawn uniformly from `[1, largest]`. The question and the answer are strings
  over `ADDITION_ALPHABET` ("0123456789+ "), left-padded with spaces to fixed
  lengths (`in_len = n_terms * digits(largest) + n_terms - 1`,
  `out_len = digits(n_terms * largest)`: 8 and 2 by default), and one-hot
  encoded per character. Categorical per output step (softmax over 12);
  `decode_addition` turns one-hot rows or predictions back into strings.

  Args:
    n_train, n_val: samples per split.
    n_terms: numbers added per sample.
    largest: the largest number.
    seed: generator seed.

  Returns:
    Dataset with x `[n, in_len, 12]` and y `[n, out_len, 12]` one-hot float32;
    metadata holds "alphabet", "in_len" and "out_len".
  """
  n_train, n_val = _check_int("n_train", n_train, 1), _check_int("n_val", n_val, 0)
  n_terms, largest = _check_int("n_terms", n_terms, 1), _check_int("largest", largest, 1, 10**12)
  if n_terms * largest > 10**15:  # the sums stay exact integers
    raise OptionError("largest", f"largest must keep n_terms * largest <= 1e15, got largest={largest} with "
                      f"n_terms={n_terms}.")
  in_len = n_terms * len(str(largest)) + n_terms - 1
  out_len = len(str(n_terms * largest))
  train_rng, val_rng = _split_rngs(seed)
  _check_values((max(n_train, n_val), in_len, len(ADDITION_ALPHABET)), "x",
                f"n_train={n_train}, n_val={n_val}, n_terms={n_terms}, largest={largest}")

  def split(rng, n):
    terms = rng.integers(1, largest + 1, size=(n, n_terms))
    questions = ["+".join(str(t) for t in row).rjust(in_len) for row in terms.tolist()]
    answers = [str(total).rjust(out_len) for total in terms.sum(axis=1).tolist()]
    return _encode_strings(questions, in_len), _encode_strings(answers, out_len)

  (x_train, y_train), (x_val, y_val) = split(train_rng, n_train), split(val_rng, n_val)
  metadata = {"problem": "addition", "n_train": n_train, "n_val": n_val, "n_terms": n_terms,
              "largest": largest, "seed": seed, "alphabet": ADDITION_ALPHABET, "in_len": in_len,
              "out_len": out_len, **_CATEGORICAL}
  return Dataset(x_train, y_train, x_val, y_val, name="addition", task="categorical", metadata=metadata)


def _encode_strings(strings: list[str], width: int) -> np.ndarray:
  lookup = {char: code for code, char in enumerate(ADDITION_ALPHABET)}
  codes = np.array([[lookup[char] for char in s] for s in strings], dtype=np.int64).reshape(len(strings), width)
  return prep.one_hot(codes, len(ADDITION_ALPHABET))


def decode_addition(onehot: Any) -> list[str]:
  """Strings of one-hot rows or predicted class scores over `ADDITION_ALPHABET`.

  Args:
    onehot: `[n, steps, 12]`, e.g. `addition().x_val`, `y_val` or a model's softmax output.

  Returns:
    n strings, padding spaces stripped (e.g. ["10+6+5", ...] or ["21", ...]).
  """
  onehot = np.asarray(onehot)
  if onehot.ndim != 3 or onehot.shape[-1] != len(ADDITION_ALPHABET):
    raise ValueError(f"decode_addition expects [samples, steps, {len(ADDITION_ALPHABET)}], got {onehot.shape}; "
                     "add a leading axis for a single sequence (x[None]).")
  alphabet = np.array(list(ADDITION_ALPHABET))
  return ["".join(row).strip() for row in alphabet[prep.one_hot_inverse(onehot)].tolist()]


def moving_square(n_train: int = 1000, n_val: int = 200, size: int = 10, trail: bool = True,
                  seed: int = 0) -> Dataset:
  """Which way does a dot move across a video? (binary; Brownlee's CNN-LSTM problem).

  Each sample is `size` frames of a `size` x `size` grid. A one-pixel dot starts
  in a random row of the left column (moving right) or the right column
  (moving left) and advances one column per frame, while its row takes a
  random step of -1, 0 or +1, uniform over the moves that stay on the grid
  (Brownlee's `next_frame`). With `trail=True` (Brownlee) earlier pixels stay
  lit, so each frame shows the line drawn so far; with `trail=False` a frame
  shows only the dot. The label is 1 for left-to-right, 0 for right-to-left.
  Frames are flattened row-major; a CNN front end reshapes them with
  `metadata["frame_shape"]`.

  Args:
    n_train, n_val: samples per split.
    size: grid side = number of frames (the dot crosses in `size` steps).
    trail: keep the path drawn so far.
    seed: generator seed.

  Returns:
    Dataset with x `[n, size, size * size]` in {0, 1} and y `[n, 1]` float32.
  """
  n_train, n_val = _check_int("n_train", n_train, 1), _check_int("n_val", n_val, 0)
  size = _check_int("size", size, 2)
  if not isinstance(trail, (bool, np.bool_)):
    raise OptionError("trail", f"trail must be True or False, got {trail!r}.")
  train_rng, val_rng = _split_rngs(seed)
  _check_values((max(n_train, n_val), size, size, size), "the videos",
                f"n_train={n_train}, n_val={n_val}, size={size}")
  frames = np.arange(size)

  def split(rng, n):
    rightward = rng.random(n) < 0.5
    rows = np.empty((n, size), dtype=np.int64)
    rows[:, 0] = rng.integers(0, size, size=n)
    for t in range(1, size):
      low = np.maximum(rows[:, t - 1] - 1, 0)
      high = np.minimum(rows[:, t - 1] + 1, size - 1)
      rows[:, t] = rng.integers(low, high + 1)
    cols = np.where(rightward[:, None], frames, size - 1 - frames)
    video = np.zeros((n, size, size, size), dtype=np.float32)
    video[np.arange(n)[:, None], frames, rows, cols] = 1.0
    if trail:
      video = np.maximum.accumulate(video, axis=1)
    return video.reshape(n, size, size * size), rightward.astype(np.float32)[:, None]

  (x_train, y_train), (x_val, y_val) = split(train_rng, n_train), split(val_rng, n_val)
  metadata = {"problem": "moving_square", "n_train": n_train, "n_val": n_val, "size": size,
              "trail": bool(trail), "seed": seed, "frames": size, "frame_shape": (size, size),
              "classes": ["right_to_left", "left_to_right"], **_BINARY}
  return Dataset(x_train, y_train, x_val, y_val, name="moving_square", task="binary", metadata=metadata)


CSV_FILLS = ("interpolate", "ffill", "drop")


def from_csv(path: str | os.PathLike, column: str | None = None, columns: Sequence[str] | None = None,
             target: str | Sequence[str] | None = None, date_column: str | None = None,
             n_in: int = 1, n_out: int = 1, val_fraction: float = 0.2, fill: str | None = None) -> Dataset:
  """A univariate or multivariate series from a CSV file, framed as sliding windows (`make("csv", ...)`).

  Rows are time steps, in file order (or sorted by `date_column`). The last
  `val_fraction` of the rows is the validation part, cut as Keras' validation_split
  (`floor(T * (1 - val_fraction))` rows train); windows are built inside each part
  separately, so no window straddles the split and no validation value appears in
  a training window.

  Gaps: an empty cell or an NA marker (`NA`, `NaN`, `null`, ...) in a used column,
  and a blank line (in a one-column file, a blank line *is* an empty cell; blank
  lines after the last row are ignored). A gap is refused unless `fill` says how
  to treat it:

    * "interpolate": linear in the row index (rows are equally spaced steps, as
      the windows take them), in date order with `date_column`. A training row is
      interpolated from training rows only, so no validation value reaches a
      training window; a validation row may use the training rows before it.
      A gap with no value before it (the series starts with it) or after it (it
      ends the series, or the training rows) is refused.
    * "ffill": the last value before the gap; a leading gap is refused.
    * "drop": rows with a gap in any used column are removed and windows never
      span them: each part is cut at its dropped rows and windowed run by run
      (a run shorter than `n_in + n_out` rows gives no window). The split point
      stays where it is on the full row count. A row whose date is empty is
      removed too (it has no place in time, so it leaves no hole).

  Dates are never filled: an empty date is refused except with `fill="drop"`.

  Args:
    path: the CSV file (header row first).
    column: the one series to use; or
    columns: several series (input features). Neither: every column but `date_column`.
    target: the column(s) to predict, among the inputs; None = all inputs.
    date_column: a column of dates: parsed, used to sort the rows, and reported
      in metadata ("first_date", "split_date", "last_date").
    n_in: input steps per window.
    n_out: predicted steps per window.
    val_fraction: the trailing share of rows held out, in [0, 1) (0: no validation set).
    fill: None (refuse gaps), "interpolate", "ffill" or "drop".

  Returns:
    Dataset with float32 x `[N, n_in, features]` and y `[N, n_out * targets]` (step-major,
    `prep.sliding_windows`), `N = rows - n_in - n_out + 1` per part (fewer with "drop").
    metadata: "target_features" (the input feature of each y column), "fill", "gaps"
    and "filled" per column, "dropped_rows".

  Raises:
    ValueError: a missing file or column, a non-numeric, infinite or (without
      `fill`) missing value, an unparseable date, a gap `fill` cannot fill, or
      too few rows for the windows; each names the file, column, row and fix.
  """
  path, n_in, n_out = _check_csv_args(path, column, columns, target, date_column, n_in, n_out, val_fraction, fill)
  frame = _read_csv_rows(path)
  inputs, targets = _csv_columns(list(frame.columns), path, column, columns, target, date_column)

  values, gaps, row_numbers = _csv_values(frame, inputs, fill, path)
  gap_counts = {name: int(n) for name, n in zip(inputs, gaps.sum(axis=0)) if n}
  dates, dropped = None, 0
  if date_column is not None:
    values, gaps, row_numbers, dates, dropped = _in_date_order(frame, date_column, values, gaps, row_numbers,
                                                               fill, path)
    gap_counts.update({date_column: dropped} if dropped else {})

  rows = len(values)
  split_at = int(math.floor(rows * (1.0 - val_fraction))) if val_fraction else rows
  target_index = [inputs.index(name) for name in targets]
  parts, filled, dropped_gaps = _csv_windows(values, gaps, row_numbers, split_at, inputs, target_index, n_in, n_out,
                                             val_fraction, fill, path)
  x_train, y_train, x_val, y_val = parts
  dropped += dropped_gaps

  metadata = {"problem": "csv", "path": path, "columns": inputs, "target": targets,
              "date_column": date_column, "n_in": n_in, "n_out": n_out, "val_fraction": val_fraction,
              "rows": rows, "rows_train": split_at, "rows_val": rows - split_at,
              "fill": fill, "gaps": gap_counts, "filled": filled, "dropped_rows": dropped,
              "target_features": target_index * n_out, **_REGRESSION, **_date_range(dates, split_at)}
  return Dataset(x_train, y_train, x_val, y_val, name="csv", task="regression", metadata=metadata)


def _check_csv_args(path, column, columns, target, date_column, n_in, n_out, val_fraction, fill):
  """`from_csv`'s arguments checked before the file is read: `(path, n_in, n_out)`."""
  if not isinstance(path, (str, os.PathLike)):
    raise OptionError("path", f"path must be the name of a CSV file, got {path!r}.")
  path = os.fspath(path)
  for name, value in (("column", column), ("date_column", date_column)):
    if value is not None and not isinstance(value, str):
      raise OptionError(name, f"{name} must be a column name (a string), got {value!r}.")
  for name, value in (("columns", columns), ("target", target)):
    if value is not None and not isinstance(value, str) and (
        not isinstance(value, Sequence) or not all(isinstance(v, str) for v in value)):
      raise OptionError(name, f"{name} must be a column name or a list of column names, got {value!r}.")
  if not os.path.isfile(path):
    raise ValueError(f"CSV file {path!r} does not exist (working directory {os.getcwd()!r}); "
                     "pass path= an existing file.")
  if column is not None and columns is not None:
    raise ValueError("give either column= (one series) or columns= (several), not both.")
  n_in, n_out = _check_int("n_in", n_in, 1), _check_int("n_out", n_out, 1)
  if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 <= val_fraction < 1:
    raise OptionError("val_fraction", f"val_fraction must be a number in [0, 1), got {val_fraction!r}.")
  if fill is not None and fill not in CSV_FILLS:
    hint = difflib.get_close_matches(str(fill), CSV_FILLS, n=1)
    raise OptionError("fill", f"fill must be one of {', '.join(map(repr, CSV_FILLS))} (or left unset to refuse "
                      f"gaps), got {fill!r}." + (f" Did you mean {hint[0]!r}?" if hint else ""))
  return path, n_in, n_out


def _read_csv_rows(path: str):
  """The CSV's rows as a DataFrame (str column names; blank lines are rows of gaps, trailing ones dropped)."""
  import pandas as pd
  try:
    # Blank lines are rows (of gaps): in a one-column file a blank line is an
    # empty cell, which pandas would otherwise drop without a word.
    frame = pd.read_csv(path, skip_blank_lines=False)
  except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as error:
    raise ValueError(f"cannot read CSV file {path!r}: {error}") from error
  frame.columns = [str(c) for c in frame.columns]
  blank = frame.isna().all(axis=1).to_numpy()
  last = np.flatnonzero(~blank)
  frame = frame.iloc[: last[-1] + 1 if last.size else 0]  # blank lines at the end are not rows
  return frame


def _csv_columns(names: list[str], path: str, column, columns, target, date_column) -> tuple[list[str], list[str]]:
  """`(inputs, targets)`: the columns `from_csv` reads and predicts, checked against the file's `names`."""
  if column is not None:
    inputs = [column]
  elif columns is not None:
    inputs = [columns] if isinstance(columns, str) else list(columns)
  else:
    inputs = [name for name in names if name != date_column]
  targets = inputs if target is None else ([target] if isinstance(target, str) else list(target))
  for name in [*inputs, *targets, *([date_column] if date_column is not None else [])]:
    _check_column(name, names, path)
  if not inputs or len(set(inputs)) != len(inputs):
    raise ValueError(f"columns must name distinct columns of {path!r}, got {inputs!r}.")
  outside = [name for name in targets if name not in inputs]
  if outside:
    raise ValueError(f"target {outside[0]!r} is not among the input columns {inputs!r}; "
                     "add it to columns= (the window's own past values are inputs).")
  return inputs, targets


def _in_date_order(frame, date_column: str, values, gaps, row_numbers, fill, path):
  """Rows sorted by `date_column` (stable), rows without a date dropped (only with fill="drop").

  Returns:
    `(values, gaps, row_numbers, dates, rows dropped for an empty date)`.
  """
  import pandas as pd
  raw_dates = frame[date_column]
  with warnings.catch_warnings():
    # pandas warns that it parses element by element when it cannot infer one format; a
    # value that is no date is reported below in one line, and the parsing is the same.
    warnings.simplefilter("ignore", UserWarning)
    dates = pd.to_datetime(raw_dates, errors="coerce")
  bad = np.flatnonzero(dates.isna().to_numpy() & raw_dates.notna().to_numpy())
  if bad.size:
    i = int(bad[0])
    raise ValueError(f"{path!r}: date column {date_column!r} holds {raw_dates.iloc[i]!r}, not a date, "
                     f"in data row {i + 1}; fix that row, or pass date_column=None to keep file order.")
  no_date = dates.isna().to_numpy()
  if no_date.any():
    if fill != "drop":
      i = int(np.flatnonzero(no_date)[0])
      raise ValueError(f"{path!r}: date column {date_column!r} is empty in data row {i + 1} "
                       f"({int(no_date.sum())} such rows); dates are never filled: fix that row, or drop "
                       "such rows with data.options.fill = 'drop' (CLI: --set data.options.fill=drop).")
    keep = ~no_date
    values, gaps, row_numbers = values[keep], gaps[keep], row_numbers[keep]
    dates = dates[keep]
  # Windows assume time order; a stable sort keeps equal dates in file order.
  order = np.argsort(dates.to_numpy(), kind="stable")
  values, gaps, row_numbers = values[order], gaps[order], row_numbers[order]
  return values, gaps, row_numbers, dates.iloc[order].reset_index(drop=True), int(no_date.sum())


def _csv_windows(values, gaps, row_numbers, split_at: int, inputs: list[str], target_index: list[int], n_in: int,
                 n_out: int, val_fraction: float, fill: str | None, path: str):
  """The training and validation windows of a CSV series split at row `split_at`, gaps filled or dropped.

  Returns:
    `((x_train, y_train, x_val, y_val), values filled per column, rows dropped for a gap)`.
  """
  rows = len(values)
  window = n_in + n_out
  if split_at < window or (val_fraction and rows - split_at < window):
    needed = _rows_needed(window, val_fraction)
    raise ValueError(f"{path!r} has {rows} rows, too short for n_in={n_in} + n_out={n_out} with "
                     f"val_fraction={val_fraction}: each part needs at least {window} rows, so the file "
                     f"needs at least {needed} rows; lower n_in, n_out or val_fraction, or use a longer series.")
  filled, dropped = {}, 0
  complete = np.ones(rows, bool)
  if fill in ("interpolate", "ffill"):
    values = _fill_gaps(values, gaps, split_at, fill, inputs, row_numbers, path)
    filled = {name: int(n) for name, n in zip(inputs, gaps.sum(axis=0)) if n}
  elif fill == "drop":
    complete = ~gaps.any(axis=1)
    dropped = int((~complete).sum())
  x_train, y_train = _run_windows(values[:split_at], complete[:split_at], n_in, n_out, target_index)
  x_val, y_val = _run_windows(values[split_at:], complete[split_at:], n_in, n_out, target_index)
  for part, x in (("training", x_train), ("validation", x_val)):
    if not x.shape[0] and (part == "training" or val_fraction):
      raise ValueError(f"{path!r}: after dropping the rows with gaps, the {part} rows hold no {window} "
                       f"consecutive complete rows (n_in={n_in} + n_out={n_out}); lower n_in or n_out, "
                       "or fill the gaps with data.options.fill = 'interpolate' or 'ffill'.")
  return (x_train, y_train, x_val, y_val), filled, dropped


def _csv_values(frame, inputs: list[str], fill: str | None, path: str):
  """`(values [rows, inputs] float with NaN at gaps, gaps, 1-based data row numbers)`; gaps refused without `fill`."""
  values = np.stack([_numeric_column(frame, name, path) for name in inputs], axis=1)
  row_numbers = np.arange(1, len(values) + 1)  # data row 1 = the line after the header
  gaps = np.isnan(values)
  if fill is None and gaps.any():
    i, j = np.argwhere(gaps)[0]
    raise _gap_error(path, inputs[j], int(row_numbers[i]), int(gaps.sum()))
  return values, gaps, row_numbers


def _date_range(dates, split_at: int) -> dict:
  """metadata's first_date, split_date and last_date (ISO), or nothing without a date column."""
  if dates is None:
    return {}
  return {"first_date": dates.iloc[0].isoformat(), "last_date": dates.iloc[-1].isoformat(),
          "split_date": dates.iloc[split_at].isoformat() if split_at < len(dates) else None}


def _gap_error(path: str, name: str, row: int, count: int) -> ValueError:
  return ValueError(
      f"{path!r}: column {name!r} has a gap (an empty cell or NA) in data row {row} (row 1 = the line after "
      f"the header; {count} gap(s) in all); fill gaps with --set data.options.fill=interpolate (or ffill, "
      "or drop; in Python make('csv', ..., fill='interpolate')), or fix the file.")


def _fill_gaps(values: np.ndarray, gaps: np.ndarray, split_at: int, fill: str, names: list[str],
               row_numbers: np.ndarray, path: str) -> np.ndarray:
  """Fill the NaN gaps of `[rows, features]` values in row order (see `from_csv`)."""
  values = values.copy()
  rows = len(values)
  for j, name in enumerate(names):
    gap = gaps[:, j]
    if not gap.any():
      continue
    where = np.flatnonzero(gap)
    present = np.flatnonzero(~gap)
    if not present.size or where[0] < present[0]:
      raise ValueError(f"{path!r}: column {name!r} starts with a gap (data row {row_numbers[where[0]]}), which "
                       f"fill={fill!r} cannot fill: there is no earlier value; remove the leading rows or use "
                       "data.options.fill = 'drop'.")
    if fill == "ffill":
      source = np.maximum.accumulate(np.where(gap, 0, np.arange(rows)))
      values[:, j] = values[source, j]
      continue
    # A training row is interpolated from training rows only; a validation row
    # may also lean on the training rows before it.
    for lo, hi, known in ((0, split_at, present[present < split_at]), (split_at, rows, present)):
      inside = where[(where >= lo) & (where < hi)]
      if not inside.size:
        continue
      if not known.size or inside[-1] > known[-1]:
        why = ("no later training value to interpolate to (validation values never fill training rows)"
               if hi == split_at < rows else "no later value to interpolate to (it ends the series)")
        raise ValueError(f"{path!r}: column {name!r} has a gap in data row {row_numbers[inside[-1]]} with {why}; "
                         "use data.options.fill = 'ffill' or 'drop', or fix the row.")
      values[inside, j] = np.interp(inside, known, values[known, j])
  return values


def _run_windows(values: np.ndarray, complete: np.ndarray, n_in: int, n_out: int,
                 target_index: list[int]) -> tuple[np.ndarray, np.ndarray]:
  """Sliding windows inside each run of consecutive complete rows (none across a dropped row)."""
  xs, ys = [], []
  edges = np.flatnonzero(np.diff(np.concatenate([[0], complete.astype(np.int8), [0]])))
  for start, stop in zip(edges[::2], edges[1::2]):
    if stop - start >= n_in + n_out:
      x, y = prep.sliding_windows(values[start:stop], n_in, n_out, target_index)
      xs.append(x)
      ys.append(y)
  if not xs:
    return (np.zeros((0, n_in, values.shape[1]), np.float32),
            np.zeros((0, n_out * len(target_index)), np.float32))
  return np.concatenate(xs), np.concatenate(ys)


def _check_column(name: Any, names: list[str], path: str) -> None:
  if name not in names:
    hint = difflib.get_close_matches(str(name), names, n=1)
    extra = f" Did you mean {hint[0]!r}?" if hint else ""
    raise ValueError(f"{path!r} has no column {name!r}; its columns are {names}.{extra}")


def _numeric_column(frame: Any, name: str, path: str) -> np.ndarray:
  """The column as float64 with NaN for a gap; text and infinities are refused."""
  import pandas as pd
  raw = frame[name]
  numeric = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
  not_number = np.flatnonzero(np.isnan(numeric) & raw.notna().to_numpy())
  if not_number.size:
    i = int(not_number[0])
    separator = next((sep for sep in (";", "\t") if sep in str(name) and sep in str(raw.iloc[i])), None)
    fix = (f"the file seems separated by {separator!r}, and jaxlstm reads commas: save it as comma-separated"
           if separator else "fix or remove it, or leave the column out with columns=[...]")
    raise ValueError(f"{path!r}: column {name!r} holds a non-numeric value {raw.iloc[i]!r} in data row {i + 1} "
                     f"(row 1 = the line after the header); {fix}.")
  infinite = np.flatnonzero(np.isinf(numeric))
  if infinite.size:
    i = int(infinite[0])
    raise ValueError(f"{path!r}: column {name!r} holds an infinite value in data row {i + 1} "
                     "(row 1 = the line after the header); fix or remove that row (data.options.fill "
                     "fills gaps, not infinities).")
  return numeric


def _rows_needed(window: int, val_fraction: float) -> int:
  """The fewest rows whose train and validation parts each hold one window."""
  rows = window
  while True:
    split_at = int(math.floor(rows * (1.0 - val_fraction))) if val_fraction else rows
    if split_at >= window and (not val_fraction or rows - split_at >= window):
      return rows
    rows += 1


PROBLEMS: dict[str, Callable[..., Dataset]] = {
    "linear": linear, "echo": echo, "damped_sine": damped_sine, "addition": addition,
    "moving_square": moving_square, "csv": from_csv,
}


def make(name: str, **kwargs: Any) -> Dataset:
  """Generate problem `name` with its keyword arguments.

  Raises:
    ValueError: unknown problem or argument, or a missing required one
      (e.g. csv's `path`), naming the known ones.
  """
  if name not in PROBLEMS:
    hint = difflib.get_close_matches(str(name), list(PROBLEMS), n=1)
    extra = f" Did you mean {hint[0]!r}?" if hint else ""
    raise ValueError(f"unknown problem {name!r}; known problems: {', '.join(sorted(PROBLEMS))}.{extra}")
  import inspect
  params = inspect.signature(PROBLEMS[name]).parameters
  takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
  unknown = set(kwargs) - set(params)
  if unknown and not takes_any:
    hint = difflib.get_close_matches(sorted(unknown)[0], list(params), n=1)
    extra = f" Did you mean {hint[0]!r}?" if hint else ""
    raise ValueError(f"problem {name!r} got unknown option(s) {sorted(unknown)}; "
                     f"it takes {sorted(params) or 'no options'}.{extra}")
  missing = [p.name for p in params.values()
             if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
             and p.name not in kwargs]
  if missing:
    raise ValueError(f"problem {name!r} needs option(s) {missing}, e.g. make({name!r}, {missing[0]}=...).")
  return PROBLEMS[name](**kwargs)
