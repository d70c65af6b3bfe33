"""Tests for jaxlstm.plots: figures build on tiny data, hold the expected artists, save as PNG."""
import ast
import os
import pathlib

import matplotlib.collections
import matplotlib.figure
import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes

from jaxlstm import diagnose, plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def curves(seeds=3, epochs=20, stop=None):
  """Tiny decaying [seeds, epochs] train/val curves; seed 0 stops after `stop` epochs."""
  e = np.arange(epochs, dtype=float)
  scale = 1.0 + 0.1 * np.arange(seeds)[:, None]
  train, val = scale * np.exp(-e / 8), scale * np.exp(-e / 10) + 0.1
  if stop is not None:
    train[0, stop:] = val[0, stop:] = np.nan
  return train, val


def imported_modules(module):
  tree = ast.parse(pathlib.Path(module.__file__).read_text())
  names = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      names.add(node.module)
  return names


def assert_png(path):
  assert os.path.exists(path)
  with open(path, "rb") as f:
    assert f.read(8) == PNG_MAGIC


def test_module_does_not_import_pyplot_or_jax():
  # plots never imports jax, and avoids pyplot (no backend choice, no show()).
  imported = imported_modules(plots)
  assert not {n for n in imported if n == "jax" or n.startswith(("jax.", "flax", "optax"))}
  assert "matplotlib.pyplot" not in imported
  assert ".show(" not in pathlib.Path(plots.__file__).read_text()


def test_scores_box_counts_boxes_points_and_labels():
  scores = {"cells=1": [0.3, 0.25, np.nan, 0.28], "cells=5": [0.1, 0.12, 0.11, 0.5]}
  diverged = {"cells=5": [False, False, False, True]}
  ax = plots.scores_box(scores, diverged=diverged)
  assert isinstance(ax, Axes) and isinstance(ax.figure, matplotlib.figure.Figure)
  assert len(ax.patches) == 2  # one box per config
  labels = [t.get_text() for t in ax.get_xticklabels()]
  assert labels == ["cells=1\nn=3, diverged=1", "cells=5\nn=3, diverged=1"]
  # Points: 3 + 3 used seeds; one red cross for the diverged seed with a finite score.
  dots = [c for c in ax.collections if isinstance(c, matplotlib.collections.PathCollection)]
  assert sorted(len(c.get_offsets()) for c in dots) == [1, 3, 3]
  # Jitter stays within its half-width around each box position.
  xs = np.concatenate([np.asarray(c.get_offsets())[:, 0] for c in dots])
  assert np.all(np.abs(xs - np.round(xs)) <= 0.08 + 1e-12)


def test_scores_box_accepts_a_wide_frame_and_is_reproducible():
  frame = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [2.0, 3.0, 4.0], "c": [0.0, 1.0, 1.0]})
  first = plots.scores_box(frame, rng=np.random.default_rng(1))
  second = plots.scores_box(frame, rng=np.random.default_rng(1))
  assert len(first.patches) == 3
  np.testing.assert_array_equal(first.collections[0].get_offsets(),
                                second.collections[0].get_offsets())


def test_learning_curves_lines_bands_and_stop_markers():
  train, val = curves(seeds=3, epochs=20, stop=12)
  ax = plots.learning_curves(train, val, title="cells=10")
  # The thin per-repeat curves: one collection per kind, each repeat to its last finite epoch.
  thin = [c for c in ax.collections if isinstance(c, matplotlib.collections.LineCollection)]
  assert [len(c.get_segments()) for c in thin] == [3, 3]
  for collection, drawn in zip(thin, (train, val)):
    segments = collection.get_segments()
    assert len(segments[0]) == 12 and len(segments[1]) == 20  # repeat 0 stopped after epoch 11
    np.testing.assert_array_equal(segments[1], np.column_stack([np.arange(20), drawn[1]]))
  assert all(c.get_alpha() < 1 for c in thin)
  means = ax.lines
  assert len(means) == 2
  assert all(line.get_linewidth() > thin[0].get_linewidths()[0] for line in means)
  bands = [c for c in ax.collections if isinstance(c, matplotlib.collections.PolyCollection)]
  markers = [c for c in ax.collections if isinstance(c, matplotlib.collections.PathCollection)]
  assert len(bands) == 2
  assert len(markers) == 2  # train and validation stop markers for seed 0
  np.testing.assert_allclose(markers[0].get_offsets(), [[11, train[0, 11]]])
  np.testing.assert_allclose(markers[1].get_offsets(), [[11, val[0, 11]]])
  # Mean over the seeds still running: after the stop only seeds 1 and 2 count.
  np.testing.assert_allclose(means[0].get_ydata()[15], train[1:, 15].mean())
  assert ax.get_title() == "cells=10"


def test_learning_curves_of_many_repeats_stay_readable():
  """A thousand repeats: one collection a kind (not 2000 lines), faint enough to read as density,
  the means drawn on top of them."""
  train, val = curves(seeds=1000, epochs=6)
  ax = plots.learning_curves(train, val)
  thin = [c for c in ax.collections if isinstance(c, matplotlib.collections.LineCollection)]
  assert [len(c.get_segments()) for c in thin] == [1000, 1000]
  assert all(c.get_alpha() == 0.02 for c in thin)
  assert plots.learning_curves(*curves(seeds=20)).collections[0].get_alpha() == 0.3
  assert len(ax.lines) == 2 and all(line.get_zorder() > thin[0].get_zorder() for line in ax.lines)


def test_learning_curves_without_stops_has_no_markers_and_no_warnings():
  train, val = curves(seeds=2, epochs=10)
  train[:, 5:] = val[:, 5:] = np.nan  # every seed stopped: all-NaN epochs must not warn
  import warnings
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    ax = plots.learning_curves(train, val, log=True)
  assert ax.get_yscale() == "log"
  train, val = curves(seeds=2, epochs=10)
  ax = plots.learning_curves(train, val)
  assert not [c for c in ax.collections if isinstance(c, matplotlib.collections.PathCollection)]


def test_learning_curves_shape_error():
  with pytest.raises(ValueError, match="same shape"):
    plots.learning_curves(np.ones((2, 5)), np.ones((3, 5)))


def test_learning_curves_grid_one_panel_per_config(tmp_path):
  histories = {f"cells={c}": dict(zip(("loss", "val_loss"), curves(seeds=2)))
               for c in (1, 5, 10, 20)}
  axes = plots.learning_curves_grid(histories, ncols=3)
  assert axes.shape == (2, 3)
  visible = [ax for ax in axes.flat if ax.get_visible()]
  assert [ax.get_title() for ax in visible] == list(histories)
  assert all(len(ax.lines) == 2 for ax in visible)  # the means; the repeats are one collection a kind
  assert all(sum(len(c.get_segments()) for c in ax.collections
                 if isinstance(c, matplotlib.collections.LineCollection)) == 2 * 2 for ax in visible)
  plots.save(axes, tmp_path / "curves.png")
  assert_png(tmp_path / "curves.png")


def test_repeats_convergence_from_scores():
  rng = np.random.default_rng(0)
  scores = rng.normal(60.0, 10.0, 30)
  ax = plots.repeats_convergence(scores)
  assert len(ax.figure.axes) == 2  # the SEM twin
  twin = ax.figure.axes[-1]
  mean_line = ax.lines[0]
  np.testing.assert_allclose(mean_line.get_ydata()[-1], scores.mean())
  np.testing.assert_allclose(mean_line.get_ydata()[4], scores[:5].mean())
  sem_line, ref_line = twin.lines
  # SEM(n) uses ddof=1.
  np.testing.assert_allclose(sem_line.get_ydata()[9], scores[:10].std(ddof=1) / np.sqrt(10))
  np.testing.assert_allclose(ref_line.get_ydata()[3], scores.std(ddof=1) / 2.0)
  assert len([c for c in ax.collections
              if isinstance(c, matplotlib.collections.PolyCollection)]) == 1


def test_repeats_convergence_from_frame_and_errors():
  frame = pd.DataFrame({"n": [2, 3, 4], "mean": [1.0, 1.1, 1.05], "sem": [0.3, 0.2, 0.15]})
  ax = plots.repeats_convergence(frame)
  np.testing.assert_allclose(ax.figure.axes[-1].lines[1].get_ydata()[-1], 0.15)
  with pytest.raises(ValueError, match="at least 2 finite"):
    plots.repeats_convergence([1.0, np.nan])


def test_diagnosis_overview_from_per_seed_and_per_config(tmp_path):
  e = np.arange(200.0)
  good = (np.exp(-e / 20), np.exp(-e / 20) + 0.02)
  over = (np.exp(-e / 30), np.exp(-e / 30) + 0.05 + 0.0005 * e)
  histories = {
      "a": {"loss": np.stack([good[0]] * 3), "val_loss": np.stack([good[1]] * 3)},
      "b": {"loss": np.stack([good[0], over[0]]), "val_loss": np.stack([good[1], over[1]])},
  }
  per_seed, per_config = diagnose.diagnose_run(histories)
  for frame in (per_seed, per_config):
    ax = plots.diagnosis_overview(frame)
    assert len(ax.containers) == len(diagnose.VERDICTS)
    assert all(len(bars) == 2 for bars in ax.containers)
    heights = {bars.get_label(): [b.get_height() for b in bars] for bars in ax.containers}
    np.testing.assert_allclose(heights["good_fit"], [1.0, 0.5])
    np.testing.assert_allclose(heights["overfit"], [0.0, 0.5])
    np.testing.assert_allclose(np.sum(list(heights.values()), axis=0), [1.0, 1.0])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b"]
  plots.save(ax.figure, tmp_path / "diagnosis.png")
  assert_png(tmp_path / "diagnosis.png")
  with pytest.raises(ValueError, match="expected a frame"):
    plots.diagnosis_overview(pd.DataFrame({"x": [1]}))


def test_prob_improvement_matrix():
  names = ["c1", "c5", "c10"]
  p = np.array([[np.nan, 0.2, 0.1], [0.8, np.nan, 0.45], [0.9, 0.55, np.nan]])
  ax = plots.prob_improvement_matrix(pd.DataFrame(p, index=names, columns=names))
  assert len(ax.images) == 1
  assert len(ax.figure.axes) == 2  # heatmap and colorbar
  assert ax.images[0].get_clim() == (0.0, 1.0)
  assert sorted(t.get_text() for t in ax.texts) == sorted(f"{v:.2f}" for v in p[np.isfinite(p)])
  assert [t.get_text() for t in ax.get_yticklabels()] == names
  with pytest.raises(ValueError, match="square"):
    plots.prob_improvement_matrix(np.ones((2, 3)))
  with pytest.raises(ValueError, match="labels"):
    plots.prob_improvement_matrix(np.ones((2, 2)), labels=["a"])


def test_draws_on_a_given_axes():
  fig = matplotlib.figure.Figure()
  left, right = fig.subplots(1, 2)
  assert plots.scores_box({"a": [1.0, 2.0]}, ax=left) is left
  assert plots.learning_curves(*curves(), ax=right) is right
  assert len(fig.axes) == 2


def test_save_is_atomic_and_closes(tmp_path):
  ax = plots.scores_box({"a": [1.0, 2.0, 3.0]})
  target = tmp_path / "plots" / "box.png"  # folder created on demand
  plots.save(ax, target)
  assert_png(target)
  assert sorted(os.listdir(target.parent)) == ["box.png"]  # no temp file left behind
  first = target.stat().st_size
  plots.save(plots.scores_box({"a": [1.0, 2.0, 3.0], "b": [2.0, 3.0, 4.0]}), target)
  assert_png(target)
  assert target.stat().st_size != first  # replaced in place

  import matplotlib.pyplot as plt
  fig, pyplot_ax = plt.subplots()
  plots.scores_box({"a": [1.0, 2.0]}, ax=pyplot_ax)
  plots.save(fig, tmp_path / "pyplot.png")
  assert not plt.fignum_exists(fig.number)
  assert_png(tmp_path / "pyplot.png")


def test_failed_save_leaves_no_temp_file(tmp_path):
  class Broken(matplotlib.figure.Figure):
    def savefig(self, *args, **kwargs):
      raise RuntimeError("disk full")
  with pytest.raises(RuntimeError, match="disk full"):
    plots.save(Broken(), tmp_path / "x.png")
  assert os.listdir(tmp_path) == []


SEARCH_TRIALS = pd.DataFrame({
    "trial": [0, 1, 2, 3, 4], "state": ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE", "COMPLETE"],
    "objective": [0.5, 0.3, np.nan, np.inf, 0.4], "optim.learning_rate": [1e-3, 1e-2, 0.5, 1.0, 3e-3],
    "model.cell": ["lstm", "gru", "lstm", "gru", "lstm"]})


def test_search_progress_draws_finite_trials_and_the_best_so_far():
  ax = plots.search_progress(SEARCH_TRIALS)
  (points,) = ax.collections
  assert len(points.get_offsets()) == 3  # the failed and the worst-valued (inf) trials are left out
  (line,) = ax.lines
  np.testing.assert_allclose(line.get_ydata(), [0.5, 0.3, 0.3])
  high = plots.search_progress(SEARCH_TRIALS, higher_is_better=True)
  np.testing.assert_allclose(high.lines[0].get_ydata(), [0.5, 0.5, 0.5])


def test_search_parameter_draws_every_repeat_and_names_choices():
  repeats = {0: [0.4, 0.6], 1: [0.2, np.nan, 0.4], 4: [0.4]}
  ax = plots.search_parameter(SEARCH_TRIALS, repeats, "optim.learning_rate", log=True)
  spread, objective = ax.collections
  assert len(spread.get_offsets()) == 5 and len(objective.get_offsets()) == 3  # NaN repeats left out
  assert ax.get_xscale() == "log"
  ax = plots.search_parameter(SEARCH_TRIALS, repeats, "model.cell")
  assert [t.get_text() for t in ax.get_xticklabels()] == ["lstm", "gru"]
