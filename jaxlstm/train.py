"""The engine: one member's training as pure functions of (config, arrays, key).

`make_train(config, dataset)` gathers everything static of a static-shape group
(network, optimizer structure, batch layout, epochs) in a `Static` record and
returns a `Train` NamedTuple of the module's pure functions of one *member* (a
config x repeat lane, and a fold of the repeat with cross-validation), with that
record bound:

  * `init(member)`: the member's initial `TrainState`;
  * `run_epochs(state, member, data, n)`: `lax.scan` over n epochs, each a
    `lax.scan` over minibatches (`_batch_step`), validation at each epoch end and
    the callbacks (`jaxlstm.callbacks`) in `_epoch_step`;
  * `train(member)`: a whole solo run, the reference an ensemble member equals;
  * `evaluate(params, x, y, hparams)`: loss and metrics on a whole set.

Nothing is jitted or vmapped here and no state is mutated at trace time:
`jaxlstm.ensemble` stacks members along a leading axis and compiles
`jit(vmap(run_epochs))` once per static signature. The data arrays are arguments
(`Data`), never constants, so new data of the same shapes reuses the program.

Cross-validation (`data.cv`): the data arguments hold every sample (training
part, then validation part); `member_data` cuts the member's fold out of them
(`data.fold_layout`, from the repeat's `split` key for "kfold"). Folds of unequal
size are padded to the largest and masked like the last partial batch: a
member's own samples come first, padding rows never enter a loss, a metric or a
validation score, and a minibatch of padding only leaves parameters and
optimizer state as they are, so a fold member equals a solo run on its split.

Configs that differ only in their layer widths (`model.units`, `model.cells`,
`model.dense`) share a program by zero-padding every layer to the widest of the
group (`widths=`; `models.can_pad_cells`): padded units start at zero and get
exactly zero gradients, so each member's numbers equal its unpadded run.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxlstm import callbacks, losses, optim
from jaxlstm import data as data_lib
from jaxlstm.config import PENALTY_FIELDS, Config
from jaxlstm.data import unit_scale
from jaxlstm.keys import StreamKeys
from jaxlstm.models import Widths, penalty, widths_of

if TYPE_CHECKING:
  import optax

  from jaxlstm.networks import Network
from jaxlstm.problems import Dataset


class Member(NamedTuple):
  """Per-member inputs; leaves gain a leading `[members]` axis when stacked.

  `fold` is the member's cross-validation fold (an int32 scalar), None without `data.cv`.
  """
  keys: StreamKeys
  hparams: dict[str, jax.Array]
  fold: jax.Array | None = None


class TrainState(NamedTuple):
  """Everything a member carries from epoch to epoch (a pytree; checkpointable)."""
  params: Any
  opt_state: Any
  epoch: jax.Array  # epochs completed
  callbacks: callbacks.CallbackState
  diverged_epoch: jax.Array  # first epoch with a non-finite loss, -1 if none


class Original(NamedTuple):
  """What maps predictions back to a transformed series' original units (`prep.inverse_map`).

  Levels = `prediction @ matrix.T + offset`, then the power transform's inverse
  (lambda per column); `train` / `val` hold each sample's `[offset, original target]`.
  """
  matrix: jax.Array  # [outputs, outputs]
  lmbda: jax.Array  # [outputs]
  train: jax.Array  # [n_train, 2, outputs]
  val: jax.Array  # [n_val, 2, outputs]


class Data(NamedTuple):
  """The arrays of a run: `x_* [samples, time, features]`, `y_* [samples, (time,) outputs]`.

  `unit_scale [outputs]` maps a scaled target unit back to original units
  (`mae_original`); ones when the targets are not scaled. `original` inverts the
  series transforms (`data.difference`, `data.transform`) for `mae_original`; None
  without them. `train_mask [n_train]` / `val_mask [n_val]` mark a fold member's own
  samples (1) among padding (0), which come last; None: every sample is the member's.
  """
  x_train: jax.Array
  y_train: jax.Array
  x_val: jax.Array
  y_val: jax.Array
  unit_scale: jax.Array
  original: Original | None = None
  train_mask: jax.Array | None = None
  val_mask: jax.Array | None = None


class Shape(NamedTuple):
  """The static layout of a program (what `make_train` closes over besides the config)."""
  n_train: int  # training samples per member (after a per-repeat resplit)
  n_val: int
  batch: int  # samples per minibatch
  steps: int  # minibatches per epoch (the last may be partial)
  epochs: int
  widths: Widths  # the (padded) layer widths every member runs at
  outputs: int  # width of the Dense head
  time_out: int  # encoder-decoder output length, 0 otherwise
  frame_shape: tuple[int, ...]  # cnn_lstm (height, width), () otherwise
  cv: tuple = ()  # (scheme, folds, horizon, gap) with data.cv: n_train / n_val are the largest fold's
  power: str = "none"  # data.transform: how mae_original inverts the power transform

  @property
  def cells(self) -> int:
    """The widest recurrent layer."""
    return max(self.widths.units)


class Train(NamedTuple):
  """Pure functions of one member, and what they close over (see the module docstring)."""
  init: Callable[[Member], TrainState]
  run_epochs: Callable[[TrainState, Member, Data, int], tuple[TrainState, dict[str, jax.Array]]]
  train: Callable[[Member], tuple[TrainState, dict[str, jax.Array]]]
  evaluate: Callable[..., dict[str, jax.Array]]
  init_params: Callable[..., Any]  # (key, widths=None) -> unpadded params at those widths
  init_state: Callable[[Any, Member], TrainState]  # optimizer and callback state around params
  logits: Callable[..., jax.Array]  # (params, x) -> network outputs before the output activation
  epoch_order: Callable[[jax.Array, jax.Array], jax.Array]  # (shuffle key, epoch) -> [n_train]
  member_data: Callable[[Data, Member], Data]  # the member's own split (data.resplit) or fold (data.cv)
  network_for: Callable[..., Network]  # the network at given widths (`Widths`, or an int for every layer)
  shape: Shape
  config: Config  # the representative config it was made from (`make_train`)

  @property
  def tx(self) -> optax.GradientTransformation:
    """The optimizer chain (`optim.make_optimizer`), built when asked: a stored program needs no optax."""
    return optim.make_optimizer(self.config.optim)


def member_hparams(config: Config) -> dict[str, Any]:
  """The traced hyper-parameters of one config (one member's values).

  Optimizer values are scalars; dropout rates and L1/L2 strengths are
  `[layers]` vectors, one value per recurrent layer (a scalar config repeats it),
  so configs with scalar and per-layer values share one program; `dense_dropout`
  is a scalar.
  """
  values: dict[str, Any] = dict(optim.hyperparams(config.optim))
  model = config.model
  per_layer = lambda name: np.asarray(model.layer_values(name), np.float32)
  if model.uses_dropout:
    values["dropout"] = per_layer("dropout")
    values["recurrent_dropout"] = per_layer("recurrent_dropout")
    values["dense_dropout"] = model.dense_dropout
  if model.uses_penalty:
    values.update({name: per_layer(name) for name in PENALTY_FIELDS})
  return values


def batch_layout(n: int, batch_size: int) -> tuple[int, int]:
  """`(batch, steps)` per epoch: batch_size 0 means all n; a last partial batch is kept."""
  batch = n if batch_size == 0 else min(batch_size, n)
  return batch, -(-n // batch)


def arrays(dataset: Dataset) -> Data:
  """A resolved dataset's arrays as a `Data` pytree (host arrays; jit moves them to the device)."""
  original = None
  if "series_transform" in dataset.metadata:
    from jaxlstm import prep
    matrix, _ = prep.inverse_map(dataset, "train")
    per_sample = lambda part: np.stack([prep.inverse_map(dataset, part)[1], prep.originals(dataset, part)],
                                       axis=1).astype(np.float32)
    original = Original(matrix.astype(np.float32),
                        dataset.metadata["series_transform"].lmbda.astype(np.float32),
                        per_sample("train"), per_sample("val"))
  return Data(dataset.x_train, dataset.y_train, dataset.x_val, dataset.y_val, unit_scale(dataset), original)


def folds_of(config: Config, dataset: Dataset) -> data_lib.Folds | None:
  """The cross-validation folds of `config` over `dataset`'s pooled samples (None without `data.cv`)."""
  if config.data.cv == "none":
    return None
  n_all = dataset.x_train.shape[0] + dataset.x_val.shape[0]
  return data_lib.fold_layout(config, n_all, overlap=data_lib.window_overlap(dataset))


def shape_of(config: Config, dataset: Dataset, cells: int | Widths | None = None) -> Shape:
  """The static layout a program of `config` on `dataset` runs with (at widths `cells`, default its own)."""
  y = dataset.y_train
  n_all = dataset.x_train.shape[0] + dataset.x_val.shape[0]
  folds = folds_of(config, dataset)
  cv = ()
  if folds is not None:
    n_train, n_val = folds.train.shape[1], folds.val.shape[1]
    cv = (folds.scheme, folds.folds, folds.horizon, folds.gap)
  elif config.data.resplit:
    n_val = max(1, int(round(n_all * config.data.resplit)))
    n_train = n_all - n_val
  else:
    n_train, n_val = dataset.x_train.shape[0], dataset.x_val.shape[0]
  batch, steps = batch_layout(n_train, config.train.batch_size)
  architecture = config.model.architecture
  return Shape(
      n_train=n_train, n_val=n_val, batch=batch, steps=steps, epochs=config.train.epochs,
      widths=widths_of(config.model, cells), outputs=config.model.outputs or int(y.shape[-1]),
      time_out=int(y.shape[1]) if (y.ndim == 3 and architecture == "encoder_decoder") else 0,
      frame_shape=tuple(dataset.metadata.get("frame_shape", ())) if architecture == "cnn_lstm" else (),
      cv=cv, power=config.data.transform if "series_transform" in dataset.metadata else "none")


class Static(NamedTuple):
  """What a member's functions close over: everything static of a group's program.

  `make_train` builds one; the module-level functions below take it first and
  `Train` holds them with it bound (`functools.partial`).
  """
  config: Config  # a representative config of the group (traced values come with each member)
  shape: Shape
  folds: data_lib.Folds | None  # with `data.cv`
  uneven: bool  # folds differ in size: a member can get minibatches of padding only
  input_shape: tuple[int, ...]  # one sample's `[time, features]` (or frames)

  @property
  def tx(self) -> optax.GradientTransformation:
    """The optimizer chain, built at trace time (see `Train.tx`)."""
    return optim.make_optimizer(self.config.optim)


def make_train(config: Config, dataset: Dataset, *, widths: Widths | None = None,
               cells: int | None = None) -> Train:
  """Pure functions that train one member of `config` on `dataset`.

  Args:
    config: a representative config of the group (its traced values are ignored:
      they come with each member's `hparams`).
    dataset: the resolved data (`jaxlstm.data.resolve`); only its shapes and
      metadata are baked in, except in `train`, which closes over its arrays.
    widths: the (padded) layer widths every member runs at (a group's `widths`);
      default the config's own.
    cells: shorthand for `widths` with every recurrent layer at this width.

  Returns:
    A `Train` of pure functions (nothing jitted).
  """
  shape = shape_of(config, dataset, widths or cells)
  folds = folds_of(config, dataset)
  static = Static(config=config, shape=shape, folds=folds,
                  uneven=folds is not None and len(set(folds.train_count.tolist())) > 1,
                  input_shape=tuple(dataset.x_train.shape[1:]))
  bind = lambda fn: functools.partial(fn, static)
  return Train(init=bind(init), run_epochs=bind(run_epochs), train=functools.partial(train, static, dataset),
               evaluate=bind(evaluate), init_params=bind(init_params), init_state=bind(init_state),
               logits=bind(logits), epoch_order=bind(epoch_order), member_data=bind(member_data),
               network_for=functools.partial(_network, config, shape), shape=shape,
               config=config)


def _network(config: Config, shape: Shape, sizes: Widths | int) -> Network:
  """The network of `config` at widths `sizes` (`Widths`, or an int for every layer).

  Built when a function traces it, so that flax is imported only then (`jaxlstm.networks`).
  """
  from jaxlstm.networks import Network
  return Network(config.model, shape.outputs, time_out=shape.time_out, frame_shape=shape.frame_shape,
                 widths=widths_of(config.model, sizes))


def _metric_fns(s: Static, scale: jax.Array | None, original: Original | None = None,
                aux: jax.Array | None = None) -> dict[str, Callable]:
  """Metric functions; `aux [batch, 2, outputs]` is the batch's rows of `original.train` / `.val`."""
  fns = {}
  for name in s.config.train.metrics:
    if name == "mae_original" and original is not None:
      fns[name] = lambda out, y, a, o=original, b=aux: losses.mae_levels(
          out, b[:, 1], a, matrix=o.matrix, offsets=b[:, 0], lmbda=o.lmbda, power=s.shape.power)
    elif name == "mae_original":
      fns[name] = lambda out, y, a, sc=scale, **kw: losses.mae_original(
          out, y, a, unit_scale=1.0 if sc is None else sc, **kw)
    else:
      fns[name] = losses.METRICS[name]
  return fns


def _weights_of(s: Static, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """`[batch]` sample weights, or `[batch, time]` with `mask_value` on sequence outputs."""
  weights = jnp.ones(x.shape[:1], jnp.float32) if mask is None else mask
  if s.config.model.masks_loss:
    weights = weights[:, None] * jnp.any(x != s.config.model.mask_value, axis=-1).astype(jnp.float32)
  return weights


def _weighted(s: Static, fn, out, y, weights):
  """`(sum of weighted values, sum of weights)`: per sample, or per unmasked (sample, step)."""
  act = s.config.model.output_activation
  values = fn(out, y, act, steps=True) if s.config.model.masks_loss else fn(out, y, act)
  return jnp.sum(weights * values), jnp.sum(weights)


def init_params(s: Static, key: jax.Array, sizes: Widths | int | None = None):
  """Initial parameters of one member at widths `sizes` (unpadded; default the program's)."""
  sample_x = np.zeros((1, *s.input_shape), np.float32)  # numpy: a jnp array here costs two eager programs
  network = _network(s.config, s.shape, s.shape.widths if sizes is None else sizes)
  return network.init(key, sample_x)["params"]


def init_state(s: Static, params, member: Member) -> TrainState:
  """The optimizer and callback state around `params`, with the member's optimizer hyper-parameters."""
  opt_state = s.tx.init(params)
  injected = {name: jnp.asarray(member.hparams[name], jnp.float32) if name in member.hparams else value
              for name, value in opt_state.hyperparams.items()}
  return TrainState(params, opt_state._replace(hyperparams=injected), jnp.zeros([], jnp.int32),
                    callbacks.init(params, s.config.train), jnp.full([], -1, jnp.int32))


def init(s: Static, member: Member) -> TrainState:
  """The member's initial `TrainState` (parameters from its `init` key)."""
  return init_state(s, init_params(s, member.keys.init), member)


def logits(s: Static, params, x, *, dropout_key=None, hparams=None):
  """`(params, x)` -> network outputs before the output activation (dropout with a key)."""
  rates = None
  if dropout_key is not None:
    rates = (hparams["dropout"], hparams["recurrent_dropout"], hparams.get("dense_dropout", 0.0))
  return _network(s.config, s.shape, s.shape.widths).apply({"params": params}, x, dropout_key=dropout_key, rates=rates)


def evaluate(s: Static, params, x, y, hparams, *, unit_scale=None, mask=None, original=None,
             aux=None) -> dict[str, jax.Array]:
  """Loss and metrics on a whole set (no dropout): the `val_*` entries.

  With `mask_value` on sequence outputs, each is the mean over the set's
  unmasked (sample, step) pairs. `mask [samples]` leaves out padding rows (folds);
  `original` and the set's rows of it (`aux`) serve `mae_original` after transforms.
  """
  model = s.config.model
  act, loss_fn = model.output_activation, losses.LOSSES[s.config.train.loss]
  out = logits(s, params, x)
  if model.masks_loss:
    weights = _weights_of(s, x, mask)
    mean = lambda fn: jnp.divide(*_weighted(s, fn, out, y, weights))
  elif mask is not None:
    mean = lambda fn: jnp.sum(mask * fn(out, y, act)) / jnp.sum(mask)
  else:
    mean = lambda fn: jnp.mean(fn(out, y, act))
  values = {"loss": mean(loss_fn)}
  if model.uses_penalty:
    # Keras' evaluate() adds the regularisation losses to `val_loss` too.
    values["loss"] = values["loss"] + penalty(params, hparams)
  for name, fn in _metric_fns(s, unit_scale, original, aux).items():
    values[name] = mean(fn)
  return values


def epoch_order(s: Static, shuffle_key: jax.Array, epoch: jax.Array, count: jax.Array | None = None) -> jax.Array:
  """`[n_train]` order in which an epoch visits the training samples.

  With `count` (a fold member's own samples, rows `0 .. count - 1`, when folds differ
  in size), those come first, in random order when shuffling, and the padding rows
  after them.
  """
  n_train = s.shape.n_train
  if not s.config.train.shuffle:
    return jnp.arange(n_train)
  epoch_key = jax.random.fold_in(shuffle_key, epoch)
  if count is None:
    return jax.random.permutation(epoch_key, n_train)
  # One sort, as permutation's: random 31-bit keys, the padding rows' top bit set.
  bits = jax.random.bits(epoch_key, (n_train,), jnp.uint32) >> 1
  padding = (jnp.arange(n_train) >= count).astype(jnp.uint32) << 31
  return jnp.argsort(bits | padding, stable=True).astype(jnp.int32)


def _fold_data(s: Static, data: Data, member: Member) -> Data:
  """The member's fold: its training and validation rows of all samples, padded and masked."""
  folds = s.folds
  x_all = jnp.concatenate([data.x_train, data.x_val])
  y_all = jnp.concatenate([data.y_train, data.y_val])
  n_all = x_all.shape[0]
  order = (jax.random.permutation(member.keys.split, n_all) if folds.scheme == "kfold"
           else jnp.arange(n_all))
  train_idx = order[jnp.asarray(folds.train)[member.fold]]
  val_idx = order[jnp.asarray(folds.val)[member.fold]]
  mask = lambda width, count: (jnp.arange(width) < count).astype(jnp.float32)
  original = data.original
  if original is not None:
    aux_all = jnp.concatenate([original.train, original.val])
    original = original._replace(train=aux_all[train_idx], val=aux_all[val_idx])
  return data._replace(
      x_train=x_all[train_idx], y_train=y_all[train_idx], x_val=x_all[val_idx], y_val=y_all[val_idx],
      original=original, train_mask=mask(s.shape.n_train, jnp.asarray(folds.train_count)[member.fold]),
      val_mask=mask(s.shape.n_val, jnp.asarray(folds.val_count)[member.fold]))


def member_data(s: Static, data: Data, member: Member) -> Data:
  """The member's train/validation arrays (its own random split with `data.resplit`, its fold with `data.cv`)."""
  if s.folds is not None:
    return _fold_data(s, data, member)
  if not s.config.data.resplit:
    return data
  x_all = jnp.concatenate([data.x_train, data.x_val])
  y_all = jnp.concatenate([data.y_train, data.y_val])
  order = jax.random.permutation(member.keys.split, x_all.shape[0])
  train_idx, val_idx = order[: s.shape.n_train], order[s.shape.n_train:]
  original = data.original
  if original is not None:
    aux_all = jnp.concatenate([original.train, original.val])
    original = original._replace(train=aux_all[train_idx], val=aux_all[val_idx])
  return data._replace(x_train=x_all[train_idx], y_train=y_all[train_idx],
                       x_val=x_all[val_idx], y_val=y_all[val_idx], original=original)


def _objective(s: Static, params, xb, yb, mask, dropout_key, aux, *, data: Data, hp):
  """A minibatch's training loss (+ penalty) and, as aux, `(penalty, metric sums)`.

  The loss is the weighted mean over the batch's real samples (`mask`), or with
  Keras masking over its unmasked (sample, step) pairs, 0 when there are none (a
  padding-only minibatch); metrics return `(weighted sum, weights)` for the epoch.
  """
  model = s.config.model
  fns = _metric_fns(s, data.unit_scale, data.original, aux)
  out = logits(s, params, xb, dropout_key=dropout_key if model.uses_dropout else None, hparams=hp)
  reg = penalty(params, hp) if model.uses_penalty else jnp.zeros([], jnp.float32)
  weights = _weights_of(s, xb, mask)
  total, count = _weighted(s, losses.LOSSES[s.config.train.loss], out, yb, weights)
  data_loss = total / jnp.maximum(count, 1.0)
  metric_sums = {m: _weighted(s, fn, out, yb, weights) for m, fn in fns.items()}
  return data_loss + reg, (reg, metric_sums)


# Optimizers whose update of a zero gradient, from their initial state, is exactly nothing.
_ZERO_STABLE = ("adam", "rmsprop", "adagrad", "sgd")


def _unread_params(s: Static, objective, params, data: Data, dropout_key) -> frozenset:
  """Key paths of the parameters a minibatch's loss never reads (its jaxpr, traced abstractly).

  Such a parameter's gradient is exactly zero, and without weight decay so is
  every update of it (Adam, RMSprop, Adagrad, SGD with or without momentum: moments
  that start at zero stay zero, `param + -0.0` is `param`): the step can keep it and
  its optimizer state as they are, bit for bit. The case that arises: a layer that
  reads one time step from Keras' zero state never reads its recurrent kernel
  (`models.scan_layer`). Checked only for one-step inputs (the trace costs ~0.06 s), and
  only for the optimizers above: another must be shown to leave a zero gradient's
  parameter and state unchanged before it is added to `_ZERO_STABLE`.
  """
  if (s.input_shape[:1] != (1,) or s.config.optim.name not in _ZERO_STABLE
      or "weight_decay" in optim.hyperparams(s.config.optim)):
    return frozenset()
  batch = s.shape.batch

  def loss(params):
    idx = jnp.zeros((batch,), jnp.int32)
    aux = None if data.original is None else data.original.train[idx]
    return objective(params, data.x_train[idx], data.y_train[idx], jnp.ones((batch,), jnp.float32),
                     dropout_key, aux)[0]

  jaxpr = jax.make_jaxpr(loss)(jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), params)).jaxpr
  read = {id(v) for eqn in jaxpr.eqns for v in eqn.invars} | {id(v) for v in jaxpr.outvars}
  paths = [path for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
  return frozenset(path for path, var in zip(paths, jaxpr.invars, strict=True) if id(var) not in read)


def _keep_unread(unread: frozenset, new, old):
  """`new` with the leaves of unread parameters, and of their optimizer state, taken from `old`."""
  def pick(path, a, b):
    return b if any(path[-len(p):] == p for p in unread) and a.shape == b.shape else a
  return jax.tree_util.tree_map_with_path(pick, new, old)


def _batch_step(s: Static, grad_fn, data: Data, unread: frozenset, carry, inputs):
  """One optimizer step on one (possibly partial, masked) minibatch."""
  params, opt_state, epoch_dropout_key = carry
  idx, mask, step = inputs
  dropout_key = jax.random.fold_in(epoch_dropout_key, step)
  aux = None if data.original is None else data.original.train[idx]
  (loss, (reg, metric_sums)), grads = grad_fn(params, data.x_train[idx], data.y_train[idx], mask, dropout_key, aux)
  import optax  # at trace time only (`Train.tx`)
  updates, new_opt_state = s.tx.update(grads, opt_state, params)
  new_params = optax.apply_updates(params, updates)
  if unread:  # left out of the program: XLA drops their (unchanging) updates
    new_params, new_opt_state = _keep_unread(unread, (new_params, new_opt_state), (params, opt_state))
  count = jnp.sum(mask)
  if s.uneven:  # a minibatch of padding only (a smaller fold) changes nothing, not even Adam's step count
    keep = count > 0
    new_params, new_opt_state = jax.tree.map(lambda a, b: jnp.where(keep, a, b), (new_params, new_opt_state),
                                             (params, opt_state))
  return (new_params, new_opt_state, epoch_dropout_key), (loss * count, reg * count, metric_sums)


def _train_epoch(s: Static, member: Member, data: Data, n_own, state: TrainState):
  """All minibatches of one epoch: the new params, optimizer state and training record.

  `n_own` is the number of the member's own training samples (the rest is padding).
  """
  n, batch, n_steps = s.shape.n_train, s.shape.batch, s.shape.steps
  objective = functools.partial(_objective, s, data=data, hp=member.hparams)
  grad_fn = jax.value_and_grad(objective, has_aux=True)
  unread = _unread_params(s, objective, state.params, data, member.keys.dropout)
  # Padding rows to put last exist only when folds differ in size (statically known).
  order = epoch_order(s, member.keys.shuffle, state.epoch, n_own if s.uneven else None)
  idx = jnp.concatenate([order, jnp.zeros((n_steps * batch - n,), order.dtype)]).reshape(n_steps, batch)
  mask = (jnp.arange(n_steps * batch) < n_own).astype(jnp.float32).reshape(n_steps, batch)
  carry = (state.params, state.opt_state, jax.random.fold_in(member.keys.dropout, state.epoch))
  (params, opt_state, _), (loss_sums, reg_sums, metric_sums) = jax.lax.scan(
      functools.partial(_batch_step, s, grad_fn, data, unread), carry, (idx, mask, jnp.arange(n_steps)))
  # Keras 3 averages batch losses weighted by batch size: the mean over samples.
  record = {"loss": jnp.sum(loss_sums) / n_own}
  # A metric: its weighted sums over the epoch / its weights (Keras' masked metrics).
  record.update({m: jnp.sum(metric_sums[m][0]) / jnp.sum(metric_sums[m][1]) for m in s.config.train.metrics})
  val = evaluate(s, params, data.x_val, data.y_val, member.hparams, unit_scale=data.unit_scale, mask=data.val_mask,
                 original=data.original, aux=None if data.original is None else data.original.val)
  record.update({"val_" + name: value for name, value in val.items()})
  if s.config.model.uses_penalty:
    record["penalty"] = jnp.sum(reg_sums) / n_own
  return params, opt_state, record


def _epoch_step(s: Static, member: Member, data: Data, n_own, state: TrainState, _):
  """One epoch of a member: train, validate, callbacks, divergence; frozen when inactive."""
  train_cfg = s.config.train
  epoch = state.epoch
  active = (epoch < s.shape.epochs) & ~callbacks.stopped(state.callbacks, train_cfg)
  params, opt_state, record = _train_epoch(s, member, data, n_own, state)
  new, record = callbacks.update(state._replace(params=params, opt_state=opt_state), record, train_cfg,
                                 s.config.optim)
  finite = jnp.isfinite(record["loss"])
  diverged_epoch = jnp.where((state.diverged_epoch < 0) & ~finite & active, epoch, state.diverged_epoch)
  new = new._replace(epoch=epoch + 1, diverged_epoch=diverged_epoch)
  # Frozen members (stopped, or past the last epoch) keep their state bit for bit.
  new = jax.tree.map(lambda a, b: jnp.where(active, a, b), new, state._replace(epoch=epoch + 1))
  record = {k: jnp.where(active, v, jnp.nan).astype(jnp.float32) for k, v in record.items()}
  return new, record


def run_epochs(s: Static, state: TrainState, member: Member, data: Data, n_epochs: int):
  """Train one member for `n_epochs` epochs from `state.epoch`.

  Epochs at or past `train.epochs`, and epochs after the member stopped
  early, leave the state unchanged and record NaN.

  Returns:
    `(state, history)` with history leaves `[n_epochs]`.
  """
  data = member_data(s, data, member)
  n = s.shape.n_train
  # A fold member's own training samples (the rest is padding); n without folds.
  n_own = n if data.train_mask is None else jnp.sum(data.train_mask)
  return jax.lax.scan(functools.partial(_epoch_step, s, member, data, n_own), state, None, length=n_epochs)


def train(s: Static, dataset: Dataset, member: Member):
  """A whole solo run of one member on the dataset: `(state, history [epochs])`."""
  solo_data = jax.tree.map(jnp.asarray, arrays(dataset))
  return run_epochs(s, init(s, member), member, solo_data, s.shape.epochs)
