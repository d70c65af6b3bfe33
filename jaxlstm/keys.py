"""The only place an integer becomes a PRNG key.

Repeat i of a config gets `fold_in(fold_in(key(seed), config_number), i)`: it
depends on (seed, config, i) alone (on (seed, i) alone for `train.paired` configs), never on how many repeats run, so the
first 30 repeats of a 100-repeat run equal a 30-repeat run. Each source of
randomness draws from its own named stream of that key, so one source can be
held fixed across repeats while another varies (`train.vary`).

Cross-validation (`data.cv`): fold f of repeat i draws its `init`, `shuffle` and
`dropout` streams from `fold_in(stream key of repeat i, f)`, so every fold is a
training run of its own; its `split` stream is the repeat's, shared by all its
folds, because it draws the one partition of the samples the folds are cut from
("kfold"). A stream held fixed by `train.vary` is repeat 0's before the fold is
folded in: fold f of every repeat then draws the same.
"""
from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxlstm.config import STREAMS, Config

# Fixed stream numbers: part of the reproducibility contract, never renumber.
_STREAM_NUMBER = {"init": 1, "shuffle": 2, "dropout": 3, "split": 4}


class StreamKeys(NamedTuple):
  """One key per source of randomness; leaves are `[repeats]` key arrays when stacked."""
  init: jax.Array
  shuffle: jax.Array
  dropout: jax.Array
  split: jax.Array


MAX_SEED = 2**32 - 1


def check_seed(seed) -> None:
  """Raise ValueError unless `seed` is an integer from 0 to 2**32 - 1 (one uint32 key word)."""
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= MAX_SEED:
    raise ValueError(f"seed must be an integer from 0 to {MAX_SEED} (2**32 - 1), got {seed!r}.")


# The key number every config with `train.paired` shares: repeat i of each of them
# draws the same streams (common random numbers). Part of the contract: never change.
PAIRED_NUMBER = int(hashlib.sha256(b"jaxlstm paired repeats").hexdigest()[:8], 16)


def config_number(config: Config | str) -> int:
  """The uint32 a config's repeat keys fold in: its id, or `PAIRED_NUMBER` with `train.paired`."""
  if not isinstance(config, str) and config.train.paired:
    return PAIRED_NUMBER
  config_id = config if isinstance(config, str) else config.config_id
  return int(config_id[:8], 16)


def repeat_keys(seed: int, config: Config | str, repeats: int | Sequence[int]) -> jax.Array:
  """Keys of repeats `range(repeats)` (or the given repeat indices) of `config`.

  Returns:
    `[repeats]` typed key array.
  """
  check_seed(seed)
  indices = np.arange(repeats) if np.isscalar(repeats) else np.asarray(repeats)
  base = jax.random.fold_in(jax.random.key(int(seed)), config_number(config))
  return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.asarray(indices, jnp.uint32))


def stream_keys(keys: jax.Array, vary: Sequence[str] = STREAMS) -> StreamKeys:
  """Split repeat keys into named streams; streams not in `vary` use repeat 0's key.

  Args:
    keys: `[repeats]` repeat keys whose first entry is repeat 0 of the config
      (the held-fixed draw comes from there).
    vary: the streams that differ between repeats.
  """
  streams = {}
  for name, number in _STREAM_NUMBER.items():
    per_repeat = jax.vmap(lambda k, n=number: jax.random.fold_in(k, n))(keys)
    if name not in vary:
      per_repeat = jnp.broadcast_to(per_repeat[:1], per_repeat.shape)
    streams[name] = per_repeat
  return StreamKeys(**streams)


# The streams each cross-validation fold draws for itself; the others ("split") are the repeat's.
FOLD_STREAMS = ("init", "shuffle", "dropout")


def group_keys(seed: int, configs: Sequence[Config], repeats: int | Sequence[int], folds: int = 1) -> StreamKeys:
  """Stream keys of every (config, repeat[, fold]), config-major, folds fastest.

  Leaves `[len(configs) * repeats * folds]`. With `folds > 1`, member
  `(c * repeats + r) * folds + f` is fold f of repeat r of config c (see the
  module docstring for how its keys derive). Computed in numpy (threefry), or in
  one compiled call for another PRNG (op-by-op key derivation costs a compile per
  primitive). All configs must share `train.vary`.
  """
  check_seed(seed)
  vary = {c.train.vary for c in configs}
  if len(vary) != 1:
    raise ValueError(f"configs of one group must share train.vary, got {sorted(vary)}.")
  indices = np.arange(repeats) if np.isscalar(repeats) else np.asarray(repeats)
  numbers = np.asarray([config_number(c) for c in configs], np.uint32)
  vary = vary.pop()
  if jax.config.jax_default_prng_impl != "threefry2x32":
    return _group_keys(np.uint32(seed), numbers, indices.astype(np.uint32), vary, int(folds))
  # The same threefry arithmetic in numpy: bit-identical keys without the
  # ~1 s it takes XLA to compile the key derivation on a 2-core CPU.
  base = fold_in_data(np.array([0, seed], np.uint32), numbers)[:, None, :]  # [configs, 1, 2]
  keys = fold_in_data(base, indices.astype(np.uint32)[None, :])  # [configs, repeats, 2]
  fixed = fold_in_data(base, np.zeros((1, 1), np.uint32))
  streams = {}
  for name, stream in _STREAM_NUMBER.items():
    source = keys if name in vary else np.broadcast_to(fixed, keys.shape)
    data = fold_in_data(source, np.uint32(stream))  # [configs, repeats, 2]
    if folds > 1:
      data = (fold_in_data(data[:, :, None, :], np.arange(folds, dtype=np.uint32)) if name in FOLD_STREAMS
              else np.broadcast_to(data[:, :, None, :], (*data.shape[:2], folds, 2)))
    streams[name] = jax.random.wrap_key_data(np.ascontiguousarray(data).reshape(-1, 2))
  return StreamKeys(**streams)


def _rotate_left(x: np.ndarray, r: int) -> np.ndarray:
  return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def _threefry2x32(k1, k2, x0, x1):
  """Threefry-2x32 (20 rounds) in numpy, as jax's `threefry2x32_p` computes it."""
  ks = (k1, k2, k1 ^ k2 ^ np.uint32(0x1BD11BDA))
  rotations = ((13, 15, 26, 6), (17, 29, 16, 24))
  with np.errstate(over="ignore"):
    x0, x1 = x0 + ks[0], x1 + ks[1]
    for block in range(5):
      for r in rotations[block % 2]:
        x0 = x0 + x1
        x1 = _rotate_left(x1, r) ^ x0
      x0 = x0 + ks[(block + 1) % 3]
      x1 = x1 + ks[(block + 2) % 3] + np.uint32(block + 1)
  return x0, x1


def fold_in_data(key_data: np.ndarray, data) -> np.ndarray:
  """`jax.random.fold_in` on raw threefry key data `[..., 2]` (uint32), broadcasting `data`."""
  key_data = np.asarray(key_data, np.uint32)
  data = np.asarray(data, np.uint32)
  k1, k2 = key_data[..., 0], key_data[..., 1]
  x0, x1 = _threefry2x32(k1, k2, np.zeros_like(data), data)
  x0, x1 = np.broadcast_arrays(x0, x1)
  return np.stack([x0, x1], axis=-1)


@functools.partial(jax.jit, static_argnames=("vary", "folds"))
def _group_keys(seed, numbers, indices, vary, folds=1):
  def one_config(number):
    base = jax.random.fold_in(jax.random.key(seed), number)
    fold = jax.vmap(lambda i: jax.random.fold_in(base, i))
    keys = fold(indices)
    fixed = fold(jnp.zeros((1,), jnp.uint32))  # held-fixed streams use repeat 0
    streams = {}
    for name, stream in _STREAM_NUMBER.items():
      source = keys if name in vary else jnp.broadcast_to(fixed, keys.shape)
      streams[name] = jax.vmap(lambda k, n=stream: jax.random.fold_in(k, n))(source)
      if folds > 1:
        numbers = jnp.arange(folds, dtype=jnp.uint32)
        per_fold = (jax.vmap(lambda k: jax.vmap(lambda f: jax.random.fold_in(k, f))(numbers))
                    if name in FOLD_STREAMS else lambda k: jnp.broadcast_to(k[:, None], (k.shape[0], folds)))
        streams[name] = per_fold(streams[name])
    return StreamKeys(**streams)
  per_config = jax.vmap(one_config)(numbers)
  return jax.tree.map(lambda k: k.reshape(-1), per_config)
