"""Width and depth as the tutorials search them: LSTM(64), LSTM(128)->LSTM(64), 256->128->64, +/- Dense(32).

What it shows: the architecture search of the LSTM tuning tutorials, written as
they write it (one width per layer, `model.units`; an optional hidden
`Dense(32, relu)` before the output, `model.dense`), with the spread over
repeated seeds that one run per architecture hides. Data: a one-step forecast
of damped sine waves (random period 10-20 and decay 0.01-0.1), 10 input steps,
100 training and 100 validation waves. Models: the tutorials' `[64]`,
`[128, 64]` and `[256, 128, 64]` stacks (every layer but the last returns
sequences) and, at each depth, one at half those widths (`[32]`, `[64, 32]`,
`[128, 64, 32]`), each with and without `Dense(32)`, then Dense(1); Adam lr
1e-3, MSE (MAE reported), batch 32, shuffled, 50 epochs.

Configs that differ only in widths share a program (narrower layers are
zero-padded to the widest of their depth, exactly): 12 configs, 6 compiles (3
depths, with and without Dense). `--dry-run` prints that plan.

Command:

  python -m jaxlstm.sweep --experiment architecture --repeats 30

Expected result: (measured below)
"""
from jaxlstm.config import Config, DataConfig, ModelConfig, OptimConfig, TrainConfig

METRIC = "val_mae"


def get_config() -> Config:
  """LSTM(64) + Dense(1) forecasting the next step of a damped sine from 10, on 100 waves."""
  return Config(
      data=DataConfig(problem="damped_sine", options={"n_train": 100, "n_val": 100, "length": 10, "horizon": 1}),
      model=ModelConfig(cell="lstm", units=(64,)),
      optim=OptimConfig(name="adam", learning_rate=1e-3),
      train=TrainConfig(epochs=50, batch_size=32, shuffle=True, loss="mse", metrics=("mae",)),
  )


def get_grid() -> dict[str, list]:
  """Three depths at the tutorials' widths and at half of them, each with and without Dense(32)."""
  return {"model.units": [[32], [64], [64, 32], [128, 64], [128, 64, 32], [256, 128, 64]],
          "model.dense": [[], [32]]}
