"""jaxlstm.report on synthetic results folders: files, report text, CLI, determinism, edge cases.

The folders are written with the store's own code (`RunFolder.create`, `save_history`,
`write_tables`) and hand-made histories, so nothing trains: cells=2 is clearly the
best config, one seed of cells=4 diverges at epoch 20 and another stops early.
"""
import ast
import csv
import pathlib
import re
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest

from jaxlstm import report, store, tables
from jaxlstm.config import Config

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EPOCHS = 40
# cells -> final validation level; cells=2 is the best by far.
LEVELS = {1: 0.30, 2: 0.05, 4: 0.12}
DIVERGED = (4, 1, 20)      # (cells, seed, epoch)
STOPPED = (4, 3, 25)       # (cells, seed, stop epoch)


def make_folder(path, *, levels=None, repeats=5, epochs=EPOCHS, diverged=(), stopped=(),
                all_diverged=()):
  """A done results folder with hand-made histories, laid out by the store.

  Args:
    path: where.
    levels: cells -> final val level (None: one config, no grid).
    repeats: seeds per config.
    epochs: epochs per seed.
    diverged: (cells, seed, epoch) tuples; NaN from that epoch on, flagged in the manifest.
    stopped: (cells, seed, epoch) tuples; early stop at that epoch (NaN after it).
    all_diverged: cells whose every seed diverges at epoch 3.

  Returns:
    The folder's path.
  """
  rng = np.random.default_rng(123)
  base = Config().override({"train.epochs": epochs, "train.batch_size": 0, "train.shuffle": False})
  if levels is None:
    configs, grid, level_of = [base], {}, {base.config_id: 0.1}
  else:
    configs = [base.override({"model.cells": c}) for c in levels]
    grid = {"model.cells": list(levels)}
    level_of = {cfg.config_id: levels[cfg.model.cells] for cfg in configs}
  ids = [cfg.config_id for cfg in configs]
  study = {"experiment": "synthetic", "base": base.to_dict(), "grid": grid, "random": None,
           "repeats": repeats, "seed": 0, "configs": ids, "data": {c: "0" * 16 for c in ids}}
  env = {"argv": ["python", "-m", "jaxlstm.sweep", "--repeats", str(repeats)],
         "time": "2026-01-01T00:00:00+00:00", "versions": {"python": "3.11", "jax": "test"},
         "device": "cpu: test"}
  groups = [{"configs": ids, "cells": max(levels or [10]), "padded": len(ids) > 1,
             "members": len(ids) * repeats, "planned_compiles": 1}]
  folder = store.RunFolder.create(path, study=study, configs=configs, groups=groups, environment=env)
  folder.start_session(env)
  e = np.arange(epochs, dtype=float)
  for cfg in configs:
    c, level = cfg.config_id, level_of[cfg.config_id]
    noise = 1.0 + 0.08 * rng.standard_normal((repeats, 1))
    val = (level + 0.5 * np.exp(-e / 6)) * noise + 0.002 * rng.standard_normal((repeats, epochs))
    train = (0.5 * level + 0.5 * np.exp(-e / 5)) * noise
    stopped_epoch = np.full(repeats, -1)
    diverged_epoch = np.full(repeats, -1)
    cells = cfg.model.cells if levels is not None else None
    for cc, seed, epoch in stopped:
      if cc == cells:
        stopped_epoch[seed] = epoch
        train[seed, epoch + 1:] = val[seed, epoch + 1:] = np.nan
    marks = list(diverged) + [(cells, s, 3) for s in range(repeats) if cells in all_diverged]
    for cc, seed, epoch in marks:
      if cc == cells:
        diverged_epoch[seed] = epoch
        train[seed, epoch:] = val[seed, epoch:] = np.nan
    store.save_history(path, c, {"loss": train, "val_loss": val})
    with np.errstate(invalid="ignore"):
      best = np.nanargmin(np.where(np.isfinite(val), val, np.inf), axis=1)
    folder.manifest["configs"][c].update(
        status="done", metrics=["loss", "val_loss"], stopped_epoch=stopped_epoch.tolist(),
        best_epoch=best.tolist(), diverged_epoch=diverged_epoch.tolist(), outputs=1, time_out=0,
        frame_shape=[])
  folder.manifest["groups"][0].update(status="done", compiles=1, compile_seconds=4.5,
                                      run_seconds=0.25)
  folder.manifest["sessions"][-1]["trained"] = ids
  folder.finish_session("2026-01-01T00:00:20+00:00")
  tables.write_running(path)
  return pathlib.Path(path)


def read_csv(path):
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  """The 3-config folder after one `write_all`, and what it returned."""
  path = make_folder(tmp_path_factory.mktemp("run") / "run", levels=LEVELS,
                     diverged=[DIVERGED], stopped=[STOPPED])
  return path, report.write_all(path)


@pytest.fixture(scope="module")
def labels(built):
  path, _ = built
  manifest = store.RunFolder.read_manifest(path)
  return {manifest["configs"][c]["values"]["model.cells"]: c for c in manifest["study"]["configs"]}


# ---------------------------------------------------------------------------
# Files.


def test_module_does_not_import_jax():
  tree = ast.parse(pathlib.Path(report.__file__).read_text())
  names = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      names.add(node.module)
  assert not {n for n in names if n.split(".")[0] in ("jax", "flax", "optax", "orbax")}
  assert "matplotlib.pyplot" not in names


def test_write_all_writes_every_table_with_the_expected_rows(built, labels):
  path, report_path = built
  assert report_path == path / "report.md" and report_path.is_file()
  summary = read_csv(path / "summary.csv")
  assert [r["config_id"] for r in summary] == [labels[1], labels[2], labels[4]]
  assert list(summary[0])[:4] == ["config_id", "model.cells", "count", "mean"]
  assert list(summary[0])[-6:] == ["n_diverged", "sem", "ci_low", "ci_high", "iqm", "ensemble"]
  by_id = {r["config_id"]: r for r in summary}
  assert by_id[labels[4]]["count"] == "4" and by_id[labels[4]]["n_diverged"] == "1"
  # Each table has one writer: jaxlstm.tables.
  manifest = store.RunFolder.read_manifest(path)
  assert (path / "summary.csv").read_text() == tables.summary_csv(tables.read_folder(path))

  diagnosis = read_csv(path / "diagnosis.csv")
  assert len(diagnosis) == 3 * 5  # configs x seeds
  for column in ("config_id", "model.cells", "repeat", "diverged", "stopped_epoch", "verdict",
                 "trend", "n_epochs", "best_epoch", "val_end_gain", "oscillation"):
    assert column in diagnosis[0]
  rows = {(r["config_id"], int(r["repeat"])): r for r in diagnosis}
  assert rows[(labels[4], DIVERGED[1])]["verdict"] == "diverged"
  assert rows[(labels[4], STOPPED[1])]["stopped_epoch"] == str(STOPPED[2])
  assert rows[(labels[1], 0)]["stopped_epoch"] == ""

  comparisons = read_csv(path / "comparisons.csv")
  assert len(comparisons) == 3  # every pair of 3 configs
  assert {"a", "b", "a_label", "b_label", "mean_diff", "hedges_g", "pvalue", "pvalue_holm",
          "prob_better", "prob_low", "prob_high", "verdict"} <= set(comparisons[0])
  for row in comparisons:
    assert float(row["pvalue"]) <= float(row["pvalue_holm"]) <= 1.0
    assert float(row["prob_low"]) <= float(row["prob_better"]) <= float(row["prob_high"])
  pair = next(r for r in comparisons if {r["a"], r["b"]} == {labels[1], labels[2]})
  assert f"{labels[2]} is better than {labels[1]}" in pair["verdict"]
  assert pair["a_label"] == f"cells={manifest['configs'][pair['a']]['values']['model.cells']}"
  assert (path / "scores.csv").is_file()


def test_report_links_every_plot_and_every_plot_is_a_png(built):
  path, report_path = built
  text = report_path.read_text()
  linked = set(re.findall(r"!\[[^\]]*\]\((plots/[^)]+)\)", text))
  on_disk = {f"plots/{p.name}" for p in (path / "plots").glob("*.png")}
  assert on_disk == {"plots/scores.png", "plots/curves.png", "plots/repeats.png",
                     "plots/diagnosis.png", "plots/prob_improvement.png"}
  assert linked == on_disk
  for name in on_disk:
    assert (path / name).read_bytes()[:8] == PNG_MAGIC
  assert not [p for p in path.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".tmp-")]


def test_report_names_the_best_config_its_significance_repeats_and_verdicts(built, labels):
  path, report_path = built
  text = report_path.read_text()
  for heading in ("## What ran", "## Timings", "## Final val_loss per config", "## Best config",
                  "## Comparisons", "## How many repeats", "## Early stopping", "## Diagnosis",
                  "## Method"):
    assert heading in text
  assert "`python -m jaxlstm.sweep --repeats 5`" in text and "cpu: test" in text
  assert "| total | 3 done |" in text and "| 4.5 | 0.25 |" in text
  assert "**Best: cells=2**" in text
  assert re.search(r"runner-up \*\*cells=4\*\*.*Holm-adjusted p = [0-9.e-]+ over 3 comparisons: "
                   r"cells=2 is \*\*significantly better\*\* at α = 0.05", text)
  assert "A repeat of cells=2 beats a repeat of cells=4 with probability" in text
  assert "**Diverged repeats: 1 of 15** (cells=4: 1 of 5, at epoch 20)" in text
  # Repeats for ±5%: one row per config with an integer estimate.
  for cells in LEVELS:
    row = rf"^\| cells={cells} \| \d+ \| [^|]+ \| [^|]+ \| ±[0-9.]+% \| \d+ \| (yes|no: \d+ more) \|$"
    assert re.search(row, text, re.M), cells
  # Early stopping: the stopped seed and its epochs run (stop epoch + 1).
  assert f"| cells=4 | 1 of 5 | {STOPPED[2] + 1} |" in text
  # Diagnosis: each config's majority verdict and advice from diagnose.
  diagnosis = read_csv(path / "diagnosis.csv")
  for cells, config_id in labels.items():
    verdicts = [r["verdict"] for r in diagnosis if r["config_id"] == config_id]
    majority = max(set(verdicts), key=verdicts.count)
    assert re.search(rf"^\| cells={cells} \| \*\*{majority}\*\* \| ", text, re.M), (cells, majority)
  assert "diverged 1/5" in text
  assert "ddof=1" in text and "Holm" in text and "2000 resamples" in text
  assert "default_rng(0)" in text and "excluded from every statistic and counted" in text


# ---------------------------------------------------------------------------
# Command line.


def test_cli_rebuilds_the_folder_byte_identically(built, tmp_path):
  # A rebuild from the folder's own files, in another process, gives the same tables and
  # page as the first build: resampling only draws from default_rng(rng_seed).
  path, _ = built
  copy = tmp_path / "copy"
  shutil.copytree(path, copy)
  derived = ("summary.csv", "diagnosis.csv", "comparisons.csv", "scores.csv", "report.md")
  for name in derived:
    (copy / name).unlink()
  shutil.rmtree(copy / "plots")
  proc = subprocess.run([sys.executable, "-m", "jaxlstm.report", str(copy)], capture_output=True,
                        text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.strip() == str(copy / "report.md")
  for name in derived:
    assert (copy / name).read_bytes() == (path / name).read_bytes(), name
  assert {p.name for p in (copy / "plots").iterdir()} == {p.name for p in (path / "plots").iterdir()}


def test_rebuilding_in_process_is_deterministic_per_rng_seed(built, tmp_path, monkeypatch):
  path, _ = built
  copy = tmp_path / "copy"
  shutil.copytree(path, copy)
  monkeypatch.setattr(report.plots, "save", lambda *args, **kwargs: None)  # tables only: fast
  report.write_all(copy, rng_seed=0)
  for name in ("summary.csv", "diagnosis.csv", "comparisons.csv", "report.md"):
    assert (copy / name).read_bytes() == (path / name).read_bytes(), name
  report.write_all(copy, rng_seed=1)
  # Only the bootstrap intervals may move with the seed.
  fixed = lambda rows: [{k: v for k, v in r.items() if k not in ("prob_low", "prob_high")} for r in rows]
  assert fixed(read_csv(copy / "comparisons.csv")) == fixed(read_csv(path / "comparisons.csv"))
  assert (copy / "summary.csv").read_bytes() == (path / "summary.csv").read_bytes()
  assert "default_rng(1)" in (copy / "report.md").read_text()


def test_cli_bad_folder_exits_2_with_one_line(tmp_path):
  proc = subprocess.run([sys.executable, "-m", "jaxlstm.report", str(tmp_path / "missing")],
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2
  assert proc.stdout == ""
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("jaxlstm.report: error: ")
  assert "not a directory" in lines[0]


@pytest.mark.parametrize("setup, message", [
    (lambda p: None, "has no manifest.json"),
    (lambda p: (p / "manifest.json").write_text("{not json"), "is not a jaxlstm manifest (it cannot be read"),
    (lambda p: (p / "manifest.json").write_text('{"format": 1, "study": {"configs": ["x"]}}'),
     "is not a jaxlstm manifest"),
])
def test_main_refuses_a_folder_that_is_not_a_results_folder(tmp_path, capsys, setup, message):
  setup(tmp_path)
  assert report.main([str(tmp_path)]) == 2
  out, err = capsys.readouterr()
  assert out == "" and len(err.strip().splitlines()) == 1
  assert err.startswith("jaxlstm.report: error: ") and message in err


def test_main_without_a_folder_exits_2(capsys):
  assert report.main([]) == 2
  assert capsys.readouterr().err.startswith("jaxlstm.report: error: ")


# ---------------------------------------------------------------------------
# Edge cases.


def test_one_config_with_two_repeats(tmp_path):
  path = make_folder(tmp_path / "one", levels=None, repeats=2, epochs=12)
  report_path = report.write_all(path)
  text = report_path.read_text()
  ids = store.RunFolder.read_manifest(path)["study"]["configs"]
  assert len(read_csv(path / "summary.csv")) == 1
  assert len(read_csv(path / "diagnosis.csv")) == 2
  assert read_csv(path / "comparisons.csv") == []
  assert (path / "comparisons.csv").read_text().startswith("a,b,a_label,b_label,")
  assert "Only one config ran: there is nothing to compare it with." in text
  assert "## Result" in text and f"**Config: {ids[0]}**" in text
  assert "No repeat diverged (2 repeats in all)." in text
  assert "Early stopping was off" in text
  assert not (path / "plots" / "prob_improvement.png").exists()
  linked = set(re.findall(r"\]\((plots/[^)]+)\)", text))
  assert linked == {f"plots/{p.name}" for p in (path / "plots").glob("*.png")}


def test_a_folder_with_nothing_done_yet_gets_a_report(tmp_path):
  path = make_folder(tmp_path / "pending", levels=LEVELS, repeats=2, epochs=12)
  manifest = store.RunFolder.read_manifest(path)
  for entry in manifest["configs"].values():
    entry["status"] = "pending"
  store.write_json(path / store.MANIFEST, manifest)
  text = report.write_all(path).read_text()
  assert "No config has finished yet" in text and "## Timings" in text
  for name in ("summary.csv", "diagnosis.csv", "comparisons.csv"):
    assert read_csv(path / name) == []
  assert not (path / "plots").exists()


def test_many_configs_compare_each_with_the_best_and_survive_a_fully_diverged_one(tmp_path):
  levels = {1: 0.3, 2: 0.05, 3: 0.2, 4: 0.12, 5: 0.25, 6: 0.15, 7: 0.18}
  path = make_folder(tmp_path / "many", levels=levels, repeats=2, epochs=12, all_diverged=(7,))
  with warnings.catch_warnings():
    warnings.simplefilter("error", report.PlotWarning)  # every plot must draw
    text = report.write_all(path).read_text()
  manifest = store.RunFolder.read_manifest(path)
  best = next(c for c in manifest["study"]["configs"]
              if manifest["configs"][c]["values"]["model.cells"] == 2)
  comparisons = read_csv(path / "comparisons.csv")
  assert len(comparisons) == 6 and {r["a"] for r in comparisons} == {best}
  lost = next(r for r in comparisons if r["b_label"] == "cells=7")
  assert lost["pvalue"] == "" or lost["pvalue"] == "nan"
  assert "not enough finite repeats" in lost["verdict"]
  assert "The best config against each of the 6 others" in text
  assert "**Diverged repeats: 2 of 14**" in text
  summary = {r["model.cells"]: r for r in read_csv(path / "summary.csv")}
  assert summary["7"]["count"] == "0" and summary["7"]["n_diverged"] == "2"
  assert len(read_csv(path / "diagnosis.csv")) == 7 * 2


def test_a_failing_plot_is_a_warning_and_a_line_not_a_crash(built, tmp_path, monkeypatch):
  path, _ = built
  copy = tmp_path / "copy"
  shutil.copytree(path, copy)
  shutil.rmtree(copy / "plots")

  def broken(figure, target, **kwargs):
    raise RuntimeError("disk full")

  monkeypatch.setattr(report.plots, "save", broken)
  with pytest.warns(report.PlotWarning) as caught:
    text = report.write_all(copy).read_text()
  assert sorted(str(w.message) for w in caught) == [
      f"plot {name}.png not written (RuntimeError: disk full)"
      for name in ("curves", "diagnosis", "prob_improvement", "repeats", "scores")]
  for what in ("The box plot", "A learning-curve page", "The diagnosis overview",
               "The repeats-convergence plot", "The P(improvement) matrix"):
    assert f"{what} could not be drawn" in text
  assert not (copy / "plots").exists()
  for name in ("summary.csv", "diagnosis.csv", "comparisons.csv"):
    assert (copy / name).read_bytes() == (path / name).read_bytes()


@pytest.mark.parametrize("entry, message", [
    ("study", "is a jaxlstm manifest without its study's config list (damaged)"),  # store.read_manifest
    ("configs", "missing entry 'configs'"),  # report.load_folder
])
def test_a_manifest_without_an_entry_the_report_reads_is_refused_by_name(built, tmp_path, capsys, entry, message):
  folder = tmp_path / "run"
  shutil.copytree(built[0], folder)
  manifest = store.read_json(folder / store.MANIFEST)
  del manifest[entry]
  store.write_json(folder / store.MANIFEST, manifest)
  assert report.main([str(folder)]) == 2
  err = capsys.readouterr().err
  assert len(err.strip().splitlines()) == 1 and err.startswith("jaxlstm.report: error: ")
  assert message in err
