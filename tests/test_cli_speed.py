"""What the CLI's speed work promises, as structure (never as wall time; benchmarks/ measures that).

* the plan is the first line, printed before jax is imported and before anything trains;
* the sweep's own process never imports matplotlib or scipy.stats (plots are drawn by a
  detached renderer, the tables' statistics use scipy.special), nor pandas, scipy or orbax
  at all when a report worker started with it writes the checkpoints and the tables
  (`jaxlstm.render.Worker`); a worker that died is replaced by the sweep, one whose sweep
  stopped early writes nothing;
* plots exist after the command (background renderer) or after a rerun, and a failed
  render is visible; a rerun while the renderer draws leaves its temp files alone;
* a warm compilation cache compiles nothing through the CLI, and imports no flax.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
import scipy.stats

from jaxlstm import report, stats, store, sweep, tables

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--repeats", "2", "--epochs", "3"]
PLOTS = {"scores.png", "curves.png", "repeats.png", "diagnosis.png", "prob_improvement.png"}

# Runs the CLI in a fresh interpreter and reports, as JSON on the last line: whether jax was
# imported when the first stderr line was written, the stderr lines, and whether matplotlib
# or scipy.stats were loaded by the end.
PROBE = r"""
import io, json, sys
state = {"jax_at_first_line": None, "lines": []}

class Probe(io.TextIOBase):
  def write(self, text):
    if text.strip():
      if state["jax_at_first_line"] is None:
        state["jax_at_first_line"] = "jax" in sys.modules
      state["lines"].append(text.strip())
    return len(text)

sys.stderr = Probe()
from jaxlstm.sweep import main
status = main(sys.argv[1:])
print(json.dumps({"status": status, **state, "matplotlib": "matplotlib" in sys.modules,
                  "scipy_stats": "scipy.stats" in sys.modules, "scipy": "scipy" in sys.modules,
                  "pandas": "pandas" in sys.modules, "orbax": "orbax" in sys.modules}))
"""
# The same, counting persistent-cache events and traces from the start (jax imported first).
COUNT = r"""
import json, sys
import jax.monitoring
events, traced = [], []
jax.monitoring.register_event_listener(lambda event, **kwargs: events.append(event))
jax.monitoring.register_event_duration_secs_listener(
    lambda event, duration, **kw: traced.append(kw.get("fun_name"))
    if event == "/jax/core/compile/jaxpr_trace_duration" else None)
from jaxlstm.sweep import main
status = main(sys.argv[1:])
print(json.dumps({"status": status, "misses": events.count("/jax/compilation_cache/cache_misses"),
                  "hits": events.count("/jax/compilation_cache/cache_hits"), "traced": traced,
                  "flax": "flax" in sys.modules, "optax": "optax" in sys.modules}))
"""


def run_python(code: str, args, env_extra=None, timeout=240) -> dict:
  env = dict(os.environ, PYTHONPATH=str(ROOT), **(env_extra or {}))
  proc = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                        env=env, cwd=ROOT, timeout=timeout)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def wait_for_renderer(out: Path, timeout: float = 180) -> dict:
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    status = report.render_status(out) or {}
    if status.get("status") in ("done", "failed"):
      return status
    time.sleep(0.1)
  raise AssertionError(f"the plot renderer of {out} did not finish: {report.render_status(out)}")


def test_plan_line_first_before_jax_and_no_plot_or_scipy_stats_imports(tmp_path):
  out = tmp_path / "run"
  result = run_python(PROBE, [*TINY, "--out", out, "--plots", "background"])
  assert result["status"] == 0
  first = result["lines"][0]
  assert first.startswith("jaxlstm.sweep: study cells: 3 config(s) x 2 repeats = 6 members, seed 0 ->"), first
  assert str(out) in first
  assert result["jax_at_first_line"] is False
  assert any(line.startswith("jaxlstm.sweep: group 1/1:") for line in result["lines"][1:])
  # The sweep's process drew nothing and imported neither pandas, scipy nor orbax: its
  # report worker wrote the checkpoints and the tables, and draws.
  assert not result["matplotlib"] and not result["scipy_stats"]
  assert not result["pandas"] and not result["scipy"] and not result["orbax"]
  assert any("drawing the plots in the background" in line for line in result["lines"])
  status = wait_for_renderer(out)
  assert status["status"] == "done" and status["errors"] == []
  assert {p.name for p in (out / "plots").glob("*.png")} == PLOTS
  assert report.missing_plots(out) == []


def test_background_plots_are_drawn_after_the_command_and_again_after_a_rerun(tmp_path, capsys):
  out = tmp_path / "run"
  argv = [*TINY, "--out", str(out), "--plots", "background"]
  assert sweep.main(argv) == 0
  # report.md links every plot the renderer draws (written before they exist).
  text = (out / "report.md").read_text()
  assert all(f"](plots/{name})" in text for name in PLOTS)
  wait_for_renderer(out)
  assert report.missing_plots(out) == []
  drawn = (out / "report.md").read_bytes()

  # Plots lost (or a renderer killed before it drew them): a rerun draws them again.
  for png in (out / "plots").glob("*.png"):
    png.unlink()
  report.store.write_json(out / report.RENDER_STATUS, {"status": "done", "errors": []})
  capsys.readouterr()
  assert sweep.main(argv) == 0
  assert "drawing the plots in the background" in capsys.readouterr().err
  wait_for_renderer(out)
  assert report.missing_plots(out) == [] and (out / "report.md").read_bytes() == drawn


def test_a_failed_render_is_visible_and_drawn_again_on_the_next_run(tmp_path, capsys, monkeypatch):
  out = tmp_path / "run"
  argv = [*TINY, "--out", str(out), "--plots", "wait"]
  assert sweep.main(argv) == 0
  # The renderer as the detached process runs it, with a plot that cannot be drawn.
  real_save = report.plots.save

  def broken(figure, target, **kwargs):
    if Path(target).name == "scores.png":
      raise RuntimeError("disk full")
    real_save(figure, target, **kwargs)

  (out / "plots" / "scores.png").unlink()
  monkeypatch.setattr(report.plots, "save", broken)
  assert report._render_in_background(out, 0) == 1
  status = report.render_status(out)
  assert status["status"] == "failed" and status["errors"] == ["plot scores.png not written (RuntimeError: disk full)"]
  assert "The box plot could not be drawn" in (out / "report.md").read_text()
  monkeypatch.setattr(report.plots, "save", real_save)

  capsys.readouterr()
  assert sweep.main(argv) == 0
  err = capsys.readouterr().err
  assert "drawing the plots failed last time (plot scores.png not written (RuntimeError: disk full)" in err
  assert report.render_status(out)["status"] == "done"
  assert (out / "plots" / "scores.png").is_file() and report.missing_plots(out) == []
  assert "could not be drawn" not in (out / "report.md").read_text()


def test_a_rerun_while_the_renderer_draws_keeps_its_temp_files(tmp_path, capsys):
  out = tmp_path / "run"
  argv = [*TINY, "--out", str(out), "--plots", "wait"]
  assert sweep.main(argv) == 0
  # A live renderer (a real process whose command line names jaxlstm.report) is mid-plot.
  drawing = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "jaxlstm.report"])
  try:
    report.store.write_json(out / report.RENDER_STATUS, {"status": "running", "pid": drawing.pid})
    half = out / "plots" / ".tmp-abc.png"
    half.write_bytes(b"\x89PNG")
    capsys.readouterr()
    assert sweep.main(argv) == 0
    assert half.is_file() and "leftover" not in capsys.readouterr().err
  finally:
    drawing.kill()
    drawing.wait()
  # The renderer gone, what it left is a crash's leftover.
  assert sweep.main(argv) == 0
  assert not half.exists() and "removed 1 leftover(s) of an interrupted run: " in capsys.readouterr().err


def test_jaxlstm_report_draws_the_plots_a_background_run_has_not_drawn_yet(tmp_path):
  out = tmp_path / "run"
  assert sweep.main([*TINY, "--out", str(out), "--plots", "wait"]) == 0
  for png in (out / "plots").glob("*.png"):
    png.unlink()
  assert report.main([str(out)]) == 0
  assert {p.name for p in (out / "plots").glob("*.png")} == PLOTS


def test_a_warm_cache_compiles_nothing_through_the_cli(tmp_path):
  env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "JAXLSTM_PLOTS": "wait"}
  cold = run_python(COUNT, [*TINY, "--out", tmp_path / "a", "--quiet"], env)
  warm = run_python(COUNT, [*TINY, "--out", tmp_path / "b", "--quiet"], env)
  assert cold["status"] == warm["status"] == 0
  assert "run_chunk" in cold["traced"]  # compiled (through the program store, not JAX's cache)
  # The program store serves every program and the shapes of its arguments: nothing compiles,
  # nothing is even traced, and JAX's cache is not asked.
  assert warm["misses"] == 0 and warm["traced"] == [], warm
  # Nothing traces a network or builds an optimizer, so neither flax (`jaxlstm.networks`) nor
  # optax (`jaxlstm.optim`, `ensemble.boundary_states`) is imported; the cold run needed both.
  assert cold["flax"] and not warm["flax"] and cold["optax"] and not warm["optax"]
  assert (tmp_path / "a" / "scores.csv").read_bytes() == (tmp_path / "b" / "scores.csv").read_bytes()
  # JAXLSTM_NO_CACHE=1 switches the cache off for the command line too (no --no-cache needed).
  off = run_python(COUNT, [*TINY, "--out", tmp_path / "c", "--quiet"], {**env, "JAXLSTM_NO_CACHE": "1"})
  assert off["status"] == 0 and off["misses"] == 0 and off["hits"] == 0 and "run_chunk" in off["traced"]


def test_midranks_equal_scipy_rankdata():
  rng = np.random.default_rng(0)
  for shape in [(7,), (3, 5), (50, 2, 12)]:
    for ties in (False, True):
      x = rng.integers(0, 4, shape).astype(float) if ties else rng.normal(size=shape)
      np.testing.assert_array_equal(stats._midranks(x), scipy.stats.rankdata(x, axis=-1))


@pytest.mark.parametrize("shape", [(1, 30, 30), (3, 12, 7), (2, 5, 200), (19, 9, 11), (1, 400, 300)])
@pytest.mark.parametrize("ties", [False, True])
def test_bootstrap_prob_from_draw_counts_equals_midranks_bit_for_bit(shape, ties):
  """The PoI bootstrap counts wins per pair of repeats instead of ranking each resample; the
  probabilities must be the very same floats (the comparisons table's bytes must not change)."""
  tasks, na, nb = shape
  rng = np.random.default_rng(sum(shape) + ties)
  draw = (lambda n: rng.integers(0, 4, (tasks, n)).astype(float)) if ties else (lambda n: rng.normal(size=(tasks, n)))
  a, b = draw(na), draw(nb)
  pick_a, pick_b = rng.integers(0, na, (300, tasks, na)), rng.integers(0, nb, (300, tasks, nb))
  by_ranks = stats._prob_greater(np.take_along_axis(a[None], pick_a, axis=-1),
                                 np.take_along_axis(b[None], pick_b, axis=-1))
  np.testing.assert_array_equal(stats._prob_greater_resampled(a, b, pick_a, pick_b), by_ranks)


@pytest.mark.parametrize("alternative", ["two-sided", "better", "worse"])
def test_welch_without_scipy_stats_equals_scipy(alternative):
  rng = np.random.default_rng(1)
  a, b = rng.normal(0, 1, 12), rng.normal(0.5, 2, 9)
  ours = stats.welch_test(a, b, higher_is_better=True, alternative=alternative)
  raw = {"two-sided": "two-sided", "better": "greater", "worse": "less"}[alternative]
  theirs = scipy.stats.ttest_ind(a, b, equal_var=False, alternative=raw)
  assert ours.pvalue == pytest.approx(theirs.pvalue, rel=1e-12)
  assert ours.statistic == pytest.approx(theirs.statistic, rel=1e-12)


def worker_spy(monkeypatch, then=None) -> list:
  """The report workers the sweep starts (real processes), each passed to `then` first."""
  started = []
  real = sweep._start_worker

  def start(*args):
    worker = real(*args)
    started.append(worker)
    if then is not None:
      then(worker)
    return worker

  monkeypatch.setattr(sweep, "_start_worker", start)
  return started


def test_the_report_worker_writes_the_tables_and_the_sweep_prints_its_table(tmp_path, capsys, monkeypatch):
  out = tmp_path / "run"
  started = worker_spy(monkeypatch)
  assert sweep.main([*TINY, "--out", str(out), "--plots", "background"]) == 0
  captured = capsys.readouterr()
  (worker,) = started
  assert f"drawing the plots in the background (pid {worker.pid})" in captured.err
  assert tables.format_summary(out) in captured.out
  assert all((out / name).is_file() for name in (tables.SCORES, tables.SUMMARY, tables.DIAGNOSIS,
                                                  tables.COMPARISONS, "report.md"))
  assert wait_for_renderer(out)["status"] == "done" and report.missing_plots(out) == []
  # The page it drew gives the session's wall time: the session ended before the report.
  assert "not finished" not in (out / "report.md").read_text()
  # It wrote the checkpoints too: the same params as the sweep's own orbax save, nothing left over.
  alone = tmp_path / "alone"
  assert sweep.main([*TINY, "--out", str(alone), "--plots", "wait"]) == 0
  assert_same_checkpoints(out, alone)


def assert_same_checkpoints(out: Path, reference: Path) -> None:
  ids = sorted(p.name for p in (reference / "checkpoints").iterdir())
  assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ids
  for config_id in ids:
    jax.tree.map(np.testing.assert_array_equal, store.load_params(out, config_id),
                 store.load_params(reference, config_id))
  assert store.clean_leftovers(out) == []


def test_a_report_worker_that_died_is_replaced_by_the_sweep(tmp_path, capsys, monkeypatch):
  out = tmp_path / "run"

  def kill(worker):
    os.kill(worker.pid, signal.SIGKILL)
    worker._proc.wait(timeout=60)

  started = worker_spy(monkeypatch, then=kill)
  assert sweep.main([*TINY, "--out", str(out), "--plots", "background"]) == 0
  captured = capsys.readouterr()
  assert (f"the report worker (pid {started[0].pid}) stopped without writing the report; writing it here"
          in captured.err)
  assert tables.format_summary(out) in captured.out and (out / tables.COMPARISONS).is_file()
  assert "drawing the plots in the background" in captured.err  # by a renderer started instead
  assert wait_for_renderer(out)["status"] == "done" and report.missing_plots(out) == []
  # The checkpoints it did not write, the sweep wrote.
  params = [store.load_params(out, p.name) for p in (out / "checkpoints").iterdir()]
  assert len(params) == 3 and store.clean_leftovers(out) == []


def test_a_report_worker_leaves_without_writing_when_the_sweep_stops_before_training(tmp_path, capsys,
                                                                                    monkeypatch):
  out = tmp_path / "run"
  started = worker_spy(monkeypatch)
  assert sweep.main([*TINY, "--out", str(out), "--plots", "background", "--max-memory", "1M"]) == 2
  assert "--max-memory" in capsys.readouterr().err
  (worker,) = started
  assert worker._proc.wait(timeout=120) == 0
  assert not out.exists()


def test_the_report_of_a_finished_run_gives_its_session_wall_time(tmp_path):
  # The session ends before the report is written (it read "not finished (interrupted)").
  out = tmp_path / "run"
  assert sweep.main([*TINY, "--out", str(out), "--plots", "wait"]) == 0
  text = (out / "report.md").read_text()
  assert "Sessions: session 1: " in text and " s wall, 3 configs trained." in text
  assert "not finished" not in text
