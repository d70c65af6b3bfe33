"""Bad problem options end the CLI with one clear line naming data.options.<name>, never a traceback.

reliability.md §5 ("Validate ... before compiling", naming the field and value); every
generator checks types, finiteness and ranges of its options, and `data.resolve`
turns anything a generator raises into a `ConfigError`.
"""
import re

import pytest

from jaxlstm import data, problems, sweep
from jaxlstm.config import Config, ConfigError

CASES = [
    ("linear", "data.options.n_train=5", r"problem 'linear' got unknown option\(s\) \['n_train'\]"),
    ("echo", "data.options.index=9", r"problem 'echo': data\.options\.index must be an integer in \[-5, 4\]"),
    ("echo", "data.options.n_features=1", r"data\.options\.n_features must be an integer >= 2, got 1\."),
    ("echo", "data.options.n_train=2.5", r"data\.options\.n_train must be an integer >= 1, got 2\.5\."),
    ("echo", "data.options.n_train=100000000", r"would make x of shape \(100000000, 5, 10\).*lower them"),
    ("echo", "data.options.seed=-1", r"data\.options\.seed must be an integer >= 0, got -1\."),
    ("damped_sine", "data.options.decay=[0, Infinity]",
     r"data\.options\.decay = \[0, inf\] is not allowed: expected finite numbers \(no NaN or Infinity\)"),
    ("damped_sine", "data.options.period=[1, 1e999]", r"data\.options\.period = \[1, inf\] is not allowed"),
    ("damped_sine", "data.options.amplitude=NaN", r"data\.options\.amplitude = nan is not allowed"),
    ("damped_sine", "data.options.decay=[0.1, 0.01]",
     r"data\.options\.decay must be \(low, high\) with 0 <= low <= high, got \[0\.1, 0\.01\]"),
    ("damped_sine", "data.options.decay=[-1, 0.01]", r"data\.options\.decay must be a finite number >= 0, got -1"),
    ("damped_sine", "data.options.decay=0.1", r"data\.options\.decay must be a pair \[low, high\], got 0\.1"),
    ("damped_sine", "data.options.period=[0, 3]", r"data\.options\.period must be an integer in \[1, 1000000000\]"),
    ("damped_sine", "data.options.offset=abc", r"data\.options\.offset must be a finite number in .*got 'abc'"),
    ("damped_sine", "data.options.amplitude=1e300", r"data\.options\.amplitude must be a finite number in"),
    ("addition", "data.options.largest=0", r"data\.options\.largest must be an integer in \[1, 1000000000000\]"),
    ("addition", "data.options.largest=10000000000000", r"data\.options\.largest must be an integer in"),
    ("addition", "data.options.n_terms=0", r"data\.options\.n_terms must be an integer >= 1, got 0\."),
    ("moving_square", "data.options.size=1", r"data\.options\.size must be an integer >= 2, got 1\."),
    ("moving_square", "data.options.trail=yes", r"data\.options\.trail must be True or False, got 'yes'"),
    ("moving_square", "data.options.size=200", r"would make the videos of shape \(1000, 200, 200, 200\)"),
]


def _one_line_refusal(capsys, tmp_path, argv):
  out = tmp_path / "run"
  code = sweep.main([*argv, "--repeats", "2", "--out", str(out), "--dry-run"])
  captured = capsys.readouterr()
  lines = captured.err.strip().splitlines()
  assert code == 2, captured
  assert "Traceback" not in captured.out + captured.err
  assert len(lines) == 1 and lines[0].startswith("jaxlstm.sweep: error: "), lines
  assert not out.exists()
  return lines[0]


@pytest.mark.parametrize("problem, assignment, message", CASES, ids=[f"{c[0]}:{c[1]}" for c in CASES])
def test_bad_option_is_one_line_through_the_cli(capsys, tmp_path, problem, assignment, message):
  line = _one_line_refusal(capsys, tmp_path, ["--set", f"data.problem={problem}", "--set", assignment])
  assert re.search(message, line), line


@pytest.mark.parametrize("assignment, message", [
    ("data.options.n_in=0", r"data\.options\.n_in must be an integer >= 1, got 0\."),
    ("data.options.val_fraction=1.5", r"data\.options\.val_fraction must be a number in \[0, 1\), got 1\.5"),
    ("data.options.fill=3", r"data\.options\.fill must be one of 'interpolate', 'ffill', 'drop'"),
    ("data.options.column=5", r"data\.options\.column must be a column name \(a string\), got 5\."),
    ("data.options.path=[1]", r"data\.options\.path must be the name of a CSV file, got \[1\]"),
    ("data.options.n_out=Infinity", r"data\.options\.n_out = inf is not allowed"),
])
def test_bad_csv_option_is_one_line_through_the_cli(capsys, tmp_path, assignment, message):
  path = tmp_path / "series.csv"
  path.write_text("a\n" + "\n".join(str(i) for i in range(60)) + "\n")
  line = _one_line_refusal(capsys, tmp_path, ["--data", str(path), "--set", assignment])
  assert re.search(message, line), line


def test_generators_raise_option_errors_naming_the_option():
  with pytest.raises(problems.OptionError, match=r"^decay must be a finite number >= 0") as info:
    problems.make("damped_sine", decay=(0.0, float("inf")))
  assert info.value.option == "decay"
  with pytest.raises(problems.OptionError) as info:
    problems.make("echo", index=7)
  assert info.value.option == "index"


def test_resolve_turns_any_generator_failure_into_one_config_error(monkeypatch):
  def broken(**options):
    raise OverflowError("high - low range exceeds valid bounds\nsecond line")

  monkeypatch.setitem(problems.PROBLEMS, "echo", broken)
  config = Config().override({"data.problem": "echo"})
  with pytest.raises(ConfigError, match=r"^data\.options for problem 'echo': OverflowError: high - low"):
    data.resolve(config)
