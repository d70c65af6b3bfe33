"""Frozen, validated experiment configs; overrides by dotted name; grids; a stable id.

A `Config` holds five sections (`data`, `model`, `optim`, `train`) of frozen
dataclasses. Every section validates itself on construction (and so on every
`dataclasses.replace`), so an impossible value fails before anything compiles,
with a message that names the field, the value, what is allowed and the fix.

Fields fall in two kinds (DESIGN §3):
  * static: they change array shapes or control flow (cells, layers, batch size,
    epochs, ...); configs differing in them need their own compile;
  * traced: continuous hyper-parameters (`TRACED_FIELDS`) that ride along with
    the repeats as per-member inputs, so a grid over them is one compile.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import itertools
import json
import math
import os
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

PROBLEMS = ("linear", "echo", "damped_sine", "addition", "moving_square", "csv")
CELLS = ("lstm", "gru")
ARCHITECTURES = ("vanilla", "bidirectional", "cnn_lstm", "encoder_decoder")
MERGE_MODES = ("concat", "sum", "mul", "ave")
INITIALIZERS = (
    "glorot_uniform", "glorot_normal", "random_uniform", "random_normal",
    "orthogonal", "lecun_normal", "he_uniform", "he_normal", "zeros",
)
ACTIVATIONS = ("tanh", "sigmoid", "hard_sigmoid", "relu", "softsign", "linear")
OUTPUT_ACTIVATIONS = ("linear", "sigmoid", "softmax")
OPTIMIZERS = ("adam", "rmsprop", "adagrad", "sgd")
SCHEDULES = ("constant", "exponential", "cosine", "warmup_cosine", "piecewise")
LOSSES = ("mse", "mae", "binary_crossentropy", "categorical_crossentropy")
METRICS = ("mse", "mae", "accuracy", "mae_original")
STREAMS = ("init", "shuffle", "dropout", "split")
SCALINGS = ("none", "minmax", "standard")
ENCODINGS = ("onehot", "integer")
# Cross-validation schemes (`data.cv`): shuffled k-fold, contiguous (blocked) k-fold, and
# walk-forward (rolling origin) folds of a series.
CV_SCHEMES = ("none", "kfold", "blocked", "rolling")
# Variance-stabilising transforms of a series' target features (`data.transform`).
TRANSFORMS = ("none", "log", "boxcox")
ES_MODES = ("auto", "min", "max")
# The recurrent layers' time loop (`model.kernel`): "scan" is autodiff of `lax.scan` over
# the Keras cell; "fused" is the same maths rearranged for speed (models.fused_layer), which
# rounds differently, so it is opt-in and a config that sets it has its own id.
KERNELS = ("scan", "fused")
# |min_delta| of EarlyStopping / ReduceLROnPlateau is 0 or in this range: the compiled
# loop decides Keras' float64 comparison exactly with float32 pieces of min_delta
# (jaxlstm.early_stopping), which needs it neither tiny nor huge.
MIN_DELTA_RANGE = (1e-18, 1e18)

# Continuous hyper-parameters that are per-member runtime inputs (never baked
# into the compiled program). Whether a field is *used* at all (clip norm set
# or not, dropout zero or not) stays static; its value is traced.
TRACED_FIELDS = (
    "optim.learning_rate", "optim.momentum", "optim.weight_decay",
    "optim.global_clipnorm", "optim.clipvalue",
    "model.dropout", "model.recurrent_dropout",
    "model.kernel_l1", "model.kernel_l2", "model.recurrent_l1",
    "model.recurrent_l2", "model.bias_l1", "model.bias_l2",
    "model.dense_dropout",
)


PENALTY_FIELDS = ("kernel_l1", "kernel_l2", "recurrent_l1", "recurrent_l2", "bias_l1", "bias_l2")
# Model fields that take one value for every recurrent layer or a list with one per layer
# (`ModelConfig.layer_values`). A list whose items are all equal is stored as that scalar,
# so `dropout = [0.2, 0.2]` is the config (and the id) of `dropout = 0.2`.
PER_LAYER_FIELDS = ("activation", "dropout", "recurrent_dropout", *PENALTY_FIELDS)
# Fields whose values are lists of layer widths; with PER_LAYER_FIELDS, the fields whose
# `--grid` points may be lists ("/" between grid points, "," between a list's items).
WIDTH_FIELDS = ("units", "dense")
# Cell activations with act(0) = 0: zero-padded units stay exactly zero (see models.can_pad_cells).
ZERO_PRESERVING = ("tanh", "relu", "softsign", "linear")

# Config ids are frozen (DESIGN §10). These are the fields every id was made with
# when the rule was adopted: they always enter the canonical JSON of the id, so no
# existing id changes. A field added later enters only when set away from its
# default, so adding a field never changes an existing config's id (or its repeat
# keys, which derive from the id). Never edit this table.
ID_FIELDS = {
    "data": ("problem", "options", "validation_split", "resplit", "scaling", "encoding"),
    "model": ("cell", "cells", "layers", "architecture", "merge_mode", "kernel_init", "recurrent_init",
              "bias_init", "unit_forget_bias", "activation", "recurrent_activation", "output_activation",
              "outputs", "return_sequences", "dropout", "recurrent_dropout", "kernel_l1", "kernel_l2",
              "recurrent_l1", "recurrent_l2", "bias_l1", "bias_l2", "layer_norm", "learn_initial_state",
              "input_projection", "tbptt", "conv_filters", "conv_kernel", "pool_size"),
    "optim": ("name", "learning_rate", "beta_1", "beta_2", "epsilon", "rho", "momentum", "nesterov",
              "initial_accumulator_value", "schedule", "decay_steps", "decay_rate", "alpha", "warmup_steps",
              "boundaries", "scales", "global_clipnorm", "clipvalue", "weight_decay"),
    "train": ("epochs", "batch_size", "shuffle", "loss", "metrics", "vary", "early_stopping", "reduce_lr",
              "checkpoint_every"),
    "train.early_stopping": ("monitor", "min_delta", "patience", "mode", "baseline", "restore_best_weights",
                             "start_from_epoch"),
    "train.reduce_lr": ("monitor", "factor", "patience", "mode", "min_delta", "cooldown", "min_lr"),
}
# Operational fields change how a run is carried out, never its numbers: they enter
# the id (and the repeat keys) only at their default value, whatever they are set to.
OPERATIONAL_FIELDS = ("train.checkpoint_every",)


class ConfigError(ValueError):
  """A config field holds a value that is not allowed."""


STORE_LIMIT_VARIABLE = "JAXLSTM_STORE_LIMIT"
DEFAULT_STORE_LIMIT = 2**30


def program_store_limit(environ: Mapping[str, str] | None = None) -> int | None:
  """The program store's size limit in bytes (`jaxlstm.compiled.evict`); None: no limit.

  `JAXLSTM_STORE_LIMIT`: a size such as 500M or 4G, or "none"; default 1 GiB.

  Raises:
    ValueError: the variable holds something else (one line naming it and the fix).
  """
  text = (os.environ if environ is None else environ).get(STORE_LIMIT_VARIABLE, "").strip()
  if not text:
    return DEFAULT_STORE_LIMIT
  if text.lower() in ("none", "unlimited"):
    return None
  try:
    return parse_size(text)
  except ValueError:
    raise ValueError(f"{STORE_LIMIT_VARIABLE}={text!r} is not a size: set it to a size such as 500M or 4G, "
                     f"or to 'none' for no limit") from None


def parse_size(text: str) -> int:
  """A size in bytes from '8G', '512M', '2.5GiB', '1000000' (binary units).

  Raises:
    ValueError: not a positive size.
  """
  units = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
  t = str(text).strip().lower().removesuffix("ib").removesuffix("b")
  unit = t[-1] if t and t[-1] in units else ""
  try:
    value = float(t[: len(t) - len(unit)] if unit else t) * units[unit]
  except ValueError:
    value = -1
  if not 0 < value < math.inf:
    raise ValueError(f"expected a size such as 8G or 500M, got {text!r}")
  return int(value)


def _fail(section: str, name: str, value: Any, allowed: str) -> typing.NoReturn:
  end = "" if allowed.endswith((".", "?")) else "."  # `_choice`'s hint already ends its sentence
  raise ConfigError(f"{section}.{name} = {value!r} is not allowed: {allowed}{end}")


def _choice(section, name, value, options):
  if value not in options:
    hint = difflib.get_close_matches(str(value), options, n=1)
    extra = f" Did you mean {hint[0]!r}?" if hint else ""
    _fail(section, name, value, f"expected one of {', '.join(map(repr, options))}.{extra}")


def _items(section, name, value, expected: str, *, one_name: bool = False) -> tuple:
  """A list field's value as a tuple (`one_name`: a lone string is a list of one)."""
  if one_name and isinstance(value, str):
    return (value,)
  if not isinstance(value, (str, bytes, Mapping)):
    try:
      return tuple(value)
    except TypeError:
      pass
  _fail(section, name, value, f"expected {expected}")


def _names(section, name, value, options) -> tuple:
  """A name or a list of names, each one of `options`, as a tuple."""
  names = _items(section, name, value, f"a name or a list of names from {', '.join(map(repr, options))}",
                 one_name=True)
  for item in names:
    _choice(section, name, item, options)
  return names


def _positive_int(section, name, value, minimum=1):
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    _fail(section, name, value, f"expected an integer >= {minimum}")


def _number(section, name, value, *, low=-math.inf, high=math.inf,
            low_open=False, high_open=False, allow_none=False):
  if value is None and allow_none:
    return
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
    _fail(section, name, value, "expected a finite number")
  too_low = value <= low if low_open else value < low
  too_high = value >= high if high_open else value > high
  if too_low or too_high:
    if high == math.inf:  # one bound: say it as one ("> 0", not "(0.0, inf]")
      _fail(section, name, value, f"expected a finite number {'>' if low_open else '>='} {low:g}")
    lo = "(" if low_open else "["
    hi = ")" if high_open else "]"
    _fail(section, name, value, f"expected a value in {lo}{low:g}, {high:g}{hi}")


def _all_finite(value: Any) -> bool:
  """Whether every number in a (nested) option value is finite."""
  if isinstance(value, float):
    return math.isfinite(value)
  if isinstance(value, Mapping):
    return all(_all_finite(v) for v in value.values())
  if isinstance(value, (list, tuple)):
    return all(_all_finite(v) for v in value)
  return True


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Which problem to train on, and how to hold out validation data.

  Attributes:
    problem: a name in `jaxlstm.problems` (the five-point `linear` problem by default).
    options: keyword arguments for the problem generator (e.g. `{"n_train": 1000}`).
    validation_split: Keras' `validation_split`: the last fraction of the
      training arrays becomes the validation set (taken before any shuffling).
      0 keeps the problem's own validation set.
    resplit: if > 0, each repeat draws its own random train/validation split of
      all the data with this validation fraction, from its `split` key.
    scaling: "none", "minmax" or "standard": fitted on the training part only
      (`jaxlstm.prep.prepare`); regression targets are scaled too and scores
      stay in scaled units (`prep.to_original_units` maps predictions back).
    encoding: "onehot" keeps one-hot inputs; "integer" replaces each one-hot
      step by its integer code scaled to [0, 1] (one feature).
    cv: cross-validation over all samples (training and validation pooled, in
      order): "kfold" (folds drawn per repeat from its `split` key), "blocked"
      (contiguous folds in sample order), "rolling" (walk-forward folds of a
      series: each fold trains on every sample before its origin and validates
      on the next `horizon`); "none" keeps one split. Every (config, fold,
      repeat) is a member of one compiled call; a repeat scores the mean over
      its folds.
    folds: number of folds, >= 2 (with `cv` only).
    min_train: rolling: the fewest training samples the first fold may have.
    horizon: rolling: validation samples per fold; 0 = samples // (folds + 1),
      as sklearn's TimeSeriesSplit.
    difference: lags to difference the target series by, in order (e.g. [1],
      [12], [1, 12]), inside each sample's window (`jaxlstm.prep.transform_series`).
    transform: "log" or "boxcox" (lambda fitted on the training rows) of the
      target series, before differencing; scaling comes after both.
  """
  problem: str = "linear"
  options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  validation_split: float = 0.0
  resplit: float = 0.0
  scaling: str = "none"
  encoding: str = "onehot"
  cv: str = "none"
  folds: int = 5
  min_train: int = 1
  horizon: int = 0
  difference: tuple[int, ...] = ()
  transform: str = "none"

  def __post_init__(self):
    _choice("data", "problem", self.problem, PROBLEMS)
    if not isinstance(self.options, Mapping):
      _fail("data", "options", self.options, "expected a mapping of problem keyword arguments")
    object.__setattr__(self, "options", dict(self.options))
    for name, value in self.options.items():
      if not _all_finite(value):
        _fail("data", f"options.{name}", value, "expected finite numbers (no NaN or Infinity)")
    _number("data", "validation_split", self.validation_split, low=0.0, high=1.0, high_open=True)
    _number("data", "resplit", self.resplit, low=0.0, high=1.0, high_open=True)
    _choice("data", "scaling", self.scaling, SCALINGS)
    _choice("data", "encoding", self.encoding, ENCODINGS)
    if self.validation_split and self.resplit:
      _fail("data", "resplit", self.resplit,
            "use either validation_split or resplit, not both (set one to 0)")
    self._check_cv()
    difference = (self.difference,) if isinstance(self.difference, int) else self.difference
    if (not isinstance(difference, (tuple, list))
        or any(isinstance(lag, bool) or not isinstance(lag, int) or lag < 1 for lag in difference)):
      _fail("data", "difference", list(difference) if isinstance(difference, (tuple, list)) else difference,
            "expected a list of lags >= 1, e.g. [1], [12] or [1, 12] "
            "(empty: no differencing)")
    object.__setattr__(self, "difference", tuple(difference))
    _choice("data", "transform", self.transform, TRANSFORMS)

  def _check_cv(self) -> None:
    _choice("data", "cv", self.cv, CV_SCHEMES)
    _positive_int("data", "folds", self.folds, minimum=2)
    _positive_int("data", "min_train", self.min_train, minimum=1)
    _positive_int("data", "horizon", self.horizon, minimum=0)
    defaults = {"folds": 5, "min_train": 1, "horizon": 0}
    if self.cv == "none":
      unused, where = tuple(defaults), "cross-validation (data.cv = 'kfold', 'blocked' or 'rolling')"
    else:
      unused, where = (("min_train", "horizon") if self.cv != "rolling" else ()), "data.cv = 'rolling'"
    for name in unused:
      if getattr(self, name) != defaults[name]:
        _fail("data", name, getattr(self, name), f"it applies to {where} only; set that, or leave "
              f"data.{name} at {defaults[name]}")
    if self.cv != "none":
      for name in ("validation_split", "resplit"):
        if getattr(self, name):
          _fail("data", name, getattr(self, name), f"data.cv = {self.cv!r} pools the training and validation "
                f"samples and cuts its own folds; set data.{name} = 0")

  def __hash__(self):
    return hash(_canonical_json(dataclasses.asdict(self)))


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """The recurrent network: cell, widths, depth, initialisers, hidden Dense layers, head.

  Keras defaults throughout: glorot_uniform kernel, orthogonal recurrent
  kernel, zero bias with forget-gate bias 1, tanh / sigmoid activations.
  `outputs=0` sizes the Dense head from the data.

  Widths: `units = [128, 64]` gives one width per recurrent layer (its length is
  the depth; for `encoder_decoder`, the encoder layers then the decoder).
  `cells` x `layers` is the shorthand for equal widths (`cells=10, layers=2` is
  `units=[10, 10]`), and equal widths are always stored that way, with `units`
  left empty, so a model keeps one config (and one id) however it is written.
  With unequal `units`, `cells` and `layers` are derived (the widest layer and the
  depth); giving them other values is an error. `widths` is the one place that
  reads them: use it, not `cells`.

  Per layer: `activation`, `dropout`, `recurrent_dropout` and the six L1/L2
  strengths take one value for every recurrent layer or a list with one value per
  layer (`PER_LAYER_FIELDS`); a list of equal values is stored as the scalar.

  Attributes (besides Keras' LSTM arguments):
    units: widths of the recurrent layers, input to output; empty = `cells` x `layers`.
    dense: widths of hidden Dense layers between the last recurrent layer and the
      head (per time step when the stack returns sequences: TimeDistributed).
    dense_activation: activation of the hidden Dense layers (Keras init:
      glorot_uniform kernel, zero bias).
    dense_dropout: Keras `Dropout(rate)` after each hidden Dense layer (traced).
    mask_value: Keras `Masking(mask_value)` before the network: a time step whose
      features all equal it is skipped (state carried, previous output repeated)
      and left out of a many-to-many loss; None = no masking.
    kernel: the recurrent layers' time loop (`KERNELS`): "scan" (autodiff of the
      Keras cell) or "fused" (hand-written gradient, one tanh call over the gates;
      equal to float32 rounding, not bit for bit). Static: each kernel compiles its own program.
  """
  cell: str = "lstm"
  cells: int | None = None  # None: derived (10, or the widest of `units`)
  layers: int | None = None  # None: derived (1, or the depth of `units`)
  architecture: str = "vanilla"
  merge_mode: str = "concat"
  kernel_init: str = "glorot_uniform"
  recurrent_init: str = "orthogonal"
  bias_init: str = "zeros"
  unit_forget_bias: bool = True
  activation: str | tuple[str, ...] = "tanh"
  recurrent_activation: str = "sigmoid"
  output_activation: str = "linear"
  outputs: int = 0
  return_sequences: bool = False
  dropout: float | tuple[float, ...] = 0.0
  recurrent_dropout: float | tuple[float, ...] = 0.0
  kernel_l1: float | tuple[float, ...] = 0.0
  kernel_l2: float | tuple[float, ...] = 0.0
  recurrent_l1: float | tuple[float, ...] = 0.0
  recurrent_l2: float | tuple[float, ...] = 0.0
  bias_l1: float | tuple[float, ...] = 0.0
  bias_l2: float | tuple[float, ...] = 0.0
  layer_norm: bool = False
  learn_initial_state: bool = False
  input_projection: int = 0
  tbptt: int = 0
  conv_filters: int = 8
  conv_kernel: int = 3
  pool_size: int = 2
  units: tuple[int, ...] = ()
  dense: tuple[int, ...] = ()
  dense_activation: str = "relu"
  dense_dropout: float = 0.0
  mask_value: float | None = None
  kernel: str = "scan"

  @property
  def widths(self) -> tuple[int, ...]:
    """Width of every recurrent layer, input to output (encoder layers, then the decoder)."""
    if self.units:
      return self.units
    return (self.cells,) * (self.layers + (self.architecture == "encoder_decoder"))

  def layer_values(self, name: str) -> tuple[Any, ...]:
    """One value of per-layer field `name` (see `PER_LAYER_FIELDS`) per recurrent layer."""
    value = getattr(self, name)
    return tuple(value) if isinstance(value, tuple) else (value,) * len(self.widths)

  @property
  def uses_dropout(self) -> bool:
    """Whether dropout masks are drawn at all (static; the rates themselves are traced)."""
    return (any(r > 0 for r in self.layer_values("dropout"))
            or any(r > 0 for r in self.layer_values("recurrent_dropout")) or self.dense_dropout > 0)

  @property
  def uses_penalty(self) -> bool:
    """Whether the L1/L2 terms enter the loss (static; one switch for all of PENALTY_FIELDS)."""
    return any(v > 0 for name in PENALTY_FIELDS for v in self.layer_values(name))

  @property
  def masks_loss(self) -> bool:
    """Whether losses are masked per time step (`mask_value` with one output per input step)."""
    return self.mask_value is not None and self.return_sequences and self.architecture != "encoder_decoder"

  def __post_init__(self):
    s = "model"
    _choice(s, "cell", self.cell, CELLS)
    _choice(s, "architecture", self.architecture, ARCHITECTURES)
    self._resolve_widths()
    _choice(s, "merge_mode", self.merge_mode, MERGE_MODES)
    for name in ("kernel_init", "recurrent_init", "bias_init"):
      _choice(s, name, getattr(self, name), INITIALIZERS)
    _choice(s, "recurrent_activation", self.recurrent_activation, ACTIVATIONS)
    _choice(s, "output_activation", self.output_activation, OUTPUT_ACTIVATIONS)
    _positive_int(s, "outputs", self.outputs, minimum=0)
    self._resolve_per_layer("activation", lambda name, v: _choice(s, name, v, ACTIVATIONS))
    for name in ("dropout", "recurrent_dropout"):
      self._resolve_per_layer(name, lambda n, v: _number(s, n, v, low=0.0, high=1.0, high_open=True))
    for name in PENALTY_FIELDS:
      self._resolve_per_layer(name, lambda n, v: _number(s, n, v, low=0.0))
    _positive_int(s, "input_projection", self.input_projection, minimum=0)
    _positive_int(s, "tbptt", self.tbptt, minimum=0)
    _positive_int(s, "conv_filters", self.conv_filters)
    _positive_int(s, "conv_kernel", self.conv_kernel)
    _positive_int(s, "pool_size", self.pool_size)
    for name in ("unit_forget_bias", "return_sequences", "layer_norm", "learn_initial_state"):
      if not isinstance(getattr(self, name), bool):
        _fail(s, name, getattr(self, name), "expected true or false")
    object.__setattr__(self, "dense", _widths_tuple("dense", self.dense, "give hidden Dense widths >= 1, "
                                                    "e.g. model.dense = [32], or [] for none"))
    _choice(s, "dense_activation", self.dense_activation, ACTIVATIONS)
    _number(s, "dense_dropout", self.dense_dropout, low=0.0, high=1.0, high_open=True)
    if self.dense_dropout and not self.dense:
      _fail(s, "dense_dropout", self.dense_dropout, "it drops the outputs of hidden Dense layers and "
            "model.dense is empty; add model.dense = [32] or set it to 0")
    _number(s, "mask_value", self.mask_value, allow_none=True)
    if self.mask_value is not None and self.architecture == "cnn_lstm":
      _fail(s, "mask_value", self.mask_value, "masking skips time steps of feature vectors and does not "
            "apply to the frames of architecture 'cnn_lstm'; set model.mask_value = none")
    _choice(s, "kernel", self.kernel, KERNELS)
    if self.kernel == "fused":
      self._check_fused()

  def _check_fused(self) -> None:
    """Refuse what the fused kernel does not compute: it writes out Keras' default cell only."""
    # sigmoid(x) = (tanh(x / 2) + 1) / 2 is what makes one tanh call serve every gate.
    if self.layer_values("activation") != ("tanh",) * len(self.widths) or self.recurrent_activation != "sigmoid":
      raise ConfigError(
          f"model.kernel = 'fused' computes activation 'tanh' and recurrent_activation 'sigmoid' only, got "
          f"activation {self.activation!r}, recurrent_activation {self.recurrent_activation!r}; "
          "set model.kernel = 'scan'.")
    for name, value in (("layer_norm", self.layer_norm), ("tbptt", self.tbptt)):
      if value:
        raise ConfigError(f"model.kernel = 'fused' does not support model.{name} = {value!r}; "
                          f"set model.kernel = 'scan' or model.{name} = {0 if name == 'tbptt' else 'false'}.")

  def _resolve_widths(self) -> None:
    """Check `units` against `cells` / `layers` and store equal widths as cells x layers."""
    s = "model"
    decoder = self.architecture == "encoder_decoder"
    units = _widths_tuple("units", self.units, "give one width >= 1 per recurrent layer, e.g. "
                          "model.units = [128, 64], or [] for cells x layers")
    if not units:
      object.__setattr__(self, "cells", 10 if self.cells is None else self.cells)
      object.__setattr__(self, "layers", 1 if self.layers is None else self.layers)
      _positive_int(s, "cells", self.cells)
      _positive_int(s, "layers", self.layers)
      object.__setattr__(self, "units", ())
      return
    if decoder and len(units) < 2:
      _fail(s, "units", list(units), "architecture 'encoder_decoder' needs the encoder width(s) then the "
            "decoder width, e.g. model.units = [75, 50]")
    layers = len(units) - decoder  # stacked (encoder) layers; the decoder is not counted, as before
    if self.layers is not None and self.layers != layers:
      raise ConfigError(
          f"model.layers = {self.layers!r} contradicts model.units = {list(units)} ({layers} "
          f"{'encoder ' if decoder else ''}layer(s)): the units list sets the depth; drop model.layers "
          "or give one width per layer.")
    equal = len(set(units)) == 1
    cells = units[0] if equal else max(units)
    if self.cells is not None and self.cells != cells:
      raise ConfigError(
          f"model.cells = {self.cells!r} contradicts model.units = {list(units)}: "
          + ("the units list sets the width; drop model.cells." if equal else
             "the layers differ in width; drop model.cells (or set model.units = [] to use cells x layers)."))
    object.__setattr__(self, "cells", cells)
    object.__setattr__(self, "layers", layers)
    object.__setattr__(self, "units", () if equal else units)

  def _resolve_per_layer(self, name: str, check) -> None:
    """Validate a scalar-or-list field; a list must have one value per layer; equal values become one."""
    value = getattr(self, name)
    if not isinstance(value, (tuple, list)):
      check(name, value)
      return
    values, depth = tuple(value), len(self.widths)
    if len(values) != depth:
      _fail("model", name, list(values), f"give one value per recurrent layer ({depth}: "
            f"widths {list(self.widths)}) or one value for every layer")
    for v in values:
      if isinstance(v, (tuple, list)):
        _fail("model", name, list(values), "expected a flat list with one value per recurrent layer")
      check(name, v)
    object.__setattr__(self, name, values[0] if len(set(values)) == 1 else values)


def _widths_tuple(name: str, value: Any, fix: str) -> tuple[int, ...]:
  if isinstance(value, (int, float)) and not isinstance(value, bool):
    value = (value,)  # one width: a one-layer list
  if not isinstance(value, (tuple, list)) or any(
      isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in value):
    _fail("model", name, list(value) if isinstance(value, (tuple, list)) else value, fix)
  return tuple(value)


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  """One optax chain: optimizer, learning-rate schedule, clipping, weight decay.

  Defaults are Keras' (Adam: lr 1e-3, beta 0.9 / 0.999, epsilon 1e-7).
  `schedule` shapes the learning rate over optimizer steps:
    constant; exponential (lr * decay_rate ** (step / decay_steps));
    cosine (to alpha * lr over decay_steps); warmup_cosine (linear warmup over
    warmup_steps, then cosine); piecewise (lr * scales[i] after boundaries[i]).
  Gradients are clipped first (`global_clipnorm`: optax.clip_by_global_norm,
  Keras' `global_clipnorm`; `clipvalue`: element-wise), and weight decay is
  decoupled and scaled by the learning rate, as Keras' `weight_decay`.
  """
  name: str = "adam"
  learning_rate: float = 1e-3
  beta_1: float = 0.9
  beta_2: float = 0.999
  epsilon: float = 1e-7
  rho: float = 0.9
  momentum: float = 0.0
  nesterov: bool = False
  initial_accumulator_value: float = 0.1
  schedule: str = "constant"
  decay_steps: int = 1000
  decay_rate: float = 0.96
  alpha: float = 0.0
  warmup_steps: int = 0
  boundaries: tuple[int, ...] = ()
  scales: tuple[float, ...] = ()
  global_clipnorm: float | None = None
  clipvalue: float | None = None
  weight_decay: float = 0.0

  def __post_init__(self):
    s = "optim"
    _choice(s, "name", self.name, OPTIMIZERS)
    _number(s, "learning_rate", self.learning_rate, low=0.0, low_open=True)
    _number(s, "beta_1", self.beta_1, low=0.0, high=1.0, high_open=True)
    _number(s, "beta_2", self.beta_2, low=0.0, high=1.0, high_open=True)
    _number(s, "epsilon", self.epsilon, low=0.0, low_open=True)
    _number(s, "rho", self.rho, low=0.0, high=1.0, high_open=True)
    _number(s, "momentum", self.momentum, low=0.0, high=1.0, high_open=True)
    _number(s, "initial_accumulator_value", self.initial_accumulator_value, low=0.0)
    _choice(s, "schedule", self.schedule, SCHEDULES)
    _positive_int(s, "decay_steps", self.decay_steps)
    _number(s, "decay_rate", self.decay_rate, low=0.0, low_open=True)
    _number(s, "alpha", self.alpha, low=0.0, high=1.0)
    _positive_int(s, "warmup_steps", self.warmup_steps, minimum=0)
    steps = "a list of step numbers (integers >= 0, strictly increasing)"
    object.__setattr__(self, "boundaries", _items(s, "boundaries", self.boundaries, steps))
    if any(isinstance(b, bool) or not isinstance(b, int) or b < 0 for b in self.boundaries):
      _fail(s, "boundaries", self.boundaries, f"expected {steps}")
    factors = "a list of finite numbers >= 0 (the learning rate's factor after each boundary)"
    object.__setattr__(self, "scales", _items(s, "scales", self.scales, factors))
    if any(isinstance(x, bool) or not isinstance(x, (int, float)) or not 0 <= x < math.inf for x in self.scales):
      _fail(s, "scales", self.scales, f"expected {factors}")
    if len(self.boundaries) != len(self.scales):
      _fail(s, "scales", self.scales,
            f"give one scale per boundary ({len(self.boundaries)} boundaries)")
    if list(self.boundaries) != sorted(set(self.boundaries)):
      _fail(s, "boundaries", self.boundaries, "expected strictly increasing step numbers")
    if self.schedule == "piecewise" and not self.boundaries:
      _fail(s, "boundaries", self.boundaries, "the piecewise schedule needs boundaries and scales")
    _number(s, "global_clipnorm", self.global_clipnorm, low=0.0, low_open=True, allow_none=True)
    _number(s, "clipvalue", self.clipvalue, low=0.0, low_open=True, allow_none=True)
    _number(s, "weight_decay", self.weight_decay, low=0.0)
    if not isinstance(self.nesterov, bool):
      _fail(s, "nesterov", self.nesterov, "expected true or false")
    if self.nesterov and self.name != "sgd":
      _fail(s, "nesterov", self.nesterov, "nesterov applies to optim.name = 'sgd' only")


def _monitor(section: str, value: Any) -> None:
  # Which keys exist depends on the data and metrics: `data.check_compatible` names them.
  if not isinstance(value, str) or not value:
    _fail(section, "monitor", value, "expected a history key such as 'val_loss'")


def _min_delta(section: str, value: float) -> None:
  low, high = MIN_DELTA_RANGE
  if value != 0 and not low <= abs(value) <= high:
    _fail(section, "min_delta", value, f"expected 0 or an absolute value in [{low:g}, {high:g}]")


@dataclasses.dataclass(frozen=True)
class EarlyStoppingConfig:
  """Keras 3 `EarlyStopping` arguments (verbose aside); see `jaxlstm.early_stopping`."""
  monitor: str = "val_loss"
  min_delta: float = 0.0
  patience: int = 0
  mode: str = "auto"
  baseline: float | None = None
  restore_best_weights: bool = False
  start_from_epoch: int = 0

  def __post_init__(self):
    s = "train.early_stopping"
    _monitor(s, self.monitor)
    _number(s, "min_delta", self.min_delta)
    _min_delta(s, self.min_delta)
    object.__setattr__(self, "min_delta", abs(self.min_delta))
    _positive_int(s, "patience", self.patience, minimum=0)
    _choice(s, "mode", self.mode, ES_MODES)
    _number(s, "baseline", self.baseline, allow_none=True)
    if not isinstance(self.restore_best_weights, bool):
      _fail(s, "restore_best_weights", self.restore_best_weights, "expected true or false")
    _positive_int(s, "start_from_epoch", self.start_from_epoch, minimum=0)


@dataclasses.dataclass(frozen=True)
class ReduceLRConfig:
  """Keras 3 `ReduceLROnPlateau` arguments (verbose aside)."""
  monitor: str = "val_loss"
  factor: float = 0.1
  patience: int = 10
  mode: str = "auto"
  min_delta: float = 1e-4
  cooldown: int = 0
  min_lr: float = 0.0

  def __post_init__(self):
    s = "train.reduce_lr"
    _monitor(s, self.monitor)
    _number(s, "factor", self.factor, low=0.0, high=1.0, low_open=True, high_open=True)
    _positive_int(s, "patience", self.patience, minimum=0)
    _choice(s, "mode", self.mode, ES_MODES)
    _number(s, "min_delta", self.min_delta, low=0.0)
    _min_delta(s, self.min_delta)
    _positive_int(s, "cooldown", self.cooldown, minimum=0)
    _number(s, "min_lr", self.min_lr, low=0.0)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """The training loop.

  Attributes:
    epochs: passes over the training data.
    batch_size: samples per step; 0 means the whole training set as one batch.
      A last partial batch is kept (masked), never dropped, as in Keras.
    shuffle: reshuffle the training samples each epoch (Keras' default).
    loss, metrics: names in LOSSES / METRICS.
    vary: which random streams differ between repeats. A stream left out is
      held fixed (every repeat uses repeat 0's draw), e.g. `("shuffle",)`
      gives every repeat the same initial weights but its own data order.
    early_stopping, reduce_lr: Keras-style per-repeat callbacks, or None.
    checkpoint_every: save the full training state every this many epochs
      (at chunk boundaries) so a killed run resumes; 0 disables.
    paired: common random numbers: repeat i of every paired config draws the
      same keys (initial weights where shapes match, data order, dropout masks,
      split), so comparisons between configs are paired and far more sensitive.
      Off by default: each config's repeats draw from keys of their own.
  """
  epochs: int = 500
  batch_size: int = 32
  shuffle: bool = True
  loss: str = "mse"
  metrics: tuple[str, ...] = ()
  vary: tuple[str, ...] = STREAMS
  early_stopping: EarlyStoppingConfig | None = None
  reduce_lr: ReduceLRConfig | None = None
  checkpoint_every: int = 0
  paired: bool = False

  def __post_init__(self):
    s = "train"
    _positive_int(s, "epochs", self.epochs)
    _positive_int(s, "batch_size", self.batch_size, minimum=0)
    if not isinstance(self.shuffle, bool):
      _fail(s, "shuffle", self.shuffle, "expected true or false")
    _choice(s, "loss", self.loss, LOSSES)
    object.__setattr__(self, "metrics", _names(s, "metrics", self.metrics, METRICS))
    vary = _names(s, "vary", self.vary, STREAMS)
    object.__setattr__(self, "vary", tuple(sorted(set(vary), key=STREAMS.index)))
    if isinstance(self.early_stopping, Mapping):
      object.__setattr__(self, "early_stopping", _section(EarlyStoppingConfig, self.early_stopping, "train.early_stopping"))
    if isinstance(self.reduce_lr, Mapping):
      object.__setattr__(self, "reduce_lr", _section(ReduceLRConfig, self.reduce_lr, "train.reduce_lr"))
    _positive_int(s, "checkpoint_every", self.checkpoint_every, minimum=0)
    if not isinstance(self.paired, bool):
      _fail(s, "paired", self.paired, "expected true or false")


_SECTIONS = {"data": DataConfig, "model": ModelConfig, "optim": OptimConfig, "train": TrainConfig}
_NESTED = {"train.early_stopping": EarlyStoppingConfig, "train.reduce_lr": ReduceLRConfig}


@dataclasses.dataclass(frozen=True)
class Config:
  """The root config: one grid point of an experiment."""
  data: DataConfig = dataclasses.field(default_factory=DataConfig)
  model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
  optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
  train: TrainConfig = dataclasses.field(default_factory=TrainConfig)

  def __post_init__(self):
    for name, cls in _SECTIONS.items():
      value = getattr(self, name)
      if isinstance(value, Mapping):
        object.__setattr__(self, name, _section(cls, value, name))
      elif not isinstance(value, cls):
        raise ConfigError(f"Config.{name} must be a {cls.__name__} or a mapping, got {type(value).__name__}.")
    _check_cross_fields(self)

  def __hash__(self):
    return hash(self.config_id)

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> Config:
    """Build from a nested dict (as `to_dict` gives, or as read from JSON/TOML)."""
    if not isinstance(d, Mapping):
      raise ConfigError(f"expected a mapping of config sections, got {type(d).__name__}.")
    _reject_unknown(d, list(_SECTIONS), "")
    return cls(**{k: _section(_SECTIONS[k], v, k) for k, v in d.items()})

  def to_dict(self) -> dict[str, Any]:
    """Nested plain dict (JSON-safe: tuples become lists)."""
    return json.loads(self._canonical())

  def _canonical(self) -> str:
    """The canonical JSON of every field, kept per instance.

    A config's hash is its id, so a dict or set of configs asks for this at every
    look-up (~50 times in a run of the default study, ~1 ms each through `asdict`).
    A frozen config can still change through its one plain dict, `data.options`,
    so the text is kept under that dict's own JSON and made again when it changes.
    """
    options = _canonical_json(self.data.options)
    kept = self.__dict__.get("_canonical_kept")
    if kept is None or kept[0] != options:
      kept = (options, _canonical_json(dataclasses.asdict(self)))
      object.__setattr__(self, "_canonical_kept", kept)
    return kept[1]

  def override(self, changes: Mapping[str, Any] | None = None, **kwargs) -> Config:
    """Return a copy with dotted fields replaced: `cfg.override({"model.cells": 5})`.

    Values given as strings (from a command line) are converted to the field's
    type. Unknown names get a "did you mean".
    """
    changes = {**(changes or {}), **kwargs}
    d = self.to_dict()
    for dotted, value in changes.items():
      path = _resolve_path(dotted)
      target = d
      for part in path[:-1]:
        if target.get(part) is None:
          target[part] = {}
        target = target[part]
      target[path[-1]] = parse_value(dotted, value) if isinstance(value, str) else value
    if d["model"].get("units"):
      # With a units list, cells and layers follow it (the widest layer, the depth) unless
      # this override sets them too; then ModelConfig checks that they agree with it.
      for name in ("cells", "layers"):
        if f"model.{name}" not in changes:
          d["model"][name] = None
    return Config.from_dict(d)

  def get(self, dotted: str) -> Any:
    """Value of a dotted field, e.g. `cfg.get("optim.learning_rate")`."""
    value: Any = self
    for part in _resolve_path(dotted):
      value = getattr(value, part) if value is not None else None
    return value

  def identity(self) -> dict[str, Any]:
    """What identifies the config: the nested dict its id hashes (see `config_id`).

    `to_dict()` with three changes: fields added after ids were frozen (not in
    `ID_FIELDS`) are left out while they hold their default; operational fields
    (`OPERATIONAL_FIELDS`) are shown at their default; and data read from a file
    (`data.options.path`) is named by a fingerprint of the file's content, so the
    same file anywhere gives the same id.
    """
    d = self.to_dict()
    for section, cls in (*_SECTIONS.items(), *_NESTED.items()):
      fields = _subtree(d, section)
      if fields is None:
        continue
      defaults = json.loads(_defaults_json(cls))
      for name in list(fields):
        dotted = f"{section}.{name}"
        if dotted in _NESTED:
          continue
        if dotted in OPERATIONAL_FIELDS:
          fields[name] = defaults[name]
        elif name not in ID_FIELDS[section] and fields[name] == defaults[name]:
          del fields[name]
    path = d["data"]["options"].get("path")
    if isinstance(path, str) and self.data.problem == "csv":
      d["data"]["options"]["path"] = file_fingerprint(path)
    return d

  @property
  def config_id(self) -> str:
    """Stable 12-hex-digit id: a hash of the canonical JSON of `identity()`.

    It keys every repeat's random streams, results folders and resume, so it never
    changes for an existing config (DESIGN §10; `tests/test_ids.py` freezes the ids
    of every study).
    """
    return hashlib.sha256(_canonical_json(self.identity()).encode()).hexdigest()[:12]


@functools.cache
def _defaults_json(cls: type) -> str:
  """A section's default fields as `to_dict` writes them (JSON; `Config.identity` asks per hash)."""
  return _canonical_json(dataclasses.asdict(cls()))


def _subtree(d: dict, dotted: str) -> dict | None:
  for part in dotted.split("."):
    d = d.get(part) if isinstance(d, dict) else None
  return d if isinstance(d, dict) else None


_FINGERPRINTS: dict[tuple, str] = {}


def file_fingerprint(path: str) -> str:
  """`"content-sha256:<16 hex>"` of a file's bytes (the path itself when it cannot be read).

  Cached by (absolute path, size, modification time), so ids stay cheap.
  """
  import os
  try:
    stat = os.stat(path)
  except OSError:
    return path
  key = (os.path.abspath(path), stat.st_size, stat.st_mtime_ns)
  if key not in _FINGERPRINTS:
    digest = hashlib.sha256()
    try:
      with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
          digest.update(block)
    except OSError:
      return path
    _FINGERPRINTS[key] = "content-sha256:" + digest.hexdigest()[:16]
  return _FINGERPRINTS[key]


def _check_cross_fields(cfg: Config) -> None:
  m, t = cfg.model, cfg.train
  if t.loss == "categorical_crossentropy" and m.output_activation != "softmax":
    raise ConfigError(
        f"train.loss = 'categorical_crossentropy' needs model.output_activation = 'softmax', "
        f"got {m.output_activation!r}.")
  if t.loss == "binary_crossentropy" and m.output_activation != "sigmoid":
    raise ConfigError(
        f"train.loss = 'binary_crossentropy' needs model.output_activation = 'sigmoid', "
        f"got {m.output_activation!r}.")
  if m.architecture == "encoder_decoder" and m.return_sequences:
    raise ConfigError("model.return_sequences does not apply to architecture 'encoder_decoder' "
                      "(its decoder always returns sequences); set it to false.")


def _canonical_json(obj: Any) -> str:
  return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)


def _json_default(obj):
  if isinstance(obj, tuple):
    return list(obj)
  if isinstance(obj, Mapping):
    return dict(obj)
  raise TypeError(f"not JSON-serialisable: {obj!r}")


def _reject_unknown(d: Mapping[str, Any], names: Sequence[str], prefix: str) -> None:
  for bad in d.keys() - set(names):
    full = [prefix + n for n in names]
    hint = difflib.get_close_matches(prefix + str(bad), full, n=1)
    extra = f" Did you mean {hint[0]!r}?" if hint else ""
    if not prefix and not hint:  # a field written outside its section, or a run option
      owner = [n for n in all_fields() if n.endswith("." + str(bad))][:1]
      if owner:
        section, _, leaf = owner[0].rpartition(".")
        extra = f" Did you mean {owner[0]!r} ({leaf} in a [{section}] table)?"
      elif bad in ("repeats", "seed"):
        extra = f" --{bad} is a command-line option, not a config field."
    raise ConfigError(f"Unknown config field {prefix + str(bad)!r}.{extra} "
                      f"Known fields: {', '.join(full)}.")


def _section(cls, value, name):
  if isinstance(value, cls):
    return value
  if value is None and name in _NESTED:
    return None
  if not isinstance(value, Mapping):
    raise ConfigError(f"{name} must be a mapping of fields, got {value!r}.")
  names = [f.name for f in dataclasses.fields(cls)]
  _reject_unknown(value, names, name + ".")
  kwargs = dict(value)
  for key in ("early_stopping", "reduce_lr"):
    nested = f"{name}.{key}"
    if nested in _NESTED and kwargs.get(key) is not None:
      kwargs[key] = _section(_NESTED[nested], kwargs[key], nested)
  for f in dataclasses.fields(cls):
    if f.name in kwargs and isinstance(kwargs[f.name], list):
      kwargs[f.name] = tuple(kwargs[f.name])
  try:
    return cls(**kwargs)
  except TypeError as e:  # e.g. a wrong value type reaching a comparison
    raise ConfigError(f"{name}: {e}") from None


def all_fields() -> list[str]:
  """Every dotted field name, e.g. 'model.cells', 'train.early_stopping.patience'."""
  names = []
  for section, cls in _SECTIONS.items():
    for f in dataclasses.fields(cls):
      dotted = f"{section}.{f.name}"
      if dotted in _NESTED:
        names += [f"{dotted}.{g.name}" for g in dataclasses.fields(_NESTED[dotted])]
      names.append(dotted)
  return names


def _resolve_path(dotted: str) -> list[str]:
  if dotted not in all_fields() and not dotted.startswith("data.options."):
    hint = difflib.get_close_matches(dotted, all_fields(), n=1)
    if not hint:  # a bare field name: 'cells' -> 'model.cells'
      hint = [n for n in all_fields() if n.endswith("." + dotted)][:1]
    extra = f" Did you mean {hint[0]!r}?" if hint else ""
    raise ConfigError(f"Unknown config field {dotted!r}.{extra} "
                      f"Use dotted names such as 'model.cells' or 'optim.learning_rate'.")
  return dotted.split(".")


def check_field(dotted: str) -> None:
  """Raise ConfigError (with "did you mean") unless `dotted` names a config field.

  `data.options.<name>` is any option of the problem: the problem checks it
  when the data is generated (still before anything compiles).
  """
  _resolve_path(dotted)


def _field_type(dotted: str):
  path = dotted.split(".")
  if path[:2] == ["data", "options"]:
    return Any
  cls = _SECTIONS[path[0]]
  for i, part in enumerate(path[1:], start=1):
    hints = typing.get_type_hints(cls)
    tp = hints[part]
    if i < len(path) - 1:
      cls = _NESTED[".".join(path[: i + 1])]
  return tp


def _list_items(text: str) -> list[str]:
  """Items of a list written on a command line: `128,64`, `128/64`, `[128, 64]`; `none` or `[]` is empty."""
  text = text.strip()
  if text.startswith("[") and text.endswith("]"):
    text = text[1:-1]
  if text.strip().lower() in ("", "none"):
    return []
  parts = [p.strip() for p in text.replace(";", ",").replace("/", ",").split(",")]
  if any(not p for p in parts):
    raise ValueError(text)
  return parts


def _looks_like_list(text: str) -> bool:
  return any(c in text for c in ",/;[")


def _parse_scalar(tp: Any, text: str) -> Any:
  return text if tp is str else tp(text)


def _type_name(tp: Any) -> str:
  origin = typing.get_origin(tp)
  items = [a for a in typing.get_args(tp) if a is not Ellipsis]
  if origin is tuple:
    return f"list of {items[0].__name__} (e.g. 128,64)"
  if origin is types.UnionType:
    scalar = next(a for a in items if typing.get_origin(a) is not tuple)
    return f"{scalar.__name__} or list of {scalar.__name__} (one per layer)"
  return getattr(tp, "__name__", str(tp))


def parse_value(dotted: str, text: str) -> Any:
  """Convert a command-line string to the type of field `dotted`.

  A list-valued field takes its items separated by commas (`128,64`), slashes
  (`128/64`) or in brackets (`[128,64]`); `none` or `[]` is the empty list.
  A per-layer field (`PER_LAYER_FIELDS`) reads one value (`0.2`) as a scalar for
  every layer and a list (`0.2,0.1`) as one value per layer.

  Raises:
    ConfigError: naming the field, the text and the expected type.
  """
  tp = _field_type(dotted)
  args = typing.get_args(tp)
  optional = type(None) in args
  if optional:
    tp = next(a for a in args if a is not type(None))
  text = text.strip()
  if optional and text.lower() in ("none", "null", ""):
    return None
  origin = typing.get_origin(tp)
  try:
    if tp is bool:
      lowered = text.lower()
      if lowered in ("true", "1", "yes", "on"):
        return True
      if lowered in ("false", "0", "no", "off"):
        return False
      raise ValueError
    if tp is int:
      return int(text)
    if tp is float:
      return float(text)
    if tp is str:
      return text
    if origin is tuple:
      (item,) = {a for a in typing.get_args(tp) if a is not Ellipsis}
      return tuple(_parse_scalar(item, p) for p in _list_items(text))
    if origin is types.UnionType:  # a scalar for every layer, or a list with one per layer
      item = next(a for a in args if typing.get_origin(a) is not tuple)
      if _looks_like_list(text):
        return tuple(_parse_scalar(item, p) for p in _list_items(text))
      return _parse_scalar(item, text)
    if tp is Any:
      try:
        return json.loads(text)
      except json.JSONDecodeError:
        return text  # a problem option such as a file or column name
    if origin in (Mapping, dict) or tp in (EarlyStoppingConfig, ReduceLRConfig):
      return json.loads(text)
  except (ValueError, json.JSONDecodeError):
    pass
  else:
    return text
  raise ConfigError(f"{dotted} = {text!r} is not a valid {_type_name(tp)}.")


def expand_grid(base: Config, grid: Mapping[str, Iterable[Any]]) -> list[Config]:
  """All configs of the Cartesian product of `grid` (dotted key -> values), in order.

  The first key varies slowest, as in nested for-loops written in grid order.
  """
  keys = list(grid)
  for key in keys:
    _resolve_path(key)
  values = [list(grid[k]) for k in keys]
  for key, vals in zip(keys, values):
    if not vals:
      raise ConfigError(f"grid {key!r} has no values; give at least one.")
  configs = [base.override(dict(zip(keys, combo))) for combo in itertools.product(*values)]
  ids = [c.config_id for c in configs]
  if len(set(ids)) != len(ids):
    raise ConfigError("the grid repeats a config (two grid points resolve to the same values).")
  return configs

