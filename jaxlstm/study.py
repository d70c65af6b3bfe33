"""Building a study: a base config, a grid and the configs to train (no jax).

A study comes from one of:

  * an experiment module of `jaxlstm.experiments` (the repository's `experiments/`
    folder, installed under our namespace), or a study file given by path
    (`--experiment path/to/study.py`): `get_config()` and `get_grid()` or
    `get_configs()`, optionally `METRIC`;
  * a TOML/JSON file (`--config`): the config sections plus an optional `grid` table;
  * a CSV series (`--data`): forecasting defaults on sliding windows;

and is then edited on the command line (`--set`, `--grid`, `--epochs`, `--random`).
Every error is a `UsageError` or a `ConfigError` with one line naming the field,
the value and the fix, raised before anything compiles.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import hashlib
import importlib
import importlib.util
import json
import math
import pkgutil
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, TextIO

import numpy as np

from jaxlstm import metrics, store
from jaxlstm import study_space
from jaxlstm.config import (METRICS, PER_LAYER_FIELDS, WIDTH_FIELDS, Config, ConfigError, check_field,
                            expand_grid, parse_value)
from jaxlstm.space import Space

DEFAULT_EXPERIMENT = "cells"
EXPERIMENTS_PACKAGE = "jaxlstm.experiments"
CSV_DEFAULTS = {"n_in": 10, "n_out": 1, "val_fraction": 0.2}
# Fields outside `model` whose grid points are lists ("/" between points, "," between items).
LIST_FIELDS = ("data.difference",)
# Two ways to give the recurrent widths: a units list, or cells x layers.
_WIDTH_ALTERNATIVES = {"model.units": ("model.cells", "model.layers"),
                       "model.cells": ("model.units",), "model.layers": ("model.units",)}


class UsageError(Exception):
  """Bad input: reported as one line on stderr with exit status 2."""


@dataclasses.dataclass(frozen=True)
class Study:
  """What a sweep trains.

  Attributes:
    name: experiment (or config file) name; names the default folder.
    base: the base config.
    grid: dotted field -> values (typed); empty for a single config.
    configs: the grid points to train, in order.
    random: N for a random draw from the grid, None for the full product.
    repeats: repeats per config.
    seed: the run's seed.
    metric: the history metric the summary, plots and report score.
    score: which value of it scores a repeat: "final" (at the last epoch, or the
      stop epoch of an early-stopped repeat), "best" (the best epoch's) or
      "restored" (the epoch whose weights early stopping restored).
    space: the search space (`jaxlstm.study_space`), None for a grid study. With
      `--random N` the configs are N draws from it crossed with the grid; with
      `--search` they are the grid's configs, templates the search fills in.
  """
  name: str
  base: Config
  grid: dict[str, list[Any]]
  configs: list[Config]
  random: int | None
  repeats: int
  seed: int
  metric: str = "val_loss"
  score: str = "final"
  space: Space | None = None

  def spec(self) -> dict[str, Any]:
    """What identifies the study in a results folder (without data fingerprints)."""
    spec = {"experiment": self.name, "base": self.base.identity(),
            "grid": {k: [store.jsonable(v) for v in vs] for k, vs in self.grid.items()},
            "random": self.random, "repeats": self.repeats, "seed": self.seed,
            "configs": [c.config_id for c in self.configs], "metric": self.metric, "score": self.score}
    if self.space is not None:  # only then: a study without a space keeps its folder name
      spec["space"] = self.space.spec()
    return spec

  def default_out(self, **extra: Any) -> Path:
    """runs/<name>-<hash>: the same command always finds its own folder again.

    `extra` (e.g. a search's settings) enters the hash only when given.
    """
    spec = dict(self.spec(), **extra)
    del spec["experiment"], spec["configs"], spec["metric"], spec["score"]  # analysis, not training
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:8]
    return Path("runs") / f"{self.name}-{digest}"

  def labels(self) -> dict[str, str]:
    """Config id -> short unique label ("cells=5"), as every table and plot shows it."""
    values = {c.config_id: {k: store.config_value(c, k) for k in self.grid} for c in self.configs}
    return store.labels(list(self.grid), values)


# ---------------------------------------------------------------------------
# Experiment modules.


def experiment_names() -> list[str]:
  """The studies that ship with jaxlstm (modules of `jaxlstm.experiments`)."""
  package = _experiments_package()
  return sorted(m.name for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_"))


def _experiments_package() -> ModuleType:
  try:
    return importlib.import_module(EXPERIMENTS_PACKAGE)
  except ImportError:
    raise UsageError(f"the {EXPERIMENTS_PACKAGE} package is not installed; reinstall jaxlstm "
                     "(pip install -e .) or use --config FILE") from None


def experiment_module(name: str) -> ModuleType:
  """The module of a study: a name in `jaxlstm.experiments`, or a path to a `.py` file.

  A path is loaded from that file only; a name only from our installed package, so a
  folder that happens to be on `sys.path` never shadows a study.
  """
  if name.endswith(".py") or "/" in name or "\\" in name:
    path = Path(name)
    if not path.is_file():
      raise UsageError(f"--experiment {name}: no such study file; give a .py file with get_config()")
    spec = importlib.util.spec_from_file_location(f"jaxlstm_user_study_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
      spec.loader.exec_module(module)
    except Exception as e:  # the user's own file: report what broke, as one line
      raise UsageError(f"--experiment {name} failed to load ({type(e).__name__}: {e})") from None
    return module
  names = experiment_names()
  if name not in names:
    hint = difflib.get_close_matches(name, names, n=1)
    extra = f"; did you mean {hint[0]!r}" if hint else ""
    raise UsageError(f"unknown experiment {name!r}{extra}. Known experiments: {', '.join(names)} "
                     "(see --list-experiments), or give a path to a study file")
  return importlib.import_module(f"{EXPERIMENTS_PACKAGE}.{name}")


def load_experiment(name: str) -> tuple[Config, dict[str, list[Any]], list[Config] | None]:
  """`(base config, grid, configs)` of experiment `name` (a package name or a file path).

  A module defines `get_config()` and either `get_grid()` (the Cartesian
  product runs) or `get_configs()` (an explicit list, for studies a product
  cannot express, e.g. each optimizer with its own settings); `configs` is
  that list, or None.
  """
  module = experiment_module(name)
  where = Path(module.__file__).name
  has_grid = callable(getattr(module, "get_grid", None))
  has_list = callable(getattr(module, "get_configs", None))
  if not callable(getattr(module, "get_config", None)) or has_grid == has_list:
    raise UsageError(f"{where} must define get_config() and one of get_grid() or get_configs()")
  base = module.get_config()
  if not isinstance(base, Config):
    raise UsageError(f"{where}: get_config() must return a Config")
  if has_list:
    configs = list(module.get_configs())
    if not configs or not all(isinstance(c, Config) for c in configs):
      raise UsageError(f"{where}: get_configs() must return a non-empty list of Config")
    return base, {}, configs
  grid = module.get_grid()
  if not isinstance(grid, Mapping):
    raise UsageError(f"{where}: get_grid() must return a dict")
  return base, {k: list(v) for k, v in grid.items()}, None


def list_experiments(stream: TextIO) -> None:
  """Print each study's name and the first line of its docstring."""
  for name in experiment_names():
    module = experiment_module(name)
    first = (module.__doc__ or "").strip().splitlines()
    print(f"{name:16s} {first[0] if first else ''}", file=stream)


def differing_fields(configs: Sequence[Config]) -> dict[str, list[Any]]:
  """Dotted fields whose values differ between configs -> their values in order of first appearance.

  Labels and table columns of an explicit config list, as the grid gives them
  for a product.
  """
  flat = []
  for cfg in configs:
    row = {}
    for section, fields in cfg.to_dict().items():
      for name, value in fields.items():
        if section == "data" and name == "options":
          row.update({f"data.options.{k}": v for k, v in value.items()})
        else:
          row[f"{section}.{name}"] = value
    flat.append(row)
  out = {}
  for key in dict.fromkeys(k for row in flat for k in row):
    seen: dict[str, Any] = {}
    for row in flat:
      seen.setdefault(json.dumps(row.get(key), sort_keys=True), row.get(key))
    if len(seen) > 1:
      out[key] = list(seen.values())
  return out


# ---------------------------------------------------------------------------
# Config files and command-line values.


def load_config_file(path: str) -> tuple[Config, dict[str, list[Any]], dict | None]:
  """`(base config, grid, space table)` from a TOML or JSON file: config sections plus optional
  `grid` and `space` tables (`jaxlstm.space` reads the space table)."""
  file = Path(path)
  try:
    text = file.read_text(encoding="utf-8")
  except (OSError, UnicodeDecodeError) as e:
    raise UsageError(f"cannot read --config {path}: {getattr(e, 'strerror', None) or e}") from None
  try:
    if file.suffix.lower() == ".toml":
      table = tomllib.loads(text)
    elif file.suffix.lower() == ".json":
      table = json.loads(text)
    else:
      raise UsageError(f"--config {path}: expected a .toml or .json file")
  except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
    raise UsageError(f"--config {path} is not valid {file.suffix[1:].upper()}: {e}") from None
  if not isinstance(table, dict):
    raise UsageError(f"--config {path}: expected a table of config sections at the top level")
  grid_table = table.pop("grid", {})
  if not isinstance(grid_table, Mapping):
    raise UsageError(f"--config {path}: 'grid' must be a table of dotted field -> list of values")
  space_table = table.pop("space", None)
  if space_table is not None and not isinstance(space_table, Mapping):
    raise UsageError(f"--config {path}: 'space' must be a table of dotted field -> dimension")
  return Config.from_dict(table), _flatten_grid(grid_table), space_table


def _flatten_grid(table: Mapping, prefix: str = "") -> dict[str, list[Any]]:
  # Accept both `"model.cells" = [1, 5]` and `[grid.model] cells = [1, 5]`.
  out = {}
  for key, value in table.items():
    if isinstance(value, Mapping):
      out.update(_flatten_grid(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = list(value) if isinstance(value, list) else [value]
  return out


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


def parse_grid_arg(text: str) -> tuple[str, list[Any]]:
  """`--grid key=v1,v2` -> (key, typed values).

  Grid points are separated by commas, except for the fields whose points are
  lists of layers (`model.units`, `model.dense`, and `PER_LAYER_FIELDS` once the
  value holds a "/"): there "/" separates grid points and "," a list's items, e.g.
  `--grid model.units=64/128,64/256,128,64` (three depths) or
  `--grid model.dense=none/32` (without and with Dense(32)); the same for the lags of
  `data.difference` (`--grid data.difference=none/1/1,12`).
  """
  key, values = _split_assignment(text, "--grid")
  check_field(key)
  name = key.partition(".")[2] if key.startswith("model.") else ""
  lists = name in WIDTH_FIELDS or (name in PER_LAYER_FIELDS and "/" in values) or key in LIST_FIELDS
  parts = [p.strip() for p in values.split("/" if lists else ",")]
  if not values.strip() or any(not p for p in parts):
    if lists:
      raise UsageError(f"--grid {text!r}: give grid points separated by '/' and each list's items by ',', "
                       f"e.g. --grid {key}=" + ("64/128,64/256,128,64" if name in WIDTH_FIELDS else
                                               "none/1/1,12" if key in LIST_FIELDS else "0.1/0.2,0.1")
                       + ("; none is the empty list" if name == "dense" else ""))
    raise UsageError(f"--grid {text!r}: give comma-separated values, e.g. --grid {key}=1,5,10")
  return key, [parse_value(key, p) for p in parts]


def parse_set_arg(text: str) -> tuple[str, Any]:
  """`--set key=value` -> (key, typed value)."""
  key, value = _split_assignment(text, "--set")
  check_field(key)
  return key, parse_value(key, value)


def draw_random(grid: Mapping[str, list[Any]], n: int, rng: np.random.Generator) -> list[tuple[int, ...]] | None:
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


# ---------------------------------------------------------------------------
# Studies.


def csv_study(path: str, column: str | None, date_column: str | None) -> tuple[Config, dict[str, list[Any]]]:
  """Base config and grid of a study on a CSV series (`--data`).

  Defaults a forecasting study would start from, each overridable with --set:
  10-step input windows predicting the next step (data.options.n_in / n_out),
  the last 20% of rows for validation (data.options.val_fraction, no window
  crosses the split), min-max scaling fitted on the training rows
  (data.scaling), LSTM(20) + Dense, Adam, MSE with MAE reported, batch 32,
  shuffled, 100 epochs.
  """
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


def _command_line_sets(args: argparse.Namespace) -> dict[str, Any]:
  sets = dict(parse_set_arg(text) for text in args.sets)
  if args.epochs is not None:
    sets["train.epochs"] = args.epochs
  if getattr(args, "paired", False):
    sets["train.paired"] = True
  return sets


def listed_study(name: str, base: Config, configs: list[Config], args: argparse.Namespace) -> Study:
  """The study of an experiment that lists its configs: --set / --epochs apply to every one."""
  if args.grid or args.random is not None or getattr(args, "space", None) or getattr(args, "search", None):
    raise UsageError(f"experiment {name!r} lists its configs (get_configs()); --grid, --random, --space "
                     "and --search do not apply to it: use --set to change every config, or write a grid study")
  changes = {k: _override_value(k, v) for k, v in _command_line_sets(args).items()}
  base = base.override(changes)
  configs = [c.override(changes) for c in configs]
  if len({c.config_id for c in configs}) != len(configs):
    raise ConfigError(f"experiment {name!r} lists the same config twice (after --set).")
  return Study(name=name, base=base, grid=differing_fields(configs), configs=configs, random=None,
               repeats=args.repeats, seed=args.seed)


def _study_name(path: str, fallback: str) -> str:
  return re.sub(r"[^A-Za-z0-9_-]+", "-", Path(path).stem) or fallback


def make_study(args: argparse.Namespace) -> Study:
  """Build the study from parsed arguments (raises UsageError / ConfigError on bad input).

  Reads `experiment`, `config`, `data`, `column`, `date_column`, `grid`, `sets`,
  `epochs`, `paired`, `random`, `repeats`, `seed`, `metric` and `score` (see
  `jaxlstm.sweep.build_parser`).
  """
  if (args.column or args.date_column) and not args.data:
    raise UsageError("--column and --date-column go with --data FILE.csv")
  module_metric = None
  spaces: dict[str, Any] = {}
  if args.config:
    base, grid, spaces["file_space"] = load_config_file(args.config)
    name = _study_name(args.config, "config")
  elif args.data:
    base, grid = csv_study(args.data, args.column, args.date_column)
    name = _study_name(args.data, "data")
  else:
    experiment = args.experiment or DEFAULT_EXPERIMENT
    name = _study_name(experiment, "study") if experiment.endswith(".py") else experiment
    base, grid, listed = load_experiment(experiment)
    module = experiment_module(experiment)
    module_metric = getattr(module, "METRIC", None)
    if listed is not None:
      return _scored(listed_study(name, base, listed, args), args, module_metric)
    if callable(getattr(module, "get_space", None)):
      spaces["module_space"] = module.get_space()
  return _scored(_grid_study(name, base, grid, args, spaces), args, module_metric)


def _scored(study: Study, args: argparse.Namespace, module_metric: str | None) -> Study:
  source = "--metric" if args.metric or not module_metric else "the study's METRIC"
  return with_score(with_metric(study, args.metric or module_metric, source), getattr(args, "score", None))


def _grid_study(name: str, base: Config, grid: dict[str, list[Any]], args: argparse.Namespace,
                spaces: Mapping[str, Any] | None = None) -> Study:
  typed = {}
  for key, values in grid.items():
    check_field(key)
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
  sets = _command_line_sets(args)
  for key in sets:
    if key in seen:
      raise UsageError(f"{key} is given both in --grid and --set; keep one")
    grid.pop(key, None)  # a fixed value replaces the study's grid over it
  given = [*seen, *sets]
  for key in given:
    # Widths given one way replace the study's grid over them given the other way
    # (`--grid model.units=...` on the default study replaces its grid over model.cells).
    for other in _WIDTH_ALTERNATIVES.get(key, ()):
      if other in given:
        raise UsageError(f"{key} and {other} both give the recurrent widths on the command line; keep one "
                         "(model.units = one width per layer, or model.cells x model.layers)")
      grid.pop(other, None)
  base = base.override({k: _override_value(k, v) for k, v in sets.items()})
  space = study_space.resolve_space(**(spaces or {}), cli=getattr(args, "space", None) or (),
                                    cli_grid=list(seen), sets=list(sets))
  if space is not None:
    return _space_study(name, base, study_space.trim_grid(grid, space), space, args)
  if getattr(args, "search", None):
    raise UsageError(f"--search {args.search} needs a search space: --space KEY=SPEC (e.g. --space "
                     "optim.learning_rate=loguniform:1e-4:1e-1), a [space] table or get_space()")
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


def _space_study(name: str, base: Config, grid: dict[str, list[Any]], space: Space,
                 args: argparse.Namespace) -> Study:
  """A study over a search space: `--random N` draws its configs, `--search` fills them in batches."""
  space.check(base)
  grid_configs = expand_grid(base, {k: [_override_value(k, v) for v in vs] for k, vs in grid.items()})
  search = getattr(args, "search", None)
  if search is None and args.random is None:
    raise UsageError(f"a search space ({space.describe()}) needs --random N (N configs drawn from it) "
                     "or --search tpe|random|grid")
  if search is not None and args.random is not None:
    raise UsageError("--random N draws a fixed set of configs and --search searches the space; keep one "
                     "(--search random --trials N is a random search in batches)")
  if search is not None:
    return Study(name=name, base=base, grid={**{n: [] for n in space.names}, **grid}, configs=grid_configs,
                 random=None, repeats=args.repeats, seed=args.seed, space=space)
  configs = study_space.draw_configs(space, args.random, args.seed, base, grid_configs)
  return Study(name=name, base=base, grid={**study_space.drawn_values(space, configs), **grid},
               configs=configs, random=args.random, repeats=args.repeats, seed=args.seed, space=space)


SCORES = ("final", "best", "restored")


def default_score(configs) -> str:
  """"restored" when early stopping restores weights in any config, else "final"."""
  restores = any(c.train.early_stopping is not None and c.train.early_stopping.restore_best_weights
                 for c in configs)
  return "restored" if restores else "final"


def with_score(study: Study, score: str | None) -> Study:
  """Set how a repeat is scored (`--score`; default `default_score`)."""
  score = score or default_score(study.configs)
  if score not in SCORES:
    hint = difflib.get_close_matches(score, SCORES, n=1)
    raise UsageError(f"--score {score!r} is not a score; use one of {', '.join(SCORES)}"
                     + (f" (did you mean {hint[0]!r}?)" if hint else ""))
  return dataclasses.replace(study, score=score)


def with_metric(study: Study, metric: str | None, source: str = "--metric") -> Study:
  """Set the scored metric (default val_loss); `source` names where it came from in errors.

  Raises:
    UsageError: a config of the study does not record that metric.
  """
  metric = metric or "val_loss"
  for cfg in study.configs:
    known = metrics.history_keys(cfg)
    if metric not in known:
      hint = difflib.get_close_matches(metric, known, n=1)
      extra = f"; did you mean {hint[0]!r}" if hint else ""
      base = metric.removeprefix("val_")
      recordable = base in METRICS and base not in cfg.train.metrics and not (
          base == "accuracy" and cfg.model.output_activation == "linear")  # accuracy needs a classifier
      record = f"; record it with --set train.metrics={','.join((*cfg.train.metrics, base))}" if recordable else ""
      raise UsageError(f"{source} {metric!r} is not recorded by config {cfg.config_id}{extra}. "
                       f"Its history keys: {', '.join(known)}{record}")
  return dataclasses.replace(study, metric=metric)
