"""Host side of the engine: plan groups, run each as one compiled program, return `Ensemble`s.

`fit(config, dataset, repeats=R, seed=s)` trains all R repeats of one config in
one call; `fit_many(configs, ...)` groups configs by static shape (`static_key`)
and trains each group's configs x repeats (x folds, with `data.cv`) as the *members*
of one call. Traced
hyper-parameters (learning rate, dropout, ...) differ per member, so a grid over
them costs one compile.

A group runs through `run_group`, the one entry every caller uses (`fit`,
`fit_many`, the sweep, the benchmarks). Its programs are `init` (each member's
initial state, `lax.map` over members so the orthogonal initialiser never runs
batched: a batched LAPACK call deadlocks XLA:CPU on 2 cores, DESIGN §3) and
`run` (`jit(vmap(run_epochs))` over members), both compiled through
`jaxlstm.compiled`: a second group of the same static signature (another seed,
new data of the same shapes) compiles nothing.

Members are laid out on a `jax.sharding.Mesh` over devices (`jaxlstm.devices`,
axis `members`; default every device): each call's members are padded to a
multiple of the device count, each device trains its slice (`jax.shard_map` of
the vmapped program inside the one jitted entry), the memory budget is per
device (per process for CPU host devices, which share its memory), and results
come back to the host whole, padding dropped.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from jaxlstm import compiled
from jaxlstm import data as data_lib
from jaxlstm import devices as devices_lib
from jaxlstm import initializers
from jaxlstm import keys as keys_lib
from jaxlstm import metrics as metrics_lib
from jaxlstm.config import PENALTY_FIELDS, PER_LAYER_FIELDS, TRACED_FIELDS, Config, ConfigError
from jaxlstm.models import Widths, activate, can_pad_cells, pad_params, unpad_params, widest, widths_of
from jaxlstm.problems import Dataset
from jaxlstm.train import Data, Member, Train, TrainState, arrays, make_train, member_hparams

if TYPE_CHECKING:
  from jaxlstm.networks import Network

DEFAULT_MEMORY_BUDGET = 2 * 2**30
MAX_CALLS = 100_000  # member chunks of one group: beyond, a plan is refused rather than built


# ---------------------------------------------------------------------------
# Planning: configs -> static-shape groups -> calls.


def static_key(cfg: Config, *, pad_cells: bool = False) -> str:
  """Canonical text of the static part of `cfg`: configs with equal keys share a program.

  Traced fields only contribute whether they are in use (per recurrent layer for
  the per-layer ones). With `pad_cells`, the layer widths are left out too where
  padding is exact (`models.can_pad_cells`): only the depth and the number of
  hidden Dense layers stay, so a width search is one program per depth.
  """
  d = cfg.to_dict()
  m = cfg.model
  for dotted in TRACED_FIELDS:
    section, name = dotted.split(".")
    if section == "model" and name in PER_LAYER_FIELDS:
      d[section][name] = [bool(v) for v in m.layer_values(name)]  # which layers use it is static
    else:
      value = d[section][name]
      d[section][name] = None if value is None else bool(value)
  # The program adds every L1/L2 term once any is set: one switch for all six.
  for name in PENALTY_FIELDS:
    d["model"][name] = m.uses_penalty
  if pad_cells and can_pad_cells(cfg):
    d["model"]["cells"] = "padded"
    d["model"]["units"] = f"{len(m.widths)} padded"
    d["model"]["dense"] = f"{len(m.dense)} padded"
  return json.dumps(d, sort_keys=True)


def program_key(cfg: Config) -> str:
  """What a compiled program of `cfg` depends on beyond its `train.Shape` and argument shapes.

  The static key without what only shapes the arrays (the `data` section but
  whether each repeat resplits), the widths (in `Shape.widths`) and operational
  fields (checkpointing).
  """
  d = json.loads(static_key(cfg))
  d["data"] = {"resplit": bool(cfg.data.resplit)}
  del d["model"]["cells"], d["model"]["units"], d["model"]["dense"], d["train"]["checkpoint_every"]
  return json.dumps(d, sort_keys=True)


@dataclasses.dataclass
class Group:
  """Configs that share one compiled program.

  Attributes:
    configs: the grid points, in grid order.
    widths: the layer widths the program runs at (layer by layer the widest
      config's when padded).
    padded: whether narrower configs are zero-padded to `widths`.
    repeats: repeats per config; members = len(configs) * repeats * folds.
    first_repeat: the index of the first of them: the group trains repeats
      `first_repeat ... first_repeat + repeats - 1` of each config (a folder that
      grows from 30 to 100 repeats trains 70 more, starting at 30).
  """
  configs: list[Config]
  widths: Widths
  padded: bool
  repeats: int
  first_repeat: int = 0

  @property
  def folds(self) -> int:
    """Cross-validation folds per repeat (`data.cv`; 1 without): its configs share `data`'s static fields."""
    return data_lib.fold_count(self.configs[0])

  @property
  def lanes(self) -> int:
    """Members per config: repeats x folds, repeat-major (a repeat's folds are neighbours)."""
    return self.repeats * self.folds

  @property
  def members(self) -> int:
    return len(self.configs) * self.lanes

  @property
  def cells(self) -> int:
    """The widest recurrent layer of the program."""
    return max(self.widths.units)

  @property
  def repeat_indices(self) -> np.ndarray:
    """`[repeats]` the repeat index of each member of a config, in member order."""
    return np.arange(self.first_repeat, self.first_repeat + self.repeats)

  def subgroup(self, configs: Sequence[Config], *, first_repeat: int | None = None,
               repeats: int | None = None) -> Group:
    """The same program for fewer configs or another range of repeats (what a resumed sweep trains)."""
    first = self.first_repeat if first_repeat is None else first_repeat
    count = self.repeats if repeats is None else repeats
    padded = any(widths_of(c.model) != self.widths for c in configs)
    return Group(list(configs), self.widths, padded, count, first)


def plan(configs: Sequence[Config], repeats: int, *, pad_cells: bool = True) -> list[Group]:
  """Group configs by static shape; one group = one program = one call (per member chunk).

  With `pad_cells`, configs that differ only in layer widths share a group run at
  the layer-by-layer widest widths (one group per depth and number of Dense layers).
  """
  if isinstance(repeats, bool) or not isinstance(repeats, (int, np.integer)) or repeats < 1:
    raise ConfigError(f"repeats = {repeats!r} is not allowed: expected an integer >= 1.")
  groups: dict[str, list[Config]] = {}
  for cfg in configs:
    groups.setdefault(static_key(cfg, pad_cells=pad_cells), []).append(cfg)
  out = []
  for members in groups.values():
    sizes = [widths_of(c.model) for c in members]
    widths = widest(sizes)
    out.append(Group(members, widths, any(w != widths for w in sizes), int(repeats)))
  return out


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


_PARAM_SHAPES: dict[tuple, Any] = {}


def param_shapes(train: Train, key: tuple, sample_shape: Sequence[int]) -> Any:
  """Shapes of one member's parameters at the program's width (traced once per static signature, and
  kept in the program store: `compiled.shapes`).

  Args:
    train: the group's pure functions.
    key: the group's static signature, `(program_key(config), train.shape)`.
    sample_shape: one input sample's shape (the input width shapes the first kernel).
  """
  cache_key = (key, tuple(sample_shape))
  if cache_key not in _PARAM_SHAPES:
    _PARAM_SHAPES[cache_key] = compiled.shapes(
        cache_key, lambda: jax.eval_shape(lambda: train.init_params(jax.random.key(0))))
  return _PARAM_SHAPES[cache_key]


def param_count(train: Train, config: Config, dataset: Dataset) -> int:
  """Parameters of one member at the program's width."""
  shapes = param_shapes(train, (program_key(config), train.shape), dataset.x_train.shape[1:])
  return sum(math.prod(s.shape) for s in jax.tree.leaves(shapes))


def estimate_member_bytes(train: Train, config: Config, dataset: Dataset) -> int:
  """Rough device memory of one member: params, optimizer state, activations, data gathers."""
  n_params = param_count(train, config, dataset)
  shape = train.shape
  time_steps = dataset.x_train.shape[1]
  width = max(max(shape.widths.units), dataset.n_features) * 4 * len(shape.widths.units)
  activations = shape.batch * time_steps * width * 6  # forward states kept for the backward pass (calibrated)
  sample = math.prod(dataset.x_train.shape[1:]) + dataset.y_train[0].size
  gathers = shape.batch * sample * 2
  if shape.cv:  # each fold member holds its own copy of its training and validation rows
    gathers += (shape.n_train + shape.n_val) * sample
  return 4 * (6 * n_params + activations + gathers + shape.n_val * (width + dataset.y_train[0].size))


@dataclasses.dataclass(frozen=True)
class CallPlan:
  """How `run_group` splits a group into calls: equal member chunks x epoch chunks.

  Attributes:
    member_bytes: estimated memory of one member.
    members_per_call, calls: equal member chunks within the memory budget (the
      last one repeats a member to fill up), so one compile serves them all.
    total: members of the group.
    epoch_chunk, epoch_chunks: epochs per call and calls per member chunk.
    layouts: per member chunk, ((widths, count), ...) of its members in order (`models.Widths`).
    stripe: 0 for contiguous chunks of the config-major members; else every call takes
      this many repeats of every config (a padded group split by memory: configs of
      different widths in the same proportions, so every call has one layout).
    n_configs, repeats: the group's configs and repeats per config (for `stripe`).
  """
  member_bytes: int
  members_per_call: int
  calls: int
  total: int
  epoch_chunk: int
  epoch_chunks: int
  layouts: tuple[tuple[tuple[Widths, int], ...], ...]
  stripe: int = 0
  n_configs: int = 1
  repeats: int = 1

  @property
  def compiles(self) -> int:
    """Programs to compile (when none is cached): one per distinct member layout."""
    return len(set(self.layouts))

  def member_index(self, call: int) -> np.ndarray:
    """`[members_per_call]` the members (config-major indices) of call `call`."""
    if self.stripe:
      repeats = np.minimum(np.arange(call * self.stripe, (call + 1) * self.stripe), self.repeats - 1)
      index = (np.arange(self.n_configs)[:, None] * self.repeats + repeats[None, :]).reshape(-1)
      return np.pad(index, (0, self.members_per_call - index.size), mode="edge")  # device padding
    index = np.arange(call * self.members_per_call, (call + 1) * self.members_per_call)
    return np.minimum(index, self.total - 1)

  def first_lanes(self) -> np.ndarray:
    """`[total]` the lane (over all calls) where each member is trained first: gathers results back."""
    order = np.concatenate([self.member_index(c) for c in range(self.calls)])
    return np.unique(order, return_index=True)[1]


def plan_calls(group: Group, train: Train, dataset: Dataset, *,
               memory_budget: int = DEFAULT_MEMORY_BUDGET, max_members_per_call: int | None = None,
               epoch_chunk: int | None = None, devices: int = 1, memories: int | None = None,
               call_members: int | None = None) -> CallPlan:
  """The calls `run_group` makes for `group` (also what `--dry-run` prints).

  Layouts are computed per config block, never per member, so planning an absurd
  group costs nothing before it is refused. Every call's members are a multiple of
  `devices` (padded with the last member), and the memory budget applies to each of
  `memories` separate memories (default one per device; `devices.memories`: host
  devices share one). `call_members` fixes the size of every call (padded, within
  the budget), so groups of any size share one program: a race's rounds.
  """
  total = group.members
  member_bytes = estimate_member_bytes(train, group.configs[0], dataset)
  per_call = max(1, memory_budget // max(1, member_bytes)) * (devices if memories is None else memories)
  if max_members_per_call:
    per_call = min(per_call, max_members_per_call)
  per_call = min(per_call, call_members or total)
  calls = math.ceil(total / per_call)
  configs, repeats = len(group.configs), group.lanes  # striping works on a config's lanes
  epochs = train.shape.epochs
  chunk = min(epoch_chunk or choose_epoch_chunk(group.configs[0], train.shape.steps), epochs)
  stripe = 0
  if calls > 1 and group.padded and per_call >= configs and not call_members:
    # Each call takes the same repeats of every config (configs of different widths in the
    # same proportions), so every call has one member layout and they share one compile.
    stripe = math.ceil(repeats / math.ceil(repeats / (per_call // configs)))
    calls, per_call = math.ceil(repeats / stripe), math.ceil(configs * stripe / devices) * devices
  else:  # contiguous chunks of the config-major members
    if not call_members:
      per_call = math.ceil(total / calls)
    per_call = math.ceil(per_call / devices) * devices  # equal slices per device
    calls = math.ceil(total / per_call)
  if calls > MAX_CALLS:
    raise ConfigError(f"{total} members of {member_bytes / 2**20:.3g} MiB each need {calls} calls of "
                      f"{per_call}: more than jaxlstm plans ({MAX_CALLS}); use fewer repeats or a smaller model.")
  if stripe:
    runs = [(widths_of(c.model), stripe) for c in group.configs]
    runs.append((runs[-1][0], per_call - configs * stripe))  # device padding: the last member again
    layout = tuple(_merge_runs(run for run in runs if run[1]))
    layouts = (layout,) * calls
  else:
    layouts = tuple(_chunk_layout(group, call * per_call, per_call) for call in range(calls))
  return CallPlan(member_bytes, per_call, calls, total, chunk, math.ceil(epochs / chunk), layouts,
                  stripe, configs, repeats)


def _merge_runs(runs) -> list[tuple[Any, int]]:
  """`[(value, count), ...]` with neighbours of equal value merged."""
  out: list[list[Any]] = []
  for value, count in runs:
    if out and out[-1][0] == value:
      out[-1][1] += count
    else:
      out.append([value, count])
  return [tuple(x) for x in out]


def _chunk_layout(group: Group, start: int, size: int) -> tuple[tuple[Widths, int], ...]:
  """`((widths, count), ...)` of members `start ... start + size - 1` (config-major; past the
  end, the last member again), computed per config block rather than per member."""
  runs = []
  total = group.members
  position = start
  while position < start + size:
    member = min(position, total - 1)
    if position >= total:  # the padding of the last chunk: the last member repeated
      count = start + size - position
    else:
      count = min(start + size, (member // group.lanes + 1) * group.lanes) - position
    runs.append((widths_of(group.configs[member // group.lanes].model), count))
    position += count
  return tuple(_merge_runs(runs))


def members_of(group: Group, seed: int) -> Member:
  """Stacked keys and traced hyper-parameters of every (config, repeat[, fold]) of a group.

  Config-major, folds fastest: member `(c * repeats + r) * folds + f` (`keys.group_keys`).
  """
  folds = group.folds
  stacked_keys = keys_lib.group_keys(seed, group.configs, group.repeat_indices, folds)
  hparams = [member_hparams(cfg) for cfg in group.configs]
  names = hparams[0].keys()
  stacked = {n: np.repeat(np.asarray([h[n] for h in hparams], np.float32), group.lanes, axis=0) for n in names}
  fold = np.tile(np.arange(folds, dtype=np.int32), len(group.configs) * group.repeats) if folds > 1 else None
  return Member(stacked_keys, stacked, fold)


# ---------------------------------------------------------------------------
# Programs.


def init_members(train: Train, members: Member, layout: Sequence[tuple[Widths | int, int]]) -> TrainState:
  """Initial states of stacked members; `layout` = ((widths, count), ...) in member order.

  Members narrower than the program are initialised at their own widths and
  zero-padded, so their draws equal a solo run's. An int width means every
  recurrent layer at that width.
  """
  widths, lanes = lane_widths(train, layout)
  return init_lanes(train, members, widths, lanes)


def lane_widths(train: Train, layout: Sequence[tuple[Widths | int, int]]) -> tuple[tuple[Widths, ...], np.ndarray]:
  """`(distinct widths, [members] index of each member's widths among them)` of a layout."""
  model = train.config.model
  layout = [(widths_of(model, w) if isinstance(w, (int, np.integer)) else Widths(*w), n) for w, n in layout]
  widths = tuple(dict.fromkeys(w for w, _ in layout))
  lanes = np.repeat([widths.index(w) for w, _ in layout], [count for _, count in layout])
  return widths, lanes.astype(np.int32)


def init_lanes(train: Train, members: Member, widths: Sequence[Widths], lanes: jax.Array) -> TrainState:
  """Initial states of stacked members, member i at `widths[lanes[i]]` (zero-padded).

  `lanes` may be traced (a device's slice of a call), so one program initialises
  any mix of widths: `lax.switch` picks each member's widths.
  """
  cell = train.config.model.cell

  def member(key, lane):
    # Every width's draws from one threefry call (`initializers.hash_all`): far less to compile.
    draws = [initializers.record(lambda w=w: train.init_params(key, w)) for w in widths]
    initializers.hash_all(draws)
    branches = [lambda d=d, w=w: padded(w, d, key) for d, w in zip(draws, widths)]
    return branches[0]() if len(widths) == 1 else jax.lax.switch(lane, branches)

  def padded(sizes, draws, key):
    params = initializers.replay(draws, lambda: train.init_params(key, sizes))
    if sizes != train.shape.widths:
      params = pad_params(params, sizes, train.shape.widths, cell)
    return params

  # lax.map, not vmap: keeps the orthogonal init's QR-free loop unbatched (hang.md).
  params = jax.lax.map(lambda a: member(*a), (members.keys.init, jnp.asarray(lanes)))
  return jax.vmap(train.init_state)(params, members)


@dataclasses.dataclass
class RunInfo:
  """What a group's run cost: compiles, seconds, chunks."""
  compiles: int = 0
  compile_seconds: float = 0.0
  run_seconds: float = 0.0
  epoch_chunks: int = 0
  member_chunks: int = 0
  stopped_early: bool = False


@dataclasses.dataclass(frozen=True)
class GroupProgram:
  """A group's compiled entry point (cached by static signature in `jaxlstm.compiled`).

  The entry is `jit(shard_map(vmap(run_epochs)))` over a member chunk laid out on
  `mesh` (each device trains its slice of the members; no collective runs), with
  per-member init: called with `fresh=True` it first initialises every member
  (`init_lanes`, under a `lax.cond`, so later epoch chunks skip it), then trains one
  epoch chunk. One program per member layout serves every call of the group.

  Attributes:
    train: the pure functions of one member.
    members: every member of the group, stacked (config-major).
    data: the group's arrays.
    calls: how the group is split into calls.
    key: the static signature of the group's programs.
    mesh: the devices the members are laid out on (`jaxlstm.devices`).
  """
  train: Train
  members: Member
  data: Data
  calls: CallPlan
  key: tuple
  mesh: Any

  def entry(self, layout, members: Member) -> tuple[Callable, float]:
    """`(run(states, members, data, fresh) -> (states, history), compile seconds)` for `layout`.

    `states` and `members` (and the returned states and history) are laid out
    `NamedSharding(mesh, P("members"))`, `data` and `fresh` are replicated.
    """
    train, n, mesh = self.train, self.calls.epoch_chunk, self.mesh
    per_device = self.calls.members_per_call // mesh.size
    widths, lanes = lane_widths(train, layout)

    def run_chunk(states, local, data, fresh):  # one device's slice `local` of the member chunk
      def init():
        first = jax.lax.axis_index(devices_lib.MEMBERS) * per_device
        return boundary_states(init_lanes(train, local, widths,
                                          jax.lax.dynamic_slice_in_dim(lanes, first, per_device)))
      states = jax.lax.cond(fresh, init, lambda: states)
      # The optimizer's structure (optax's) is needed only here, when the program is traced.
      opt_tree = jax.tree.structure(_state_shapes(train, self.key, members, self.data).opt_state)
      states = states._replace(opt_state=jax.tree.unflatten(opt_tree, states.opt_state))
      states, history = jax.vmap(lambda state, member: train.run_epochs(state, member, data, n))(states, local)
      return boundary_states(states), history

    split, whole = jax.sharding.PartitionSpec(devices_lib.MEMBERS), jax.sharding.PartitionSpec()
    # No collective runs inside (members are independent), so the varying-axes type
    # check buys nothing; it would also reject scans whose carries start from
    # constants (the orthogonal initialiser's loop).
    sharded = jax.shard_map(run_chunk, mesh=mesh, in_specs=(split, split, whole, whole), out_specs=(split, split),
                            check_vma=False)
    spread, copy = devices_lib.member_sharding(mesh), devices_lib.replicated(mesh)
    like = self.blank_states(members)
    return compiled.program(("run", self.key, layout, n, mesh), sharded, (like, members, self.data, np.bool_(True)),
                            in_shardings=(spread, spread, copy, copy), out_shardings=(spread, spread))

  def call_members(self, call: int) -> Member:
    """The members of member chunk `call`, stacked."""
    index = self.calls.member_index(call)
    if index.size == self.calls.total and np.array_equal(index, np.arange(self.calls.total)):
      return self.members  # the whole group in one call (the common case): no gather, a jitted indexing per key
    return jax.tree.map(lambda a: a[index], self.members)

  def blank_states(self, members: Member) -> TrainState:
    """Zero states of a member chunk (any layout): the `states` argument of a fresh call
    (`boundary_states` form)."""
    cache_key = (self.key, compiled.signature(members), compiled.signature(self.data))
    if cache_key not in _BLANK_SHAPES:  # from the store in a warm run: no optimizer is built
      _BLANK_SHAPES[cache_key] = compiled.shapes(
          ("states", *cache_key), lambda: boundary_states(_state_shapes(self.train, self.key, members, self.data)))
    return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), _BLANK_SHAPES[cache_key])


def boundary_states(states: TrainState) -> TrainState:
  """`states` as a program's arguments and results hold them: the optimizer state as the tuple of its leaves.

  The optimizer state's own node types (optax's) then never cross a program's
  boundary: a stored program's trees, the blank states of a warm run and epoch
  checkpoints need no optax. The leaves and their order are `jax.tree.leaves`',
  so the compiled program, and the checkpoints of earlier versions, are the same.
  """
  return states._replace(opt_state=tuple(jax.tree.leaves(states.opt_state)))


_STATE_SHAPES: dict[tuple, Any] = {}
_BLANK_SHAPES: dict[tuple, Any] = {}


def _state_shapes(train: Train, key: tuple, members: Member, data: Data) -> TrainState:
  """Shapes of a member chunk's states (traced once per static signature, through the optimizer's init).

  Every member's parameters have the program's widths (narrower ones are padded),
  so the states follow from one member's parameter shapes without tracing each
  width's initialisation. The data's shapes are part of the signature: the input
  width (e.g. one-hot or integer codes) shapes the first layer's kernel but is in
  neither `key` nor `members`.
  """
  cache_key = (key, compiled.signature(members), compiled.signature(data))
  if cache_key not in _STATE_SHAPES:
    count = len(members.keys.init)
    params = jax.tree.map(lambda s: jax.ShapeDtypeStruct((count, *s.shape), s.dtype),
                          param_shapes(train, key, data.x_train.shape[1:]))
    _STATE_SHAPES[cache_key] = jax.eval_shape(jax.vmap(train.init_state), params, members)
  return _STATE_SHAPES[cache_key]


def group_program(group: Group, dataset: Dataset, *, seed: int = 0,
                  memory_budget: int = DEFAULT_MEMORY_BUDGET, max_members_per_call: int | None = None,
                  epoch_chunk: int | None = None, mesh=None, call_members: int | None = None) -> GroupProgram:
  """Everything a group's calls need: pure functions, member inputs, data, call plan, mesh.

  Args:
    group: from `plan`.
    dataset: the group's resolved data (`jaxlstm.data.resolve`).
    seed: the run's seed; member keys are (seed, config id, repeat).
    mesh: the devices (`jaxlstm.devices.make_mesh`); default every device.
  """
  mesh = devices_lib.resolve_mesh(mesh)
  train = make_train(group.configs[0], dataset, widths=group.widths)
  calls = plan_calls(group, train, dataset, memory_budget=memory_budget,
                     max_members_per_call=max_members_per_call, epoch_chunk=epoch_chunk, devices=mesh.size,
                     memories=devices_lib.memories(mesh), call_members=call_members)
  return GroupProgram(train=train, members=members_of(group, seed), data=arrays(dataset), calls=calls,
                      key=(program_key(group.configs[0]), train.shape), mesh=mesh)


# ---------------------------------------------------------------------------
# Running.


class Checkpointer(Protocol):
  """Saves and restores the full training state of a member chunk at epoch-chunk boundaries."""

  def restore(self) -> tuple[int, Any, dict[str, np.ndarray]] | None: ...

  def save(self, epoch: int, states: Any, history: dict[str, np.ndarray]) -> None: ...


def run_group(group: Group, dataset: Dataset | None = None, *, seed: int = 0, epoch_chunk: int | None = None,
              memory_budget: int = DEFAULT_MEMORY_BUDGET, max_members_per_call: int | None = None,
              progress: Callable[[dict], None] | None = None,
              checkpointer: Checkpointer | None = None, mesh=None,
              devices: int | Sequence[Any] | None = None,
              call_members: int | None = None,
              prepare_predict: np.ndarray | None = None) -> tuple[list[Ensemble], RunInfo]:
  """Train every member of a group: one call per (member chunk, epoch chunk).

  Args:
    group: from `plan`.
    dataset: the group's resolved data (`jaxlstm.data.resolve`, checked with
      `data.check_compatible` by the caller); default resolved from the configs' `data`.
    seed: the run's seed; member keys are (seed, config id, repeat).
    epoch_chunk: epochs per call (default `choose_epoch_chunk`).
    memory_budget: bytes per device (per process for CPU host devices, which share
      its memory); members are split into equal chunks that fit.
    max_members_per_call: cap on members per call (overrides the budget if smaller).
    progress: called with a dict after each call (epochs done, totals, seconds).
    checkpointer: saves / restores the state at epoch-chunk boundaries
      (only for groups that fit in one member chunk, in a single process).
    mesh: the devices the members are laid out on (`jaxlstm.devices.make_mesh`;
      under `jax.distributed`, every process passes the same one).
    devices: instead of `mesh`: how many devices (per process), or which;
      default every device of the default backend.
    call_members: every call this many members (padded; `plan_calls`).
    prepare_predict: inputs that each returned Ensemble's `predict` will be given:
      their programs are built on a background thread while the group's compiles
      or trains (`compiled.ahead`), not after it.

  Returns:
    One Ensemble per config of the group (in order), and what the run cost.
  """
  program = group_program(group, _group_dataset(group, dataset), seed=seed, memory_budget=memory_budget,
                          max_members_per_call=max_members_per_call, epoch_chunk=epoch_chunk,
                          mesh=devices_lib.resolve_mesh(mesh, devices), call_members=call_members)
  calls = program.calls
  info = RunInfo(member_chunks=calls.calls)
  if prepare_predict is not None:
    _predict_ahead(program, group, prepare_predict)
  if checkpointer is not None and (calls.calls > 1 or jax.process_count() > 1):
    checkpointer = None  # resumable state is kept per single-chunk group of one process only
  histories, finals = [], []
  for call in range(calls.calls):
    states, history = _run_member_chunk(program, group, call, info, progress, checkpointer)
    histories.append(history)
    finals.append(states)
  lanes = calls.first_lanes()
  history = {k: np.concatenate([h[k] for h in histories])[lanes] for k in histories[0]}
  states = jax.tree.map(lambda *xs: np.concatenate(xs)[lanes], *finals)
  ensembles = [_ensemble(group, i, program.train, states, history, seed, info) for i in range(len(group.configs))]
  return ensembles, info


def _group_dataset(group: Group, dataset: Dataset | None) -> Dataset:
  """`dataset`, or the group's data resolved from its configs."""
  return dataset if dataset is not None else data_lib.resolve_all(group.configs)[data_lib.data_key(group.configs[0])]


def prepare_group(group: Group, dataset: Dataset | None = None, *, seed: int = 0,
                  memory_budget: int = DEFAULT_MEMORY_BUDGET, max_members_per_call: int | None = None,
                  epoch_chunk: int | None = None, mesh=None, call_members: int | None = None) -> None:
  """Have the program of `run_group`'s first call for `group` built on the background thread.

  For a study of several groups: queued before the group ahead of it runs, it is
  traced while that one compiles and compiled while it trains (`compiled.later`),
  and `run_group` with the same arguments then finds it built (or waits for it).
  The arguments are `run_group`'s.
  """
  def build():
    program = group_program(group, _group_dataset(group, dataset), seed=seed, memory_budget=memory_budget,
                            max_members_per_call=max_members_per_call, epoch_chunk=epoch_chunk, mesh=mesh,
                            call_members=call_members)
    program.entry(program.calls.layouts[0], program.call_members(0))
  compiled.later(build)


def _run_member_chunk(program: GroupProgram, group: Group, call: int, info: RunInfo,
                      progress: Callable[[dict], None] | None, checkpointer: Checkpointer | None):
  """Train one member chunk through all its epoch chunks; returns host `(states, history)`."""
  calls, epochs, mesh = program.calls, program.train.shape.epochs, program.mesh
  part = program.call_members(call)
  layout = calls.layouts[call]
  restored = checkpointer.restore() if checkpointer is not None else None
  if restored is not None:
    done, states, chunk_history = restored[0], restored[1], {k: [v] for k, v in restored[2].items()}
  else:
    done, states, chunk_history = 0, program.blank_states(part), {}
  stops = group.configs[0].train.early_stopping is not None
  run, seconds = program.entry(layout, part)
  _count_compile(info, seconds)
  states, part = devices_lib.shard(states, mesh), devices_lib.shard(part, mesh)
  data = devices_lib.replicate(program.data, mesh)
  while done < epochs:
    t0 = time.perf_counter()
    states, hist = run(states, part, data, np.bool_(restored is None and done == 0))
    compiled.start_ahead()  # while the call runs, if nothing compiled before it
    hist = devices_lib.gather(hist)
    info.run_seconds += time.perf_counter() - t0
    info.epoch_chunks += 1
    done += calls.epoch_chunk
    for k, v in hist.items():
      chunk_history.setdefault(k, []).append(np.asarray(v))
    if checkpointer is not None and done < epochs:
      checkpointer.save(done, states, {k: np.concatenate(v, axis=1) for k, v in chunk_history.items()})
    if progress is not None:
      progress({"call": call, "calls": calls.calls, "epochs_done": min(done, epochs), "epochs": epochs,
                "members": calls.members_per_call, "run_seconds": info.run_seconds,
                "compile_seconds": info.compile_seconds})
    if stops and done < epochs and bool(np.all(devices_lib.gather(states.callbacks.stopping.stopped))):
      info.stopped_early = True
      break
  history = {k: np.concatenate(v, axis=1)[:, :epochs] for k, v in chunk_history.items()}
  if history["loss"].shape[1] < epochs:  # ended early: every member had stopped
    pad = epochs - history["loss"].shape[1]
    history = {k: np.pad(v, ((0, 0), (0, pad)), constant_values=np.nan) for k, v in history.items()}
  return devices_lib.gather(states), history


def _count_compile(info: RunInfo, seconds: float) -> None:
  if seconds:
    info.compiles += 1
    info.compile_seconds += seconds


# ---------------------------------------------------------------------------
# Results.


@dataclasses.dataclass
class Ensemble:
  """All repeats of one config.

  With cross-validation (`data.cv`, `folds` > 1) each repeat is `folds` training
  runs: `fold_*` hold them per fold, and the repeat-level fields summarise its
  folds. `history` is the mean over folds at each epoch, a fold that stopped early
  counting with its last value (its weights are frozen), so a repeat's final
  value is the mean of its folds' final values; NaN after every fold stopped.
  `stopped_epoch` is the last fold's stop (-1 unless all stopped), `diverged_epoch`
  the first fold's divergence, `best_epoch` the best epoch of the mean curve.

  Attributes:
    config: the config.
    history: metric -> `[repeats, epochs]` float array; NaN after a repeat stopped.
    params: stacked parameter pytree (numpy), leading axis = repeats (`[repeats, folds, ...]` with folds).
    stopped_epoch: `[repeats]` epoch at which early stopping fired (0-based), -1 if never.
    best_epoch: `[repeats]` best epoch of the monitored metric (val_loss without early stopping).
    diverged: `[repeats]` True where the loss became NaN/Inf.
    diverged_epoch: `[repeats]` first non-finite epoch, -1 if none.
    seed, repeat_indices: the run's seed and which repeats these are.
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
  folds: int = 1
  fold_history: dict[str, np.ndarray] | None = None  # metric -> [repeats, folds, epochs]
  fold_stopped_epoch: np.ndarray | None = None  # [repeats, folds]
  fold_best_epoch: np.ndarray | None = None  # [repeats, folds]
  fold_diverged_epoch: np.ndarray | None = None  # [repeats, folds]

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
    """`[repeats]` best finite value of `metric` over the epochs (NaN where none)."""
    values = self.history[metric]
    with np.errstate(all="ignore"):
      reduce = np.nanmax if higher_is_better else np.nanmin
      finite = np.isfinite(values).any(axis=1)
      out = np.full(values.shape[0], np.nan)
      if finite.any():
        out[finite] = reduce(values[finite], axis=1)
    return out

  def network(self) -> Network:
    return _network(self.config, self.outputs, self.time_out, self.frame_shape)

  def predict(self, x: np.ndarray) -> np.ndarray:
    """Predictions of every repeat: `[repeats, N, ...]` (after the output activation).

    With folds, every fold's model: `[repeats, folds, N, ...]`. Map them to a transformed
    series' original units with `jaxlstm.prep.to_original(dataset, predictions)`.
    """
    x = np.asarray(x, np.float32)
    if x.ndim != 3:
      raise ValueError(f"x must have shape [samples, time, features], got {x.shape}.")
    key, predict_all = _predictor(self.config, self.outputs, self.time_out, self.frame_shape, self.folds)
    fn, _ = compiled.program(key, predict_all, (self.params, x))
    return np.asarray(fn(self.params, x))


def _network(config: Config, outputs: int, time_out: int, frame_shape: Sequence[int]) -> Network:
  from jaxlstm.networks import Network  # flax: only when a network is built
  return Network(config.model, outputs, time_out=time_out, frame_shape=tuple(frame_shape))


def _predictor(config: Config, outputs: int, time_out: int, frame_shape: Sequence[int],
               folds: int) -> tuple[tuple, Callable]:
  """`(program key, predict_all(params, x))` of `Ensemble.predict` for a config's ensembles."""
  act = config.model.output_activation

  def predict_all(params, x):  # the network is built when traced: a stored program needs no flax
    network = _network(config, outputs, time_out, frame_shape)
    one = lambda p: activate(network.apply({"params": p}, x), act)
    return jax.vmap(jax.vmap(one) if folds > 1 else one)(params)

  key = ("predict", json.dumps(config.to_dict()["model"], sort_keys=True), outputs, time_out, tuple(frame_shape))
  return key, predict_all


def _predict_ahead(program: GroupProgram, group: Group, x: np.ndarray) -> None:
  """Queue the programs of each config's `Ensemble.predict(x)` after `run_group` (`compiled.ahead`).

  Their parameters have the config's own widths and one row per repeat; a grown
  ensemble (later repeats) or folds give other shapes and are left to `predict`.
  """
  if group.first_repeat or group.folds > 1:
    return
  shape, x = program.train.shape, np.asarray(x, np.float32)
  wide = jax.tree.map(lambda s: np.zeros((group.lanes, *s.shape), s.dtype),
                      param_shapes(program.train, program.key, program.data.x_train.shape[1:]))
  for cfg in group.configs:
    own = widths_of(cfg.model)
    params = unpad_params(wide, own, group.widths, cfg.model.cell, leading=1) if own != group.widths else wide
    key, predict_all = _predictor(cfg, shape.outputs, shape.time_out, shape.frame_shape, 1)
    compiled.ahead(key, predict_all, (params, x), soon=True)  # small, and wanted first


def _ensemble(group: Group, index: int, train: Train, states, history, seed: int, info: RunInfo) -> Ensemble:
  cfg = group.configs[index]
  rows = slice(index * group.lanes, (index + 1) * group.lanes)
  take = lambda tree: jax.tree.map(lambda a: np.asarray(a[rows]), tree)
  params = take(states.params)
  if cfg.train.early_stopping is not None:
    stopping = take(states.callbacks.stopping)
    stopped_epoch = np.where(stopping.stopped, stopping.stopped_epoch, -1).astype(int)
    best_epoch = np.asarray(stopping.best_epoch).astype(int)
    if cfg.train.early_stopping.restore_best_weights:
      best = take(states.callbacks.best_params)
      restore = np.asarray(stopping.has_best)  # Keras 3 restores whenever a snapshot exists
      params = jax.tree.map(lambda b, p: np.where(restore.reshape((-1,) + (1,) * (p.ndim - 1)), b, p), best, params)
  else:
    stopped_epoch = np.full(group.lanes, -1)
    val = history["val_loss"][rows]
    with np.errstate(all="ignore"):
      best_epoch = np.where(np.isfinite(val).any(axis=1),
                            np.nanargmin(np.where(np.isfinite(val), val, np.inf), axis=1), -1)
  own = widths_of(cfg.model)
  if group.padded and own != group.widths:
    params = unpad_params(params, own, group.widths, cfg.model.cell, leading=1)
  diverged_epoch = np.asarray(states.diverged_epoch[rows]).astype(int)
  shape = train.shape
  history = {k: v[rows] for k, v in history.items()}
  folds = {}
  if group.folds > 1:
    per_repeat = lambda a: np.reshape(a, (group.repeats, group.folds, *np.shape(a)[1:]))
    params = jax.tree.map(per_repeat, params)
    folds = summarise_folds(cfg, {k: per_repeat(v) for k, v in history.items()}, per_repeat(stopped_epoch),
                            per_repeat(best_epoch), per_repeat(diverged_epoch))
    history, stopped_epoch, best_epoch, diverged_epoch = (
        folds.pop(k) for k in ("history", "stopped_epoch", "best_epoch", "diverged_epoch"))
  return Ensemble(
      config=cfg, history=history, params=params,
      stopped_epoch=stopped_epoch, best_epoch=best_epoch, diverged=diverged_epoch >= 0,
      diverged_epoch=diverged_epoch, seed=seed, repeat_indices=group.repeat_indices,
      outputs=shape.outputs, time_out=shape.time_out, frame_shape=shape.frame_shape,
      timings={"compile_seconds": info.compile_seconds, "run_seconds": info.run_seconds,
               "compiles": info.compiles}, **folds)


def summarise_folds(config: Config, fold_history: dict[str, np.ndarray], stopped: np.ndarray, best: np.ndarray,
                    diverged: np.ndarray) -> dict[str, Any]:
  """A repeat's fields from its folds' (`[repeats, folds, ...]`); see `Ensemble` for the rules.

  Returns:
    `Ensemble` keyword arguments: history, stopped_epoch, best_epoch, diverged_epoch,
    folds and the `fold_*` arrays.
  """
  stopped, best, diverged = (np.asarray(a, int) for a in (stopped, best, diverged))
  repeats, folds = stopped.shape
  all_stopped = (stopped >= 0).all(axis=1)
  history = {}
  for name, values in fold_history.items():
    epochs = values.shape[-1]
    last = np.where(stopped >= 0, stopped, epochs - 1)[..., None]
    held = np.take_along_axis(values, np.minimum(last, epochs - 1), axis=-1)
    # A stopped fold keeps its last value (frozen weights); the mean ends where the last fold stopped.
    carried = np.where(np.arange(epochs) > last, held, values)
    mean = carried.mean(axis=1)
    end = np.where(all_stopped, stopped.max(axis=1), epochs - 1)[:, None]
    history[name] = np.where(np.arange(epochs) > end, np.nan, mean).astype(values.dtype)
  monitor = config.train.early_stopping.monitor if config.train.early_stopping is not None else "val_loss"
  mode = config.train.early_stopping.mode if config.train.early_stopping is not None else "auto"
  higher = mode == "max" or (mode == "auto" and metrics_lib.higher_is_better(monitor))
  curve = history[monitor]
  with np.errstate(all="ignore"):
    finite = np.isfinite(curve)
    pick = np.nanargmax if higher else np.nanargmin
    best_epoch = np.where(finite.any(axis=1), pick(np.where(finite, curve, -np.inf if higher else np.inf), axis=1), -1)
  return {"history": history, "stopped_epoch": np.where(all_stopped, stopped.max(axis=1), -1),
          "best_epoch": best_epoch.astype(int),
          "diverged_epoch": np.where((diverged >= 0).any(axis=1),
                                     np.where(diverged >= 0, diverged, 2**30).min(axis=1), -1),
          "folds": folds, "fold_history": fold_history, "fold_stopped_epoch": stopped, "fold_best_epoch": best,
          "fold_diverged_epoch": diverged}


# ---------------------------------------------------------------------------
# The library entry points.


def fit(config: Config, dataset: Dataset | None = None, *, repeats: int, seed: int = 0, **kwargs) -> Ensemble:
  """Train `repeats` repeats of `config` in one compiled call.

  Args:
    config: the config.
    dataset: the raw problem (`config.data` says how to split, encode and scale it);
      default generated from `config.data`.
    repeats: number of repeats; repeat i's key depends only on (seed, config, i).
    seed: the run's seed.
    **kwargs: passed to `run_group` (mesh or devices, epoch_chunk, memory_budget, progress, ...).

  Raises:
    ConfigError: the config cannot train on the data (before anything compiles).
  """
  (group,) = plan([config], repeats)
  resolved = data_lib.resolve_all([config], dataset)[data_lib.data_key(config)]
  ensembles, _ = run_group(group, resolved, seed=seed, **kwargs)
  return ensembles[0]


def fit_many(configs: Sequence[Config], dataset: Dataset | None = None, *, repeats: int, seed: int = 0,
             pad_cells: bool = True, **kwargs) -> list[Ensemble]:
  """Train every config x repeat, one call per static-shape group; Ensembles in config order."""
  groups = plan(configs, repeats, pad_cells=pad_cells)
  resolved = data_lib.resolve_all(configs, dataset)
  by_id = {}
  for group in groups:
    ensembles, _ = run_group(group, resolved[data_lib.data_key(group.configs[0])], seed=seed, **kwargs)
    by_id.update({e.config.config_id: e for e in ensembles})
  return [by_id[c.config_id] for c in configs]
