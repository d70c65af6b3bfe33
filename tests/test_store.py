"""The results folder: atomic files, leftovers, tables, checkpoints and exact resume."""
import json
import os
import re
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxlstm import compiled, ensemble, report, runner, store, tables
from jaxlstm.config import Config, expand_grid
from jaxlstm.data import resolve
from jaxlstm.train import make_train


@pytest.fixture
def xla_cache(tmp_path_factory, monkeypatch, restore_cache_flags):
  """The persistent compilation cache in a session temp dir; jax's settings restored after."""
  path = tmp_path_factory.getbasetemp() / "xla-cache"
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(path))
  compiled.configure_persistent_cache(True)
  return path


def tiny_config(**changes) -> Config:
  return Config().override({"train.epochs": 3, "train.batch_size": 0, "train.shuffle": False,
                            "model.cells": 2, **changes})


# ---------------------------------------------------------------------------
# Files.


def test_write_bytes_is_atomic_and_skips_identical_content(tmp_path):
  path = tmp_path / "sub" / "table.csv"
  assert store.write_bytes(path, b"a,b\n1,2\n")
  before = path.stat().st_mtime_ns
  os.utime(path, ns=(before - 10**9, before - 10**9))  # make a rewrite visible in the mtime
  assert not store.write_bytes(path, b"a,b\n1,2\n")
  assert path.stat().st_mtime_ns == before - 10**9
  assert store.write_bytes(path, b"a,b\n3,4\n")
  assert path.read_bytes() == b"a,b\n3,4\n"
  assert sorted(p.name for p in path.parent.iterdir()) == ["table.csv"]  # no temp file left


def test_clean_leftovers_removes_temp_files_and_orbax_tmp_dirs(tmp_path):
  (tmp_path / "checkpoints" / "abc.orbax-checkpoint-tmp-1234" / "d").mkdir(parents=True)
  (tmp_path / "state" / "k" / "4.orbax-checkpoint-tmp").mkdir(parents=True)
  (tmp_path / ".scores.csv.x1y2.tmp").write_text("half a table")
  (tmp_path / "plots").mkdir()
  (tmp_path / "plots" / ".tmp-abc.png").write_bytes(b"\x89PNG")
  (tmp_path / "scores.csv").write_text("kept")
  removed = store.clean_leftovers(tmp_path)
  assert removed == sorted([".scores.csv.x1y2.tmp", os.path.join("checkpoints", "abc.orbax-checkpoint-tmp-1234"),
                            os.path.join("plots", ".tmp-abc.png"),
                            os.path.join("state", "k", "4.orbax-checkpoint-tmp")])
  assert (tmp_path / "scores.csv").read_text() == "kept"
  assert not list(tmp_path.rglob("*tmp*"))


def test_clean_leftovers_leaves_alone_the_folders_it_is_told_a_live_process_writes(tmp_path):
  (tmp_path / "plots").mkdir()
  (tmp_path / "plots" / ".tmp-abc.png").write_bytes(b"\x89PNG")
  (tmp_path / ".scores.csv.x1y2.tmp").write_text("half a table")
  assert store.clean_leftovers(tmp_path, skip=("plots",)) == [".scores.csv.x1y2.tmp"]
  assert (tmp_path / "plots" / ".tmp-abc.png").is_file()


def test_write_json_keeps_values_and_puts_scalar_lists_on_one_line(tmp_path):
  obj = {"argv": ["--grid", 'a",b', "x,\ny"], "seeds": [1, 2, 3], "nested": [[1], {"k": []}]}
  store.write_json(tmp_path / "m.json", obj)
  assert store.read_json(tmp_path / "m.json") == obj
  assert '"seeds": [1, 2, 3]' in (tmp_path / "m.json").read_text()


def test_final_and_best_values_follow_stops_and_skip_nan():
  values = np.array([[3.0, 2.0, 1.0, 0.5],
                     [3.0, 1.0, 2.0, np.nan],   # stopped at epoch 2: NaN afterwards
                     [np.nan, np.nan, np.nan, np.nan]], np.float32)  # diverged from the start
  stopped = np.array([-1, 2, -1])
  np.testing.assert_array_equal(tables.final_values(values, stopped), np.array([0.5, 2.0, np.nan], np.float32))
  np.testing.assert_array_equal(tables.best_values(values, "val_loss"), np.array([0.5, 1.0, np.nan], np.float32))
  np.testing.assert_array_equal(tables.best_values(values, "val_accuracy"), np.array([3.0, 3.0, np.nan], np.float32))


def test_table_cells_round_trip_float32_exactly():
  x = np.float32(0.1) / np.float32(3.0)
  text = store.format_value(x)
  assert np.float32(float(text)) == x and len(text) < 12  # the float32's shortest form
  assert [store.format_value(v) for v in (np.float32(np.nan), np.inf, None, True, 5, 0.25)] == \
      ["nan", "inf", "", "True", "5", "0.25"]


def test_no_pickle_anywhere_in_the_shell():
  for name in ("store.py", "sweep.py", "runner.py", "study.py", "tables.py", "report.py"):
    source = (Path(store.__file__).parent / name).read_text()
    assert not re.search(r"import pickle|pickle\.loads?\(|read_pickle|allow_pickle\s*=\s*True|\beval\(", source)


# ---------------------------------------------------------------------------
# A folder written through the store API, read back with load_run.


def _write_folder(path: Path, configs, ensembles, info, repeats: int, seed: int):
  grid = {"model.cells": [c.model.cells for c in configs]}
  spec = {"experiment": "test", "base": configs[0].to_dict(), "grid": grid, "random": None,
          "repeats": repeats, "seed": seed, "configs": [c.config_id for c in configs],
          "data": {c.config_id: "x" for c in configs}}
  env = {"argv": ["test"], "time": "now", "versions": {"jax": jax.__version__}, "device": "cpu"}
  groups = [{"configs": [c.config_id for c in configs], "cells": 2, "padded": True,
             "members": len(configs) * repeats}]
  folder = store.RunFolder.create(path, study=spec, configs=configs, groups=groups, environment=env)
  folder.start_session(env)
  folder.record(0, ensembles, info)
  tables.write_all(path)
  return folder


def test_load_run_rebuilds_ensembles_that_predict_as_before(tmp_path, xla_cache):
  configs = expand_grid(tiny_config(), {"model.cells": [1, 2]})
  (group,) = ensemble.plan(configs, 2)
  ensembles, info = ensemble.run_group(group, seed=3)
  _write_folder(tmp_path, configs, ensembles, info, repeats=2, seed=3)
  report.write_report(tmp_path)

  run = store.load_run(tmp_path)
  x = np.linspace(0, 1, 7, dtype=np.float32).reshape(7, 1, 1)
  assert list(run.ensembles) == [c.config_id for c in configs]
  for before in ensembles:
    after = run.ensembles[before.config.config_id]
    assert after.config == before.config
    jax.tree.map(np.testing.assert_array_equal, after.params, before.params)
    np.testing.assert_array_equal(after.predict(x), before.predict(x))
    for name in ("stopped_epoch", "best_epoch", "diverged", "diverged_epoch", "repeat_indices"):
      np.testing.assert_array_equal(getattr(after, name), getattr(before, name))
    for metric, values in before.history.items():
      np.testing.assert_array_equal(after.history[metric], values)
    np.testing.assert_array_equal(after.final(), before.final())

  assert len(run.scores) == 4 and list(run.scores["config_id"]) == [c.config_id for c in configs for _ in range(2)]
  np.testing.assert_array_equal(run.scores["final_val_loss"].to_numpy(np.float32),
                                np.concatenate([e.final() for e in ensembles]))
  assert run.scores["stopped_epoch"].isna().all() and not run.scores["diverged"].any()
  assert list(run.summary.columns[1:9]) == ["count", "mean", "std", "min", "25%", "50%", "75%", "max"]
  assert list(run.summary.index) == [c.config_id for c in configs]
  tidy = run.histories
  assert list(tidy.columns) == ["config_id", "repeat", "epoch", "metric", "value"]
  assert len(tidy) == 2 * 2 * 2 * 3  # configs x metrics x repeats x epochs
  row = tidy[(tidy.config_id == configs[1].config_id) & (tidy.metric == "val_loss")
             & (tidy.repeat == 1) & (tidy.epoch == 2)]
  assert row["value"].item() == pytest.approx(float(ensembles[1].history["val_loss"][1, 2]), abs=0)
  assert "## Timings" in (tmp_path / "report.md").read_text()

  # Histories are plain arrays: loading never unpickles, and an object array is refused.
  with np.load(store.history_path(tmp_path, configs[0].config_id), allow_pickle=False) as npz:
    assert npz["loss"].shape == (2, 3)
  np.savez(store.history_path(tmp_path, configs[0].config_id), loss=np.array([{"x": 1}], dtype=object))
  with pytest.raises(ValueError, match="allow_pickle"):
    store.load_history(tmp_path, configs[0].config_id)


def test_load_run_refuses_a_folder_without_manifest(tmp_path):
  with pytest.raises(ValueError, match="not a jaxlstm results folder"):
    store.load_run(tmp_path)


def test_symlinked_checkpoint_is_refused(tmp_path):
  (tmp_path / "elsewhere").mkdir()
  (tmp_path / "checkpoints").mkdir()
  (tmp_path / "checkpoints" / "abc").symlink_to(tmp_path / "elsewhere")
  with pytest.raises(ValueError, match="symlink"):
    store.load_params(tmp_path, "abc")


PARAMS = {"lstm_0": {"kernel": np.arange(12, dtype=np.float32).reshape(2, 2, 3),
                     "bias": np.ones((2, 3), np.float32)},
          "head": {"kernel": np.full((2, 3, 1), -0.5, np.float32), "scale": np.asarray(2.0, np.float32)},
          "steps": np.arange(4, dtype=np.int32), "mask": np.array([True, False]),
          "wide": np.linspace(0, 1, 6000).reshape(2, 3000)}  # float64


def _files(folder: Path) -> dict[str, bytes]:
  return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_final_checkpoints_are_the_files_orbax_writes(tmp_path):
  # Written without orbax (its imports cost the sweep ~0.4 s); the reference is orbax itself,
  # with the two options our writer takes: no OCDBT database, no compression.
  import orbax.checkpoint as ocp
  store.save_params(tmp_path, "0123456789ab", PARAMS)
  ours = _files(store.checkpoint_path(tmp_path, "0123456789ab"))
  with ocp.Checkpointer(ocp.PyTreeCheckpointHandler(use_ocdbt=False, use_compression=False)) as checkpointer:
    checkpointer.save(tmp_path / "orbax", args=ocp.args.PyTreeSave(PARAMS))
  reference = _files(tmp_path / "orbax")
  assert sorted(ours) == sorted(reference)
  # Only what names the writer differs: the handler class, the timestamps, the path.
  for name in sorted(set(ours) - {"_CHECKPOINT_METADATA", "commit_success.txt"}):
    assert ours[name] == reference[name], name
  ours_meta, reference_meta = (json.loads(files["_CHECKPOINT_METADATA"]) for files in (ours, reference))
  assert list(ours_meta) == list(reference_meta)
  assert ours_meta["item_handlers"].endswith(".StandardCheckpointHandler")
  assert ours_meta["init_timestamp_nsecs"] <= ours_meta["commit_timestamp_nsecs"]


def test_final_checkpoints_restore_through_orbax_exactly(tmp_path):
  import orbax.checkpoint as ocp
  store.save_params(tmp_path, "0123456789ab", {**PARAMS, "head": {**PARAMS["head"], "scale": np.float32(2.0)}})
  restored = store.load_params(tmp_path, "0123456789ab")
  with ocp.StandardCheckpointer() as checkpointer:  # as a user would, outside jaxlstm
    by_orbax = checkpointer.restore(store.checkpoint_path(tmp_path, "0123456789ab").absolute())
  for tree in (restored, by_orbax):
    assert jax.tree.structure(tree) == jax.tree.structure(PARAMS)
    for got, want in zip(jax.tree.leaves(tree), jax.tree.leaves(PARAMS)):
      assert np.asarray(got).dtype == want.dtype and np.asarray(got).shape == want.shape
      np.testing.assert_array_equal(np.asarray(got), want)
  assert not [p for p in (tmp_path / "checkpoints").iterdir() if store.ORBAX_TMP in p.name]


@pytest.mark.parametrize("params", [{"w": [np.zeros(2)]}, {"a.b": np.zeros(2)}, {"w": np.zeros((0, 3))}],
                         ids=["list", "dotted-key", "empty"])
def test_trees_our_writer_cannot_name_go_through_orbax(tmp_path, params):
  # Orbax joins key paths with "." and refuses empty arrays: what it would write ambiguously or
  # not at all is left to it, so whatever orbax can save still saves and loads.
  try:
    store.save_params(tmp_path, "0123456789ab", params)
  except ValueError as e:
    assert "zero size" in str(e)  # orbax's own refusal
    return
  restored = store.load_params(tmp_path, "0123456789ab")
  for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(params)):
    np.testing.assert_array_equal(got, want)
  assert (store.checkpoint_path(tmp_path, "0123456789ab") / "manifest.ocdbt").exists()  # orbax's own format


# ---------------------------------------------------------------------------
# Epoch checkpoints: a killed run resumes bit for bit.


class _Killed(Exception):
  pass


class _DiesAfterSaving(store.StateCheckpointer):
  """Saves like the real one, then 'dies' right after the step `die_at` is on disk."""

  def __init__(self, directory, like, die_at):
    super().__init__(directory, like)
    self.die_at = die_at

  def save(self, epoch, states, history):
    super().save(epoch, states, history)
    if epoch == self.die_at:
      raise _Killed


def test_state_checkpoint_resume_is_bit_identical(tmp_path, xla_cache):
  cfg = tiny_config(**{"train.epochs": 6, "train.checkpoint_every": 2, "train.shuffle": True,
                       "train.batch_size": 2})
  (group,) = ensemble.plan([cfg], 2)
  program = make_train(cfg, resolve(cfg), cells=group.cells)
  like = lambda: runner.state_like(program, group, 0)  # noqa: E731
  (uninterrupted,), _ = ensemble.run_group(group, seed=0)

  directory = tmp_path / "state"
  with pytest.raises(_Killed):
    ensemble.run_group(group, seed=0, checkpointer=_DiesAfterSaving(directory, like, die_at=4))
  (directory / "6.orbax-checkpoint-tmp").mkdir()  # a save killed half-way: never trusted

  checkpointer = store.StateCheckpointer(directory, like)
  epoch, states, history = checkpointer.restore()
  assert epoch == 4 and history["loss"].shape == (2, 4)
  assert not (directory / "6.orbax-checkpoint-tmp").exists()
  checkpointer.save(4, states, history)  # an existing step is kept, not an error
  seen = []
  (resumed,), info = ensemble.run_group(group, seed=0, checkpointer=checkpointer,
                                        progress=lambda p: seen.append(p["epochs_done"]))
  assert seen == [6]  # only the last chunk was trained again
  for metric, values in uninterrupted.history.items():
    np.testing.assert_array_equal(resumed.history[metric], values)
  jax.tree.map(np.testing.assert_array_equal, resumed.params, uninterrupted.params)
  checkpointer.clear()
  assert not directory.exists()
  assert store.StateCheckpointer(directory, like).restore() is None
