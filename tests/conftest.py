"""Shared fixtures: tiny configs and datasets, and the XLA:CPU guard."""
import os

import jax
import numpy as np
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def np_rng():
  return np.random.default_rng(0)
