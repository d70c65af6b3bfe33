"""Running a study into a results folder: plan, open or resume the folder, train, tables, report.

Flow (the imperative shell around `jaxlstm.ensemble`): `plan_study` resolves the
data once, checks every config against it and groups configs by static shape
(everything that can be wrong is raised here, before anything compiles) ->
`open_folder` creates, resumes or refuses the folder -> `run_plan` trains each
group that is not done with `ensemble.run_group` and commits it -> the tables and
the report are rebuilt from the folder's files.

Under `jax.distributed` (`peers`), every process plans the same study; process 0
alone opens the folder and tells the others what is left to train, every process
runs each group's calls (its devices' share of the members), and process 0 alone
records the results and writes the tables and the report.

Rerunning the same command resumes: finished configs are not trained again and
the tables come out byte-identical (CPU) to an uninterrupted run.
"""
from __future__ import annotations

import dataclasses
import datetime
import functools
import hashlib
import json
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from jaxlstm import compiled, ensemble, interrupts, render, store, tables
from jaxlstm import metrics as metrics_lib
from jaxlstm import data as data_lib
from jaxlstm.ensemble import Group
from jaxlstm.problems import Dataset
from jaxlstm.store import study_differences  # noqa: F401  (kept here: where callers look for it)
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
  """A study, its groups, the fingerprint of each config's data and its naive baselines."""
  study: Study
  groups: list[GroupPlan]
  fingerprints: dict[str, str]
  baselines: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
  data_notes: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

  @property
  def compiles(self) -> int:
    return sum(g.compiles for g in self.groups)


def plan_study(study: Study, *, memory_budget: int | None = None, datasets: dict | None = None,
               devices: int = 1, memories: int | None = None) -> Plan:
  """Resolve the data once, check every config against it and group configs by static shape.

  Everything that can be wrong with a config or its data is raised here
  (ConfigError / ValueError), before anything compiles.

  Args:
    study: the study.
    memory_budget: bytes per call (default `ensemble.DEFAULT_MEMORY_BUDGET`).
    datasets: `data.resolve_all(study.configs)` when the caller has it already.
    devices: the size of the mesh the groups will run on.
    memories: its separate memories (`ensemble.plan_calls`).
  """
  budget = memory_budget or ensemble.DEFAULT_MEMORY_BUDGET
  if datasets is None:
    datasets = data_lib.resolve_all(study.configs)
  fingerprints = {c.config_id: datasets[data_lib.data_key(c)].fingerprint for c in study.configs}
  plans = []
  for group in ensemble.plan(study.configs, study.repeats, pad_cells=True):
    dataset = datasets[data_lib.data_key(group.configs[0])]
    train = make_train(group.configs[0], dataset, widths=group.widths)
    calls = ensemble.plan_calls(group, train, dataset, memory_budget=budget, devices=devices, memories=memories)
    plans.append(GroupPlan(group, dataset, train, calls))
  references = {c.config_id: naive_baselines(c, datasets[data_lib.data_key(c)]) for c in study.configs}
  notes = {c.config_id: note for c in study.configs
           if (note := _data_note(datasets[data_lib.data_key(c)].metadata))}
  return Plan(study, plans, fingerprints, {c: b for c, b in references.items() if b}, notes)


def _data_note(metadata: Mapping[str, Any]) -> dict[str, Any]:
  """What the report states about a config's data: gaps in a CSV series (`data.options.fill`), the
  cross-validation folds (`data.cv`, as resolved) and the series transforms, for the manifest."""
  note: dict[str, Any] = {}
  if metadata.get("fill"):
    note.update(fill=metadata["fill"], gaps=dict(metadata.get("gaps") or {}),
                filled=dict(metadata.get("filled") or {}), dropped_rows=int(metadata.get("dropped_rows") or 0))
  if metadata.get("cv"):
    note["cv"] = dict(metadata["cv"])
  record = metadata.get("series_transform")
  if record is not None:
    note["series_transform"] = {"power": record.power, "lags": list(record.lags),
                                "lmbda": sorted({round(float(v), 6) for v in record.lmbda})}
  return note


def naive_baselines(config, dataset: Dataset) -> dict[str, Any]:
  """The scores of naive forecasts (`jaxlstm.baselines`) a regression config has to beat.

  Returns:
    history key -> {forecast: validation score} for the keys a naive forecast has
    (`val_loss` for an mse/mae loss without an L1/L2 penalty, `val_mse`, `val_mae`), and
    `train_mean_loss`: the training loss of predicting the training mean, the reference
    of the diagnosis' capacity rule. Empty for classification, per-repeat splits
    (`data.resplit`), cross-validation (`data.cv`: no validation set is every fold's)
    and data whose target feature is unknown.
  """
  from jaxlstm import baselines
  if (dataset.task != "regression" or config.data.resplit or config.data.cv != "none"
      or not dataset.x_val.shape[0]):
    return {}
  season = config.data.options.get("season")
  season = int(season) if isinstance(season, int) and season > 0 else None
  out: dict[str, Any] = {}
  for metric in ("mse", "mae"):
    try:
      out[f"val_{metric}"] = dict(baselines.naive_scores(dataset, metric=metric, season=season).scores)
    except ValueError:
      continue
  loss = config.train.loss
  if loss in ("mse", "mae") and f"val_{loss}" in out:
    if not config.model.uses_penalty:
      out["val_loss"] = out[f"val_{loss}"]
    out["train_mean_loss"] = float(baselines.naive_scores(dataset, metric=loss, split="train",
                                                          methods=("mean",)).scores["mean"])
  return out


# The memory model (`estimate_memory`), calibrated against measured peak RSS on CPU
# (benchmarks/RESULTS.md, "memory model"): the process itself (interpreter, jax, XLA's
# compiler), the largest call (members x `ensemble.estimate_member_bytes`), and the
# group's results on the host (histories and final states, held a few times over
# while they are gathered, sliced and written).
BASE_BYTES = 440 * 2**20  # 550, then 520 (no matplotlib, scipy.stats), now 440 (leaner imports; benchmarks/memory_model.py)
HISTORY_COPIES = 4
STATE_COPIES = 6
# With several groups the next group's program compiles while one trains (`ensemble.prepare_group`):
# XLA's compiler then holds a second program's working memory (+54 MiB measured on a 3-group study).
AHEAD_BYTES = 64 * 2**20


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
  """Estimated peak resident memory of a plan, and its parts (bytes)."""
  peak: int
  base: int
  call: int
  results: int
  group: int  # index of the group that sets the peak


def estimate_memory(plan: Plan) -> MemoryEstimate:
  """The peak memory a run of `plan` needs: the process, its largest call and a group's results."""
  best = None
  base = BASE_BYTES + (AHEAD_BYTES if len(plan.groups) > 1 else 0)
  for index, g in enumerate(plan.groups):
    cfg = g.group.configs[0]
    n_params = ensemble.param_count(g.train, cfg, g.dataset)
    n_metrics = len(metrics_lib.history_keys(cfg))
    results = g.group.members * 4 * (HISTORY_COPIES * g.train.shape.epochs * n_metrics + STATE_COPIES * n_params)
    call = g.calls.member_bytes * g.calls.members_per_call
    estimate = MemoryEstimate(base + call + results, base, call, results, index)
    if best is None or estimate.peak > best.peak:
      best = estimate
  return best


def available_memory() -> int | None:
  """Memory the system can give this process now (MemAvailable), None where unknown."""
  try:
    for line in Path("/proc/meminfo").read_text().splitlines():
      if line.startswith("MemAvailable:"):
        return int(line.split()[1]) * 1024
  except (OSError, ValueError, IndexError):
    pass
  return None


def check_memory(plan: Plan, max_memory: int | None = None) -> MemoryEstimate:
  """Refuse (UsageError) a plan whose estimated peak exceeds `max_memory` or the memory available.

  Large groups are already split into member chunks that fit the memory budget, so
  this refuses only what cannot run at all: results too large to hold, or a single
  member larger than the machine.
  """
  estimate = estimate_memory(plan)
  limit = max_memory or available_memory()
  if limit is not None and estimate.peak > limit:
    g = plan.groups[estimate.group]
    what = "--max-memory" if max_memory else "the memory available now"
    if estimate.base + g.calls.member_bytes > limit:
      fix = "one member alone is too large: use a smaller model (fewer cells or layers), shorter sequences or a smaller batch"
    else:
      fix = ("use fewer repeats per run (a folder's repeats can grow later), fewer epochs or a smaller model"
             + ("" if max_memory else ", or set --max-memory"))
    raise UsageError(
        f"the plan needs about {_bytes(estimate.peak)} (group {estimate.group + 1}: {g.group.members} members, "
        f"{_bytes(g.calls.member_bytes)} per member in calls of {g.calls.members_per_call}, "
        f"{_bytes(estimate.results)} of results), more than {what} ({_bytes(limit)}); {fix}")
  return estimate


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


def fingerprint(plan: Plan, mesh) -> str:
  """A hash of what a run of `plan` on `mesh` trains: study, data, calls and devices (processes compare it)."""
  from jaxlstm import distributed
  calls = [[g.calls.members_per_call, g.calls.calls, g.calls.epoch_chunk] for g in plan.groups]
  return distributed.digest({"study": plan.study.spec(), "data": plan.fingerprints, "calls": calls,
                             "devices": int(mesh.size)})


def describe_plan(plan: Plan, stream: TextIO) -> None:
  """Print the plan: configs, static-shape groups, compiles, estimated memory."""
  study = plan.study
  index = {c.config_id: i + 1 for i, c in enumerate(study.configs)}
  labels = study.labels()
  draw = (f" ({study.random} drawn at random from the {'space' if study.space else 'grid'})"
          if study.random else "")
  folds = {data_lib.fold_count(c) for c in study.configs}
  per_repeat = f" x {'/'.join(map(str, sorted(folds)))} folds" if folds != {1} else ""
  print(f"study {study.name}: {len(study.configs)} configs{draw} x {study.repeats} repeats{per_repeat}, "
        f"seed {study.seed}", file=stream)
  for cfg in study.configs:
    label = labels[cfg.config_id] if study.grid else "(base config)"
    print(f"  config {index[cfg.config_id]:3d}  {cfg.config_id}  {label}", file=stream)
  peak = estimate_memory(plan).peak
  print(f"plan: {_count(len(study.configs), 'config')}, {_count(len(plan.groups), 'group')}, "
        f"{_count(plan.compiles, 'compile')}, "
        f"{sum(g.group.members for g in plan.groups)} members, estimated peak memory {_bytes(peak)}",
        file=stream)
  for i, g in enumerate(plan.groups):
    cfg, shape, calls = g.group.configs[0], g.train.shape, g.calls
    padded = " (narrower configs zero-padded)" if g.group.padded else ""
    cv = f" ({g.group.repeats} repeats x {g.group.folds} folds per config)" if g.group.folds > 1 else ""
    print(f"  group {i + 1}: configs {', '.join(str(index[c.config_id]) for c in g.group.configs)}; "
          f"{g.group.members} members{cv}; {describe_widths(g.group)}{padded}, {cfg.model.layers} layer(s), "
          f"batch {shape.batch} x {shape.steps} step(s)/epoch, {shape.epochs} epochs "
          f"in {calls.epoch_chunks} chunk(s); {calls.calls} call(s) of {calls.members_per_call} members; "
          f"{_count(g.compiles, 'compile')}; ~{_bytes(calls.member_bytes)}/member, "
          f"~{_bytes(calls.member_bytes * calls.members_per_call)}/call", file=stream)


# ---------------------------------------------------------------------------
# Environment.


def environment(argv: Sequence[str], mesh=None) -> dict[str, Any]:
  """The command, package versions, devices, processes, host CPU and time of this run (recorded in the manifest)."""
  from importlib import metadata

  import jaxlstm
  from jaxlstm import devices as devices_lib
  versions = {"python": platform.python_version(), "jaxlstm": jaxlstm.__version__}
  for dist in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy"):
    try:
      versions[dist] = metadata.version(dist)
    except metadata.PackageNotFoundError:
      pass
  used = devices_lib.describe(devices_lib.resolve_mesh(mesh))
  n, p = used["devices"], used["processes"]
  device = (f"{used['platform']}: {used['kind']} ({n} device{'s' * (n > 1)}"
            + (f" over {p} processes" if p > 1 else "") + ")")
  return {"argv": ["python", "-m", PROG, *argv], "versions": versions, "device": device, "devices": used,
          "cpu": devices_lib.host_cpu(), "time": now()}


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
    interrupts.check()  # after each call: a Ctrl-C that Python dropped stops the run here
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


def open_folder(out: Path, study_spec: dict, plan: Plan, env: dict, *, overwrite: bool,
                log: Callable[[str], None]) -> tuple[store.RunFolder, Any]:
  """Create, replace or resume the results folder; refuse one holding another study.

  All refusals happen before anything is written.

  Returns:
    The folder and the lock held on it (close it when done).
  """
  try:
    existing = store.check_folder(out, study_spec, overwrite=overwrite)
  except store.FolderRefused as e:
    raise UsageError(str(e)) from None
  groups = group_entries(plan)
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
      _update_study(folder, study_spec, log, plan.baselines, plan.data_notes)
      folder.write_configs(plan.study.configs)  # a run killed while creating the folder left some out
    else:
      folder = store.RunFolder.create(out, study=study_spec, configs=plan.study.configs,
                                      groups=groups, environment=env)
      if plan.baselines or plan.data_notes:
        folder.manifest.update(baselines=plan.baselines, data_notes=plan.data_notes)
        folder.write_manifest()
  except OSError as e:
    raise UsageError(f"cannot write --out {out}: {e.strerror or e}") from None
  return folder, lock


def group_entries(plan: Plan) -> list[dict[str, Any]]:
  """The manifest's description of each planned group (before it runs)."""
  return [{"configs": [c.config_id for c in g.group.configs], "cells": g.group.cells,
           **({} if describe_widths(g.group).endswith(" cells") else
              {"units": list(g.group.widths.units), "dense": list(g.group.widths.dense)}),
           "padded": g.group.padded, "members": g.group.members, "planned_compiles": g.compiles}
          for g in plan.groups]


def _update_study(folder: store.RunFolder, spec: dict, log: Callable[[str], None],
                  baselines: dict[str, Any], data_notes: dict[str, Any]) -> None:
  """Grow the folder to the requested repeats, score as requested, record baselines and data notes."""
  study = folder.manifest["study"]
  changed = False
  for key, value in (("baselines", baselines), ("data_notes", data_notes)):
    if value and folder.manifest.get(key) != value:
      folder.manifest[key] = value
      changed = True
  if spec["repeats"] > study["repeats"]:
    log(f"growing from {study['repeats']} to {spec['repeats']} repeats per config: only the new repeats "
        "train; the first ones are kept as they are")
    folder.extend_repeats(spec["repeats"])
    changed = True
  if spec["metric"] != store.summary_metric(folder.manifest):
    log(f"scoring by {spec['metric']} now (was {store.summary_metric(folder.manifest)}): the tables and the "
        "report are rebuilt")
    study["metric"] = spec["metric"]
    changed = True
  if spec["score"] != store.summary_score(folder.manifest):
    log(f"scoring the {spec['score']} value now (was the {store.summary_score(folder.manifest)}): the tables "
        "and the report are rebuilt")
    study["score"] = spec["score"]
    changed = True
  if changed:
    folder.write_manifest()


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
  """Shapes of a group's `TrainState` as its program takes them (`ensemble.boundary_states`), for
  restoring an epoch checkpoint."""
  import jax
  members = ensemble.members_of(group, seed)
  return jax.eval_shape(
      lambda m: ensemble.boundary_states(ensemble.init_members(train, m, ((group.widths, group.members),))), members)


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
  ident = json.dumps([[c.config_id for c in group.configs], group.cells, group.repeats, seed]
                     + ([group.first_repeat] if group.first_repeat else []))
  return folder.path / "state" / hashlib.sha256(ident.encode()).hexdigest()[:12]


def _checkpointer(folder: store.RunFolder, gp: GroupPlan, group: Group, seed: int, number: int,
                  log: Callable[[str], None]) -> _LoggedCheckpointer | None:
  if group.configs[0].train.checkpoint_every <= 0:
    return None
  inner = store.StateCheckpointer(_state_dir(folder, group, seed),
                                  like=functools.partial(state_like, gp.train, group, seed))
  return _LoggedCheckpointer(inner, lambda epoch: log(f"group {number}: resuming from its checkpoint "
                                                      f"after epoch {epoch}"))


def _scored(folder: store.RunFolder, config, repeats_done: int, dataset: Dataset) -> bool:
  """Whether `_ensemble_scores` scores `config` once it has `repeats_done` repeats."""
  return (repeats_done >= folder.repeats and not config.data.resplit and config.data.cv == "none"
          and dataset.x_val.shape[0] > 0)


def _scored_inputs(folder: store.RunFolder | None, group: Group, dataset: Dataset) -> Any:
  """The inputs `_ensemble_scores` will predict for the group's ensembles (None if it will not)."""
  done = group.first_repeat + group.repeats
  if folder is None or not any(_scored(folder, c, done, dataset) for c in group.configs):
    return None
  return dataset.x_val


def _ensemble_scores(folder: store.RunFolder, ensembles: Sequence[ensemble.Ensemble],
                     dataset: Dataset) -> dict[str, dict[str, float]]:
  """The averaged prediction of each config's repeats, scored: the "ensemble" of the summary.

  Computed for configs whose repeats are now complete, so it is committed with them.
  Regression: the mean prediction; classification: the mean probability; diverged
  repeats are left out. Skipped with a per-repeat split (`data.resplit`) or
  cross-validation (`data.cv`), where the repeats have no validation set in common.
  `val_mae_original` of a transformed series inverts every transform (`prep.to_original`).
  """
  import jax
  import numpy as np
  from jaxlstm import metrics as metrics_lib
  from jaxlstm.data import unit_scale
  out = {}
  for ens in ensembles:
    config_id = ens.config.config_id
    if not _scored(folder, ens.config, ens.repeat_indices[-1] + 1, dataset):
      continue
    diverged = np.asarray(ens.diverged)
    if ens.repeat_indices[0]:  # grown: every repeat's parameters, the committed ones from the folder
      first = int(ens.repeat_indices[0])
      params = jax.tree.map(lambda a, b: np.concatenate([a, b]), store.load_params(folder.path, config_id),
                            ens.params)
      earlier = np.asarray(folder.manifest["configs"][config_id]["diverged_epoch"][:first]) >= 0
      ens, diverged = dataclasses.replace(ens, params=params), np.concatenate([earlier, diverged])
    predictions = np.asarray(ens.predict(dataset.x_val), np.float64)
    keep = ~diverged & np.isfinite(predictions).reshape(len(predictions), -1).all(1)
    if not keep.any():
      continue
    mean = predictions[keep].mean(axis=0)
    scores = {key: metrics_lib.score_prediction(key, mean, dataset.y_val, ens.config, unit_scale(dataset))
              for key in metrics_lib.history_keys(ens.config) if key.startswith("val_")}
    if "series_transform" in dataset.metadata and "val_mae_original" in scores:
      from jaxlstm import prep
      error = prep.to_original(dataset, mean, "val").astype(np.float64) - prep.originals(dataset, "val")
      scores["val_mae_original"] = float(np.mean(np.abs(error)))
    out[config_id] = {"repeats": int(keep.sum()), **scores}
  return out


def _todo(plan: Plan, folder: store.RunFolder) -> list[tuple[int, GroupPlan, Group]]:
  """What is left to train: per static-shape group, its unfinished configs by the repeats they lack.

  Fewer configs or a later range of repeats is the same program: each member's keys
  depend only on (seed, config, repeat).
  """
  todo = []
  repeats = plan.study.repeats
  for index, gp in enumerate(plan.groups):
    by_start: dict[int, list] = {}
    for cfg in gp.group.configs:
      done = folder.repeats_done(cfg.config_id)
      if done < repeats:
        by_start.setdefault(done, []).append(cfg)
    for first, configs in sorted(by_start.items()):
      todo.append((index, gp, gp.group.subgroup(configs, first_repeat=first, repeats=repeats - first)))
  return todo


def _share_todo(peers, plan: Plan, todo: list[tuple[int, GroupPlan, Group]] | None,
                failure: str | None) -> list[tuple[int, GroupPlan, Group]]:
  """Process 0's todo (or its refusal) on every process.

  Raises:
    UsageError: process 0 refused the folder (on every process, so all stop).
  """
  mine = ({"error": failure} if failure is not None else
          {"todo": [[index, [c.config_id for c in g.configs], g.first_repeat, g.repeats] for index, _, g in todo]}
          if todo is not None else None)
  message = peers.broadcast(mine)
  if "error" in message:
    raise UsageError(message["error"] if peers.lead else f"process 0: {message['error']}")
  shared = []
  for index, ids, first, repeats in message["todo"]:
    gp = plan.groups[index]
    by_id = {c.config_id: c for c in gp.group.configs}
    shared.append((index, gp, gp.group.subgroup([by_id[i] for i in ids], first_repeat=first, repeats=repeats)))
  return shared


def run_plan(plan: Plan, folder: store.RunFolder | None, env: dict, *, log: Callable[[str], None],
             progress: Progress, todo: list[tuple[int, GroupPlan, Group]] | None = None, mesh=None,
             single_process: bool = True, group_offset: int = 0, call_members: int | None = None) -> list[str]:
  """Train every config of the plan that the folder has not finished; record each group.

  A session entry (argv, versions, the configs it trained) is added to the
  manifest only when there is something to train: rerunning a finished sweep
  leaves the folder untouched.

  Args:
    folder: the results folder; None on the processes other than 0 of a
      distributed run, which train `todo` and record nothing.
    todo: what to train (default: what the folder lacks, `_todo`).
    mesh: the devices (`jaxlstm.devices.make_mesh`).
    single_process: epoch checkpoints (`train.checkpoint_every`) only then: a
      distributed run resumes per committed config; and only then is the next
      group's program built while a group runs (`ensemble.prepare_group`).
    group_offset: the index of the plan's first group among the folder's groups (a
      search adds each batch's groups after those of the batches before it).
    call_members: every call this many members (`ensemble.plan_calls`; a race's rounds).

  Returns:
    Ids of the configs trained now.
  """
  study = plan.study
  todo = _todo(plan, folder) if todo is None else todo
  if not todo:
    return []
  if folder is not None:
    n_done = sum(folder.is_done(c.config_id) for c in study.configs)
    if n_done:
      log(f"resuming: {n_done} of {len(study.configs)} configs already done (not retrained); "
          f"training {len(study.configs) - n_done}")
    folder.start_session(env)
  progress.total = max(1, sum(g.members * gp.train.shape.epochs for _, gp, g in todo))
  trained = []
  for number, (index, gp, group) in enumerate(todo, start=1):
    interrupts.check()
    checkpointer = (_checkpointer(folder, gp, group, study.seed, number, log)
                    if folder is not None and single_process else None)
    progress.clear()
    repeats = (f"{group.repeats} repeats" if not group.first_repeat else
               f"repeats {group.first_repeat}-{group.first_repeat + group.repeats - 1}")
    if group.folds > 1:
      repeats += f" x {group.folds} folds"
    log(f"group {number}/{len(todo)}: {len(group.configs)} config(s) x {repeats} = "
        f"{group.members} members, {describe_widths(group)}" + (" (padded)" if group.padded else ""))
    progress.group(number, len(todo), group.members * gp.train.shape.epochs)
    if single_process and number < len(todo):  # the next group's program: traced and compiled meanwhile
      _, next_gp, next_group = todo[number]
      ensemble.prepare_group(next_group, next_gp.dataset, seed=study.seed, mesh=mesh, call_members=call_members)
    ensembles, info = ensemble.run_group(group, gp.dataset, seed=study.seed, progress=progress,
                                         checkpointer=checkpointer, mesh=mesh, call_members=call_members,
                                         prepare_predict=_scored_inputs(folder, group, gp.dataset))
    if folder is None:  # a distributed run's other processes: process 0 records
      trained += [c.config_id for c in group.configs]
      continue
    folder.record(group_offset + index, ensembles, info,
                  ensemble_scores=_ensemble_scores(folder, ensembles, gp.dataset))
    if checkpointer is not None:
      checkpointer.clear()
      try:
        (folder.path / "state").rmdir()  # only when no other group's steps are left
      except OSError:
        pass
    if number < len(todo):  # after the last group, the full tables are written next anyway
      tables.write_running(folder.path)
    progress.finish_group()
    progress.clear()
    log(f"group {number}/{len(todo)} done: {info.compiles} compile(s) in {info.compile_seconds:.1f} s, "
        f"training {info.run_seconds:.1f} s")
    trained += [c.config_id for c in group.configs]
  return trained


format_summary = tables.format_summary  # where callers of the first versions look for it


PLOTS_MODES = render.PLOTS_MODES
default_plots_mode = render.default_plots_mode


def run_study(plan: Plan, out: Path, argv: Sequence[str], *, overwrite: bool, quiet: bool, cache: bool,
              stdout: TextIO, stderr: TextIO, plots: str | None = None, mesh=None, peers=None,
              worker: render.Worker | None = None) -> int:
  """Train a planned study into `out` (creating, resuming, growing or replacing it) and report.

  Ends, whenever every config is done, with the tables, plots and report.md rebuilt
  from the folder's files if they do not cover its current state (a run killed after
  its last commit leaves them stale), and the run marked finished in the manifest.
  With `plots="background"` (the default) the tables and report.md are written before
  returning and a detached process draws the PNGs the page links (`render.start_renderer`);
  a rerun, or `python -m jaxlstm.report`, draws any that are missing or failed.

  Args:
    mesh: the devices every group runs on (`jaxlstm.devices.make_mesh`).
    peers: the processes of a distributed run (`jaxlstm.distributed.Peers`): only
      process 0 touches `out`; every process must call this.
    worker: a report worker started with the sweep (`render.Worker`): with
      `plots="background"` it writes the tables and report.md, then draws the plots;
      it is let go otherwise.

  Returns:
    The exit status: 0 done, 130 interrupted (rerun the same command to continue).

  Raises:
    UsageError: the folder cannot be used (another study, not ours, in use, not writable).
  """
  lead = peers is None or peers.lead

  def log(message: str) -> None:
    if not quiet and lead:
      print(f"{PROG}: {message}", file=stderr, flush=True)

  spec = dict(plan.study.spec(), data=plan.fingerprints)
  env = environment(argv, mesh)
  folder = lock = failure = todo = None
  if lead:
    try:
      folder, lock = open_folder(out, spec, plan, env, overwrite=overwrite, log=log)
    except UsageError as e:
      if peers is None:
        raise
      failure = str(e)
  progress = Progress(stderr, 1, enabled=not quiet and lead and stderr.isatty())
  try:
    if folder is not None:
      _tidy(folder, env, log)
      todo = _todo(plan, folder)
    if peers is not None:
      todo = _share_todo(peers, plan, todo, failure)
    compiled.configure_persistent_cache(cache)
    trained = run_plan(plan, folder, env, log=log, progress=progress, todo=todo, mesh=mesh,
                       single_process=peers is None or peers.count == 1)
    if folder is None:
      return 0
    if trained:  # this session ends before the report, which gives each session's wall time
      folder.finish_session(now())
    else:
      log("every config is already done: nothing to train")
    print(_report(folder, plan, log, plots or default_plots_mode(), worker), file=stdout)
    print(f"results: {out}", file=stdout, flush=True)
    return 0
  except KeyboardInterrupt as interrupted:
    progress.clear()
    if folder is None:
      raise
    # Kept (with the frames of its traceback, and their arrays) until the process exits, so that
    # the interrupted call's buffers are not freed while XLA may still use them: a guard against a
    # SIGSEGV once seen after this message. Never reproduced; the SIGINT test's failures that were
    # traced came from a dropped interrupt instead (`jaxlstm.interrupts`).
    _INTERRUPTED.append(interrupted)
    print(f"{PROG}: interrupted; rerun the same command to resume ({len(folder.done_ids())} of "
          f"{len(plan.study.configs)} configs done, kept in {out})", file=stderr, flush=True)
    return 130
  finally:
    if worker is not None:
      worker.cancel()
    if lock is not None:
      lock.close()


_INTERRUPTED: list[BaseException] = []


def _report(folder: store.RunFolder, plan: Plan, log: Callable[[str], None], plots: str,
            worker: render.Worker | None) -> str:
  """Bring a folder's tables, report.md and plots up to date, mark it finished when every config is
  done, and return the describe() table to print."""
  out, state, summary = folder.path, report_state(folder), None
  if folder.manifest.get("report") != state or not _report_files_present(out):
    summary = _write_report(out, log, plots, worker)
    folder.manifest["report"] = state
    folder.write_manifest()
  else:
    _check_plots(out, log, plots)
  if len(folder.done_ids()) == len(plan.study.configs) and "finished" not in folder.manifest:
    folder.finish(now(), state)
  return summary or tables.format_summary(out)


def report_state(folder: store.RunFolder) -> dict[str, Any]:
  """What the tables and report of a folder are derived from: committed repeats and the metric."""
  return {"metric": store.summary_metric(folder.manifest), "score": store.summary_score(folder.manifest),
          "repeats": {c: folder.repeats_done(c) for c in store.committed(folder.manifest)}}


def _report_files_present(out: Path) -> bool:
  names = (tables.SCORES, tables.SUMMARY, tables.DIAGNOSIS, tables.COMPARISONS, "report.md")
  return all((out / name).is_file() for name in names)


def _tidy(folder: store.RunFolder, env: dict, log: Callable[[str], None]) -> None:
  """Remove a crash's leftovers, retrain configs whose files are lost, warn on changed versions."""
  # A renderer of the last run may still be drawing: its temp files are not a crash's.
  leftovers = store.clean_leftovers(folder.path, skip=("plots",) if render.renderer_running(folder.path) else ())
  if leftovers:
    log(f"removed {len(leftovers)} leftover(s) of an interrupted run: {', '.join(leftovers[:5])}"
        + (" ..." if len(leftovers) > 5 else ""))
  lost = folder.verify()
  if lost:
    folder.write_manifest()
    log(f"{len(lost)} config(s) marked done have missing or changed files (checksums) and will be "
        f"trained again: {', '.join(lost[:5])}")
  old = folder.manifest["versions"]
  changed = {k: (old.get(k), v) for k, v in env["versions"].items() if old.get(k) != v}
  if changed:
    log("versions differ from the folder's first run (results may not be bit-identical): "
        + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changed.items()))
  first_cpu = folder.manifest.get("cpu")  # None in folders written before it was recorded
  if first_cpu and env.get("cpu") and first_cpu != env["cpu"]:
    from jaxlstm.devices import cpu_words
    log(f"this CPU differs from the folder's first run's (repeats trained here may differ from repeats "
        f"trained there in float32's last bits): {cpu_words(first_cpu)} -> {cpu_words(env['cpu'])}")


def _write_report(out: Path, log: Callable[[str], None], plots: str = "wait",
                  worker: render.Worker | None = None) -> str | None:
  """Rebuild every table, then report.md and the plots; a report failure never costs results.

  `plots="background"` writes report.md at once (linking the plots it will have) and
  leaves the drawing to a detached renderer; "wait" draws them here. With a `worker`
  (and "background") the worker does both, and its describe() table is returned;
  whatever it could not do is done here.
  """
  if plots == "background" and worker is not None:
    reply = worker.finish()
    if reply is not None and reply["status"] == "ok":
      if reply.get("report_error"):
        log(f"warning: report not written ({reply['report_error']}); rebuild it with python -m jaxlstm.report {out}")
      elif reply.get("drawing"):
        _log_drawing(out, worker.pid, log)
      return reply.get("summary")
    if reply is None:  # a failure of the tables themselves is raised again below, in this process
      log(f"warning: the report worker (pid {worker.pid}) stopped without writing the report; writing it here")
  from jaxlstm import report
  tables.write_all(out)
  if plots == "wait":
    _draw_now(out, log)
    return
  try:
    report.write_report(out, draw=False)
  except Exception as e:  # the report is derived: a failure must not cost the results
    log(f"warning: report not written ({type(e).__name__}: {e}); "
        f"rebuild it with python -m jaxlstm.report {out}")
    return
  if render.links_plots(out):  # drawn again even where PNGs exist: they show the previous state
    _start_renderer(out, log)
  return None


def _draw_now(out: Path, log: Callable[[str], None]) -> None:
  """Draw the plots and write report.md in this process, logging any plot that failed."""
  import warnings

  from jaxlstm import report
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


def _start_renderer(out: Path, log: Callable[[str], None]) -> None:
  try:
    pid = render.start_renderer(out)
  except OSError as e:  # no process to spare: draw here rather than not at all
    log(f"warning: cannot start the plot renderer ({e}); drawing the plots now")
    _draw_now(out, log)
    return
  _log_drawing(out, pid, log)


def _log_drawing(out: Path, pid: int, log: Callable[[str], None]) -> None:
  log(f"drawing the plots in the background (pid {pid}) into {out / 'plots'}; "
      f"python -m jaxlstm.report {out} redraws them")


def _check_plots(out: Path, log: Callable[[str], None], plots: str) -> None:
  """Draw again the plots of an up-to-date report that a renderer failed to draw or never finished."""
  status = render.render_status(out) or {}
  if status.get("status") == "failed":
    errors = "; ".join(status.get("errors") or []) or "no message"
    log(f"warning: drawing the plots failed last time ({errors}; see {out / render.RENDER_LOG}); "
        "drawing them again")
  elif not render.missing_plots(out) or render.renderer_running(out):
    return
  if plots == "wait":
    _draw_now(out, log)
  else:
    _start_renderer(out, log)
