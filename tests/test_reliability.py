"""Reliability (issue 13): one regression test per break found by probing the CLI.

Folders that are not ours are never deleted; studies come from our package only;
impossible sizes are refused before anything is written; a killed or damaged folder
ends correct on the rerun; repeats grow in place; every bad input is one line, exit 2.
Real subprocesses where the break was in a real process (signals, kill -9, imports).
"""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from jaxlstm import store, sweep

TINY = ["--repeats", "2", "--epochs", "3", "--quiet"]
TWO_GROUPS = ["--grid", "model.layers=1,2", "--grid", "model.cells=2", "--epochs", "40"]


def cli(args, *, cwd=None, timeout=240, **popen):
  return subprocess.run([sys.executable, "-m", "jaxlstm.sweep", *args], capture_output=True, text=True,
                        cwd=cwd, timeout=timeout, env=dict(os.environ, PYTHONUNBUFFERED="1"), **popen)


def one_error_line(err: str) -> str:
  assert err.count("\n") == 1 and err.startswith("jaxlstm.sweep: error:") and "Traceback" not in err, err
  return err


def files(folder: Path) -> dict:
  return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def tables(folder: Path) -> dict:
  return {name: (folder / name).read_bytes() for name in ("scores.csv", "summary.csv", "diagnosis.csv",
                                                          "comparisons.csv")}


# ---------------------------------------------------------------------------
# 1. --overwrite never deletes a folder that is not ours.


@pytest.mark.parametrize("manifest", ['{"name": "my web app", "version": 3}', "{not json", '{"format": 1}'])
def test_overwrite_never_deletes_a_folder_with_a_foreign_manifest(tmp_path, capsys, manifest):
  app = tmp_path / "app"
  app.mkdir()
  (app / "manifest.json").write_text(manifest)
  (app / "index.html").write_text("<h1>mine</h1>")
  before = files(app)
  for extra in ([], ["--overwrite"]):
    assert sweep.main([*TINY, "--out", str(app), *extra]) == 2
    err = one_error_line(capsys.readouterr().err)
    assert "not a jaxlstm results folder" in err and "pass --overwrite" not in err
    assert "never replaced or deleted" in err
  assert files(app) == before


# ---------------------------------------------------------------------------
# 3. Studies come from our installed package, never from a folder on sys.path.


def test_a_local_experiments_folder_neither_shadows_nor_is_imported(tmp_path):
  theirs = tmp_path / "experiments"
  theirs.mkdir()
  (theirs / "__init__.py").write_text("")
  (theirs / "cells.py").write_text("open(__file__ + '.imported', 'w').close()\nraise SystemExit('theirs')\n")
  (theirs / "mine.py").write_text("open(__file__ + '.imported', 'w').close()\n")
  listed = cli(["--list-experiments"], cwd=tmp_path)
  assert listed.returncode == 0, listed.stderr
  names = [line.split()[0] for line in listed.stdout.splitlines()]
  assert "cells" in names and "mine" not in names
  planned = cli(["--repeats", "2", "--dry-run"], cwd=tmp_path)
  assert planned.returncode == 0, planned.stderr
  assert "plan: 3 configs, 1 group, 1 compile" in planned.stdout
  assert not list(theirs.glob("*.imported"))


def test_a_study_file_loads_by_path(tmp_path, capsys):
  study = tmp_path / "wide.py"
  study.write_text(
      '"""My study."""\n'
      "from jaxlstm.config import Config\n"
      "def get_config():\n  return Config().override({'train.epochs': 3})\n"
      "def get_grid():\n  return {'model.cells': [2, 3]}\n")
  assert sweep.main(["--experiment", str(study), "--repeats", "2", "--dry-run"]) == 0
  out = capsys.readouterr().out
  assert "study wide: 2 configs x 2 repeats" in out
  assert sweep.main(["--experiment", str(tmp_path / "missing.py"), "--dry-run"]) == 2
  assert "no such study file" in one_error_line(capsys.readouterr().err)


# ---------------------------------------------------------------------------
# 4. Impossible sizes are refused before anything is written.


@pytest.mark.parametrize("args, message", [
    (["--repeats", "10000000"], "the plan needs about"),
    (["--set", "model.cells=100000"], "one member alone is too large"),
    (["--repeats", "1000000000000", "--dry-run"], "more than jaxlstm plans"),
    (["--repeats", "1e12"], "expected a positive integer"),
    (["--max-memory", "1M"], "more than --max-memory (1.0 MiB)"),
])
def test_impossible_sizes_are_refused_before_anything_is_written(tmp_path, capsys, args, message):
  out = tmp_path / "run"
  assert sweep.main([*args, "--out", str(out), "--quiet"]) == 2
  assert message in one_error_line(capsys.readouterr().err)
  assert not out.exists()


# ---------------------------------------------------------------------------
# 5. A finished sweep always ends with its report; damaged files are retrained.


def _wait_for(predicate, proc, timeout=120.0):
  t0 = time.monotonic()
  while time.monotonic() - t0 < timeout:
    if proc.poll() is not None:
      return False
    if predicate():
      return True
    time.sleep(0.01)
  return False


def _manifest(out: Path) -> dict:
  try:
    return json.loads((out / "manifest.json").read_text())
  except (OSError, ValueError):
    return {}


def _done(out: Path) -> int:
  entries = _manifest(out).get("configs", {})
  return sum(e.get("status") == "done" for e in entries.values())


@pytest.mark.timeout(600)
def test_kill_between_the_last_commit_and_the_report_then_rerun_leaves_a_correct_report(tmp_path):
  out = tmp_path / "run"
  args = [*TWO_GROUPS, "--repeats", "2", "--out", str(out)]
  # Killed after group 1 of 2 commits, then a report of that half-done folder.
  proc = subprocess.Popen([sys.executable, "-m", "jaxlstm.sweep", *args], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  assert _wait_for(lambda: _done(out) >= 1, proc), "group 1 never committed"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert subprocess.run([sys.executable, "-m", "jaxlstm.report", str(out)], capture_output=True).returncode == 0
  assert "1 done" in (out / "report.md").read_text()
  # Killed right after the last commit, before the report could be rebuilt.
  proc = subprocess.Popen([sys.executable, "-m", "jaxlstm.sweep", *args], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  killed = _wait_for(lambda: _done(out) == 2, proc)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  manifest = _manifest(out)
  assert killed, "the run ended before the kill"  # the report takes seconds: the window is wide
  assert "finished" not in manifest and "2 done" not in (out / "report.md").read_text()
  rerun = cli(args)
  assert rerun.returncode == 0, rerun.stderr
  assert "nothing to train" in rerun.stderr
  report = (out / "report.md").read_text()
  assert "configs: 2 (2 done)" in report and "pending" not in report
  manifest = _manifest(out)
  assert manifest["finished"] and manifest["sessions"][-1].get("finished")
  # A second rerun finds it all current and changes nothing.
  before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
  assert cli(args).returncode == 0
  assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before


def test_a_corrupt_history_of_a_done_config_is_detected_and_retrained(tmp_path, capsys):
  out = tmp_path / "run"
  args = [*TINY, "--out", str(out)]
  assert sweep.main(args) == 0
  capsys.readouterr()
  before = tables(out)
  ids = _manifest(out)["study"]["configs"]
  history = out / "histories" / f"{ids[1]}.npz"
  history.write_bytes(history.read_bytes()[:-7])  # truncated
  checkpoint = out / "checkpoints" / ids[2]
  chunk = next(p for p in sorted(checkpoint.rglob("*")) if p.is_file() and p.parent != checkpoint
               and not p.name.startswith("."))  # a parameter's data, not its .zarray
  data = bytearray(chunk.read_bytes())
  data[len(data) // 2] ^= 0xFF  # one flipped byte in the parameters
  chunk.write_bytes(bytes(data))
  assert sweep.main(["--repeats", "2", "--epochs", "3", "--out", str(out)]) == 0  # not quiet: read the log
  err = capsys.readouterr().err
  assert "2 config(s) marked done have missing or changed files" in err and "training 2" in err
  assert ids[1] in err and ids[2] in err
  assert tables(out) == before  # retrained to the same numbers


# ---------------------------------------------------------------------------
# 6. The smaller breaks.


def test_seed_out_of_range_is_refused_up_front(tmp_path, capsys):
  out = tmp_path / "run"
  assert sweep.main([*TINY, "--seed", str(2**32), "--out", str(out)]) == 2
  assert "expected a seed from 0 to 4294967295" in one_error_line(capsys.readouterr().err)
  assert not out.exists()
  import jaxlstm
  with pytest.raises(ValueError, match="seed"):
    jaxlstm.fit(jaxlstm.Config(), repeats=2, seed=2**32)


def test_metric_on_an_existing_folder_applies(tmp_path, capsys):
  out = tmp_path / "run"
  assert sweep.main([*TINY, "--out", str(out)]) == 0
  capsys.readouterr()
  before = pd.read_csv(out / "summary.csv", dtype={"config_id": str})
  scores = pd.read_csv(out / "scores.csv", dtype={"config_id": str})
  assert sweep.main([*TINY[:-1], "--metric", "loss", "--out", str(out)]) == 0
  err = capsys.readouterr().err
  assert "scoring by loss now (was val_loss)" in err and "nothing to train" in err
  after = pd.read_csv(out / "summary.csv", dtype={"config_id": str})
  expected = scores.groupby("config_id", sort=False)["final_loss"].mean()
  np.testing.assert_allclose(after.set_index("config_id")["mean"], expected.loc[after["config_id"]], rtol=1e-6)
  assert not np.allclose(after["mean"], before["mean"])
  assert _manifest(out)["study"]["metric"] == "loss"
  assert "## Final loss per config" in (out / "report.md").read_text()


@pytest.mark.timeout(600)
def test_sigint_exits_130_and_leaves_a_folder_that_resumes(tmp_path):
  out = tmp_path / "run"
  args = [*TWO_GROUPS, "--epochs", "400", "--repeats", "2", "--out", str(out)]
  # faulthandler: a crash after the "interrupted" line would print where it happened into `err`,
  # which the assertion shows. The failure seen (3 of 20 runs) was a dropped interrupt: see below.
  proc = subprocess.Popen([sys.executable, "-X", "faulthandler", "-m", "jaxlstm.sweep", *args],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  assert _wait_for(lambda: (out / "manifest.json").is_file(), proc)
  time.sleep(1.0)
  proc.send_signal(signal.SIGINT)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 130, err
  assert "interrupted" in err and "Traceback" not in err
  rerun = cli(args)
  assert rerun.returncode == 0, rerun.stderr
  assert _done(out) == 2 and _manifest(out).get("finished")


DROPPED_INTERRUPT = """
import gc, os, signal, sys
from jaxlstm import sweep
sent = []
def collect(phase, info):  # Ctrl-C inside a gc callback: Python drops its KeyboardInterrupt
  if not sent and phase == "start" and "jaxlstm.runner" in sys.modules:  # the run has begun
    sent.append(1)
    os.kill(os.getpid(), signal.SIGINT)
    for _ in range(1000):  # the handler runs here, inside the callback
      pass
gc.callbacks.append(collect)
sys.exit(sweep.main(sys.argv[1:]))
"""


@pytest.mark.timeout(300)
def test_a_ctrl_c_that_python_drops_still_stops_the_run(tmp_path):
  """A KeyboardInterrupt raised in a gc callback or `__del__` is dropped by Python ("Exception ignored");
  the sweep remembers Ctrl-C and stops at the next call or group: 130, nothing reported, a folder that resumes."""
  out = tmp_path / "run"
  args = [*TWO_GROUPS, "--repeats", "2", "--out", str(out)]
  proc = subprocess.run([sys.executable, "-c", DROPPED_INTERRUPT, *args], capture_output=True, text=True,
                        timeout=240)
  assert proc.returncode == 130, proc.stderr
  assert "interrupted" in proc.stderr and "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
  assert _done(out) < 2
  rerun = cli(args)
  assert rerun.returncode == 0, rerun.stderr
  assert _done(out) == 2 and _manifest(out).get("finished")


def test_interrupts_outside_the_command_line_are_plain_keyboard_interrupts():
  from jaxlstm import interrupts
  interrupts.check()  # nothing asked: nothing raised
  # Python's default_int_handler, or SIG_IGN where the suite was started in the background by a
  # non-interactive shell (which ignores SIGINT for it): either way the one to put back.
  before = signal.getsignal(signal.SIGINT)
  with interrupts.install():
    interrupts.check()
    with pytest.raises(KeyboardInterrupt):
      os.kill(os.getpid(), signal.SIGINT)
      time.sleep(1)
    with pytest.raises(KeyboardInterrupt):
      interrupts.check()  # remembered
  interrupts.check()  # forgotten when the command ends
  assert signal.getsignal(signal.SIGINT) is before


def test_config_ids_from_a_manifest_are_validated(tmp_path, capsys):
  out = tmp_path / "run"
  assert sweep.main([*TINY, "--out", str(out)]) == 0
  capsys.readouterr()
  manifest = _manifest(out)
  victim = manifest["study"]["configs"][0]
  manifest["study"]["configs"][0] = "../../x"
  manifest["configs"]["../../x"] = manifest["configs"].pop(victim)
  (out / "manifest.json").write_text(json.dumps(manifest))
  assert sweep.main([*TINY, "--out", str(out)]) == 2
  assert "names config id '../../x', which is not a jaxlstm id" in one_error_line(capsys.readouterr().err)
  from jaxlstm import report
  assert report.main([str(out)]) == 2
  with pytest.raises(ValueError, match="not a jaxlstm id"):
    store.load_run(out)


def test_a_symlink_inside_the_folder_is_refused_and_never_written_through(tmp_path, capsys):
  out, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
  assert sweep.main([*TINY, "--out", str(out)]) == 0
  capsys.readouterr()
  elsewhere.mkdir()
  (elsewhere / "keep.txt").write_text("mine")
  import shutil
  shutil.rmtree(out / "plots")
  (out / "plots").symlink_to(elsewhere, target_is_directory=True)
  for extra in ([], ["--overwrite"]):
    assert sweep.main([*TINY, "--out", str(out), *extra]) == 2
    assert "contains a symbolic link (plots)" in one_error_line(capsys.readouterr().err)
  assert [p.name for p in elsewhere.iterdir()] == ["keep.txt"]


def test_text_from_the_command_line_is_escaped_in_the_report(tmp_path, capsys):
  out = tmp_path / "run`| *x* <b>"
  assert sweep.main([*TINY, "--out", str(out)]) == 0
  capsys.readouterr()
  line = next(l for l in (out / "report.md").read_text().splitlines() if l.startswith("- command:"))
  span = line[len("- command: "):]
  fence = re.match(r"`+", span).group(0)
  assert len(fence) >= 2 and span.endswith(fence)
  inner = span[len(fence):-len(fence)].strip()
  assert inner.endswith(f"'{out}'") or str(out) in inner  # shell-quoted, whole, inside one code span
  assert "`" * len(fence) not in inner


# ---------------------------------------------------------------------------
# 7. --repeats grows in an existing folder; shrinking is refused.


def test_repeats_grow_in_place_and_only_the_new_ones_train(tmp_path, capsys):
  out = tmp_path / "run"
  base = ["--epochs", "3", "--out", str(out)]
  assert sweep.main([*base, "--repeats", "3", "--quiet"]) == 0
  capsys.readouterr()
  three = pd.read_csv(out / "scores.csv", dtype={"config_id": str})
  three_lines = (out / "scores.csv").read_text().splitlines()
  assert sweep.main([*base, "--repeats", "5"]) == 0
  err = capsys.readouterr().err
  assert "growing from 3 to 5 repeats per config" in err and "repeats 3-4" in err
  five = pd.read_csv(out / "scores.csv", dtype={"config_id": str})
  assert len(five) == 15 and list(five.groupby("config_id", sort=False).size()) == [5, 5, 5]
  five_lines = (out / "scores.csv").read_text().splitlines()
  for config_id in three["config_id"].unique():
    old = [l for l in three_lines[1:] if l.startswith(config_id)]
    new = [l for l in five_lines[1:] if l.startswith(config_id)]
    assert new[:3] == old  # the first three repeats, byte for byte
  # The new repeats equal those of a folder trained with 5 from the start.
  fresh = tmp_path / "fresh"
  assert sweep.main(["--epochs", "3", "--out", str(fresh), "--repeats", "5", "--quiet"]) == 0
  capsys.readouterr()
  reference = pd.read_csv(fresh / "scores.csv", dtype={"config_id": str})
  np.testing.assert_allclose(five["final_val_loss"], reference["final_val_loss"], rtol=1e-5, atol=1e-7)
  assert json.loads((out / "manifest.json").read_text())["study"]["repeats"] == 5
  assert "repeats: 5 per config" in (out / "report.md").read_text()
  # Shrinking is refused, and nothing changes.
  before = files(out)
  assert sweep.main([*base, "--repeats", "4", "--quiet"]) == 2
  assert "can grow, never shrink" in one_error_line(capsys.readouterr().err)
  assert files(out) == before


# ---------------------------------------------------------------------------
# 2. A folder resumes across an upgrade that only added fields.


def test_a_folder_written_before_fields_were_added_resumes(tmp_path, capsys):
  out = tmp_path / "run"
  assert sweep.main([*TINY, "--out", str(out)]) == 0
  capsys.readouterr()
  added = {"model": ("units", "dense", "dense_activation", "dense_dropout", "mask_value"), "train": ("paired",)}
  # Make it look written by a version that had none of the fields added since ids were frozen.
  for path in (out / "configs").glob("*.json"):
    config = json.loads(path.read_text())
    for section, names in added.items():
      for name in names:
        config[section].pop(name, None)
    path.write_text(json.dumps(config))
  manifest = _manifest(out)
  assert not any(name in manifest["study"]["base"][s] for s, names in added.items() for name in names)
  last = manifest["study"]["configs"][-1]
  manifest["configs"][last].update(status="pending", repeats=0)
  manifest.pop("finished", None)
  (out / "manifest.json").write_text(json.dumps(manifest))
  run = store.load_run(out)  # old configs load, with the new fields at their defaults
  assert [c.config_id for c in run.configs.values()] == manifest["study"]["configs"]
  assert sweep.main([*TINY[:-1], "--out", str(out)]) == 0
  err = capsys.readouterr().err
  assert "resuming: 2 of 3 configs already done" in err and "1 config(s) x 2 repeats" in err
  assert _done(out) == 3
