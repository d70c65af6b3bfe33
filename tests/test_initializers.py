"""Initializers drawn through one batched hash (`initializers.record` / `hash_all` / `replay`).

The group program initialises every member's parameters with all of its draws
computed by a single threefry call; each parameter must be bit for bit the draw
`jax.random` makes for that key and shape, or every stored result would change.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlstm import initializers
from jaxlstm.config import Config
from jaxlstm.data import resolve
from jaxlstm.ensemble import init_members, members_of, plan
from jaxlstm.models import pad_params
from jaxlstm.train import make_train

DRAWN = ["glorot_uniform", "glorot_normal", "lecun_normal", "he_uniform", "he_normal", "orthogonal",
         "random_uniform", "random_normal"]
SHAPES = [(3, 8), (8, 2), (4, 4, 3)]  # wide, tall, 3-D (fans over the leading axes)


def _bits(array) -> np.ndarray:
  return np.asarray(array).view(np.uint32)


def _draw_all(key):
  """Every drawn initializer at every shape, each under its own folded key, in one function."""
  return [[initializers.initializer(name)(jax.random.fold_in(key, i * 100 + j), shape)
           for j, shape in enumerate(SHAPES)] for i, name in enumerate(DRAWN)]


def test_every_initializer_replayed_from_one_hash_is_its_own_draw_bit_for_bit():
  key = jax.random.key(11)

  def batched(key):
    draws = initializers.record(lambda: _draw_all(key))
    initializers.hash_all([draws])
    return initializers.replay(draws, lambda: _draw_all(key))

  direct = jax.jit(_draw_all)(key)
  replayed = jax.jit(batched)(key)
  assert len(initializers.record(lambda: _draw_all(key)).recorded) == len(DRAWN) * len(SHAPES)
  for name, want_row, got_row in zip(DRAWN, direct, replayed):
    for shape, want, got in zip(SHAPES, want_row, got_row):
      assert got.shape == want.shape and got.dtype == want.dtype == jnp.float32
      np.testing.assert_array_equal(_bits(got), _bits(want), err_msg=f"{name} {shape}")


def test_a_replay_that_differs_from_the_recording_is_refused():
  key = jax.random.key(0)
  glorot = initializers.initializer("glorot_uniform")
  draws = initializers.record(lambda: glorot(key, (2, 3)))
  initializers.hash_all([draws])
  with pytest.raises(RuntimeError, match="out of order"):
    initializers.replay(draws, lambda: glorot(key, (3, 2)))
  with pytest.raises(RuntimeError, match="replayed 0 of 1"):
    initializers.replay(draws, lambda: None)
  # Outside a recording the initializers draw directly, as before.
  np.testing.assert_array_equal(_bits(glorot(key, (2, 3))),
                                _bits(jax.nn.initializers.glorot_uniform()(key, (2, 3))))


def test_a_group_of_padded_widths_initialises_each_member_as_it_would_alone():
  # Three widths in one program (a `lax.switch` over them), draws hashed together; drawn
  # biases (wrapped by the forget-gate bias) and a truncated-normal kernel included.
  base = {"model.kernel_init": "glorot_normal", "model.bias_init": "random_uniform",
          "model.recurrent_init": "orthogonal", "train.epochs": 1}
  configs = [Config().override({**base, "model.cells": cells}) for cells in (1, 4, 6)]
  (group,) = plan(configs, 2)
  train = make_train(configs[-1], resolve(configs[-1]))
  members = members_of(group, 5)
  layout = ((1, 2), (4, 2), (6, 2))
  states = jax.jit(lambda m: init_members(train, m, layout))(members)
  wide = train.shape.widths
  cells = [w for w, count in layout for _ in range(count)]
  owns = [make_train(configs[i // 2], resolve(configs[i // 2])).shape.widths for i in range(len(cells))]

  def alone(keys):  # each member initialised at its own widths, then padded: what a solo run draws
    return [pad_params(train.init_params(keys[i], own), own, wide, "lstm") for i, own in enumerate(owns)]
  for i, want in enumerate(jax.jit(alone)(members.keys.init)):
    got = jax.tree.map(lambda a, i=i: a[i], states.params)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for g, a in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_array_equal(_bits(g), _bits(a), err_msg=f"member {i} at {cells[i]} cells")


def test_draws_one_hash_cannot_reproduce_are_made_directly_on_both_traces():
  raw = jax.random.PRNGKey(3)  # a raw uint32 key: not a typed threefry key
  glorot = initializers.initializer("glorot_uniform")
  draws = initializers.record(lambda: glorot(raw, (2, 3)))
  assert draws.recorded == []
  initializers.hash_all([draws])
  got = initializers.replay(draws, lambda: glorot(raw, (2, 3)))
  np.testing.assert_array_equal(_bits(got), _bits(jax.nn.initializers.glorot_uniform()(raw, (2, 3))))
