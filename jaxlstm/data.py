"""A study's data, resolved once and checked against every config before anything compiles.

`resolve(config, dataset)` turns a problem (generated from `config.data`, or a
`Dataset` the caller passes) into the arrays a run trains on: integer encoding,
Keras' `validation_split`, scaling fitted on the training part. `check_compatible`
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
    fraction, before any shuffling) and scaling fitted on the training part.

  Raises:
    ConfigError: the problem's options or the data fields do not fit the data.
  """
  if dataset is None:
    dataset = _generate(config.data.problem, config.data.options)
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
  if config.data.scaling != "none":
    from jaxlstm import prep
    dataset = prep.prepare(dataset, config.data.scaling)
  return dataset


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
  if dataset.x_val.shape[0] == 0 and not config.data.resplit:
    raise ConfigError("the dataset has no validation samples; set data.validation_split or data.resplit.")
  known = metrics.history_keys(config)
  for name, callback in (("early_stopping", train.early_stopping), ("reduce_lr", train.reduce_lr)):
    if callback is not None and callback.monitor not in known:
      hint = difflib.get_close_matches(callback.monitor, known, n=1)
      raise ConfigError(
          f"train.{name}.monitor = {callback.monitor!r} is not a history key of this config"
          + (f"; did you mean {hint[0]!r}" if hint else "")
          + f". Known keys: {', '.join(known)}.")
