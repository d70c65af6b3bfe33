"""Several processes (issue 12): `--distributed` runs on 127.0.0.1, real `jax.distributed`, gloo.

Two processes (one CPU device each) train a two-group study; the folder equals a
single process's, only process 0 writes it; processes started with different
studies are refused before anything is written; a process killed mid-run makes
the other exit non-zero within a bounded time, and rerunning resumes. Every
process runs under a timeout: a hung collective fails the test instead of
stalling CI.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

STUDY = ["--grid", "model.layers=1,2", "--grid", "model.cells=2", "--epochs", "600", "--repeats", "3", "--quiet"]
PEER_TIMEOUT = 10  # seconds without a heartbeat before a peer counts as dead
HANG = 240  # no run of these tiny studies takes this long, even under load


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def environment(cache: Path) -> dict:
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(("SLURM_", "OMPI_", "PMI_", "JAX_COORDINATOR", "XLA_FLAGS"))}
  return dict(env, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=str(cache), PYTHONUNBUFFERED="1")


class Run:
  """Processes of one command, their output in files (no pipe can fill and block them)."""

  def __init__(self, tmp: Path, name: str, commands: list[list[str]], env: dict):
    self.logs = [(tmp / f"{name}-{i}.out", tmp / f"{name}-{i}.err") for i in range(len(commands))]
    self.procs = []
    for command, (out, err) in zip(commands, self.logs):
      with open(out, "w") as o, open(err, "w") as e:
        self.procs.append(subprocess.Popen([sys.executable, "-m", "jaxlstm.sweep", *command], stdout=o, stderr=e,
                                           env=env, cwd=tmp, start_new_session=True))

  def wait(self, index: int, timeout: float) -> int:
    try:
      return self.procs[index].wait(timeout=timeout)
    except subprocess.TimeoutExpired:
      self.kill()
      pytest.fail(f"process {index} still running after {timeout:.0f} s (a hung collective?):\n{self.err(index)}")

  def finish(self, timeout: float = HANG) -> list[int]:
    deadline = time.monotonic() + timeout
    return [self.wait(i, max(1.0, deadline - time.monotonic())) for i in range(len(self.procs))]

  def kill(self, index: int | None = None) -> None:
    for i, proc in enumerate(self.procs):
      if (index is None or i == index) and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

  def out(self, index: int) -> str:
    return self.logs[index][0].read_text()

  def err(self, index: int) -> str:
    return self.logs[index][1].read_text()


def distributed(tmp: Path, name: str, outs: list[Path], env: dict, extra=(), studies=None) -> Run:
  port = free_port()
  commands = [[*(studies[i] if studies else STUDY), *extra, "--devices", "1", "--out", str(out), "--distributed",
               "--coordinator", f"127.0.0.1:{port}", "--num-processes", str(len(outs)), "--process-id", str(i),
               "--peer-timeout", str(PEER_TIMEOUT)] for i, out in enumerate(outs)]
  return Run(tmp, name, commands, env)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """The study run by one process on one device."""
  tmp = tmp_path_factory.mktemp("single")
  env = environment(tmp_path_factory.getbasetemp() / "xla-cache")
  run = Run(tmp, "single", [[*STUDY, "--devices", "1", "--out", str(tmp / "run")]], env)
  assert run.finish() == [0], run.err(0)
  return tmp / "run"


def files(folder: Path) -> list[str]:
  """Relative paths of the folder's files; a checkpoint counts as one (orbax names its parts at random)."""
  names = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != ".lock"}
  return sorted({"/".join(n.split("/")[:2]) if n.startswith("checkpoints/") else n for n in names})


def assert_same_results(folder: Path, reference: Path) -> None:
  from jaxlstm import store
  assert files(folder) == files(reference)
  for config_id in json.loads((reference / "manifest.json").read_text())["study"]["configs"]:
    ours, theirs = store.load_params(folder, config_id), store.load_params(reference, config_id)
    for a, b in zip(jax_leaves(ours), jax_leaves(theirs), strict=True):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  for name in files(reference):
    if name.startswith("configs/"):
      assert (folder / name).read_bytes() == (reference / name).read_bytes(), name
  ours, theirs = (pd.read_csv(f / "scores.csv", dtype={"config_id": str}) for f in (folder, reference))
  assert list(ours.columns) == list(theirs.columns)
  assert ours["config_id"].tolist() == theirs["config_id"].tolist()
  numbers = [c for c in theirs.columns if c.startswith(("final_", "best_"))]
  np.testing.assert_allclose(ours[numbers].to_numpy(float), theirs[numbers].to_numpy(float), rtol=1e-5, atol=1e-6)
  for name in files(reference):
    if name.startswith("histories/"):
      with np.load(folder / name) as a, np.load(reference / name) as b:
        assert a.files == b.files
        for key in b.files:
          np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6, err_msg=f"{name}:{key}")


def jax_leaves(tree) -> list:
  import jax
  return jax.tree.leaves(tree)


def committed(folder: Path) -> dict:
  return {c: v["status"] for c, v in json.loads((folder / "manifest.json").read_text())["configs"].items()}


@pytest.mark.timeout(600)
def test_two_processes_write_what_one_process_writes_and_only_process_0_writes(tmp_path, reference):
  env = environment(tmp_path.parent / "xla-cache")
  outs = [tmp_path / "run", tmp_path / "elsewhere"]
  run = distributed(tmp_path, "two", outs, env)
  assert run.finish() == [0, 0], run.err(0) + run.err(1)
  assert not outs[1].exists()  # process 1 never touches a folder
  assert "results:" in run.out(0) and run.out(1) == ""
  assert run.err(1) == "" and "[Gloo]" not in run.out(0) + run.err(0)  # gloo's chatter kept off both streams
  assert_same_results(outs[0], reference)
  manifest = json.loads((outs[0] / "manifest.json").read_text())
  assert manifest["devices"]["processes"] == 2 and manifest["devices"]["devices"] == 2
  assert manifest["sessions"][-1]["devices"]["processes"] == 2
  assert "over 2 processes" in manifest["device"]


@pytest.mark.timeout(600)
def test_processes_started_with_different_studies_are_refused_before_anything_is_written(tmp_path):
  env = environment(tmp_path.parent / "xla-cache")
  outs = [tmp_path / "run", tmp_path / "run1"]
  studies = [STUDY, [*STUDY, "--seed", "1"]]
  run = distributed(tmp_path, "mismatch", outs, env, studies=studies)
  assert run.finish() == [2, 2], run.err(0) + run.err(1)
  for i in (0, 1):
    err = run.err(i)
    assert err.count("\n") == 1 and "jaxlstm.sweep: error: the processes were started with different studies" in err
  assert not outs[0].exists() and not outs[1].exists()
  # An error on one process only (a bad value there) stops every process, naming it.
  studies = [STUDY, [*STUDY, "--set", "model.cells=0"]]
  run = distributed(tmp_path, "bad", outs, env, studies=studies)
  assert run.finish() == [2, 2], run.err(0) + run.err(1)
  assert run.err(0).startswith("jaxlstm.sweep: error: process 1: ") and run.err(0).count("\n") == 1
  assert not outs[0].exists()


@pytest.mark.timeout(900)
@pytest.mark.parametrize("victim", [1, 0])
def test_a_killed_process_stops_the_other_and_the_rerun_resumes(tmp_path, reference, victim):
  env = environment(tmp_path / "cold-cache")  # a cold cache: the second group's compile leaves time to kill
  outs = [tmp_path / "run", tmp_path / "run1"]
  run = distributed(tmp_path, "killed", outs, env)
  deadline = time.monotonic() + HANG
  while not (outs[0] / "manifest.json").exists() or "done" not in committed(outs[0]).values():
    assert time.monotonic() < deadline and run.procs[0].poll() is None, run.err(0)
    time.sleep(0.02)
  assert list(committed(outs[0]).values()).count("done") == 1, "both groups finished before the kill"
  run.kill(victim)
  t0 = time.monotonic()
  survivor = 1 - victim
  status = run.wait(survivor, timeout=PEER_TIMEOUT + 60)
  took = time.monotonic() - t0
  err = run.err(survivor)
  assert status != 0, err
  assert took < PEER_TIMEOUT + 60
  if victim == 1:  # our watchdog, or the collective that lost its peer: one line, status 1
    assert status == 1, err
    assert ("process 1 stopped responding" in err or "lost a peer during a collective" in err), err
  else:  # process 0 hosted the coordination service: jax stops the others itself
    assert "JAX distributed service detected fatal errors" in err or "lost contact with process 0" in err, err
  done = [c for c, s in committed(outs[0]).items() if s == "done"]
  assert len(done) == 1

  rerun = distributed(tmp_path, "rerun", outs, env)
  assert rerun.finish() == [0, 0], rerun.err(0) + rerun.err(1)
  manifest = json.loads((outs[0] / "manifest.json").read_text())
  assert manifest["finished"] and done[0] not in manifest["sessions"][-1]["trained"]
  assert not outs[1].exists()
  assert_same_results(outs[0], reference)
