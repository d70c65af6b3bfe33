"""Running a search (`--search tpe|random|grid`) into a results folder.

`jaxlstm.search.run_search` owns the Optuna loop and `trials.csv`; this module is the
`evaluate_batch` it calls and the folder around it. Each batch of trials becomes
configs (each point of the space crossed with the study's grid), added to the folder's
config list and trained by `runner.run_plan`: one compiled call per static-shape group,
and a later batch of the same shapes reuses the compiled program (`jaxlstm.compiled`).
A trial's repeats are the repeats of its configs (of every grid point), scored as the
summary scores them; diverged repeats are failures (`search.objective`).

Rerunning the same command resumes: trials Optuna holds are not asked again, and a
trial left running by a kill is finished from the configs the folder has done.
"""
from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from jaxlstm import metrics, store, study_space
from jaxlstm.config import Config, ConfigError
from jaxlstm.study import Study, UsageError

PROG = "jaxlstm.sweep"


@dataclasses.dataclass(frozen=True)
class SearchPlan:
  """A checked search: the study (its configs are the grid's, templates for every trial) and how to search."""
  study: Study
  out: Path
  sampler: str
  trials: int
  batch: int
  objective: str
  grid_points: int | None
  overwrite: bool = False
  quiet: bool = False
  cache: bool = True
  plots: str | None = None
  race: dict[str, Any] | None = None
  devices: int | None = None

  @property
  def settings(self) -> dict[str, Any]:
    """What the folder records of how it is searched (a rerun that changes it is refused)."""
    return settings_of(self.sampler, self.objective, self.grid_points, self.race)

  @property
  def higher_is_better(self) -> bool:
    return metrics.higher_is_better(self.study.metric)


def settings_of(sampler: str, objective: str, grid_points: int | None, race: dict | None) -> dict[str, Any]:
  return {"sampler": sampler, "objective": objective, "grid_points": grid_points, **({"race": race} if race else {})}


def settings(args: argparse.Namespace) -> dict[str, Any]:
  """The search settings of a command line (`SearchPlan.settings` before the plan exists)."""
  from jaxlstm import race_run
  return settings_of(args.search, args.objective, args.grid_points, race_run.settings(args))


def folder_spec(plan: SearchPlan, existing: Mapping | None) -> dict[str, Any]:
  """The study spec of a search folder: its configs are the ones the folder has grown to."""
  spec = dict(plan.study.spec(), search=plan.settings, configs=[])
  if existing is not None:
    spec["configs"] = list(existing["study"]["configs"])
  return spec


def _existing_manifest(out: Path) -> dict | None:
  try:
    return store.RunFolder.read_manifest(out) if out.is_dir() else None
  except store.ForeignFolder:
    return None  # check_folder says why, in its own words


def prepare(study: Study, args: argparse.Namespace, out: Path) -> SearchPlan:
  """Check a `--search` command without jax: its flags, the space, the race, optuna, the data, the folder.

  Raises:
    UsageError / ConfigError: one line naming the field, the value and the fix.
  """
  from jaxlstm import data as data_lib
  from jaxlstm.space import require_optuna
  if getattr(args, "distributed", False):
    raise UsageError("--search runs in one process (its devices: --devices); drop --distributed")
  if args.objective == "ucb" and study.repeats < 2:
    raise UsageError(f"--objective ucb needs at least 2 repeats per trial, got --repeats {study.repeats}; "
                     "raise --repeats or use --objective mean")
  if args.search == "grid":
    study.space.grid(args.grid_points)  # a range without --grid-points: ConfigError naming the flag
  elif args.grid_points is not None:
    raise UsageError(f"--grid-points goes with --search grid, not --search {args.search}")
  from jaxlstm import race_run
  race = race_run.settings(args)
  if race is not None:
    race_run.check(study, race)
  try:  # after the flags' own checks: a wrong command says so whichever extras are installed
    require_optuna()
  except ImportError as e:
    raise UsageError(f"--search {args.search}: {e}") from None
  plan = SearchPlan(study, out, args.search, args.trials, args.batch, args.objective, args.grid_points,
                    overwrite=args.overwrite, quiet=args.quiet, cache=not args.no_cache, plots=args.plots,
                    race=race, devices=args.devices)
  data_lib.resolve_all(study.configs)  # the data of the grid's configs: bad options fail here
  try:
    store.check_folder(out, folder_spec(plan, _existing_manifest(out)), overwrite=args.overwrite)
  except store.FolderRefused as e:
    raise UsageError(str(e)) from None
  return plan


def describe(plan: SearchPlan) -> str:
  """The search in words, as `--dry-run` prints it."""
  study = plan.study
  grid = {k: v for k, v in study.grid.items() if v}
  crossed = f", each trial on {len(study.configs)} grid point(s) of {', '.join(grid)}" if grid else ""
  race = (f", raced from {plan.race['initial']} repeats" if plan.race else "")
  return (f"search {study.name}: {plan.sampler} over {study.space.describe()}; {plan.trials} trials in batches "
          f"of {plan.batch} x {study.repeats} repeats{crossed}{race}; objective {plan.objective} of the "
          f"{study.score} {study.metric}; seed {study.seed}")


class _Trainer:
  """`evaluate_batch` and `known` of `search.run_search`, over one results folder."""

  def __init__(self, plan: SearchPlan, folder: store.RunFolder, env: dict, log: Callable[[str], None],
               progress, mesh):
    self.plan, self.folder, self.env, self.log, self.progress = plan, folder, env, log, progress
    self.mesh = mesh
    self.grid_configs = list(plan.study.configs)  # a search study's configs: the grid's, for every trial
    self.batches = 0

  def configs(self, point: Mapping[str, Any]) -> list[Config]:
    return study_space.point_configs(self.plan.study.base, point, self.grid_configs)

  def known(self, point: dict[str, Any]):
    """The result of a point whose configs the folder has done (a batch killed before Optuna heard)."""
    configs = self.configs(point)
    if all(self.finished(c.config_id) for c in configs):
      return self.result(configs)
    return None

  def finished(self, config_id: str) -> bool:
    """Done, or eliminated by a race: nothing more to train."""
    entry = self.folder.manifest["configs"].get(config_id)
    return entry is not None and entry["status"] in ("done", "eliminated")

  def evaluate(self, points: list[dict[str, Any]]) -> list:
    """Train the configs of a batch of points that the folder has not done; their results."""
    from jaxlstm import runner
    per_point = [self.configs(p) for p in points]
    unique = {c.config_id: c for configs in per_point for c in configs}
    todo = [c for c in unique.values() if not self.finished(c.config_id)]
    self.batches += 1
    if todo and self.plan.race is not None:
      from jaxlstm import race_run
      self.log(f"batch {self.batches}: {len(points)} trial(s), racing {len(todo)} config(s)")
      race_run.race_configs(self.plan.study, self.folder, self.env, todo, self.plan.race, log=self.log,
                            progress=self.progress, mesh=self.mesh)
    elif todo:
      batch = dataclasses.replace(self.plan.study, configs=todo)
      try:
        run_plan = plan_on(batch, self.mesh)
      except ValueError as e:  # a point the data refuses: every config of the batch is checked first
        raise UsageError(f"a trial's config cannot run: {e}") from None
      offset = len(self.folder.manifest["groups"])
      self.folder.add_configs(todo, runner.group_entries(run_plan), data=run_plan.fingerprints)
      self.log(f"batch {self.batches}: {len(points)} trial(s), {len(todo)} config(s) to train")
      env = dict(self.env, time=runner.now())  # the batch's session starts now
      runner.run_plan(run_plan, self.folder, env, log=self.log, progress=self.progress, mesh=self.mesh,
                      group_offset=offset)
      self.folder.finish_session(runner.now())  # a session per batch: its wall time in the report
    return [self.result(configs) for configs in per_point]

  def result(self, configs: Sequence[Config]):
    """A trial's `TrialResult`: the scores of its configs' repeats, as the summary scores them."""
    from jaxlstm import search
    scores, diverged, rounds = [], [], []
    for cfg in configs:
      s, d = repeat_scores(self.folder, cfg.config_id)
      scores.append(s)
      diverged.append(d)
      rounds.append(self.folder.manifest["configs"][cfg.config_id].get("elimination_round"))
    dropped = [r for r in rounds if r is not None]  # a trial is out when one of its grid points is
    return search.TrialResult(tuple(np.concatenate(scores)), tuple(np.concatenate(diverged)),
                              min(dropped) if dropped else None, configs=tuple(c.config_id for c in configs))


def plan_on(study: Study, mesh):
  """`runner.plan_study` for the devices of `mesh` (as the sweep plans)."""
  from jaxlstm import devices, runner
  return runner.plan_study(study, devices=mesh.size, memories=devices.memories(mesh))


def make_mesh(requested: int | None):
  """The devices a search or race runs on: `--devices`, else the default (as the sweep's)."""
  from jaxlstm import devices
  mesh = devices.make_mesh(requested)
  devices.check_host_devices(mesh, requested)
  return mesh


def repeat_scores(folder: store.RunFolder, config_id: str) -> tuple[np.ndarray, np.ndarray]:
  """`[repeats]` scores of a config, as the summary scores them (`tables.config_scores`), and diverged flags."""
  from jaxlstm import tables
  scores, _ = tables.config_scores(folder.path, folder.manifest, config_id)
  return scores, np.asarray(folder.manifest["configs"][config_id]["diverged_epoch"], dtype=int) >= 0


def run(plan: SearchPlan, argv: Sequence[str], *, fail: Callable[[str], int], stdout: TextIO,
        stderr: TextIO) -> int:
  """Search into `plan.out` (creating or resuming it), then the tables and the report.

  Returns:
    The exit status: 0 done, 2 bad input found late (e.g. optuna.db from another
    search), 130 interrupted (rerun the same command to continue).
  """
  def log(message: str) -> None:
    if not plan.quiet:
      print(f"{PROG}: {message}", file=stderr, flush=True)

  log(f"search {plan.study.name}: {plan.sampler}, {plan.trials} trials in batches of {plan.batch} x "
      f"{plan.study.repeats} repeats, objective {plan.objective}, seed {plan.study.seed} -> {plan.out}")
  from jaxlstm import compiled, runner, search  # jax: after the line above, as the sweep's plan line
  try:
    mesh = make_mesh(plan.devices)
  except ValueError as e:  # devices.DeviceError
    return fail(str(e))
  env = runner.environment(argv, mesh)
  empty = runner.Plan(dataclasses.replace(plan.study, configs=[]), [], {})
  existing = _existing_manifest(plan.out)
  try:
    folder, lock = runner.open_folder(plan.out, folder_spec(plan, existing), empty, env,
                                      overwrite=plan.overwrite, log=log)
  except UsageError as e:
    return fail(str(e))
  progress = runner.Progress(stderr, 1, enabled=not plan.quiet and stderr.isatty())
  trainer = _Trainer(plan, folder, env, log, progress, mesh)
  try:
    runner._tidy(folder, env, log)
    compiled.configure_persistent_cache(plan.cache)
    result = search.run_search(
        plan.study.space, trainer.evaluate, trials=plan.trials, storage_path=plan.out, sampler=plan.sampler,
        batch=plan.batch, seed=plan.study.seed, objective_kind=plan.objective,
        higher_is_better=plan.higher_is_better, grid_points=plan.grid_points, known=trainer.known)
    finish(plan.out, folder, log, plan.plots)
    print(runner.format_summary(plan.out), file=stdout)
    if result.best_trial is not None:
      print(f"best trial {result.best_trial}: {plan.objective} {result.best_value:.6g} at "
            + ", ".join(f"{k}={store.format_value(v)}" for k, v in result.best_params.items()), file=stdout)
    print(f"results: {plan.out} (optuna-dashboard {result.storage})", file=stdout, flush=True)
    return 0
  except (UsageError, ConfigError) as e:
    return fail(str(e))
  except KeyboardInterrupt:
    progress.clear()
    print(f"{PROG}: interrupted; rerun the same command to resume the search (kept in {plan.out})",
          file=stderr, flush=True)
    return 130
  finally:
    if lock is not None:
      lock.close()


def finish(out: Path, folder: store.RunFolder, log: Callable[[str], None], plots: str | None) -> None:
  """Tables, report and plots of the folder as it is now; the run marked finished when nothing is left."""
  from jaxlstm import runner
  state = runner.report_state(folder)
  plots = plots or runner.default_plots_mode()
  if folder.manifest.get("report") != state or not runner._report_files_present(out):
    runner._write_report(out, log, plots)
  else:
    runner._check_plots(out, log, plots)
  entries = folder.manifest["configs"]
  if all(entries[c]["status"] in ("done", "eliminated") for c in folder.config_ids):
    folder.finish(runner.now(), state)
  else:
    folder.manifest["report"] = state
    folder.write_manifest()
