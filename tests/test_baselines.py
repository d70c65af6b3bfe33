"""jaxlstm.baselines: hand-computed naive forecasts, the target-feature rules, and the
random-walk fact that persistence is hard to beat."""
import ast
import pathlib

import numpy as np
import pytest

import jaxlstm
from jaxlstm import baselines, losses, prep, problems


def tiny():
  """Two-step-ahead windows of one series, by hand: x [n, 2, 1], y [n, 2]."""
  return problems.Dataset(
      x_train=np.array([[[0.0], [1.0]], [[2.0], [2.0]], [[4.0], [4.0]]]),
      y_train=np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 9.0]]),
      x_val=np.array([[[1.0], [2.0]], [[3.0], [5.0]]]),
      y_val=np.array([[3.0, 4.0], [4.0, 8.0]]), name="tiny")


def test_module_does_not_import_jax():
  tree = ast.parse(pathlib.Path(baselines.__file__).read_text())
  names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
           for alias in node.names}
  names |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
  assert not {n for n in names if n.split(".")[0] in ("jax", "flax", "optax", "jaxlstm")}


def test_hand_computed_scores():
  ds = tiny()
  # Persistence repeats the last input step: [[2, 2], [5, 5]]; errors [[-1, -2], [1, -3]].
  np.testing.assert_array_equal(baselines.predict(ds, "persistence"), [[2, 2], [5, 5]])
  mse = baselines.naive_scores(ds, season=2)
  assert mse["persistence"] == (2.5 + 5.0) / 2  # per sample (1 + 4) / 2 and (1 + 9) / 2
  # Mean of the training targets [3, 5]; errors [[0, 1], [-1, -3]].
  assert mse["mean"] == (0.5 + 5.0) / 2
  # Season 2 in a 2-step window: step 1 repeats input step 0, step 2 input step 1.
  np.testing.assert_array_equal(baselines.predict(ds, "seasonal", season=2), [[1, 2], [3, 5]])
  assert mse["seasonal"] == (4.0 + 5.0) / 2
  assert list(mse.scores) == ["persistence", "mean", "seasonal"]
  assert mse.best == "mean" and mse.best_score == 2.75
  mae = baselines.naive_scores(ds, metric="mae")
  assert (mae["persistence"], mae["mean"]) == ((1.5 + 2.0) / 2, (0.5 + 2.0) / 2)
  assert "seasonal" not in mae.scores
  # On the training split the mean forecast's MSE is the mean of the per-column variances
  # (ddof=0): (8/3 + 26/3) / 2 = 17/3; diagnose reads it as the capacity reference.
  train = baselines.naive_scores(ds, split="train", methods=("mean",))
  assert train["mean"] == pytest.approx(17 / 3, rel=1e-12)
  frame = mse.to_frame()
  assert frame["method"].tolist() == ["persistence", "mean", "seasonal"]
  assert frame.attrs["metric"] == "mse" and frame.attrs["split"] == "val"
  # A season of 1 is persistence.
  np.testing.assert_array_equal(baselines.predict(ds, "seasonal", season=1),
                                baselines.predict(ds, "persistence"))


def test_per_sample_loss_is_the_training_loss():
  # Same definition as jaxlstm.losses: mean over all non-batch entries, then over samples.
  gen = np.random.default_rng(0)
  y, p = gen.normal(size=(7, 3, 2)), gen.normal(size=(7, 3, 2))
  for name in ("mse", "mae"):
    ours = baselines.per_sample_loss(y, p, name)
    theirs = np.asarray(losses.LOSSES[name](p.astype(np.float32), y.astype(np.float32)))
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)
    assert baselines.loss(y, p, name) == pytest.approx(float(np.mean(ours)), rel=1e-12)
  with pytest.raises(ValueError, match="metric must be one of"):
    baselines.per_sample_loss(y, p, "huber")


def test_target_features_from_metadata_step_major():
  # Two features; predict feature 1 then feature 0 for 2 steps (sliding_windows' layout).
  series = np.stack([np.arange(20.0), 100 + 10 * np.arange(20.0)], axis=1)
  x, y = prep.sliding_windows(series, 4, 2, target_columns=[1, 0])
  ds = problems.Dataset(x[:10], y[:10], x[10:], y[10:], name="two",
                        metadata={"target_features": [1, 0, 1, 0]})
  features, steps = baselines.target_layout(ds)
  assert features.tolist() == [1, 0, 1, 0] and steps.tolist() == [1, 1, 2, 2]
  last = x[10:, -1]  # [n, features] at the window's last step
  np.testing.assert_array_equal(baselines.predict(ds, "persistence"),
                                last[:, [1, 0, 1, 0]])
  # Season 2 with 4 input steps: step 1 repeats input step 2, step 2 repeats input step 3.
  expected = np.stack([x[10:, 2, 1], x[10:, 2, 0], x[10:, 3, 1], x[10:, 3, 0]], axis=1)
  np.testing.assert_array_equal(baselines.predict(ds, "seasonal", season=2), expected)
  # An explicit target_features wins over the metadata.
  np.testing.assert_array_equal(
      baselines.predict(ds, "persistence", target_features=[0, 0, 0, 0]), last[:, [0, 0, 0, 0]])
  # A [samples, time_out, outputs] target: one feature per output channel, steps by time.
  ds3 = problems.Dataset(x[:10], y[:10].reshape(10, 2, 2), x[10:], y[10:].reshape(-1, 2, 2),
                         metadata={"target_features": [1, 0]})
  np.testing.assert_array_equal(baselines.predict(ds3, "seasonal", season=2),
                                expected.reshape(-1, 2, 2))


def test_undefined_forecasts_are_refused():
  series = np.random.default_rng(1).normal(size=(30, 2))
  x, y = prep.sliding_windows(series, 3, 1, target_columns=[0])
  unknown = problems.Dataset(x[:20], y[:20], x[20:], y[20:], name="multi")
  with pytest.raises(ValueError, match=r"cannot tell which input feature is the target: x has 2 "
                                       r"features.*Pass target_features=\[\.\.\.\]"):
    baselines.predict(unknown, "persistence")
  # By default only what is defined is scored, and the reason for the rest is kept.
  scores = baselines.naive_scores(unknown)
  assert list(scores.scores) == ["mean"] and "cannot tell" in scores.skipped["persistence"]
  with pytest.raises(ValueError, match="cannot tell"):
    baselines.naive_scores(unknown, methods=("persistence",))
  assert baselines.naive_scores(unknown, target_features=[0])["persistence"] >= 0
  with pytest.raises(ValueError, match="defined for regression; dataset 'echo' has task "
                                       "'categorical'"):
    baselines.naive_scores(problems.make("echo", n_train=10, n_val=5))
  ds = tiny()
  with pytest.raises(ValueError, match="season=3 is longer than the input window"):
    baselines.predict(ds, "seasonal", season=3)
  with pytest.raises(ValueError, match="season must be an integer >= 1"):
    baselines.predict(ds, "seasonal")
  with pytest.raises(ValueError, match="target_features names 1 features but y has 2 outputs"):
    baselines.predict(ds, "persistence", target_features=[0])
  with pytest.raises(ValueError, match="method must be one of"):
    baselines.predict(ds, "drift")
  with pytest.raises(ValueError, match="no val samples"):
    baselines.naive_scores(problems.Dataset(ds.x_train, ds.y_train, ds.x_train[:0], ds.y_train[:0]))


def test_scaled_dataset_scores_in_the_models_units():
  series = np.cumsum(np.random.default_rng(2).normal(0, 5, 80)) + 50
  x, y = prep.sliding_windows(series, 4, 2)
  raw = problems.Dataset(x[:50], y[:50], x[50:], y[50:])  # no target_features: own scalers
  for method in ("minmax", "standard"):
    scaled = prep.prepare(raw, method)
    pred = baselines.predict(scaled, "persistence")
    # Back in original units it is the unscaled forecast...
    np.testing.assert_allclose(prep.to_original_units(scaled, pred),
                               baselines.predict(raw, "persistence"), rtol=1e-5)
    # ...and the score is against the scaled targets the model sees.
    assert baselines.naive_scores(scaled)["persistence"] == pytest.approx(
        baselines.loss(scaled.y_val, pred), rel=1e-12)
  assert baselines.naive_scores(scaled)["persistence"] != pytest.approx(
      baselines.naive_scores(raw)["persistence"], rel=0.1)


def test_persistence_beats_or_ties_a_trained_lstm_on_a_random_walk():
  # The best forecast of a random walk is its last value: an LSTM can at most tie it.
  series = np.cumsum(np.random.default_rng(0).normal(0, 0.1, 420))
  x, y = prep.sliding_windows(series, 5, 1)
  ds = problems.Dataset(x[:300], y[:300], x[300:], y[300:], name="random_walk")
  persistence = baselines.naive_scores(ds)["persistence"]
  assert persistence == pytest.approx(np.mean((x[300:, -1, 0] - y[300:, 0]) ** 2), rel=1e-6)
  config = jaxlstm.Config().override({"model.cells": 8, "train.epochs": 30,
                                      "train.batch_size": 32})
  ens = jaxlstm.fit(config, ds, repeats=5, seed=0)
  final = ens.history["val_loss"][:, -1]
  assert np.isfinite(final).all()
  assert persistence <= final.mean()
