"""The same measurements on two revisions of jaxlstm, alternating, in one run.

  python benchmarks/compare_revisions.py 11f694d            # that revision against the working tree
  python benchmarks/compare_revisions.py 11f694d --rounds 5 --w2-epochs 2
  python benchmarks/compare_revisions.py 03c90ca --kinds cli-warm --repeats 1000   # a big study's tables

A refactor must not cost speed; this says whether it did, with both sides measured
under the same load (rounds alternate old/new, then new/old). Each measurement is a
fresh process with the persistent compilation cache off:

  * cli: `python -m jaxlstm.sweep --repeats 30` (the default study; `--repeats` sets
    another count) end to end: wall s, and the compile / run seconds the manifest records;
  * w2: W2 (stacked LSTM(20) x 2 on 1,000 damped sines, batch 32, 30 repeats) for
    `--w2-epochs` epochs through `run_group`: compile s and run s (steady state).

The other revision is checked out into a temporary git worktree and imported from
there (`PYTHONPATH`), so both sides use the same interpreter and packages.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common

W2_CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import workers
import jaxlstm
from jaxlstm.ensemble import plan, run_group
cfg = jaxlstm.Config().override({**workers.W2_OVERRIDES, "train.epochs": int(sys.argv[2])})
(group,) = plan([cfg], 30)
(ens,), info = run_group(group)
print("RESULT " + json.dumps({"compile_s": info.compile_seconds, "run_s": info.run_seconds}))
"""


def measure(kind: str, source: Path, w2_epochs: int, tmp: Path, repeats: int = 30) -> dict:
  env = {"PYTHONPATH": str(source), "JAX_PLATFORMS": "cpu", "JAXLSTM_NO_CACHE": "1"}
  if kind in ("cli", "cli-warm"):
    # As a user runs it (no --quiet: the first line's time is measured). Cold: no cache;
    # warm: a cache of this side's own, primed before the rounds (`prime`).
    out = tmp / f"run-{time.monotonic_ns()}"
    extra = ["--no-cache"]
    if kind == "cli-warm":
      env = {"PYTHONPATH": str(source), "JAX_PLATFORMS": "cpu", "XDG_CACHE_HOME": str(_warm_cache(tmp, source))}
      extra = []
    t0 = time.perf_counter()
    r = common.run_child([sys.executable, "-m", "jaxlstm.sweep", "--repeats", str(repeats), "--out", str(out), *extra],
                         timeout=600, env=env, cwd=source, expect_result=False)
    plots = common.wait_for_plots(out, t0)  # never beside the next measurement
    group = json.loads((out / "manifest.json").read_text())["groups"][0]
    return {"wall_s": r["wall_s"], "first_line_s": r["first_output_s"], "cpu_s": r["cpu_s"],
            "plots_s": plots, "compile_s": group["compile_seconds"], "run_s": group["run_seconds"]}
  r = common.run_child([sys.executable, "-c", W2_CHILD, str(common.HERE), str(w2_epochs)], timeout=900,
                       env=env, cwd=source)
  return {"wall_s": r["wall_s"], "compile_s": r["compile_s"], "run_s": r["run_s"]}


def _warm_cache(tmp: Path, source: Path) -> Path:
  return tmp / f"xdg-{abs(hash(str(source)))}"


def prime(source: Path, tmp: Path, repeats: int = 30) -> None:
  """Fill a side's warm cache with one run of the default study."""
  out = tmp / f"prime-{time.monotonic_ns()}"
  env = {"PYTHONPATH": str(source), "JAX_PLATFORMS": "cpu", "XDG_CACHE_HOME": str(_warm_cache(tmp, source))}
  t0 = time.perf_counter()
  common.run_child([sys.executable, "-m", "jaxlstm.sweep", "--repeats", str(repeats), "--out", str(out), "--quiet"],
                   timeout=600, env=env, cwd=source, expect_result=False)
  common.wait_for_plots(out, t0)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("old", help="a git revision to compare with the working tree")
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--w2-epochs", type=int, default=2)
  parser.add_argument("--skip-w2", action="store_true")
  parser.add_argument("--kinds", default="cli,cli-warm,w2", help="comma-separated: cli, cli-warm, w2")
  parser.add_argument("--repeats", type=int, default=30, help="repeats of the default study in cli, cli-warm")
  args = parser.parse_args(argv)
  with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    old_tree = tmp / "old"
    subprocess.run(["git", "-C", str(common.ROOT), "worktree", "add", "--detach", str(old_tree), args.old],
                   check=True, capture_output=True)
    try:
      sides = {"old": old_tree, "new": common.ROOT}
      kinds = [k for k in args.kinds.split(",") if not (args.skip_w2 and k == "w2")]
      results = {(s, k): [] for s in sides for k in kinds}
      if "cli-warm" in kinds:
        for source in sides.values():
          prime(source, tmp, args.repeats)
      for r in range(args.rounds):
        order = list(sides) if r % 2 == 0 else list(reversed(sides))
        for kind in kinds:
          for side in order:
            load = common.loadavg()
            results[(side, kind)].append(dict(measure(kind, sides[side], args.w2_epochs, tmp, args.repeats), load=load))
            print(f"round {r + 1} {kind} {side}: {results[(side, kind)][-1]} (load {common.loadavg():.2f})",
                  flush=True)
    finally:
      subprocess.run(["git", "-C", str(common.ROOT), "worktree", "remove", "--force", str(old_tree)],
                     capture_output=True)
  rows = []
  for kind in kinds:
    for field in ("wall_s", "first_line_s", "cpu_s", "plots_s", "compile_s", "run_s"):
      old = [m[field] for m in results[("old", kind)] if m.get(field) is not None]
      new = [m[field] for m in results[("new", kind)] if m.get(field) is not None]
      if not old or not new:
        continue
      rows.append([kind, field, statistics.median(old), f"{min(old):.2f}–{max(old):.2f}",
                   statistics.median(new), f"{min(new):.2f}–{max(new):.2f}",
                   f"{statistics.median(new) / statistics.median(old):.2f}"])
  loads = [m["load"] for runs in results.values() for m in runs]
  print(f"\n{args.old} (old) against the working tree (new), {args.rounds} alternating rounds, "
        f"1-minute load {min(loads):.2f}–{max(loads):.2f} before the measurements; cli = default study "
        f"at {args.repeats} repeats "
        f"(cold: no cache; cli-warm: primed cache), w2 = {args.w2_epochs} epochs of W2; first_line_s = "
        f"first output line, plots_s = plots on disk (old: before the command returned)\n")
  print(common.markdown_table(["work", "seconds", "old median", "old min–max", "new median", "new min–max",
                               "new / old"], rows))


if __name__ == "__main__":
  sys.exit(main())
