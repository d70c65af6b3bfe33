"""1 vs N devices (issue 12): the same workloads on 1 and on N XLA:CPU host devices, side by side.

  python benchmarks/devices.py                    # default study (CLI), W1, W2, seeds scaling; 1 vs 2 devices
  python benchmarks/devices.py --only cli,seeds --rounds 5
  python benchmarks/devices.py --devices 1,2,3 --no-write

Every measurement is a fresh process under a timeout (common.run_child); within a
round the device counts alternate (1 2, then 2 1, ...) and the table gives medians
over rounds with every run in brackets. N devices are N host devices of one
process (`XLA_FLAGS=--xla_force_host_platform_device_count=N`; the CLI gets
`--devices N`), members laid out over them by the engine. No persistent
compilation cache (cold compiles, as a first run sees them). The 1-minute load is
recorded before and after every run: others' work on the shared cores inflates
and skews the numbers, which is why the counts alternate.

Workloads:
  cli    python -m jaxlstm.sweep --repeats 30 (the default study, 90 members), end to end
  W1     the default study through run_group (workers.jaxlstm_w1): compile and first-call run
  W2     stacked LSTM(20)x2 on damped sine, 30 repeats (workers.jaxlstm_w2)
  seeds  LSTM(10) on the five-point problem, 1 ... 1000 seeds in one call (seeds_scaling way a):
         steady-state seconds of the compiled call (median of 3 calls)
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
import seeds_scaling
import workers

SEEDS = (1, 10, 30, 100, 300, 1000)
TIMEOUT = {"cli": 300, "W1": 300, "W2": 900, "seeds": 300}


def log(msg: str) -> None:
  print(msg, flush=True)


def env_for(devices: int) -> dict:
  return {"XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAXLSTM_NO_CACHE": "1",
          "JAX_PLATFORMS": "cpu"}


def measure(work: str, devices: int, tmp: Path, size: int | None = None) -> dict:
  """One fresh process of `work` on `devices` host devices."""
  before = common.loadavg()
  env = env_for(devices)
  try:
    if work == "cli":
      out = tmp / f"cli-{devices}-{time.monotonic_ns()}"
      r = common.run_child([sys.executable, "-m", "jaxlstm.sweep", "--repeats", "30", "--devices", str(devices),
                            "--no-cache", "--quiet", "--out", str(out)], timeout=TIMEOUT[work], env=env,
                           expect_result=False)
      r.update(workers.cli_results(str(out)))
    elif work in ("W1", "W2"):
      r = common.python_child("workers.py", f"jaxlstm_{work.lower()}", "--repeats", "30", timeout=TIMEOUT[work],
                              env=env)
    else:
      r = common.python_child("seeds_scaling.py", "--child", "a", size, "--reps", 3, timeout=TIMEOUT[work], env=env)
  except (common.ChildTimeout, RuntimeError) as e:
    log(f"    FAILED / TIMEOUT: {str(e).splitlines()[0][:300]}")
    return {"error": str(e).splitlines()[0][:200], "load_before": before, "load_after": common.loadavg()}
  r.update(load_before=before, load_after=common.loadavg())
  return r


def seconds(work: str, r: dict) -> float | None:
  """The headline seconds of a run: CLI and W1/W2 wall of the process and the training call; seeds steady."""
  if "error" in r:
    return None
  return r.get("steady_s") if work == "seeds" else r.get("run_s")


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--devices", default="1,2", help="comma-separated host device counts (default 1,2)")
  p.add_argument("--only", default="cli,W1,W2,seeds", help="comma-separated: cli, W1, W2, seeds")
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--w2-rounds", type=int, default=2, help="rounds of W2 (1-2 min a run)")
  p.add_argument("--sizes", default=",".join(map(str, SEEDS)), help="seed counts of the seeds workload")
  p.add_argument("--load", type=float, default=0.7)
  p.add_argument("--max-wait", type=float, default=120, help="seconds to wait for a quiet machine per round")
  p.add_argument("--no-write", action="store_true",
                 help="do not update RESULTS.md; the JSON goes to results/devices_no_write.json, not devices.json")
  opts = p.parse_args(argv)
  counts = [int(d) for d in opts.devices.split(",")]
  only = [w.strip() for w in opts.only.split(",")]
  sizes = [int(s) for s in opts.sizes.split(",")]
  command = "python benchmarks/devices.py " + " ".join(sys.argv[1:] if argv is None else argv)
  report = {"command": command.strip(), "machine": common.machine(), "versions": common.versions(),
            "backend": common.backend(), "started": time.strftime("%Y-%m-%d %H:%M"), "devices": counts, "runs": []}
  tmp = Path(tempfile.mkdtemp(prefix="jaxlstm-devices-"))
  jobs = [(w, None) for w in only if w != "seeds"] + [("seeds", s) for s in sizes if "seeds" in only]
  for work, size in jobs:
    rounds = opts.w2_rounds if work == "W2" else opts.rounds
    for r in range(rounds):
      common.wait_for_quiet(opts.load, opts.max_wait, poll=15, log=log)
      order = counts if r % 2 == 0 else counts[::-1]
      for n in order:
        log(f"  {work}{'' if size is None else f' x {size} seeds'} on {n} device(s), round {r + 1}/{rounds} "
            f"(load {common.loadavg():.2f})")
        result = measure(work, n, tmp, size)
        result.update(work=work, size=size, devices=n, round=r)
        report["runs"].append(result)
        if "error" not in result:
          log(f"    {seconds(work, result):.3f} s, wall {result['wall_s']:.1f} s, "
              f"peak {result.get('child_peak_rss_mib', 0):.0f} MiB")
  report["finished"] = time.strftime("%Y-%m-%d %H:%M")
  out = common.HERE / "results" / ("devices_no_write.json" if opts.no_write else "devices.json")
  out.parent.mkdir(exist_ok=True)
  out.write_text(json.dumps(report, indent=1, default=str))
  text = render(report)
  print(text)
  if not opts.no_write:
    common.replace_section("devices", text)


def _med(values):
  values = [v for v in values if v is not None]
  return statistics.median(values) if values else None


def _cell(values, digits=2) -> str:
  values = [v for v in values if v is not None]
  if not values:
    return "–"
  runs = ", ".join(common.fmt(v, digits) for v in values)
  return f"{common.fmt(_med(values), digits)} ({runs})" if len(values) > 1 else common.fmt(values[0], digits)


def render(report: dict) -> str:
  m, v, b = report["machine"], report["versions"], report["backend"]
  counts = report["devices"]
  loads = [x for r in report["runs"] for x in (r.get("load_before"), r.get("load_after")) if x is not None]
  lines = [
      f"Command: `{report['command']}` · {report['started']} – {report['finished']}",
      f"Machine: {m['cpu']}, {m['cores']} cores, {m['mem_gib']} GiB, Linux {m['kernel']}; backend {b.get('platform')} "
      f"({b.get('device_kind')}); PJRT_NPROC={m['pjrt_nproc'] or 'unset'}",
      "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val),
      f"Load (1 min) before/after the runs: {min(loads):.2f}–{max(loads):.2f}"
      + (" (**taken under load**: others' work shared the cores)" if max(loads) > 1 else ""),
      "",
  ]
  header = ["workload", "devices", "runs", "training s (median, all runs)", "process wall s", "compile s",
            "peak RSS MiB", "speed-up vs 1 device", "score"]
  rows = []
  works = list(dict.fromkeys((r["work"], r["size"]) for r in report["runs"]))
  base_of = {}
  for work, size in works:
    for n in counts:
      runs = [r for r in report["runs"] if r["work"] == work and r["size"] == size and r["devices"] == n]
      ok = [r for r in runs if "error" not in r]
      train = [seconds(work, r) for r in ok]
      if n == counts[0]:
        base_of[(work, size)] = _med(train)
      base = base_of.get((work, size))
      speed = f"{base / _med(train):.2f}×" if base and _med(train) else "–"
      label = {"cli": "default study, CLI (30 repeats, 90 members)", "W1": "W1 run_group (90 members)",
               "W2": "W2 (30 repeats)", "seeds": f"seeds: {size}"}[work]
      score = ""
      if ok and work == "seeds":
        score = f"{1000 * _med(train) / size:.2f} ms/seed"
      elif ok and "scores" in ok[0]:
        score = "; ".join(f"{k}: {mean:.4f}" for k, (mean, _) in ok[0]["scores"].items())
      rows.append([label, str(n), f"{len(ok)}/{len(runs)}", _cell(train, 3), _cell([r["wall_s"] for r in ok], 1),
                   _cell([r.get("compile_s") for r in ok], 2), _cell([r.get("child_peak_rss_mib") for r in ok], 0),
                   speed, score])
  lines.append(common.markdown_table(header, rows))
  per_seed = {}
  for n in counts:
    one = _med([seconds("seeds", r) for r in report["runs"]
                if r["work"] == "seeds" and r["size"] == 1 and r["devices"] == n and "error" not in r])
    big = _med([seconds("seeds", r) for r in report["runs"]
                if r["work"] == "seeds" and r["size"] == 1000 and r["devices"] == n and "error" not in r])
    if one and big:
      per_seed[n] = (one, big / 1000)
  if per_seed:
    lines += ["", "| devices | ms / seed at 1 seed | ms / seed at 1000 seeds | ratio (target ≤ 1/8) |", "|---|---|---|---|"]
    base_one = per_seed[counts[0]][0] if counts[0] in per_seed else None
    for n, (one, big) in per_seed.items():
      lines.append(f"| {n} | {1000 * one:.2f} | {1000 * big:.3f} | 1/{one / big:.1f}"
                   + (f" (against 1 device's 1 seed: 1/{base_one / big:.1f})" if base_one and n != counts[0] else "")
                   + " |")
  return "\n".join(lines)


if __name__ == "__main__":
  main()
