"""Shared fixtures and helpers: tiny configs, trace counting, the XLA:CPU guard."""
import atexit
import collections
import contextlib
import os
import shutil
import tempfile

# One persistent XLA cache per test process (subprocesses inherit it): CLI tests that
# build the same program load it instead of compiling, and no test writes to ~/.cache.
# The folder is ours, so it goes when the process ends.
if "XDG_CACHE_HOME" not in os.environ:
  os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="jaxlstm-test-cache-")
  atexit.register(shutil.rmtree, os.environ["XDG_CACHE_HOME"], ignore_errors=True)
# Sweeps draw their plots before returning in tests (tests of the background renderer
# ask for it), so no detached process outlives a test or writes into its tmp_path late.
os.environ.setdefault("JAXLSTM_PLOTS", "wait")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
# Start jax now, with the devices the environment gives (one CPU device unless XLA_FLAGS asks for
# more): the command line asks for host devices before jax starts, and an in-process run must not
# choose the device count of the whole session.
jax.devices()

MAX_WORKERS = 4


def pytest_xdist_auto_num_workers(config):
  """`-n auto` (pyproject's addopts): one worker per core, at most `MAX_WORKERS`; none on one core.

  A test alone keeps ~1.3 of 2 cores busy (XLA's compiles and its thread pool), so two
  workers on 2 cores take ~0.78 of the serial time, not half. Each worker holds its
  files' compiled programs (1.7-2.7 GB by the end on 2 cores), hence the cap.
  """
  del config
  if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
    return int(os.environ["PYTEST_XDIST_AUTO_NUM_WORKERS"])
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
  return 0 if cores < 2 else min(cores, MAX_WORKERS)


TRACE_EVENT = "/jax/core/compile/jaxpr_trace_duration"
_CACHE_FLAGS = ("jax_enable_compilation_cache", "jax_compilation_cache_dir",
                "jax_persistent_cache_min_compile_time_secs", "jax_persistent_cache_min_entry_size_bytes")


@pytest.fixture
def restore_cache_flags():
  """`sweep.main` sets jax's global persistent-cache flags: give the tests after it theirs back."""
  from jax.experimental.compilation_cache import compilation_cache
  saved = {k: jax.config.values[k] for k in _CACHE_FLAGS}
  yield
  for k, v in saved.items():
    jax.config.update(k, v)
  compilation_cache.reset_cache()


@contextlib.contextmanager
def count_traces():
  """Count jax traces by function name inside the block (jax's own compile events)."""
  counts: collections.Counter = collections.Counter()

  def listener(event, duration, **kwargs):
    del duration
    if event == TRACE_EVENT:
      counts[kwargs.get("fun_name")] += 1

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    yield counts
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)


@pytest.fixture
def np_rng():
  return np.random.default_rng(0)
