"""The Flax Linen modules: `Recurrent` (one LSTM or GRU layer) and `Network` (a config's model).

What they compute, and how it matches Keras, is documented in `jaxlstm.models`, which
holds their pieces (cells, time loops, dropout masks, padding). They live apart so
that flax (~0.2-0.3 s of imports) loads only when a network is traced: a run whose
programs come from the program store (`jaxlstm.compiled`) never imports it.
"""
from __future__ import annotations

import itertools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlstm.config import ModelConfig
from jaxlstm.initializers import initializer
from jaxlstm.models import (DENSE_DROPOUT_STREAM, GATES, Widths, _at, _bias_init, activation, dropout_masks,
                            fused_layer, keep_mask, merge, scan_layer, widths_of)


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
  act: str | None = None  # the cell activation; default `cfg.activation` (one for every layer)

  @nn.compact
  def __call__(self, xs: jax.Array, *, input_mask: jax.Array | None = None,
               state_mask: jax.Array | None = None, step_mask: jax.Array | None = None,
               zero_masked_output: bool = False) -> jax.Array:
    """Run the layer.

    Args:
      xs: `[batch, time, features]`.
      input_mask: `[batch, features]` or `[gates, batch, features]` dropout
        mask (already scaled, see `dropout_masks`), the same at every step; or None.
      state_mask: `[gates, batch, units]` recurrent-dropout mask on the carried
        h (per gate), the same at every step; or None.
      step_mask: `[batch, time]` bool, False at steps to skip (Keras masking): the
        state is carried through them unchanged; or None.
      zero_masked_output: output zeros at skipped steps (Keras' `zero_output_for_mask`,
        which `Bidirectional` sets when returning sequences) instead of the previous output.

    Returns:
      `[batch, time, units]` hidden states (time in input order, also when reversed).
    """
    cfg, units = self.cfg, self.units
    is_lstm = cfg.cell == "lstm"
    gates = GATES[cfg.cell]
    features = xs.shape[-1]
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
      c_scale = c_bias = None
      x_scale = self.param("norm_inputs_scale", ones, (gates * units,))
      h_scale = self.param("norm_recurrent_scale", ones, (gates * units,))
      if is_lstm:
        c_scale = self.param("norm_cell_scale", ones, (units,))
        c_bias = self.param("norm_cell_bias", nn.initializers.zeros, (units,))
    if cfg.kernel == "fused":  # opt-in (config refuses layer norm, tbptt and other activations)
      return fused_layer(cfg.cell, xs, kernel, bias, recurrent, recurrent_bias, (h0, c0) if is_lstm else (h0,),
                         input_mask=input_mask, state_mask=state_mask, step_mask=step_mask,
                         reverse=self.reverse, zero_output=zero_masked_output)

    norms = (x_scale, h_scale, c_scale, c_bias) if cfg.layer_norm else None
    return scan_layer(cfg, activation(self.act or cfg.activation), xs, kernel, bias, recurrent, recurrent_bias,
                      (h0, c0), norms, input_mask=input_mask, state_mask=state_mask, step_mask=step_mask,
                      reverse=self.reverse, zero_output=zero_masked_output,
                      # Keras' zero state, known here: one step then leaves out h0 @ recurrent. Not
                      # with L1/L2: the recurrent kernel's gradient, the penalty's alone, would round
                      # differently (XLA fuses it otherwise), and numbers must not move.
                      zero_initial=not cfg.learn_initial_state and not cfg.uses_penalty)


class Network(nn.Module):
  """The model of a config: (Masking) -> (front end) -> recurrent layers -> hidden Dense -> head.

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
  widths: Widths | None = None  # the sizes to build at (a padded group's); default the config's

  @nn.compact
  def __call__(self, xs: jax.Array, *, dropout_key: jax.Array | None = None,
               rates: Any = None) -> jax.Array:
    """Forward pass.

    Args:
      xs: `[batch, time, features]`.
      dropout_key: key for this batch's dropout masks (training only); None
        disables dropout (evaluation).
      rates: `(dropout, recurrent_dropout[, dense_dropout])` rates, used with
        `dropout_key`; the first two are scalars or `[layers]` vectors (one per
        recurrent layer), all may be traced.

    Returns:
      `[batch, outputs]` or `[batch, time_out or time, outputs]` logits.
    """
    cfg = self.cfg
    sizes = self.widths or widths_of(cfg)
    step_mask = None
    if cfg.mask_value is not None:
      # Keras Masking: a step whose features all equal mask_value is skipped downstream.
      step_mask = jnp.any(xs != cfg.mask_value, axis=-1)
      xs = xs * step_mask[..., None].astype(xs.dtype)
      self._show("masking", xs)
    if cfg.architecture == "cnn_lstm":
      xs = self._conv_front_end(xs)
    if cfg.input_projection:
      # Keras Dense on a sequence acts per step (linear, as Dense's default).
      xs = nn.Dense(cfg.input_projection, name="input_projection",
                    kernel_init=initializer(cfg.kernel_init))(xs)
      self._show("input_projection", xs)
    hs = self._recurrent_stack(xs, sizes, step_mask, dropout_key, rates)
    hs = self._dense_layers(hs, sizes, dropout_key, rates)
    # On `[batch, time, units]` this Dense is Keras' TimeDistributed(Dense).
    out = nn.Dense(self.outputs, name="head", kernel_init=initializer("glorot_uniform"))(hs)
    self._show("head", out)
    return out

  def _recurrent_stack(self, xs, sizes: Widths, step_mask, dropout_key, rates):
    """The recurrent layers (plain, bidirectional or encoder-decoder), each with its own dropout masks."""
    cfg = self.cfg
    layer_index = itertools.count()  # creation order -> each layer's own dropout key
    dropouts, recurrent_dropouts = cfg.layer_values("dropout"), cfg.layer_values("recurrent_dropout")
    activations = cfg.layer_values("activation")

    def recurrent(name, hs, layer, *, reverse=False, mask=None, zero_masked=False):
      index = next(layer_index)
      masks = (None, None)
      if dropout_key is not None and cfg.uses_dropout:
        masks = dropout_masks(
            jax.random.fold_in(dropout_key, index), batch=hs.shape[0], features=hs.shape[-1],
            units=sizes.units[layer], gates=GATES[cfg.cell], rate=_at(rates[0], layer),
            recurrent_rate=_at(rates[1], layer), use_dropout=dropouts[layer] > 0,
            use_recurrent=recurrent_dropouts[layer] > 0)
      return Recurrent(cfg, sizes.units[layer], reverse=reverse, act=activations[layer], name=name)(
          hs, input_mask=masks[0], state_mask=masks[1], step_mask=mask, zero_masked_output=zero_masked)

    hs = xs
    depth = len(sizes.units)
    if cfg.architecture == "encoder_decoder":
      for layer in range(depth - 1):
        hs = recurrent(f"encoder_{layer}", hs, layer, mask=step_mask)
        self._show(f"encoder_{layer}", hs if layer < depth - 2 else hs[:, -1, :])
      context = hs[:, -1, :]
      hs = jnp.broadcast_to(context[:, None, :], (context.shape[0], self.time_out, context.shape[-1]))
      self._show("repeat_vector", hs)
      hs = recurrent("decoder", hs, depth - 1)  # Keras' RepeatVector passes no mask on
      self._show("decoder", hs)
    else:
      for layer in range(depth):
        sequences = cfg.return_sequences or layer < depth - 1
        if cfg.architecture == "bidirectional":
          name = f"bidirectional_{layer}"
          # Keras' Bidirectional outputs zeros at masked steps when it returns sequences.
          zero = sequences and step_mask is not None
          forward = recurrent(f"forward_{layer}", hs, layer, mask=step_mask, zero_masked=zero)
          backward = recurrent(f"backward_{layer}", hs, layer, reverse=True, mask=step_mask, zero_masked=zero)
          if sequences:
            hs = merge(forward, backward, cfg.merge_mode)
          else:
            # Keras Bidirectional(return_sequences=False): the backward layer's
            # final state is its output at time 0.
            hs = merge(forward[:, -1, :], backward[:, 0, :], cfg.merge_mode)
        else:
          name = f"{cfg.cell}_{layer}"
          hs = recurrent(name, hs, layer, mask=step_mask)
          if not sequences:
            hs = hs[:, -1, :]
        self._show(name, hs)
    return hs

  def _dense_layers(self, hs, sizes: Widths, dropout_key, rates):
    """The hidden Dense layers (Keras Dense(width, activation), then Dropout), per step on sequences."""
    cfg = self.cfg
    dense_act = activation(cfg.dense_activation)
    for j, width in enumerate(sizes.dense):
      # Keras Dense(width, activation): glorot_uniform kernel, zero bias; per step on sequences.
      hs = dense_act(nn.Dense(width, name=f"dense_{j}", kernel_init=initializer("glorot_uniform"))(hs))
      self._show(f"dense_{j}", hs)
      if cfg.dense_dropout > 0:
        if dropout_key is not None:
          hs = hs * keep_mask(jax.random.fold_in(dropout_key, DENSE_DROPOUT_STREAM + j), rates[2], hs.shape)
        self._show(f"dropout_{j}", hs)
    return hs

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
