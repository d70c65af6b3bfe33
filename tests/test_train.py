"""The engine contract (DESIGN §3): seed equivalence, one compile per group, Keras batching, divergence.

Compiles dominate on CPU, so every program is built once per module in a fixture.
Vmapped members match solo runs to float32 rounding, not bit for bit
(reference/reliability.md §0 finding 1); PRNG-derived draws match exactly.
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxlstm
from conftest import count_traces
from jaxlstm import compiled, losses
from jaxlstm.config import Config
from jaxlstm.data import resolve
from jaxlstm.ensemble import init_members, members_of, plan, run_group
from jaxlstm.train import Member, make_train

TINY = {"model.cells": 4, "train.epochs": 8, "train.batch_size": 2, "train.shuffle": True}


def tiny(**changes) -> Config:
  return Config().override({**TINY, **changes})


def member(members: Member, i: int) -> Member:
  return jax.tree.map(lambda a: a[i], members)


@pytest.fixture(scope="module")
def base():
  """A 30-member run of the tiny config plus what a solo run needs."""
  cfg = tiny()
  (group,) = plan([cfg], 30)
  compiled.clear()
  (ens,), info = run_group(group, resolve(cfg), seed=0)
  train = make_train(cfg, resolve(cfg))
  members = members_of(group, 0)
  return cfg, ens, info, train, members


def test_seed_i_of_30_matches_solo_run(base):
  """make_train(...).train(member) equals member i of the ensemble (DESIGN §3)."""
  cfg, ens, info, train, members = base
  assert info.compiles == 1 and info.epoch_chunks == 1
  solo_train = jax.jit(train.train)
  for i in (0, 7, 29):
    state, history = solo_train(member(members, i))
    for name in ens.history:
      np.testing.assert_allclose(ens.history[name][i], history[name], rtol=1e-5, atol=1e-6)
    chex_close = jax.tree.map(lambda a, b: np.allclose(a[i], b, rtol=1e-5, atol=1e-6), ens.params, state.params)
    assert all(jax.tree.leaves(chex_close))
  assert not np.allclose(ens.history["loss"][0], ens.history["loss"][1])


def test_random_draws_are_bit_identical_to_solo(base):
  cfg, ens, info, train, members = base
  init_all = jax.jit(lambda m: init_members(train, m, ((cfg.model.cells, 30),)))(members)
  init_one = jax.jit(train.init_params)
  orders_all = jax.jit(jax.vmap(train.epoch_order, in_axes=(0, None)))(members.keys.shuffle, 3)
  for i in (0, 13):
    solo = init_one(members.keys.init[i])
    same = jax.tree.map(lambda a, b: np.array_equal(np.asarray(a[i]), np.asarray(b)), init_all.params, solo)
    assert all(jax.tree.leaves(same))
    np.testing.assert_array_equal(orders_all[i], train.epoch_order(members.keys.shuffle[i], 3))
  assert not np.array_equal(orders_all[0], orders_all[1]) or not np.array_equal(orders_all[0], orders_all[2])


@pytest.mark.parametrize("changes", [{}, {"model.cell": "gru", "model.layers": 2}, {"model.dense": 3},
                                     {"model.architecture": "bidirectional"}, {"data.cv": "kfold", "data.folds": 3}])
def test_blank_states_have_the_shapes_of_a_padded_groups_initial_states(changes):
  """The states a fresh call is lowered for come from one member's parameter shapes (no per-width trace),
  with the optimizer state as its leaves (`ensemble.boundary_states`)."""
  from jaxlstm import ensemble
  narrow = tiny(**changes)
  groups = plan([narrow, narrow.override({"model.cells": 8})], 3)
  for group in groups:
    gp = ensemble.group_program(group, resolve(group.configs[0]))
    layout = gp.calls.layouts[0]
    part = member(gp.members, gp.calls.member_index(0))
    blank = gp.blank_states(part)
    initial = jax.eval_shape(lambda m: ensemble.boundary_states(init_members(gp.train, m, layout)), part)
    assert jax.tree.structure(blank) == jax.tree.structure(initial)
    assert [(a.shape, a.dtype) for a in jax.tree.leaves(blank)] == [(b.shape, b.dtype) for b in jax.tree.leaves(initial)]


def test_boundary_states_keep_every_leaf_in_its_order():
  """A program's states hold the optimizer state as its leaves: the flat list a checkpoint stores
  (`store.StateCheckpointer`) is the same as with optax's own nodes, so older checkpoints restore."""
  from jaxlstm import ensemble
  cfg = tiny(**{"optim.name": "sgd", "optim.momentum": 0.9, "optim.weight_decay": 1e-3})
  (group,) = plan([cfg], 2)
  gp = ensemble.group_program(group, resolve(cfg))
  states = jax.jit(lambda m: init_members(gp.train, m, gp.calls.layouts[0]))(gp.members)
  leaves, flat = jax.tree.leaves(states), jax.tree.leaves(ensemble.boundary_states(states))
  assert len(leaves) == len(flat) > len(jax.tree.leaves(states.params))
  for a, b in zip(leaves, flat, strict=True):
    np.testing.assert_array_equal(a, b)
    assert a.dtype == b.dtype


def test_repeats_extend(base):
  """The first 5 repeats of a 12-repeat run equal a 5-repeat run (keys depend on i only)."""
  cfg = base[0]
  five = jaxlstm.fit(cfg, repeats=5, seed=3)
  twelve = jaxlstm.fit(cfg, repeats=12, seed=3)
  for name in five.history:
    np.testing.assert_allclose(twelve.history[name][:5], five.history[name], rtol=1e-5, atol=1e-6)
  other_seed = jaxlstm.fit(cfg, repeats=5, seed=4)
  assert not np.allclose(other_seed.history["loss"], five.history["loss"])


def test_learning_rate_grid_is_one_compile_and_equals_separate_runs():
  cfg = tiny()
  configs = jaxlstm.expand_grid(cfg, {"optim.learning_rate": [1e-3, 1e-2, 3e-2]})
  groups = plan(configs, 4)
  assert len(groups) == 1
  compiled.clear()
  ensembles, info = run_group(groups[0], resolve(cfg), seed=0)
  assert info.compiles == 1  # one program for the three learning rates
  for grid_config, ens in zip(configs, ensembles):
    alone = jaxlstm.fit(grid_config, repeats=4, seed=0)
    for name in ens.history:
      np.testing.assert_allclose(ens.history[name], alone.history[name], rtol=1e-5, atol=1e-6)
  finals = [e.final("loss").mean() for e in ensembles]
  assert len(set(np.round(finals, 6))) == 3  # the learning rates really differed


def test_fit_compiles_once_per_static_signature(base, tmp_path, monkeypatch):
  """A second fit of the same shapes traces nothing: other seeds, new data, a traced grid."""
  cfg = base[0]
  compiled.clear()
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # an empty program store: the first fit traces
  with count_traces() as traces:
    for seed in (0, 1, 2):
      jaxlstm.fit(cfg, repeats=6, seed=seed)
  assert traces["run_chunk"] == 1, dict(traces)
  shifted = jaxlstm.problems.linear()
  shifted = dataclasses.replace(shifted, x_train=shifted.x_train + 0.05, y_train=shifted.y_train + 0.05)
  with count_traces() as traces:
    moved = jaxlstm.fit(cfg, shifted, repeats=6, seed=0)
  assert sum(traces.values()) == 0, dict(traces)  # new data of the same shapes: no trace at all
  assert not np.allclose(moved.history["loss"], jaxlstm.fit(cfg, repeats=6, seed=0).history["loss"])
  grid = jaxlstm.expand_grid(cfg, {"optim.learning_rate": [1e-3, 3e-3, 1e-2, 3e-2]})
  with count_traces() as traces:
    jaxlstm.fit_many(grid, repeats=3, seed=0)
    jaxlstm.fit_many(grid, repeats=3, seed=5)
  assert traces["run_chunk"] == 1, dict(traces)


@pytest.mark.parametrize("batch_size,steps", [(1, 5), (2, 3), (3, 2), (5, 1), (32, 1)])
def test_partial_batches_match_a_plain_keras_style_loop(batch_size, steps):
  """Keras keeps the last partial batch; epoch loss = batch losses weighted by batch size."""
  cfg = tiny(**{"train.batch_size": batch_size, "train.epochs": 2, "train.shuffle": False,
                "optim.learning_rate": 0.01})
  ds = resolve(cfg)
  train = make_train(cfg, ds)
  assert train.shape.steps == steps
  (group,) = plan([cfg], 1)
  members = members_of(group, 0)
  _, history = jax.jit(train.train)(member(members, 0))

  # The reference: a Python loop over epochs and real (unpadded) batches.
  params = train.init_params(members.keys.init[0])
  tx = train.tx
  opt_state = tx.init(params)

  def batch_loss(p, xb, yb):
    return jnp.mean(losses.mse(train.logits(p, xb), yb))

  expected = []
  for _ in range(2):
    total = 0.0
    for start in range(0, 5, batch_size):
      xb, yb = ds.x_train[start:start + batch_size], ds.y_train[start:start + batch_size]
      loss, grads = jax.value_and_grad(batch_loss)(params, xb, yb)
      updates, opt_state = tx.update(grads, opt_state, params)
      params = optax.apply_updates(params, updates)
      total += float(loss) * len(xb)
    expected.append(total / 5)
  np.testing.assert_allclose(history["loss"], expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("scheme", ["glorot_uniform", "he_uniform", "random_uniform"])
def test_uniform_init_bounds_use_keras_fans_of_the_fused_kernel(scheme):
  cfg = Config().override({"model.cells": 16, "model.kernel_init": scheme})
  train = make_train(cfg, jaxlstm.problems.linear())
  params = train.init_params(jax.random.key(0))["lstm_0"]
  kernel = np.asarray(params["kernel"])
  fan_in, fan_out = kernel.shape  # (features, 4 * units), as Keras computes for the fused kernel
  assert kernel.shape == (1, 64)
  limit = {"glorot_uniform": np.sqrt(6 / (fan_in + fan_out)), "he_uniform": np.sqrt(6 / fan_in),
           "random_uniform": 0.05}[scheme]
  assert np.abs(kernel).max() <= limit
  assert np.abs(kernel).max() > 0.8 * limit  # fills the range: not a narrower scheme
  bias = np.asarray(params["bias"])
  np.testing.assert_array_equal(bias[16:32], 1.0)  # unit_forget_bias
  np.testing.assert_array_equal(np.delete(bias, np.s_[16:32]), 0.0)


def test_orthogonal_recurrent_kernel_and_normal_scheme_statistics():
  cfg = Config().override({"model.cells": 32, "model.layers": 1, "model.kernel_init": "glorot_normal"})
  train = make_train(cfg, jaxlstm.problems.linear())
  params = train.init_params(jax.random.key(1))["lstm_0"]
  recurrent = np.asarray(params["recurrent_kernel"])  # (32, 128): orthonormal rows
  np.testing.assert_allclose(recurrent @ recurrent.T, np.eye(32), atol=1e-5)
  big = make_train(Config().override({"model.cells": 64, "model.kernel_init": "glorot_normal"}),
                   jaxlstm.problems.linear())
  kernel = np.asarray(big.init_params(jax.random.key(2))["lstm_0"]["kernel"])
  expected_std = np.sqrt(2 / (1 + 256))  # Keras truncated-normal glorot keeps this variance
  assert abs(kernel.std() / expected_std - 1) < 0.2
  no_forget = make_train(Config().override({"model.cells": 4, "model.unit_forget_bias": False}),
                         jaxlstm.problems.linear())
  assert np.all(np.asarray(no_forget.init_params(jax.random.key(0))["lstm_0"]["bias"]) == 0)


def test_poisoned_seed_is_flagged_and_others_untouched():
  cfg = tiny(**{"optim.learning_rate": 1e-2})
  exploding = cfg.override({"optim.learning_rate": 1e30})
  groups = plan([cfg, exploding], 3)
  assert len(groups) == 1
  (clean, poisoned), _ = run_group(groups[0], resolve(cfg), seed=0)
  assert poisoned.diverged.all() and not clean.diverged.any()
  assert (poisoned.diverged_epoch >= 0).all()
  # README, "Divergence is per repeat": a layer reading one step from the zero state never reads
  # its recurrent kernel, so that kernel keeps its (finite) initial values while the rest turns NaN.
  layer = poisoned.params["lstm_0"]
  assert np.isfinite(np.asarray(layer["recurrent_kernel"])).all()
  assert not np.isfinite(np.asarray(layer["kernel"])).any()
  alone = jaxlstm.fit(cfg, repeats=3, seed=0)
  for name in alone.history:
    np.testing.assert_allclose(clean.history[name], alone.history[name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("changes,field", [
    ({"model.cells": 0}, "model.cells"),
    ({"train.epochs": -1}, "train.epochs"),
    ({"optim.learning_rate": 0.0}, "optim.learning_rate"),
    ({"model.dropout": 1.0}, "model.dropout"),
    ({"optim.name": "adamw"}, "optim.name"),
    ({"model.activation": "gelu"}, "model.activation"),
    ({"model.kernel_init": "xavier"}, "model.kernel_init"),
    # List fields: each element is checked here, not first by jax while tracing the schedule.
    ({"optim.schedule": "piecewise", "optim.boundaries": ["a"], "optim.scales": [0.5]}, "optim.boundaries"),
    ({"optim.schedule": "piecewise", "optim.boundaries": [10.5], "optim.scales": [0.5]}, "optim.boundaries"),
    ({"optim.schedule": "piecewise", "optim.boundaries": [-1], "optim.scales": [0.5]}, "optim.boundaries"),
    ({"optim.schedule": "piecewise", "optim.boundaries": 7, "optim.scales": [0.5]}, "optim.boundaries"),
    ({"optim.schedule": "piecewise", "optim.boundaries": [10], "optim.scales": [float("nan")]}, "optim.scales"),
    ({"optim.schedule": "piecewise", "optim.boundaries": [10], "optim.scales": [-0.5]}, "optim.scales"),
    ({"train.metrics": 5}, "train.metrics = 5 is not allowed: expected a name or a list of names"),
    ({"train.vary": None}, "train.vary = None is not allowed: expected a name or a list of names"),
    ({"train.reduce_lr.monitor": 5}, "train.reduce_lr.monitor = 5 is not allowed: expected a history key"),
    ({"train.early_stopping": {"restore_best_weights": 5}}, "train.early_stopping.restore_best_weights = 5"),
])
def test_config_errors_name_the_field_before_any_compile(changes, field):
  with pytest.raises(jaxlstm.ConfigError, match=field.replace(".", r"\.")):
    Config().override(changes)


def test_list_fields_keep_their_accepted_forms():
  cfg = Config().override({"optim.schedule": "piecewise", "optim.boundaries": [0, 20], "optim.scales": [0.5, 0],
                           "train.metrics": "mae", "train.vary": ["split", "init"]})
  assert (cfg.optim.boundaries, cfg.optim.scales) == ((0, 20), (0.5, 0))
  assert cfg.train.metrics == ("mae",) and cfg.train.vary == ("init", "split")


def test_unknown_key_gets_did_you_mean():
  with pytest.raises(jaxlstm.ConfigError, match="Did you mean 'model.cells'"):
    Config().override({"model.cels": 3})
  with pytest.raises(jaxlstm.ConfigError, match="Did you mean 'model.cells'"):
    Config.from_dict({"model": {"celss": 3}})
  # A config file's field outside its table, and a run option in a config file.
  with pytest.raises(jaxlstm.ConfigError, match=r"Did you mean 'model.cells' \(cells in a \[model\] table\)\?"):
    Config.from_dict({"cells": 3})
  with pytest.raises(jaxlstm.ConfigError, match=r"'train.early_stopping.patience' \(patience in a "
                     r"\[train.early_stopping\] table\)"):
    Config.from_dict({"patience": 3})
  with pytest.raises(jaxlstm.ConfigError, match="--repeats is a command-line option, not a config field"):
    Config.from_dict({"repeats": 30})


def test_arrays_that_are_not_a_dataset_are_refused_with_the_fix():
  data = jaxlstm.problems.make("linear")
  with pytest.raises(TypeError, match=r"got tuple; wrap arrays as Dataset\(x_train, y_train, x_val, y_val\)"):
    jaxlstm.fit(tiny(), (data.x_train, data.y_train), repeats=2)


def test_data_errors_raise_before_compile():
  cfg = tiny(**{"train.early_stopping": {"monitor": "val_acc"}})
  with pytest.raises(jaxlstm.ConfigError, match="monitor"):
    jaxlstm.fit(cfg, repeats=2)
  bad = jaxlstm.problems.linear()
  with pytest.raises(ValueError, match="x_train"):
    dataclasses.replace(bad, x_train=np.full((5, 1, 1), np.nan))
  with pytest.raises(ValueError, match=r"\[samples, time, features\]"):
    dataclasses.replace(bad, x_train=np.zeros((5, 1)))


def test_member_chunks_from_a_memory_budget_equal_one_call(base):
  cfg = base[0]
  (group,) = plan([cfg], 10)
  ds = resolve(cfg)
  (whole,), whole_info = run_group(group, ds, seed=0)
  compiled.clear()
  (chunked,), info = run_group(group, ds, seed=0, max_members_per_call=4)
  assert whole_info.member_chunks == 1 and info.member_chunks == 3
  assert info.compiles == 1  # equal chunks (the last padded with a repeat) share one program
  for name in whole.history:
    np.testing.assert_allclose(chunked.history[name], whole.history[name], rtol=1e-5, atol=1e-6)
  (budgeted,), budget_info = run_group(group, ds, seed=0, memory_budget=1)
  assert budget_info.member_chunks == 10  # a budget below one member runs one member per call


def test_data_encoding_and_scaling_fields():
  echo = Config().override({"data.problem": "echo", "data.options": {"n_train": 20, "n_val": 6},
                            "data.encoding": "integer", "model.output_activation": "softmax",
                            "train.loss": "categorical_crossentropy"})
  ds = resolve(echo)
  onehot = jaxlstm.problems.make("echo", n_train=20, n_val=6)
  assert ds.x_train.shape == (20, 5, 1)
  np.testing.assert_allclose(ds.x_train[..., 0] * 9, onehot.x_train.argmax(-1))
  with pytest.raises(jaxlstm.ConfigError, match="data.encoding"):
    resolve(Config().override({"data.encoding": "integer"}))  # linear inputs are not one-hot
  scaled = resolve(Config().override({"data.scaling": "minmax"}))
  assert scaled.x_train.min() == 0.0 and scaled.x_train.max() == 1.0  # fitted on training data only
  assert scaled.x_val.max() > 1.0  # validation lies beyond the training range in the linear problem


def test_mae_original_reports_validation_error_in_raw_units():
  options = {"n_train": 20, "n_val": 10, "length": 8, "horizon": 2, "offset": 100.0, "amplitude": 50.0}
  cfg = Config().override({"data.problem": "damped_sine", "data.options": options, "data.scaling": "minmax",
                           "model.cells": 4, "train.epochs": 2, "train.batch_size": 10,
                           "train.metrics": ["mae", "mae_original"]})
  ens = jaxlstm.fit(cfg, repeats=2)
  ds = resolve(cfg)
  raw_predictions = jaxlstm.prep.to_original_units(ds, ens.predict(ds.x_val))
  raw_targets = jaxlstm.prep.to_original_units(ds, ds.y_val)
  expected = np.abs(raw_predictions - raw_targets[None]).mean(axis=(1, 2))
  np.testing.assert_allclose(ens.history["val_mae_original"][:, -1], expected, rtol=1e-4)
  assert (ens.history["val_mae_original"] > 10 * ens.history["val_mae"]).all()  # a range of ~100 units


@pytest.mark.parametrize("vary", [("init", "shuffle", "dropout", "split"), ("shuffle",)])
def test_numpy_key_derivation_is_bit_identical_to_jax(vary):
  from jaxlstm import keys
  configs = [tiny(**{"train.vary": list(vary)}), tiny(**{"model.cells": 3, "train.vary": list(vary)})]
  fast = keys.group_keys(7, configs, 5)
  reference = keys._group_keys(np.uint32(7), np.asarray([keys.config_number(c) for c in configs], np.uint32),
                               np.arange(5, dtype=np.uint32), tuple(vary))
  for ours, theirs in zip(fast, reference):
    np.testing.assert_array_equal(jax.random.key_data(ours), jax.random.key_data(theirs))
  solo = keys.stream_keys(keys.repeat_keys(7, configs[1], 5), vary)
  for ours, theirs in zip(fast, solo):
    np.testing.assert_array_equal(jax.random.key_data(ours)[5:], jax.random.key_data(theirs))


@pytest.mark.parametrize("changes", [
    {},  # Adam
    {"model.cell": "gru", "model.layers": 2, "optim.name": "adagrad", "optim.global_clipnorm": 0.5,
     "optim.schedule": "warmup_cosine", "optim.warmup_steps": 2},
    {"optim.name": "sgd", "optim.momentum": 0.9, "train.early_stopping": {"patience": 1}},
])
def test_parameters_the_loss_never_reads_are_kept_out_of_the_update_bit_for_bit(changes, monkeypatch):
  """One time step from Keras' zero state never reads the recurrent kernels (`models.scan_layer`): the
  step keeps them and their optimizer state as they are, which is what the update computed anyway
  (zero gradient, zero moments, `param + -0.0`), so every number equals the full update's."""
  from jaxlstm import train as train_lib
  cfg = tiny(**{"data.problem": "damped_sine", "data.options": {"n_train": 12, "n_val": 6, "length": 1},
                "train.epochs": 4, "train.batch_size": 5, **changes})
  train = make_train(cfg, resolve(cfg))
  (group,) = plan([cfg], 1)
  solo = member(members_of(group, 0), 0)
  found = []
  spy = train_lib._unread_params
  monkeypatch.setattr(train_lib, "_unread_params", lambda *a: found.append(spy(*a)) or found[-1])
  kept = jax.jit(train.train)(solo)
  layers = [k for k in kept[0].params if k.endswith(("_0", "_1")) and "recurrent_kernel" in kept[0].params[k]]
  assert found and sorted(p[0].key for p in found[0]) == sorted(layers) and layers
  monkeypatch.setattr(train_lib, "_unread_params", lambda *a: frozenset())  # the full update, for reference
  full = jax.jit(train.train)(solo)
  for a, b in zip(jax.tree.leaves(kept), jax.tree.leaves(full), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("changes", [
    {"optim.weight_decay": 1e-2},  # the decay moves every weight
    {"model.recurrent_l2": 1e-3},  # the penalty reads the recurrent kernel
    {"data.options": {"n_train": 12, "n_val": 6, "length": 3}},  # three steps read it
])
def test_parameters_that_may_move_stay_in_the_update(changes, monkeypatch):
  from jaxlstm import train as train_lib
  cfg = tiny(**{"data.problem": "damped_sine", "data.options": {"n_train": 12, "n_val": 6, "length": 1},
                **changes})
  train = make_train(cfg, resolve(cfg))
  (group,) = plan([cfg], 1)
  found = []
  spy = train_lib._unread_params
  monkeypatch.setattr(train_lib, "_unread_params", lambda *a: found.append(spy(*a)) or found[-1])
  jax.eval_shape(train.train, member(members_of(group, 0), 0))  # traced, not compiled
  assert found == [frozenset()]
