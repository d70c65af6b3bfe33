"""Tests for jaxlstm.diagnose on synthetic learning curves built to be each verdict."""
import ast
import dataclasses
import pathlib

import numpy as np
import pandas as pd
import pytest

from jaxlstm import baselines, diagnose, problems

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


def swinging_validation(e=EPOCHS[:200], amplitude=0.08):
  # High variance: training fits (smooth, near 0.01) while validation sits far above it and
  # swings from epoch to epoch (two incommensurate sines: a deterministic stand-in for a model
  # whose fit between training points changes with every update).
  swing = amplitude * (np.sin(1.3 * e) + 0.7 * np.sin(2.9 * e))
  return 0.9 * np.exp(-e / 20) + 0.01, 0.9 * np.exp(-e / 20) + 0.3 + swing


def slow_small(e=EPOCHS):
  # A small model against a naive baseline of 1.0 (BASELINE): both losses still creep down at
  # the end (validation by 3 % of its range over the tail) but towards a floor near 0.45.
  return 0.45 + 0.55 * np.exp(-e / 90), 1.3 * (0.5 + 0.5 * np.exp(-e / 90))


BASELINE = 1.0

CASES = {
    "underfit_improving": [still_improving],
    "underfit_capacity": [high_and_flat],
    "good_fit": [good_fit],
    "overfit": [overfit],
    "high_variance": [swinging_validation],
    "unstable": [unstable],
    "not_learning": [not_learning],
}


def verdict_of(train, val, **kw):
  return diagnose.diagnose_repeats(np.asarray(train)[None], np.asarray(val)[None], **kw).iloc[0]


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
  assert imported <= {"__future__", "dataclasses", "collections.abc", "typing", "numpy", "pandas"}


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
  frame = diagnose.diagnose_repeats(train, val)
  assert (frame["verdict"] == verdict).all(), frame["verdict"].value_counts().to_dict()


def test_noisy_flat_curve_is_not_learning():
  rng = np.random.default_rng(7)
  train, val = stack(not_learning, 20, rng, noise=0.01)
  frame = diagnose.diagnose_repeats(train, val)
  assert (frame["verdict"] == "not_learning").all(), frame["verdict"].value_counts().to_dict()


def test_underfit_reasons_differ():
  assert verdict_of(*still_improving())["reason"] == "validation still improving at the end"
  assert verdict_of(*high_and_flat())["reason"] == "both losses high and flat"
  assert verdict_of(*slow_small(), baseline_loss=BASELINE)["reason"] == (
      "the training loss levels off high against the naive baseline")


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
  assert row["tail_trend"] == trend, row[["train_trend", "val_trend", "train_end_slope",
                                          "val_end_slope"]].to_dict()
  assert (row["train_trend"], row["val_trend"]) in diagnose.TRENDS
  assert diagnose.TRENDS[row["train_trend"], row["val_trend"]] == trend


def test_six_trends_are_named_and_other_pairs_mixed():
  assert sorted(diagnose.TRENDS.values()) == sorted(TREND_CASES)
  e = EPOCHS[:100]
  row = verdict_of(np.full(e.shape, 1.0), 1.0 + 0.01 * e)  # train flat, val rising
  assert row["tail_trend"] == diagnose.MIXED_TREND


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
  assert cut["verdict"] == "underfit_improving"
  assert cut.drop("repeat").equals(full.drop("repeat"))


def test_mixed_stop_lengths_in_one_batch():
  train, val = np.stack([overfit()[0]] * 3), np.stack([overfit()[1]] * 3)
  train[1, 200:] = val[1, 200:] = np.nan
  val[2, 150:] = np.nan  # the train curve runs on: the shorter prefix counts
  frame = diagnose.diagnose_repeats(train, val)
  assert frame["n_epochs"].tolist() == [300, 200, 150]
  assert (frame["verdict"] != "diverged").all()


def test_a_repeats_diagnosis_does_not_depend_on_the_others_in_its_batch():
  """Repeats are diagnosed together, in blocks of equal finite length: each row's numbers are the ones
  it gets alone, bit for bit (sums run along its own row, in C order), whatever the block holds."""
  rng = np.random.default_rng(7)
  rows = []
  for builder in (overfit, good_fit, still_improving, unstable, not_learning, high_and_flat):
    train, val = builder()
    for _ in range(3):
      noise = 1 + rng.normal(0, 0.02, (2, len(train)))
      rows.append(np.pad(np.stack([train, val]) * noise, ((0, 0), (0, 300 - len(train))), constant_values=np.nan))
  curves = np.stack(rows)  # [repeats, train|val, 300]: prefixes of 100, 200 and 300 epochs
  curves[4, :, 123:] = np.nan  # an early stop of its own length
  curves[5, 0, 40] = np.inf  # a divergence
  marked = np.zeros(len(curves), bool)
  marked[6] = True
  together = diagnose.diagnose_repeats(curves[:, 0], curves[:, 1], diverged=marked, baseline_loss=0.3)
  for i in range(len(curves)):
    alone = diagnose.diagnose_repeats(curves[i, 0], curves[i, 1], diverged=marked[i:i + 1], baseline_loss=0.3)
    for column in together.columns.drop("repeat"):
      a, b = together[column].iloc[i], alone[column].iloc[0]
      if isinstance(a, (float, np.floating)):
        assert np.float64(a).tobytes() == np.float64(b).tobytes() or (np.isnan(a) and np.isnan(b)), (i, column, a, b)
      else:
        assert a == b, (i, column, a, b)
  assert together["n_epochs"].tolist()[3:7] == [200, 123, 40, 100]
  assert together["verdict"].iloc[5] == together["verdict"].iloc[6] == "diverged"


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
  frame = diagnose.diagnose_repeats(train, val, diverged=np.array([False, True]))
  assert frame["verdict"].tolist() == ["good_fit", "diverged"]
  assert frame.loc[1, "reason"] == "marked diverged by training"


def test_too_few_epochs_is_underfit():
  train, val = good_fit()
  train[3:] = val[3:] = np.nan
  row = verdict_of(train, val)
  assert row["verdict"] == "underfit_improving" and row["n_epochs"] == 3
  assert row["reason"] == "too few finite epochs to judge"


def test_thresholds_are_used():
  train, val = still_improving()
  lenient = dataclasses.replace(diagnose.Thresholds(), underfit_end_gain=0.5)
  assert verdict_of(train, val)["verdict"] == "underfit_improving"
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
    diagnose.diagnose_repeats(np.ones((2, 10)), np.ones((2, 11)))
  with pytest.raises(ValueError, match=r"diverged of shape \[repeats\]"):
    diagnose.diagnose_repeats(np.ones((2, 10)), np.ones((2, 10)), diverged=[True])


def test_per_seed_frame_columns():
  train, val = stack(good_fit, 4, np.random.default_rng(0), 0.01)
  frame = diagnose.diagnose_repeats(train, val)
  assert frame["repeat"].tolist() == [0, 1, 2, 3]
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
  assert result.n_repeats == 10
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
  assert per_seed["verdict"].tolist() == (["underfit_improving"] * 3
                                          + ["overfit", "overfit", "diverged"])
  assert per_config["config"].tolist() == ["a", "b"]
  assert per_config["majority"].tolist() == ["underfit_improving", "overfit"]
  assert per_config.loc[1, "share_diverged"] == pytest.approx(1 / 3)
  assert isinstance(per_config, pd.DataFrame)

  renamed = {"a": {"train_loss": histories["a"]["loss"], "val_loss": histories["a"]["val_loss"]}}
  assert diagnose.diagnose_run(renamed)[0]["verdict"].eq("underfit_improving").all()
  with pytest.raises(KeyError, match="none of the metrics"):
    diagnose.diagnose_run({"a": {"acc": train}})


# --- gap, level and projection rules -------------------------------------------

def population(kind, rng, seeds=30):
  """[seeds, epochs] curves of one kind, each seed with its own time scale, level and 3 % noise.

  Returns (train, val, kwargs for diagnose_seeds).
  """
  trains, vals, kwargs = [], [], {}
  for _ in range(seeds):
    scale = rng.uniform(0.8, 1.25)  # how fast this seed learns
    level = rng.uniform(0.7, 1.4)   # where it starts
    if kind == "underfit_improving":
      e = EPOCHS[:100] / scale
      train, val = 0.9 * np.exp(-e / 80) + 0.02, 1.2 * np.exp(-e / 80) + 0.05
    elif kind == "underfit_capacity":
      e = EPOCHS / scale
      floor = rng.uniform(0.35, 0.6)
      train = floor + (1 - floor) * np.exp(-e / 90)
      val = 1.3 * (floor + 0.05 + (0.95 - floor) * np.exp(-e / 90))
      kwargs = {"baseline_loss": 1.0 * level}  # the naive forecast's training loss
    elif kind == "good_fit":
      train, val = good_fit(EPOCHS[:200] / scale)
    elif kind == "overfit":
      train, val = overfit(EPOCHS / scale)
    elif kind == "high_variance":
      train, val = swinging_validation(EPOCHS[:200] / scale, amplitude=rng.uniform(0.06, 0.15))
    elif kind == "unstable":
      train, val = unstable()
      train, val = train * rng.uniform(0.8, 1.2), val * rng.uniform(0.8, 1.2)
    elif kind == "diverged":
      train, val = good_fit()
      blow = rng.integers(20, 200)
      val = val.copy()
      val[blow:] = np.inf if rng.random() < 0.5 else np.nan
      if np.isnan(val[-1]):
        val[-1] = 1.0  # a NaN followed by a finite value: a hole, not an early stop
    trains.append(level * train * np.exp(0.03 * rng.standard_normal(train.shape)))
    vals.append(level * val * np.exp(0.03 * rng.standard_normal(val.shape)))
  return np.stack(trains), np.stack(vals), kwargs


POPULATIONS = ("underfit_improving", "underfit_capacity", "good_fit", "overfit", "high_variance",
               "unstable", "diverged")


@pytest.mark.parametrize("kind", POPULATIONS)
def test_seed_populations_get_their_verdict_in_most_seeds(kind):
  train, val, kwargs = population(kind, np.random.default_rng(POPULATIONS.index(kind)))
  frame = diagnose.diagnose_repeats(train, val, **kwargs)
  share = (frame["verdict"] == kind).mean()
  assert share >= 0.8, frame["verdict"].value_counts().to_dict()
  result = diagnose.diagnose_config(train, val, **kwargs)
  assert result.majority == kind


def test_a_baseline_tells_a_small_model_from_a_slow_one():
  # slow_small still falls at the end, so without a reference it reads "train longer"; against
  # the naive baseline its floor (0.45, Aitken exact for a + b exp(-t/tau)) is far too high.
  train, val = slow_small()
  alone = verdict_of(train, val)
  assert alone["verdict"] == "underfit_improving"
  row = verdict_of(train, val, baseline_loss=BASELINE)
  assert row["verdict"] == "underfit_capacity"
  assert row["floor_vs_baseline"] == pytest.approx(0.45, rel=1e-6)
  assert row["train_floor"] == pytest.approx(0.45, rel=1e-6)
  assert row["train_vs_baseline"] > row["floor_vs_baseline"]
  assert row["trend"] == "bottleneck"  # the tail says still_learning; the verdict decides
  # A fast learner heading for a low floor stays "improving" with the same baseline; its floor
  # is the curve's own asymptote 0.02.
  fast = verdict_of(*still_improving(), baseline_loss=BASELINE)
  assert fast["verdict"] == "underfit_improving"
  assert fast["floor_vs_baseline"] == pytest.approx(0.02, rel=1e-6)
  assert verdict_of(*good_fit(), baseline_loss=BASELINE)["verdict"] == "good_fit"
  assert verdict_of(*overfit(), baseline_loss=BASELINE)["verdict"] == "overfit"
  # The floor has to clear capacity_level.
  lenient = diagnose.Thresholds(capacity_level=0.5)
  assert verdict_of(train, val, baseline_loss=BASELINE, thresholds=lenient)["verdict"] == (
      "underfit_improving")
  # Without evidence the baseline columns are NaN; the relative rule still works.
  assert np.isnan(alone["floor_vs_baseline"]) and not np.isnan(alone["train_floor"])


def test_high_variance_needs_the_gap_and_the_swing():
  row = verdict_of(*swinging_validation())
  assert row["verdict"] == "high_variance"
  th = diagnose.Thresholds()
  assert row["rel_gap"] > th.high_variance_gap
  assert row["val_oscillation"] >= th.high_variance_oscillation
  assert row["train_oscillation"] < 0.01
  # Swings beyond max_oscillation are still the model's variance while the gap is wide...
  big = verdict_of(*swinging_validation(amplitude=0.15))
  assert big["val_oscillation"] > th.max_oscillation and big["verdict"] == "high_variance"
  # ...but the optimiser's when validation sits next to training (no gap).
  e = EPOCHS[:200]
  train = 0.9 * np.exp(-e / 20) + 0.3
  swing = swinging_validation(amplitude=0.15)[1] - (0.9 * np.exp(-e / 20) + 0.3)
  near = verdict_of(train, train + 0.02 + swing)
  assert near["rel_gap"] < th.high_variance_gap and near["verdict"] == "unstable"
  # A smooth validation loss far above training is not high variance (the five-point
  # problem's validation set is an extrapolation: a wide gap on every good fit).
  assert verdict_of(0.9 * np.exp(-e / 20) + 0.01, 0.9 * np.exp(-e / 20) + 0.3)["verdict"] == (
      "good_fit")
  calm = diagnose.Thresholds(high_variance_oscillation=0.5)
  assert verdict_of(*swinging_validation(), thresholds=calm)["verdict"] != "high_variance"


def test_improving_must_stand_out_of_the_noise():
  # A high, flat validation loss with 3 % noise: over a 40-epoch tail its fitted change has
  # a standard error of about 4 % of its small range, so half the seeds would clear the
  # 3 % "still improving" bar by chance; the noise_multiple bar stops that.
  train, val = stack(high_and_flat, 40, np.random.default_rng(9), noise=0.03)
  frame = diagnose.diagnose_repeats(train, val)
  th = diagnose.Thresholds()
  assert (frame["val_end_gain"] >= th.underfit_end_gain).mean() > 0.2
  assert (frame["verdict"] == "underfit_capacity").all(), frame["verdict"].value_counts()
  np.testing.assert_array_less(frame["val_end_gain"], th.noise_multiple * frame["val_gain_noise"])


def ticks_up(e=EPOCHS[:200]):
  # A good fit whose validation loss creeps up over the last 30 epochs: the tail reads
  # "overfitting", the whole curve (minimum 15 % of the run before the end) does not.
  return 0.9 * np.exp(-e / 40) + 0.01, 0.9 * np.exp(-e / 15) + 0.03 + 0.00015 * np.maximum(0, e - 170)


def test_trend_never_contradicts_the_verdict():
  row = verdict_of(*ticks_up())
  assert (row["verdict"], row["tail_trend"], row["trend"]) == ("good_fit", "overfitting", "converged")
  rng = np.random.default_rng(11)
  frames = [diagnose.diagnose_repeats(*population(kind, rng)[:2], **population(kind, rng)[2])
            for kind in POPULATIONS]
  for builders in CASES.values():
    for builder in builders:
      frames.append(diagnose.diagnose_repeats(*stack(builder, 5, rng, 0.05)))
  # Random walks of all sorts land anywhere; the trend must still agree.
  walks = np.exp(np.cumsum(rng.normal(0, 0.05, (2, 60, 150)), axis=-1))
  frames.append(diagnose.diagnose_repeats(walks[0], walks[1]))
  frame = pd.concat(frames, ignore_index=True)
  assert frame["verdict"].nunique() == len(diagnose.VERDICTS)
  for verdict, trend, tail in zip(frame["verdict"], frame["trend"], frame["tail_trend"]):
    allowed = diagnose.VERDICT_TRENDS[verdict]
    assert (trend is None) if not allowed else (trend in allowed), (verdict, trend)
    assert trend == tail or tail not in allowed
  for trend in {t for ts in diagnose.VERDICT_TRENDS.values() for t in ts}:
    assert trend in diagnose.TREND_MEANINGS


@pytest.mark.parametrize("builder,kwargs,words", [
    (swinging_validation, {}, ["more training data", "ensemble of the repeats", "cross-validate",
                               "more regularisation"]),
    (overfit, {}, ["Stop earlier", "regularise more", "more training data"]),
    (slow_small, {"baseline_loss": BASELINE}, ["Add capacity", "regularise less"]),
    (high_and_flat, {}, ["Add capacity", "regularise less"]),
    (still_improving, {}, ["more epochs", "learning rate"]),
    (unstable, {}, ["Lower the learning rate", "clip gradients"]),
])
def test_advice_names_the_remedies(builder, kwargs, words):
  train, val = stack(builder, 5, np.random.default_rng(12), 0.0)
  advice = diagnose.diagnose_config(train, val, **kwargs).advice
  for word in words:
    assert word in advice, (word, advice)


def test_diverged_advice_and_seed_ensemble_when_seeds_disagree():
  train, val = stack(good_fit, 4, np.random.default_rng(13), 0.0)
  train[:, 100] = np.inf
  assert "clip gradients" in diagnose.diagnose_config(train, val).advice
  train, val = mixed_config({overfit: 5, good_fit: 5}, np.random.default_rng(14))
  advice = diagnose.diagnose_config(train, val).advice
  assert "more repeats" in advice and "ensemble of the repeats" in advice


def test_config_that_loses_to_a_naive_baseline_is_flagged():
  train, val = stack(good_fit, 6, np.random.default_rng(15), 0.01)
  finals = val[:, -1]  # about 0.02
  lose = diagnose.diagnose_config(train, val, baseline_scores={"persistence": 0.01, "mean": 0.5})
  assert lose.beats_baselines is False and lose.best_baseline == "persistence"
  assert lose.share_beats_baselines == 0.0
  assert "does not beat the naive persistence forecast" in lose.advice
  win = diagnose.diagnose_config(train, val, baseline_scores={"persistence": 0.1, "mean": 0.5})
  assert win.beats_baselines is True and win.share_beats_baselines == 1.0
  assert "naive" not in win.advice
  # Half the seeds beat it: the mean decides the flag, the share tells how close.
  middle = float(np.median(finals))
  split = diagnose.diagnose_config(train, val, baseline_scores={"seasonal": middle})
  assert split.share_beats_baselines == pytest.approx(0.5)
  assert split.beats_baselines is bool(np.mean(finals) < middle)
  none = diagnose.diagnose_config(train, val)
  assert none.beats_baselines is None and none.best_baseline is None
  assert np.isnan(none.share_beats_baselines)
  frame = lose.to_frame()
  assert frame.loc[0, "best_baseline"] == "persistence" and frame.loc[0, "best_baseline_score"] == 0.01
  assert not frame.loc[0, "beats_baselines"]
  # The scores object of jaxlstm.baselines is accepted as it is.
  ds = problems.Dataset(np.zeros((4, 2, 1)), np.full((4, 1), 0.5), np.zeros((2, 2, 1)),
                        np.full((2, 1), 0.5))
  naive = baselines.naive_scores(ds)  # persistence 0.25, mean 0.0
  assert diagnose.diagnose_config(train, val, baseline_scores=naive).best_baseline == "mean"
  with pytest.raises(ValueError, match="baseline_scores must be finite"):
    diagnose.diagnose_config(train, val, baseline_scores={"persistence": np.nan})
  with pytest.raises(ValueError, match="baseline_scores must be a non-empty mapping"):
    diagnose.diagnose_config(train, val, baseline_scores={})


def test_baseline_loss_is_validated_and_passed_per_config():
  train, val = slow_small()
  for bad in (0.0, -1.0, np.nan, np.inf):
    with pytest.raises(ValueError, match=r"baseline_loss must be a finite training loss > 0"):
      diagnose.diagnose_repeats(train, val, baseline_loss=bad)
  histories = {"small": {"loss": train[None], "val_loss": val[None]},
               "fast": {"loss": still_improving()[0][None], "val_loss": still_improving()[1][None]}}
  per_seed, per_config = diagnose.diagnose_run(histories, baseline_loss={"small": BASELINE},
                                               baseline_scores={"persistence": 0.5})
  assert per_seed["verdict"].tolist() == ["underfit_capacity", "underfit_improving"]
  assert per_config["baseline_loss"].tolist()[0] == BASELINE
  assert np.isnan(per_config["baseline_loss"].tolist()[1])  # "fast" got the relative rule
  assert per_config["best_baseline"].tolist() == ["persistence", "persistence"]
  assert per_config["beats_baselines"].tolist() == [False, True]
  shared, _ = diagnose.diagnose_run(histories, baseline_loss=BASELINE)
  assert shared["verdict"].tolist() == ["underfit_capacity", "underfit_improving"]
  per, per_config = diagnose.diagnose_run(
      histories, baseline_scores={"small": {"mean": 0.1}, "fast": {"mean": 10.0}})
  assert per_config["beats_baselines"].tolist() == [False, True]
  with pytest.raises(ValueError, match="floor_fraction must be in"):
    diagnose.Thresholds(floor_fraction=0.0)
