"""Shared helpers of the benchmark scripts: child processes, peak memory, machine facts, RESULTS.md.

Every measurement runs in its own subprocess (`run_child`) under a wall-clock
timeout: a fresh process gives an honest peak RSS and a cold in-memory jit
cache, and a deadlocked XLA:CPU program (reference/hang.md) cannot hang the
whole benchmark. The child prints one JSON line prefixed with `RESULT ` as its
last output; the parent adds the process wall time and its peak RSS (from
`os.wait4`, which reports the child's own maximum resident set).
"""
from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# jaxlstm's one reader of /proc/cpuinfo (it imports numpy only, not jax).
from jaxlstm.devices import host_cpu

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS_MD = HERE / "RESULTS.md"
MIB = 2**20


class ChildTimeout(RuntimeError):
  """A benchmark subprocess ran past its timeout (a hang, or a machine far slower than expected)."""


def emit(result: dict) -> None:
  """Child side: print the result line the parent parses (with this process's peak RSS)."""
  result = dict(result)
  result.setdefault("peak_rss_mib", peak_rss_mib())
  print("RESULT " + json.dumps(result), flush=True)


def peak_rss_mib() -> float:
  """Peak resident set of this process (VmHWM), in MiB."""
  try:
    for line in Path("/proc/self/status").read_text().splitlines():
      if line.startswith("VmHWM:"):
        return int(line.split()[1]) / 1024
  except OSError:
    pass
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(args: list[str], *, timeout: float, env: dict | None = None, cwd: Path | None = None,
              expect_result: bool = True) -> dict:
  """Run `args` in a fresh process; return its RESULT dict plus wall_s and child_peak_rss_mib.

  With `expect_result=False` (a command that is not ours, e.g. the CLI) the dict
  holds only wall_s, child_peak_rss_mib and peak_rss_mib.

  Raises:
    ChildTimeout: past `timeout` seconds (the child's process group is killed).
    RuntimeError: the child failed or printed no RESULT line (its output tail is in the message).
  """
  full_env = {**os.environ, **(env or {})}
  if "XDG_CACHE_HOME" not in (env or {}):
    # A measurement sees no cache of the user's: warm ones give their own XDG_CACHE_HOME (or
    # `workers._jax_cache`), the rest compile cold, as a first run on a new machine does.
    full_env["JAXLSTM_NO_CACHE"] = "1"
  with tempfile.TemporaryFile("w+") as out:
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=full_env,
                            cwd=str(cwd or ROOT), start_new_session=True)
    status, usage = None, None
    first_output = None
    while True:
      pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
      if pid:
        break
      if first_output is None and os.fstat(out.fileno()).st_size > 0:
        first_output = time.perf_counter() - t0  # the first line the user sees (to within 20 ms)
      if time.perf_counter() - t0 > timeout:
        os.killpg(proc.pid, 9)
        os.wait4(proc.pid, 0)
        out.seek(0)
        raise ChildTimeout(f"timed out after {timeout:.0f} s: {' '.join(args)}\n{out.read()[-2000:]}")
      time.sleep(0.02)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    out.seek(0)
    text = out.read()
  lines = [l for l in text.splitlines() if l.startswith("RESULT ")]
  if not expect_result and proc.returncode == 0:
    lines = ["RESULT {}"]
  if proc.returncode != 0 or not lines:
    raise RuntimeError(f"exit {proc.returncode}: {' '.join(args)}\n{text[-3000:]}")
  result = json.loads(lines[-1][len("RESULT "):])
  result["wall_s"] = wall
  result["first_output_s"] = first_output if first_output is not None else (wall if text else None)
  result["cpu_s"] = usage.ru_utime + usage.ru_stime  # the child's own CPU (not a detached grandchild's)
  result["child_peak_rss_mib"] = usage.ru_maxrss / 1024
  result.setdefault("peak_rss_mib", result["child_peak_rss_mib"])
  return result


def python_child(script: str, *args: str, timeout: float, env: dict | None = None) -> dict:
  return run_child([sys.executable, str(HERE / script), *map(str, args)], timeout=timeout, env=env)


def loadavg() -> float:
  return float(Path("/proc/loadavg").read_text().split()[0])


def wait_for_quiet(threshold: float = 0.7, max_wait: float = 600.0, poll: float = 30.0, log=print) -> dict:
  """Wait until the 1-minute load is below `threshold` (at most `max_wait` s).

  Returns `{"load": ..., "quiet": bool, "waited_s": ...}`; quiet False means measured under load.
  """
  t0 = time.perf_counter()
  while True:
    load = loadavg()
    waited = time.perf_counter() - t0
    if load < threshold:
      return {"load": load, "quiet": True, "waited_s": waited}
    if waited >= max_wait:
      log(f"  load {load:.2f} still >= {threshold} after {waited:.0f} s: measuring under load")
      return {"load": load, "quiet": False, "waited_s": waited}
    log(f"  load {load:.2f} >= {threshold}: waiting {poll:.0f} s")
    time.sleep(poll)


def cpu_model() -> str:
  return host_cpu()["model"]


def versions() -> dict:
  from importlib import metadata
  out = {"python": platform.python_version()}
  for name in ("jax", "jaxlib", "flax", "optax", "numpy", "keras", "torch"):
    try:
      out[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      out[name] = None
  try:
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, timeout=10).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "jaxlstm"],
                           capture_output=True, text=True, timeout=10).stdout.strip()
    out["jaxlstm commit"] = head + (" + uncommitted jaxlstm/ changes" if dirty else "") if head else None
  except (OSError, subprocess.SubprocessError):
    out["jaxlstm commit"] = None
  return out


def machine() -> dict:
  simd = [f for f in ("avx2", "fma", "avx512f") if f in host_cpu()["extensions"]]
  return {"cpu": cpu_model(), "cores": os.cpu_count(), "simd": simd,
          "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
          "kernel": platform.release(), "pjrt_nproc": os.environ.get("PJRT_NPROC")}


def backend(env: dict | None = None) -> dict:
  """The jax backend a fresh process gets here (platform, device kind and count, XLA_FLAGS)."""
  code = ("import json, os, jax; d = jax.devices(); print('RESULT ' + json.dumps({'platform': d[0].platform, "
          "'device_kind': d[0].device_kind, 'devices': len(d), 'xla_flags': os.environ.get('XLA_FLAGS')}))")
  try:
    return run_child([sys.executable, "-c", code], timeout=120, env=env)
  except (ChildTimeout, RuntimeError) as e:
    return {"platform": None, "error": str(e).splitlines()[0][:200]}


def median(values):
  values = [v for v in values if v is not None]
  return statistics.median(values) if values else None


def have(module: str) -> bool:
  import importlib.util
  return importlib.util.find_spec(module) is not None


def fmt(value, digits: int = 2) -> str:
  if value is None:
    return "–"
  if isinstance(value, str):
    return value
  if abs(value) >= 100:
    return f"{value:.0f}"
  return f"{value:.{digits}f}"


def markdown_table(header: list[str], rows: list[list]) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
  lines += ["| " + " | ".join(fmt(c) if not isinstance(c, str) else c for c in row) + " |" for row in rows]
  return "\n".join(lines)


def replace_section(name: str, body: str, path: Path = RESULTS_MD) -> None:
  """Replace the text between `<!-- BEGIN name -->` and `<!-- END name -->` (appending if absent)."""
  text = path.read_text() if path.exists() else "# Benchmark results\n"
  begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
  block = f"{begin}\n{body.rstrip()}\n{end}"
  if begin in text and end in text:
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    text = head + block + tail
  else:
    text = text.rstrip() + "\n\n" + block + "\n"
  path.write_text(text)


def wait_for_plots(out: Path, t0: float, timeout: float = 300.0) -> float | None:
  """Wait for a sweep's background plot renderer to finish; seconds from `t0` (perf_counter) or None.

  The renderer outlives the CLI process: a benchmark waits for it so that it never
  runs beside the next measurement, and reports when the plots were there.
  """
  status_file = Path(out) / ".plots-status.json"
  deadline = time.perf_counter() + timeout
  while time.perf_counter() < deadline:
    try:
      status = json.loads(status_file.read_text()).get("status")
    except (OSError, ValueError):
      status = None if not (Path(out) / "plots" / "scores.png").is_file() else "done"
    if status in ("done", "failed"):
      return time.perf_counter() - t0
    time.sleep(0.05)
  return None
