"""What 5-fold cross-validation costs against one train/validation split.

  python benchmarks/cv_cost.py            # the table below, written into RESULTS.md
  python benchmarks/cv_cost.py --quick    # one round, print only

Workload: a `--data` study as the CLI sets it up (10-step windows predicting the next
step, LSTM(20) + Dense(1), Adam, MSE with MAE reported, batch 32, shuffled, 100 epochs,
min-max scaling), on a 400-row monthly-like series (trend + yearly cycle + noise), at
1, 10 and 30 repeats (30 is the CLI's default). One split: the last 20% of the rows
validate (R fits). 5-fold: `data.cv = kfold`, `data.folds = 5` over every window
(R repeats x 5 folds = 5R fits, each training on 80% of the windows, as the one split
does), all in one compiled call.

`--equal-members` asks what the folds themselves cost: one process trains one split at
5R repeats and 5-fold CV at R repeats (the same number of members, each fit on 80% of the
windows), each compiled once and then timed on three further seeds, alternating.

Each measurement is a fresh process with an empty persistent compilation cache, timed
from before `jaxlstm.fit` to its return (compile included; `compile_s` and `run_s`
split it); the two variants alternate (A B, B A, ...) and the 1-minute load is
recorded around each run.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import common

VARIANTS = {"one split": {}, "5-fold CV": {"data.cv": "kfold", "data.folds": 5}}


def series(rows: int = 400):
  import numpy as np
  t = np.arange(rows)
  return (100 + 0.5 * t) * (1 + 0.2 * np.sin(2 * np.pi * t / 12)) + np.random.default_rng(0).normal(0, 2, rows)


def child(variant: str, repeats: int, epochs: int) -> None:
  path = os.path.join(tempfile.mkdtemp(), "series.csv")
  with open(path, "w") as f:
    f.write("value\n" + "".join(f"{v:.4f}\n" for v in series()))
  import jaxlstm
  from jaxlstm import study as study_lib
  base, _ = study_lib.csv_study(path, "value", None)
  changes = dict(VARIANTS[variant], **{"train.epochs": epochs})
  if variant != "one split":
    changes["data.options"] = dict(base.data.options, val_fraction=0.0)  # every window in the folds
  config = base.override(changes)
  t0 = time.perf_counter()
  ens = jaxlstm.fit(config, repeats=repeats, seed=0)
  wall = time.perf_counter() - t0
  fits = repeats * ens.folds
  common.emit({"variant": variant, "wall_s": wall, "compile_s": ens.timings["compile_seconds"],
               "run_s": ens.timings["run_seconds"], "fits": fits,
               "val_loss": float(statistics.mean(ens.final("val_loss").tolist()))})


def equal_members(members: int, epochs: int, rounds: int = 3) -> dict:
  """Run seconds of one split at `members` repeats and of 5-fold CV at `members // 5` (warm programs)."""
  import jaxlstm
  from jaxlstm import study as study_lib
  path = os.path.join(tempfile.mkdtemp(), "series.csv")
  with open(path, "w") as f:
    f.write("value\n" + "".join(f"{v:.4f}\n" for v in series()))
  base, _ = study_lib.csv_study(path, "value", None)
  configs = {"one split": (base.override({"train.epochs": epochs}), members),
             "5-fold CV": (base.override({"train.epochs": epochs, **VARIANTS["5-fold CV"],
                                          "data.options": dict(base.data.options, val_fraction=0.0)}), members // 5)}
  for config, repeats in configs.values():
    jaxlstm.fit(config, repeats=repeats, seed=0)  # compile
  out = {name: [] for name in configs}
  for r in range(rounds):
    for name in (list(configs) if r % 2 == 0 else list(configs)[::-1]):
      config, repeats = configs[name]
      out[name].append(jaxlstm.fit(config, repeats=repeats, seed=r + 1).timings["run_seconds"])
  out["load"] = common.loadavg()
  return out


def measure(repeats: list[int], epochs: int, rounds: int) -> list[dict]:
  out = []
  names = list(VARIANTS)
  for r in range(rounds):
    for count in repeats:
      for variant in (names if r % 2 == 0 else names[::-1]):
        before = common.loadavg()
        with tempfile.TemporaryDirectory() as cache:
          res = common.python_child("cv_cost.py", "--child", variant, "--repeats", str(count), "--epochs",
                                    str(epochs), timeout=1200,
                                    env={"XDG_CACHE_HOME": cache, "JAX_PLATFORMS": "cpu"})
        res.update(round=r, repeats=count, load_before=before, load_after=common.loadavg())
        print(json.dumps(res), flush=True)
        out.append(res)
  return out


def render(results: list[dict], repeats: list[int], epochs: int) -> str:
  rows = []
  for count in repeats:
    medians = {}
    for variant in VARIANTS:
      runs = [r for r in results if r["variant"] == variant and r["repeats"] == count]
      walls, runs_s = [r["wall_s"] for r in runs], [r["run_s"] for r in runs]
      medians[variant] = (statistics.median(walls), statistics.median(runs_s))
      rows.append([str(count), variant, str(runs[0]["fits"]), f"{statistics.median(walls):.1f}",
                   f"{min(walls):.1f}–{max(walls):.1f}", f"{statistics.median(r['compile_s'] for r in runs):.1f}",
                   f"{statistics.median(runs_s):.2f}", "", "",
                   f"{max(max(r['load_before'], r['load_after']) for r in runs):.1f}"])
    (w1, r1), (w5, r5) = medians["one split"], medians["5-fold CV"]
    rows[-1][7], rows[-1][8] = f"**{w5 / w1:.2f}x**", f"{r5 / r1:.2f}x"
  rounds = len(results) // (2 * len(repeats))
  head = (f"`jaxlstm.fit` of a `--data` study (LSTM(20), 10-step windows, batch 32, {epochs} epochs) on a "
          f"400-row series; medians of {rounds} alternating runs, each a fresh process with an empty "
          "compilation cache (wall = the `fit` call: compile + training + results to the host).\n\n")
  return head + common.markdown_table(
      ["repeats", "variant", "fits", "wall s (median)", "min–max", "compile s", "run s",
       "CV / one split, wall", "CV / one split, run", "max load"], rows)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--child", choices=list(VARIANTS))
  parser.add_argument("--repeats", default="1,10,30", help="repeats per measurement, comma-separated")
  parser.add_argument("--epochs", type=int, default=100)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--quick", action="store_true", help="one round of each, print only")
  parser.add_argument("--equal-members", type=int, metavar="M", help="one split at M repeats against 5-fold "
                      "CV at M/5 repeats in one process (run seconds only); writes its own section")
  args = parser.parse_args(argv)
  repeats = [int(r) for r in str(args.repeats).split(",")]
  if args.equal_members:
    res = equal_members(args.equal_members, args.epochs)
    one, cv = statistics.median(res["one split"]), statistics.median(res["5-fold CV"])
    text = (f"Same members, warm programs (`python benchmarks/cv_cost.py --equal-members {args.equal_members} "
            f"--epochs {args.epochs}`): one split at {args.equal_members} repeats trains in {one:.2f} s "
            f"(runs {', '.join(f'{v:.2f}' for v in res['one split'])}), 5-fold CV at {args.equal_members // 5} "
            f"repeats in {cv:.2f} s ({', '.join(f'{v:.2f}' for v in res['5-fold CV'])}): **{cv / one:.2f}x**; "
            f"1-minute load {res['load']:.2f}.")
    print(text)
    if not args.quick:
      common.replace_section("cv_cost_members", text)
    return
  if args.child:
    child(args.child, repeats[0], args.epochs)
    return
  results = measure(repeats, args.epochs, 1 if args.quick else args.rounds)
  text = render(results, repeats, args.epochs)
  print(text)
  if not args.quick:
    machine = common.machine()
    body = (f"Command: `python benchmarks/cv_cost.py`; {machine['cpu']}, {machine['cores']} cores, "
            f"jax {common.versions()['jax']}, 1-minute load {common.loadavg():.2f} at the end.\n\n" + text)
    common.replace_section("cv_cost", body)
    (common.HERE / "results" / "cv_cost.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
  sys.exit(main())
