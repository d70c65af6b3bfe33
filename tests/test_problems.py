"""Problems: shapes, value ranges, determinism in the seed, known samples, CSV loading and errors."""
import numpy as np
import pytest

from jaxlstm import prep, problems
from jaxlstm.problems import Dataset, make

# Small sizes keep generation instant; defaults are checked once in test_default_shapes.
SMALL = {
    "echo": {"n_train": 40, "n_val": 10},
    "damped_sine": {"n_train": 40, "n_val": 10},
    "addition": {"n_train": 40, "n_val": 10},
    "moving_square": {"n_train": 40, "n_val": 10},
}
ARRAYS = ("x_train", "y_train", "x_val", "y_val")


def _arrays(ds: Dataset):
  return [getattr(ds, name) for name in ARRAYS]


@pytest.mark.parametrize("name, x_shape, y_shape, n_val", [
    ("linear", (5, 1, 1), (5, 1), 5),
    ("echo", (1000, 5, 10), (1000, 10), 100),
    ("damped_sine", (1000, 50, 1), (1000, 5), 200),
    ("addition", (1000, 8, 12), (1000, 2, 12), 100),
    ("moving_square", (1000, 10, 100), (1000, 1), 200),
])
def test_default_shapes(name, x_shape, y_shape, n_val):
  ds = make(name)
  assert ds.x_train.shape == x_shape and ds.y_train.shape == y_shape
  assert ds.x_val.shape == (n_val,) + x_shape[1:] and ds.y_val.shape == (n_val,) + y_shape[1:]
  assert all(a.dtype == np.float32 for a in _arrays(ds))
  assert ds.name == name and ds.metadata["problem"] == name
  assert ds.task in ("regression", "binary", "categorical")
  assert {"loss", "output_activation", "metrics"} <= set(ds.metadata)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_same_seed_same_arrays_other_seed_other_arrays(name):
  a, b = make(name, seed=3, **SMALL[name]), make(name, seed=3, **SMALL[name])
  c = make(name, seed=4, **SMALL[name])
  for x, y in zip(_arrays(a), _arrays(b)):
    np.testing.assert_array_equal(x, y)
  assert a.fingerprint == b.fingerprint != c.fingerprint
  assert not np.array_equal(a.x_train, c.x_train)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_validation_set_does_not_depend_on_n_train(name):
  a = make(name, n_train=20, n_val=10)
  b = make(name, n_train=30, n_val=10)
  np.testing.assert_array_equal(a.x_val, b.x_val)
  np.testing.assert_array_equal(a.y_val, b.y_val)


def test_linear_exact_arrays():
  ds = make("linear")
  np.testing.assert_allclose(ds.x_train.ravel(), [0.0, 0.1, 0.2, 0.3, 0.4], atol=1e-7)
  np.testing.assert_allclose(ds.y_train.ravel(), [0.1, 0.2, 0.3, 0.4, 0.5], atol=1e-7)
  np.testing.assert_allclose(ds.x_val.ravel(), [0.5, 0.6, 0.7, 0.8, 0.9], atol=1e-7)
  np.testing.assert_allclose(ds.y_val.ravel(), [0.6, 0.7, 0.8, 0.9, 1.0], atol=1e-7)


@pytest.mark.parametrize("index", [0, 2, -1])
def test_echo_target_is_the_input_at_index(index):
  ds = make("echo", index=index, length=6, n_features=7, **SMALL["echo"])
  assert ds.x_train.shape == (40, 6, 7) and ds.y_train.shape == (40, 7)
  for x, y in ((ds.x_train, ds.y_train), (ds.x_val, ds.y_val)):
    np.testing.assert_array_equal(x.sum(-1), 1.0)  # exactly one-hot
    np.testing.assert_array_equal(y, x[:, index])
  assert ds.task == "categorical" and ds.metadata["loss"] == "categorical_crossentropy"
  # Every value turns up: the draw covers [0, n_features).
  assert set(np.unique(ds.x_train.argmax(-1))) == set(range(7))


def test_echo_rejects_index_out_of_range():
  with pytest.raises(ValueError, match=r"index must be an integer in \[-5, 4\]"):
    make("echo", index=5)


def test_damped_sine_matches_formula():
  ds = make("damped_sine", length=20, horizon=3, **SMALL["damped_sine"])
  assert ds.x_train.shape == (40, 20, 1) and ds.y_train.shape == (40, 3)
  meta = ds.metadata
  for k in (0, 17):
    p, d = meta["period_train"][k], meta["decay_train"][k]
    i = np.arange(23)
    wave = 0.5 + 0.5 * np.sin(2 * np.pi * i / p) * np.exp(-d * i)
    np.testing.assert_allclose(ds.x_train[k, :, 0], wave[:20], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ds.y_train[k], wave[20:], rtol=1e-6, atol=1e-7)
  periods = np.array(meta["period_train"] + meta["period_val"])
  decays = np.array(meta["decay_train"] + meta["decay_val"])
  assert np.all(periods == periods.astype(int)) and periods.min() >= 10 and periods.max() <= 20
  assert decays.min() >= 0.01 and decays.max() < 0.1
  assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
  assert meta["target_features"] == [0, 0, 0]


def test_addition_decodes_to_correct_sums():
  ds = make("addition", **SMALL["addition"])
  assert ds.metadata["alphabet"] == problems.ADDITION_ALPHABET == "0123456789+ "
  for x, y in ((ds.x_train, ds.y_train), (ds.x_val, ds.y_val)):
    np.testing.assert_array_equal(x.sum(-1), 1.0)
    questions, answers = problems.decode_addition(x), problems.decode_addition(y)
    for question, answer in zip(questions, answers):
      terms = [int(t) for t in question.split("+")]
      assert len(terms) == 3 and all(1 <= t <= 10 for t in terms)
      assert int(answer) == sum(terms)


def test_addition_padding_and_lengths():
  ds = make("addition", n_terms=2, largest=99, n_train=30, n_val=5)
  # in_len = 2 * 2 digits + 1 plus sign; out_len = digits of 198.
  assert ds.x_train.shape == (30, 5, 12) and ds.y_train.shape == (30, 3, 12)
  space = problems.ADDITION_ALPHABET.index(" ")
  codes = ds.x_train.argmax(-1)
  # Padding is on the left only: once a non-space appears, no space follows.
  for row in codes:
    first = np.argmax(row != space)
    assert np.all(row[first:] != space)


def test_decode_addition_rejects_wrong_shape():
  with pytest.raises(ValueError, match=r"expects \[samples, steps, 12\]"):
    problems.decode_addition(np.zeros((8, 12)))


@pytest.mark.parametrize("trail", [True, False])
def test_moving_square_frames_and_direction(trail):
  size = 6
  ds = make("moving_square", size=size, trail=trail, **SMALL["moving_square"])
  assert ds.x_train.shape == (40, size, size * size) and ds.y_train.shape == (40, 1)
  assert ds.metadata["frame_shape"] == (size, size) and ds.task == "binary"
  assert set(np.unique(ds.x_train)) <= {0.0, 1.0} and set(np.unique(ds.y_train)) == {0.0, 1.0}
  video = ds.x_train.reshape(40, size, size, size)  # [n, frame, row, col]
  lit = video.sum(axis=(2, 3))
  expected = np.arange(1, size + 1) if trail else np.ones(size)
  np.testing.assert_array_equal(lit, np.broadcast_to(expected, lit.shape))
  for sample, label in zip(video, ds.y_train[:, 0]):
    # The dot of frame t sits in column t (rightward, label 1) or size-1-t.
    new = sample - np.concatenate([np.zeros_like(sample[:1]), sample[:-1]]) if trail else sample
    positions = [np.argwhere(frame)[0] for frame in new]
    cols = np.array([c for _, c in positions])
    rows = np.array([r for r, _ in positions])
    expected_cols = np.arange(size) if label == 1 else size - 1 - np.arange(size)
    np.testing.assert_array_equal(cols, expected_cols)
    assert np.all(np.abs(np.diff(rows)) <= 1)


def test_make_errors_name_the_fix():
  with pytest.raises(ValueError, match="unknown problem 'echoo'.*Did you mean 'echo'"):
    make("echoo")
  with pytest.raises(ValueError, match="unknown option.*Did you mean 'n_train'"):
    make("echo", n_trian=3)
  with pytest.raises(ValueError, match=r"needs option\(s\) \['path'\]"):
    make("csv")
  with pytest.raises(ValueError, match="n_train must be an integer >= 1"):
    make("damped_sine", n_train=0)


# --------------------------------------------------------------------------- csv


def _write(tmp_path, text, name="series.csv"):
  path = tmp_path / name
  path.write_text(text)
  return path


def _series_csv(tmp_path, rows=20):
  lines = ["date,a,b"] + [f"2024-01-{d + 1:02d},{d},{100 + 10 * d}" for d in range(rows)]
  return _write(tmp_path, "\n".join(lines) + "\n")


def test_csv_univariate_windows(tmp_path):
  path = _series_csv(tmp_path, rows=20)
  ds = make("csv", path=path, column="a", n_in=3, n_out=2, val_fraction=0.25)
  # 15 training rows -> 15 - 3 - 2 + 1 windows; 5 validation rows -> 1 window.
  assert ds.x_train.shape == (11, 3, 1) and ds.y_train.shape == (11, 2)
  assert ds.x_val.shape == (1, 3, 1) and ds.y_val.shape == (1, 2)
  np.testing.assert_array_equal(ds.x_train[0, :, 0], [0, 1, 2])
  np.testing.assert_array_equal(ds.y_train[0], [3, 4])
  np.testing.assert_array_equal(ds.y_train[-1], [13, 14])  # never reaches into validation rows
  np.testing.assert_array_equal(ds.x_val[0, :, 0], [15, 16, 17])
  np.testing.assert_array_equal(ds.y_val[0], [18, 19])
  assert ds.metadata["rows_train"] == 15 and ds.metadata["rows_val"] == 5


def test_csv_multivariate_target_and_dates(tmp_path):
  lines = ["date,a,b", "2024-01-03,2,120", "2024-01-01,0,100", "2024-01-02,1,110"]
  lines += [f"2024-01-{d + 1:02d},{d},{100 + 10 * d}" for d in range(3, 12)]
  path = _write(tmp_path, "\n".join(lines) + "\n")
  ds = make("csv", path=str(path), columns=["a", "b"], target="b", date_column="date",
            n_in=2, n_out=2, val_fraction=0.5)
  # Rows are sorted by date, so the series is 0..11 again.
  assert ds.x_train.shape == (3, 2, 2) and ds.y_train.shape == (3, 2)
  np.testing.assert_array_equal(ds.x_train[0], [[0, 100], [1, 110]])
  np.testing.assert_array_equal(ds.y_train[0], [120, 130])
  assert ds.metadata["target_features"] == [1, 1]
  assert ds.metadata["split_date"].startswith("2024-01-07")


def test_csv_default_columns_and_no_validation(tmp_path):
  path = _series_csv(tmp_path, rows=6)
  ds = make("csv", path=path, date_column="date", n_in=2, val_fraction=0)
  assert ds.x_train.shape == (4, 2, 2) and ds.y_train.shape == (4, 2)
  assert ds.x_val.shape == (0, 2, 2) and ds.y_val.shape == (0, 2)
  np.testing.assert_array_equal(ds.y_train[0], [2, 120])


def test_csv_missing_file(tmp_path):
  with pytest.raises(ValueError, match="does not exist"):
    make("csv", path=tmp_path / "nope.csv", column="a")


def test_csv_missing_column_suggests(tmp_path):
  path = _series_csv(tmp_path)
  with pytest.raises(ValueError, match=r"no column 'aa'; its columns are \['date', 'a', 'b'\]\. Did you mean 'a'\?"):
    make("csv", path=path, column="aa")


def test_csv_non_numeric_value_names_row(tmp_path):
  path = _write(tmp_path, "a,b\n1,2\n3,oops\n5,6\n")
  with pytest.raises(ValueError, match=r"column 'b' holds a non-numeric value 'oops' in data row 2"):
    make("csv", path=path, columns=["a", "b"])
  # Without date_column the date strings are data too, and the message says so.
  path = _series_csv(tmp_path)
  with pytest.raises(ValueError, match="column 'date' holds a non-numeric value '2024-01-01' in data row 1"):
    make("csv", path=path)


def test_csv_missing_value_names_row(tmp_path):
  path = _write(tmp_path, "a,b\n1,1\n2,2\n,3\n4,4\n")
  with pytest.raises(ValueError, match=r"column 'a' has a gap .* in data row 3 .*1 gap\(s\) in all\); "
                     r"fill gaps with --set data.options.fill=interpolate"):
    make("csv", path=path, column="a")


def test_csv_infinite_value_is_refused_even_with_fill(tmp_path):
  path = _write(tmp_path, "a\n1\n2\ninf\n4\n")
  with pytest.raises(ValueError, match="column 'a' holds an infinite value in data row 3"):
    make("csv", path=path, column="a", fill="interpolate")


# ------------------------------------------------------------------ csv gaps (fill)
# reliability.md §5: bad data is refused with the field, value and fix, never trained on silently.


def test_csv_blank_value_in_a_one_column_file_is_a_gap(tmp_path):
  # pandas skips blank lines by default, which silently dropped this week.
  path = _write(tmp_path, "co2\n1\n2\n\n4\n5\n6\n\n\n")
  with pytest.raises(ValueError, match=r"column 'co2' has a gap .* in data row 3 .*--set data.options.fill="
                                       r"interpolate"):
    make("csv", path=path, column="co2", val_fraction=0)
  ds = make("csv", path=path, column="co2", val_fraction=0, fill="interpolate")
  # The blank lines after the last row are not rows.
  assert ds.metadata["rows"] == 6
  np.testing.assert_array_equal(ds.x_train[:, 0, 0], [1, 2, 3, 4, 5])
  assert ds.metadata["fill"] == "interpolate"
  assert ds.metadata["gaps"] == {"co2": 1} and ds.metadata["filled"] == {"co2": 1}
  assert ds.metadata["dropped_rows"] == 0


def test_csv_no_gaps_metadata(tmp_path):
  ds = make("csv", path=_series_csv(tmp_path, rows=8), column="a", val_fraction=0)
  assert ds.metadata["fill"] is None and ds.metadata["gaps"] == {} and ds.metadata["filled"] == {}


def test_csv_interpolate_is_linear_in_row_order_per_column(tmp_path):
  path = _write(tmp_path, "a,b\n0,10\n,NA\n,30\n3,\n4,50\n5,60\n")
  ds = make("csv", path=path, columns=["a", "b"], n_in=5, val_fraction=0, fill="interpolate")
  np.testing.assert_allclose(ds.x_train[0], [[0, 10], [1, 20], [2, 30], [3, 40], [4, 50]])
  np.testing.assert_allclose(ds.y_train[0], [5, 60])
  assert ds.metadata["filled"] == {"a": 2, "b": 2}


def test_csv_interpolate_in_date_order(tmp_path):
  # Rows out of order; the gap (2024-01-03) lies between 2 and 4 in date order.
  lines = ["date,a", "2024-01-04,4", "2024-01-01,1", "2024-01-03,", "2024-01-02,2", "2024-01-05,5"]
  path = _write(tmp_path, "\n".join(lines) + "\n")
  ds = make("csv", path=path, column="a", date_column="date", n_in=4, val_fraction=0, fill="interpolate")
  np.testing.assert_allclose(ds.x_train[0, :, 0], [1, 2, 3, 4])


def test_csv_ffill_carries_the_last_value(tmp_path):
  path = _write(tmp_path, "a\n1\n\n\n4\n5\n")
  ds = make("csv", path=path, column="a", n_in=4, val_fraction=0, fill="ffill")
  np.testing.assert_array_equal(ds.x_train[0, :, 0], [1, 1, 1, 4])
  assert ds.metadata["filled"] == {"a": 2}


@pytest.mark.parametrize("fill", ["interpolate", "ffill"])
def test_csv_leading_gap_cannot_be_filled(tmp_path, fill):
  path = _write(tmp_path, "a,b\n1,\n2,2\n3,3\n4,4\n")
  with pytest.raises(ValueError, match=rf"column 'b' starts with a gap \(data row 1\), which fill='{fill}' "
                                       r"cannot fill.*fill = 'drop'"):
    make("csv", path=path, val_fraction=0, fill=fill)


def test_csv_interpolate_needs_a_later_value(tmp_path):
  # A gap that ends the series (in a one-column file a trailing blank line is
  # an end-of-file artefact, so the gap sits in a second column).
  with pytest.raises(ValueError, match=r"column 'b' has a gap in data row 4 with no later value to interpolate to \(it ends"):
    make("csv", path=_write(tmp_path, "a,b\n1,1\n2,2\n3,3\n4,\n", "end.csv"), val_fraction=0,
         fill="interpolate")
  # 9 rows, val_fraction 0.5: floor(4.5) = 4 training rows 1, 2, 3, gap.
  path = _write(tmp_path, "a\n1\n2\n3\n\n5\n6\n7\n8\n9\n")
  with pytest.raises(ValueError, match=r"data row 4 with no later training value to interpolate to "
                                       r"\(validation values never fill training rows\)"):
    make("csv", path=path, column="a", val_fraction=0.5, fill="interpolate")
  # ffill only looks back, so it may fill that row.
  ds = make("csv", path=path, column="a", val_fraction=0.5, fill="ffill")
  np.testing.assert_array_equal(ds.x_train[-1, :, 0], [3])
  np.testing.assert_array_equal(ds.y_train[-1], [3])


def test_csv_interpolate_validation_gap_leans_on_training_rows(tmp_path):
  path = _write(tmp_path, "a\n1\n2\n3\n4\n\n6\n7\n8\n")
  ds = make("csv", path=path, column="a", n_in=1, val_fraction=0.5, fill="interpolate")
  np.testing.assert_array_equal(ds.x_train[:, 0, 0], [1, 2, 3])
  np.testing.assert_array_equal(ds.x_val[:, 0, 0], [5, 6, 7])


def test_csv_drop_never_windows_across_a_dropped_row(tmp_path):
  # 12 rows, row 4 (value 3) empty in b; 8 training rows, 4 validation rows.
  lines = ["a,b"] + [f"{i},{'' if i == 3 else 10 * i}" for i in range(12)]
  path = _write(tmp_path, "\n".join(lines) + "\n")
  ds = make("csv", path=path, n_in=2, n_out=1, val_fraction=1 / 3, fill="drop")
  # Training rows 0..7 minus 3: runs 0..2 (one window) and 4..7 (two windows).
  np.testing.assert_array_equal(ds.x_train[:, :, 0], [[0, 1], [4, 5], [5, 6]])
  np.testing.assert_array_equal(ds.y_train, [[2, 20], [6, 60], [7, 70]])
  np.testing.assert_array_equal(ds.x_val[:, 0, 0], [8, 9])
  assert ds.metadata["rows_train"] == 8 and ds.metadata["dropped_rows"] == 1
  assert ds.metadata["gaps"] == {"b": 1} and ds.metadata["filled"] == {}


def test_csv_drop_removes_rows_without_a_date(tmp_path):
  lines = ["date,a", "2024-01-01,1", ",99", "2024-01-02,2", "2024-01-03,3", "2024-01-04,4"]
  path = _write(tmp_path, "\n".join(lines) + "\n")
  with pytest.raises(ValueError, match=r"date column 'date' is empty in data row 2 .*fill=drop"):
    make("csv", path=path, column="a", date_column="date", val_fraction=0, fill="interpolate")
  ds = make("csv", path=path, column="a", date_column="date", n_in=3, val_fraction=0, fill="drop")
  np.testing.assert_array_equal(ds.x_train[0, :, 0], [1, 2, 3])  # no hole: the dateless row has no time
  assert ds.metadata["dropped_rows"] == 1 and ds.metadata["gaps"] == {"date": 1}


def test_csv_drop_that_leaves_no_window_says_so(tmp_path):
  path = _write(tmp_path, "a\n1\n\n3\n\n5\n6\n")
  with pytest.raises(ValueError, match=r"after dropping the rows with gaps, the training rows hold no 3 "
                                       r"consecutive complete rows"):
    make("csv", path=path, column="a", n_in=2, val_fraction=0, fill="drop")


def test_csv_bad_fill_value(tmp_path):
  with pytest.raises(ValueError, match=r"fill must be one of 'interpolate', 'ffill', 'drop'.*got 'interp'\. "
                                       r"Did you mean 'interpolate'\?"):
    make("csv", path=_series_csv(tmp_path), column="a", fill="interp")


def test_csv_unreadable_file(tmp_path):
  path = _write(tmp_path, "a\n1\n2,3,4\n")
  with pytest.raises(ValueError, match="cannot read CSV file"):
    make("csv", path=path, column="a")


def test_csv_too_short_says_rows_needed(tmp_path):
  path = _series_csv(tmp_path, rows=10)
  # Each part needs 6 rows; with a 20 % hold-out that takes 26 rows (floor(20.8) = 20 train + 6 val).
  with pytest.raises(ValueError, match="has 10 rows, too short.*needs at least 26 rows"):
    make("csv", path=path, column="a", n_in=5, n_out=1, val_fraction=0.2)
  ok = make("csv", path=_series_csv(tmp_path, rows=26), column="a", n_in=5, n_out=1, val_fraction=0.2)
  assert ok.x_val.shape == (1, 5, 1)


def test_csv_target_must_be_an_input(tmp_path):
  path = _series_csv(tmp_path)
  with pytest.raises(ValueError, match="target 'b' is not among the input columns"):
    make("csv", path=path, column="a", target="b")


def test_csv_then_prepare_round_trips_to_original_units(tmp_path):
  ds = make("csv", path=_series_csv(tmp_path, rows=20), column="b", n_in=3, val_fraction=0.25)
  scaled = prep.prepare(ds, "minmax")
  # Inputs and targets share one scale (the target is the input series).
  assert scaled.x_train.min() == 0.0 and scaled.y_train.max() == 1.0
  np.testing.assert_allclose(scaled.x_train[1:, -1, 0], scaled.y_train[:-1, 0])
  np.testing.assert_allclose(prep.to_original_units(scaled, scaled.y_val), ds.y_val, rtol=1e-6)
  # Fitted on the 15 training rows (max 240), not on validation (up to 290).
  np.testing.assert_array_equal(scaled.metadata["target_scaler"].data_max, [240.0])
  assert scaled.y_val.max() > 1.0
