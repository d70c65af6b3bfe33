"""Keras initializers by name, as jax initializers `(key, shape, dtype)`.

Fans are computed as Keras does for a 2-D kernel: fan_in = rows, fan_out =
columns (for the fused recurrent kernels, columns = gates * units).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp


def orthogonal(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
  """Keras' orthogonal initializer (gain 1), built without LAPACK.

  Keras (and `jax.nn.initializers.orthogonal`) draw a Gaussian matrix G of
  shape (max(r, c), min(r, c)), take Q of its QR factorisation and flip
  column signs so that diag(R) > 0. Gram-Schmidt on G's columns yields that
  same Q directly (the QR factor with positive diag(R)), so the draw is
  Keras' in distribution and equals jax's to float rounding. We avoid
  `jnp.linalg.qr`: a batched QR under vmap deadlocks XLA:CPU's 2-thread pool
  in jaxlib 0.10.x (reference/hang.md), and the LAPACK call compiles slowly.
  """
  rows = math.prod(shape[:-1])
  cols = shape[-1]
  tall = (max(rows, cols), min(rows, cols))
  gaussian = jax.random.normal(key, tall, jnp.float32)

  def add_column(j, q):
    done = (jnp.arange(tall[1]) < j).astype(jnp.float32)[None, :]
    basis = q * done
    v = gaussian[:, j]
    for _ in range(2):  # "twice is enough": re-orthogonalise for float32 accuracy
      v = v - basis @ (basis.T @ v)
    return q.at[:, j].set(v / jnp.linalg.norm(v))

  q = jax.lax.fori_loop(0, tall[1], add_column, jnp.zeros(tall, jnp.float32))
  if rows < cols:
    q = q.T
  return q.reshape(shape).astype(dtype)


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
      "orthogonal": orthogonal,  # QR-free, see above
      "random_uniform": inits.uniform(0.1),  # Keras: U(-0.05, 0.05), shifted below
      "random_normal": inits.normal(0.05),  # Keras: N(0, 0.05)
      "zeros": inits.zeros,
  }
  if name == "random_uniform":
    # U(0, 0.1) - 0.05: the draw every existing result was made with (keep it).
    return lambda key, shape, dtype=jnp.float32: table[name](key, shape, dtype) - 0.05
  return table[name]
