"""Diagnosis on real training: the methodology's cases on the five-point problem.

LSTM(10), Adam, MSE, full batch (Brownlee's "diagnose underfitting and overfitting" study):
100 epochs underfits (still improving), 800 fits well, 1200 overfits; LSTM(1) for 300 epochs
lacks capacity. Thresholds were tuned on synthetic curves (test_diagnose.py); this checks
they give the expected verdict in at least 80% of the seeds of curves the engine trains.
The naive references come from `jaxlstm.baselines` on the same data: the training-mean
forecast's training MSE (0.02, the capacity reference) and the validation scores of
persistence (0.01) and the training mean (0.27).
"""
import numpy as np
import pytest

import jaxlstm
from jaxlstm import baselines, diagnose, problems

RUNS = {"cells10_e100": (10, 100), "cells10_e800": (10, 800), "cells10_e1200": (10, 1200),
        "cells1_e300": (1, 300)}


@pytest.fixture(scope="module")
def histories():
  """30 seeds of each run (one compile each, about 3 s)."""
  out = {}
  for name, (cells, epochs) in RUNS.items():
    config = jaxlstm.Config().override({"model.cells": cells, "train.batch_size": 0,
                                        "train.shuffle": False, "train.epochs": epochs})
    ens = jaxlstm.fit(config, repeats=30, seed=0)
    out[name] = {"loss": ens.history["loss"], "val_loss": ens.history["val_loss"]}
  return out


@pytest.fixture(scope="module")
def references():
  data = problems.make("linear")
  return (baselines.naive_scores(data, split="train", methods=("mean",))["mean"],
          baselines.naive_scores(data))


@pytest.mark.parametrize("run,verdict", [
    ("cells10_e100", "underfit_improving"),
    ("cells10_e800", "good_fit"),
    ("cells10_e1200", "overfit"),
    ("cells1_e300", "underfit_capacity"),
])
def test_five_point_problem_verdicts(histories, references, run, verdict):
  base, naive = references
  h = histories[run]
  result = diagnose.diagnose_config(h["loss"], h["val_loss"], baseline_loss=base,
                                    baseline_scores=naive)
  assert result.majority == verdict, result.shares
  assert result.shares[verdict] >= 0.8
  if verdict != "underfit_capacity":
    # The LSTM(10) cases need no baseline: the relative rules give the same majority.
    plain = diagnose.diagnose_config(h["loss"], h["val_loss"])
    assert plain.majority == verdict and plain.shares[verdict] >= 0.8, plain.shares


def test_the_baseline_is_what_tells_capacity_from_patience(histories, references):
  # LSTM(1) at 300 epochs is still falling (it sits near the training-mean forecast and creeps
  # down), so the curve alone says "train longer"; against the baseline its floor is too high.
  base, _ = references
  h = histories["cells1_e300"]
  alone = diagnose.diagnose_repeats(h["loss"], h["val_loss"])
  judged = diagnose.diagnose_repeats(h["loss"], h["val_loss"], baseline_loss=base)
  assert (alone["verdict"] == "underfit_capacity").mean() < 0.2
  capacity = judged["verdict"] == "underfit_capacity"
  assert (judged.loc[capacity, "floor_vs_baseline"] >= 0.2).all()
  # LSTM(10) at 100 epochs ends at the same level but falls without slowing: patience.
  h = histories["cells10_e100"]
  fast = diagnose.diagnose_repeats(h["loss"], h["val_loss"], baseline_loss=base)
  assert np.median(fast["train_vs_baseline"]) > 0.5
  assert np.median(fast["floor_vs_baseline"]) < 0.2


def test_real_runs_flag_the_naive_baseline_and_agree_with_their_trends(histories, references):
  base, naive = references
  assert naive.best == "persistence" and naive["persistence"] == pytest.approx(0.01, rel=1e-5)
  per_seed, per_config = diagnose.diagnose_run(histories, baseline_loss=base,
                                               baseline_scores=naive)
  flags = dict(zip(per_config["config"], per_config["beats_baselines"]))
  assert flags == {"cells10_e100": False, "cells10_e800": True, "cells10_e1200": True,
                   "cells1_e300": False}
  for verdict, trend in zip(per_seed["verdict"], per_seed["trend"]):
    assert trend in diagnose.VERDICT_TRENDS[verdict]
