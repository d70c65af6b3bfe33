"""A CSV series straight through the CLI (`--data FILE --column NAME`), and malformed CSVs."""
import csv
import json
import re

import numpy as np
import pandas as pd
import pytest

from jaxlstm import sweep


def write_series(path, rows=120):
  t = np.arange(rows)
  frame = pd.DataFrame({"date": pd.date_range("2021-01-01", periods=rows).strftime("%Y-%m-%d"),
                        "temp": np.sin(t / 8.0) + 0.01 * t, "rain": np.cos(t / 5.0)})
  frame.to_csv(path, index=False)
  return path


def test_csv_through_the_cli_end_to_end(tmp_path):
  data = write_series(tmp_path / "series.csv")
  out = tmp_path / "run"
  code = sweep.main(["--data", str(data), "--column", "temp", "--date-column", "date",
                     "--set", "data.options.n_in=6", "--repeats", "2", "--epochs", "2",
                     "--out", str(out), "--quiet"])
  assert code == 0
  scores = pd.read_csv(out / "scores.csv")
  assert len(scores) == 2 and np.isfinite(scores["final_val_loss"]).all()
  assert "final_val_mae" in scores.columns


@pytest.mark.parametrize("edit,args,message", [
    (None, ["--column", "tmp"], "Did you mean 'temp'"),
    ("text", ["--column", "temp"], "non-numeric|not a number|numeric"),
    (None, ["--column", "temp", "--set", "data.options.n_in=500"], "too short"),
    ("missing", ["--column", "temp"], "no such file"),
    ("date", ["--column", "temp", "--date-column", "date"], "date column 'date' holds 'someday', not a date, in data row 1"),
    ("semicolons", [], "column 'date;temp;rain' .* seems separated by ';', and jaxlstm reads commas"),
])
@pytest.mark.filterwarnings("error::UserWarning")  # one line: no warning of pandas' printed beside it
def test_malformed_csv_exits_2_with_one_clear_line(tmp_path, capsys, edit, args, message):
  data = write_series(tmp_path / "series.csv")
  if edit == "semicolons":
    pd.read_csv(data).to_csv(data, index=False, sep=";")
  if edit == "date":
    frame = pd.read_csv(data)
    frame.loc[0, "date"] = "someday"  # first: pandas then cannot infer the format, and warns
    frame.to_csv(data, index=False)
  if edit == "text":
    with open(data, newline="") as f:
      rows = list(csv.reader(f))
    rows[5][1] = "n/a?"
    with open(data, "w", newline="") as f:
      csv.writer(f).writerows(rows)
  if edit == "missing":
    data = tmp_path / "absent.csv"
  out = tmp_path / "run"
  code = sweep.main(["--data", str(data), *args, "--repeats", "2", "--epochs", "2", "--out", str(out)])
  err = capsys.readouterr().err.strip().splitlines()
  assert code == 2
  assert len(err) == 1 and err[0].startswith("jaxlstm.sweep: error:")
  assert re.search(message, err[0]), err[0]
  assert not out.exists()


def test_a_constant_series_trains_and_gets_its_report(tmp_path):
  # Predicting the training mean is exact here, so the diagnosis has no capacity reference
  # (a recorded train_mean_loss of 0) and uses its relative rule instead of failing.
  data = tmp_path / "flat.csv"
  pd.DataFrame({"level": np.full(80, 3.5)}).to_csv(data, index=False)
  out = tmp_path / "run"
  assert sweep.main(["--data", str(data), "--set", "data.options.n_in=6", "--repeats", "2", "--epochs", "2",
                     "--out", str(out), "--quiet", "--plots", "wait"]) == 0
  manifest = json.loads((out / "manifest.json").read_text())
  assert [b["train_mean_loss"] for b in manifest["baselines"].values()] == [0.0]
  assert len(pd.read_csv(out / "diagnosis.csv")) == 2 and (out / "report.md").exists()


def write_weekly_co2(path, weeks=150, blanks=(10, 11, 57, 103)):
  """A weekly CO2-like series (trend + yearly cycle) with a few weeks left blank, as real records have."""
  dates = pd.date_range("2015-01-04", periods=weeks, freq="W")
  t = np.arange(weeks)
  ppm = 400 + 0.04 * t + 3 * np.sin(2 * np.pi * t / 52.18)
  lines = ["date,co2"] + [f"{d:%Y-%m-%d},{'' if i in blanks else f'{v:.2f}'}"
                          for i, (d, v) in enumerate(zip(dates, ppm))]
  path.write_text("\n".join(lines) + "\n")
  return path


def test_csv_gaps_are_refused_with_the_fill_fix(tmp_path, capsys):
  data = write_weekly_co2(tmp_path / "co2.csv")
  out = tmp_path / "run"
  code = sweep.main(["--data", str(data), "--column", "co2", "--date-column", "date", "--repeats", "2",
                     "--epochs", "2", "--out", str(out)])
  err = capsys.readouterr().err.strip().splitlines()
  assert code == 2 and len(err) == 1 and not out.exists()
  assert "co2.csv" in err[0] and "column 'co2' has a gap" in err[0] and "data row 11" in err[0]
  assert "4 gap(s) in all" in err[0] and "--set data.options.fill=interpolate" in err[0]


def test_csv_with_gaps_trains_with_fill_interpolate(tmp_path):
  from jaxlstm import problems
  data = write_weekly_co2(tmp_path / "co2.csv")
  out = tmp_path / "run"
  code = sweep.main(["--data", str(data), "--column", "co2", "--date-column", "date",
                     "--set", "data.options.fill=interpolate", "--repeats", "2", "--epochs", "2",
                     "--out", str(out), "--quiet"])
  assert code == 0
  scores = pd.read_csv(out / "scores.csv")
  assert len(scores) == 2 and np.isfinite(scores["final_val_loss"]).all()
  ds = problems.make("csv", path=str(data), column="co2", date_column="date", n_in=10, fill="interpolate")
  assert ds.metadata["gaps"] == {"co2": 4} and ds.metadata["filled"] == {"co2": 4}
  assert np.isfinite(ds.x_train).all() and ds.metadata["rows"] == 150
  # Recorded in the manifest and stated in the report.
  notes = json.loads((out / "manifest.json").read_text())["data_notes"]
  assert list(notes.values()) == [{"fill": "interpolate", "gaps": {"co2": 4}, "filled": {"co2": 4},
                                   "dropped_rows": 0}]
  assert "- data: 4 gap(s) (co2: 4) filled by linear interpolation" in (out / "report.md").read_text()


@pytest.mark.parametrize("value, message", [
    ("interp", r"fill must be one of 'interpolate', 'ffill', 'drop'.*Did you mean 'interpolate'"),
    ("ffill", r"column 'co2' starts with a gap \(data row 1\)"),
])
def test_csv_fill_errors_are_one_line(tmp_path, capsys, value, message):
  data = write_weekly_co2(tmp_path / "co2.csv", blanks=(0, 5))
  out = tmp_path / "run"
  code = sweep.main(["--data", str(data), "--column", "co2", "--set", f"data.options.fill={value}",
                     "--repeats", "2", "--epochs", "2", "--out", str(out), "--dry-run"])
  err = capsys.readouterr().err.strip().splitlines()
  assert code == 2 and len(err) == 1 and re.search(message, err[0]), err
  assert not out.exists()
