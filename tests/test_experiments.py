"""The study modules in experiments/: interface, docstrings, configs, and a tiny CLI run of each.

Every study compiles one program per static-shape group (several seconds each on a
2-core CPU), so only three cheap studies run through the CLI by default; the others
are marked slow (`pytest -m slow tests/test_experiments.py`).
"""
import importlib

import jax
import pandas as pd
import pytest

from jaxlstm import sweep
from jaxlstm import study as study_lib
from jaxlstm.config import Config, check_field, expand_grid
from jaxlstm.data import check_compatible, resolve

STUDIES = [
    "activation", "architecture", "batch_size", "cells", "dropout", "early_stopping", "encoding", "fit_diagnosis",
    "gru_vs_lstm", "init", "layers", "learning_rate", "model_type", "optimizer", "regularization",
    "repeats", "scaling", "sequence_length", "variance_sources",
]
# Cheap to compile and together they cover a traced grid (one compile for five
# configs), a study with no grid, and static groups with a partial last batch.
FAST = {"learning_rate", "repeats", "batch_size", "optimizer"}
# What a study needs that jaxlstm does not have yet (nothing at the moment).
NEEDS_CLI: dict[str, str] = {}
NEEDS_CONFIG: dict[str, str] = {}


def study_configs(module) -> list[Config]:
  """The configs a study trains: its explicit list, or its grid over its base config."""
  if hasattr(module, "get_configs"):
    return module.get_configs()
  return expand_grid(module.get_config(), module.get_grid())


def _params(names, needs, *, slow_unless_fast=False):
  params = []
  for name in names:
    marks = []
    if name in needs:
      marks.append(pytest.mark.xfail(reason=needs[name], strict=False))
    if slow_unless_fast and name not in FAST:
      marks.append(pytest.mark.slow)
    params.append(pytest.param(name, marks=marks, id=name))
  return params


def test_list_experiments_lists_every_study(capsys):
  assert study_lib.experiment_names() == sorted(STUDIES), "add new studies to STUDIES in this file"
  assert sweep.main(["--list-experiments"]) == 0
  lines = capsys.readouterr().out.splitlines()
  listed = {line.split()[0]: line for line in lines}
  assert sorted(listed) == sorted(STUDIES)
  for name in STUDIES:
    first = importlib.import_module(f"jaxlstm.experiments.{name}").__doc__.strip().splitlines()[0]
    assert listed[name].split(None, 1)[1] == first


@pytest.mark.parametrize("name", _params(STUDIES, NEEDS_CONFIG))
def test_study_module_interface_docstring_and_configs(name):
  module = importlib.import_module(f"jaxlstm.experiments.{name}")
  doc = module.__doc__ or ""
  assert doc.strip().splitlines()[0].strip(), "the first docstring line is the --list-experiments summary"
  assert "What it shows" in doc and "Expected result" in doc
  assert "\nCommand:\n" in doc
  command = f"python -m jaxlstm.sweep --experiment {name} --repeats"
  assert command in doc or (name == study_lib.DEFAULT_EXPERIMENT and "python -m jaxlstm.sweep --repeats" in doc)
  assert isinstance(module.get_config(), Config)
  assert hasattr(module, "get_grid") != hasattr(module, "get_configs"), "define a grid or a list, not both"
  if hasattr(module, "get_grid"):
    grid = module.get_grid()
    assert isinstance(grid, dict) and all(isinstance(v, list) and v for v in grid.values())
    for key in grid:
      check_field(key)
  configs = study_configs(module)
  assert configs and all(isinstance(c, Config) for c in configs)
  assert len({c.config_id for c in configs}) == len(configs)
  for config in configs:  # data generated and checked against the model, as the planner does
    check_compatible(config, resolve(config))


@pytest.mark.timeout(1200)
@pytest.mark.parametrize("name", _params(STUDIES, NEEDS_CLI, slow_unless_fast=True))
def test_study_runs_through_the_cli(name, tmp_path, capsys, restore_cache_flags):
  args = ["--experiment", name, "--repeats", "2", "--epochs", "2",
          "--out", str(tmp_path / name), "--quiet", "--no-cache"]
  assert sweep.main(args) == 0, capsys.readouterr().err
  study = study_lib.make_study(sweep.build_parser().parse_args(args))
  module = importlib.import_module(f"jaxlstm.experiments.{name}")
  grid = module.get_grid() if hasattr(module, "get_grid") else {}
  if "train.epochs" not in grid:  # --epochs replaces a grid over epochs
    assert len(study.configs) == len(study_configs(module))
  scores = pd.read_csv(tmp_path / name / "scores.csv", dtype={"config_id": str})
  assert len(scores) == 2 * len(study.configs)
  assert set(scores["config_id"]) == {c.config_id for c in study.configs}
  assert (tmp_path / name / "report.md").is_file()
