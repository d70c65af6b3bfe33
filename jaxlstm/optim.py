"""Config -> one optax chain whose continuous hyper-parameters are runtime inputs.

The chain is wrapped in `optax.inject_hyperparams`, so the learning rate,
momentum, weight decay and clipping thresholds live in the optimizer state as
arrays. Members of a vmapped ensemble can then each carry their own values,
and a grid over them is one compile (optax#577 is the recompile-per-value trap).

Update rules follow Keras 3:
  * adam: `var -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)`,
    Keras' epsilon placement (optax.adam adds eps to the bias-corrected
    sqrt(v), a different effective epsilon in early steps);
  * rmsprop: `v = rho v + (1 - rho) g^2; var -= lr g / sqrt(v + eps)`, with
    optional momentum on the increment;
  * adagrad: accumulator starting at `initial_accumulator_value`,
    `var -= lr g / sqrt(acc + eps)`;
  * sgd: `m = momentum m - lr g; var += m` (nesterov: `var += momentum m - lr g`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import jax
import jax.numpy as jnp

from jaxlstm.config import OptimConfig

if TYPE_CHECKING:
  import optax


class KerasAdamState(NamedTuple):
  count: jax.Array
  mu: optax.Updates
  nu: optax.Updates


def scale_by_keras_adam(b1: float, b2: float, eps: float) -> optax.GradientTransformation:
  """Adam's direction with Keras' bias correction and epsilon placement."""
  import optax  # only when a program is traced (see `make_optimizer`)

  def init(params):
    zeros = jax.tree.map(jnp.zeros_like, params)
    return KerasAdamState(jnp.zeros([], jnp.int32), zeros, jax.tree.map(jnp.zeros_like, params))

  def update(updates, state, params=None):
    del params
    mu = jax.tree.map(lambda m, g: b1 * m + (1.0 - b1) * g, state.mu, updates)
    nu = jax.tree.map(lambda v, g: b2 * v + (1.0 - b2) * g * g, state.nu, updates)
    count = state.count + 1
    t = count.astype(jnp.float32)
    alpha = jnp.sqrt(1.0 - b2 ** t) / (1.0 - b1 ** t)
    updates = jax.tree.map(lambda m, v: alpha * m / (jnp.sqrt(v) + eps), mu, nu)
    return updates, KerasAdamState(count, mu, nu)

  return optax.GradientTransformation(init, update)


def schedule_shape(cfg: OptimConfig):
  """Multiplier of the base learning rate as a function of the step count."""
  import optax  # only when a program is traced (see `make_optimizer`)
  if cfg.schedule == "constant":
    return lambda count: jnp.ones([], jnp.float32)
  if cfg.schedule == "exponential":
    return optax.exponential_decay(1.0, cfg.decay_steps, cfg.decay_rate)
  if cfg.schedule == "cosine":
    return optax.cosine_decay_schedule(1.0, cfg.decay_steps, alpha=cfg.alpha)
  if cfg.schedule == "warmup_cosine":
    return optax.warmup_cosine_decay_schedule(
        0.0, 1.0, max(cfg.warmup_steps, 1), cfg.warmup_steps + cfg.decay_steps, end_value=cfg.alpha)
  # Keras PiecewiseConstantDecay: scales[i] applies once step > boundaries[i].
  values = jnp.asarray((1.0, *cfg.scales), jnp.float32)
  boundaries = jnp.asarray(cfg.boundaries)
  return lambda count: values[jnp.sum(count > boundaries)]


def applied_learning_rate(cfg: OptimConfig, opt_state) -> jax.Array:
  """`[]` the learning rate the optimizer's most recent update applied.

  The chain scales update k (0-based) by `learning_rate * shape(k)`, with the
  injected base rate in force at that update. After `count` updates the last
  one used `shape(count - 1)`; this is that product, computed as the update
  computes it (float32), so it equals the rate applied bit for bit.

  Args:
    cfg: the optimizer config (its schedule).
    opt_state: the `optax.inject_hyperparams` state after at least one update.

  Returns:
    float32 scalar; the base rate itself under the constant schedule.
  """
  shape = schedule_shape(cfg)
  last = jnp.maximum(opt_state.count - 1, 0)
  return opt_state.hyperparams["learning_rate"] * shape(last)


def hyperparams(cfg: OptimConfig) -> dict[str, float]:
  """The traced hyper-parameters this config uses, as floats (one member's values)."""
  values = {"learning_rate": cfg.learning_rate}
  if cfg.name in ("sgd", "rmsprop") and cfg.momentum > 0:
    values["momentum"] = cfg.momentum
  if cfg.weight_decay > 0:
    values["weight_decay"] = cfg.weight_decay
  if cfg.global_clipnorm is not None:
    values["global_clipnorm"] = cfg.global_clipnorm
  if cfg.clipvalue is not None:
    values["clipvalue"] = cfg.clipvalue
  return values


def make_optimizer(cfg: OptimConfig) -> optax.GradientTransformation:
  """One optax chain for `cfg`; its `hyperparams(cfg)` are injected state.

  `init(params)` stores `hyperparams(cfg)`; to give a member other values,
  overwrite `opt_state.hyperparams[name]` after init (see `train`).

  optax is imported here, not with the module: only tracing a program builds a
  chain, and a run whose programs are all stored (`jaxlstm.compiled`) saves its
  import (~0.1-0.17 s of a warm default study).
  """
  import optax
  shape = schedule_shape(cfg)

  def chain(learning_rate, momentum=0.0, weight_decay=0.0, global_clipnorm=None, clipvalue=None):
    parts = []
    if global_clipnorm is not None:
      parts.append(optax.clip_by_global_norm(global_clipnorm))
    if clipvalue is not None:
      parts.append(optax.clip(clipvalue))
    if cfg.name == "adam":
      parts.append(scale_by_keras_adam(cfg.beta_1, cfg.beta_2, cfg.epsilon))
    elif cfg.name == "rmsprop":
      parts.append(optax.scale_by_rms(decay=cfg.rho, eps=cfg.epsilon, initial_scale=0.0, eps_in_sqrt=True))
      if "momentum" in names:
        parts.append(optax.trace(decay=momentum))
    elif cfg.name == "adagrad":
      parts.append(optax.scale_by_rss(initial_accumulator_value=cfg.initial_accumulator_value, eps=cfg.epsilon))
    elif cfg.name == "sgd" and "momentum" in names:
      parts.append(optax.trace(decay=momentum, nesterov=cfg.nesterov))
    if "weight_decay" in names:
      parts.append(optax.add_decayed_weights(weight_decay))
    parts.append(optax.scale_by_schedule(lambda count: -learning_rate * shape(count)))
    return optax.chain(*parts)

  names = hyperparams(cfg)
  return optax.inject_hyperparams(chain)(**names)
