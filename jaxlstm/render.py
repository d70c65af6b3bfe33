"""The report's processes: the renderer that draws a folder's plots, and the worker that writes its tables.

The report (`jaxlstm.report`) needs pandas, scipy and matplotlib: ~1 s of imports and
~3 s of drawing that a sweep's user need not wait for. Two processes take them off the
sweep's critical path:

* the **renderer**, `python -m jaxlstm.report --background DIR` (`start_renderer`),
  draws the PNGs report.md links, detached, after the tables and the page are written.
  Its state is kept in RENDER_STATUS: "running" (with its pid), "done" or "failed"
  (with the warnings); its output is in RENDER_LOG. A rerun of the sweep, or
  `python -m jaxlstm.report DIR`, draws whatever is missing or failed.
* the **worker**, `python -m jaxlstm.render --serve DIR` (`Worker`, `serve`), started
  with the sweep before jax is imported: it imports what the tables need on the second
  core while the sweep imports jax and trains. Once every result is on disk the sweep
  tells it to go (`Worker.finish`); it writes the tables and report.md, answers with
  the describe() table the sweep prints, and goes on as the renderer. If the sweep ends
  without telling it, it leaves without touching the tables.

Standard library only: the sweep imports this module on its way to jax.
"""
from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from jaxlstm import store

PROG = "jaxlstm.report"
WORKER = "jaxlstm.render"  # the worker's module: `serve`, then `jaxlstm.report`'s
RENDER_STATUS = ".plots-status.json"
RENDER_LOG = ".plots-render.log"
STARTUP_SECONDS = 60  # a renderer that has not recorded its pid by then never started
GO = "go"
PLOTS_MODES = ("background", "wait")


def default_plots_mode() -> str:
  """How the sweep draws its plots unless told: $JAXLSTM_PLOTS ("background" or "wait"), else background."""
  mode = os.environ.get("JAXLSTM_PLOTS", "").strip().lower()
  return mode if mode in PLOTS_MODES else "background"


def render_status(run_dir: str | Path) -> dict | None:
  """The background renderer's last state of a folder (None if it never ran there)."""
  try:
    status = store.read_json(Path(run_dir, RENDER_STATUS))
  except (OSError, ValueError):
    return None
  return status if isinstance(status, dict) else None


def record(run_dir: Path, status: str, *, only_if_present: bool = False, **extra) -> None:
  """Write the renderer's state of a folder ("running", "done" or "failed", with `extra`)."""
  if only_if_present and not (run_dir / RENDER_STATUS).is_file():
    return  # a folder never rendered in the background keeps no status file
  store.write_json(run_dir / RENDER_STATUS, {"status": status, "time": datetime.datetime.now(
      datetime.timezone.utc).isoformat(timespec="milliseconds"), **extra})


def renderer_running(run_dir: str | Path) -> bool:
  """Whether a background renderer of this folder is alive now."""
  status = render_status(run_dir)
  if not status or status.get("status") != "running":
    return False
  if status.get("pid") is None:  # starting: alive unless it never got going
    try:
      started = datetime.datetime.fromisoformat(status["time"])
    except (KeyError, TypeError, ValueError):
      return False
    return (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds() < STARTUP_SECONDS
  try:
    pid = int(status["pid"])
    os.kill(pid, 0)
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes() if Path("/proc").is_dir() else PROG.encode()
  except (KeyError, TypeError, ValueError, OSError):
    return False
  return PROG.encode() in cmdline or WORKER.encode() in cmdline  # not a recycled pid


def links_plots(run_dir: str | Path) -> bool:
  """Whether a folder's report.md links any plot."""
  try:
    return "](plots/" in Path(run_dir, "report.md").read_text(encoding="utf-8")
  except OSError:
    return False


def missing_plots(run_dir: str | Path) -> list[str]:
  """Plots report.md links that are not on disk (relative paths, in page order)."""
  path = Path(run_dir)
  try:
    text = (path / "report.md").read_text(encoding="utf-8")
  except OSError:
    return []
  return [p for p in dict.fromkeys(re.findall(r"!\[[^\]]*\]\((plots/[^)]+\.png)\)", text))
          if not (path / p).is_file()]


def _report_process(mode: str, run_dir: Path, rng_seed: int, *, module: str = PROG, **popen) -> subprocess.Popen:
  package_root = str(Path(__file__).resolve().parent.parent)  # this jaxlstm, whatever sys.path says
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [package_root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]))
  return subprocess.Popen([sys.executable, "-m", module, mode, "--rng-seed", str(rng_seed), str(run_dir)],
                          env=env, start_new_session=True, close_fds=True, **popen)


def start_renderer(run_dir: str | Path, *, rng_seed: int = 0) -> int:
  """Draw a folder's plots in a detached process (it outlives the caller); returns its pid.

  The process writes RENDER_STATUS ("running", then "done" or "failed") and its
  output to RENDER_LOG in the folder.
  """
  path = Path(run_dir).absolute()
  # "running" before the process exists, so that nobody waits on the previous state;
  # the process then records its pid, and at the end "done" or "failed".
  record(path, "running", pid=None)
  with open(path / RENDER_LOG, "wb") as log:
    proc = _report_process("--background", path, rng_seed, stdin=subprocess.DEVNULL, stdout=log,
                           stderr=subprocess.STDOUT)
  return proc.pid


class Worker:
  """A report worker started before the training (see the module docstring).

  `finish` once every result is on disk, or `cancel`; a worker whose sweep ends
  (returns, crashes or is killed) without either sees its input close and leaves.
  """

  def __init__(self, proc: subprocess.Popen, run_dir: Path):
    self._proc, self._run_dir, self._gone = proc, run_dir, False

  @classmethod
  def start(cls, run_dir: str | Path, *, rng_seed: int = 0) -> Worker | None:
    """A worker for `run_dir` (which need not exist yet); None if no process can be started."""
    try:
      proc = _report_process("--serve", Path(run_dir).absolute(), rng_seed, module=WORKER,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    except OSError:
      return None
    return cls(proc, Path(run_dir).absolute())

  @property
  def pid(self) -> int:
    return self._proc.pid

  def finish(self) -> dict[str, Any] | None:
    """Have the worker write the tables and report.md; its reply, or None if it could not.

    The reply: {"status": "ok", "summary": the describe() table (`tables.format_summary`),
    "drawing": whether it now draws the plots, "report_error": why report.md was not
    written, if it was not} or {"status": "failed", "error": why the tables were not}.
    """
    if self._gone:
      return None
    try:
      self._proc.stdin.write(f"{GO}\n".encode())
      self._proc.stdin.close()
      answer = self._proc.stdout.read()
    except (OSError, ValueError):  # it died before reading, or was cancelled
      return None
    finally:
      self._proc.stdout.close()
    try:
      reply = json.loads(answer)
    except ValueError:  # it died before answering
      return None
    return reply if isinstance(reply, dict) and reply.get("status") in ("ok", "failed") else None

  def cancel(self) -> None:
    """Let the worker go without writing anything (it leaves when its input closes)."""
    for pipe in (self._proc.stdin, self._proc.stdout):
      try:
        pipe.close()
      except OSError:
        pass


def serve(argv: list[str]) -> int:
  """The worker: `python -m jaxlstm.render --serve --rng-seed N DIR` (what `Worker.start` runs).

  Imports the report's modules (pandas and what the tables need, ~0.5 s) while the
  sweep imports jax and trains, then waits for "go". It never imports jax.
  """
  if len(argv) != 4 or argv[0] != "--serve" or argv[1] != "--rng-seed":
    print(f"usage: python -m {WORKER} --serve --rng-seed N DIR (the sweep's report worker)", file=sys.stderr)
    return 2
  os.environ["JAX_PLATFORMS"] = "cpu"  # should anything the report imports bring jax after all
  from jaxlstm import report
  return report._serve(Path(argv[3]), int(argv[2]))


def wait_for_go() -> bool:
  """Read the sweep's input until "go" (True) or its end (False: the sweep stopped without it)."""
  while True:
    line = sys.stdin.readline()
    if not line:
      return False
    if line.strip() == GO:
      return True


if __name__ == "__main__":
  sys.exit(serve(sys.argv[1:]))
