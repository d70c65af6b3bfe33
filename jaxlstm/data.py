"""A study's data, resolved once and checked against every config before anything compiles.

`resolve(config, dataset)` turns a problem (generated from `config.data`, or a
`Dataset` the caller passes) into the arrays a run trains on: integer encoding,
Keras' `validation_split`, the series transforms (log / Box-Cox, differencing) and
scaling, both fitted on the training part. `fold_layout` says where each
cross-validation fold's samples sit (`data.cv`; the members cut their folds from
the pooled samples inside the compiled call). `check_compatible`
raises a `ConfigError` naming the field and the fix when a config cannot train on
them. `resolve_all` does both for a list of configs, once per distinct `data`
section: the sweep and `fit_many` call it at the edge and pass the results down.
No jax here.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from jaxlstm import metrics, problems
from jaxlstm.config import Config, ConfigError
from jaxlstm.problems import Dataset


def data_key(config: Config) -> str:
  """Canonical text of `config.data`: configs with equal keys train on the same arrays."""
  return json.dumps(config.to_dict()["data"], sort_keys=True)


def resolve(config: Config, dataset: Dataset | None = None) -> Dataset:
  """The dataset `config` trains on.

  Args:
    config: its `data` section says how to prepare the arrays.
    dataset: the raw problem; default generated with `problems.make(config.data.problem,
      **config.data.options)`.

  Returns:
    The arrays after integer encoding, Keras' `validation_split` (the last
    fraction, before any shuffling), the series transforms and scaling (both
    fitted on the training part). With `data.cv = "rolling"` the training part
    is cut to the first fold's training samples, the samples every fold trains
    on, so no fold's validation samples inform a fitted statistic (with "kfold"
    and "blocked" they are fitted on the problem's own training part; the folds
    pool it with its validation part). `metadata["cv"]` describes the folds.

  Raises:
    ConfigError: the problem's options or the data fields do not fit the data.
  """
  if dataset is None:
    dataset = _generate(config.data.problem, config.data.options)
  elif not isinstance(dataset, Dataset):
    raise TypeError(f"expected the data as a jaxlstm.problems.Dataset, got {type(dataset).__name__}; "
                    "wrap arrays as Dataset(x_train, y_train, x_val, y_val) ([samples, time, features] inputs), "
                    "or pass None to generate config.data.problem.")
  if config.data.encoding == "integer":
    dataset = integer_encoded(dataset)
  split = config.data.validation_split
  if split:
    n = dataset.x_train.shape[0]
    n_val = n - int(math.floor(n * (1.0 - split)))
    if n_val < 1 or n_val >= n:
      raise ConfigError(f"data.validation_split = {split} leaves {n_val} of {n} samples for validation; "
                        "choose a fraction that keeps at least one sample on each side.")
    dataset = dataclasses.replace(
        dataset, x_train=dataset.x_train[: n - n_val], y_train=dataset.y_train[: n - n_val],
        x_val=dataset.x_train[n - n_val:], y_val=dataset.y_train[n - n_val:])
  folds = None
  if config.data.cv != "none":
    n = dataset.x_train.shape[0] + dataset.x_val.shape[0]
    folds = fold_layout(config, n, overlap=window_overlap(dataset))
    if config.data.cv == "rolling":
      dataset = _recut(dataset, int(folds.train_count[0]))
  if config.data.difference or config.data.transform != "none":
    dataset = _transformed(config, dataset)
  if config.data.scaling != "none":
    from jaxlstm import prep
    dataset = prep.prepare(dataset, config.data.scaling)
  if folds is not None:
    dataset = dataclasses.replace(dataset, metadata={**dataset.metadata, "cv": folds.describe()})
  return dataset


def _recut(dataset: Dataset, n_train: int) -> Dataset:
  """The same samples in the same order, the first `n_train` as the training part."""
  x = np.concatenate([dataset.x_train, dataset.x_val])
  y = np.concatenate([dataset.y_train, dataset.y_val])
  return dataclasses.replace(dataset, x_train=x[:n_train], y_train=y[:n_train], x_val=x[n_train:],
                             y_val=y[n_train:])


def _transformed(config: Config, dataset: Dataset) -> Dataset:
  """`prep.transform_series` as `config.data` asks, with what it refuses as one ConfigError line."""
  from jaxlstm import prep
  lags, power = list(config.data.difference), config.data.transform
  field = f"data.difference = {lags}" if lags else f"data.transform = {power!r}"
  if dataset.task != "regression":
    raise ConfigError(f"{field} applies to a regression series, but problem {dataset.name!r} is "
                      f"{dataset.task} (differencing or log of classes is undefined); remove it.")
  try:
    prep.target_layout(dataset)
  except ValueError as e:
    raise ConfigError(f"{field} cannot tell which series to transform: {e}; give one input feature, or "
                      "the dataset's metadata['target_features'].") from None
  time = dataset.x_train.shape[1]
  if sum(lags) >= time:
    raise ConfigError(f"data.difference = {lags} needs input windows longer than {sum(lags)} steps (the "
                      f"levels {'each lag' if len(lags) > 1 else 'the lag'} looks back to), but the windows "
                      f"have {time}; raise the window length (data.options.n_in) or use shorter lags.")
  try:
    return prep.transform_series(dataset, difference=lags, transform=power)
  except ValueError as e:
    raise ConfigError(f"data.transform = {power!r}: {e}; shift the series above 0, or set "
                      "data.transform = 'none'.") from None


def window_overlap(dataset: Dataset) -> int:
  """Samples to leave out between a walk-forward fold's training and validation samples.

  Windows of a CSV series predicting `n_out > 1` steps overlap their successors'
  targets: the last `n_out - 1` training windows would hold targets of the first
  validation window, so they are purged (0 for every other dataset).
  """
  if dataset.metadata.get("problem") != "csv":
    return 0
  return max(0, int(dataset.metadata.get("n_out", 1)) - 1)


class Folds(NamedTuple):
  """Where each cross-validation fold's samples sit among the pooled samples (numpy, static).

  Positions index the samples in pooled order (training part, then validation
  part), or, for "kfold", the repeat's own permutation of them. Rows are padded
  to the largest fold with position 0 (masked: beyond the count).

  Attributes:
    scheme: `data.cv`.
    samples: the pooled samples the folds are cut from.
    train: `[folds, n_train]` int32 training positions of each fold, in order.
    train_count: `[folds]` training samples of each fold.
    val: `[folds, n_val]` int32 validation positions.
    val_count: `[folds]` validation samples of each fold.
    horizon, gap: rolling: validation samples per fold and samples purged before each origin.
  """
  scheme: str
  samples: int
  train: np.ndarray
  train_count: np.ndarray
  val: np.ndarray
  val_count: np.ndarray
  horizon: int = 0
  gap: int = 0

  @property
  def folds(self) -> int:
    return int(self.train.shape[0])

  def describe(self) -> dict:
    """A JSON-able summary (dataset metadata, manifest, report)."""
    out = {"scheme": self.scheme, "folds": self.folds, "samples": self.samples,
           "train": [int(n) for n in self.train_count], "val": [int(n) for n in self.val_count]}
    if self.scheme == "rolling":
      out.update(horizon=self.horizon, gap=self.gap)
    return out


def fold_count(config: Config) -> int:
  """How many folds each repeat of `config` trains: `data.folds` with `data.cv`, else 1."""
  return config.data.folds if config.data.cv != "none" else 1


def fold_layout(config: Config, n: int, *, overlap: int = 0) -> Folds:
  """The folds of `config.data.cv` over `n` pooled samples.

  "kfold" and "blocked" cut `data.folds` consecutive runs of positions, the first
  `n % folds` one longer (sklearn's KFold sizes); each fold validates on its run and
  trains on the rest. "rolling" validates fold f on `horizon` samples ending
  `(folds - 1 - f) * horizon` before the end and trains on every sample before its
  origin, less `overlap` purged samples.

  Raises:
    ConfigError: too few samples for the folds (says how many are needed).
  """
  d = config.data
  k = d.folds
  if d.cv in ("kfold", "blocked"):
    if n < k:
      raise ConfigError(f"data.folds = {k} needs at least {k} samples (one validation sample per fold), "
                        f"but the data have {n}; use fewer folds.")
    sizes = np.full(k, n // k) + (np.arange(k) < n % k)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    val = [np.arange(a, a + m) for a, m in zip(starts, sizes)]
    train = [np.concatenate([np.arange(a), np.arange(a + m, n)]) for a, m in zip(starts, sizes)]
    return _folds(d.cv, n, train, val)
  horizon = d.horizon or n // (k + 1)
  needed = d.min_train + overlap + k * max(horizon, 1)
  if horizon < 1 or n < needed:
    raise ConfigError(
        f"data.cv = 'rolling' with data.folds = {k}, data.horizon = "
        + (f"{horizon}" if d.horizon else f"0 (samples // (folds + 1) = {horizon})") + " "
        f"and data.min_train = {d.min_train}" + (f" (+{overlap} purged)" if overlap else "")
        + f" needs at least {needed} samples, but the data have {n}; use fewer folds, a shorter horizon or a "
        "smaller min_train.")
  origins = [n - (k - f) * horizon for f in range(k)]
  val = [np.arange(o, o + horizon) for o in origins]
  train = [np.arange(o - overlap) for o in origins]
  return _folds("rolling", n, train, val, horizon=horizon, gap=overlap)


def _folds(scheme: str, n: int, train: list[np.ndarray], val: list[np.ndarray], **kw) -> Folds:
  def pad(rows):
    width = max(len(r) for r in rows)
    return np.stack([np.pad(r, (0, width - len(r))) for r in rows]).astype(np.int32)
  return Folds(scheme, int(n), pad(train), np.array([len(r) for r in train], np.int32), pad(val),
               np.array([len(r) for r in val], np.int32), **kw)


def _generate(problem: str, options: dict) -> Dataset:
  """`problems.make(problem, **options)`, with anything it raises as one ConfigError line."""
  try:
    return problems.make(problem, **options)
  except problems.OptionError as e:
    message = str(e)
    if not message.startswith(e.option):
      message = f"{e.option}: {message}"
    raise ConfigError(f"problem {problem!r}: data.options.{message}") from None
  except (TypeError, ValueError) as e:
    raise ConfigError(f"data.options for problem {problem!r}: {e}") from None
  except Exception as e:  # noqa: BLE001 - a generator must never end the CLI in a traceback
    raise ConfigError(f"data.options for problem {problem!r}: {type(e).__name__}: {e}") from None


def resolve_all(configs: Sequence[Config], dataset: Dataset | None = None) -> dict[str, Dataset]:
  """Resolve the data of every config once per distinct `data` section and check each config.

  Returns:
    `data_key(config)` -> resolved dataset.

  Raises:
    ConfigError: a config cannot train on its data (before anything compiles).
  """
  resolved: dict[str, Dataset] = {}
  for config in configs:
    key = data_key(config)
    if key not in resolved:
      resolved[key] = resolve(config, dataset)
    check_compatible(config, resolved[key])
  return resolved


def integer_encoded(dataset: Dataset) -> Dataset:
  """Replace one-hot input steps `[.., classes]` by their code scaled to [0, 1]: `[.., 1]`."""
  x = dataset.x_train
  onehot = x.shape[-1] > 1 and np.isin(x, (0.0, 1.0)).all() and np.allclose(x.sum(-1), 1.0)
  if not onehot:
    raise ConfigError(f"data.encoding = 'integer' needs one-hot inputs, but problem {dataset.name!r} "
                      "inputs are not one-hot; use data.encoding = 'onehot'.")
  classes = x.shape[-1]
  encode = lambda a: (np.argmax(a, -1)[..., None] / (classes - 1)).astype(np.float32)
  metadata = {**dataset.metadata, "encoding": "integer", "classes": classes}
  return dataclasses.replace(dataset, x_train=encode(x), x_val=encode(dataset.x_val) if dataset.x_val.size
                             else dataset.x_val[..., :1], metadata=metadata)


def unit_scale(dataset: Dataset) -> np.ndarray:
  """`[outputs]` original units per scaled unit of each target (affine scalers; 1 when unscaled).

  The `mae_original` metric multiplies its errors by this, so it reports errors in
  the series' original units.
  """
  from jaxlstm import prep
  outputs = dataset.y_train.shape[-1]
  ones, zeros = np.ones((1, outputs), np.float32), np.zeros((1, outputs), np.float32)
  unit = (prep.to_original_units(dataset, ones) - prep.to_original_units(dataset, zeros))[0]
  return np.abs(unit).astype(np.float32)


def check_compatible(config: Config, dataset: Dataset) -> None:
  """Raise ConfigError before any compile when `config` cannot train on `dataset`."""
  model, train = config.model, config.train
  y = dataset.y_train
  if y.ndim == 3 and model.architecture != "encoder_decoder":
    if not model.return_sequences:
      raise ConfigError(
          f"the targets are sequences (y_train {y.shape}) but model.return_sequences is false; "
          "set model.return_sequences = true (many-to-many) or model.architecture = 'encoder_decoder'.")
    if y.shape[1] != dataset.x_train.shape[1]:
      raise ConfigError(
          f"model.return_sequences gives {dataset.x_train.shape[1]} output steps but y_train has "
          f"{y.shape[1]}; use model.architecture = 'encoder_decoder' for a different output length.")
  if y.ndim == 2 and (model.return_sequences or model.architecture == "encoder_decoder"):
    raise ConfigError(f"model.return_sequences / encoder_decoder need sequence targets "
                      f"[samples, time, outputs], got y_train {y.shape}.")
  if model.outputs and model.outputs != y.shape[-1]:
    raise ConfigError(f"model.outputs = {model.outputs} but the targets have {y.shape[-1]} outputs; "
                      "set model.outputs = 0 to size the head from the data.")
  if model.architecture == "cnn_lstm":
    frame = tuple(dataset.metadata.get("frame_shape", ()))
    if len(frame) != 2 or dataset.n_features % math.prod(frame):
      raise ConfigError("model.architecture = 'cnn_lstm' needs frames: dataset.metadata['frame_shape'] = "
                        f"(height, width) with height*width dividing the {dataset.n_features} features.")
    if min(frame) < model.conv_kernel:
      raise ConfigError(f"model.conv_kernel = {model.conv_kernel} is larger than the frame {frame}.")
  if "accuracy" in train.metrics and model.output_activation == "linear":
    raise ConfigError("train.metrics 'accuracy' needs a classification head "
                      "(model.output_activation 'sigmoid' or 'softmax').")
  if dataset.x_val.shape[0] == 0 and not config.data.resplit and config.data.cv == "none":
    raise ConfigError("the dataset has no validation samples; set data.validation_split, data.resplit or "
                      "data.cv.")
  if config.data.cv != "none":
    fold_layout(config, dataset.x_train.shape[0] + dataset.x_val.shape[0], overlap=window_overlap(dataset))
  known = metrics.history_keys(config)
  for name, callback in (("early_stopping", train.early_stopping), ("reduce_lr", train.reduce_lr)):
    if callback is not None and callback.monitor not in known:
      hint = difflib.get_close_matches(callback.monitor, known, n=1)
      raise ConfigError(
          f"train.{name}.monitor = {callback.monitor!r} is not a history key of this config"
          + (f"; did you mean {hint[0]!r}" if hint else "")
          + f". Known keys: {', '.join(known)}.")
