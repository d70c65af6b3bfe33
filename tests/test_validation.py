"""Cross-validation (`data.cv`): folds as members of one compiled call, and what comes back.

Every (config, repeat, fold) is a member; folds of unequal size are padded and masked
like a last partial batch. These tests check the folds themselves (a partition per
repeat, no training after validation when walking forward), that a fold member equals
a solo run on its split (minibatches of padding only change nothing, Adam's step count
included), that folds x repeats is one compile, and the results folder.
"""
import json

import jax
import numpy as np
import pandas as pd
import pytest

import jaxlstm
from jaxlstm import compiled, data, ensemble, keys, problems, store, sweep
from jaxlstm.config import Config, ConfigError
from jaxlstm.train import arrays, make_train

N = 10  # samples: folds of 4, 3 and 3 validation samples (unequal on purpose)


def numbered(n=N):
  """A dataset whose sample i holds the value i everywhere: rows are recognisable after any gather."""
  values = np.arange(n, dtype=np.float32)
  x, y = np.repeat(values[:, None, None], 2, axis=1), values[:, None] / n
  split = 7
  return problems.Dataset(x[:split], y[:split], x[split:], y[split:], name="numbered")


def cv_config(**changes):
  base = {"model.cells": 3, "train.epochs": 3, "train.batch_size": 3, "train.shuffle": False,
          "data.cv": "kfold", "data.folds": 3}
  return Config().override({**base, **changes})


def member(members, i):
  return jax.tree.map(lambda a: a[i], members)


def own_rows(split):
  """The member's own training and validation sample ids (padding left out)."""
  train = np.asarray(split.x_train)[:, 0, 0][np.asarray(split.train_mask) > 0]
  val = np.asarray(split.x_val)[:, 0, 0][np.asarray(split.val_mask) > 0]
  return train.astype(int), val.astype(int)


def fold_rows(config, dataset, repeats):
  """`[repeats][folds]` (train ids, val ids) as the members cut them inside the program."""
  group = ensemble.plan([config], repeats)[0]
  program = make_train(config, dataset)
  members = ensemble.members_of(group, seed=0)
  cut = jax.jit(program.member_data)
  folds = group.folds
  return [[own_rows(cut(arrays(dataset), member(members, r * folds + f))) for f in range(folds)]
          for r in range(repeats)]


@pytest.mark.parametrize("scheme", ["kfold", "blocked"])
def test_every_sample_is_validated_exactly_once_per_repeat(scheme):
  config = cv_config(**{"data.cv": scheme})
  dataset = data.resolve(config, numbered())
  rows = fold_rows(config, dataset, repeats=2)
  for repeat in rows:
    validated = np.concatenate([val for _, val in repeat])
    assert sorted(validated) == list(range(N))  # a partition: each sample once
    assert sorted(len(val) for _, val in repeat) == [3, 3, 4]
    for train, val in repeat:
      assert sorted(np.concatenate([train, val])) == list(range(N)) and not set(train) & set(val)
  if scheme == "kfold":  # each repeat shuffles with its own split key; its folds share it
    assert [list(v) for _, v in rows[0]] != [list(v) for _, v in rows[1]]
  else:  # contiguous, in sample order, the same for every repeat
    assert [list(v) for _, v in rows[0]] == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]] == [list(v) for _, v in rows[1]]


@pytest.fixture(scope="module")
def kfold_run():
  config = cv_config()
  compiled.clear()
  ens = jaxlstm.fit(config, numbered(), repeats=2, seed=0)
  return config, ens


def test_folds_times_repeats_is_one_compile(kfold_run):
  _, ens = kfold_run
  assert ens.timings["compiles"] == 1  # 2 repeats x 3 folds = 6 members, one program
  assert ens.folds == 3 and ens.fold_history["val_loss"].shape == (2, 3, 3)
  assert ens.history["val_loss"].shape == (2, 3)
  jax.tree.map(lambda leaf: (leaf.shape[:2] == (2, 3)) or pytest.fail(f"params leaf {leaf.shape}"), ens.params)
  # The repeat's curve is the mean of its folds' (none stopped early).
  np.testing.assert_allclose(ens.history["val_loss"], ens.fold_history["val_loss"].mean(axis=1), rtol=1e-6)
  assert ens.predict(numbered().x_val).shape == (2, 3, 3, 1)


def test_a_fold_member_equals_a_solo_run_on_its_split(kfold_run):
  # Unshuffled minibatches of 3: the 7-sample folds take batches of 3, 3, 1 and the
  # 6-sample fold 3, 3 and then one of padding only, which must not move the weights
  # or Adam's step count. Member (repeat 1, fold f) against a plain run on that split.
  config, ens = kfold_run
  dataset = data.resolve(config, numbered())
  group = ensemble.plan([config], 2)[0]
  members = ensemble.members_of(group, seed=0)
  program = make_train(config, dataset)
  sizes = set()
  for fold in range(3):
    lane = member(members, 1 * 3 + fold)
    split = jax.jit(program.member_data)(arrays(dataset), lane)
    train, val = own_rows(split)
    pooled_x = np.concatenate([dataset.x_train, dataset.x_val])
    pooled_y = np.concatenate([dataset.y_train, dataset.y_val])
    solo_data = problems.Dataset(pooled_x[train], pooled_y[train], pooled_x[val], pooled_y[val])
    if len(train) in sizes:
      continue  # one solo program per training size is enough
    sizes.add(len(train))
    solo_config = config.override({"data.cv": "none", "data.folds": 5})
    solo = make_train(solo_config, solo_data)
    state, history = jax.jit(solo.train)(lane._replace(fold=None))
    for name, values in history.items():
      np.testing.assert_allclose(ens.fold_history[name][1, fold], values, rtol=1e-5, atol=1e-6, err_msg=name)
    # Equal weights after 3 epochs also say Adam's bias correction saw the same step count.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a[1, fold], b, rtol=1e-5, atol=1e-6),
                 ens.params, jax.device_get(state.params))
  assert sizes == {6, 7}  # both a full and a padded fold were compared


def test_folds_draw_their_own_init_and_share_the_repeats_split_key():
  config = cv_config()
  folded = keys.group_keys(0, [config], 2, folds=3)
  plain = keys.group_keys(0, [config], 2)
  raw = lambda k: np.asarray(jax.random.key_data(k))
  init = raw(folded.init).reshape(2, 3, 2)
  assert len({tuple(k) for k in init.reshape(-1, 2)}) == 6  # every fold of every repeat its own weights
  np.testing.assert_array_equal(init[1, 2], raw(jax.random.fold_in(plain.init[1], 2)))
  split = raw(folded.split).reshape(2, 3, 2)
  np.testing.assert_array_equal(split[1], np.broadcast_to(raw(plain.split)[1], (3, 2)))  # one partition per repeat


def write_ramp(path, rows=60):
  """A CSV series whose value is its own time index: every window says where it sits in time."""
  pd.DataFrame({"t": np.arange(rows, dtype=float) + 1.0}).to_csv(path, index=False)
  return path


def test_rolling_folds_never_train_on_a_row_after_a_validation_row(tmp_path):
  path = write_ramp(tmp_path / "ramp.csv")
  config = Config().override({
      "data.problem": "csv", "data.options": {"path": str(path), "column": "t", "n_in": 4, "n_out": 2,
                                               "val_fraction": 0.0},
      "data.cv": "rolling", "data.folds": 4, "data.horizon": 5, "data.min_train": 10,
      "model.cells": 2, "train.epochs": 1, "train.batch_size": 0})
  dataset = data.resolve(config)
  folds = data.fold_layout(config, 55, overlap=1)
  # Statistics (here none) are fitted on the samples every fold trains on: the first fold's.
  assert dataset.x_train.shape[0] == folds.train_count[0] == 55 - 4 * 5 - 1
  x_all = np.concatenate([dataset.x_train, dataset.x_val])
  y_all = np.concatenate([dataset.y_train, dataset.y_val])
  group = ensemble.plan([config], 1)[0]
  program = make_train(config, dataset)
  members = ensemble.members_of(group, seed=0)
  cut = jax.jit(program.member_data)
  ends = []
  for fold in range(4):
    split = cut(arrays(dataset), member(members, fold))
    n_train, n_val = int(np.sum(split.train_mask)), int(np.sum(split.val_mask))
    train_y = np.asarray(split.y_train)[:n_train]
    val_x, val_y = np.asarray(split.x_val)[:n_val], np.asarray(split.y_val)[:n_val]
    # Every value a training sample holds (inputs and both target steps) precedes every
    # validation target: the window before the origin, whose 2nd step is the first
    # validation target, is purged.
    assert np.asarray(split.x_train)[:n_train].max() < val_y.min()
    assert train_y.max() < val_y.min()
    assert n_val == 5 and n_train == folds.train_count[fold]
    np.testing.assert_array_equal(val_x, x_all[folds.val[fold]])
    ends.append(val_y.max())
  assert ends == sorted(ends) and ends[-1] == y_all.max()  # origins walk forward and tile the end


def test_cv_config_fields_are_checked_before_anything_compiles():
  for changes, message in [
      ({"data.folds": 3}, "data.folds = 3 is not allowed: it applies to cross-validation"),
      ({"data.cv": "kfold", "data.horizon": 2}, "data.horizon = 2 .*data.cv = 'rolling' only"),
      ({"data.cv": "kfold", "data.folds": 1}, "data.folds = 1 .*>= 2"),
      ({"data.cv": "blocked", "data.validation_split": 0.2}, "set data.validation_split = 0"),
      ({"data.cv": "kfol"}, "Did you mean 'kfold'"),
  ]:
    with pytest.raises(ConfigError, match=message):
      Config().override(changes)
  with pytest.raises(ConfigError, match="needs at least 11 samples, but the data have 10"):
    data.resolve(cv_config(**{"data.cv": "rolling", "data.folds": 3, "data.horizon": 3, "data.min_train": 2}),
                 numbered())
  with pytest.raises(ConfigError, match="data.folds = 12 needs at least 12 samples"):
    data.resolve_all([cv_config(**{"data.folds": 12})], numbered())


def test_summarise_folds_carries_a_stopped_fold_and_ends_when_all_stopped():
  config = Config()
  values = np.array([[[4.0, 3.0, 2.0, 1.0], [5.0, 4.0, np.nan, np.nan]],
                     [[4.0, 3.0, np.nan, np.nan], [6.0, np.nan, np.nan, np.nan]]])
  stopped = np.array([[-1, 1], [1, 0]])
  out = ensemble.summarise_folds(config, {"val_loss": values}, stopped, np.zeros((2, 2)), -np.ones((2, 2)))
  # Repeat 0: fold 1 stopped at epoch 1 and counts with 4.0 afterwards.
  np.testing.assert_allclose(out["history"]["val_loss"][0], [4.5, 3.5, 3.0, 2.5])
  # Repeat 1: every fold stopped, the last at epoch 1: the curve ends there.
  np.testing.assert_allclose(out["history"]["val_loss"][1], [5.0, 4.5, np.nan, np.nan])
  assert out["stopped_epoch"].tolist() == [-1, 1] and out["best_epoch"].tolist() == [3, 1]
  # The final value of a repeat is the mean of its folds' final values.
  final = ensemble.Ensemble(config, out["history"], None, out["stopped_epoch"], out["best_epoch"],
                            np.zeros(2, bool), -np.ones(2, int), 0, np.arange(2), 1).final("val_loss")
  np.testing.assert_allclose(final, [(1.0 + 4.0) / 2, (3.0 + 6.0) / 2])


def test_kfold_through_the_cli_scores_the_mean_of_the_folds(tmp_path, capsys):
  path = tmp_path / "series.csv"
  t = np.arange(80)
  pd.DataFrame({"temp": 10 + np.sin(t / 6.0) + 0.02 * t}).to_csv(path, index=False)
  out = tmp_path / "run"
  code = sweep.main(["--data", str(path), "--column", "temp", "--set", "data.options.n_in=5",
                     "--set", "data.options.val_fraction=0", "--set", "data.cv=kfold", "--set", "data.folds=4",
                     "--set", "model.cells=4", "--repeats", "2", "--epochs", "2", "--out", str(out)])
  assert code == 0, capsys.readouterr().err
  assert "2 repeats x 4 folds = 8 members" in capsys.readouterr().err
  scores = pd.read_csv(out / "scores.csv")
  folds = scores[[f"final_val_loss_fold{f}" for f in range(4)]].to_numpy()
  np.testing.assert_allclose(scores["final_val_loss"], folds.mean(axis=1), rtol=1e-12)
  summary = pd.read_csv(out / "summary.csv")
  np.testing.assert_allclose(summary["mean"], folds.mean(axis=1).mean(), rtol=1e-12)
  report = (out / "report.md").read_text()
  assert "- validation: 4-fold cross-validation over all 75 samples" in report
  manifest = json.loads((out / "manifest.json").read_text())
  (config_id,) = manifest["study"]["configs"]
  assert manifest["configs"][config_id]["folds"] == 4
  run = store.load_run(out)
  ens = run.ensemble(config_id)
  assert ens.folds == 4 and ens.fold_history["val_loss"].shape == (2, 4, 2)
  np.testing.assert_allclose(ens.fold_history["val_loss"][:, :, -1], folds, rtol=1e-6)
  # More repeats extend the folder, per-fold results included; the first two stay as they were.
  code = sweep.main(["--data", str(path), "--column", "temp", "--set", "data.options.n_in=5",
                     "--set", "data.options.val_fraction=0", "--set", "data.cv=kfold", "--set", "data.folds=4",
                     "--set", "model.cells=4", "--repeats", "3", "--epochs", "2", "--out", str(out), "--quiet"])
  assert code == 0
  grown = pd.read_csv(out / "scores.csv")
  pd.testing.assert_frame_equal(grown.iloc[:2], scores)
  assert store.load_folds(out, config_id)["history"]["val_loss"].shape == (3, 4, 2)


def test_cv_from_a_toml_file(tmp_path):
  from jaxlstm import study as study_lib
  path = tmp_path / "study.toml"
  path.write_text('[data]\nproblem = "damped_sine"\ncv = "blocked"\nfolds = 3\n'
                  '[grid]\n"data.difference" = [[], [1]]\n')
  study = study_lib.make_study(sweep.build_parser().parse_args(["--config", str(path)]))
  assert [c.data.cv for c in study.configs] == ["blocked", "blocked"]
  assert [c.data.difference for c in study.configs] == [(), (1,)]
  grid = study_lib.parse_grid_arg("data.difference=none/1/1,12")
  assert grid == ("data.difference", [(), (1,), (1, 12)])
