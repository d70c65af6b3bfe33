"""Series transforms in the config (`data.transform`, `data.difference`) and their inverse.

The chain is power transform (log / Box-Cox, lambda fitted on the training rows) ->
differencing inside each window -> scaling; `prep.to_original` and the compiled
`mae_original` invert all of it. Checked here against the series itself and against a
hand computation that walks the recursion of the differences step by step.
"""
import numpy as np
import pytest
import scipy.special
import scipy.stats

import jaxlstm
from jaxlstm import data, prep, problems
from jaxlstm.config import Config, ConfigError

N_IN, N_OUT, SEASON = 16, 3, 12


def airline(length=160, seed=0):
  """A positive series with a trend and a multiplicative yearly cycle (the airline-passengers shape)."""
  t = np.arange(length)
  noise = np.random.default_rng(seed).normal(0.0, 2.0, length)
  return ((100 + 2.0 * t) * (1 + 0.25 * np.sin(2 * np.pi * t / SEASON)) + noise).astype(np.float64)


def framed(series, n_train=100):
  """Windows of `series` (float32, as a Dataset holds them) with the time index of each window's start."""
  x, y = prep.sliding_windows(series, N_IN, N_OUT)
  return problems.Dataset(x[:n_train], y[:n_train], x[n_train:], y[n_train:], name="airline",
                          metadata={"target_features": [0] * N_OUT})


CHAIN = {"data.difference": [1, SEASON], "data.transform": "boxcox", "data.scaling": "minmax"}


def test_difference_boxcox_minmax_round_trip_to_the_original_series():
  series = airline()
  raw = framed(series)
  resolved = data.resolve(Config().override(CHAIN), raw)
  assert resolved.x_train.shape == (100, N_IN - 1 - SEASON, 1)  # the window loses the lags' steps
  assert 0.0 <= resolved.y_train.min() and resolved.y_train.max() <= 1.0  # scaled last
  for part, expected in (("val", raw.y_val), ("train", raw.y_train),
                         ("all", np.concatenate([raw.y_train, raw.y_val]))):
    targets = resolved.y_val if part == "val" else resolved.y_train if part == "train" else np.concatenate(
        [resolved.y_train, resolved.y_val])
    np.testing.assert_allclose(prep.to_original(resolved, targets, part), expected, rtol=1e-5)
  # Leading axes are free: an ensemble's [repeats, N, outputs] predictions.
  stacked = prep.to_original(resolved, np.stack([resolved.y_val] * 3))
  np.testing.assert_allclose(stacked, np.stack([raw.y_val] * 3), rtol=1e-5)
  # Lambda is fitted on the training rows only (windows and targets pooled), never on validation.
  record = resolved.metadata["series_transform"]
  pooled = np.concatenate([raw.x_train[..., 0].ravel(), raw.y_train.ravel()]).astype(np.float64)
  np.testing.assert_allclose(record.lmbda, scipy.stats.boxcox(pooled)[1], rtol=1e-6)


def test_multivariate_inputs_with_a_known_target_feature_round_trip(tmp_path):
  t = np.arange(120)
  other = np.cos(t / 4.0)  # left as it is (negative values and all)
  target = airline(120)
  path = tmp_path / "two.csv"
  path.write_text("other,sales\n" + "".join(f"{a},{b}\n" for a, b in zip(other, target)))
  config = Config().override({
      "data.problem": "csv", "data.options": {"path": str(path), "columns": ["other", "sales"], "target": "sales",
                                               "n_in": 14, "n_out": 2},
      "data.difference": [SEASON], "data.transform": "log", "data.scaling": "standard"})
  raw, resolved = data.resolve(config.override({"data.difference": [], "data.transform": "none",
                                                "data.scaling": "none"})), data.resolve(config)
  np.testing.assert_allclose(prep.to_original(resolved, resolved.y_val), raw.y_val, rtol=1e-5)
  unscaled = resolved.metadata["input_scaler"].inverse(resolved.x_val)
  np.testing.assert_allclose(unscaled[..., 0], raw.x_val[:, SEASON:, 0], rtol=1e-5, atol=1e-5)  # untouched
  logs = np.log(raw.x_val[..., 1].astype(np.float64))
  np.testing.assert_allclose(unscaled[..., 1], logs[:, SEASON:] - logs[:, :-SEASON], atol=1e-5)


def hand_original(prediction_scaled, scaler, series, starts, lmbda):
  """Invert min-max, then the lag-1 and lag-12 differences, then Box-Cox, by walking the recursion.

  `starts[n]` is the time index of sample n's first input step in `series`.
  """
  low, high = float(scaler.data_min[0]), float(scaler.data_max[0])
  d2 = prediction_scaled.astype(np.float64) * (high - low) + low  # min-max to [0, 1], inverted
  b = scipy.stats.boxcox(series, lmbda)  # the transformed series (true levels)
  d1 = np.full_like(b, np.nan)
  d1[1:] = b[1:] - b[:-1]
  out = np.zeros_like(d2)
  for n, start in enumerate(starts):
    level, d1_hat = {}, {}
    for step in range(N_OUT):
      u = start + N_IN + step  # the target's time index
      # d2[u] = d1[u] - d1[u - 12]; d1[u - 12] lies in the window (12 < N_IN).
      d1_hat[u] = d2[n, step] + d1[u - SEASON]
      # d1[u] = b[u] - b[u - 1]; b[u - 1] is the window's last level, or the previous predicted step.
      level[u] = d1_hat[u] + (b[u - 1] if step == 0 else level[u - 1])
      out[n, step] = scipy.special.inv_boxcox(level[u], lmbda)
  return out


@pytest.fixture(scope="module")
def transformed_run():
  series = airline()
  raw = framed(series)
  config = Config().override({**CHAIN, "model.cells": 4, "train.epochs": 3, "train.batch_size": 0,
                              "train.shuffle": False, "train.metrics": ["mae", "mae_original"]})
  ens = jaxlstm.fit(config, raw, repeats=2, seed=0)
  return series, raw, data.resolve(config, raw), ens


def test_mae_original_equals_a_hand_computation_after_inverting_every_transform(transformed_run):
  series, raw, resolved, ens = transformed_run
  predictions = ens.predict(resolved.x_val)  # [repeats, N, outputs], scaled differences
  record = resolved.metadata["series_transform"]
  starts = np.arange(100, 100 + len(raw.x_val))
  for r in range(2):
    by_hand = hand_original(predictions[r], resolved.metadata["target_scaler"], series, starts,
                            float(record.lmbda[0]))
    expected = np.mean(np.abs(by_hand - raw.y_val.astype(np.float64)))
    np.testing.assert_allclose(ens.history["val_mae_original"][r, -1], expected, rtol=1e-4)
    # One call maps the ensemble's forecasts back: the same numbers.
    np.testing.assert_allclose(prep.to_original(resolved, predictions)[r], by_hand, rtol=1e-5)
  # mae stays in the model's (scaled, differenced) units.
  assert ens.history["val_mae"][0, -1] < 1.0 < ens.history["val_mae_original"][0, -1]


def test_undefined_transforms_are_refused_in_one_line(tmp_path):
  cases = [
      ({"data.problem": "echo", "data.difference": [1]}, "data.difference = \\[1\\] applies to a regression series"),
      ({"data.problem": "linear", "data.difference": [1]},
       "data.difference = \\[1\\] needs input windows longer than 1 steps .* but the windows have 1"),
      ({"data.problem": "damped_sine", "data.options": {"length": 10, "n_train": 5, "n_val": 2},
        "data.difference": [4, 6]}, "needs input windows longer than 10 steps"),
      ({"data.problem": "damped_sine", "data.options": {"offset": 0.0, "n_train": 5, "n_val": 2},
        "data.transform": "log"}, "data.transform = 'log': log needs positive values"),
  ]
  for changes, message in cases:
    with pytest.raises(ConfigError, match=message):
      data.resolve(Config().override(changes))
  x = np.ones((6, 4, 2), np.float32)
  two = problems.Dataset(x[:4], x[:4, -1, :1], x[4:], x[4:, -1, :1])  # two inputs, which is the target?
  with pytest.raises(ConfigError, match="cannot tell which series to transform: .*no metadata\\['target_features'\\]"):
    data.resolve(Config().override({"data.transform": "boxcox"}), two)


def test_rolling_folds_with_transforms_score_in_original_units(tmp_path):
  from jaxlstm import sweep
  path = tmp_path / "air.csv"
  path.write_text("passengers\n" + "".join(f"{v:.3f}\n" for v in airline(130)))
  out = tmp_path / "run"
  code = sweep.main(["--data", str(path), "--set", "data.options.n_in=14", "--set", "data.options.val_fraction=0",
                     "--set", "data.cv=rolling", "--set", "data.folds=3", "--set", "data.difference=1,12",
                     "--set", "data.transform=log", "--set", "train.metrics=mae_original", "--metric",
                     "val_mae_original", "--repeats", "2", "--epochs", "2", "--out", str(out), "--quiet"])
  assert code == 0
  import pandas as pd
  scores = pd.read_csv(out / "scores.csv")
  per_fold = scores[[f"final_val_mae_original_fold{f}" for f in range(3)]].to_numpy()
  assert np.isfinite(per_fold).all() and (per_fold > 1.0).all()  # passengers, not scaled differences
  report = (out / "report.md").read_text()
  assert "target series log, then differenced at lag(s) 1, 12" in report and "walk-forward" in report
