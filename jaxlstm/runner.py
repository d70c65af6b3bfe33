"""Running a study into a results folder: plan, open or resume the folder, train, tables, report.

Flow (the imperative shell around `jaxlstm.ensemble`): `plan_study` resolves the
data once, checks every config against it and groups configs by static shape
(everything that can be wrong is raised here, before anything compiles) ->
`open_folder` creates, resumes or refuses the folder -> `run_plan` trains each
group that is not done with `ensemble.run_group` and commits it -> the tables and
the report are rebuilt from the folder's files.

Rerunning the same command resumes: finished configs are not trained again and
the tables come out byte-identical (CPU) to an uninterrupted run.
"""
from __future__ import annotations

import dataclasses
import datetime
import functools
import hashlib
import json
import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from jaxlstm import compiled, ensemble, store, tables
from jaxlstm import data as data_lib
from jaxlstm.ensemble import Group
from jaxlstm.problems import Dataset
from jaxlstm.study import Study, UsageError
from jaxlstm.train import Train, make_train

PROG = "jaxlstm.sweep"


# ---------------------------------------------------------------------------
# Planning.


@dataclasses.dataclass(frozen=True)
class GroupPlan:
  """One static-shape group and what running it costs (as `ensemble.run_group` will do it)."""
  group: Group
  dataset: Dataset
  train: Train
  calls: ensemble.CallPlan

  @property
  def compiles(self) -> int:
    return self.calls.compiles


@dataclasses.dataclass(frozen=True)
class Plan:
  """A study, its groups and the fingerprint of each config's data."""
  study: Study
  groups: list[GroupPlan]
  fingerprints: dict[str, str]

  @property
  def compiles(self) -> int:
    return sum(g.compiles for g in self.groups)


def plan_study(study: Study, *, memory_budget: int | None = None) -> Plan:
  """Resolve the data once, check every config against it and group configs by static shape.

  Everything that can be wrong with a config or its data is raised here
  (ConfigError / ValueError), before anything compiles.
  """
  budget = memory_budget or ensemble.DEFAULT_MEMORY_BUDGET
  datasets = data_lib.resolve_all(study.configs)
  fingerprints = {c.config_id: datasets[data_lib.data_key(c)].fingerprint for c in study.configs}
  plans = []
  for group in ensemble.plan(study.configs, study.repeats, pad_cells=True):
    dataset = datasets[data_lib.data_key(group.configs[0])]
    train = make_train(group.configs[0], dataset, widths=group.widths)
    calls = ensemble.plan_calls(group, train, dataset, memory_budget=budget)
    plans.append(GroupPlan(group, dataset, train, calls))
  return Plan(study, plans, fingerprints)


def _bytes(n: float) -> str:
  for unit in ("B", "KiB", "MiB", "GiB"):
    if n < 1024 or unit == "GiB":
      return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
    n /= 1024
  return f"{n:.1f} GiB"


def _count(n: int, noun: str) -> str:
  return f"{n} {noun}" + ("" if n == 1 else "s")


def describe_widths(group: Group) -> str:
  """A group's widths in words: "10 cells" for equal widths, else "units [128, 64] + dense [32]"."""
  units, dense = group.widths
  text = f"{units[0]} cells" if len(set(units)) == 1 and not dense else f"units {list(units)}"
  return text + (f" + dense {list(dense)}" if dense else "")


def describe_plan(plan: Plan, stream: TextIO) -> None:
  """Print the plan: configs, static-shape groups, compiles, estimated memory."""
  study = plan.study
  index = {c.config_id: i + 1 for i, c in enumerate(study.configs)}
  labels = study.labels()
  draw = f" ({study.random} drawn at random from the grid)" if study.random else ""
  print(f"study {study.name}: {len(study.configs)} configs{draw} x {study.repeats} repeats, "
        f"seed {study.seed}", file=stream)
  for cfg in study.configs:
    label = labels[cfg.config_id] if study.grid else "(base config)"
    print(f"  config {index[cfg.config_id]:3d}  {cfg.config_id}  {label}", file=stream)
  peak = max(g.calls.member_bytes * g.calls.members_per_call for g in plan.groups)
  print(f"plan: {_count(len(study.configs), 'config')}, {_count(len(plan.groups), 'group')}, "
        f"{_count(plan.compiles, 'compile')}, "
        f"{sum(g.group.members for g in plan.groups)} members, estimated peak memory {_bytes(peak)}",
        file=stream)
  for i, g in enumerate(plan.groups):
    cfg, shape, calls = g.group.configs[0], g.train.shape, g.calls
    padded = " (narrower configs zero-padded)" if g.group.padded else ""
    print(f"  group {i + 1}: configs {', '.join(str(index[c.config_id]) for c in g.group.configs)}; "
          f"{g.group.members} members; {describe_widths(g.group)}{padded}, {cfg.model.layers} layer(s), "
          f"batch {shape.batch} x {shape.steps} step(s)/epoch, {shape.epochs} epochs "
          f"in {calls.epoch_chunks} chunk(s); {calls.calls} call(s) of {calls.members_per_call} members; "
          f"{_count(g.compiles, 'compile')}; ~{_bytes(calls.member_bytes)}/member, "
          f"~{_bytes(calls.member_bytes * calls.members_per_call)}/call", file=stream)


# ---------------------------------------------------------------------------
# Environment.


def environment(argv: Sequence[str]) -> dict[str, Any]:
  """The command, package versions, device and time of this run (recorded in the manifest)."""
  import jax
  from importlib import metadata

  import jaxlstm
  versions = {"python": platform.python_version(), "jaxlstm": jaxlstm.__version__}
  for dist in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy"):
    try:
      versions[dist] = metadata.version(dist)
    except metadata.PackageNotFoundError:
      pass
  devices = jax.devices()
  device = f"{devices[0].platform}: {devices[0].device_kind} ({len(devices)} device{'s' * (len(devices) > 1)})"
  return {"argv": ["python", "-m", PROG, *argv], "versions": versions, "device": device, "time": now()}


def now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------
# Progress.


class Progress:
  """A one-line progress bar over groups and epoch chunks, with elapsed time and ETA.

  Fed by `run_group`'s `progress` callback. Work is counted in member-epochs,
  so a big group weighs more than a small one. The ETA extrapolates the rate
  seen since the first finished chunk, so a long first compile does not
  inflate it. Draws nothing unless enabled.
  """

  def __init__(self, stream: TextIO, total: int, enabled: bool, width: int = 24):
    self.stream, self.total, self.enabled, self.width = stream, max(1, total), enabled, width
    self.done = 0
    self.current = (0, 0, 0)  # group number, group count, member-epochs of the group
    self.start = time.perf_counter()
    self._reference: tuple[float, float] | None = None  # (time, fraction) at the first chunk
    self._last = 0

  def group(self, number: int, count: int, units: int) -> None:
    self.current = (number, count, units)
    self._draw(0.0, "compiling")

  def __call__(self, info: Mapping[str, Any]) -> None:
    calls, epochs = max(1, info["calls"]), max(1, info["epochs"])
    fraction = (info["call"] + info["epochs_done"] / epochs) / calls
    self._draw(fraction, f"epoch {info['epochs_done']}/{info['epochs']}"
               + (f", call {info['call'] + 1}/{calls}" if calls > 1 else ""), chunk=True)

  def finish_group(self) -> None:
    self.done += self.current[2]

  def _draw(self, group_fraction: float, text: str, chunk: bool = False) -> None:
    if not self.enabled:
      return
    now_ = time.perf_counter()
    fraction = min(1.0, (self.done + group_fraction * self.current[2]) / self.total)
    eta = "?"
    if self._reference is not None and fraction > self._reference[1]:
      t0, f0 = self._reference
      eta = _clock((now_ - t0) * (1 - fraction) / (fraction - f0))
    elif fraction >= 1:
      eta = _clock(0)
    if chunk and self._reference is None:
      self._reference = (now_, fraction)
    filled = int(round(fraction * self.width))
    bar = "#" * filled + "." * (self.width - filled)
    line = (f"[{bar}] {fraction:4.0%} group {self.current[0]}/{self.current[1]} {text} "
            f"| {_clock(now_ - self.start)} elapsed, eta {eta}")
    self.stream.write("\r" + line.ljust(self._last))
    self.stream.flush()
    self._last = len(line)

  def clear(self) -> None:
    if self.enabled and self._last:
      self.stream.write("\r" + " " * self._last + "\r")
      self.stream.flush()
      self._last = 0


def _clock(seconds: float) -> str:
  seconds = int(round(seconds))
  h, rest = divmod(seconds, 3600)
  return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


# ---------------------------------------------------------------------------
# The results folder: open, compare, resume.


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
  if not isinstance(d, Mapping) or not d:
    return {prefix.rstrip("."): d}
  out = {}
  for k, v in d.items():
    out.update(_flatten(v, f"{prefix}{k}."))
  return out


def study_differences(old: Mapping, new: Mapping) -> list[str]:
  """What makes two study specs different, in words (empty when they are the same study)."""
  diffs = []
  if old.get("base") != new.get("base"):
    a, b = _flatten(old.get("base", {})), _flatten(new.get("base", {}))
    fields = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    diffs.append("base config (" + "; ".join(f"{k}: {json.dumps(a.get(k))} in the folder, "
                                             f"{json.dumps(b.get(k))} now" for k in fields[:4])
                 + ("; ..." if len(fields) > 4 else "") + ")")
  if old.get("grid") != new.get("grid"):
    a, b = old.get("grid") or {}, new.get("grid") or {}
    keys = [k for k in [*a, *[k for k in b if k not in a]] if a.get(k) != b.get(k)]
    diffs.append("grid (" + "; ".join(f"{k}: {json.dumps(a.get(k))} in the folder, {json.dumps(b.get(k))} now"
                                      for k in keys) + ")")
  for key in ("random", "repeats", "seed"):
    if old.get(key) != new.get(key):
      diffs.append(f"{key} ({json.dumps(old.get(key))} in the folder, {json.dumps(new.get(key))} now)")
  if old.get("data") != new.get("data") and old.get("configs") == new.get("configs"):
    changed = [c for c in new.get("data", {}) if old.get("data", {}).get(c) != new["data"][c]]
    diffs.append(f"data (the dataset of {len(changed)} config(s) has a different fingerprint)")
  if not diffs and old.get("configs") != new.get("configs"):
    diffs.append("configs (the grid resolves to different config ids)")
  return diffs


def _check_writable(out: Path) -> None:
  """Raise UsageError unless `out` can be created or written, without creating anything."""
  probe = out
  while not probe.exists():
    if probe.parent == probe:
      break
    probe = probe.parent
  if probe.exists() and not probe.is_dir():
    raise UsageError(f"cannot write --out {out}: {probe} is not a directory")
  if not os.access(probe, os.W_OK | os.X_OK):
    raise UsageError(f"cannot write --out {out}: {probe} is not writable")


def open_folder(out: Path, study_spec: dict, plan: Plan, env: dict, *, overwrite: bool,
                log: Callable[[str], None]) -> tuple[store.RunFolder, Any]:
  """Create, replace or resume the results folder; refuse one holding another study.

  All refusals happen before anything is written.

  Returns:
    The folder and the lock held on it (close it when done).
  """
  _check_writable(out)
  existing = None
  if out.exists():
    if not out.is_dir():
      raise UsageError(f"--out {out} exists and is not a directory")
    try:
      existing = store.RunFolder.read_manifest(out)
    except ValueError as e:
      if not overwrite:
        raise UsageError(str(e)) from None
      existing = {}
    if existing is None and any(p.name != ".lock" for p in out.iterdir()):
      raise UsageError(f"--out {out} exists and is not a jaxlstm results folder (no manifest.json); "
                       "choose another --out (it is never deleted, even with --overwrite)")
  if existing and not overwrite:
    diffs = study_differences(existing["study"], study_spec)
    if diffs:
      raise UsageError(f"--out {out} holds a different study: {'; '.join(diffs)}. "
                       "Pass --overwrite to replace it, or choose another --out")
  groups = [{"configs": [c.config_id for c in g.group.configs], "cells": g.group.cells,
             **({} if describe_widths(g.group).endswith(" cells") else
                {"units": list(g.group.widths.units), "dense": list(g.group.widths.dense)}),
             "padded": g.group.padded, "members": g.group.members, "planned_compiles": g.compiles}
            for g in plan.groups]
  try:
    out.mkdir(parents=True, exist_ok=True)
    lock = _lock(out)  # before anything is deleted or written: one sweep per folder
    if existing is not None and overwrite:
      import shutil
      log(f"--overwrite: deleting the previous results in {out}")
      for child in out.iterdir():
        if child.name == ".lock":  # the lock we hold
          continue
        if child.is_dir() and not child.is_symlink():
          shutil.rmtree(child)
        else:
          child.unlink()
      existing = None
    if existing:
      folder = store.RunFolder(out, existing)
      folder.write_configs(plan.study.configs)  # a run killed while creating the folder left some out
    else:
      folder = store.RunFolder.create(out, study=study_spec, configs=plan.study.configs,
                                      groups=groups, environment=env)
  except OSError as e:
    raise UsageError(f"cannot write --out {out}: {e.strerror or e}") from None
  return folder, lock


def _lock(out: Path):
  """Hold an exclusive lock on the folder (released when the process ends, even by kill -9)."""
  try:
    import fcntl
  except ImportError:  # not POSIX: no lock
    return None
  handle = open(out / ".lock", "a")
  try:
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError:
    handle.close()
    raise UsageError(f"another sweep is writing to {out}; wait for it or choose another --out") from None
  return handle


# ---------------------------------------------------------------------------
# Training.


def state_like(train: Train, group: Group, seed: int):
  """Shapes of a group's `TrainState` (for restoring an epoch checkpoint)."""
  import jax
  members = ensemble.members_of(group, seed)
  return jax.eval_shape(lambda m: ensemble.init_members(train, m, ((group.widths, group.members),)), members)


class _LoggedCheckpointer:
  """A StateCheckpointer that says when it restores (the only sign that epochs were skipped)."""

  def __init__(self, inner: store.StateCheckpointer, on_restore: Callable[[int], None]):
    self.inner, self.on_restore = inner, on_restore

  def restore(self):
    restored = self.inner.restore()
    if restored is not None:
      self.on_restore(restored[0])
    return restored

  def save(self, epoch, states, history):
    self.inner.save(epoch, states, history)

  def clear(self):
    self.inner.clear()


def _state_dir(folder: store.RunFolder, group: Group, seed: int) -> Path:
  ident = json.dumps([[c.config_id for c in group.configs], group.cells, group.repeats, seed])
  return folder.path / "state" / hashlib.sha256(ident.encode()).hexdigest()[:12]


def _checkpointer(folder: store.RunFolder, gp: GroupPlan, group: Group, seed: int, number: int,
                  log: Callable[[str], None]) -> _LoggedCheckpointer | None:
  if group.configs[0].train.checkpoint_every <= 0:
    return None
  inner = store.StateCheckpointer(_state_dir(folder, group, seed),
                                  like=functools.partial(state_like, gp.train, group, seed))
  return _LoggedCheckpointer(inner, lambda epoch: log(f"group {number}: resuming from its checkpoint "
                                                      f"after epoch {epoch}"))


def run_plan(plan: Plan, folder: store.RunFolder, env: dict, *, log: Callable[[str], None],
             progress: Progress) -> list[str]:
  """Train every config of the plan that the folder has not finished; record each group.

  A session entry (argv, versions, the configs it trained) is added to the
  manifest only when there is something to train: rerunning a finished sweep
  leaves the folder untouched.

  Returns:
    Ids of the configs trained now.
  """
  study = plan.study
  todo = []
  for index, gp in enumerate(plan.groups):
    missing = [c for c in gp.group.configs if not folder.is_done(c.config_id)]
    if missing:
      todo.append((index, gp, missing))
  n_done = len(folder.done_ids())
  if not todo:
    return []
  if n_done:
    log(f"resuming: {n_done} of {len(study.configs)} configs already done (not retrained); "
        f"training {len(study.configs) - n_done}")
  folder.start_session(env)
  progress.total = max(1, sum(len(m) * study.repeats * gp.train.shape.epochs for _, gp, m in todo))
  trained = []
  for number, (index, gp, missing) in enumerate(todo, start=1):
    # Fewer configs, same program: each member's keys depend only on (seed, config, repeat).
    group = gp.group.subgroup(missing) if len(missing) < len(gp.group.configs) else gp.group
    checkpointer = _checkpointer(folder, gp, group, study.seed, number, log)
    progress.clear()
    log(f"group {number}/{len(todo)}: {len(group.configs)} config(s) x {study.repeats} repeats = "
        f"{group.members} members, {describe_widths(group)}" + (" (padded)" if group.padded else ""))
    progress.group(number, len(todo), len(missing) * study.repeats * gp.train.shape.epochs)
    ensembles, info = ensemble.run_group(group, gp.dataset, seed=study.seed, progress=progress,
                                         checkpointer=checkpointer)
    folder.record(index, ensembles, info)
    if checkpointer is not None:
      checkpointer.clear()
      try:
        (folder.path / "state").rmdir()  # only when no other group's steps are left
      except OSError:
        pass
    tables.write_running(folder.path)
    progress.finish_group()
    progress.clear()
    log(f"group {number}/{len(todo)} done: {info.compiles} compile(s) in {info.compile_seconds:.1f} s, "
        f"training {info.run_seconds:.1f} s")
    trained += [c.config_id for c in group.configs]
  return trained


def format_summary(run_dir: Path) -> str:
  """The describe()-style table of the score metric per config, as printed at the end."""
  import pandas as pd
  manifest = store.RunFolder.read_manifest(run_dir)
  path = Path(run_dir, tables.SUMMARY)
  frame = pd.read_csv(path, dtype={"config_id": str}) if path.is_file() else None
  if frame is None or frame.empty:
    return "no config has finished yet"
  labels = store.config_labels(manifest)
  columns = ["count", "n_diverged", "mean", "std", "min", "25%", "50%", "75%", "max"]
  table = frame[columns].copy()
  table.index = [labels[c] for c in frame["config_id"]]
  table["count"] = table["count"].astype(int)
  table["n_diverged"] = table["n_diverged"].astype(int)
  head = (f"final {store.summary_metric(manifest)} over {manifest['study']['repeats']} repeats per config "
          "(diverged repeats counted, not averaged):")
  return head + "\n" + table.to_string(float_format=lambda v: f"{v:.6g}")


def run_study(plan: Plan, out: Path, argv: Sequence[str], *, overwrite: bool, quiet: bool, cache: bool,
              stdout: TextIO, stderr: TextIO) -> int:
  """Train a planned study into `out` (creating, resuming or replacing it) and report.

  Returns:
    The exit status: 0 done, 130 interrupted (rerun the same command to continue).

  Raises:
    UsageError: the folder cannot be used (another study, in use, not writable).
  """
  def log(message: str) -> None:
    if not quiet:
      print(f"{PROG}: {message}", file=stderr, flush=True)

  spec = dict(plan.study.spec(), data=plan.fingerprints)
  env = environment(argv)
  folder, lock = open_folder(out, spec, plan, env, overwrite=overwrite, log=log)
  try:
    _tidy(folder, env, log)
    compiled.configure_persistent_cache(cache)
    progress = Progress(stderr, 1, enabled=not quiet and stderr.isatty())
    try:
      trained = run_plan(plan, folder, env, log=log, progress=progress)
    except KeyboardInterrupt:
      progress.clear()
      print(f"{PROG}: interrupted; rerun the same command to resume ({len(folder.done_ids())} of "
            f"{len(plan.study.configs)} configs done, kept in {out})", file=stderr)
      return 130
    if not trained:
      log("every config is already done: nothing to train")
    if trained:
      folder.finish_session(now())
    if trained or not (out / "report.md").is_file():
      _write_report(out, log)
    print(format_summary(out), file=stdout)
    print(f"results: {out}", file=stdout, flush=True)
    return 0
  finally:
    if lock is not None:
      lock.close()


def _tidy(folder: store.RunFolder, env: dict, log: Callable[[str], None]) -> None:
  """Remove a crash's leftovers, retrain configs whose files are lost, warn on changed versions."""
  leftovers = store.clean_leftovers(folder.path)
  if leftovers:
    log(f"removed {len(leftovers)} leftover(s) of an interrupted run: {', '.join(leftovers[:5])}"
        + (" ..." if len(leftovers) > 5 else ""))
  lost = folder.verify()
  if lost:
    log(f"{len(lost)} config(s) marked done have missing files and will be trained again")
  old = folder.manifest["versions"]
  changed = {k: (old.get(k), v) for k, v in env["versions"].items() if old.get(k) != v}
  if changed:
    log("versions differ from the folder's first run (results may not be bit-identical): "
        + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changed.items()))


def _write_report(out: Path, log: Callable[[str], None]) -> None:
  """Rebuild every table, then the plots and report.md; a report failure never costs results."""
  import warnings

  from jaxlstm import report
  tables.write_all(out)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always", report.PlotWarning)
    try:
      report.write_report(out)
    except Exception as e:  # the report is derived: a failure must not cost the results
      log(f"warning: report not written ({type(e).__name__}: {e}); "
          f"rebuild it with python -m jaxlstm.report {out}")
  for w in caught:
    if issubclass(w.category, report.PlotWarning):
      log(f"warning: {w.message}")
