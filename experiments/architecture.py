"""Width and depth as the tutorials search them: LSTM(64), LSTM(128)->LSTM(64), 256->128->64, +/- Dense(32).

What it shows: the architecture search of the LSTM tuning tutorials, written as
they write it (one width per layer, `model.units`; an optional hidden
`Dense(32, relu)` before the output, `model.dense`), with the spread over
repeated seeds that one run per architecture hides. Data: a one-step forecast
of damped sine waves (random period 10-20 and decay 0.01-0.1), 8 input steps,
64 training and 64 validation waves (small, so that a 3-layer LSTM(256) stack
trains 30 repeats on a 2-core CPU in minutes). Models: the tutorials' `[64]`,
`[128, 64]` and `[256, 128, 64]` stacks (every layer but the last returns
sequences) and, at each depth, one at half those widths (`[32]`, `[64, 32]`,
`[128, 64, 32]`), each with and without `Dense(32)`, then Dense(1); Adam lr
3e-3, MSE (MAE reported), batch 16, shuffled, 30 epochs.

Configs that differ only in widths share a program (narrower layers are
zero-padded to the widest of their depth, exactly): 12 configs, 6 compiles (3
depths, with and without Dense). `--dry-run` prints that plan.

Command:

  python -m jaxlstm.sweep --experiment architecture --repeats 30

Expected result (measured on a 2-core CPU, jax 0.10.2, seed 0, 30 repeats; 11.7 min
wall while other jobs held the machine at a load of about 7, so the sweep got half
the CPU: 2 min compiling, 9 min training, three quarters of it in the two 3-layer
groups): depth does not pay here and costs spread. The best mean is the 2-layer
LSTM(128) -> LSTM(64) + Dense(32), but not significantly better than the runner-up
LSTM(64) + Dense(32) (Welch p = 0.08, Holm 0.25). Dense(32) helps the 1-layer
models most, and mainly by cutting their spread over seeds; the 3-layer stacks have
the widest spread (std 0.024-0.039, worst repeats near 0.14-0.21), so one run of
a 3-layer model can land anywhere from best to worst:

  units            dense   final val MAE mean (std)   min      max      best val MAE mean
  [32]             -       0.0681 (0.0190)            0.0424   0.1151   0.0680
  [32]             32      0.0481 (0.0056)            0.0352   0.0589   0.0462
  [64]             -       0.0531 (0.0085)            0.0406   0.0862   0.0508
  [64]             32      0.0439 (0.0035)            0.0379   0.0489   0.0425
  [64, 32]         -       0.0597 (0.0131)            0.0456   0.1008   0.0523
  [64, 32]         32      0.0620 (0.0205)            0.0337   0.1283   0.0492
  [128, 64]        -       0.0439 (0.0092)            0.0327   0.0662   0.0399
  [128, 64]        32      0.0404 (0.0100)            0.0217   0.0643   0.0352
  [128, 64, 32]    -       0.0727 (0.0264)            0.0289   0.1431   0.0642
  [128, 64, 32]    32      0.0850 (0.0389)            0.0351   0.2138   0.0693
  [256, 128, 64]   -       0.0629 (0.0243)            0.0339   0.1275   0.0594
  [256, 128, 64]   32      0.0494 (0.0315)            0.0193   0.1427   0.0438

30 epochs of 4 steps is a short training: in diagnosis.csv, 7 to 11 of the 30
repeats of each 3-layer model and 14 of LSTM(32) alone are still improving at the
end (underfit_improving); more epochs (`--epochs 100`) is the next question.
Exact values move whenever config ids do (see cells.py); the pattern should not.
"""
from jaxlstm.config import Config, DataConfig, ModelConfig, OptimConfig, TrainConfig

METRIC = "val_mae"


def get_config() -> Config:
  """LSTM(64) + Dense(1) forecasting the next step of a damped sine from 8, on 64 waves."""
  return Config(
      data=DataConfig(problem="damped_sine", options={"n_train": 64, "n_val": 64, "length": 8, "horizon": 1}),
      model=ModelConfig(cell="lstm", units=(64,)),
      optim=OptimConfig(name="adam", learning_rate=3e-3),
      train=TrainConfig(epochs=30, batch_size=16, shuffle=True, loss="mse", metrics=("mae",)),
  )


def get_grid() -> dict[str, list]:
  """Three depths at the tutorials' widths and at half of them, each with and without Dense(32)."""
  return {"model.units": [[32], [64], [64, 32], [128, 64], [128, 64, 32], [256, 128, 64]],
          "model.dense": [[], [32]]}
