"""Command line: run a study (a grid of configs x repeats) into a results folder.

  python -m jaxlstm.sweep --repeats 30           # the default study (experiments/cells.py)
  python -m jaxlstm.sweep --grid model.cells=1,5,10 --grid optim.learning_rate=1e-3,1e-2
  python -m jaxlstm.sweep --experiment cells --set train.epochs=100 --out runs/short
  python -m jaxlstm.sweep --config study.toml --random 20 --dry-run

A study is a base config and a grid (dotted field -> values). It comes from an
experiment module (`experiments/<name>.py`: `get_config()`, `get_grid()`), or a
TOML/JSON file (the nested config sections plus an optional `grid` table), and
is then edited on the command line (`--set`, `--grid`, `--epochs`).

Flow (functional core, imperative shell): parse -> build the study -> check
every config against its data (before anything compiles) -> plan static-shape
groups -> [--dry-run: print the plan, stop] -> open or resume the results
folder -> `ensemble.run_group` once per group, recording each group as it
finishes -> tables, plots, report -> print the summary and the folder.

Rerunning the same command resumes: finished configs are not trained again
and the tables come out byte-identical (CPU) to an uninterrupted run. A folder
holding a different study is refused unless `--overwrite` is given.

Exit status: 0 done; 2 bad input (one line on stderr, nothing written);
130 interrupted (rerun the same command to continue).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import difflib
import functools
import hashlib
import importlib
import json
import math
import os
import pkgutil
import platform
import re
import sys
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

PROG = "jaxlstm.sweep"
DEFAULT_EXPERIMENT = "cells"
DEFAULT_REPEATS = 30


class UsageError(Exception):
  """Bad input: reported as one line on stderr with exit status 2."""


# ---------------------------------------------------------------------------
# Arguments.


class _Parser(argparse.ArgumentParser):
  def error(self, message):  # argparse prints usage + message and exits; we want one line
    raise UsageError(message)


def _int_at_least(minimum: int, what: str):
  """An argparse type: an integer >= minimum, with a message naming what is expected."""
  def parse(text: str) -> int:
    try:
      value = int(text)
    except ValueError:
      value = None
    if value is None or value < minimum:
      raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value
  return parse


_positive_int = _int_at_least(1, "a positive integer")
_seed = _int_at_least(0, "a non-negative integer")


def build_parser() -> argparse.ArgumentParser:
  parser = _Parser(
      prog=PROG, description="Train every config of a grid x repeats, one compiled call per "
      "static-shape group, into a resumable results folder.",
      epilog="Rerun the same command to resume an interrupted sweep.")
  source = parser.add_mutually_exclusive_group()
  source.add_argument("--experiment", metavar="NAME",
                      help=f"an experiment module in experiments/ (default: {DEFAULT_EXPERIMENT})")
  source.add_argument("--config", metavar="FILE",
                      help="a TOML or JSON file: config sections plus an optional 'grid' table")
  source.add_argument("--data", metavar="CSV",
                      help="a time series CSV (header row; rows are time steps): windows of "
                      "data.options.n_in steps predict the next n_out, last 20%% validation, min-max scaled")
  parser.add_argument("--column", metavar="NAME[,NAME...]",
                      help="with --data: the series column(s) to use (default: every column)")
  parser.add_argument("--date-column", metavar="NAME", help="with --data: a date column to sort rows by")
  parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                      help="grid values of a dotted field (repeatable); replaces the study's values for KEY")
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="sets",
                      help="fix a dotted field of the base config (repeatable); drops KEY from the grid")
  parser.add_argument("--random", type=_positive_int, metavar="N",
                      help="train N configs drawn at random (by --seed) from the grid instead of all")
  parser.add_argument("--epochs", type=_positive_int, help="shorthand for --set train.epochs=N")
  parser.add_argument("--metric", metavar="NAME",
                      help="the history metric scored in the summary, plots and report (default: the "
                      "experiment's METRIC, else val_loss), e.g. val_mae, val_accuracy")
  parser.add_argument("--repeats", type=_positive_int, default=DEFAULT_REPEATS,
                      help=f"repeats (seeds) per config (default {DEFAULT_REPEATS})")
  parser.add_argument("--seed", type=_seed, default=0, help="the run seed (default 0)")
  parser.add_argument("--out", metavar="DIR", help="results folder (default runs/<experiment>-<study hash>)")
  parser.add_argument("--overwrite", action="store_true", help="replace a results folder holding another study")
  parser.add_argument("--list-experiments", action="store_true", help="list the experiments and exit")
  parser.add_argument("--dry-run", action="store_true",
                      help="print the plan (configs, groups, compiles, memory) without training or writing")
  parser.add_argument("--quiet", action="store_true", help="no progress bar and no log lines")
  parser.add_argument("--no-cache", action="store_true", help="disable the persistent compilation cache")
  return parser


# ---------------------------------------------------------------------------
# Studies: base config + grid -> configs.


@dataclasses.dataclass(frozen=True)
class Study:
  """What a sweep trains.

  Attributes:
    name: experiment (or config file) name; names the default folder.
    base: the base config.
    grid: dotted field -> values (typed); empty for a single config.
    configs: the grid points to train, in order.
    random: N for a random draw from the grid, None for the full product.
    repeats, seed: repeats per config and the run seed.
  """
  name: str
  base: Any
  grid: dict[str, list]
  configs: list
  random: int | None
  repeats: int
  seed: int
  metric: str = "val_loss"

  def spec(self) -> dict:
    """What identifies the study in a results folder (without data fingerprints)."""
    return {"experiment": self.name, "base": self.base.to_dict(),
            "grid": {k: [_jsonable(v) for v in vs] for k, vs in self.grid.items()},
            "random": self.random, "repeats": self.repeats, "seed": self.seed,
            "configs": [c.config_id for c in self.configs], "metric": self.metric}

  def default_out(self) -> Path:
    """runs/<name>-<hash>: the same command always finds its own folder again."""
    spec = self.spec()
    del spec["experiment"], spec["configs"], spec["metric"]  # the metric is analysis, not training
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:8]
    return Path("runs") / f"{self.name}-{digest}"


def _jsonable(value: Any) -> Any:
  if isinstance(value, tuple):
    return [_jsonable(v) for v in value]
  if dataclasses.is_dataclass(value):
    return dataclasses.asdict(value)
  return value


def experiment_names() -> list[str]:
  """Modules of the `experiments` package (each one a study)."""
  try:
    import experiments
  except ImportError:
    raise UsageError("the 'experiments' package is not importable; install jaxlstm from its "
                     "repository (pip install -e .) or use --config FILE") from None
  return sorted(m.name for m in pkgutil.iter_modules(experiments.__path__) if not m.name.startswith("_"))


def load_experiment(name: str) -> tuple[Any, dict[str, list], list | None]:
  """`(base config, grid, configs)` of experiment `name`.

  A module defines `get_config()` and either `get_grid()` (the Cartesian
  product runs) or `get_configs()` (an explicit list, for studies a product
  cannot express, e.g. each optimizer with its own settings); `configs` is
  that list, or None.
  """
  from jaxlstm.config import Config
  names = experiment_names()
  if name not in names:
    hint = difflib.get_close_matches(name, names, n=1)
    extra = f"; did you mean {hint[0]!r}" if hint else ""
    raise UsageError(f"unknown experiment {name!r}{extra}. Known experiments: {', '.join(names)} "
                     "(see --list-experiments)")
  module = importlib.import_module(f"experiments.{name}")
  has_grid = callable(getattr(module, "get_grid", None))
  has_list = callable(getattr(module, "get_configs", None))
  if not callable(getattr(module, "get_config", None)) or has_grid == has_list:
    raise UsageError(f"experiments/{name}.py must define get_config() and one of get_grid() or get_configs()")
  base = module.get_config()
  if not isinstance(base, Config):
    raise UsageError(f"experiments/{name}.py: get_config() must return a Config")
  if has_list:
    configs = list(module.get_configs())
    if not configs or not all(isinstance(c, Config) for c in configs):
      raise UsageError(f"experiments/{name}.py: get_configs() must return a non-empty list of Config")
    return base, {}, configs
  grid = module.get_grid()
  if not isinstance(grid, Mapping):
    raise UsageError(f"experiments/{name}.py: get_grid() must return a dict")
  return base, {k: list(v) for k, v in grid.items()}, None


def differing_fields(configs: Sequence[Any]) -> dict[str, list]:
  """Dotted fields whose values differ between configs -> their values in order of first appearance.

  Labels and table columns of an explicit config list, as the grid gives them
  for a product.
  """
  flat = []
  for cfg in configs:
    d = cfg.to_dict()
    row = {}
    for section, fields in d.items():
      for name, value in fields.items():
        if section == "data" and name == "options":
          row.update({f"data.options.{k}": v for k, v in value.items()})
        else:
          row[f"{section}.{name}"] = value
    flat.append(row)
  keys = [k for k in dict.fromkeys(k for row in flat for k in row)]
  out = {}
  for key in keys:
    values = [row.get(key) for row in flat]
    seen = {}
    for v in values:
      seen.setdefault(json.dumps(v, sort_keys=True), v)
    if len(seen) > 1:
      out[key] = list(seen.values())
  return out


def list_experiments(stream: TextIO) -> None:
  for name in experiment_names():
    module = importlib.import_module(f"experiments.{name}")
    first = (module.__doc__ or "").strip().splitlines()
    print(f"{name:16s} {first[0] if first else ''}", file=stream)


def load_config_file(path: str) -> tuple[Any, dict[str, list]]:
  """`(base config, grid)` from a TOML or JSON file: config sections plus an optional `grid` table."""
  from jaxlstm.config import Config
  file = Path(path)
  try:
    text = file.read_text(encoding="utf-8")
  except (OSError, UnicodeDecodeError) as e:
    raise UsageError(f"cannot read --config {path}: {getattr(e, 'strerror', None) or e}") from None
  try:
    if file.suffix.lower() == ".toml":
      data = tomllib.loads(text)
    elif file.suffix.lower() == ".json":
      data = json.loads(text)
    else:
      raise UsageError(f"--config {path}: expected a .toml or .json file")
  except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
    raise UsageError(f"--config {path} is not valid {file.suffix[1:].upper()}: {e}") from None
  if not isinstance(data, dict):
    raise UsageError(f"--config {path}: expected a table of config sections at the top level")
  grid_table = data.pop("grid", {})
  if not isinstance(grid_table, Mapping):
    raise UsageError(f"--config {path}: 'grid' must be a table of dotted field -> list of values")
  return Config.from_dict(data), _flatten_grid(grid_table)


def _flatten_grid(table: Mapping, prefix: str = "") -> dict[str, list]:
  # Accept both `"model.cells" = [1, 5]` and `[grid.model] cells = [1, 5]`.
  out = {}
  for key, value in table.items():
    if isinstance(value, Mapping):
      out.update(_flatten_grid(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = list(value) if isinstance(value, list) else [value]
  return out


def check_key(key: str) -> None:
  """Raise ConfigError (with "did you mean") unless `key` names a config field.

  `data.options.<name>` is any option of the problem: the problem checks it
  when the data is generated (still before anything compiles).
  """
  from jaxlstm.config import Config
  if key.startswith("data.options.") and len(key) > len("data.options."):
    return
  Config().get(key)


def parse_value(key: str, text: str) -> Any:
  """A command-line value typed by its field (`config.parse_value`); problem options as JSON or text."""
  from jaxlstm import config
  if key.startswith("data.options."):
    try:
      return json.loads(text)
    except json.JSONDecodeError:
      return text  # a file name or another plain string
  return config.parse_value(key, text)


def _override_value(key: str, value: Any) -> Any:
  # Config.override re-parses strings by field type, and problem options are
  # parsed as JSON: hand a string option over JSON-encoded so it stays a string.
  if key.startswith("data.options.") and isinstance(value, str):
    return json.dumps(value)
  return value


def _split_assignment(text: str, flag: str) -> tuple[str, str]:
  key, sep, value = text.partition("=")
  key = key.strip()
  if not sep or not key or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", key):
    raise UsageError(f"{flag} {text!r}: expected KEY=VALUE with a dotted field name, e.g. "
                     f"{flag} model.cells=" + ("1,5,10" if flag == "--grid" else "5"))
  return key, value


def parse_grid_arg(text: str) -> tuple[str, list]:
  """`--grid key=v1,v2` -> (key, typed values)."""
  key, values = _split_assignment(text, "--grid")
  check_key(key)
  parts = [p.strip() for p in values.split(",")]
  if not values.strip() or any(not p for p in parts):
    raise UsageError(f"--grid {text!r}: give comma-separated values, e.g. --grid {key}=1,5,10")
  return key, [parse_value(key, p) for p in parts]


def parse_set_arg(text: str) -> tuple[str, Any]:
  """`--set key=value` -> (key, typed value)."""
  key, value = _split_assignment(text, "--set")
  check_key(key)
  return key, parse_value(key, value)


def draw_random(grid: Mapping[str, list], n: int, rng: np.random.Generator) -> list[tuple[int, ...]] | None:
  """Indices of `n` distinct grid points drawn without replacement, in grid order.

  Returns:
    One index tuple per draw (one index per grid key), or None when `n` covers
    the whole grid (then the full product runs).
  """
  sizes = [len(v) for v in grid.values()]
  total = math.prod(sizes)
  if n >= total:
    return None
  # Sorted: configs keep the grid's order in every table, whatever the draw order.
  picks = np.sort(rng.choice(total, size=n, replace=False))
  return [tuple(int(i) for i in np.unravel_index(p, sizes)) for p in picks]


CSV_DEFAULTS = {"n_in": 10, "n_out": 1, "val_fraction": 0.2}


def csv_study(path: str, column: str | None, date_column: str | None):
  """Base config and grid of a study on a CSV series (`--data`).

  Defaults a forecasting study would start from, each overridable with --set:
  10-step input windows predicting the next step (data.options.n_in / n_out),
  the last 20% of rows for validation (data.options.val_fraction, no window
  crosses the split), min-max scaling fitted on the training rows
  (data.scaling), LSTM(20) + Dense, Adam, MSE with MAE reported, batch 32,
  shuffled, 100 epochs.
  """
  from jaxlstm.config import Config
  file = Path(path)
  if not file.is_file():
    raise UsageError(f"--data {path}: no such file")
  options: dict[str, Any] = {"path": str(file.resolve()), **CSV_DEFAULTS}
  if column:
    names = [c.strip() for c in column.split(",") if c.strip()]
    options["column" if len(names) == 1 else "columns"] = names[0] if len(names) == 1 else names
  if date_column:
    options["date_column"] = date_column
  base = Config.from_dict({
      "data": {"problem": "csv", "options": options, "scaling": "minmax"},
      "model": {"cells": 20},
      "train": {"epochs": 100, "batch_size": 32, "shuffle": True, "loss": "mse", "metrics": ["mae"]},
  })
  return base, {}


def listed_study(name: str, base: Any, configs: list, args: argparse.Namespace) -> Study:
  """The study of an experiment that lists its configs: --set / --epochs apply to every one."""
  from jaxlstm.config import ConfigError
  if args.grid or args.random is not None:
    raise UsageError(f"experiment {name!r} lists its configs (get_configs()); --grid and --random do "
                     "not apply to it: use --set to change every config, or write a grid study")
  sets = dict(parse_set_arg(text) for text in args.sets)
  if args.epochs is not None:
    sets["train.epochs"] = args.epochs
  changes = {k: _override_value(k, v) for k, v in sets.items()}
  base = base.override(changes)
  configs = [c.override(changes) for c in configs]
  if len({c.config_id for c in configs}) != len(configs):
    raise ConfigError(f"experiment {name!r} lists the same config twice (after --set).")
  return Study(name=name, base=base, grid=differing_fields(configs), configs=configs, random=None,
               repeats=args.repeats, seed=args.seed)


def make_study(args: argparse.Namespace) -> Study:
  """Build the study from the arguments (raises UsageError / ConfigError on bad input)."""
  from jaxlstm.config import ConfigError, expand_grid
  if (args.column or args.date_column) and not args.data:
    raise UsageError("--column and --date-column go with --data FILE.csv")
  if args.config:
    base, grid = load_config_file(args.config)
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", Path(args.config).stem) or "config"
  elif args.data:
    base, grid = csv_study(args.data, args.column, args.date_column)
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", Path(args.data).stem) or "data"
  else:
    name = args.experiment or DEFAULT_EXPERIMENT
    base, grid, listed = load_experiment(name)
    if listed is not None:
      return listed_study(name, base, listed, args)
  typed = {}
  for key, values in grid.items():
    check_key(key)
    if not values:
      raise UsageError(f"grid {key!r} has no values; give at least one")
    typed[key] = [parse_value(key, v) if isinstance(v, str) else v for v in values]
  grid = typed
  seen = set()
  for text in args.grid:
    key, values = parse_grid_arg(text)
    if key in seen:
      raise UsageError(f"--grid {key} is given twice; list every value in one --grid {key}=...")
    seen.add(key)
    grid[key] = values
  sets = dict(parse_set_arg(text) for text in args.sets)
  if args.epochs is not None:
    sets["train.epochs"] = args.epochs
  for key in sets:
    if key in seen:
      raise UsageError(f"{key} is given both in --grid and --set; keep one")
    grid.pop(key, None)  # a fixed value replaces the study's grid over it
  base = base.override({k: _override_value(k, v) for k, v in sets.items()})
  picks = None
  if args.random is not None and grid:
    picks = draw_random(grid, args.random, np.random.default_rng(args.seed))
  if picks is None:
    configs = expand_grid(base, {k: [_override_value(k, v) for v in vs] for k, vs in grid.items()})
  else:
    keys = list(grid)
    configs = [base.override({k: _override_value(k, grid[k][i]) for k, i in zip(keys, idx)}) for idx in picks]
    if len({c.config_id for c in configs}) != len(configs):
      raise ConfigError("the grid repeats a config (two grid points resolve to the same values).")
  random = args.random if picks is not None else None
  return Study(name=name, base=base, grid=grid, configs=configs, random=random,
               repeats=args.repeats, seed=args.seed)


# ---------------------------------------------------------------------------
# Planning.


@dataclasses.dataclass
class GroupPlan:
  """One static-shape group and what running it costs (as `run_group` will do it)."""
  group: Any
  dataset: Any
  program: Any
  member_bytes: int
  members_per_call: int
  calls: int
  epoch_chunks: int
  compiles: int


@dataclasses.dataclass
class Plan:
  study: Study
  groups: list[GroupPlan]
  fingerprints: dict[str, str]

  @property
  def compiles(self) -> int:
    return sum(g.compiles for g in self.groups)


def _data_key(cfg) -> str:
  return json.dumps(cfg.to_dict()["data"], sort_keys=True)


def with_metric(study: Study, args: argparse.Namespace) -> Study:
  """Set the scored metric: --metric, else the experiment module's METRIC, else val_loss.

  Raises:
    UsageError: a config of the study does not record that metric.
  """
  from jaxlstm.train import history_keys
  metric = args.metric
  if metric is None and not args.config and not args.data:
    module = importlib.import_module(f"experiments.{study.name}")
    metric = getattr(module, "METRIC", None)
  metric = metric or "val_loss"
  for cfg in study.configs:
    known = history_keys(cfg)
    if metric not in known:
      hint = difflib.get_close_matches(metric, known, n=1)
      extra = f"; did you mean {hint[0]!r}" if hint else ""
      raise UsageError(f"--metric {metric!r} is not recorded by config {cfg.config_id}{extra}. "
                       f"Its history keys: {', '.join(known)}")
  return dataclasses.replace(study, metric=metric)


def plan_study(study: Study, *, memory_budget: int | None = None) -> Plan:
  """Generate the data, check every config against it and group configs by static shape.

  Everything that can be wrong with a config or its data is raised here
  (ConfigError / ValueError), before anything compiles.
  """
  from jaxlstm import ensemble
  from jaxlstm.train import Program, check_compatible, resolve_dataset
  budget = memory_budget or ensemble.DEFAULT_MEMORY_BUDGET
  datasets, fingerprints = {}, {}
  for cfg in study.configs:
    key = _data_key(cfg)
    if key not in datasets:
      datasets[key] = resolve_dataset(cfg)
    check_compatible(cfg, datasets[key])
    fingerprints[cfg.config_id] = datasets[key].fingerprint
  plans = []
  for group in ensemble.plan(study.configs, study.repeats, pad_cells=True):
    dataset = datasets[_data_key(group.configs[0])]
    program = Program(group.configs[0], dataset, cells=group.cells)
    calls = ensemble.plan_calls(group, program, memory_budget=budget)
    plans.append(GroupPlan(group, dataset, program, calls.member_bytes, calls.members_per_call, calls.calls,
                           calls.epoch_chunks, calls.compiles))
  return Plan(study, plans, fingerprints)


def _bytes(n: float) -> str:
  for unit in ("B", "KiB", "MiB", "GiB"):
    if n < 1024 or unit == "GiB":
      return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
    n /= 1024
  return f"{n:.1f} GiB"


def _count(n: int, noun: str) -> str:
  return f"{n} {noun}" + ("" if n == 1 else "s")


def _label(cfg, grid: Mapping[str, list]) -> str:
  keys = list(grid)
  short = [k.rsplit(".", 1)[-1] for k in keys]
  names = short if len(set(short)) == len(short) else keys
  from jaxlstm.store import config_value
  return ", ".join(f"{n}={config_value(cfg, k)}" for n, k in zip(names, keys)) or "(base config)"


def describe_plan(plan: Plan, stream: TextIO) -> None:
  """Print the plan: configs, static-shape groups, compiles, estimated memory."""
  study = plan.study
  index = {c.config_id: i + 1 for i, c in enumerate(study.configs)}
  draw = f" ({study.random} drawn at random from the grid)" if study.random else ""
  print(f"study {study.name}: {len(study.configs)} configs{draw} x {study.repeats} repeats, "
        f"seed {study.seed}", file=stream)
  for cfg in study.configs:
    print(f"  config {index[cfg.config_id]:3d}  {cfg.config_id}  {_label(cfg, study.grid)}", file=stream)
  peak = max(g.member_bytes * g.members_per_call for g in plan.groups)
  print(f"plan: {_count(len(study.configs), 'config')}, {_count(len(plan.groups), 'group')}, "
        f"{_count(plan.compiles, 'compile')}, "
        f"{sum(g.group.members for g in plan.groups)} members, estimated peak memory {_bytes(peak)}",
        file=stream)
  for i, g in enumerate(plan.groups):
    cfg = g.group.configs[0]
    padded = " (narrower configs zero-padded)" if g.group.padded else ""
    print(f"  group {i + 1}: configs {', '.join(str(index[c.config_id]) for c in g.group.configs)}; "
          f"{g.group.members} members; {g.group.cells} cells{padded}, {cfg.model.layers} layer(s), "
          f"batch {g.program.batch} x {g.program.steps} step(s)/epoch, {g.program.epochs} epochs "
          f"in {g.epoch_chunks} chunk(s); {g.calls} call(s) of {g.members_per_call} members; "
          f"{g.compiles} compile(s); ~{_bytes(g.member_bytes)}/member, "
          f"~{_bytes(g.member_bytes * g.members_per_call)}/call", file=stream)


# ---------------------------------------------------------------------------
# Environment: compilation cache, versions, device.


def cache_dir() -> Path:
  """The persistent XLA cache of jaxlstm: $XDG_CACHE_HOME/jaxlstm/xla (default ~/.cache)."""
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return Path(base, "jaxlstm", "xla")


def configure_compilation_cache(enabled: bool) -> Path | None:
  """Turn JAX's persistent compilation cache on (in `cache_dir()`) or off.

  A compile then costs once per machine, not once per process: rerunning or
  resuming a sweep skips the compiles of programs it has built before. A
  directory set by the user (JAX_COMPILATION_CACHE_DIR) is kept.
  """
  import jax
  from jax.experimental.compilation_cache import compilation_cache
  jax.config.update("jax_enable_compilation_cache", bool(enabled))
  if not enabled:
    return None
  path = os.environ.get("JAX_COMPILATION_CACHE_DIR") or str(cache_dir())
  try:
    Path(path).mkdir(parents=True, exist_ok=True)
  except OSError:
    jax.config.update("jax_enable_compilation_cache", False)  # no cache beats no sweep
    return None
  if jax.config.values.get("jax_compilation_cache_dir") != path:
    jax.config.update("jax_compilation_cache_dir", path)
    compilation_cache.reset_cache()  # a cache already opened in this process keeps its old dir otherwise
  # Our programs compile in seconds and are small: cache them all.
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return Path(path)


def environment(argv: Sequence[str]) -> dict:
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
  return {"argv": ["python", "-m", PROG, *argv], "versions": versions, "device": device, "time": _now()}


def _now() -> str:
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
    now = time.perf_counter()
    fraction = min(1.0, (self.done + group_fraction * self.current[2]) / self.total)
    eta = "?"
    if self._reference is not None and fraction > self._reference[1]:
      t0, f0 = self._reference
      eta = _clock((now - t0) * (1 - fraction) / (fraction - f0))
    elif fraction >= 1:
      eta = _clock(0)
    if chunk and self._reference is None:
      self._reference = (now, fraction)
    filled = int(round(fraction * self.width))
    bar = "#" * filled + "." * (self.width - filled)
    line = (f"[{bar}] {fraction:4.0%} group {self.current[0]}/{self.current[1]} {text} "
            f"| {_clock(now - self.start)} elapsed, eta {eta}")
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
# Results folder: open, compare, resume.


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
                log: Callable[[str], None]):
  """Create, replace or resume the results folder; refuse one holding another study.

  All refusals happen before anything is written.
  """
  from jaxlstm import store
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
# Running.


def state_like(program, group, seed: int):
  """Shapes of a group's TrainState (for restoring an epoch checkpoint)."""
  import jax
  from jaxlstm import ensemble
  members = ensemble.members_of(group, seed)
  return jax.eval_shape(lambda m: program.init_members(m, ((group.cells, group.members),)), members)


class _LoggedCheckpointer:
  """A StateCheckpointer that says when it restores (the only sign that epochs were skipped)."""

  def __init__(self, inner, on_restore: Callable[[int], None]):
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


def _state_dir(folder, group, seed: int) -> Path:
  ident = json.dumps([[c.config_id for c in group.configs], group.cells, group.repeats, seed])
  return folder.path / "state" / hashlib.sha256(ident.encode()).hexdigest()[:12]


def run_plan(plan: Plan, folder, env: dict, *, log: Callable[[str], None], progress: Progress) -> list[str]:
  """Train every config of the plan that the folder has not finished; record each group.

  A session entry (argv, versions, the configs it trained) is added to the
  manifest only when there is something to train: rerunning a finished sweep
  leaves the folder untouched.

  Returns:
    Ids of the configs trained now.
  """
  from jaxlstm import ensemble, store
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
  progress.total = max(1, sum(len(m) * study.repeats * gp.program.epochs for _, gp, m in todo))
  trained = []
  for number, (index, gp, missing) in enumerate(todo, start=1):
    group = gp.group
    if len(missing) < len(group.configs):
      # Same width, fewer members: each member's keys depend only on (seed, config, repeat).
      group = ensemble.Group(missing, group.cells, any(c.model.cells != group.cells for c in missing),
                             group.repeats)
    checkpointer = None
    if group.configs[0].train.checkpoint_every > 0:
      checkpointer = _LoggedCheckpointer(store.StateCheckpointer(
          _state_dir(folder, group, study.seed), like=functools.partial(state_like, gp.program, group, study.seed)),
          lambda epoch, n=number: log(f"group {n}: resuming from its checkpoint after epoch {epoch}"))
    progress.clear()
    log(f"group {number}/{len(todo)}: {len(group.configs)} config(s) x {study.repeats} repeats = "
        f"{group.members} members, {group.cells} cells" + (" (padded)" if group.padded else ""))
    progress.group(number, len(todo), len(missing) * study.repeats * gp.program.epochs)
    ensembles, info = ensemble.run_group(group, gp.dataset, seed=study.seed, progress=progress,
                                         checkpointer=checkpointer)
    folder.record(index, ensembles, info)
    if checkpointer is not None:
      checkpointer.clear()
      try:
        (folder.path / "state").rmdir()  # only when no other group's steps are left
      except OSError:
        pass
    folder.write_tables()
    progress.finish_group()
    progress.clear()
    log(f"group {number}/{len(todo)} done: {info.compiles} compile(s) in {info.compile_seconds:.1f} s, "
        f"training {info.run_seconds:.1f} s")
    trained += [c.config_id for c in group.configs]
  return trained


def format_summary(folder) -> str:
  """The describe()-style table of the final score metric per config, as printed at the end."""
  from jaxlstm import store
  frame = store.summary_table(folder.path, folder.manifest)
  if frame is None:
    return "no config has finished yet"
  labels = store.config_labels(folder.manifest)
  columns = ["count", "n_diverged", "mean", "std", "min", "25%", "50%", "75%", "max"]
  table = frame[columns].copy()
  table.index = [labels[c] for c in frame.index]
  table["count"] = table["count"].astype(int)
  table["n_diverged"] = table["n_diverged"].astype(int)
  head = (f"final {store.summary_metric(folder.manifest)} over {folder.manifest['study']['repeats']} repeats per config "
          "(diverged repeats counted, not averaged):")
  return head + "\n" + table.to_string(float_format=lambda v: f"{v:.6g}")


# ---------------------------------------------------------------------------
# main.


def main(argv: Sequence[str] | None = None) -> int:
  """Run the CLI; returns the exit status (0 done, 2 bad input, 130 interrupted)."""
  argv = list(sys.argv[1:] if argv is None else argv)
  stdout, stderr = sys.stdout, sys.stderr
  parser = build_parser()

  def fail(message: str) -> int:
    print(f"{PROG}: error: {' '.join(str(message).split())}", file=stderr)
    return 2

  try:
    args = parser.parse_args(argv)
  except UsageError as e:
    return fail(str(e))
  except SystemExit as e:  # --help
    return int(e.code or 0)

  quiet = args.quiet

  def log(message: str) -> None:
    if not quiet:
      print(f"{PROG}: {message}", file=stderr, flush=True)

  from jaxlstm.config import ConfigError
  try:
    if args.list_experiments:
      list_experiments(stdout)
      return 0
    study = with_metric(make_study(args), args)
    plan = plan_study(study)
  except (UsageError, ConfigError, ValueError) as e:
    return fail(str(e))
  if args.dry_run:
    describe_plan(plan, stdout)
    out = Path(args.out) if args.out else study.default_out()
    print(f"dry run: nothing trained, nothing written (results would go to {out})", file=stdout)
    return 0

  out = Path(args.out) if args.out else study.default_out()
  spec = dict(study.spec(), data=plan.fingerprints)
  try:
    env = environment(argv)
    folder, lock = open_folder(out, spec, plan, env, overwrite=args.overwrite, log=log)
  except UsageError as e:
    return fail(str(e))
  try:
    from jaxlstm import store
    leftovers = store.clean_leftovers(out)
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
    configure_compilation_cache(not args.no_cache)
    progress = Progress(stderr, 1, enabled=not quiet and stderr.isatty())
    try:
      trained = run_plan(plan, folder, env, log=log, progress=progress)
    except KeyboardInterrupt:
      progress.clear()
      print(f"{PROG}: interrupted; rerun the same command to resume ({len(folder.done_ids())} of "
            f"{len(study.configs)} configs done, kept in {out})", file=stderr)
      return 130
    if not trained:
      log("every config is already done: nothing to train")
    folder.write_tables()
    if trained:
      folder.finish_session(_now())
    if trained or lost or not (out / "report.md").is_file():
      import warnings

      from jaxlstm import report
      with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", report.PlotWarning)
        try:
          report.write_all(out)
        except Exception as e:  # the report is derived: a failure must not cost the results
          log(f"warning: report not written ({type(e).__name__}: {e}); "
              f"rebuild it with python -m jaxlstm.report {out}")
      for w in caught:
        if issubclass(w.category, report.PlotWarning):
          log(f"warning: {w.message}")
    print(format_summary(folder), file=stdout)
    print(f"results: {out}", file=stdout, flush=True)
    return 0
  finally:
    if lock is not None:
      lock.close()


if __name__ == "__main__":
  sys.exit(main())
