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

Improvement comparisons are Keras' to the bit. Keras computes
`monitor_op(current - min_delta, reference)` on Python floats (`fit` turns its
logs into floats), so `current -/+ min_delta` is rounded to float64; then
`keras.ops.less/greater` on the jax backend converts *both* operands to float32.
The rule is therefore

    min: float32(current + |min_delta|) <  float32(reference)
    max: float32(current - |min_delta|) >  float32(reference)

with the sum rounded twice (float64, then float32), `reference` the best value
or the baseline. It is neither a float32 sum (`0.29f + 0.01f < 0.3f` is True, while
Keras' `0.29 + 0.01` rounds to 0.3: no improvement) nor a float64 comparison
(0.3 - 1e-12 is no improvement on 0.3 in Keras: both are 0.3 in float32).
`replay` and `replay_reduce_lr` get Python floats and evaluate the rule as written,
under `jax.enable_x64`. The compiled loop has float32 values, which Keras would
widen to float64 exactly; it evaluates the same rule without float64 by an exact
sign test in float32 (`_less_after_adding`: a TwoSum expansion of
`value + min_delta - threshold`, where the threshold is where the double rounding
changes the result). Both run the same update functions, which are dtype-generic.

Deliberate differences: an unknown `mode` raises instead of warning and falling
back to "auto"; `patience < 0` raises (Keras PR #23559 adds the same check);
"auto" knows metric names from a fixed table (`jaxlstm.metrics`, the one direction
rule of the package) since there is no compiled Keras model to ask, and also strips
a `train_` prefix; `|min_delta|` must be 0 or within [1e-18, 1e18] (so that the
float32 sign test stays exact; Keras takes any number).
"""
import fractions
import functools
import math
import numbers
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxlstm import metrics
from jaxlstm.config import MIN_DELTA_RANGE

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


def _check_min_delta(min_delta: Any) -> None:
  _check_number("min_delta", min_delta)
  low, high = MIN_DELTA_RANGE
  if math.isinf(min_delta):
    raise ValueError(f"min_delta must be finite, got {min_delta!r}.")
  if min_delta != 0 and not low <= abs(min_delta) <= high:
    raise ValueError(f"min_delta must be 0 or between {low:g} and {high:g} in absolute value, "
                     f"got {min_delta!r}.")


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
  _check_min_delta(min_delta)
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
  _check_min_delta(min_delta)
  _check_int("cooldown", cooldown)
  _check_number("min_lr", min_lr)
  if not 0 <= min_lr < math.inf:
    raise ValueError(f"min_lr must be finite and >= 0, got {min_lr!r}.")


def _check_static_mode(mode: str) -> None:
  if mode not in ("min", "max"):
    raise ValueError(
        f"mode must be 'min' or 'max' here, got {mode!r}; resolve 'auto' "
        "first with resolve_mode(monitor, mode).")


# ---------------------------------------------------------------- comparisons
# The float32 side of Keras' rule (module docstring): decide
#   float32(float64(v) + delta) < r      for float32 v, r and a static float delta > 0
# without float64 arithmetic. Let p < r be the float32 below r, u = r - p, mid = r - u/2
# and q = u * 2**-29 the float64 spacing at mid (mid has 25 significant bits, so it is
# an even float64 and never a power of two). Rounding to float64 and then to float32
# is monotone and maps r to r, so with x = v + delta exactly:
#   result < r  <=>  round64(x) < mid, or round64(x) == mid and r is odd (ties to even)
#               <=>  x - r + u/2 + q/2 < 0          when r's last significand bit is 0
#                    x - r + u/2 - q/2 <= 0         when it is 1.
# The left side is a sum of float32 numbers (v - r as TwoSum's s + t, delta as three
# float32 pieces, u/2 and q/2 powers of two), whose sign a Shewchuk expansion gives
# exactly. XLA flushes subnormal numbers to zero, so every term must stay above 2**-126:
# delta is limited to [1e-18, 1e18] and a reference below 2**-60 in magnitude (0
# included) is decided at scale 2**64 (v clamped to +-2**61 first, which keeps its
# decision). Left inexact: only a sum that lands within ~2**-120 of the threshold,
# which needs |v| < 2**-100 (~8e-31).
_TINY = 2.0 ** -60
_SCALE = 2.0 ** 64
_CLAMP = 2.0 ** 61
_HUGE = 2.0 ** 126  # |v - r| beyond this decides alone: the other terms are < 2**105


def _float32_pieces(x: float) -> tuple[float, float, float]:
  """Three float32 numbers whose exact sum is the float64 `x` (2**-64 <= |x| <= 2**124)."""
  hi = float(np.float32(x))
  middle = float(np.float32(x - hi))  # x - hi is exact in float64
  lo = x - hi - middle
  pieces = (hi, middle, lo)
  if float(np.float32(lo)) != lo or sum(map(fractions.Fraction, pieces)) != fractions.Fraction(x):
    raise AssertionError(f"cannot split {x!r} exactly into float32 pieces")
  return pieces


def _two_sum(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
  """`(s, e)`: s = fl(a + b) and a + b = s + e exactly (Knuth's TwoSum, any magnitudes)."""
  s = a + b
  b_virtual = s - a
  a_virtual = s - b_virtual
  return s, (a - a_virtual) + (b - b_virtual)


def _sign_of_sum(terms: Sequence[jax.Array]) -> jax.Array:
  """The sign (-1, 0, 1) of the exact sum of float arrays (no overflow, no subnormals).

  Shewchuk's Grow-Expansion keeps a non-overlapping expansion of the running sum,
  components in increasing magnitude with zeros anywhere; its sign is the sign of
  the largest non-zero component.
  """
  expansion = [terms[0]]
  for term in terms[1:]:
    grown = []
    for component in expansion:
      term, error = _two_sum(term, component)
      grown.append(error)
    expansion = grown + [term]
  sign = jnp.zeros_like(terms[0])
  for component in expansion:
    sign = jnp.where(component != 0, jnp.sign(component), sign)
  return sign


def _less_after_adding(value: jax.Array, reference: jax.Array, delta: float) -> jax.Array:
  """Keras' `float32(float64(value) + delta) < reference` for float32 arrays, exactly.

  Args:
    value: float32 values (any, NaN and infinities included).
    reference: float32 references of the same shape.
    delta: static, 1e-18 <= delta <= 1e18.

  Returns:
    bool array: the comparison Keras makes after widening `value` to float64.
  """
  f32 = jnp.float32
  tiny = jnp.abs(reference) < _TINY
  v = jnp.where(tiny, jnp.clip(value, -_CLAMP, _CLAMP) * f32(_SCALE), value)
  r = jnp.where(tiny, reference * f32(_SCALE), reference)
  pieces = [jnp.where(tiny, f32(big), f32(small))
            for big, small in zip(_float32_pieces(delta * _SCALE), _float32_pieces(delta))]
  below = jnp.nextafter(r, f32(-jnp.inf))
  gap = jnp.where(r == 0, f32(0), r - below)  # u; 0 for r = 0, whose threshold is 0 itself
  odd = (jax.lax.bitcast_convert_type(r, jnp.int32) & 1) == 1
  half_gap, half_spacing = gap * f32(0.5), gap * f32(2.0 ** -30)
  s, t = _two_sum(v, -r)
  sign = _sign_of_sum([t, *pieces, half_gap, jnp.where(odd, -half_spacing, half_spacing), s])
  result = jnp.where(odd, sign <= 0, sign < 0)
  result = jnp.where(jnp.abs(s) >= f32(_HUGE), s < 0, result)  # also v - r overflowing
  # x >= -max_float32 can never round below it; any finite x stays below +inf
  # (delta <= 1e18 cannot carry it past the overflow threshold).
  result = jnp.where(reference == -jnp.finfo(jnp.float32).max, value == -jnp.inf, result)
  result = jnp.where(reference == jnp.inf, value < jnp.inf, result)
  return result & (reference > -jnp.inf) & ~jnp.isnan(value) & ~jnp.isnan(reference)


def _beats(value: jax.Array, reference: Any, mode: str,
           min_delta: float) -> jax.Array:
  """Keras' `_is_improvement`: better than `reference` by more than `min_delta`.

  Float64 `value` (replay) evaluates Keras' rule as Keras does; float32 `value`
  (the compiled loop) evaluates it for the widened value, exactly.
  """
  if value.dtype == jnp.float64:
    reference = jnp.asarray(reference, jnp.float64).astype(jnp.float32)
    if mode == "min":
      return (value + min_delta).astype(jnp.float32) < reference
    return (value - min_delta).astype(jnp.float32) > reference
  if not isinstance(reference, jax.Array):  # the baseline: Keras rounds it to float32
    with np.errstate(over="ignore"):
      reference = np.float32(reference)
  if min_delta == 0:
    return value < reference if mode == "min" else value > reference
  reference = jnp.asarray(reference, jnp.float32)
  if mode == "min":
    return _less_after_adding(value, reference, min_delta)
  # Rounding is symmetric: float32(v - d) > r  <=>  float32(-v + d) < -r.
  return _less_after_adding(-value, -reference, min_delta)


class EarlyStoppingState(NamedTuple):
  """Per-repeat `EarlyStopping` state; scalar leaves, so it vmaps and scans.

  Attributes:
    best: Best monitored value so far (float32 in the compiled loop, float64 in
      `replay`; meaningless until has_best).
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


def init_early_stopping(dtype: Any = jnp.float32) -> EarlyStoppingState:
  """Return the state before the first epoch (Keras' `on_train_begin`).

  Args:
    dtype: Of the monitored values: float32 (the compiled loop) or float64
      (Python floats, under `jax.enable_x64`).
  """
  return EarlyStoppingState(
      best=jnp.asarray(jnp.nan, dtype),
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
    value: [] monitored value at the end of this epoch (NaN allowed); cast to
      the dtype of `state.best`, which selects the comparison (module docstring).
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
  """`update_early_stopping` over `[epochs]` values, starting in their dtype."""
  def step(state, inputs):
    value, epoch = inputs
    state, _ = update_early_stopping(
        state, value, epoch, mode=mode, min_delta=min_delta,
        patience=patience, baseline=baseline,
        start_from_epoch=start_from_epoch)
    return state, None

  epochs = jnp.arange(values.shape[0], dtype=jnp.int32)
  state, _ = jax.lax.scan(step, init_early_stopping(values.dtype),
                          (values, epochs))
  return state


def _as_values(values: Sequence[float], name: str = "values") -> np.ndarray:
  # float64: Keras sees Python floats; float32 inputs widen exactly.
  array = np.asarray(values, dtype=np.float64)
  if array.ndim != 1:
    raise ValueError(
        f"expected {name} of shape [epochs], got shape {array.shape}.")
  return array


def replay(values: Sequence[float], *, monitor: str = "val_loss",
           min_delta: float = 0, patience: int = 0, mode: str = "auto",
           baseline: float | None = None, restore_best_weights: bool = False,
           start_from_epoch: int = 0) -> dict[str, int | None]:
  """Replay Keras 3 `EarlyStopping` over a sequence of per-epoch values.

  Uses `update_early_stopping`, the function the compiled loop uses, on the
  values as float64 (under `jax.enable_x64`), so decisions equal Keras' for these
  Python floats to the bit, ties at `min_delta` included.

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
  with jax.enable_x64(True):
    state = jax.device_get(_scan_early_stopping(
        array, mode=resolve_mode(monitor, mode),
        min_delta=abs(float(min_delta)), patience=int(patience),
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
    best: Best monitored value so far (float32 in the compiled loop, float64 in
      `replay_reduce_lr`; meaningless until has_best).
    has_best: Whether any epoch has been monitored (Keras' `best is not None`).
    wait: Keras' `wait` counter.
    cooldown_counter: Epochs of cooldown left.
  """
  best: jax.Array
  has_best: jax.Array
  wait: jax.Array
  cooldown_counter: jax.Array


def init_reduce_lr(dtype: Any = jnp.float32) -> ReduceLRState:
  """Return the state before the first epoch (Keras' `on_train_begin`).

  Args:
    dtype: Of the monitored values, as in `init_early_stopping`.
  """
  return ReduceLRState(
      best=jnp.asarray(jnp.nan, dtype),
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
    value: [] monitored value at the end of this epoch (NaN allowed); cast to
      the dtype of `state.best`, as in `update_early_stopping`.
    lr: [] base learning rate in force during this epoch (may be traced); the
      rate Keras' optimizer holds, before any schedule multiplies it.
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

  _, lrs = jax.lax.scan(step, (init_reduce_lr(values.dtype), lr), values)
  return lrs


def replay_reduce_lr(values: Sequence[float], lr: float, *,
                     monitor: str = "val_loss", factor: float = 0.1,
                     patience: int = 10, mode: str = "auto",
                     min_delta: float = 1e-4, cooldown: int = 0,
                     min_lr: float = 0.0) -> np.ndarray:
  """Replay Keras 3 `ReduceLROnPlateau` over a sequence of per-epoch values.

  Uses `update_reduce_lr`, the function the compiled loop uses, on the values as
  float64 (under `jax.enable_x64`): decisions equal Keras' to the bit. The rate
  stays float32 as in Keras' optimizer; its reduction `lr * factor` is a float32
  product (Keras multiplies in float64, then rounds), which can differ in the last
  bit.

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
  with jax.enable_x64(True):
    lrs = jax.device_get(_scan_reduce_lr(
        array, np.float32(lr), mode=resolve_mode(monitor, mode),
        factor=float(factor), patience=int(patience),
        min_delta=abs(float(min_delta)), cooldown=int(cooldown),
        min_lr=float(min_lr)))
  return np.asarray(lrs, np.float32)
