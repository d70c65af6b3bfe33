"""Per-sample losses and metrics on network logits, Keras' definitions.

Every function maps logits and targets `[batch, ...]` to `[batch]`: the mean
over all non-batch entries, as Keras' `sum_over_batch_size` reduction does
once the batch mean is taken. With `steps=True` they keep the time axis of
sequence outputs, `[batch, time, ...]` -> `[batch, time]`, for losses masked
per time step (`model.mask_value`). Cross-entropies are computed from logits
(log-softmax / log-sigmoid), which equals Keras' probability form without
its 1e-7 clipping of probabilities.
"""
from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxlstm.models import activate


def _per_sample(values: jax.Array, steps: bool = False) -> jax.Array:
  if steps:  # [batch, time, ...] -> [batch, time]
    return values.reshape(values.shape[0], values.shape[1], -1).mean(axis=2)
  return values.reshape(values.shape[0], -1).mean(axis=1)


def mse(logits, targets, output_activation="linear", *, steps=False):
  return _per_sample(jnp.square(activate(logits, output_activation) - targets), steps)


def mae(logits, targets, output_activation="linear", *, steps=False):
  return _per_sample(jnp.abs(activate(logits, output_activation) - targets), steps)


def binary_crossentropy(logits, targets, output_activation="sigmoid", *, steps=False):
  del output_activation
  # -[y log s(z) + (1 - y) log(1 - s(z))] = softplus(z) - y z, stable for any z.
  return _per_sample(jax.nn.softplus(logits) - targets * logits, steps)


def categorical_crossentropy(logits, targets, output_activation="softmax", *, steps=False):
  del output_activation
  per_step = -jnp.sum(targets * jax.nn.log_softmax(logits, axis=-1), axis=-1)
  if steps:
    return per_step.reshape(per_step.shape[0], per_step.shape[1], -1).mean(axis=2)
  return per_step.reshape(per_step.shape[0], -1).mean(axis=1)


def accuracy(logits, targets, output_activation="softmax", *, steps=False):
  """Keras' 'accuracy' for the head: argmax match (softmax) or threshold 0.5 (sigmoid)."""
  if output_activation == "softmax":
    hits = jnp.argmax(logits, -1) == jnp.argmax(targets, -1)
    if steps:
      return hits.reshape(hits.shape[0], hits.shape[1], -1).mean(axis=2).astype(jnp.float32)
    return hits.reshape(hits.shape[0], -1).mean(axis=1).astype(jnp.float32)
  hits = (logits > 0.0) == (targets > 0.5)  # sigmoid(z) > 0.5  <=>  z > 0
  return _per_sample(hits.astype(jnp.float32), steps)


def mae_original(logits, targets, output_activation="linear", *, unit_scale=1.0, steps=False):
  """MAE in the targets' original units: `unit_scale [outputs]` maps a scaled unit back (affine scalers)."""
  error = jnp.abs(activate(logits, output_activation) - targets)
  unit_scale = jnp.asarray(unit_scale, error.dtype)
  return _per_sample(error * jnp.broadcast_to(unit_scale, error.shape[-1:]).reshape((1,) * (error.ndim - 1) + (-1,)),
                     steps)


def invert_power(z, power: str, lmbda):
  """Undo log / Box-Cox per column (`lmbda [outputs]`), as `prep.invert_power` (edge values included)."""
  if power == "log":
    return jnp.exp(z)
  if power != "boxcox":
    return z
  lmbda = jnp.broadcast_to(lmbda, z.shape)
  safe = jnp.where(lmbda == 0, 1.0, lmbda)
  return jnp.where(lmbda == 0, jnp.exp(z), jnp.maximum(safe * z + 1.0, 0.0) ** (1.0 / safe))


def mae_levels(logits, originals, output_activation="linear", *, matrix, offsets, lmbda, power):
  """MAE in a transformed series' original units: `[batch]`.

  Predictions `[batch, outputs]` map to transformed levels `p @ matrix.T + offsets`
  (`offsets [batch, outputs]`: each sample's window levels and the scaler's shift;
  `prep.inverse_map`), then through the power transform's inverse, and are compared
  with the original targets `originals [batch, outputs]`.
  """
  levels = activate(logits, output_activation) @ matrix.T + offsets
  return _per_sample(jnp.abs(invert_power(levels, power, lmbda) - originals))


LOSSES: dict[str, Callable] = {
    "mse": mse, "mae": mae,
    "binary_crossentropy": binary_crossentropy,
    "categorical_crossentropy": categorical_crossentropy,
}
METRICS: dict[str, Callable] = {"mse": mse, "mae": mae, "accuracy": accuracy, "mae_original": mae_original}
