"""Honest scores (issue 15): restored scoring, paired designs, the repeats' ensemble, naive baselines.

Small sweeps through the CLI (in process), then the folder is checked against numbers
recomputed by hand from its own checkpoints and data.
"""
import json
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest

import jaxlstm
from jaxlstm import sweep
from jaxlstm.data import resolve
from jaxlstm.ensemble import members_of, plan
from jaxlstm.train import make_train

TINY = ["--repeats", "3", "--quiet"]


def _read(out: Path, name: str) -> pd.DataFrame:
  return pd.read_csv(out / name, dtype={"config_id": str, "a": str, "b": str})


def test_restored_scoring_equals_the_loss_of_the_restored_parameters(tmp_path, capsys):
  out = tmp_path / "run"
  args = [*TINY, "--set", "model.cells=3", "--set", "train.epochs=60",
          "--set", 'train.early_stopping={"patience": 2, "restore_best_weights": true}',
          "--set", "optim.learning_rate=0.05", "--out", str(out)]
  assert sweep.main(args) == 0
  capsys.readouterr()
  manifest = json.loads((out / "manifest.json").read_text())
  assert manifest["study"]["score"] == "restored"  # the default when early stopping restores weights
  scores = _read(out, "scores.csv")
  run = jaxlstm.load_run(out)
  for config_id, config in run.configs.items():
    ens = run.ensemble(config_id)  # its params are the restored ones
    data = resolve(config)
    predictions = ens.predict(data.x_val)
    recomputed = np.mean((predictions - data.y_val[None]) ** 2, axis=(1, 2))
    rows = scores[scores["config_id"] == config_id]
    np.testing.assert_allclose(rows["restored_val_loss"], recomputed, rtol=1e-5, atol=1e-7)
    assert (rows["restored_val_loss"] <= rows["final_val_loss"] + 1e-12).all()  # the best val_loss
  summary = _read(out, "summary.csv")
  np.testing.assert_allclose(summary["mean"], scores.groupby("config_id", sort=False)["restored_val_loss"].mean())
  report = (out / "report.md").read_text()
  assert "## Restored val_loss per config" in report and "weights early stopping restored" in report
  # --score applies to the folder without training: the final values now.
  assert sweep.main([*args[:-2], "--score", "final", "--out", str(out)]) == 0
  capsys.readouterr()
  summary = _read(out, "summary.csv")
  np.testing.assert_allclose(summary["mean"], scores.groupby("config_id", sort=False)["final_val_loss"].mean())


def test_paired_repeats_draw_the_same_keys_in_every_config():
  base = jaxlstm.Config().override({"model.cells": 3, "train.epochs": 2, "train.batch_size": 2,
                                    "train.paired": True})
  configs = jaxlstm.expand_grid(base, {"optim.learning_rate": [1e-3, 1e-2]})
  members = [members_of(plan([c], 4)[0], 7) for c in configs]
  for a, b in zip(members[0].keys, members[1].keys):
    np.testing.assert_array_equal(jax.random.key_data(a), jax.random.key_data(b))
  train = make_train(configs[0], resolve(configs[0]))
  for i in range(4):
    first = train.init_params(members[0].keys.init[i])
    second = make_train(configs[1], resolve(configs[1])).init_params(members[1].keys.init[i])
    jax.tree.map(np.testing.assert_array_equal, first, second)
    np.testing.assert_array_equal(train.epoch_order(members[0].keys.shuffle[i], 1),
                                  train.epoch_order(members[1].keys.shuffle[i], 1))
  unpaired = [members_of(plan([c.override({"train.paired": False})], 4)[0], 7) for c in configs]
  assert not np.array_equal(jax.random.key_data(unpaired[0].keys.init), jax.random.key_data(unpaired[1].keys.init))
  # Unpaired, a config's keys are its own: the default keeps every existing number.
  assert configs[0].override({"train.paired": False}).config_id == base.override(
      {"train.paired": False, "optim.learning_rate": 1e-3}).config_id


def test_a_paired_sweep_compares_pairs_and_shows_what_pairing_bought(tmp_path, capsys):
  out, unpaired = tmp_path / "paired", tmp_path / "unpaired"
  grid = ["--grid", "optim.learning_rate=0.01,0.02", "--set", "model.cells=3", "--epochs", "30",
          "--repeats", "8", "--quiet"]
  assert sweep.main([*grid, "--paired", "--out", str(out)]) == 0
  assert sweep.main([*grid, "--out", str(unpaired)]) == 0
  capsys.readouterr()
  paired_rows = _read(out, "comparisons.csv")
  assert {"n_pairs", "se_paired", "se_unpaired", "se_ratio"} <= set(paired_rows.columns)
  assert (paired_rows["se_ratio"] < 1).all()  # shared draws: the difference is far less noisy
  assert "n_pairs" not in _read(unpaired, "comparisons.csv").columns
  report = (out / "report.md").read_text()
  assert "Design: **paired**" in report and "Pairing cut the standard error of the difference" in report
  assert "the paired t-test" in report
  other = (unpaired / "report.md").read_text()
  assert "Design: unpaired" in other and "can run **paired** (`--paired`" in other


def test_the_repeats_ensemble_is_scored_on_the_validation_set(tmp_path, capsys):
  out = tmp_path / "run"
  assert sweep.main([*TINY, "--epochs", "20", "--out", str(out)]) == 0
  capsys.readouterr()
  run = jaxlstm.load_run(out)
  summary = _read(out, "summary.csv").set_index("config_id")
  for config_id, config in run.configs.items():
    data = resolve(config)
    mean = run.ensemble(config_id).predict(data.x_val).mean(axis=0)
    np.testing.assert_allclose(summary.loc[config_id, "ensemble"], np.mean((mean - data.y_val) ** 2), rtol=1e-5)
  assert "`ensemble`: the val_loss of the repeats' averaged prediction" in (out / "report.md").read_text()


def _random_walk_csv(path: Path, n: int = 400) -> Path:
  steps = np.random.default_rng(0).normal(size=n)
  path.write_text("value\n" + "\n".join(f"{v:.6f}" for v in np.cumsum(steps)) + "\n")
  return path


def test_a_config_that_loses_to_persistence_is_flagged(tmp_path, capsys):
  series = _random_walk_csv(tmp_path / "walk.csv")
  out = tmp_path / "run"
  assert sweep.main(["--data", str(series), "--repeats", "3", "--epochs", "5", "--set", "model.cells=4",
                     "--out", str(out), "--quiet"]) == 0
  capsys.readouterr()
  manifest = json.loads((out / "manifest.json").read_text())
  (config_id,) = manifest["study"]["configs"]
  naive = manifest["baselines"][config_id]["val_loss"]
  mean = _read(out, "summary.csv")["mean"].iloc[0]
  assert naive["persistence"] <= mean  # on a random walk nothing beats "no change" (5 epochs: far from it)
  report = (out / "report.md").read_text()
  assert "## Naive baselines" in report and "**1 config loses to a naive forecast**" in report
  assert "| **no** |" in report.split("## Diagnosis")[1]  # the diagnosis' "beats naive" column
