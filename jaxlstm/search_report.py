"""The "Search" section of report.md and its plots, from `trials.csv` and `scores.csv` (no jax).

`trials.csv` is written by `jaxlstm.search` only; this module reads it. Parameter
importances come from Optuna (`optuna.importance.get_param_importances` over the
folder's `optuna.db`) when optuna is installed and the study has enough trials; any
failure there leaves them out with a line saying so.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from jaxlstm.search import TRIALS_CSV

TOP = 10


def read_trials(run_dir: str | Path) -> pd.DataFrame | None:
  """trials.csv as a frame, None when the folder holds no search."""
  path = Path(run_dir) / TRIALS_CSV
  if not path.is_file():
    return None
  return pd.read_csv(path, dtype={"configs": str})


def trial_repeats(trials: pd.DataFrame, scores: pd.DataFrame, column: str) -> dict[int, np.ndarray]:
  """Trial number -> the scores of its configs' repeats (scores.csv's `column`), NaN where diverged."""
  by_config = {c: g for c, g in scores.groupby("config_id")} if column in scores else {}
  out = {}
  for trial, ids in zip(trials["trial"], trials.get("configs", pd.Series([None] * len(trials)))):
    parts = [by_config[c] for c in str(ids or "").split() if c in by_config]
    if parts:
      frame = pd.concat(parts)
      values = frame[column].to_numpy(float)
      out[int(trial)] = np.where(frame["diverged"].astype(bool).to_numpy(), np.nan, values)
  return out


def params_of(trials: pd.DataFrame, space: Mapping[str, Any] | None) -> list[str]:
  """The searched fields: the space's dimensions, in order (trials.csv's columns after the fixed ones)."""
  if space:
    return [d["name"] for d in space["dimensions"] if d["name"] in trials]
  return []


def importances(run_dir: str | Path) -> dict[str, float] | str:
  """Optuna's parameter importances (PED-ANOVA), or the reason there are none."""
  try:
    import optuna

    from jaxlstm import search
    study = search.open_study(run_dir)
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < 4:
      return f"too few complete trials ({len(complete)}) for parameter importances"
    # PED-ANOVA: no scikit-learn (fANOVA, Optuna's default, needs it) and no randomness.
    evaluator = optuna.importance.PedAnovaImportanceEvaluator()
    return dict(optuna.importance.get_param_importances(study, evaluator=evaluator))
  except Exception as e:  # optional and derived: never costs the report
    return f"parameter importances not computed ({type(e).__name__}: {' '.join(str(e).split())[:120]})"


def section(run_dir: Path, manifest: Mapping[str, Any], scores: pd.DataFrame | None, *,
            higher_is_better: bool, score_words: str, save: Callable[[str, Callable[[], Any]], str | None],
            table: Callable[[Sequence[str], Sequence[Sequence[Any]]], list[str]],
            image: Callable[[str | None, str, str], list[str]], code: Callable[[Any], str]) -> list[str]:
  """The report's "Search" lines (empty when the folder holds no search); draws its plots with `save`."""
  trials = read_trials(run_dir)
  if trials is None:
    return []
  from jaxlstm import plots, search
  study = manifest["study"]
  settings = study.get("search") or {}
  names = params_of(trials, study.get("space"))
  complete = trials[(trials["state"] == "COMPLETE") & np.isfinite(trials["objective"].astype(float))]
  url = search.storage_url(run_dir)
  lines = ["## Search", "",
           f"- {settings.get('sampler', 'n/a')} search, {len(trials)} trials ({len(complete)} complete with a "
           f"finite objective); objective: the {settings.get('objective', 'mean')} of the {score_words} over "
           f"each trial's repeats ({'higher' if higher_is_better else 'lower'} is better; diverged repeats count "
           "as failures)",
           f"- every trial in `trials.csv`; the Optuna study in `optuna.db`: {code('optuna-dashboard ' + url)}",
           ""]
  if complete.empty:
    return lines + ["No trial has completed yet.", ""]
  ranked = complete.sort_values("objective", ascending=not higher_is_better)
  best = ranked.iloc[0]
  lines += [f"Best trial: {int(best['trial'])}, objective {float(best['objective']):.4g}, at "
            + ", ".join(f"{n} = {best[n]}" for n in names) + f" (config {code(best.get('configs'))}).", ""]
  columns = ["trial", "objective", "repeats", "n_diverged", "elimination_round", *names]
  lines += [f"The {min(TOP, len(ranked))} best trials:", ""]
  lines += table(columns, [[_cell(row[c]) for c in columns] for _, row in ranked.head(TOP).iterrows()])
  ylabel = f"{settings.get('objective', 'mean')} {score_words}"
  path = save("search_progress.png",
              lambda: plots.search_progress(trials, higher_is_better=higher_is_better, ylabel=ylabel))
  lines += image(path, "objective by trial, best so far", "The search progress plot")
  if names and scores is not None:
    column = f"{study.get('score') or 'final'}_{study.get('metric') or 'val_loss'}"
    repeats = trial_repeats(trials, scores, column)
    logs = {d["name"]: bool(d.get("log")) for d in study["space"]["dimensions"]}
    path = save("search_params.png", lambda: _draw_params(trials, repeats, names, logs, ylabel))
    lines += image(path, "objective against each searched field", "The parameter plot")
  found = importances(run_dir)
  if isinstance(found, dict):
    lines += ["Parameter importances (Optuna, PED-ANOVA):", ""]
    lines += table(["field", "importance"], [[k, float(v)] for k, v in found.items()])
  else:
    lines += [f"({found}.)", ""]
  return lines


def race_section(manifest: Mapping[str, Any], labels: Mapping[str, str],
                 table: Callable[[Sequence[str], Sequence[Sequence[Any]]], list[str]],
                 code: Callable[[Any], str]) -> list[str]:
  """The report's "Racing" lines (empty unless the folder was raced): fits saved, each config's round."""
  races = manifest.get("races") or []
  if not races:
    return []
  fits, plain = sum(r["fits"] for r in races), sum(r["plain_fits"] for r in races)
  settings = manifest["study"].get("race") or (manifest["study"].get("search") or {}).get("race") or {}
  lines = ["## Racing", "",
           f"Each config trained {settings.get('initial', 'n/a')} repeats first (rounds of "
           + " / ".join(str(n) for n in races[0]["schedule"]) + " repeats); at each look a config that "
           "Holm-corrected Welch tests over all pairs showed worse was eliminated (the race's family-wise "
           f"error ≤ {races[0]['alpha']}, spent evenly over its looks) and the others grew to the next round. "
           f"Survivors' numbers equal a plain run's. {len(races)} race(s): {fits} fits of {plain} "
           f"({plain - fits} saved, {100 * (plain - fits) / max(plain, 1):.0f}%).", ""]
  entries = manifest["configs"]
  raced = [c for r in races for c in r["configs"]]
  rows = [[labels.get(c, c), code(c), entries[c].get("repeats", 0),
           "" if entries[c].get("elimination_round") is None else entries[c]["elimination_round"],
           (entries[c].get("race") or {}).get("reason") or ""] for c in raced]
  return lines + table(["config", "id", "repeats", "eliminated at look (0: the first)", "reason"], rows)


def _cell(value: Any) -> Any:
  if isinstance(value, float) and np.isnan(value):
    return ""
  return value if isinstance(value, str) else (value.item() if hasattr(value, "item") else value)


def _draw_params(trials: pd.DataFrame, repeats: Mapping[int, np.ndarray], names: Sequence[str],
                 logs: Mapping[str, bool], ylabel: str):
  """One panel per searched field (`plots.search_parameter`)."""
  import matplotlib.figure

  from jaxlstm import plots
  ncols = min(3, len(names))
  nrows = -(-len(names) // ncols)
  fig = matplotlib.figure.Figure(figsize=(5.0 * ncols, 3.6 * nrows), layout="constrained")
  axes = np.asarray(fig.subplots(nrows, ncols, squeeze=False))
  for ax, name in zip(axes.flat, names):
    plots.search_parameter(trials, repeats, name, log=logs.get(name, False), ylabel=ylabel, ax=ax)
  for ax in axes.flat[len(names):]:
    ax.set_visible(False)
  return axes
