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
