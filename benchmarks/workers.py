"""One benchmark measurement per process: `python benchmarks/workers.py NAME [--key value ...]`.

Workloads (the same hyper-parameters in every system):
  W1  the default study: LSTM(cells) -> Dense(1), cells 1, 5, 10, on the
      five-point problem, 500 epochs, full batch (5 samples), no shuffling,
      Adam (lr 1e-3, eps 1e-7), MSE, validation loss every epoch, R repeats.
  W2  stacked: LSTM(20) -> LSTM(20) -> Dense(5) on damped sine (input 50 steps,
      1000 training / 200 validation samples), batch 32, shuffled, 20 epochs,
      MAE, Adam, validation every epoch, R repeats.

Workers:
  jaxlstm_w1 / jaxlstm_w2   jaxlstm.fit_many / jaxlstm.fit in-process (compile/run split, GFLOP/s)
  keras_w1 / keras_w2       a Keras 3 loop: a new model and `model.fit` per repeat
  torch_w1 / torch_w2       a PyTorch loop: nn.LSTM + nn.Linear, Adam(eps=1e-7), per repeat
  ceiling                   the batched small-matmul ceiling of this machine in jax

Baselines read their data from an .npz the parent wrote (`--data`), so they do
not import jaxlstm (and jax) just to make it. Every worker prints one `RESULT`
JSON line (common.emit) with its peak RSS.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import common

T_START = time.perf_counter()

W1_OVERRIDES = {"train.epochs": 500, "train.batch_size": 0, "train.shuffle": False}
W1_CELLS = (1, 5, 10)
W2_OVERRIDES = {
    "data.problem": "damped_sine", "data.options": {"n_train": 1000, "n_val": 200},
    "model.cells": 20, "model.layers": 2, "train.epochs": 20, "train.batch_size": 32,
    "train.shuffle": True, "train.loss": "mae",
}


# ----------------------------------------------------------------------------- FLOP counting
def lstm_forward_flops(features: int, units: list[int], time_steps: int, outputs: int) -> float:
  """FLOPs of one sample's forward pass through stacked LSTMs and a Dense head.

  Per time step per layer: the gate matmuls 2 * 4H * (F + H), plus elementwise
  ~17H (bias and input/recurrent sums 8H, four gate activations 4H, the cell
  and hidden updates 5H; a transcendental counts as one).
  """
  total, f = 0.0, features
  for h in units:
    total += time_steps * (2 * 4 * h * (f + h) + 17 * h)
    f = h
  return total + 2 * f * outputs + outputs


def training_flops(features, units, time_steps, outputs, *, n_train, n_val, epochs, members) -> float:
  """Whole-run FLOPs: forward + backward ~ 3x forward on the training samples, forward on validation."""
  fwd = lstm_forward_flops(features, units, time_steps, outputs)
  return members * epochs * (3 * fwd * n_train + fwd * n_val)


def w1_flops(repeats: int, padded_to: int | None = None) -> float:
  """W1 FLOPs (with `padded_to`, the work the padded program executes)."""
  return sum(training_flops(1, [padded_to or c], 1, 1, n_train=5, n_val=5, epochs=500, members=repeats)
             for c in W1_CELLS)


def w2_flops(repeats: int) -> float:
  return training_flops(1, [20, 20], 50, 5, n_train=1000, n_val=200, epochs=20, members=repeats)


# ----------------------------------------------------------------------------- jaxlstm
def _jax_cache(cache_dir: str | None):
  """jaxlstm's caches (program store and JAX's) in `cache_dir`; none without one (a cold run).

  Before jaxlstm configures them: it reads the environment on its first compile.
  """
  if cache_dir:
    os.environ["XDG_CACHE_HOME"] = cache_dir
    os.environ.pop("JAXLSTM_NO_CACHE", None)
  else:
    os.environ["JAXLSTM_NO_CACHE"] = "1"


def jaxlstm_w1(repeats: int, cache_dir: str | None = None, **_) -> dict:
  """The default study through the library API (what the CLI runs, minus store/report)."""
  import jax
  _jax_cache(cache_dir)
  import jaxlstm
  from jaxlstm.ensemble import plan, run_group
  t0 = time.perf_counter()
  configs = [jaxlstm.Config().override({**W1_OVERRIDES, "model.cells": c}) for c in W1_CELLS]
  groups = plan(configs, repeats)
  compile_s = run_s = 0.0
  compiles = 0
  scores = {}
  for group in groups:
    ensembles, info = run_group(group)
    compile_s += info.compile_seconds
    run_s += info.run_seconds
    compiles += info.compiles
    for ens in ensembles:
      final = ens.final("val_loss")
      scores[f"cells={ens.config.model.cells}"] = [float(final.mean()), float(final.std())]
  work_s = time.perf_counter() - t0
  padded = max(g.cells for g in groups) if all(g.padded or len(g.configs) == 1 for g in groups) else None
  flops = sum(training_flops(1, [g.cells], 1, 1, n_train=5, n_val=5, epochs=500, members=g.members)
              for g in groups)
  return {"groups": len(groups), "compiles": compiles, "compile_s": compile_s, "run_s": run_s,
          "work_s": work_s, "fits": repeats * len(W1_CELLS), "scores": scores,
          "gflop": flops / 1e9, "gflops_run": flops / 1e9 / run_s, "padded_to": padded,
          "jax_cache": bool(cache_dir), "device": str(jax.devices()[0])}


def jaxlstm_w2(repeats: int, cache_dir: str | None = None, kernel: str = "scan", **_) -> dict:
  """W2 through `run_group` on every device of the process (host devices: XLA_FLAGS, set by the parent)."""
  import jax
  _jax_cache(cache_dir)
  import jaxlstm
  from jaxlstm.ensemble import plan, run_group
  t0 = time.perf_counter()
  cfg = jaxlstm.Config().override({**W2_OVERRIDES, "model.kernel": kernel})
  (group,) = plan([cfg], repeats)
  (ens,), info = run_group(group)
  work_s = time.perf_counter() - t0
  final = ens.final("val_loss")
  flops = w2_flops(repeats)
  return {"compiles": info.compiles, "compile_s": info.compile_seconds, "run_s": info.run_seconds,
          "work_s": work_s, "fits": repeats, "scores": {"val_mae": [float(final.mean()), float(final.std())]},
          "diverged": int(ens.diverged.sum()), "gflop": flops / 1e9, "gflops_run": flops / 1e9 / info.run_seconds,
          "device": str(jax.devices()[0]), "devices": len(jax.devices()), "kernel": kernel}


def cli_results(out: str, work: str = "W1") -> dict:
  """Compile/run seconds (manifest.json) and final val_loss per cells (scores.csv) of a CLI results folder.

  `work`: "W1" (the default study) or "W2" (its final val_loss is the validation MAE, W2's loss)."""
  import csv
  from pathlib import Path
  folder = Path(out)
  manifest = json.loads((folder / "manifest.json").read_text())
  groups = manifest.get("groups", [])
  result = {"compiles": sum(g.get("compiles", 0) for g in groups),
            "compile_s": sum(g.get("compile_seconds", 0.0) for g in groups),
            "run_s": sum(g.get("run_seconds", 0.0) for g in groups), "groups": len(groups)}
  with open(folder / "scores.csv") as f:
    rows = list(csv.DictReader(f))
  result["fits"] = len(rows)
  if work == "W2":  # one config: no grid column
    losses = [float(row["final_val_loss"]) for row in rows]
    result["scores"] = {"val_mae": [statistics.fmean(losses), statistics.pstdev(losses)]}
    if result["run_s"]:
      result["gflops_run"] = w2_flops(result["fits"]) / 1e9 / result["run_s"]
    return result
  by_cells: dict[str, list[float]] = {}
  for row in rows:
    by_cells.setdefault(f"cells={row['model.cells']}", []).append(float(row["final_val_loss"]))
  result["scores"] = {k: [statistics.fmean(v), statistics.pstdev(v)] for k, v in by_cells.items()}
  flops = sum(training_flops(1, [g["cells"]], 1, 1, n_train=5, n_val=5, epochs=500, members=g["members"])
              for g in groups if "cells" in g and "members" in g)
  if flops and result["run_s"]:
    result["gflops_run"] = flops / 1e9 / result["run_s"]
  return result


# ----------------------------------------------------------------------------- Keras 3
def _keras():
  os.environ.setdefault("KERAS_BACKEND", "jax")
  import keras
  return keras


def keras_w1(repeats: int, data: str, **_) -> dict:
  import numpy as np
  keras = _keras()
  d = np.load(data)
  fit_times, scores = [], {}
  for cells in W1_CELLS:
    finals = []
    for r in range(repeats):
      keras.utils.set_random_seed(r)
      t = time.perf_counter()
      model = keras.Sequential([keras.Input((1, 1)), keras.layers.LSTM(cells), keras.layers.Dense(1)])
      model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3, epsilon=1e-7), loss="mse")
      hist = model.fit(d["x_train"], d["y_train"], epochs=500, batch_size=5, shuffle=False, verbose=0,
                       validation_data=(d["x_val"], d["y_val"]))
      fit_times.append(time.perf_counter() - t)
      finals.append(hist.history["val_loss"][-1])
      keras.backend.clear_session()
    scores[f"cells={cells}"] = [float(np.mean(finals)), float(np.std(finals))]
  return _loop_result(fit_times, scores, backend=keras.backend.backend())


def keras_w2(repeats: int, data: str, **_) -> dict:
  import numpy as np
  keras = _keras()
  d = np.load(data)
  fit_times, finals = [], []
  for r in range(repeats):
    keras.utils.set_random_seed(r)
    t = time.perf_counter()
    model = keras.Sequential([keras.Input(d["x_train"].shape[1:]), keras.layers.LSTM(20, return_sequences=True),
                              keras.layers.LSTM(20), keras.layers.Dense(d["y_train"].shape[1])])
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3, epsilon=1e-7), loss="mae")
    hist = model.fit(d["x_train"], d["y_train"], epochs=20, batch_size=32, shuffle=True, verbose=0,
                     validation_data=(d["x_val"], d["y_val"]))
    fit_times.append(time.perf_counter() - t)
    finals.append(hist.history["val_loss"][-1])
    keras.backend.clear_session()
  return _loop_result(fit_times, {"val_mae": [float(np.mean(finals)), float(np.std(finals))]},
                      backend=keras.backend.backend())


# ----------------------------------------------------------------------------- PyTorch
def _torch_model(features: int, units: int, layers: int, outputs: int):
  import torch
  from torch import nn

  class Net(nn.Module):
    def __init__(self):
      super().__init__()
      self.lstm = nn.LSTM(features, units, num_layers=layers, batch_first=True)
      self.head = nn.Linear(units, outputs)
      # Keras' LSTM init: glorot_uniform kernel over the fused [F, 4H] matrix,
      # orthogonal recurrent kernel, zero bias with forget-gate bias 1 (torch's
      # gate order i, f, g, o equals Keras' i, f, c, o); Dense: glorot_uniform, zero bias.
      with torch.no_grad():
        for name, p in self.lstm.named_parameters():
          if name.startswith("weight_ih"):
            nn.init.xavier_uniform_(p)
          elif name.startswith("weight_hh"):
            nn.init.orthogonal_(p)
          elif name.startswith("bias_ih"):
            p.zero_()
            p[units:2 * units] = 1.0
          else:
            p.zero_()
        nn.init.xavier_uniform_(self.head.weight)
        self.head.bias.zero_()

    def forward(self, x):
      out, _ = self.lstm(x)
      return self.head(out[:, -1])

  return Net()


def _torch_fit(model, x, y, xv, yv, *, epochs, batch, shuffle, loss_fn):
  import torch
  opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
  n = x.shape[0]
  val = None
  for _ in range(epochs):
    model.train()
    order = torch.randperm(n) if shuffle else torch.arange(n)
    for start in range(0, n, batch):
      idx = order[start:start + batch]
      opt.zero_grad(set_to_none=True)
      loss = loss_fn(model(x[idx]) if batch < n else model(x), y[idx] if batch < n else y)
      loss.backward()
      opt.step()
    model.eval()
    with torch.no_grad():
      val = float(loss_fn(model(xv), yv))  # Keras-style per-epoch validation
  return val


def _torch_data(data: str):
  import numpy as np
  import torch
  d = np.load(data)
  return [torch.from_numpy(np.asarray(d[k], np.float32)) for k in ("x_train", "y_train", "x_val", "y_val")]


def _torch_threads(threads: int) -> None:
  import torch
  if threads:
    torch.set_num_threads(threads)


def torch_w1(repeats: int, data: str, threads: int = 0, **_) -> dict:
  import numpy as np
  import torch
  _torch_threads(threads)
  x, y, xv, yv = _torch_data(data)
  fit_times, scores = [], {}
  for cells in W1_CELLS:
    finals = []
    for r in range(repeats):
      torch.manual_seed(r)
      t = time.perf_counter()
      model = _torch_model(1, cells, 1, 1)
      finals.append(_torch_fit(model, x, y, xv, yv, epochs=500, batch=5, shuffle=False,
                               loss_fn=torch.nn.functional.mse_loss))
      fit_times.append(time.perf_counter() - t)
    scores[f"cells={cells}"] = [float(np.mean(finals)), float(np.std(finals))]
  return _loop_result(fit_times, scores, threads=torch.get_num_threads())


def torch_w2(repeats: int, data: str, threads: int = 0, **_) -> dict:
  import numpy as np
  import torch
  _torch_threads(threads)
  x, y, xv, yv = _torch_data(data)
  fit_times, finals = [], []
  for r in range(repeats):
    torch.manual_seed(r)
    t = time.perf_counter()
    model = _torch_model(x.shape[2], 20, 2, y.shape[1])
    finals.append(_torch_fit(model, x, y, xv, yv, epochs=20, batch=32, shuffle=True,
                             loss_fn=torch.nn.functional.l1_loss))
    fit_times.append(time.perf_counter() - t)
  return _loop_result(fit_times, {"val_mae": [float(np.mean(finals)), float(np.std(finals))]},
                      threads=torch.get_num_threads())


def _loop_result(fit_times, scores, **extra) -> dict:
  steady = statistics.median(fit_times[1:]) if len(fit_times) > 1 else fit_times[0]
  return {"fits": len(fit_times), "work_s": sum(fit_times), "first_fit_s": fit_times[0],
          "steady_fit_s": steady, "steady_fits_s": steady * len(fit_times), "scores": scores, **extra}


# ----------------------------------------------------------------------------- ceiling
def ceiling(members: int = 30, batch: int = 32, units: int = 20, steps: int = 2000, **_) -> dict:
  """GFLOP/s of batched small matmuls in jax on this machine (the W2 recurrent shape by default).

  Both run `steps` products [members, batch, H] @ [members, H, 4H] inside one
  jitted lax.scan (no dispatch per product), as the LSTM's time loop does:
    recurrent: dependent products, h <- sum of the four H-wide column blocks of h @ W
      (every output column is used, so XLA cannot drop any of the matmul);
    independent: acc <- acc + x_t @ W over stored inputs x_t (no dependency
      between products, so the CPU may overlap them).
  The ceiling is the better of the two. Only the matmul FLOPs are counted.
  """
  import jax
  import jax.numpy as jnp
  key = jax.random.key(0)
  w = jax.random.normal(key, (members, units, 4 * units), jnp.float32) * 0.1
  h0 = jax.random.normal(key, (members, batch, units), jnp.float32)
  xs = jax.random.normal(key, (min(steps, 500), members, batch, units), jnp.float32)

  @jax.jit
  def recurrent(w, h):
    def step(h, _):
      g = jnp.einsum("mbh,mhg->mbg", h, w)
      return g[..., :units] + g[..., units:2 * units] + g[..., 2 * units:3 * units] + g[..., 3 * units:], None
    return jax.lax.scan(step, h, None, length=steps)[0]

  @jax.jit
  def independent(w, xs):
    def step(acc, x):
      return acc + jnp.einsum("mbh,mhg->mbg", x, w), None
    acc = jnp.zeros((members, batch, 4 * units), jnp.float32)
    return jax.lax.scan(step, acc, xs)[0]

  out = {}
  for name, fn, args, n in (("recurrent", recurrent, (w, h0), steps), ("independent", independent, (w, xs), len(xs))):
    flops = 2.0 * n * members * batch * units * 4 * units
    compiled = fn.lower(*args).compile()
    jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(5):
      t = time.perf_counter()
      jax.block_until_ready(compiled(*args))
      times.append(time.perf_counter() - t)
    out[name + "_gflops"] = flops / min(times) / 1e9
  out["ceiling_gflops"] = max(out["recurrent_gflops"], out["independent_gflops"])
  out.update(members=members, batch=batch, units=units, steps=steps)
  return out


WORKERS = {f.__name__: f for f in (jaxlstm_w1, jaxlstm_w2, keras_w1, keras_w2, torch_w1, torch_w2,
                                   ceiling)}


def main() -> None:
  p = argparse.ArgumentParser()
  p.add_argument("name", choices=sorted(WORKERS))
  p.add_argument("--repeats", type=int, default=30)
  p.add_argument("--data")
  p.add_argument("--cache-dir")
  p.add_argument("--out")
  p.add_argument("--cli-args", default="")
  p.add_argument("--members", type=int, default=30)
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--units", type=int, default=20)
  p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's own, = cores)")
  p.add_argument("--kernel", help="jaxlstm_w2: model.kernel (scan, the default, or fused)")
  args = p.parse_args()
  kwargs = {k: v for k, v in vars(args).items() if v is not None and k != "name"}
  if args.name == "ceiling":
    kwargs = {k: kwargs[k] for k in ("members", "batch", "units")}
  result = WORKERS[args.name](**kwargs)
  result.update(worker=args.name, repeats=args.repeats, process_s=time.perf_counter() - T_START)
  common.emit(result)


if __name__ == "__main__":
  main()
