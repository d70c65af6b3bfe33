"""Keras 3 EarlyStopping and ReduceLROnPlateau as per-repeat jnp state machines.

The compiled training loop carries one `EarlyStoppingState` (and optionally one
`ReduceLRState`) per repeat through `lax.scan` over epochs under `jax.vmap`
over repeats, so the update functions are branch-free: every decision is a
`jnp.where` on scalar leaves. `replay` and `replay_reduce_lr` run the *same*
update functions over a plain sequence of values: that is how the behaviour is
tested against Keras, and how users can ask what Keras would have done with a
given curve.

Pinned reference: Keras 3.15.1, files `keras/src/callbacks/early_stopping.py`,
`keras/src/callbacks/reduce_lr_on_plateau.py` and
`keras/src/callbacks/monitor_callback.py`. Behaviour copied from there:

* The first monitored epoch is always an improvement (`best` starts as `None`,
  not +-inf), even when its value is NaN. A NaN best is never beaten again,
  because every comparison with NaN is False.
* Improvement is `value + min_delta < best` (min) or `value - min_delta > best`
  (max) with `min_delta = abs(min_delta)`: ties are not improvements.
* EarlyStopping increments `wait` *before* the improvement test, and resets
  it on an improvement only if `baseline is None` or the value also beats
  `baseline` (by `min_delta`). An improving epoch never stops training, but
  it does not reset `wait` while the baseline is unbeaten. So with a baseline
  that is never beaten, a flat curve stops after `patience` epochs *counting
  the first one*.
* Stop when, on a non-improving epoch, `wait >= patience and epoch > 0`. With
  `patience=0` training stops at the first epoch that does not improve.
* Epochs before `start_from_epoch` are ignored entirely (no best tracking).
* `restore_best_weights` restores the best epoch's weights at the end of
  training *whether or not* training stopped early, provided at least one epoch
  was monitored.
* ReduceLROnPlateau logs the learning rate in force *during* the epoch (it
  writes `logs["learning_rate"]` before reducing it at that epoch's end). In
  cooldown the counter is decremented and `wait` zeroed first; the epoch on
  which the counter reaches 0 already counts towards `wait`. A reduction happens
  only while `lr > min_lr`; when none happens, `wait` and cooldown are left
  as they are.
* Mode "auto" is resolved by the same rule for both callbacks (Keras 3.15.1
  moved ReduceLROnPlateau onto `MonitorCallback`; older Keras used "max if 'acc'
  in the monitor name").

Deliberate differences: an unknown `mode` raises instead of warning and falling
back to "auto"; `patience < 0` raises (Keras PR #23559 adds the same check);
"auto" knows metric names from a fixed table (`jaxlstm.metrics`, the one direction
rule of the package) since there is no compiled Keras model to ask, and also strips
a `train_` prefix.
Comparisons run in float32, as Keras' jax backend does (`ops.less` on float32).
"""
import functools
import math
import numbers
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxlstm import metrics

KERAS_REFERENCE_VERSION = "3.15.1"

_MODES = ("auto", "min", "max")


def resolve_mode(monitor: str, mode: str = "auto") -> str:
  """Resolve `mode="auto"` to "min" or "max" for the monitored quantity.

  Keras 3 rule: `monitor.removeprefix("val_") == "loss"` minimises; otherwise
  the metric's known direction decides. A `train_` prefix is stripped too.

  Args:
    monitor: Name of the monitored quantity, e.g. "val_loss", "val_accuracy".
    mode: "auto", "min" or "max"; "min" and "max" are returned unchanged.

  Returns:
    "min" or "max".

  Raises:
    ValueError: If `mode` is unknown, or "auto" cannot infer the direction.
  """
  if mode not in _MODES:
    raise ValueError(
        f"mode must be one of {', '.join(map(repr, _MODES))}, got {mode!r}.")
  if mode != "auto":
    return mode
  if not isinstance(monitor, str) or not monitor:
    raise ValueError(f"monitor must be a non-empty string, got {monitor!r}.")
  try:
    return metrics.metric_direction(monitor)
  except ValueError:
    raise ValueError(
        f"mode='auto' cannot tell whether monitor={monitor!r} should be "
        "minimised or maximised; pass mode='min' (lowest value is best) or "
        "mode='max' (highest value is best).") from None


def _check_int(name: str, value: Any) -> None:
  if (isinstance(value, bool) or not isinstance(value, numbers.Integral)
      or value < 0):
    raise ValueError(f"{name} must be an integer >= 0, got {value!r}.")


def _check_number(name: str, value: Any, *, allow_none: bool = False) -> None:
  if value is None and allow_none:
    return
  if (isinstance(value, bool) or not isinstance(value, numbers.Real)
      or math.isnan(value)):
    none = " or None" if allow_none else ""
    raise ValueError(f"{name} must be a number{none}, got {value!r}.")


def check_early_stopping_args(
    *, monitor: str = "val_loss", min_delta: float = 0, patience: int = 0,
    mode: str = "auto", baseline: float | None = None,
    restore_best_weights: bool = False, start_from_epoch: int = 0) -> None:
  """Validate `keras.callbacks.EarlyStopping`-style arguments.

  Args mirror `keras.callbacks.EarlyStopping` (without `verbose`).

  Raises:
    ValueError: Naming the argument, its value and what is allowed.
  """
  resolve_mode(monitor, mode)
  _check_number("min_delta", min_delta)
  if math.isinf(min_delta):
    raise ValueError(f"min_delta must be finite, got {min_delta!r}.")
  _check_int("patience", patience)
  _check_number("baseline", baseline, allow_none=True)
  if not isinstance(restore_best_weights, (bool, np.bool_)):
    raise ValueError("restore_best_weights must be True or False, got "
                     f"{restore_best_weights!r}.")
  _check_int("start_from_epoch", start_from_epoch)


def check_reduce_lr_args(
    *, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10,
    mode: str = "auto", min_delta: float = 1e-4, cooldown: int = 0,
    min_lr: float = 0.0) -> None:
  """Validate `keras.callbacks.ReduceLROnPlateau`-style arguments.

  Args mirror `keras.callbacks.ReduceLROnPlateau` (without `verbose`).

  Raises:
    ValueError: Naming the argument, its value and what is allowed.
  """
  resolve_mode(monitor, mode)
  _check_number("factor", factor)
  # Keras only rejects factor >= 1; a negative factor would flip the sign of
  # the learning rate, which no one means.
  if not 0 <= factor < 1:
    raise ValueError(
        f"factor must be in [0, 1) (new_lr = lr * factor), got {factor!r}.")
  _check_int("patience", patience)
  _check_number("min_delta", min_delta)
  if math.isinf(min_delta):
    raise ValueError(f"min_delta must be finite, got {min_delta!r}.")
  _check_int("cooldown", cooldown)
  _check_number("min_lr", min_lr)
  if not 0 <= min_lr < math.inf:
    raise ValueError(f"min_lr must be finite and >= 0, got {min_lr!r}.")


def _check_static_mode(mode: str) -> None:
  if mode not in ("min", "max"):
    raise ValueError(
        f"mode must be 'min' or 'max' here, got {mode!r}; resolve 'auto' "
        "first with resolve_mode(monitor, mode).")


def _beats(value: jax.Array, reference: Any, mode: str,
           min_delta: float) -> jax.Array:
  """Keras' `_is_improvement`: better than `reference` by > `min_delta`."""
  # Same operand order as Keras (`monitor_op(value - signed_delta, ref)`), so
  # float32 rounding matches its jax backend.
  if mode == "min":
    return value + min_delta < reference
  return value - min_delta > reference


class EarlyStoppingState(NamedTuple):
  """Per-repeat `EarlyStopping` state; scalar leaves, so it vmaps and scans.

  Attributes:
    best: Best monitored value so far (float32; meaningless until has_best).
    has_best: Whether any epoch has been monitored (Keras' `best is not None`).
    best_epoch: 0-based epoch of `best`; -1 before the first monitored epoch.
      Weights snapshotted at this epoch are the ones Keras restores.
    wait: Keras' `wait` counter.
    stopped: Whether training has stopped; the state is frozen from then on.
    stopped_epoch: 0-based epoch at which training stopped; -1 when never.
  """
  best: jax.Array
  has_best: jax.Array
  best_epoch: jax.Array
  wait: jax.Array
  stopped: jax.Array
  stopped_epoch: jax.Array


def init_early_stopping() -> EarlyStoppingState:
  """Return the state before the first epoch (Keras' `on_train_begin`)."""
  return EarlyStoppingState(
      best=jnp.asarray(jnp.nan, jnp.float32),
      has_best=jnp.asarray(False),
      best_epoch=jnp.asarray(-1, jnp.int32),
      wait=jnp.asarray(0, jnp.int32),
      stopped=jnp.asarray(False),
      stopped_epoch=jnp.asarray(-1, jnp.int32))


def update_early_stopping(
    state: EarlyStoppingState, value: jax.Array, epoch: jax.Array, *,
    mode: str, min_delta: float = 0, patience: int = 0,
    baseline: float | None = None, start_from_epoch: int = 0,
) -> tuple[EarlyStoppingState, jax.Array]:
  """Apply Keras 3 `EarlyStopping.on_epoch_end` for one epoch.

  Args:
    state: State after the previous epoch.
    value: [] monitored value at the end of this epoch (NaN allowed).
    epoch: [] 0-based index of this epoch (int).
    mode: "min" or "max" (static; resolve "auto" with `resolve_mode`).
    min_delta: Static; its absolute value is the minimum improvement.
    patience: Static number of non-improving epochs tolerated.
    baseline: Static value to beat before `wait` resets, or None.
    start_from_epoch: Static number of warm-up epochs that are ignored.

  Returns:
    `(state, improved)`: the new state and a [] bool that is True when this
    epoch becomes the new best, i.e. when Keras would snapshot the weights for
    `restore_best_weights`. Once stopped, the state is returned unchanged and
    `improved` is False.

  Raises:
    ValueError: If a static argument is invalid (raised at trace time).
  """
  _check_static_mode(mode)
  check_early_stopping_args(min_delta=min_delta, patience=patience,
                            mode=mode, baseline=baseline,
                            start_from_epoch=start_from_epoch)
  min_delta = abs(float(min_delta))
  value = jnp.asarray(value, state.best.dtype)
  epoch = jnp.asarray(epoch, jnp.int32)

  active = ~state.stopped & (epoch >= start_from_epoch)
  improved = active & (~state.has_best
                       | _beats(value, state.best, mode, min_delta))
  if baseline is None:
    resets_wait = improved
  else:
    resets_wait = improved & _beats(value, baseline, mode, min_delta)
  wait = jnp.where(resets_wait, 0, state.wait + 1)
  # Keras returns early on an improving epoch, so only a non-improving one
  # can stop; `epoch > 0` is Keras' own guard.
  stop = active & ~improved & (wait >= patience) & (epoch > 0)

  new_state = EarlyStoppingState(
      best=jnp.where(improved, value, state.best),
      has_best=state.has_best | improved,
      best_epoch=jnp.where(improved, epoch, state.best_epoch),
      wait=jnp.where(active, wait, state.wait).astype(jnp.int32),
      stopped=state.stopped | stop,
      stopped_epoch=jnp.where(stop, epoch, state.stopped_epoch))
  return new_state, improved


@functools.partial(jax.jit, static_argnames=(
    "mode", "min_delta", "patience", "baseline", "start_from_epoch"))
def _scan_early_stopping(values, *, mode, min_delta, patience, baseline,
                         start_from_epoch):
  def step(state, inputs):
    value, epoch = inputs
    state, _ = update_early_stopping(
        state, value, epoch, mode=mode, min_delta=min_delta,
        patience=patience, baseline=baseline,
        start_from_epoch=start_from_epoch)
    return state, None

  epochs = jnp.arange(values.shape[0], dtype=jnp.int32)
  state, _ = jax.lax.scan(step, init_early_stopping(), (values, epochs))
  return state


def _as_values(values: Sequence[float], name: str = "values") -> np.ndarray:
  array = np.asarray(values, dtype=np.float32)
  if array.ndim != 1:
    raise ValueError(
        f"expected {name} of shape [epochs], got shape {array.shape}.")
  return array


def replay(values: Sequence[float], *, monitor: str = "val_loss",
           min_delta: float = 0, patience: int = 0, mode: str = "auto",
           baseline: float | None = None, restore_best_weights: bool = False,
           start_from_epoch: int = 0) -> dict[str, int | None]:
  """Replay Keras 3 `EarlyStopping` over a sequence of per-epoch values.

  Uses `update_early_stopping`, the function the compiled loop uses.

  Args:
    values: [epochs] monitored value at the end of each epoch (NaN allowed).
    monitor: Name of the monitored quantity; only used to resolve "auto".
    min_delta: See `keras.callbacks.EarlyStopping`.
    patience: See `keras.callbacks.EarlyStopping`.
    mode: "auto", "min" or "max".
    baseline: See `keras.callbacks.EarlyStopping`.
    restore_best_weights: Whether the best epoch's weights are restored at the
      end of training (whether or not it stopped early, as in Keras 3).
    start_from_epoch: See `keras.callbacks.EarlyStopping`.

  Returns:
    Dict with 0-based epochs: "epochs_run" (int), "stopped_epoch" (int, or
    None if training never stopped) and "restored_epoch", the epoch whose
    weights the model ends with (-1, the initial weights, if no epoch ran).

  Raises:
    ValueError: If an argument is invalid or `values` is not 1-D.
  """
  check_early_stopping_args(
      monitor=monitor, min_delta=min_delta, patience=patience, mode=mode,
      baseline=baseline, restore_best_weights=restore_best_weights,
      start_from_epoch=start_from_epoch)
  array = _as_values(values)
  state = jax.device_get(_scan_early_stopping(
      array, mode=resolve_mode(monitor, mode), min_delta=abs(float(min_delta)),
      patience=int(patience),
      baseline=None if baseline is None else float(baseline),
      start_from_epoch=int(start_from_epoch)))
  stopped_epoch = int(state.stopped_epoch) if state.stopped else None
  epochs_run = len(array) if stopped_epoch is None else stopped_epoch + 1
  best_epoch = int(state.best_epoch)
  if restore_best_weights and best_epoch >= 0:
    restored_epoch = best_epoch
  else:
    restored_epoch = epochs_run - 1
  return {"epochs_run": epochs_run, "stopped_epoch": stopped_epoch,
          "restored_epoch": restored_epoch}


class ReduceLRState(NamedTuple):
  """Per-repeat `ReduceLROnPlateau` state; scalar leaves, so it vmaps and scans.

  Attributes:
    best: Best monitored value so far (float32; meaningless until has_best).
    has_best: Whether any epoch has been monitored (Keras' `best is not None`).
    wait: Keras' `wait` counter.
    cooldown_counter: Epochs of cooldown left.
  """
  best: jax.Array
  has_best: jax.Array
  wait: jax.Array
  cooldown_counter: jax.Array


def init_reduce_lr() -> ReduceLRState:
  """Return the state before the first epoch (Keras' `on_train_begin`)."""
  return ReduceLRState(
      best=jnp.asarray(jnp.nan, jnp.float32),
      has_best=jnp.asarray(False),
      wait=jnp.asarray(0, jnp.int32),
      cooldown_counter=jnp.asarray(0, jnp.int32))


def update_reduce_lr(
    state: ReduceLRState, value: jax.Array, lr: jax.Array, *, mode: str,
    factor: float = 0.1, patience: int = 10, min_delta: float = 1e-4,
    cooldown: int = 0, min_lr: float = 0.0,
) -> tuple[ReduceLRState, jax.Array]:
  """Apply Keras 3 `ReduceLROnPlateau.on_epoch_end` for one epoch.

  Args:
    state: State after the previous epoch.
    value: [] monitored value at the end of this epoch (NaN allowed).
    lr: [] learning rate used during this epoch (may be traced).
    mode: "min" or "max" (static; resolve "auto" with `resolve_mode`).
    factor: Static; `new_lr = max(lr * factor, min_lr)`.
    patience: Static number of non-improving epochs before a reduction.
    min_delta: Static; its absolute value is the minimum improvement.
    cooldown: Static number of epochs after a reduction that do not count.
    min_lr: Static lower bound on the learning rate.

  Returns:
    `(state, new_lr)`: `new_lr` (dtype of `lr`) is the rate for the next
    epoch; `lr` itself is what Keras logs as this epoch's "learning_rate".

  Raises:
    ValueError: If a static argument is invalid (raised at trace time).
  """
  _check_static_mode(mode)
  check_reduce_lr_args(mode=mode, factor=factor, patience=patience,
                       min_delta=min_delta, cooldown=cooldown, min_lr=min_lr)
  min_delta = abs(float(min_delta))
  value = jnp.asarray(value, state.best.dtype)
  lr = jnp.asarray(lr)
  if not jnp.issubdtype(lr.dtype, jnp.floating):
    lr = lr.astype(jnp.float32)

  in_cooldown = state.cooldown_counter > 0
  cooldown_counter = jnp.where(in_cooldown, state.cooldown_counter - 1,
                               state.cooldown_counter)
  wait = jnp.where(in_cooldown, 0, state.wait)
  improved = ~state.has_best | _beats(value, state.best, mode, min_delta)
  # Keras re-reads `in_cooldown()` after the decrement: the epoch that ends
  # the cooldown already counts towards `wait`.
  counts = ~improved & (cooldown_counter <= 0)
  wait = jnp.where(improved, 0, jnp.where(counts, wait + 1, wait))
  # Keras compares the float32 lr against np.float32(min_lr).
  reduce = counts & (wait >= patience) & (lr > jnp.float32(min_lr))
  reduced_lr = jnp.maximum(lr * factor, min_lr).astype(lr.dtype)

  new_state = ReduceLRState(
      best=jnp.where(improved, value, state.best),
      has_best=state.has_best | improved,
      wait=jnp.where(reduce, 0, wait).astype(jnp.int32),
      cooldown_counter=jnp.where(reduce, cooldown,
                                 cooldown_counter).astype(jnp.int32))
  return new_state, jnp.where(reduce, reduced_lr, lr)


@functools.partial(jax.jit, static_argnames=(
    "mode", "factor", "patience", "min_delta", "cooldown", "min_lr"))
def _scan_reduce_lr(values, lr, *, mode, factor, patience, min_delta,
                    cooldown, min_lr):
  def step(carry, value):
    state, lr = carry
    state, new_lr = update_reduce_lr(
        state, value, lr, mode=mode, factor=factor, patience=patience,
        min_delta=min_delta, cooldown=cooldown, min_lr=min_lr)
    # Keras logs the rate in force during the epoch, before its reduction.
    return (state, new_lr), lr

  _, lrs = jax.lax.scan(step, (init_reduce_lr(), lr), values)
  return lrs


def replay_reduce_lr(values: Sequence[float], lr: float, *,
                     monitor: str = "val_loss", factor: float = 0.1,
                     patience: int = 10, mode: str = "auto",
                     min_delta: float = 1e-4, cooldown: int = 0,
                     min_lr: float = 0.0) -> np.ndarray:
  """Replay Keras 3 `ReduceLROnPlateau` over a sequence of per-epoch values.

  Uses `update_reduce_lr`, the function the compiled loop uses.

  Args:
    values: [epochs] monitored value at the end of each epoch (NaN allowed).
    lr: Initial learning rate (> 0).
    monitor: Name of the monitored quantity; only used to resolve "auto".
    factor, patience, mode, min_delta, cooldown, min_lr: See
      `keras.callbacks.ReduceLROnPlateau`.

  Returns:
    [epochs] float32 learning rate in force during each epoch, i.e. what Keras
    writes to `logs["learning_rate"]` (epoch e's reduction shows at e + 1).

  Raises:
    ValueError: If an argument is invalid or `values` is not 1-D.
  """
  check_reduce_lr_args(monitor=monitor, factor=factor, patience=patience,
                       mode=mode, min_delta=min_delta, cooldown=cooldown,
                       min_lr=min_lr)
  _check_number("lr", lr)
  if not 0 < lr < math.inf:
    raise ValueError(f"lr must be finite and > 0, got {lr!r}.")
  array = _as_values(values)
  lrs = _scan_reduce_lr(
      array, jnp.float32(lr), mode=resolve_mode(monitor, mode),
      factor=float(factor), patience=int(patience),
      min_delta=abs(float(min_delta)), cooldown=int(cooldown),
      min_lr=float(min_lr))
  return np.asarray(jax.device_get(lrs))
