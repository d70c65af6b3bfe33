"""Early stopping, ReduceLROnPlateau, epoch chunks and padded groups inside the vectorised engine.

The per-seed state machines are tested against Keras in test_early_stopping.py;
here each seed of a real vectorised fit must stop where `replay` says for its
own history (DESIGN §4).
"""
import copy

import jax
import numpy as np
import pytest

import jaxlstm
from jaxlstm import compiled, early_stopping
from jaxlstm.config import Config
from jaxlstm.ensemble import plan, run_group

BASE = {"model.cells": 4, "train.epochs": 24, "train.batch_size": 2, "optim.learning_rate": 0.03}
STOPPING = {"monitor": "val_loss", "patience": 2, "min_delta": 1e-4, "restore_best_weights": True}


def config(**changes) -> Config:
  return Config().override({**BASE, **changes})


@pytest.fixture(scope="module")
def stopped():
  cfg = config(**{"train.early_stopping": STOPPING})
  (group,) = plan([cfg], 8)
  (ens,), info = run_group(group, seed=0, epoch_chunk=4)
  return cfg, ens, info


def test_each_seed_stops_where_replay_says(stopped):
  cfg, ens, _ = stopped
  assert (ens.stopped_epoch >= 0).sum() >= 2, "the fixture should make some seeds stop"
  for i in range(ens.repeats):
    values = ens.history["val_loss"][i]
    ran = int(np.isfinite(values).sum())
    expected = early_stopping.replay(values[:ran], **STOPPING)
    got_stop = None if ens.stopped_epoch[i] < 0 else int(ens.stopped_epoch[i])
    assert got_stop == expected["stopped_epoch"], i
    assert expected["epochs_run"] == ran
    assert int(ens.best_epoch[i]) == expected["restored_epoch"]
    assert len(ens.keras_history(i)["loss"]) == ran
    assert np.isnan(values[ran:]).all()


def test_restore_best_weights_gives_the_best_epochs_params(stopped):
  cfg, ens, _ = stopped
  ds = jaxlstm.problems.linear()
  predictions = ens.predict(ds.x_val)  # [repeats, 5, 1]
  val_loss = ((predictions - ds.y_val[None]) ** 2).mean(axis=(1, 2))
  best = ens.history["val_loss"][np.arange(ens.repeats), ens.best_epoch]
  np.testing.assert_allclose(val_loss, best, rtol=1e-4, atol=1e-7)


def test_chunked_equals_unchunked(stopped):
  cfg, ens, info = stopped
  (group,) = plan([cfg], 8)
  (whole,), whole_info = run_group(group, seed=0, epoch_chunk=cfg.train.epochs)
  assert whole_info.epoch_chunks == 1
  for name in ens.history:
    np.testing.assert_allclose(ens.history[name], whole.history[name], rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(ens.stopped_epoch, whole.stopped_epoch)
  # The chunked run stops calling once every seed has stopped, never before.
  expected_chunks = int(ens.stopped_epoch.max()) // 4 + 1 if (ens.stopped_epoch >= 0).all() else 6
  assert info.epoch_chunks == expected_chunks


def test_all_seeds_stopping_ends_the_run_at_a_chunk_boundary():
  # patience 0 with a huge min_delta: every seed stops at epoch 1.
  cfg = config(**{"train.early_stopping": {"patience": 0, "min_delta": 10.0}})
  (group,) = plan([cfg], 4)
  (ens,), info = run_group(group, seed=0, epoch_chunk=4)
  np.testing.assert_array_equal(ens.stopped_epoch, 1)
  assert info.stopped_early and info.epoch_chunks == 1
  assert np.isnan(ens.history["loss"][:, 2:]).all() and np.isfinite(ens.history["loss"][:, :2]).all()


class MemoryCheckpointer:
  """Keeps the last saved state; `crash_after` simulates a kill after that many saves."""

  def __init__(self, crash_after=None):
    self.saved, self.saves, self.crash_after = None, 0, crash_after

  def restore(self):
    return copy.deepcopy(self.saved)

  def save(self, epoch, states, history):
    self.saved = (epoch, jax.device_get(states), {k: np.array(v) for k, v in history.items()})
    self.saves += 1
    if self.crash_after is not None and self.saves >= self.crash_after:
      raise KeyboardInterrupt("simulated kill")


def test_resume_from_mid_run_state_is_bit_identical():
  cfg = config(**{"train.reduce_lr": {"patience": 1, "factor": 0.5}})
  (group,) = plan([cfg], 3)
  (uninterrupted,), _ = run_group(group, seed=0, epoch_chunk=6)
  checkpointer = MemoryCheckpointer(crash_after=2)
  with pytest.raises(KeyboardInterrupt):
    run_group(group, seed=0, epoch_chunk=6, checkpointer=checkpointer)
  assert checkpointer.saved[0] == 12
  checkpointer.crash_after = None
  (resumed,), info = run_group(group, seed=0, epoch_chunk=6, checkpointer=checkpointer)
  assert info.epoch_chunks == 2  # only the remaining 12 epochs ran
  for name in uninterrupted.history:
    np.testing.assert_array_equal(resumed.history[name], uninterrupted.history[name])
  same = jax.tree.map(np.array_equal, resumed.params, uninterrupted.params)
  assert all(jax.tree.leaves(same))


def test_reduce_lr_on_plateau_matches_replay_and_is_recorded():
  cfg = config(**{"train.reduce_lr": {"patience": 1, "factor": 0.5, "min_delta": 1e-3}})
  ens = jaxlstm.fit(cfg, repeats=4, seed=1)
  lrs = ens.history["learning_rate"]
  assert lrs[:, 0] == pytest.approx(0.03)
  assert (lrs[:, -1] < 0.03).any()
  for i in range(4):
    expected = early_stopping.replay_reduce_lr(ens.history["val_loss"][i], 0.03, patience=1, factor=0.5,
                                               min_delta=1e-3)
    np.testing.assert_allclose(lrs[i], expected, rtol=1e-6)


def test_learning_rate_history_is_the_rate_applied_with_a_schedule():
  # Cosine to alpha over 40 steps, 3 updates per epoch (5 samples, batch 2), and
  # ReduceLROnPlateau halving the base rate: epoch e logs the rate its last update
  # (step 3e + 2) applied, base_e * cosine(3e + 2); the plateau decisions still
  # follow the base rate (replay_reduce_lr on the same val_loss).
  alpha, decay_steps, steps = 0.1, 40, 3
  cfg = config(**{"optim.schedule": "cosine", "optim.decay_steps": decay_steps, "optim.alpha": alpha,
                  "train.reduce_lr": {"patience": 1, "factor": 0.5, "min_delta": 1e-3}})
  ens = jaxlstm.fit(cfg, repeats=2, seed=1)
  lrs = ens.history["learning_rate"]
  last_step = np.arange(cfg.train.epochs) * steps + steps - 1
  cosine = alpha + (1 - alpha) * 0.5 * (1 + np.cos(np.pi * np.minimum(last_step, decay_steps) / decay_steps))
  for i in range(2):
    base = early_stopping.replay_reduce_lr(ens.history["val_loss"][i], 0.03, patience=1, factor=0.5,
                                           min_delta=1e-3)
    assert base[-1] < 0.03  # the plateau reduced the base rate
    np.testing.assert_allclose(lrs[i], base.astype(np.float64) * cosine, rtol=1e-6)
  assert lrs[0, 0] == pytest.approx(0.03 * (alpha + (1 - alpha) * 0.5 * (1 + np.cos(np.pi * 2 / 40))))


def test_padded_cells_group_compiles_once_and_equals_unpadded_runs():
  configs = jaxlstm.expand_grid(Config().override({**BASE, "train.epochs": 10}), {"model.cells": [1, 3, 5]})
  groups = plan(configs, 3)
  assert len(groups) == 1 and groups[0].padded and groups[0].cells == 5
  compiled.clear()  # count this group's compile, not a program an earlier test left in the cache
  ensembles, info = run_group(groups[0], seed=0)
  assert info.compiles == 1
  for cfg, ens in zip(configs, ensembles):
    alone = jaxlstm.fit(cfg, repeats=3, seed=0)
    for name in alone.history:
      np.testing.assert_allclose(ens.history[name], alone.history[name], rtol=1e-5, atol=1e-6)
    shapes = jax.tree.map(lambda a, b: a.shape == b.shape, ens.params, alone.params)
    assert all(jax.tree.leaves(shapes))  # unpadded back to the config's own width
    close = jax.tree.map(lambda a, b: np.allclose(a, b, rtol=1e-5, atol=1e-6), ens.params, alone.params)
    assert all(jax.tree.leaves(close))


def test_epochs_run_counts_to_the_stop_epoch(stopped):
  cfg, ens, _ = stopped
  expected = np.where(ens.stopped_epoch >= 0, ens.stopped_epoch + 1, cfg.train.epochs)
  np.testing.assert_array_equal(ens.epochs_run, expected)
  np.testing.assert_array_equal(ens.epochs_run, np.isfinite(ens.history["loss"]).sum(axis=1))
