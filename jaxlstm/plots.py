"""Matplotlib figures of runs of many repeats (numpy, pandas and matplotlib only).

Every plotting function takes its data and ``ax=None`` and returns the ``Axes``
it drew on (``learning_curves_grid`` returns the ``[rows, cols]`` array of its
Axes); the figure is ``ax.figure``. Without ``ax`` a new figure is made with
``matplotlib.figure.Figure``, which bypasses pyplot: nothing is shown, no GUI
backend is needed, and no figure piles up in pyplot's registry. ``save``
writes a PNG atomically and closes the figure.

Conventions: curves are ``[repeats, epochs]`` arrays with NaN after a repeat
stopped early; statistics over repeats ignore NaN and use ddof=1.
"""
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib
import matplotlib.figure
import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from jaxlstm.diagnose import VERDICTS

# Fixed colours per verdict so every overview reads the same way.
VERDICT_COLORS = {
    "good_fit": "#2ca02c",
    "underfit_improving": "#1f77b4",
    "underfit_capacity": "#17becf",
    "overfit": "#ff7f0e",
    "high_variance": "#bcbd22",
    "unstable": "#9467bd",
    "not_learning": "#7f7f7f",
    "diverged": "#d62728",
}
_TRAIN_COLOR, _VAL_COLOR = "C0", "C1"


def _new_axes(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
  if ax is not None:
    return ax
  return matplotlib.figure.Figure(figsize=figsize, layout="constrained").add_subplot()


def _nan_mean_std(curves: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Mean and std (ddof=1) over repeats, NaN where too few repeats are finite.

  Done by hand because np.nanmean/np.nanstd warn on all-NaN epochs, which are
  normal once every repeat has stopped.
  """
  finite = np.isfinite(curves)
  count = finite.sum(axis=0)
  total = np.where(finite, curves, 0.0).sum(axis=0)
  mean = np.divide(total, count, out=np.full(count.shape, np.nan), where=count > 0)
  sq = np.where(finite, (curves - mean) ** 2, 0.0).sum(axis=0)
  std = np.sqrt(np.divide(sq, count - 1, out=np.full(count.shape, np.nan), where=count > 1))
  return mean, std


def _scores_by_config(scores) -> dict[str, np.ndarray]:
  if isinstance(scores, pd.DataFrame):
    return {str(c): scores[c].to_numpy(float) for c in scores.columns}
  return {str(c): np.asarray(v, float).ravel() for c, v in scores.items()}


def scores_box(
    scores: Mapping[Any, Sequence[float]] | pd.DataFrame,
    *,
    diverged: Mapping[Any, Sequence[bool]] | None = None,
    ylabel: str = "score",
    jitter: float = 0.08,
    rng: np.random.Generator | None = None,
    ax: Axes | None = None,
) -> Axes:
  """Box plot of the final scores per config, with every repeat as a jittered point.

  Diverged repeats (marked in ``diverged``, or with a non-finite score) are left
  out of the box; those with a finite score are drawn as red crosses. Each
  tick label reads ``"<config>\\nn=<used>, diverged=<count>"``.

  Args:
    scores: config -> ``[repeats]`` scores, or a wide DataFrame (one column per
      config, one row per seed).
    diverged: optional config -> ``[repeats]`` bool mask from training.
    ylabel: y-axis label.
    jitter: half-width of the uniform horizontal jitter of the points.
    rng: generator for the jitter; default ``np.random.default_rng(0)`` so the
      figure is reproducible.
    ax: Axes to draw on; a new figure if None.

  Returns:
    The Axes: one box per config (``ax.patches``), one point collection per
    config (plus one for the crosses of configs with finite diverged scores).
  """
  ax = _new_axes(ax, (max(4.0, 1.2 * len(scores) + 2), 4.0))
  rng = np.random.default_rng(0) if rng is None else rng
  data = _scores_by_config(scores)
  marks = {str(k): np.asarray(v, bool).ravel() for k, v in (diverged or {}).items()}
  kept, labels = [], []
  for i, (config, values) in enumerate(data.items()):
    marked = marks.get(config, np.zeros(len(values), bool))
    if marked.shape != values.shape:
      raise ValueError(f"config {config!r}: diverged has shape {marked.shape}, "
                       f"scores {values.shape}.")
    bad = marked | ~np.isfinite(values)
    used = values[~bad]
    kept.append(used)
    labels.append(f"{config}\nn={len(used)}, diverged={int(bad.sum())}")
    x = i + 1 + rng.uniform(-jitter, jitter, len(used))
    ax.scatter(x, used, s=12, alpha=0.6, color="k", zorder=3)
    lost = values[marked & np.isfinite(values)]
    if len(lost):
      ax.scatter(np.full(len(lost), i + 1.0), lost, marker="x", color="red", zorder=3)
  ax.boxplot(kept, showfliers=False, patch_artist=True,
             boxprops={"facecolor": "none"}, medianprops={"color": "C1"})
  ax.set_xticks(np.arange(1, len(labels) + 1), labels)
  ax.set_ylabel(ylabel)
  return ax


def learning_curves(
    train: np.ndarray,
    val: np.ndarray,
    *,
    title: str | None = None,
    ylabel: str = "loss",
    log: bool = False,
    ax: Axes | None = None,
) -> Axes:
  """Every repeat's train and validation curve with mean +- std bands.

  Per-repeat curves are thin and translucent (fainter as repeats grow, so that a
  crowd reads as density); the means (over the repeats still running at each
  epoch) are thick, edged in white, on top, with +- one std (ddof=1) bands. A repeat
  whose curve ends before the last epoch (stopped early) gets a marker at its
  last finite epoch.

  Args:
    train: training loss, ``[repeats, epochs]``, NaN after a stop.
    val: validation loss, same shape.
    title: Axes title.
    ylabel: y-axis label.
    log: log-scale y axis (losses spanning decades); the band's lower edge is
      clipped to the smallest positive value plotted.
    ax: Axes to draw on; a new figure if None.

  Returns:
    The Axes: the thin curves as one ``LineCollection`` per curve kind (train,
    then validation; one artist each, so a thousand repeats draw in a second),
    the 2 mean lines (``ax.lines``), 2 bands, and one stop-marker collection per
    curve kind with stops.

  Raises:
    ValueError: if the shapes differ or are not ``[repeats, epochs]``.
  """
  train, val = np.atleast_2d(np.asarray(train, float)), np.atleast_2d(np.asarray(val, float))
  if train.shape != val.shape or train.ndim != 2:
    raise ValueError(f"expected train and val of the same shape [repeats, epochs], "
                     f"got {train.shape} and {val.shape}.")
  ax = _new_axes(ax, (6.0, 4.0))
  epochs = np.arange(train.shape[1])
  kinds = ((train, _TRAIN_COLOR, "train"), (val, _VAL_COLOR, "validation"))
  import matplotlib.collections
  import matplotlib.patheffects
  # Fainter as repeats grow, so that where they crowd reads as density (0.3 up to 20 repeats, 0.02
  # from 300); the means get a white edge to stay visible on top of a crowd of their own colour.
  alpha = min(0.3, max(0.02, 6.0 / max(len(train), 1)))
  edge = [matplotlib.patheffects.withStroke(linewidth=3.5, foreground="white")]
  for curves, color, name in kinds:
    # Each repeat's finite epochs (a stopped repeat's NaN tail is not drawn; a curve with holes is
    # one only when it diverged, and the report blanks those).
    segments = [np.column_stack([epochs[ok], curve[ok]]) for curve, ok in zip(curves, np.isfinite(curves)) if ok.any()]
    ax.add_collection(matplotlib.collections.LineCollection(segments, colors=color, linewidths=0.6, alpha=alpha,
                                                            label=f"_{name} repeats"))
  for curves, color, name in kinds:
    mean, std = _nan_mean_std(curves)
    low = mean - std
    if log:
      # mean - std often dips below zero; on a log axis clip it to the data.
      positive = curves[np.isfinite(curves) & (curves > 0)]
      low = np.maximum(low, positive.min() if positive.size else np.nan)
    ax.plot(epochs, mean, color=color, lw=2.0, label=f"{name} mean", zorder=3, path_effects=edge)
    ax.fill_between(epochs, low, mean + std, color=color, alpha=0.2, lw=0)
    # A stop shows as the last finite epoch before a NaN tail.
    finite = np.isfinite(curves)
    last = curves.shape[1] - 1 - np.argmax(finite[:, ::-1], axis=1)  # last finite epoch
    stopped = finite.any(axis=1) & (last < curves.shape[1] - 1)
    if stopped.any():
      rows = np.flatnonzero(stopped)
      ax.scatter(last[rows], curves[rows, last[rows]], marker="o", s=18, color=color,
                 edgecolor="k", zorder=3, label=f"{name} stopped")
  if log:
    ax.set_yscale("log")
  ax.autoscale_view()  # the collections' extent counts too
  ax.set_xlabel("epoch")
  ax.set_ylabel(ylabel)
  if title is not None:
    ax.set_title(title)
  ax.legend(fontsize="small")
  return ax


def learning_curves_grid(
    histories: Mapping[Any, Mapping[str, np.ndarray]],
    *,
    train_metric: str = "loss",
    val_metric: str = "val_loss",
    ncols: int = 3,
    log: bool = False,
) -> np.ndarray:
  """One ``learning_curves`` panel per config, in one figure.

  Args:
    histories: config id -> metric -> ``[repeats, epochs]`` array.
    train_metric: training-loss key.
    val_metric: validation-loss key.
    ncols: panels per row.
    log: log-scale y axes.

  Returns:
    ``[rows, cols]`` array of Axes; panels past the last config are hidden.
  """
  n = len(histories)
  if n == 0:
    raise ValueError("histories is empty: nothing to plot.")
  ncols = min(ncols, n)
  nrows = -(-n // ncols)
  fig = matplotlib.figure.Figure(figsize=(5.0 * ncols, 3.6 * nrows), layout="constrained")
  axes = np.asarray(fig.subplots(nrows, ncols, squeeze=False))
  for ax, (config, history) in zip(axes.flat, histories.items()):
    learning_curves(history[train_metric], history[val_metric], title=str(config),
                    ylabel=train_metric, log=log, ax=ax)
  for ax in axes.flat[n:]:
    ax.set_visible(False)
  return axes


def repeats_convergence(
    scores: Sequence[float] | pd.DataFrame,
    *,
    ylabel: str = "score",
    ax: Axes | None = None,
) -> Axes:
  """How the mean of the first n repeats settles as n grows.

  Left axis: the mean of the first n scores with a +- SEM(n) band and the mean
  of all as a dashed line. Right axis (a twin, ``ax.figure.axes[-1]``): SEM(n)
  = s_n / sqrt(n) (ddof=1) against sigma / sqrt(n), sigma the std of all scores.

  Args:
    scores: ``[repeats]`` scores in repeat order (non-finite ones are dropped), or a
      frame with columns ``n``, ``mean``, ``sem`` (e.g. renamed from
      ``stats.repeats_curve``); the reference line then uses the last row's
      ``sem * sqrt(n)`` as sigma.
    ylabel: left y-axis label.
    ax: Axes to draw on; a new figure if None.

  Returns:
    The left Axes (2 lines, 1 band); its twin holds 2 lines.

  Raises:
    ValueError: with fewer than 2 finite scores.
  """
  if isinstance(scores, pd.DataFrame):
    n = scores["n"].to_numpy(float)
    mean = scores["mean"].to_numpy(float)
    sem = scores["sem"].to_numpy(float)
    sigma = sem[-1] * np.sqrt(n[-1])
    overall = mean[-1]
  else:
    values = np.asarray(scores, float).ravel()
    values = values[np.isfinite(values)]
    if len(values) < 2:
      raise ValueError(f"need at least 2 finite scores, got {len(values)}.")
    n = np.arange(1, len(values) + 1, dtype=float)
    mean = np.cumsum(values) / n
    # Running ddof=1 variance; SEM(1) is undefined (NaN).
    sq = np.cumsum(values ** 2) - n * mean ** 2
    var = np.divide(sq, n - 1, out=np.full(n.shape, np.nan), where=n > 1)
    sem = np.sqrt(np.maximum(var, 0.0)) / np.sqrt(n)
    sigma = float(np.std(values, ddof=1))
    overall = float(values.mean())
  ax = _new_axes(ax, (6.0, 4.0))
  ax.plot(n, mean, color="C0", marker=".", label="mean of first n")
  ax.fill_between(n, mean - sem, mean + sem, color="C0", alpha=0.2, lw=0, label="± SEM(n)")
  ax.axhline(overall, color="C0", ls="--", lw=1.0, label="mean of all")
  ax.set_xlabel("repeats n")
  ax.set_ylabel(ylabel)
  twin = ax.twinx()
  twin.plot(n, sem, color="C3", label="SEM(n)")
  twin.plot(n, sigma / np.sqrt(n), color="C3", ls=":", label="sigma / sqrt(n)")
  twin.set_ylabel("standard error")
  handles = ax.get_legend_handles_labels()
  twin_handles = twin.get_legend_handles_labels()
  ax.legend(handles[0] + twin_handles[0], handles[1] + twin_handles[1], fontsize="small")
  return ax


def diagnosis_overview(diagnosis: pd.DataFrame, *, ax: Axes | None = None) -> Axes:
  """Stacked bars of the verdict shares per config.

  Args:
    diagnosis: either the per-repeat frame of ``diagnose.diagnose_run`` (columns
      ``config`` and ``verdict``) or its per-config frame (columns ``config``
      and ``share_<verdict>``).
    ax: Axes to draw on; a new figure if None.

  Returns:
    The Axes: one bar container per verdict (``ax.containers``), one bar per
    config in each, stacked to 1.

  Raises:
    ValueError: if the frame has neither layout.
  """
  if "verdict" in diagnosis.columns:
    counts = pd.crosstab(diagnosis["config"].astype(str), diagnosis["verdict"])
    order = list(dict.fromkeys(diagnosis["config"].astype(str)))
    shares = counts.div(counts.sum(axis=1), axis=0).reindex(order)
  elif any(c.startswith("share_") for c in diagnosis.columns):
    shares = diagnosis.set_index(diagnosis["config"].astype(str)).filter(like="share_")
    shares.columns = [c.removeprefix("share_") for c in shares.columns]
  else:
    raise ValueError("expected a frame with columns config and verdict, or config and "
                     f"share_<verdict>; got {list(diagnosis.columns)}.")
  shares = shares.reindex(columns=list(VERDICTS), fill_value=0.0).fillna(0.0)
  ax = _new_axes(ax, (max(4.0, 0.9 * len(shares) + 3), 4.0))
  x = np.arange(len(shares))
  bottom = np.zeros(len(shares))
  for verdict in VERDICTS:
    height = shares[verdict].to_numpy(float)
    ax.bar(x, height, bottom=bottom, color=VERDICT_COLORS[verdict], label=verdict)
    bottom += height
  ax.set_xticks(x, list(shares.index))
  ax.set_ylim(0, 1)
  ax.set_ylabel("share of repeats")
  ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
  return ax


def prob_improvement_matrix(
    matrix: pd.DataFrame | np.ndarray,
    *,
    labels: Sequence[str] | None = None,
    annotate: bool = True,
    ax: Axes | None = None,
) -> Axes:
  """Heatmap of P(row config better than column config).

  Args:
    matrix: ``[configs, configs]`` probabilities in [0, 1] (NaN cells, e.g.
      the diagonal, are left blank); a DataFrame supplies its own labels. From
      a long pairwise table: ``df.pivot(index="a", columns="b", values="p")``.
    labels: config names for an array.
    annotate: write each probability in its cell.
    ax: Axes to draw on; a new figure if None.

  Returns:
    The Axes: one image (``ax.images``), a colorbar, one text per finite cell.

  Raises:
    ValueError: if the matrix is not square or the labels do not match.
  """
  if isinstance(matrix, pd.DataFrame):
    labels = [str(c) for c in matrix.index] if labels is None else labels
    values = matrix.to_numpy(float)
  else:
    values = np.asarray(matrix, float)
  if values.ndim != 2 or values.shape[0] != values.shape[1]:
    raise ValueError(f"expected a square [configs, configs] matrix, got {values.shape}.")
  labels = [str(i) for i in range(len(values))] if labels is None else list(labels)
  if len(labels) != len(values):
    raise ValueError(f"expected {len(values)} labels, got {len(labels)}.")
  ax = _new_axes(ax, (1.0 * len(values) + 3, 0.9 * len(values) + 2))
  # Diverging map centred on 0.5 (no difference).
  cmap = matplotlib.colormaps["RdBu"].with_extremes(bad="0.85")  # grey: no value
  image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0.0, vmax=1.0)
  ax.figure.colorbar(image, ax=ax, label="P(row better than column)")
  ticks = np.arange(len(values))
  ax.set_xticks(ticks, labels, rotation=45, ha="right")
  ax.set_yticks(ticks, labels)
  if annotate:
    for (i, j), p in np.ndenumerate(values):
      if np.isfinite(p):
        ax.text(j, i, f"{p:.2f}", ha="center", va="center",
                color="white" if abs(p - 0.5) > 0.3 else "black", fontsize="small")
  ax.set_xlabel("column config")
  ax.set_ylabel("row config")
  return ax


def search_progress(
    trials: pd.DataFrame,
    *,
    higher_is_better: bool = False,
    ylabel: str = "objective",
    ax: Axes | None = None,
) -> Axes:
  """Objective of each complete trial by trial number, and the best so far as a step line.

  Args:
    trials: ``trials.csv`` as a frame (columns ``trial``, ``state``, ``objective``);
      failed and worst-valued (non-finite) trials are left out.
    higher_is_better: direction of the objective.
    ylabel: y-axis label.
    ax: Axes to draw on; a new figure if None.

  Returns:
    The Axes: one point collection (the trials) and one line (the best so far).
  """
  ax = _new_axes(ax, (6.0, 3.8))
  done = trials[(trials["state"] == "COMPLETE") & np.isfinite(trials["objective"].astype(float))]
  done = done.sort_values("trial")
  x, y = done["trial"].to_numpy(int), done["objective"].to_numpy(float)
  best = np.maximum.accumulate(y) if higher_is_better else np.minimum.accumulate(y)
  ax.scatter(x, y, s=16, color="k", alpha=0.6, zorder=3, label="trial")
  ax.step(x, best, where="post", color="C1", label="best so far")
  ax.set_xlabel("trial")
  ax.set_ylabel(ylabel)
  ax.legend(loc="best", fontsize="small")
  return ax


def search_parameter(
    trials: pd.DataFrame,
    repeats: Mapping[int, Sequence[float]],
    name: str,
    *,
    log: bool = False,
    ylabel: str = "objective",
    ax: Axes | None = None,
) -> Axes:
  """Objective against one searched field: each trial's repeats (small grey points) and objective.

  Args:
    trials: ``trials.csv`` as a frame (``trial``, ``state``, ``objective``, ``name``).
    repeats: trial number -> its ``[repeats]`` scores (the spread behind the objective).
    name: the field (a column of ``trials``).
    log: a log x axis (a log-uniform or log int dimension).
    ylabel: y-axis label.
    ax: Axes to draw on; a new figure if None.

  Returns:
    The Axes: one point collection of repeats, one of objectives.
  """
  ax = _new_axes(ax, (5.0, 3.6))
  done = trials[(trials["state"] == "COMPLETE") & np.isfinite(trials["objective"].astype(float))]
  values = done[name]
  numeric = pd.api.types.is_numeric_dtype(values)
  labels = {v: i for i, v in enumerate(dict.fromkeys(values.astype(str)))} if not numeric else None
  position = (lambda v: float(v)) if numeric else (lambda v: labels[str(v)])
  xs, ys = [], []
  for trial, value in zip(done["trial"], values):
    scores = np.asarray(repeats.get(int(trial), ()), float)
    scores = scores[np.isfinite(scores)]
    xs += [position(value)] * len(scores)
    ys += list(scores)
  ax.scatter(xs, ys, s=6, color="0.6", alpha=0.6, zorder=2, label="repeats")
  ax.scatter([position(v) for v in values], done["objective"].astype(float), s=24, color="C0", zorder=3,
             label="objective")
  if labels is not None:
    ax.set_xticks(list(labels.values()), list(labels))
  elif log:
    ax.set_xscale("log")
  ax.set_xlabel(name)
  ax.set_ylabel(ylabel)
  return ax


def save(figure: matplotlib.figure.Figure | Axes | np.ndarray, path: str | os.PathLike,
         *, dpi: int = 120) -> None:
  """Write a figure to ``path`` as PNG atomically, then close it.

  The PNG goes to a temporary file in the same folder and is moved over
  ``path`` with ``os.replace``, so a reader never sees half a file.

  Args:
    figure: a Figure, an Axes or an array of Axes (their figure is saved).
    path: destination; its folder is created if missing.
    dpi: resolution.
  """
  if isinstance(figure, np.ndarray):
    figure = figure.flat[0]
  if isinstance(figure, Axes):
    figure = figure.figure
  path = os.fspath(path)
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".png")
  try:
    with os.fdopen(fd, "wb") as f:
      figure.savefig(f, format="png", dpi=dpi)
    os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; results are meant to be shared.
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  finally:
    # Only a pyplot-made figure sits in pyplot's registry; never import pyplot
    # here just to close (that would pick a backend).
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
      pyplot.close(figure)
