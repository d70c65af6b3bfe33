"""Tests for jaxlstm.diagnose on synthetic learning curves built to be each verdict."""
import ast
import dataclasses
import pathlib

import numpy as np
import pandas as pd
import pytest

from jaxlstm import diagnose

EPOCHS = np.arange(300, dtype=np.float64)


# Each builder returns (train, val) of shape [epochs] with a known verdict.
def still_improving(e=EPOCHS[:100]):
  # Brownlee's 100-epoch case: both still falling fast at the end.
  return 0.9 * np.exp(-e / 80) + 0.02, 1.2 * np.exp(-e / 80) + 0.05


def high_and_flat(e=EPOCHS[:200]):
  # A small model: a quick early drop, then both plateau near their start.
  return 1.0 - 0.3 * (1 - np.exp(-e / 10)), 1.1 - 0.3 * (1 - np.exp(-e / 10))


def good_fit(e=EPOCHS[:200]):
  return 0.9 * np.exp(-e / 20) + 0.01, 0.9 * np.exp(-e / 20) + 0.02


def overfit(e=EPOCHS):
  # Validation has its minimum near epoch 126, then rises while training falls.
  return np.exp(-e / 30), np.exp(-e / 30) + 0.05 + 0.0005 * e


def unstable(e=EPOCHS[:200]):
  zigzag = 0.25 * (-1.0) ** e
  return 0.5 * np.exp(-e / 50) + 0.3 + zigzag, 0.5 * np.exp(-e / 50) + 0.4 - zigzag


def not_learning(e=EPOCHS[:100]):
  return np.full(e.shape, 1.0), np.full(e.shape, 1.2)


CASES = {
    "underfit": [still_improving, high_and_flat],
    "good_fit": [good_fit],
    "overfit": [overfit],
    "unstable": [unstable],
    "not_learning": [not_learning],
}


def verdict_of(train, val, **kw):
  return diagnose.diagnose_seeds(np.asarray(train)[None], np.asarray(val)[None], **kw).iloc[0]


def stack(builder, seeds, rng, noise):
  """`seeds` copies of a case with multiplicative log-normal noise, [seeds, epochs]."""
  train, val = builder()
  shape = (seeds, len(train))
  return (train * np.exp(noise * rng.standard_normal(shape)),
          val * np.exp(noise * rng.standard_normal(shape)))


def imported_modules(module):
  tree = ast.parse(pathlib.Path(module.__file__).read_text())
  names = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      names.add(node.module)
  return names


def test_module_does_not_import_jax():
  # Design rule: diagnose, stats and plots never import jax.
  imported = imported_modules(diagnose)
  assert not {n for n in imported if n == "jax" or n.startswith(("jax.", "flax", "optax"))}
  assert imported <= {"dataclasses", "collections.abc", "typing", "numpy", "pandas"}


@pytest.mark.parametrize("verdict,builder",
                         [(v, b) for v, bs in CASES.items() for b in bs],
                         ids=lambda x: getattr(x, "__name__", x))
def test_clean_curve_gets_its_verdict(verdict, builder):
  train, val = builder()
  row = verdict_of(train, val)
  assert row["verdict"] == verdict, row.to_dict()


@pytest.mark.parametrize("verdict,builder",
                         [(v, b) for v, bs in CASES.items() for b in bs if v != "not_learning"],
                         ids=lambda x: getattr(x, "__name__", x))
def test_noisy_curves_keep_their_verdict(verdict, builder):
  rng = np.random.default_rng(42)
  train, val = stack(builder, 20, rng, noise=0.03)
  frame = diagnose.diagnose_seeds(train, val)
  assert (frame["verdict"] == verdict).all(), frame["verdict"].value_counts().to_dict()


def test_noisy_flat_curve_is_not_learning():
  rng = np.random.default_rng(7)
  train, val = stack(not_learning, 20, rng, noise=0.01)
  frame = diagnose.diagnose_seeds(train, val)
  assert (frame["verdict"] == "not_learning").all(), frame["verdict"].value_counts().to_dict()


def test_underfit_reasons_differ():
  assert verdict_of(*still_improving())["reason"] == "validation still improving at the end"
  assert verdict_of(*high_and_flat())["reason"] == "both losses high and flat"


def test_overfit_evidence_numbers():
  train, val = overfit()
  row = verdict_of(train, val)
  # True minimum of exp(-e/30) + 0.0005 e is at e = 30 ln(1/0.015) = 126.
  assert abs(row["best_epoch"] - 126) <= 3
  assert row["after_best"] == pytest.approx((299 - row["best_epoch"]) / 299)
  assert row["val_rise"] == pytest.approx((val[-1] - val.min()) / val.min(), rel=0.05)
  assert row["train_fall"] > 0.99
  assert row["train_end_slope"] < 0 < row["val_end_slope"]
  assert row["gap"] == pytest.approx(val[-1] - train[-1], rel=0.05)
  assert row["oscillation"] < 0.01
  assert row["n_epochs"] == 300


def test_still_improving_evidence_numbers():
  row = verdict_of(*still_improving())
  assert row["best_epoch"] == 99
  assert row["val_rise"] == 0.0
  assert row["val_end_gain"] > diagnose.Thresholds().underfit_end_gain
  assert row["val_end_slope"] < -diagnose.Thresholds().flat_slope


def test_unstable_oscillation_is_large():
  row = verdict_of(*unstable())
  assert row["oscillation"] > 0.5
  assert verdict_of(*good_fit())["oscillation"] < 0.01


TREND_CASES = {
    "still_learning": still_improving,
    "overfitting": overfit,
    "underfitting": lambda e=EPOCHS[:200]: (np.exp(-e / 100), 0.2 + 0.5 * np.exp(-e / 5)),
    "bottleneck": high_and_flat,
    "lr_or_architecture": lambda e=EPOCHS[:100]: (0.5 + 0.01 * e, 0.6 + 0.01 * e),
    "data_problem": lambda e=EPOCHS[:100]: (0.5 + 0.01 * e, 1.5 - 0.01 * e),
}


@pytest.mark.parametrize("trend", list(TREND_CASES))
def test_each_named_trend_occurs(trend):
  row = verdict_of(*TREND_CASES[trend]())
  assert row["trend"] == trend, row[["train_trend", "val_trend", "train_end_slope",
                                     "val_end_slope"]].to_dict()
  assert (row["train_trend"], row["val_trend"]) in diagnose.TRENDS
  assert diagnose.TRENDS[row["train_trend"], row["val_trend"]] == trend


def test_six_trends_are_named_and_other_pairs_mixed():
  assert sorted(diagnose.TRENDS.values()) == sorted(TREND_CASES)
  e = EPOCHS[:100]
  row = verdict_of(np.full(e.shape, 1.0), 1.0 + 0.01 * e)  # train flat, val rising
  assert row["trend"] == diagnose.MIXED_TREND


def test_truncated_curves_use_finite_prefix():
  train, val = overfit()
  train[250:], val[250:] = np.nan, np.nan  # stopped early at epoch 249
  row = verdict_of(train, val)
  assert row["verdict"] == "overfit"
  assert row["n_epochs"] == 250
  assert row["final_val"] == pytest.approx(val[249])

  # A seed that stops while still improving keeps the verdict of its prefix.
  train, val = still_improving()
  full = verdict_of(train[:60], val[:60])
  train[60:], val[60:] = np.nan, np.nan
  cut = verdict_of(train, val)
  assert cut["verdict"] == "underfit"
  assert cut.drop("seed").equals(full.drop("seed"))


def test_mixed_stop_lengths_in_one_batch():
  train, val = np.stack([overfit()[0]] * 3), np.stack([overfit()[1]] * 3)
  train[1, 200:] = val[1, 200:] = np.nan
  val[2, 150:] = np.nan  # the train curve runs on: the shorter prefix counts
  frame = diagnose.diagnose_seeds(train, val)
  assert frame["n_epochs"].tolist() == [300, 200, 150]
  assert (frame["verdict"] != "diverged").all()


@pytest.mark.parametrize("where", ["inf_val", "ninf_train", "nan_hole", "all_nan"])
def test_non_finite_curves_are_diverged(where):
  train, val = good_fit()
  if where == "inf_val":
    val[120] = np.inf
  elif where == "ninf_train":
    train[50] = -np.inf
  elif where == "nan_hole":
    train[80:90] = np.nan  # finite again afterwards: not an early stop
  else:
    train[:], val[:] = np.nan, np.nan
  assert verdict_of(train, val)["verdict"] == "diverged"


def test_diverged_mask_overrides_a_nan_tail():
  train, val = np.stack(good_fit()), np.stack(good_fit())
  train[:, 150:] = val[:, 150:] = np.nan
  frame = diagnose.diagnose_seeds(train, val, diverged=np.array([False, True]))
  assert frame["verdict"].tolist() == ["good_fit", "diverged"]
  assert frame.loc[1, "reason"] == "marked diverged by training"


def test_too_few_epochs_is_underfit():
  train, val = good_fit()
  train[3:] = val[3:] = np.nan
  row = verdict_of(train, val)
  assert row["verdict"] == "underfit" and row["n_epochs"] == 3


def test_thresholds_are_used():
  train, val = still_improving()
  lenient = dataclasses.replace(diagnose.Thresholds(), underfit_end_gain=0.5)
  assert verdict_of(train, val)["verdict"] == "underfit"
  assert verdict_of(train, val, thresholds=lenient)["verdict"] == "good_fit"
  strict = diagnose.Thresholds(max_oscillation=1e-9)
  assert verdict_of(*good_fit(), thresholds=strict)["verdict"] == "unstable"


def test_thresholds_are_frozen_and_validated():
  with pytest.raises(dataclasses.FrozenInstanceError):
    diagnose.Thresholds().tail_fraction = 0.5
  with pytest.raises(ValueError, match="tail_fraction must be in"):
    diagnose.Thresholds(tail_fraction=0.0)
  with pytest.raises(ValueError, match="min_decrease must be >= 0"):
    diagnose.Thresholds(min_decrease=-1.0)


def test_shape_errors():
  with pytest.raises(ValueError, match="same shape"):
    diagnose.diagnose_seeds(np.ones((2, 10)), np.ones((2, 11)))
  with pytest.raises(ValueError, match=r"diverged of shape \[seeds\]"):
    diagnose.diagnose_seeds(np.ones((2, 10)), np.ones((2, 10)), diverged=[True])


def test_per_seed_frame_columns():
  train, val = stack(good_fit, 4, np.random.default_rng(0), 0.01)
  frame = diagnose.diagnose_seeds(train, val)
  assert frame["seed"].tolist() == [0, 1, 2, 3]
  for column in ("verdict", "trend", "best_epoch", "train_end_slope", "val_end_slope",
                 "gap", "val_rise", "oscillation"):
    assert column in frame.columns


def mixed_config(counts, rng):
  """[seeds, epochs] curves: counts = {builder: n_seeds}, all 200 epochs long."""
  trains, vals = [], []
  for builder, n in counts.items():
    train, val = stack(builder, n, rng, 0.01)
    trains.append(train[:, :200])
    vals.append(val[:, :200])
  return np.concatenate(trains), np.concatenate(vals)


def test_config_shares_majority_and_advice():
  rng = np.random.default_rng(1)
  train, val = mixed_config({overfit: 7, good_fit: 3}, rng)
  result = diagnose.diagnose_config(train, val, config="cells=10")
  assert result.n_seeds == 10
  assert result.shares["overfit"] == pytest.approx(0.7)
  assert result.shares["good_fit"] == pytest.approx(0.3)
  assert sum(result.shares.values()) == pytest.approx(1.0)
  assert set(result.shares) == set(diagnose.VERDICTS)
  assert result.majority == "overfit" and result.majority_share == pytest.approx(0.7)
  assert "Stop earlier" in result.advice
  frame = result.to_frame()
  assert frame.shape[0] == 1
  assert frame.loc[0, "config"] == "cells=10"
  assert frame.loc[0, "share_overfit"] == pytest.approx(0.7)
  with pytest.raises(dataclasses.FrozenInstanceError):
    result.majority = "good_fit"


@pytest.mark.parametrize("builder,words", [
    (still_improving, "more epochs"),
    (high_and_flat, "capacity"),
    (unstable, "learning rate"),
    (not_learning, "Check the data"),
    (good_fit, "Good fit"),
])
def test_advice_follows_the_majority_reason(builder, words):
  train, val = stack(builder, 5, np.random.default_rng(2), 0.0)
  assert words in diagnose.diagnose_config(train, val).advice


def test_high_variance_from_split_verdicts():
  rng = np.random.default_rng(3)
  train, val = mixed_config({overfit: 5, good_fit: 5}, rng)
  result = diagnose.diagnose_config(train, val, scores=np.full(10, 1.0))
  assert result.majority_share == 0.5
  assert result.majority == "overfit"  # a tie goes to the more severe verdict
  assert result.high_variance
  assert result.final_cv == 0.0
  assert "more repeats" in result.advice


def test_high_variance_from_score_spread():
  train, val = stack(good_fit, 6, np.random.default_rng(4), 0.01)
  calm = diagnose.diagnose_config(train, val, scores=[1.0, 1.1, 0.9, 1.0, 1.05, 0.95])
  wild = diagnose.diagnose_config(train, val, scores=[0.1, 3.0, 0.2, 2.5, 0.05, np.nan])
  assert calm.majority == wild.majority == "good_fit"
  assert not calm.high_variance and calm.final_cv < 0.1
  assert wild.high_variance and wild.final_cv > diagnose.Thresholds().high_cv
  # Default scores: the final validation losses, which are alike here.
  assert not diagnose.diagnose_config(train, val).high_variance


def test_diagnose_run():
  rng = np.random.default_rng(5)
  histories = {}
  for config, builder in (("a", still_improving), ("b", overfit)):
    train, val = stack(builder, 3, rng, 0.01)
    histories[config] = {"loss": train, "val_loss": val}
  per_seed, per_config = diagnose.diagnose_run(histories, diverged={"b": [False, False, True]})
  assert per_seed["config"].tolist() == ["a"] * 3 + ["b"] * 3
  assert per_seed["verdict"].tolist() == ["underfit"] * 3 + ["overfit", "overfit", "diverged"]
  assert per_config["config"].tolist() == ["a", "b"]
  assert per_config["majority"].tolist() == ["underfit", "overfit"]
  assert per_config.loc[1, "share_diverged"] == pytest.approx(1 / 3)
  assert isinstance(per_config, pd.DataFrame)

  renamed = {"a": {"train_loss": histories["a"]["loss"], "val_loss": histories["a"]["val_loss"]}}
  assert diagnose.diagnose_run(renamed)[0]["verdict"].eq("underfit").all()
  with pytest.raises(KeyError, match="none of the metrics"):
    diagnose.diagnose_run({"a": {"acc": train}})
