"""Where the engine's time goes: W1 compile and W2 run, timed piece by piece.

  python benchmarks/profile_engine.py w1      # default study: import, trace, lower, XLA compile, calls
  python benchmarks/profile_engine.py w1opt   # the same program compiled at lower XLA optimisation levels
  python benchmarks/profile_engine.py parts   # its initialisation and training parts compiled apart, per
                                              # XLA option set: compile wall and CPU s, call s, output digests
  python benchmarks/profile_engine.py w2      # W2 per minibatch step: forward, grad, Adam, vs matmul time
  python benchmarks/profile_engine.py cell    # one LSTM time step at W2's shape: matmul vs gate elementwise
  python benchmarks/profile_engine.py thunks  # one W2 epoch under jax.profiler: time per XLA:CPU thunk, split
                                              # into per-time-step and per-minibatch work
  python benchmarks/profile_engine.py cli     # cProfile of `python -m jaxlstm.sweep --repeats 30` by module

Each prints a small table; none edits the engine. Run on a quiet machine.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

T0 = time.perf_counter()


def _structured_blank(train, members, layout):
  """Zero states with the optimizer's own structure (what `train.run_epochs` takes; a program's
  arguments hold them as `ensemble.boundary_states`)."""
  import jax
  import numpy as np

  from jaxlstm import ensemble
  shapes = jax.eval_shape(lambda m: ensemble.init_members(train, m, layout), members)
  return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)


def _timed(fn, reps=3):
  import jax
  times = []
  for _ in range(reps):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t)
  return times


def w1(repeats: int = 30, opt_levels: bool = False) -> None:
  t = time.perf_counter()
  import jax
  t_jax = time.perf_counter() - t
  t = time.perf_counter()
  import numpy as np

  import jaxlstm
  from jaxlstm import ensemble
  from jaxlstm.data import resolve
  t_pkg = time.perf_counter() - t
  configs = [jaxlstm.Config().override({"train.epochs": 500, "train.batch_size": 0, "train.shuffle": False,
                                        "model.cells": c}) for c in (1, 5, 10)]
  t = time.perf_counter()
  (group,) = ensemble.plan(configs, repeats)
  program = ensemble.group_program(group, resolve(group.configs[0]))
  members, data, layout = program.members, program.data, program.calls.layouts[0]
  train, epochs = program.train, program.train.shape.epochs
  blank = _structured_blank(train, members, layout)
  fresh = np.bool_(True)
  t_setup = time.perf_counter() - t

  def run_chunk(states, members, data, fresh):  # what ensemble.GroupProgram.entry compiles
    states = jax.lax.cond(fresh, lambda: ensemble.init_members(train, members, layout), lambda: states)
    return jax.vmap(lambda s, m: train.run_epochs(s, m, data, epochs))(states, members)

  fn = jax.jit(run_chunk)
  t = time.perf_counter()
  traced = fn.trace(blank, members, data, fresh)
  t_trace = time.perf_counter() - t
  t = time.perf_counter()
  lowered = traced.lower()
  t_lower = time.perf_counter() - t
  hlo_lines = len(lowered.as_text().splitlines())
  t = time.perf_counter()
  compiled = lowered.compile()
  t_compile = time.perf_counter() - t
  opt_lines = len(compiled.as_text().splitlines())
  calls = _timed(lambda: compiled(blank, members, data, fresh), 4)
  rows = [("import jax", t_jax), ("import jaxlstm", t_pkg), ("plan + make_train + member keys + data", t_setup),
          ("trace (Python: flax/optax/vmap/scan tracing)", t_trace), ("lower to StableHLO", t_lower),
          ("XLA:CPU compile", t_compile), ("first call", calls[0]), ("steady call (median of 3)",
                                                                    statistics.median(calls[1:]))]
  print(f"W1 default study, {repeats} repeats ({group.members} members padded to {group.cells} cells, "
        f"layout {layout}); StableHLO {hlo_lines} lines, optimised HLO {opt_lines} lines")
  print("| piece | s |\n|---|---|")
  for name, s in rows:
    print(f"| {name} | {s:.3f} |")
  if opt_levels:
    print("\n| XLA option | compile s | steady call s |\n|---|---|---|")
    for opts in ({}, {"xla_backend_optimization_level": 1}, {"xla_backend_optimization_level": 0},
                 {"xla_llvm_disable_expensive_passes": True},
                 {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}):
      t = time.perf_counter()
      c = jax.jit(run_chunk).lower(blank, members, data, fresh).compile(compiler_options=opts or None)
      tc = time.perf_counter() - t
      calls = _timed(lambda c=c: c(blank, members, data, fresh), 4)
      print(f"| {opts or 'default'} | {tc:.2f} | {statistics.median(calls[1:]):.4f} |")


def _patch_time_scan_unroll(unroll: int, time_steps: int = 50) -> None:
  """Experiment only: give the models' time scans (length `time_steps`) `unroll`; other scans unchanged."""
  import jax
  scan = jax.lax.scan

  def patched(f, init, xs=None, length=None, **kw):
    n = length if xs is None else jax.tree.leaves(xs)[0].shape[0]
    if n == time_steps and "unroll" not in kw:
      kw["unroll"] = unroll
    return scan(f, init, xs, length, **kw)
  jax.lax.scan = patched


def w2(repeats: int = 30, steps: int = 31, unroll: int = 1) -> None:
  """Per-minibatch cost of W2's pieces, each in a jitted lax.scan over `steps` minibatches."""
  import jax
  if unroll > 1:
    _patch_time_scan_unroll(unroll)
  import jax.numpy as jnp
  import numpy as np
  import optax

  import jaxlstm
  from jaxlstm import ensemble
  from jaxlstm.data import resolve
  sys.path.insert(0, __file__.rsplit("/", 1)[0])
  import workers
  cfg = jaxlstm.Config().override(workers.W2_OVERRIDES)
  (group,) = ensemble.plan([cfg], repeats)
  ds = resolve(cfg)
  gp = ensemble.group_program(group, ds, epoch_chunk=1)
  program, members = gp.train, gp.members
  params = jax.jit(lambda k: jax.lax.map(program.init_params, k))(members.keys.init)
  opt_state = jax.vmap(program.tx.init)(params)
  xb = jnp.asarray(ds.x_train[: 32 * steps], jnp.float32).reshape(steps, 32, 50, 1)
  yb = jnp.asarray(ds.y_train[: 32 * steps], jnp.float32).reshape(steps, 32, 5)
  net = program.network_for(program.shape.cells)

  def loss(p, x, y):
    return jnp.mean(jnp.abs(net.apply({"params": p}, x) - y))

  def fwd_only(p, x, y):
    return jax.vmap(loss, in_axes=(0, None, None))(p, x, y)

  def grad_only(p, x, y):
    return jax.vmap(jax.grad(loss), in_axes=(0, None, None))(p, x, y)

  def train_step(carry, x, y):
    p, s = carry
    g = jax.vmap(jax.grad(loss), in_axes=(0, None, None))(p, x, y)
    u, s = jax.vmap(program.tx.update)(g, s, p)
    return optax.apply_updates(p, u), s

  def scan_of(piece, carry_out):
    def run(p, s, xb, yb):
      def body(c, xy):
        x, y = xy
        if carry_out:
          return piece(c, x, y), None
        out = piece(c[0], x, y)
        return c, jax.tree.map(lambda a: jnp.sum(a), out)
      return jax.lax.scan(body, (p, s), (xb, yb))
    return jax.jit(run)

  rows = []
  for name, piece, carry in (("forward (loss only)", fwd_only, False), ("forward + backward (grad)", grad_only, False),
                             ("train step (grad + Adam update)", train_step, True)):
    fn = scan_of(piece, carry).lower(params, opt_state, xb, yb).compile()
    times = _timed(lambda fn=fn: fn(params, opt_state, xb, yb), 4)
    rows.append((name, statistics.median(times[1:]) / steps))
  fwd_flops = workers.lstm_forward_flops(1, [20, 20], 50, 5) * 32 * repeats
  # An engine epoch for comparison: 32 minibatches + validation, one member chunk.
  epoch, _ = gp.entry(((20, repeats),), members)
  blank = gp.blank_states(members)
  times = _timed(lambda: epoch(blank, members, gp.data, np.bool_(True)), 3)
  ceil = workers.ceiling(members=repeats, batch=32, units=20)["ceiling_gflops"]
  print(f"W2 ({repeats} members, batch 32, 50 steps, LSTM(20)x2, time-scan unroll {unroll}): time per minibatch; "
        f"matmul ceiling {ceil:.0f} GFLOP/s")
  print("| piece | ms / minibatch | GFLOP/s | ms at the ceiling |\n|---|---|---|---|")
  for name, s in rows:
    mult = 1 if name.startswith("forward (") else 3
    print(f"| {name} | {1000 * s:.2f} | {mult * fwd_flops / s / 1e9:.1f} | {1000 * mult * fwd_flops / ceil / 1e9:.2f} |")
  per_epoch = statistics.median(times[1:])
  print(f"| engine: 1 epoch (init + 32 minibatches + validation) / 32 | {1000 * per_epoch / 32:.2f} | "
        f"{(3 * fwd_flops * 1000 / 32 / 32 + fwd_flops * 200 / 32 / 32) * 32 / per_epoch / 1e9:.1f} | |")


def thunks(repeats: int = 30, top: int = 25) -> None:
  """Where one W2 epoch's thread time goes, thunk by thunk (`jax.profiler`, read with `ProfileData`).

  XLA:CPU's thunk executor records each thunk it runs (a fusion, a dot, a copy) when a
  trace is on. Thunks run once per time step (inside the layers' scans: 32 minibatches
  x 50 steps) are told from those run once per minibatch (the projections over all
  steps, their gradients, layout copies, Adam) by how often they ran.
  """
  import collections
  import glob
  import re
  import tempfile

  import jax
  import numpy as np

  import jaxlstm
  from jaxlstm import ensemble
  from jaxlstm.data import resolve
  sys.path.insert(0, __file__.rsplit("/", 1)[0])
  import workers
  cfg = jaxlstm.Config().override(workers.W2_OVERRIDES)
  (group,) = ensemble.plan([cfg], repeats)
  gp = ensemble.group_program(group, resolve(cfg), epoch_chunk=1)
  epoch, _ = gp.entry(gp.calls.layouts[0], gp.members)
  blank = gp.blank_states(gp.members)

  def call():
    return jax.block_until_ready(epoch(blank, gp.members, gp.data, np.bool_(True)))

  call()
  wall = _timed(call, 2)
  folder = tempfile.mkdtemp(prefix="jaxlstm-thunks-")
  with jax.profiler.trace(folder):
    call()
  (file,) = glob.glob(f"{folder}/**/*.xplane.pb", recursive=True)
  spent: dict[str, list] = collections.defaultdict(lambda: [0, 0.0])
  for plane in jax.profiler.ProfileData.from_file(file).planes:
    for line in plane.lines:
      if not line.name.startswith("tf_XLAEigen"):  # XLA:CPU's worker threads run the thunks
        continue
      for event in line.events:
        # Loops and conditionals contain other thunks: count only what they run.
        if not event.name.startswith("ThunkExecutor") and not re.fullmatch(r"(while|conditional)(\.\d+)?",
                                                                             event.name):
          spent[event.name][0] += 1
          spent[event.name][1] += event.duration_ns / 1e6
  hlo = epoch.as_text()
  steps = 32 * 50  # minibatches x time steps of one epoch
  total = sum(ms for _, ms in spent.values())
  per_step = sum(ms for n, ms in spent.values() if n >= steps)
  print(f"W2 epoch, {repeats} members on {len(jax.devices())} device(s): {statistics.median(wall):.2f} s wall; "
        f"thunks {total:.0f} ms of thread time: {per_step:.0f} ms ({100 * per_step / total:.0f}%) in thunks run "
        f">= {steps} times (the time loops), {total - per_step:.0f} ms in the rest")
  print("| thunk | runs | ms | us / run | shape | op |\n|---|---|---|---|---|---|")
  for name, (n, ms) in sorted(spent.items(), key=lambda kv: -kv[1][1])[:top]:
    found = re.search(rf"^\s*(?:ROOT )?%?{re.escape(name)} = (\S+) .*?op_name=\"([^\"]*)\"", hlo, re.MULTILINE)
    shape, op = (found.group(1), found.group(2).rsplit("/", 2)[-2:]) if found else ("", ["", ""])
    print(f"| {name} | {n} | {ms:.0f} | {1000 * ms / n:.0f} | {shape} | {'/'.join(op)} |")


def cell(members: int = 30, batch: int = 32, units: int = 20) -> None:
  """Cost of one LSTM time step at W2's shape, piece by piece (a lax.scan of 50 steps, 20 times)."""
  import jax
  import jax.numpy as jnp
  key = jax.random.key(0)
  w = jax.random.normal(key, (members, units, 4 * units)) * 0.1
  x = jax.random.normal(key, (50, members, batch, 4 * units))
  sig = jax.nn.sigmoid
  variants = {
      "matmul only (h @ U)": ("matmul", sig, jnp.tanh),
      "elementwise only, jax.nn.sigmoid + tanh": ("elementwise", sig, jnp.tanh),
      "elementwise only, sigmoid as 0.5*tanh(x/2)+0.5": ("elementwise", lambda v: 0.5 * jnp.tanh(0.5 * v) + 0.5, jnp.tanh),
      "elementwise only, no transcendentals": ("elementwise", lambda v: v, lambda v: v),
      "full LSTM step (matmul + gates)": ("lstm", sig, jnp.tanh),
  }
  print(f"LSTM time step, {members} members x batch {batch} x {units} units (per-step elements: {members * batch * 4 * units})")
  print("| variant | us / time step |\n|---|---|")
  for name, (kind, s, act) in variants.items():
    def step(carry, xt, kind=kind, s=s, act=act):
      h, c = carry
      r = jnp.einsum("mbh,mhg->mbg", h, w) if kind != "elementwise" else jnp.concatenate([h] * 4, -1)
      z = xt + r
      if kind == "matmul":
        return (z[..., :units] + z[..., units:2 * units] + z[..., 2 * units:3 * units] + z[..., 3 * units:], c), None
      i, f, g, o = jnp.split(z, 4, axis=-1)
      c = s(f) * c + s(i) * act(g)
      return (s(o) * act(c), c), None

    @jax.jit
    def run(x, step=step):
      h0 = jnp.zeros((members, batch, units))
      return jax.lax.scan(lambda carry, _: (jax.lax.scan(step, carry, x)[0], None), (h0, h0), None, length=20)[0]
    compiled = run.lower(x).compile()
    times = _timed(lambda compiled=compiled: compiled(x), 4)
    print(f"| {name} | {min(times[1:]) / 1000 * 1e6:.1f} |")


def cli(repeats: int = 30) -> None:
  import cProfile
  import os
  import pstats
  import runpy
  import tempfile
  tmp = tempfile.mkdtemp(prefix="jaxlstm-prof-")
  os.environ["XDG_CACHE_HOME"] = tmp
  sys.argv = ["jaxlstm.sweep", "--repeats", str(repeats), "--out", tmp + "/out", "--quiet"]
  prof = cProfile.Profile()
  t = time.perf_counter()
  prof.enable()
  try:
    runpy.run_module("jaxlstm.sweep", run_name="__main__", alter_sys=True)
  except SystemExit:
    pass
  prof.disable()
  wall = time.perf_counter() - t
  stats = pstats.Stats(prof)
  rows = []
  for (file, line, func), (cc, nc, tt, ct, callers) in stats.stats.items():
    if ct > 0.3 and ("jaxlstm" in file or func in ("compile", "_find_and_load", "savefig", "lower")):
      rows.append((ct, f"{file.split('site-packages/')[-1].split('/work/main/')[-1]}:{func}"))
  rows.sort(reverse=True)
  print(f"CLI --repeats {repeats}, cold cache, in-process wall {wall:.2f} s (+ interpreter start); "
        f"cumulative seconds of the largest jaxlstm functions:")
  print("| cumulative s | function |\n|---|---|")
  for ct, name in rows[:25]:
    print(f"| {ct:.2f} | {name} |")


PART_OPTIONS = ({}, {"xla_backend_optimization_level": 0}, {"xla_cpu_use_fusion_emitters": False})


def parts(repeats: int = 30, rounds: int = 2) -> None:
  """The default study's program in its two parts, compiled apart with the store's options plus each of
  `PART_OPTIONS` (fresh compiles, JAX's cache off), `rounds` times alternating. A digest that differs from
  the first row's means other numbers: an option that changes them is not one the store may use."""
  import hashlib
  import resource

  import jax
  import numpy as np

  import jaxlstm
  from jaxlstm import compiled, ensemble
  from jaxlstm.data import resolve
  jax.config.update("jax_enable_compilation_cache", False)
  configs = [jaxlstm.Config().override({"model.cells": c}) for c in (1, 5, 10)]
  (group,) = ensemble.plan(configs, repeats)
  program = ensemble.group_program(group, resolve(group.configs[0]))
  members, data, layout = program.members, program.data, program.calls.layouts[0]
  train, epochs = program.train, program.calls.epoch_chunk
  widths, lanes = ensemble.lane_widths(train, layout)
  blank = _structured_blank(train, members, layout)
  pieces = {"initialisation": (lambda m: ensemble.init_lanes(train, m, widths, lanes), (members,)),
            "training": (lambda s, m, d: jax.vmap(lambda st, mb: train.run_epochs(st, mb, d, epochs))(s, m),
                         (blank, members, data))}

  def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime

  print(f"default study, {repeats} repeats, store options {compiled.COMPILER_OPTIONS}")
  print("| round | piece | extra option | lower s | compile s | compile CPU s | steady call s | digest |")
  print("|---|---|---|---|---|---|---|---|")
  for round_ in range(1, rounds + 1):
    for extra in PART_OPTIONS:
      for name, (fn, args) in pieces.items():
        jax.clear_caches()  # a fresh trace, lowering and compile every time
        t = time.perf_counter()
        lowered = jax.jit(fn).lower(*args)
        t_lower, t, c = time.perf_counter() - t, time.perf_counter(), cpu()
        executable = lowered.compile(compiler_options={**compiled.COMPILER_OPTIONS, **extra})
        t_compile, c_compile = time.perf_counter() - t, cpu() - c
        out = executable(*args)
        digest = hashlib.sha256(b"".join(np.asarray(a).tobytes() for a in jax.tree.leaves(out))).hexdigest()[:10]
        calls = _timed(lambda executable=executable, args=args: executable(*args), 5)
        print(f"| {round_} | {name} | {extra or '-'} | {t_lower:.2f} | {t_compile:.2f} | {c_compile:.2f} | "
              f"{statistics.median(calls):.3f} | {digest} |", flush=True)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("what", choices=["w1", "w1opt", "parts", "w2", "cell", "thunks", "cli"])
  p.add_argument("--repeats", type=int, default=30)
  p.add_argument("--unroll", type=int, default=1, help="w2: experiment with unrolled time scans")
  args = p.parse_args()
  if args.what in ("w1", "w1opt"):
    w1(args.repeats, opt_levels=args.what == "w1opt")
  elif args.what == "parts":
    parts(args.repeats)
  elif args.what == "w2":
    w2(args.repeats, unroll=args.unroll)
  elif args.what == "cell":
    cell(args.repeats)
  elif args.what == "thunks":
    thunks(args.repeats)
  else:
    cli(args.repeats)


if __name__ == "__main__":
  main()
