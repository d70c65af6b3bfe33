"""Keras' per-epoch callbacks inside the compiled loop: early stopping and LR on plateau.

A member carries one `CallbackState` in its `train.TrainState`; after each epoch
`update(state, record, train_config)` advances both state machines of
`jaxlstm.early_stopping` (Keras 3.15.1 semantics) with that epoch's record:

  * ReduceLROnPlateau reads and reduces the optimizer's injected base
    `learning_rate` (the rate before the schedule multiplies it), as Keras reduces
    `optimizer.learning_rate`; the history's `learning_rate` is the rate the
    epoch's *last* update applied (base x schedule; `optim.applied_learning_rate`);
    under the constant schedule that is the base rate, exactly what Keras logs;
  * EarlyStopping tracks the best epoch, counts patience and sets `stopped`;
    with `restore_best_weights` the parameters of each new best epoch are kept.

Callbacks that are not configured hold `()`, so they cost nothing.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxlstm import early_stopping as es
from jaxlstm import optim
from jaxlstm.config import OptimConfig, TrainConfig


class CallbackState(NamedTuple):
  """Per-member callback state (scalar leaves, plus a parameter snapshot)."""
  stopping: Any  # es.EarlyStoppingState, or () without early stopping
  best_params: Any  # parameters of the best epoch with restore_best_weights, else ()
  reduce_lr: Any  # es.ReduceLRState, or () without ReduceLROnPlateau


def init(params: Any, train: TrainConfig) -> CallbackState:
  """The state before the first epoch (Keras' `on_train_begin`)."""
  stopping = train.early_stopping
  return CallbackState(
      stopping=es.init_early_stopping() if stopping is not None else (),
      best_params=params if (stopping is not None and stopping.restore_best_weights) else (),
      reduce_lr=es.init_reduce_lr() if train.reduce_lr is not None else ())


def stopped(state: CallbackState, train: TrainConfig) -> jax.Array:
  """`[]` bool: whether early stopping has ended this member's training."""
  if train.early_stopping is None:
    return jnp.array(False)
  return state.stopping.stopped


def update(state, record: dict[str, jax.Array], train: TrainConfig, optim_config: OptimConfig):
  """Advance the callbacks by one finished epoch.

  Args:
    state: a `train.TrainState` after the epoch's updates (new params and optimizer
      state, `epoch` still the index of the epoch just run).
    record: the epoch's history entries (`loss`, `val_loss`, metrics, ...).
    train: the config's training section (static).
    optim_config: the config's optimizer section (static; its schedule).

  Returns:
    `(state, record)`: the state with new callback state (and, after a plateau,
    a reduced base learning rate), and the record with `learning_rate` added
    when ReduceLROnPlateau is on: the rate the epoch's last update applied.
    (Keras logs `optimizer.learning_rate` at epoch end, which under a schedule
    is the rate of the *next* update; Keras cannot combine a schedule with
    ReduceLROnPlateau at all.)
  """
  callbacks = state.callbacks
  if train.reduce_lr is not None:
    rl = train.reduce_lr
    lr = state.opt_state.hyperparams["learning_rate"]
    record = {**record, "learning_rate": optim.applied_learning_rate(optim_config, state.opt_state)}
    reduce_state, new_lr = es.update_reduce_lr(
        callbacks.reduce_lr, record[rl.monitor], lr, mode=es.resolve_mode(rl.monitor, rl.mode),
        factor=rl.factor, patience=rl.patience, min_delta=rl.min_delta, cooldown=rl.cooldown,
        min_lr=rl.min_lr)
    opt_state = state.opt_state
    state = state._replace(opt_state=opt_state._replace(
        hyperparams={**opt_state.hyperparams, "learning_rate": new_lr}))
    callbacks = callbacks._replace(reduce_lr=reduce_state)
  if train.early_stopping is not None:
    esc = train.early_stopping
    stopping, improved = es.update_early_stopping(
        callbacks.stopping, record[esc.monitor], state.epoch, mode=es.resolve_mode(esc.monitor, esc.mode),
        min_delta=esc.min_delta, patience=esc.patience, baseline=esc.baseline,
        start_from_epoch=esc.start_from_epoch)
    callbacks = callbacks._replace(stopping=stopping)
    if esc.restore_best_weights:
      best = jax.tree.map(lambda b, p: jnp.where(improved, p, b), callbacks.best_params, state.params)
      callbacks = callbacks._replace(best_params=best)
  return state._replace(callbacks=callbacks), record
