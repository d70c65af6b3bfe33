"""The engine: every repeat of a config (and every traced hyper-parameter value) in one call.

Building blocks, all pure:
  * `Program(config, dataset)`: closes over everything static of one
    static-shape group (model, optimizer structure, batch layout, epochs);
  * `Program.init_member(member)`: one member's `TrainState`;
  * `Program.run_epochs(state, member, data, n)`: `lax.scan` over n epochs, each
    a `lax.scan` over minibatches, validation at each epoch end, early
    stopping / LR reduction as per-member state machines;
  * `Program.train(member)`: a whole solo run (the reference that an ensemble
    member must equal);
  * `Program.start` / `Program.resume`: the jitted ensemble entry points:
    `vmap(run_epochs)` over members, with initialisation done per member by
    `lax.map` so that the orthogonal initialiser's QR never runs batched
    (a batched LAPACK call deadlocks XLA:CPU on 2 cores with jaxlib 0.10.x,
    DESIGN §3 and reference/hang.md).

Members are (config, repeat) pairs of one group: their keys and traced
hyper-parameters are stacked along a leading axis. Configs that differ only in
`model.cells` share the program by zero-padding to the widest config
(`config.can_pad_cells`): padded units start at zero and get exactly zero
gradients, so each member's numbers equal its unpadded run.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxlstm import early_stopping as es
from jaxlstm import losses, optim, problems
from jaxlstm.config import PENALTY_FIELDS, Config, ConfigError
from jaxlstm.keys import StreamKeys
from jaxlstm.models import Network
from jaxlstm.problems import Dataset

RECURRENT_PREFIXES = ("lstm_", "gru_", "forward_", "backward_", "encoder_", "decoder")


class Member(NamedTuple):
  """Per-member inputs; leaves gain a leading `[members]` axis when stacked."""
  keys: StreamKeys
  hparams: dict[str, jax.Array]


class TrainState(NamedTuple):
  """Everything a member carries from epoch to epoch (a pytree; checkpointable)."""
  params: Any
  opt_state: Any
  epoch: jax.Array  # epochs completed
  stopping: Any  # es.EarlyStoppingState or ()
  best_params: Any  # snapshot for restore_best_weights, or ()
  reduce_lr: Any  # es.ReduceLRState or ()
  diverged_epoch: jax.Array  # first epoch with a non-finite loss, -1 if none


class Data(NamedTuple):
  x_train: jax.Array
  y_train: jax.Array
  x_val: jax.Array
  y_val: jax.Array


def member_hparams(config: Config) -> dict[str, float]:
  """The traced hyper-parameters of one config (one member's values)."""
  values = dict(optim.hyperparams(config.optim))
  model = config.model
  if model.uses_dropout:
    values["dropout"] = model.dropout
    values["recurrent_dropout"] = model.recurrent_dropout
  if model.uses_penalty:
    values.update({name: getattr(model, name) for name in PENALTY_FIELDS})
  return values


def history_keys(config: Config) -> list[str]:
  """The metric names a run of `config` records per epoch, in order."""
  names = ["loss", *config.train.metrics]
  keys = names + ["val_" + n for n in names]
  if config.model.uses_penalty:
    keys.append("penalty")
  if config.train.reduce_lr is not None:
    keys.append("learning_rate")
  return keys


def resolve_dataset(config: Config, dataset: Dataset | None = None) -> Dataset:
  """The dataset a config trains on: given, or generated from `config.data`; Keras validation_split applied."""
  resolved_for = json.dumps(config.to_dict()["data"], sort_keys=True)
  if dataset is not None and dataset.metadata.get("resolved_for") == resolved_for:
    return dataset  # already split / encoded / scaled for this data config
  if dataset is None:
    try:
      dataset = problems.make(config.data.problem, **config.data.options)
    except (TypeError, ValueError) as e:
      raise ConfigError(f"data.options for problem {config.data.problem!r}: {e}") from None
  if config.data.encoding == "integer":
    dataset = integer_encoded(dataset)
  split = config.data.validation_split
  if split:
    n = dataset.x_train.shape[0]
    n_val = n - int(math.floor(n * (1.0 - split)))  # Keras: the last fraction, before shuffling
    if n_val < 1 or n_val >= n:
      raise ConfigError(f"data.validation_split = {split} leaves {n_val} of {n} samples for validation; "
                        "choose a fraction that keeps at least one sample on each side.")
    dataset = dataclasses.replace(
        dataset, x_train=dataset.x_train[: n - n_val], y_train=dataset.y_train[: n - n_val],
        x_val=dataset.x_train[n - n_val:], y_val=dataset.y_train[n - n_val:])
  if config.data.scaling != "none":
    from jaxlstm import prep
    dataset = prep.prepare(dataset, config.data.scaling)
  return dataclasses.replace(dataset, metadata={**dataset.metadata, "resolved_for": resolved_for})


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
  for name, callback in (("early_stopping", train.early_stopping), ("reduce_lr", train.reduce_lr)):
    if callback is not None and callback.monitor not in history_keys(config):
      known = history_keys(config)
      hint = difflib.get_close_matches(callback.monitor, known, n=1)
      raise ConfigError(
          f"train.{name}.monitor = {callback.monitor!r} is not a history key of this config"
          + (f"; did you mean {hint[0]!r}" if hint else "")
          + f". Known keys: {', '.join(known)}.")


def batch_layout(n: int, batch_size: int) -> tuple[int, int]:
  """`(batch, steps)` per epoch: batch_size 0 means all n; a last partial batch is kept."""
  batch = n if batch_size == 0 else min(batch_size, n)
  return batch, -(-n // batch)


def penalty(params, hp: Mapping[str, jax.Array]) -> jax.Array:
  """Keras' L1/L2 regularisation of the recurrent layers: sum of l1 |w| + l2 w^2."""
  total = jnp.zeros([], jnp.float32)
  for layer, leaves in params.items():
    if not layer.startswith(RECURRENT_PREFIXES):
      continue
    for leaf_name, kind in (("kernel", "kernel"), ("recurrent_kernel", "recurrent"),
                            ("bias", "bias"), ("recurrent_bias", "bias")):
      if leaf_name in leaves:
        w = leaves[leaf_name]
        total = total + hp[f"{kind}_l1"] * jnp.sum(jnp.abs(w)) + hp[f"{kind}_l2"] * jnp.sum(w * w)
  return total


class Program:
  """Everything static of one group: built once, traced once per entry point."""

  def __init__(self, config: Config, dataset: Dataset, *, cells: int | None = None):
    """Args:
      config: a representative config of the group (its traced values are ignored).
      dataset: the group's data.
      cells: the (padded) width every member runs at; default `config.model.cells`.
    """
    check_compatible(config, dataset)
    self.config = config
    self.cells = cells or config.model.cells
    self.dataset = dataset
    model_cfg = dataclasses.replace(config.model, cells=self.cells)
    y = dataset.y_train
    self.outputs = config.model.outputs or int(y.shape[-1])
    self.time_out = int(y.shape[1]) if (y.ndim == 3 and config.model.architecture == "encoder_decoder") else 0
    self.frame_shape = tuple(dataset.metadata.get("frame_shape", ())) if config.model.architecture == "cnn_lstm" else ()
    self.network = Network(model_cfg, self.outputs, time_out=self.time_out, frame_shape=self.frame_shape)
    self.tx = optim.make_optimizer(config.optim)
    n_all = dataset.x_train.shape[0] + dataset.x_val.shape[0]
    if config.data.resplit:
      self.n_val = max(1, int(round(n_all * config.data.resplit)))
      self.n_train = n_all - self.n_val
    else:
      self.n_train, self.n_val = dataset.x_train.shape[0], dataset.x_val.shape[0]
    self.batch, self.steps = batch_layout(self.n_train, config.train.batch_size)
    self.history_keys = history_keys(config)
    self.epochs = config.train.epochs
    self.traces = 0  # incremented at trace time only: counts compilations
    self.metric_fns = {name: self._metric_fn(name) for name in config.train.metrics}

  def _metric_fn(self, name: str):
    if name != "mae_original":
      return losses.METRICS[name]
    from jaxlstm import prep
    outputs = self.dataset.y_train.shape[-1]
    ones, zeros = np.ones((1, outputs), np.float32), np.zeros((1, outputs), np.float32)
    # Affine scalers: one scaled unit is this many original units per output.
    unit = (prep.to_original_units(self.dataset, ones) - prep.to_original_units(self.dataset, zeros))[0]
    unit_scale = jnp.asarray(np.abs(unit), jnp.float32)
    return lambda logits, targets, act: losses.mae_original(logits, targets, act, unit_scale=unit_scale)

  # ----- pieces of one member -------------------------------------------------
  def network_for(self, cells: int) -> Network:
    cfg = dataclasses.replace(self.config.model, cells=cells)
    return Network(cfg, self.outputs, time_out=self.time_out, frame_shape=self.frame_shape)

  def init_params(self, key: jax.Array, cells: int | None = None):
    """Initial parameters of one member at width `cells` (unpadded)."""
    network = self.network_for(cells or self.cells)
    return network.init(key, jnp.zeros((1, *self.dataset.x_train.shape[1:]), jnp.float32))["params"]

  def init_state(self, params, member: Member) -> TrainState:
    """Optimizer and callback state around (possibly padded) `params`."""
    opt_state = self.tx.init(params)
    for name, value in opt_state.hyperparams.items():
      if name in member.hparams:
        opt_state.hyperparams[name] = jnp.asarray(member.hparams[name], jnp.float32)
    train = self.config.train
    stopping = es.init_early_stopping() if train.early_stopping is not None else ()
    best = params if (train.early_stopping is not None and train.early_stopping.restore_best_weights) else ()
    reduce = es.init_reduce_lr() if train.reduce_lr is not None else ()
    return TrainState(params, opt_state, jnp.zeros([], jnp.int32), stopping, best, reduce,
                      jnp.full([], -1, jnp.int32))

  def init_member(self, member: Member) -> TrainState:
    return self.init_state(self.init_params(member.keys.init), member)

  def member_data(self, data: Data, member: Member) -> Data:
    """The member's train/validation arrays (its own random split with `data.resplit`)."""
    if not self.config.data.resplit:
      return data
    x_all = jnp.concatenate([data.x_train, data.x_val])
    y_all = jnp.concatenate([data.y_train, data.y_val])
    order = jax.random.permutation(member.keys.split, x_all.shape[0])
    train_idx, val_idx = order[: self.n_train], order[self.n_train:]
    return Data(x_all[train_idx], y_all[train_idx], x_all[val_idx], y_all[val_idx])

  def logits(self, params, x, *, dropout_key=None, hparams=None):
    rates = None
    if dropout_key is not None:
      rates = (hparams["dropout"], hparams["recurrent_dropout"])
    return self.network.apply({"params": params}, x, dropout_key=dropout_key, rates=rates)

  def evaluate(self, params, x, y, hparams) -> dict[str, jax.Array]:
    """Loss and metrics on a whole set (no dropout): the `val_*` entries."""
    cfg = self.config
    out = self.logits(params, x)
    act = cfg.model.output_activation
    values = {"loss": jnp.mean(losses.LOSSES[cfg.train.loss](out, y, act))}
    if self.config.model.uses_penalty:
      # Keras' evaluate() adds the regularisation losses to `val_loss` too.
      values["loss"] = values["loss"] + penalty(params, hparams)
    for metric, fn in self.metric_fns.items():
      values[metric] = jnp.mean(fn(out, y, act))
    return values

  def epoch_order(self, shuffle_key: jax.Array, epoch: jax.Array) -> jax.Array:
    """`[n_train]` order in which an epoch visits the training samples."""
    if not self.config.train.shuffle:
      return jnp.arange(self.n_train)
    return jax.random.permutation(jax.random.fold_in(shuffle_key, epoch), self.n_train)

  def run_epochs(self, state: TrainState, member: Member, data: Data, n_epochs: int):
    """Train one member for `n_epochs` epochs from `state.epoch`.

    Epochs at or past `train.epochs`, and epochs after the member stopped
    early, leave the state unchanged and record NaN.

    Returns:
      `(state, history)` with history leaves `[n_epochs]`.
    """
    cfg = self.config
    data = self.member_data(data, member)
    hp = member.hparams
    act = cfg.model.output_activation
    loss_fn_data = losses.LOSSES[cfg.train.loss]
    metric_fns = self.metric_fns
    n, batch, steps = self.n_train, self.batch, self.steps
    pad = steps * batch - n
    uses_dropout, uses_penalty = cfg.model.uses_dropout, cfg.model.uses_penalty

    def objective(params, xb, yb, mask, dropout_key):
      out = self.logits(params, xb, dropout_key=dropout_key if uses_dropout else None, hparams=hp)
      count = jnp.sum(mask)
      data_loss = jnp.sum(mask * loss_fn_data(out, yb, act)) / count
      reg = penalty(params, hp) if uses_penalty else jnp.zeros([], jnp.float32)
      metric_sums = {m: jnp.sum(mask * fn(out, yb, act)) for m, fn in metric_fns.items()}
      return data_loss + reg, (reg, metric_sums)

    grad_fn = jax.value_and_grad(objective, has_aux=True)

    def make_batch_step(epoch_dropout_key):
      def batch_step(carry, inputs):
        params, opt_state = carry
        idx, mask, step = inputs
        dropout_key = jax.random.fold_in(epoch_dropout_key, step)
        (loss, (reg, metric_sums)), grads = grad_fn(params, data.x_train[idx], data.y_train[idx], mask, dropout_key)
        updates, opt_state = self.tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        count = jnp.sum(mask)
        return (params, opt_state), (loss * count, reg * count, metric_sums)
      return batch_step

    def epoch_step(state: TrainState, _):
      epoch = state.epoch
      stopped = state.stopping.stopped if cfg.train.early_stopping is not None else jnp.array(False)
      active = jnp.logical_and(epoch < self.epochs, jnp.logical_not(stopped))
      order = self.epoch_order(member.keys.shuffle, epoch)
      idx = jnp.concatenate([order, jnp.zeros((pad,), order.dtype)]).reshape(steps, batch)
      mask = (jnp.arange(steps * batch) < n).astype(jnp.float32).reshape(steps, batch)
      batch_step = make_batch_step(jax.random.fold_in(member.keys.dropout, epoch))
      (params, opt_state), (loss_sums, reg_sums, metric_sums) = jax.lax.scan(
          batch_step, (state.params, state.opt_state), (idx, mask, jnp.arange(steps)))
      # Keras 3 averages batch losses weighted by batch size: the mean over samples.
      record = {"loss": jnp.sum(loss_sums) / n}
      for m in cfg.train.metrics:
        record[m] = jnp.sum(metric_sums[m]) / n
      val = self.evaluate(params, data.x_val, data.y_val, hp)
      for name, value in val.items():
        record["val_" + name] = value
      if uses_penalty:
        record["penalty"] = jnp.sum(reg_sums) / n
      new = state._replace(params=params, opt_state=opt_state)
      if cfg.train.reduce_lr is not None:
        rl = cfg.train.reduce_lr
        lr = state.opt_state.hyperparams["learning_rate"]
        record["learning_rate"] = lr
        reduce_state, new_lr = es.update_reduce_lr(
            state.reduce_lr, record[rl.monitor], lr, mode=es.resolve_mode(rl.monitor, rl.mode),
            factor=rl.factor, patience=rl.patience, min_delta=rl.min_delta, cooldown=rl.cooldown,
            min_lr=rl.min_lr)
        new.opt_state.hyperparams["learning_rate"] = new_lr
        new = new._replace(reduce_lr=reduce_state)
      if cfg.train.early_stopping is not None:
        esc = cfg.train.early_stopping
        stopping, improved = es.update_early_stopping(
            state.stopping, record[esc.monitor], epoch, mode=es.resolve_mode(esc.monitor, esc.mode),
            min_delta=esc.min_delta, patience=esc.patience, baseline=esc.baseline,
            start_from_epoch=esc.start_from_epoch)
        new = new._replace(stopping=stopping)
        if esc.restore_best_weights:
          best = jax.tree.map(lambda b, p: jnp.where(improved, p, b), state.best_params, params)
          new = new._replace(best_params=best)
      finite = jnp.isfinite(record["loss"])
      diverged_epoch = jnp.where((state.diverged_epoch < 0) & ~finite & active, epoch, state.diverged_epoch)
      new = new._replace(epoch=epoch + 1, diverged_epoch=diverged_epoch)
      # Frozen members (stopped, or past the last epoch) keep their state bit for bit.
      new = jax.tree.map(lambda a, b: jnp.where(active, a, b), new, state._replace(epoch=epoch + 1))
      record = {k: jnp.where(active, v, jnp.nan).astype(jnp.float32) for k, v in record.items()}
      return new, record

    return jax.lax.scan(epoch_step, state, None, length=n_epochs)

  def train(self, member: Member, data: Data | None = None):
    """A whole solo run of one member: `(state, history [epochs])`."""
    data = data if data is not None else self.data()
    return self.run_epochs(self.init_member(member), member, data, self.epochs)

  def data(self) -> Data:
    ds = self.dataset
    return Data(*(jnp.asarray(a) for a in (ds.x_train, ds.y_train, ds.x_val, ds.y_val)))

  # ----- ensembles --------------------------------------------------------------
  def init_members(self, members: Member, layout: Sequence[tuple[int, int]]) -> TrainState:
    """States of stacked members; `layout` = ((cells, count), ...) in member order."""
    states, start = [], 0
    for cells, count in layout:
      part = jax.tree.map(lambda a: a[start:start + count], members)
      # lax.map, not vmap: keeps the orthogonal init's QR unbatched (hang.md).
      params = jax.lax.map(lambda k: self.init_params(k, cells), part.keys.init)
      if cells != self.cells:
        params = pad_params(params, cells, self.cells, self.config.model.cell, leading=1)
      states.append(jax.vmap(self.init_state)(params, part))
      start += count
    return jax.tree.map(lambda *xs: jnp.concatenate(xs), *states)

  def make_start(self, layout, n_epochs):
    def start(members: Member, data: Data):
      self.traces += 1
      states = self.init_members(members, layout)
      return jax.vmap(lambda s, m: self.run_epochs(s, m, data, n_epochs))(states, members)
    return jax.jit(start)

  def make_resume(self, n_epochs):
    def resume(states: TrainState, members: Member, data: Data):
      self.traces += 1
      return jax.vmap(lambda s, m: self.run_epochs(s, m, data, n_epochs))(states, members)
    return jax.jit(resume)


def pad_params(params, cells: int, max_cells: int, cell: str, *, leading: int = 0):
  """Zero-pad a network's parameters from `cells` to `max_cells` units.

  Every gate block of the fused kernels and biases is padded separately, so
  gate g of unit j sits at column `g * max_cells + j` as in the wide model.
  `leading` counts leading batch axes (1 for stacked members).
  """
  return _resize(params, cells, max_cells, cell, leading)


def unpad_params(params, cells: int, max_cells: int, cell: str, *, leading: int = 0):
  """Inverse of `pad_params`: keep the first `cells` units of each gate block."""
  return _resize(params, max_cells, cells, cell, leading)


def _resize(params, old: int, new: int, cell: str, leading: int):
  from jaxlstm.models import GATES
  gates = GATES[cell]

  # numpy for host arrays (results on their way out: eager jnp would compile
  # a tiny program per leaf shape), jax.numpy inside traced code.
  def xp(x):
    return np if isinstance(x, np.ndarray) else jnp

  def units_axis(x, axis):  # pad/crop a plain units axis
    axis += leading
    if new > old:
      widths = [(0, 0)] * x.ndim
      widths[axis] = (0, new - old)
      return xp(x).pad(x, widths)
    index = [slice(None)] * x.ndim
    index[axis] = slice(0, new)
    return x[tuple(index)]

  def gated_axis(x, axis):  # [.., gates * units] -> per gate
    axis += leading
    blocks = xp(x).split(x, gates, axis=axis)
    return xp(x).concatenate([units_axis(b, axis - leading) for b in blocks], axis=axis)

  out = {}
  for layer, leaves in params.items():
    if layer.startswith(RECURRENT_PREFIXES):
      first_layer = layer.endswith("_0")
      new_leaves = {}
      for name, x in leaves.items():
        if name == "kernel":
          x = gated_axis(x, 1)
          if not first_layer:
            x = units_axis(x, 0)
        elif name == "recurrent_kernel":
          x = units_axis(gated_axis(x, 1), 0)
        elif name in ("bias", "recurrent_bias"):
          x = gated_axis(x, 0)
        new_leaves[name] = x
      out[layer] = new_leaves
    elif layer == "head":
      out[layer] = {"kernel": units_axis(leaves["kernel"], 0), "bias": leaves["bias"]}
    else:
      raise ValueError(f"cannot pad layer {layer!r}: padding supports plain stacked LSTM/GRU layers only.")
  return out
