"""The results tables of a folder, each written by exactly one function (no jax).

  scores.csv        one row per (done config, repeat): grid values, final_* and best_* of
                    every metric, best_epoch, stopped_epoch, diverged; with cross-validation
                    each value is the mean over the repeat's folds, and the score of each
                    fold follows (`<score>_<metric>_fold<f>`)                   (`write_scores`)
  summary.csv       one row per config: describe() order + n_diverged, sem, 95% CI, IQM of
                    the study's score metric                                    (`write_summary`)
  diagnosis.csv     one row per (config, repeat): verdict, trend, reason, evidence numbers
                                                                                (`write_diagnosis`)
  comparisons.csv   one row per pair: means, Hedges' g, Welch p (raw, Holm), P(A better than
                    B) with its bootstrap CI, verdict                           (`write_comparisons`)

Everything is derived from the folder's own files (manifest.json, histories/<id>.npz)
in study order, so rebuilding gives byte-identical tables; the report reads these
tables and never derives them again. Only done configs count; the score of a repeat
is its final value of the study's metric (`store.summary_metric`), taken at the stop
epoch of an early-stopped repeat; with cross-validation (`data.cv`) it is the mean of
its folds' scores, each fold scored the same way. Diverged repeats (any fold diverged)
are left out of every statistic and counted. Resampling draws from
`np.random.default_rng(RNG_SEED)` only.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxlstm import diagnose, metrics, store

SCORES, SUMMARY, DIAGNOSIS, COMPARISONS = "scores.csv", "summary.csv", "diagnosis.csv", "comparisons.csv"

# Statistical defaults, stated in every report (reference/statistics.md §8).
CONFIDENCE = 0.95
ALPHA = 0.05
POI_RESAMPLES = 2000        # bootstrap resamples of each P(A better than B) interval
MAX_ALL_PAIRS = 6           # up to this many configs every pair is tested, else each vs the best
RNG_SEED = 0

SUMMARY_COLUMNS = ("count", "mean", "std", "min", "25%", "50%", "75%", "max",
                   "n_diverged", "sem", "ci_low", "ci_high", "iqm")
# After the statistics: the score of the repeats' averaged prediction (NaN where there is none).
ENSEMBLE_COLUMN = "ensemble"


# ---------------------------------------------------------------------------
# Per-repeat values.


def final_values(values: np.ndarray, stopped_epoch: np.ndarray) -> np.ndarray:
  """`[repeats]` value at the stop epoch of stopped repeats, else at the last epoch (`Ensemble.final`)."""
  values = np.asarray(values)
  stopped_epoch = np.asarray(stopped_epoch)
  last = np.where(stopped_epoch >= 0, stopped_epoch, values.shape[1] - 1)
  return values[np.arange(values.shape[0]), last]


def restored_values(values: np.ndarray, stopped_epoch: np.ndarray, best_epoch: np.ndarray,
                    restores: bool) -> np.ndarray:
  """`[repeats]` value at the epoch whose weights early stopping restored (`restores`: the config
  has `restore_best_weights`), else the final value: what a Keras user evaluates after `fit`."""
  values = np.asarray(values)
  final = final_values(values, stopped_epoch)
  best_epoch = np.asarray(best_epoch)
  if not restores:
    return final
  at_best = values[np.arange(values.shape[0]), np.clip(best_epoch, 0, values.shape[1] - 1)]
  return np.where(best_epoch >= 0, at_best, final)


def best_values(values: np.ndarray, metric: str) -> np.ndarray:
  """`[repeats]` best finite value of `metric` over epochs (NaN for a repeat with none)."""
  values = np.asarray(values)
  finite = np.isfinite(values)
  higher = metrics.higher_is_better(metric)
  fill = -np.inf if higher else np.inf
  reduce = np.max if higher else np.min
  best = reduce(np.where(finite, values, fill), axis=1).astype(values.dtype)
  return np.where(finite.any(axis=1), best, np.nan).astype(values.dtype)


@dataclasses.dataclass(frozen=True)
class Folder:
  """What the tables are derived from, read once.

  Attributes:
    path: the folder.
    manifest: manifest.json.
    done: ids of the done configs, in study order.
    metric: the study's score metric.
    score: how a repeat is scored: "final", "best" or "restored" (`store.summary_score`).
    histories: config id -> metric -> `[repeats, epochs]` (float32 as saved).
    scores: config id -> `[repeats]` score of each repeat (`metric`, taken as `score` says; float64).
    diverged: config id -> `[repeats]` bool, the training's divergence mask.
    stopped_epoch: config id -> `[repeats]` early-stopping epoch, -1 if never.
    folds: config id -> its per-fold results (`store.load_folds`), for cross-validated configs only.
  """
  path: Path
  manifest: dict
  done: list[str]
  metric: str
  score: str
  histories: dict[str, dict[str, np.ndarray]]
  scores: dict[str, np.ndarray]
  diverged: dict[str, np.ndarray]
  stopped_epoch: dict[str, np.ndarray]
  folds: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

  @property
  def grid(self) -> list[str]:
    return list(self.manifest["study"]["grid"])

  @property
  def higher_is_better(self) -> bool:
    return metrics.higher_is_better(self.metric)

  def values(self, config_id: str) -> dict[str, Any]:
    return self.manifest["configs"][config_id]["values"]


def read_folder(run_dir: str | Path) -> Folder:
  """Read a results folder's manifest and the histories of its done configs.

  Raises:
    ValueError: not a results folder, or a done config's files are missing or malformed.
  """
  path = Path(run_dir)
  manifest = store.RunFolder.read_manifest(path)
  if manifest is None:
    raise ValueError(f"{path} has no {store.MANIFEST}: not a jaxlstm results folder.")
  entries = manifest["configs"]
  done = store.committed(manifest)
  metric, score = store.summary_metric(manifest), store.summary_score(manifest)
  histories, scores, diverged, stopped, folds = {}, {}, {}, {}, {}
  for c in done:
    histories[c] = store.load_history(path, c)
    stopped[c] = np.asarray(entries[c]["stopped_epoch"], dtype=int)
    diverged[c] = np.asarray(entries[c]["diverged_epoch"], dtype=int) >= 0
    scores[c], folds_c = config_scores(path, manifest, c, histories[c])
    if folds_c is not None:
      folds[c] = folds_c
  return Folder(path, manifest, done, metric, score, histories, scores, diverged, stopped, folds)


def config_scores(run_dir: str | Path, manifest: dict, config_id: str,
                  history: dict[str, np.ndarray] | None = None) -> tuple[np.ndarray, dict[str, Any] | None]:
  """`[repeats]` scores of one committed config (the study's metric, taken as its `score` says;
  float64, a cross-validated repeat scored by the mean of its folds), and its per-fold results.

  What the summary scores, and what a search tells Optuna (`jaxlstm.search_run`).

  Raises:
    ValueError: the config's history or per-fold results are missing or malformed.
  """
  path, entry = Path(run_dir), manifest["configs"][config_id]
  metric, score = store.summary_metric(manifest), store.summary_score(manifest)
  history = store.load_history(path, config_id) if history is None else history
  stopped = np.asarray(entry["stopped_epoch"], dtype=int)
  values = history.get(metric)
  if values is None or values.ndim != 2 or len(values) != len(stopped):
    shape = None if values is None else values.shape
    raise ValueError(f"config {config_id}: history {metric!r} has shape {shape}, expected "
                     f"[{len(stopped)} repeats, epochs].")
  if int(entry.get("folds", 1)) > 1:
    folds = store.load_folds(path, config_id)
    if folds is None or metric not in folds["history"]:
      raise ValueError(f"config {config_id}: its per-fold results ({store.folds_path(path, config_id).name}) are "
                       f"missing or hold no {metric!r}.")
    return fold_values(folds, metric, score, _restores(path, config_id)).mean(axis=1), folds
  return score_values(values, metric, score, stopped, np.asarray(entry["best_epoch"], dtype=int),
                      _restores(path, config_id)).astype(np.float64), None


def fold_values(folds: dict[str, Any], metric: str, score: str, restores: bool) -> np.ndarray:
  """`[repeats, folds]` float64: each fold of each repeat scored as `score_values` scores a repeat."""
  values = folds["history"][metric]
  repeats, n_folds, epochs = values.shape
  flat = lambda a: np.asarray(a).reshape(repeats * n_folds, *np.shape(a)[2:])
  scored = score_values(flat(values), metric, score, flat(folds["stopped_epoch"]), flat(folds["best_epoch"]),
                        restores)
  return scored.astype(np.float64).reshape(repeats, n_folds)


def score_values(values: np.ndarray, metric: str, score: str, stopped_epoch: np.ndarray,
                 best_epoch: np.ndarray, restores: bool) -> np.ndarray:
  """`[repeats]` scores of one config: its `[repeats, epochs]` values of `metric` taken as `score` says."""
  if score == "best":
    return best_values(values, metric)
  if score == "restored":
    return restored_values(values, stopped_epoch, best_epoch, restores)
  return final_values(values, stopped_epoch)


def _restores(path: Path, config_id: str) -> bool:
  """Whether a config's early stopping restores the best weights (from configs/<id>.json)."""
  train = store.read_json(store.config_path(path, config_id)).get("train") or {}
  return bool((train.get("early_stopping") or {}).get("restore_best_weights"))


# ---------------------------------------------------------------------------
# CSV text.


def _csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
  out = io.StringIO()
  writer = csv.writer(out, lineterminator="\n")
  writer.writerow(header)
  for row in rows:
    writer.writerow([store.format_value(v) for v in row])
  return out.getvalue()


def scores_csv(folder: Folder) -> str:
  """scores.csv text: one row per (done config, repeat), in study then repeat order."""
  names: list[str] = []
  for c in folder.done:
    names += [m for m in folder.manifest["configs"][c]["metrics"] if m not in names]
  restoring = [c for c in folder.done if _restores(folder.path, c)]
  restored_names = names if restoring else []
  n_folds = max((folder.folds[c]["stopped_epoch"].shape[1] for c in folder.folds), default=0)
  fold_columns = [f"{folder.score}_{folder.metric}_fold{f}" for f in range(n_folds)]
  header = (["config_id", "repeat", *folder.grid] + [f"final_{m}" for m in names]
            + [f"best_{m}" for m in names] + [f"restored_{m}" for m in restored_names]
            + ["best_epoch", "stopped_epoch", "diverged"] + fold_columns)
  rows = []
  for c in folder.done:
    entry, history = folder.manifest["configs"][c], folder.histories[c]
    stopped = folder.stopped_epoch[c]
    best_epoch = np.asarray(entry["best_epoch"], dtype=int)
    folds = folder.folds.get(c)
    if folds is None:
      finals = {m: final_values(v, stopped) for m, v in history.items()}
      bests = {m: best_values(v, m) for m, v in history.items()}
      restored = {m: restored_values(v, stopped, best_epoch, c in restoring) for m, v in history.items()}
      per_fold = np.full((len(stopped), 0), np.nan)
    else:  # each fold scored on its own, then averaged: the repeat's score is one of these means
      mean = lambda how: {m: fold_values(folds, m, how, c in restoring).mean(axis=1) for m in folds["history"]}
      finals, bests, restored = mean("final"), mean("best"), mean("restored")
      per_fold = fold_values(folds, folder.metric, folder.score, c in restoring)
    for i in range(len(stopped)):
      row = [c, i, *[entry["values"][k] for k in folder.grid]]
      row += [finals[m][i] if m in finals else None for m in names]
      row += [bests[m][i] if m in bests else None for m in names]
      row += [restored[m][i] if m in restored else None for m in restored_names]
      row += [entry["best_epoch"][i], stopped[i] if stopped[i] >= 0 else None, bool(folder.diverged[c][i])]
      row += [per_fold[i, f] if f < per_fold.shape[1] else None for f in range(n_folds)]
      rows.append(row)
  return _csv_text(header, rows)


def summary_frame(folder: Folder):
  """`stats.summarize` of each done config's scores, as a frame indexed by config id (or None)."""
  from jaxlstm.stats import summarize
  if not folder.done:
    return None
  return summarize({c: folder.scores[c] for c in folder.done}, higher_is_better=folder.higher_is_better,
                   confidence=CONFIDENCE, diverged={c: folder.diverged[c] for c in folder.done}).to_frame()


def summary_csv(folder: Folder) -> str:
  """summary.csv text: config id, grid values, then describe() order + n_diverged, sem, CI, IQM."""
  frame = summary_frame(folder)
  rows = []
  if frame is not None:
    for c, stats_row in frame.iterrows():
      plain = [int(stats_row[k]) if k in ("count", "n_diverged") else float(stats_row[k]) for k in SUMMARY_COLUMNS]
      ensemble = (folder.manifest["configs"][c].get("ensemble") or {}).get(folder.metric, math.nan)
      rows.append([c, *[folder.values(c)[k] for k in folder.grid], *plain, float(ensemble)])
  return _csv_text(["config_id", *folder.grid, *SUMMARY_COLUMNS, ENSEMBLE_COLUMN], rows)


def diagnosis_frame(folder: Folder, thresholds: diagnose.Thresholds = diagnose.Thresholds()):
  """Per-repeat learning-curve verdicts of every done config (None without train/val losses)."""
  import pandas as pd
  if not folder.done or not all({"loss", "val_loss"} <= set(folder.histories[c]) for c in folder.done):
    return None
  frames = []
  for c in folder.done:
    history, mask = folder.histories[c], folder.diverged[c]
    repeats = diagnose.diagnose_repeats(history["loss"].astype(np.float64), history["val_loss"].astype(np.float64),
                                        thresholds=thresholds, diverged=mask,
                                        baseline_loss=baseline_loss(folder, c))
    repeats.insert(0, "config_id", c)
    for i, key in enumerate(folder.grid):
      repeats.insert(1 + i, key, _cell(folder.values(c)[key]))
    at = 2 + len(folder.grid)
    repeats.insert(at, "diverged", mask)
    repeats.insert(at + 1, "stopped_epoch", pd.array(
        [int(e) if e >= 0 else pd.NA for e in folder.stopped_epoch[c]], dtype="Int64"))
    frames.append(repeats)
  return pd.concat(frames, ignore_index=True)


def baseline_loss(folder: Folder, config_id: str) -> float | None:
  """The training loss of predicting the training mean: the capacity rule's reference (or None)."""
  return capacity_reference((folder.manifest.get("baselines") or {}).get(config_id) or {})


def capacity_reference(baselines: dict[str, Any]) -> float | None:
  """A config's recorded `train_mean_loss` when it can serve the capacity rule (> 0), else None.

  A target the training mean predicts exactly (a constant series) records 0: no loss is
  high against that, so the diagnosis falls back to its relative capacity rule.
  """
  value = baselines.get("train_mean_loss")
  return float(value) if value is not None and 0 < float(value) < math.inf else None


def baseline_scores(folder: Folder, config_id: str) -> dict[str, float] | None:
  """Naive forecasts' validation scores in the study's metric (lower is better), or None."""
  if folder.higher_is_better:
    return None
  scores = ((folder.manifest.get("baselines") or {}).get(config_id) or {}).get(folder.metric)
  return dict(scores) if scores else None


def diagnosis_csv(folder: Folder) -> str:
  """diagnosis.csv text; only the header row when there is nothing to diagnose."""
  import pandas as pd
  frame = diagnosis_frame(folder)
  if frame is None:
    frame = pd.DataFrame(columns=["config_id", *folder.grid, "repeat", "diverged", "stopped_epoch",
                                  "verdict", "trend", "reason"])
  return _frame_csv(frame)


def paired(folder: Folder) -> bool:
  """Whether the done configs ran paired (`train.paired`: repeat i of each drew the same keys)."""
  if len(folder.done) < 2:
    return False
  sizes = {len(folder.scores[c]) for c in folder.done}
  flags = [bool((store.read_json(store.config_path(folder.path, c)).get("train") or {}).get("paired"))
           for c in folder.done]
  return all(flags) and len(sizes) == 1


def comparisons(folder: Folder, rng_seed: int = RNG_SEED):
  """Compare the done configs (Welch, Holm, P(A better than B)): every pair up to
  `MAX_ALL_PAIRS` configs, else the best against each other one.

  Returns:
    A `stats.Comparison`, or None with fewer than 2 configs (or no finite mean).
  """
  from jaxlstm import stats
  n = len(folder.done)
  if n < 2:
    return None
  against = "all" if n <= MAX_ALL_PAIRS else "best"
  scores = {c: folder.scores[c] for c in folder.done}
  diverged = {c: folder.diverged[c] for c in folder.done}
  if against == "best" and stats.summarize(scores, higher_is_better=folder.higher_is_better,
                                           diverged=diverged).best is None:
    return None
  pair = paired(folder)
  return stats.compare_configs(
      scores, higher_is_better=folder.higher_is_better, rng=np.random.default_rng(rng_seed), against=against,
      test="paired_t" if pair else "welch", alpha=ALPHA, n_resamples=POI_RESAMPLES, confidence=CONFIDENCE,
      diverged=diverged, paired=pair)


def comparisons_csv(folder: Folder, rng_seed: int = RNG_SEED) -> str:
  """comparisons.csv text: stats' pair columns with each side's label after a and b."""
  import pandas as pd

  from jaxlstm import stats
  result = comparisons(folder, rng_seed)
  columns = [f.name for f in dataclasses.fields(stats.PairedComparison if paired(folder) else stats.PairComparison)]
  frame = result.to_frame() if result is not None else pd.DataFrame(columns=columns)
  labels = store.config_labels(folder.manifest)
  frame.insert(2, "a_label", [labels[c] for c in frame["a"]])
  frame.insert(3, "b_label", [labels[c] for c in frame["b"]])
  return _frame_csv(frame)


def _cell(value: Any) -> Any:
  """A grid value as a CSV cell: scalars as they are, lists as JSON (as scores.csv writes them)."""
  import json
  if value is None or isinstance(value, (bool, int, float, str)):
    return value
  return json.dumps(value, sort_keys=True)


def _frame_csv(frame) -> str:
  # Floats go out as Python's shortest round-trip repr, so equal numbers give equal bytes.
  out = io.StringIO()
  frame.to_csv(out, index=False, lineterminator="\n")
  return out.getvalue()


# ---------------------------------------------------------------------------
# Writers: one per file.


def write_scores(folder: Folder) -> None:
  store.write_text(folder.path / SCORES, scores_csv(folder))


def write_summary(folder: Folder) -> None:
  store.write_text(folder.path / SUMMARY, summary_csv(folder))


def write_diagnosis(folder: Folder) -> None:
  store.write_text(folder.path / DIAGNOSIS, diagnosis_csv(folder))


def write_comparisons(folder: Folder, rng_seed: int = RNG_SEED) -> None:
  store.write_text(folder.path / COMPARISONS, comparisons_csv(folder, rng_seed))


def write_running(run_dir: str | Path) -> None:
  """The cheap tables (scores, summary), rebuilt after each group while a sweep runs."""
  folder = read_folder(run_dir)
  write_scores(folder)
  write_summary(folder)


def write_all(run_dir: str | Path, *, rng_seed: int = RNG_SEED) -> None:
  """Rebuild all four tables from the folder's files (atomic; unchanged files are left alone).

  Args:
    run_dir: the results folder.
    rng_seed: seed of the bootstrap of each P(A better than B) interval.
  """
  folder = read_folder(run_dir)
  write_scores(folder)
  write_summary(folder)
  write_diagnosis(folder)
  write_comparisons(folder, rng_seed)


def format_summary(run_dir: str | Path) -> str:
  """The describe()-style table of the score metric per config, as printed at the end."""
  import pandas as pd
  manifest = store.RunFolder.read_manifest(run_dir)
  path = Path(run_dir, SUMMARY)
  frame = pd.read_csv(path, dtype={"config_id": str}) if path.is_file() else None
  if frame is None or frame.empty:
    return "no config has finished yet"
  labels = store.config_labels(manifest)
  columns = ["count", "n_diverged", "mean", "std", "min", "25%", "50%", "75%", "max"]
  table = frame[columns].copy()
  table.index = [labels[c] for c in frame["config_id"]]
  table["count"] = table["count"].astype(int)
  table["n_diverged"] = table["n_diverged"].astype(int)
  head = (f"{store.summary_score(manifest)} {store.summary_metric(manifest)} over {manifest['study']['repeats']} repeats per config "
          "(diverged repeats counted, not averaged):")
  return head + "\n" + table.to_string(float_format=lambda v: f"{v:.6g}")


def read(run_dir: str | Path, name: str):
  """One table of a folder as a DataFrame (config ids stay text), or None when it is missing."""
  import pandas as pd
  path = Path(run_dir, name)
  if not path.is_file():
    return None
  return pd.read_csv(path, dtype={"config_id": str, "a": str, "b": str})

