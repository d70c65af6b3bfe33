"""Hyper-parameter search: Optuna's ask/tell over a `Space`, each trial scored over its repeats.

Tuning tools score a trial with one training run, so their best is often a lucky run.
Here a trial is a config trained with all its repeats (in one vectorised call with the
other trials of its batch), and Optuna is told a statistic of those repeats (`objective`).
Training stays outside: `run_search` calls `evaluate_batch(list of params) -> results`.

The study lives in SQLite inside the results folder (`<folder>/optuna.db`) and a rerun
of the same command resumes it:
* Trials left RUNNING by a killed process are finished, not trained again where
  avoidable: a result stored on the trial (it is stored before the trial is told), a
  completed trial with the same params (a config's repeats are deterministic, so its
  result is reused, not retrained), or the caller's `known(params)` hook (the results
  folder: configs a killed batch had finished) answer first; only the rest is evaluated.
  A trial killed before all its params were drawn never trained: it is marked FAIL.
* The sampler is re-seeded before each batch from (seed, trials so far), so a resumed
  search proposes what the uninterrupted one would have.
One process writes a study at a time (RUNNING trials are taken as orphans).

Diverged repeats are failures (see `objective`). numpy/pandas only at import; optuna
is imported inside the functions that need it (an optional extra).
"""
from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from jaxlstm import stats
from jaxlstm.config import ConfigError
from jaxlstm.racing import MAX_DIVERGED
from jaxlstm.space import Space, point_key, require_optuna

OBJECTIVES = ("mean", "median", "iqm", "ucb")
SAMPLERS = ("tpe", "random", "grid")
DB_NAME = "optuna.db"
TRIALS_CSV = "trials.csv"
_SETTINGS_ATTR = "jaxlstm_search"   # study user attr: what the study was made with
_RESULT_ATTR = "jaxlstm_result"     # trial user attr: its scores, stored before it is told
_REUSED_ATTR = "jaxlstm_reused_from"


def _worst(higher_is_better: bool) -> float:
  return -math.inf if higher_is_better else math.inf


def objective(scores: Sequence[float], diverged: Sequence[bool] | None = None, *,
              kind: str = "mean", higher_is_better: bool = False,
              max_diverged: float = MAX_DIVERGED, confidence: float = 0.95) -> float:
  """One number for a trial's repeats, in the metric's direction.

  Diverged repeats (flagged, NaN or ±inf) are failures:
  * a trial with more than `max_diverged` of its repeats diverged (or none finite)
    failed: its objective is the worst possible value (+inf for a loss, -inf for
    higher-is-better), which Optuna keeps as a complete, worst trial, so TPE learns
    to avoid the region instead of forgetting it as it would a FAIL;
  * otherwise each diverged repeat is scored as the trial's worst finite score, which
    drags the mean and widens the bound: failures cost, they do not vanish.

  Kinds: "mean"; "median"; "iqm" (mean of the middle 50%, `stats.iqm`); "ucb", the
  end of the two-sided t-interval of the mean on the bad side (the summary's
  `ci_high` for a loss, `ci_low` for higher-is-better: mean ± t_{(1+c)/2, n−1}·s/√n),
  so a trial wins by being good *and* reliable.

  Args:
    scores: `[repeats]` final scores.
    diverged: optional `[repeats]` bool mask.
    kind: one of OBJECTIVES.
    higher_is_better: direction (False: a loss).
    max_diverged: share of diverged repeats above which the trial failed.
    confidence: level of the "ucb" interval.

  Returns:
    The objective, finite unless the trial failed.

  Raises:
    ConfigError: on an unknown kind, or "ucb" with fewer than 2 repeats.
  """
  if kind not in OBJECTIVES:
    hint = difflib.get_close_matches(str(kind), OBJECTIVES, n=1)
    extra = f" Did you mean {hint[0]!r}?" if hint else ""
    raise ConfigError(f"objective = {kind!r} is not allowed: expected one of "
                      f"{', '.join(OBJECTIVES)}.{extra}")
  values = np.array(scores, dtype=float).ravel()
  failed = ~np.isfinite(values)
  if diverged is not None:
    failed |= np.asarray(diverged, dtype=bool).ravel()
  if kind == "ucb" and values.size < 2:
    raise ConfigError(f"objective = 'ucb' needs at least 2 repeats per trial, got {values.size}; "
                      "raise --repeats or use --objective mean.")
  if not values.size or failed.all() or failed.sum() > max_diverged * values.size:
    return _worst(higher_is_better)
  finite = values[~failed]
  values = np.where(failed, finite.min() if higher_is_better else finite.max(), values)
  if kind == "mean":
    return float(np.mean(values))
  if kind == "median":
    return float(np.median(values))
  if kind == "iqm":
    return stats.iqm(values)
  summary = stats.summarize(values, confidence=confidence, higher_is_better=higher_is_better)
  bound = summary.ci_low if higher_is_better else summary.ci_high
  return float(bound) if math.isfinite(bound) else _worst(higher_is_better)


@dataclasses.dataclass(frozen=True)
class TrialResult:
  """What a trial's training gave.

  Attributes:
    scores: `[repeats]` final scores (NaN where a repeat diverged).
    diverged: `[repeats]` bool.
    elimination_round: the racing look that dropped it, None when not raced out.
    configs: ids of the configs it trained (one per grid point), for tables that link them.
  """
  scores: tuple[float, ...]
  diverged: tuple[bool, ...]
  elimination_round: int | None = None
  configs: tuple[str, ...] = ()

  def __post_init__(self):
    scores = tuple(float(s) for s in np.asarray(self.scores, dtype=float).ravel())
    diverged = tuple(bool(d) for d in np.asarray(self.diverged, dtype=bool).ravel())
    if len(scores) != len(diverged):
      raise ValueError(f"a trial result needs one diverged flag per score, got {len(scores)} "
                       f"scores and {len(diverged)} flags.")
    object.__setattr__(self, "configs", tuple(str(c) for c in self.configs))
    object.__setattr__(self, "scores", scores)
    object.__setattr__(self, "diverged", tuple(d or not math.isfinite(s) for s, d in zip(scores, diverged)))

  @classmethod
  def of(cls, value: Any) -> TrialResult:
    """Accept a TrialResult, `(scores, diverged)` or `(scores, diverged, elimination_round)`."""
    if isinstance(value, TrialResult):
      return value
    if isinstance(value, tuple) and len(value) in (2, 3):
      return cls(*value)
    raise ValueError(f"expected a TrialResult or (scores, diverged), got {type(value).__name__}.")

  @property
  def repeats(self) -> int:
    return len(self.scores)

  def to_json(self) -> dict[str, Any]:
    return {"scores": [s if math.isfinite(s) else None for s in self.scores],
            "diverged": list(self.diverged), "elimination_round": self.elimination_round,
            "configs": list(self.configs)}

  @classmethod
  def from_json(cls, d: Mapping[str, Any]) -> TrialResult:
    return cls(tuple(math.nan if s is None else s for s in d["scores"]), tuple(d["diverged"]),
               d.get("elimination_round"), tuple(d.get("configs") or ()))


EvaluateBatch = Callable[[list[dict[str, Any]]], Sequence[Any]]
Known = Callable[[dict[str, Any]], Any]


@dataclasses.dataclass(frozen=True)
class SearchResult:
  """Where a search stands after `run_search`.

  Attributes:
    storage: the optuna storage URL (`sqlite:///<folder>/optuna.db`).
    study_name: the study's name in it.
    completed: complete trials in the study.
    evaluated: params this call passed to `evaluate_batch`.
    reused: trials this call finished without training (stored, repeated or known).
    best_trial, best_params, best_value: the best complete trial (None if none);
      params typed, `{dotted field: value}`.
    trials_csv: path of the table written, or None.
  """
  storage: str
  study_name: str
  completed: int
  evaluated: int
  reused: int
  best_trial: int | None
  best_params: dict[str, Any] | None
  best_value: float | None
  trials_csv: Path | None


def storage_url(storage_path: str | os.PathLike) -> str:
  """`sqlite:///<folder>/optuna.db` for a results folder."""
  return f"sqlite:///{(Path(storage_path) / DB_NAME).resolve()}"


@contextlib.contextmanager
def _quiet(optuna, enabled: bool):
  # Optuna logs every trial at INFO; the CLI prints its own progress. Restore on exit.
  before = optuna.logging.get_verbosity()
  if enabled:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
  try:
    yield
  finally:
    optuna.logging.set_verbosity(before)


def _check_choice(what: str, value: Any, options: Sequence[str]) -> None:
  if value not in options:
    hint = difflib.get_close_matches(str(value), options, n=1)
    extra = f" Did you mean {hint[0]!r}?" if hint else ""
    raise ConfigError(f"{what} = {value!r} is not allowed: expected one of {', '.join(options)}.{extra}")


def _check_count(what: str, value: Any, minimum: int) -> None:
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    raise ConfigError(f"{what} = {value!r} is not allowed: expected an integer >= {minimum}.")


def _check_settings(study, settings: dict, space: Space, folder: Path) -> None:
  """Record what the study is searched with, or refuse a rerun that changes it."""
  stored = study.user_attrs.get(_SETTINGS_ATTR)
  if stored is None:
    study.set_user_attr(_SETTINGS_ATTR, settings)
    return
  difference = space.difference(stored["space"])
  if difference is None:
    for key, value in settings.items():
      if key != "space" and stored.get(key) != value:
        difference = f"{key} was {stored.get(key)!r}, now {value!r}"
        break
  if difference is not None:
    raise ConfigError(f"{folder} holds a search made differently ({difference}); "
                      "use a new folder or --overwrite.")


def _sampler(optuna, kind: str, seed: int, n_trials: int, grid: dict | None):
  # Re-seeded per batch from (seed, trials so far): a resumed search asks what the
  # uninterrupted one would have, whatever the process's sampler state was.
  batch_seed = int(np.random.SeedSequence([seed, n_trials]).generate_state(1)[0])
  if kind == "tpe":
    return optuna.samplers.TPESampler(seed=batch_seed, constant_liar=True)
  if kind == "random":
    return optuna.samplers.RandomSampler(seed=batch_seed)

  class _Grid(optuna.samplers.GridSampler):
    # GridSampler.after_trial only calls study.stop() once the grid is used up, which
    # raises outside study.optimize(); run_search stops at the grid's size itself.
    def after_trial(self, study, trial, state, values):
      pass

  # One seed for the whole study: GridSampler's seed also orders the grid (grid ids).
  return _Grid(grid, seed=seed)


def _set_trial_attr(study, trial, key: str, value: Any) -> None:
  # Optuna has no public setter for a FrozenTrial another process left RUNNING;
  # the storage call is what Trial.set_user_attr runs.
  study._storage.set_trial_user_attr(trial._trial_id, key, value)


class _Runner:
  """One `run_search` call: resolves trials from storage, repeats, `known` or training."""

  def __init__(self, study, space, evaluate_batch, known, score, trials_csv):
    self.study, self.space, self.evaluate_batch, self.known = study, space, evaluate_batch, known
    self.score, self.trials_csv = score, trials_csv
    self.state = require_optuna().trial.TrialState
    self.evaluated = self.reused = 0
    # params key -> (result, first trial with it): a config's repeats are deterministic.
    self.done: dict[str, tuple[TrialResult, int]] = {}
    for t in study.get_trials(deepcopy=False, states=(self.state.COMPLETE,)):
      if _RESULT_ATTR in t.user_attrs:  # the settings check made sure the space is the same
        self.done.setdefault(point_key(space.from_optuna_params(t.params)),
                             (TrialResult.from_json(t.user_attrs[_RESULT_ATTR]), t.number))

  def finish(self, trials: Sequence[Any]) -> None:
    """Tell every trial in `trials` its objective, training only params nobody has results for.

    Sources, first that answers: the trial's stored result; a complete trial with the
    same params (or an earlier trial of this batch); `known(params)`; `evaluate_batch`.
    """
    study = self.study
    resolved: dict[int, TrialResult] = {}
    reused_from: dict[int, int] = {}
    todo: dict[str, tuple[int, dict]] = {}   # key -> (first trial number, params), trained once
    keyed = []
    for trial in trials:
      try:
        params = self.space.from_optuna_params(trial.params)
      except ConfigError:  # killed between ask() and its last suggest: never trained
        study.tell(trial.number, state=self.state.FAIL)
        continue
      key = point_key(params)
      keyed.append((trial, key))
      if _RESULT_ATTR in trial.user_attrs:  # trained and stored, killed before tell
        resolved[trial.number] = TrialResult.from_json(trial.user_attrs[_RESULT_ATTR])
      elif key in self.done:
        resolved[trial.number], reused_from[trial.number] = self.done[key]
      elif key in todo:
        reused_from[trial.number] = todo[key][0]
      elif self.known is not None and (found := self.known(dict(params))) is not None:
        resolved[trial.number] = TrialResult.of(found)
      else:
        todo[key] = (trial.number, params)
    fresh: dict[str, TrialResult] = {}
    if todo:
      results = list(self.evaluate_batch([dict(params) for _, params in todo.values()]))
      if len(results) != len(todo):
        raise ValueError(f"evaluate_batch returned {len(results)} results for {len(todo)} params.")
      fresh = {key: TrialResult.of(r) for key, r in zip(todo, results)}
      self.evaluated += len(fresh)
    self.reused += len(keyed) - len(fresh)
    # Store every result before telling any trial: a kill in between leaves RUNNING
    # trials that carry their result, and the rerun tells them without training.
    for trial, key in keyed:
      result = resolved.setdefault(trial.number, fresh.get(key))
      if _RESULT_ATTR not in trial.user_attrs:
        _set_trial_attr(study, trial, _RESULT_ATTR, result.to_json())
      if trial.number in reused_from:
        _set_trial_attr(study, trial, _REUSED_ATTR, reused_from[trial.number])
    for trial, key in keyed:
      study.tell(trial.number, self.score(resolved[trial.number]))
      self.done.setdefault(key, (resolved[trial.number], trial.number))
    if self.trials_csv is not None:
      write_trials_csv(study, self.trials_csv)


def run_search(space: Space, evaluate_batch: EvaluateBatch, *, trials: int,
               storage_path: str | os.PathLike, sampler: str = "tpe", batch: int = 1,
               study_name: str = "search", seed: int = 0, objective_kind: str = "mean",
               higher_is_better: bool = False, grid_points: int | None = None,
               known: Known | None = None, max_diverged: float = MAX_DIVERGED,
               trials_csv: bool = True, quiet: bool = True) -> SearchResult:
  """Search `space` until the study holds `trials` complete trials, `batch` at a time.

  Each batch: ask `batch` trials, turn their params into `{dotted field: value}`,
  call `evaluate_batch(params_list)` once for the params nobody has results for, and
  tell each trial `objective(...)` of its result. Rerunning with the same folder
  resumes (see the module docstring); a larger `trials` extends the search.

  Args:
    space: the search space.
    evaluate_batch: `list[params] -> list[TrialResult | (scores, diverged)]`, same order.
    trials: complete trials wanted in the study (a grid stops at its size).
    storage_path: the results folder; the study is `<folder>/optuna.db`.
    sampler: "tpe" (TPESampler, constant liar for batches), "random" or "grid".
    batch: trials asked per `evaluate_batch` call.
    study_name: name of the study in the database.
    seed: sampler seed (re-derived per batch, see `_sampler`).
    objective_kind: see `objective`.
    higher_is_better: direction: Optuna maximises when True.
    grid_points: values per range dimension for "grid" (`Space.grid`).
    known: optional `params -> TrialResult | (scores, diverged) | None`, results the
      caller already has (a resumed folder's finished configs); consulted before training.
    max_diverged: see `objective`.
    trials_csv: write `<folder>/trials.csv` after every batch.
    quiet: silence optuna's per-trial INFO logs during the call.

  Returns:
    A `SearchResult`.

  Raises:
    ConfigError: bad settings, or a folder whose study was made with other settings.
    ImportError: optuna missing (names `pip install -e ".[search]"`).
  """
  _check_choice("sampler", sampler, SAMPLERS)
  _check_choice("objective", objective_kind, OBJECTIVES)
  _check_count("trials", trials, 1)
  _check_count("batch", batch, 1)
  _check_count("seed", seed, 0)
  if not isinstance(space, Space):
    raise ConfigError(f"run_search needs a Space, got {type(space).__name__}; use Space.from_mapping.")
  optuna = require_optuna()
  grid = space.grid_labels(grid_points) if sampler == "grid" else None
  target = min(trials, math.prod(len(v) for v in grid.values())) if grid else trials
  folder = Path(storage_path)
  folder.mkdir(parents=True, exist_ok=True)
  settings = {"space": space.spec(), "sampler": sampler, "objective": objective_kind,
              "higher_is_better": bool(higher_is_better), "seed": seed,
              "grid_points": grid_points if sampler == "grid" else None,
              "max_diverged": max_diverged}
  score = lambda r: objective(r.scores, r.diverged, kind=objective_kind,
                              higher_is_better=higher_is_better, max_diverged=max_diverged)
  url = storage_url(folder)
  with _quiet(optuna, quiet):
    study = optuna.create_study(storage=url, study_name=study_name, load_if_exists=True,
                                direction="maximize" if higher_is_better else "minimize")
    _check_settings(study, settings, space, folder)
    csv_path = folder / TRIALS_CSV if trials_csv else None
    runner = _Runner(study, space, evaluate_batch, known, score, csv_path)
    state = optuna.trial.TrialState
    orphans = study.get_trials(deepcopy=False, states=(state.RUNNING,))
    if orphans:
      runner.finish(orphans)
    distributions = space.to_optuna()
    while (done := len(study.get_trials(deepcopy=False, states=(state.COMPLETE,)))) < target:
      study.sampler = _sampler(optuna, sampler, seed, len(study.get_trials(deepcopy=False)), grid)
      runner.finish([study.ask(distributions) for _ in range(min(batch, target - done))])
    if csv_path is not None and not csv_path.exists():
      write_trials_csv(study, csv_path)
    complete = study.get_trials(deepcopy=False, states=(state.COMPLETE,))
    best = study.best_trial if complete else None
  return SearchResult(storage=url, study_name=study_name, completed=len(complete),
                      evaluated=runner.evaluated, reused=runner.reused,
                      best_trial=None if best is None else best.number,
                      best_params=None if best is None else space.from_optuna_params(best.params),
                      best_value=None if best is None else best.value, trials_csv=csv_path)


def open_study(storage_path: str | os.PathLike, study_name: str = "search"):
  """Load the study of a results folder (for reports), without changing it.

  Raises:
    ConfigError: when the folder has no such study.
  """
  optuna = require_optuna()
  path = Path(storage_path) / DB_NAME
  if not path.is_file():
    raise ConfigError(f"{storage_path} has no {DB_NAME}; run the search there first.")
  with _quiet(optuna, True):
    try:
      return optuna.load_study(study_name=study_name, storage=storage_url(storage_path))
    except KeyError:
      raise ConfigError(f"{path} has no study named {study_name!r}.") from None


TRIAL_COLUMNS = ("trial", "state", "objective", "repeats", "n_diverged", "elimination_round",
                 "reused_from", "configs")


def trials_table(study) -> pd.DataFrame:
  """One row per trial: number, state, objective, repeats used, diverged repeats,
  racing elimination round (empty unless raced out), the trial it reused, the ids of
  the configs it trained (space-separated), then one column per searched field
  (dotted names), in trial order."""
  rows = []
  for t in study.get_trials(deepcopy=False):
    result = t.user_attrs.get(_RESULT_ATTR)
    rows.append({
        "trial": t.number, "state": t.state.name, "objective": t.value,
        "repeats": None if result is None else len(result["scores"]),
        "n_diverged": None if result is None else int(sum(result["diverged"])),
        "elimination_round": None if result is None else result.get("elimination_round"),
        "reused_from": t.user_attrs.get(_REUSED_ATTR),
        "configs": None if result is None else " ".join(result.get("configs") or ()),
        **t.params,  # optuna's values; a tuple-valued choice shows as its text, "mse/mae"
    })
  frame = pd.DataFrame(rows)
  if frame.empty:
    return pd.DataFrame(columns=list(TRIAL_COLUMNS))
  for column in ("repeats", "n_diverged", "elimination_round", "reused_from"):
    frame[column] = frame[column].astype("Int64")
  return frame


def write_trials_csv(study, path: str | os.PathLike) -> Path:
  """Write `trials_table(study)` to `path` atomically (temp file, then rename)."""
  path = Path(path)
  with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp",
                                   delete=False, newline="") as tmp:
    trials_table(study).to_csv(tmp, index=False)
  os.replace(tmp.name, path)
  return path
