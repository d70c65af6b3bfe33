"""Flax Linen recurrent networks with Keras-compatible cells and defaults.

Our own cells rather than `flax.linen.LSTMCell` because Keras users expect
Keras' parameterisation: one fused input kernel `[features, gates * units]`
(glorot_uniform over that whole matrix), a fused recurrent kernel
`[units, gates * units]` (orthogonal), and a zero bias with the forget-gate
slice set to 1. Gate order is Keras': LSTM (i, f, c, o), GRU (z, r, h).
The GRU is Keras 3's default `reset_after=True` variant (separate input and
recurrent biases).

The input projection of every time step is one matmul before the time scan
(the scan then does only the `[batch, units] @ [units, gates * units]`
recurrent product), which is where small-LSTM time goes on a CPU.

Networks return pre-activation outputs (logits); `output_activation` is applied
by `activate`, so cross-entropy losses can be computed stably from logits.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlstm.config import ModelConfig

GATES = {"lstm": 4, "gru": 3}


def initializer(name: str) -> Callable[..., jax.Array]:
  """A jax initializer `(key, shape, dtype)` with Keras' definition of `name`.

  Fans are computed as Keras does for a 2-D kernel: fan_in = rows, fan_out =
  columns (for the fused kernels, columns = gates * units).
  """
  inits = jax.nn.initializers
  table = {
      "glorot_uniform": inits.glorot_uniform(),
      "glorot_normal": inits.glorot_normal(),  # truncated normal, as Keras
      "lecun_normal": inits.lecun_normal(),
      "he_uniform": inits.he_uniform(),
      "he_normal": inits.he_normal(),
      "orthogonal": inits.orthogonal(),
      "random_uniform": inits.uniform(0.1),  # Keras: U(-0.05, 0.05), shifted below
      "random_normal": inits.normal(0.05),  # Keras: N(0, 0.05)
      "zeros": inits.zeros,
  }
  if name == "random_uniform":
    return lambda key, shape, dtype=jnp.float32: table[name](key, shape, dtype) - 0.05
  return table[name]


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
  """Keras activation by name (hard_sigmoid is Keras 3's: relu6(x + 3) / 6)."""
  return {
      "tanh": jnp.tanh,
      "sigmoid": jax.nn.sigmoid,
      "hard_sigmoid": lambda x: jnp.clip(x / 6.0 + 0.5, 0.0, 1.0),
      "relu": jax.nn.relu,
      "softsign": jax.nn.soft_sign,
      "linear": lambda x: x,
  }[name]


def activate(logits: jax.Array, output_activation: str) -> jax.Array:
  """Apply the head's output activation to network outputs."""
  if output_activation == "softmax":
    return jax.nn.softmax(logits, axis=-1)
  if output_activation == "sigmoid":
    return jax.nn.sigmoid(logits)
  return logits


def _bias_init(cfg: ModelConfig, gates: int, units: int):
  base = initializer(cfg.bias_init)

  def init(key, shape, dtype=jnp.float32):
    bias = base(key, shape, dtype)
    if cfg.cell == "lstm" and cfg.unit_forget_bias:
      bias = bias.at[units:2 * units].set(1.0)  # Keras: forget-gate slice = 1
    return bias
  return init


class Recurrent(nn.Module):
  """One LSTM or GRU layer over `[batch, time, features]` -> `[batch, time, units]`."""
  cfg: ModelConfig
  units: int
  reverse: bool = False

  @nn.compact
  def __call__(self, xs: jax.Array, *, input_mask: jax.Array | None = None,
               state_mask: jax.Array | None = None) -> jax.Array:
    """Run the layer.

    Args:
      xs: `[batch, time, features]`.
      input_mask: `[batch, features]` dropout mask (already scaled), the same at
        every time step (Keras' dropout), or None.
      state_mask: `[batch, units]` recurrent-dropout mask on the carried h, or None.

    Returns:
      `[batch, time, units]` hidden states (time in input order, also when reversed).
    """
    cfg, units = self.cfg, self.units
    gates = GATES[cfg.cell]
    features = xs.shape[-1]
    kernel = self.param("kernel", initializer(cfg.kernel_init), (features, gates * units))
    recurrent = self.param("recurrent_kernel", initializer(cfg.recurrent_init), (units, gates * units))
    bias = self.param("bias", _bias_init(cfg, gates, units), (gates * units,))
    if cfg.cell == "gru":
      recurrent_bias = self.param("recurrent_bias", initializer(cfg.bias_init), (gates * units,))
    if cfg.learn_initial_state:
      h0 = self.param("initial_h", nn.initializers.zeros, (units,))
      c0 = self.param("initial_c", nn.initializers.zeros, (units,))
    else:
      h0 = c0 = jnp.zeros((units,), xs.dtype)
    if cfg.layer_norm:
      norm_x = nn.LayerNorm(name="norm_inputs", use_bias=False)
      norm_h = nn.LayerNorm(name="norm_recurrent", use_bias=False)
      norm_c = nn.LayerNorm(name="norm_cell")
    if input_mask is not None:
      xs = xs * input_mask[:, None, :]
    projected = xs @ kernel  # one matmul for all time steps
    if cfg.layer_norm:
      projected = norm_x(projected)
    projected = projected + bias
    act = activation(cfg.activation)
    gate_act = activation(cfg.recurrent_activation)
    batch = xs.shape[0]
    carry0 = (jnp.broadcast_to(h0, (batch, units)), jnp.broadcast_to(c0, (batch, units)))

    def recur(h):
      if state_mask is not None:
        h = h * state_mask
      r = h @ recurrent
      return norm_h(r) if cfg.layer_norm else r

    def lstm_step(carry, x_t):
      h, c = carry
      z = x_t + recur(h)
      i, f, g, o = jnp.split(z, 4, axis=-1)
      c = gate_act(f) * c + gate_act(i) * act(g)
      h = gate_act(o) * act(norm_c(c) if cfg.layer_norm else c)
      return (h, c), h

    def gru_step(carry, x_t):
      h, c = carry
      r_all = recur(h) + recurrent_bias
      xz, xr, xh = jnp.split(x_t, 3, axis=-1)
      rz, rr, rh = jnp.split(r_all, 3, axis=-1)
      z = gate_act(xz + rz)
      r = gate_act(xr + rr)
      hh = act(xh + r * rh)  # reset_after=True (Keras 3 default)
      h = z * h + (1.0 - z) * hh
      return (h, c), h

    step = lstm_step if cfg.cell == "lstm" else gru_step
    time_major = jnp.swapaxes(projected, 0, 1)
    if cfg.tbptt:
      hs = _scan_truncated(step, carry0, time_major, cfg.tbptt, self.reverse)
    else:
      _, hs = jax.lax.scan(step, carry0, time_major, reverse=self.reverse)
    return jnp.swapaxes(hs, 0, 1)


def _scan_truncated(step, carry, xs, k, reverse):
  """Scan in chunks of k steps, stopping gradients through the carry between chunks."""
  time = xs.shape[0]
  outputs = []
  starts = list(range(0, time, k))
  if reverse:
    starts = starts[::-1]
  for start in starts:
    carry = jax.tree.map(jax.lax.stop_gradient, carry)
    carry, hs = jax.lax.scan(step, carry, xs[start:start + k], reverse=reverse)
    outputs.append(hs)
  if reverse:
    outputs = outputs[::-1]
  return jnp.concatenate(outputs, axis=0)


class Network(nn.Module):
  """The model of a config: (optional front end) -> recurrent layers -> Dense head.

  Call with `xs [batch, time, features]`; returns logits `[batch, outputs]`
  (many-to-one) or `[batch, time_out, outputs]` (many-to-many,
  encoder-decoder).
  """
  cfg: ModelConfig
  outputs: int
  time_out: int = 0  # encoder-decoder: length of the decoded sequence
  frame_shape: tuple[int, ...] = ()  # cnn_lstm: per-frame (height, width)

  @nn.compact
  def __call__(self, xs: jax.Array, *, dropout_key: jax.Array | None = None,
               rates: Any = None) -> jax.Array:
    """Forward pass.

    Args:
      xs: `[batch, time, features]`.
      dropout_key: key for the dropout masks (training only); None disables dropout.
      rates: `(dropout, recurrent_dropout)` rates (traced scalars), used with `dropout_key`.
    """
    cfg = self.cfg
    if cfg.architecture == "cnn_lstm":
      xs = self._conv_front_end(xs)
    if cfg.input_projection:
      xs = nn.Dense(cfg.input_projection, name="input_projection",
                    kernel_init=initializer(cfg.kernel_init))(xs)
    training = dropout_key is not None
    hs = xs
    layer_keys = (jax.random.split(dropout_key, 2 * cfg.layers + 2) if training else [None] * (2 * cfg.layers + 2))

    def masks(index, features, units):
      if not training:
        return None, None
      rate, recurrent_rate = rates
      key_in, key_state = jax.random.split(layer_keys[index])
      input_mask = state_mask = None
      if cfg.dropout > 0:
        keep = 1.0 - rate
        input_mask = jax.random.bernoulli(key_in, keep, (hs.shape[0], features)) / keep
      if cfg.recurrent_dropout > 0:
        keep = 1.0 - recurrent_rate
        state_mask = jax.random.bernoulli(key_state, keep, (hs.shape[0], units)) / keep
      return input_mask, state_mask

    if cfg.architecture == "encoder_decoder":
      for layer in range(cfg.layers):
        input_mask, state_mask = masks(layer, hs.shape[-1], cfg.cells)
        hs = Recurrent(cfg, cfg.cells, name=f"encoder_{layer}")(hs, input_mask=input_mask, state_mask=state_mask)
      context = hs[:, -1, :]
      hs = jnp.broadcast_to(context[:, None, :], (context.shape[0], self.time_out, context.shape[-1]))
      input_mask, state_mask = masks(cfg.layers, hs.shape[-1], cfg.cells)
      hs = Recurrent(cfg, cfg.cells, name="decoder")(hs, input_mask=input_mask, state_mask=state_mask)
      return nn.Dense(self.outputs, name="head", kernel_init=initializer("glorot_uniform"))(hs)

    for layer in range(cfg.layers):
      input_mask, state_mask = masks(layer, hs.shape[-1], cfg.cells)
      if cfg.architecture == "bidirectional":
        forward = Recurrent(cfg, cfg.cells, name=f"forward_{layer}")(hs, input_mask=input_mask, state_mask=state_mask)
        backward = Recurrent(cfg, cfg.cells, reverse=True, name=f"backward_{layer}")(
            hs, input_mask=input_mask, state_mask=state_mask)
        hs = merge(forward, backward, cfg.merge_mode)
      else:
        hs = Recurrent(cfg, cfg.cells, name=f"lstm_{layer}" if cfg.cell == "lstm" else f"gru_{layer}")(
            hs, input_mask=input_mask, state_mask=state_mask)
    if not cfg.return_sequences:
      if cfg.architecture == "bidirectional":
        # Keras Bidirectional(return_sequences=False): the backward layer's final
        # state is its output at time 0.
        hs = merge(forward[:, -1, :], backward[:, 0, :], cfg.merge_mode)
      else:
        hs = hs[:, -1, :]
    return nn.Dense(self.outputs, name="head", kernel_init=initializer("glorot_uniform"))(hs)

  def _conv_front_end(self, xs):
    """Time-distributed Conv2D(relu) -> MaxPool -> Flatten on each frame."""
    cfg = self.cfg
    batch, time, _ = xs.shape
    height, width = self.frame_shape
    frames = xs.reshape(batch * time, height, width, -1)
    frames = nn.Conv(cfg.conv_filters, (cfg.conv_kernel, cfg.conv_kernel), padding="VALID",
                     kernel_init=initializer("glorot_uniform"), name="conv")(frames)
    frames = nn.relu(frames)
    frames = nn.max_pool(frames, (cfg.pool_size, cfg.pool_size), strides=(cfg.pool_size, cfg.pool_size))
    return frames.reshape(batch, time, -1)


def merge(forward: jax.Array, backward: jax.Array, mode: str) -> jax.Array:
  """Keras Bidirectional merge of forward and backward outputs."""
  if mode == "concat":
    return jnp.concatenate([forward, backward], axis=-1)
  if mode == "sum":
    return forward + backward
  if mode == "mul":
    return forward * backward
  return (forward + backward) / 2.0


def count_params(params) -> int:
  return int(sum(x.size for x in jax.tree.leaves(params)))


def summary(cfg: ModelConfig, input_shape: tuple[int, ...], outputs: int, *, time_out: int = 0,
            frame_shape: tuple[int, ...] = ()) -> str:
  """A Keras-like text summary: layers, output shapes and parameter counts.

  Args:
    input_shape: `(time, features)` of one sample.
  """
  net = Network(cfg, outputs, time_out=time_out, frame_shape=tuple(frame_shape))
  x = jnp.zeros((1, *input_shape), jnp.float32)
  shapes = jax.eval_shape(lambda: net.init(jax.random.key(0), x))
  params = shapes["params"]
  rows = [f"Model: {cfg.cell.upper()} {cfg.architecture}, input {tuple(input_shape)}"]
  rows.append(f"{'layer':<24}{'parameters':>12}")
  for name, leaves in params.items():
    rows.append(f"{name:<24}{count_params(leaves):>12,}")
  rows.append(f"{'total':<24}{count_params(params):>12,}")
  out = jax.eval_shape(lambda: net.apply({"params": jax.tree.map(jnp.zeros_like, params)}, x))
  rows.append(f"output shape: (None, {', '.join(map(str, out.shape[1:]))})")
  return "\n".join(rows)
