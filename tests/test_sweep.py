"""The sweep CLI: results folder, kill -9 and resume, refusals, dry run, bad input.

Each CLI run pays a compile of a few seconds on a 2-core CPU, so there are
three subprocess runs (where a real process is the point: its exit status,
its stderr, a SIGKILL) and the rest calls `sweep.main([...])` in process. Runs
share a persistent compilation cache in the session's temp dir.
"""
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest

from jaxlstm import runner, store, sweep
from jaxlstm import study as study_lib

TINY = ["--repeats", "2", "--epochs", "5"]


@pytest.fixture
def xla_cache(tmp_path_factory, monkeypatch, restore_cache_flags):
  """The persistent compilation cache in a session temp dir (in process and in subprocesses)."""
  path = tmp_path_factory.getbasetemp() / "xla-cache"
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(path))
  return path


def cli(args, *, cache, timeout=240, **popen):
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(cache))
  return subprocess.run([sys.executable, "-m", "jaxlstm.sweep", *args], capture_output=True, text=True,
                        env=env, timeout=timeout, **popen)


def snapshot(folder: Path) -> dict:
  return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes())
          for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------
# The default study end to end, in a real process.


def test_cli_default_study_writes_the_results_folder(tmp_path, xla_cache):
  out = tmp_path / "run"
  proc = cli([*TINY, "--out", str(out)], cache=xla_cache)
  assert proc.returncode == 0, proc.stderr
  assert "Traceback" not in proc.stderr
  assert f"results: {out}" in proc.stdout
  for label in ("cells=1", "cells=5", "cells=10"):
    assert label in proc.stdout
  assert "n_diverged" in proc.stdout and "25%" in proc.stdout

  manifest = json.loads((out / "manifest.json").read_text())
  ids = manifest["study"]["configs"]
  assert manifest["study"]["grid"] == {"model.cells": [1, 5, 10]} and manifest["study"]["repeats"] == 2
  assert {"python", "jax", "flax", "optax", "jaxlstm"} <= set(manifest["versions"])
  assert manifest["device"] and manifest["command"][-4:] == ["--epochs", "5", "--out", str(out)]
  assert [manifest["configs"][c]["status"] for c in ids] == ["done"] * 3
  (group,) = manifest["groups"]  # padded to 10 cells: one group, one compile
  assert group["compiles"] == 1 and group["cells"] == 10 and group["compile_seconds"] > 0

  for config_id in ids:
    assert json.loads((out / "configs" / f"{config_id}.json").read_text())["train"]["batch_size"] == 0
    with np.load(out / "histories" / f"{config_id}.npz", allow_pickle=False) as npz:
      assert sorted(npz.files) == ["loss", "val_loss"] and npz["val_loss"].shape == (2, 5)
    assert store.checkpoint_complete(out / "checkpoints" / config_id)
  scores = pd.read_csv(out / "scores.csv", dtype={"config_id": str})
  assert list(scores.columns) == ["config_id", "repeat", "model.cells", "final_loss", "final_val_loss",
                                  "best_loss", "best_val_loss", "best_epoch", "stopped_epoch", "diverged"]
  assert len(scores) == 6 and list(scores["model.cells"]) == [1, 1, 5, 5, 10, 10]
  assert scores["stopped_epoch"].isna().all() and np.isfinite(scores["final_val_loss"]).all()
  summary = pd.read_csv(out / "summary.csv", dtype={"config_id": str})
  assert list(summary.columns) == ["config_id", "model.cells", "count", "mean", "std", "min", "25%", "50%",
                                   "75%", "max", "n_diverged", "sem", "ci_low", "ci_high", "iqm", "ensemble"]
  assert list(summary["count"]) == [2, 2, 2]
  assert (out / "plots" / "scores.png").stat().st_size > 0 and (out / "plots" / "curves.png").is_file()
  assert "## Timings" in (out / "report.md").read_text()
  assert len(store.load_histories(out)) == 3 * 2 * 2 * 5
  assert not [p for p in out.rglob("*") if p.name.endswith(".tmp") or "orbax-checkpoint-tmp" in p.name]

  # One writer per table: the report rebuilt from the folder leaves every table as the sweep wrote it.
  tables = ("scores.csv", "summary.csv", "diagnosis.csv", "comparisons.csv")
  before = {name: ((out / name).read_bytes(), (out / name).stat().st_mtime_ns) for name in tables}
  rebuilt = subprocess.run([sys.executable, "-m", "jaxlstm.report", str(out)], capture_output=True, text=True,
                           timeout=120)
  assert rebuilt.returncode == 0, rebuilt.stderr
  assert {name: ((out / name).read_bytes(), (out / name).stat().st_mtime_ns) for name in tables} == before


# ---------------------------------------------------------------------------
# kill -9 after the first config is recorded, then resume.


def test_kill_then_resume_matches_an_uninterrupted_run(tmp_path, xla_cache, capsys, monkeypatch):
  # Two static-shape groups (batch sizes), so there is a moment between configs (the second group's
  # program is compiled while the first trains, so the moment is short: the kill comes soon after).
  args = [*TINY, "--set", "model.cells=2", "--grid", "train.batch_size=0,2"]
  killed = tmp_path / "killed"
  cold = tmp_path / "cold-cache"  # its own cache: the second group must compile, a window to kill in
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(cold))
  proc = subprocess.Popen([sys.executable, "-m", "jaxlstm.sweep", *args, "--out", str(killed)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
  delay = np.random.default_rng().uniform(0.0, 0.2)
  try:
    deadline = time.monotonic() + 200
    while time.monotonic() < deadline and proc.poll() is None:
      try:
        manifest = json.loads((killed / "manifest.json").read_text())
      except (OSError, ValueError):
        manifest = None
      if manifest and any(c["status"] == "done" for c in manifest["configs"].values()):
        break
      time.sleep(0.02)
    time.sleep(delay)
    finished_first = proc.poll() is not None
    proc.send_signal(signal.SIGKILL)
  finally:
    proc.kill()
    proc.wait()
  manifest = json.loads((killed / "manifest.json").read_text())
  done_before = {c for c, e in manifest["configs"].items() if e["status"] == "done"}
  sessions_before = len(manifest["sessions"])
  assert not finished_first, f"the run ended before the kill (delay {delay:.2f} s)"
  assert 1 <= len(done_before) <= 2  # 2: killed after both were committed, while it wrote the report

  # The rerun, in process (it only has to be a new process for the kill).
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(cold))
  assert sweep.main([*args, "--out", str(killed)]) == 0
  resumed = capsys.readouterr()
  manifest = json.loads((killed / "manifest.json").read_text())
  assert all(e["status"] == "done" for e in manifest["configs"].values())
  trained = [c for session in manifest["sessions"] for c in session["trained"]]
  assert sorted(trained) == sorted(manifest["configs"])  # every config trained exactly once
  resumed_trained = {c for session in manifest["sessions"][sessions_before:] for c in session["trained"]}
  assert resumed_trained == set(manifest["configs"]) - done_before  # what was missing, and only that
  if len(done_before) == 1:
    assert "already done (not retrained)" in resumed.err

  clean = tmp_path / "clean"  # the cold cache holds both programs by now
  assert sweep.main([*args, "--out", str(clean), "--quiet"]) == 0
  capsys.readouterr()
  for table in ("scores.csv", "summary.csv"):
    assert (killed / table).read_bytes() == (clean / table).read_bytes(), table
  assert not [p for p in killed.rglob("*") if p.name.endswith(".tmp") or "orbax-checkpoint-tmp" in p.name]


# ---------------------------------------------------------------------------
# An existing folder: a different study is refused, the same one is a no-op.


def test_changed_study_is_refused_overwrite_replaces_and_rerun_trains_nothing(tmp_path, xla_cache, capsys):
  out = tmp_path / "run"
  base = [*TINY, "--set", "model.cells=2", "--out", str(out)]
  assert sweep.main([*base, "--grid", "optim.learning_rate=0.001,0.01"]) == 0
  first = capsys.readouterr()
  assert "results:" in first.out
  before = snapshot(out)

  # Same command again: no training, same summary, not a byte or an mtime changed.
  assert sweep.main([*base, "--grid", "optim.learning_rate=0.001,0.01"]) == 0
  again = capsys.readouterr()
  assert "nothing to train" in again.err and again.out == first.out
  assert snapshot(out) == before
  assert len(json.loads((out / "manifest.json").read_text())["sessions"]) == 1

  # A done config whose files went missing is trained again, alone (a smaller
  # group of the same width): its numbers, and so the tables, do not change.
  manifest = json.loads((out / "manifest.json").read_text())
  (out / "histories" / f"{manifest['study']['configs'][1]}.npz").unlink()
  assert sweep.main([*base, "--grid", "optim.learning_rate=0.001,0.01"]) == 0
  err = capsys.readouterr().err
  assert "1 config(s) marked done have missing or changed files" in err and "training 1" in err
  assert "1 config(s) x 2 repeats = 2 members" in err
  assert (out / "scores.csv").read_bytes() == before["scores.csv"][1]
  assert (out / "summary.csv").read_bytes() == before["summary.csv"][1]
  before = snapshot(out)

  refusals = [
      (["--grid", "optim.learning_rate=0.001,0.1"],
       "grid (optim.learning_rate: [0.001, 0.01] in the folder, [0.001, 0.1] now)"),
      (["--grid", "optim.learning_rate=0.001,0.01", "--repeats", "1"],
       "repeats (2 in the folder, 1 now: a folder's repeats can grow, never shrink"),
      (["--grid", "optim.learning_rate=0.001,0.01", "--seed", "1"], "seed (0 in the folder, 1 now)"),
      (["--grid", "optim.learning_rate=0.001,0.01", "--set", "train.shuffle=true"],
       "base config (train.shuffle: false in the folder, true now)"),
  ]
  for extra, names in refusals:
    assert sweep.main([*base, *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("jaxlstm.sweep: error:"), err
    assert names in err and "--overwrite" in err
    assert snapshot(out) == before

  assert sweep.main([*base, "--grid", "optim.learning_rate=0.001,0.1", "--overwrite", "--quiet"]) == 0
  capsys.readouterr()
  manifest = json.loads((out / "manifest.json").read_text())
  assert manifest["study"]["grid"] == {"optim.learning_rate": [0.001, 0.1]}
  assert len(manifest["sessions"]) == 1
  assert pd.read_csv(out / "scores.csv")["optim.learning_rate"].tolist() == [0.001, 0.001, 0.1, 0.1]


def test_the_folder_records_the_cpu_and_a_rerun_on_another_kind_says_so(tmp_path, xla_cache, capsys):
  # Numbers can differ in float32's last bits between kinds of CPU (README, "Machines"), so a folder
  # records the CPU of its first run and of every session, and a rerun on another kind says so.
  from jaxlstm import devices
  out = tmp_path / "run"
  args = [*TINY, "--set", "model.cells=2", "--out", str(out), "--plots", "wait"]
  assert sweep.main(args) == 0
  capsys.readouterr()
  manifest = json.loads((out / "manifest.json").read_text())
  assert manifest["cpu"] == manifest["sessions"][0]["cpu"] == devices.host_cpu()
  assert manifest["cpu"]["model"] and manifest["cpu"]["machine"]
  from jaxlstm import report
  assert f"- CPU: {report._md(devices.cpu_words(manifest['cpu']))}" in (out / "report.md").read_text()

  other = {"model": "Another CPU", "machine": manifest["cpu"]["machine"], "extensions": ["sse4_2"]}
  manifest["cpu"] = other
  (out / "manifest.json").write_text(json.dumps(manifest))
  assert sweep.main(args) == 0
  err = capsys.readouterr().err
  assert "this CPU differs from the folder's first run's" in err
  assert f"{devices.cpu_words(other)} -> {devices.cpu_words(devices.host_cpu())}" in err


def test_study_differences_name_every_changed_part():
  old = {"base": {"train": {"epochs": 5}}, "grid": {"model.cells": [1, 5]}, "random": None, "repeats": 2,
         "seed": 0, "configs": ["a", "b"], "data": {"a": "f1", "b": "f1"}}
  assert runner.study_differences(old, dict(old)) == []
  new = dict(old, data={"a": "f1", "b": "f2"})
  assert runner.study_differences(old, new) == ["data (the dataset of 1 config(s) has a different fingerprint)"]
  new = dict(old, base={"train": {"epochs": 6}}, grid={"model.cells": [1, 10]}, random=4, configs=["c"])
  assert runner.study_differences(old, new) == [
      "base config (train.epochs: 5 in the folder, 6 now)",
      "grid (model.cells: [1, 5] in the folder, [1, 10] now)",
      "random (null in the folder, 4 now)"]
  assert runner.study_differences(old, dict(old, repeats=5)) == []  # more repeats extend the folder
  assert runner.study_differences(old, dict(old, repeats=1)) == [
      "repeats (2 in the folder, 1 now: a folder's repeats can grow, never shrink; rerun with --repeats 2 "
      "or more)"]


def test_a_folder_in_use_is_refused(tmp_path, capsys):
  import fcntl
  out = tmp_path / "run"
  out.mkdir()
  with open(out / ".lock", "a") as held:
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another sweep holds it
    assert sweep.main([*TINY, "--out", str(out)]) == 2
  assert "another sweep is writing to" in capsys.readouterr().err
  assert sorted(p.name for p in out.iterdir()) == [".lock"]


def test_overwrite_never_deletes_a_folder_that_is_not_a_results_folder(tmp_path, capsys):
  (tmp_path / "precious.txt").write_text("keep me")
  assert sweep.main([*TINY, "--out", str(tmp_path), "--overwrite"]) == 2
  assert "not a jaxlstm results folder" in capsys.readouterr().err
  assert (tmp_path / "precious.txt").read_text() == "keep me"


# ---------------------------------------------------------------------------
# Planning without training.


def test_dry_run_reports_groups_and_compiles_of_a_mixed_grid(tmp_path, capsys):
  out = tmp_path / "never"
  args = [*TINY, "--grid", "model.cells=1,5", "--grid", "optim.learning_rate=1e-3,1e-2",
          "--grid", "model.layers=1,2", "--out", str(out), "--dry-run"]
  assert sweep.main(args) == 0
  text = capsys.readouterr().out
  assert "plan: 8 configs, 2 groups, 2 compiles, 16 members" in text
  assert "group 1: configs 1, 3, 5, 7;" in text and "group 2: configs 2, 4, 6, 8;" in text
  assert "5 cells (narrower configs zero-padded), 1 layer(s)" in text
  assert "MiB" in text or "KiB" in text
  assert not out.exists()

  study = study_lib.make_study(sweep.build_parser().parse_args(args))
  plan = runner.plan_study(study)
  assert [sorted({c.model.layers for c in g.group.configs}) for g in plan.groups] == [[1], [2]]
  assert [len(g.group.configs) for g in plan.groups] == [4, 4] and plan.compiles == 2

  assert sweep.main(["--repeats", "30", "--dry-run"]) == 0  # the default study: one compile
  assert "plan: 3 configs, 1 group, 1 compile, 90 members" in capsys.readouterr().out


def test_random_draws_come_from_the_seed_and_keep_grid_order(capsys):
  args = ["--grid", "model.cells=1,2,3", "--grid", "optim.learning_rate=0.1,0.01", "--random", "3"]
  parse = sweep.build_parser().parse_args
  first = study_lib.make_study(parse([*args, "--seed", "4"]))
  assert len(first.configs) == 3 and first.random == 3
  assert [c.config_id for c in study_lib.make_study(parse([*args, "--seed", "4"])).configs] == \
      [c.config_id for c in first.configs]
  full = [c.config_id for c in study_lib.make_study(parse(args[:4])).configs]
  positions = [full.index(c.config_id) for c in first.configs]
  assert positions == sorted(positions)
  draws = {tuple(c.config_id for c in study_lib.make_study(parse([*args, "--seed", str(s)])).configs)
           for s in range(6)}
  assert len(draws) > 1
  assert study_lib.make_study(parse([*args[:4], "--random", "10"])).random is None  # covers the grid


def test_config_file_with_grid_and_set(tmp_path):
  (tmp_path / "study.toml").write_text(
      '[model]\ncells = 4\n[train]\nepochs = 3\nbatch_size = 0\n'
      '[grid]\n"optim.learning_rate" = [1e-3, "1e-2"]\n[grid.model]\nlayers = [1, 2]\n')
  parse = sweep.build_parser().parse_args
  study = study_lib.make_study(parse(["--config", str(tmp_path / "study.toml")]))
  assert study.name == "study" and study.grid == {"optim.learning_rate": [1e-3, 1e-2], "model.layers": [1, 2]}
  assert [c.model.cells for c in study.configs] == [4] * 4
  fixed = study_lib.make_study(parse(["--config", str(tmp_path / "study.toml"), "--set", "model.layers=2"]))
  assert list(fixed.grid) == ["optim.learning_rate"] and {c.model.layers for c in fixed.configs} == {2}
  (tmp_path / "study.json").write_text(json.dumps({"train": {"epochs": 2}, "grid": {"model.cells": [1, 2]}}))
  assert len(study_lib.make_study(parse(["--config", str(tmp_path / "study.json")])).configs) == 2


def test_list_experiments(capsys):
  assert sweep.main(["--list-experiments"]) == 0
  lines = capsys.readouterr().out.splitlines()
  assert any(line.startswith("cells ") for line in lines)
  assert lines == sorted(lines)


def test_progress_bar_draws_fraction_elapsed_and_eta():
  stream = io.StringIO()
  bar = runner.Progress(stream, total=200, enabled=True)
  bar.group(1, 2, 100)
  bar({"call": 0, "calls": 1, "epochs_done": 50, "epochs": 100, "members": 2,
       "run_seconds": 1.0, "compile_seconds": 1.0})
  text = stream.getvalue()
  assert "\r" in text and "25%" in text and "group 1/2" in text and "elapsed" in text and "eta" in text
  quiet = io.StringIO()
  runner.Progress(quiet, total=1, enabled=False).group(1, 1, 1)
  assert quiet.getvalue() == ""


# ---------------------------------------------------------------------------
# Bad input: exit 2, one line, nothing written.


@pytest.mark.parametrize("args, message", [
    (["--experiment", "cellz"], "unknown experiment 'cellz'; did you mean 'cells'"),
    (["--grid", "model.cels=1,2"], "Unknown config field 'model.cels'. Did you mean 'model.cells'?"),
    (["--set", "celss=3"], "Unknown config field 'celss'"),
    (["--grid", "model.cells"], "--grid 'model.cells': expected KEY=VALUE"),
    (["--grid", "model.cells=1,,5"], "give comma-separated values"),
    (["--grid", "model.cells=one,two"], "model.cells = 'one' is not a valid int"),
    (["--set", "optim.learning_rate=-1"], "optim.learning_rate = -1.0 is not allowed"),
    (["--set", "data.problem=lineer"], "Did you mean 'linear'?"),
    (["--repeats", "0"], "argument --repeats: expected a positive integer"),
    (["--config", "missing.toml"], "cannot read --config missing.toml"),
    (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, args, message):
  out = tmp_path / "out"
  assert sweep.main([*TINY, *args, "--out", str(out)]) == 2
  captured = capsys.readouterr()
  assert captured.out == ""
  lines = captured.err.splitlines()
  assert len(lines) == 1 and lines[0].startswith("jaxlstm.sweep: error: "), captured.err
  assert message in lines[0]
  assert not out.exists()


@pytest.mark.parametrize("setting, ending", [
    ("model.cell=rnn", "model.cell = 'rnn' is not allowed: expected one of 'lstm', 'gru'."),
    ("data.problem=lineer", "expected one of 'linear', 'echo', 'damped_sine', 'addition', 'moving_square', 'csv'. "
                            "Did you mean 'linear'?"),
])
def test_a_bad_choice_ends_its_line_with_one_stop(tmp_path, capsys, setting, ending):
  assert sweep.main([*TINY, "--set", setting, "--out", str(tmp_path / "out")]) == 2
  assert capsys.readouterr().err.endswith(ending + "\n")


def test_a_bad_list_in_a_config_file_is_one_line_before_jax_sees_it(tmp_path, capsys):
  config = tmp_path / "bad.toml"
  config.write_text('[optim]\nschedule = "piecewise"\nboundaries = ["a", "b"]\nscales = [0.5, 0.1]\n')
  assert sweep.main([*TINY, "--config", str(config), "--out", str(tmp_path / "out")]) == 2
  assert capsys.readouterr().err == ("jaxlstm.sweep: error: optim.boundaries = ('a', 'b') is not allowed: expected a "
                                     "list of step numbers (integers >= 0, strictly increasing).\n")
  assert not (tmp_path / "out").exists()


def test_unwritable_out_exits_2(tmp_path, capsys):
  (tmp_path / "a_file").write_text("")
  assert sweep.main([*TINY, "--out", str(tmp_path / "a_file" / "run")]) == 2
  err = capsys.readouterr().err
  assert err == f"jaxlstm.sweep: error: cannot write --out {tmp_path / 'a_file' / 'run'}: " \
                f"{tmp_path / 'a_file'} is not a directory\n"


def test_bad_input_in_a_real_process_has_no_traceback(tmp_path, xla_cache):
  proc = cli([*TINY, "--grid", "model.cells=1,x", "--out", str(tmp_path / "out")], cache=xla_cache, timeout=120)
  assert proc.returncode == 2
  assert proc.stderr == "jaxlstm.sweep: error: model.cells = 'x' is not a valid int.\n"
  assert not (tmp_path / "out").exists()


def test_metric_option_scores_the_summary_and_report(tmp_path, capsys):
  out = tmp_path / "metric"
  code = sweep.main(["--repeats", "2", "--epochs", "3", "--set", "train.metrics=mae", "--metric", "val_mae",
                     "--out", str(out), "--quiet"])
  assert code == 0
  assert "final val_mae over 2 repeats" in capsys.readouterr().out
  scores = pd.read_csv(out / "scores.csv")
  summary = pd.read_csv(out / "summary.csv")
  expected = scores.groupby("config_id", sort=False)["final_val_mae"].mean()
  np.testing.assert_allclose(summary.set_index("config_id")["mean"], expected.loc[summary["config_id"]])
  assert "## Final val_mae per config" in (out / "report.md").read_text()
  bad = sweep.main(["--repeats", "2", "--epochs", "3", "--metric", "val_accuracy", "--out", str(tmp_path / "b")])
  err = capsys.readouterr().err
  assert bad == 2 and "val_accuracy" in err and "record it" not in err  # accuracy needs a classification head
  assert not (tmp_path / "b").exists()


def test_a_metric_not_recorded_names_its_source_and_how_to_record_it(tmp_path, capsys):
  assert sweep.main([*TINY, "--set", "train.metrics=mae", "--metric", "val_mse", "--out", str(tmp_path / "a")]) == 2
  assert capsys.readouterr().err.rstrip().endswith("record it with --set train.metrics=mae,mse")
  study = tmp_path / "study.py"
  study.write_text("import jaxlstm\nMETRIC = 'val_mae'\n\ndef get_config():\n  return jaxlstm.Config()\n\n\n"
                   "def get_grid():\n  return {'model.cells': [1, 2]}\n")
  assert sweep.main([*TINY, "--experiment", str(study), "--out", str(tmp_path / "b")]) == 2
  err = capsys.readouterr().err
  assert err.startswith("jaxlstm.sweep: error: the study's METRIC 'val_mae' is not recorded") and err.count("\n") == 1
  assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
