"""Tests for jaxlstm.early_stopping: Keras 3 EarlyStopping / ReduceLROnPlateau.

Three independent oracles:
* hand-derived expectations for each edge case (the `*_CASES` tables),
* `_reference_*`: the Keras 3.15.1 algorithm written out from
  keras/src/callbacks/early_stopping.py, reduce_lr_on_plateau.py and
  monitor_callback.py, so the tests mean something without Keras installed,
* the real `keras.callbacks` classes driven with synthetic logs (skipped when
  Keras is missing or is not the pinned version).
"""
import inspect
import math
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlstm import early_stopping as es
from jaxlstm import metrics

NAN = float("nan")

# Keras' jax backend warns about numpy 2's `__array__(copy=...)` when the
# callbacks read the optimizer's learning rate; that is Keras' business.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def keras():
  """Keras 3 on the jax backend, imported once per module (~4 s)."""
  if "keras" not in sys.modules:
    os.environ["KERAS_BACKEND"] = "jax"
  keras = pytest.importorskip("keras")
  if keras.__version__ != es.KERAS_REFERENCE_VERSION:
    pytest.skip(f"jaxlstm follows Keras {es.KERAS_REFERENCE_VERSION}; "
                f"installed Keras is {keras.__version__}.")
  return keras


# ---------------------------------------------------------------- reference
# Written out from Keras 3.15.1: `current - signed_delta` is a Python (float64)
# sum, then `keras.ops.less/greater` compare both operands in float32 on the jax
# backend (mission.md §1c).

def _is_improvement(current, reference, mode, min_delta):
  if reference is None:  # MonitorCallback._is_improvement
    return True
  signed_delta = -abs(min_delta) if mode == "min" else abs(min_delta)
  lhs, rhs = np.float32(current - signed_delta), np.float32(reference)
  return bool(lhs < rhs) if mode == "min" else bool(lhs > rhs)


def _reference_early_stopping(values, *, mode, min_delta=0, patience=0,
                              baseline=None, restore_best_weights=False,
                              start_from_epoch=0):
  """EarlyStopping.on_train_begin/on_epoch_end/on_train_end + fit's loop."""
  wait, best, best_weights, best_epoch = 0, None, None, 0
  weights, stopped_epoch = -1, None  # "weights" = epoch they were trained to
  for epoch, current in enumerate(values):
    weights = epoch
    if epoch < start_from_epoch:
      continue
    if restore_best_weights and best_weights is None:
      best_weights, best_epoch = weights, epoch
    wait += 1
    if _is_improvement(current, best, mode, min_delta):
      best, best_epoch = current, epoch
      if restore_best_weights:
        best_weights = weights
      if baseline is None or _is_improvement(current, baseline, mode,
                                             min_delta):
        wait = 0
      continue
    if wait >= patience and epoch > 0:
      stopped_epoch = epoch
      break
  if restore_best_weights and best_weights is not None:
    weights = best_weights
  epochs_run = len(values) if stopped_epoch is None else stopped_epoch + 1
  return {"epochs_run": epochs_run, "stopped_epoch": stopped_epoch,
          "restored_epoch": weights}


def _reference_reduce_lr(values, lr, *, mode, factor=0.1, patience=10,
                         min_delta=1e-4, cooldown=0, min_lr=0.0):
  """ReduceLROnPlateau.on_epoch_end; the optimizer keeps lr in float32."""
  lr = float(np.float32(lr))
  best, wait, cooldown_counter, logged = None, 0, 0, []
  for current in values:
    logged.append(lr)  # logs["learning_rate"] is written before reducing
    if cooldown_counter > 0:
      cooldown_counter -= 1
      wait = 0
    if _is_improvement(current, best, mode, min_delta):
      best, wait = current, 0
    elif not cooldown_counter > 0:
      wait += 1
      if wait >= patience and lr > np.float32(min_lr):
        lr = float(np.float32(max(lr * factor, min_lr)))
        cooldown_counter, wait = cooldown, 0
  return np.asarray(logged, np.float32)


# ---------------------------------------------------------- keras drivers

class _FakeModel:
  """The parts of a Keras model the two callbacks touch.

  `get_weights` returns the epoch the weights were trained to, so what is
  restored tells which snapshot Keras kept.
  """

  def __init__(self, keras, optimizer=None):
    # Imported here: keras is optional.
    from keras.src.trainers import compile_utils
    self.epoch = -1
    self.stop_training = False
    self.optimizer = optimizer
    # Compiled metrics, so that mode="auto" can find their direction.
    self.metrics = [compile_utils.MetricsList([
        keras.metrics.Accuracy(name="accuracy"),
        keras.metrics.MeanSquaredError(name="mse")])]

  def get_weights(self):
    return [np.array(self.epoch)]

  def set_weights(self, weights):
    self.epoch = int(weights[0])


def _keras_early_stopping(keras, values, **kwargs):
  """Drive keras.callbacks.EarlyStopping as `Model.fit` does."""
  monitor = kwargs.get("monitor", "val_loss")
  callback = keras.callbacks.EarlyStopping(**kwargs)
  model = _FakeModel(keras)
  callback.set_model(model)
  callback.on_train_begin()
  epochs_run = 0
  for epoch, value in enumerate(values):
    model.epoch = epoch  # one epoch of "training"
    callback.on_epoch_end(epoch, {monitor: value, "loss": 0.0})
    epochs_run += 1
    if model.stop_training:
      break
  callback.on_train_end()
  return {"epochs_run": epochs_run,
          "stopped_epoch": callback.stopped_epoch if model.stop_training
                           else None,
          "restored_epoch": model.epoch}


def _keras_reduce_lr(keras, values, lr, **kwargs):
  """Drive keras.callbacks.ReduceLROnPlateau; return the logged rates."""
  monitor = kwargs.get("monitor", "val_loss")
  callback = keras.callbacks.ReduceLROnPlateau(**kwargs)
  model = _FakeModel(keras, optimizer=keras.optimizers.SGD(learning_rate=lr))
  callback.set_model(model)
  callback.on_train_begin()
  logged = []
  for epoch, value in enumerate(values):
    logs = {monitor: value, "loss": 0.0}
    callback.on_epoch_end(epoch, logs)
    logged.append(logs["learning_rate"])
  return np.asarray(logged, np.float32)


def _with_mode(kwargs):
  """Reference functions take a resolved mode and no monitor."""
  kwargs = dict(kwargs)
  monitor = kwargs.pop("monitor", "val_loss")
  kwargs["mode"] = es.resolve_mode(monitor, kwargs.get("mode", "auto"))
  return kwargs


# ------------------------------------------------------------ early stopping

def _expect(epochs_run, stopped_epoch, restored_epoch):
  return {"epochs_run": epochs_run, "stopped_epoch": stopped_epoch,
          "restored_epoch": restored_epoch}


# (id, values, kwargs, expected); expectations derived by hand from the
# Keras 3.15.1 source, 0-based epochs.
EARLY_STOPPING_CASES = [
    ("patience0_improving_never_stops", [5.0, 4.0, 3.0, 2.0, 1.0],
     {}, _expect(5, None, 4)),
    ("patience0_stops_at_first_non_improvement", [3.0, 2.0, 2.5, 1.0],
     {"restore_best_weights": True}, _expect(3, 2, 1)),
    ("patience2", [1.0, 0.9, 0.95, 0.92, 0.91, 0.5],
     {"patience": 2}, _expect(4, 3, 3)),
    ("patience_longer_than_run", [1.0, 2.0, 3.0, 4.0],
     {"patience": 10}, _expect(4, None, 3)),
    # 0.75 + 0.25 == 1.0 exactly: a tie is not an improvement.
    ("min_delta_tie_is_no_improvement", [1.0, 0.75, 0.5],
     {"min_delta": 0.25}, _expect(2, 1, 1)),
    ("min_delta_negative_means_abs", [1.0, 0.75, 0.5],
     {"min_delta": -0.25}, _expect(2, 1, 1)),
    ("min_delta_filters_small_gains", [1.0, 0.7, 0.6, 0.45, 0.3],
     {"min_delta": 0.2, "patience": 1, "restore_best_weights": True},
     _expect(3, 2, 1)),
    # The first epoch counts towards wait while the baseline is unbeaten, so
    # a flat curve stops at epoch 1 although patience is 2.
    ("baseline_never_beaten_flat", [1.0, 1.0, 1.0, 1.0],
     {"baseline": 0.5, "patience": 2, "restore_best_weights": True},
     _expect(2, 1, 0)),
    # Improving epochs never stop training, but do not reset wait either.
    ("baseline_never_beaten_improving", [1.0, 0.95, 0.9, 0.85, 0.9, 0.8],
     {"baseline": 0.5, "patience": 2, "restore_best_weights": True},
     _expect(5, 4, 3)),
    ("baseline_beaten_late", [1.0, 0.9, 0.8, 0.4, 0.45, 0.42, 0.41],
     {"baseline": 0.5, "patience": 2, "restore_best_weights": True},
     _expect(6, 5, 3)),
    ("baseline_tie_is_not_beaten", [1.0, 0.5, 0.5, 0.5],
     {"baseline": 0.5, "patience": 3}, _expect(3, 2, 2)),
    ("baseline_max_unbeaten_wait_keeps_counting",
     [0.2, 0.3, 0.3, 0.9, 0.9, 0.9],
     {"mode": "max", "baseline": 0.8, "patience": 2}, _expect(3, 2, 2)),
    ("start_from_epoch_ignores_warmup", [0.1, 0.2, 5.0, 4.0, 4.5, 4.4, 4.3],
     {"start_from_epoch": 2, "patience": 1, "restore_best_weights": True},
     _expect(5, 4, 3)),
    ("start_from_epoch_patience0", [5.0, 1.0, 2.0],
     {"start_from_epoch": 1}, _expect(3, 2, 2)),
    ("start_from_epoch_never_reached_no_snapshot", [3.0, 2.0, 1.0],
     {"start_from_epoch": 5, "restore_best_weights": True},
     _expect(3, None, 2)),
    # Keras 3 restores the best weights even when it never stopped.
    ("restore_without_stop", [1.0, 0.5, 0.7, 0.8],
     {"patience": 5, "restore_best_weights": True}, _expect(4, None, 1)),
    ("no_restore_without_stop", [1.0, 0.5, 0.7, 0.8],
     {"patience": 5}, _expect(4, None, 3)),
    ("restore_with_stop", [1.0, 0.5, 0.7, 0.8, 0.2],
     {"patience": 2, "restore_best_weights": True}, _expect(4, 3, 1)),
    ("mode_max", [0.5, 0.6, 0.6, 0.55, 0.9],
     {"mode": "max", "patience": 2, "restore_best_weights": True},
     _expect(4, 3, 1)),
    ("auto_val_accuracy_is_max", [0.5, 0.6, 0.6, 0.55, 0.9],
     {"monitor": "val_accuracy", "patience": 2, "restore_best_weights": True},
     _expect(4, 3, 1)),
    ("auto_loss_is_min", [1.0, 2.0, 3.0],
     {"monitor": "loss", "patience": 1}, _expect(2, 1, 1)),
    ("mode_max_min_delta_tie", [0.5, 0.625, 0.6875, 1.0],
     {"mode": "max", "min_delta": 0.125, "restore_best_weights": True},
     _expect(2, 1, 0)),
    # best starts as None, so a NaN first epoch becomes a best that no value
    # ever beats (every comparison with NaN is False).
    ("nan_first_epoch_is_best_forever", [NAN, 1.0, 0.5],
     {"patience": 1, "restore_best_weights": True}, _expect(2, 1, 0)),
    ("nan_later_is_no_improvement", [1.0, 0.5, NAN, NAN, 0.4],
     {"patience": 2, "restore_best_weights": True}, _expect(4, 3, 1)),
    ("nan_then_recovery", [1.0, NAN, 0.5],
     {"patience": 2, "restore_best_weights": True}, _expect(3, None, 2)),
    ("no_epochs", [], {"restore_best_weights": True}, _expect(0, None, -1)),
    # Keras sums in float64: 0.29 + 0.01 == 0.3, a tie, so no improvement and a
    # stop (a float32 sum, 0.28999999 + 0.0099999998, would beat 0.3).
    ("float64_sum_tie_min", [0.3, 0.29], {"min_delta": 0.01}, _expect(2, 1, 1)),
    ("float64_sum_tie_max", [0.29, 0.3], {"min_delta": 0.01, "mode": "max"},
     _expect(2, 1, 1)),
    # ... and compares in float32: 0.3 - 1e-12 equals 0.3 there (a float64
    # comparison would call it an improvement).
    ("float32_comparison_tie", [0.3, 0.3 - 1e-12], {}, _expect(2, 1, 1)),
    # 0.3 + 0.01 does not beat the baseline 0.3 (wait stays 1); 0.29 + 0.01 ties
    # the best 0.3: wait 2 >= patience 2 stops at epoch 1.
    ("float64_sum_baseline_tie", [0.3, 0.29, 0.28],
     {"baseline": 0.3, "min_delta": 0.01, "patience": 2}, _expect(2, 1, 1)),
    # Max: 0.3 improves on 0.2 (0.29 > 0.2) without beating the baseline (0.29 <=
    # 0.3): wait stays 2; 0.31 - 0.01 == 0.3 ties the best: stop at epoch 2.
    ("float64_sum_baseline_max", [0.2, 0.3, 0.31],
     {"mode": "max", "min_delta": 0.01, "patience": 1, "baseline": 0.3,
      "restore_best_weights": True}, _expect(3, 2, 1)),
]
_ES_IDS = [case[0] for case in EARLY_STOPPING_CASES]


@pytest.mark.parametrize("name, values, kwargs, expected",
                         EARLY_STOPPING_CASES, ids=_ES_IDS)
def test_replay_matches_hand_derived(name, values, kwargs, expected):
  del name
  assert es.replay(values, **kwargs) == expected


@pytest.mark.parametrize("name, values, kwargs, expected",
                         EARLY_STOPPING_CASES, ids=_ES_IDS)
def test_reference_matches_hand_derived(name, values, kwargs, expected):
  # Guards the written-out oracle that the random tests below rely on.
  del name
  assert _reference_early_stopping(values, **_with_mode(kwargs)) == expected


@pytest.mark.parametrize("name, values, kwargs, expected",
                         EARLY_STOPPING_CASES, ids=_ES_IDS)
def test_keras_matches_hand_derived(keras, name, values, kwargs, expected):
  del name
  assert _keras_early_stopping(keras, values, **kwargs) == expected


def _random_early_stopping_cases(count, seed):
  """Dyadic random walks (exact in float32, many ties) with NaNs."""
  rng = np.random.default_rng(seed)
  cases = []
  for _ in range(count):
    values = 1.0 + np.cumsum(rng.integers(-2, 3, size=10) * 0.125)
    values[rng.random(10) < 0.1] = np.nan
    kwargs = {
        "mode": str(rng.choice(["min", "max"])),
        "min_delta": float(rng.choice([0.0, 0.125, 0.25])),
        "patience": int(rng.integers(0, 4)),
        "baseline": [None, 0.5, 1.0, 1.5][rng.integers(4)],
        "start_from_epoch": int(rng.integers(0, 3)),
        "restore_best_weights": bool(rng.integers(2)),
    }
    cases.append((values.tolist(), kwargs))
  return cases


def test_replay_matches_reference_on_random_sequences():
  outcomes = set()
  for values, kwargs in _random_early_stopping_cases(30, seed=0):
    got = es.replay(values, **kwargs)
    assert got == _reference_early_stopping(values, **kwargs), (values, kwargs)
    outcomes.add(got["stopped_epoch"])
  assert len(outcomes) > 3  # the cases exercise different stopping epochs


def test_replay_matches_keras_on_random_sequences(keras):
  for values, kwargs in _random_early_stopping_cases(30, seed=0):
    assert es.replay(values, **kwargs) == _keras_early_stopping(
        keras, values, **kwargs), (values, kwargs)


# ------------------------------------------ min_delta ties in float32 curves
# The compiled loop sees float32 values; Keras would see them widened to float64
# (`fit` pythonifies the logs), add min_delta in float64 and compare in float32.

_TIE_KWARGS = [
    {"mode": "min", "min_delta": 0.01, "patience": 1},
    {"mode": "max", "min_delta": 0.01, "patience": 2},
    {"mode": "min", "min_delta": 3e-3, "patience": 2, "baseline": 0.05},
    {"mode": "max", "min_delta": 0.03, "patience": 1, "baseline": 0.1,
     "restore_best_weights": True},
]


def _float32_sum_improves(current, reference, mode, min_delta):
  """The rule Keras does NOT use: the sum in float32."""
  if reference is None:
    return True
  delta = np.float32(abs(min_delta))
  current, reference = np.float32(current), np.float32(reference)
  return bool(current + delta < reference if mode == "min" else current - delta > reference)


def _near_tie_curves(kwargs, count, epochs, seed):
  """[count, epochs] float32 curves whose values sit within a few float32 ulps of
  `best -/+ min_delta` (best as Keras tracks it), mostly where a float32 sum
  would decide differently from Keras where such a value exists. Returns
  (curves, the number of such epochs).

  Values start in 0.001 .. 0.1: a float32 sum errs only where min_delta is not
  small against the values (with values near 1 and min_delta 0.01 it never does)."""
  rng = np.random.default_rng(seed)
  mode, delta = kwargs["mode"], kwargs["min_delta"]
  sign = -1.0 if mode == "min" else 1.0
  curves, tricky = np.empty((count, epochs), np.float32), 0
  for row in curves:
    best = None
    for epoch in range(epochs):
      if best is None or rng.random() < 0.15:
        value = np.float32(10.0 ** rng.uniform(-3, -1))
      else:
        center = np.float32(best + sign * delta)
        candidates = [center]
        for direction in (np.inf, -np.inf):
          step = center
          for _ in range(3):
            step = np.nextafter(step, np.float32(direction))
            candidates.append(step)
        split = [c for c in candidates
                 if _is_improvement(float(c), best, mode, delta)
                 != _float32_sum_improves(c, best, mode, delta)]
        pool = split if split and rng.random() < 0.8 else candidates
        value = pool[rng.integers(len(pool))]
      if rng.random() < 0.03:
        value = np.float32(np.nan)
      row[epoch] = value
      tricky += _is_improvement(float(value), best, mode, delta) != (
          _float32_sum_improves(value, best, mode, delta))
      if _is_improvement(float(value), best, mode, delta):
        best = float(value)
  return curves, tricky


def _compiled_early_stopping(curves, kwargs):
  """The float32 update functions, vmapped over curves as in the engine."""
  kwargs = {k: v for k, v in kwargs.items() if k != "restore_best_weights"}

  def run(values):
    def step(state, inputs):
      state, _ = es.update_early_stopping(state, *inputs, **kwargs)
      return state, None

    state, _ = jax.lax.scan(step, es.init_early_stopping(),
                            (values, jnp.arange(values.shape[0])))
    return state

  return jax.device_get(jax.jit(jax.vmap(run))(curves))


@pytest.mark.parametrize("kwargs", _TIE_KWARGS, ids=lambda k: str(k))
def test_float32_curves_decide_min_delta_ties_as_keras(keras, kwargs):
  curves, tricky = _near_tie_curves(kwargs, count=40, epochs=10, seed=7)
  assert tricky > 20  # epochs that a float32 sum would decide unlike Keras
  compiled = _compiled_early_stopping(curves, kwargs)
  for i, values in enumerate(curves.tolist()):  # float32 widened exactly
    want = _keras_early_stopping(keras, values, **kwargs)
    assert es.replay(values, **kwargs) == want, (values, kwargs)
    stopped = compiled.stopped_epoch[i]
    assert (None if stopped < 0 else int(stopped)) == want["stopped_epoch"], i
    if kwargs.get("restore_best_weights"):
      assert int(compiled.best_epoch[i]) == want["restored_epoch"], i


@pytest.mark.parametrize("kwargs", _TIE_KWARGS[:2], ids=lambda k: str(k))
def test_float32_curves_reduce_lr_as_keras(keras, kwargs):
  kwargs = {"mode": kwargs["mode"], "min_delta": kwargs["min_delta"],
            "patience": kwargs["patience"], "factor": 0.5}
  curves, tricky = _near_tie_curves(kwargs, count=30, epochs=10, seed=8)
  assert tricky > 20

  def run(values):
    def step(carry, value):
      state, lr = carry
      state, new_lr = es.update_reduce_lr(state, value, lr, **kwargs)
      return (state, new_lr), lr

    return jax.lax.scan(step, (es.init_reduce_lr(), jnp.float32(1.0)), values)[1]

  compiled = np.asarray(jax.jit(jax.vmap(run))(curves))
  for i, values in enumerate(curves.tolist()):
    want = _keras_reduce_lr(keras, values, 1.0, **kwargs)
    np.testing.assert_array_equal(es.replay_reduce_lr(values, 1.0, **kwargs), want)
    np.testing.assert_array_equal(compiled[i], want)


def _keras_rule(value, reference, delta):
  """float32(float64(value) + delta) < float32(reference), with numpy."""
  with np.errstate(all="ignore"):
    return (value.astype(np.float64) + delta).astype(np.float32) < reference


@pytest.mark.parametrize("delta", [0.01, 1e-4, 0.125, 10.0, 1e-18, 1e18, 3.7e-9])
def test_float32_comparison_equals_float64_rule(delta):
  rng = np.random.default_rng(int(delta * 1e6) % 1000)
  n = 20_000
  reference = (rng.choice([-1, 1], n) * 10.0 ** rng.uniform(-25, 25, n))
  reference = reference.astype(np.float32)
  reference[:12] = [0, -0.0, 2**-60, -2**-60, 2**-61, 2**-59, 1.0, 0.3,
                    np.finfo(np.float32).max, -np.finfo(np.float32).max,
                    np.inf, -np.inf]
  # value = reference - delta, then a few float32 steps either way: the ties.
  value = (reference.astype(np.float64) - delta).astype(np.float32)
  steps = rng.integers(-3, 4, n)
  for _ in range(3):
    with np.errstate(over="ignore"):
      value = np.where(steps > 0, np.nextafter(value, np.float32(np.inf)),
                       np.where(steps < 0, np.nextafter(value, np.float32(-np.inf)),
                                value))
    steps -= np.sign(steps)
  wild = rng.random(n) < 0.1
  value[wild] = (rng.choice([-1, 1], n) * 10.0 ** rng.uniform(-30, 30, n))[wild]
  value[:4] = [np.inf, -np.inf, np.nan, 0.0]
  # XLA flushes subnormal float32 numbers to zero; Keras' values never are.
  normal = lambda a: (a == 0) | ~(np.abs(a) < 2**-126)
  keep = normal(value) & normal(reference)
  value, reference = value[keep], reference[keep]
  beats = jax.jit(lambda v, r, mode: es._beats(v, r, mode, delta),
                  static_argnums=2)
  np.testing.assert_array_equal(beats(value, reference, "min"),
                                _keras_rule(value, reference, delta))
  np.testing.assert_array_equal(beats(-value, -reference, "max"),
                                _keras_rule(value, reference, delta))
  # Neither a float32 sum (for a delta float32 cannot hold) nor a float64
  # comparison gets these right.
  with np.errstate(all="ignore"):
    if float(np.float32(delta)) != delta:
      assert np.any((value + np.float32(delta) < reference)
                    != _keras_rule(value, reference, delta))
    assert np.any((value.astype(np.float64) + delta < reference)
                  != _keras_rule(value, reference, delta))


@pytest.mark.parametrize("k", [-40, 0, 30])
def test_float32_comparison_exact_at_double_rounding_ties(k):
  # reference r in (1, 2) * 2**k with float32 spacing u = 2**(k-23); value
  # v = r - 2u and delta = 3u/2 put v + delta on mid = r - u/2, where rounding
  # to float32 ties (to even: r when r is even). q = 2**(k-52) is the float64
  # spacing at mid: offsets within q/2 round back to mid first.
  rng = np.random.default_rng(k + 100)
  u, q = 2.0 ** (k - 23), 2.0 ** (k - 52)
  sign = rng.choice([-1.0, 1.0], 4000)
  mantissa = 1 + rng.integers(1, 2**23, 4000) * 2.0**-23
  reference = (sign * mantissa * 2.0**k).astype(np.float32)
  value = (reference.astype(np.float64) - 2 * u).astype(np.float32)
  for offset in (0, q / 4, -q / 4, q / 2, -q / 2, 0.52 * q, -0.52 * q):
    delta = 1.5 * u + offset
    want = _keras_rule(value, reference, delta)
    got = jax.jit(lambda v, r: es._beats(v, r, "min", delta))(value, reference)
    np.testing.assert_array_equal(got, want, err_msg=f"offset {offset / q} q")
    if abs(offset) <= q / 2:
      assert 0.3 < want.mean() < 0.7  # a tie: decided by r's last bit


def test_replay_defaults_match_keras_signature(keras):
  ours = inspect.signature(es.replay).parameters
  theirs = inspect.signature(keras.callbacks.EarlyStopping).parameters
  shared = set(ours) - {"values"}
  assert shared == set(theirs) - {"verbose"}
  for name in shared:
    assert ours[name].default == theirs[name].default, name


# -------------------------------------------------- vmapped scan == replay

def _seed_curves(seeds, epochs, seed):
  """Noisy decreasing curves that plateau at different epochs."""
  rng = np.random.default_rng(seed)
  t = np.arange(epochs)
  turn = rng.integers(3, epochs, size=(seeds, 1))
  curves = np.exp(-0.3 * np.minimum(t, turn)) + 0.02 * np.maximum(t - turn, 0)
  curves = curves + 0.01 * rng.standard_normal((seeds, epochs))
  return curves.astype(np.float32)


@pytest.mark.parametrize("kwargs", [
    {"mode": "min", "min_delta": 0.005, "patience": 3, "start_from_epoch": 2},
    {"mode": "min", "patience": 1, "baseline": 0.2},
], ids=["min_delta_start", "baseline"])
def test_vmapped_scan_matches_replay(kwargs):
  seeds, epochs = 8, 30
  curves = _seed_curves(seeds, epochs, seed=1)
  # One big improvement late on: a stopped seed must ignore it.
  curves[:, -1] = -1.0

  def run(values):
    def step(carry, inputs):
      state, snapshot = carry
      value, epoch = inputs
      # An epoch is skipped (masked) when its seed stopped before it.
      skipped = state.stopped
      state, improved = es.update_early_stopping(state, value, epoch,
                                                 **kwargs)
      # `snapshot` stands in for params saved when restore_best_weights.
      snapshot = jnp.where(improved, epoch, snapshot)
      return (state, snapshot), skipped

    init = (es.init_early_stopping(), jnp.int32(-1))
    (state, snapshot), skipped = jax.lax.scan(
        step, init, (values, jnp.arange(epochs)))
    return state, snapshot, skipped

  state, snapshot, skipped = jax.device_get(jax.jit(jax.vmap(run))(curves))
  assert state.stopped_epoch.shape == (seeds,)
  for i in range(seeds):
    expected = es.replay(curves[i].tolist(), restore_best_weights=True,
                         **kwargs)
    want = expected["stopped_epoch"]
    assert state.stopped_epoch[i] == (-1 if want is None else want)
    assert snapshot[i] == expected["restored_epoch"]
    assert state.best_epoch[i] == expected["restored_epoch"]
    # Stopped stays stopped: exactly the epochs after the stop are skipped.
    np.testing.assert_array_equal(
        skipped[i], np.arange(epochs) >= expected["epochs_run"])
  assert len(set(state.stopped_epoch.tolist())) > 1  # seeds differ


def test_state_is_frozen_after_stop():
  kwargs = {"mode": "min", "patience": 0}
  state = es.init_early_stopping()
  for epoch, value in enumerate([1.0, 2.0]):
    state, _ = es.update_early_stopping(state, value, epoch, **kwargs)
  assert bool(state.stopped) and int(state.stopped_epoch) == 1
  after, improved = es.update_early_stopping(state, -5.0, 2, **kwargs)
  assert not bool(improved)
  for leaf_before, leaf_after in zip(state, after):
    np.testing.assert_array_equal(leaf_before, leaf_after)


# --------------------------------------------------------- reduce lr

# (id, values, lr, kwargs, expected logged learning rates)
REDUCE_LR_CASES = [
    ("basic", [1.0, 0.9, 0.9, 0.9, 0.9, 0.8, 0.8], 1.0,
     {"factor": 0.5, "patience": 2}, [1, 1, 1, 1, 0.5, 0.5, 0.5]),
    ("improvement_resets_wait", [1.0, 1.0, 0.5, 0.5, 0.5], 1.0,
     {"factor": 0.5, "patience": 2}, [1, 1, 1, 1, 1]),
    ("default_patience_10", [1.0] * 13, 1.0, {}, [1] * 11 + [0.1, 0.1]),
    ("cooldown", [1.0] * 8, 1.0,
     {"factor": 0.5, "patience": 1, "cooldown": 2},
     [1, 1, 0.5, 0.5, 0.25, 0.25, 0.125, 0.125]),
    # The epoch on which the cooldown runs out already counts towards wait,
    # so cooldown=1 changes nothing when patience=1 ...
    ("cooldown1_patience1_is_no_op", [1.0] * 5, 1.0,
     {"factor": 0.5, "patience": 1, "cooldown": 1},
     [1, 1, 0.5, 0.25, 0.125]),
    # ... and delays the next reduction by one epoch when patience=2.
    ("cooldown_end_epoch_counts", [1.0] * 6, 1.0,
     {"factor": 0.5, "patience": 2, "cooldown": 1},
     [1, 1, 1, 0.5, 0.5, 0.25]),
    ("min_lr_floor", [1.0] * 6, 1.0,
     {"factor": 0.1, "patience": 0, "min_lr": 0.05},
     [1, 1, 0.1, 0.05, 0.05, 0.05]),
    ("lr_below_min_lr_never_changes", [1.0] * 4, 0.01,
     {"patience": 0, "min_lr": 0.1}, [0.01] * 4),
    ("mode_max_min_delta", [0.5, 0.50005, 0.6, 0.6, 0.6], 1.0,
     {"mode": "max", "factor": 0.5, "patience": 1},
     [1, 1, 0.5, 0.5, 0.25]),
    ("auto_val_accuracy_is_max", [0.5, 0.50005, 0.6, 0.6, 0.6], 1.0,
     {"monitor": "val_accuracy", "factor": 0.5, "patience": 1},
     [1, 1, 0.5, 0.5, 0.25]),
    ("nan_first_epoch_is_best_forever", [NAN, 1.0, 0.5, NAN, NAN], 1.0,
     {"factor": 0.5, "patience": 1}, [1, 1, 0.5, 0.25, 0.125]),
    # 0.29 + 0.01 == 0.3 in float64: a tie, so epoch 1 reduces; 0.28 + 0.01 then
    # improves on 0.3.
    ("float64_sum_tie_min", [0.3, 0.29, 0.28], 1.0,
     {"factor": 0.5, "patience": 1, "min_delta": 0.01}, [1, 1, 0.5]),
    ("float64_sum_tie_max", [0.29, 0.3, 0.31], 1.0,
     {"mode": "max", "factor": 0.5, "patience": 1, "min_delta": 0.01},
     [1, 1, 0.5]),
]
_LR_IDS = [case[0] for case in REDUCE_LR_CASES]

# Keras multiplies in float64 and rounds once to float32; jnp multiplies in
# float32, which can differ in the last bit.
_LR_RTOL = 1e-6


@pytest.mark.parametrize("name, values, lr, kwargs, expected",
                         REDUCE_LR_CASES, ids=_LR_IDS)
def test_replay_reduce_lr_matches_hand_derived(name, values, lr, kwargs,
                                               expected):
  del name
  got = es.replay_reduce_lr(values, lr, **kwargs)
  assert got.dtype == np.float32 and got.shape == (len(values),)
  np.testing.assert_allclose(got, expected, rtol=_LR_RTOL)
  np.testing.assert_allclose(
      _reference_reduce_lr(values, lr, **_with_mode(kwargs)), expected,
      rtol=_LR_RTOL)


@pytest.mark.parametrize("name, values, lr, kwargs, expected",
                         REDUCE_LR_CASES, ids=_LR_IDS)
def test_keras_reduce_lr_matches_hand_derived(keras, name, values, lr, kwargs,
                                              expected):
  del name
  np.testing.assert_allclose(_keras_reduce_lr(keras, values, lr, **kwargs),
                             expected, rtol=_LR_RTOL)


def _random_reduce_lr_cases(count, seed):
  rng = np.random.default_rng(seed)
  cases = []
  for _ in range(count):
    values = 1.0 + np.cumsum(rng.integers(-2, 3, size=16) * 0.125)
    values[rng.random(16) < 0.1] = np.nan
    kwargs = {
        "mode": str(rng.choice(["min", "max"])),
        "factor": float(rng.choice([0.1, 0.5, 0.3])),
        "patience": int(rng.integers(0, 4)),
        "min_delta": float(rng.choice([0.0, 1e-4, 0.125])),
        "cooldown": int(rng.integers(0, 3)),
        "min_lr": float(rng.choice([0.0, 1e-3, 0.05])),
    }
    cases.append((values.tolist(), float(rng.choice([1.0, 0.1, 3e-3])),
                  kwargs))
  return cases


def test_replay_reduce_lr_matches_reference_on_random_sequences():
  reductions = 0
  for values, lr, kwargs in _random_reduce_lr_cases(20, seed=0):
    got = es.replay_reduce_lr(values, lr, **kwargs)
    np.testing.assert_allclose(
        got, _reference_reduce_lr(values, lr, **kwargs), rtol=_LR_RTOL,
        err_msg=str((values, lr, kwargs)))
    reductions += int(np.sum(np.diff(got) < 0))
  assert reductions > 20


def test_replay_reduce_lr_matches_keras_on_random_sequences(keras):
  for values, lr, kwargs in _random_reduce_lr_cases(20, seed=0):
    np.testing.assert_allclose(
        es.replay_reduce_lr(values, lr, **kwargs),
        _keras_reduce_lr(keras, values, lr, **kwargs), rtol=_LR_RTOL,
        err_msg=str((values, lr, kwargs)))


def test_replay_reduce_lr_defaults_match_keras_signature(keras):
  ours = inspect.signature(es.replay_reduce_lr).parameters
  theirs = inspect.signature(keras.callbacks.ReduceLROnPlateau).parameters
  shared = set(ours) - {"values", "lr"}
  assert shared == set(theirs) - {"verbose", "kwargs"}
  for name in shared:
    assert ours[name].default == theirs[name].default, name


def test_vmapped_reduce_lr_matches_replay():
  seeds, epochs = 6, 25
  curves = _seed_curves(seeds, epochs, seed=2)
  lrs = jnp.asarray([1.0, 0.5, 0.1, 0.05, 1e-2, 3e-3], jnp.float32)
  kwargs = {"mode": "min", "factor": 0.5, "patience": 2, "cooldown": 1,
            "min_lr": 1e-3, "min_delta": 0.005}

  def run(values, lr):
    def step(carry, value):
      state, lr = carry
      state, new_lr = es.update_reduce_lr(state, value, lr, **kwargs)
      return (state, new_lr), lr

    _, logged = jax.lax.scan(step, (es.init_reduce_lr(), lr), values)
    return logged

  logged = np.asarray(jax.jit(jax.vmap(run))(curves, lrs))
  assert logged.shape == (seeds, epochs)
  for i in range(seeds):
    np.testing.assert_array_equal(
        logged[i], es.replay_reduce_lr(curves[i].tolist(), float(lrs[i]),
                                       **kwargs))
  assert np.any(logged[:, -1] < np.asarray(lrs))  # some seeds were reduced


# ------------------------------------------------------------- modes

@pytest.mark.parametrize("monitor, expected", [
    ("val_loss", "min"), ("loss", "min"), ("train_loss", "min"),
    ("val_mse", "min"), ("rmse", "min"), ("val_binary_crossentropy", "min"),
    ("val_accuracy", "max"), ("acc", "max"), ("val_auc", "max"),
    ("precision", "max"),
])
def test_resolve_mode_auto(monitor, expected):
  assert es.resolve_mode(monitor, "auto") == expected
  assert es.resolve_mode(monitor, "min") == "min"  # explicit mode wins
  assert es.resolve_mode(monitor, "max") == "max"


def test_resolve_mode_rejects_unknown_metric():
  with pytest.raises(ValueError, match=r"monitor='val_foo'.*mode='min'"):
    es.resolve_mode("val_foo", "auto")
  assert es.resolve_mode("val_foo", "max") == "max"


def test_direction_table_matches_keras_metrics(keras):
  from keras.src.trainers import compile_utils
  y = np.zeros((2, 1), np.float32)
  checked = 0
  tables = ((metrics.MAXIMIZED, "up"), (metrics.MINIMIZED, "down"))
  for names, direction in tables:
    for name in sorted(names):
      # Names a compiled metric logs under but `compile` does not accept, and our own.
      if name in ("crossentropy", "rmse", "fbeta_score", "loss", "mae_original", "penalty"):
        continue
      metric = compile_utils.get_metric(name, y, y)
      assert getattr(metric, "_direction", None) == direction, name
      checked += 1
  assert checked > 30


# --------------------------------------------------------- validation

@pytest.mark.parametrize("kwargs, match", [
    ({"patience": -1}, r"patience must be an integer >= 0, got -1"),
    ({"patience": 1.5}, r"patience must be an integer >= 0, got 1.5"),
    ({"mode": "down"},
     r"mode must be one of 'auto', 'min', 'max', got 'down'"),
    ({"monitor": "val_foo"}, r"monitor='val_foo'"),
    ({"baseline": NAN}, r"baseline must be a number or None, got nan"),
    ({"min_delta": math.inf}, r"min_delta must be finite"),
    ({"min_delta": 1e-20}, r"min_delta must be 0 or between 1e-18 and 1e\+18"),
    ({"min_delta": -1e19}, r"min_delta must be 0 or between"),
    ({"start_from_epoch": -2}, r"start_from_epoch must be an integer >= 0"),
    ({"restore_best_weights": "yes"}, r"restore_best_weights must be True"),
])
def test_check_early_stopping_args(kwargs, match):
  with pytest.raises(ValueError, match=match):
    es.check_early_stopping_args(**kwargs)
  with pytest.raises(ValueError, match=match):
    es.replay([1.0, 2.0], **kwargs)


def test_check_early_stopping_args_accepts_keras_defaults():
  assert es.check_early_stopping_args() is None
  assert es.check_early_stopping_args(
      monitor="val_accuracy", min_delta=-0.1, patience=3, baseline=0.9,
      restore_best_weights=True, start_from_epoch=5) is None


@pytest.mark.parametrize("kwargs, match", [
    ({"factor": 1.0}, r"factor must be in \[0, 1\) .*got 1.0"),
    ({"factor": -0.5}, r"factor must be in \[0, 1\)"),
    ({"patience": -1}, r"patience must be an integer >= 0, got -1"),
    ({"cooldown": -1}, r"cooldown must be an integer >= 0, got -1"),
    ({"min_lr": -1e-3}, r"min_lr must be finite and >= 0"),
    ({"mode": "up"}, r"mode must be one of"),
])
def test_check_reduce_lr_args(kwargs, match):
  with pytest.raises(ValueError, match=match):
    es.check_reduce_lr_args(**kwargs)
  with pytest.raises(ValueError, match=match):
    es.replay_reduce_lr([1.0, 2.0], 0.1, **kwargs)


def test_keras_also_rejects_factor_one(keras):
  with pytest.raises(ValueError, match="factor"):
    keras.callbacks.ReduceLROnPlateau(factor=1.0)


def test_update_functions_need_a_resolved_mode():
  with pytest.raises(ValueError, match=r"resolve_mode"):
    es.update_early_stopping(es.init_early_stopping(), 1.0, 0, mode="auto")
  with pytest.raises(ValueError, match=r"resolve_mode"):
    es.update_reduce_lr(es.init_reduce_lr(), 1.0, 0.1, mode="auto")


def test_replay_rejects_bad_values_and_lr():
  with pytest.raises(ValueError,
                     match=r"shape \[epochs\], got shape \(1, 2\)"):
    es.replay([[1.0, 2.0]])
  with pytest.raises(ValueError, match=r"lr must be finite and > 0, got 0"):
    es.replay_reduce_lr([1.0], 0.0)


@pytest.mark.parametrize("section", ["train.early_stopping", "train.reduce_lr"])
def test_config_refuses_min_delta_outside_exact_range(section):
  from jaxlstm.config import Config, ConfigError
  with pytest.raises(ConfigError, match=rf"{section}.min_delta = 1e-30 .*expected 0 or"):
    Config().override({section: {"min_delta": 1e-30}})
  Config().override({section: {"min_delta": 0.0}})
  Config().override({section: {"min_delta": 1e-18}})
