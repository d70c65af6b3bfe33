"""Host side of the engine: plan groups, run each in one compiled call, return `Ensemble`s.

`fit(config, dataset, repeats=R, seed=s)` trains all R repeats of one config in
one call; `fit_many(configs, ...)` groups configs by static shape
(`config.static_key`) and trains each group's configs x repeats as the members
of one call. Traced hyper-parameters (learning rate, dropout, ...) differ per
member, so a grid over them costs one compile.
"""
from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from jaxlstm import keys as keys_lib
from jaxlstm.config import Config, ConfigError, static_key
from jaxlstm.models import activate
from jaxlstm.problems import Dataset
from jaxlstm.train import Member, Program, check_compatible, member_hparams, resolve_dataset, unpad_params

DEFAULT_MEMORY_BUDGET = 2 * 2**30
# LLVM at -O1: measured on the 2-core CPU, the default study compiles 0.5 s
# faster (2.4 vs 3.0 s) and W2 (stacked LSTM(20), 30 seeds) too, with equal
# run time; the heavy lifting is XLA's own fusion, not LLVM's later passes.
COMPILER_OPTIONS = {"xla_backend_optimization_level": 1}


@dataclasses.dataclass
class Group:
  """Configs that share one compiled program.

  Attributes:
    configs: the grid points, in grid order.
    cells: the width the program runs at (the widest config when padded).
    padded: whether narrower configs are zero-padded to `cells`.
    repeats: repeats per config; members = len(configs) * repeats.
  """
  configs: list[Config]
  cells: int
  padded: bool
  repeats: int

  @property
  def members(self) -> int:
    return len(self.configs) * self.repeats


def plan(configs: Sequence[Config], repeats: int, *, pad_cells: bool = True) -> list[Group]:
  """Group configs by static shape; one group = one program = one call (per member chunk)."""
  if isinstance(repeats, bool) or not isinstance(repeats, (int, np.integer)) or repeats < 1:
    raise ConfigError(f"repeats = {repeats!r} is not allowed: expected an integer >= 1.")
  groups: dict[str, list[Config]] = {}
  for cfg in configs:
    groups.setdefault(static_key(cfg, pad_cells=pad_cells), []).append(cfg)
  out = []
  for members in groups.values():
    cells = max(c.model.cells for c in members)
    padded = any(c.model.cells != cells for c in members)
    out.append(Group(members, cells, padded, int(repeats)))
  return out


@dataclasses.dataclass
class Ensemble:
  """All repeats of one config.

  Attributes:
    config: the config.
    history: metric -> `[repeats, epochs]` float array; NaN after a repeat stopped.
    params: stacked parameter pytree (numpy), leading axis = repeats.
    stopped_epoch: `[repeats]` epoch at which early stopping fired (0-based), -1 if never.
    best_epoch: `[repeats]` best epoch of the monitored metric (val_loss without early stopping).
    diverged: `[repeats]` True where the loss became NaN/Inf.
    diverged_epoch: `[repeats]` first non-finite epoch, -1 if none.
    seed, repeat_indices: which repeats these are.
    timings: compile / run seconds of the call that trained it (shared by its group).
  """
  config: Config
  history: dict[str, np.ndarray]
  params: Any
  stopped_epoch: np.ndarray
  best_epoch: np.ndarray
  diverged: np.ndarray
  diverged_epoch: np.ndarray
  seed: int
  repeat_indices: np.ndarray
  outputs: int
  time_out: int = 0
  frame_shape: tuple[int, ...] = ()
  timings: dict[str, float] = dataclasses.field(default_factory=dict)

  @property
  def repeats(self) -> int:
    return int(len(self.repeat_indices))

  @property
  def epochs_run(self) -> np.ndarray:
    """`[repeats]` number of epochs each repeat trained."""
    epochs = self.history["loss"].shape[1]
    return np.where(self.stopped_epoch >= 0, self.stopped_epoch + 1, epochs)

  def keras_history(self, i: int) -> dict[str, list[float]]:
    """Keras-style `history.history` of repeat i, truncated where it stopped."""
    end = int(self.stopped_epoch[i]) + 1 if self.stopped_epoch[i] >= 0 else self.history["loss"].shape[1]
    return {k: [float(v) for v in values[i, :end]] for k, values in self.history.items()}

  def final(self, metric: str = "val_loss") -> np.ndarray:
    """`[repeats]` last recorded value of `metric` (at the stop epoch for stopped repeats)."""
    values = self.history[metric]
    last = np.where(self.stopped_epoch >= 0, self.stopped_epoch, values.shape[1] - 1)
    return values[np.arange(values.shape[0]), last]

  def best(self, metric: str = "val_loss", *, higher_is_better: bool = False) -> np.ndarray:
    values = self.history[metric]
    with np.errstate(all="ignore"):
      reduce = np.nanmax if higher_is_better else np.nanmin
      finite = np.isfinite(values).any(axis=1)
      out = np.full(values.shape[0], np.nan)
      if finite.any():
        out[finite] = reduce(values[finite], axis=1)
    return out

  def network(self):
    from jaxlstm.models import Network
    return Network(self.config.model, self.outputs, time_out=self.time_out, frame_shape=tuple(self.frame_shape))

  def predict(self, x: np.ndarray) -> np.ndarray:
    """Predictions of every repeat: `[repeats, N, ...]` (after the output activation)."""
    x = np.asarray(x, np.float32)
    if x.ndim != 3:
      raise ValueError(f"x must have shape [samples, time, features], got {x.shape}.")
    network, act = self.network(), self.config.model.output_activation
    fn = jax.jit(jax.vmap(lambda p: activate(network.apply({"params": p}, x), act)))
    return np.asarray(fn(self.params))


class Checkpointer(Protocol):
  """Saves and restores the full training state of a member chunk at epoch-chunk boundaries."""

  def restore(self) -> tuple[int, Any, dict[str, np.ndarray]] | None: ...

  def save(self, epoch: int, states: Any, history: dict[str, np.ndarray]) -> None: ...


@dataclasses.dataclass
class RunInfo:
  """What a group's run cost: compiles, seconds, chunks."""
  compiles: int = 0
  compile_seconds: float = 0.0
  run_seconds: float = 0.0
  epoch_chunks: int = 0
  member_chunks: int = 0
  stopped_early: bool = False


def choose_epoch_chunk(config: Config, steps_per_epoch: int) -> int:
  """Epochs per call: all of them for short runs, about a tenth for long ones.

  Early stopping needs chunk boundaries to end a run early, and a checkpoint
  interval sets the chunk.
  """
  epochs = config.train.epochs
  if config.train.checkpoint_every:
    return min(config.train.checkpoint_every, epochs)
  if config.train.early_stopping is not None or epochs * steps_per_epoch > 5000:
    return max(1, math.ceil(epochs / 10))
  return epochs


def estimate_member_bytes(program: Program) -> int:
  """Rough device memory of one member: params, optimizer state, activations, data gathers."""
  ds = program.dataset
  x = np.zeros((1, *ds.x_train.shape[1:]), np.float32)
  shapes = jax.eval_shape(lambda: program.init_params(jax.random.key(0)))
  n_params = sum(math.prod(s.shape) for s in jax.tree.leaves(shapes))
  time_steps = ds.x_train.shape[1]
  width = max(program.cells, ds.n_features) * 4 * program.config.model.layers
  activations = program.batch * time_steps * width * 12  # forward states kept for the backward pass
  data = program.batch * (x.size + ds.y_train[0].size) * 2
  return 4 * (6 * n_params + activations + data + program.n_val * (width + ds.y_train[0].size))


def members_of(group: Group, seed: int) -> Member:
  """Stacked keys and traced hyper-parameters of every (config, repeat) of a group."""
  stacked_keys = keys_lib.group_keys(seed, group.configs, group.repeats)
  hparams = [member_hparams(cfg) for cfg in group.configs]
  names = hparams[0].keys()
  stacked = {n: jnp.asarray(np.repeat([h[n] for h in hparams], group.repeats), jnp.float32) for n in names}
  return Member(stacked_keys, stacked)


@dataclasses.dataclass(frozen=True)
class CallPlan:
  """How `run_group` splits a group into calls: equal member chunks x epoch chunks.

  Attributes:
    member_bytes: estimated memory of one member.
    members_per_call, calls: equal member chunks within the memory budget (the
      last one repeats its last member), so one compile serves them all.
    epoch_chunk, epoch_chunks: epochs per call and calls per member chunk.
    layouts: per member chunk, ((cells, count), ...) of its members in order.
    compiles: programs to compile: one per distinct layout, plus one to resume epochs.
  """
  member_bytes: int
  members_per_call: int
  calls: int
  total: int
  epoch_chunk: int
  epoch_chunks: int
  layouts: tuple[tuple[tuple[int, int], ...], ...]

  @property
  def compiles(self) -> int:
    return len(set(self.layouts)) + (1 if self.epoch_chunks > 1 else 0)

  def member_index(self, call: int) -> np.ndarray:
    index = np.arange(call * self.members_per_call, (call + 1) * self.members_per_call)
    return np.minimum(index, self.total - 1)


def plan_calls(group: Group, program: Program, *, memory_budget: int = DEFAULT_MEMORY_BUDGET,
               max_members_per_call: int | None = None, epoch_chunk: int | None = None) -> CallPlan:
  """The calls `run_group` makes for `group` (also what `--dry-run` prints)."""
  total = group.members
  member_bytes = estimate_member_bytes(program)
  per_call = max(1, memory_budget // max(1, member_bytes))
  if max_members_per_call:
    per_call = min(per_call, max_members_per_call)
  per_call = min(per_call, total)
  calls = math.ceil(total / per_call)
  per_call = math.ceil(total / calls)
  chunk = min(epoch_chunk or choose_epoch_chunk(group.configs[0], program.steps), program.epochs)
  cells_of = np.repeat([c.model.cells for c in group.configs], group.repeats)
  layouts = []
  for call in range(calls):
    index = np.minimum(np.arange(call * per_call, (call + 1) * per_call), total - 1)
    layouts.append(tuple(_runs(cells_of[index])))
  return CallPlan(member_bytes, per_call, calls, total, chunk, math.ceil(program.epochs / chunk), tuple(layouts))


def run_group(group: Group, dataset: Dataset | None = None, *, seed: int = 0,
              epoch_chunk: int | None = None, memory_budget: int = DEFAULT_MEMORY_BUDGET,
              max_members_per_call: int | None = None,
              progress: Callable[[dict], None] | None = None,
              checkpointer: Checkpointer | None = None) -> tuple[list[Ensemble], RunInfo]:
  """Train every member of a group; one program, one call per (member chunk, epoch chunk).

  Args:
    group: from `plan`.
    dataset: the data (default: generated from the configs' `data` section).
    seed: the run's seed; member keys are (seed, config id, repeat).
    epoch_chunk: epochs per call (default `choose_epoch_chunk`).
    memory_budget: bytes; members are split into equal chunks that fit.
    max_members_per_call: cap on members per call (overrides the budget if smaller).
    progress: called with a dict after each call (epochs done, totals, seconds).
    checkpointer: saves / restores the state at epoch-chunk boundaries
      (only for groups that fit in one member chunk).

  Returns:
    One Ensemble per config of the group (in order), and what the run cost.
  """
  representative = group.configs[0]
  dataset = resolve_dataset(representative, dataset)
  program = Program(representative, dataset, cells=group.cells)
  for cfg in group.configs[1:]:
    check_compatible(cfg, dataset)
  members = members_of(group, seed)
  calls_plan = plan_calls(group, program, memory_budget=memory_budget,
                          max_members_per_call=max_members_per_call, epoch_chunk=epoch_chunk)
  total, n_calls = group.members, calls_plan.calls
  epochs, chunk = program.epochs, calls_plan.epoch_chunk
  data = program.data()
  info = RunInfo(member_chunks=n_calls)
  histories, finals = [], []
  compiled: dict[Any, Any] = {}

  def compiled_fn(kind, layout, args):
    key = (kind, layout)
    if key not in compiled:
      t0 = time.perf_counter()
      fn = program.make_start(layout, chunk) if kind == "start" else program.make_resume(chunk)
      compiled[key] = fn.lower(*args).compile(compiler_options=COMPILER_OPTIONS)
      info.compile_seconds += time.perf_counter() - t0
      info.compiles += 1
    return compiled[key]

  if checkpointer is not None and n_calls > 1:
    checkpointer = None  # resumable state is kept per single-chunk group only
  for call in range(n_calls):
    index = calls_plan.member_index(call)
    part = jax.tree.map(lambda a: a[index], members)
    layout = calls_plan.layouts[call]
    restored = checkpointer.restore() if checkpointer is not None else None
    if restored is not None:
      done_epochs, states, chunk_history = restored
      chunk_history = {k: [v] for k, v in chunk_history.items()}
    else:
      done_epochs, states, chunk_history = 0, None, {}
    while done_epochs < epochs:
      t0 = time.perf_counter()
      if states is None:
        fn = compiled_fn("start", layout, (part, data))
        t0 = time.perf_counter()
        states, hist = fn(part, data)
      else:
        fn = compiled_fn("resume", None, (states, part, data))
        t0 = time.perf_counter()
        states, hist = fn(states, part, data)
      hist = jax.device_get(hist)
      info.run_seconds += time.perf_counter() - t0
      info.epoch_chunks += 1
      done_epochs += chunk
      for k, v in hist.items():
        chunk_history.setdefault(k, []).append(np.asarray(v))
      if checkpointer is not None and done_epochs < epochs:
        checkpointer.save(done_epochs, states, {k: np.concatenate(v, axis=1) for k, v in chunk_history.items()})
      if progress is not None:
        progress({"call": call, "calls": n_calls, "epochs_done": min(done_epochs, epochs), "epochs": epochs,
                  "members": len(index), "run_seconds": info.run_seconds,
                  "compile_seconds": info.compile_seconds})
      if representative.train.early_stopping is not None and done_epochs < epochs:
        if bool(np.all(np.asarray(states.stopping.stopped))):
          info.stopped_early = True
          break
    history = {k: np.concatenate(v, axis=1)[:, :epochs] for k, v in chunk_history.items()}
    if history["loss"].shape[1] < epochs:  # ended early: every member had stopped
      pad = epochs - history["loss"].shape[1]
      history = {k: np.pad(v, ((0, 0), (0, pad)), constant_values=np.nan) for k, v in history.items()}
    histories.append(history)
    finals.append(jax.device_get(states))
  history = {k: np.concatenate([h[k] for h in histories])[:total] for k in histories[0]}
  states = jax.tree.map(lambda *xs: np.concatenate(xs)[:total], *finals)
  ensembles = [_ensemble(group, i, program, states, history, seed, info) for i in range(len(group.configs))]
  return ensembles, info


def _runs(values) -> list[tuple[int, int]]:
  out: list[list[int]] = []
  for v in values:
    if out and out[-1][0] == v:
      out[-1][1] += 1
    else:
      out.append([int(v), 1])
  return [tuple(x) for x in out]


def _ensemble(group: Group, index: int, program: Program, states, history, seed: int, info: RunInfo) -> Ensemble:
  cfg = group.configs[index]
  rows = slice(index * group.repeats, (index + 1) * group.repeats)
  take = lambda tree: jax.tree.map(lambda a: np.asarray(a[rows]), tree)
  params = take(states.params)
  train_cfg = cfg.train
  if train_cfg.early_stopping is not None:
    stopping = take(states.stopping)
    stopped_epoch = np.where(stopping.stopped, stopping.stopped_epoch, -1).astype(int)
    best_epoch = np.asarray(stopping.best_epoch).astype(int)
    if train_cfg.early_stopping.restore_best_weights:
      best = take(states.best_params)
      restore = np.asarray(stopping.has_best)  # Keras 3 restores whenever a snapshot exists
      params = jax.tree.map(lambda b, p: np.where(restore.reshape((-1,) + (1,) * (p.ndim - 1)), b, p), best, params)
  else:
    stopped_epoch = np.full(group.repeats, -1)
    val = history["val_loss"][rows]
    with np.errstate(all="ignore"):
      best_epoch = np.where(np.isfinite(val).any(axis=1), np.nanargmin(np.where(np.isfinite(val), val, np.inf), axis=1), -1)
  if group.padded and cfg.model.cells != group.cells:
    params = unpad_params(params, cfg.model.cells, group.cells, cfg.model.cell, leading=1)
  diverged_epoch = np.asarray(states.diverged_epoch[rows]).astype(int)
  return Ensemble(
      config=cfg, history={k: v[rows] for k, v in history.items()}, params=params,
      stopped_epoch=stopped_epoch, best_epoch=best_epoch, diverged=diverged_epoch >= 0,
      diverged_epoch=diverged_epoch, seed=seed, repeat_indices=np.arange(group.repeats),
      outputs=program.outputs, time_out=program.time_out, frame_shape=program.frame_shape,
      timings={"compile_seconds": info.compile_seconds, "run_seconds": info.run_seconds,
               "compiles": info.compiles})


def fit(config: Config, dataset: Dataset | None = None, *, repeats: int, seed: int = 0, **kwargs) -> Ensemble:
  """Train `repeats` repeats of `config` in one compiled call.

  Args:
    config: the config.
    dataset: the data; default generated from `config.data`.
    repeats: number of repeats (seeds); repeat i's key depends only on (seed, config, i).
    seed: the run seed.
    **kwargs: passed to `run_group` (epoch_chunk, memory_budget, progress, ...).
  """
  (group,) = plan([config], repeats)
  ensembles, _ = run_group(group, dataset, seed=seed, **kwargs)
  return ensembles[0]


def fit_many(configs: Sequence[Config], dataset: Dataset | None = None, *, repeats: int, seed: int = 0,
             pad_cells: bool = True, **kwargs) -> list[Ensemble]:
  """Train every config x repeat, one call per static-shape group; Ensembles in config order."""
  by_id = {}
  for group in plan(configs, repeats, pad_cells=pad_cells):
    ensembles, _ = run_group(group, dataset, seed=seed, **kwargs)
    by_id.update({e.config.config_id: e for e in ensembles})
  return [by_id[c.config_id] for c in configs]
