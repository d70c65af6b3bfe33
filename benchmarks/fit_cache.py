"""What a second `jaxlstm.fit` of the same shapes costs, in the same process and in a new one.

  python benchmarks/fit_cache.py            # the table below, written into RESULTS.md
  python benchmarks/fit_cache.py --quick    # print only

A research script calls `fit` again and again with a new seed or new data of the
same shapes. Each call below is timed end to end (keys, data, the compiled call,
results back on the host):

  * in one process: fit(seed=3) (cold: compiles), fit(seed=4), fit(seed=5), fit on
    new data of the same shapes; the in-process program cache serves calls 2-4;
  * a new process with the persistent XLA cache left warm by the first: its first
    fit loads the program instead of compiling it (jax's own cache events counted).

Workload: the default study's LSTM(10) on the five-point problem, 500 epochs, full
batch, 12 repeats (`--epochs`, `--repeats` to change).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time

import common


def child(repeats: int, epochs: int) -> None:
  import collections

  import jax
  events = collections.Counter()
  jax.monitoring.register_event_listener(lambda event, **kw: events.update([event]))
  import dataclasses

  import jaxlstm
  cfg = jaxlstm.Config().override({"model.cells": 10, "train.epochs": epochs, "train.batch_size": 0,
                                   "train.shuffle": False})
  data = jaxlstm.problems.make("linear")
  shifted = dataclasses.replace(data, x_train=data.x_train + 0.05, y_train=data.y_train + 0.05)
  calls = []
  for label, dataset, seed in (("seed 3", data, 3), ("seed 4", data, 4), ("seed 5", data, 5),
                               ("new data, same shapes", shifted, 3)):
    t0 = time.perf_counter()
    ens = jaxlstm.fit(cfg, dataset, repeats=repeats, seed=seed)
    calls.append({"call": label, "wall_s": time.perf_counter() - t0, "compiles": ens.timings["compiles"],
                  "compile_s": ens.timings["compile_seconds"], "run_s": ens.timings["run_seconds"]})
  common.emit({"calls": calls, "cache_misses": events["/jax/compilation_cache/cache_misses"],
               "cache_hits": events["/jax/compilation_cache/cache_hits"]})


def measure(repeats: int, epochs: int, runs: int) -> dict:
  out = {"cold": [], "warm_process": []}
  for _ in range(runs):
    with tempfile.TemporaryDirectory() as cache:
      env = {"XDG_CACHE_HOME": cache, "JAX_PLATFORMS": "cpu"}
      args = ["--child", "--repeats", str(repeats), "--epochs", str(epochs)]
      out["cold"].append(common.python_child("fit_cache.py", *args, timeout=600, env=env))
      out["warm_process"].append(common.python_child("fit_cache.py", *args, timeout=600, env=env))
  return out


def render(res: dict, repeats: int, epochs: int) -> str:
  rows = []
  for kind, label in (("cold", "new process, empty persistent cache"),
                      ("warm_process", "new process, warm persistent cache")):
    runs = res[kind]
    for i, call in enumerate(runs[0]["calls"]):
      walls = [r["calls"][i]["wall_s"] for r in runs]
      first = statistics.median(r["calls"][0]["wall_s"] for r in runs)
      rows.append([label if i == 0 else "", call["call"], statistics.median(walls),
                   f"{min(walls):.2f}–{max(walls):.2f}", f"{100 * statistics.median(walls) / first:.0f}%",
                   str(runs[0]["calls"][i]["compiles"])])
    misses = [r["cache_misses"] for r in runs]
    rows.append(["", "persistent-cache misses / hits in this process", "", "",
                 "", f"{max(misses)} / {min(r['cache_hits'] for r in runs)}"])
  head = (f"`jaxlstm.fit` of the default study's LSTM(10), {repeats} repeats, {epochs} epochs; "
          f"medians of {len(res['cold'])} runs, each a fresh process.\n\n")
  return head + common.markdown_table(
      ["process", "call", "wall s (median)", "min–max", "of the first call",
       "programs built (compiled, or loaded from the persistent cache)"], rows)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--child", action="store_true")
  parser.add_argument("--repeats", type=int, default=12)
  parser.add_argument("--epochs", type=int, default=500)
  parser.add_argument("--runs", type=int, default=3)
  parser.add_argument("--quick", action="store_true", help="one run, print only")
  args = parser.parse_args(argv)
  if args.child:
    child(args.repeats, args.epochs)
    return
  runs = 1 if args.quick else args.runs
  res = measure(args.repeats, args.epochs, runs)
  text = render(res, args.repeats, args.epochs)
  print(text)
  if not args.quick:
    machine = common.machine()
    body = (f"Command: `python benchmarks/fit_cache.py`; {machine['cpu']}, {machine['cores']} cores, "
            f"jax {common.versions()['jax']}, load {common.loadavg():.2f} at the end.\n\n" + text)
    common.replace_section("fit_cache", body)
    (common.HERE / "results" / "fit_cache.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
  sys.exit(main())
