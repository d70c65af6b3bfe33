"""Architectures and framings (issue 6 part 3): numpy references, summary counts, vectorised training.

Every network is checked against a hand-written numpy forward pass on the same
(fixed) weights, in float64, with Keras' gate order (LSTM i, f, c, o; GRU z, r,
h, reset_after=True). Then each architecture trains a few epochs with repeats
vectorised (one compile per architecture, shared by a module-scoped fixture).
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlstm
from jaxlstm import compiled, problems
from jaxlstm.config import Config, ModelConfig
from jaxlstm.models import Network, Recurrent, layer_table, summary

RTOL, ATOL = 1e-5, 1e-6


# ----------------------------------------------------------------------------- numpy references
def sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def np_layer_norm(x, scale, bias=None, eps=1e-3):
  mean = x.mean(-1, keepdims=True)
  y = (x - mean) / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + eps) * scale
  return y if bias is None else y + bias


def np_lstm(x, p, *, reverse=False, layer_norm=False):
  """Keras LSTM (return_sequences=True) on `[batch, time, features]`, gates i, f, c, o."""
  p = {k: np.asarray(v, np.float64) for k, v in p.items()}
  batch, time, _ = x.shape
  units = p["recurrent_kernel"].shape[0]
  h = np.broadcast_to(p.get("initial_h", np.zeros(units)), (batch, units))
  c = np.broadcast_to(p.get("initial_c", np.zeros(units)), (batch, units))
  out = np.zeros((batch, time, units))
  for t in (reversed(range(time)) if reverse else range(time)):
    zx, zh = x[:, t] @ p["kernel"], h @ p["recurrent_kernel"]
    if layer_norm:
      zx, zh = np_layer_norm(zx, p["norm_inputs_scale"]), np_layer_norm(zh, p["norm_recurrent_scale"])
    i, f, g, o = np.split(zx + zh + p["bias"], 4, axis=-1)
    c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
    h = sigmoid(o) * np.tanh(np_layer_norm(c, p["norm_cell_scale"], p["norm_cell_bias"]) if layer_norm else c)
    out[:, t] = h
  return out


def np_gru(x, p, *, reverse=False):
  """Keras 3 GRU (reset_after=True, return_sequences=True), gates z, r, h."""
  p = {k: np.asarray(v, np.float64) for k, v in p.items()}
  batch, time, _ = x.shape
  units = p["recurrent_kernel"].shape[0]
  h = np.zeros((batch, units))
  out = np.zeros((batch, time, units))
  for t in (reversed(range(time)) if reverse else range(time)):
    xz, xr, xh = np.split(x[:, t] @ p["kernel"] + p["bias"], 3, axis=-1)
    rz, rr, rh = np.split(h @ p["recurrent_kernel"] + p["recurrent_bias"], 3, axis=-1)
    z, r = sigmoid(xz + rz), sigmoid(xr + rr)
    h = z * h + (1 - z) * np.tanh(xh + r * rh)
    out[:, t] = h
  return out


def np_dense(x, p):
  return x @ np.asarray(p["kernel"], np.float64) + np.asarray(p["bias"], np.float64)


def np_merge(a, b, mode):
  return {"concat": lambda: np.concatenate([a, b], -1), "sum": lambda: a + b,
          "mul": lambda: a * b, "ave": lambda: (a + b) / 2}[mode]()


def init(net, x, seed=0):
  """Random fixed weights in the network's parameter structure (no init compile).

  Every leaf, biases and layer-norm scales included, gets N(0, 0.5^2) values,
  so a swapped gate, a dropped bias or a wrong merge cannot hide.
  """
  shapes = jax.eval_shape(net.init, jax.random.key(0), jnp.asarray(x, jnp.float32))["params"]
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: (0.5 * rng.normal(size=s.shape)).astype(np.float32), shapes)


def apply(net, params, x):
  return np.asarray(jax.jit(net.apply)({"params": params}, jnp.asarray(x, jnp.float32)), np.float64)


@pytest.fixture(scope="module")
def x():
  return np.random.default_rng(0).normal(size=(3, 5, 2)).astype(np.float32)


def model(**changes) -> ModelConfig:
  return ModelConfig(**{"cells": 4, **changes})


# ----------------------------------------------------------------------------- cells and stacks
@pytest.mark.parametrize("reverse", [False, True])
def test_lstm_layer_matches_numpy(x, reverse):
  layer = Recurrent(model(), 4, reverse=reverse)
  params = init(layer, x)
  np.testing.assert_allclose(apply(layer, params, x), np_lstm(x, params, reverse=reverse), rtol=RTOL, atol=ATOL)


def test_gru_matches_keras3_reset_after_numpy_step(x):
  layer = Recurrent(model(cell="gru"), 4)
  params = init(layer, x)
  assert set(params) == {"kernel", "recurrent_kernel", "bias", "recurrent_bias"}  # Keras' [2, 3u] bias, split
  assert params["kernel"].shape == (2, 12) and params["recurrent_kernel"].shape == (4, 12)
  np.testing.assert_allclose(apply(layer, params, x), np_gru(x, params), rtol=RTOL, atol=ATOL)


def test_layer_norm_and_learned_initial_state_match_numpy(x):
  layer = Recurrent(model(layer_norm=True, learn_initial_state=True), 4)
  params = init(layer, x)
  assert {"initial_h", "initial_c", "norm_inputs_scale", "norm_recurrent_scale",
          "norm_cell_scale", "norm_cell_bias"} <= set(params)
  np.testing.assert_allclose(apply(layer, params, x), np_lstm(x, params, layer_norm=True), rtol=RTOL, atol=ATOL)
  gru = jax.eval_shape(Recurrent(model(cell="gru", learn_initial_state=True), 4).init, jax.random.key(0), x)["params"]
  assert "initial_h" in gru and "initial_c" not in gru  # a GRU carries no cell state


def test_stacked_lstm_matches_hand_assembled_stack(x):
  net = Network(model(layers=3), 2)
  params = init(net, x)
  hs = x
  for layer in range(3):
    hs = np_lstm(hs, params[f"lstm_{layer}"])
  np.testing.assert_allclose(apply(net, params, x), np_dense(hs[:, -1], params["head"]), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("cell,layer_norm", [("lstm", False), ("lstm", True), ("gru", False)])
def test_one_step_from_the_zero_state_leaves_the_recurrent_product_out(x, cell, layer_norm):
  # One time step from Keras' zero state (the default study's shape): h0 @ recurrent
  # is exactly zero, so `zero_initial` skips that matmul and its gradient's; so is
  # the LSTM's f * c0, so (without layer norm) it skips the forget gate's sigmoid. Values
  # and every gradient are the loop's, bit for bit; the recurrent kernel's is zero.
  from jaxlstm.models import GATES, scan_layer
  cfg = model(cell=cell, layer_norm=layer_norm)
  units, features, gates = 4, x.shape[-1], GATES[cell]
  rng = np.random.default_rng(3)
  weights = {"kernel": (features, gates * units), "bias": (gates * units,), "recurrent": (units, gates * units),
             "recurrent_bias": (gates * units,), "x_scale": (gates * units,), "h_scale": (gates * units,),
             "c_scale": (units,), "c_bias": (units,)}
  weights = {k: jnp.asarray(0.5 * rng.normal(size=s), jnp.float32) for k, s in weights.items()}
  zeros = jnp.zeros((units,), jnp.float32)
  x1 = jnp.asarray(x[:, :1])

  def loss(w, zero_initial):
    norms = (w["x_scale"], w["h_scale"], w["c_scale"], w["c_bias"]) if layer_norm else None
    hs = scan_layer(cfg, jnp.tanh, x1, w["kernel"], w["bias"], w["recurrent"],
                    w["recurrent_bias"] if cell == "gru" else None, (zeros, zeros), norms, zero_initial=zero_initial)
    return jnp.sum(jnp.sin(hs)), hs

  def count(primitive, zero_initial):
    jaxpr = jax.make_jaxpr(jax.grad(loss, has_aux=True), static_argnums=1)(weights, zero_initial)
    return str(jaxpr).count(primitive)

  (_, skipped), (_, looped) = (jax.jit(loss, static_argnums=1)(weights, z) for z in (True, False))
  np.testing.assert_array_equal(skipped, looped)
  reference = np_lstm(x[:, :1], {"kernel": weights["kernel"], "recurrent_kernel": weights["recurrent"],
                                 "bias": weights["bias"], **({"norm_inputs_scale": weights["x_scale"],
                                 "norm_recurrent_scale": weights["h_scale"], "norm_cell_scale": weights["c_scale"],
                                 "norm_cell_bias": weights["c_bias"]} if layer_norm else {})},
                      layer_norm=layer_norm) if cell == "lstm" else \
      np_gru(x[:, :1], {"kernel": weights["kernel"], "recurrent_kernel": weights["recurrent"],
                        "bias": weights["bias"], "recurrent_bias": weights["recurrent_bias"]})
  np.testing.assert_allclose(skipped, reference, rtol=RTOL, atol=ATOL)
  grads = [jax.jit(jax.grad(loss, has_aux=True), static_argnums=1)(weights, z)[0] for z in (True, False)]
  for name in weights:
    np.testing.assert_array_equal(grads[0][name], grads[1][name], err_msg=name)
  np.testing.assert_array_equal(grads[0]["recurrent"], 0.0)
  # Gone: the forward product and both of its transposes (the kernel's and h0's gradients).
  assert count("dot_general", True) == count("dot_general", False) - 3
  # The forget gate's sigmoid: gone from the LSTM without layer norm (with it, leaving
  # the gate out moved the last bits of some numbers).
  forget_gate_left_out = cell == "lstm" and not layer_norm
  assert count("logistic", True) == count("logistic", False) - forget_gate_left_out


def _plain_lstm_cell(z, c):
  """The Keras LSTM cell as `scan_layer` writes it for other activations: autodiff's backward pass."""
  i, f, g, o = jnp.split(z, 4, axis=-1)
  c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
  return jax.nn.sigmoid(o) * jnp.tanh(c), c


def _plain_gru_cell(x, r, h):
  xz, xr, xh = jnp.split(x, 3, axis=-1)
  rz, rr, rh = jnp.split(r, 3, axis=-1)
  z, reset = jax.nn.sigmoid(xz + rz), jax.nn.sigmoid(xr + rr)
  return z * h + (1.0 - z) * jnp.tanh(xh + reset * rh)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_keras_cell_backward_is_autodiffs_bit_for_bit(cell):
  # Saturated gates, large states, zeros and a NaN (a diverged repeat's): the hand-written
  # transposes must round as autodiff's do (jax's rules: tanh's moved in jax 0.12).
  from jaxlstm.models import gru_cell, lstm_cell
  rng = np.random.default_rng(5)
  units, gates = 6, 4 if cell == "lstm" else 3
  scale = np.array([1.0, 4.0, 30.0])[:, None, None]
  pre = (rng.normal(size=(3, 8, gates * units)) * scale).astype(np.float32)
  pre[0, 0, :3] = [0.0, -0.0, np.nan]
  state = (rng.normal(size=(3, 8, units)) * 3).astype(np.float32)
  if cell == "lstm":
    args, lean, plain = (pre, state), lstm_cell, _plain_lstm_cell
    cotangents = tuple(rng.normal(size=(3, 8, units)).astype(np.float32) for _ in range(2))
  else:
    args, lean, plain = (pre, (rng.normal(size=pre.shape) * scale).astype(np.float32), state), gru_cell, _plain_gru_cell
    cotangents = rng.normal(size=(3, 8, units)).astype(np.float32)

  def vjp(fn):
    return jax.jit(lambda args, d: (fn(*args), jax.vjp(fn, *args)[1](d)))(args, cotangents)

  got, want = vjp(lean), vjp(plain)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_array_equal(a, b)
  d_first = got[1][0]
  assert np.isnan(d_first).any() and (np.abs(np.nan_to_num(d_first)) > 0).any()


@pytest.mark.parametrize("cell,masked,dropout,reverse,layer_norm", [
    ("lstm", False, False, False, False), ("lstm", True, True, True, False),
    ("gru", False, False, False, False), ("gru", True, True, True, True)])
def test_scan_layer_keeps_its_numbers_with_the_lean_keras_cell(cell, masked, dropout, reverse, layer_norm):
  # `scan_layer` takes `lstm_cell` / `gru_cell` for Keras' activations (sigmoid gates,
  # `jnp.tanh`); an equal tanh that is not `jnp.tanh` takes the plain cell. Outputs and
  # every gradient, vectorised over members as the engine runs them, must be the same
  # bits, while the lean cell stacks fewer arrays for the backward pass (what it is for).
  from jaxlstm.models import GATES, scan_layer
  members, batch, time, features, units = 2, 3, 7, 2, 4
  gates = GATES[cell]
  rng = np.random.default_rng(6)
  shapes = {"xs": (members, batch, time, features), "kernel": (features, gates * units), "bias": (gates * units,),
            "recurrent": (units, gates * units), "recurrent_bias": (gates * units,), "h0": (units,),
            "c0": (units,), "x_scale": (gates * units,), "h_scale": (gates * units,)}
  if cell == "lstm":
    del shapes["recurrent_bias"]
  if not layer_norm:
    del shapes["x_scale"], shapes["h_scale"]
  w = {k: jnp.asarray(0.6 * rng.normal(size=s), jnp.float32) for k, s in shapes.items()}
  masks = {}
  if masked:
    masks["step_mask"] = jnp.asarray(rng.random((members, batch, time)) < 0.7)
  if dropout:
    masks["input_mask"] = jnp.asarray(rng.random((members, gates, batch, features)) < 0.8, jnp.float32) / 0.8
    masks["state_mask"] = jnp.asarray(rng.random((members, gates, batch, units)) < 0.8, jnp.float32) / 0.8

  def loss(w, masks, act):
    norms = (w["x_scale"], w["h_scale"], None, None) if layer_norm else None
    hs = scan_layer(model(cell=cell, cells=units, layer_norm=layer_norm), act, w["xs"], w["kernel"], w["bias"],
                    w["recurrent"], w.get("recurrent_bias"), (w["h0"], w["c0"]), norms, reverse=reverse,
                    zero_output=masked, **masks)
    return jnp.sum(jnp.sin(hs) * jnp.arange(1, time + 1)[None, :, None]), hs  # uneven cotangents

  def run(act):
    grad = jax.value_and_grad(lambda w, m: loss(w, m, act), has_aux=True)
    return jax.jit(jax.vmap(grad, in_axes=({k: 0 if k == "xs" else None for k in shapes}, 0)))(w, masks)

  lean, plain = run(jnp.tanh), run(lambda v: jnp.tanh(v))
  for got, want in zip(jax.tree.leaves(lean), jax.tree.leaves(plain)):
    np.testing.assert_array_equal(got, want)
  exercised = {k: g for k, g in lean[1].items() if k != "c0" or cell == "lstm"}
  assert all(np.abs(g).max() > 0 for g in exercised.values())  # every gradient exercised
  one, masks_one = {**w, "xs": w["xs"][0]}, {k: v[0] for k, v in masks.items()}
  # A vjp function's leaves are the residuals autodiff keeps for the backward pass.
  saved = [jax.eval_shape(lambda w, act=act: jax.tree.leaves(jax.vjp(lambda w: loss(w, masks_one, act)[0], w)[1]),
                          one) for act in (jnp.tanh, lambda v: jnp.tanh(v))]
  stacked = [sum(leaf.shape[:1] == (time,) for leaf in leaves) for leaves in saved]
  # The derivative factors are left to the backward pass: the LSTM's 5 (7 arrays instead of 12
  # unmasked), the GRU's 4 (5 instead of 9); masking and dropout add the same arrays to both.
  assert stacked[1] - stacked[0] == (5 if cell == "lstm" else 4)


def test_one_feature_input_is_projected_time_major_with_the_same_numbers():
  # A one-feature layer input is projected straight into the scan's time-major order
  # (a product per element); its values and the gradients of the input, kernel and bias
  # (summed over batch and time in batch-major order, as the matmul's transpose does)
  # are the batch-major form's, bit for bit, vectorised over members.
  from jaxlstm.models import _along_last, _time_major_input
  rng = np.random.default_rng(7)
  xs = rng.normal(size=(3, 5, 9, 1)).astype(np.float32)
  xs[0, 0, :2, 0] = [0.0, -0.0]
  kernel, bias = (rng.normal(size=s).astype(np.float32) for s in ((3, 1, 16), (3, 16)))
  d = rng.normal(size=(3, 9, 5, 16)).astype(np.float32)

  def batch_major(xs, kernel, bias):
    return jnp.swapaxes(xs @ kernel + _along_last(bias, 3), 0, 1)

  def run(fn):
    return jax.jit(jax.vmap(lambda *a: (fn(*a[:3]), jax.vjp(fn, *a[:3])[1](a[3]))))(xs, kernel, bias, d)

  got, want = run(_time_major_input), run(batch_major)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    assert a.shape == b.shape
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("merge_mode,return_sequences", [
    ("concat", False), ("sum", True), ("mul", False), ("ave", True)])
def test_bidirectional_matches_hand_assembled_merge(x, merge_mode, return_sequences):
  net = Network(model(architecture="bidirectional", layers=2, merge_mode=merge_mode,
                      return_sequences=return_sequences), 3)
  params = init(net, x)
  hs = x
  for layer in range(2):
    forward = np_lstm(hs, params[f"forward_{layer}"])
    backward = np_lstm(hs, params[f"backward_{layer}"], reverse=True)
    if layer == 1 and not return_sequences:
      hs = np_merge(forward[:, -1], backward[:, 0], merge_mode)  # backward's last state is at t = 0
    else:
      hs = np_merge(forward, backward, merge_mode)
  got = apply(net, params, x)
  width = 8 if merge_mode == "concat" else 4
  assert params["head"]["kernel"].shape == (width, 3)
  assert got.shape == ((3, 5, 3) if return_sequences else (3, 3))
  np.testing.assert_allclose(got, np_dense(hs, params["head"]), rtol=RTOL, atol=ATOL)


def test_cnn_lstm_is_time_distributed_conv_pool_flatten(x):
  frames = np.random.default_rng(2).normal(size=(2, 3, 7 * 7)).astype(np.float32)
  net = Network(model(architecture="cnn_lstm", conv_filters=2, conv_kernel=3, pool_size=2), 1, frame_shape=(7, 7))
  params = init(net, frames)
  kernel, bias = np.asarray(params["conv"]["kernel"], np.float64), np.asarray(params["conv"]["bias"], np.float64)
  assert kernel.shape == (3, 3, 1, 2)
  images = frames.reshape(2 * 3, 7, 7, 1).astype(np.float64)
  conv = np.zeros((6, 5, 5, 2))
  for i in range(5):
    for j in range(5):
      conv[:, i, j] = np.einsum("nabc,abcf->nf", images[:, i:i + 3, j:j + 3], kernel) + bias
  conv = np.maximum(conv, 0)
  pooled = conv[:, :4, :4].reshape(6, 2, 2, 2, 2, 2).max(axis=(2, 4))  # 2x2 windows, the odd edge dropped
  features = pooled.reshape(2, 3, -1)
  hs = np_lstm(features, params["lstm_0"])
  np.testing.assert_allclose(apply(net, params, frames), np_dense(hs[:, -1], params["head"]), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("time_in", [5, 1])  # 1: one-to-many
def test_encoder_decoder_is_encoder_repeat_decoder_dense(x, time_in):
  xs = x[:, :time_in]
  net = Network(model(architecture="encoder_decoder"), 3, time_out=4)
  params = init(net, xs)
  context = np_lstm(xs, params["encoder_0"])[:, -1]
  decoded = np_lstm(np.repeat(context[:, None], 4, axis=1), params["decoder"])
  got = apply(net, params, xs)
  assert got.shape == (3, 4, 3)
  np.testing.assert_allclose(got, np_dense(decoded, params["head"]), rtol=RTOL, atol=ATOL)


def test_input_projection_is_a_per_step_dense_before_the_recurrent_layers(x):
  net = Network(model(input_projection=6, return_sequences=True), 2)
  params = init(net, x)
  projected = np_dense(x.astype(np.float64), params["input_projection"])
  hs = np_lstm(projected, params["lstm_0"])
  np.testing.assert_allclose(apply(net, params, x), np_dense(hs, params["head"]), rtol=RTOL, atol=ATOL)


# ----------------------------------------------------------------------------- summary
def lstm(units, features):
  return 4 * (units * (features + units) + units)


def gru(units, features):
  return 3 * (units * (features + units) + 2 * units)


def dense(units, inputs):
  return units * (inputs + 1)


SUMMARY_CASES = {
    # name: (model changes, input (time, features), outputs, kwargs, expected [(row, type, shape, params)])
    "stacked_lstm": (dict(layers=2), (5, 3), 2, {}, [
        ("lstm_0", "LSTM", (None, 5, 4), lstm(4, 3)),
        ("lstm_1", "LSTM", (None, 4), lstm(4, 4)),
        ("head", "Dense", (None, 2), dense(2, 4))]),
    "gru_sequences": (dict(cell="gru", cells=6, return_sequences=True), (7, 2), 1, {}, [
        ("gru_0", "GRU", (None, 7, 6), gru(6, 2)),
        ("head", "TimeDistributed(Dense)", (None, 7, 1), dense(1, 6))]),
    "bidirectional_concat": (dict(architecture="bidirectional", layers=2, input_projection=5), (4, 3), 2, {}, [
        ("input_projection", "Dense", (None, 4, 5), dense(5, 3)),
        ("bidirectional_0", "Bidirectional(LSTM)", (None, 4, 8), 2 * lstm(4, 5)),
        ("bidirectional_1", "Bidirectional(LSTM)", (None, 8), 2 * lstm(4, 8)),
        ("head", "Dense", (None, 2), dense(2, 8))]),
    "bidirectional_ave_gru": (dict(architecture="bidirectional", cell="gru", merge_mode="ave"), (4, 3), 1, {}, [
        ("bidirectional_0", "Bidirectional(GRU)", (None, 4), 2 * gru(4, 3)),
        ("head", "Dense", (None, 1), dense(1, 4))]),
    "cnn_lstm": (dict(architecture="cnn_lstm", conv_filters=3, conv_kernel=3, pool_size=2), (6, 100), 1,
                 {"frame_shape": (10, 10)}, [
        ("conv", "TimeDistributed(Conv2D)", (None, 6, 8, 8, 3), 3 * 3 * 1 * 3 + 3),
        ("pool", "TimeDistributed(MaxPooling2D)", (None, 6, 4, 4, 3), 0),
        ("flatten", "TimeDistributed(Flatten)", (None, 6, 48), 0),
        ("lstm_0", "LSTM", (None, 4), lstm(4, 48)),
        ("head", "Dense", (None, 1), dense(1, 4))]),
    "encoder_decoder": (dict(architecture="encoder_decoder", layers=2), (8, 12), 12, {"time_out": 2}, [
        ("encoder_0", "LSTM", (None, 8, 4), lstm(4, 12)),
        ("encoder_1", "LSTM", (None, 4), lstm(4, 4)),
        ("repeat_vector", "RepeatVector", (None, 2, 4), 0),
        ("decoder", "LSTM", (None, 2, 4), lstm(4, 4)),
        ("head", "TimeDistributed(Dense)", (None, 2, 12), dense(12, 4))]),
    # Not Keras layers: layer norm adds 2 * 4u (input, recurrent scales) + 2u
    # (cell scale, shift), a learned initial state 2u (h, c).
    "extras": (dict(layer_norm=True, learn_initial_state=True), (5, 3), 1, {}, [
        ("lstm_0", "LSTM", (None, 4), lstm(4, 3) + 2 * 16 + 2 * 4 + 2 * 4),
        ("head", "Dense", (None, 1), dense(1, 4))]),
}


@pytest.mark.parametrize("case", list(SUMMARY_CASES))
def test_summary_rows_match_keras_formulas_and_shapes(case):
  changes, input_shape, outputs, kwargs, expected = SUMMARY_CASES[case]
  cfg = ModelConfig(**{"cells": 4, **changes})
  rows = layer_table(cfg, input_shape, outputs, **kwargs)
  assert [(r["name"], r["type"], r["output_shape"], r["params"]) for r in rows] == expected
  net = Network(cfg, outputs, **kwargs)
  params = jax.eval_shape(lambda: net.init(jax.random.key(0), jnp.zeros((1, *input_shape))))["params"]
  total = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))
  assert total == sum(row[3] for row in expected)
  text = summary(cfg, input_shape, outputs, **kwargs)
  for name, kind, shape, count in expected:
    line = next(line for line in text.splitlines() if line.startswith(f"{name} ({kind})"))
    assert line.rstrip().endswith(f"{count:,}") and str(shape) in line
  assert text.splitlines()[-1] == f"Total params: {total:,}"


# ----------------------------------------------------------------------------- training, vectorised
def _custom(name):
  rng = np.random.default_rng(3)
  if name == "many_to_many":  # running sum of the first feature at every step
    x = rng.normal(size=(40, 5, 2)).astype(np.float32)
    y = np.cumsum(x[..., :1], axis=1)
  elif name == "one_to_one":  # one step in, one value out
    x = rng.normal(size=(40, 1, 3)).astype(np.float32)
    y = x[:, 0, :1] - x[:, 0, 1:2]
  else:  # one_to_many: one step in, a 4-step ramp out
    x = rng.normal(size=(40, 1, 2)).astype(np.float32)
    y = x[:, :, :1] * np.arange(1, 5, dtype=np.float32)[None, :, None]
  return problems.Dataset(x[:32], y[:32], x[32:], y[32:], name=name)


CLASSIFY = {"model.output_activation": "softmax", "train.loss": "categorical_crossentropy"}
ARCHITECTURES = {
    "stacked": ({"data.problem": "damped_sine", "data.options": {"n_train": 32, "n_val": 8, "length": 6, "horizon": 2},
                 "model.layers": 2, "model.layer_norm": True, "model.learn_initial_state": True,
                 "model.unit_forget_bias": False}, None),
    "bidirectional": ({"data.problem": "echo", "data.options": {"n_train": 32, "n_val": 8, "length": 5, "n_features": 4},
                       "model.architecture": "bidirectional", "model.merge_mode": "sum",
                       "model.input_projection": 3, "model.tbptt": 2, **CLASSIFY}, None),
    "cnn_lstm": ({"data.problem": "moving_square", "data.options": {"n_train": 32, "n_val": 8, "size": 6},
                  "model.architecture": "cnn_lstm", "model.conv_filters": 2,
                  "model.output_activation": "sigmoid", "train.loss": "binary_crossentropy"}, None),
    "encoder_decoder": ({"data.problem": "addition", "data.options": {"n_train": 32, "n_val": 8, "n_terms": 2, "largest": 9},
                         "model.architecture": "encoder_decoder", "model.cell": "gru", **CLASSIFY}, None),
    "many_to_many": ({"model.return_sequences": True}, "many_to_many"),
    "one_to_one": ({}, "one_to_one"),
    "one_to_many": ({"model.architecture": "encoder_decoder"}, "one_to_many"),
}


@pytest.fixture(scope="module", params=list(ARCHITECTURES))
def trained(request):
  changes, custom = ARCHITECTURES[request.param]
  # glorot recurrent kernels: the orthogonal initialiser adds seconds of compile
  # per layer shape and is tested in test_train; the architecture is what is tested here.
  cfg = Config().override({"model.cells": 4, "model.recurrent_init": "glorot_uniform", "train.epochs": 3,
                           "train.batch_size": 16, **changes})
  dataset = _custom(custom) if custom else jaxlstm.problems.make(cfg.data.problem, **cfg.data.options)
  compiled.clear()  # count this architecture's compile, not one an earlier test left in the cache
  ens = jaxlstm.fit(cfg, dataset if custom else None, repeats=2, seed=0)
  return request.param, cfg, dataset, ens


def test_architecture_trains_vectorised_with_right_shapes(trained):
  name, cfg, dataset, ens = trained
  assert ens.timings["compiles"] == 1
  for key, values in ens.history.items():
    assert values.shape == (2, 3), key
    assert np.isfinite(values).all(), key
  assert not np.allclose(ens.history["loss"][0], ens.history["loss"][1])  # the seeds differ
  predictions = ens.predict(dataset.x_val)
  assert predictions.shape == (2, *dataset.y_val.shape)
  assert np.isfinite(predictions).all()
  rows = layer_table(cfg.model, dataset.x_train.shape[1:], ens.outputs, time_out=ens.time_out,
                     frame_shape=ens.frame_shape)
  assert rows[-1]["output_shape"] == (None, *dataset.y_val.shape[1:])
  if name == "cnn_lstm":
    assert [r["type"] for r in rows[:3]] == ["TimeDistributed(Conv2D)", "TimeDistributed(MaxPooling2D)",
                                            "TimeDistributed(Flatten)"]
  if name in ("many_to_many", "encoder_decoder", "one_to_many"):
    assert rows[-1]["type"] == "TimeDistributed(Dense)"
