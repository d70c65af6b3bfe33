"""Racing configs over repeats in a results folder (`--race`): `jaxlstm.racing.race` with real training.

Every config first trains `--race-initial` repeats; at each look, configs that a
Holm-corrected test shows worse are eliminated (status "eliminated" in the folder,
with the look that dropped them), and the survivors grow in place to the next round's
repeats (a config's repeats extend: status "partial" until it has `--repeats`), so a
survivor's numbers equal those of a plain run. A round trains every survivor that
lacks repeats, one compiled call per static-shape group.

Rerunning the same command resumes: the race is deterministic (a repeat's keys depend
on seed, config and repeat only), so it replays the same looks from the folder's
repeats and trains only what is missing.
"""
from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from jaxlstm import metrics, store
from jaxlstm.config import Config, ConfigError
from jaxlstm.study import Study, UsageError

PROG = "jaxlstm.sweep"
ALPHA = 0.05


def settings(args: argparse.Namespace) -> dict[str, Any] | None:
  """What a folder records of its racing (None without --race)."""
  if not getattr(args, "race", False):
    return None
  return {"initial": args.race_initial, "alpha": ALPHA}


def check(study: Study, race: dict[str, Any]) -> None:
  """Refuse a race that cannot run, before anything compiles (UsageError naming the flag)."""
  from jaxlstm import racing
  try:
    racing.schedule(race["initial"], study.repeats)
  except ConfigError as e:
    raise UsageError(f"--race with --race-initial {race['initial']} and --repeats {study.repeats}: {e}") from None


def race_configs(study: Study, folder: store.RunFolder, env: dict, configs: Sequence[Config],
                 race: dict[str, Any], *, log: Callable[[str], None], progress, mesh):
  """Race `configs` (already known to the folder or not) to `study.repeats`; mark the eliminated.

  Returns:
    The `racing.RaceResult`.
  """
  from jaxlstm import racing, runner, search_run
  by_id = {c.config_id: c for c in configs}
  # Every round's calls have the first round's size (padded), so the rounds reuse its
  # programs instead of compiling one per number of survivors.
  call_members = None

  def evaluate(ids, repeats: range):
    nonlocal call_members
    entries = folder.manifest["configs"]
    todo = [by_id[i] for i in ids if i not in entries or folder.repeats_done(i) < repeats.stop]
    if todo:
      plan = search_run.plan_on(dataclasses.replace(study, configs=todo, repeats=repeats.stop), mesh)
      offset = len(folder.manifest["groups"])
      folder.add_configs(todo, runner.group_entries(plan), data=plan.fingerprints)
      log(f"race: {len(todo)} config(s) to {repeats.stop} repeats")
      if call_members is None:
        call_members = max(g.calls.members_per_call for g in plan.groups)
      runner.run_plan(plan, folder, dict(env, time=runner.now()), log=log, progress=progress, mesh=mesh,
                      group_offset=offset, call_members=call_members)
      folder.finish_session(runner.now())
    out = {}
    for i in ids:
      scores, diverged = search_run.repeat_scores(folder, i)
      out[i] = (scores[repeats.start:repeats.stop], diverged[repeats.start:repeats.stop])
    return out

  result = racing.race(list(by_id), evaluate, total=study.repeats, initial=race["initial"], alpha=race["alpha"],
                       higher_is_better=metrics.higher_is_better(study.metric))
  mark(folder, result)
  return result


def mark(folder: store.RunFolder, result) -> None:
  """Record a race in the manifest: each config's elimination, and the fits the race saved."""
  entries = folder.manifest["configs"]
  for c in result.configs:
    entry = entries[c.config]
    entry["elimination_round"] = c.eliminated_round
    if c.eliminated_round is not None:
      entry.update(status="eliminated", race={"pvalue_holm": None if c.pvalue != c.pvalue else float(c.pvalue),
                                              "beaten_by": c.beaten_by, "reason": c.reason})
  record = {"configs": [c.config for c in result.configs], "schedule": list(result.schedule),
            "alpha": result.alpha, "fits": result.fits, "plain_fits": result.plain_fits,
            "fits_saved": result.fits_saved}
  races = [r for r in folder.manifest.get("races", []) if r["configs"] != record["configs"]]
  folder.manifest["races"] = races + [record]
  for group in folder.manifest["groups"]:
    if group["status"] != "done" and all(entries[c]["status"] in ("done", "eliminated") for c in group["configs"]):
      group["status"] = "done"
  folder.write_manifest()


def run(study: Study, args: argparse.Namespace, argv: Sequence[str], out: Path, *, fail: Callable[[str], int],
        stdout: TextIO, stderr: TextIO) -> int:
  """`--race` on a grid or a random draw: race the study's configs into `out`, then tables and report."""
  from jaxlstm import compiled, devices, runner, search_run

  def log(message: str) -> None:
    if not args.quiet:
      print(f"{PROG}: {message}", file=stderr, flush=True)

  race = settings(args)
  try:
    if args.distributed:
      raise UsageError("--race runs in one process (its devices: --devices); drop --distributed")
    check(study, race)
    from jaxlstm import data as data_lib
    datasets = data_lib.resolve_all(study.configs)
    spec = dict(study.spec(), race=race, data={c.config_id: datasets[data_lib.data_key(c)].fingerprint
                                               for c in study.configs})
    store.check_folder(out, spec, overwrite=args.overwrite)
    mesh = search_run.make_mesh(args.devices)
    plan = runner.plan_study(study, datasets=datasets, devices=mesh.size, memories=devices.memories(mesh))
    runner.check_memory(plan, args.max_memory)
  except (UsageError, ConfigError, ValueError) as e:  # devices.DeviceError is a ValueError
    return fail(str(e))
  env = runner.environment(argv, mesh)
  try:
    # No groups yet: each round adds the groups it trains (a plain run's groups never run here).
    folder, lock = runner.open_folder(out, spec, dataclasses.replace(plan, groups=[]), env,
                                      overwrite=args.overwrite, log=log)
  except UsageError as e:
    return fail(str(e))
  progress = runner.Progress(stderr, 1, enabled=not args.quiet and stderr.isatty())
  try:
    runner._tidy(folder, env, log)
    compiled.configure_persistent_cache(not args.no_cache)
    result = race_configs(study, folder, env, study.configs, race, log=log, progress=progress, mesh=mesh)
    log(f"race: {len(result.survivors)} of {len(study.configs)} config(s) survived; {result.fits} fits of "
        f"{result.plain_fits} ({result.fits_saved} saved)")
    search_run.finish(out, folder, log, args.plots)
    print(runner.format_summary(out), file=stdout)
    print(f"results: {out}", file=stdout, flush=True)
    return 0
  except (UsageError, ConfigError) as e:
    return fail(str(e))
  except KeyboardInterrupt:
    progress.clear()
    print(f"{PROG}: interrupted; rerun the same command to resume the race (kept in {out})", file=stderr, flush=True)
    return 130
  finally:
    if lock is not None:
      lock.close()
