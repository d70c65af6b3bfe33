"""jaxlstm: repeated-seed LSTM experiments, every repeat of a config in one compiled call.

Public API (DESIGN §9): `Config`, `problems.make`, `fit`, `Ensemble`,
`early_stopping.replay`, `stats.*`, `load_run`; the CLI is `python -m jaxlstm.sweep`.
"""
from jaxlstm import early_stopping, problems
from jaxlstm.config import Config, ConfigError, expand_grid
from jaxlstm.ensemble import Ensemble, fit, fit_many, plan

__version__ = "0.1.0"

__all__ = [
    "Config", "ConfigError", "Ensemble", "early_stopping", "expand_grid", "fit", "fit_many",
    "load_run", "plan", "problems", "stats",
]


def __getattr__(name):
  # Lazy: `stats` pulls scipy/pandas and `load_run` pulls orbax; scripts that
  # only train should not pay for them at import.
  import importlib
  if name in ("stats", "diagnose", "plots", "prep", "report", "store"):
    return importlib.import_module(f"jaxlstm.{name}")
  if name == "load_run":
    return importlib.import_module("jaxlstm.store").load_run
  raise AttributeError(f"module 'jaxlstm' has no attribute {name!r}")
