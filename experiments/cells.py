"""How many memory cells: LSTM with 1, 5 or 10 cells on the five-point linear problem.

What it shows: the classic first tuning question for an LSTM, answered with a
distribution of final validation losses over repeated seeds instead of one run
per setting. Train X = 0.0 ... 0.4, validation X = 0.5 ... 0.9, y = X + 0.1
(one time step, one feature); LSTM(cells) + Dense(1), Adam (Keras defaults,
lr 1e-3), MSE, the whole training set as one batch, no shuffling, 500 epochs.
The validation inputs lie outside the training range, so the score measures
extrapolation as much as fit.

Command:

  python -m jaxlstm.sweep --repeats 30

All three configs are zero-padded to 10 cells and train in one compiled call
(90 members). Expected result (measured on a 2-core CPU, jax 0.10.2, seed 0,
30 repeats; 5 to 15 s to compile depending on load, under 1 s to train): no diverged seeds, and
the final val_loss falls as cells grow, but the seed ranges overlap (the best
1-cell seed beats the worst 5-cell seed), so one run per setting can mislead:

  cells   mean     std      min      50%      max
  1       0.193    0.0825   0.0586   0.170    0.368
  5       0.0662   0.0347   0.0158   0.0643   0.183
  10      0.0221   0.0162   0.00504  0.0184   0.0757

Each repeat's key folds in its config id, so the exact numbers move whenever
config ids do (a new `Config` field changes every id); the ordering and the
overlap should not.

With 500 epochs of full-batch Adam at lr 1e-3 every config is still
improving at the end (see plots/curves.png): more epochs is the next question.
"""
from jaxlstm.config import Config, DataConfig, ModelConfig, OptimConfig, TrainConfig


def get_config() -> Config:
  """The base config: LSTM + Dense(1) on the linear problem, Adam, MSE, full batch, 500 epochs."""
  return Config(
      data=DataConfig(problem="linear"),
      model=ModelConfig(cell="lstm", cells=10, layers=1),
      optim=OptimConfig(name="adam", learning_rate=1e-3),
      train=TrainConfig(epochs=500, batch_size=0, shuffle=False, loss="mse"),
  )


def get_grid() -> dict[str, list]:
  """Memory cells 1, 5 and 10."""
  return {"model.cells": [1, 5, 10]}
