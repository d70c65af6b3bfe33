"""jaxlstm: LSTM experiments repeated over many seeds, every repeat of a config in one compiled call.

Public API (DESIGN §9): `Config`, `problems.make`, `fit`, `fit_many`, `make_train`,
`Ensemble`, `early_stopping.replay`, `stats.*`, `load_run`; the CLI is
`python -m jaxlstm.sweep`.

`import jaxlstm` loads no jax: the engine's names are imported on first use, so
`jaxlstm.stats`, `jaxlstm.diagnose`, `jaxlstm.plots` and `jaxlstm.report` stay
light in analysis scripts.

Words: a *repeat* is one training run of a config; a *member* is one lane of a
compiled call (a config x repeat pair); the *seed* is the run's integer.
"""
import importlib

from jaxlstm.config import Config, ConfigError, expand_grid

__version__ = "0.1.0"

__all__ = [
    "Config", "ConfigError", "Ensemble", "early_stopping", "expand_grid", "fit", "fit_many",
    "load_run", "make_train", "plan", "problems", "stats",
]

# name -> (module, attribute or None for the module itself)
_LAZY = {
    "fit": ("jaxlstm.ensemble", "fit"),
    "fit_many": ("jaxlstm.ensemble", "fit_many"),
    "plan": ("jaxlstm.ensemble", "plan"),
    "Ensemble": ("jaxlstm.ensemble", "Ensemble"),
    "make_train": ("jaxlstm.train", "make_train"),
    "load_run": ("jaxlstm.store", "load_run"),
}
_SUBMODULES = ("callbacks", "compiled", "data", "devices", "diagnose", "distributed", "early_stopping", "ensemble",
               "keys", "metrics", "models", "networks", "optim", "plots", "prep", "problems", "report", "runner",
               "stats", "store", "study", "tables", "train")


def __getattr__(name):
  if name in _LAZY:
    module, attribute = _LAZY[name]
    return getattr(importlib.import_module(module), attribute)
  if name in _SUBMODULES:
    return importlib.import_module(f"jaxlstm.{name}")
  raise AttributeError(f"module 'jaxlstm' has no attribute {name!r}")
