"""Search spaces on the command line (--space / [space] / get_space(), --random from a space), --search
and --race into a results folder, and their bad input.

Building studies needs no jax and no training; the search and race runs train tiny models
(two to six repeats, a few epochs) in process, sharing its compiled programs, except where a
real process is the point (kill -9).
"""
import contextlib
import importlib.util
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from jaxlstm import study as study_lib
from jaxlstm import sweep
from jaxlstm.store import load_run

LR = "optim.learning_rate=loguniform:1e-4:1e-1"


pytestmark = pytest.mark.usefixtures("restore_cache_flags")  # sweep.main sets jax's cache flags
# A search runs Optuna (the `search` extra); its bad-input checks and the races do not need it.
needs_optuna = pytest.mark.skipif(importlib.util.find_spec("optuna") is None,
                                  reason='optuna is not installed (pip install -e ".[search]")')
CELLS = "model.cells=int:1:16:log"


def make(*args):
  return study_lib.make_study(sweep.build_parser().parse_args(list(args)))


def run_main(*args):
  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    status = sweep.main(list(args))
  return status, out.getvalue(), err.getvalue()


# ---------------------------------------------------------------------------
# --random from a space.


def test_random_from_a_space_is_reproducible_prefix_stable_and_in_bounds():
  four = make("--space", LR, "--space", CELLS, "--random", "4", "--seed", "7")
  again = make("--space", LR, "--space", CELLS, "--random", "4", "--seed", "7")
  ten = make("--space", LR, "--space", CELLS, "--random", "10", "--seed", "7")
  other = make("--space", LR, "--space", CELLS, "--random", "4", "--seed", "8")
  ids = [c.config_id for c in four.configs]
  assert ids == [c.config_id for c in again.configs]
  assert [c.config_id for c in ten.configs][:4] == ids
  assert ids != [c.config_id for c in other.configs]
  rates = [c.optim.learning_rate for c in ten.configs]
  assert all(1e-4 <= r < 1e-1 for r in rates) and len(set(rates)) == 10  # continuous, not grid points
  assert all(1 <= c.model.cells <= 16 for c in ten.configs)
  # The default study's grid over model.cells gave way to the space that searches it.
  assert list(four.grid) == ["optim.learning_rate", "model.cells"] and four.random == 4
  assert four.spec()["space"]["dimensions"][0]["name"] == "optim.learning_rate"
  # Through the command line: the dry run lists the same configs.
  status, out, err = run_main("--space", LR, "--space", CELLS, "--random", "4", "--seed", "7", "--dry-run")
  assert status == 0, err
  assert [line.split()[2] for line in out.splitlines() if line.startswith("  config ")] == ids
  assert "4 drawn at random from the space" in out


def test_a_grid_with_several_values_is_crossed_with_every_draw():
  study = make("--space", LR, "--grid", "model.cells=2,4", "--random", "3")
  assert len(study.configs) == 6
  assert [c.model.cells for c in study.configs] == [2, 4] * 3
  assert len({c.optim.learning_rate for c in study.configs}) == 3


def test_set_fixes_a_field_and_a_one_value_grid_stays_fixed():
  study = make("--space", LR, "--set", "model.cells=3", "--grid", "train.batch_size=2", "--random", "2")
  assert [c.model.cells for c in study.configs] == [3, 3]
  assert [c.train.batch_size for c in study.configs] == [2, 2]


def test_without_a_space_random_keeps_its_grid_behaviour():
  study = make("--grid", "model.cells=1,2,3,4", "--random", "2", "--seed", "0")
  assert study.space is None and "space" not in study.spec()
  assert set(study.grid) == {"model.cells"} and len(study.configs) == 2


def test_a_space_table_in_a_config_file(tmp_path):
  path = tmp_path / "study.toml"
  path.write_text(textwrap.dedent("""
      [train]
      epochs = 3
      [space]
      "optim.learning_rate" = "loguniform:1e-4:1e-1"
      [space.model]
      cells = {type = "int", low = 1, high = 8}
  """))
  study = make("--config", str(path), "--random", "3")
  assert study.space.names == ("optim.learning_rate", "model.cells") and len(study.configs) == 3


def test_an_experiment_module_may_define_get_space(tmp_path):
  path = tmp_path / "mine.py"
  path.write_text(textwrap.dedent("""
      from jaxlstm.config import Config
      from jaxlstm.space import loguniform
      def get_config():
        return Config().override({"train.epochs": 3})
      def get_grid():
        return {}
      def get_space():
        return {"optim.learning_rate": loguniform(1e-3, 1e-1)}
  """))
  study = make("--experiment", str(path), "--random", "2", "--space", "model.cells=int:1:4")
  assert study.space.names == ("optim.learning_rate", "model.cells")


# ---------------------------------------------------------------------------
# Bad input: one line, exit status 2, before anything is built.


@pytest.mark.parametrize("args, message", [
    (["--space", "optim.learning_rate=loguniform:1e-4", "--random", "2"], "expected loguniform:LOW:HIGH"),
    (["--space", "optim.learning_rate=uniform:0.1:0.01", "--random", "2"], "the range is empty"),
    (["--space", "optim.learning_rate=loguniform:0:0.1", "--random", "2"], "needs low > 0"),
    (["--space", "model.cells=int:1:8", "--grid", "model.cells=1,2", "--random", "2"],
     "model.cells is given both in --space and --grid"),
    (["--space", "model.cells=int:1:8", "--set", "model.cells=2", "--random", "2"],
     "model.cells is given both in --space and --set"),
    (["--space", LR], "needs --random N"),
    (["--search", "tpe"], "needs a search space"),
    (["--search", "tpe", "--space", LR, "--trials", "0"], "--trials: expected a positive integer"),
    (["--search", "tpe", "--space", LR, "--random", "3"], "keep one"),
    (["--space", "optim.momentum=uniform:0:1.5", "--random", "2"], "narrow the space"),
])
def test_bad_space_input_is_one_line_and_exit_2(tmp_path, args, message):
  status, out, err = run_main(*args, "--out", str(tmp_path / "out"), "--repeats", "2")
  assert status == 2 and out == ""
  assert err.count("\n") == 1 and message in err, err
  assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------
# --search into a results folder.

TINY = ["--set", "model.cells=4", "--epochs", "5", "--repeats", "2", "--plots", "wait", "--quiet"]


@needs_optuna
def test_tpe_search_writes_the_folder_reuses_the_program_and_resumes(tmp_path):
  out = tmp_path / "run"
  args = ["--search", "tpe", "--trials", "8", "--batch", "4", "--space", LR, *TINY, "--out", str(out)]
  status, stdout, err = run_main(*args)
  assert status == 0, err
  assert "best trial" in stdout and "optuna-dashboard sqlite:///" in stdout
  assert (out / "optuna.db").is_file()
  trials = pd.read_csv(out / "trials.csv", dtype={"configs": str})
  assert len(trials) == 8 and (trials["state"] == "COMPLETE").all() and (trials["repeats"] == 2).all()
  manifest = json.loads((out / "manifest.json").read_text())
  ids = manifest["study"]["configs"]
  assert sorted(ids) == sorted(trials["configs"]) and len(set(ids)) == 8
  assert all(manifest["configs"][c]["status"] == "done" for c in ids)
  groups = manifest["groups"]  # one group per batch; the second batch compiles nothing
  assert [len(g["configs"]) for g in groups] == [4, 4]
  assert groups[0]["compiles"] <= 1 and groups[1]["compiles"] == 0
  report = (out / "report.md").read_text()
  assert "## Search" in report and "plots/search_progress.png" in report and "Best trial:" in report
  assert (out / "plots" / "search_progress.png").is_file() and (out / "plots" / "search_params.png").is_file()

  before = (out / "trials.csv").read_bytes(), len(manifest["sessions"])
  status, _, err = run_main(*args)  # the same command again: nothing to train
  manifest = json.loads((out / "manifest.json").read_text())
  assert status == 0 and ((out / "trials.csv").read_bytes(), len(manifest["sessions"])) == before

  status, stdout, err = run_main(*[a.replace("1e-4", "1e-3") for a in args])  # another space, same folder
  assert status == 2 and stdout == "" and err.count("\n") == 1
  assert "holds a different study: space (optim.learning_rate=loguniform:0.0001:0.1 in the folder" in err


@pytest.mark.parametrize("args, message", [
    (["--search", "grid", "--space", LR], "--grid-points"),
    (["--search", "tpe", "--space", LR, "--grid-points", "3"], "--grid-points goes with --search grid"),
    (["--search", "tpe", "--space", LR, "--objective", "ucb", "--repeats", "1"], "needs at least 2 repeats"),
    (["--search", "tpe", "--space", LR, "--objective", "best"], "argument --objective: invalid choice"),
])
@pytest.mark.parametrize("without_optuna", [False, True])
def test_bad_search_input_is_one_line_and_exit_2(tmp_path, monkeypatch, args, message, without_optuna):
  if without_optuna:  # a wrong command is named as such whichever extras are installed
    monkeypatch.setitem(sys.modules, "optuna", None)
  status, out, err = run_main(*args, "--out", str(tmp_path / "out"))
  assert status == 2 and out == "" and err.count("\n") == 1 and message in err, err
  assert not (tmp_path / "out").exists()


def test_search_without_optuna_names_the_extra(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "optuna", None)  # what an environment without the extra sees
  status, out, err = run_main("--search", "tpe", "--space", LR, "--out", str(tmp_path / "out"))
  assert status == 2 and err.count("\n") == 1 and 'pip install -e ".[search]"' in err
  assert not (tmp_path / "out").exists()


@pytest.mark.slow  # two processes, two compiles: 20-40 s on the 2-core CPU
@needs_optuna
def test_kill_9_mid_search_then_rerun_trains_no_trial_twice(tmp_path):
  out = tmp_path / "run"
  args = [sys.executable, "-m", "jaxlstm.sweep", "--search", "random", "--trials", "8", "--batch", "2",
          "--space", LR, *TINY, "--out", str(out)]
  env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1]))
  proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  deadline = time.monotonic() + 180
  while not (out / "trials.csv").is_file() and proc.poll() is None and time.monotonic() < deadline:
    time.sleep(0.02)  # trials.csv appears once the first batch is told
  proc.send_signal(signal.SIGKILL)
  proc.communicate(timeout=60)
  assert proc.returncode == -signal.SIGKILL
  killed = pd.read_csv(out / "trials.csv")
  assert 2 <= (killed["state"] == "COMPLETE").sum() < 8

  rerun = subprocess.run(args, env=env, capture_output=True, text=True, timeout=240)
  assert rerun.returncode == 0, rerun.stderr[-2000:]
  trials = pd.read_csv(out / "trials.csv", dtype={"configs": str})
  complete = trials[trials["state"] == "COMPLETE"]
  assert len(complete) == 8 and complete["objective"].notna().all()
  # A trial killed between its creation and its params never trained: Optuna holds it as FAIL.
  assert (trials["state"] != "COMPLETE").sum() <= 1 and trials.loc[trials["state"] != "COMPLETE", "repeats"].isna().all()
  manifest = json.loads((out / "manifest.json").read_text())
  trained = [c for s in manifest["sessions"] for c in s["trained"]]
  assert len(trained) == len(set(trained)) == 8  # every trial's config committed exactly once
  assert set(complete["configs"]) == set(manifest["study"]["configs"])


# ---------------------------------------------------------------------------
# --race.

RACE_GRID = ["--set", "model.cells=4", "--epochs", "20", "--repeats", "6", "--plots", "wait", "--quiet"]


def test_race_eliminates_a_clearly_worse_config_and_survivors_equal_a_plain_run(tmp_path):
  raced, plain = tmp_path / "raced", tmp_path / "plain"
  args = ["--grid", "optim.learning_rate=1e-6,0.01,0.03", *RACE_GRID, "--race", "--race-initial", "3",
          "--out", str(raced)]
  status, _, err = run_main(*args)
  assert status == 0, err
  manifest = json.loads((raced / "manifest.json").read_text())
  entries = {e["values"]["optim.learning_rate"]: e for e in manifest["configs"].values()}
  assert entries[1e-6]["status"] == "eliminated" and entries[1e-6]["elimination_round"] == 0
  assert entries[1e-6]["repeats"] == 3 and "worse than" in entries[1e-6]["race"]["reason"]
  assert [entries[lr]["status"] for lr in (0.01, 0.03)] == ["done", "done"]
  assert [entries[lr]["repeats"] for lr in (0.01, 0.03)] == [6, 6]
  (race,) = manifest["races"]
  assert (race["fits"], race["plain_fits"], race["fits_saved"]) == (15, 18, 3)
  # Round 2 (2 survivors x 3 repeats) runs padded to round 1's 9 members: its program, no compile.
  assert len(manifest["groups"]) == 2 and manifest["groups"][1]["compiles"] == 0
  report = (raced / "report.md").read_text()
  assert "## Racing" in report and "15 fits of 18 (3 saved" in report
  run, (loser,) = load_run(raced), [c for c, e in manifest["configs"].items() if e["status"] == "eliminated"]
  with pytest.raises(ValueError, match=f"config {loser} was eliminated by the race after 3 repeats; "
                                       f"run.ensemble\\('{loser}', partial=True\\) loads those 3"):
    run.ensemble(loser)
  eliminated = run.ensemble(loser, partial=True)
  assert list(eliminated.repeat_indices) == [0, 1, 2] and eliminated.predict(np.zeros((2, 1, 1))).shape[0] == 3

  sessions = len(manifest["sessions"])
  assert run_main(*args)[0] == 0  # resumed: the race replays from the folder, nothing trains
  assert len(json.loads((raced / "manifest.json").read_text())["sessions"]) == sessions

  unraced = [a for a in args if a not in ("--race", "--race-initial", "3")]
  status, _, err = run_main(*unraced)  # the same grid without --race would train the eliminated on
  assert status == 2 and "holds a different study: race" in err, err

  status, _, err = run_main("--grid", "optim.learning_rate=0.01,0.03", *RACE_GRID, "--out", str(plain))
  assert status == 0, err
  columns = ["config_id", "repeat", "final_val_loss", "final_loss"]
  a = pd.read_csv(raced / "scores.csv", dtype={"config_id": str})
  b = pd.read_csv(plain / "scores.csv", dtype={"config_id": str})[columns]
  a = a[a["config_id"].isin(set(b["config_id"]))][columns].reset_index(drop=True)
  assert len(a) == 12
  pd.testing.assert_frame_equal(a, b.reset_index(drop=True), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("args, message", [
    (["--race", "--race-initial", "5", "--repeats", "3"], "--race with --race-initial 5 and --repeats 3"),
    (["--race", "--race-initial", "1"], "--race-initial: expected an integer >= 2"),
])
def test_bad_race_input_is_one_line_and_exit_2(tmp_path, args, message):
  status, out, err = run_main(*args, "--out", str(tmp_path / "out"))
  assert status == 2 and out == "" and err.count("\n") == 1 and message in err, err
  assert not (tmp_path / "out").exists()


@pytest.mark.slow
@needs_optuna
def test_tpe_finds_a_good_learning_rate_within_32_trials(tmp_path):
  # Measured on this problem (LSTM(4), 20 epochs, 3 repeats): mean val_loss 0.83 at 1e-5, 0.57 at 1e-3,
  # 0.09 at 1e-2, 0.05 at 0.1, 0.10 at 0.3, 0.49 at 1: the good range is about 5e-3 .. 0.5.
  out = tmp_path / "run"
  status, stdout, err = run_main("--search", "tpe", "--trials", "32", "--batch", "8", "--seed", "0",
                                 "--space", "optim.learning_rate=loguniform:1e-5:3", "--set", "model.cells=4",
                                 "--epochs", "20", "--repeats", "3", "--quiet", "--plots", "wait",
                                 "--out", str(out))
  assert status == 0, err
  trials = pd.read_csv(out / "trials.csv")
  assert len(trials) == 32 and (trials["state"] == "COMPLETE").all()
  best = trials.loc[trials["objective"].idxmin()]
  assert 5e-3 <= best["optim.learning_rate"] <= 0.5 and best["objective"] < 0.2
  groups = json.loads((out / "manifest.json").read_text())["groups"]
  assert len(groups) == 4 and sum(g["compiles"] for g in groups[1:]) == 0  # one program for every batch


@needs_optuna
def test_grid_search_covers_the_grid_once_crossed_with_a_grid(tmp_path):
  out = tmp_path / "run"
  status, _, err = run_main("--search", "grid", "--trials", "10", "--batch", "2",
                            "--space", "optim.learning_rate=choice:0.01,0.1", "--grid", "model.cells=2,4",
                            "--epochs", "5", "--repeats", "2", "--quiet", "--plots", "wait", "--out", str(out))
  assert status == 0, err
  trials = pd.read_csv(out / "trials.csv", dtype={"configs": str})
  assert sorted(trials["optim.learning_rate"]) == [0.01, 0.1]  # the grid's size, not --trials
  assert (trials["repeats"] == 4).all()  # two grid points x two repeats per trial
  manifest = json.loads((out / "manifest.json").read_text())
  values = sorted((e["values"]["optim.learning_rate"], e["values"]["model.cells"])
                  for e in manifest["configs"].values())
  assert values == [(0.01, 2), (0.01, 4), (0.1, 2), (0.1, 4)]


@needs_optuna
def test_a_raced_search_batch_records_the_elimination_in_trials_csv(tmp_path):
  out = tmp_path / "run"
  status, _, err = run_main("--search", "grid", "--trials", "3", "--batch", "3", "--race", "--race-initial", "3",
                            "--space", "optim.learning_rate=choice:1e-6,0.01,0.03", *RACE_GRID, "--out", str(out))
  assert status == 0, err
  trials = pd.read_csv(out / "trials.csv").set_index("optim.learning_rate")
  assert trials.loc[1e-6, "elimination_round"] == 0 and trials.loc[1e-6, "repeats"] == 3
  assert trials.loc[[0.01, 0.03], "elimination_round"].isna().all()
  assert (trials.loc[[0.01, 0.03], "repeats"] == 6).all()
  manifest = json.loads((out / "manifest.json").read_text())
  assert sorted(e["status"] for e in manifest["configs"].values()) == ["done", "done", "eliminated"]
  assert "## Racing" in (out / "report.md").read_text()
