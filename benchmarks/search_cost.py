"""Issue 16's numbers: a 64-trial TPE search x 30 repeats on the five-point problem.

    python benchmarks/search_cost.py                 # 64 trials, batches of 16, 30 repeats
    python benchmarks/search_cost.py --trials 16     # a shorter run

Runs the CLI as a user would (fresh processes, an empty compilation cache each),
once plain and once with `--race`, over `optim.learning_rate=loguniform:1e-4:1e-1`
with LSTM(10) (the default study's base, `--grid model.cells=10`); reads wall time
from the process and compiles, fits and fits saved from the results folder. The
same search done the usual way (Optuna asking for one trial at a time, a Keras
`model.fit` per trial and repeat) is extrapolated from Keras fits measured in the
same run (`workers.py keras_w1`: LSTM(1), LSTM(5), LSTM(10) of W1, two fits each).
Writes the `search_cost` section of RESULTS.md.
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
import time
from pathlib import Path

import common
from run import write_data

SPACE = "optim.learning_rate=loguniform:1e-4:1e-1"


def search(out: Path, cache: Path, trials: int, batch: int, repeats: int, race: bool) -> dict:
  args = [sys.executable, "-m", "jaxlstm.sweep", "--grid", "model.cells=10", "--space", SPACE, "--search", "tpe",
          "--trials", str(trials), "--batch", str(batch), "--repeats", str(repeats), "--out", str(out),
          "--quiet", *(["--race"] if race else [])]
  load = common.loadavg()
  t0 = time.perf_counter()
  result = common.run_child(args, timeout=3600, env={"XDG_CACHE_HOME": str(cache)}, expect_result=False)
  plots_s = common.wait_for_plots(out, t0, timeout=900)  # the detached renderer, before the next run
  manifest = json.loads((out / "manifest.json").read_text())
  groups = manifest.get("groups", [])
  races = manifest.get("races", [])
  fits = sum(r["fits"] for r in races) if races else trials * repeats
  return {"wall_s": result["wall_s"], "plots_s": plots_s, "cpu_s": result["cpu_s"], "load": max(load, common.loadavg()),
          "compiles": sum(g.get("compiles", 0) for g in groups),
          "compile_s": sum(g.get("compile_seconds", 0.0) for g in groups),
          "train_s": sum(g.get("run_seconds", 0.0) for g in groups),
          "fits": fits, "fits_saved": sum(r["fits_saved"] for r in races), "rss_mib": result["child_peak_rss_mib"]}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--trials", type=int, default=64)
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--repeats", type=int, default=30)
  parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
  args = parser.parse_args()
  started = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
  with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    keras = common.python_child("workers.py", "keras_w1", "--repeats", "2", "--data", write_data(tmp)["W1"],
                                timeout=1800) if common.have("keras") else None
    rows = {}
    for race in (False, True):
      rows[race] = search(tmp / f"run-{race}", tmp / f"cache-{race}", args.trials, args.batch, args.repeats, race)
      print(json.dumps({"race": race, **rows[race]}), flush=True)
  total_fits = args.trials * args.repeats
  table = [["jaxlstm, plain", *cells(rows[False], total_fits)], ["jaxlstm, --race", *cells(rows[True], total_fits)]]
  if keras:
    per_fit = keras["steady_fit_s"]  # the median fit after the first (which pays Keras' start-up)
    table.append(["Optuna + Keras fit per trial and repeat (extrapolated)", f"{per_fit * total_fits:.0f}", "–",
                  "–", "–", f"{total_fits}", "–", "–", "–"])
  header = ["system", "wall s (command returns)", "plots on disk s", "CPU s", "compiles (compile s)", "fits", "fits saved", "training s", "max load"]
  text = "\n".join([
      f"Command: `python benchmarks/search_cost.py --trials {args.trials} --batch {args.batch} --repeats "
      f"{args.repeats}` · {started} · {common.cpu_model()}, jax {common.versions().get('jax')}",
      "",
      f"`python -m jaxlstm.sweep --grid model.cells=10 --space {SPACE} --search tpe --trials {args.trials} "
      f"--batch {args.batch} --repeats {args.repeats} [--race] --quiet`, each a fresh process with an empty "
      "compilation cache, plots drawn by the detached renderer (the default; the harness waits for it before "
      "the next run); the five-point problem, LSTM(10), 500 epochs.",
      "",
      common.markdown_table(header, table),
      "",
      (f"Keras: {keras['fits']} `model.fit` calls of W1 (LSTM(1), (5), (10), 500 epochs, 2 repeats each) took "
       f"{keras['work_s']:.1f} s; the median fit after the first {keras['steady_fit_s']:.2f} s, x {total_fits} "
       "fits (Optuna's own time per trial not counted)."
       if keras else "Keras not installed: no extrapolation."),
  ])
  print(text)
  if not args.no_write:
    common.replace_section("search_cost", text)


def cells(row: dict, total_fits: int) -> list[str]:
  plots = f"{row['plots_s']:.1f}" if row["plots_s"] is not None else "–"
  return [f"{row['wall_s']:.1f}", plots, f"{row['cpu_s']:.1f}", f"{row['compiles']} ({row['compile_s']:.1f})",
          f"{row['fits']}", f"{row['fits_saved']} ({100 * row['fits_saved'] / total_fits:.0f}%)",
          f"{row['train_s']:.1f}", f"{row['load']:.1f}"]


if __name__ == "__main__":
  main()
