"""W2 with `model.kernel = "scan"` against `"fused"`, alternating, in fresh processes.

  python benchmarks/kernel.py                      # 3 rounds of 20-epoch W2 per kernel (~6 min on 2 cores)
  python benchmarks/kernel.py --rounds 2 --epochs 5
  python benchmarks/kernel.py --in-process --rounds 6 --epochs 4   # steady state, fits alternating in one process
  python benchmarks/kernel.py --in-process --devices 2 ...          # the same on 2 host devices (the CLI's default)
  python benchmarks/kernel.py --cell gru ...                        # W2 with GRU layers

Each measurement is the W2 command a user runs (`python -m jaxlstm.sweep --set ...
--repeats 30 --no-cache`), so the compile is cold; the manifest gives the
group's compile and training seconds, the parent the process wall time. Rounds
alternate the order (scan, fused / fused, scan) so both kernels see the same load;
the 1-minute load is recorded before each run. On a shared machine whose load
drifts within minutes, `--in-process` is the steadier comparison: one process
compiles both programs (`--devices` host devices, default 1), then the fits alternate seconds apart
and each reports its training seconds and the process CPU seconds it took.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import common

W2_SETTINGS = ("data.problem=damped_sine", "data.options.n_train=1000", "data.options.n_val=200", "model.cells=20",
               "model.layers=2", "train.batch_size=32", "train.shuffle=true", "train.loss=mae")
KERNELS = ("scan", "fused")
IN_PROCESS = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import common, workers
import jaxlstm
epochs, rounds, devices, cell = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
configs = {k: jaxlstm.Config().override({**workers.W2_OVERRIDES, "train.epochs": epochs, "model.kernel": k,
                                         "model.cell": cell}) for k in ("scan", "fused")}
for config in configs.values():
  jaxlstm.fit(config, repeats=30, devices=devices)  # compile both first
runs = {k: [] for k in configs}
for r in range(rounds):
  for k in (("scan", "fused") if r % 2 == 0 else ("fused", "scan")):
    load, cpu = common.loadavg(), time.process_time()
    ens = jaxlstm.fit(configs[k], repeats=30, seed=r + 1, devices=devices)
    assert ens.timings["compiles"] == 0
    runs[k].append({"load": load, "run_s": ens.timings["run_seconds"], "cpu_s": time.process_time() - cpu})
    print(r + 1, k, runs[k][-1], flush=True)
print("RESULT " + json.dumps(runs))
"""


def w2_command(kernel: str, epochs: int, cell: str, out: Path) -> list[str]:
  sets = [*W2_SETTINGS, f"train.epochs={epochs}", f"model.kernel={kernel}", f"model.cell={cell}"]
  return [sys.executable, "-m", "jaxlstm.sweep", *(a for s in sets for a in ("--set", s)), "--repeats", "30",
          "--out", str(out), "--no-cache", "--quiet"]


def measure(kernel: str, epochs: int, cell: str, tmp: Path) -> dict:
  out = tmp / f"{kernel}-{time.monotonic_ns()}"
  load = common.loadavg()
  t0 = time.perf_counter()
  r = common.run_child(w2_command(kernel, epochs, cell, out), timeout=900, env={"JAX_PLATFORMS": "cpu"},
                       expect_result=False)
  common.wait_for_plots(out, t0)  # never beside the next measurement
  group = json.loads((out / "manifest.json").read_text())["groups"][0]
  # CPU seconds as well: on a shared machine they move less with the load than wall seconds do.
  return {"load": load, "wall_s": r["wall_s"], "cpu_s": r["cpu_s"], "compile_s": group["compile_seconds"],
          "run_s": group["run_seconds"]}


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--epochs", type=int, default=20)
  parser.add_argument("--in-process", action="store_true", help="alternate steady-state fits in one process")
  parser.add_argument("--devices", type=int, default=1, help="--in-process: host devices")
  parser.add_argument("--cell", default="lstm", choices=["lstm", "gru"])
  args = parser.parse_args(argv)
  if args.in_process:
    results = common.run_child([sys.executable, "-c", IN_PROCESS, str(common.HERE), str(args.epochs),
                                str(args.rounds), str(args.devices), args.cell], timeout=1800,
                               env={"JAX_PLATFORMS": "cpu",
                                    "XLA_FLAGS": f"--xla_force_host_platform_device_count={args.devices}"})
    results = {k: results[k] for k in KERNELS}
  else:
    results = {k: [] for k in KERNELS}
    with tempfile.TemporaryDirectory() as tmp:
      for r in range(args.rounds):
        for kernel in (KERNELS if r % 2 == 0 else KERNELS[::-1]):
          results[kernel].append(measure(kernel, args.epochs, args.cell, Path(tmp)))
          print(f"round {r + 1} {kernel}: {results[kernel][-1]}", flush=True)
  rows = []
  for field in [f for f in ("run_s", "compile_s", "wall_s", "cpu_s") if f in results["scan"][0]]:
    scan, fused = ([m[field] for m in results[k]] for k in KERNELS)
    rows.append([field, statistics.median(scan), f"{min(scan):.2f}–{max(scan):.2f}", statistics.median(fused),
                 f"{min(fused):.2f}–{max(fused):.2f}", f"{statistics.median(scan) / statistics.median(fused):.2f}"])
  loads = [m["load"] for runs in results.values() for m in runs]
  table = common.markdown_table(["seconds", "scan median", "scan min–max", "fused median", "fused min–max",
                                 "scan / fused"], rows)
  how = f"in one process, {args.devices} device(s)" if args.in_process else "fresh processes"
  print(f"\nW2 ({args.cell.upper()}), {args.epochs} epochs, 30 repeats, {args.rounds} alternating rounds ({how}), 1-minute load "
        f"{min(loads):.2f}–{max(loads):.2f} before the runs; {json.dumps(common.machine())}\n\n{table}")


if __name__ == "__main__":
  sys.exit(main())
