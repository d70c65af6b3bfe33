"""Recurrent networks with Keras-compatible cells and defaults: their pieces, and what they compute.

The Flax Linen modules themselves, `Recurrent` and `Network`, are in `jaxlstm.networks`
(also reachable here as `models.Network`, `models.Recurrent`); this module holds what
they are built from and needs no flax, which a run whose programs are stored never loads.

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
  * vanilla: stacked LSTM/GRU layers (one width each, `ModelConfig.widths`),
    then Dense (many-to-one), or with `return_sequences` a Dense on every step
    (many-to-many); a one-step input is one-to-one.
  * bidirectional: `Bidirectional(LSTM)` layers merged by `merge_mode`.
  * cnn_lstm: `TimeDistributed(Conv2D(relu) -> MaxPooling2D -> Flatten)` on
    each frame, then the LSTM stack.
  * encoder_decoder: encoder LSTM(s) -> RepeatVector(time_out) -> decoder
    LSTM -> TimeDistributed(Dense); a one-step input is one-to-many. The last
    width is the decoder's (`units = [75, 50]`: LSTM(75) encoder, LSTM(50) decoder).
Every architecture may add hidden `Dense(width, dense_activation)` layers
(`dense`, optionally followed by `Dropout(dense_dropout)`) before the head, and
a Keras `Masking(mask_value)` in front (not cnn_lstm): masked steps carry the
state through and repeat the previous output (`masked_step`), as Keras' RNN
does with `zero_output_for_mask=False` (`Bidirectional` returning sequences
outputs zeros there, as Keras forces it to).

A network can be built wider than its config (`Network.widths`, a padded
group's sizes); `pad_params` / `unpad_params` move parameters between the two.

Regularisation follows Keras 3.15 (`keras/src/layers/rnn/{lstm,gru}.py`):
dropout masks are drawn once per sequence and reused at every step. With
`recurrent_dropout > 0` Keras switches to `implementation=1`, which draws one
mask per gate for the inputs and for the carried state (and the GRU mixes the
*unmasked* previous state); with dropout alone one input mask serves all gates.

Two time loops (`ModelConfig.kernel`): "scan", autodiff of `lax.scan` over the
cell (the default, and every number published before the choice existed), and
"fused" (`fused_layer`), the same cell written out for speed with its own
backward pass; it rounds differently, so it is opt-in. Within "scan", the Keras
cells (`lstm_cell`, `gru_cell`) and a one-feature input's projection
(`_time_major_input`) write out autodiff's own backward pass so that less is
stacked and copied per step: the same numbers, bit for bit.

Extras that are not Keras layers, each documented where it is built: layer
normalisation in the cell (Ba et al. 2016), a learned initial state, and
truncated backpropagation through time (`tbptt`).

Networks return pre-activation outputs (logits); `output_activation` is applied
by `activate`, so cross-entropy losses can be computed stably from logits.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxlstm.config import ZERO_PRESERVING, Config, ModelConfig
from jaxlstm.initializers import initializer

GATES = {"lstm": 4, "gru": 3}


def __getattr__(name: str) -> Any:
  if name in ("Network", "Recurrent"):  # the Flax modules, loaded (with flax) on first use
    from jaxlstm import networks
    return getattr(networks, name)
  raise AttributeError(f"module 'jaxlstm.models' has no attribute {name!r}")
# Parameter groups of the recurrent layers: L1/L2 penalties and padding apply to these.
RECURRENT_PREFIXES = ("lstm_", "gru_", "forward_", "backward_", "encoder_", "decoder")
LAYER_NORM_EPSILON = 1e-3  # Keras LayerNormalization's default
# Hidden Dense layer j draws its dropout mask from fold_in(dropout_key, DENSE_DROPOUT_STREAM + j),
# apart from the recurrent layers' fold_in(dropout_key, creation index).
DENSE_DROPOUT_STREAM = 1 << 20


class Widths(NamedTuple):
  """The sizes a network is built at: what zero-padding changes, and a member layout's key.

  Attributes:
    units: width of each recurrent layer, input to output (`ModelConfig.widths`).
    dense: width of each hidden Dense layer (`ModelConfig.dense`).
  """
  units: tuple[int, ...]
  dense: tuple[int, ...] = ()


def widths_of(cfg: ModelConfig, cells: int | Widths | None = None) -> Widths:
  """The `Widths` of a model config; `cells` (an int: every recurrent layer at that width) overrides."""
  if isinstance(cells, Widths):
    return cells
  if cells is not None:
    return Widths((int(cells),) * len(cfg.widths), tuple(cfg.dense))
  return Widths(tuple(cfg.widths), tuple(cfg.dense))


def widest(sizes: Sequence[Widths]) -> Widths:
  """Layer-by-layer maximum of equally deep `Widths`: the width a padded group runs at."""
  return Widths(tuple(map(max, zip(*(w.units for w in sizes)))),
                tuple(map(max, zip(*(w.dense for w in sizes)))))


def _at(value: Any, layer: int) -> Any:
  """A per-layer value: a scalar serves every layer, a `[layers]` vector gives layer `layer`'s."""
  return value if jnp.ndim(value) == 0 else value[layer]


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


def _project(xs: jax.Array, kernel: jax.Array, input_mask: jax.Array | None, gates: int, units: int) -> jax.Array:
  """`scan_layer`'s input projection of `[batch, time, features]` for all time steps at once.

  `input_mask`: None, `[batch, features]` (dropout), or `[gates, batch, features]`
  (with recurrent dropout, one mask per gate: gate g sees `(x * mask_g) @ kernel_g`).
  """
  if input_mask is None:
    return xs @ kernel  # one matmul for all time steps
  if input_mask.ndim == 2:
    return (xs * input_mask[:, None, :]) @ kernel
  batch, time, features = xs.shape
  masked = xs[None] * input_mask[:, :, None, :]  # [gates, batch, time, features]
  projected = jnp.einsum("gbtf,fgu->btgu", masked, kernel.reshape(features, gates, units))
  return projected.reshape(batch, time, gates * units)


def _batch_major_input(xs, kernel, bias):
  return xs @ kernel + _along_last(bias, 3)


@jax.custom_vjp
def _time_major_input(xs: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
  """`swapaxes(xs @ kernel + bias, 0, 1)` for one feature: `[time, batch, gates * units]`.

  One feature's projection is a product per element, so it is formed time-major
  from the start (no sum whose order could move): XLA writes it where the scan
  reads it instead of copying the batch-major matmul's output over. The backward
  pass is the batch-major form's own, so the kernel's and bias's gradients sum
  over batch and time in the order they always have.
  """
  return jnp.swapaxes(xs, 0, 1) * _along_last(kernel[0], 3) + _along_last(bias, 3)


def _time_major_input_fwd(xs, kernel, bias):
  return _time_major_input(xs, kernel, bias), (xs, kernel, bias)


def _time_major_input_bwd(saved, d_time_major):
  return jax.vjp(_batch_major_input, *saved)[1](jnp.swapaxes(d_time_major, 0, 1))


_time_major_input.defvjp(_time_major_input_fwd, _time_major_input_bwd)


def _scan_inputs(cfg: ModelConfig, xs, kernel, bias, input_mask, x_scale, gates: int, units: int) -> jax.Array:
  """`scan_layer`'s projected inputs `[time, batch, gates * units]`, bias (and layer norm) applied."""
  # One feature over several steps: formed time-major (one step's swap moves nothing, and the
  # custom rule would cost compile time); not before layer norm, which it would fuse into.
  if input_mask is None and xs.shape[-1] == 1 and not cfg.layer_norm and xs.shape[1] > 1:
    return _time_major_input(xs, kernel, bias)
  projected = _project(xs, kernel, input_mask, gates, units)
  if cfg.layer_norm:
    projected = layer_norm(projected, x_scale)
  return jnp.swapaxes(projected + _along_last(bias, 3), 0, 1)


def scan_layer(cfg: ModelConfig, act: Callable, xs, kernel, bias, recurrent, recurrent_bias, initial, norms, *,
               input_mask=None, state_mask=None, step_mask=None, reverse: bool = False, zero_output: bool = False,
               zero_initial: bool = False):
  """`Recurrent`'s default time loop (`model.kernel = "scan"`): the Keras cell under `lax.scan`.

  Args:
    act: the cell activation; `initial`: `(h0, c0)` `[units]` (c0 unused by a GRU);
    norms: `(x_scale, h_scale, c_scale, c_bias)` with layer norm, else None;
    zero_initial: `initial` is known to be zeros (Keras' state, not a learnt one);
      the rest as `Recurrent.__call__`.

  Returns:
    `[batch, time, units]` hidden states (time in input order).
  """
  is_lstm = cfg.cell == "lstm"
  gates = GATES[cfg.cell]
  batch, time, _ = xs.shape
  units = recurrent.shape[0]
  h0, c0 = initial
  x_scale, h_scale, c_scale, c_bias = norms if norms is not None else (None,) * 4
  time_major = _scan_inputs(cfg, xs, kernel, bias, input_mask, x_scale, gates, units)
  gate_act = activation(cfg.recurrent_activation)
  # One unmasked step from the zero state: `h0 @ recurrent` is exactly zero, so the
  # step leaves the recurrent product (and its gradient, a batched matmul of the
  # zero state per member) out. Every other value is computed as in the loop.
  single_zero_step = zero_initial and time == 1 and step_mask is None

  def recur(h):
    if single_zero_step:
      return None
    r = _product(h, recurrent, state_mask)
    return layer_norm(r, h_scale) if cfg.layer_norm else r

  # Keras' own activations: the cell with a leaner backward pass, the same numbers (`lstm_cell`,
  # `gru_cell`; the LSTM's layer norm acts inside the cell, the GRU's only on its inputs).
  keras_cell = (not single_zero_step and cfg.recurrent_activation == "sigmoid" and act is jnp.tanh
                and not (is_lstm and cfg.layer_norm))

  def lstm_step(carry, x_t):
    h, c = carry
    product = recur(h)
    if keras_cell:
      h, c = lstm_cell(x_t + product, c)
      return (h, c), h
    i, f, g, o = jnp.split(x_t if product is None else x_t + product, 4, axis=-1)
    if single_zero_step and not cfg.layer_norm:
      # From c = 0 the forget gate's sigmoid is not needed: its pre-activation times c is the same zero,
      # with the same gradient d c * c for its columns (NaN where a diverged repeat's is). Not with layer
      # norm (it normalises over all gates): there the last bits of some numbers moved, in both forms tried.
      c = f * c + gate_act(i) * act(g)
    else:
      c = gate_act(f) * c + gate_act(i) * act(g)
    h = gate_act(o) * act(layer_norm(c, c_scale, c_bias) if cfg.layer_norm else c)
    return (h, c), h

  def gru_step(carry, x_t):
    (h,) = carry
    xz, xr, xh = jnp.split(x_t, 3, axis=-1)
    product = recur(h)
    r_bias = _along_last(recurrent_bias, 2)
    # Broadcast to the batch as `product + r_bias` is: its gradient then sums the same way.
    summed = jnp.broadcast_to(r_bias, x_t.shape) if product is None else product + r_bias
    if keras_cell:
      h = gru_cell(x_t, summed, h)
      return (h,), h
    rz, rr, rh = jnp.split(summed, 3, axis=-1)
    z = gate_act(xz + rz)
    r = gate_act(xr + rr)
    hh = act(xh + r * rh)  # reset_after=True (Keras 3 default)
    h = z * h + (1.0 - z) * hh  # the unmasked h, as Keras' implementation 1
    return (h,), h

  step = lstm_step if is_lstm else gru_step
  carry0 = tuple(jnp.broadcast_to(s, (batch, units)) for s in ((h0, c0) if is_lstm else (h0,)))
  if step_mask is not None:
    step = masked_step(step, zero_output)
    time_major = (time_major, jnp.swapaxes(step_mask, 0, 1))
  truncate = cfg.tbptt if cfg.tbptt and cfg.tbptt < time else 0
  hs = _over_time(step, carry0, time_major, one_step=single_zero_step, truncate=truncate, reverse=reverse)
  return jnp.swapaxes(hs, 0, 1)


# jax's tanh rule: `d * one_minus_square(t)` from jax 0.12 (which added that op), `(d + d t)(1 - t)` before.
_ONE_MINUS_SQUARE = getattr(jax.lax, "one_minus_square", None)


@jax.custom_vjp
def lstm_cell(z: jax.Array, c: jax.Array) -> tuple[jax.Array, jax.Array]:
  """The Keras LSTM cell after its matmuls (sigmoid gates, tanh): `(h, c)` from `z = x W + h U + b`.

  Args:
    z: `[..., 4 * units]` pre-activations of the gates i, f, c, o.
    c: `[..., units]` the cell state the step starts from.

  The numbers are autodiff's of the plain form, bit for bit: the backward pass
  below performs jax's own transposes of sigmoid, tanh, products and sums, in
  autodiff's order. Inside a scan, autodiff of the plain form stacks twelve
  arrays per step for the backward pass (h, c, five activations and their five
  derivative factors); with this cell it stacks seven and forms the factors in
  the backward pass, where they fuse into work done anyway (W2 trains ~7% faster:
  benchmarks/RESULTS.md, "fourteenth session").
  """
  return _lstm_cell_fwd(z, c)[0]


def _lstm_cell_fwd(z, c):
  i, f, g, o = jnp.split(z, 4, axis=-1)
  si, sf, tg, so = jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)
  c_new = sf * c + si * tg
  tc = jnp.tanh(c_new)
  return (so * tc, c_new), (c, si, sf, tg, so, tc)


def _sigmoid_transpose(d: jax.Array, s: jax.Array) -> jax.Array:
  """d through `s = sigmoid(x)`, as autodiff: `d * (s * (1 - s))`."""
  return d * (s * (1.0 - s))


def _add_tanh_transpose(acc: jax.Array | None, d: jax.Array, t: jax.Array) -> jax.Array:
  """`acc` (None: nothing) plus d through `t = tanh(x)`, with autodiff's terms in autodiff's order."""
  if _ONE_MINUS_SQUARE is not None:
    through = d * _ONE_MINUS_SQUARE(t)
    return through if acc is None else acc + through
  u = d * (1.0 - t)  # the rule's two terms, u and u * t, reach x one at a time
  return u + u * t if acc is None else (acc + u) + u * t


def _lstm_cell_bwd(saved, cotangents):
  c, si, sf, tg, so, tc = saved
  d_h, d_c_new = cotangents
  d_c = _add_tanh_transpose(d_c_new, so * d_h, tc)
  d_i = _sigmoid_transpose(d_c * tg, si)
  d_f = _sigmoid_transpose(d_c * c, sf)
  d_g = _add_tanh_transpose(None, si * d_c, tg)
  d_o = _sigmoid_transpose(d_h * tc, so)
  return jnp.concatenate([d_i, d_f, d_g, d_o], axis=-1), sf * d_c


lstm_cell.defvjp(_lstm_cell_fwd, _lstm_cell_bwd)


@jax.custom_vjp
def gru_cell(x: jax.Array, r: jax.Array, h: jax.Array) -> jax.Array:
  """The Keras 3 GRU cell after its matmuls (reset_after, sigmoid gates, tanh): the new h.

  Args:
    x: `[..., 3 * units]` the input's share of the gates z, r, h (`x W + b`).
    r: `[..., 3 * units]` the state's share (`h U + b_recurrent`).
    h: `[..., units]` the state the step starts from.

  As `lstm_cell`: autodiff's numbers bit for bit. Inside a scan, autodiff of the
  plain form stacks nine arrays per step (h, the state's candidate share, z, r,
  the candidate, and four derivative factors); this cell stacks the five values.
  """
  return _gru_cell_fwd(x, r, h)[0]


def _gru_cell_fwd(x, r, h):
  xz, xr, xh = jnp.split(x, 3, axis=-1)
  rz, rr, rh = jnp.split(r, 3, axis=-1)
  z = jax.nn.sigmoid(xz + rz)
  reset = jax.nn.sigmoid(xr + rr)
  hh = jnp.tanh(xh + reset * rh)
  return z * h + (1.0 - z) * hh, (h, rh, z, reset, hh)


def _gru_cell_bwd(saved, d_new):
  h, rh, z, reset, hh = saved
  d_z = _sigmoid_transpose(-(d_new * hh) + d_new * h, z)
  d_xh = _add_tanh_transpose(None, (1.0 - z) * d_new, hh)
  d_reset = _sigmoid_transpose(d_xh * rh, reset)
  return (jnp.concatenate([d_z, d_reset, d_xh], axis=-1), jnp.concatenate([d_z, d_reset, reset * d_xh], axis=-1),
          z * d_new)


gru_cell.defvjp(_gru_cell_fwd, _gru_cell_bwd)


def _over_time(step: Callable, carry0: Any, xs: Any, *, one_step: bool, truncate: int, reverse: bool) -> jax.Array:
  """`step`'s outputs `[time, ...]` over time-major `xs`: one call, truncated BPTT (`truncate` > 0) or `lax.scan`."""
  if one_step:
    return step(carry0, xs[0])[1][None]
  if truncate:
    return scan_truncated(step, carry0, xs, truncate, reverse=reverse)
  return jax.lax.scan(step, carry0, xs, reverse=reverse)[1]


def masked_step(step: Callable, zero_output: bool) -> Callable:
  """Keras' masked RNN step: a skipped step keeps the carry and repeats the previous output.

  `step(carry, x_t) -> (carry, h_t)` becomes `step((carry, (x_t, keep_t)))` with
  keep_t `[batch]` bool. Where keep_t is False the new carry is discarded (so
  nothing at that step, its input included, gets a gradient) and the output is
  the carried h (the last kept step's output, or the initial state) or zeros.
  """
  def run(carry, inputs):
    x_t, keep_t = inputs
    new_carry, h = step(carry, x_t)
    keep = keep_t[:, None]
    carry = jax.tree.map(lambda new, old: jnp.where(keep, new, old), new_carry, carry)
    return carry, jnp.where(keep, h, jnp.zeros_like(h) if zero_output else carry[0])
  return run


# ---------------------------------------------------------------------------
# The fused kernel (`model.kernel = "fused"`): Keras' LSTM/GRU cell with tanh and
# sigmoid, rearranged for speed. Every gate comes out of one tanh call, as
# sigmoid(z) = tanh(z / 2) / 2 + 1 / 2, so a gate is `s * tanh(s * z) + (1 - s)` with
# s = 1/2 (sigmoid) or 1 (tanh). A custom VJP runs the backward loop with one matmul
# per step (d h = d r @ U^T) and forms d U as one matmul over all steps after it
# (as cuDNN does); autodiff of the scan does a second, accumulating matmul per step.
# Loops run time-major. Values equal the scan kernel's to float32 rounding.


def _gate_scale(gates: str, units: int) -> np.ndarray:
  """`[1, gates * units]` `s` of every gate column: 1/2 for a sigmoid gate ("s"), 1 for a tanh gate ("t")."""
  return np.repeat(np.array([0.5 if g == "s" else 1.0 for g in gates], np.float32), units)[None]


def _lstm_forward(carry, x_t, r):
  """One LSTM step (gates i, f, c, o) -> `(carry, residual)`; the residual is what its backward reads."""
  h, c = carry
  s = _gate_scale("ssts", h.shape[-1])
  t = jnp.tanh((x_t + r) * s)  # all four gates in one call
  i, f, g, o = jnp.split(t * s + (1.0 - s), 4, axis=-1)
  c = f * c + i * g
  tc = jnp.tanh(c)
  return (o * tc, c), (t, tc)


def _lstm_backward(prev, residual, d_carry):
  """`(d x_t, d r_t, d carry_prev)` of one LSTM step; d carry_prev without the path through r."""
  _, c_prev = prev
  t, tc = residual
  d_h, d_c = d_carry
  s = _gate_scale("ssts", d_h.shape[-1])
  i, f, g, o = jnp.split(t * s + (1.0 - s), 4, axis=-1)
  d_c = d_c + d_h * o * (1.0 - tc * tc)
  d_gates = jnp.concatenate([d_c * g, d_c * c_prev, d_c * i, d_h * tc], axis=-1)
  d_z = d_gates * (s * s) * (1.0 - t * t)  # d/dz of s tanh(s z) + (1 - s)
  return d_z, d_z, (jnp.zeros_like(d_h), d_c * f)


def _gru_forward(carry, x_t, r):
  """One GRU step (Keras 3 reset_after; gates z, r, h); `r` includes the recurrent bias."""
  (h,) = carry
  split = 2 * h.shape[-1]
  # z and r in one call; the candidate needs r first, so it takes a second.
  zr = 0.5 * jnp.tanh(0.5 * (x_t[..., :split] + r[..., :split])) + 0.5
  z, reset = jnp.split(zr, 2, axis=-1)
  r_h = r[..., split:]
  hh = jnp.tanh(x_t[..., split:] + reset * r_h)
  return (z * h + (1.0 - z) * hh,), (zr, hh, r_h)


def _gru_backward(prev, residual, d_carry):
  """`_lstm_backward` for the GRU: d r differs from d x in the candidate gate (r gates h @ U only)."""
  (h_prev,) = prev
  zr, hh, r_h = residual
  (d_h,) = d_carry
  z, reset = jnp.split(zr, 2, axis=-1)
  d_hh = d_h * (1.0 - z) * (1.0 - hh * hh)
  d_zr = jnp.concatenate([d_h * (h_prev - hh), d_hh * r_h], axis=-1) * zr * (1.0 - zr)
  d_x = jnp.concatenate([d_zr, d_hh], axis=-1)
  d_r = jnp.concatenate([d_zr, d_hh * reset], axis=-1)
  return d_x, d_r, (d_h * z,)


_CELLS = {"lstm": (_lstm_forward, _lstm_backward), "gru": (_gru_forward, _gru_backward)}


def _product(h: jax.Array, recurrent: jax.Array, state_mask: jax.Array | None) -> jax.Array:
  """`h @ U` of `[batch, units]`, or with recurrent dropout one masked h per gate (Keras' implementation 1)."""
  if state_mask is None:
    return h @ recurrent
  gates, batch, units = state_mask.shape
  r = jnp.einsum("gbu,ugv->bgv", h[None] * state_mask, recurrent.reshape(units, gates, units))
  return r.reshape(batch, gates * units)


def _product_transpose(d_r: jax.Array, recurrent: jax.Array, state_mask: jax.Array | None) -> jax.Array:
  """d h of `_product` for `[batch, gates * units]` cotangents: `d_r @ U^T` (masked per gate)."""
  if state_mask is None:
    return d_r @ recurrent.T
  gates, batch, units = state_mask.shape
  per_gate = jnp.einsum("bgv,ugv->gbu", d_r.reshape(batch, gates, units), recurrent.reshape(units, gates, units))
  return jnp.sum(per_gate * state_mask, axis=0)


def _recurrent_grad(h_prev: jax.Array, d_r: jax.Array, state_mask: jax.Array | None) -> jax.Array:
  """d U = sum over steps and batch of `h_prev^T d_r`: one matmul for the whole sequence.

  Args:
    h_prev: `[time, batch, units]`, the state each step multiplied by U.
    d_r: `[time, batch, gates * units]`.
    state_mask: `[gates, batch, units]` or None.
  """
  if state_mask is None:
    return jnp.einsum("tbu,tbg->ug", h_prev, d_r)
  gates, _, units = state_mask.shape
  masked = h_prev[:, None] * state_mask[None]  # [time, gates, batch, units]
  d_u = jnp.einsum("tgbu,tbgv->ugv", masked, d_r.reshape(*d_r.shape[:2], gates, units))
  return d_u.reshape(units, gates * units)


def _fused_forward(cell, xs, carry0, recurrent, recurrent_bias, state_mask, keep, reverse, zero_output):
  """The time loop: `(ys [time, batch, units], residuals)`; residuals hold each step's starting carry."""
  forward, _ = _CELLS[cell]

  def step(carry, inputs):
    x_t, keep_t = inputs
    r = _product(carry[0], recurrent, state_mask)
    if recurrent_bias is not None:
      r = r + _along_last(recurrent_bias, 2)
    new, residual = forward(carry, x_t, r)
    y = new[0]
    if keep_t is not None:  # Keras masking: a skipped step keeps the carry (see `masked_step`)
      k = keep_t[:, None]
      new = jax.tree.map(lambda a, b: jnp.where(k, a, b), new, carry)
      y = jnp.where(k, y, 0.0) if zero_output else new[0]
    return new, (y, (carry, residual))

  _, (ys, residuals) = jax.lax.scan(step, carry0, (xs, keep), reverse=reverse)
  return ys, residuals


def _fused_backward(cell, recurrent, state_mask, keep, residuals, d_ys, reverse, zero_output):
  """The backward loop: `(d carry0, d xs, d rs)`, one `d r @ U^T` per step."""
  _, backward = _CELLS[cell]

  def step(d_carry, inputs):
    (prev, residual), d_y, keep_t = inputs
    if keep_t is not None:
      k = keep_t[:, None]
      if zero_output:  # a skipped step output zeros: its d y reaches nothing
        d_y = jnp.where(k, d_y, 0.0)
    d_new = (d_carry[0] + d_y, *d_carry[1:])
    d_x, d_r, d_prev = backward(prev, residual, d_new)
    if keep_t is not None:  # a skipped step hands its cotangents to the carry it kept
      d_x, d_r = jnp.where(k, d_x, 0.0), jnp.where(k, d_r, 0.0)
      d_prev = jax.tree.map(lambda a, b: jnp.where(k, a, b), d_prev, d_new)
    d_prev = (d_prev[0] + _product_transpose(d_r, recurrent, state_mask), *d_prev[1:])
    return d_prev, (d_x, d_r if cell == "gru" else None)

  d_carry = tuple(jnp.zeros(a.shape[1:], a.dtype) for a in residuals[0])  # by shape: time may be 0
  d_carry0, (d_xs, d_rs) = jax.lax.scan(step, d_carry, (residuals, d_ys, keep), reverse=not reverse)
  return d_carry0, d_xs, d_xs if d_rs is None else d_rs


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 7, 8))
def fused_scan(cell: str, xs: jax.Array, carry0: tuple[jax.Array, ...], recurrent: jax.Array,
               recurrent_bias: jax.Array | None, state_mask: jax.Array | None, keep: jax.Array | None,
               reverse: bool, zero_output: bool) -> jax.Array:
  """The fused kernel's time loop over projected inputs, with its hand-written VJP.

  Args:
    cell: "lstm" (carry `(h, c)`) or "gru" (carry `(h,)`).
    xs: `[time, batch, gates * units]` projected inputs, bias included (time-major).
    carry0: the initial state, each `[batch, units]`.
    recurrent: `[units, gates * units]`.
    recurrent_bias: the GRU's `[3 * units]`; None for the LSTM.
    state_mask: `[gates, batch, units]` recurrent-dropout mask, or None.
    keep: `[time, batch]` bool, False at masked steps, or None.
    reverse: run from the last step to the first.
    zero_output: output zeros at masked steps instead of the carried h.

  Returns:
    `[time, batch, units]` outputs.
  """
  return _fused_forward(cell, xs, carry0, recurrent, recurrent_bias, state_mask, keep, reverse, zero_output)[0]


def _fused_scan_fwd(cell, xs, carry0, recurrent, recurrent_bias, state_mask, keep, reverse, zero_output):
  ys, residuals = _fused_forward(cell, xs, carry0, recurrent, recurrent_bias, state_mask, keep, reverse,
                                 zero_output)
  return ys, (recurrent, recurrent_bias, state_mask, keep, residuals)


def _fused_scan_bwd(cell, reverse, zero_output, saved, d_ys):
  recurrent, recurrent_bias, state_mask, keep, residuals = saved
  d_carry0, d_xs, d_rs = _fused_backward(cell, recurrent, state_mask, keep, residuals, d_ys, reverse,
                                         zero_output)
  h_prev = residuals[0][0]
  d_recurrent = _recurrent_grad(h_prev, d_rs, state_mask)
  d_bias = None if recurrent_bias is None else jnp.sum(d_rs, axis=(0, 1))
  # Masks get no gradient: they are drawn, not learned.
  return d_xs, d_carry0, d_recurrent, d_bias, None, None


fused_scan.defvjp(_fused_scan_fwd, _fused_scan_bwd)


def fused_layer(cell: str, xs: jax.Array, kernel: jax.Array, bias: jax.Array, recurrent: jax.Array,
                recurrent_bias: jax.Array | None, state0: tuple[jax.Array, ...], *,
                input_mask: jax.Array | None, state_mask: jax.Array | None, step_mask: jax.Array | None,
                reverse: bool, zero_output: bool) -> jax.Array:
  """`Recurrent` with `model.kernel = "fused"`: the same layer, time-major throughout.

  Args:
    cell: "lstm" or "gru".
    xs: `[batch, time, features]`.
    kernel, bias, recurrent, recurrent_bias: the layer's parameters (`Recurrent`).
    state0: the initial `(h, c)` or `(h,)`, each `[units]`.
    input_mask, state_mask, step_mask, zero_output: as `Recurrent.__call__`'s.
    reverse: run from the last step to the first.

  Returns:
    `[batch, time, units]` hidden states, in input order.
  """
  batch, _, features = xs.shape
  units = recurrent.shape[0]
  gates = recurrent.shape[1] // units
  # Time-major before the projection: the features-wide input is the cheaper one to transpose.
  xs = jnp.swapaxes(xs, 0, 1)
  if input_mask is None:
    projected = xs @ kernel
  elif input_mask.ndim == 2:
    projected = (xs * input_mask[None]) @ kernel
  else:  # one mask per gate: gate g sees (x * mask_g) @ kernel_g
    masked = xs[None] * input_mask[:, None]  # [gates, time, batch, features]
    projected = jnp.einsum("gtbf,fgu->tbgu", masked, kernel.reshape(features, gates, units))
    projected = projected.reshape(*projected.shape[:2], gates * units)
  projected = projected + _along_last(bias, 3)
  carry0 = tuple(jnp.broadcast_to(s, (batch, units)) for s in state0)
  keep = None if step_mask is None else jnp.swapaxes(step_mask, 0, 1)
  hs = fused_scan(cell, projected, carry0, recurrent, recurrent_bias, state_mask, keep, reverse, zero_output)
  return jnp.swapaxes(hs, 0, 1)


def scan_truncated(step: Callable, carry: Any, xs: Any, k: int, *, reverse: bool = False) -> Any:
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
    xs: `[time, ...]` time-major inputs (or a pytree of them).
    k: chunk length, >= 1.
    reverse: scan from the last step to the first (chunks keep their
      positions, so the shorter chunk is visited first).

  Returns:
    `[time, ...]` outputs, in input order.
  """
  time = jax.tree.leaves(xs)[0].shape[0]
  n_full = time // k

  def chunk(carry, xs_chunk):
    carry, ys = jax.lax.scan(step, carry, xs_chunk, reverse=reverse)
    return jax.tree.map(jax.lax.stop_gradient, carry), ys

  full = jax.tree.map(lambda a: a[:n_full * k].reshape(n_full, k, *a.shape[1:]), xs)
  rest = jax.tree.map(lambda a: a[n_full * k:], xs)
  has_rest = time > n_full * k
  if reverse and has_rest:
    carry, ys_rest = chunk(carry, rest)
  carry, ys_full = jax.lax.scan(chunk, carry, full, reverse=reverse)
  ys = ys_full.reshape(n_full * k, *ys_full.shape[2:])
  if has_rest:
    if not reverse:
      carry, ys_rest = chunk(carry, rest)
    ys = jnp.concatenate([ys, ys_rest], axis=0)
  return ys


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
  from jaxlstm.networks import Network
  net = Network(cfg, outputs, time_out=time_out, frame_shape=tuple(frame_shape))
  x = jnp.zeros((1, *input_shape), jnp.float32)

  def trace():
    params = net.init(jax.random.key(0), x)["params"]
    _, state = net.apply({"params": params}, x, mutable=["intermediates"])
    return params, state["intermediates"]

  params, sown = jax.eval_shape(trace)
  cell = cfg.cell.upper()
  types = {"conv": "TimeDistributed(Conv2D)", "pool": "TimeDistributed(MaxPooling2D)",
           "flatten": "TimeDistributed(Flatten)", "input_projection": "Dense", "masking": "Masking",
           "repeat_vector": "RepeatVector", "decoder": cell}
  rows = []
  for (name, value), in (row.items() for row in sown["layers"]):
    if name.startswith("bidirectional_"):
      layer = name.split("_")[1]
      kind, owners = f"Bidirectional({cell})", (f"forward_{layer}", f"backward_{layer}")
    elif name == "head" or name.startswith("dense_"):
      kind, owners = ("TimeDistributed(Dense)" if value.ndim == 3 else "Dense"), (name,)
    elif name.startswith("dropout_"):
      kind, owners = "Dropout", ()
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
      `bias_l1`, `bias_l2`: scalars (every layer) or `[layers]` vectors (one per
      recurrent layer; both directions of a bidirectional layer share one).
  """
  total = jnp.zeros([], jnp.float32)
  encoders = sum(layer.startswith("encoder_") for layer in params)
  for layer, leaves in params.items():
    if not layer.startswith(RECURRENT_PREFIXES):
      continue
    index = encoders if layer == "decoder" else int(layer.rsplit("_", 1)[1])
    for leaf_name, kind in (("kernel", "kernel"), ("recurrent_kernel", "recurrent"),
                            ("bias", "bias"), ("recurrent_bias", "bias")):
      if leaf_name in leaves:
        w = leaves[leaf_name]
        l1, l2 = _at(hp[f"{kind}_l1"], index), _at(hp[f"{kind}_l2"], index)
        total = total + l1 * jnp.sum(jnp.abs(w)) + l2 * jnp.sum(w * w)
  return total


def can_pad_cells(cfg: Config) -> bool:
  """Whether `cfg` can run zero-padded to wider layers with results equal to its own widths.

  Padded units start at zero and get exactly zero gradients for plain stacked
  LSTM/GRU layers and hidden Dense layers whose activations map 0 to 0 (a
  padded unit's pre-activation is 0; with sigmoid its output would be 0.5 and
  the zero weights reading it would start to learn). Layer norm (statistics over
  units), dropout (mask shapes), a learned initial state, an input projection,
  truncated BPTT and the other architectures are left unpadded.
  """
  m = cfg.model
  return (m.architecture == "vanilla" and not m.layer_norm and not m.learn_initial_state
          and not m.uses_dropout and m.input_projection == 0 and m.tbptt == 0
          and all(a in ZERO_PRESERVING for a in m.layer_values("activation"))
          and (not m.dense or m.dense_activation in ZERO_PRESERVING))


def pad_params(params, widths: Widths, padded: Widths, cell: str, *, leading: int = 0):
  """Zero-pad a network's parameters from `widths` to the (layer by layer wider) `padded`.

  Every gate block of the fused kernels and biases is padded separately, so
  gate g of unit j of recurrent layer i sits at column `g * padded.units[i] + j`
  as in the wide model; the rows that read a padded layer's outputs (the next
  layer's kernel, the Dense layers', the head's) get zero rows.
  `leading` counts leading batch axes (1 for stacked members).
  """
  return _resize(params, widths, padded, cell, leading)


def unpad_params(params, widths: Widths, padded: Widths, cell: str, *, leading: int = 0):
  """Inverse of `pad_params`: keep the first units of each layer (of each gate block)."""
  return _resize(params, padded, widths, cell, leading)


def _resize(params, old: Widths, new: Widths, cell: str, leading: int):
  gates = GATES[cell]

  # numpy for host arrays (results on their way out: eager jnp would compile
  # a tiny program per leaf shape), jax.numpy inside traced code.
  def xp(x):
    return np if isinstance(x, np.ndarray) else jnp

  def units_axis(x, axis, a, b):  # pad/crop a plain axis of a units from a to b
    axis += leading
    if b > a:
      widths = [(0, 0)] * x.ndim
      widths[axis] = (0, b - a)
      return xp(x).pad(x, widths)
    if b < a:
      index = [slice(None)] * x.ndim
      index[axis] = slice(0, b)
      return x[tuple(index)]
    return x

  def gated_axis(x, axis, a, b):  # [.., gates * units] -> per gate
    if a == b:
      return x
    blocks = xp(x).split(x, gates, axis=axis + leading)
    return xp(x).concatenate([units_axis(blk, axis, a, b) for blk in blocks], axis=axis + leading)

  last_old = old.dense[-1] if old.dense else old.units[-1]
  last_new = new.dense[-1] if new.dense else new.units[-1]
  out = {}
  for layer, leaves in params.items():
    if layer.startswith(("lstm_", "gru_")):
      i = int(layer.rsplit("_", 1)[1])
      a, b = old.units[i], new.units[i]
      new_leaves = {}
      for name, x in leaves.items():
        if name == "kernel":
          x = gated_axis(x, 1, a, b)
          if i > 0:
            x = units_axis(x, 0, old.units[i - 1], new.units[i - 1])
        elif name == "recurrent_kernel":
          x = units_axis(gated_axis(x, 1, a, b), 0, a, b)
        elif name in ("bias", "recurrent_bias"):
          x = gated_axis(x, 0, a, b)
        new_leaves[name] = x
      out[layer] = new_leaves
    elif layer.startswith("dense_"):
      j = int(layer.rsplit("_", 1)[1])
      rows = (old.units[-1], new.units[-1]) if j == 0 else (old.dense[j - 1], new.dense[j - 1])
      kernel = units_axis(units_axis(leaves["kernel"], 0, *rows), 1, old.dense[j], new.dense[j])
      out[layer] = {"kernel": kernel, "bias": units_axis(leaves["bias"], 0, old.dense[j], new.dense[j])}
    elif layer == "head":
      out[layer] = {"kernel": units_axis(leaves["kernel"], 0, last_old, last_new), "bias": leaves["bias"]}
    else:
      raise ValueError(f"cannot pad layer {layer!r}: padding supports plain stacked LSTM/GRU and Dense layers only.")
  return out
