"""A CSV series straight through the CLI (`--data FILE --column NAME`), and malformed CSVs."""
import csv
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
])
def test_malformed_csv_exits_2_with_one_clear_line(tmp_path, capsys, edit, args, message):
  data = write_series(tmp_path / "series.csv")
  if edit == "text":
    rows = list(csv.reader(open(data)))
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
