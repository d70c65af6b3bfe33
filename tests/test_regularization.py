"""Regularisation and validation schemes (issue 6 parts 4 and 5).

Dropout against a numpy reference that applies one mask per sequence at every
step (Keras 3.15: `DropoutRNNCell` caches the masks for the whole call, and
`recurrent_dropout > 0` selects implementation 1 with one mask per gate);
L1/L2 against hand-computed sums; truncated BPTT's forward values and gradient
cut; Keras validation_split and per-repeat random splits. Programs are shared
through module-scoped fixtures: compiling dominates on CPU.
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlstm
from jaxlstm import compiled, problems
from jaxlstm.config import Config, ModelConfig
from jaxlstm.config import PENALTY_FIELDS
from jaxlstm.data import resolve
from jaxlstm.ensemble import members_of, plan, run_group
from jaxlstm.models import GATES, Network, Recurrent, dropout_masks, scan_truncated
from jaxlstm.models import penalty
from jaxlstm.train import arrays, make_train

RTOL, ATOL = 1e-5, 1e-6
# Jitted: op-by-op dispatch compiles every primitive, which is slower than one compile.
masks_fn = jax.jit(dropout_masks, static_argnames=("batch", "features", "units", "gates", "use_dropout",
                                                   "use_recurrent"))
RECURRENT_LAYERS = ("lstm_", "gru_", "forward_", "backward_", "encoder_", "decoder")


def sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def random_params(net, x, seed=0):
  """N(0, 0.5^2) weights in the network's parameter structure (no init compile)."""
  shapes = jax.eval_shape(net.init, jax.random.key(0), jnp.asarray(x, jnp.float32))["params"]
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: (0.5 * rng.normal(size=s.shape)).astype(np.float32), shapes)


def np_recurrent(x, p, cell, input_mask=None, state_mask=None):
  """A Keras LSTM/GRU layer with fixed dropout masks, in float64.

  input_mask `[batch, features]` (shared by the gates) or `[gates, batch,
  features]`; state_mask `[gates, batch, units]`. Both have no time axis:
  the same masks multiply the input and the carried state at every step.
  """
  p = {k: np.asarray(v, np.float64) for k, v in p.items()}
  gates = GATES[cell]
  batch, time, features = x.shape
  units = p["recurrent_kernel"].shape[0]
  kernels = np.split(p["kernel"], gates, axis=1)
  recurrents = np.split(p["recurrent_kernel"], gates, axis=1)
  if input_mask is None:
    input_mask = np.ones((batch, features))
  if input_mask.ndim == 2:
    input_mask = np.broadcast_to(input_mask, (gates, batch, features))
  if state_mask is None:
    state_mask = np.ones((gates, batch, units))
  h, c = np.zeros((batch, units)), np.zeros((batch, units))
  out = np.zeros((batch, time, units))
  for t in range(time):
    xs = [x[:, t] * input_mask[g] @ kernels[g] for g in range(gates)]
    hs = [h * state_mask[g] @ recurrents[g] for g in range(gates)]
    if cell == "lstm":
      b = np.split(p["bias"], 4)
      i, f, g, o = (xs[j] + hs[j] + b[j] for j in range(4))
      c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
      h = sigmoid(o) * np.tanh(c)
    else:
      b, rb = np.split(p["bias"], 3), np.split(p["recurrent_bias"], 3)
      z = sigmoid(xs[0] + b[0] + hs[0] + rb[0])
      r = sigmoid(xs[1] + b[1] + hs[1] + rb[1])
      h = z * h + (1 - z) * np.tanh(xs[2] + b[2] + r * (hs[2] + rb[2]))  # unmasked h mixed in
    out[:, t] = h
  return out


def hand_penalty(params, hp):
  """Sum over recurrent layers of l1 |w| + l2 w^2, per kind (kernel, recurrent, bias), in float64."""
  total = 0.0
  for layer, leaves in params.items():
    if not layer.startswith(RECURRENT_LAYERS):
      continue
    for name, kind in (("kernel", "kernel"), ("recurrent_kernel", "recurrent"), ("bias", "bias"),
                       ("recurrent_bias", "bias")):
      if name in leaves:
        w = np.asarray(leaves[name], np.float64)
        total += hp[f"{kind}_l1"] * np.abs(w).sum() + hp[f"{kind}_l2"] * (w * w).sum()
  return total


# ----------------------------------------------------------------------------- dropout masks
def test_dropout_masks_have_no_time_axis_and_keras_scaling():
  key = jax.random.key(0)
  common = dict(batch=500, features=40, units=30, gates=4)
  only_input, none = masks_fn(key, rate=0.3, recurrent_rate=0.0, use_dropout=True, use_recurrent=False, **common)
  assert only_input.shape == (500, 40) and none is None  # one mask for all gates (implementation 2)
  input_mask, state_mask = masks_fn(key, rate=0.3, recurrent_rate=0.6, use_dropout=True, use_recurrent=True,
                                    **common)
  assert input_mask.shape == (4, 500, 40) and state_mask.shape == (4, 500, 30)  # per gate (implementation 1)
  for mask, rate in ((only_input, 0.3), (input_mask, 0.3), (state_mask, 0.6)):
    values = np.unique(np.asarray(mask))
    np.testing.assert_allclose(values, [0.0, 1 / (1 - rate)], rtol=1e-6)
    assert abs(np.mean(np.asarray(mask) == 0) - rate) < 0.02
  assert not np.array_equal(input_mask[0], input_mask[1])  # the gates' masks are independent

  # The rates are traced values: the compile above serves every rate.
  low = masks_fn(key, rate=0.1, recurrent_rate=0.1, use_dropout=True, use_recurrent=True, **common)
  assert abs(np.mean(np.asarray(low[1]) == 0) - 0.1) < 0.02
  assert masks_fn._cache_size() == 2  # one per static flag combination, none per rate


@pytest.mark.parametrize("cell,rate,recurrent_rate", [("lstm", 0.3, 0.4), ("gru", 0.3, 0.4), ("lstm", 0.5, 0.0)])
def test_training_forward_applies_one_mask_per_sequence_at_every_step(cell, rate, recurrent_rate):
  x = np.random.default_rng(0).normal(size=(6, 7, 3)).astype(np.float32)
  cfg = ModelConfig(cell=cell, cells=4, layers=2, return_sequences=True, dropout=rate,
                    recurrent_dropout=recurrent_rate)
  net = Network(cfg, 2)
  params = random_params(net, x)
  key = jax.random.key(42)
  forward = jax.jit(lambda p, k: net.apply({"params": p}, x, dropout_key=k, rates=(rate, recurrent_rate)))
  got = np.asarray(forward(params, key), np.float64)
  hs = x.astype(np.float64)
  dropped = 0
  for layer in range(2):
    # Layer i's masks come from fold_in(key, i): one draw for the batch, no time axis.
    input_mask, state_mask = masks_fn(
        jax.random.fold_in(key, layer), batch=6, features=hs.shape[-1], units=4, gates=GATES[cell],
        rate=rate, recurrent_rate=recurrent_rate, use_dropout=rate > 0, use_recurrent=recurrent_rate > 0)
    dropped += sum(int(np.sum(np.asarray(m) == 0)) for m in (input_mask, state_mask) if m is not None)
    hs = np_recurrent(hs, params[f"{cell}_{layer}"], cell,
                      None if input_mask is None else np.asarray(input_mask, np.float64),
                      None if state_mask is None else np.asarray(state_mask, np.float64))
  head = params["head"]
  np.testing.assert_allclose(got, hs @ np.asarray(head["kernel"], np.float64) + head["bias"], rtol=RTOL, atol=ATOL)
  assert dropped > 0  # the reference really dropped units, so the masks are applied in training
  assert not np.allclose(got, forward(params, jax.random.key(43)))  # and are drawn from the key


# ----------------------------------------------------------------------------- a dropout + L1/L2 grid
REGULARISED = {
    "model.cells": 4, "model.layers": 2, "model.recurrent_init": "glorot_uniform",
    "model.recurrent_dropout": 0.2, "model.kernel_l1": 1e-3, "model.kernel_l2": 1e-2, "model.recurrent_l1": 2e-3,
    "model.recurrent_l2": 3e-3, "model.bias_l1": 1e-3, "model.bias_l2": 5e-3,
    "data.problem": "damped_sine", "data.options": {"n_train": 32, "n_val": 8, "length": 6, "horizon": 2},
    "train.epochs": 3, "train.batch_size": 16,
}
RATES = (0.1, 0.3, 0.5)


@pytest.fixture(scope="module")
def grid():
  configs = jaxlstm.expand_grid(Config().override(REGULARISED), {"model.dropout": list(RATES)})
  groups = plan(configs, 2)
  compiled.clear()  # count this group's compile, not a program an earlier test left in the cache
  ensembles, info = run_group(groups[0], seed=0)
  return configs, groups, ensembles, info


def test_dropout_grid_is_one_program_and_one_compile(grid):
  configs, groups, ensembles, info = grid
  assert len(groups) == 1 and info.compiles == 1
  for ens in ensembles:
    assert set(ens.history) == {"loss", "val_loss", "penalty"}
    assert all(np.isfinite(v).all() for v in ens.history.values())
  finals = [ens.history["loss"][:, -1] for ens in ensembles]
  assert not np.allclose(finals[0], finals[2])  # the rates differ in the one program


@pytest.mark.slow  # one more compile; test_train checks per-member hyper-parameters for the learning rate
def test_grid_member_equals_its_own_run(grid):
  configs, _, ensembles, _ = grid
  alone = jaxlstm.fit(configs[1], repeats=2, seed=0)
  for name in alone.history:
    np.testing.assert_allclose(ensembles[1].history[name], alone.history[name], rtol=1e-5, atol=1e-6)


def test_val_loss_is_evaluated_without_dropout_and_includes_the_penalty(grid):
  configs, _, ensembles, _ = grid
  dataset = problems.make("damped_sine", **REGULARISED["data.options"])  # explicit validation data
  for cfg, ens in zip(configs, ensembles):
    forward = jax.jit(Network(cfg.model, ens.outputs).apply)
    hp = {name: getattr(cfg.model, name) for name in PENALTY_FIELDS}
    for i in range(2):
      params = jax.tree.map(lambda a: a[i], ens.params)
      out = np.asarray(forward({"params": params}, dataset.x_val), np.float64)  # no dropout key: no dropout
      expected = np.mean((out - dataset.y_val) ** 2) + hand_penalty(params, hp)
      np.testing.assert_allclose(ens.history["val_loss"][i, -1], expected, rtol=1e-5)


def test_penalty_equals_the_hand_computed_sum_on_fixed_weights():
  hp = {"kernel_l1": 0.01, "kernel_l2": 0.02, "recurrent_l1": 0.03, "recurrent_l2": 0.04,
        "bias_l1": 0.05, "bias_l2": 0.06}
  x = np.zeros((2, 5, 3), np.float32)
  for cfg in (ModelConfig(cells=4, cell="gru", architecture="bidirectional", layers=2, input_projection=3),
              ModelConfig(cells=4, architecture="encoder_decoder", layer_norm=True, learn_initial_state=True)):
    net = Network(cfg, 2, time_out=3)
    params = random_params(net, x)
    expected = 0.0
    for layer, leaves in params.items():  # written out per leaf, not with hand_penalty's loop
      if layer in ("input_projection", "head"):
        continue  # Dense layers carry no regulariser here
      k, r, b = (np.asarray(leaves[n], np.float64) for n in ("kernel", "recurrent_kernel", "bias"))
      expected += 0.01 * np.abs(k).sum() + 0.02 * (k ** 2).sum() + 0.03 * np.abs(r).sum() + 0.04 * (r ** 2).sum()
      expected += 0.05 * np.abs(b).sum() + 0.06 * (b ** 2).sum()
      if "recurrent_bias" in leaves:  # Keras' GRU bias is [2, 3u]: both rows are regularised
        rb = np.asarray(leaves["recurrent_bias"], np.float64)
        expected += 0.05 * np.abs(rb).sum() + 0.06 * (rb ** 2).sum()
    np.testing.assert_allclose(float(penalty(params, hp)), expected, rtol=1e-5)
    assert set(params) - {"input_projection", "head"} <= {
        "forward_0", "backward_0", "forward_1", "backward_1", "encoder_0", "decoder"}


# ----------------------------------------------------------------------------- penalties with a per-repeat split
PENALISED = {
    "model.cells": 4, "model.recurrent_init": "glorot_uniform",
    "model.kernel_l2": 0.05, "model.recurrent_l1": 0.02, "model.bias_l2": 0.1,
    "data.problem": "damped_sine", "data.options": {"n_train": 30, "n_val": 10, "length": 5, "horizon": 1},
    "data.resplit": 0.25, "train.epochs": 2, "train.batch_size": 0,
}


@pytest.fixture(scope="module")
def penalised():
  cfg = Config().override(PENALISED)
  (group,) = plan([cfg], 3)
  (ens,), _ = run_group(group, seed=0)
  program = make_train(cfg, resolve(cfg))
  return cfg, ens, program, members_of(group, 0)


def member(members, i):
  return jax.tree.map(lambda a: a[i], members)


def test_resplit_gives_each_repeat_its_own_partition_of_all_samples(penalised):
  cfg, ens, program, members = penalised
  data = arrays(resolve(cfg))
  everything = np.concatenate([data.x_train, data.x_val])[:, :, 0]
  splits = [program.member_data(data, member(members, i)) for i in range(3)]
  assert program.shape.n_train == 30 and program.shape.n_val == 10
  for split in splits:
    train, val = np.asarray(split.x_train)[:, :, 0], np.asarray(split.x_val)[:, :, 0]
    assert train.shape[0] == 30 and val.shape[0] == 10
    rows = sorted(map(tuple, np.concatenate([train, val])))
    assert rows == sorted(map(tuple, everything))  # a partition of all 40 samples
  assert not np.array_equal(splits[0].x_val, splits[1].x_val)  # each repeat's own split key
  again = program.member_data(data, member(members, 1))
  np.testing.assert_array_equal(again.x_val, splits[1].x_val)
  fixed = members_of(plan([cfg.override({"train.vary": ("init", "shuffle", "dropout")})], 2)[0], 0)
  a, b = (program.member_data(data, member(fixed, i)) for i in range(2))
  np.testing.assert_array_equal(a.x_val, b.x_val)  # "split" held fixed: every repeat shares repeat 0's


def test_loss_includes_the_penalty_and_it_is_reported_apart(penalised):
  cfg, ens, program, members = penalised
  hp = {name: getattr(cfg.model, name) for name in PENALTY_FIELDS}
  data = arrays(resolve(cfg))
  forward = jax.jit(Network(cfg.model, ens.outputs).apply)
  init = jax.jit(program.init_params)
  for i in range(3):
    split = program.member_data(data, member(members, i))
    start = init(members.keys.init[i])
    # One full batch per epoch: epoch 0's numbers are those of the initial weights.
    reg = hand_penalty(start, hp)
    np.testing.assert_allclose(ens.history["penalty"][i, 0], reg, rtol=1e-5)
    data_loss = np.mean((np.asarray(forward({"params": start}, split.x_train), np.float64) - split.y_train) ** 2)
    np.testing.assert_allclose(ens.history["loss"][i, 0], data_loss + reg, rtol=1e-5)
    # val_loss: the member's own validation rows, final weights, penalty included (Keras 3).
    final = jax.tree.map(lambda a: a[i], ens.params)
    val_out = np.asarray(forward({"params": final}, split.x_val), np.float64)
    expected = np.mean((val_out - split.y_val) ** 2) + hand_penalty(final, hp)
    np.testing.assert_allclose(ens.history["val_loss"][i, -1], expected, rtol=1e-5)
  assert (ens.history["penalty"] > 0).all()


def test_keras_validation_split_is_the_last_fraction_before_shuffling():
  x = np.arange(20, dtype=np.float32).reshape(10, 2, 1)
  dataset = problems.Dataset(x, x[:, -1], x[:0], x[:0, -1])
  cfg = Config().override({"data.validation_split": 0.25})
  split = resolve(cfg, dataset)
  # Keras: split_at = floor(10 * 0.75) = 7; validation = samples 7, 8, 9.
  np.testing.assert_array_equal(split.x_train, x[:7])
  np.testing.assert_array_equal(split.x_val, x[7:])


# ----------------------------------------------------------------------------- truncated BPTT
@pytest.mark.parametrize("k", [1, 3, 4, 10])
@pytest.mark.parametrize("reverse", [False, True])
def test_scan_truncated_carries_the_state_across_chunks(k, reverse):
  xs = jnp.arange(1.0, 11.0)

  def step(carry, x):
    return carry + x, carry + x

  def outputs(xs):
    return scan_truncated(step, jnp.zeros([]), xs, k, reverse=reverse)

  expected = np.cumsum(np.arange(1.0, 11.0)[::-1])[::-1] if reverse else np.cumsum(np.arange(1.0, 11.0))
  np.testing.assert_allclose(outputs(xs), expected)  # the running sum continues over every boundary
  # d out[t] / d x[s] is 1 within t's chunk (on the scan's side of t) and 0 across a boundary.
  t = 6
  grad = np.asarray(jax.grad(lambda xs: outputs(xs)[t])(xs))
  chunk = np.arange(10) // k == t // k
  side = np.arange(10) >= t if reverse else np.arange(10) <= t
  np.testing.assert_array_equal(grad, (chunk & side).astype(np.float32))


def _layer_grads(cfg, x, params, reverse, steps):
  """Outputs, and for each step t in `steps` the gradients of a loss on h_t (params and x), in one compile."""
  layer = Recurrent(cfg, 4, reverse=reverse)

  def run(params, x):
    def loss(params, x, t):
      return jnp.sum(layer.apply({"params": params}, x)[:, t, :] * jnp.arange(1.0, 5.0)[None, :])
    grads = [jax.grad(loss, argnums=(0, 1))(params, x, t) for t in steps]
    return layer.apply({"params": params}, x), grads

  out, grads = jax.jit(run)(params, x)
  return np.asarray(out), [(jax.tree.map(np.asarray, gp), np.asarray(gx)) for gp, gx in grads]


@pytest.mark.parametrize("cell,reverse", [("lstm", False), ("gru", True)])
def test_tbptt_forward_equals_untruncated_and_cuts_gradients_at_chunk_boundaries(cell, reverse):
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 7, 3)), jnp.float32)
  base = ModelConfig(cell=cell, cells=4, learn_initial_state=True)
  params = random_params(Recurrent(base, 4, reverse=reverse), x)
  # Chunks [0, 3), [3, 6), [6, 7). A loss on step t reaches only t's chunk:
  # forward t = 5 -> steps 3..5; reverse t = 1 -> steps 1, 2.
  t = 1 if reverse else 5
  first = 6 if reverse else 0  # a step of the first chunk scanned
  reach = np.arange(7) >= t if reverse else np.arange(7) <= t
  chunk = np.arange(7) // 3 == t // 3
  out_full, [(gp_full, gx_full), (gp_first_full, _)] = _layer_grads(base, x, params, reverse, (t, first))
  out_cut, [(gp_cut, gx_cut), (gp_first, _)] = _layer_grads(dataclasses.replace(base, tbptt=3), x, params,
                                                             reverse, (t, first))
  np.testing.assert_allclose(out_cut, out_full, rtol=RTOL, atol=ATOL)  # forward values unchanged
  np.testing.assert_allclose(gx_cut[:, chunk], gx_full[:, chunk], rtol=RTOL, atol=ATOL)
  assert np.all(gx_cut[:, ~chunk] == 0)
  assert np.abs(gx_full[:, reach & ~chunk]).min() > 0  # untruncated, they reach further back
  # The first chunk scanned keeps its gradient to the learned initial state;
  # later chunks see the state's value but not its gradient.
  np.testing.assert_allclose(gp_first["initial_h"], gp_first_full["initial_h"], rtol=RTOL, atol=ATOL)
  assert np.abs(gp_first["initial_h"]).max() > 0
  assert np.all(gp_cut["initial_h"] == 0) and np.abs(gp_full["initial_h"]).max() > 0
  # tbptt >= time: exactly the untruncated layer.
  out_whole, [(_, gx_whole)] = _layer_grads(dataclasses.replace(base, tbptt=7), x, params, reverse, (t,))
  np.testing.assert_allclose(out_whole, out_full, rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(gx_whole, gx_full, rtol=RTOL, atol=ATOL)
