"""The report of a results folder: plots and report.md, built from its tables.

  python -m jaxlstm.report runs/cells-1a2b3c4d      # prints the path of report.md

The tables (scores.csv, summary.csv, diagnosis.csv, comparisons.csv) are written by
`jaxlstm.tables`, one function per file; this module reads them (and the histories,
for the learning curves) and draws:

  plots/scores.png      final scores per config: boxes, one point per repeat, n / diverged per tick
  plots/curves*.png     learning curves per config (12 per page): repeats thin, mean band,
                        early stops marked; diverged repeats left out and counted in the title
  plots/repeats.png     mean of the first n repeats against n, per config (12 best at most)
  plots/diagnosis.png   verdict shares per config
  plots/prob_improvement.png   P(row config better than column config)
  report.md             the page to read first: what ran and how long, the tables, the best
                        config and whether it beats the runner-up, repeats needed, diagnosis

`write_all(run_dir)` (and the command line) rebuilds the tables first, then the plots
and the page. Every file is written atomically (temporary file, then `os.replace`),
and a file whose content did not change is left alone.

No jax here: numpy, pandas, scipy (through `stats`) and matplotlib (through `plots`).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import re
import shlex
import sys
import types
import warnings
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# A dotted import: it loads the submodule itself, never through the package's lazy
# __getattr__ (which, as first committed, recursed on "stats").
import jaxlstm.stats as stats
from jaxlstm import devices, diagnose, metrics, render, store, tables
# The processes' names, where callers of the first versions look for them.
from jaxlstm.render import (RENDER_LOG, RENDER_STATUS, missing_plots, render_status,  # noqa: F401
                            renderer_running, start_renderer)
from jaxlstm.tables import ALPHA, CONFIDENCE, MAX_ALL_PAIRS, POI_RESAMPLES

PROG = "jaxlstm.report"

# Statistical defaults of the page, stated in every report (reference/statistics.md §8).
GAMMA = 0.75                # P(A better than B) at or above this reads as a clear improvement
CURVE_RESAMPLES = 1000      # bootstrap resamples of the repeats-convergence band
RELATIVE_TARGET = 0.05      # "how many repeats for a CI of the mean within ±5% of the mean"
MAX_PANELS = 12             # panels per figure; beyond, the best configs are shown


def __getattr__(name: str):
  # `report.plots` (matplotlib, ~1 s of import) loads on first use: report.md alone,
  # as the sweep writes it before the background renderer draws, never needs it.
  if name == "plots":
    import jaxlstm.plots
    return jaxlstm.plots
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _plots():
  return sys.modules[__name__].plots


class ReportError(ValueError):
  """The folder cannot be reported on (missing, not a results folder, unreadable)."""


class PlotWarning(RuntimeWarning):
  """A plot could not be drawn; the tables and the report are written regardless."""


# ---------------------------------------------------------------------------
# Reading the folder.


@dataclasses.dataclass(frozen=True)
class RunData:
  """What the report needs from a results folder, read once from its tables and histories.

  Attributes:
    path: the folder.
    manifest: manifest.json.
    done: ids of the done configs, in study order.
    labels: config id -> short unique label ("cells=5").
    configs: config id -> resolved config (configs/<id>.json) as a dict.
    histories: config id -> metric -> `[repeats, epochs]` float64, NaN after a stop.
    metric: the score metric (the study's).
    score: how a repeat is scored ("final", "best" or "restored").
    higher_is_better: its direction.
    train_metric: training-loss key of the histories (None if absent).
    val_metric: validation-loss key (None if absent: no curves).
    scores: config id -> `[repeats]` final value of `metric` (scores.csv).
    diverged: config id -> `[repeats]` bool (scores.csv).
    diverged_epoch: config id -> `[repeats]` first non-finite epoch, -1 if none.
    stopped_epoch: config id -> `[repeats]` early-stopping epoch (0-based), -1 if never.
    summary: config id -> its summary.csv row (attributes `mean`, `std`, `sem`, ...).
    diagnosis: diagnosis.csv (None when it is empty).
    pairs: comparisons.csv rows as dicts.
  """
  path: Path
  manifest: dict
  done: list[str]
  labels: dict[str, str]
  configs: dict[str, dict]
  histories: dict[str, dict[str, np.ndarray]]
  metric: str
  score: str
  higher_is_better: bool
  train_metric: str | None
  val_metric: str | None
  scores: dict[str, np.ndarray]
  diverged: dict[str, np.ndarray]
  diverged_epoch: dict[str, np.ndarray]
  stopped_epoch: dict[str, np.ndarray]
  summary: dict[str, Any]
  diagnosis: pd.DataFrame | None
  pairs: list[dict[str, Any]]

  @property
  def grid(self) -> list[str]:
    return list(self.manifest["study"]["grid"])

  @property
  def repeats(self) -> int:
    return int(self.manifest["study"]["repeats"])

  @property
  def paired(self) -> bool:
    """Whether comparisons.csv holds paired comparisons (configs run with `train.paired`)."""
    return bool(self.pairs) and "n_pairs" in self.pairs[0]

  @property
  def test_name(self) -> str:
    return "the paired t-test" if self.paired else "Welch's t-test"

  @property
  def against(self) -> str | None:
    """Which pairs comparisons.csv holds: "all", "best", or None (fewer than 2 configs)."""
    if len(self.done) < 2:
      return None
    return "all" if len(self.done) <= MAX_ALL_PAIRS else "best"


def _summary_row(row: Mapping[str, Any]) -> types.SimpleNamespace:
  values = {k: (int(v) if k in ("count", "n_diverged") else float(v)) for k, v in row.items()
            if k in (*tables.SUMMARY_COLUMNS, tables.ENSEMBLE_COLUMN)}
  values.setdefault(tables.ENSEMBLE_COLUMN, math.nan)
  return types.SimpleNamespace(**values)


def load_folder(run_dir: str | Path) -> RunData:
  """Read a results folder's manifest, tables and done histories.

  Raises:
    ReportError: the folder is missing, has no readable manifest, or a done
      config's files or its tables are missing or malformed.
  """
  path = Path(run_dir)
  if not path.is_dir():
    raise ReportError(f"{path} is not a directory.")
  try:
    manifest = store.RunFolder.read_manifest(path)
  except ValueError as e:
    raise ReportError(str(e)) from None
  if manifest is None:
    raise ReportError(f"{path} has no {store.MANIFEST}: not a jaxlstm results folder.")
  try:
    entries = manifest["configs"]  # the study is there: `read_manifest` refuses a manifest without it
    done = store.committed(manifest)
    metric, score = store.summary_metric(manifest), store.summary_score(manifest)
    configs = {c: store.read_json(store.config_path(path, c)) for c in done}
    histories = {c: {k: np.asarray(v, np.float64) for k, v in store.load_history(path, c).items()}
                 for c in done}
    frames = {name: tables.read(path, name) for name in
              (tables.SCORES, tables.SUMMARY, tables.DIAGNOSIS, tables.COMPARISONS)}
    if done and any(frames[name] is None for name in frames):
      missing = [name for name, frame in frames.items() if frame is None]
      raise ReportError(f"{path} lacks {', '.join(missing)}; rebuild with python -m jaxlstm.report {path}.")
    scores, diverged, diverged_epoch, stopped_epoch, summary = {}, {}, {}, {}, {}
    score_rows = frames[tables.SCORES]
    for c in done:
      rows = score_rows[score_rows["config_id"] == c].sort_values("repeat")
      column = f"{score}_{metric}" if f"{score}_{metric}" in rows else f"final_{metric}"
      scores[c] = rows[column].to_numpy(np.float64)
      diverged[c] = rows["diverged"].to_numpy(bool)
      stopped_epoch[c] = rows["stopped_epoch"].fillna(-1).to_numpy().astype(int)
      diverged_epoch[c] = np.asarray(entries[c]["diverged_epoch"], dtype=int)
      if len(scores[c]) != len(diverged_epoch[c]):
        raise ReportError(f"config {c}: scores.csv has {len(scores[c])} rows, the manifest "
                          f"{len(diverged_epoch[c])} repeats; rebuild with python -m jaxlstm.report {path}.")
    if done:
      summary = {r["config_id"]: _summary_row(r) for r in frames[tables.SUMMARY].to_dict("records")}
    diagnosis = frames[tables.DIAGNOSIS]
    pairs = frames[tables.COMPARISONS].to_dict("records") if done else []
  except ReportError:
    raise
  except (OSError, KeyError, TypeError, ValueError, zipfile.BadZipFile) as e:
    what = f"missing entry {e}" if isinstance(e, KeyError) else str(e)
    raise ReportError(f"{path} is not a complete results folder ({what}).") from None
  common = set.intersection(*(set(h) for h in histories.values())) if histories else set()
  return RunData(
      path=path, manifest=manifest, done=done, labels=store.config_labels(manifest), configs=configs,
      histories=histories, metric=metric, score=score, higher_is_better=metrics.higher_is_better(metric),
      train_metric=next((m for m in ("loss", "train_loss") if m in common), None),
      val_metric="val_loss" if "val_loss" in common else None, scores=scores, diverged=diverged,
      diverged_epoch=diverged_epoch, stopped_epoch=stopped_epoch, summary=summary,
      diagnosis=diagnosis if diagnosis is not None and len(diagnosis) else None, pairs=pairs)


# ---------------------------------------------------------------------------
# Views of the tables.


def config_diagnoses(run: RunData) -> dict[str, diagnose.ConfigDiagnosis] | None:
  """Per-config verdict summaries from diagnosis.csv (the spread check uses the scores)."""
  if run.diagnosis is None:
    return None
  out = {}
  for c in run.done:
    per_repeat = run.diagnosis[run.diagnosis["config_id"] == c]
    out[c] = diagnose.summarize_repeats(per_repeat, scores=np.where(run.diverged[c], np.nan, run.scores[c]),
                                        config=c, baseline_loss=tables.capacity_reference(_baselines(run, c)),
                                        baseline_scores=_baseline_scores(run, c))
  return out


def _baselines(run: RunData, config_id: str) -> dict[str, Any]:
  return (run.manifest.get("baselines") or {}).get(config_id) or {}


def _baseline_scores(run: RunData, config_id: str) -> dict[str, float] | None:
  """Naive forecasts' validation scores in the study's metric (lower is better), or None."""
  if run.higher_is_better:
    return None
  return _baselines(run, config_id).get(run.metric) or None


def _ranked(run: RunData) -> list[str]:
  """Order the done configs by mean, best first; those with no finite mean last (study order)."""
  sign = -1.0 if run.higher_is_better else 1.0
  finite = [c for c in run.done if math.isfinite(run.summary[c].mean)]
  return sorted(finite, key=lambda c: sign * run.summary[c].mean) + [c for c in run.done if c not in finite]


def _shown(run: RunData) -> list[str]:
  """Pick the configs of a one-figure plot: all, or the `MAX_PANELS` best, in study order."""
  if len(run.done) <= MAX_PANELS:
    return list(run.done)
  keep = set(_ranked(run)[:MAX_PANELS])
  return [c for c in run.done if c in keep]


def prob_matrix(run: RunData, configs: Sequence[str]) -> pd.DataFrame:
  """Tabulate P(row better than column) + ½P(tie), `stats.prob_improvement`'s point estimate.

  Both halves come from one Mann–Whitney U per pair (P(B better) = 1 − P(A better)),
  so the cells equal comparisons.csv's prob_better wherever that has the pair.
  """
  values = np.full((len(configs), len(configs)), np.nan)
  for i, a in enumerate(configs):
    for j in range(i + 1, len(configs)):
      b = configs[j]
      finite_a = run.scores[a][~run.diverged[a]]
      finite_b = run.scores[b][~run.diverged[b]]
      p = stats.mann_whitney(finite_a, finite_b, higher_is_better=run.higher_is_better).prob_better
      values[i, j], values[j, i] = p, 1.0 - p
  names = [run.labels[c] for c in configs]
  return pd.DataFrame(values, index=names, columns=names)


def required(run: RunData) -> dict[str, stats.RequiredRepeats | str]:
  """Estimate, per config, the repeats a t-interval of the mean needs to be within
  ±`RELATIVE_TARGET` of the mean (`stats.required_repeats` on the repeats at hand).

  Returns:
    config id -> `stats.RequiredRepeats`, or a sentence saying why there is none.
  """
  out: dict[str, stats.RequiredRepeats | str] = {}
  for c in run.done:
    try:
      out[c] = stats.required_repeats(run.scores[c], half_width=RELATIVE_TARGET, relative=True,
                                      confidence=CONFIDENCE, higher_is_better=run.higher_is_better,
                                      diverged=run.diverged[c])
    except ValueError as e:  # a mean of exactly 0, or an absurd n
      out[c] = str(e)
  return out


# ---------------------------------------------------------------------------
# Plots.


def _new_grid(n: int, ncols: int = 3, size: tuple[float, float] = (5.0, 3.6)) -> np.ndarray:
  ncols = max(1, min(ncols, n))
  nrows = -(-n // ncols)
  import matplotlib.figure
  fig = matplotlib.figure.Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
  axes = np.asarray(fig.subplots(nrows, ncols, squeeze=False))
  for ax in axes.flat[n:]:
    ax.set_visible(False)
  return axes


def _log_axis(*curves: np.ndarray) -> bool:
  """Whether a log axis fits: some finite values, all > 0 (losses then read over decades)."""
  finite = np.concatenate([c[np.isfinite(c)] for c in curves])
  return bool(finite.size) and bool(finite.min() > 0)


def plot_scores(run: RunData):
  """Draw the box plot of the final scores per config (seed points, n / diverged per tick)."""
  ax = _plots().scores_box({run.labels[c]: run.scores[c] for c in run.done},
                        diverged={run.labels[c]: run.diverged[c] for c in run.done},
                        ylabel=f"{run.score} {run.metric}")
  ax.set_title(f"{run.score} {run.metric} per config ({run.repeats} repeats; "
               f"{'higher' if run.higher_is_better else 'lower'} is better)")
  return ax


def plot_curves(run: RunData, configs: Sequence[str], best: str | None):
  """Draw one page of learning curves, a panel per config.

  Diverged repeats are blanked (excluded, counted in the title), as in every
  statistic. Each panel picks its own axis: log when all its values are > 0.
  """
  axes = _new_grid(len(configs))
  for ax, c in zip(axes.flat, configs):
    mask = run.diverged[c][:, None]
    title = run.labels[c] + (" (best)" if c == best else "")
    if mask.any():
      title += f" [{int(mask.sum())} diverged, not drawn]"
    train, val = (np.where(mask, np.nan, run.histories[c][name])
                  for name in (run.train_metric, run.val_metric))
    if not (np.isfinite(train).any() or np.isfinite(val).any()):
      ax.set_title(title)
      ax.text(0.5, 0.5, "no finite values to draw", ha="center", va="center", transform=ax.transAxes)
      ax.set_xticks([])
      ax.set_yticks([])
      continue
    _plots().learning_curves(train, val, title=title, ylabel=run.train_metric,
                          log=_log_axis(train, val), ax=ax)
  return axes


def plot_repeats(run: RunData, configs: Sequence[str], best: str | None, rng: np.random.Generator):
  """Draw the mean of the first n repeats against n, a panel per config.

  On top of `plots.repeats_convergence`: the bootstrap band of a mean of n repeats
  (`stats.repeats_curve`) and lines at ±`RELATIVE_TARGET` around the mean of all.
  """
  axes = _new_grid(len(configs))
  for i, (ax, c) in enumerate(zip(axes.flat, configs)):
    finite = run.scores[c][~run.diverged[c] & np.isfinite(run.scores[c])]
    lost = len(run.scores[c]) - finite.size
    ax.set_title(run.labels[c] + (" (best)" if c == best else "")
                 + (f" [{lost} diverged, left out]" if lost else ""))
    if finite.size < 2:
      ax.text(0.5, 0.5, f"{_count(finite.size, 'finite repeat')}:\nno spread to show", ha="center",
              va="center", transform=ax.transAxes)
      ax.set_xticks([])
      ax.set_yticks([])
      continue
    _plots().repeats_convergence(finite, ylabel=f"{run.score} {run.metric}", ax=ax)
    twin = ax.figure.axes[-1]  # the twin repeats_convergence has just added
    curve = stats.repeats_curve(finite, rng=rng, n_resamples=CURVE_RESAMPLES, confidence=CONFIDENCE,
                                higher_is_better=run.higher_is_better)
    ax.fill_between(curve.n, curve.boot_low, curve.boot_high, color="C2", alpha=0.15, lw=0,
                    label=f"{CONFIDENCE:.0%} of a mean of n (bootstrap)")
    mean = float(np.mean(finite))
    for side in (-1, 1):
      ax.axhline(mean * (1 + side * RELATIVE_TARGET), color="0.4", ls=":", lw=1.0,
                 label=f"±{RELATIVE_TARGET:.0%} of the mean" if side < 0 else None)
    ax.get_legend().remove()
    if i == 0:
      handles, labels = ax.get_legend_handles_labels()
      more, more_labels = twin.get_legend_handles_labels()
      ax.legend(handles + more, labels + more_labels, fontsize="x-small")
  return axes


def plot_diagnosis(run: RunData):
  """Draw the verdict shares per config (diagnosis.csv)."""
  frame = run.diagnosis[["config_id", "verdict"]].copy()
  frame["config"] = [run.labels[c] for c in frame["config_id"]]
  ax = _plots().diagnosis_overview(frame[["config", "verdict"]])
  ax.set_title("learning-curve verdicts per config")
  return ax


def plot_prob(run: RunData, configs: Sequence[str]):
  """Draw the P(row better than column) matrix of `configs`."""
  ax = _plots().prob_improvement_matrix(prob_matrix(run, configs))
  ax.set_title(f"P(row better than column), {run.score} {run.metric}")
  return ax


def _save(run_dir: Path, name: str, draw: Callable[[], Any]) -> str | None:
  """Draw and save one plot; a failure is a warning, never the loss of the tables.

  Returns:
    The path relative to the folder, or None when the plot failed.
  """
  try:
    _plots().save(draw(), run_dir / "plots" / name)
  except Exception as e:  # plots are derived: report what failed and go on
    warnings.warn(f"plot {name} not written ({type(e).__name__}: {e})", PlotWarning, stacklevel=2)
    return None
  return f"plots/{name}"


# ---------------------------------------------------------------------------
# report.md.

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>|!#])")


def _md(text: Any) -> str:
  """Text from a user (labels, names) as literal Markdown: special characters escaped, one line."""
  return _MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def _code(text: Any) -> str:
  """Text from a user (a command line, grid values) as an inline code span that nothing can break out of."""
  text = " ".join(str(text).split())
  fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
  pad = " " if text.startswith("`") or text.endswith("`") else ""
  return f"{fence}{pad}{text}{pad}{fence}"


def _score_words(run: RunData) -> str:
  """How a repeat was scored, in words (the study's `--score`)."""
  m = f"`{run.metric}`"
  return {"final": f"the final {m} of each repeat (at the stop epoch when early stopping fired)",
          "best": f"the best {m} of each repeat over its epochs (`--score best`)",
          "restored": (f"{m} of the weights early stopping restored, as a Keras user evaluates them after "
                       "`fit` (the final value where no weights were restored; `--score restored`)"),
          }[run.score]


def _label(run: RunData, config_id: str) -> str:
  return _md(run.labels[config_id])



def _count(n: int, noun: str) -> str:
  return f"{n} {noun}{'' if n == 1 else 's'}"


def _num(value: Any, digits: int = 4) -> str:
  if value is None:
    return "n/a"
  if isinstance(value, (bool, np.bool_)):
    return "yes" if value else "no"
  if isinstance(value, (int, np.integer)):
    return str(int(value))
  value = float(value)
  if math.isnan(value):
    return "n/a"
  return f"{value:.{digits}g}"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
  def cell(v):
    text = v if isinstance(v, str) else _num(v)
    return re.sub(r"(?<!\\)\|", r"\\|", text).replace("\n", " ")
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
  return lines + [""]


def _image(path: str | None, alt: str, name: str) -> list[str]:
  if path is None:
    return [f"({name} could not be drawn: see the warning printed when the report was built.)", ""]
  return [f"![{alt}]({path})", ""]


def _duration(start: str | None, end: str | None) -> float | None:
  try:
    return (datetime.datetime.fromisoformat(end) - datetime.datetime.fromisoformat(start)).total_seconds()
  except (TypeError, ValueError):
    return None


def _what_ran(run: RunData) -> list[str]:
  m, study = run.manifest, run.manifest["study"]
  base_train = study["base"].get("train", {})
  early = base_train.get("early_stopping")
  n_configs = len(study["configs"])
  lines = [f"# Sweep report: {_md(study.get('experiment') or run.path.name)}", "", "## What ran", ""]
  lines.append(f"- command: {_code(shlex.join(m['command']))}")
  reruns = [s for s in m.get("sessions", [])[1:] if s.get("argv") != m["command"]]
  for s in reruns:
    lines.append(f"- resumed with: {_code(shlex.join(s['argv']))}")
  lines.append(f"- created: {_md(m.get('created', 'n/a'))}")
  lines.append(f"- experiment: {_md(study.get('experiment'))}")
  if study.get("space"):
    from jaxlstm.space import Space
    lines.append(f"- space: {_code(Space.from_spec(study['space']).describe())}"
                 + (f" ({study['random']} random draws)" if study.get("random") else ""))
  searched = {d["name"] for d in (study.get("space") or {}).get("dimensions", [])}
  grid = {k: v for k, v in study["grid"].items() if v and k not in searched}  # drawn or searched: not a grid
  if grid:
    lines.append("- grid: " + "; ".join(f"{_code(k)} = {_code(json.dumps(v))}" for k, v in grid.items())
                 + (f" ({study['random']} random draws)" if study.get("random") and not study.get("space") else ""))
  elif not study.get("space"):
    lines.append("- grid: none (one config)")
  for note in _gap_lines(m.get("data_notes") or {}) + _transform_lines(m.get("data_notes") or {}):
    lines.append(f"- data: {note}")
  for note in _validation_lines(m.get("data_notes") or {}):
    lines.append(f"- validation: {note}")
  lines.append(f"- configs: {n_configs} ({len(run.done)} done), repeats: {run.repeats} per config, "
               f"seed: {study['seed']}")
  # Unset and zero-valued options (baseline None, min_delta 0, ...) are Keras' defaults: left out.
  settings = ", ".join(f"{k} {v}" for k, v in sorted((early or {}).items()) if v not in (None, False, 0))
  lines.append(f"- epochs: {base_train.get('epochs', 'n/a')}; early stopping: "
               + ((settings or "on, Keras defaults") if early else "off"))
  lines.append(f"- score: {_score_words(run)} ({'higher' if run.higher_is_better else 'lower'} is better)")
  lines.append("- versions: " + ", ".join(f"{k} {v}" for k, v in sorted(m.get("versions", {}).items())))
  lines.append(f"- device: {m.get('device', 'n/a')}")
  if m.get("cpu"):  # numbers can differ in the last bits between kinds of CPU
    lines.append(f"- CPU: {_md(devices.cpu_words(m['cpu']))}")
  lines.append("")
  return lines


def _search_section(run: RunData, save: Callable[[str, Callable[[], Any]], str | None]) -> list[str]:
  """The "Search" and "Racing" sections of a folder a search or a race wrote (`jaxlstm.search_report`)."""
  from jaxlstm import search_report
  path = run.path / tables.SCORES
  scores = pd.read_csv(path, dtype={"config_id": str}) if path.is_file() else None
  lines = search_report.section(run.path, run.manifest, scores, higher_is_better=run.higher_is_better,
                                score_words=f"{run.score} {run.metric}", save=save, table=_table,
                                image=_image, code=_code)
  return lines + search_report.race_section(run.manifest, run.labels, _table, _code)


def _gap_lines(notes: Mapping[str, Mapping[str, Any]]) -> list[str]:
  """One line per distinct way gaps in a CSV series were handled (`data.options.fill`)."""
  lines = []
  gap_notes = [{k: n[k] for k in ("fill", "gaps", "filled", "dropped_rows")} for n in notes.values() if "fill" in n]
  for note in {json.dumps(n, sort_keys=True): n for n in gap_notes}.values():
    gaps = sum(note["gaps"].values())
    where = ", ".join(f"{_md(k)}: {v}" for k, v in note["gaps"].items() if v)
    if note["fill"] == "drop":
      lines.append(f"{gaps} gap(s) ({where}): {note['dropped_rows']} row(s) dropped "
                   "(`data.options.fill = drop`); no window spans them")
    else:
      how = "linear interpolation" if note["fill"] == "interpolate" else "the last value (forward fill)"
      lines.append(f"{gaps} gap(s) ({where}) filled by {how} (`data.options.fill = {note['fill']}`)")
  return lines


def _validation_lines(notes: Mapping[str, Mapping[str, Any]]) -> list[str]:
  """One line per distinct cross-validation scheme (`data.cv`), as the data resolved it."""
  lines = []
  for cv in {json.dumps(n["cv"], sort_keys=True): n["cv"] for n in notes.values() if n.get("cv")}.values():
    k, n = cv["folds"], cv["samples"]
    if cv["scheme"] == "rolling":
      text = (f"walk-forward (rolling origin) over {k} folds of the {n} samples in order: each fold trains on "
              f"every sample before its origin ({cv['train'][0]} to {cv['train'][-1]})"
              + (f", less the {cv['gap']} before it whose targets overlap the validation windows" if cv["gap"] else "")
              + f", and validates on the next {cv['horizon']}")
    elif cv["scheme"] == "blocked":
      text = f"blocked {k}-fold cross-validation: {k} contiguous folds of the {n} samples in order"
    else:
      text = (f"{k}-fold cross-validation over all {n} samples, the folds shuffled per repeat (from its "
              "`split` key; each fold draws its own initial weights, order and dropout)")
    lines.append(f"{text} (`data.cv = {cv['scheme']}`); every fold is a member of the same compiled call, and "
                 "a repeat's score is the mean of its folds' scores (each fold's in scores.csv)")
  return lines


def _transform_lines(notes: Mapping[str, Mapping[str, Any]]) -> list[str]:
  """One line per distinct chain of series transforms (`data.transform`, `data.difference`)."""
  lines = []
  chains = {json.dumps(n["series_transform"], sort_keys=True): n["series_transform"]
            for n in notes.values() if n.get("series_transform")}
  for chain in chains.values():
    steps = []
    if chain["power"] == "log":
      steps.append("log")
    elif chain["power"] == "boxcox":
      lmbda = ", ".join(f"{v:.4g}" for v in chain["lmbda"])
      steps.append(f"Box-Cox (lambda {lmbda}, fitted on the training rows)")
    if chain["lags"]:
      steps.append(f"differenced at lag(s) {', '.join(map(str, chain['lags']))} inside each window")
    lines.append("target series " + ", then ".join(steps) + ", before scaling; `*_original` metrics invert every "
                 "transform and report errors in the series' original units")
  return lines


def _timings(run: RunData) -> list[str]:
  groups = run.manifest.get("groups", [])
  lines = ["## Timings", "",
           "One compiled program per static-shape group (configs padded to the widest share one); "
           "a group resumed in parts sums its parts.", ""]
  rows = []
  for i, g in enumerate(groups):
    names = [run.labels.get(c, c) for c in g["configs"]]
    shown = ", ".join(names[:4]) + (f", … (+{len(names) - 4})" if len(names) > 4 else "")
    width = g.get("cells", "n/a")
    if "units" in g:  # unequal widths or hidden Dense layers
      width = " / ".join(map(str, g["units"])) + (" + dense " + " / ".join(map(str, g["dense"])) if g.get("dense") else "")
    rows.append([i + 1, shown, g.get("members", "n/a"), width,
                 _num(g.get("padded")), g.get("compiles", 0), g.get("compile_seconds", 0.0),
                 g.get("run_seconds", 0.0), g.get("status", "n/a")])
  compile_s = sum(float(g.get("compile_seconds", 0.0)) for g in groups)
  run_s = sum(float(g.get("run_seconds", 0.0)) for g in groups)
  rows.append(["total", f"{len(run.done)} done", "", "", "",
               sum(int(g.get("compiles", 0)) for g in groups), compile_s, run_s, ""])
  lines += _table(["group", "configs", "members", "widths", "padded", "compiles", "compile s",
                   "run s", "status"], rows)
  walls = [(s, _duration(s.get("started"), s.get("finished"))) for s in run.manifest.get("sessions", [])]
  if walls:
    parts = [f"session {i + 1}: " + (f"{w:.1f} s wall, {_count(len(s.get('trained', [])), 'config')} trained"
                                      if w is not None else "not finished (interrupted)")
             for i, (s, w) in enumerate(walls)]
    lines += ["Sessions: " + "; ".join(parts) + ".", ""]
  return lines


def _summary_section(run: RunData) -> list[str]:
  lines = [f"## {run.score.capitalize()} {run.metric} per config", "",
           f"Over the finite repeats of each config (ddof=1); `ci_low`/`ci_high` are the "
           f"{CONFIDENCE:.0%} t-interval of the mean; `iqm` the interquartile mean.", ""]
  columns = ["count", "n_diverged", "mean", "std", "sem", "ci_low", "ci_high", "min", "25%",
             "50%", "75%", "max", "iqm"]
  rows = [[_label(run, c), f"`{c}`", *[getattr(run.summary[c], k) for k in columns]] for c in run.done]
  ensembles = [run.summary[c].ensemble for c in run.done]
  if any(math.isfinite(v) for v in ensembles):
    rows = [row + [value] for row, value in zip(rows, ensembles)]
    columns = [*columns, "ensemble"]
    lines[-2] += (f" `ensemble`: the {run.metric} of the repeats' averaged prediction (the mean probability "
                  "for a classifier) on the validation set, diverged repeats left out.")
  lines += _table(["config", "id", *columns], rows)
  total = sum(len(run.scores[c]) for c in run.done)
  n_div = sum(int(run.diverged[c].sum()) for c in run.done)
  nonfinite = sum(int((~run.diverged[c] & ~np.isfinite(run.scores[c])).sum()) for c in run.done)
  if n_div or nonfinite:
    parts = []
    for c in run.done:
      k = int(run.diverged[c].sum())
      if k:
        epochs = ", ".join(str(int(e)) for e in run.diverged_epoch[c][run.diverged[c]])
        parts.append(f"{_label(run, c)}: {k} of {len(run.scores[c])}, at epoch {epochs}")
    text = (f"**Diverged repeats: {n_div} of {total}** ({'; '.join(parts) or 'none flagged'}). "
            "They are excluded from every statistic and counted in `n_diverged`.")
    if nonfinite:
      text += (f" {nonfinite} more repeat(s) have a non-finite final score without a divergence "
               "flag; they are excluded and counted the same way.")
    lines += [text, ""]
  else:
    lines += [f"No repeat diverged ({total} repeats in all).", ""]
  return lines


def _pair_for(run: RunData, best: str, other: str) -> dict | None:
  """Find the best-vs-other pair of comparisons.csv, oriented best = A (flipping a pair stored the other way)."""
  for row in run.pairs:
    if (row["a"], row["b"]) == (best, other):
      return dict(row)
    if (row["a"], row["b"]) == (other, best):
      return dict(row, a=best, b=other, mean_diff=-row["mean_diff"], hedges_g=-row["hedges_g"],
                  prob_better=1.0 - row["prob_better"], prob_low=1.0 - row["prob_high"],
                  prob_high=1.0 - row["prob_low"])
  return None


def _best_section(run: RunData) -> list[str]:
  single = len(run.done) < 2
  summary = run.summary
  lines = ["## Result" if single else "## Best config", ""]
  ranked = [c for c in _ranked(run) if math.isfinite(summary[c].mean)]
  if not ranked:
    return lines + ["No config has a finite mean: every repeat diverged.", ""]
  best = ranked[0]
  s = summary[best]
  lines.append(f"**{'Config' if single else 'Best'}: {_label(run, best)}** (`{best}`): "
               f"mean {run.score} {run.metric} {_num(s.mean)} "
               f"± {_num(s.sem)} (SEM), {CONFIDENCE:.0%} CI [{_num(s.ci_low)}, {_num(s.ci_high)}], "
               f"{s.count} repeats used, {s.n_diverged} diverged.")
  lines.append("")
  if single:
    return lines  # the Comparisons section says there is nothing to compare
  if len(ranked) < 2:
    return lines + ["No other config has a finite mean, so there is no runner-up to test against.", ""]
  runner = ranked[1]
  pair = _pair_for(run, best, runner)
  head = (f"Against the runner-up **{_label(run, runner)}** (mean {_num(summary[runner].mean)}, "
          f"difference {_num(pair['mean_diff'] if pair else float('nan'))})")
  if pair is None or not math.isfinite(pair["pvalue_holm"]):
    n_a = pair["n_a"] if pair else s.count
    n_b = pair["n_b"] if pair else summary[runner].count
    if run.paired:
      lines.append(f"{head}: the difference **cannot be tested** ({pair['n_pairs'] if pair else 0} pairs "
                   "with both repeats finite; the paired t-test needs at least 2 that differ).")
    else:
      lines.append(f"{head}: the difference **cannot be tested** (finite repeats: {n_a} and {n_b}; "
                   "Welch's t-test needs at least 2 in each).")
  else:
    significant = pair["pvalue_holm"] < ALPHA
    verdict = ("**significantly better**" if significant else "**not significantly better**")
    lines.append(f"{head}: {run.test_name} p = {_num(pair['pvalue'], 3)}, Holm-adjusted "
                 f"p = {_num(pair['pvalue_holm'], 3)} over {_count(len(run.pairs), 'comparison')}: "
                 f"{_label(run, best)} is {verdict} at α = {ALPHA}; Hedges' g = {_num(pair['hedges_g'], 3)}.")
    if not significant:
      lines.append("The gap may be repeat noise: run more repeats (see below) before preferring it.")
  if pair is not None and math.isfinite(pair["prob_better"]):
    p, low, high = pair["prob_better"], pair["prob_low"], pair["prob_high"]
    if low > 0.5 and p >= GAMMA:
      reading = f"at or above γ = {GAMMA}: a run of the best usually beats a run of the runner-up"
    elif low > 0.5:
      reading = f"above 0.5 but below γ = {GAMMA}: better more often than not, not by much"
    else:
      reading = "its interval includes 0.5 (or lies below): no reliable preference run by run"
    lines.append(f"A repeat of {_label(run, best)} beats a repeat of {_label(run, runner)} with probability "
                 f"{_num(p, 3)} ({CONFIDENCE:.0%} bootstrap CI {_num(low, 3)}–{_num(high, 3)}); "
                 f"{reading}."
                 + (" With fewer than 10 repeats a side this interval is rough."
                    if min(pair["n_a"], pair["n_b"]) < 10 else ""))
  lines.append("")
  return lines


def _baselines_section(run: RunData) -> list[str]:
  """Naive forecasts on the same validation set, and whether each config beats them."""
  rows, methods, losers = [], [], []
  for c in run.done:
    scores = _baseline_scores(run, c)
    if not scores:
      continue
    methods = methods or list(scores)
    mean = run.summary[c].mean
    best = min(scores, key=scores.get)
    beats = math.isfinite(mean) and mean < scores[best]
    if not beats:
      losers.append(c)
    rows.append([_label(run, c), mean, *[scores.get(m, math.nan) for m in methods],
                 "yes" if beats else f"**no** ({best} is better)"])
  if not rows:
    return []
  lines = ["## Naive baselines", "",
           f"The {run.metric} of forecasts that need no training, on the same validation set "
           "(`jaxlstm.baselines`: persistence repeats the last input value, mean predicts the training "
           "mean, seasonal the value one season back). A config must beat them to have learned "
           "something worth its compute.", ""]
  lines += _table(["config", f"mean {run.score} {run.metric}", *methods, "beats every naive forecast"], rows)
  if losers:
    lines += [f"**{_count(len(losers), 'config')} {'loses' if len(losers) == 1 else 'lose'} to a naive forecast** "
              f"({', '.join(_label(run, c) for c in losers)}): flagged in the diagnosis.", ""]
  return lines


def _comparisons_what(run: RunData) -> str:
  """What comparisons.csv compares, or why it compares nothing."""
  n, m = len(run.done), len(run.pairs)
  if n < 2:
    return "Only one config ran: there is nothing to compare it with."
  if not m:
    return "No config has a finite mean (every repeat diverged): nothing to compare."
  if run.against == "all":
    what = f"Every pair of the {n} configs ({_count(m, 'comparison')})"
  else:
    what = f"The best config against each of the {m} others ({n} configs: more than {MAX_ALL_PAIRS})"
  return what + f"; Holm's correction runs over {'this one' if m == 1 else f'these {m}'}."


def _pairing_note(run: RunData) -> list[str]:
  """What pairing bought (paired runs), or that it would be possible (unpaired runs of one shape)."""
  if run.paired:
    ratios = [p["se_ratio"] for p in run.pairs if isinstance(p["se_ratio"], float) and math.isfinite(p["se_ratio"])]
    if not ratios:
      return []
    ratio = float(np.median(ratios))
    return [f"Pairing cut the standard error of the difference to {ratio:.2f} of the unpaired one "
            f"(median over pairs): as sensitive as about {1 / ratio ** 2:.1f}× as many unpaired repeats."
            if ratio < 1 else
            f"Pairing did not reduce the standard error of the difference here (median ratio {ratio:.2f}).", ""]
  if len(run.done) >= 2 and _same_shapes(run):
    return ["These configs share their parameter shapes, so they can run **paired** (`--paired`, or "
            "`train.paired = true`): repeat i of every config would draw the same initial weights, data "
            "order and dropout masks, and each comparison would be paired and far more sensitive.", ""]
  return []


def _same_shapes(run: RunData) -> bool:
  """Whether every done config has the same parameter shapes (model and data alike but traced rates)."""
  traced = {"dropout", "recurrent_dropout", "kernel_l1", "kernel_l2", "recurrent_l1", "recurrent_l2",
            "bias_l1", "bias_l2"}
  shapes = {json.dumps([{k: v for k, v in cfg.get("model", {}).items() if k not in traced}, cfg.get("data")],
                       sort_keys=True) for cfg in run.configs.values()}
  return len(shapes) == 1


def _comparisons_section(run: RunData, matrix_path: str | None, drew_matrix: bool) -> list[str]:
  lines = ["## Comparisons", ""]
  what = _comparisons_what(run)
  if not run.pairs:
    return lines + [what, ""]
  if run.paired:
    lines += [what + f" Design: **paired** (`train.paired`: repeat i of every config drew the same keys, "
              f"so repeat i of A is compared with repeat i of B). Test: the paired t-test (two-sided), "
              f"α = {ALPHA}; P(A better) = the share of pairs A wins (ties ½), with a bootstrap CI.", ""]
  else:
    lines += [what + f" Design: unpaired (each config's repeats drew keys of their own). Test: Welch's "
              f"t-test (two-sided), α = {ALPHA}; P(A better) = P(A beats B) + ½P(tie) over repeat pairs, "
              "with a bootstrap CI.", ""]
  rows = []
  for pair in run.pairs:
    a, b = pair["a"], pair["b"]
    row = [_label(run, a), _label(run, b), pair["mean_diff"], pair["hedges_g"],
           _num(pair["pvalue"], 3), _num(pair["pvalue_holm"], 3),
           f"{_num(pair['prob_better'], 3)} [{_num(pair['prob_low'], 3)}, {_num(pair['prob_high'], 3)}]"]
    if run.paired:
      row += [f"{_num(pair['se_paired'], 3)} / {_num(pair['se_unpaired'], 3)}"]
    # Stats words its verdict with config ids; the page reads labels.
    rows.append(row + [str(pair["verdict"]).replace(a, _label(run, a)).replace(b, _label(run, b))])
  lines += _table(["A", "B", "mean A − B", "Hedges' g", "p", "p (Holm)", "P(A better) [CI]",
                   *(["SE paired / unpaired"] if run.paired else []), "verdict"], rows)
  lines += _pairing_note(run)
  if drew_matrix:
    lines += _image(matrix_path, "P(row better than column)", "The P(improvement) matrix")
  return lines


def _repeats_section(run: RunData, needed: Mapping[str, stats.RequiredRepeats | str],
                     plot_path: str | None, shown: Sequence[str]) -> list[str]:
  lines = ["## How many repeats", "",
           f"Repeats a {CONFIDENCE:.0%} t-interval of the mean needs to be within "
           f"±{RELATIVE_TARGET:.0%} of the mean, from the std of the repeats at hand "
           "(`stats.required_repeats`; a pilot of few repeats gives a rough std).", ""]
  rows, short = [], []
  for c in run.done:
    s, r = run.summary[c], needed[c]
    now = (s.ci_high - s.mean) / abs(s.mean) if s.mean and math.isfinite(s.ci_high) else float("nan")
    now_text = f"±{now:.1%}" if math.isfinite(now) else "n/a"
    if isinstance(r, str):
      rows.append([_label(run, c), s.count, s.mean, s.std, now_text, "n/a", r])
      continue
    if not math.isfinite(r.n):
      rows.append([_label(run, c), s.count, s.mean, s.std, now_text, "n/a",
                   "fewer than 2 finite repeats: no std"])
      continue
    enough = s.count >= r.n
    if not enough:
      short.append((c, int(r.n)))
    rows.append([_label(run, c), s.count, s.mean, s.std, now_text, int(r.n),
                 "yes" if enough else f"no: {int(r.n) - s.count} more"])
  lines += _table(["config", "repeats used", "mean", "std", "CI now", f"repeats for ±{RELATIVE_TARGET:.0%}",
                   "enough?"], rows)
  if short:
    worst = max(short, key=lambda t: t[1])
    lines += [f"More repeats are needed for ±{RELATIVE_TARGET:.0%} in {len(short)} of "
              f"{_count(len(run.done), 'config')}; the most: {_label(run, worst[0])}, {worst[1]} repeats.", ""]
  elif any(not isinstance(r, str) and math.isfinite(r.n) for r in needed.values()):
    lines += [f"{run.repeats} repeats sufficed for ±{RELATIVE_TARGET:.0%} in every config with a "
              "finite std.", ""]
  if len(shown) < len(run.done):
    lines += [f"The plot shows the {len(shown)} best configs.", ""]
  lines += _image(plot_path, "repeats convergence", "The repeats-convergence plot")
  return lines


def _stops_section(run: RunData) -> list[str]:
  lines = ["## Early stopping", ""]
  stopped_any = any((run.stopped_epoch[c] >= 0).any() for c in run.done)
  configured = any((cfg.get("train") or {}).get("early_stopping") for cfg in run.configs.values())
  if not stopped_any:
    if configured:
      return lines + ["Early stopping was on, but no repeat stopped before its last epoch.", ""]
    return lines + ["Early stopping was off: every repeat ran all its epochs.", ""]
  rows = []
  for c in run.done:
    stopped = run.stopped_epoch[c]
    hit = stopped[stopped >= 0]
    epochs = (run.configs[c].get("train") or {}).get("epochs", "n/a")
    if hit.size:
      run_for = hit + 1  # epochs run = 0-based stop epoch + 1
      rows.append([_label(run, c), f"{hit.size} of {len(stopped)}", float(np.median(run_for)),
                   f"{int(run_for.min())}–{int(run_for.max())}", epochs])
    else:
      rows.append([_label(run, c), f"0 of {len(stopped)}", "n/a", "n/a", epochs])
  lines += ["Repeats that stopped early, and after how many epochs (their learning curves end with a "
            "marker; their score is taken at the stop epoch).", ""]
  lines += _table(["config", "stopped", "median epochs run", "range", "epochs"], rows)
  return lines


def _diagnosis_section(run: RunData, per_config: Mapping[str, diagnose.ConfigDiagnosis] | None,
                       curve_paths: Sequence[str | None], overview_path: str | None) -> list[str]:
  lines = ["## Diagnosis", ""]
  if per_config is None:
    return lines + ["No training and validation loss in the histories: no diagnosis and no "
                    "learning curves.", ""]
  lines += ["Each repeat's train/validation curves get a verdict (`jaxlstm.diagnose`, default "
            "thresholds); per config: the majority verdict, the share of each verdict, the most "
            "common trend over the last epochs, and advice.", ""]
  rows = []
  for c in run.done:
    d = per_config[c]
    counts = [f"{v} {round(d.shares[v] * d.n_repeats)}/{d.n_repeats}" for v in diagnose.VERDICTS
              if d.shares[v] > 0]
    trend = max(d.trend_shares, key=d.trend_shares.get) if d.trend_shares else "n/a"
    beats = "n/a" if d.beats_baselines is None else ("yes" if d.beats_baselines else "**no**")
    rows.append([_label(run, c), f"**{d.majority}**", f"{d.majority_share:.0%}", ", ".join(counts),
                 trend, "yes" if d.high_variance else "no", beats, d.advice])
  lines += _table(["config", "verdict", "share", "repeats", "trend", "high variance", "beats naive",
                   "advice"], rows)
  for i, path in enumerate(curve_paths):
    lines += _image(path, "learning curves" if i == 0 else f"learning curves, page {i + 1}",
                    "A learning-curve page")
  lines += _image(overview_path, "diagnosis overview", "The diagnosis overview")
  return lines


def _method_section(run: RunData, rng_seed: int, against: str | None) -> list[str]:
  pairs = ("every pair of configs" if against == "all" else
           "the best config against each other one" if against == "best" else "none (one config)")
  return [
      "## Method", "",
      f"- Scores: {_score_words(run)}. Diverged repeats (flagged by training, or a non-finite score) are excluded from every "
      "statistic and counted in `n_diverged`.",
      f"- Spread: std and SEM with ddof=1; {CONFIDENCE:.0%} t-interval of the mean "
      "(mean ± t·SEM, n−1 degrees of freedom); IQM = mean of the middle 50%.",
      f"- Comparisons: {pairs}; {run.test_name} (two-sided), Holm–Bonferroni over the family, "
      f"α = {ALPHA}; effect size Hedges' g (pooled ddof=1 std, small-sample corrected).",
      f"- P(A better than B) = P(A beats B) + ½P(tie) over repeat pairs (Mann–Whitney U / n_a n_b), "
      f"{CONFIDENCE:.0%} percentile bootstrap CI from {POI_RESAMPLES} resamples of each side; "
      f"γ = {GAMMA} marks a clear improvement.",
      f"- Repeats: smallest n with t·std/√n ≤ {RELATIVE_TARGET:.0%} of |mean| "
      f"({CONFIDENCE:.0%} level); convergence bands from {CURVE_RESAMPLES} bootstrap resamples.",
      f"- Resampling draws from `numpy.random.default_rng({rng_seed})`: rebuilding gives the same "
      "tables.",
      "",
  ]


def _files_section(others: Sequence[str]) -> list[str]:
  lines = []
  if others:
    lines += ["## Other plots", ""]
    lines += [f"![{Path(p).name}]({p})\n" for p in others]
  lines += ["## Files", "",
            "`scores.csv` (per config and seed), `summary.csv` (per config), `diagnosis.csv` "
            "(per config and repeat: verdict, trend, evidence), `comparisons.csv` (per pair), "
            "`histories/<id>.npz`, `configs/<id>.json`, `checkpoints/<id>/` (orbax), "
            "`manifest.json`. Load the run with `jaxlstm.load_run(path)`; rebuild this page with "
            "`python -m jaxlstm.report <folder>`.", ""]
  return lines


# ---------------------------------------------------------------------------
# Everything.


def write_report(run_dir: str | Path, *, rng_seed: int = 0, draw: bool = True, record: bool = True) -> Path:
  """Draw the plots and write report.md of a results folder from its tables.

  Safe to run at any time (after each group, after a crash, on a copy): it only
  reads the manifest, the tables and the histories, and writes derived files
  atomically. A plot that fails to draw is a `PlotWarning` (a RuntimeWarning) and
  a line in the report.

  Args:
    run_dir: the results folder (its tables written by `jaxlstm.tables`).
    rng_seed: the seed the tables' bootstrap used (stated on the page); the
      convergence bands draw from `default_rng(rng_seed + 1)`.
    draw: False writes report.md only, linking every plot it would draw (no
      matplotlib): what the sweep does before a background renderer
      (`render.start_renderer`) draws them and rewrites the page where one failed.
    record: after drawing, record "done" / "failed" in a folder's render status
      (the background renderer records its own final state instead).

  Returns:
    The path of report.md.

  Raises:
    ReportError: `run_dir` is not a readable results folder.
  """
  run = load_folder(run_dir)
  path = run.path
  rng = np.random.default_rng(rng_seed + 1)
  needed = required(run)
  per_config = config_diagnoses(run)
  ranked = _ranked(run)
  best = ranked[0] if ranked and math.isfinite(run.summary[ranked[0]].mean) else None
  shown = _shown(run)
  drawn: list[str | None] = []

  def save(name: str, fn: Callable[[], Any]) -> str | None:
    if not draw:
      return f"plots/{name}"
    drawn.append(_save(path, name, fn))
    return drawn[-1]

  paths: dict[str, Any] = {"scores": None, "curves": [], "repeats": None, "diagnosis": None,
                           "prob": None}
  if run.done:
    paths["scores"] = save("scores.png", lambda: plot_scores(run))
    if run.diagnosis is not None and run.train_metric and run.val_metric:
      for page, start in enumerate(range(0, len(run.done), MAX_PANELS)):
        chunk = run.done[start:start + MAX_PANELS]
        name = "curves.png" if page == 0 else f"curves-{page + 1}.png"
        paths["curves"].append(save(name, lambda chunk=chunk: plot_curves(run, chunk, best)))
      paths["diagnosis"] = save("diagnosis.png", lambda: plot_diagnosis(run))
    paths["repeats"] = save("repeats.png", lambda: plot_repeats(run, shown, best, rng))
    if len(run.done) >= 2:
      paths["prob"] = save("prob_improvement.png", lambda: plot_prob(run, shown))

  lines = _what_ran(run) + _timings(run) + _search_section(run, save)
  if not run.done:
    lines += ["## Results", "", "No config has finished yet: rerun the sweep command to train them.", ""]
  else:
    lines += _summary_section(run)
    lines += _image(paths["scores"], f"{run.score} {run.metric} per config", "The box plot")
    lines += _best_section(run)
    lines += _baselines_section(run)
    lines += _comparisons_section(run, paths["prob"], len(run.done) >= 2)
    if len(run.done) >= 2 and len(shown) < len(run.done):
      lines += [f"The P(improvement) matrix shows the {len(shown)} best configs.", ""]
    lines += _repeats_section(run, needed, paths["repeats"], shown)
    lines += _stops_section(run)
    lines += _diagnosis_section(run, per_config, paths["curves"], paths["diagnosis"])
  lines += _method_section(run, rng_seed, run.against)
  if drawn and record:  # a later drawing replaces what a failed background render left
    failed = [name for name in drawn if name is None]
    render.record(path, "failed" if failed else "done", only_if_present=True,
                  errors=["a plot could not be drawn"] * len(failed))
  plots_dir = path / "plots"
  others = sorted(f"plots/{p.name}" for p in plots_dir.glob("*.png")) if plots_dir.is_dir() else []
  linked = set(re.findall(r"\]\((plots/[^)]+)\)", "\n".join(lines)))
  lines += _files_section([p for p in others if p not in linked])
  report = path / "report.md"
  store.write_text(report, "\n".join(lines).rstrip("\n") + "\n")
  return report


def write_all(run_dir: str | Path, *, rng_seed: int = 0) -> Path:
  """Rebuild every table of a folder (`jaxlstm.tables`), then its plots and report.md.

  Raises:
    ReportError: `run_dir` is not a readable results folder.
  """
  try:
    tables.write_all(run_dir, rng_seed=rng_seed)
  except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
    _ = load_folder(run_dir)  # names a missing or foreign folder in the report's own words
    raise ReportError(f"{run_dir} is not a complete results folder ({e}).") from None
  return write_report(run_dir, rng_seed=rng_seed)


# ---------------------------------------------------------------------------
# The report's processes (`jaxlstm.render`): this module's side of them.
#
# The sweep writes the tables and report.md (`write_report(draw=False)`, linking the
# plots it will have), or has a worker started with it write them (`_serve`); the PNGs
# (~3 s of matplotlib the user need not wait for) are drawn after it returns, by the
# worker or a detached renderer (`_render_in_background`), which rewrite the page only
# where a plot failed.


def _render_in_background(run_dir: Path, rng_seed: int) -> int:
  """The detached renderer: draw every plot, rewrite report.md where one failed, record the state."""
  render.record(run_dir, "running", pid=os.getpid())
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always", PlotWarning)
    try:
      write_report(run_dir, rng_seed=rng_seed, record=False)  # the state is this process's to record
    except Exception as e:  # the folder changed under us, or it is not ours: say so
      render.record(run_dir, "failed", errors=[f"{type(e).__name__}: {e}"])
      print(f"{PROG}: error: {type(e).__name__}: {e}", file=sys.stderr)
      return 1
  errors = [str(w.message) for w in caught if issubclass(w.category, PlotWarning)]
  for message in errors:
    print(f"{PROG}: warning: {message}", file=sys.stderr)
  render.record(run_dir, "failed" if errors else "done", errors=errors)
  return 1 if errors else 0


def _serve(run_dir: Path, rng_seed: int) -> int:
  """The sweep's report worker (`render.Worker`, started as `python -m jaxlstm.render --serve`):
  on "go", write the tables and report.md, answer, draw.

  Without "go" (the sweep failed, found nothing to report, or died) no table is written.
  """
  if not render.wait_for_go():
    return 0
  reply: dict[str, Any] = {"status": "ok"}
  try:
    tables.write_all(run_dir)
  except Exception as e:  # the sweep writes them again itself and reports the error its own way
    reply = {"status": "failed", "error": f"{type(e).__name__}: {e}"}
  if reply["status"] == "ok":
    try:
      write_report(run_dir, draw=False)
    except Exception as e:  # the report is derived: a failure must not cost the results
      reply["report_error"] = f"{type(e).__name__}: {e}"
    reply["drawing"] = "report_error" not in reply and render.links_plots(run_dir)
    if reply["drawing"]:  # before answering: the sweep may check it as soon as it has the answer
      render.record(run_dir, "running", pid=os.getpid())
    reply["summary"] = tables.format_summary(run_dir)
  # The answer, then stdout and stderr into the folder's log: the sweep may be gone soon.
  sys.stdout.write(json.dumps(reply))
  sys.stdout.flush()
  with open(run_dir / render.RENDER_LOG, "wb") as log:
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
  if not reply.get("drawing"):
    return 0 if reply["status"] == "ok" else 1
  return _render_in_background(run_dir, rng_seed)


# ---------------------------------------------------------------------------
# Command line.


class _Parser(argparse.ArgumentParser):
  def error(self, message):  # one line, no usage block: the same contract as the sweep
    raise ReportError(message)


def build_parser() -> argparse.ArgumentParser:
  parser = _Parser(prog=PROG, description="Rebuild the tables, plots and report.md of a "
                   "results folder written by python -m jaxlstm.sweep.")
  parser.add_argument("run_dir", metavar="DIR", help="the results folder")
  parser.add_argument("--rng-seed", type=int, default=0,
                      help="seed of the bootstrap resampling (default 0)")
  parser.add_argument("--background", action="store_true", help=argparse.SUPPRESS)  # the sweep's renderer
  parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # the sweep's worker
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  """Rebuild the report of a folder and print the path of report.md.

  Returns:
    0 on success; 2 on a missing or invalid folder or bad arguments (one line
    on stderr: `jaxlstm.report: error: ...`).
  """
  argv = list(sys.argv[1:] if argv is None else argv)
  try:
    args = build_parser().parse_args(argv)
  except ReportError as e:
    print(f"{PROG}: error: {' '.join(str(e).split())}", file=sys.stderr)
    return 2
  except SystemExit as e:  # --help
    return int(e.code or 0)
  if args.serve:
    return _serve(Path(args.run_dir), args.rng_seed)
  if args.background:
    return _render_in_background(Path(args.run_dir), args.rng_seed)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always", PlotWarning)
    try:
      report = write_all(args.run_dir, rng_seed=args.rng_seed)
    except (ReportError, OSError) as e:
      print(f"{PROG}: error: {' '.join(str(e).split())}", file=sys.stderr)
      return 2
  for w in caught:
    if issubclass(w.category, PlotWarning):
      print(f"{PROG}: warning: {w.message}", file=sys.stderr)
  print(report)
  return 0


if __name__ == "__main__":
  sys.exit(main())
