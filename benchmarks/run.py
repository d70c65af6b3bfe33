"""jaxlstm against a Keras 3 loop and a PyTorch loop (issue 7); rewrites the tables in RESULTS.md.

  python benchmarks/run.py                  # everything: ceiling, W1, W2, seeds scaling
  python benchmarks/run.py --quick          # few repeats / sizes, one run each (smoke test; RESULTS.md untouched)
  python benchmarks/run.py --only W1,W2     # a subset: ceiling, W1, W2, seeds
  pip install -e '.[bench]'                 # the baselines (keras 3.15.1, torch 2.13.0 CPU)

Every measurement is a fresh subprocess under a timeout (workers.py,
seeds_scaling.py); systems alternate within each round (A B C, then C B A,
...) and the tables give medians over rounds. Before each round the script
waits (up to --max-wait s) for the 1-minute load to drop below --load, and
records the load it measured at. Without keras or torch the jaxlstm figures
still run and the skipped baselines are listed.

Workloads and systems: see workers.py. jaxlstm's W1 goes end to end through
`python -m jaxlstm.sweep --repeats R` when that module exists (cold: a fresh
XDG_CACHE_HOME; warm: the same cache after a priming run); it is always also
run through the library (`run_group` per static-shape group, with a fresh or a
primed jax persistent compilation cache) for the compile/run split. jaxlstm's W2
runs through the library on one host device (the reference row), on two (what
the command line uses on 2 cores) and on two with the opt-in `model.kernel =
"fused"`, and end to end as a user types it (`python -m jaxlstm.sweep --set ...`,
cold, and warm: its second W2-shaped run, the program stored by the first);
`--w2-reference-only` keeps the first alone.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import common
import seeds_scaling
import workers

TIMEOUTS = {"jaxlstm_w1": 300, "jaxlstm_cli": 300, "keras_w1": 1200, "torch_w1": 900,
            "jaxlstm_w2": 600, "keras_w2": 1200, "torch_w2": 900, "ceiling": 180}


def log(msg: str) -> None:
  print(msg, flush=True)


def baselines() -> dict[str, str | None]:
  """Which baselines can run here: name -> None, or the reason it is skipped."""
  out = {}
  out["keras"] = None if common.have("keras") else "keras not installed (pip install -e '.[bench]')"
  out["torch"] = None if common.have("torch") else "torch not installed (pip install -e '.[bench]')"
  if out["keras"] is None and not common.have("jax"):
    out["keras"] = "keras needs the jax backend"
  return out


def write_data(tmp: Path) -> dict[str, str]:
  import numpy as np
  from jaxlstm import problems
  paths = {}
  for name, ds in (("W1", problems.make("linear")), ("W2", problems.make("damped_sine", n_train=1000, n_val=200))):
    path = tmp / f"{name}.npz"
    np.savez(path, **{k: np.asarray(getattr(ds, k), np.float32) for k in ("x_train", "y_train", "x_val", "y_val")})
    paths[name] = str(path)
  return paths


def worker(name: str, *args, env: dict | None = None, timeout_scale: float = 1.0) -> dict:
  args = [str(a) for a in args]
  log(f"    {name} {' '.join(args)}  (load {common.loadavg():.2f})")
  t0 = time.perf_counter()
  try:
    r = common.python_child("workers.py", name, *args, timeout=TIMEOUTS[name] * timeout_scale, env=env)
  except common.ChildTimeout as e:
    log(f"    HANG / TIMEOUT after {time.perf_counter() - t0:.0f} s: {str(e).splitlines()[0]}")
    return {"worker": name, "error": "timeout (hang?)"}
  except RuntimeError as e:
    log(f"    FAILED: {str(e)[-1500:]}")
    return {"worker": name, "error": str(e).splitlines()[0][:200]}
  r["load_after"] = common.loadavg()
  log(f"      wall {r['wall_s']:.1f} s, peak {r['child_peak_rss_mib']:.0f} MiB")
  return r


def cli(repeats: int, out: Path, env: dict, extra: tuple[str, ...] = (), work: str = "W1") -> dict:
  """`python -m jaxlstm.sweep --repeats R --out OUT [extra]` end to end in a fresh process, as a user runs it.

  Records the process wall (the command returning), its CPU seconds, when its first line
  (the plan) appeared, and when the background renderer had drawn the plots (waited
  for, so it never overlaps the next measurement).
  """
  args = [sys.executable, "-m", "jaxlstm.sweep", "--repeats", str(repeats), "--out", str(out), *extra]
  log(f"    {' '.join(args[1:])}  (load {common.loadavg():.2f})")
  t0 = time.perf_counter()
  try:
    r = common.run_child(args, timeout=TIMEOUTS["jaxlstm_cli"], env=env, expect_result=False)
  except common.ChildTimeout as e:
    log(f"    HANG / TIMEOUT after {time.perf_counter() - t0:.0f} s: {str(e).splitlines()[0]}")
    return {"worker": "cli", "error": "timeout (hang?)"}
  except RuntimeError as e:
    log(f"    FAILED: {str(e)[-1500:]}")
    return {"worker": "cli", "error": str(e).splitlines()[0][:200]}
  r["plots_s"] = common.wait_for_plots(out, t0)
  r.update(workers.cli_results(str(out), work))
  r["load_after"] = common.loadavg()
  log(f"      wall {r['wall_s']:.1f} s (first line {r['first_output_s']:.2f} s, compile {r['compile_s']:.1f} s, "
      f"run {r['run_s']:.2f} s, CPU {r['cpu_s']:.1f} s, plots at {r['plots_s'] or float('nan'):.1f} s), "
      f"peak {r['child_peak_rss_mib']:.0f} MiB")
  return r


def cli_system(kind: str, tmp: Path, repeats: int, extra: tuple[str, ...] = (), work: str = "W1"):
  """A system running the command line (`cli`) cold (a fresh XDG_CACHE_HOME under `tmp`) or warm (the same
  cache after a priming run); each run's cache and folders are removed after it."""
  def go() -> dict:
    xdg = tmp / f"xdg-{kind}-{time.monotonic_ns()}"
    env = {"XDG_CACHE_HOME": str(xdg)}
    if kind == "warm":
      cli(repeats, xdg / "prime", env, extra, work)
    result = cli(repeats, xdg / "out", env, extra, work)
    shutil.rmtree(xdg, ignore_errors=True)
    return result
  return go


def torch_name(threads: int) -> str:
  return "PyTorch loop" + (f" ({threads} thread{'s' if threads > 1 else ''})" if threads else " (torch default threads)")


def best_torch(summaries: dict) -> dict:
  """The fastest PyTorch variant (the baseline at its best)."""
  torch = [s for n, s in summaries.items() if n.startswith("PyTorch loop") and s.get("total_s")]
  return min(torch, key=lambda s: s["total_s"]) if torch else {}


# ----------------------------------------------------------------------------- workloads
def run_w1(opts, data, skip) -> dict:
  repeats = opts.repeats
  have_cli = common.have("jaxlstm.sweep")
  tmp = Path(tempfile.mkdtemp(prefix="jaxlstm-bench-w1-"))
  systems = {}

  def jax_api(kind):
    def go():
      cache = tmp / f"api-cache-{kind}-{time.monotonic_ns()}"
      if kind == "warm":  # prime a cache, then measure a fresh process against it
        worker("jaxlstm_w1", "--repeats", repeats, "--cache-dir", cache)
      return worker("jaxlstm_w1", "--repeats", repeats, "--cache-dir", cache)
    return go

  if have_cli:
    systems["jaxlstm CLI cold"] = cli_system("cold", tmp, repeats)
    systems["jaxlstm CLI warm"] = cli_system("warm", tmp, repeats)
  systems["jaxlstm API cold"] = jax_api("cold")
  systems["jaxlstm API warm"] = jax_api("warm")
  if not skip["torch"]:
    for threads in opts.torch_threads:
      systems[torch_name(threads)] = (lambda t=threads: worker("torch_w1", "--repeats", repeats, "--data", data["W1"],
                                                              "--threads", t))
  if not skip["keras"]:
    systems["Keras 3 loop"] = lambda: worker("keras_w1", "--repeats", repeats, "--data", data["W1"])
  results = rounds(systems, opts, runs_for={"Keras 3 loop": opts.slow_runs})
  shutil.rmtree(tmp, ignore_errors=True)
  return {"repeats": repeats, "fits": repeats * 3, "cli": have_cli, "systems": results}


# jaxlstm's W2 variants besides the reference (one host device, the default kernel): the command
# line's default of one host device per core, and the opt-in fused kernel on top (`model.kernel`).
W2_VARIANTS = {"jaxlstm, 2 host devices": ("scan", 2), "jaxlstm, 2 host devices, fused kernel": ("fused", 2)}
# W2 as a user types it (`--set` per field of workers.W2_OVERRIDES), on the command line's own devices
# (one per core): cold (a fresh XDG_CACHE_HOME) and warm (its second run of a W2-shaped study, the
# program stored by the first).
W2_CLI = ("jaxlstm CLI cold", "jaxlstm CLI warm")


def _host_devices(n: int) -> dict:
  return {"XLA_FLAGS": f"--xla_force_host_platform_device_count={n}"}


def w2_cli_args() -> tuple[str, ...]:
  """`--set KEY=VALUE` per field of W2 (strings bare, other values as JSON, as a user types them)."""
  text = lambda v: v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))
  return tuple(a for key, value in workers.W2_OVERRIDES.items() for a in ("--set", f"{key}={text(value)}"))


def run_w2(opts, data, skip) -> dict:
  repeats = opts.repeats
  tmp = Path(tempfile.mkdtemp(prefix="jaxlstm-bench-w2-"))
  systems = {"jaxlstm": lambda: worker("jaxlstm_w2", "--repeats", repeats)}
  if not opts.w2_reference_only:
    for name, (kernel, n) in W2_VARIANTS.items():
      systems[name] = (lambda k=kernel, n=n: worker("jaxlstm_w2", "--repeats", repeats, "--kernel", k,
                                                    env=_host_devices(n)))
    if common.have("jaxlstm.sweep"):
      for name, kind in zip(W2_CLI, ("cold", "warm")):
        systems[name] = cli_system(kind, tmp, repeats, w2_cli_args(), "W2")
  if not skip["torch"]:
    for threads in opts.torch_threads:
      systems[torch_name(threads)] = (lambda t=threads: worker("torch_w2", "--repeats", repeats, "--data", data["W2"],
                                                              "--threads", t))
  if not skip["keras"]:
    systems["Keras 3 loop"] = lambda: worker("keras_w2", "--repeats", repeats, "--data", data["W2"])
  results = rounds(systems, opts, runs_for={n: opts.slow_runs for n in systems if not n.startswith("jaxlstm")})
  shutil.rmtree(tmp, ignore_errors=True)
  return {"repeats": repeats, "fits": repeats, "systems": results}


def rounds(systems: dict, opts, runs_for: dict) -> dict:
  """Run each system `opts.runs` times (fewer where runs_for says), alternating the order per round."""
  names = list(systems)
  out = {n: [] for n in names}
  for i in range(opts.runs):
    order = names if i % 2 == 0 else names[::-1]
    load = common.wait_for_quiet(opts.load, opts.max_wait, log=log)
    log(f"  round {i + 1}/{opts.runs} (load {load['load']:.2f}{'' if load['quiet'] else ', UNDER LOAD'})")
    for name in order:
      if i >= runs_for.get(name, opts.runs):
        continue
      r = systems[name]()
      r["load_before"] = load["load"]
      out[name].append(r)
  return out


# ----------------------------------------------------------------------------- summaries
def summary(runs: list[dict]) -> dict:
  ok = [r for r in runs if "error" not in r]
  med = lambda key: common.median([r.get(key) for r in ok])
  s = {"n": len(ok), "errors": [r["error"] for r in runs if "error" in r]}
  if not ok:
    return s
  s.update(total_s=med("wall_s"), work_s=med("work_s"), peak_mib=max(r["child_peak_rss_mib"] for r in ok),
           load=max(max(r.get("load_before", 0), r.get("load_after", 0)) for r in ok),
           scores=ok[0].get("scores"), compile_s=med("compile_s"), run_s=med("run_s"),
           compiles=ok[0].get("compiles"), gflops=med("gflops_run"), steady_fit_s=med("steady_fit_s"),
           first_fit_s=med("first_fit_s"), fits=ok[0].get("fits"), all_total_s=[r["wall_s"] for r in ok],
           backend=ok[0].get("backend"), threads=ok[0].get("threads"))
  if s["run_s"] is not None and s["fits"]:
    s["steady_fit_s"] = s["run_s"] / s["fits"]  # jaxlstm: one call trains every fit
    s["steady_total_s"] = s["run_s"]
  elif s["steady_fit_s"] is not None:
    s["steady_total_s"] = s["steady_fit_s"] * s["fits"]
  return s


def scores_text(scores) -> str:
  if not scores:
    return "–"
  return "; ".join(f"{k.replace('cells=', '')}: {m:.4f} ± {sd:.4f}" for k, (m, sd) in scores.items())


def workload_table(res: dict, metric: str) -> str:
  header = ["system", "runs", "total wall s (process, incl. compile)", "steady-state s (all fits)",
            "steady s / fit", "compiles", "compile s", "GFLOP/s (run)", "peak RSS MiB", "max load",
            f"final {metric} mean ± std"]
  rows = []
  for name, runs in res["systems"].items():
    s = summary(runs)
    if not s.get("n"):
      rows.append([name, "0", *["–"] * 8, "**" + "; ".join(s["errors"]) + "**"])
      continue
    label = name + (f" ({s['backend']} backend)" if s.get("backend") else "")
    total = common.fmt(s["total_s"]) + (f" ({', '.join(f'{t:.1f}' for t in s['all_total_s'])})"
                                         if len(s["all_total_s"]) > 1 else "")
    rows.append([label, str(s["n"]), total, s.get("steady_total_s"), s.get("steady_fit_s"),
                 str(s["compiles"]) if s["compiles"] is not None else "–", s["compile_s"], s["gflops"],
                 s["peak_mib"], s["load"], scores_text(s["scores"])])
  # steady s / fit in ms reads better for jaxlstm; keep seconds with 4 digits
  for row in rows:
    if isinstance(row[4], float):
      row[4] = f"{row[4]:.4f}"
  return common.markdown_table(header, rows)


def ratio_line(what, num, den, need):
  if num is None or den is None:
    return (what, "not measured", "–")
  r = num / den
  return (what, f"{r:.1f}×", "met" if r >= need else f"**missed** ({r / need:.0%} of the target)")


def w1_targets(res: dict) -> list[tuple]:
  """Issue 14's targets for the default study end to end (issue 7's ratios, kept as facts)."""
  s = {n: summary(r) for n, r in res["systems"].items()}
  cold = "jaxlstm CLI cold" if res["cli"] else "jaxlstm API cold"
  warm = "jaxlstm CLI warm" if res["cli"] else "jaxlstm API warm"
  via = "CLI" if res["cli"] else "library (CLI not available yet)"
  k, t = s.get("Keras 3 loop", {}), best_torch(s)

  def at_most(what, value, limit):
    if value is None:
      return (what, "not measured", "–")
    return (what, f"{value:.2f} s", "met" if value <= limit else f"**missed** ({value / limit:.1f}× the target)")

  firsts = [r.get("first_output_s") for r in res["systems"].get(cold, []) + res["systems"].get(warm, [])
            if "error" not in r and r.get("first_output_s") is not None]
  out = [
      at_most(f"default study cold end to end via the {via} ≤ 4 s", s[cold].get("total_s"), 4),
      at_most(f"default study warm (compile cache) end to end via the {via} ≤ 2 s", s[warm].get("total_s"), 2),
      at_most("first line of output (the plan) ≤ 1 s (slowest run)", max(firsts) if firsts else None, 1),
      ratio_line(f"W1 cold via {via} ≥ 30× faster than the Keras 3 loop", k.get("total_s"), s[cold].get("total_s"), 30),
      ratio_line(f"W1 warm via {via} ≥ 60× faster than the Keras 3 loop", k.get("total_s"), s[warm].get("total_s"), 60),
      ratio_line(f"W1 cold via {via} against the fastest PyTorch loop (no target; issue 7 asked 6×)",
                 t.get("total_s"), s[cold].get("total_s"), 6),
      ratio_line(f"W1 warm via {via} against the fastest PyTorch loop (no target; issue 7 asked 12×)",
                 t.get("total_s"), s[warm].get("total_s"), 12),
      ratio_line("W1 steady-state training ≥ 500× the Keras per-fit time (Keras s/fit ÷ jaxlstm s/fit)",
                 k.get("steady_fit_s"), s["jaxlstm API cold"].get("steady_fit_s"), 500),
  ]
  return out


def w2_targets(res: dict, ceiling: dict | None) -> list[tuple]:
  s = {n: summary(r) for n, r in res["systems"].items()}
  j, k, t = s["jaxlstm"], s.get("Keras 3 loop", {}), best_torch(s)
  out = []
  for name in ["jaxlstm", *W2_VARIANTS, *W2_CLI]:  # issue 14: ≥ 3× Keras, ≥ 2× PyTorch at its best thread count
    if s.get(name, {}).get("total_s"):
      what = f"W2 ({res['repeats']} repeats, {name})"
      out += [ratio_line(f"{what} ≥ 3× faster than the Keras 3 loop", k.get("total_s"), s[name]["total_s"], 3),
              ratio_line(f"{what} ≥ 2× faster than the PyTorch loop (best thread count)",
                         t.get("total_s"), s[name]["total_s"], 2)]
  if ceiling and j.get("gflops"):
    c = ceiling["ceiling_gflops"]
    frac = j["gflops"] / c
    out.append(("W2 achieved GFLOP/s ≥ 50% of the batched small-matmul ceiling",
                f"{j['gflops']:.1f} of {c:.0f} GFLOP/s = {frac:.0%}",
                "met" if frac >= 0.5 else f"**missed** ({frac / 0.5:.0%} of the target)"))
  return out


def targets_table(items) -> str:
  return "\n".join(["| target | measured | verdict |", "|---|---|---|", *[f"| {a} | {b} | {c} |" for a, b, c in items]])


# ----------------------------------------------------------------------------- main
def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--quick", action="store_true", help="3 repeats, 1 run, seeds 1/10/30; does not touch RESULTS.md")
  p.add_argument("--only", default="ceiling,W1,W2,seeds", help="comma-separated: ceiling, W1, W2, seeds")
  p.add_argument("--repeats", type=int, default=30)
  p.add_argument("--runs", type=int, default=3, help="rounds per system (medians are reported)")
  p.add_argument("--slow-runs", type=int, default=1,
                 help="rounds for the slow baselines (Keras W1 and W2, PyTorch W2: 2-6 min per run)")
  p.add_argument("--torch-threads", default="1,2",
                 help="comma-separated torch intra-op thread counts to run (0 = torch's default); the fastest counts")
  p.add_argument("--w2-reference-only", action="store_true",
                 help="W2: only jaxlstm's reference (1 host device, scan kernel), not its variants")
  p.add_argument("--load", type=float, default=0.7, help="wait for the 1-minute load to drop below this")
  p.add_argument("--max-wait", type=float, default=900, help="seconds to wait for a quiet machine per round")
  p.add_argument("--no-write", action="store_true",
                 help="do not rewrite RESULTS.md; the JSON goes to results/run_no_write.json, not run.json")
  p.add_argument("--render", metavar="JSON", help="only re-render RESULTS.md from a saved results/run.json")
  opts = p.parse_args(argv)
  if opts.render:
    report = json.loads(Path(opts.render).read_text())
    text = render(report)
    print(text)
    update_results(report, text)
    return
  only = {x.strip().lower() for x in opts.only.split(",")}
  opts.torch_threads = [int(t) for t in opts.torch_threads.split(",")]
  if opts.quick:
    opts.repeats, opts.runs, opts.slow_runs = 3, 1, 1
  skip = baselines()
  for name, why in skip.items():
    if why:
      log(f"baseline skipped: {name}: {why}")
  command = "python benchmarks/run.py " + " ".join(sys.argv[1:] if argv is None else argv)
  report = {"machine": common.machine(), "versions": common.versions(), "command": command.strip(),
            "backend": common.backend(), "skipped": {k: v for k, v in skip.items() if v},
            "started": time.strftime("%Y-%m-%d %H:%M")}
  tmp = Path(tempfile.mkdtemp(prefix="jaxlstm-bench-"))
  data = write_data(tmp)
  ceiling = None
  if "ceiling" in only or "w2" in only:
    log("ceiling: batched small matmuls in jax")
    common.wait_for_quiet(opts.load, opts.max_wait, log=log)
    ceiling = worker("ceiling")
    ceiling_w1 = worker("ceiling", "--members", 90, "--batch", 5, "--units", 10)
    report["ceiling"] = {"W2": ceiling, "W1": ceiling_w1}
  if "w1" in only:
    log(f"W1: default study, {opts.repeats} repeats")
    report["W1"] = run_w1(opts, data, skip)
  if "w2" in only:
    log(f"W2: stacked LSTM on damped sine, {opts.repeats} repeats")
    report["W2"] = run_w2(opts, data, skip)
  if "seeds" in only:
    log("seeds scaling")
    sizes = seeds_scaling.QUICK_SIZES if opts.quick else seeds_scaling.SIZES
    load = common.wait_for_quiet(opts.load, opts.max_wait, log=log)
    rows = seeds_scaling.measure(sizes, log=log)
    report["seeds"] = {"rows": rows, "targets": seeds_scaling.targets(rows), "load_at_start": load,
                       "command": report["command"]}
  shutil.rmtree(tmp, ignore_errors=True)
  report["finished"] = time.strftime("%Y-%m-%d %H:%M")
  out_dir = common.HERE / "results"
  out_dir.mkdir(exist_ok=True)
  # --no-write keeps the canonical run.json (what RESULTS.md's tables were rendered from) as it is.
  name = "run_quick.json" if opts.quick else "run_no_write.json" if opts.no_write else "run.json"
  (out_dir / name).write_text(json.dumps(report, indent=1, default=str))
  text = render(report)
  print(text)
  if "seeds" in report:
    print(seeds_scaling.section_text(report["seeds"]))
  if not opts.quick and not opts.no_write:
    update_results(report, text)


WORK_NAMES = {"W1": "W1 default study ({repeats} repeats, {fits} fits)", "W2": "W2 stacked LSTM ({repeats} repeats)"}
REFERENCE = {"W1": ("jaxlstm CLI cold", "jaxlstm API cold"), "W2": ("jaxlstm",)}


def _span(values: list[float]) -> str:
  if not values:
    return "–"
  med = common.median(values)
  return common.fmt(med) + (f" ({common.fmt(min(values))}–{common.fmt(max(values))})" if len(values) > 1 else "")


def overview_table(report: dict) -> str:
  """The one table: per work and system, wall s (median, min–max), its ratio to jaxlstm's, load, notes."""
  header = ["work", "system", "runs", "wall s: median (min–max)", "wall ÷ jaxlstm's", "max load", "notes"]
  rows, loads = [], []
  if "ceiling" in report:
    for name, c in (("W2 recurrent shape", report["ceiling"]["W2"]), ("W1 shape", report["ceiling"]["W1"])):
      if "error" not in c:
        rows.append(["machine ceiling", f"jax: batched small matmuls, {name}", "1", "–", "–",
                     common.fmt(c.get("load_after")), f"{c['ceiling_gflops']:.1f} GFLOP/s "
                     f"({c['members']} × {c['batch']} × {c['units']} → {4 * c['units']})"])
  for work in ("W1", "W2"):
    if work not in report:
      continue
    res = report[work]
    what = WORK_NAMES[work].format(repeats=res["repeats"], fits=res["fits"])
    ok = {n: [r for r in runs if "error" not in r] for n, runs in res["systems"].items()}
    ref_name = next((n for n in REFERENCE[work] if ok.get(n)), None)
    ref = common.median([r["wall_s"] for r in ok[ref_name]]) if ref_name else None
    for name, runs in res["systems"].items():
      good = ok[name]
      walls = [r["wall_s"] for r in good]
      for r in good:
        loads += [r.get("load_before", 0), r.get("load_after", 0)]
      errors = [r["error"] for r in runs if "error" in r]
      med = common.median(walls)
      ratio = f"{med / ref:.1f}×" if med and ref else "–"
      notes = []
      if good and good[0].get("backend"):
        notes.append(f"{good[0]['backend']} backend")
      if good and good[0].get("threads"):
        notes.append(f"{good[0]['threads']} thread{'s' if good[0]['threads'] > 1 else ''}")
      if any("first_output_s" in r and r.get("plots_s") is not None for r in good):
        notes.append(f"first line {common.fmt(common.median([r['first_output_s'] for r in good]))} s")
        notes.append(f"plots drawn at {common.fmt(common.median([r['plots_s'] for r in good if r.get('plots_s')]))} s")
      if good and good[0].get("cpu_s") is not None:
        notes.append(f"CPU {common.fmt(common.median([r['cpu_s'] for r in good]))} s")
      if good and good[0].get("compile_s") is not None:
        notes.append(f"compile {common.fmt(common.median([r['compile_s'] for r in good]))} s, "
                     f"training {common.fmt(common.median([r['run_s'] for r in good]))} s")
      elif good and good[0].get("steady_fit_s") is not None:
        notes.append(f"{common.fmt(common.median([r['steady_fit_s'] for r in good]), 3)} s/fit steady")
      if errors:
        notes.append("**" + "; ".join(errors) + "**")
      load = max((max(r.get("load_before", 0), r.get("load_after", 0)) for r in good), default=None)
      rows.append([what, name + (" (reference)" if name == ref_name else ""), str(len(good)), _span(walls), ratio,
                   common.fmt(load), "; ".join(notes)])
  text = common.markdown_table(header, rows)
  if loads:
    text += (f"\n\nLoad (1-minute average, 2 cores) around the measurements: {min(loads):.2f}–{max(loads):.2f}"
             + (" (**taken under load**: above ~1 the numbers are inflated)" if max(loads) > 1 else "") + ".")
  return text


def render(report: dict) -> str:
  parts = ["### Overview\n", overview_table(report), ""]
  if "ceiling" in report:
    c2, c1 = report["ceiling"]["W2"], report["ceiling"]["W1"]
    parts.append("### Matmul ceiling (jax, batched small matmuls in one jitted lax.scan)\n")
    rows = []
    for c, what in ((c2, "W2 recurrent step"), (c1, "W1 step, 90 members")):
      if "error" not in c:
        shape = f"{c['members']} × {c['batch']} × {c['units']} → {4 * c['units']} ({what})"
        rows.append([shape, c.get("recurrent_gflops"), c.get("independent_gflops"), c.get("ceiling_gflops")])
    parts.append(common.markdown_table(
        ["shape (members × batch × H → 4H)", "dependent chain GFLOP/s", "independent GFLOP/s", "ceiling GFLOP/s"], rows))
  for name, metric in (("W1", "val_loss (per cells)"), ("W2", "val MAE")):
    if name in report:
      res = report[name]
      parts.append(f"\n### {name}: {res['repeats']} repeats ({res['fits']} fits)\n")
      parts.append(workload_table(res, metric))
      items = w1_targets(res) if name == "W1" else w2_targets(res, report.get("ceiling", {}).get("W2"))
      parts.append("\n" + targets_table(items))
  return "\n".join(parts)


def update_results(report: dict, text: str) -> None:
  m, v = report["machine"], report["versions"]
  head = [
      f"Command: `{report['command']}` · {report['started']} – {report['finished']}",
      f"Machine: {m['cpu']}, {m['cores']} cores ({', '.join(m['simd'])}), {m['mem_gib']} GiB, Linux {m['kernel']}, "
      f"PJRT_NPROC={m['pjrt_nproc'] or 'unset'}",
      "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val),
      _backend_line(report.get("backend")),
      "Skipped baselines: " + (", ".join(f"{k} ({why})" for k, why in report["skipped"].items()) or "none"),
  ]
  if text.strip():
    common.replace_section("run", "\n".join(head) + "\n\n" + text)
  if "seeds" in report:
    common.replace_section("seeds_scaling", seeds_scaling.section_text(report["seeds"]))


def _backend_line(b: dict | None) -> str:
  if not b or not b.get("platform"):
    return "Backend: not recorded"
  return (f"Backend: {b['platform']} ({b['device_kind']}, {b['devices']} device{'s' * (b['devices'] != 1)} "
          "per process)")


if __name__ == "__main__":
  main()
