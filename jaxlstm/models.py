"""Flax Linen recurrent networks with Keras-compatible cells and defaults.

Our own cells rather than `flax.linen.LSTMCell` because Keras users expect
Keras' parameterisation: one fused input kernel `[features, gates * units]`
(glorot_uniform over that whole matrix), a fused recurrent kernel
`[units, gates * units]` (orthogonal), and a zero bias with the forget-gate
slice set to 1. Gate order is Keras': LSTM (i, f, c, o), GRU (z, r, h).
The GRU is Keras 3's default `reset_after=True` variant (separate input and
recurrent biases; Keras stores them as one `[2, 3 * units]` bias).

The input projection of every time step is one matmul before the time scan
(the scan then does only the `[batch, units] @ [units, gates * units]`
recurrent product), which is where small-LSTM time goes on a CPU.

Architectures (`ModelConfig.architecture`), each as its Keras model:
  * vanilla: `layers` stacked LSTM/GRU layers, then Dense (many-to-one), or
    with `return_sequences` a Dense on every step (many-to-many); a one-step
    input is one-to-one.
  * bidirectional: `Bidirectional(LSTM)` layers merged by `merge_mode`.
  * cnn_lstm: `TimeDistributed(Conv2D(relu) -> MaxPooling2D -> Flatten)` on
    each frame, then the LSTM stack.
  * encoder_decoder: encoder LSTM(s) -> RepeatVector(time_out) -> decoder
    LSTM -> TimeDistributed(Dense); a one-step input is one-to-many.

Regularisation follows Keras 3.15 (`keras/src/layers/rnn/{lstm,gru}.py`):
dropout masks are drawn once per sequence and reused at every step. With
`recurrent_dropout > 0` Keras switches to `implementation=1`, which draws one
mask per gate for the inputs and for the carried state (and the GRU mixes the
*unmasked* previous state); with dropout alone one input mask serves all gates.

Extras that are not Keras layers, each documented where it is built: layer
normalisation in the cell (Ba et al. 2016), a learned initial state, and
truncated backpropagation through time (`tbptt`).

Networks return pre-activation outputs (logits); `output_activation` is applied
by `activate`, so cross-entropy losses can be computed stably from logits.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxlstm.config import Config, ModelConfig
from jaxlstm.initializers import initializer

GATES = {"lstm": 4, "gru": 3}
# Parameter groups of the recurrent layers: L1/L2 penalties and padding apply to these.
RECURRENT_PREFIXES = ("lstm_", "gru_", "forward_", "backward_", "encoder_", "decoder")
LAYER_NORM_EPSILON = 1e-3  # Keras LayerNormalization's default


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


def _bias_init(cfg: ModelConfig, units: int):
  base = initializer(cfg.bias_init)

  def init(key, shape, dtype=jnp.float32):
    bias = base(key, shape, dtype)
    if cfg.cell == "lstm" and cfg.unit_forget_bias:
      bias = bias.at[units:2 * units].set(1.0)  # Keras: forget-gate slice = 1
    return bias
  return init


def _along_last(v: jax.Array, ndim: int) -> jax.Array:
  # Explicit leading axes: the tests run with jax_numpy_rank_promotion="raise".
  return v.reshape((1,) * (ndim - 1) + v.shape)


def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array | None = None) -> jax.Array:
  """Normalise over the last axis, then scale (and shift).

  A plain function, not `nn.LayerNorm`: it runs inside `lax.scan`, where a
  Linen submodule would create its parameters inside the trace.

  Args:
    x: `[..., n]`.
    scale, bias: `[n]`.
  """
  mean = jnp.mean(x, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
  y = (x - mean) * jax.lax.rsqrt(var + LAYER_NORM_EPSILON) * _along_last(scale, x.ndim)
  return y if bias is None else y + _along_last(bias, x.ndim)


def keep_mask(key: jax.Array, rate: jax.Array | float, shape: Sequence[int]) -> jax.Array:
  """Keras' dropout of a tensor of ones: 0 with probability `rate`, else 1 / (1 - rate)."""
  keep = 1.0 - rate
  return jax.random.bernoulli(key, keep, tuple(shape)).astype(jnp.float32) / keep


def dropout_masks(key: jax.Array, *, batch: int, features: int, units: int, gates: int,
                  rate: jax.Array | float, recurrent_rate: jax.Array | float,
                  use_dropout: bool, use_recurrent: bool) -> tuple[jax.Array | None, jax.Array | None]:
  """The dropout masks of one recurrent layer for one batch of sequences.

  They have no time axis: each sequence keeps its masks at every step (Keras'
  `DropoutRNNCell` caches them for the whole call). Which masks exist is static
  (`use_*`); the rates are traced, so a grid over them shares one compile.

  Args:
    key: this layer's dropout key for this batch.
    batch, features, units, gates: the layer's sizes.
    rate, recurrent_rate: dropout rates (scalars, may be traced).
    use_dropout, use_recurrent: whether `dropout` / `recurrent_dropout` is on.

  Returns:
    `(input_mask, state_mask)`: input_mask is `[batch, features]` (one mask for
    all gates) or, with recurrent dropout on, `[gates, batch, features]` (Keras'
    implementation 1: one mask per gate); state_mask is `[gates, batch, units]`.
    Either is None when off.
  """
  input_key, state_key = jax.random.split(key)
  input_mask = state_mask = None
  if use_dropout:
    shape = (gates, batch, features) if use_recurrent else (batch, features)
    input_mask = keep_mask(input_key, rate, shape)
  if use_recurrent:
    state_mask = keep_mask(state_key, recurrent_rate, (gates, batch, units))
  return input_mask, state_mask


class Recurrent(nn.Module):
  """One LSTM or GRU layer over `[batch, time, features]` -> `[batch, time, units]`.

  Parameters: `kernel [features, gates * units]`, `recurrent_kernel
  [units, gates * units]`, `bias [gates * units]` (+ `recurrent_bias` for the
  GRU); with `learn_initial_state`, `initial_h` (and `initial_c`) `[units]`;
  with `layer_norm`, `norm_inputs_scale`, `norm_recurrent_scale`
  `[gates * units]` (and `norm_cell_scale`, `norm_cell_bias` `[units]`).
  """
  cfg: ModelConfig
  units: int
  reverse: bool = False

  @nn.compact
  def __call__(self, xs: jax.Array, *, input_mask: jax.Array | None = None,
               state_mask: jax.Array | None = None) -> jax.Array:
    """Run the layer.

    Args:
      xs: `[batch, time, features]`.
      input_mask: `[batch, features]` or `[gates, batch, features]` dropout
        mask (already scaled, see `dropout_masks`), the same at every step; or None.
      state_mask: `[gates, batch, units]` recurrent-dropout mask on the carried
        h (per gate), the same at every step; or None.

    Returns:
      `[batch, time, units]` hidden states (time in input order, also when reversed).
    """
    cfg, units = self.cfg, self.units
    is_lstm = cfg.cell == "lstm"
    gates = GATES[cfg.cell]
    batch, time, features = xs.shape
    kernel = self.param("kernel", initializer(cfg.kernel_init), (features, gates * units))
    recurrent = self.param("recurrent_kernel", initializer(cfg.recurrent_init), (units, gates * units))
    bias = self.param("bias", _bias_init(cfg, units), (gates * units,))
    recurrent_bias = None
    if not is_lstm:
      recurrent_bias = self.param("recurrent_bias", initializer(cfg.bias_init), (gates * units,))
    zeros = jnp.zeros((units,), jnp.float32)
    h0 = c0 = zeros
    if cfg.learn_initial_state:
      # A trainable state shared by all sequences, used wherever Keras would start from zeros.
      h0 = self.param("initial_h", nn.initializers.zeros, (units,))
      if is_lstm:
        c0 = self.param("initial_c", nn.initializers.zeros, (units,))
    if cfg.layer_norm:
      # Ba et al. (2016) LSTM: LN(W x) + LN(U h) + b; h = o * tanh(LN(c)). The
      # carried c stays unnormalised; the gate biases play LN's shift.
      ones = nn.initializers.ones
      x_scale = self.param("norm_inputs_scale", ones, (gates * units,))
      h_scale = self.param("norm_recurrent_scale", ones, (gates * units,))
      if is_lstm:
        c_scale = self.param("norm_cell_scale", ones, (units,))
        c_bias = self.param("norm_cell_bias", nn.initializers.zeros, (units,))

    if input_mask is None:
      projected = xs @ kernel  # one matmul for all time steps
    elif input_mask.ndim == 2:
      projected = (xs * input_mask[:, None, :]) @ kernel
    else:  # one mask per gate: gate g sees (x * mask_g) @ kernel_g
      masked = xs[None] * input_mask[:, :, None, :]  # [gates, batch, time, features]
      projected = jnp.einsum("gbtf,fgu->btgu", masked, kernel.reshape(features, gates, units))
      projected = projected.reshape(batch, time, gates * units)
    if cfg.layer_norm:
      projected = layer_norm(projected, x_scale)
    projected = projected + _along_last(bias, 3)
    act = activation(cfg.activation)
    gate_act = activation(cfg.recurrent_activation)

    def recur(h):
      if state_mask is None:
        r = h @ recurrent
      else:
        masked = h[None] * state_mask  # [gates, batch, units]
        r = jnp.einsum("gbu,ugv->bgv", masked, recurrent.reshape(units, gates, units))
        r = r.reshape(batch, gates * units)
      return layer_norm(r, h_scale) if cfg.layer_norm else r

    def lstm_step(carry, x_t):
      h, c = carry
      i, f, g, o = jnp.split(x_t + recur(h), 4, axis=-1)
      c = gate_act(f) * c + gate_act(i) * act(g)
      h = gate_act(o) * act(layer_norm(c, c_scale, c_bias) if cfg.layer_norm else c)
      return (h, c), h

    def gru_step(carry, x_t):
      (h,) = carry
      xz, xr, xh = jnp.split(x_t, 3, axis=-1)
      rz, rr, rh = jnp.split(recur(h) + _along_last(recurrent_bias, 2), 3, axis=-1)
      z = gate_act(xz + rz)
      r = gate_act(xr + rr)
      hh = act(xh + r * rh)  # reset_after=True (Keras 3 default)
      h = z * h + (1.0 - z) * hh  # the unmasked h, as Keras' implementation 1
      return (h,), h

    step = lstm_step if is_lstm else gru_step
    carry0 = (jnp.broadcast_to(h0, (batch, units)),)
    if is_lstm:
      carry0 += (jnp.broadcast_to(c0, (batch, units)),)
    time_major = jnp.swapaxes(projected, 0, 1)
    if cfg.tbptt and cfg.tbptt < time:
      hs = scan_truncated(step, carry0, time_major, cfg.tbptt, reverse=self.reverse)
    else:
      _, hs = jax.lax.scan(step, carry0, time_major, reverse=self.reverse)
    return jnp.swapaxes(hs, 0, 1)


def scan_truncated(step: Callable, carry: Any, xs: jax.Array, k: int, *, reverse: bool = False) -> jax.Array:
  """`lax.scan(step, carry, xs)` outputs, with gradients cut every k steps.

  Truncated backpropagation through time: the time axis is cut into chunks of
  k steps starting at step 0 (the last chunk may be shorter). The carry passes
  from chunk to chunk, so the forward values equal the untruncated scan; only
  its gradient path is stopped at each boundary, so a loss term at step t
  reaches inputs (and parameters through them) of t's own chunk only. The
  first chunk keeps its gradient to `carry` (e.g. a learned initial state).
  The gradients of all chunks are summed into the one update of the batch.

  Args:
    step: `(carry, x_t) -> (carry, y_t)`.
    carry: initial carry pytree.
    xs: `[time, ...]` time-major inputs.
    k: chunk length, >= 1.
    reverse: scan from the last step to the first (chunks keep their
      positions, so the shorter chunk is visited first).

  Returns:
    `[time, ...]` outputs, in input order.
  """
  time = xs.shape[0]
  n_full = time // k

  def chunk(carry, xs_chunk):
    carry, ys = jax.lax.scan(step, carry, xs_chunk, reverse=reverse)
    return jax.tree.map(jax.lax.stop_gradient, carry), ys

  full = xs[:n_full * k].reshape(n_full, k, *xs.shape[1:])
  rest = xs[n_full * k:]
  if reverse and rest.shape[0]:
    carry, ys_rest = chunk(carry, rest)
  carry, ys_full = jax.lax.scan(chunk, carry, full, reverse=reverse)
  ys = ys_full.reshape(n_full * k, *ys_full.shape[2:])
  if rest.shape[0]:
    if not reverse:
      carry, ys_rest = chunk(carry, rest)
    ys = jnp.concatenate([ys, ys_rest], axis=0)
  return ys


class Network(nn.Module):
  """The model of a config: (optional front end) -> recurrent layers -> Dense head.

  Call with `xs [batch, time, features]`; returns logits `[batch, outputs]`
  (many-to-one) or `[batch, time_out, outputs]` (many-to-many, encoder-decoder).

  Every logical (Keras) layer's output is sown into the `intermediates`
  collection (`layers`: a tuple of `{row name: output}`), which `layer_table` reads; in ordinary
  applies the collection is immutable and sowing does nothing.
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
      dropout_key: key for this batch's dropout masks (training only); None
        disables dropout (evaluation).
      rates: `(dropout, recurrent_dropout)` rates (traced scalars), used with `dropout_key`.

    Returns:
      `[batch, outputs]` or `[batch, time_out or time, outputs]` logits.
    """
    cfg = self.cfg
    if cfg.architecture == "cnn_lstm":
      xs = self._conv_front_end(xs)
    if cfg.input_projection:
      # Keras Dense on a sequence acts per step (linear, as Dense's default).
      xs = nn.Dense(cfg.input_projection, name="input_projection",
                    kernel_init=initializer(cfg.kernel_init))(xs)
      self._show("input_projection", xs)
    layer_index = itertools.count()  # creation order -> each layer's own dropout key

    def recurrent(name, hs, reverse=False):
      index = next(layer_index)
      masks = (None, None)
      if dropout_key is not None and cfg.uses_dropout:
        masks = dropout_masks(
            jax.random.fold_in(dropout_key, index), batch=hs.shape[0], features=hs.shape[-1],
            units=cfg.cells, gates=GATES[cfg.cell], rate=rates[0], recurrent_rate=rates[1],
            use_dropout=cfg.dropout > 0, use_recurrent=cfg.recurrent_dropout > 0)
      return Recurrent(cfg, cfg.cells, reverse=reverse, name=name)(
          hs, input_mask=masks[0], state_mask=masks[1])

    hs = xs
    if cfg.architecture == "encoder_decoder":
      for layer in range(cfg.layers):
        hs = recurrent(f"encoder_{layer}", hs)
        self._show(f"encoder_{layer}", hs if layer < cfg.layers - 1 else hs[:, -1, :])
      context = hs[:, -1, :]
      hs = jnp.broadcast_to(context[:, None, :], (context.shape[0], self.time_out, context.shape[-1]))
      self._show("repeat_vector", hs)
      hs = recurrent("decoder", hs)
      self._show("decoder", hs)
    else:
      for layer in range(cfg.layers):
        sequences = cfg.return_sequences or layer < cfg.layers - 1
        if cfg.architecture == "bidirectional":
          name = f"bidirectional_{layer}"
          forward = recurrent(f"forward_{layer}", hs)
          backward = recurrent(f"backward_{layer}", hs, reverse=True)
          if sequences:
            hs = merge(forward, backward, cfg.merge_mode)
          else:
            # Keras Bidirectional(return_sequences=False): the backward layer's
            # final state is its output at time 0.
            hs = merge(forward[:, -1, :], backward[:, 0, :], cfg.merge_mode)
        else:
          name = f"{cfg.cell}_{layer}"
          hs = recurrent(name, hs)
          if not sequences:
            hs = hs[:, -1, :]
        self._show(name, hs)
    # On `[batch, time, units]` this Dense is Keras' TimeDistributed(Dense).
    out = nn.Dense(self.outputs, name="head", kernel_init=initializer("glorot_uniform"))(hs)
    self._show("head", out)
    return out

  def _show(self, name: str, value: jax.Array) -> None:
    # One sown tuple of {row: output}, so that rows keep call order (a
    # collection's own keys come back sorted).
    self.sow("intermediates", "layers", {name: value})

  def _conv_front_end(self, xs):
    """Time-distributed Conv2D(relu, valid) -> MaxPool(valid) -> Flatten on each frame."""
    cfg = self.cfg
    batch, time, _ = xs.shape
    height, width = self.frame_shape
    frames = xs.reshape(batch * time, height, width, -1)  # row-major frames, channels last
    frames = nn.Conv(cfg.conv_filters, (cfg.conv_kernel, cfg.conv_kernel), padding="VALID",
                     kernel_init=initializer("glorot_uniform"), name="conv")(frames)
    frames = nn.relu(frames)
    self._show("conv", frames.reshape(batch, time, *frames.shape[1:]))
    frames = nn.max_pool(frames, (cfg.pool_size, cfg.pool_size), strides=(cfg.pool_size, cfg.pool_size))
    self._show("pool", frames.reshape(batch, time, *frames.shape[1:]))
    xs = frames.reshape(batch, time, -1)
    self._show("flatten", xs)
    return xs


def merge(forward: jax.Array, backward: jax.Array, mode: str) -> jax.Array:
  """Keras Bidirectional merge of forward and backward outputs (last axis = units)."""
  if mode == "concat":
    return jnp.concatenate([forward, backward], axis=-1)
  if mode == "sum":
    return forward + backward
  if mode == "mul":
    return forward * backward
  return (forward + backward) / 2.0


def count_params(params) -> int:
  """Number of scalars in a parameter pytree (arrays or shape structs)."""
  return int(sum(x.size for x in jax.tree.leaves(params)))


def layer_table(cfg: ModelConfig, input_shape: Sequence[int], outputs: int, *, time_out: int = 0,
                frame_shape: Sequence[int] = ()) -> list[dict[str, Any]]:
  """The model's layers as Keras lists them, with output shapes and parameter counts.

  Shapes come from tracing the real network (no compile, no FLOPs).

  Args:
    cfg: the model config.
    input_shape: `(time, features)` of one sample.
    outputs: width of the Dense head.
    time_out: encoder-decoder output length.
    frame_shape: cnn_lstm `(height, width)`.

  Returns:
    One dict per layer in order: `name`, `type` (the Keras layer),
    `output_shape` (with None for the batch) and `params`.
  """
  net = Network(cfg, outputs, time_out=time_out, frame_shape=tuple(frame_shape))
  x = jnp.zeros((1, *input_shape), jnp.float32)

  def trace():
    params = net.init(jax.random.key(0), x)["params"]
    _, state = net.apply({"params": params}, x, mutable=["intermediates"])
    return params, state["intermediates"]

  params, sown = jax.eval_shape(trace)
  cell = cfg.cell.upper()
  types = {"conv": "TimeDistributed(Conv2D)", "pool": "TimeDistributed(MaxPooling2D)",
           "flatten": "TimeDistributed(Flatten)", "input_projection": "Dense",
           "repeat_vector": "RepeatVector", "decoder": cell}
  rows = []
  for (name, value), in (row.items() for row in sown["layers"]):
    if name.startswith("bidirectional_"):
      layer = name.split("_")[1]
      kind, owners = f"Bidirectional({cell})", (f"forward_{layer}", f"backward_{layer}")
    elif name == "head":
      kind, owners = ("TimeDistributed(Dense)" if value.ndim == 3 else "Dense"), (name,)
    else:
      kind, owners = types.get(name, cell), (name,)
    rows.append({"name": name, "type": kind, "output_shape": (None, *value.shape[1:]),
                 "params": sum(count_params(params[o]) for o in owners if o in params)})
  if sum(r["params"] for r in rows) != count_params(params):
    raise RuntimeError(f"layer_table left parameters of {sorted(params)} out of its rows")  # a layer without a row
  return rows


def summary(cfg: ModelConfig, input_shape: Sequence[int], outputs: int, *, time_out: int = 0,
            frame_shape: Sequence[int] = ()) -> str:
  """A Keras-like text summary: one row per layer with its output shape and parameter count.

  Counts equal Keras' for the same model: LSTM 4 * (units * (features + units)
  + units), GRU (reset_after) 3 * (units * (features + units) + 2 * units),
  Dense units * (inputs + 1), Bidirectional twice its layer. Layer norm and a
  learned initial state (not in Keras' LSTM) add their parameters to the row.

  Args:
    cfg: the model config.
    input_shape: `(time, features)` of one sample.
    outputs: width of the Dense head.
    time_out: encoder-decoder output length.
    frame_shape: cnn_lstm `(height, width)`.

  Returns:
    The table as text, e.g.::

      Model: vanilla LSTM, input (None, 5, 1)
      Layer (type)                      Output Shape            Param #
      =================================================================
      lstm_0 (LSTM)                     (None, 5, 4)                 96
      lstm_1 (LSTM)                     (None, 4)                   144
      head (Dense)                      (None, 1)                     5
      =================================================================
      Total params: 245
  """
  rows = layer_table(cfg, input_shape, outputs, time_out=time_out, frame_shape=frame_shape)
  extras = [name for name, on in (("layer_norm", cfg.layer_norm), ("learned initial state", cfg.learn_initial_state),
                                  (f"tbptt {cfg.tbptt}", cfg.tbptt)) if on]
  title = f"Model: {cfg.architecture} {cfg.cell.upper()}, input {(None, *tuple(input_shape))}"
  lines = [title + (f" ({', '.join(extras)})" if extras else "")]
  lines.append(f"{'Layer (type)':<42}{'Output Shape':<22}{'Param #':>9}")
  rule = "=" * 73
  lines.append(rule)
  for r in rows:
    label = f"{r['name']} ({r['type']})"
    shape = "(" + ", ".join(map(str, r["output_shape"])) + ")"
    lines.append(f"{label:<42}{shape:<22}{r['params']:>9,}")
  lines.append(rule)
  lines.append(f"Total params: {sum(r['params'] for r in rows):,}")
  return "\n".join(lines)


# ---------------------------------------------------------------------------
# Penalties and padding: they name the layers above, so they live beside them.


def penalty(params, hp: Mapping[str, jax.Array]) -> jax.Array:
  """Keras' L1/L2 regularisation of the recurrent layers: sum of l1 |w| + l2 w^2.

  Args:
    params: one network's parameters.
    hp: traced strengths `kernel_l1`, `kernel_l2`, `recurrent_l1`, `recurrent_l2`,
      `bias_l1`, `bias_l2` (scalars).
  """
  total = jnp.zeros([], jnp.float32)
  for layer, leaves in params.items():
    if not layer.startswith(RECURRENT_PREFIXES):
      continue
    for leaf_name, kind in (("kernel", "kernel"), ("recurrent_kernel", "recurrent"),
                            ("bias", "bias"), ("recurrent_bias", "bias")):
      if leaf_name in leaves:
        w = leaves[leaf_name]
        total = total + hp[f"{kind}_l1"] * jnp.sum(jnp.abs(w)) + hp[f"{kind}_l2"] * jnp.sum(w * w)
  return total


def can_pad_cells(cfg: Config) -> bool:
  """Whether `cfg` can run padded to more cells with results equal to its own width.

  Padded units start at zero and get exactly zero gradients for plain stacked
  LSTM/GRU layers; layer norm (statistics over units), dropout (mask shapes),
  a learned initial state and the other architectures are left unpadded.
  """
  m = cfg.model
  return (m.architecture == "vanilla" and not m.layer_norm and not m.learn_initial_state
          and m.dropout == 0 and m.recurrent_dropout == 0 and m.input_projection == 0
          and m.tbptt == 0)


def pad_params(params, cells: int, max_cells: int, cell: str, *, leading: int = 0):
  """Zero-pad a network's parameters from `cells` to `max_cells` units.

  Every gate block of the fused kernels and biases is padded separately, so
  gate g of unit j sits at column `g * max_cells + j` as in the wide model.
  `leading` counts leading batch axes (1 for stacked members).
  """
  return _resize(params, cells, max_cells, cell, leading)


def unpad_params(params, cells: int, max_cells: int, cell: str, *, leading: int = 0):
  """Inverse of `pad_params`: keep the first `cells` units of each gate block."""
  return _resize(params, max_cells, cells, cell, leading)


def _resize(params, old: int, new: int, cell: str, leading: int):
  gates = GATES[cell]

  # numpy for host arrays (results on their way out: eager jnp would compile
  # a tiny program per leaf shape), jax.numpy inside traced code.
  def xp(x):
    return np if isinstance(x, np.ndarray) else jnp

  def units_axis(x, axis):  # pad/crop a plain units axis
    axis += leading
    if new > old:
      widths = [(0, 0)] * x.ndim
      widths[axis] = (0, new - old)
      return xp(x).pad(x, widths)
    index = [slice(None)] * x.ndim
    index[axis] = slice(0, new)
    return x[tuple(index)]

  def gated_axis(x, axis):  # [.., gates * units] -> per gate
    axis += leading
    blocks = xp(x).split(x, gates, axis=axis)
    return xp(x).concatenate([units_axis(b, axis - leading) for b in blocks], axis=axis)

  out = {}
  for layer, leaves in params.items():
    if layer.startswith(RECURRENT_PREFIXES):
      first_layer = layer.endswith("_0")
      new_leaves = {}
      for name, x in leaves.items():
        if name == "kernel":
          x = gated_axis(x, 1)
          if not first_layer:
            x = units_axis(x, 0)
        elif name == "recurrent_kernel":
          x = units_axis(gated_axis(x, 1), 0)
        elif name in ("bias", "recurrent_bias"):
          x = gated_axis(x, 0)
        new_leaves[name] = x
      out[layer] = new_leaves
    elif layer == "head":
      out[layer] = {"kernel": units_axis(leaves["kernel"], 0), "bias": leaves["bias"]}
    else:
      raise ValueError(f"cannot pad layer {layer!r}: padding supports plain stacked LSTM/GRU layers only.")
  return out
