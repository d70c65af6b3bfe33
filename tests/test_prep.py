"""Data preparation: every transform round-trips, fitted ones see only the training part."""
import numpy as np
import pytest
import scipy.stats

from jaxlstm import prep
from jaxlstm.problems import Dataset, make


@pytest.fixture
def series_split(np_rng):
  """A training part and a validation part that reaches outside the training range."""
  train = np_rng.normal(size=(30, 4, 3)) * [1.0, 10.0, 100.0]
  val = train[:5] * 3.0 + 50.0
  return train, val


# --------------------------------------------------------------------------- scalers


def test_minmax_round_trip_and_fits_train_only(series_split):
  train, val = series_split
  scaler = prep.fit_minmax(train)
  assert scaler.data_min.shape == (3,)
  np.testing.assert_array_equal(scaler.data_max, train.max(axis=(0, 1)))
  scaled = scaler.transform(train)
  assert scaled.dtype == np.float32
  np.testing.assert_allclose(scaled.min(axis=(0, 1)), 0.0, atol=1e-7)
  np.testing.assert_allclose(scaled.max(axis=(0, 1)), 1.0, atol=1e-6)
  # The validation part is mapped with the training range, so it leaves [0, 1].
  scaled_val = scaler.transform(val)
  assert scaled_val.max() > 1.0
  np.testing.assert_allclose(scaler.inverse(scaled), train, rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(scaler.inverse(scaled_val), val, rtol=1e-5, atol=1e-4)


def test_minmax_feature_range_constant_feature_and_dict():
  train = np.array([[1.0, 5.0], [3.0, 5.0]])
  scaler = prep.fit_minmax(train, feature_range=(-1, 1))
  np.testing.assert_array_equal(scaler.transform(train), [[-1, -1], [1, -1]])
  np.testing.assert_allclose(scaler.inverse(scaler.transform(train)), train)
  again = prep.scaler_from_dict(scaler.to_dict())
  np.testing.assert_array_equal(again.transform(train), scaler.transform(train))
  with pytest.raises(ValueError, match="low < high"):
    prep.fit_minmax(train, feature_range=(1, 1))
  with pytest.raises(ValueError, match="fitted on 2 feature"):
    scaler.transform(np.zeros((4, 3)))


def test_standard_round_trip_and_fits_train_only(series_split):
  train, val = series_split
  scaler = prep.fit_standard(train)
  scaled = scaler.transform(train)
  np.testing.assert_allclose(scaled.mean(axis=(0, 1)), 0.0, atol=1e-6)
  np.testing.assert_allclose(scaled.std(axis=(0, 1)), 1.0, rtol=1e-5)
  np.testing.assert_allclose(scaler.mean, train.mean(axis=(0, 1)))
  assert abs(scaler.transform(val).mean()) > 1.0  # the shifted validation part stays shifted
  np.testing.assert_allclose(scaler.inverse(scaler.transform(val)), val, rtol=1e-5, atol=1e-4)
  again = prep.scaler_from_dict(scaler.to_dict())
  np.testing.assert_array_equal(again.scale, scaler.scale)


def test_scalers_reject_empty_or_nan():
  with pytest.raises(ValueError, match="empty"):
    prep.fit_minmax(np.zeros((0, 2)))
  with pytest.raises(ValueError, match="NaN or Inf"):
    prep.fit_standard(np.array([1.0, np.nan]))


# --------------------------------------------------------------------------- encoders


def test_integer_and_one_hot_encoders_round_trip():
  labels = np.array(["red", "green", "blue", "green"])
  integer = prep.fit_integer_encoder(labels)
  codes = integer.transform(labels)
  np.testing.assert_array_equal(codes, [2, 1, 0, 1])  # sorted class order
  np.testing.assert_array_equal(integer.inverse(codes), labels)
  encoder = prep.fit_one_hot(labels)
  onehot = encoder.transform(labels)
  assert onehot.shape == (4, 3) and onehot.dtype == np.float32
  np.testing.assert_array_equal(onehot.sum(-1), 1.0)
  np.testing.assert_array_equal(encoder.inverse(onehot), labels)
  # Predicted class scores decode by argmax.
  np.testing.assert_array_equal(encoder.inverse([[0.1, 0.7, 0.2]]), ["green"])
  with pytest.raises(ValueError, match="label 'purple' was not among the 3 training labels"):
    encoder.transform(["purple"])


def test_one_hot_codes():
  codes = np.array([[0, 3], [2, 1]])
  onehot = prep.one_hot(codes, 4)
  assert onehot.shape == (2, 2, 4)
  np.testing.assert_array_equal(prep.one_hot_inverse(onehot), codes)
  with pytest.raises(ValueError, match=r"codes must lie in \[0, 2\]"):
    prep.one_hot(codes, 3)
  with pytest.raises(ValueError, match="integer codes"):
    prep.one_hot(np.array([0.5]), 3)


# --------------------------------------------------------------------------- padding


def test_pad_sequences_keras_semantics():
  seqs = [[1], [2, 3], [4, 5, 6]]
  np.testing.assert_array_equal(prep.pad_sequences(seqs), [[0, 0, 1], [0, 2, 3], [4, 5, 6]])
  np.testing.assert_array_equal(prep.pad_sequences(seqs, padding="post"), [[1, 0, 0], [2, 3, 0], [4, 5, 6]])
  np.testing.assert_array_equal(prep.pad_sequences(seqs, maxlen=2), [[0, 1], [2, 3], [5, 6]])
  np.testing.assert_array_equal(prep.pad_sequences(seqs, maxlen=2, truncating="post"), [[0, 1], [2, 3], [4, 5]])
  np.testing.assert_array_equal(prep.pad_sequences([[1], []], maxlen=2, value=-1.0), [[-1, 1], [-1, -1]])
  assert prep.pad_sequences(seqs).dtype == np.float32


def test_pad_sequences_multi_feature_steps_and_unpad():
  seqs = [np.ones((2, 3)), np.arange(12.0).reshape(4, 3)]
  padded = prep.pad_sequences(seqs, padding="post")
  assert padded.shape == (2, 4, 3)
  for padding in ("pre", "post"):
    restored = prep.unpad_sequences(prep.pad_sequences(seqs, padding=padding), [2, 4], padding=padding)
    for a, b in zip(restored, seqs):
      np.testing.assert_array_equal(a, b)
  with pytest.raises(ValueError, match="steps of shape"):
    prep.pad_sequences([np.ones((2, 3)), np.ones((2, 2))])
  with pytest.raises(ValueError, match='padding must be "pre" or "post"'):
    prep.pad_sequences(seqs, padding="middle")


# --------------------------------------------------------------------------- series transforms


@pytest.mark.parametrize("lag", [1, 12])
def test_difference_round_trip(lag, np_rng):
  t = np.arange(48)
  series = 10 + 0.5 * t + 3 * np.sin(2 * np.pi * t / 12) + np_rng.normal(size=48)
  diffed = prep.difference(series, lag)
  assert diffed.shape == (48 - lag,)
  np.testing.assert_allclose(diffed, series[lag:] - series[:-lag], rtol=1e-5, atol=1e-5)
  restored = prep.inverse_difference(series[:lag], diffed, lag)
  np.testing.assert_allclose(restored, series[lag:], rtol=1e-5, atol=1e-4)


def test_inverse_difference_of_multi_step_forecast():
  history = np.array([1.0, 2.0, 4.0, 7.0])
  # Forecast differences 1, 2, 3 after the last observation 7: values 8, 10, 13.
  np.testing.assert_array_equal(prep.inverse_difference(history, [1.0, 2.0, 3.0]), [8, 10, 13])
  # Seasonal lag 2: each value adds to the one two steps back (4, 7, then itself).
  np.testing.assert_array_equal(prep.inverse_difference(history, [1.0, 1.0, 1.0], lag=2), [5, 8, 6])
  with pytest.raises(ValueError, match="history holds 1 value"):
    prep.inverse_difference(history[:1], [1.0], lag=2)
  with pytest.raises(ValueError, match="lag=4 needs a series longer than 4"):
    prep.difference(history, lag=4)


def test_difference_keeps_feature_axes():
  series = np.arange(20.0).reshape(10, 2) ** 2
  restored = prep.inverse_difference(series[:1], prep.difference(series), 1)
  np.testing.assert_allclose(restored, series[1:])


def test_log_transform_round_trip():
  x = np.array([[0.0, 1.0], [10.0, 1000.0]])
  y = prep.log_transform(x, offset=1.0)
  np.testing.assert_allclose(y, np.log1p(x), rtol=1e-6)
  np.testing.assert_allclose(prep.inverse_log_transform(y, offset=1.0), x, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="x \\+ offset > 0.*pass offset > 0"):
    prep.log_transform(x)


def test_boxcox_fitted_on_train_and_given_lambda(np_rng):
  train = np_rng.lognormal(size=200)
  val = np_rng.lognormal(size=50) * 5.0
  y_train, lam = prep.boxcox(train)
  _, expected_lam = scipy.stats.boxcox(train)
  assert lam == pytest.approx(expected_lam)
  y_val, same = prep.boxcox(val, lam)
  assert same == lam
  np.testing.assert_allclose(prep.inverse_boxcox(y_train, lam), train, rtol=1e-5)
  np.testing.assert_allclose(prep.inverse_boxcox(y_val, lam), val, rtol=1e-5)
  # lambda 0 is the log.
  np.testing.assert_allclose(prep.boxcox(val, 0.0)[0], np.log(val), rtol=1e-6, atol=1e-6)
  with pytest.raises(ValueError, match="Box-Cox needs finite x > 0"):
    prep.boxcox(np.array([1.0, 0.0]))


# --------------------------------------------------------------------------- windows and splits


def test_sliding_windows_known_arrays():
  series = np.stack([np.arange(6.0), 10 * np.arange(6.0)], axis=1)  # [6, 2]
  x, y = prep.sliding_windows(series, n_in=2, n_out=2)
  assert x.shape == (3, 2, 2) and y.shape == (3, 4)
  np.testing.assert_array_equal(x[0], [[0, 0], [1, 10]])
  np.testing.assert_array_equal(y[0], [2, 20, 3, 30])  # step-major
  _, y1 = prep.sliding_windows(series, n_in=2, n_out=2, target_columns=[1])
  np.testing.assert_array_equal(y1, [[20, 30], [30, 40], [40, 50]])
  x1, y2 = prep.sliding_windows(np.arange(4.0), n_in=3)
  np.testing.assert_array_equal(x1, [[[0], [1], [2]]])
  np.testing.assert_array_equal(y2, [[3]])
  with pytest.raises(ValueError, match="needs at least 7 steps"):
    prep.sliding_windows(series, n_in=5, n_out=2)
  with pytest.raises(ValueError, match="target_columns"):
    prep.sliding_windows(series, 1, target_columns=[2])


def test_validation_split_is_keras_last_fraction():
  x, y = np.arange(10).reshape(10, 1, 1), np.arange(10).reshape(10, 1)
  x_train, y_train, x_val, y_val = prep.validation_split(x, y, 0.3)
  # floor(10 * 0.7) = 7 training samples, in order.
  np.testing.assert_array_equal(y_train.ravel(), np.arange(7))
  np.testing.assert_array_equal(y_val.ravel(), [7, 8, 9])
  assert x_train.shape == (7, 1, 1) and x_val.shape == (3, 1, 1)
  with pytest.raises(ValueError, match="too few to split"):
    prep.validation_split(x[:1], y[:1], 0.5)
  with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\)"):
    prep.validation_split(x, y, 1.0)


def test_rolling_origin_splits():
  splits = prep.rolling_origin_splits(20, n_splits=3, min_train=10, horizon=2)
  assert [(len(tr), va.tolist()) for tr, va in splits] == [(14, [14, 15]), (16, [16, 17]), (18, [18, 19])]
  for train, val in splits:
    np.testing.assert_array_equal(train, np.arange(train.size))  # training is all the past
    assert train.max() < val.min()
  one_step = prep.rolling_origin_splits(20, n_splits=3, min_train=10, horizon=2, step=1)
  assert [va.tolist() for _, va in one_step] == [[16, 17], [17, 18], [18, 19]]
  with pytest.raises(ValueError, match="needs n >= 18"):
    prep.rolling_origin_splits(12, n_splits=4, min_train=10, horizon=2)


# --------------------------------------------------------------------------- datasets


def test_prepare_fits_on_train_only_and_maps_back(np_rng):
  x_train = np_rng.uniform(0, 10, size=(40, 3, 2))
  y_train = np_rng.uniform(-5, 5, size=(40, 1))
  ds = Dataset(x_train, y_train, x_train[:8] + 20, y_train[:8] + 20)
  scaled = prep.prepare(ds, "minmax")
  assert scaled.x_train.min() >= 0 and scaled.x_train.max() <= 1
  assert scaled.x_val.min() > 1 and scaled.y_val.min() > 1  # validation range never seen
  scaler = scaled.metadata["target_scaler"]
  np.testing.assert_allclose(scaler.data_max, y_train.max(axis=0))
  np.testing.assert_allclose(prep.to_original_units(scaled, scaled.y_val), ds.y_val, rtol=1e-5, atol=1e-5)
  # Ensemble predictions carry a leading repeats axis.
  predictions = np.stack([scaled.y_val, scaled.y_val])
  assert prep.to_original_units(scaled, predictions).shape == (2, 8, 1)
  standard = prep.prepare(ds, "standard")
  np.testing.assert_allclose(standard.x_train.mean(axis=(0, 1)), 0.0, atol=1e-5)
  np.testing.assert_allclose(prep.to_original_units(standard, standard.y_train), ds.y_train, rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="already prepared"):
    prep.prepare(scaled)
  assert prep.prepare(ds, None) is ds
  np.testing.assert_array_equal(prep.to_original_units(ds, ds.y_val), ds.y_val)


def test_prepare_leaves_class_targets_alone():
  ds = make("echo", n_train=20, n_val=5)
  scaled = prep.prepare(ds, "standard")
  np.testing.assert_array_equal(scaled.y_train, ds.y_train)
  assert scaled.metadata["target_scaler"] is None


def test_prepare_shares_scale_between_series_inputs_and_targets():
  ds = make("damped_sine", n_train=30, n_val=10, length=10, horizon=3)
  scaled = prep.prepare(ds, "minmax")
  lo = min(ds.x_train.min(), ds.y_train.min())
  hi = max(ds.x_train.max(), ds.y_train.max())
  np.testing.assert_allclose(scaled.metadata["input_scaler"].data_min, [lo])
  np.testing.assert_allclose(scaled.metadata["target_scaler"].data_max, [hi, hi, hi])
  np.testing.assert_allclose(scaled.y_train, (ds.y_train - lo) / (hi - lo), rtol=1e-5, atol=1e-6)


def test_rolling_origin_datasets_walk_forward_in_time_order():
  from jaxlstm import prep, problems
  series = np.arange(40, dtype=np.float32)[:, None]
  x, y = prep.sliding_windows(series, 3, 1)
  ds = problems.Dataset(x[:30], y[:30], x[30:], y[30:], name="series")
  folds = prep.rolling_origin_datasets(ds, n_splits=3, min_train=20, horizon=2)
  assert [f.x_train.shape[0] for f in folds] == [31, 33, 35]
  for fold in folds:
    # validation windows start right after the last training window: no look-ahead
    assert fold.x_val[0, 0, 0] == fold.x_train[-1, 0, 0] + 1
    assert fold.x_val.shape[0] == 2
  np.testing.assert_array_equal(folds[-1].y_val[:, 0], [38, 39])  # targets of the last two windows
