"""Our optimizers and cells against the real Keras 3 (the semantics users expect, DESIGN §3).

Keras runs on its jax backend (the `test` extra pins keras 3.15.1). Each check
feeds both sides the same numbers: optimizer updates for a fixed gradient
sequence, and LSTM/GRU forward passes with the same weights.
"""
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlstm.config import Config, OptimConfig
from jaxlstm.models import Network
from jaxlstm.optim import make_optimizer

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def keras():
  if "keras" not in sys.modules:
    os.environ["KERAS_BACKEND"] = "jax"
  keras = pytest.importorskip("keras")
  if keras.backend.backend() != "jax":
    pytest.skip("these comparisons drive Keras on its jax backend")
  return keras


GRADIENTS = np.random.default_rng(0).normal(size=(6, 3, 4)).astype(np.float32)


@pytest.mark.parametrize("ours,theirs", [
    ({"name": "adam"}, ("Adam", {})),
    ({"name": "adam", "learning_rate": 0.05}, ("Adam", {"learning_rate": 0.05})),
    ({"name": "rmsprop"}, ("RMSprop", {})),
    ({"name": "rmsprop", "momentum": 0.5}, ("RMSprop", {"momentum": 0.5})),
    ({"name": "adagrad"}, ("Adagrad", {})),
    ({"name": "sgd", "learning_rate": 0.1, "momentum": 0.9}, ("SGD", {"learning_rate": 0.1, "momentum": 0.9})),
    ({"name": "sgd", "learning_rate": 0.1, "momentum": 0.9, "nesterov": True},
     ("SGD", {"learning_rate": 0.1, "momentum": 0.9, "nesterov": True})),
    ({"name": "adam", "weight_decay": 0.1}, ("Adam", {"weight_decay": 0.1})),
    ({"name": "adam", "global_clipnorm": 0.5}, ("Adam", {"global_clipnorm": 0.5})),
    ({"name": "adam", "clipvalue": 0.3}, ("Adam", {"clipvalue": 0.3})),
])
def test_optimizer_steps_match_keras(keras, ours, theirs):
  start = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
  variable = keras.Variable(start.copy())
  keras_opt = getattr(keras.optimizers, theirs[0])(**theirs[1])
  tx = make_optimizer(OptimConfig(**ours))
  params = jnp.asarray(start)
  state = tx.init(params)
  for g in GRADIENTS:
    with jax.numpy_rank_promotion("allow"):
      keras_opt.apply_gradients([(g, variable)])
    updates, state = tx.update(jnp.asarray(g), state, params)
    params = optax.apply_updates(params, updates)
  np.testing.assert_allclose(np.asarray(params), np.asarray(variable), rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("cell,return_sequences", [("lstm", False), ("lstm", True), ("gru", False)])
def test_cell_forward_matches_keras_with_the_same_weights(keras, cell, return_sequences):
  cfg = Config().override({"model.cell": cell, "model.cells": 5, "model.return_sequences": return_sequences}).model
  x = np.random.default_rng(1).normal(size=(4, 7, 3)).astype(np.float32)
  network = Network(cfg, outputs=2)
  params = network.init(jax.random.key(0), x)["params"]
  recurrent = params[f"{cell}_0"]
  layer_cls = keras.layers.LSTM if cell == "lstm" else keras.layers.GRU
  with jax.numpy_rank_promotion("allow"):  # Keras' own code broadcasts implicitly
    model = keras.Sequential([keras.Input((7, 3)), layer_cls(5, return_sequences=return_sequences),
                              keras.layers.Dense(2)])
  weights = [np.asarray(recurrent["kernel"]), np.asarray(recurrent["recurrent_kernel"])]
  if cell == "lstm":
    weights.append(np.asarray(recurrent["bias"]))
  else:  # Keras 3 GRU (reset_after): bias [2, 3 units] = input bias, recurrent bias
    weights.append(np.stack([np.asarray(recurrent["bias"]), np.asarray(recurrent["recurrent_bias"])]))
  weights += [np.asarray(params["head"]["kernel"]), np.asarray(params["head"]["bias"])]
  model.set_weights(weights)
  ours = np.asarray(network.apply({"params": params}, x))
  with jax.numpy_rank_promotion("allow"):
    theirs = np.asarray(model(x))
  np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("batch_size", [2, 5])
def test_training_history_matches_keras_fit(keras, batch_size):
  """Same initial weights, no shuffling: Keras' `fit` history equals ours epoch by epoch.

  Covers the epoch loss as Keras reports it (batch losses weighted by batch
  size, partial batch kept) and `val_loss` at each epoch end.
  """
  from jaxlstm.data import resolve
  from jaxlstm.ensemble import members_of, plan
  from jaxlstm.train import make_train

  cfg = Config().override({"model.cells": 4, "train.epochs": 4, "train.batch_size": batch_size,
                           "train.shuffle": False, "optim.learning_rate": 0.01})
  ds = resolve(cfg)
  program = make_train(cfg, ds)
  (group,) = plan([cfg], 1)
  member = jax.tree.map(lambda a: a[0], members_of(group, 0))
  params = program.init_params(member.keys.init)
  _, history = jax.jit(program.train)(member)

  with jax.numpy_rank_promotion("allow"):
    model = keras.Sequential([keras.Input((1, 1)), keras.layers.LSTM(4), keras.layers.Dense(1)])
    lstm = params["lstm_0"]
    model.set_weights([np.asarray(lstm["kernel"]), np.asarray(lstm["recurrent_kernel"]), np.asarray(lstm["bias"]),
                       np.asarray(params["head"]["kernel"]), np.asarray(params["head"]["bias"])])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    fitted = model.fit(ds.x_train, ds.y_train, batch_size=batch_size, epochs=4, shuffle=False,
                       validation_data=(ds.x_val, ds.y_val), verbose=0)
  np.testing.assert_allclose(history["loss"], fitted.history["loss"], rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(history["val_loss"], fitted.history["val_loss"], rtol=1e-4, atol=1e-7)


# ----------------------------------------------------------------------------- models as users write them (issue 11)
def _recurrent_weights(p, cell):
  """Keras' weight list of one LSTM/GRU layer from ours (GRU: the [2, 3u] bias, input row first)."""
  weights = [np.asarray(p["kernel"]), np.asarray(p["recurrent_kernel"])]
  if cell == "lstm":
    return weights + [np.asarray(p["bias"])]
  return weights + [np.stack([np.asarray(p["bias"]), np.asarray(p["recurrent_bias"])])]


def _keras_weights(params, cfg):
  """Our parameters in the order of the equivalent Keras Sequential's `get_weights()`."""
  weights = []
  for layer in range(len(cfg.widths)):
    if cfg.architecture == "bidirectional":
      weights += _recurrent_weights(params[f"forward_{layer}"], cfg.cell)
      weights += _recurrent_weights(params[f"backward_{layer}"], cfg.cell)
    else:
      weights += _recurrent_weights(params[f"{cfg.cell}_{layer}"], cfg.cell)
  for name in [f"dense_{j}" for j in range(len(cfg.dense))] + ["head"]:
    weights += [np.asarray(params[name]["kernel"]), np.asarray(params[name]["bias"])]
  return weights


def _keras_stack(keras, cfg, input_shape, outputs):
  """The Keras Sequential a tutorial writes for `cfg` (vanilla or bidirectional stacks)."""
  layer_cls = keras.layers.LSTM if cfg.cell == "lstm" else keras.layers.GRU
  layers = [keras.Input(input_shape)]
  if cfg.mask_value is not None:
    layers.append(keras.layers.Masking(cfg.mask_value))
  depth = len(cfg.widths)
  for i, width in enumerate(cfg.widths):
    layer = layer_cls(width, return_sequences=cfg.return_sequences or i < depth - 1)
    layers.append(keras.layers.Bidirectional(layer, merge_mode=cfg.merge_mode)
                  if cfg.architecture == "bidirectional" else layer)
  wrap = keras.layers.TimeDistributed if cfg.return_sequences else (lambda layer: layer)
  for width in cfg.dense:
    layers.append(wrap(keras.layers.Dense(width, activation=cfg.dense_activation)))
    if cfg.dense_dropout:
      layers.append(keras.layers.Dropout(cfg.dense_dropout))
  layers.append(wrap(keras.layers.Dense(outputs)))
  return keras.Sequential(layers)


def _keras_rows(model):
  rows = []
  for layer in model.layers:
    kind = type(layer).__name__
    if hasattr(layer, "layer"):  # TimeDistributed / Bidirectional
      kind = f"{kind}({type(layer.layer).__name__})"
    elif hasattr(layer, "forward_layer"):
      kind = f"{kind}({type(layer.forward_layer).__name__})"
    rows.append((kind, tuple(layer.output.shape), layer.count_params()))
  return rows


def _tutorial_model(keras, name):
  """(our model config, input (time, features), outputs, kwargs, the Keras model) of a tutorial's model."""
  from jaxlstm.config import ModelConfig
  L = keras.layers
  if name == "stacked_128_64_dense_32":
    return (ModelConfig(units=(128, 64), dense=(32,)), (10, 1), 1, {},
            keras.Sequential([keras.Input((10, 1)), L.LSTM(128, return_sequences=True), L.LSTM(64),
                              L.Dense(32, activation="relu"), L.Dense(1)]))
  if name == "encoder_decoder_75_50":
    # Brownlee's addition problem: "10+6+5" (8 one-hot characters of 12) -> "21" (2 characters).
    return (ModelConfig(architecture="encoder_decoder", units=(75, 50), output_activation="softmax"),
            (8, 12), 12, {"time_out": 2},
            keras.Sequential([keras.Input((8, 12)), L.LSTM(75), L.RepeatVector(2),
                              L.LSTM(50, return_sequences=True),
                              L.TimeDistributed(L.Dense(12, activation="softmax"))]))
  if name == "cnn_lstm":  # Brownlee's moving square: 50 x 50 frames
    return (ModelConfig(architecture="cnn_lstm", conv_filters=2, conv_kernel=2, pool_size=2, units=(50,),
                        output_activation="sigmoid"), (5, 2500), 1, {"frame_shape": (50, 50)},
            keras.Sequential([keras.Input((5, 50, 50, 1)),
                              L.TimeDistributed(L.Conv2D(2, (2, 2), activation="relu")),
                              L.TimeDistributed(L.MaxPooling2D(pool_size=(2, 2))), L.TimeDistributed(L.Flatten()),
                              L.LSTM(50), L.Dense(1, activation="sigmoid")]))
  masked = ModelConfig(units=(6, 4), dense=(5, 3), dense_dropout=0.2, mask_value=0.0, return_sequences=True)
  return masked, (7, 3), 2, {}, _keras_stack(keras, masked, (7, 3), 2)


TUTORIAL_MODELS = ["stacked_128_64_dense_32", "encoder_decoder_75_50", "cnn_lstm", "masked_many_to_many_dropout"]


@pytest.mark.parametrize("name", TUTORIAL_MODELS)
def test_summary_matches_keras_layers_shapes_and_counts(keras, name):
  from jaxlstm.models import layer_table, summary
  with jax.numpy_rank_promotion("allow"):
    cfg, input_shape, outputs, kwargs, model = _tutorial_model(keras, name)
    theirs = _keras_rows(model)
  rows = layer_table(cfg, input_shape, outputs, **kwargs)
  assert [(r["type"], r["output_shape"], r["params"]) for r in rows] == theirs
  text = summary(cfg, input_shape, outputs, **kwargs)
  assert text.splitlines()[-1] == f"Total params: {model.count_params():,}"
  if name == "encoder_decoder_75_50":  # the decoder is Keras' LSTM(50) after LSTM(75), not 45,300 parameters
    assert [r["params"] for r in rows if r["name"] == "decoder"] == [25_200]


@pytest.mark.parametrize("arch,cell,return_sequences,padding", [
    ("vanilla", "lstm", False, "pre"), ("vanilla", "lstm", True, "post"), ("vanilla", "gru", True, "pre"),
    ("bidirectional", "lstm", True, "post"), ("bidirectional", "lstm", True, "pre"),
    ("bidirectional", "gru", False, "post")])
def test_forward_with_widths_dense_and_masking_matches_keras(keras, arch, cell, return_sequences, padding):
  """Copied weights, variable-length sequences padded with `pad_sequences`: Keras' output, also at masked steps."""
  from jaxlstm import prep
  from jaxlstm.config import ModelConfig
  rng = np.random.default_rng(0)
  x = prep.pad_sequences([rng.normal(size=(n, 3)) for n in (3, 7, 4, 1, 5)], maxlen=7, padding=padding)
  cfg = ModelConfig(cell=cell, architecture=arch, units=(6, 4), dense=(5,), mask_value=0.0,
                    return_sequences=return_sequences)
  network = Network(cfg, outputs=2)
  shapes = jax.eval_shape(network.init, jax.random.key(0), jnp.asarray(x))["params"]
  params = jax.tree.map(lambda s: (0.5 * rng.normal(size=s.shape)).astype(np.float32), shapes)
  ours = np.asarray(network.apply({"params": params}, x))
  with jax.numpy_rank_promotion("allow"):
    model = _keras_stack(keras, cfg, (7, 3), 2)
    model.set_weights(_keras_weights(params, cfg))
    theirs = np.asarray(model(x))
  np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_masked_stacked_dense_history_matches_keras_fit(keras):
  """LSTM(5) -> LSTM(3) -> Dense(4, relu) -> Dense(1) per step on post-padded sequences, Keras `Masking`:
  `loss`, `mae`, `val_loss` and `val_mae` of `model.fit` epoch by epoch.

  The padded targets hold 9.0, so a loss that counted masked steps could not agree. The
  validation set is one batch (Keras averages its masked per-batch means; we take the
  mean over the set, the same for one batch). Training metrics are left out of the
  comparison: Keras 3.15.1's jax `fit` masks the loss and the validation metrics but not
  the training metrics (its `mae` counts the padded steps); ours exclude masked steps
  from every loss and metric (README, "Keras semantics").
  """
  from jaxlstm import prep, problems
  from jaxlstm.data import resolve
  from jaxlstm.ensemble import members_of, plan
  from jaxlstm.train import make_train

  rng = np.random.default_rng(5)
  lengths = [4, 6, 2, 5, 6, 3, 1, 6, 4, 2]
  xs = [rng.normal(size=(n, 2)) for n in lengths]
  ys = [np.cumsum(x[:, :1], axis=0) * 0.5 for x in xs]
  x = prep.pad_sequences(xs, maxlen=6, padding="post")
  y = prep.pad_sequences(ys, maxlen=6, padding="post", value=9.0)
  dataset = problems.Dataset(x[:7], y[:7], x[7:], y[7:], name="masked")
  cfg = Config().override({"model.units": [5, 3], "model.dense": [4], "model.mask_value": 0.0,
                           "model.return_sequences": True, "train.epochs": 4, "train.batch_size": 3,
                           "train.shuffle": False, "train.metrics": ["mae"], "optim.learning_rate": 0.01})
  ds = resolve(cfg, dataset)
  program = make_train(cfg, ds)
  (group,) = plan([cfg], 1)
  member = jax.tree.map(lambda a: a[0], members_of(group, 0))
  params = program.init_params(member.keys.init)
  _, history = jax.jit(program.train)(member)

  with jax.numpy_rank_promotion("allow"):
    model = _keras_stack(keras, cfg.model, (6, 2), 1)
    model.set_weights(_keras_weights(params, cfg.model))
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse", metrics=["mae"])
    fitted = model.fit(ds.x_train, ds.y_train, batch_size=3, epochs=4, shuffle=False,
                       validation_data=(ds.x_val, ds.y_val), verbose=0)
  for key in ("loss", "val_loss", "val_mae"):
    np.testing.assert_allclose(history[key], fitted.history[key], rtol=1e-4, atol=1e-7, err_msg=key)
