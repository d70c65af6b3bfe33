"""A study's search space: where it comes from, how it meets the grid, the configs its points make.

A space comes from an experiment module's `get_space()`, a config file's `[space]`
table and the command line's `--space KEY=SPEC` (later sources replace a field given
by an earlier one). Fields fixed with `--set` stay fixed (they leave the space); a
field of the study's own grid that the space searches leaves the grid; the
remaining grid, one value or several, is crossed with every point of the space:
each point is trained on every grid point.

`--random N` with a space draws N points (`Space.sample`, seeded by `--seed`): the
first k of N draws are the same for every N >= k, so `--random 20` keeps the configs
`--random 10` trained. No jax, no optuna.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxlstm import store
from jaxlstm.config import Config, ConfigError
from jaxlstm.space import Dimension, Space, parse_space_args

# Two ways to give the recurrent widths (as `study._WIDTH_ALTERNATIVES`).
_WIDTHS = {"model.units": ("model.cells", "model.layers"), "model.cells": ("model.units",),
           "model.layers": ("model.units",)}


class SpaceError(ConfigError):
  """Bad space input on the command line: one line, exit status 2."""


def override_value(key: str, value: Any) -> Any:
  # Problem options are parsed as JSON by Config.override: keep a string a string.
  if key.startswith("data.options.") and isinstance(value, str):
    return json.dumps(value)
  return value


def resolve_space(*, module_space: Any = None, file_space: Mapping | None = None,
                  cli: Sequence[str] = (), cli_grid: Sequence[str] = (),
                  sets: Sequence[str] = ()) -> Space | None:
  """Merge the space's sources into one `Space` (None when no source gives one).

  Args:
    module_space: what an experiment's `get_space()` returned.
    file_space: a config file's `[space]` table.
    cli: the `--space KEY=SPEC` texts.
    cli_grid: fields given with `--grid` (a field both searched and gridded is refused).
    sets: fields fixed with `--set` / `--epochs` (they leave the space).

  Raises:
    ConfigError: a malformed space, or a `--space` field also in `--grid` or `--set`.
  """
  dims: dict[str, Dimension] = {}
  for source in (module_space, file_space):
    if source is not None:
      dims.update({d.name: d for d in Space.from_mapping(source).dimensions})
  given = parse_space_args(list(cli))
  for name in given:
    if name in cli_grid:
      raise SpaceError(f"{name} is given both in --space and --grid; keep one (a grid with several "
                       "values is crossed with every trial, a space is searched).")
    if name in sets:
      raise SpaceError(f"{name} is given both in --space and --set; keep one (--set fixes a field).")
  dims.update(given)
  for name in list(dims):
    fixed = name in sets or name in cli_grid or any(o in sets or o in cli_grid for o in _WIDTHS.get(name, ()))
    if fixed:  # the study's own space over a field the command line fixes: the command line wins
      dims.pop(name)
  return Space(tuple(dims.values())) if dims else None


def trim_grid(grid: dict[str, list[Any]], space: Space) -> dict[str, list[Any]]:
  """The study's grid without the fields the space searches (or gives the widths of another way)."""
  searched = set(space.names)
  for name in space.names:
    searched.update(_WIDTHS.get(name, ()))
  return {k: v for k, v in grid.items() if k not in searched}


def point_configs(base: Config, point: Mapping[str, Any], grid_configs: Sequence[Config]) -> list[Config]:
  """The configs of one point of the space: each grid config with the point's values.

  Args:
    base: the study's base config (used when the grid is empty).
    point: `{dotted field: value}`.
    grid_configs: the grid's configs (`expand_grid(base, grid)`), or `[base]`.
  """
  changes = {k: override_value(k, v) for k, v in point.items()}
  return [cfg.override(changes) for cfg in (grid_configs or [base])]


def draw_configs(space: Space, n: int, seed: int, base: Config,
                 grid_configs: Sequence[Config]) -> list[Config]:
  """`--random N` from a space: N points (prefix-stable in N), each crossed with the grid.

  Raises:
    ConfigError: the space holds fewer than N distinct points, or two points make one config.
  """
  points = space.sample(n, np.random.default_rng(seed))
  configs = [cfg for point in points for cfg in point_configs(base, point, grid_configs)]
  if len({c.config_id for c in configs}) != len(configs):
    raise ConfigError("two draws from the space make the same config (a value the config rounds or "
                      "ignores); widen the space or draw fewer.")
  return configs


def drawn_values(space: Space, configs: Sequence[Config]) -> dict[str, list[Any]]:
  """Each searched field -> its values among `configs`, in order of first appearance (labels, tables)."""
  out = {}
  for name in space.names:
    seen: dict[str, Any] = {}
    for cfg in configs:
      value = store.config_value(cfg, name)
      seen.setdefault(repr(value), value)
    out[name] = list(seen.values())
  return out
