"""Models as users write them (issue 11): per-layer widths, hidden Dense layers, per-layer options, masking.

Config normalisation and ids, one-line errors, the `--grid` syntax for list-valued
fields, exact zero-padding of layers of different widths (one compile per depth),
and Keras-style masking (padded sequences give the unpadded results, masked steps
get no gradient). The Keras-backed checks live in `test_keras_reference.py`.
Compiled work is shared through module-scoped fixtures.
"""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlstm
from conftest import count_traces
from jaxlstm import compiled, prep, problems, sweep
from jaxlstm import study as study_lib
from jaxlstm.config import Config, ConfigError, ModelConfig, parse_value
from jaxlstm.ensemble import members_of, plan, plan_calls, run_group
from jaxlstm.models import Network, Recurrent, Widths, pad_params, penalty, unpad_params, widths_of
from jaxlstm.train import make_train, member_hparams

RTOL, ATOL = 1e-5, 1e-6


def random_params(net, x, seed=0):
  """N(0, 0.5^2) weights in the network's parameter structure (no init compile)."""
  shapes = jax.eval_shape(net.init, jax.random.key(0), jnp.asarray(x, jnp.float32))["params"]
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: (0.5 * rng.normal(size=s.shape)).astype(np.float32), shapes)


# ----------------------------------------------------------------------------- config: widths and ids
def test_equal_widths_are_stored_as_cells_and_layers_with_the_old_id():
  shorthand = Config().override({"model.cells": 10, "model.layers": 2})
  listed = Config().override({"model.units": [10, 10]})
  assert listed == shorthand and listed.config_id == shorthand.config_id
  assert listed.model.units == () and listed.model.widths == (10, 10)
  assert "units" not in listed.identity()["model"]  # a field added later, at its default
  assert Config().model.widths == (10,) and Config().model.cells == 10 and Config().model.layers == 1
  # The encoder-decoder's decoder counts: units = [50, 50] is cells 50 with one encoder layer.
  ed = Config().override({"model.architecture": "encoder_decoder", "model.cells": 50})
  assert ed.override({"model.units": [50, 50]}).config_id == ed.config_id
  assert ed.model.widths == (50, 50)


def test_unequal_units_derive_cells_and_layers_and_enter_the_id():
  cfg = Config().override({"model.units": [128, 64]})
  assert cfg.model.widths == (128, 64) and cfg.model.layers == 2 and cfg.model.cells == 128
  assert cfg.identity()["model"]["units"] == [128, 64]
  assert Config.from_dict(cfg.to_dict()) == cfg  # round trip through configs/<id>.json
  # An override of units re-derives depth and width unless it sets them too.
  assert cfg.override({"model.units": [64]}).model.widths == (64,)
  assert cfg.override({"model.units": [32, 32, 32]}).model.layers == 3
  assert cfg.override({"model.architecture": "encoder_decoder"}).model.layers == 1
  assert cfg.override({"model.units": [75, 50], "model.layers": 2}).model.widths == (75, 50)
  # Back to the shorthand: units = [] keeps the derived cells x layers.
  assert cfg.override({"model.units": []}).model.widths == (128, 128)


def test_per_layer_values_accept_a_scalar_or_one_per_layer():
  cfg = Config().override({"model.units": [8, 4], "model.dropout": [0.1, 0.3], "model.activation": "tanh,relu",
                           "model.kernel_l2": [0.0, 0.01]})
  m = cfg.model
  assert m.layer_values("dropout") == (0.1, 0.3) and m.layer_values("recurrent_dropout") == (0.0, 0.0)
  assert m.activation == ("tanh", "relu") and m.uses_dropout and m.uses_penalty
  same = Config().override({"model.layers": 2, "model.dropout": [0.2, 0.2]})
  assert same.model.dropout == 0.2 and same == Config().override({"model.layers": 2, "model.dropout": 0.2})
  hp = member_hparams(cfg)
  np.testing.assert_allclose(hp["dropout"], [0.1, 0.3])
  np.testing.assert_allclose(hp["kernel_l2"], [0.0, 0.01])
  np.testing.assert_allclose(member_hparams(same)["dropout"], [0.2, 0.2])  # one shape for scalars and lists


BAD_CONFIGS = [
    ({"model.units": [128, 64], "model.layers": 3}, r"^model\.layers = 3 contradicts model\.units = \[128, 64\]"),
    ({"model.units": [128, 64], "model.cells": 20}, r"^model\.cells = 20 contradicts model\.units = \[128, 64\]"),
    ({"model.units": [128, 0]}, r"^model\.units = \[128, 0\] is not allowed: give one width >= 1 per recurrent layer"),
    ({"model.dense": [32, 0]}, r"^model\.dense = \[32, 0\] is not allowed: give hidden Dense widths >= 1"),
    ({"model.units": [8, 4], "model.dropout": [0.1, 0.2, 0.3]},
     r"^model\.dropout = \[0\.1, 0\.2, 0\.3\] is not allowed: give one value per recurrent layer \(2: widths \[8, 4\]\)"),
    ({"model.activation": ["tanh", "relu"]}, r"^model\.activation = \['tanh', 'relu'\] is not allowed: give one value"),
    ({"model.units": [8, 4], "model.activation": ["tanh", "swish"]}, r"^model\.activation = 'swish' is not allowed"),
    ({"model.dense_dropout": 0.2}, r"^model\.dense_dropout = 0\.2 is not allowed: .* model\.dense is empty"),
    ({"model.architecture": "cnn_lstm", "model.mask_value": 0.0},
     r"^model\.mask_value = 0\.0 is not allowed: .*architecture 'cnn_lstm'; set model\.mask_value = none"),
    ({"model.architecture": "encoder_decoder", "model.units": [75]},
     r"^model\.units = \[75\] is not allowed: architecture 'encoder_decoder' needs the encoder width\(s\) then"),
    ({"model.dense_activation": "swish"}, r"^model\.dense_activation = 'swish' is not allowed"),
]


@pytest.mark.parametrize("changes,message", BAD_CONFIGS, ids=[str(i) for i in range(len(BAD_CONFIGS))])
def test_bad_layer_configs_fail_with_one_line_naming_field_and_fix(changes, message):
  with pytest.raises(ConfigError, match=message) as info:
    Config().override(changes)
  assert "\n" not in str(info.value)


def test_setting_cells_or_layers_against_existing_units_names_both():
  cfg = Config().override({"model.units": [8, 4]})
  with pytest.raises(ConfigError, match=r"^model\.layers = 3 contradicts model\.units = \[8, 4\]"):
    cfg.override({"model.layers": 3})
  with pytest.raises(ConfigError, match=r"^model\.cells = 6 contradicts model\.units = \[8, 4\]"):
    cfg.override({"model.cells": 6})
  with pytest.raises(ConfigError, match=r"^model\.layers = 1 contradicts model\.units = \[8, 4\]"):
    ModelConfig(units=(8, 4), layers=1)


def test_bad_layer_input_through_the_cli_exits_2_and_writes_nothing(tmp_path, capsys):
  cases = [["--set", "model.units=8,0"], ["--set", "model.units=8,4", "--set", "model.layers=3"],
           ["--set", "model.units=8,4", "--grid", "model.dropout=0.1,0.2/0.1,0.2,0.3"],
           ["--set", "model.mask_value=0", "--set", "model.architecture=cnn_lstm"],
           ["--grid", "model.dense=32//16"], ["--grid", "model.units=8,x"]]
  for i, args in enumerate(cases):
    out = tmp_path / str(i)
    assert sweep.main([*args, "--repeats", "2", "--epochs", "2", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("jaxlstm.sweep: error: ") and "model." in err[0], err
    assert not out.exists()


# ----------------------------------------------------------------------------- grid syntax
def test_grid_syntax_for_list_valued_fields():
  assert study_lib.parse_grid_arg("model.units=64,32/128,64/256,128,64") == (
      "model.units", [(64, 32), (128, 64), (256, 128, 64)])
  assert study_lib.parse_grid_arg("model.units=64") == ("model.units", [(64,)])
  assert study_lib.parse_grid_arg("model.dense=none/32") == ("model.dense", [(), (32,)])
  assert study_lib.parse_grid_arg("model.dropout=0,0.2") == ("model.dropout", [0.0, 0.2])  # scalars keep ","
  assert study_lib.parse_grid_arg("model.dropout=0.2,0.1/0.1") == ("model.dropout", [(0.2, 0.1), 0.1])
  assert study_lib.parse_grid_arg("train.metrics=mae/mse,mae") == ("train.metrics", [("mae", "mse"), ("mae",)])
  assert parse_value("model.units", "[128, 64]") == (128, 64) == parse_value("model.units", "128/64")
  assert parse_value("model.activation", "relu") == "relu"


def test_toml_grid_and_random_draws_over_architectures(tmp_path):
  path = tmp_path / "arch.toml"
  path.write_text('[train]\nepochs = 2\n[grid]\n"model.units" = [[8], [16, 8], [32, 16, 8]]\n'
                  '"model.dense" = [[], [4]]\n')
  args = sweep.build_parser().parse_args(["--config", str(path), "--random", "4", "--seed", "3"])
  study = study_lib.make_study(args)
  assert len(study.configs) == 4
  assert all(c.model.widths in {(8,), (16, 8), (32, 16, 8)} and c.model.dense in {(), (4,)} for c in study.configs)
  labels = study.labels()
  assert all(label.startswith("units=[") and ", dense=[" in label for label in labels.values())
  full = study_lib.make_study(sweep.build_parser().parse_args(["--config", str(path)]))
  assert len(full.configs) == 6


def test_a_units_grid_replaces_the_default_studys_cells_grid():
  args = sweep.build_parser().parse_args(["--grid", "model.units=8/16,8"])
  study = study_lib.make_study(args)
  assert study.grid == {"model.units": [(8,), (16, 8)]}
  assert [c.model.widths for c in study.configs] == [(8,), (16, 8)]
  both = ["--grid", "model.units=8/16,8", "--set", "model.layers=2"]
  with pytest.raises(study_lib.UsageError, match=r"^model\.units and model\.layers both give the recurrent widths"):
    study_lib.make_study(sweep.build_parser().parse_args(both))


# ----------------------------------------------------------------------------- padding
@pytest.mark.parametrize("cell,return_sequences", [("lstm", False), ("gru", True)])
def test_padded_units_stay_zero_and_get_exactly_zero_gradients(cell, return_sequences):
  cfg = ModelConfig(cell=cell, units=(3, 2), dense=(2, 4), return_sequences=return_sequences)
  own, wide = widths_of(cfg), Widths((5, 4), (3, 4))
  x = np.random.default_rng(0).normal(size=(4, 6, 2)).astype(np.float32)
  params = random_params(Network(cfg, 2), x)
  padded = pad_params(params, own, wide, cell)
  wide_shapes = jax.eval_shape(Network(cfg, 2, widths=wide).init, jax.random.key(0), x)["params"]
  assert jax.tree.map(lambda a: a.shape, padded) == jax.tree.map(lambda a: a.shape, wide_shapes)
  y = np.ones((4, 6, 2) if return_sequences else (4, 2), np.float32)

  def loss(p, widths):
    return jnp.mean((Network(cfg, 2, widths=widths).apply({"params": p}, x) - y) ** 2)

  grad_fn = jax.jit(jax.value_and_grad(loss), static_argnums=1)
  value, grads = grad_fn(params, own)
  padded_value, padded_grads = grad_fn(padded, wide)
  np.testing.assert_allclose(padded_value, value, rtol=RTOL, atol=ATOL)
  # The real units' gradients are the narrow network's; the padded ones are exactly zero.
  back = unpad_params(padded_grads, own, wide, cell)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL), back, grads)
  zeroed = pad_params(back, own, wide, cell)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), padded_grads, zeroed)
  jax.tree.map(np.testing.assert_array_equal, unpad_params(padded, own, wide, cell), params)


def test_sigmoid_activations_are_not_padded():
  base = Config().override({"model.units": [4, 2], "model.dense": [3]})
  wider = base.override({"model.units": [8, 2]})
  assert len(plan([base, wider], 1)) == 1
  for changes in ({"model.activation": "sigmoid"}, {"model.dense_activation": "hard_sigmoid"},
                  {"model.dropout": 0.1}):
    assert len(plan([base.override(changes), wider.override(changes)], 1)) == 2


TINY = {"data.problem": "damped_sine", "data.options": {"n_train": 12, "n_val": 6, "length": 4, "horizon": 1},
        "model.recurrent_init": "glorot_uniform", "train.epochs": 6, "train.batch_size": 5,
        "optim.learning_rate": 0.02}
WIDTHS = [  # (units, dense): two depths with Dense(…) and one without; a width search within each
    ([3, 2], [2]), ([4, 4], [3]), ([2, 4], [3]),
    ([2], []), ([5], []),
]


@pytest.fixture(scope="module")
def width_search():
  configs = [Config().override({**TINY, "model.units": u, "model.dense": d}) for u, d in WIDTHS]
  groups = plan(configs, 3)
  compiled.clear()  # count these groups' compiles, not programs an earlier test left in the cache
  x_val = jaxlstm.data.resolve(configs[0]).x_val
  results = [run_group(g, seed=0, prepare_predict=x_val) for g in groups]
  return configs, groups, results


def test_predictions_asked_for_ahead_are_compiled_with_the_group(width_search):
  """`prepare_predict` builds each config's predict program (at its own, unpadded widths) on a
  background thread while the group compiles: predicting then traces nothing."""
  configs, _, results = width_search
  x_val = jaxlstm.data.resolve(configs[0]).x_val
  with count_traces() as traces:
    predictions = [e.predict(x_val) for group, _ in results for e in group]
  assert traces["predict_all"] == 0, traces
  assert [p.shape for p in predictions] == [(3, len(x_val), 1)] * len(configs)


def test_a_width_search_compiles_once_per_depth(width_search):
  configs, groups, results = width_search
  assert [len(g.configs) for g in groups] == [3, 2]
  assert groups[0].widths == Widths((4, 4), (3,)) and groups[0].padded
  assert groups[1].widths == Widths((5,), ()) and groups[1].padded
  assert sum(info.compiles for _, info in results) == 2
  dataset = jaxlstm.data.resolve(configs[0])
  train = make_train(groups[0].configs[0], dataset, widths=groups[0].widths)
  calls = plan_calls(groups[0], train, dataset)
  assert calls.compiles == 1
  assert calls.layouts == ((((Widths((3, 2), (2,)), 3), (Widths((4, 4), (3,)), 3), (Widths((2, 4), (3,)), 3))),)


def test_width_padded_members_equal_their_unpadded_runs(width_search):
  configs, _, results = width_search
  ensembles = {e.config.config_id: e for group, _ in results for e in group}
  for cfg in (configs[0], configs[3]):  # a narrower member of each group (recurrent and Dense layers padded)
    padded, alone = ensembles[cfg.config_id], jaxlstm.fit(cfg, repeats=3, seed=0)
    for name in alone.history:
      np.testing.assert_allclose(padded.history[name], alone.history[name], rtol=RTOL, atol=ATOL)
    same_shape = jax.tree.map(lambda a, b: a.shape == b.shape, padded.params, alone.params)
    assert all(jax.tree.leaves(same_shape))  # unpadded back to the config's own widths
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL), padded.params, alone.params)
  assert not np.allclose(ensembles[configs[0].config_id].history["loss"][0],
                         ensembles[configs[0].config_id].history["loss"][1])


# ----------------------------------------------------------------------------- per-layer options in the network
def test_per_layer_activation_and_rates_reach_their_layers():
  x = np.random.default_rng(1).normal(size=(3, 5, 2)).astype(np.float32)
  cfg = ModelConfig(units=(4, 3), activation=("relu", "tanh"), dense=(2,), dense_activation="softsign")
  net = Network(cfg, 1)
  params = random_params(net, x)
  hs = Recurrent(cfg, 4, act="relu").apply({"params": params["lstm_0"]}, x)
  hs = Recurrent(cfg, 3, act="tanh").apply({"params": params["lstm_1"]}, hs)[:, -1]
  d, head = params["dense_0"], params["head"]
  hs = jax.nn.soft_sign(hs @ d["kernel"] + d["bias"][None])
  expected = hs @ head["kernel"] + head["bias"][None]
  np.testing.assert_allclose(net.apply({"params": params}, x), expected, rtol=RTOL, atol=ATOL)
  # Per-layer dropout rates: [r, r] draws the masks of the scalar r; a layer's own rate changes only it.
  drop = ModelConfig(units=(4, 3), dropout=(0.3, 0.5), recurrent_dropout=0.2)
  dnet = Network(drop, 1)
  dparams = random_params(dnet, x)
  run = jax.jit(lambda rates: dnet.apply({"params": dparams}, x, dropout_key=jax.random.key(3), rates=rates))
  scalar = run((jnp.float32(0.3), jnp.float32(0.2), 0.0))
  np.testing.assert_allclose(run((jnp.array([0.3, 0.3]), jnp.array([0.2, 0.2]), 0.0)), scalar, rtol=RTOL, atol=ATOL)
  assert not np.allclose(run((jnp.array([0.3, 0.5]), jnp.array([0.2, 0.2]), 0.0)), scalar)


def test_per_layer_penalties_weigh_each_layer():
  x = np.zeros((2, 4, 3), np.float32)
  net = Network(ModelConfig(units=(4, 2), dense=(3,)), 1)
  params = random_params(net, x)
  hp = {"kernel_l1": np.array([0.1, 0.0]), "kernel_l2": np.array([0.0, 0.2]), "recurrent_l1": 0.0,
        "recurrent_l2": np.array([0.3, 0.4]), "bias_l1": 0.0, "bias_l2": 0.0}
  f64 = lambda layer, leaf: np.asarray(params[layer][leaf], np.float64)
  expected = (0.1 * np.abs(f64("lstm_0", "kernel")).sum() + 0.2 * (f64("lstm_1", "kernel") ** 2).sum()
              + 0.3 * (f64("lstm_0", "recurrent_kernel") ** 2).sum() + 0.4 * (f64("lstm_1", "recurrent_kernel") ** 2).sum())
  np.testing.assert_allclose(float(penalty(params, hp)), expected, rtol=1e-5)  # Dense layers carry none


def test_a_grid_of_per_layer_dropout_lists_is_one_program():
  base = Config().override({**TINY, "model.units": [4, 3], "model.recurrent_dropout": 0.1})
  configs = [base.override({"model.dropout": d}) for d in ([0.1, 0.3], 0.2, [0.4, 0.05])]
  (group,) = plan(configs, 2)
  members = members_of(group, 0)
  assert members.hparams["dropout"].shape == (6, 2)
  np.testing.assert_allclose(members.hparams["dropout"][2], [0.2, 0.2])
  assert len(plan([*configs, base.override({"model.dropout": [0.3, 0.0]})], 2)) == 2  # which layers drop is static


# ----------------------------------------------------------------------------- masking
LENGTHS = (3, 6, 6, 3)  # two lengths: each compiles its own unpadded reference


def _sequences(seed=0, features=2):
  rng = np.random.default_rng(seed)
  return [rng.normal(size=(n, features)).astype(np.float32) for n in LENGTHS]


@pytest.mark.parametrize("arch,cell,padding", [("vanilla", "lstm", "pre"), ("vanilla", "gru", "post"),
                                               ("bidirectional", "lstm", "post")])
def test_masked_padded_sequences_give_the_unpadded_outputs_and_gradients(arch, cell, padding):
  seqs = _sequences()
  x = prep.pad_sequences(seqs, maxlen=8, padding=padding, value=-1.0)
  cfg = ModelConfig(cell=cell, architecture=arch, units=(4, 3), dense=(2,), mask_value=-1.0)
  plain = ModelConfig(cell=cell, architecture=arch, units=(4, 3), dense=(2,))
  params = random_params(Network(cfg, 1), x)
  y = np.linspace(-1, 1, len(seqs), dtype=np.float32)[:, None]

  def loss(p, xs, ys, model):
    return jnp.mean((Network(model, 1).apply({"params": p}, xs) - ys) ** 2)

  grad_fn = jax.jit(jax.value_and_grad(loss), static_argnums=3)
  padded_value, padded_grads = grad_fn(params, x, y, cfg)
  values, grads = [], []
  for i, seq in enumerate(seqs):  # each sequence alone, unpadded, no masking
    v, g = grad_fn(params, seq[None], y[i:i + 1], plain)
    values.append(v)
    grads.append(g)
  np.testing.assert_allclose(padded_value, np.mean(values), rtol=RTOL, atol=ATOL)
  mean_grads = jax.tree.map(lambda *gs: np.mean(gs, axis=0), *grads)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), padded_grads, mean_grads)


def test_masked_steps_get_zero_gradient():
  x = prep.pad_sequences(_sequences(), maxlen=8, padding="post", value=0.0)
  masked = np.all(x == 0.0, axis=-1)
  cfg = ModelConfig(units=(4, 3), mask_value=0.0, return_sequences=True)
  net = Network(cfg, 1)
  params = random_params(net, x)
  y = np.ones((4, 8, 1), np.float32)
  grad_x = jax.grad(lambda xs: jnp.sum((net.apply({"params": params}, xs) - y)[~masked] ** 2))(jnp.asarray(x))
  assert masked.any() and np.all(np.asarray(grad_x)[masked] == 0.0)
  assert np.all(np.abs(np.asarray(grad_x)[~masked]).sum(-1) > 0)


@pytest.fixture(scope="module")
def masked_histories():
  """Many-to-many on equal-length sequences: unpadded, and padded with 3 masked steps (junk targets).

  Both train with the same member keys (the configs' ids differ by mask_value).
  """
  from jaxlstm.data import resolve
  rng = np.random.default_rng(7)
  x = rng.normal(size=(14, 4, 2)).astype(np.float32)
  y = np.cumsum(x[..., :1], axis=1) * 0.5
  pad = lambda a, value: prep.pad_sequences(list(a), maxlen=7, padding="pre", value=value)
  cfg = Config().override({"model.units": [4, 3], "model.dense": [3], "model.return_sequences": True,
                           "model.recurrent_init": "glorot_uniform", "train.epochs": 5, "train.batch_size": 4,
                           "train.metrics": ["mae"], "optim.learning_rate": 0.02})
  plain = problems.Dataset(x[:10], y[:10], x[10:], y[10:], name="seq")
  padded = problems.Dataset(pad(x[:10], 0.0), pad(y[:10], 5.0), pad(x[10:], 0.0), pad(y[10:], 5.0), name="seq")
  (group,) = plan([cfg], 2)
  members = members_of(group, 0)
  out = []
  for config, data in ((cfg, plain), (cfg.override({"model.mask_value": 0.0}), padded)):
    program = make_train(config, resolve(config, data))
    out.append(jax.jit(jax.vmap(program.train))(members))
  return out


def test_masked_padded_sequences_train_like_the_unpadded_ones(masked_histories):
  (plain_state, unpadded), (padded_state, padded) = masked_histories
  assert set(padded) == {"loss", "val_loss", "mae", "val_mae"}
  for name in unpadded:
    np.testing.assert_allclose(padded[name], unpadded[name], rtol=1e-5, atol=1e-6, err_msg=name)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               padded_state.params, plain_state.params)


def test_masking_is_shown_and_counted_like_keras():
  from jaxlstm.models import layer_table
  rows = layer_table(ModelConfig(units=(6, 4), dense=(5,), dense_dropout=0.1, mask_value=0.0), (7, 3), 2)
  assert [(r["name"], r["type"], r["output_shape"]) for r in rows] == [
      ("masking", "Masking", (None, 7, 3)), ("lstm_0", "LSTM", (None, 7, 6)), ("lstm_1", "LSTM", (None, 4)),
      ("dense_0", "Dense", (None, 5)), ("dropout_0", "Dropout", (None, 5)), ("head", "Dense", (None, 2))]


# ----------------------------------------------------------------------------- the architecture study
def test_architecture_study_dry_run_compiles_once_per_depth_and_dense(capsys):
  module = study_lib.experiment_module("architecture")
  configs = jaxlstm.expand_grid(module.get_config(), module.get_grid())
  shapes = {(len(c.model.widths), bool(c.model.dense)) for c in configs}
  assert len(configs) > len(shapes) == 6
  assert sweep.main(["--experiment", "architecture", "--repeats", "30", "--dry-run"]) == 0
  text = capsys.readouterr().out
  assert f"plan: {len(configs)} configs, 6 groups, 6 compiles, {30 * len(configs)} members" in text
  assert text.count("(narrower configs zero-padded)") == 6


def test_a_padded_group_split_by_memory_keeps_one_layout_and_its_numbers(width_search):
  configs, groups, results = width_search
  compiled.clear()
  chunked, info = run_group(groups[0], seed=0, max_members_per_call=4)
  assert info.member_chunks == 3 and info.compiles == 1  # each call: one repeat of each of the 3 configs
  for whole, part in zip(results[0][0], chunked):
    for name in whole.history:
      np.testing.assert_allclose(part.history[name], whole.history[name], rtol=RTOL, atol=ATOL)
