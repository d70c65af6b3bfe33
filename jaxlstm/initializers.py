"""Keras initializers by name, as jax initializers `(key, shape, dtype)`.

Fans are computed as Keras does for a 2-D kernel: fan_in = rows, fan_out =
columns (for the fused recurrent kernels, columns = gates * units).
"""
from __future__ import annotations

import contextvars
import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


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
  if name == "zeros":
    return table[name]
  draw = table[name]
  if name == "random_uniform":
    # U(0, 0.1) - 0.05: the draw every existing result was made with (keep it).
    draw = lambda key, shape, dtype=jnp.float32: table["random_uniform"](key, shape, dtype) - 0.05

  def init(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    batch = _DRAWS.get()
    if batch is None or not _hashable_together(key, shape, dtype):
      return draw(key, shape, dtype)
    return batch.take(name, draw, key, tuple(shape), dtype)
  return init


def _hashable_together(key: jax.Array, shape: tuple[int, ...], dtype) -> bool:
  """Whether `hash_all` computes this draw's bits as `jax.random` would: a float32 draw from a
  typed threefry key, with jax's (default) partitionable threefry, of fewer than 2**32 values."""
  return (jnp.dtype(dtype) == jnp.float32 and jax.config.jax_threefry_partitionable
          and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) and jax.random.key_impl(key) == "threefry2x32"
          and math.prod(shape) < 2**32)


# ---------------------------------------------------------------------------
# One hash for all the draws of an initialisation.
#
# Each drawn parameter costs XLA:CPU a threefry loop of its own to compile (the default
# study's initialisation held 9 such draws: a quarter of its ~4 s of compile CPU). `Draws`
# traces an initialisation twice: the first time it only records each draw's key and
# shape; `hash_all` then computes every recorded draw's random bits in one threefry
# call, bit for bit those `jax.random` computes (threefry is elementwise in
# (key, counter), and a draw of n values hashes counters 0..n-1 under its key); the
# second trace replays the initializers on those bits, handed over as the data of a
# key whose PRNG only returns them. The parameters are the same bits as drawn directly
# (tests/test_initializers.py checks every initializer bit for bit). Draws `_hashable_together`
# refuses are made directly, on both traces.


class Draws:
  """The draws of one initialisation: recorded on a first trace (`record`), replayed on a second (`replay`)."""

  def __init__(self):
    self.recorded: list[tuple[Any, tuple[int, ...], str]] = []
    self.bits: list[jax.Array] | None = None
    self._next = 0

  def take(self, name: str, draw: Callable, key: jax.Array, shape: tuple[int, ...], dtype) -> jax.Array:
    if self.bits is None:  # recording
      self.recorded.append((key, shape, name))
      return jnp.zeros(shape, dtype)
    index = self._next
    if index >= len(self.recorded) or self.recorded[index][1:] != (shape, name):
      raise RuntimeError(f"initialisation replayed out of order: draw {index} is {name} {shape}, "
                         f"recorded {self.recorded[index][1:] if index < len(self.recorded) else 'none'}")
    self._next += 1
    size = math.prod(shape)
    return draw(jax.random.wrap_key_data(self.bits[index], impl=_replay_prng(size)), shape, dtype)


def record(init: Callable[[], Any]) -> Draws:
  """Trace `init()` once, recording its draws (its output is discarded)."""
  draws = Draws()
  token = _DRAWS.set(draws)
  try:
    init()
  finally:
    _DRAWS.reset(token)
  return draws


def hash_all(batches: Sequence[Draws]) -> None:
  """Compute the random bits of every draw recorded in `batches`, in one threefry call."""
  recorded = [(key, math.prod(shape)) for draws in batches for key, shape, _ in draws.recorded]
  if not recorded:
    for draws in batches:
      draws.bits = []
    return
  from jax.extend.random import threefry2x32_p  # here: jax.extend imports pallas (~40 ms) on a warm run's path
  sizes = [size for _, size in recorded]
  data = [jax.random.key_data(key) for key, _ in recorded]
  # A draw of n values hashes (its key, counter i) for i < n: the counter's high word is 0
  # below 2**32 values (jax's iota_2x32_shape), the low word i.
  key1 = jnp.concatenate([jnp.broadcast_to(d[0], (n,)) for d, n in zip(data, sizes)])
  key2 = jnp.concatenate([jnp.broadcast_to(d[1], (n,)) for d, n in zip(data, sizes)])
  low = jnp.concatenate([jax.lax.iota(np.uint32, n) for n in sizes])
  bits1, bits2 = threefry2x32_p.bind(key1, key2, jnp.zeros_like(low), low)
  bits = bits1 ^ bits2  # jax's 32-bit draw from the two output words
  start = 0
  for draws in batches:
    draws.bits = []
    for _, shape, _ in draws.recorded:
      draws.bits.append(bits[start:start + math.prod(shape)])
      start += math.prod(shape)


def replay(draws: Draws, init: Callable[[], Any]) -> Any:
  """`init()` traced again, its draws taken from `draws.bits` (after `hash_all`)."""
  if draws.bits is None:
    raise RuntimeError("replay before hash_all")
  draws._next = 0
  token = _DRAWS.set(draws)
  try:
    out = init()
  finally:
    _DRAWS.reset(token)
  if draws._next != len(draws.recorded):
    raise RuntimeError(f"initialisation replayed {draws._next} of {len(draws.recorded)} draws")
  return out


_DRAWS: contextvars.ContextVar[Draws | None] = contextvars.ContextVar("jaxlstm_draws", default=None)


def _refuse(*args, **kwargs):
  raise TypeError("a replayed draw's key draws once; it cannot be seeded, split or folded")


@functools.cache
def _replay_prng(size: int):
  """A PRNG whose keys are `size` random 32-bit values, returned as the bits of the one draw they serve."""
  from jax.extend.random import define_prng_impl
  def random_bits(data, bit_width, shape):
    if bit_width != 32 or math.prod(shape) != size:
      raise TypeError(f"a replayed draw of {size} 32-bit values was asked for {bit_width}-bit values of shape {shape}")
    return data.reshape(shape)
  return define_prng_impl(key_shape=(size,), seed=_refuse, split=_refuse, random_bits=random_bits,
                          fold_in=_refuse, name=f"jaxlstm_replay_{size}")
