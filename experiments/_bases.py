"""Base configs that several studies start from (not a study: `_` modules are not listed).

  five_point()   the default study's base (experiments/cells.py): LSTM(10) + Dense(1)
                 on the five-point linear problem, Adam lr 1e-3, MSE, full batch,
                 unshuffled, 500 epochs; one step per epoch, so it trains in about a second
  damped_sine()  a small multi-step forecast: 100 training and 100 validation waves,
                 20 input steps, 5 predicted; LSTM(20), Adam lr 1e-2, MAE, batch 20
                 (shuffled), 100 epochs
  echo()         a small memory task: remember the 3rd of 5 random symbols (one-hot over
                 10), 200 training and 100 validation sequences; LSTM(25) + softmax,
                 Adam lr 1e-2, cross-entropy and accuracy, batch 20 (shuffled), 100 epochs

Sizes are chosen so that a study of a few static-shape groups runs in minutes on a
2-core CPU at 30 repeats; scale them up with `--set data.options.n_train=...`.
"""
from . import cells
from jaxlstm.config import Config, DataConfig, ModelConfig, OptimConfig, TrainConfig


def five_point() -> Config:
  """The default study's base config (experiments/cells.py)."""
  return cells.get_config()


def damped_sine() -> Config:
  """LSTM(20) forecasting 5 steps of a damped sine from 20, on 100 training waves."""
  return Config(
      data=DataConfig(problem="damped_sine",
                      options={"n_train": 100, "n_val": 100, "length": 20, "horizon": 5}),
      model=ModelConfig(cell="lstm", cells=20, layers=1),
      optim=OptimConfig(name="adam", learning_rate=1e-2),
      train=TrainConfig(epochs=100, batch_size=20, shuffle=True, loss="mae"),
  )


def echo() -> Config:
  """LSTM(25) + softmax recalling position 2 of 5 one-hot symbols, on 200 training sequences."""
  return Config(
      data=DataConfig(problem="echo", options={"n_train": 200, "n_val": 100}),
      model=ModelConfig(cell="lstm", cells=25, output_activation="softmax"),
      optim=OptimConfig(name="adam", learning_rate=1e-2),
      train=TrainConfig(epochs=100, batch_size=20, shuffle=True, loss="categorical_crossentropy",
                        metrics=("accuracy",)),
  )
