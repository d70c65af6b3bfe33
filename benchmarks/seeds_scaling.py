"""Seeds scaling (issue 2): one vectorised call vs loops over seeds, 1 ... 1000 seeds.

The five-point problem (`problems.make("linear")`), LSTM(10), 500 epochs, full
batch, no shuffling, Adam, MSE, three ways:

  a  vectorised: the engine's ensemble call (`ensemble.run_group`, as `jaxlstm.fit`);
  b  loop of compiled whole runs: `jax.jit(program.train)` compiled once and
     called once per seed (the whole 500-epoch scan inside, one seed per call);
  c  the loop a JAX user writes by hand: Python over epochs, a jitted train
     step and a jitted validation step, `float()` of both losses each epoch
     (the Keras-style history).

Each (way, size) runs in a fresh subprocess (peak RSS = that process's VmHWM).
Compile seconds are `.lower(...).compile()` timed apart from run seconds;
every timed call ends in `block_until_ready` / a host copy. Large sizes of b
and c are extrapolated from the per-seed time measured at the largest size
that was run (marked in the table).

  python benchmarks/seeds_scaling.py              # all sizes, writes results/seeds_scaling.json + RESULTS.md
  python benchmarks/seeds_scaling.py --quick      # sizes 1, 10, 30 (no RESULTS.md update)
  python benchmarks/seeds_scaling.py --child a 30 # one measurement (what the parent runs)
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np

import common

SIZES = (1, 10, 30, 100, 300, 1000)
QUICK_SIZES = (1, 10, 30)
OVERRIDES = {"model.cells": 10, "train.epochs": 500, "train.batch_size": 0, "train.shuffle": False}
# Largest sizes measured for the loops; above them the loop is extrapolated.
MEASURE_MAX = {"a": 1000, "b": 300, "c": 30}
WAYS = {"a": "vectorised (`jaxlstm.fit`: one compiled call)",
        "b": "loop of `jit(program.train)` (whole run compiled, one seed per call)",
        "c": "hand-written loop (Python over epochs, jitted step)"}
TIMEOUT = {"a": 300, "b": 300, "c": 600}


# ----------------------------------------------------------------------------- children
def _setup(seeds: int, epochs: int):
  import jaxlstm
  from jaxlstm.data import resolve
  from jaxlstm.ensemble import group_program, plan
  cfg = jaxlstm.Config().override({**OVERRIDES, "train.epochs": epochs})
  (group,) = plan([cfg], seeds)
  dataset = resolve(cfg)
  return cfg, group, dataset, group_program(group, dataset)


def child_vectorised(seeds: int, epochs: int, reps: int) -> dict:
  import jax
  from jaxlstm.ensemble import run_group
  cfg, group, dataset, program = _setup(seeds, epochs)
  t0 = time.perf_counter()
  (ens,), info = run_group(group, dataset)  # what jaxlstm.fit runs
  fit_wall = time.perf_counter() - t0
  # Steady state: the same (cached) program, called `reps` more times, its inputs
  # already laid out on the devices (as run_group lays them out).
  from jaxlstm import devices
  layout, mesh = program.calls.layouts[0], program.mesh
  members = jax.tree.map(lambda a: a[program.calls.member_index(0)], program.members)
  fn, _ = program.entry(layout, members)
  args = (devices.shard(program.blank_states(members), mesh), devices.shard(members, mesh),
          devices.replicate(program.data, mesh), np.bool_(True))
  times = []
  for _ in range(reps):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t)
  return {"compile_s": info.compile_seconds, "run_s": info.run_seconds, "fit_wall_s": fit_wall,
          "steady_s": statistics.median(times), "steady_all_s": times, "compiles": info.compiles,
          "devices": mesh.size, "members_per_call": program.calls.members_per_call,
          "val_loss_mean": float(ens.final().mean()), "val_loss_std": float(ens.final().std())}


def child_solo_loop(seeds: int, epochs: int) -> dict:
  import jax
  cfg, group, dataset, program = _setup(seeds, epochs)
  per_seed = [jax.tree.map(lambda a, i=i: a[i], program.members) for i in range(seeds)]
  t0 = time.perf_counter()
  train = jax.jit(program.train.train).lower(per_seed[0]).compile()
  compile_s = time.perf_counter() - t0
  times, finals = [], []
  for member in per_seed:
    t = time.perf_counter()
    state, history = train(member)
    history = jax.device_get(history)  # the history is what the loop keeps
    times.append(time.perf_counter() - t)
    finals.append(float(history["val_loss"][-1]))
  return {"compile_s": compile_s, "run_s": sum(times), "per_seed_median_s": statistics.median(times),
          "val_loss_mean": statistics.fmean(finals), "val_loss_std": statistics.pstdev(finals)}


def child_hand_loop(seeds: int, epochs: int) -> dict:
  import jax
  import jax.numpy as jnp
  import optax
  cfg, group, ds, program = _setup(seeds, epochs)
  members = program.members
  x, y, xv, yv = (jnp.asarray(a, jnp.float32) for a in (ds.x_train, ds.y_train, ds.x_val, ds.y_val))
  network, tx = program.train.network_for(program.train.shape.cells), program.train.tx

  def mse(params, xb, yb):
    return jnp.mean((network.apply({"params": params}, xb) - yb) ** 2)

  def train_step(params, opt_state, xb, yb):
    loss, grads = jax.value_and_grad(mse)(params, xb, yb)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  t0 = time.perf_counter()
  init = jax.jit(program.train.init_params).lower(members.keys.init[0]).compile()
  params0 = init(members.keys.init[0])
  opt_init = jax.jit(tx.init).lower(params0).compile()
  step = jax.jit(train_step).lower(params0, opt_init(params0), x, y).compile()
  evaluate = jax.jit(mse).lower(params0, xv, yv).compile()
  compile_s = time.perf_counter() - t0
  times, finals = [], []
  for i in range(seeds):
    t = time.perf_counter()
    params = init(members.keys.init[i])
    opt_state = opt_init(params)
    history = {"loss": [], "val_loss": []}
    for _ in range(epochs):
      params, opt_state, loss = step(params, opt_state, x, y)
      history["loss"].append(float(loss))
      history["val_loss"].append(float(evaluate(params, xv, yv)))
    times.append(time.perf_counter() - t)
    finals.append(history["val_loss"][-1])
  return {"compile_s": compile_s, "run_s": sum(times), "per_seed_median_s": statistics.median(times),
          "val_loss_mean": statistics.fmean(finals), "val_loss_std": statistics.pstdev(finals)}


def child_main(way: str, seeds: int, epochs: int, reps: int) -> None:
  t0 = time.perf_counter()
  import jax
  import_s = time.perf_counter() - t0
  fn = {"a": lambda: child_vectorised(seeds, epochs, reps), "b": lambda: child_solo_loop(seeds, epochs),
        "c": lambda: child_hand_loop(seeds, epochs)}[way]
  result = fn()
  result.update(way=way, seeds=seeds, epochs=epochs, import_s=import_s, device=str(jax.devices()[0]),
                jax=jax.__version__, process_s=time.perf_counter() - t0)
  common.emit(result)


# ----------------------------------------------------------------------------- parent
def measure(sizes, ways="abc", epochs=500, reps=3, log=print) -> list[dict]:
  """Run every (way, size) in its own subprocess; extrapolate the loops above MEASURE_MAX."""
  rows = []
  for size in sizes:
    for way in ways:
      if size > MEASURE_MAX[way]:
        continue
      log(f"  seeds scaling: {way} x {size} seeds (load {common.loadavg():.2f})")
      try:
        r = common.python_child("seeds_scaling.py", "--child", way, size, "--epochs", epochs, "--reps", reps,
                                timeout=TIMEOUT[way])
      except common.ChildTimeout as e:
        log(f"  HANG/TIMEOUT: {e}")
        r = {"way": way, "seeds": size, "error": "timeout"}
      r["measured"] = True
      r["load"] = common.loadavg()
      rows.append(r)
  for way in ways:
    done = [r for r in rows if r["way"] == way and "error" not in r]
    if not done:
      continue
    top = max(done, key=lambda r: r["seeds"])
    for size in sizes:
      if size > MEASURE_MAX[way]:
        per_seed = top["run_s"] / top["seeds"]
        rows.append({"way": way, "seeds": size, "measured": False, "compile_s": top["compile_s"],
                     "run_s": per_seed * size, "peak_rss_mib": top["peak_rss_mib"],
                     "from_seeds": top["seeds"]})
  return rows


def steady(r: dict) -> float | None:
  """Steady-state training seconds for all of r's seeds (compile excluded)."""
  if "error" in r:
    return None
  return r.get("steady_s", r.get("run_s"))


def table(rows: list[dict]) -> str:
  header = ["way", "seeds", "compile s", "run s (first call)", "steady s", "ms / seed (steady)", "seeds / s (steady)",
            "process wall s", "peak RSS MiB", "final val_loss mean ± std", "note"]
  out = []
  for r in sorted(rows, key=lambda r: (r["way"], r["seeds"])):
    if "error" in r:
      out.append([r["way"], str(r["seeds"]), *["–"] * 8, "**" + r["error"] + "**"])
      continue
    s = steady(r)
    note = "" if r["measured"] else f"extrapolated from {r['from_seeds']} seeds"
    score = (f"{r['val_loss_mean']:.4f} ± {r['val_loss_std']:.4f}" if "val_loss_mean" in r else "–")
    out.append([r["way"], str(r["seeds"]), r["compile_s"], r["run_s"], s, 1000 * s / r["seeds"], r["seeds"] / s,
                r.get("wall_s"), r["peak_rss_mib"], score, note])
  return common.markdown_table(header, out)


def targets(rows: list[dict]) -> list[tuple[str, str, str]]:
  """(target, measured, verdict) for issue 2's targets."""
  get = {(r["way"], r["seeds"]): r for r in rows if "error" not in r}
  out = []
  a30, b30, c30 = get.get(("a", 30)), get.get(("b", 30)), get.get(("c", 30))
  if a30 and c30:
    ratio = steady(c30) / steady(a30)
    out.append(("steady state at 30 seeds ≥ 50× faster than (c) hand loop", f"{ratio:.0f}×", _verdict(ratio, 50)))
  if a30 and b30:
    ratio = steady(b30) / steady(a30)
    out.append(("steady state at 30 seeds ≥ 3× faster than (b) loop of compiled runs", f"{ratio:.1f}×",
                _verdict(ratio, 3)))
  a1, a1000 = get.get(("a", 1)), get.get(("a", 1000))
  if a1 and a1000:
    ratio = (steady(a1) / 1) / (steady(a1000) / 1000)
    out.append(("time per seed at 1000 seeds ≤ 1/8 of that at 1 seed",
                f"1/{ratio:.1f} ({1000 * steady(a1000) / 1000:.2f} vs {1000 * steady(a1):.1f} ms/seed)",
                _verdict(ratio, 8)))
  if a1000:
    out.append(("peak RSS at 1000 seeds ≤ 600 MiB", f"{a1000['peak_rss_mib']:.0f} MiB",
                _verdict(600 / a1000["peak_rss_mib"], 1)))
  return out


def _verdict(ratio: float, need: float) -> str:
  return "met" if ratio >= need else f"**missed** (at {ratio / need:.0%} of the target)"


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--child", nargs=2, metavar=("WAY", "SEEDS"))
  p.add_argument("--epochs", type=int, default=500)
  p.add_argument("--reps", type=int, default=3, help="steady-state calls of the vectorised program")
  p.add_argument("--quick", action="store_true", help="sizes 1, 10, 30 only")
  p.add_argument("--sizes", help="comma-separated seed counts (default 1,10,30,100,300,1000)")
  p.add_argument("--ways", default="abc")
  p.add_argument("--no-write", action="store_true",
                 help="do not update RESULTS.md; the JSON goes to results/seeds_scaling_no_write.json")
  args = p.parse_args(argv)
  if args.child:
    child_main(args.child[0], int(args.child[1]), args.epochs, args.reps)
    return
  sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else (QUICK_SIZES if args.quick else SIZES)
  load = common.wait_for_quiet()
  rows = measure(sizes, args.ways, args.epochs, args.reps)
  report = {"machine": common.machine(), "versions": common.versions(), "load_at_start": load,
            "command": " ".join([sys.executable.rsplit("/", 1)[-1], *sys.argv]), "rows": rows,
            "targets": targets(rows)}
  out = common.HERE / "results" / ("seeds_scaling_no_write.json" if args.no_write else "seeds_scaling.json")
  out.parent.mkdir(exist_ok=True)
  out.write_text(json.dumps(report, indent=1))
  print(table(rows))
  for t in report["targets"]:
    print(" | ".join(t))
  if not args.no_write and not args.quick and args.epochs == 500:
    common.replace_section("seeds_scaling", section_text(report))


def section_text(report: dict) -> str:
  lines = [
      f"Command: `{report['command']}` · load (1 min) at start {report['load_at_start']['load']:.2f}"
      + ("" if report["load_at_start"]["quiet"] else " (**taken under load**)")
      + " · load after each measurement: "
      + ", ".join("{:.2f}".format(r["load"]) for r in report["rows"] if r.get("measured")),
      "",
      "Ways: " + "; ".join(f"**{k}** {v}" for k, v in WAYS.items()) + ".",
      "",
      table(report["rows"]),
      "",
      "| target | measured | verdict |",
      "|---|---|---|",
      *[f"| {a} | {b} | {c} |" for a, b, c in report["targets"]],
  ]
  return "\n".join(lines)


if __name__ == "__main__":
  main()
