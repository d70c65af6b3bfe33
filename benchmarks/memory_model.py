"""Does `--dry-run`'s memory estimate hold? Estimated against measured peak RSS, per study.

  python benchmarks/memory_model.py            # default study, W2, 1000 seeds; 2 runs each; rewrites RESULTS.md
  python benchmarks/memory_model.py --runs 1 --no-write

For each case the same command runs twice: with `--dry-run` (the estimate it prints:
`runner.estimate_memory`, "estimated peak memory X MiB") and for real, in a fresh
process with an empty compilation cache (so the XLA compiler's memory counts, as on a
user's first run), whose peak RSS is the child's own `ru_maxrss` (`common.run_child`).
The plots are drawn by the sweep's background renderer, a separate process that is not
part of the sweep's peak (it is waited for, so it never overlaps the next run).
The table says whether each estimate lies within ±30% of the measured peak.
"""
from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import common

W2_SETS = ["data.problem=damped_sine", "data.options.n_train=1000", "data.options.n_val=200", "model.cells=20",
           "model.layers=2", "train.epochs=20", "train.batch_size=32", "train.shuffle=true", "train.loss=mae"]
CASES = {
    "default study (3 configs x 30 repeats)": ["--repeats", "30"],
    "1000 seeds (`--experiment repeats`, LSTM(10))": ["--experiment", "repeats", "--repeats", "1000"],
    "W2 (stacked LSTM(20) x 2, 30 repeats)": [*sum((["--set", s] for s in W2_SETS), []), "--repeats", "30"],
}
TOLERANCE = 0.30
TIMEOUT = 1200


def estimate_mib(args: list[str], env: dict) -> float:
  import subprocess
  proc = subprocess.run([sys.executable, "-m", "jaxlstm.sweep", *args, "--dry-run"], capture_output=True,
                        text=True, env=env, cwd=common.ROOT, timeout=300)
  match = re.search(r"estimated peak memory ([\d.]+) (MiB|GiB)", proc.stdout)
  if proc.returncode != 0 or not match:
    raise RuntimeError(f"--dry-run failed: {proc.stdout[-500:]} {proc.stderr[-500:]}")
  return float(match.group(1)) * (1024 if match.group(2) == "GiB" else 1)


def measure(args: list[str], tmp: Path, env: dict) -> dict:
  out = tmp / f"run-{time.monotonic_ns()}"
  env = dict(env, XDG_CACHE_HOME=str(tmp / f"xdg-{time.monotonic_ns()}"))  # cold: compile included
  t0 = time.perf_counter()
  r = common.run_child([sys.executable, "-m", "jaxlstm.sweep", *args, "--out", str(out), "--quiet"],
                       timeout=TIMEOUT, env=env, expect_result=False)
  common.wait_for_plots(out, t0)
  shutil.rmtree(out, ignore_errors=True)
  return {"peak_mib": r["child_peak_rss_mib"], "wall_s": r["wall_s"], "load": common.loadavg()}


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--runs", type=int, default=2, help="real runs per case (the table gives the largest peak)")
  p.add_argument("--no-write", action="store_true", help="print the table, leave RESULTS.md alone")
  opts = p.parse_args(argv)
  env = {"JAX_PLATFORMS": "cpu"}
  rows, loads = [], [common.loadavg()]
  with tempfile.TemporaryDirectory(prefix="jaxlstm-mem-") as tmp:
    for name, args in CASES.items():
      estimate = estimate_mib(args, env)
      runs = []
      for i in range(opts.runs):
        runs.append(measure(args, Path(tmp), env))
        loads.append(runs[-1]["load"])
        print(f"{name}: run {i + 1}: peak {runs[-1]['peak_mib']:.0f} MiB, wall {runs[-1]['wall_s']:.1f} s "
              f"(estimate {estimate:.0f} MiB, load {runs[-1]['load']:.2f})", flush=True)
      peak = max(r["peak_mib"] for r in runs)
      error = estimate / peak - 1
      rows.append([name, "`python -m jaxlstm.sweep " + " ".join(args) + "`", f"{estimate:.0f}",
                   f"{peak:.0f} ({', '.join(format(r['peak_mib'], '.0f') for r in runs)})", f"{error:+.0%}",
                   "yes" if abs(error) <= TOLERANCE else "**no**"])
  v = common.versions()
  head = (f"Command: `python benchmarks/memory_model.py{' ' + ' '.join(argv) if argv else ''}` · "
          f"{time.strftime('%Y-%m-%d %H:%M')} · {common.cpu_model()}, {common.machine()['cores']} cores · "
          f"jax {v['jax']}, jaxlstm commit {v['jaxlstm commit']} · load {min(loads):.2f}–{max(loads):.2f}\n\n"
          "Estimate: `--dry-run`'s \"estimated peak memory\" (`runner.estimate_memory`); measured: peak RSS of the "
          "sweep process, cold compilation cache, largest of the runs (all runs in brackets). Target: within "
          f"±{TOLERANCE:.0%}.\n\n")
  table = common.markdown_table(["case", "command", "estimated MiB", "measured peak RSS MiB", "estimate vs measured",
                                 f"within ±{TOLERANCE:.0%}"], rows)
  print("\n" + head + table)
  if not opts.no_write:
    common.replace_section("memory_model", head + table)


if __name__ == "__main__":
  main()
