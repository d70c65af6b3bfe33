"""The fused kernel (`model.kernel = "fused"`): equal to the scan kernel, opt-in, refused where it does not apply.

The fused time loop rounds differently (sigmoid through tanh, d U summed in
one matmul), so it is compared close, not bitwise; the default config must
keep the scan kernel's program exactly (nothing fused in its trace, same id,
same history).
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlstm
from jaxlstm import compiled
from jaxlstm.config import Config, ConfigError, ModelConfig
from jaxlstm.ensemble import program_key
from jaxlstm.models import GATES, Network, Recurrent

MEMBERS, BATCH, TIME, FEATURES, UNITS = 3, 4, 6, 3, 5
RTOL, ATOL = 1e-5, 1e-6


def _layer_inputs(cell: str, masking: bool, dropout: bool) -> dict:
  """Per-member `[members, ...]` inputs of one `Recurrent` call (masks as `Network` draws them)."""
  keys = jax.random.split(jax.random.key(0), 4)
  gates = GATES[cell]
  inputs = {"xs": jax.random.normal(keys[0], (MEMBERS, BATCH, TIME, FEATURES))}
  if masking:  # some steps skipped, a different pattern per member
    inputs["step_mask"] = jax.random.bernoulli(keys[1], 0.7, (MEMBERS, BATCH, TIME))
  if dropout:  # recurrent dropout on: one input mask and one state mask per gate (Keras' implementation 1)
    inputs["input_mask"] = jax.random.bernoulli(keys[2], 0.8, (MEMBERS, gates, BATCH, FEATURES)) / 0.8
    inputs["state_mask"] = jax.random.bernoulli(keys[3], 0.8, (MEMBERS, gates, BATCH, UNITS)) / 0.8
  return inputs


def _loss_and_grads(model: ModelConfig, params, inputs: dict, *, reverse: bool, zero_output: bool):
  """`vmap` over members of (loss, d loss / d params, outputs) of one layer; params shared by all members."""
  layer = Recurrent(model, UNITS, reverse=reverse)

  def loss(p, kwargs):
    hs = layer.apply(p, **kwargs, zero_masked_output=zero_output)
    return jnp.sum(jnp.sin(hs) * jnp.arange(1, TIME + 1)[None, :, None]), hs  # uneven cotangents

  grad = jax.value_and_grad(loss, has_aux=True)
  return jax.jit(jax.vmap(grad, in_axes=(None, 0)))(params, inputs)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("masking,dropout,reverse", [(False, False, False), (True, False, True),
                                                      (False, True, False), (True, True, True)])
def test_fused_layer_equals_scan_layer_and_its_gradients(cell, masking, dropout, reverse):
  model = ModelConfig(cell=cell, cells=UNITS, learn_initial_state=True)
  inputs = _layer_inputs(cell, masking, dropout)
  params = Recurrent(model, UNITS).init(jax.random.key(1), inputs["xs"][0])
  # Off the initialisation's zeros (bias, initial state) so that every gradient is exercised.
  params = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(jax.random.key(2), p.shape), params)
  zero_output = masking and reverse  # Bidirectional's zeros at masked steps
  (loss, hs), grads = _loss_and_grads(model, params, inputs, reverse=reverse, zero_output=zero_output)
  fused = dataclasses.replace(model, kernel="fused")
  (loss_f, hs_f), grads_f = _loss_and_grads(fused, params, inputs, reverse=reverse, zero_output=zero_output)
  np.testing.assert_allclose(hs_f, hs, rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(loss_f, loss, rtol=RTOL, atol=ATOL)
  assert set(grads_f["params"]) == set(grads["params"])
  for name, g in grads["params"].items():
    assert np.abs(g).max() > 0, name  # a test of something
    np.testing.assert_allclose(grads_f["params"][name], g, rtol=RTOL, atol=10 * ATOL, err_msg=name)


@pytest.mark.timeout(300)
def test_fused_network_with_dropout_and_masking_equals_scan_network():
  """Through `Network`: bidirectional GRU with Masking, dropout and recurrent dropout, two members."""
  model = ModelConfig(cell="gru", cells=4, architecture="bidirectional", return_sequences=True, mask_value=0.0,
                      dropout=0.2, recurrent_dropout=0.3)
  xs = jax.random.normal(jax.random.key(0), (BATCH, TIME, FEATURES))
  xs = xs.at[:, :2].set(0.0)  # masked steps
  keys = jax.random.split(jax.random.key(1), 2)

  def run(m):
    net = Network(m, 2)
    params = net.init(jax.random.key(2), xs)["params"]

    def loss(p, key):
      out = net.apply({"params": p}, xs, dropout_key=key, rates=(0.2, 0.3))
      return jnp.sum(jnp.tanh(out))

    return jax.jit(jax.vmap(jax.value_and_grad(loss), in_axes=(None, 0)))(params, keys)

  (loss, grads), (loss_f, grads_f) = run(model), run(dataclasses.replace(model, kernel="fused"))
  np.testing.assert_allclose(loss_f, loss, rtol=RTOL, atol=ATOL)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=RTOL, atol=10 * ATOL), grads_f, grads)


TINY = {"model.cells": 4, "model.layers": 2, "train.epochs": 6, "train.batch_size": 2, "train.shuffle": True,
        "model.recurrent_init": "glorot_uniform"}


@pytest.mark.timeout(300)
def test_fused_fit_trains_and_compiles_once():
  # Its own id, so its own repeat keys: the draws differ from the scan fit's, and only
  # the learning is checked here (the layer tests above compare the two on equal weights).
  fused = Config().override({**TINY, "model.kernel": "fused"})
  compiled.clear()
  ens = jaxlstm.fit(fused, repeats=3, seed=0)
  assert ens.timings["compiles"] == 1
  loss = ens.history["loss"]
  assert np.isfinite(loss).all()
  assert (loss[:, -1] < loss[:, 0]).all()
  assert not np.allclose(loss[0], loss[1])  # the members differ


@pytest.mark.timeout(300)
def test_default_config_keeps_the_scan_program_and_its_numbers():
  cfg = Config().override(TINY)
  explicit = cfg.override({"model.kernel": "scan"})
  fused = cfg.override({"model.kernel": "fused"})
  assert explicit.config_id == cfg.config_id and "kernel" not in cfg.identity()["model"]
  assert fused.config_id != cfg.config_id and fused.identity()["model"]["kernel"] == "fused"
  assert program_key(fused) != program_key(cfg)  # different kernels never share a compile
  xs = jnp.zeros((2, TIME, 1))

  def trace(m):
    net = Network(m, 1)
    params = net.init(jax.random.key(0), xs)["params"]
    return str(jax.make_jaxpr(lambda p: net.apply({"params": p}, xs))(params))

  assert "fused_scan" not in trace(cfg.model) and "fused_scan" in trace(fused.model)
  compiled.clear()
  a, b = jaxlstm.fit(cfg, repeats=2, seed=0), jaxlstm.fit(explicit, repeats=2, seed=0)
  for name, values in a.history.items():
    np.testing.assert_array_equal(b.history[name], values, err_msg=name)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("changes,match", [
    ({"model.kernel": "cudnn"}, r"model\.kernel = 'cudnn' is not allowed: expected one of 'scan', 'fused'"),
    ({"model.layer_norm": True}, r"model\.kernel = 'fused' does not support model\.layer_norm = True"),
    ({"model.tbptt": 3}, r"model\.kernel = 'fused' does not support model\.tbptt = 3"),
    ({"model.activation": "relu"}, r"model\.kernel = 'fused' computes activation 'tanh' and recurrent_activation"),
    ({"model.recurrent_activation": "hard_sigmoid"}, r"model\.kernel = 'fused' computes activation 'tanh'"),
])
def test_fused_kernel_refuses_what_it_does_not_compute_at_config_time(changes, match):
  with pytest.raises(ConfigError, match=match):
    Config().override({"model.kernel": "fused", **changes})
