"""Diagnosis on real training: the methodology's three cases on the five-point problem.

LSTM(10), Adam, MSE, full batch (Brownlee's "diagnose underfitting and overfitting" study):
100 epochs underfits, 800 fits well, 1200 overfits. Thresholds were tuned on synthetic curves
(test_diagnose.py); this checks they give the expected majority on curves the engine trains.
"""
import pytest

import jaxlstm
from jaxlstm import diagnose


@pytest.mark.parametrize("epochs,verdict", [(100, "underfit"), (800, "good_fit"), (1200, "overfit")])
def test_five_point_problem_majority_verdicts(epochs, verdict):
  config = jaxlstm.Config().override({"model.cells": 10, "train.batch_size": 0,
                                      "train.shuffle": False, "train.epochs": epochs})
  ens = jaxlstm.fit(config, repeats=30, seed=0)
  result = diagnose.diagnose_config(ens.history["loss"], ens.history["val_loss"])
  assert result.majority == verdict, result.shares
  assert result.shares[verdict] >= 0.8
